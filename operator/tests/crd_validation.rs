//! The API server refuses bad EventTopic and EventConsumer specs at apply time, with a
//! sentence a person understands (the CEL rules and OpenAPI bounds in `crds/`).

mod support;

use ferry_operator::api::{EventConsumer, EventTopic};
use ferry_testkit::{TempNamespace, require_env};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

const MANAGER: &str = "ferry-tests";

async fn apply<K>(api: &Api<K>, name: &str, body: Value) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

fn topic(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
           "metadata": {"name": name}, "spec": spec})
}

fn consumer(name: &str, spec: Value) -> Value {
    let mut base = json!({
        "topics": ["orders-v1"],
        "serviceAccount": "notification-service",
        "delivery": {"http": {"service": {"name": "notification-service", "port": 8000}}}
    });
    for (k, v) in spec.as_object().expect("an object").clone() {
        base[k] = v;
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
           "metadata": {"name": name}, "spec": base})
}

fn assert_refused(result: Result<(), String>, expected: &str, what: &str) {
    match result {
        Ok(()) => panic!("{what}: the API server accepted it"),
        Err(message) => assert!(
            message.contains(expected),
            "{what}: refusal {message:?} does not say {expected:?}"
        ),
    }
}

#[tokio::test]
async fn bad_event_topics_are_refused_at_create() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let api = Api::<EventTopic>::namespaced(ns.client(), ns.name());

    let long = "a".repeat(250);
    let cases = [
        (
            json!({"partitions": 0}),
            "should be greater than or equal to 1",
            "zero partitions",
        ),
        (
            json!({"topicName": "bad topic!"}),
            "should match '^[a-zA-Z0-9._-]+$'",
            "bad topic name",
        ),
        (
            json!({"topicName": long}),
            "may not be more than 249",
            "topic name too long",
        ),
        (
            json!({"topicName": ".."}),
            "topicName cannot be '.' or '..'",
            "dot-dot",
        ),
        (
            json!({"topicName": "__consumer_offsets"}),
            "topicName cannot start with '__'",
            "consumer offsets",
        ),
        (
            json!({"topicName": "__transaction_state"}),
            "Kafka-internal",
            "transaction state",
        ),
        (
            json!({"topicName": "__anything"}),
            "Kafka-internal",
            "internal prefix",
        ),
        (
            json!({"unmanagedConfigs": "Forget"}),
            "supported values: \"Remove\", \"Keep\"",
            "unmanaged configs",
        ),
        (
            json!({"deletionPolicy": "Destroy"}),
            "supported values: \"Retain\", \"Delete\"",
            "policy",
        ),
        (
            json!({"config": {"retention.ms": 604800000}}),
            ".spec.config.retention.ms: expected string",
            "int config",
        ),
        (
            json!({"config": {"Retention-MS": "1"}}),
            "config keys are Kafka topic config names",
            "key",
        ),
        (
            json!({"schema": {"jsonSchema": {"type": "object"}, "configMapRef": {"name": "a", "key": "b"}}}),
            "schema needs exactly one of jsonSchema or configMapRef",
            "two schemas",
        ),
        (
            json!({"replicationFactor": 0}),
            "should be greater than or equal to 1",
            "rf 0",
        ),
    ];
    for (i, (spec, expected, what)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        assert_refused(apply(&api, &name, topic(&name, spec)).await, expected, what);
    }
}

#[tokio::test]
async fn event_topic_transitions_are_checked() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let api = Api::<EventTopic>::namespaced(ns.client(), ns.name());

    let name = "orders-v1";
    apply(
        &api,
        name,
        topic(
            name,
            json!({"topicName": "orders.v1", "partitions": 3, "replicationFactor": 1}),
        ),
    )
    .await
    .expect("a valid EventTopic is accepted");
    // Defaults are filled in by the API server from the schema.
    let stored = api.get(name).await.expect("stored");
    assert_eq!(
        stored.spec.deletion_policy,
        ferry_operator::api::DeletionPolicy::Retain
    );

    assert_refused(
        apply(
            &api,
            name,
            topic(
                name,
                json!({"topicName": "orders.v1", "partitions": 2, "replicationFactor": 1}),
            ),
        )
        .await,
        "partitions cannot decrease",
        "shrinking",
    );
    assert_refused(
        apply(
            &api,
            name,
            topic(
                name,
                json!({"topicName": "orders.v2", "partitions": 3, "replicationFactor": 1}),
            ),
        )
        .await,
        "topicName is immutable",
        "renaming",
    );
    assert_refused(
        apply(
            &api,
            name,
            topic(name, json!({"partitions": 3, "replicationFactor": 1})),
        )
        .await,
        "topicName is immutable",
        "dropping topicName (so it would become metadata.name)",
    );
    assert_refused(
        apply(
            &api,
            name,
            topic(
                name,
                json!({"topicName": "orders.v1", "partitions": 3, "replicationFactor": 2}),
            ),
        )
        .await,
        "replicationFactor is immutable",
        "changing replication factor",
    );
    assert_refused(
        apply(
            &api,
            name,
            topic(name, json!({"topicName": "orders.v1", "partitions": 3})),
        )
        .await,
        "replicationFactor is immutable",
        "removing replication factor",
    );
    apply(
        &api,
        name,
        topic(
            name,
            json!({"topicName": "orders.v1", "partitions": 6, "replicationFactor": 1}),
        ),
    )
    .await
    .expect("growing partitions is allowed");

    // Without topicName the Kafka name is metadata.name; stating it explicitly is no change.
    let plain = "plain.v1";
    apply(&api, plain, topic(plain, json!({})))
        .await
        .expect("defaults only");
    apply(&api, plain, topic(plain, json!({"topicName": plain})))
        .await
        .expect("spelling out the default name is not a rename");
}

#[tokio::test]
async fn bad_event_consumers_are_refused() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let api = Api::<EventConsumer>::namespaced(ns.client(), ns.name());

    apply(&api, "good", consumer("good", json!({
        "ordering": "key",
        "retry": {"attempts": 3, "backoff": {"initial": "200ms", "max": "10s"}, "delays": ["5s", "1m", "10m"]},
        "idempotency": {"enabled": true, "databaseSecretRef": {"name": "db", "key": "DATABASE_URL"}, "window": "7d"},
        "scaling": {"minReplicas": 1, "maxReplicas": 6, "lagThreshold": 1000},
    })))
    .await
    .expect("the DESIGN example is accepted");
    apply(
        &api,
        "sidecar",
        consumer(
            "sidecar",
            json!({
                "placement": "Sidecar",
                "podSelector": {"app": "notification-service"},
                "delivery": {"http": {"port": 8000, "path": "/events/orders"}},
            }),
        ),
    )
    .await
    .expect("a Sidecar placement with a selector and a localhost port is accepted");

    let cases = [
        (
            json!({"topics": []}),
            "should have at least 1 items",
            "no topics",
        ),
        (
            json!({"ordering": "random"}),
            "supported values: \"partition\", \"key\", \"unordered\"",
            "ordering",
        ),
        (
            json!({"retry": {"delays": ["1m", "5s"]}}),
            "strictly ascending order",
            "descending delays",
        ),
        (
            json!({"retry": {"delays": ["5s", "5s"]}}),
            "strictly ascending order",
            "equal delays",
        ),
        (
            json!({"retry": {"delays": ["five seconds"]}}),
            "should match",
            "malformed delay",
        ),
        (
            json!({"scaling": {"minReplicas": 4, "maxReplicas": 2}}),
            "minReplicas must not exceed",
            "min > max",
        ),
        (
            json!({"delivery": {"http": {"service": {"name": "s", "port": 80}, "timeout": "ten seconds"}}}),
            "should match",
            "malformed timeout",
        ),
        (
            json!({"idempotency": {"enabled": true, "window": "7 days"}}),
            "should match",
            "malformed window",
        ),
        (
            json!({"idempotency": {"enabled": true}}),
            "idempotency needs databaseSecretRef",
            "no db",
        ),
        (
            json!({"delivery": {}}),
            "delivery needs exactly one of http or container",
            "no delivery",
        ),
        (
            json!({"delivery": {"http": {"url": "http://x", "service": {"name": "s", "port": 80}}}}),
            "http delivery needs exactly one of service, url or port",
            "two targets",
        ),
        (
            json!({"placement": "Sidecar", "delivery": {"http": {"port": 8000}}}),
            "placement: Sidecar needs spec.podSelector",
            "sidecar without a selector",
        ),
        (
            json!({"placement": "Sidecar", "podSelector": {}, "delivery": {"http": {"port": 8000}}}),
            "placement: Sidecar needs spec.podSelector",
            "sidecar with an empty selector",
        ),
        (
            json!({"placement": "Sidecar", "podSelector": {"app": "n"}}),
            "placement: Sidecar delivers to the service in its own pod",
            "sidecar delivering to a Service",
        ),
        (
            json!({"placement": "Sidecar", "podSelector": {"app": "n"},
                   "delivery": {"http": {"port": 8000}},
                   "scaling": {"minReplicas": 0, "maxReplicas": 3}}),
            "spec.scaling does not apply",
            "sidecar with scaling",
        ),
        (
            json!({"delivery": {"http": {"port": 8000}}}),
            "delivery.http.port (the service on localhost) needs placement: Sidecar",
            "a Deployment delivering to localhost",
        ),
        (
            json!({"podSelector": {"app": "n"}}),
            "spec.podSelector goes with placement: Sidecar",
            "a selector on a Deployment-placed consumer",
        ),
        (
            json!({"delivery": {"http": {"service": {"name": "s", "port": 80}, "path": "/e"}}}),
            "delivery.http.path goes with port",
            "a path beside a Service",
        ),
        (
            json!({"deadLetter": {"topic": "shared-dlq", "retention": "3d"}}),
            "deadLetter.retention is for the managed dead-letter topic",
            "a retention on a named dead-letter topic",
        ),
        (
            json!({"deadLetter": {"retention": "two weeks"}}),
            "should match",
            "malformed dead-letter retention",
        ),
        (
            json!({"validate": true, "delivery": {"container": {"image": "team/consumer:1"}}}),
            "validate: true is done by Ferry's worker",
            "validate with a team's own container",
        ),
        (
            json!({"placement": "DaemonSet"}),
            "supported values: \"Deployment\", \"Sidecar\"",
            "unknown placement",
        ),
    ];
    for (i, (spec, expected, what)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        assert_refused(
            apply(&api, &name, consumer(&name, spec)).await,
            expected,
            what,
        );
    }
}
