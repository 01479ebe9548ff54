//! The service-account token mount that Kubernetes' `ServiceAccount` admission plugin gives
//! every container of a pod, given to the containers Ferry injects up front.
//!
//! Why: the API server runs its built-in mutating plugins before the webhooks, so the pod Ferry
//! sees already has the token volume (`kube-api-access-<random>`) mounted in its own
//! containers, but the containers Ferry adds do not. Because Ferry changed the pod and its
//! webhook is `reinvocationPolicy: IfNeeded`, the API server then runs the built-in plugins
//! again; the ServiceAccount plugin mounts the token into Ferry's new containers, which changes
//! the pod after the webhook, so the API server calls the webhook a second time (which answers
//! "already injected"). That second round trip doubled what admission added to every opted-in
//! pod creation (issue: injection, the ≤ 5 ms p99 target). With the mount already in place the
//! plugin finds nothing to add and the webhook is called once. The pod comes out exactly as
//! before: the same mount, added by Ferry instead of by the plugin.

use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};

/// Where the plugin mounts the token (`DefaultAPITokenMountPath` in Kubernetes'
/// `plugin/pkg/admission/serviceaccount`); a container with any mount here is left alone by it.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected token volume the plugin adds (`ServiceAccountVolumeName + "-"`);
/// the plugin uses the first volume with it.
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

/// The mount the ServiceAccount plugin would add to a new container of this pod, if it would
/// add one: the pod has the plugin's token volume and the plugin mounted it into the pod's own
/// containers (so the token is automounted: neither the pod nor its service account opted out).
pub fn service_account_token_mount(spec: &PodSpec) -> Option<VolumeMount> {
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(TOKEN_VOLUME_PREFIX))?;
    let automounted = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.name == volume.name && m.mount_path == TOKEN_MOUNT_PATH);
    automounted.then(|| VolumeMount {
        name: volume.name.clone(),
        mount_path: TOKEN_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("a pod spec")
    }

    #[test]
    fn the_plugins_mount_is_copied_from_the_pods_own_containers() {
        let s = spec(json!({
            "containers": [{"name": "web", "volumeMounts": [
                {"name": "data", "mountPath": "/data"},
                {"name": "kube-api-access-x7k2p", "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}
            ]}],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "kube-api-access-x7k2p", "projected": {"sources": []}}]
        }));
        assert_eq!(
            service_account_token_mount(&s),
            Some(VolumeMount {
                name: "kube-api-access-x7k2p".into(),
                mount_path: TOKEN_MOUNT_PATH.into(),
                read_only: Some(true),
                ..Default::default()
            })
        );
    }

    #[test]
    fn no_token_volume_no_mount() {
        // automountServiceAccountToken: false on the pod or its service account.
        let s = spec(json!({"containers": [{"name": "web"}]}));
        assert_eq!(service_account_token_mount(&s), None);
    }

    #[test]
    fn a_volume_of_that_name_that_no_container_mounts_at_the_token_path_is_not_the_plugins() {
        let s = spec(json!({
            "containers": [{"name": "web", "volumeMounts": [
                {"name": "kube-api-access-own", "mountPath": "/elsewhere"}
            ]}],
            "volumes": [{"name": "kube-api-access-own", "emptyDir": {}}]
        }));
        assert_eq!(service_account_token_mount(&s), None);
    }
}
