//! `kubectl ferry status` against the real API server: a consumer with lag and a topic that is
//! not Ready are shown with their reasons, and the consumer's dead letters as the operator
//! counted them (`status.deadLetters`; unknown, not zero, until it has). Nothing is read from
//! Kafka: the plugin holds no Kafka credential.

mod support;

use ferry_operator::api::{EventConsumer, EventTopic};
use ferry_testkit::require_env;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{CONSUMER, Fixture, TOPIC};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_lag_and_a_topic_not_ready_with_its_reason() {
    let env = require_env!();
    let fx = Fixture::create(env, 1).await;
    let client = fx.ns.client();
    let topics: Api<EventTopic> = Api::namespaced(client.clone(), fx.ns.name());
    topics
        .patch_status(
            TOPIC,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "topicName": fx.source.name(), "partitions": 1,
                "conditions": [{"type": "Ready", "status": "False", "reason": "Conflict",
                    "message": "the EventTopic other/orders owns this Kafka topic",
                    "lastTransitionTime": "2026-11-30T10:00:00Z"}]}})),
        )
        .await
        .expect("topic status");
    let consumers: Api<EventConsumer> = Api::namespaced(client, fx.ns.name());
    consumers
        .patch_status(
            CONSUMER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "replicas": 2, "readyReplicas": 1,
                "lag": {"total": 1234, "byTopic": {fx.source.name(): 1234}},
                "deadLetters": 2,
                "topics": {"source": [fx.source.name()], "retry": [fx.tier.name()],
                           "deadLetter": fx.dead_letter.name(), "deadLetterManaged": true},
                "conditions": [{"type": "Ready", "status": "True", "reason": "WorkersReady",
                    "message": "", "lastTransitionTime": "2026-11-30T10:00:00Z"}]}})),
        )
        .await
        .expect("consumer status");
    // A pod the webhook injected (its annotation is how status finds it; no node runs it).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "order-service-0",
                     "annotations": {"ferry.dev/injected": "relay"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }))
    .expect("pod");
    Api::<Pod>::namespaced(fx.ns.client(), fx.ns.name())
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");

    let screen = fx.plugin_ok(&["status"]);
    let line = |name: &str| line_of(&screen, name);
    let topic = line(TOPIC);
    assert!(
        topic.contains("False (Conflict: the EventTopic other/orders owns this Kafka topic)"),
        "{screen}"
    );
    assert!(topic.contains("order-service"), "{screen}");
    let consumer = line(CONSUMER);
    for expected in ["Deployment", "1/2", "1234", "   2   ", "True"] {
        assert!(
            consumer.contains(expected),
            "{expected:?} missing:\n{screen}"
        );
    }
    let pod = line("order-service-0");
    // Pending, or Running once a KWOK node took it: either way it is listed with what it got.
    assert!(pod.contains("relay"), "{screen}");

    let json: Value = serde_json::from_str(&fx.plugin_ok(&["status", "-o", "json"])).expect("json");
    assert_eq!(json["eventConsumers"][0]["lag"], 1234);
    assert_eq!(json["eventConsumers"][0]["deadLetters"], 2);
    assert_eq!(json["eventTopics"][0]["ready"]["reason"], "Conflict");

    // Not measured yet (no operator wrote it): unknown, not zero.
    consumers
        .patch_status(
            CONSUMER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"deadLetters": null}})),
        )
        .await
        .expect("consumer status");
    let json: Value = serde_json::from_str(&fx.plugin_ok(&["status", "-o", "json"])).expect("json");
    assert_eq!(json["eventConsumers"][0]["deadLetters"], Value::Null);
    assert!(line_of(&fx.plugin_ok(&["status"]), CONSUMER).contains("   ?   "));
}

/// The line of `screen` that starts with `name`.
fn line_of(screen: &str, name: &str) -> String {
    screen
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no line for {name}:\n{screen}"))
        .to_owned()
}
