//! `make bench-webhook`: what the injection webhook adds to a pod creation (issue: injection).
//!
//! Creates 1,000 opted-in pods one after another through the API server while the release
//! `ferry-operator` answers admission, then removes the webhook configuration and creates 1,000
//! more of the same pods: the baseline, in the same run. Prints p50/p99/max of each and their
//! difference (target: the webhook adds ≤ 5 ms p99). Not a test: it asserts nothing and never
//! runs in CI.

use std::time::{Duration, Instant};

#[path = "../support.rs"]
mod support;

use anyhow::{Context, bail};
use ferry_operator::webhook::{annotations, registration};
use ferry_testkit::{TempNamespace, TestEnv, free_port, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Pod, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;

/// The figure: 1,000 pod creations each way.
const PODS: usize = 1_000;
/// Give the operator this long to start and register (a cold start on a loaded machine).
const START_DEADLINE: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let operator_bin = std::env::args()
        .nth(1)
        .context("usage: bench-webhook <path to the release ferry-operator>")?;
    let env = TestEnv::get().context("no environment: run `make env-up` first")?;
    let ns = TempNamespace::create(env).await?;
    let client = ns.client();
    support::install_crds(&client).await?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "order-service"}}))?,
        )
        .await?;

    let configuration = unique_name("ferry-bench-webhook");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    let mut operator = support::spawn_operator(
        env,
        &operator_bin,
        ns.name(),
        &[
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-configuration",
            &configuration,
        ],
    )?;
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let start = Instant::now();
    while configs.get_opt(&configuration).await?.is_none() {
        if start.elapsed() > START_DEADLINE {
            bail!("the operator did not register its webhook within {START_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first creations warm both paths (connections, caches); not measured.
    let pods = Api::<Pod>::namespaced(client.clone(), ns.name());
    create_all(&pods, "warm", 20).await?;
    let with = create_all(&pods, "with", PODS).await?;

    operator.terminate(Duration::from_secs(20)).await?;
    configs
        .delete(&configuration, &DeleteParams::default())
        .await?;
    let without = create_all(&pods, "without", PODS).await?;

    println!(
        "bench-webhook: {PODS} opted-in pod creations each, one at a time, through the API server"
    );
    report("with the webhook", &with);
    report("baseline (no webhook configuration)", &without);
    let added = |q: f64| percentile(&with, q).saturating_sub(percentile(&without, q));
    println!(
        "added by the webhook: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 5 ms)",
        ms(added(0.50)),
        ms(added(0.99))
    );
    Ok(())
}

/// Creates `n` pods named `<prefix>-<i>`, returning each creation's latency.
async fn create_all(pods: &Api<Pod>, prefix: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{prefix}-{i}"),
                "labels": {registration::INJECT_LABEL: registration::INJECT_ENABLED, "app": "order"},
                "annotations": {annotations::DATABASE_SECRET: "order-db"}
            },
            "spec": {
                "serviceAccountName": "order-service",
                "containers": [{"name": "web", "image": "shop/order:1",
                                "ports": [{"containerPort": 8000}]}]
            }
        }))?;
        let start = Instant::now();
        pods.create(&PostParams::default(), &pod).await?;
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    Ok(latencies)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(label: &str, sorted: &[Duration]) {
    println!(
        "{label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default())
    );
}
