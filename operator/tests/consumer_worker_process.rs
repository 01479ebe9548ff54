//! The worker Deployment really works: KWOK runs no containers, so this test starts the
//! generated pod template's worker container as a local process — its command and args as
//! written, its env resolved through the API server (`ferry_testkit::pod_env`: the Kafka
//! credential by `secretKeyRef` from the Secret the identity controller wrote, the pod name by
//! `fieldRef`, `$(VAR)` expanded) — against a local HTTP target, and checks that events
//! produced to the EventTopic arrive. It runs as the consumer's own Kafka principal, so the
//! ACLs the identity controller granted are exercised too.
//!
//! What a container runtime would do is mapped by hand, and only that: the image's binary
//! `/usr/local/bin/ferry-sidecar` is `target/debug/ferry-sidecar`, and the pod's own port 9090
//! (its network namespace) is a free local port.

mod consumer_support;
mod support;

use std::collections::BTreeSet;

use consumer_support::{
    CONVERGE, Consumers, produce, resolved_worker, sidecar_binary, spawn_local, target,
};
use ferry_operator::{api::ConditionStatus::True, consumer::deployment::SIDECAR_BINARY};
use ferry_testkit::eventually;
use ferry_testkit::{require_env, unique_name};
use rdkafka::producer::FutureProducer;
use serde_json::json;

#[tokio::test]
async fn the_generated_worker_container_delivers_events() {
    let env = require_env!();
    let binary = sidecar_binary();
    let t = Consumers::new(env, &[]).await;
    let source = unique_name("orders");
    t.topic("orders", &source, 2).await;
    let (port, seen) = target().await;
    t.apply(
        "notify",
        json!({"topics": ["orders"], "serviceAccount": "notify",
               "delivery": {"http": {"url": format!("http://127.0.0.1:{port}/events")}},
               "retry": {"attempts": 2, "delays": ["5s"]}}),
    )
    .await;
    t.wait_ready("notify", True, "Ready", CONVERGE).await;

    let resolved = resolved_worker(&t, "notify", "notify-worker-5d8f-local").await;
    assert_eq!(
        resolved.argv[0], SIDECAR_BINARY,
        "the image's binary, by path"
    );
    assert!(
        resolved
            .argv
            .contains(&"--kafka-option=client.id=notify-worker-5d8f-local".to_owned()),
        "$(FERRY_POD_NAME) expanded from the fieldRef: {:?}",
        resolved.argv
    );
    assert_eq!(
        resolved.var("FERRY_KAFKA_USERNAME"),
        Some(format!("{}.notify", t.f.ns.name()).as_str()),
        "the consumer's own principal, from its Secret"
    );

    let _worker = spawn_local(&resolved, &binary);

    let producer: FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    let ids: BTreeSet<String> = (0..20).map(|i| format!("evt-{i}")).collect();
    produce(&producer, &source, 0, ids.len()).await;
    let arrived = eventually("every event", CONVERGE, || async {
        let now = seen.lock().expect("lock").clone();
        (now == ids).then_some(())
    })
    .await;
    assert!(
        arrived.is_ok(),
        "not every event arrived: {:?}",
        seen.lock().expect("lock")
    );
}
