//! `make bench-operator`: the operator at scale against the local environment, three scenarios
//! (`bench-operator <ferry-operator> [topics|consumers|topics-10k]`, all three by default):
//!
//! - `topics`: 1,000 EventTopics applied at once: seconds until all are Ready and peak RSS
//!   (DESIGN §10: ≤ 60 s, ≤ 100 MiB).
//! - `consumers`: 1,000 EventConsumers, two retry tiers each, over 1,000 EventTopics, applied
//!   at once: seconds until all are Ready (their worker Deployments' pods run on KWOK), peak
//!   RSS, and the operator's CPU per lag round over 1,000 groups (targets: ≤ 120 s; ≤ 1 s of
//!   CPU per round).
//! - `topics-10k`: 10,000 EventTopics applied at once: seconds until all are Ready and peak RSS
//!   (targets: ≤ 5 minutes, Strimzi's figure being 10,000 topic events in under 10 minutes;
//!   ≤ 150 MiB at 10,000 resources).
//!
//! Each prints a baseline measured in the same run: one raw CreateTopics request for as many
//! topics, timed until the broker describes all of them, and the raw apply time of the objects
//! through the API server; `consumers` also times as many raw one-replica Deployments until
//! all are available, the floor the environment sets under its worker Deployments. Not a test: it asserts nothing and never runs in CI.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    pin::pin,
    time::{Duration, Instant},
};

#[path = "../support.rs"]
mod support;

use anyhow::{Context, bail};
use ferry_operator::{
    api::{ConditionStatus, EventConsumer, EventTopic},
    kafka::{KafkaAdmin, NewTopicSpec},
};
use ferry_testkit::{TempNamespace, TestEnv, unique_name};
use futures::{StreamExt, stream};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// DESIGN §10: 1,000 EventTopics (or EventConsumers) applied at once.
const TOPICS: usize = 1_000;
/// Issue #13: 10,000 EventTopics applied at once.
const MANY_TOPICS: usize = 10_000;
/// Service accounts the benchmark's consumers share (a team has a few, not one per consumer).
const SERVICE_ACCOUNTS: usize = 50;
/// The lag interval the consumer scenario runs with, and how many rounds it times.
const LAG_INTERVAL_SECS: u64 = 10;
const LAG_ROUNDS: u64 = 6;
/// Concurrent apply requests: what `kubectl apply` of a large directory or a GitOps sync
/// sends at once is of this order.
const APPLY_CONCURRENCY: usize = 32;
/// Give up after this long, so the benchmark always ends.
const DEADLINE: Duration = Duration::from_secs(900);

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

async fn baseline(admin: &KafkaAdmin, count: usize) -> anyhow::Result<Duration> {
    let names: Vec<String> = (0..count).map(|_| unique_name("bench-raw")).collect();
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
    for chunk in specs.chunks(1_000) {
        for (name, result) in admin.create_topics(chunk).await? {
            if let Err(refusal) = result {
                bail!("creating {name}: {refusal}");
            }
        }
    }
    wait_described(admin, &names).await?;
    let took = start.elapsed();
    for chunk in names.chunks(1_000) {
        admin.delete_topics(chunk).await?;
    }
    Ok(took)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(env) = TestEnv::get() else {
        bail!("no environment: run `make env-up`");
    };
    let mut args = std::env::args().skip(1);
    let operator_bin = args
        .next()
        .map(PathBuf::from)
        .context("usage: bench-operator <path to ferry-operator> [topics|consumers|topics-10k]")?;
    let scenarios: Vec<String> = match args.next() {
        Some(one) => vec![one],
        None => vec!["topics".into(), "consumers".into(), "topics-10k".into()],
    };
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(120))?;
    let bin = operator_bin.to_string_lossy().into_owned();
    for scenario in scenarios {
        match scenario.as_str() {
            "topics" => topics(env, &admin, &bin, TOPICS, 60, 100).await?,
            "topics-10k" => topics(env, &admin, &bin, MANY_TOPICS, 300, 150).await?,
            "consumers" => consumers(env, &admin, &bin).await?,
            other => bail!("unknown scenario {other}: topics, consumers or topics-10k"),
        }
    }
    Ok(())
}

/// Applies `count` EventTopics named `<prefix>-NNNNN` (Kafka names unique), at most
/// [`APPLY_CONCURRENCY`] requests at once; their Kafka names.
async fn apply_topics(
    api: &Api<EventTopic>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..count).map(|_| unique_name("bench-et")).collect();
    apply_all(
        api,
        names.iter().enumerate().map(|(i, topic)| {
            let name = format!("{prefix}-{i:05}");
            let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
                "metadata": {"name": name},
                "spec": {"topicName": topic, "partitions": 1, "deletionPolicy": "Delete",
                         "config": {"retention.ms": "3600000"}}});
            (name, body)
        }),
    )
    .await?;
    Ok(names)
}

/// Server-side applies each `(name, body)`, at most [`APPLY_CONCURRENCY`] requests at once, as
/// `kubectl apply` of a large directory or a GitOps sync would.
async fn apply_all<K>(
    api: &Api<K>,
    objects: impl Iterator<Item = (String, serde_json::Value)>,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let applied: Vec<anyhow::Result<()>> = stream::iter(objects)
        .map(|(name, body)| {
            let api = api.clone();
            async move {
                api.patch(
                    &name,
                    &PatchParams::apply("ferry-bench"),
                    &Patch::Apply(&body),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(APPLY_CONCURRENCY)
        .collect()
        .await;
    applied.into_iter().collect()
}

/// Whether an object's `Ready` condition is True for its current generation.
fn is_ready(
    conditions: Option<&[ferry_operator::api::Condition]>,
    generation: Option<i64>,
) -> bool {
    conditions.is_some_and(|conditions| {
        conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.status == ConditionStatus::True
                && c.observed_generation == generation
        })
    })
}

/// Watches `api` until `count` of its objects are `ready` or [`DEADLINE`] passes since `start`;
/// how many were Ready and when. A watch, not a list per poll, so that waiting adds almost no
/// load to the API server the operator is being measured against. Ends early if the `operator`
/// process exits.
async fn wait_all<K>(
    start: Instant,
    count: usize,
    operator: u32,
    api: &Api<K>,
    ready: impl Fn(&K) -> bool,
) -> anyhow::Result<(usize, Duration)>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    // A watch error (a loaded API server dropping it) is retried with backoff, not the end of
    // the run.
    let mut events = pin!(watcher(api.clone(), watcher::Config::default()).default_backoff());
    // Each object's readiness by name, how many of those are true, and a relist in progress.
    let (mut states, mut n, mut relist) = (HashMap::new(), 0, HashMap::new());
    while n < count && start.elapsed() < DEADLINE {
        if exited(operator) {
            bail!("the operator (pid {operator}) exited during the run, {n}/{count} Ready");
        }
        // Wake at least every 500 ms to check the process and the deadline.
        let Ok(event) = tokio::time::timeout(Duration::from_millis(500), events.next()).await
        else {
            continue;
        };
        match event.context("the watch ended")? {
            Ok(watcher::Event::Init) => relist.clear(),
            Ok(watcher::Event::InitApply(obj)) => {
                relist.insert(obj.name_any(), ready(&obj));
            }
            Ok(watcher::Event::InitDone) => {
                states = std::mem::take(&mut relist);
                n = states.values().filter(|r| **r).count();
            }
            Ok(watcher::Event::Apply(obj)) => {
                let now = ready(&obj);
                let was = states.insert(obj.name_any(), now) == Some(true);
                n = n + usize::from(now) - usize::from(was);
            }
            Ok(watcher::Event::Delete(obj)) => {
                n -= usize::from(states.remove(&obj.name_any()) == Some(true));
            }
            Err(e) => eprintln!("(watch failed, retrying: {e:#})"),
        }
    }
    Ok((n, start.elapsed()))
}

/// Whether an EventTopic is Ready: what both scenarios wait for on their topics.
fn topic_ready(topic: &EventTopic) -> bool {
    is_ready(
        topic.status.as_ref().map(|s| &s.conditions[..]),
        topic.metadata.generation,
    )
}

fn report_ready(
    what: &str,
    count: usize,
    ready: usize,
    took: Duration,
    target: u64,
    raw: Duration,
) {
    if ready == count {
        println!(
            "operator: all {count} {what} Ready after {:.2} s (target <= {target} s; {:.1}x the raw CreateTopics baseline)",
            took.as_secs_f64(),
            took.as_secs_f64() / raw.as_secs_f64().max(0.001)
        );
    } else {
        println!(
            "operator: only {ready}/{count} {what} Ready after {:.2} s (deadline)",
            took.as_secs_f64()
        );
    }
}

/// `count` EventTopics applied at once.
async fn topics(
    env: &'static TestEnv,
    admin: &KafkaAdmin,
    operator_bin: &str,
    count: usize,
    target_secs: u64,
    target_mib: u64,
) -> anyhow::Result<()> {
    println!("bench-operator: {count} EventTopics, 1 partition each, on this machine");
    let raw = baseline(admin, count).await?;
    println!(
        "baseline: CreateTopics for {count} topics, all described after {:.2} s",
        raw.as_secs_f64()
    );
    let ns = TempNamespace::create(env).await?;
    let client = ns.client();
    support::install_crds(&client).await?;
    let (mut operator, _) = support::spawn_operator(env, operator_bin, ns.name(), &[])?;
    let pid = operator.id().context("operator pid")?;
    // Let it start and take the Lease before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let api = Api::<EventTopic>::namespaced(client.clone(), ns.name());
    let start = Instant::now();
    let kafka_names = apply_topics(&api, "et", count).await?;
    let applied_after = start.elapsed();
    let (ready, took) = wait_all(start, count, pid, &api, topic_ready).await?;
    // Stay a little longer so the resync and status traffic after convergence is in the peak.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = ferry_testkit::peak_rss_kib(pid).unwrap_or(0);
    println!(
        "baseline: applied {count} EventTopics through the API server in {:.2} s",
        applied_after.as_secs_f64()
    );
    report_ready("EventTopics", count, ready, took, target_secs, raw);
    println!(
        "operator: peak RSS {:.1} MiB (target <= {target_mib} MiB)",
        rss as f64 / 1024.0
    );
    delete_all(&api, &[]).await;
    let _ = operator.terminate(Duration::from_secs(10)).await;
    for chunk in kafka_names.chunks(1_000) {
        let _ = admin.delete_topics(chunk).await;
    }
    Ok(())
}

/// Deletes every EventTopic (and `consumers`' EventConsumers first) while the operator runs,
/// so their finalizers clean Kafka up; gives up after a few minutes. The API server ends a
/// DeleteCollection at its request timeout (60 s; about 6,000 EventTopics here), so it is sent
/// again while objects are left that are not being deleted yet.
async fn delete_all(topics: &Api<EventTopic>, consumers: &[&Api<EventConsumer>]) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        let mut left = 0;
        for api in consumers {
            left += delete_remaining(api).await;
        }
        left += delete_remaining(topics).await;
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    println!("(cleanup: some objects still had finalizers after 5 minutes)");
}

/// How many objects `api` still holds; sends a DeleteCollection if some are not being deleted.
async fn delete_remaining<K>(api: &Api<K>) -> usize
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = ListParams::default();
    let Ok(items) = api.list_metadata(&list).await.map(|l| l.items) else {
        return 1;
    };
    if items
        .iter()
        .any(|o| o.metadata.deletion_timestamp.is_none())
    {
        // It returns when done or at the API server's request timeout; the next round looks
        // again either way.
        let _ = api
            .delete_collection(&kube::api::DeleteParams::default(), &list)
            .await;
    }
    items.len()
}

/// Fake node capacity for the consumer scenario's worker pods: KWOK keeps a node annotated
/// `kwok.x-k8s.io/node: fake` Ready and runs its pods; the environment's two hold 110 each.
async fn add_fake_node(client: &kube::Client, name: &str, pods: usize) -> anyhow::Result<()> {
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": pods.to_string()},
                   "capacity": {"cpu": "1000", "memory": "4Ti", "pods": pods.to_string()}}});
    nodes
        .patch(
            name,
            &PatchParams::apply("ferry-bench").force(),
            &Patch::Apply(&node),
        )
        .await?;
    Ok(())
}

/// The environment's floor for the consumer scenario: `count` one-replica Deployments applied
/// at once, timed until every one is available (the controller-manager makes their
/// ReplicaSets and pods, the scheduler places them, KWOK marks them running), then deleted and
/// waited for, so the operator's run starts on a quiet API server.
async fn raw_deployments(
    client: &kube::Client,
    namespace: &str,
    count: usize,
) -> anyhow::Result<Duration> {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let start = Instant::now();
    apply_all(
        &api,
        (0..count).map(|i| {
            let name = format!("raw-{i:05}");
            let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "labels": {"ferry.dev/bench": "raw"}},
                "spec": {"replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name, "ferry.dev/bench": "raw"}},
                        "spec": {"containers": [{"name": "worker", "image": "ferry-sidecar:bench",
                            "args": ["worker"], "ports": [{"name": "metrics", "containerPort": 9090}]}]}}}});
            (name, body)
        }),
    )
    .await?;
    let available = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
            >= 1
    };
    loop {
        if start.elapsed() > DEADLINE {
            bail!("raw Deployments: not all available after {DEADLINE:?}");
        }
        match api.list(&ListParams::default()).await {
            Ok(list) if list.items.iter().filter(|d| available(d)).count() == count => break,
            Ok(_) => {}
            Err(e) => eprintln!("(listing failed, retrying: {e:#})"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = start.elapsed();
    let _ = api
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let raw = ListParams::default().labels("ferry.dev/bench=raw");
    let cleanup = Instant::now();
    while cleanup.elapsed() < Duration::from_secs(300) {
        if pods
            .list(&raw)
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(took)
}

/// How many reconciles of `kind` the operator ran, finished or failed
/// (`ferry_operator_reconciles_total` and `ferry_operator_reconcile_errors_total`), from its
/// /metrics on `port`.
async fn reconciles(port: u16, kind: &str) -> Option<u64> {
    let (_, body) = ferry_testkit::http_get(port, "/metrics").await?;
    let counted = |l: &&str| {
        l.starts_with("ferry_operator_reconciles_total{")
            || l.starts_with("ferry_operator_reconcile_errors_total{")
    };
    let kind = format!("kind=\"{kind}\"");
    Some(
        body.lines()
            .filter(|l| counted(l) && l.contains(&kind))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Whether process `pid` has exited (a zombie, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// CPU seconds (user + system) `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // CLK_TCK is 100 on Linux.
    Some(ticks / 100.0)
}

/// 1,000 EventConsumers with two retry tiers each over 1,000 EventTopics, applied at once.
async fn consumers(
    env: &'static TestEnv,
    admin: &KafkaAdmin,
    operator_bin: &str,
) -> anyhow::Result<()> {
    let count = TOPICS;
    println!(
        "bench-operator: {count} EventConsumers (retry tiers 5s and 1m, {SERVICE_ACCOUNTS} service accounts) over {count} EventTopics"
    );
    // Each consumer makes three topics (two tiers and its dead-letter topic).
    let raw = baseline(admin, 3 * count).await?;
    println!(
        "baseline: CreateTopics for {} topics (the consumers' retry and dead-letter topics), all described after {:.2} s",
        3 * count,
        raw.as_secs_f64()
    );
    let ns = TempNamespace::create(env).await?;
    let client = ns.client();
    support::install_crds(&client).await?;
    let node = unique_name("kwok-bench");
    add_fake_node(&client, &node, count + 100).await?;
    // FERRY_BENCH_RAW_DEPLOYMENTS=off skips this baseline (it takes minutes).
    let raw_deployments = if std::env::var("FERRY_BENCH_RAW_DEPLOYMENTS").as_deref() == Ok("off") {
        None
    } else {
        let took = raw_deployments(&client, ns.name(), count).await?;
        println!(
            "baseline: {count} raw one-replica Deployments applied and all available after {:.2} s (the environment's floor: controller-manager, scheduler, KWOK)",
            took.as_secs_f64()
        );
        Some(took)
    };
    let lag_interval = format!("{LAG_INTERVAL_SECS}s");
    let (mut operator, metrics_port) = support::spawn_operator(
        env,
        operator_bin,
        ns.name(),
        &["--lag-interval", &lag_interval],
    )?;
    let pid = operator.id().context("operator pid")?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let topics = Api::<EventTopic>::namespaced(client.clone(), ns.name());
    let kafka_names = apply_topics(&topics, "et", count).await?;
    let (ready, _) = wait_all(Instant::now(), count, pid, &topics, topic_ready).await?;
    if ready < count {
        bail!("only {ready}/{count} EventTopics Ready: no consumer scenario");
    }

    let api = Api::<EventConsumer>::namespaced(client.clone(), ns.name());
    let start = Instant::now();
    apply_all(
        &api,
        (0..count).map(|i| {
            let name = format!("ec-{i:05}");
            let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
                "metadata": {"name": name},
                "spec": {"topics": [format!("et-{i:05}")],
                         "serviceAccount": format!("bench-{}", i % SERVICE_ACCOUNTS),
                         "retry": {"delays": ["5s", "1m"]},
                         "delivery": {"http": {"url": "http://127.0.0.1:9/events"}}}});
            (name, body)
        }),
    )
    .await?;
    let applied_after = start.elapsed();
    let waited = wait_all(start, count, pid, &api, |c: &EventConsumer| {
        is_ready(
            c.status.as_ref().map(|s| &s.conditions[..]),
            c.metadata.generation,
        )
    })
    .await;
    let (ready, took) = match waited {
        Ok(r) => r,
        Err(e) => bail!("{e:#}; its exit status: {:?}", operator.try_status()),
    };
    println!(
        "baseline: applied {count} EventConsumers through the API server in {:.2} s",
        applied_after.as_secs_f64()
    );
    report_ready("EventConsumers", count, ready, took, 120, raw);
    // How often each EventConsumer was reconciled on its way to Ready (every owned
    // Deployment's status change wakes it): the operator's work per consumer.
    if let Some(total) = reconciles(metrics_port, "EventConsumer").await {
        println!(
            "operator: {total} EventConsumer reconciles until all Ready ({:.1} per consumer)",
            total as f64 / count as f64
        );
    }
    if let (Some(floor), true) = (raw_deployments, ready == count) {
        println!(
            "operator: EventConsumers Ready {:.2} s after the raw Deployments' floor ({:.1}x it)",
            took.as_secs_f64() - floor.as_secs_f64(),
            took.as_secs_f64() / floor.as_secs_f64().max(0.001)
        );
    }

    // Lag rounds: once everything has settled, the operator's CPU over a few rounds. It
    // includes whatever else runs meanwhile (reconciles a changed lag triggers), so it bounds
    // the round's own cost from above.
    tokio::time::sleep(Duration::from_secs(LAG_INTERVAL_SECS)).await;
    let before = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(LAG_INTERVAL_SECS * LAG_ROUNDS)).await;
    let spent = cpu_seconds(pid).unwrap_or(0.0) - before;
    println!(
        "operator: {:.3} s of CPU per lag round over {count} groups ({spent:.2} s over {LAG_ROUNDS} rounds of {LAG_INTERVAL_SECS} s; target <= 1 s)",
        spent / LAG_ROUNDS as f64
    );
    let rss = ferry_testkit::peak_rss_kib(pid).unwrap_or(0);
    println!(
        "operator: peak RSS {:.1} MiB with {} resources (target <= 150 MiB at 10,000)",
        rss as f64 / 1024.0,
        2 * count
    );
    delete_all(&topics, &[&api]).await;
    let _ = operator.terminate(Duration::from_secs(10)).await;
    let _ = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .delete(&node, &Default::default())
        .await;
    for chunk in kafka_names.chunks(1_000) {
        let _ = admin.delete_topics(chunk).await;
    }
    Ok(())
}
