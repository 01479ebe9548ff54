//! Building blocks of the containers the operator writes — the worker Deployment's and the
//! webhook's injected sidecars — so every Ferry container is locked down, probed and given its
//! secrets the same way (DESIGN §5, §6).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, EnvVar, EnvVarSource, HTTPGetAction, Probe, ResourceRequirements,
        SeccompProfile, SecretKeySelector, SecurityContext,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

/// The user the Ferry images are built for (`make images`: uid 65532, distroless' `nonroot`).
pub const SIDECAR_UID: i64 = 65532;

/// Requests and limit when the spec names none: `make bench-relay` and `make bench-worker`
/// measured 19–29 MiB RSS; 64 MiB requested and a 256 MiB limit leave room for a full producer
/// queue of large records.
pub const DEFAULT_CPU_REQUEST: &str = "50m";
pub const DEFAULT_MEMORY_REQUEST: &str = "64Mi";
pub const DEFAULT_MEMORY_LIMIT: &str = "256Mi";

/// An env variable with a literal value.
pub fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// An env variable read from `key` of Secret `secret` (required: the container waits for it
/// rather than starting without a credential). The value never appears in the pod.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Non-root (as `run_as_user` when given), read-only root filesystem, no capabilities, no
/// privilege escalation, seccomp `RuntimeDefault`: what the restricted Pod Security Standard asks.
pub fn locked_down(run_as_user: Option<i64>) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user,
        run_as_group: run_as_user,
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// An HTTP probe of `path` on the named port, every `period` seconds, failing after `failures`
/// misses of 2 s each.
pub fn http_probe(path: &str, port_name: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port_name.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// CPU and memory requested, memory limited.
pub fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q(cpu)),
            ("memory".to_owned(), q(memory)),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q(memory_limit))])),
        ..ResourceRequirements::default()
    }
}
