//! `placement: Sidecar` end to end against the real API server, broker and operator: the
//! operator's webhook injects the consumer's worker into the selected pods only, the status
//! counts the pods that run it (a pod that started before the consumer is one to restart), a
//! Deployment left from `placement: Deployment` goes, and the injected worker container —
//! started as admitted, its env resolved through the API server — delivers to the service on
//! localhost.
//!
//! KWOK runs no containers: as in `consumer_worker_process.rs`, the admitted container's
//! binary is `target/debug/ferry-sidecar` and its metrics port a free local one; the service's
//! port on the pod's localhost is a local HTTP target.

mod consumer_support;
mod support;

use std::collections::BTreeSet;

use consumer_support::{CONVERGE, Consumers, produce, sidecar_binary, spawn_local, target};
use ferry_operator::{
    api::ConditionStatus::{False, True},
    webhook::registration,
};
use ferry_testkit::{eventually, free_port, require_env, unique_name, wait_for};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Container, Pod},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

/// A pod opted in to injection, labelled `app`.
fn service_pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            registration::INJECT_LABEL: registration::INJECT_ENABLED, "app": app}},
        "spec": {"serviceAccountName": "default",
                 "containers": [{"name": "web", "image": "shop/notification:1",
                                 "ports": [{"containerPort": 8000, "name": "http"}]}]}
    }))
    .expect("a pod")
}

fn workers(pod: &Pod) -> Vec<Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.name.ends_with("-worker"))
        .cloned()
        .collect()
}

fn sidecar_spec(port: u16) -> Value {
    json!({"topics": ["orders"], "serviceAccount": "notify",
           "placement": "Sidecar", "podSelector": {"app": "notification"},
           "delivery": {"http": {"port": port, "path": "/events"}}})
}

#[tokio::test]
async fn a_sidecar_consumer_runs_in_the_selected_pods_and_delivers_on_localhost() {
    let env = require_env!();
    let webhook_port = free_port();
    let configuration = unique_name("ferry-webhook");
    let addr = format!("127.0.0.1:{webhook_port}");
    let url = format!("https://127.0.0.1:{webhook_port}");
    let t = Consumers::new(
        env,
        &[
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-configuration",
            &configuration,
        ],
    )
    .await;
    let configs = Api::<MutatingWebhookConfiguration>::all(t.f.ns.client());
    wait_for("the webhook registered", CONVERGE, || async {
        configs
            .get(&configuration)
            .await
            .ok()?
            .webhooks?
            .first()?
            .client_config
            .ca_bundle
            .clone()
    })
    .await;
    let pods = Api::<Pod>::namespaced(t.f.ns.client(), t.f.ns.name());
    let source = unique_name("orders");
    t.topic("orders", &source, 2).await;

    // First placed as a Deployment, with a pod of the service already running.
    t.apply(
        "notify",
        json!({"topics": ["orders"], "serviceAccount": "notify",
               "delivery": {"http": {"url": "http://127.0.0.1:9/events"}}}),
    )
    .await;
    t.wait_ready("notify", True, "Ready", CONVERGE).await;
    t.deployment("notify").await;
    let early = pods
        .create(
            &PostParams::default(),
            &service_pod("early", "notification"),
        )
        .await
        .expect("a pod before the consumer is Sidecar-placed");
    assert!(workers(&early).is_empty(), "nothing selects it yet");

    // Moved into the service's pods: the Deployment goes, the early pod needs a restart.
    let (port, seen) = target().await;
    t.apply("notify", sidecar_spec(port)).await;
    let c = t
        .wait_ready("notify", False, "PodsToRestart", CONVERGE)
        .await;
    let message = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("1 of 1") && message.contains("app=notification"),
        "{message}"
    );
    wait_for("the worker Deployment deleted", CONVERGE, || async {
        t.deployments
            .get_opt("notify-worker")
            .await
            .ok()
            .and_then(|d| d.is_none().then_some(()))
    })
    .await;

    // New pods of the service get the worker; other opted-in pods do not.
    let late = pods
        .create(&PostParams::default(), &service_pod("late", "notification"))
        .await
        .expect("a selected pod");
    let other = pods
        .create(&PostParams::default(), &service_pod("other", "order"))
        .await
        .expect("an unselected pod");
    assert!(workers(&other).is_empty(), "not selected: no worker");
    let injected = workers(&late);
    assert_eq!(injected.len(), 1, "exactly one worker: {injected:?}");
    let worker = injected[0].clone();
    assert_eq!(worker.name, "notify-worker");
    assert_eq!(worker.restart_policy.as_deref(), Some("Always"));
    let args = worker.args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--target-url=http://127.0.0.1:{port}/events")),
        "{args:?}"
    );

    // The early pod replaced (as a rollout restart would): every selected pod runs it.
    pods.delete("early", &DeleteParams::default().grace_period(0))
        .await
        .expect("early pod deleted");
    let c = t.wait_ready("notify", True, "Ready", CONVERGE).await;
    let status = c.status.expect("status");
    assert_eq!((status.replicas, status.ready_replicas), (Some(1), Some(1)));

    // The injected worker, started as admitted, delivers to the service on localhost.
    let meta = late.metadata.clone();
    let resolved = ferry_testkit::pod_env::resolve(&t.f.ns.client(), t.f.ns.name(), &meta, &worker)
        .await
        .expect("the worker's env resolves through the API server");
    assert_eq!(
        resolved.var("FERRY_KAFKA_USERNAME"),
        Some(format!("{}.notify", t.f.ns.name()).as_str()),
        "the consumer's principal, from its Secret"
    );
    let _worker = spawn_local(&resolved, &sidecar_binary());
    let producer: FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    let ids: BTreeSet<String> = (0..10).map(|i| format!("evt-{i}")).collect();
    produce(&producer, &source, 0, ids.len()).await;
    let arrived = eventually("every event", CONVERGE, || async {
        (*seen.lock().expect("lock") == ids).then_some(())
    })
    .await;
    let _ = configs
        .delete(&configuration, &DeleteParams::default())
        .await;
    assert!(
        arrived.is_ok(),
        "not every event arrived: {:?}",
        seen.lock().expect("lock")
    );
}
