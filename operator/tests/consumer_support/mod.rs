//! What the EventConsumer controller's tests share: a namespace with an operator, and ways to
//! apply EventTopics and EventConsumers and wait for what they should become.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use ferry_operator::api::{ConditionStatus, EventConsumer};
use ferry_testkit::{ChildProcess, TestEnv, pod_env::ResolvedContainer};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use ferry_testkit::{eventually, free_port, wait_for};

use crate::support::{Fixture, MANAGER, Operator};

/// Long enough for a cold operator to start, win its Lease, create topics, a credential and a
/// Deployment whose pods KWOK makes Ready, on a loaded 2-core CI.
pub const CONVERGE: Duration = Duration::from_secs(90);

/// A test namespace with the CRDs, a running operator and APIs for consumers.
pub struct Consumers {
    pub f: Fixture,
    pub api: Api<EventConsumer>,
    pub deployments: Api<Deployment>,
    pub operator: Operator,
}

impl Drop for Consumers {
    /// Deletes the namespace's EventConsumers and waits until their finalizers ran, while the
    /// operator still runs (fields drop after this): else the namespace would stay Terminating
    /// and the consumers' topics stay in Kafka.
    fn drop(&mut self) {
        let env = self.f.env;
        let namespace = self.f.ns.name().to_owned();
        ferry_testkit::run_to_completion(async move {
            let cleaned = async {
                let client = env.kube_client().await?;
                let api = Api::<EventConsumer>::namespaced(client, &namespace);
                api.delete_collection(&Default::default(), &Default::default())
                    .await?;
                eventually("the EventConsumers' finalizers", CONVERGE, || async {
                    api.list(&Default::default())
                        .await
                        .ok()
                        .is_some_and(|l| l.items.is_empty())
                })
                .await
            };
            if let Err(e) = cleaned.await {
                eprintln!("EventConsumers of {namespace} not cleaned up: {e:#}");
            }
        });
    }
}

/// The flags every test operator gets: lag rounds every second, a 4 s scale-down cooldown.
const FLAGS: [&str; 4] = ["--lag-interval", "1s", "--scale-down-cooldown", "4s"];

impl Consumers {
    /// A namespace and an operator with fast lag rounds and a short scale-down cooldown.
    pub async fn new(env: &'static TestEnv, extra: &[&str]) -> Consumers {
        let f = Fixture::new(env).await;
        let mut args = FLAGS.to_vec();
        args.extend_from_slice(extra);
        let operator = Operator::start(env, f.ns.name(), "consumer-test", &args);
        let api = Api::namespaced(f.ns.client(), f.ns.name());
        let deployments = Api::namespaced(f.ns.client(), f.ns.name());
        Consumers {
            f,
            api,
            deployments,
            operator,
        }
    }

    /// Kills the operator with SIGKILL and starts another one (a new identity: it takes the
    /// Lease once the dead one's expires).
    pub async fn kill_and_restart(&mut self, identity: &str) {
        self.operator.process.kill9().await.expect("SIGKILL");
        self.operator = Operator::start(self.f.env, self.f.ns.name(), identity, &FLAGS);
    }

    /// Applies an EventTopic and waits until it is Ready.
    pub async fn topic(&self, name: &str, kafka: &str, partitions: i32) {
        self.f
            .apply(
                name,
                json!({"topicName": kafka, "partitions": partitions, "replicationFactor": 1,
                       "deletionPolicy": "Delete"}),
            )
            .await;
        self.f
            .wait_ready(name, ConditionStatus::True, "Ready", CONVERGE)
            .await;
    }

    /// Applies an EventConsumer `name` with `spec` (server-side apply, forced).
    pub async fn apply(&self, name: &str, spec: Value) -> EventConsumer {
        let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
                          "metadata": {"name": name}, "spec": spec});
        self.api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("EventConsumer applied")
    }

    /// Waits until the consumer's Ready condition has `status` and `reason` for its current
    /// generation.
    pub async fn wait_ready(
        &self,
        name: &str,
        status: ConditionStatus,
        reason: &str,
        deadline: Duration,
    ) -> EventConsumer {
        let last = std::sync::Mutex::new(None);
        let result = eventually("the Ready condition", deadline, || async {
            let c = self.api.get(name).await.ok()?;
            *last.lock().expect("lock") = c.status.clone();
            let ready = c
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == status
                && ready.reason == reason
                && ready.observed_generation == c.metadata.generation)
                .then_some(c)
        })
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!(
                "EventConsumer {name} not Ready={status:?}/{reason} within {deadline:?}; last status: {:#?}",
                last.lock().expect("lock")
            ),
        }
    }

    /// Waits until `check` holds for the consumer, and returns it.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        check: impl Fn(&EventConsumer) -> bool,
    ) -> EventConsumer {
        let last = std::sync::Mutex::new(None);
        let result = eventually(what, deadline, || async {
            let c = self.api.get(name).await.ok()?;
            *last.lock().expect("lock") = c.status.clone();
            check(&c).then_some(c)
        })
        .await;
        match result {
            Ok(c) => c,
            Err(_) => panic!(
                "EventConsumer {name}: {what} not within {deadline:?}; last status: {:#?}",
                last.lock().expect("lock")
            ),
        }
    }

    /// The worker Deployment, once it exists.
    pub async fn deployment(&self, consumer: &str) -> Deployment {
        let name = format!("{consumer}-worker");
        wait_for(&format!("Deployment {name}"), CONVERGE, || async {
            self.deployments.get(&name).await.ok()
        })
        .await
    }

    /// Partition counts of Kafka topics (`None`: absent), as the broker has them now.
    pub async fn partitions(&self, topic: &str) -> Option<i32> {
        self.f
            .kafka
            .describe_topics(&[topic.to_owned()])
            .await
            .expect("describe")[0]
            .1
            .clone()
            .expect("no refusal")
            .map(|t| t.partitions)
    }

    /// Waits until a Kafka topic has `partitions` (`None`: is gone).
    pub async fn wait_partitions(&self, topic: &str, partitions: Option<i32>) {
        let found = eventually("the partition count", CONVERGE, || async {
            (self.partitions(topic).await == partitions).then_some(())
        })
        .await;
        if found.is_err() {
            panic!(
                "Kafka topic {topic}: wanted {partitions:?} partitions, has {:?}",
                self.partitions(topic).await
            );
        }
    }
}

/// The `ferry-sidecar` binary beside the operator's (`cargo build -p ferry-sidecar`; `make
/// test` builds every binary first).
pub fn sidecar_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ferry-operator")).with_file_name("ferry-sidecar");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p ferry-sidecar` first",
        path.display()
    );
    path
}

/// A local HTTP endpoint that records the CloudEvent id of every request and answers 200.
pub async fn target() -> (u16, Arc<Mutex<BTreeSet<String>>>) {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    async fn record(State(seen): State<Arc<Mutex<BTreeSet<String>>>>, headers: HeaderMap) {
        if let Some(id) = headers.get("ce-id").and_then(|v| v.to_str().ok()) {
            seen.lock().expect("lock").insert(id.to_owned());
        }
    }
    let app = Router::new()
        .route("/events", post(record))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

/// Starts a resolved worker container as a local process: the image's binary is `binary`, and
/// the pod's own metrics port (its network namespace) a free local port.
pub fn spawn_local(resolved: &ResolvedContainer, binary: &PathBuf) -> ChildProcess {
    let metrics_port = free_port();
    let args: Vec<String> = resolved.argv[1..]
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{metrics_port}")
            } else {
                a.clone()
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let envs: Vec<(&str, &str)> = resolved
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ChildProcess::spawn("consumer-worker", binary, &args, &envs).expect("the worker starts")
}

/// The worker container of consumer `name`'s Deployment, resolved for a pod named `pod`.
pub async fn resolved_worker(t: &Consumers, name: &str, pod: &str) -> ResolvedContainer {
    let deployment = t.deployment(name).await;
    let template = deployment.spec.expect("spec").template;
    let container = template.spec.expect("pod spec").containers[0].clone();
    let meta = kube::api::ObjectMeta {
        name: Some(pod.to_owned()),
        namespace: Some(t.f.ns.name().to_owned()),
        labels: template.metadata.and_then(|m| m.labels),
        ..kube::api::ObjectMeta::default()
    };
    ferry_testkit::pod_env::resolve(&t.f.ns.client(), t.f.ns.name(), &meta, &container)
        .await
        .expect("the container's env resolves")
}

/// Produces events `evt-<from>` .. `evt-<from + n - 1>` over eight keys to `topic`, each
/// acknowledged before the next.
pub async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    from: usize,
    n: usize,
) {
    for i in from..from + n {
        let key = format!("k{}", i % 8);
        let envelope = serde_json::json!({"schema": "orders.v1", "event": "order.created",
                              "id": format!("evt-{i}"), "ts": 1_700_000_000, "key": key,
                              "data": {"n": i}, "headers": {}});
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(&key)
                    .payload(&serde_json::to_vec(&envelope).expect("json")),
                rdkafka::util::Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}
