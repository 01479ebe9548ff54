//! The Helm chart (`charts/ferry`) against the real API server: lint, render with default and
//! non-default values and have the API server accept the result (`kubectl apply
//! --dry-run=server`, which runs the real validation, defaulting and admission), refusal of
//! wrong values by `values.schema.json`, and a real install, upgrade and uninstall, with the
//! operator's RBAC checked verb by verb through `kubectl auth can-i --as=<its ServiceAccount>`.
//!
//! KWOK marks the operator's pods Running and Ready without running them, so these tests prove
//! what the chart asks of the cluster, not what the operator then does (the real-node demo does
//! that).
//!
//! The tests live in testkit's tree, beside the environment's smoke tests: the chart belongs to
//! no crate, and a crate of its own would compile one more test binary for the same helpers.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use ferry_testkit::{
    TempNamespace, TestEnv, repo_root, require_env, run, succeed, succeed_with_input, unique_name,
};
use serde_json::Value;

/// `helm --wait` deadline: two operator pods on KWOK nodes are Ready in seconds; a loaded 2-core
/// machine gets minutes.
const HELM_TIMEOUT: &str = "5m";

fn repo() -> PathBuf {
    repo_root()
}

fn chart() -> String {
    repo().join("charts/ferry").display().to_string()
}

fn non_default_values() -> String {
    repo()
        .join("charts/ferry/ci/non-default-values.yaml")
        .display()
        .to_string()
}

fn helm(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = env.command("helm");
    c.args(args);
    c
}

fn kubectl(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = env.command("kubectl");
    c.args(args);
    c
}

/// `[workspace.package] version` of Cargo.toml.
fn crate_version() -> String {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let section = cargo
        .split("[workspace.package]")
        .nth(1)
        .expect("a [workspace.package] section");
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("version"))
        .and_then(|v| v.split('"').nth(1))
        .expect("a version in [workspace.package]")
        .to_owned()
}

/// A top-level `key: value` of Chart.yaml, unquoted.
fn chart_field(key: &str) -> String {
    let text = std::fs::read_to_string(repo().join("charts/ferry/Chart.yaml")).expect("Chart.yaml");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("Chart.yaml has no {key}"))
}

#[test]
fn chart_version_and_image_tags_are_the_crates_version() {
    let version = crate_version();
    assert_eq!(chart_field("version"), version, "Chart.yaml version");
    assert_eq!(
        chart_field("appVersion"),
        version,
        "Chart.yaml appVersion (the images' default tag)"
    );
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let names = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("a CRD directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let generated = repo().join("crds");
    let shipped = repo().join("charts/ferry/crds");
    assert_eq!(names(&generated), names(&shipped), "run `make generate`");
    for name in names(&generated) {
        assert_eq!(
            std::fs::read_to_string(generated.join(&name)).expect("crds/ file"),
            std::fs::read_to_string(shipped.join(&name)).expect("chart crds/ file"),
            "charts/ferry/crds/{name} differs from crds/{name}: run `make generate`"
        );
    }
}

#[tokio::test]
async fn helm_lint_passes_with_default_and_non_default_values() {
    let env = require_env!();
    succeed(helm(env, &["lint", "--strict", &chart()]));
    succeed(helm(
        env,
        &[
            "lint",
            "--strict",
            &chart(),
            "-f",
            &non_default_values(),
            "--set",
            "watchNamespaces={shop}",
        ],
    ));
}

/// Renders the chart and has the API server validate it without storing it; returns the
/// objects as the server would store them.
fn dry_run(env: &TestEnv, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, chart_str(), "-n", namespace];
    args.extend_from_slice(extra);
    let rendered = succeed(helm(env, &args));
    let out = succeed_with_input(
        kubectl(env, &["apply", "--dry-run=server", "-o", "json", "-f", "-"]),
        &rendered,
    );
    let json: Value = serde_json::from_str(&out).expect("kubectl -o json");
    match json["kind"].as_str() {
        Some("List") => json["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![json],
    }
}

fn chart_str() -> &'static str {
    static CHART: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHART.get_or_init(chart)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

fn container_env(deployment: &Value) -> Vec<(String, Value)> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

fn env_value(deployment: &Value, name: &str) -> Option<Value> {
    container_env(deployment)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server_with_default_values() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let objects = dry_run(env, "ferry", ns.name(), &[]);

    let deployment = find(&objects, "Deployment", "ferry-operator");
    assert_eq!(deployment["spec"]["replicas"], 2, "two operator replicas");
    let version = crate_version();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("docker.io/ferry/ferry-operator:{version}")
    );
    assert_eq!(
        env_value(deployment, "FERRY_SIDECAR_IMAGE"),
        Some(Value::from(format!(
            "docker.io/ferry/ferry-sidecar:{version}"
        )))
    );
    assert_eq!(
        env_value(deployment, "FERRY_LEASE_NAMESPACE"),
        Some(Value::from(ns.name())),
        "the Lease lives in the release's namespace"
    );
    assert_eq!(
        env_value(deployment, "FERRY_WEBHOOK_SERVICE"),
        Some(Value::from("ferry-webhook"))
    );
    assert_eq!(
        env_value(deployment, "FERRY_WEBHOOK_CONFIGURATION"),
        Some(Value::from(format!("ferry-{}", ns.name())))
    );
    assert_eq!(
        env_value(deployment, "FERRY_NAMESPACE"),
        None,
        "all namespaces"
    );
    assert_eq!(
        env_value(deployment, "FERRY_KAFKA_PASSWORD").expect("password")["secretKeyRef"]["name"],
        "kafka-admin"
    );
    let pdb = find(&objects, "PodDisruptionBudget", "ferry-operator");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let service = find(&objects, "Service", "ferry-webhook");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    find(
        &objects,
        "ClusterRole",
        &format!("ferry-{}-watch", ns.name()),
    );
    assert!(
        objects.iter().all(|o| o["kind"] != "ServiceMonitor"),
        "no ServiceMonitor unless asked"
    );
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server_with_non_default_values() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let watched = TempNamespace::create(env).await.expect("watched namespace");
    let release = "shop-events";
    let set = format!("watchNamespaces={{{}}}", watched.name());
    let objects = dry_run(
        env,
        release,
        ns.name(),
        &["-f", &non_default_values(), "--set", &set],
    );
    let deployment = find(&objects, "Deployment", "shop-events-ferry-operator");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "ferry-operator-sa"
    );
    for (name, value) in [
        ("FERRY_NAMESPACE", watched.name()),
        ("FERRY_WEBHOOK_FAILURE_POLICY", "Ignore"),
        ("FERRY_WEBHOOK_ADDR", "0.0.0.0:10443"),
        ("FERRY_METRICS_ADDR", "0.0.0.0:9191"),
        ("FERRY_CLIENT_BOOTSTRAP", "kafka-external:9094"),
        ("FERRY_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ("FERRY_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
        (
            "FERRY_KAFKA_OPTIONS",
            "client.id=ferry-operator;ssl.ca.location=/etc/kafka-ca/ca.crt",
        ),
        ("FERRY_LOG", "info,ferry_operator=debug"),
        ("FERRY_LOG_FORMAT", "text"),
        ("FERRY_LEASE_DURATION", "30s"),
        (
            "FERRY_SIDECAR_IMAGE",
            "registry.example/ferry/sidecar:0.1.0-test",
        ),
        ("FERRY_SIDECAR_IMAGE_PULL_POLICY", "Always"),
        ("FERRY_KAFKA_ADMIN_TIMEOUT", "60s"),
    ] {
        assert_eq!(
            env_value(deployment, name),
            Some(Value::from(value)),
            "{name}"
        );
    }
    assert_eq!(
        env_value(deployment, "FERRY_KAFKA_USERNAME").expect("username")["secretKeyRef"],
        serde_json::json!({"name": "ferry-admin", "key": "user"})
    );
    // Watching one namespace: Roles there, no cluster-wide access to Secrets or Deployments.
    let cluster_name = format!("shop-events-ferry-{}", ns.name());
    let role = objects
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == watched.name())
        .expect("a Role in the watched namespace");
    assert_eq!(role["metadata"]["name"], cluster_name.as_str());
    assert!(
        objects
            .iter()
            .all(|o| o["metadata"]["name"] != format!("{cluster_name}-watch").as_str()),
        "no cluster-wide watch role when a namespace is named"
    );
    let pdb = find(
        &objects,
        "PodDisruptionBudget",
        "shop-events-ferry-operator",
    );
    assert_eq!(pdb["spec"]["minAvailable"], 2);

    // The ServiceMonitor's kind is not served here (no prometheus-operator): render it alone and
    // check it selects the metrics Service.
    let monitor = succeed(helm(
        env,
        &[
            "template",
            release,
            chart_str(),
            "-n",
            ns.name(),
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--show-only",
            "templates/servicemonitor.yaml",
        ],
    ));
    assert!(monitor.contains("kind: ServiceMonitor"), "{monitor}");
    assert!(
        monitor.contains("app.kubernetes.io/component: metrics")
            && monitor.contains("port: metrics"),
        "the ServiceMonitor selects the metrics Service's port: {monitor}"
    );
}

#[tokio::test]
async fn values_schema_refuses_wrong_values() {
    let env = require_env!();
    let template = |set: &[&str]| {
        let mut args = vec!["template", "ferry", chart_str()];
        for s in set {
            args.extend_from_slice(&["--set", s]);
        }
        run(helm(env, &args))
    };
    // The defaults render (so each refusal below is the value's doing).
    assert!(template(&[]).status.success());
    for (set, says) in [
        ("replicas=0", "replicas"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("kafka.securityProtocol=TLS", "securityProtocol"),
        ("kafka.bootstrap=no-port", "bootstrap"),
        ("log.format=xml", "format"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("watchNamespaces={Not_A_Name}", "watchNamespaces"),
        ("watchNamespaces={a,b}", "watchNamespaces"),
        ("replica=2", "replica"),
        // An issuer is named, or none is given (the chart's own CA chain).
        ("certManager.issuerRef.kind=Issuer", "issuerRef"),
        ("certManager.issuerRef.kind=Vault", "issuerRef"),
        ("certManager.duration=90d", "duration"),
    ] {
        let out = template(&[set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains(says),
            "--set {set} was refused without naming {says}: {stderr}"
        );
    }
    let out = run(helm(
        env,
        &[
            "template",
            "ferry",
            chart_str(),
            "--set-string",
            "replicas=two",
        ],
    ));
    assert!(!out.status.success(), "a string replica count was accepted");
}

/// Uninstalls the release when a test ends early, so its cluster-scoped objects do not stay.
struct Release<'a> {
    env: &'a TestEnv,
    name: String,
    namespace: String,
    installed: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.installed {
            let _ = run(helm(
                self.env,
                &["uninstall", &self.name, "-n", &self.namespace, "--wait"],
            ));
        }
    }
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
fn can(env: &TestEnv, sa: &str, verb: &str, resource: &str, sub: &str, namespace: &str) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", sa];
    let sub_flag = format!("--subresource={sub}");
    if !sub.is_empty() {
        args.push(&sub_flag);
    }
    if !namespace.is_empty() {
        args.extend_from_slice(&["-n", namespace]);
    }
    let out = run(kubectl(env, &args));
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "kubectl auth can-i {verb} {resource}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Every call the operator makes (operator/src), as `(verb, resource, subresource)` in a
/// namespace it watches.
const WATCHED_NEEDS: &[(&str, &str, &str)] = &[
    // Controllers and the identity pass list and watch both kinds; finalizers are patched.
    ("list", "eventtopics.ferry.dev", ""),
    ("watch", "eventtopics.ferry.dev", ""),
    ("patch", "eventtopics.ferry.dev", ""),
    ("patch", "eventtopics.ferry.dev", "status"),
    ("update", "eventtopics.ferry.dev", "finalizers"),
    ("list", "eventconsumers.ferry.dev", ""),
    ("watch", "eventconsumers.ferry.dev", ""),
    ("patch", "eventconsumers.ferry.dev", ""),
    ("patch", "eventconsumers.ferry.dev", "status"),
    ("update", "eventconsumers.ferry.dev", "finalizers"),
    // Credential Secrets: listed/watched by label, read, applied, deleted.
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("create", "secrets", ""),
    ("patch", "secrets", ""),
    ("delete", "secrets", ""),
    // Worker Deployments: owned, applied, deleted by the finalizer.
    ("get", "deployments.apps", ""),
    ("list", "deployments.apps", ""),
    ("watch", "deployments.apps", ""),
    ("create", "deployments.apps", ""),
    ("patch", "deployments.apps", ""),
    ("delete", "deployments.apps", ""),
    // Opted-in pods, to count those that run a Sidecar-placed consumer's worker.
    ("list", "pods", ""),
    ("watch", "pods", ""),
    // Events through kube-runtime's Recorder.
    ("create", "events.events.k8s.io", ""),
    ("patch", "events.events.k8s.io", ""),
    // EventReplays (issue #18): watched, finalizer, status; per replay a Job, and the Job's
    // ServiceAccount, Role and RoleBinding (get/patch of its status and ledger by name, which
    // the operator must hold to grant); the empty ledger ConfigMap.
    ("list", "eventreplays.ferry.dev", ""),
    ("watch", "eventreplays.ferry.dev", ""),
    ("patch", "eventreplays.ferry.dev", ""),
    ("get", "eventreplays.ferry.dev", "status"),
    ("patch", "eventreplays.ferry.dev", "status"),
    ("update", "eventreplays.ferry.dev", "finalizers"),
    ("get", "eventconsumers.ferry.dev", ""),
    ("get", "jobs.batch", ""),
    ("list", "jobs.batch", ""),
    ("watch", "jobs.batch", ""),
    ("create", "jobs.batch", ""),
    ("create", "serviceaccounts", ""),
    ("patch", "serviceaccounts", ""),
    ("create", "roles.rbac.authorization.k8s.io", ""),
    ("patch", "roles.rbac.authorization.k8s.io", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("patch", "rolebindings.rbac.authorization.k8s.io", ""),
    ("get", "configmaps", ""),
    ("create", "configmaps", ""),
    ("patch", "configmaps", ""),
];

/// A sample of what the operator never calls and must not be able to.
const NEVER: &[(&str, &str, &str)] = &[
    ("create", "pods", ""),
    ("get", "pods", ""),
    ("delete", "pods", ""),
    ("delete", "namespaces", ""),
    ("delete", "serviceaccounts", ""),
    ("update", "secrets", ""),
    ("delete", "eventtopics.ferry.dev", ""),
    ("create", "eventconsumers.ferry.dev", ""),
    ("update", "deployments.apps", "scale"),
    (
        "create",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "",
    ),
    ("escalate", "roles.rbac.authorization.k8s.io", ""),
    ("bind", "roles.rbac.authorization.k8s.io", ""),
    ("create", "pods", "exec"),
];

fn assert_rbac(
    env: &TestEnv,
    sa: &str,
    namespace: &str,
    needs: &[(&str, &str, &str)],
    allowed: bool,
) {
    let wrong: Vec<String> = needs
        .iter()
        .filter(|(verb, resource, sub)| can(env, sa, verb, resource, sub, namespace) != allowed)
        .map(|(verb, resource, sub)| {
            format!(
                "{verb} {resource}{}{sub}",
                if sub.is_empty() { "" } else { "/" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{sa} in namespace {namespace:?} should {}: {wrong:?}",
        if allowed { "be allowed" } else { "be refused" }
    );
}

fn deployment_json(env: &TestEnv, name: &str, namespace: &str) -> Value {
    let out = succeed(kubectl(
        env,
        &["get", "deployment", name, "-n", namespace, "-o", "json"],
    ));
    serde_json::from_str(&out).expect("deployment JSON")
}

fn exists(env: &TestEnv, args: &[&str]) -> bool {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "name", "--ignore-not-found"]);
    !succeed(kubectl(env, &full)).trim().is_empty()
}

#[tokio::test]
async fn chart_installs_upgrades_and_uninstalls_with_least_privilege_rbac() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("release namespace");
    let watched = TempNamespace::create(env).await.expect("watched namespace");
    let elsewhere = TempNamespace::create(env).await.expect("another namespace");
    let release = unique_name("ferry");
    let namespace = ns.name().to_owned();
    let operator = format!("{release}-operator");
    let sa = format!("system:serviceaccount:{namespace}:{operator}");
    let cluster_name = format!("{release}-{namespace}");
    let lease = format!("leases.coordination.k8s.io/{operator}");
    let webhook_secret = format!("secrets/{release}-webhook-tls");
    let webhook_configuration =
        format!("mutatingwebhookconfigurations.admissionregistration.k8s.io/{cluster_name}");
    let contracts_configuration =
        format!("validatingwebhookconfigurations.admissionregistration.k8s.io/{cluster_name}");

    succeed(kubectl(
        env,
        &[
            "create",
            "secret",
            "generic",
            "kafka-admin",
            "-n",
            &namespace,
            "--from-literal=username=admin",
            "--from-literal=password=unused-here",
        ],
    ));
    let mut guard = Release {
        env,
        name: release.clone(),
        namespace: namespace.clone(),
        installed: true,
    };
    succeed(helm(
        env,
        &[
            "install",
            &release,
            chart_str(),
            "-n",
            &namespace,
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ],
    ));
    let deployment = deployment_json(env, &operator, &namespace);
    assert_eq!(
        deployment["status"]["readyReplicas"], 2,
        "two Ready replicas"
    );
    for crd in [
        "eventtopics.ferry.dev",
        "eventconsumers.ferry.dev",
        "eventreplays.ferry.dev",
    ] {
        assert!(exists(env, &["crd", crd]), "helm installed CRD {crd}");
    }
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        assert!(
            exists(env, &[kind, &cluster_name]),
            "the release's (empty) {kind}, for the operator to fill in"
        );
    }

    // All namespaces: what the operator calls, in any namespace; its own objects by name.
    assert_rbac(env, &sa, elsewhere.name(), WATCHED_NEEDS, true);
    assert_rbac(env, &sa, elsewhere.name(), NEVER, false);
    assert_rbac(
        env,
        &sa,
        &namespace,
        &[
            ("create", "leases.coordination.k8s.io", ""),
            ("get", &lease, ""),
            ("patch", &lease, ""),
            ("create", "secrets", ""),
            ("get", &webhook_secret, ""),
            ("list", &webhook_secret, ""),
            ("watch", &webhook_secret, ""),
            ("update", &webhook_secret, ""),
        ],
        true,
    );
    assert_rbac(
        env,
        &sa,
        &namespace,
        &[
            ("patch", "leases.coordination.k8s.io/someone-elses", ""),
            ("delete", &lease, ""),
            ("update", "secrets/someone-elses", ""),
        ],
        false,
    );
    assert_rbac(
        env,
        &sa,
        "",
        &[
            ("patch", &webhook_configuration, ""),
            ("patch", &contracts_configuration, ""),
        ],
        true,
    );
    assert_rbac(
        env,
        &sa,
        "",
        &[
            (
                "patch",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io/other",
                "",
            ),
            (
                "create",
                "validatingwebhookconfigurations.admissionregistration.k8s.io",
                "",
            ),
            ("delete", &webhook_configuration, ""),
            ("list", "nodes", ""),
            ("create", "clusterroles.rbac.authorization.k8s.io", ""),
        ],
        false,
    );

    // Upgrade to one watched namespace: Roles there, nothing elsewhere.
    let set = format!("watchNamespaces={{{}}}", watched.name());
    succeed(helm(
        env,
        &[
            "upgrade",
            &release,
            chart_str(),
            "-n",
            &namespace,
            "--set",
            &set,
            "--set",
            "log.level=debug",
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
        ],
    ));
    let deployment = deployment_json(env, &operator, &namespace);
    assert_eq!(
        env_value(&deployment, "FERRY_NAMESPACE"),
        Some(Value::from(watched.name()))
    );
    assert_eq!(
        env_value(&deployment, "FERRY_LOG"),
        Some(Value::from("debug"))
    );
    assert_rbac(env, &sa, watched.name(), WATCHED_NEEDS, true);
    assert_rbac(env, &sa, watched.name(), NEVER, false);
    assert_rbac(env, &sa, elsewhere.name(), WATCHED_NEEDS, false);
    assert!(
        !exists(env, &["clusterrole", &format!("{cluster_name}-watch")]),
        "the cluster-wide role is gone once a namespace is named"
    );

    succeed(helm(
        env,
        &["uninstall", &release, "-n", &namespace, "--wait"],
    ));
    guard.installed = false;
    assert!(!exists(env, &["deployment", &operator, "-n", &namespace]));
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        assert!(
            !exists(env, &[kind, &cluster_name]),
            "the {kind} goes with the release (no failurePolicy=Fail webhook left behind)"
        );
    }
    assert!(!exists(
        env,
        &["clusterrole", &format!("{cluster_name}-webhook")]
    ));
    for crd in [
        "eventtopics.ferry.dev",
        "eventconsumers.ferry.dev",
        "eventreplays.ferry.dev",
    ] {
        assert!(exists(env, &["crd", crd]), "CRD {crd} is kept on uninstall");
    }
}

/// cert-manager's version whose CRDs the chart's `certManager` objects are checked against.
const CERT_MANAGER_VERSION: &str = "v1.21.2";

/// Installs cert-manager's Issuer and Certificate CRDs in the test API server (idempotent),
/// from cert-manager's Go module (its `deploy/crds/`), fetched through the Go module proxy the
/// environment builds Kubernetes from and cached where `make env-up` caches its modules. Only
/// the CRDs: no cert-manager controller or cainjector runs here.
fn install_cert_manager_crds(env: &TestEnv) {
    let mut go = env.command("go");
    go.args([
        "mod",
        "download",
        "-json",
        &format!("github.com/cert-manager/cert-manager@{CERT_MANAGER_VERSION}"),
    ])
    .current_dir(std::env::temp_dir());
    if std::env::var_os("GOMODCACHE").is_none() {
        let cache = std::env::var_os("FERRY_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ferry")))
            .expect("FERRY_CACHE or HOME");
        go.env("GOMODCACHE", cache.join("go/mod"));
    }
    let module: Value = serde_json::from_str(&succeed(go)).expect("go mod download -json");
    let crds = Path::new(module["Dir"].as_str().expect("the module's Dir")).join("deploy/crds");
    for file in [
        "cert-manager.io_issuers.yaml",
        "cert-manager.io_certificates.yaml",
    ] {
        let path = crds.join(file).display().to_string();
        // Server-side: the Issuer CRD is larger than client-side apply's annotation allows.
        succeed(kubectl(
            env,
            &["apply", "--server-side", "--force-conflicts", "-f", &path],
        ));
    }
    succeed(kubectl(
        env,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "crd/issuers.cert-manager.io",
            "crd/certificates.cert-manager.io",
        ],
    ));
}

fn volume_secret(deployment: &Value, volume: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == volume)
        .and_then(|v| v["secret"]["secretName"].as_str())
        .map(str::to_owned)
}

fn mount_path(deployment: &Value, volume: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn rendered_chart_with_cert_manager_is_accepted_by_the_api_server() {
    let env = require_env!();
    install_cert_manager_crds(env);
    let ns = TempNamespace::create(env).await.expect("namespace");
    let namespace = ns.name();

    // The chart's own CA chain.
    let objects = dry_run(
        env,
        "ferry",
        namespace,
        &["--set", "certManager.enabled=true"],
    );
    let self_signed = find(&objects, "Issuer", "ferry-selfsigned");
    assert!(self_signed["spec"]["selfSigned"].is_object());
    let ca = find(&objects, "Certificate", "ferry-webhook-ca");
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "ferry-selfsigned");
    let ca_issuer = find(&objects, "Issuer", "ferry-webhook-ca");
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let leaf = find(&objects, "Certificate", "ferry-webhook");
    assert_eq!(leaf["spec"]["issuerRef"]["name"], "ferry-webhook-ca");
    assert_eq!(leaf["spec"]["issuerRef"]["kind"], "Issuer");
    // The names the operator's own CA signs for --webhook-service (webhook::Endpoint).
    let service = "ferry-webhook";
    assert_eq!(
        leaf["spec"]["dnsNames"],
        serde_json::json!([
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
            format!("{service}.{namespace}"),
            service,
        ])
    );
    find(&objects, "Service", service);
    let secret = leaf["spec"]["secretName"].as_str().expect("secretName");

    let configuration = find(
        &objects,
        "MutatingWebhookConfiguration",
        &format!("ferry-{namespace}"),
    );
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{namespace}/ferry-webhook"),
        "cainjector fills in the caBundle from the webhook's Certificate"
    );

    let deployment = find(&objects, "Deployment", "ferry-operator");
    let dir = env_value(deployment, "FERRY_WEBHOOK_CERT_DIR").expect("FERRY_WEBHOOK_CERT_DIR");
    assert_eq!(
        mount_path(deployment, "webhook-cert").map(Value::from),
        Some(dir),
        "the flag names the directory the Secret is mounted at"
    );
    assert_eq!(
        volume_secret(deployment, "webhook-cert").as_deref(),
        Some(secret),
        "the mounted Secret is the one cert-manager writes"
    );
    assert_eq!(
        env_value(deployment, "FERRY_WEBHOOK_SECRET"),
        None,
        "no Secret of the operator's own"
    );
    let role = find(&objects, "Role", "ferry-operator");
    assert!(
        role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .all(|r| !r["resources"].to_string().contains("secrets")),
        "the operator needs no access to Secrets in its namespace: {role}"
    );

    // A user's ClusterIssuer, beside extra volumes of their own: no chain of the chart's.
    let objects = dry_run(
        env,
        "ferry",
        namespace,
        &[
            "-f",
            &non_default_values(),
            "--set",
            "certManager.enabled=true",
            "--set",
            "certManager.issuerRef.name=corp-ca",
            "--set",
            "certManager.issuerRef.kind=ClusterIssuer",
        ],
    );
    assert!(
        objects.iter().all(|o| o["kind"] != "Issuer"),
        "no Issuer when one is given"
    );
    let leaf = find(&objects, "Certificate", "ferry-webhook");
    assert_eq!(
        leaf["spec"]["issuerRef"],
        serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    let deployment = find(&objects, "Deployment", "ferry-operator");
    assert!(volume_secret(deployment, "webhook-cert").is_some());
    assert!(
        volume_secret(deployment, "kafka-ca").is_some(),
        "the user's extraVolumes stay beside the certificate's"
    );
    assert!(mount_path(deployment, "kafka-ca").is_some());

    // NOTES say cert-manager must be installed.
    let notes = succeed(helm(
        env,
        &[
            "install",
            "ferry",
            chart_str(),
            "-n",
            namespace,
            "--dry-run=client",
            "--set",
            "certManager.enabled=true",
        ],
    ));
    assert!(
        notes.contains("cert-manager, which must be installed"),
        "{notes}"
    );
}
