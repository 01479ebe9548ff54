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

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use consumer_support::{CONVERGE, Consumers};
use ferry_operator::{api::ConditionStatus::True, consumer::deployment::SIDECAR_BINARY};
use ferry_testkit::{ChildProcess, pod_env, require_env, unique_name};
use kube::api::ObjectMeta;
use rdkafka::{
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use serde_json::json;
use support::{eventually, free_port};

/// The `ferry-sidecar` binary beside the operator's (`cargo build -p ferry-sidecar`; `make
/// test` builds every binary first).
fn sidecar_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ferry-operator")).with_file_name("ferry-sidecar");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p ferry-sidecar` first",
        path.display()
    );
    path
}

/// A local HTTP endpoint that records the CloudEvent id of every request and answers 200.
async fn target() -> (u16, Arc<Mutex<BTreeSet<String>>>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    async fn record(State(seen): State<Arc<Mutex<BTreeSet<String>>>>, headers: HeaderMap) {
        if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
            seen.lock().expect("lock").insert(id.to_owned());
        }
    }
    let app = Router::new()
        .route("/events", post(record))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

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

    let deployment = t.deployment("notify").await;
    let template = deployment.spec.expect("spec").template;
    let container = template.spec.expect("pod spec").containers[0].clone();
    let pod = ObjectMeta {
        name: Some("notify-worker-5d8f-local".into()),
        namespace: Some(t.f.ns.name().to_owned()),
        labels: template.metadata.and_then(|m| m.labels),
        ..ObjectMeta::default()
    };
    let resolved = pod_env::resolve(&t.f.ns.client(), t.f.ns.name(), &pod, &container)
        .await
        .expect("the container's env resolves");
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

    let metrics_port = free_port();
    let args: Vec<String> = resolved.argv[1..]
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{metrics_port}")
            } else {
                a.clone()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs: Vec<(&str, &str)> = resolved
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _worker =
        ChildProcess::spawn("consumer-worker", &binary, &args, &envs).expect("the worker starts");

    let producer: FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    let ids: BTreeSet<String> = (0..20).map(|i| format!("evt-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("k{}", i % 4);
        let envelope = json!({"schema": "orders.v1", "event": "order.created", "id": id,
                              "ts": 1_700_000_000, "key": key, "data": {"n": i}, "headers": {}});
        producer
            .send(
                FutureRecord::to(&source)
                    .key(&key)
                    .payload(&serde_json::to_vec(&envelope).expect("json")),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
    let arrived = eventually(CONVERGE, || async {
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
