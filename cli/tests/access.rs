//! `kubectl ferry` acts with the user's own permissions: a user whose RBAC does not reach the
//! EventConsumer or its credential Secret is refused with the API server's reason and what to
//! ask for; and the consumer's Kafka credential, which the plugin uses, cannot read a topic
//! that is not the consumer's (the broker refuses).

mod support;

use std::time::Duration;

use ferry_common::headers;
use ferry_operator::api::{EventConsumer, EventTopic};
use ferry_testkit::{TempTopic, require_env, wait_for};
use k8s_openapi::api::{
    core::v1::ConfigMap,
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;
use support::{CONSUMER, Fixture, SERVICE_ACCOUNT, admin_producer, envelope, produce};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_access_is_refused_with_what_to_ask_for() {
    let env = require_env!();
    let fx = Fixture::create(env, 1).await;
    let user = format!("dev-{}", fx.ns.name());

    let out = fx.plugin(&["--as", &user, "dlq", "list", "--direct", CONSUMER]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("access denied"), "{err}");
    assert!(
        err.contains(&format!(
            "User \"{user}\" cannot get resource \"eventconsumers\""
        )),
        "{err}"
    );
    assert!(
        err.contains("ask your cluster admin for get on eventconsumers.ferry.dev"),
        "{err}"
    );

    // May read Ferry's resources, but not the consumer's credential.
    let client = fx.ns.client();
    let role = Role {
        metadata: ObjectMeta {
            name: Some("ferry-viewer".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["ferry.dev".into()]),
            resources: Some(vec!["eventconsumers".into(), "eventtopics".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), fx.ns.name())
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("ferry-viewer".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "ferry-viewer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client, fx.ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    let secret = format!("ferry-kafka-{SERVICE_ACCOUNT}");
    let err = wait_for(
        "RBAC to let the user read the EventConsumer",
        Duration::from_secs(60),
        || async {
            let out = fx.plugin(&[
                "--as", &user, "dlq", "replay", "--direct", CONSUMER, "--all",
            ]);
            let err = stderr(&out);
            (!out.status.success() && err.contains("\"secrets\"")).then_some(err)
        },
    )
    .await;
    assert!(err.contains("access denied"), "{err}");
    assert!(
        err.contains(&format!(
            "get on the Secret {secret} in namespace {}",
            fx.ns.name()
        )),
        "{err}"
    );
    // Refused before anything was written.
    let ledgers: Api<ConfigMap> = Api::namespaced(fx.ns.client(), fx.ns.name());
    let ledger = format!("ferry-replays-{CONSUMER}");
    assert!(ledgers.get_opt(&ledger).await.expect("get").is_none());

    // May read the credential and the ledger but not write the ledger: a replay is refused
    // before anything is sent, rather than sent and left unrecorded.
    let producer = admin_producer(env);
    let dead = [
        (headers::ORIGINAL_TOPIC, fx.source.name()),
        (headers::ORIGINAL_PARTITION, "0"),
        (headers::ORIGINAL_OFFSET, "0"),
        (headers::GROUP, fx.group.as_str()),
    ];
    produce(
        &producer,
        fx.dead_letter.name(),
        Some(0),
        "k",
        &envelope("e1", "order.created"),
        &dead,
    )
    .await;
    let reader = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        resource_names: Some(vec![secret.clone()]),
        verbs: vec!["get".into()],
        ..PolicyRule::default()
    };
    let configmaps = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into()],
        ..PolicyRule::default()
    };
    let roles: Api<Role> = Api::namespaced(fx.ns.client(), fx.ns.name());
    let mut role = roles.get("ferry-viewer").await.expect("role");
    role.rules
        .get_or_insert_with(Vec::new)
        .extend([reader, configmaps]);
    roles
        .replace("ferry-viewer", &PostParams::default(), &role)
        .await
        .expect("role widened");
    let err = wait_for(
        "RBAC to let the user read the Secret",
        Duration::from_secs(60),
        || async {
            let out = fx.plugin(&[
                "--as", &user, "dlq", "replay", "--direct", CONSUMER, "--all",
            ]);
            let err = stderr(&out);
            (!out.status.success() && err.contains("\"configmaps\"")).then_some(err)
        },
    )
    .await;
    assert!(err.contains("create and patch on configmaps"), "{err}");
    let reader: BaseConsumer = env.kafka_config().create().expect("reader");
    let (_, high) = reader
        .fetch_watermarks(fx.tier.name(), 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(
        high, 0,
        "a replay was sent although it could not be recorded"
    );
    // The listing itself needs no write.
    let listed = fx.plugin(&["--as", &user, "dlq", "list", "--direct", CONSUMER]);
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_credential_cannot_read_another_topic() {
    let env = require_env!();
    let fx = Fixture::create(env, 1).await;
    // Another team's topic, declared here as an EventTopic and named as the dead-letter topic:
    // the plugin reads it with the consumer's credential, and the broker refuses.
    let foreign = TempTopic::create(env, 1).await.expect("topic");
    let topics: Api<EventTopic> = Api::namespaced(fx.ns.client(), fx.ns.name());
    let topic: EventTopic = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
        "metadata": {"name": "foreign"},
        "spec": {"topicName": foreign.name(), "partitions": 1},
    }))
    .expect("EventTopic");
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("EventTopic");
    let consumers: Api<EventConsumer> = Api::namespaced(fx.ns.client(), fx.ns.name());
    consumers
        .patch(
            CONSUMER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deadLetter": {"topic": "foreign"}}})),
        )
        .await
        .expect("patched");

    let out = fx.plugin(&["dlq", "list", "--direct", CONSUMER]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("Kafka ("), "{err}");
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
}
