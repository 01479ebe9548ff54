//! The containers the webhook injects, built from what the pod asked for (DESIGN §4, §6).
//!
//! Pure. Every injected container is a native sidecar (an init container with
//! `restartPolicy: Always`: it starts before the service's containers and stops after them),
//! runs as a non-root user on a read-only root filesystem with no capabilities, takes its Kafka
//! settings from the principal's `ferry-kafka-<serviceAccount>` Secret by reference (the
//! password never appears in the pod), and serves `/healthz`, `/readyz` and `/metrics` on a
//! named port the service does not use.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar};

use crate::{
    container::{
        DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, SIDECAR_UID, http_probe,
        locked_down, resources, secret_env, value_env,
    },
    contract_delivery,
};

use super::annotations::RelaySettings;

/// The relay's container name; also how an injected pod is recognised.
pub const RELAY_CONTAINER: &str = "ferry-relay";

/// The relay's metrics port name (a pod's port names are unique and at most 15 characters).
pub const RELAY_PORT_NAME: &str = "ferry-relay";

/// Where the relay listens unless the pod uses that port: `ferry-sidecar relay`'s default
/// (`DEFAULT_METRICS_ADDR`), which Prometheus configurations already name.
pub const RELAY_METRICS_PORT: i32 = 9464;

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
        (
            "FERRY_CONTRACTS_DIR",
            Some(contract_delivery::MOUNT_PATH.into()),
        ),
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
            memory.unwrap_or(DEFAULT_MEMORY_REQUEST),
            memory.unwrap_or(DEFAULT_MEMORY_LIMIT),
        )),
        volume_mounts: Some(vec![contract_delivery::mount()]),
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
    Container {
        restart_policy: Some("Always".into()),
        // Three misses: a relay stalled on a slow database is not killed for one slow answer.
        readiness_probe: Some(http_probe("/readyz", port_name, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", port_name, 10, 3)),
        security_context: Some(locked_down(Some(SIDECAR_UID))),
        ..Default::default()
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
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

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
