//! The example manifests people apply (`kubectl apply -k examples/shop`, `examples/kafka`) are
//! accepted by the real API server with strict field validation, against Ferry's CRDs (so the
//! EventTopics and EventConsumers pass the CRDs' schemas and CEL rules), and say what the shop
//! needs: injection labels, the three topics with their retention, both consumer placements.
//!
//! Each example is applied with `--dry-run=server` through a throwaway overlay that moves it into
//! a test namespace, so nothing is stored and runs never collide.

use std::path::{Component, Path, PathBuf};

use ferry_testkit::{TempNamespace, TestEnv, repo_root, require_env, succeed, unique_name};
use serde_json::Value;

/// The two CRDs (not the tenancy policy, whose fields the chart's release may own).
const CRDS: [&str; 2] = ["eventtopics.ferry.dev", "eventconsumers.ferry.dev"];

fn kubectl(env: &TestEnv, args: &[&str]) -> std::process::Command {
    let mut c = env.command("kubectl");
    c.args(args);
    c
}

/// Ferry's CRDs in the API server, established (the tests that apply them agree on content).
fn install_crds(env: &TestEnv) {
    for crd in CRDS {
        let file = repo_root().join(format!("crds/{crd}.yaml"));
        succeed(kubectl(
            env,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "ferry-tests",
                "-f",
                &file.display().to_string(),
            ],
        ));
        succeed(kubectl(
            env,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=120s",
                &format!("crd/{crd}"),
            ],
        ));
    }
}

/// `to` relative to directory `from` (kustomize takes only relative paths to a base).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let depth = from
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut path = PathBuf::new();
    for _ in 0..depth {
        path.push("..");
    }
    path.join(to.strip_prefix("/").unwrap_or(to))
}

/// A throwaway overlay of `base` (a kustomization directory) into `namespace`, without `base`'s
/// own Namespace object and without the `drop`ped objects (`kind`, `name`).
struct Overlay {
    dir: PathBuf,
}

impl Overlay {
    fn new(base: &Path, namespace: &str, base_namespace: &str, drop: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir()
            .canonicalize()
            .expect("temp dir")
            .join(unique_name("ferry-overlay"));
        std::fs::create_dir_all(&dir).expect("overlay dir");
        let mut patches = format!(
            "  - patch: |-\n      $patch: delete\n      apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: {base_namespace}\n"
        );
        for (kind, name) in drop {
            patches.push_str(&format!(
                "  - patch: |-\n      $patch: delete\n      apiVersion: ferry.dev/v1alpha1\n      kind: {kind}\n      metadata:\n        name: {name}\n"
            ));
        }
        let kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\nnamespace: {namespace}\npatches:\n{patches}",
            relative(&dir, base).display()
        );
        std::fs::write(dir.join("kustomization.yaml"), kustomization).expect("kustomization");
        Overlay { dir }
    }

    /// The objects as the API server would store them (`--dry-run=server`, strict validation).
    fn dry_run(&self, env: &TestEnv) -> Vec<Value> {
        let out = succeed(kubectl(
            env,
            &[
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-o",
                "json",
                "-k",
                &self.dir.display().to_string(),
            ],
        ));
        let json: Value = serde_json::from_str(&out).expect("kubectl -o json");
        json["items"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[tokio::test]
async fn shop_manifests_are_accepted_by_the_api_server() {
    let env = require_env!();
    install_crds(env);
    let ns = TempNamespace::create(env).await.expect("namespace");
    let overlay = Overlay::new(&repo_root().join("examples/shop"), ns.name(), "shop", &[]);
    let objects = overlay.dry_run(env);

    for service in ["user-service", "order-service", "notification-service"] {
        let deployment = named(&objects, "Deployment", service);
        let template = &deployment["spec"]["template"];
        assert_eq!(
            template["metadata"]["labels"]["ferry.dev/inject"], "enabled",
            "{service} opts in to injection"
        );
        assert_eq!(template["spec"]["serviceAccountName"], service);
        named(&objects, "ServiceAccount", service);
        named(&objects, "Service", service);
        named(&objects, "Secret", &format!("{service}-db"));
    }
    for publisher in ["user-service", "order-service"] {
        let annotations = &named(&objects, "Deployment", publisher)["spec"]["template"]["metadata"]
            ["annotations"];
        assert_eq!(
            annotations["ferry.dev/outbox-database-secret"],
            format!("{publisher}-db"),
            "{publisher} gets the outbox relay"
        );
    }

    let users = named(&objects, "EventTopic", "users-v1");
    assert_eq!(users["spec"]["topicName"], "users.v1");
    assert_eq!(users["spec"]["config"]["cleanup.policy"], "compact");
    let orders = named(&objects, "EventTopic", "orders-v1");
    assert_eq!(orders["spec"]["topicName"], "orders.v1");
    assert_eq!(orders["spec"]["config"]["retention.ms"], "604800000");
    assert_eq!(
        named(&objects, "EventTopic", "dlq-v1")["spec"]["topicName"],
        "dlq.v1"
    );

    let notifications = named(&objects, "EventConsumer", "notification-service-orders");
    assert_eq!(notifications["spec"]["topics"][0], "orders-v1");
    assert_eq!(notifications["spec"]["deadLetter"]["topic"], "dlq-v1");
    assert_eq!(notifications["spec"]["idempotency"]["enabled"], true);
    let placement = &notifications["spec"]["placement"];
    assert!(
        placement.is_null() || placement == "Deployment",
        "the notification consumer runs in its own Deployment: {placement}"
    );

    let sidecar = named(&objects, "EventConsumer", "order-service-users");
    assert_eq!(sidecar["spec"]["placement"], "Sidecar");
    assert_eq!(sidecar["spec"]["podSelector"]["app"], "order-service");
    assert_eq!(sidecar["spec"]["delivery"]["http"]["port"], 8000);
}

#[tokio::test]
async fn kafka_example_is_accepted_by_the_api_server() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let overlay = Overlay::new(&repo_root().join("examples/kafka"), ns.name(), "kafka", &[]);
    let objects = overlay.dry_run(env);
    let secret = named(&objects, "Secret", "kafka-admin");
    assert!(
        secret["data"]["username"].is_string() && secret["data"]["password"].is_string(),
        "the admin credential Secret has the chart's default keys"
    );
    let config = named(&objects, "ConfigMap", "kafka-config")["data"]["server.properties"]
        .as_str()
        .expect("server.properties")
        .to_owned();
    for line in [
        "process.roles=broker,controller",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        "auto.create.topics.enable=false",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "server.properties lacks {line}"
        );
    }
    named(&objects, "StatefulSet", "kafka");
    named(&objects, "Service", "kafka");
}
