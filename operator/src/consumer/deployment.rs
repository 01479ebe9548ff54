//! The worker Deployment `<name>-worker` of an EventConsumer — pure: a function of the spec,
//! its resolved topics, the operator's settings and the replica count.
//!
//! The pod runs `ferry-sidecar worker` with every setting of the spec as a flag (or, with
//! `delivery.container`, the team's own image with the same Kafka settings as `FERRY_*`
//! variables). The Kafka user and password come from the consumer's credential Secret
//! `ferry-kafka-<serviceAccount>` through `secretKeyRef`s, so no secret is ever copied into the
//! Deployment. The pod is locked down as DESIGN §6 asks of every Ferry container: non-root,
//! read-only root filesystem, no capabilities, seccomp `RuntimeDefault`, no API token.
//!
//! Why one long file: the Deployment is one value built in one place (about 490 lines); the
//! rest (about 350) is its unit tests, which read the whole pod spec at once.

use std::{collections::BTreeMap, time::Duration};

use ferry_common::kafka::KafkaArgs;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
            ResourceRequirements, SeccompProfile, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};
use kube::{Resource, ResourceExt, api::ObjectMeta};

use super::{duration, resolve::Resolved};
use crate::{
    api::{EventConsumer, Ordering, StartFrom},
    container::{
        self, DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, SIDECAR_UID,
        http_probe, locked_down, secret_env, value_env,
    },
    contract_delivery,
    identity::credentials,
};

/// The label on the Deployment and its pods naming the EventConsumer; also the selector.
pub const CONSUMER_LABEL: &str = "ferry.dev/consumer";
/// The worker's container name.
pub const WORKER_CONTAINER: &str = "worker";
/// The team's container name with `delivery.container`.
pub const CONSUMER_CONTAINER: &str = "consumer";
/// Where the sidecar image keeps its binary (`sidecar/Dockerfile`, `scripts/env/images.sh`).
pub const SIDECAR_BINARY: &str = "/usr/local/bin/ferry-sidecar";
/// The worker's `/healthz`, `/readyz` and `/metrics` port (its `--metrics-addr` default).
pub const METRICS_PORT: i32 = 9090;
/// The name of that port in the worker pod.
const METRICS_PORT_NAME: &str = "metrics";
/// The worker's own `--drain-timeout` default (`sidecar/src/worker/config.rs`): in-flight
/// deliveries finish within it on SIGTERM.
const WORKER_DRAIN: Duration = Duration::from_secs(20);
/// After the drain: the synchronous commit, the producer's flush of tier copies and leaving
/// the group; 10 s is ample on a healthy cluster.
const AFTER_DRAIN: Duration = Duration::from_secs(10);
/// Kubernetes' default grace period, for the team's own container whose drain we don't know.
const DEFAULT_GRACE: i64 = 30;
/// A rollout that makes no progress this long is reported (Deployment `Progressing=False`,
/// `ProgressDeadlineExceeded`); 5 minutes instead of Kubernetes' 10 so a broken image or a
/// missing Secret shows sooner.
const PROGRESS_DEADLINE_SECONDS: i32 = 300;

/// What the operator puts in every worker pod besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The `ferry-sidecar` image (`--sidecar-image`).
    pub image: String,
    /// Its pull policy (`--sidecar-image-pull-policy`).
    pub pull_policy: String,
    /// Kafka settings that are not secret, as `FERRY_KAFKA_*` variables.
    pub kafka_env: Vec<(String, String)>,
}

impl WorkerSettings {
    /// Settings from the operator's own Kafka settings: the same brokers (or
    /// `client_bootstrap`, the address pods reach them by) and protocol, but never the
    /// operator's own user or password.
    pub fn new(
        image: String,
        pull_policy: String,
        kafka: &KafkaArgs,
        client_bootstrap: Option<&str>,
    ) -> Self {
        let kafka_env = kafka
            .to_env()
            .into_iter()
            .filter(|(k, _)| !matches!(*k, "FERRY_KAFKA_USERNAME" | "FERRY_KAFKA_PASSWORD"))
            .map(|(k, v)| match (k, client_bootstrap) {
                ("FERRY_KAFKA_BOOTSTRAP", Some(b)) => (k.to_owned(), b.to_owned()),
                _ => (k.to_owned(), v),
            })
            .collect();
        Self {
            image,
            pull_policy,
            kafka_env,
        }
    }
}

/// Why no Deployment can be built from the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("spec.resources is not a Kubernetes ResourceRequirements: {0}")]
    Resources(String),
    #[error(
        "the EventConsumer's name {0} is longer than 56 characters: its worker Deployment and pod label (at most 63) cannot be named after it"
    )]
    NameTooLong(String),
}

/// `<name>-worker`.
pub fn name(consumer: &str) -> String {
    format!("{consumer}-worker")
}

/// The labels of the Deployment and its pods.
pub fn labels(consumer: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "ferry-worker"),
        ("app.kubernetes.io/instance", consumer),
        ("app.kubernetes.io/managed-by", "ferry-operator"),
        (CONSUMER_LABEL, consumer),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The Kafka settings every container of the pod gets: the operator's non-secret settings and
/// the principal's user and password from its Secret.
pub(super) fn kafka_env(consumer: &EventConsumer, settings: &WorkerSettings) -> Vec<EnvVar> {
    let secret = credentials::secret_name(&consumer.spec.service_account);
    let mut env: Vec<EnvVar> = settings
        .kafka_env
        .iter()
        .map(|(k, v)| value_env(k, v.clone()))
        .collect();
    env.push(secret_env("FERRY_KAFKA_USERNAME", &secret, "username"));
    env.push(secret_env("FERRY_KAFKA_PASSWORD", &secret, "password"));
    env
}

fn ordering(o: Ordering) -> &'static str {
    match o {
        Ordering::Partition => "partition",
        Ordering::Key => "key",
        Ordering::Unordered => "unordered",
    }
}

fn start_from(s: StartFrom) -> &'static str {
    match s {
        StartFrom::Earliest => "earliest",
        StartFrom::Latest => "latest",
    }
}

/// The worker's `--drain-timeout`: its default, or longer when one delivery may take longer.
pub(super) fn drain(timeout: Duration) -> Duration {
    WORKER_DRAIN.max(timeout + Duration::from_secs(5))
}

fn resources(spec: Option<&serde_json::Value>) -> Result<ResourceRequirements, Invalid> {
    if let Some(value) = spec {
        return serde_json::from_value(value.clone())
            .map_err(|e| Invalid::Resources(e.to_string()));
    }
    Ok(container::resources(
        DEFAULT_CPU_REQUEST,
        DEFAULT_MEMORY_REQUEST,
        DEFAULT_MEMORY_LIMIT,
    ))
}

/// `/tmp` as a small emptyDir: the root filesystem is read-only.
pub(super) fn tmp_mount() -> VolumeMount {
    VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }
}

/// The `ferry-sidecar worker` container for HTTP delivery, serving `/healthz`, `/readyz` and
/// `/metrics` on `port` named `port_name` (a Deployment's worker and an injected one differ
/// only there, in name and in restart policy).
pub(super) fn worker_container(
    consumer: &EventConsumer,
    resolved: &Resolved,
    settings: &WorkerSettings,
    target_url: String,
    timeout: &str,
    (port, port_name): (i32, &str),
) -> Result<Container, Invalid> {
    let spec = &consumer.spec;
    let timeout_flag = duration::worker_flag(timeout);
    let drain = drain(duration::parse(timeout).unwrap_or_default());
    let mut args = vec![
        "worker".to_owned(),
        format!(
            "--topics={}",
            resolved
                .sources
                .iter()
                .map(|s| s.kafka.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        format!("--group={}", resolved.group),
        format!("--target-url={target_url}"),
        format!("--ordering={}", ordering(spec.ordering)),
        format!("--max-in-flight={}", spec.max_in_flight),
        format!("--timeout={timeout_flag}"),
        format!("--retry-attempts={}", spec.retry.attempts),
        format!(
            "--retry-backoff-initial={}",
            duration::worker_flag(&spec.retry.backoff.initial)
        ),
        format!(
            "--retry-backoff-max={}",
            duration::worker_flag(&spec.retry.backoff.max)
        ),
    ];
    if !spec.retry.delays.is_empty() {
        // As written: the delay is part of each tier's topic name.
        args.push(format!("--retry-delays={}", spec.retry.delays.join(",")));
    }
    args.push(format!(
        "--dead-letter-topic={}",
        resolved.dead_letter.name()
    ));
    args.push(format!("--start-from={}", start_from(spec.start_from)));
    args.push(format!("--drain-timeout={}", duration::flag(drain)));
    args.push(format!("--metrics-addr=0.0.0.0:{port}"));
    // The pod's name in Kafka's client id, so broker logs and quotas name the pod.
    args.push("--kafka-option=client.id=$(FERRY_POD_NAME)".to_owned());

    let mut env = vec![EnvVar {
        name: "FERRY_POD_NAME".to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }];
    env.extend(kafka_env(consumer, settings));
    if let Some(idempotency) = spec.idempotency.as_ref().filter(|i| i.enabled)
        && let Some(db) = &idempotency.database_secret_ref
    {
        env.push(secret_env(
            "FERRY_IDEMPOTENCY_DATABASE_URL",
            &db.name,
            &db.key,
        ));
        args.push(format!(
            "--idempotency-window={}",
            duration::worker_flag(&idempotency.window)
        ));
    }
    let mut mounts = vec![tmp_mount()];
    if spec.validate {
        // The namespace's contracts ConfigMap: records breaking their topic's schema go to
        // the dead-letter topic instead of the service.
        args.push(format!("--contracts-dir={}", contract_delivery::MOUNT_PATH));
        mounts.push(contract_delivery::mount());
    }
    Ok(Container {
        name: WORKER_CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.pull_policy.clone()),
        command: Some(vec![SIDECAR_BINARY.to_owned()]),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(port_name.to_owned()),
            container_port: port,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", port_name, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", port_name, 10, 6)),
        resources: Some(resources(spec.resources.as_ref())?),
        security_context: Some(locked_down(Some(SIDECAR_UID))),
        volume_mounts: Some(mounts),
        ..Container::default()
    })
}

/// The team's container for `delivery.container`.
fn consumer_container(
    consumer: &EventConsumer,
    resolved: &Resolved,
    settings: &WorkerSettings,
    container: &crate::api::ContainerDelivery,
) -> Result<Container, Invalid> {
    let spec = &consumer.spec;
    let mut env = kafka_env(consumer, settings);
    env.push(value_env(
        "FERRY_TOPICS",
        resolved
            .sources
            .iter()
            .map(|s| s.kafka.as_str())
            .collect::<Vec<_>>()
            .join(","),
    ));
    env.push(value_env("FERRY_GROUP", resolved.group.clone()));
    env.push(value_env(
        "FERRY_DEAD_LETTER_TOPIC",
        resolved.dead_letter.name().to_owned(),
    ));
    // The team's own variables last, so they may override ours.
    env.extend(
        container
            .env
            .iter()
            .map(|e| value_env(&e.name, e.value.clone())),
    );
    Ok(Container {
        name: CONSUMER_CONTAINER.to_owned(),
        image: Some(container.image.clone()),
        command: Some(container.command.clone()).filter(|c| !c.is_empty()),
        args: Some(container.args.clone()).filter(|a| !a.is_empty()),
        env: Some(env),
        resources: Some(resources(spec.resources.as_ref())?),
        // The team's image chooses its user; it must not be root.
        security_context: Some(locked_down(None)),
        volume_mounts: Some(vec![tmp_mount()]),
        ..Container::default()
    })
}

/// The worker Deployment with `replicas` pods.
pub fn build(
    consumer: &EventConsumer,
    resolved: &Resolved,
    settings: &WorkerSettings,
    replicas: i32,
) -> Result<Deployment, Invalid> {
    let consumer_name = consumer.name_any();
    if consumer_name.len() > 56 {
        return Err(Invalid::NameTooLong(consumer_name));
    }
    let namespace = consumer.namespace().unwrap_or_default();
    let (container, grace) = match (
        &consumer.spec.delivery.http,
        &consumer.spec.delivery.container,
    ) {
        (Some(http), _) => {
            let url = match (&http.service, &http.url) {
                (Some(service), _) => format!(
                    "http://{}.{namespace}.svc:{}{}",
                    service.name, service.port, service.path
                ),
                (None, Some(url)) => url.clone(),
                // A localhost `port`: the CRD allows it only with placement: Sidecar, which
                // builds no Deployment.
                (None, None) => String::new(),
            };
            let grace = drain(duration::parse(&http.timeout).unwrap_or_default()) + AFTER_DRAIN;
            (
                worker_container(
                    consumer,
                    resolved,
                    settings,
                    url,
                    &http.timeout,
                    (METRICS_PORT, METRICS_PORT_NAME),
                )?,
                i64::try_from(grace.as_secs()).unwrap_or(DEFAULT_GRACE),
            )
        }
        (None, Some(container)) => (
            consumer_container(consumer, resolved, settings, container)?,
            DEFAULT_GRACE,
        ),
        // The CRD requires exactly one; an old object without either gets a worker that
        // fails loudly on its empty target URL.
        (None, None) => (
            worker_container(
                consumer,
                resolved,
                settings,
                String::new(),
                "10s",
                (METRICS_PORT, METRICS_PORT_NAME),
            )?,
            DEFAULT_GRACE,
        ),
    };
    let labels = labels(&consumer_name);
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            medium: None,
        }),
        ..Volume::default()
    }];
    let mounts_contracts = container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == contract_delivery::VOLUME);
    if mounts_contracts {
        volumes.push(contract_delivery::volume());
    }
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name(&consumer_name)),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: consumer.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([(CONSUMER_LABEL.to_owned(), consumer_name.clone())].into()),
                match_expressions: None,
            },
            revision_history_limit: Some(3),
            progress_deadline_seconds: Some(PROGRESS_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The workers talk to Kafka and the service, never to the API server.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(grace),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::resolve::{DeadLetter, SourceTopic};
    use k8s_openapi::{api::core::v1::Probe, apimachinery::pkg::util::intstr::IntOrString};
    use serde_json::json;

    fn consumer(spec: serde_json::Value) -> EventConsumer {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": spec,
        }))
        .expect("valid EventConsumer")
    }

    fn resolved() -> Resolved {
        Resolved {
            group: "shop.notify".into(),
            sources: vec![
                SourceTopic {
                    event_topic: "orders".into(),
                    kafka: "orders.v1".into(),
                    partitions: 3,
                },
                SourceTopic {
                    event_topic: "users".into(),
                    kafka: "users.v1".into(),
                    partitions: 1,
                },
            ],
            dead_letter: DeadLetter::Managed("shop.notify.dlq".into()),
        }
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "docker.io/ferry/ferry-sidecar:1".into(),
            pull_policy: "IfNotPresent".into(),
            kafka_env: vec![
                ("FERRY_KAFKA_BOOTSTRAP".into(), "kafka:9092".into()),
                (
                    "FERRY_KAFKA_SECURITY_PROTOCOL".into(),
                    "SASL_PLAINTEXT".into(),
                ),
                ("FERRY_KAFKA_SASL_MECHANISM".into(), "SCRAM-SHA-512".into()),
            ],
        }
    }

    fn http_spec() -> serde_json::Value {
        json!({
            "topics": ["orders", "users"], "serviceAccount": "notification-service",
            "delivery": {"http": {"service": {"name": "notification", "port": 8000,
                                              "path": "/events/orders"}, "timeout": "1.5s"}},
            "ordering": "partition", "maxInFlight": 8,
            "retry": {"attempts": 2, "backoff": {"initial": "100ms", "max": "2s"},
                      "delays": ["5s", "1m"]},
            "idempotency": {"enabled": true, "window": "2d",
                            "databaseSecretRef": {"name": "notify-db", "key": "DATABASE_URL"}},
            "startFrom": "latest",
        })
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn env_of(c: &Container) -> BTreeMap<String, EnvVar> {
        c.env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn every_setting_of_the_spec_is_a_worker_flag() {
        let d = build(&consumer(http_spec()), &resolved(), &settings(), 2).expect("builds");
        let c = &pod(&d).containers[0];
        assert_eq!(c.command.as_deref(), Some(&[SIDECAR_BINARY.to_owned()][..]));
        assert_eq!(
            c.args.clone().unwrap_or_default(),
            [
                "worker",
                "--topics=orders.v1,users.v1",
                "--group=shop.notify",
                "--target-url=http://notification.shop.svc:8000/events/orders",
                "--ordering=partition",
                "--max-in-flight=8",
                "--timeout=1500ms",
                "--retry-attempts=2",
                "--retry-backoff-initial=100ms",
                "--retry-backoff-max=2s",
                "--retry-delays=5s,1m",
                "--dead-letter-topic=shop.notify.dlq",
                "--start-from=latest",
                "--drain-timeout=20s",
                "--metrics-addr=0.0.0.0:9090",
                "--kafka-option=client.id=$(FERRY_POD_NAME)",
                "--idempotency-window=172800s",
            ]
        );
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
        assert_eq!(d.metadata.name.as_deref(), Some("notify-worker"));
    }

    #[test]
    fn validate_mounts_the_namespaces_contracts_into_the_worker() {
        let plain = build(&consumer(http_spec()), &resolved(), &settings(), 1).expect("valid");
        let has_volume = |d: &Deployment| {
            pod(d)
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == contract_delivery::VOLUME)
        };
        assert!(!has_volume(&plain));
        let args = |d: &Deployment| pod(d).containers[0].args.clone().unwrap_or_default();
        assert!(
            !args(&plain)
                .iter()
                .any(|a| a.starts_with("--contracts-dir"))
        );

        let mut spec = http_spec();
        spec["validate"] = json!(true);
        let checking = build(&consumer(spec), &resolved(), &settings(), 1).expect("valid");
        assert!(has_volume(&checking));
        let volume = pod(&checking)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == contract_delivery::VOLUME)
            .and_then(|v| v.config_map.clone())
            .expect("a ConfigMap volume");
        assert_eq!(volume.name, contract_delivery::CONFIG_MAP);
        assert_eq!(
            volume.optional,
            Some(true),
            "a namespace without schemas has none"
        );
        assert!(args(&checking).contains(&"--contracts-dir=/etc/ferry/contracts".to_owned()));
        let mount = pod(&checking).containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == contract_delivery::VOLUME)
            .cloned()
            .expect("mounted");
        assert_eq!(mount.mount_path, contract_delivery::MOUNT_PATH);
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn secrets_come_by_reference_and_are_never_copied() {
        let d = build(&consumer(http_spec()), &resolved(), &settings(), 1).expect("builds");
        let env = env_of(&pod(&d).containers[0]);
        let secret_of = |name: &str| {
            let r = env[name]
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.clone())
                .expect("a secretKeyRef");
            (r.name, r.key)
        };
        assert_eq!(
            secret_of("FERRY_KAFKA_USERNAME"),
            ("ferry-kafka-notification-service".into(), "username".into())
        );
        assert_eq!(
            secret_of("FERRY_KAFKA_PASSWORD"),
            ("ferry-kafka-notification-service".into(), "password".into())
        );
        assert_eq!(
            secret_of("FERRY_IDEMPOTENCY_DATABASE_URL"),
            ("notify-db".into(), "DATABASE_URL".into())
        );
        assert!(env["FERRY_KAFKA_PASSWORD"].value.is_none());
        assert_eq!(
            env["FERRY_KAFKA_BOOTSTRAP"].value.as_deref(),
            Some("kafka:9092")
        );
        assert_eq!(
            env["FERRY_POD_NAME"]
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("metadata.name")
        );
    }

    #[test]
    fn the_operators_own_credentials_never_reach_the_pod() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--kafka-bootstrap=127.0.0.1:9092",
            "--kafka-security-protocol=SASL_PLAINTEXT",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-username=admin",
            "--kafka-password=admin-secret",
        ])
        .expect("flags");
        let s = WorkerSettings::new(
            "i".into(),
            "Always".into(),
            &cli.kafka,
            Some("kafka.ns:9092"),
        );
        assert_eq!(
            s.kafka_env,
            [
                (
                    "FERRY_KAFKA_BOOTSTRAP".to_owned(),
                    "kafka.ns:9092".to_owned()
                ),
                (
                    "FERRY_KAFKA_SECURITY_PROTOCOL".to_owned(),
                    "SASL_PLAINTEXT".to_owned()
                ),
                (
                    "FERRY_KAFKA_SASL_MECHANISM".to_owned(),
                    "SCRAM-SHA-512".to_owned()
                ),
            ]
        );
        let d = build(&consumer(http_spec()), &resolved(), &s, 1).expect("builds");
        let text = serde_json::to_string(&d).expect("json");
        assert!(
            !text.contains("admin-secret") && !text.contains("\"admin\""),
            "{text}"
        );
    }

    #[test]
    fn probes_port_security_and_grace() {
        let d = build(&consumer(http_spec()), &resolved(), &settings(), 1).expect("builds");
        let pod = pod(&d);
        let c = &pod.containers[0];
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| (h.path.clone().unwrap_or_default(), h.port.clone()))
        };
        let metrics = IntOrString::String("metrics".into());
        assert_eq!(
            path(&c.readiness_probe),
            Some(("/readyz".into(), metrics.clone()))
        );
        assert_eq!(path(&c.liveness_probe), Some(("/healthz".into(), metrics)));
        let port = &c.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9090)
        );
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let psc = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        // The drain (20 s) plus the commit and close.
        assert_eq!(pod.termination_grace_period_seconds, Some(30));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let labels = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("labels");
        assert_eq!(labels[CONSUMER_LABEL], "notify");
        let owner = &d.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("EventConsumer", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn a_slow_endpoint_gets_a_longer_drain() {
        let mut spec = http_spec();
        spec["delivery"]["http"]["timeout"] = json!("1m");
        let d = build(&consumer(spec), &resolved(), &settings(), 1).expect("builds");
        let pod = pod(&d);
        assert!(
            pod.containers[0]
                .args
                .as_ref()
                .expect("args")
                .contains(&"--drain-timeout=65s".to_owned())
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(75));
    }

    #[test]
    fn resources_default_or_come_from_the_spec() {
        let d = build(&consumer(http_spec()), &resolved(), &settings(), 1).expect("builds");
        let r = pod(&d).containers[0].resources.clone().expect("resources");
        assert_eq!(
            r.requests.expect("requests")["memory"],
            Quantity("64Mi".into())
        );
        assert_eq!(
            r.limits.expect("limits")["memory"],
            Quantity("256Mi".into())
        );
        let mut spec = http_spec();
        spec["resources"] = json!({"limits": {"cpu": "1"}});
        let d = build(&consumer(spec), &resolved(), &settings(), 1).expect("builds");
        let r = pod(&d).containers[0].resources.clone().expect("resources");
        assert_eq!(r.limits.expect("limits")["cpu"], Quantity("1".into()));
        assert!(r.requests.is_none());
        let mut spec = http_spec();
        spec["resources"] = json!({"limits": "lots"});
        assert!(matches!(
            build(&consumer(spec), &resolved(), &settings(), 1),
            Err(Invalid::Resources(_))
        ));
    }

    #[test]
    fn a_url_is_used_as_written() {
        let mut spec = http_spec();
        spec["delivery"] = json!({"http": {"url": "http://10.0.0.1:8080/e"}});
        let d = build(&consumer(spec), &resolved(), &settings(), 1).expect("builds");
        assert!(
            pod(&d).containers[0]
                .args
                .as_ref()
                .expect("args")
                .contains(&"--target-url=http://10.0.0.1:8080/e".to_owned())
        );
    }

    #[test]
    fn container_delivery_runs_the_teams_image_with_kafka_settings() {
        let spec = json!({
            "topics": ["orders"], "serviceAccount": "legacy",
            "delivery": {"container": {"image": "shop/legacy:2", "command": ["python"],
                                       "args": ["consume.py"],
                                       "env": [{"name": "MODE", "value": "prod"}]}},
        });
        let d = build(&consumer(spec), &resolved(), &settings(), 1).expect("builds");
        let c = &pod(&d).containers[0];
        assert_eq!(c.name, CONSUMER_CONTAINER);
        assert_eq!(c.image.as_deref(), Some("shop/legacy:2"));
        assert_eq!(c.command.as_deref(), Some(&["python".to_owned()][..]));
        assert_eq!(c.args.as_deref(), Some(&["consume.py".to_owned()][..]));
        let env = env_of(c);
        assert_eq!(
            env["FERRY_TOPICS"].value.as_deref(),
            Some("orders.v1,users.v1")
        );
        assert_eq!(env["FERRY_GROUP"].value.as_deref(), Some("shop.notify"));
        assert_eq!(env["MODE"].value.as_deref(), Some("prod"));
        assert!(env["FERRY_KAFKA_PASSWORD"].value_from.is_some());
        assert_eq!(
            c.security_context.as_ref().and_then(|s| s.run_as_non_root),
            Some(true)
        );
        assert!(
            c.readiness_probe.is_none(),
            "no probes the team did not declare"
        );
    }

    #[test]
    fn long_names_are_refused() {
        let mut c = consumer(http_spec());
        c.metadata.name = Some("x".repeat(57));
        assert!(matches!(
            build(&c, &resolved(), &settings(), 1),
            Err(Invalid::NameTooLong(_))
        ));
    }
}
