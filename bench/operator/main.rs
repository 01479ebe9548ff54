//! `make bench-operator`: 1,000 EventTopics applied at once against the local environment.
//!
//! Prints the seconds until every EventTopic is Ready and the operator's peak RSS (targets
//! from DESIGN §10: ≤ 60 s, ≤ 100 MiB), and a baseline measured in the same run: one raw
//! CreateTopics request for 1,000 topics, timed until the broker describes all of them.
//! Not a test: it asserts nothing and never runs in CI.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ferry_operator::{
    api::{ConditionStatus, EventTopic},
    crdgen,
    kafka::{KafkaAdmin, NewTopicSpec},
};
use ferry_testkit::{ChildProcess, TempNamespace, TestEnv, unique_name};
use futures::{StreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

/// DESIGN §10: 1,000 EventTopics applied at once.
const TOPICS: usize = 1_000;
/// Concurrent apply requests: what `kubectl apply` of a large directory or a GitOps sync
/// sends at once is of this order.
const APPLY_CONCURRENCY: usize = 32;
/// Give up after this long (5x the target), so the benchmark always ends.
const DEADLINE: Duration = Duration::from_secs(300);

async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
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

/// Waits until the broker describes every topic in `names`.
async fn wait_described(admin: &KafkaAdmin, names: &[String]) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pending = names.to_vec();
    while !pending.is_empty() {
        if start.elapsed() > DEADLINE {
            bail!("{} topics never appeared", pending.len());
        }
        let mut still = Vec::new();
        for chunk in pending.chunks(250) {
            for (name, state) in admin.describe_topics(chunk).await? {
                if !matches!(state, Ok(Some(_))) {
                    still.push(name);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn baseline(admin: &KafkaAdmin) -> anyhow::Result<Duration> {
    let names: Vec<String> = (0..TOPICS).map(|_| unique_name("bench-raw")).collect();
    let specs: Vec<NewTopicSpec> = names
        .iter()
        .map(|name| NewTopicSpec {
            name: name.clone(),
            partitions: 1,
            replication_factor: Some(1),
            config: BTreeMap::new(),
        })
        .collect();
    let start = Instant::now();
    for (name, result) in admin.create_topics(&specs).await? {
        if let Err(refusal) = result {
            bail!("creating {name}: {refusal}");
        }
    }
    wait_described(admin, &names).await?;
    let took = start.elapsed();
    admin.delete_topics(&names).await?;
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = TestEnv::get() else {
        bail!("no environment: run `make env-up`");
    };
    let operator_bin = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: bench_operator <path to ferry-operator>")?;
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(60))?;

    println!("bench-operator: {TOPICS} topics, 1 partition each, on this machine");
    let raw = baseline(&admin).await?;
    println!(
        "baseline: one CreateTopics request for {TOPICS} topics, all described after {:.2} s",
        raw.as_secs_f64()
    );

    let ns = TempNamespace::create(env).await?;
    let client = ns.client();
    install_crds(&client).await?;
    let metrics_port = ferry_testkit::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut envs = env.kafka_args().to_env();
    envs.push(("FERRY_LOG", "warn".to_owned()));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut operator = ChildProcess::spawn(
        "bench-operator",
        &operator_bin,
        &[
            "run",
            "--namespace",
            ns.name(),
            "--lease-namespace",
            ns.name(),
            "--metrics-addr",
            &metrics_addr,
            "--kubeconfig",
            env.kubeconfig(),
        ],
        &envs,
    )?;
    let pid = operator.id().context("operator pid")?;
    // Let it start and take the Lease before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let api = Api::<EventTopic>::namespaced(client.clone(), ns.name());
    let topic_names: Vec<String> = (0..TOPICS).map(|_| unique_name("bench-et")).collect();
    let start = Instant::now();
    let applied: Vec<anyhow::Result<()>> = stream::iter(topic_names.iter().enumerate())
        .map(|(i, topic)| {
            let api = api.clone();
            async move {
                let name = format!("et-{i:04}");
                let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
                    "metadata": {"name": name},
                    "spec": {"topicName": topic, "partitions": 1, "config": {"retention.ms": "3600000"}}});
                api.patch(&name, &PatchParams::apply("ferry-bench"), &Patch::Apply(&body))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect()
        .await;
    applied.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let applied_after = start.elapsed();

    let mut ready = 0;
    while start.elapsed() < DEADLINE {
        let list = api.list(&ListParams::default()).await?;
        ready = list
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Ready"
                            && c.status == ConditionStatus::True
                            && c.observed_generation == t.metadata.generation
                    })
                })
            })
            .count();
        if ready == TOPICS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_ready = start.elapsed();
    // Stay a little longer so the resync and status traffic after convergence is in the peak.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = ferry_testkit::peak_rss_kib(pid).unwrap_or(0);
    let _ = operator.terminate(Duration::from_secs(10)).await;

    println!(
        "applied {TOPICS} EventTopics in {:.2} s",
        applied_after.as_secs_f64()
    );
    if ready == TOPICS {
        println!(
            "operator: all {TOPICS} EventTopics Ready after {:.2} s (target <= 60 s; {:.1}x the raw CreateTopics baseline)",
            all_ready.as_secs_f64(),
            all_ready.as_secs_f64() / raw.as_secs_f64().max(0.001)
        );
    } else {
        println!(
            "operator: only {ready}/{TOPICS} EventTopics Ready after {:.2} s (deadline)",
            all_ready.as_secs_f64()
        );
    }
    println!(
        "operator: peak RSS {:.1} MiB (target <= 100 MiB)",
        rss as f64 / 1024.0
    );
    admin.delete_topics(&topic_names).await?;
    Ok(())
}
