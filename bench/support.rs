//! What the operator benchmarks share: the CRDs installed from the operator's own types, and a
//! release `ferry-operator` watching the benchmark's namespace.

use std::time::Duration;

use anyhow::Context as _;
use ferry_operator::crdgen;
use ferry_testkit::{ChildProcess, TestEnv, free_port};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

/// Applies every CRD (server-side apply, idempotent) and gives the API server a moment to
/// serve them.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in crdgen::crds() {
        let name = crd.metadata.name.clone().context("CRD name")?;
        api.patch(
            &name,
            &PatchParams::apply("ferry-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// `operator_bin run` for `namespace` (its Lease there too), logging only warnings unless
/// `FERRY_BENCH_OPERATOR_LOG` says otherwise, with
/// `extra` flags appended.
pub fn spawn_operator(
    env: &TestEnv,
    operator_bin: &str,
    namespace: &str,
    extra: &[&str],
) -> anyhow::Result<(ChildProcess, u16)> {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut envs = env.kafka_args().to_env();
    // FERRY_BENCH_OPERATOR_LOG (e.g. `info`) to see what the operator does during a run.
    envs.push((
        "FERRY_LOG",
        std::env::var("FERRY_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".to_owned()),
    ));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec![
        "run",
        "--namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--metrics-addr",
        &metrics_addr,
        "--kubeconfig",
        env.kubeconfig(),
    ];
    args.extend_from_slice(extra);
    Ok((
        ChildProcess::spawn("bench-operator", operator_bin, &args, &envs)?,
        metrics_port,
    ))
}
