//! `make bench-webhook`: what the injection webhook adds to a pod creation (issue: injection).
//!
//! Creates 1,000 opted-in pods through the API server while the release `ferry-operator`
//! answers admission, and 1,000 more of the same pods with the webhook configuration removed:
//! the baseline, in the same run. The two interleave in blocks of 50 (the configuration deleted
//! and re-created between blocks), with the operator running throughout, so that the machine's
//! load, the operator's own work and the pods piling up in the namespace weigh on both sides
//! alike; each creation counts on the side its answer shows (the pod injected or not). Prints
//! p50/p99/max of each, their difference (target: the webhook adds ≤ 5 ms p99) and how many
//! webhook calls the API server made per pod (its `/metrics`). A third side splits that
//! difference: the pod as the webhook answered it, created as written (without the inject
//! label, so no webhook is called), shows what the bigger pod costs the API server by itself;
//! a fourth, the same pod opted in (the webhook finds it injected and answers without a patch),
//! what calling any webhook costs here, the floor under Ferry's. Last, the mean of a webhook call as the API server times it beside the operator's own
//! answer time (both histograms, read before and after): what the call's transport costs.
//! Not a test: it asserts nothing and never runs in CI.

use std::time::{Duration, Instant};

#[path = "../support.rs"]
mod support;

use anyhow::{Context, bail};
use ferry_operator::webhook::{annotations, registration};
use ferry_testkit::{TempNamespace, TestEnv, free_port, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    core::v1::{Namespace, Pod, ServiceAccount},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;

/// The figure: 1,000 pod creations each way.
const PODS: usize = 1_000;
/// Creations per block between two switches of the configuration: small enough that a change
/// of the machine's load hits both sides, large enough that switching (and waiting for the API
/// server to see the switch) stays a small part of the run.
const BLOCK: usize = 50;
/// Give the operator this long to start and register (a cold start on a loaded machine).
const START_DEADLINE: Duration = Duration::from_secs(120);
/// How long the API server may take to see the configuration created or deleted.
const SWITCH_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let operator_bin = std::env::args()
        .nth(1)
        .context("usage: bench-webhook <path to the release ferry-operator>")?;
    let env = TestEnv::get().context("no environment: run `make env-up` first")?;
    // A previous run's thousands of pods still being deleted would load the API server, etcd
    // and the scheduler through this one.
    wait_until_no_namespace_terminates(env).await?;
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
    let (mut operator, metrics_port) = support::spawn_operator(
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
            // The leader re-applies its configuration only at start within the run, so a
            // removed configuration stays removed for its block.
            "--resync-interval",
            "1h",
        ],
    )?;
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let start = Instant::now();
    let registered = loop {
        if let Some(c) = configs.get_opt(&configuration).await? {
            break c;
        }
        if start.elapsed() > START_DEADLINE {
            bail!("the operator did not register its webhook within {START_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut copy = registered.clone();
    copy.metadata = kube::api::ObjectMeta {
        name: registered.metadata.name.clone(),
        labels: registered.metadata.labels.clone(),
        ..Default::default()
    };

    let pods = Api::<Pod>::namespaced(client.clone(), ns.name());
    let mut bench = Bench {
        pods,
        next: 0,
        with: Vec::with_capacity(PODS),
        without: Vec::with_capacity(PODS),
        pre_injected: Vec::with_capacity(PODS),
        no_patch: Vec::with_capacity(PODS),
        template: None,
        probes_with: 0,
    };
    // The first creations warm both paths (connections, caches); not measured.
    bench.switch(true).await?;
    for _ in 0..20 {
        bench.create().await?;
    }
    bench.with.clear();
    bench.without.clear();
    bench.probes_with = 0;
    let template = bench
        .template
        .clone()
        .context("no warm-up creation came back injected")?;
    let calls_before = env.webhook_calls(registration::WEBHOOK_NAME);
    let api_server_before = api_server_call_time(env);
    let answers_before = webhook_answer_time(metrics_port).await;
    let mut present = true;
    while bench.with.len() < PODS
        || bench.without.len() < PODS
        || bench.pre_injected.len() < PODS
        || bench.no_patch.len() < PODS
    {
        let want = bench.with.len() <= bench.without.len();
        if want != present {
            if want {
                configs.create(&PostParams::default(), &copy).await?;
            } else {
                configs
                    .delete(&configuration, &DeleteParams::default())
                    .await?;
            }
            bench.switch(want).await?;
            present = want;
        }
        for _ in 0..BLOCK {
            bench.create().await?;
            bench.create_pre_injected(&template, present).await?;
        }
    }
    let calls = env
        .webhook_calls(registration::WEBHOOK_NAME)
        .saturating_sub(calls_before);
    let Bench {
        with,
        without,
        pre_injected,
        no_patch,
        probes_with,
        ..
    } = bench;
    let with_count = with.len() + probes_with + no_patch.len();
    let api_server = api_server_call_time(env).since(&api_server_before);
    let answers = webhook_answer_time(metrics_port)
        .await
        .since(&answers_before);
    operator.terminate(Duration::from_secs(20)).await?;
    let _ = configs
        .delete(&configuration, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(&configuration, &DeleteParams::default())
        .await;

    // Leave the cluster as found, so the next run starts quiet too.
    drop(ns);
    wait_until_no_namespace_terminates(env).await?;

    let with = sorted(&with[..PODS]);
    let without = sorted(&without[..PODS]);
    let pre_injected = sorted(&pre_injected[..PODS]);
    let no_patch = sorted(&no_patch[..PODS]);
    println!(
        "bench-webhook: {PODS} opted-in pod creations each, one at a time, through the API server, with and without the webhook configuration in alternating blocks of {BLOCK}"
    );
    report("with the webhook", &with);
    report("baseline (no webhook configuration)", &without);
    report(
        "the injected pod as written (no webhook called)",
        &pre_injected,
    );
    report(
        "the injected pod as written, opted in (the webhook called, answers without a patch)",
        &no_patch,
    );
    let diff = |a: &[Duration], b: &[Duration], q: f64| ms(percentile(a, q)) - ms(percentile(b, q));
    println!(
        "added by the webhook: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 5 ms)",
        diff(&with, &without, 0.50),
        diff(&with, &without, 0.99)
    );
    println!(
        "  of which the bigger pod: p50 {:.2} ms, p99 {:.2} ms; the webhook call: p50 {:.2} ms, p99 {:.2} ms (differences of percentiles: a split, not a sum)",
        diff(&pre_injected, &without, 0.50),
        diff(&pre_injected, &without, 0.99),
        diff(&with, &pre_injected, 0.50),
        diff(&with, &pre_injected, 0.99)
    );
    println!(
        "  calling a webhook that answers without a patch (the floor of any webhook on this API server): p50 {:.2} ms, p99 {:.2} ms",
        diff(&no_patch, &pre_injected, 0.50),
        diff(&no_patch, &pre_injected, 0.99)
    );
    println!(
        "webhook calls by the API server: {calls} for {with_count} opted-in pods ({:.2} per pod)",
        calls as f64 / with_count.max(1) as f64
    );
    println!(
        "  a call as the API server times it: mean {:.2} ms over {} calls; the operator's answer as it times it: mean {:.3} ms over {} reviews; the rest of a call is transport (TLS, HTTP/2) and both sides' JSON",
        api_server.mean_ms(),
        api_server.count,
        answers.mean_ms(),
        answers.count
    );
    println!(
        "  calls within 5 ms as the API server times them: {:.1}% (p99 <= 5 ms needs 99%)",
        api_server.within_5ms_percent()
    );
    Ok(())
}

/// How long a namespace of a previous run may take to go (thousands of pods).
const QUIET_DEADLINE: Duration = Duration::from_secs(600);

/// Waits until no namespace is being deleted.
async fn wait_until_no_namespace_terminates(env: &'static TestEnv) -> anyhow::Result<()> {
    let namespaces = Api::<Namespace>::all(env.kube_client().await?);
    let start = Instant::now();
    let mut said = false;
    loop {
        let terminating = namespaces
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|n| n.metadata.deletion_timestamp.is_some())
            .filter_map(|n| n.metadata.name)
            .collect::<Vec<_>>();
        if terminating.is_empty() {
            return Ok(());
        }
        if !said {
            eprintln!(
                "waiting for namespaces being deleted: {}",
                terminating.join(", ")
            );
            said = true;
        }
        if start.elapsed() > QUIET_DEADLINE {
            bail!("namespaces still being deleted after {QUIET_DEADLINE:?}: {terminating:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The sum and count of a Prometheus histogram (a mean between two scrapes).
#[derive(Debug, Default, Clone, Copy)]
struct SumCount {
    sum: f64,
    count: u64,
    /// Observations of at most 5 ms (the `le="0.005"` bucket: the API server's histogram has it).
    within_5ms: u64,
}

impl SumCount {
    /// The `<family>_sum` and `<family>_count` samples of `scrape` whose labels contain
    /// `labels`, added up.
    fn read(scrape: &str, family: &str, labels: &str) -> SumCount {
        let mut total = SumCount::default();
        for line in scrape.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !name.contains(labels) {
                continue;
            }
            let base = name.split('{').next().unwrap_or(name);
            if base == format!("{family}_sum") {
                total.sum += value.parse::<f64>().unwrap_or(0.0);
            } else if base == format!("{family}_count") {
                total.count += value.parse::<f64>().unwrap_or(0.0) as u64;
            } else if base == format!("{family}_bucket") && name.contains("le=\"0.005\"") {
                total.within_5ms += value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
        total
    }

    fn since(&self, before: &SumCount) -> SumCount {
        SumCount {
            sum: self.sum - before.sum,
            count: self.count.saturating_sub(before.count),
            within_5ms: self.within_5ms.saturating_sub(before.within_5ms),
        }
    }

    /// The share of observations of at most 5 ms, in percent.
    fn within_5ms_percent(&self) -> f64 {
        self.within_5ms as f64 * 100.0 / self.count.max(1) as f64
    }

    fn mean_ms(&self) -> f64 {
        self.sum / self.count.max(1) as f64 * 1e3
    }
}

/// The API server's own timing of its calls to Ferry's webhook (its `/metrics`).
fn api_server_call_time(env: &TestEnv) -> SumCount {
    let mut kubectl = env.command("kubectl");
    kubectl.args(["get", "--raw", "/metrics"]);
    SumCount::read(
        &ferry_testkit::succeed(kubectl),
        "apiserver_admission_webhook_admission_duration_seconds",
        &format!("name=\"{}\"", registration::WEBHOOK_NAME),
    )
}

/// The operator's own timing of its answers (`ferry_operator_admission_duration_seconds`).
async fn webhook_answer_time(metrics_port: u16) -> SumCount {
    let scrape = ferry_testkit::http_get(metrics_port, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    SumCount::read(&scrape, "ferry_operator_admission_duration_seconds", "")
}

/// The pods created so far, and each measured creation's latency by its side.
struct Bench {
    pods: Api<Pod>,
    next: usize,
    with: Vec<Duration>,
    without: Vec<Duration>,
    /// The injected pod created as written, with no webhook called.
    pre_injected: Vec<Duration>,
    /// The same, opted in: the webhook is called and leaves it alone (no patch).
    no_patch: Vec<Duration>,
    /// The first pod that came back injected: what the pre-injected side creates.
    template: Option<Pod>,
    probes_with: usize,
}

impl Bench {
    /// Creates one opted-in pod and records its latency on the side its answer shows.
    async fn create(&mut self) -> anyhow::Result<bool> {
        self.next += 1;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": format!("pod-{}", self.next),
                "labels": {registration::INJECT_LABEL: registration::INJECT_ENABLED, "app": "order"},
                "annotations": {annotations::DATABASE_SECRET: "order-db"}
            },
            "spec": {
                "serviceAccountName": "order-service",
                // Requests, as a service's pods have: a BestEffort pod turned Burstable by the
                // relay's requests gets the memory-pressure toleration from the environment's
                // PodTolerationRestriction plugin when the API server runs it again after the
                // webhook, and so a second webhook call (not Ferry's doing; see the report).
                "containers": [{"name": "web", "image": "shop/order:1",
                                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                                "ports": [{"containerPort": 8000}]}]
            }
        }))?;
        let start = Instant::now();
        let created = self.pods.create(&PostParams::default(), &pod).await?;
        let latency = start.elapsed();
        let injected = created
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(annotations::INJECTED));
        if injected {
            self.with.push(latency);
            if self.template.is_none() {
                self.template = Some(created);
            }
        } else {
            self.without.push(latency);
        }
        Ok(injected)
    }

    /// Creates the pod the webhook made, as written: its spec (containers, volumes, what the API
    /// server defaulted) and annotations. Without the inject label no webhook sees it; with it
    /// (`opted_in`, while the configuration is present) the webhook is called, finds it already
    /// injected and answers without a patch.
    async fn create_pre_injected(&mut self, template: &Pod, opted_in: bool) -> anyhow::Result<()> {
        self.next += 1;
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        if !opted_in {
            labels.remove(registration::INJECT_LABEL);
        }
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("pod-{}", self.next)),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let start = Instant::now();
        self.pods.create(&PostParams::default(), &pod).await?;
        let latency = start.elapsed();
        if opted_in {
            self.no_patch.push(latency);
        } else {
            self.pre_injected.push(latency);
        }
        Ok(())
    }

    /// Creates pods (not measured) until one comes back `injected` as asked: the API server has
    /// seen the configuration created or deleted.
    async fn switch(&mut self, injected: bool) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let (with, without) = (self.with.len(), self.without.len());
            let seen = self.create().await?;
            // A probe is not measured.
            self.with.truncate(with);
            self.without.truncate(without);
            if seen {
                self.probes_with += 1;
            }
            if seen == injected {
                return Ok(());
            }
            if start.elapsed() > SWITCH_DEADLINE {
                bail!(
                    "the API server did not see the webhook configuration switched within {SWITCH_DEADLINE:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn sorted(latencies: &[Duration]) -> Vec<Duration> {
    let mut v = latencies.to_vec();
    v.sort_unstable();
    v
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
