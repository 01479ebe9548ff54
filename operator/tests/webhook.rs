//! The injection webhook against the real kube-apiserver calling the real operator binary
//! (DESIGN §6): the API server sends every labelled pod creation to `ferry-operator run`'s
//! `/mutate`, over TLS with the operator's own certificate, and stores what it answers.

mod consumer_support;
mod support;

use std::{sync::Arc, time::Duration};

use ferry_operator::webhook::{annotations, cert, registration, sidecar};
use ferry_testkit::{TempNamespace, TestEnv, eventually, free_port, require_env, unique_name};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{MANAGER, Operator, install_crds};

/// An operator starts, makes its certificate, syncs its cache and registers within this on a
/// loaded 2-core CI.
const WITHIN: Duration = Duration::from_secs(90);

/// One operator serving the webhook for one namespace, with its own configuration name.
struct Webhook {
    operator: Operator,
    configuration: String,
    port: u16,
}

fn start(env: &TestEnv, ns: &str, identity: &str, configuration: &str, port: u16) -> Operator {
    let addr = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    Operator::start(
        env,
        ns,
        identity,
        &[
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--webhook-configuration",
            configuration,
            "--sidecar-image",
            "ferry-sidecar:test",
        ],
    )
}

impl Webhook {
    async fn start(env: &TestEnv, ns: &TempNamespace) -> Webhook {
        let configuration = unique_name("ferry-webhook");
        let port = free_port();
        let operator = start(env, ns.name(), "a", &configuration, port);
        let webhook = Webhook {
            operator,
            configuration,
            port,
        };
        webhook.wait_registered(&ns.client()).await;
        webhook
    }

    /// Waits until the configuration trusts the CA in the certificate Secret.
    async fn wait_registered(&self, client: &Client) -> String {
        let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
        let name = self.configuration.clone();
        eventually("what the expect below names", WITHIN, || {
            let configs = configs.clone();
            let name = name.clone();
            async move {
                let c = configs.get(&name).await.ok()?;
                let bundle = c.webhooks?.first()?.client_config.ca_bundle.clone()?;
                String::from_utf8(bundle.0).ok()
            }
        })
        .await
        .expect("the webhook configuration is registered")
    }

    async fn remove(self, client: &Client) {
        support::remove_webhook_configurations(client, &self.configuration).await;
    }
}

async fn service_account(ns: &TempNamespace, name: &str) {
    Api::<ServiceAccount>::namespaced(ns.client(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("sa"),
        )
        .await
        .expect("service account");
}

async fn producer_topic(ns: &TempNamespace, service_account: &str) {
    let api = Api::<ferry_operator::api::EventTopic>::namespaced(ns.client(), ns.name());
    api.patch(
        "orders",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": "orders"},
            "spec": {"topicName": format!("{}.orders", ns.name()),
                     "producers": [{"serviceAccount": service_account}]}
        })),
    )
    .await
    .expect("EventTopic");
}

/// A namespace with the CRDs, `accounts` as service accounts, `producer` (if any) a producer
/// of an EventTopic, and an operator serving the webhook for it.
async fn setup(
    env: &'static TestEnv,
    accounts: &[&str],
    producer: Option<&str>,
) -> (TempNamespace, Webhook) {
    let ns = TempNamespace::create(env).await.expect("namespace");
    install_crds(&ns.client()).await.expect("CRDs");
    for account in accounts {
        service_account(&ns, account).await;
    }
    if let Some(producer) = producer {
        producer_topic(&ns, producer).await;
    }
    let webhook = Webhook::start(env, &ns).await;
    (ns, webhook)
}

fn pod(name: &str, labels: Value, annotations: Value, service_account: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "web", "image": "shop/order:1",
                            "ports": [{"containerPort": 8000, "name": "http"}]}]
        }
    })
}

/// An opted-in pod that asks for a relay, running as `service_account`.
fn relay_pod(name: &str, service_account: &str) -> Value {
    pod(
        name,
        inject(),
        json!({annotations::DATABASE_SECRET: "db"}),
        service_account,
    )
}

fn inject() -> Value {
    json!({registration::INJECT_LABEL: registration::INJECT_ENABLED})
}

/// Creates a pod; the API server's refusal message on error.
async fn create_pod(ns: &TempNamespace, body: Value) -> Result<Pod, String> {
    let pod: Pod = serde_json::from_value(body).expect("a pod");
    Api::<Pod>::namespaced(ns.client(), ns.name())
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => s.message,
            other => other.to_string(),
        })
}

/// Creates a pod through the raw API, returning the API server's `Warning` headers.
async fn create_pod_warnings(ns: &TempNamespace, body: Value) -> Vec<String> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{}/pods", ns.name()))
        .create(
            &PostParams::default(),
            serde_json::to_vec(&body).expect("json"),
        )
        .expect("request");
    let response = ns
        .client()
        .send(request.map(kube::client::Body::from))
        .await
        .expect("the API server answers");
    assert!(
        response.status().is_success(),
        "pod creation failed: {}",
        response.status()
    );
    response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn relays(pod: &Pod) -> Vec<&k8s_openapi::api::core::v1::Container> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter(|c| c.name == sidecar::RELAY_CONTAINER)
        .collect()
}

#[tokio::test]
async fn a_labelled_deployments_pods_carry_exactly_one_relay() {
    let env = require_env!();
    let (ns, webhook) = setup(env, &["order-service"], Some("order-service")).await;

    let deployments = Api::<Deployment>::namespaced(ns.client(), ns.name());
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "order"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "order"}},
            "template": {
                "metadata": {
                    "labels": {"app": "order", registration::INJECT_LABEL: registration::INJECT_ENABLED},
                    "annotations": {
                        annotations::DATABASE_SECRET: "order-db/dsn",
                        annotations::TABLE: "outbox",
                        annotations::NOTIFY: "true"
                    }
                },
                "spec": {
                    "serviceAccountName": "order-service",
                    "initContainers": [{"name": "migrate", "image": "shop/order:1", "args": ["migrate"]}],
                    "containers": [{"name": "web", "image": "shop/order:1",
                                    "ports": [{"containerPort": 8000}, {"containerPort": 9464}]}]
                }
            }
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("Deployment created");

    let pods = Api::<Pod>::namespaced(ns.client(), ns.name());
    let created = eventually("what the expect below names", WITHIN, || async {
        let list = pods
            .list(&ListParams::default().labels("app=order"))
            .await
            .ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await
    .expect("the controller-manager creates both pods through admission");
    for pod in &created {
        let relays = relays(pod);
        assert_eq!(relays.len(), 1, "exactly one relay: {pod:?}");
        let relay = relays[0];
        let spec = pod.spec.as_ref().expect("spec");
        let init: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, vec!["migrate", sidecar::RELAY_CONTAINER]);
        assert_eq!(relay.restart_policy.as_deref(), Some("Always"));
        assert_eq!(relay.image.as_deref(), Some("ferry-sidecar:test"));
        assert_eq!(relay.args, Some(vec!["relay".to_owned()]));
        let env = relay.env.as_ref().expect("env");
        let by_name = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("{n} missing: {env:?}"))
        };
        let db = by_name("FERRY_DATABASE_URL")
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("DSN by reference");
        assert_eq!((db.name.as_str(), db.key.as_str()), ("order-db", "dsn"));
        let password = by_name("FERRY_KAFKA_PASSWORD")
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("password by reference");
        assert_eq!(password.name, "ferry-kafka-order-service");
        assert!(
            env.iter()
                .all(|e| e.value.as_deref().is_none_or(|v| !v.contains("postgres"))),
            "no secret value is copied into the pod: {env:?}"
        );
        assert_eq!(
            by_name("FERRY_OUTBOX_NOTIFY").value.as_deref(),
            Some("true")
        );
        // 9464 is the service's: the relay moved to the next port, and its probes follow.
        let port = &relay.ports.as_ref().expect("ports")[0];
        assert_eq!(port.container_port, 9465);
        assert_eq!(
            by_name("FERRY_METRICS_ADDR").value.as_deref(),
            Some("0.0.0.0:9465")
        );
        let sc = relay.security_context.as_ref().expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert!(relay.readiness_probe.is_some() && relay.liveness_probe.is_some());
        assert_eq!(
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(annotations::INJECTED))
                .map(String::as_str),
            Some("relay")
        );
        // Nothing else changed: the service's container is as written.
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].name, "web");
    }
    // The Deployment in Git stays as written.
    let stored = deployments.get("order").await.expect("deployment");
    let template = stored.spec.expect("spec").template.spec.expect("template");
    assert_eq!(template.init_containers.expect("init").len(), 1);

    webhook.remove(&ns.client()).await;
}

#[tokio::test]
async fn unlabelled_pods_are_untouched_bad_annotations_denied_and_non_producers_warned() {
    let env = require_env!();
    let (ns, webhook) = setup(env, &["order-service", "stranger"], Some("order-service")).await;

    // Not labelled: the API server never asks the webhook, even with Ferry's annotations.
    let plain = create_pod(
        &ns,
        pod(
            "plain",
            json!({"app": "x"}),
            json!({annotations::DATABASE_SECRET: "db"}),
            "order-service",
        ),
    )
    .await
    .expect("unlabelled pod created");
    assert!(relays(&plain).is_empty(), "{plain:?}");

    // A typo is refused with the annotation's name.
    let message = create_pod(
        &ns,
        pod(
            "typo",
            inject(),
            json!({annotations::DATABASE_SECRET: "db", "ferry.dev/outbox-tabel": "outbox"}),
            "order-service",
        ),
    )
    .await
    .expect_err("a typo is denied");
    assert!(
        message.contains("ferry.dev/outbox-tabel"),
        "the message names the annotation: {message}"
    );
    let message = create_pod(
        &ns,
        pod(
            "bad-size",
            inject(),
            json!({annotations::DATABASE_SECRET: "db", annotations::BATCH_SIZE: "lots"}),
            "order-service",
        ),
    )
    .await
    .expect_err("a malformed value is denied");
    assert!(
        message.contains(annotations::BATCH_SIZE) && message.contains("lots"),
        "{message}"
    );

    // A service account that produces to nothing: allowed, with a warning.
    let warnings = create_pod_warnings(&ns, relay_pod("stranger", "stranger")).await;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("stranger") && w.contains("producer")),
        "a warning about the non-producer: {warnings:?}"
    );
    let producer = create_pod_warnings(&ns, relay_pod("producer", "order-service")).await;
    assert!(
        producer.is_empty(),
        "no warning for a producer: {producer:?}"
    );

    // A pod that already carries a relay (re-applied from an injected one) gets no second.
    let pods = Api::<Pod>::namespaced(ns.client(), ns.name());
    let injected = pods.get("producer").await.expect("pod");
    assert_eq!(relays(&injected).len(), 1);
    let mut copy = serde_json::to_value(&injected).expect("json");
    copy["metadata"] = json!({"name": "copy", "labels": inject(),
                              "annotations": {annotations::DATABASE_SECRET: "db"}});
    copy["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("nodeName");
    copy.as_object_mut().expect("pod").remove("status");
    let copied = create_pod(&ns, copy).await.expect("copy created");
    assert_eq!(relays(&copied).len(), 1, "{copied:?}");

    // Every answer is counted by the pod's namespace and outcome: the two relays injected, the
    // two denials, three left as they were (the copy, and the API server's second call for
    // each injected pod: these pods set no requests, so the relay's turn them Burstable and
    // PodTolerationRestriction changes them after the webhook; see webhook_reinvocation.rs),
    // the one warning, and seven timed answers.
    let metrics = webhook
        .operator
        .metrics()
        .await
        .expect("the operator's metrics");
    let namespace = ns.name();
    let expected = [
        format!(
            r#"ferry_operator_admissions_total{{namespace="{namespace}",outcome="injected"}} 2"#
        ),
        format!(r#"ferry_operator_admissions_total{{namespace="{namespace}",outcome="denied"}} 2"#),
        format!(
            r#"ferry_operator_admissions_total{{namespace="{namespace}",outcome="unchanged"}} 3"#
        ),
        format!(r#"ferry_operator_admission_warnings_total{{namespace="{namespace}"}} 1"#),
        "ferry_operator_admission_duration_seconds_count 7".to_owned(),
    ];
    for line in &expected {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} in the scrape:\n{metrics}"
        );
    }
    ferry_testkit::assert_chart_metrics_exposed("ferry_operator_admission", &metrics);

    webhook.remove(&ns.client()).await;
}

#[tokio::test]
async fn a_deleted_certificate_is_replaced_and_admission_keeps_working() {
    let env = require_env!();
    let (ns, webhook) = setup(env, &["order-service"], Some("order-service")).await;
    let first_ca = webhook.wait_registered(&ns.client()).await;

    let secrets = Api::<Secret>::namespaced(ns.client(), ns.name());
    secrets
        .delete("ferry-webhook-tls", &DeleteParams::default())
        .await
        .expect("Secret deleted");
    let configs = Api::<MutatingWebhookConfiguration>::all(ns.client());
    let new_ca = eventually("what the expect below names", WITHIN, || async {
        let secret = secrets.get("ferry-webhook-tls").await.ok()?;
        let stored = cert::bundle_of(&secret)?;
        let c = configs.get(&webhook.configuration).await.ok()?;
        let bundle = c.webhooks?.first()?.client_config.ca_bundle.clone()?;
        let registered = String::from_utf8(bundle.0).ok()?;
        (stored.ca_cert != first_ca && registered == stored.ca_cert).then_some(registered)
    })
    .await
    .expect("a new certificate, and the caBundle follows it");
    assert_ne!(new_ca, first_ca);

    // The API server trusts what the operator now serves.
    let pod = eventually("what the expect below names", WITHIN, || async {
        create_pod(&ns, relay_pod(&unique_name("after"), "order-service"))
            .await
            .ok()
    })
    .await
    .expect("admission works with the new certificate");
    assert_eq!(relays(&pod).len(), 1);

    webhook.remove(&ns.client()).await;
}

#[tokio::test]
async fn two_replicas_serve_one_certificate() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    install_crds(&ns.client()).await.expect("CRDs");
    let configuration = unique_name("ferry-webhook");
    let (port_a, port_b) = (free_port(), free_port());
    // Both start at once and race to create the Secret.
    let a = start(env, ns.name(), "a", &configuration, port_a);
    let b = start(env, ns.name(), "b", &configuration, port_b);

    let secrets = Api::<Secret>::namespaced(ns.client(), ns.name());
    let stored = eventually("what the expect below names", WITHIN, || async {
        cert::bundle_of(&secrets.get("ferry-webhook-tls").await.ok()?)
    })
    .await
    .expect("the certificate Secret");
    for port in [port_a, port_b] {
        let served = eventually("what the expect below names", WITHIN, || {
            served_certificate(port, &stored.ca_cert)
        })
        .await
        .unwrap_or_else(|_| panic!("replica on {port} serves a certificate of the CA"));
        assert_eq!(served, pem_der(&stored.cert), "replica on {port}");
    }
    drop((a, b));
    support::remove_webhook_configurations(&ns.client(), &configuration).await;
}

#[tokio::test]
async fn with_the_operator_stopped_labelled_pods_are_refused_and_others_schedule() {
    let env = require_env!();
    let (ns, mut webhook) = setup(env, &["order-service"], None).await;
    webhook
        .operator
        .process
        .terminate(Duration::from_secs(20))
        .await
        .expect("the operator stops");
    // Nothing listens on its port now; the configuration stays (failurePolicy: Fail).
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", webhook.port)).is_err(),
        "the webhook port is closed"
    );
    let message = create_pod(&ns, relay_pod("labelled", "order-service"))
        .await
        .expect_err("a labelled pod is refused while the webhook is down");
    assert!(message.contains("inject.ferry.dev"), "{message}");
    create_pod(
        &ns,
        pod(
            "unlabelled",
            json!({"app": "x"}),
            json!({}),
            "order-service",
        ),
    )
    .await
    .expect("an unlabelled pod is created while the webhook is down");

    webhook.remove(&ns.client()).await;
}

/// The DER of the certificate served on `port`, verified against `ca_pem` for 127.0.0.1.
async fn served_certificate(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pem_der(ca_pem).into()).ok()?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let tls = connector.connect(name, tcp).await.ok()?;
    let (_, session) = tls.get_ref();
    Some(session.peer_certificates()?.first()?.to_vec())
}

fn pem_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("PEM")
        .1
        .contents
}

#[tokio::test]
async fn the_admitted_relay_container_publishes_the_services_outbox() {
    use rdkafka::{
        Message,
        consumer::{BaseConsumer, Consumer},
    };
    let env = require_env!();
    let (ns, webhook) = setup(env, &["order-service"], Some("order-service")).await;
    // The service's database: an outbox table in a schema of its own, its DSN in a Secret.
    let schema = ferry_testkit::TempSchema::create(env)
        .await
        .expect("schema");
    let db = schema.connect().await.expect("connect");
    db.batch_execute(ferry_testkit::OUTBOX_SQL)
        .await
        .expect("outbox table");
    Api::<Secret>::namespaced(ns.client(), ns.name())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "order-db"},
                "stringData": {"DATABASE_URL": schema.url()}
            }))
            .expect("secret"),
        )
        .await
        .expect("DSN Secret");
    // The identity controller writes the producer's Kafka credential; the topic is Ready.
    let secrets = Api::<Secret>::namespaced(ns.client(), ns.name());
    eventually("the producer's credential", WITHIN, || async {
        secrets
            .get_opt("ferry-kafka-order-service")
            .await
            .ok()
            .flatten()
    })
    .await
    .expect("the identity controller writes ferry-kafka-order-service");
    let topic = format!("{}.orders", ns.name());

    let admitted = create_pod(
        &ns,
        pod(
            "order",
            inject(),
            json!({annotations::DATABASE_SECRET: "order-db", annotations::TABLE: "outbox"}),
            "order-service",
        ),
    )
    .await
    .expect("the pod is admitted");
    let relay = relays(&admitted)[0].clone();
    let resolved =
        ferry_testkit::pod_env::resolve(&ns.client(), ns.name(), &admitted.metadata, &relay)
            .await
            .expect("the relay's env resolves through the API server");
    // What a container runtime would do: the image's entrypoint is ferry-sidecar, and the pod's
    // own network namespace gives the metrics port; here a free local port stands in for it.
    let envs: Vec<(String, String)> = resolved
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "FERRY_METRICS_ADDR" => (k.clone(), format!("127.0.0.1:{}", free_port())),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let argv: Vec<&str> = resolved.argv.iter().map(String::as_str).collect();
    let mut process = ferry_testkit::ChildProcess::spawn(
        "injected-relay",
        consumer_support::sidecar_binary(),
        &argv,
        &envs,
    )
    .expect("the relay starts");

    db.execute(
        "INSERT INTO outbox (topic, key, payload) VALUES ($1, '\"o-1\"', \
         jsonb_build_object('schema', 'shop.v1', 'event', 'order.created', 'id', 'evt-injected-1', \
         'ts', 1, 'key', 'o-1', 'data', jsonb_build_object('total', 42)))",
        &[&topic],
    )
    .await
    .expect("an outbox row");

    let reader: BaseConsumer = env
        .kafka_config()
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&topic]).expect("subscribe");
    let published = eventually("the row's record in Kafka", WITHIN, || async {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => m
                .payload()
                .map(|p| String::from_utf8_lossy(p).contains("evt-injected-1")),
            _ => None,
        }
        .filter(|found| *found)
    })
    .await;
    let _ = process.terminate(Duration::from_secs(20)).await;
    published.expect("the injected relay, started as admitted, publishes the outbox row");
    webhook.remove(&ns.client()).await;
}

/// A Secret volume as the kubelet writes one: the files in a versioned directory, `..data`
/// linking to it and `tls.crt`/`tls.key` linking through `..data`; a new version is a new
/// directory and `..data` swapped to it in one rename, as the kubelet's atomic writer does when
/// cert-manager renews the Secret.
struct MountedSecret {
    dir: std::path::PathBuf,
    version: u32,
}

impl MountedSecret {
    fn new(bundle: &cert::Bundle) -> MountedSecret {
        let dir = std::env::temp_dir().join(unique_name("ferry-webhook-cert"));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let mut mounted = MountedSecret { dir, version: 0 };
        mounted.write(bundle);
        mounted
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 temp dir")
    }

    fn write(&mut self, bundle: &cert::Bundle) {
        use std::os::unix::fs::symlink;
        self.version += 1;
        let version = format!("..v{}", self.version);
        let files = [
            (cert::TLS_CERT, &bundle.cert),
            (cert::TLS_KEY, &bundle.key),
            (cert::CA_CERT, &bundle.ca_cert),
        ];
        std::fs::create_dir(self.dir.join(&version)).expect("version dir");
        for (name, pem) in files {
            std::fs::write(self.dir.join(&version).join(name), pem).expect("write");
        }
        let staged = self.dir.join("..data_tmp");
        symlink(&version, &staged).expect("link");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap ..data");
        for (name, _) in files {
            if !self.dir.join(name).exists() {
                symlink(format!("..data/{name}"), self.dir.join(name)).expect("link");
            }
        }
    }
}

impl Drop for MountedSecret {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What cert-manager's cainjector does: puts `ca_pem` into the configuration's webhook as its
/// own field manager.
async fn inject_ca(configs: &Api<MutatingWebhookConfiguration>, name: &str, ca_pem: &str) {
    let bundle =
        serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec())).expect("base64");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}
    ]))
    .expect("patch");
    configs
        .patch(
            name,
            &PatchParams {
                field_manager: Some("cert-manager-cainjector".into()),
                ..Default::default()
            },
            &Patch::Json::<()>(patch),
        )
        .await
        .expect("caBundle injected");
}

#[tokio::test]
async fn a_certificate_directory_is_served_without_a_ca_of_its_own_and_its_renewal_reaches_new_handshakes()
 {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    install_crds(&ns.client()).await.expect("CRDs");
    service_account(&ns, "order-service").await;
    let names = vec!["127.0.0.1".to_owned()];
    let issue = || {
        cert::issue(
            cert::Plan::NewCa,
            None,
            &names,
            std::time::SystemTime::now(),
        )
        .expect("a certificate, as cert-manager would issue it")
    };
    let first = issue();
    let mut mounted = MountedSecret::new(&first);
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
            "--webhook-cert-dir",
            mounted.path(),
            "--sidecar-image",
            "ferry-sidecar:test",
        ],
    );

    // Registered without a caBundle, serving the directory's certificate, no Secret of its own.
    let configs = Api::<MutatingWebhookConfiguration>::all(ns.client());
    let webhook = eventually("the operator registers its webhook", WITHIN, || async {
        configs
            .get(&configuration)
            .await
            .ok()?
            .webhooks?
            .first()
            .cloned()
    })
    .await
    .expect("the webhook configuration is registered");
    assert_eq!(
        webhook.client_config.ca_bundle, None,
        "the operator leaves the caBundle to cainjector"
    );
    let served = eventually("the directory's certificate is served", WITHIN, || {
        served_certificate(port, &first.ca_cert)
    })
    .await
    .expect("the operator serves the certificate of the directory");
    assert_eq!(served, pem_der(&first.cert));
    let secrets = Api::<Secret>::namespaced(ns.client(), ns.name());
    assert!(
        secrets
            .get_opt("ferry-webhook-tls")
            .await
            .expect("get")
            .is_none(),
        "no CA and Secret of the operator's own"
    );

    // cainjector's part done, the real API server admits through the operator.
    inject_ca(&configs, &configuration, &first.ca_cert).await;
    let pod = eventually(
        "admission with cert-manager's certificate",
        WITHIN,
        || async {
            create_pod(&ns, relay_pod(&unique_name("first"), "order-service"))
                .await
                .ok()
        },
    )
    .await
    .expect("a labelled pod is admitted with the directory's certificate");
    assert_eq!(relays(&pod).len(), 1, "{pod:?}");

    // cert-manager renews (here with a new CA, so nothing old is trusted by accident) and the
    // kubelet swaps the files: new handshakes get the new certificate, without a restart.
    let second = issue();
    mounted.write(&second);
    let served = eventually("the renewed certificate is served", WITHIN, || {
        served_certificate(port, &second.ca_cert)
    })
    .await
    .expect("a new handshake gets the renewed certificate");
    assert_eq!(served, pem_der(&second.cert));
    assert_eq!(
        served_certificate(port, &first.ca_cert).await,
        None,
        "the old certificate is no longer served"
    );
    inject_ca(&configs, &configuration, &second.ca_cert).await;
    let pod = eventually("admission after the renewal", WITHIN, || async {
        create_pod(&ns, relay_pod(&unique_name("renewed"), "order-service"))
            .await
            .ok()
    })
    .await
    .expect("a labelled pod is admitted with the renewed certificate");
    assert_eq!(relays(&pod).len(), 1, "{pod:?}");

    // The leader's re-applies (every 2 s here) never took the caBundle over.
    let current = configs.get(&configuration).await.expect("configuration");
    let bundle = current
        .webhooks
        .as_ref()
        .and_then(|w| w.first())
        .and_then(|w| w.client_config.ca_bundle.clone())
        .expect("the injected caBundle stays");
    assert_eq!(bundle.0, second.ca_cert.as_bytes());
    let operator_fields = current
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some(ferry_operator::field_manager::OPERATOR))
        .map(|f| serde_json::to_string(&f.fields_v1).expect("JSON"))
        .collect::<Vec<_>>();
    assert!(!operator_fields.is_empty(), "the operator applied it");
    assert!(
        operator_fields.iter().all(|f| !f.contains("f:caBundle")),
        "the operator owns no caBundle: {operator_fields:?}"
    );

    drop(operator);
    let _ = configs
        .delete(&configuration, &DeleteParams::default())
        .await;
}

/// The contracts webhook: an EventTopic schema that does not compile, or a change that breaks
/// events valid under the stored schema, is refused by the API server with Ferry's message;
/// a compatible change, and any change under `compatibility: none`, is stored.
#[tokio::test]
async fn event_topic_schemas_are_checked_and_breaking_changes_refused() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    install_crds(&ns.client()).await.expect("CRDs");
    let webhook = Webhook::start(env, &ns).await;
    let topics = Api::<ferry_operator::api::EventTopic>::namespaced(ns.client(), ns.name());
    let apply = |name: &'static str, schema: Value| {
        let topics = topics.clone();
        async move {
            topics
                .patch(
                    name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(json!({
                        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
                        "metadata": {"name": name},
                        "spec": {"partitions": 1, "schema": schema},
                    })),
                )
                .await
                .map(|_| ())
        }
    };
    let refusal = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) => e.message,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Until the API server has loaded the configuration, a broken schema may still be stored:
    // a probe topic waits for the refusal.
    let broken = json!({"jsonSchema": {"type": "strnig"}});
    let first = eventually("the contracts webhook refuses", WITHIN, || async {
        apply("probe", broken.clone()).await.err()
    })
    .await
    .expect("the contracts webhook is called");
    let message = refusal(Err(first));
    assert!(message.contains("contracts.ferry.dev"), "{message}");
    assert!(
        message.contains("spec.schema.jsonSchema is refused: not a valid JSON Schema"),
        "{message}"
    );
    assert!(message.contains("strnig"), "{message}");

    let user = json!({"type": "object", "required": ["id"],
                      "properties": {"id": {"type": "string"}, "plan": {"enum": ["free", "pro"]}}});
    apply(
        "users",
        json!({"event": "user.created", "jsonSchema": user}),
    )
    .await
    .expect("a first schema is stored");

    let mut breaking = user.clone();
    breaking["required"] = json!(["id", "email"]);
    breaking["properties"]["plan"] = json!({"enum": ["pro"]});
    let message = refusal(
        apply(
            "users",
            json!({"event": "user.created", "jsonSchema": breaking.clone()}),
        )
        .await,
    );
    assert!(
        message.contains("new required field \"email\""),
        "{message}"
    );
    assert!(
        message.contains("/plan: enum values removed: \"free\""),
        "{message}"
    );
    assert!(message.contains("compatibility: none"), "{message}");
    let stored = topics.get("users").await.expect("users");
    assert_eq!(
        stored.spec.schema.and_then(|s| s.json_schema),
        Some(user.clone()),
        "the refused change is not stored"
    );

    let mut compatible = user.clone();
    compatible["properties"]["email"] = json!({"type": "string", "format": "email"});
    compatible["properties"]["plan"] = json!({"enum": ["free", "pro", "team"]});
    apply(
        "users",
        json!({"event": "user.created", "jsonSchema": compatible}),
    )
    .await
    .expect("a compatible change is stored");
    apply(
        "users",
        json!({"event": "user.created", "jsonSchema": breaking, "compatibility": "none"}),
    )
    .await
    .expect("compatibility: none accepts a breaking change");

    webhook.remove(&ns.client()).await;
}
