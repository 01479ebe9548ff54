//! The real operator binary, run with the identity of the chart's ServiceAccount (a token of it,
//! nothing else), does its whole job in a watched namespace: leader Lease, webhook certificate
//! and registration, an EventTopic with a producer (topic, credential Secret, ACLs, status,
//! Events), an EventConsumer (its worker Deployment), and both deletions through finalizers —
//! and never hears "forbidden" from the API server. `kubectl auth can-i` (testkit's chart test)
//! checks the rules one by one; this checks that they are enough.
//!
//! The chart is installed watching one namespace (Roles there), so this operator touches
//! nothing outside it and runs beside every other test.

use std::{path::PathBuf, process::Stdio, time::Duration};

use ferry_testkit::{
    TempNamespace, TempPath, TestEnv, free_port, http_get, repo_root, require_env, run, succeed,
    succeed_with_input, unique_name, wait_for,
};
use serde_json::{Value, json};

mod support;

/// How long a reconcile chain may take on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);

fn kubectl(env: &TestEnv, args: &[&str]) -> std::process::Command {
    let mut c = env.command("kubectl");
    c.args(args);
    c
}

/// The object as JSON, or None when it does not exist.
fn get(env: &TestEnv, kind: &str, name: &str, namespace: Option<&str>) -> Option<Value> {
    let mut args = vec!["get", kind, name, "-o", "json", "--ignore-not-found"];
    if let Some(ns) = namespace {
        args.extend_from_slice(&["-n", ns]);
    }
    let out = succeed(kubectl(env, &args));
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).expect("kubectl JSON"))
}

fn apply(env: &TestEnv, object: &Value) {
    succeed_with_input(
        kubectl(
            env,
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "ferry-tests",
                "-f",
                "-",
            ],
        ),
        &object.to_string(),
    );
}

fn ready(object: &Value) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A kubeconfig for the test API server that authenticates with `token` only.
fn token_kubeconfig(env: &TestEnv, token: &str, path: &PathBuf) {
    let admin: Value = serde_json::from_str(&succeed(kubectl(
        env,
        &["config", "view", "--raw", "--minify", "-o", "json"],
    )))
    .expect("kubeconfig JSON");
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "operator",
    });
    std::fs::write(path, config.to_string()).expect("write kubeconfig");
}

struct Release<'a> {
    env: &'a TestEnv,
    name: String,
    namespace: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut c = self.env.command("helm");
        c.args(["uninstall", &self.name, "-n", &self.namespace, "--wait"]);
        let _ = run(c);
    }
}

#[tokio::test]
async fn the_operator_does_its_job_with_only_the_charts_rbac() {
    let env = require_env!();
    let admin = env.kube_client().await.expect("client");
    support::install_crds(&admin).await.expect("CRDs");
    let ns = TempNamespace::create(env).await.expect("release namespace");
    let watched = TempNamespace::create(env).await.expect("watched namespace");
    let release = unique_name("ferry");
    let namespace = ns.name().to_owned();
    let operator = format!("{release}-operator");
    let configuration = format!("{release}-{namespace}");
    let webhook_secret = format!("{release}-webhook-tls");

    let set = format!("watchNamespaces={{{}}}", watched.name());
    let chart = repo_root().join("charts/ferry").display().to_string();
    let mut helm = env.command("helm");
    helm.args([
        "install",
        &release,
        &chart,
        "-n",
        &namespace,
        "--set",
        &set,
        "--set",
        "replicas=1",
    ]);
    succeed(helm);
    let _release = Release {
        env,
        name: release.clone(),
        namespace: namespace.clone(),
    };

    // The operator's identity: a token of the chart's ServiceAccount, nothing more.
    let token = succeed(kubectl(
        env,
        &[
            "create",
            "token",
            &operator,
            "-n",
            &namespace,
            "--duration",
            "1h",
        ],
    ));
    let dir = TempPath::new("ferry-sa");
    std::fs::create_dir_all(&*dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    token_kubeconfig(env, token.trim(), &kubeconfig);
    // With the other spawned binaries' logs when `make test` collects them (its log audit).
    let log_path = std::env::var_os("FERRY_TEST_LOGS")
        .map_or_else(|| dir.to_path_buf(), std::path::PathBuf::from)
        .join(format!("{operator}.log"));
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).expect("log directory");
    }
    let log = std::fs::File::create(&log_path).expect("log file");

    let metrics_port = free_port();
    let webhook_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let webhook_addr = format!("127.0.0.1:{webhook_port}");
    let webhook_url = format!("https://127.0.0.1:{webhook_port}");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-operator"));
    command
        .args([
            "run",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--namespace",
            watched.name(),
            "--lease-namespace",
            &namespace,
            "--lease-name",
            &operator,
            "--lease-duration",
            "3",
            "--metrics-addr",
            &metrics_addr,
            "--resync-interval",
            "2s",
            "--webhook-addr",
            &webhook_addr,
            "--webhook-url",
            &webhook_url,
            "--webhook-configuration",
            &configuration,
            "--webhook-secret",
            &webhook_secret,
            "--log-format",
            "text",
        ])
        .envs(env.kafka_args().to_env())
        .env("FERRY_POD_NAME", "chart-rbac")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the operator starts");

    // Leader Lease (get/create/patch in the release namespace).
    wait_for("the operator to lead", CONVERGE, || async {
        http_get(metrics_port, "/metrics")
            .await
            .is_some_and(|(_, body)| {
                body.lines()
                    .any(|l| l.starts_with("ferry_operator_leader ") && l.ends_with(" 1"))
            })
    })
    .await;
    // Webhook certificate Secret (create) and registration (patch of the chart's object).
    wait_for("the webhooks to be registered", CONVERGE, || async {
        [
            "mutatingwebhookconfiguration",
            "validatingwebhookconfiguration",
        ]
        .iter()
        .all(|kind| {
            get(env, kind, &configuration, None)
                .is_some_and(|c| c["webhooks"][0]["clientConfig"]["caBundle"].is_string())
        })
    })
    .await;
    assert!(get(env, "secret", &webhook_secret, Some(&namespace)).is_some());

    // An EventTopic with a producer: topic, credential Secret, ACLs, status, finalizer.
    let topic = unique_name("chart-rbac");
    apply(
        env,
        &json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": topic, "namespace": watched.name()},
            "spec": {"partitions": 1, "replicationFactor": 1, "deletionPolicy": "Delete",
                     "producers": [{"serviceAccount": "publisher"}]}
        }),
    );
    wait_for("the EventTopic to be Ready", CONVERGE, || async {
        get(env, "eventtopic", &topic, Some(watched.name())).is_some_and(|t| ready(&t))
    })
    .await;
    assert!(
        get(env, "secret", "ferry-kafka-publisher", Some(watched.name())).is_some(),
        "the producer's credential Secret"
    );

    // An EventConsumer: its worker Deployment (server-side apply) and status.
    apply(
        env,
        &json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "reader", "namespace": watched.name()},
            "spec": {"topics": [topic], "serviceAccount": "reader",
                     "delivery": {"http": {"url": "http://127.0.0.1:9/events"}}}
        }),
    );
    wait_for("the worker Deployment", CONVERGE, || async {
        get(env, "deployment", "reader-worker", Some(watched.name())).is_some()
    })
    .await;
    wait_for("the EventConsumer's status", CONVERGE, || async {
        get(env, "eventconsumer", "reader", Some(watched.name()))
            .is_some_and(|c| c["status"]["observedGeneration"].is_number())
    })
    .await;

    // Deletions through the finalizers: the workers, then the Kafka topic.
    succeed(kubectl(
        env,
        &[
            "delete",
            "eventconsumer",
            "reader",
            "-n",
            watched.name(),
            "--wait=false",
        ],
    ));
    wait_for("the EventConsumer to be gone", CONVERGE, || async {
        get(env, "eventconsumer", "reader", Some(watched.name())).is_none()
            && get(env, "deployment", "reader-worker", Some(watched.name())).is_none()
    })
    .await;
    succeed(kubectl(
        env,
        &[
            "delete",
            "eventtopic",
            &topic,
            "-n",
            watched.name(),
            "--wait=false",
        ],
    ));
    wait_for("the EventTopic to be gone", CONVERGE, || async {
        get(env, "eventtopic", &topic, Some(watched.name())).is_none()
    })
    .await;

    let _ = child.start_kill();
    let _ = child.wait().await;
    let logged = std::fs::read_to_string(&log_path).expect("operator log");
    let forbidden: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC refused the operator:\n{}",
        forbidden.join("\n")
    );
}
