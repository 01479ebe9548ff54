//! What the plugin's black-box tests share: a namespace with an EventTopic and an
//! EventConsumer as the operator's API declares them, the Kafka side the operator would make
//! for it (topics, the consumer's SCRAM principal with exactly the ACLs the operator's
//! `desired_acls` grants, and its credential Secret), a real `ferry-sidecar worker` for it, an
//! HTTP target whose answer a test switches, and the real `kubectl-ferry` binary.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Output,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use ferry_operator::{
    api::{EventConsumer, EventReplay, EventTopic},
    identity::{
        consumer_grants::group_id,
        credentials,
        desired_acls::desired_acls,
        grants::{ConsumerGrant, ProducerGrant},
        principal,
    },
    kafka::{
        KafkaAdmin,
        acls::{AclBinding, Operation, ResourceType},
    },
};
use ferry_testkit::{
    ChildProcess, Grant, TempNamespace, TempSchema, TempTopic, TestEnv, eventually,
};
use k8s_openapi::{
    api::core::v1::Secret,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use serde_json::json;

/// The EventConsumer's name in every test namespace.
pub const CONSUMER: &str = "notify";
/// Its service account.
pub const SERVICE_ACCOUNT: &str = "notify-sa";
/// The EventTopic's name.
pub const TOPIC: &str = "orders";
/// Its retry delay: long, so a record the worker parks again would not come back during a
/// test (replays are due at once whatever the delay).
pub const DELAY: &str = "1h";

/// Installs the CRDs generated from the operator's types (as `crdgen` writes `crds/`).
pub async fn install_crds(client: &kube::Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in [EventTopic::crd(), EventConsumer::crd(), EventReplay::crd()] {
        let name = crd.metadata.name.clone().expect("CRD name");
        api.patch(
            &name,
            &PatchParams::apply("ferry-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applied");
        eventually("the CRD to be established", Duration::from_secs(30), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await
        .expect("CRD established");
    }
}

/// A namespace with one consumer of one topic, and everything Kafka holds for it.
pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: TempNamespace,
    pub source: TempTopic,
    pub tier: TempTopic,
    pub dead_letter: TempTopic,
    pub group: String,
    pub username: String,
    pub password: String,
    _grant: Grant,
}

impl Fixture {
    /// Creates it: `partitions` partitions on the source and its tier.
    pub async fn create(env: &'static TestEnv, partitions: i32) -> Fixture {
        let ns = TempNamespace::create(env).await.expect("namespace");
        let client = ns.client();
        install_crds(&client).await;
        let source = TempTopic::create_named(env, &format!("{}.orders", ns.name()), partitions)
            .await
            .expect("source topic");

        let topics: Api<EventTopic> = Api::namespaced(client.clone(), ns.name());
        let topic: EventTopic = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": TOPIC},
            "spec": {"topicName": source.name(), "partitions": partitions,
                     "producers": [{"serviceAccount": "order-service"}]},
        }))
        .expect("EventTopic");
        topics
            .create(&PostParams::default(), &topic)
            .await
            .expect("EventTopic created");
        let consumers: Api<EventConsumer> = Api::namespaced(client.clone(), ns.name());
        let consumer: EventConsumer = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": CONSUMER},
            "spec": {"topics": [TOPIC], "serviceAccount": SERVICE_ACCOUNT,
                     "delivery": {"http": {"url": "http://127.0.0.1:1/"}},
                     "retry": {"attempts": 1, "delays": [DELAY]}},
        }))
        .expect("EventConsumer");
        let consumer = consumers
            .create(&PostParams::default(), &consumer)
            .await
            .expect("EventConsumer created");
        let group = group_id(&consumer);
        let tier = TempTopic::create_named(
            env,
            &ferry_common::naming::retry_topic(source.name(), &group, DELAY),
            partitions,
        )
        .await
        .expect("tier topic");
        let dead_letter = TempTopic::create_named(
            env,
            &ferry_common::naming::default_dead_letter_topic(&group),
            partitions,
        )
        .await
        .expect("dead-letter topic");

        // The consumer's principal, as the identity controller makes it.
        let grant = ConsumerGrant {
            resource: format!("EventConsumer/{}/{CONSUMER}", ns.name()),
            namespace: ns.name().to_owned(),
            service_account: SERVICE_ACCOUNT.to_owned(),
            group: group.clone(),
            topics: vec![source.name().to_owned()],
            retry_topics: vec![tier.name().to_owned()],
            dead_letter_topic: Some(dead_letter.name().to_owned()),
        };
        let Identity {
            username,
            password,
            grant,
        } = identity(env, &ns, SERVICE_ACCOUNT, &[], &[grant]).await;
        Fixture {
            env,
            ns,
            source,
            tier,
            dead_letter,
            group,
            username,
            password,
            _grant: grant,
        }
    }

    /// Runs the real plugin binary against the test cluster, as its admin unless `args`
    /// impersonate someone (`--as`).
    pub fn plugin(&self, args: &[&str]) -> Output {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-ferry"));
        std::process::Command::new(binary)
            .args(args)
            .args(["-n", self.ns.name()])
            .env("KUBECONFIG", self.env.kubeconfig())
            .env("NO_COLOR", "1")
            .output()
            .expect("kubectl-ferry runs")
    }

    /// Runs the plugin and returns its stdout, failing the test with its stderr otherwise.
    pub fn plugin_ok(&self, args: &[&str]) -> String {
        let out = self.plugin(args);
        assert!(
            out.status.success(),
            "kubectl-ferry {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// The real worker for the consumer, as its own principal, delivering to `target`.
    pub fn worker(&self, target: &str, database: &TempSchema) -> ChildProcess {
        let binary = workspace_binary("ferry-sidecar");
        let args = [
            "worker".to_owned(),
            format!("--topics={}", self.source.name()),
            format!("--group={}", self.group),
            format!("--target-url={target}"),
            format!("--dead-letter-topic={}", self.dead_letter.name()),
            format!("--retry-delays={DELAY}"),
            "--retry-attempts=1".to_owned(),
            format!("--idempotency-database-url={}", database.url()),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            "--log-level=info".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kafka = self
            .env
            .kafka_args_as(&self.username, &self.password)
            .to_env();
        let envs: Vec<(&str, &str)> = kafka.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ChildProcess::spawn("worker", &binary, &args, &envs).expect("spawn worker")
    }
}

/// A principal as the identity controller makes one: its SCRAM user, exactly the ACLs
/// `desired_acls` derives from its grants, and its credential Secret in `ns`.
pub struct Identity {
    pub username: String,
    pub password: String,
    pub grant: Grant,
}

/// Creates the [`Identity`] of `service_account` in `ns`.
pub async fn identity(
    env: &'static TestEnv,
    ns: &TempNamespace,
    service_account: &str,
    producers: &[ProducerGrant],
    consumers: &[ConsumerGrant],
) -> Identity {
    let username = principal::username(ns.name(), service_account);
    let password = credentials::new_password();
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
    admin
        .upsert_scram_credential(&username, &password)
        .await
        .expect("SCRAM user");
    let bindings: Vec<AclBinding> = desired_acls(producers, consumers)
        .into_values()
        .flatten()
        .collect();
    let acls: Vec<(ResourceType, &str, Operation)> = bindings
        .iter()
        .map(|b| (b.resource_type, b.resource_name.as_str(), b.operation))
        .collect();
    let grant = Grant::allow(env, &username, &acls).await;
    let settings = credentials::ClientSettings {
        bootstrap_servers: env
            .var("FERRY_KAFKA_BOOTSTRAP")
            .expect("bootstrap")
            .to_owned(),
        security_protocol: env
            .var("FERRY_KAFKA_SECURITY_PROTOCOL")
            .unwrap_or("SASL_PLAINTEXT")
            .to_owned(),
    };
    let secret = credentials::secret(ns.name(), service_account, &username, &password, &settings);
    Api::<Secret>::namespaced(ns.client(), ns.name())
        .create(&PostParams::default(), &secret)
        .await
        .expect("credential Secret");
    Identity {
        username,
        password,
        grant,
    }
}

/// Another binary of the workspace, built beside this test (`target/debug/<name>`): cargo
/// builds only this package's binaries for its tests, so the test says what to build.
pub fn workspace_binary(name: &str) -> PathBuf {
    let binary = std::env::current_exe()
        .expect("test binary")
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: cargo build -p {name} first",
        binary.display()
    );
    binary
}

/// An envelope as the relay publishes it.
pub fn envelope(id: &str, event: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema": "orders.v1", "event": event, "id": id, "ts": "2026-11-30T10:00:00Z",
        "key": id, "data": {"id": id}, "headers": {}
    }))
    .expect("json")
}

/// A producer as the admin.
pub fn admin_producer(env: &TestEnv) -> FutureProducer {
    env.kafka_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces one record with `headers`.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let mut record = FutureRecord::to(topic).key(key).payload(payload).headers(h);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(30)))
        .await
        .expect("produced");
}

/// An HTTP target that answers every delivery with the status a test sets, and counts the
/// deliveries it answered 2xx per event id (`ce-id`).
#[derive(Clone)]
pub struct Target {
    pub url: String,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<HashMap<String, usize>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Target {
    /// Starts it on a free port, answering `status`.
    pub async fn start(status: u16) -> Target {
        let target = Target {
            url: String::new(),
            status: Arc::new(AtomicU16::new(status)),
            accepted: Arc::default(),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/events", post(answer))
            .with_state(target.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Target { url, ..target }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Accepted deliveries per event id.
    pub fn accepted(&self) -> HashMap<String, usize> {
        self.accepted.lock().expect("lock").clone()
    }

    /// Every request's event id, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn answer(State(t): State<Target>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    t.requests.lock().expect("lock").push(id.clone());
    let status = t.status.load(Ordering::SeqCst);
    if (200..300).contains(&status) {
        *t.accepted.lock().expect("lock").entry(id).or_default() += 1;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
