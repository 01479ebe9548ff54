//! The containers the webhook injects, built from what the pod asked for (DESIGN §4, §6).
//!
//! Pure. Every injected container is a native sidecar (an init container with
//! `restartPolicy: Always`: it starts before the service's containers and stops after them),
//! runs as a non-root user on a read-only root filesystem with no capabilities, takes its Kafka
//! settings from the principal's `ferry-kafka-<serviceAccount>` Secret by reference (the
//! password never appears in the pod), and serves `/healthz`, `/readyz` and `/metrics` on a
//! named port the service does not use.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Probe,
        ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use super::annotations::RelaySettings;

/// The relay's container name; also how an injected pod is recognised.
pub const RELAY_CONTAINER: &str = "ferry-relay";

/// The relay's metrics port name (a pod's port names are unique and at most 15 characters).
pub const RELAY_PORT_NAME: &str = "ferry-relay";

/// Where the relay listens unless the pod uses that port: `ferry-sidecar relay`'s default
/// (`DEFAULT_METRICS_ADDR`), which Prometheus configurations already name.
pub const RELAY_METRICS_PORT: i32 = 9464;

/// The user the Ferry images are built for (`make images`: uid 65532, distroless' `nonroot`).
pub const SIDECAR_UID: i64 = 65532;

/// Requests when the pod names none: `make bench-relay` measured 18.8 MiB RSS at 43k rows/s;
/// 64 MiB request and 256 MiB limit leave room for a full producer queue of large rows.
const DEFAULT_CPU_REQUEST: &str = "50m";
const DEFAULT_MEMORY: &str = "64Mi";
const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// The keys of the credential Secret the identity controller writes
/// (`identity::credentials::secret`), as `FERRY_KAFKA_*` variables.
const KAFKA_FROM_SECRET: [(&str, &str); 5] = [
    ("FERRY_KAFKA_BOOTSTRAP", "bootstrap.servers"),
    ("FERRY_KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("FERRY_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("FERRY_KAFKA_USERNAME", "username"),
    ("FERRY_KAFKA_PASSWORD", "password"),
];

/// How the injected containers are run: the operator's settings, the same for every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarImage {
    /// `ferry-sidecar`'s image reference.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub pull_policy: String,
}

/// The relay container for a pod whose service account is `service_account`, listening on
/// `port`.
pub fn relay(
    settings: &RelaySettings,
    image: &SidecarImage,
    service_account: &str,
    port: i32,
) -> Container {
    let mut env = Vec::new();
    if let Some(db) = &settings.database {
        env.push(secret_env("FERRY_DATABASE_URL", &db.name, &db.key));
    }
    let plain = [
        ("FERRY_OUTBOX_TABLE", settings.table.clone()),
        (
            "FERRY_DEAD_LETTER_TOPIC",
            settings.dead_letter_topic.clone(),
        ),
        (
            "FERRY_OUTBOX_BATCH_SIZE",
            settings.batch_size.map(|n| n.to_string()),
        ),
        (
            "FERRY_OUTBOX_IDLE_POLL_INTERVAL",
            settings.idle_poll_interval.clone(),
        ),
        (
            "FERRY_OUTBOX_NOTIFY",
            settings.notify.then(|| "true".into()),
        ),
        (
            "FERRY_OUTBOX_DELETE_PUBLISHED",
            settings.delete_published.then(|| "true".into()),
        ),
        (
            "FERRY_OUTBOX_PUBLISHED_RETENTION",
            settings.published_retention.clone(),
        ),
        ("FERRY_METRICS_ADDR", Some(format!("0.0.0.0:{port}"))),
        ("FERRY_LOG_FORMAT", Some("json".into())),
    ];
    env.extend(
        plain
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| value_env(name, v))),
    );
    env.extend(kafka_env(service_account));
    let cpu = settings.cpu.as_deref().unwrap_or(DEFAULT_CPU_REQUEST);
    let memory = settings.memory.as_deref();
    Container {
        name: RELAY_CONTAINER.into(),
        image: Some(image.image.clone()),
        image_pull_policy: Some(image.pull_policy.clone()),
        args: Some(vec!["relay".into()]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(RELAY_PORT_NAME.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(
            cpu,
            memory.unwrap_or(DEFAULT_MEMORY),
            memory.unwrap_or(DEFAULT_MEMORY_LIMIT),
        )),
        ..hardened(RELAY_PORT_NAME)
    }
}

/// The first port from `preferred` up that no container of the pod declares.
pub fn free_port(used: &BTreeSet<i32>, preferred: i32) -> i32 {
    (preferred..=u16::MAX.into())
        .chain(1024..preferred)
        .find(|p| !used.contains(p))
        .unwrap_or(preferred)
}

/// `FERRY_KAFKA_*` from the principal's credential Secret, every key by reference.
pub fn kafka_env(service_account: &str) -> Vec<EnvVar> {
    let secret = crate::identity::credentials::secret_name(service_account);
    KAFKA_FROM_SECRET
        .iter()
        .map(|(name, key)| secret_env(name, &secret, key))
        .collect()
}

/// What every injected container shares: the restart policy that makes it a native sidecar,
/// the security context, and probes on the named metrics port.
fn hardened(port_name: &str) -> Container {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port_name.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        // Three misses: a relay stalled on a slow database is not killed for one slow answer.
        failure_threshold: Some(3),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    Container {
        restart_policy: Some("Always".into()),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_owned(), Quantity(cpu.into())),
                ("memory".to_owned(), Quantity(memory.into())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_owned(), Quantity(memory_limit.into()))].into()),
        ..Default::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The image the webhook's unit tests inject.
#[cfg(test)]
pub(crate) fn test_image() -> SidecarImage {
    SidecarImage {
        image: "ferry-sidecar:0.1.0".into(),
        pull_policy: "IfNotPresent".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::annotations::SecretKey;

    fn image() -> SidecarImage {
        test_image()
    }

    fn env_of(c: &Container) -> Vec<(String, String)> {
        c.env
            .iter()
            .flatten()
            .map(|e| {
                let shown = match (&e.value, &e.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        let r = from.secret_key_ref.as_ref().expect("secret ref");
                        format!("secret:{}/{}", r.name, r.key)
                    }
                    (None, None) => String::new(),
                };
                (e.name.clone(), shown)
            })
            .collect()
    }

    #[test]
    fn the_relay_takes_every_secret_by_reference() {
        let settings = RelaySettings {
            database: Some(SecretKey {
                name: "order-db".into(),
                key: "DATABASE_URL".into(),
            }),
            table: Some("outbox".into()),
            notify: true,
            ..Default::default()
        };
        let c = relay(&settings, &image(), "order-service", 9464);
        let env = env_of(&c);
        let get = |n: &str| {
            env.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{n} missing in {env:?}"))
        };
        assert_eq!(get("FERRY_DATABASE_URL"), "secret:order-db/DATABASE_URL");
        assert_eq!(
            get("FERRY_KAFKA_PASSWORD"),
            "secret:ferry-kafka-order-service/password"
        );
        assert_eq!(
            get("FERRY_KAFKA_BOOTSTRAP"),
            "secret:ferry-kafka-order-service/bootstrap.servers"
        );
        assert_eq!(get("FERRY_OUTBOX_TABLE"), "outbox");
        assert_eq!(get("FERRY_OUTBOX_NOTIFY"), "true");
        assert_eq!(get("FERRY_METRICS_ADDR"), "0.0.0.0:9464");
        assert!(
            !env.iter()
                .any(|(k, _)| k == "FERRY_OUTBOX_DELETE_PUBLISHED"),
            "unset settings keep the relay's defaults: {env:?}"
        );
        assert_eq!(c.args, Some(vec!["relay".to_owned()]));
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn injected_containers_are_locked_down() {
        let c = relay(&RelaySettings::default(), &image(), "sa", 9464);
        let sc = c.security_context.expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        for probe in [c.readiness_probe, c.liveness_probe] {
            let get = probe.and_then(|p| p.http_get).expect("http probe");
            assert_eq!(get.port, IntOrString::String(RELAY_PORT_NAME.into()));
        }
        let requests = c.resources.and_then(|r| r.requests).expect("requests");
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    }

    #[test]
    fn the_port_moves_past_the_pods_own() {
        let used: BTreeSet<i32> = [8000, 9464, 9465].into();
        assert_eq!(free_port(&used, 9464), 9466);
        assert_eq!(free_port(&BTreeSet::new(), 9464), 9464);
    }
}
