//! What the operator's integration tests share: installing the CRDs from `crds/` into the test
//! API server, and waiting with a deadline.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio::sync::OnceCell;

/// Installs every CRD in `crds/` with server-side apply (idempotent, safe in parallel) and
/// waits until the API server serves them, then the admission policies beside them. Done once
/// per test binary.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let api = Api::<CustomResourceDefinition>::all(client.clone());
            let mut names = Vec::new();
            for (path, text) in manifests("CustomResourceDefinition")? {
                let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                api.patch(
                    &name,
                    &PatchParams::apply("ferry-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying {name}"))?;
                names.push(name);
            }
            for name in names {
                eventually("the CRD to be established", Duration::from_secs(30), || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                })
                .await
                .with_context(|| format!("CRD {name} not established"))?;
            }
            install_admission_policies(client).await
        })
        .await?;
    Ok(())
}

/// Applies the ValidatingAdmissionPolicies and their bindings in `crds/` (server-side apply,
/// idempotent): a test that removed a binding puts it back with this.
pub async fn install_admission_policies(client: &Client) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let params = PatchParams::apply("ferry-tests").force();
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    for (path, text) in manifests("ValidatingAdmissionPolicy")? {
        let policy: ValidatingAdmissionPolicy =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = policy
            .metadata
            .name
            .clone()
            .context("policy without a name")?;
        policies
            .patch(&name, &params, &Patch::Apply(&policy))
            .await
            .with_context(|| format!("applying {name}"))?;
    }
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    for (path, text) in manifests("ValidatingAdmissionPolicyBinding")? {
        let binding: ValidatingAdmissionPolicyBinding =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = binding
            .metadata
            .name
            .clone()
            .context("binding without a name")?;
        bindings
            .patch(&name, &params, &Patch::Apply(&binding))
            .await
            .with_context(|| format!("applying {name}"))?;
    }
    Ok(())
}

/// The files of `crds/` whose `kind` is `kind`, with their text.
fn manifests(kind: &str) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let doc: serde_json::Value =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if doc["kind"] == kind {
            found.push((path, text));
        }
    }
    found.sort();
    Ok(found)
}

use ferry_operator::{
    api::{ConditionStatus, EventTopic},
    kafka::{KafkaAdmin, TopicState},
};
use ferry_testkit::{ChildProcess, TempNamespace, TestEnv, eventually, free_port, http_get};
use kube::api::DeleteParams;
use serde_json::{Value, json};

/// The field manager tests apply EventTopics with.
pub const MANAGER: &str = "ferry-tests";

/// The real `ferry-operator run` binary watching one namespace.
pub struct Operator {
    /// The child process.
    pub process: ChildProcess,
    /// Port of its /metrics server.
    pub metrics_port: u16,
}

impl Operator {
    /// Starts the operator for `namespace` (its Lease lives there too); `extra` flags are
    /// appended.
    pub fn start(env: &TestEnv, namespace: &str, identity: &str, extra: &[&str]) -> Operator {
        let mut args = vec!["--namespace", namespace];
        args.extend_from_slice(extra);
        Self::start_with(env, namespace, identity, &args)
    }

    /// Starts an operator that watches every namespace (its Lease lives in `lease_namespace`).
    /// Only for tests that hold [`ferry_testkit::disruption_lock`] in a binary of their own:
    /// it acts on every namespace of the test cluster.
    pub fn start_cluster_wide(env: &TestEnv, lease_namespace: &str, identity: &str) -> Operator {
        Self::start_with(env, lease_namespace, identity, &[])
    }

    fn start_with(
        env: &TestEnv,
        lease_namespace: &str,
        identity: &str,
        extra: &[&str],
    ) -> Operator {
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "run",
            "--lease-namespace",
            lease_namespace,
            "--lease-duration",
            "3",
            "--metrics-addr",
            &metrics_addr,
            "--resync-interval",
            "2s",
            "--kafka-admin-timeout",
            "5s",
            "--kubeconfig",
            env.kubeconfig(),
            "--log-format",
            "text",
            "--log-level",
            "info,ferry_operator=debug",
        ];
        args.extend_from_slice(extra);
        let mut envs = env.kafka_args().to_env();
        envs.push(("FERRY_POD_NAME", identity.to_owned()));
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let process = ChildProcess::spawn(
            &format!("operator-{identity}"),
            env!("CARGO_BIN_EXE_ferry-operator"),
            &args,
            &envs,
        )
        .expect("the operator starts");
        Operator {
            process,
            metrics_port,
        }
    }

    /// The operator's /metrics text, if it answers.
    pub async fn metrics(&self) -> Option<String> {
        http_get(self.metrics_port, "/metrics")
            .await
            .map(|(_, body)| body)
    }

    /// Whether the operator reports holding the leader Lease.
    pub async fn is_leader(&self) -> Option<bool> {
        let text = self.metrics().await?;
        text.lines()
            .find(|l| l.starts_with("ferry_operator_leader "))
            .map(|l| l.ends_with(" 1"))
    }
}

/// Everything a controller test needs: a namespace with the CRDs installed and a Kafka
/// admin client to look at (and tamper with) the real topics.
pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: TempNamespace,
    pub api: Api<EventTopic>,
    pub kafka: KafkaAdmin,
}

impl Fixture {
    /// Creates the namespace and installs the CRDs.
    pub async fn new(env: &'static TestEnv) -> Fixture {
        let ns = TempNamespace::create(env).await.expect("namespace");
        install_crds(&ns.client()).await.expect("CRDs");
        let api = Api::<EventTopic>::namespaced(ns.client(), ns.name());
        let kafka = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
        Fixture {
            env,
            ns,
            api,
            kafka,
        }
    }

    /// Starts an operator for this namespace.
    pub fn operator(&self, identity: &str) -> Operator {
        Operator::start(self.env, self.ns.name(), identity, &[])
    }

    /// Applies an EventTopic `name` with `spec` (server-side apply, forced).
    pub async fn apply(&self, name: &str, spec: Value) -> EventTopic {
        let body = json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
                          "metadata": {"name": name}, "spec": spec});
        self.api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("EventTopic applied")
    }

    /// Deletes an EventTopic.
    pub async fn delete(&self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .expect("EventTopic deleted");
    }

    /// Waits until the EventTopic's Ready condition has `status` and `reason` for its current
    /// generation, and returns it.
    pub async fn wait_ready(
        &self,
        name: &str,
        status: ConditionStatus,
        reason: &str,
        deadline: Duration,
    ) -> EventTopic {
        let last = std::sync::Mutex::new(None);
        let result = eventually("the EventTopic's Ready condition", deadline, || async {
            let topic = self.api.get(name).await.ok()?;
            let ready = topic
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
            *last.lock().expect("lock") = Some(topic.status.clone());
            let ready = ready?;
            (ready.status == status
                && ready.reason == reason
                && ready.observed_generation == topic.metadata.generation)
                .then_some(topic)
        })
        .await;
        match result {
            Ok(topic) => topic,
            Err(_) => panic!(
                "EventTopic {name} not Ready={status:?}/{reason} within {deadline:?}; last status: {:?}",
                last.lock().expect("lock")
            ),
        }
    }

    /// The Kafka topic as the broker has it, waiting out metadata propagation until `until`.
    pub async fn kafka_topic(
        &self,
        name: &str,
        until: impl Fn(Option<&TopicState>) -> bool,
    ) -> Option<TopicState> {
        let mut last = None;
        for _ in 0..150 {
            let described = self
                .kafka
                .describe_topics(&[name.to_owned()])
                .await
                .expect("describe");
            if let Ok(state) = &described[0].1 {
                if until(state.as_ref()) {
                    return state.clone();
                }
                last = Some(state.clone());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Kafka topic {name} never reached the expected state; last: {last:?}");
    }

    /// Reasons of the Events recorded on EventTopic `name`.
    pub async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(
            self.ns.client(),
            self.ns.name(),
        );
        events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// Notes of the Events with `reason` recorded on EventTopic `name`.
    pub async fn event_notes(&self, name: &str, reason: &str) -> Vec<String> {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(
            self.ns.client(),
            self.ns.name(),
        );
        events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Waits until an Event with `reason` was recorded on `name`.
    pub async fn wait_event(&self, name: &str, reason: &str, deadline: Duration) {
        let found = eventually("the Event", deadline, || async {
            self.event_reasons(name)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await;
        if found.is_err() {
            panic!(
                "no {reason} Event on {name}; Events: {:?}",
                self.event_reasons(name).await
            );
        }
    }
}

/// Produces one record to `topic` as a SCRAM user; the broker's refusal comes back as the error.
pub async fn produce_as(
    env: &ferry_testkit::TestEnv,
    user: &str,
    password: &str,
    topic: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = env
        .kafka_args_as(user, password)
        .client_config()
        .expect("complete settings")
        .set("message.timeout.ms", "5000")
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(6),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

/// Whether a produce was refused by the authorizer (as opposed to, say, authentication).
pub fn write_denied(r: &Result<(), rdkafka::error::KafkaError>) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    matches!(
        r,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::TopicAuthorizationFailed
        ))
    )
}

/// Deletes the operator's two webhook configurations of `name` (injection and contracts), as
/// `helm uninstall` would: a test leaves no `failurePolicy: Fail` webhook behind.
pub async fn remove_webhook_configurations(client: &Client, name: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let params = kube::api::DeleteParams::default();
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(name, &params)
        .await;
    let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete(name, &params)
        .await;
}
