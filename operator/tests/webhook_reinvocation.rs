//! The real kube-apiserver calls the injection webhook once per opted-in pod creation, not
//! twice (issue: injection, admission latency): the containers Ferry injects already carry the
//! service-account token mount, so the ServiceAccount plugin, which the API server runs again
//! after a webhook changed the pod (`reinvocationPolicy: IfNeeded`), has nothing to add and the
//! webhook is not reinvoked.
//!
//! Counted on the API server's own metric of webhook calls (`apiserver_admission_webhook_
//! request_total`, by webhook name): the one test of this binary, so no other test's pods
//! (`cargo test` runs test binaries one after another) call a webhook of the same name meanwhile.

mod support;

use std::time::Duration;

use ferry_operator::webhook::{annotations, registration};
use ferry_testkit::{TempNamespace, eventually, free_port, require_env, unique_name};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{Operator, install_crds};

/// An operator starts, makes its certificate, syncs its cache and registers within this on a
/// loaded 2-core CI.
const WITHIN: Duration = Duration::from_secs(90);
/// Pods created once admission works.
const PODS: u64 = 5;

fn relay_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {registration::INJECT_LABEL: registration::INJECT_ENABLED},
            "annotations": {annotations::DATABASE_SECRET: "order-db"}
        },
        "spec": {
            "serviceAccountName": "order-service",
            // With requests: the environment's API server runs PodTolerationRestriction, which
            // gives a pod that the relay's requests turn from BestEffort to Burstable the
            // memory-pressure toleration when it runs again after the webhook, and that change
            // alone would call the webhook again (a plugin not enabled by default; nothing the
            // webhook can mirror without changing pods on clusters that lack it).
            "containers": [{"name": "web", "image": "shop/order:1",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
        }
    }))
    .expect("a pod")
}

#[tokio::test]
async fn the_api_server_calls_the_webhook_once_per_pod_creation() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    install_crds(&ns.client()).await.expect("CRDs");
    Api::<ServiceAccount>::namespaced(ns.client(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "order-service"}})).expect("sa"),
        )
        .await
        .expect("service account");
    let configuration = unique_name("ferry-webhook");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    let operator = Operator::start(
        env,
        ns.name(),
        "a",
        &[
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-configuration",
            &configuration,
            "--sidecar-image",
            "ferry-sidecar:test",
        ],
    );
    let pods = Api::<Pod>::namespaced(ns.client(), ns.name());
    // The first pod admitted *injected* says the API server knows the configuration and
    // trusts its CA (one admitted before the API server saw the configuration has no relay).
    let first = eventually(
        "a labelled pod is admitted with its relay",
        WITHIN,
        || async {
            pods.create(&PostParams::default(), &relay_pod(&unique_name("first")))
                .await
                .ok()
                .filter(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(annotations::INJECTED))
                })
        },
    )
    .await
    .expect("admission works");
    let token_mounted = |pod: &Pod| {
        pod.spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .all(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name.starts_with("kube-api-access-"))
            })
    };
    assert!(token_mounted(&first), "{first:?}");

    let before = env.webhook_calls(registration::WEBHOOK_NAME);
    for i in 0..PODS {
        let pod = pods
            .create(&PostParams::default(), &relay_pod(&format!("pod-{i}")))
            .await
            .expect("admitted");
        assert_eq!(
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::INJECTED))
                .map(String::as_str),
            Some("relay")
        );
        assert!(token_mounted(&pod), "{pod:?}");
    }
    let calls = env.webhook_calls(registration::WEBHOOK_NAME) - before;
    assert_eq!(
        calls, PODS,
        "{PODS} pod creations made {calls} webhook calls (two each: reinvoked after the ServiceAccount plugin mounted the token into the injected containers)"
    );

    drop(operator);
    support::remove_webhook_configurations(&ns.client(), &configuration).await;
}
