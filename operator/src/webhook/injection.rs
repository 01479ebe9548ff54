//! The webhook's decision for one pod: inject (as a JSON patch), leave alone, or deny.
//!
//! Pure: pod in, [`Decision`] out, so every pod shape is a unit test (with and without init
//! containers, several containers, ports in the way, an already-injected pod). The patch is the
//! difference between the pod and the pod with Ferry's containers added, so nothing else in the
//! pod can change.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{
    annotations::{self, INJECTED},
    sidecar::{self, RELAY_CONTAINER, RELAY_METRICS_PORT, SidecarImage},
    token_mount::{TOKEN_MOUNT_PATH, service_account_token_mount},
};
use crate::{
    consumer::{deployment::Invalid, sidecar as consumer_sidecar},
    contract_delivery,
};

/// What the webhook answers for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to do: no injection asked for, or already injected.
    Unchanged { reason: &'static str },
    /// Add these containers: the patch, and what it injects (for the pod annotation and logs).
    Inject {
        patch: json_patch::Patch,
        injected: Vec<String>,
    },
    /// Refuse the pod, with a message for the person who applied it.
    Deny(String),
}

/// A consumer worker to inject (an EventConsumer with `placement: Sidecar` that selects the
/// pod): its EventConsumer's name, and its container built for a metrics port and port name,
/// which only the pod decides.
pub struct Worker<'a> {
    pub consumer: String,
    pub build: BuildWorker<'a>,
}

/// Builds a worker container for `(port, port_name)`.
pub type BuildWorker<'a> = Box<dyn Fn((i32, &str)) -> Result<Container, Invalid> + 'a>;

/// Decides for `pod` (as the API server sends it: on CREATE, after built-in defaulting, so
/// `serviceAccountName` is set): the relay if its annotations ask for one, and `workers`.
pub fn decide(pod: &Pod, image: &SidecarImage, workers: &[Worker<'_>]) -> Decision {
    let empty = BTreeMap::new();
    let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let requested = match annotations::parse(pod_annotations) {
        Ok(r) => r,
        Err(e) => return Decision::Deny(e.to_string()),
    };
    let spec = pod.spec.as_ref();
    let names: BTreeSet<&str> = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.name.as_str())
        .collect();
    if requested.already_injected || names.contains(RELAY_CONTAINER) {
        // Reinvocation, or a pod re-applied from an injected one: never two relays.
        return Decision::Unchanged {
            reason: "already injected",
        };
    }
    if requested.relay.is_none() && workers.is_empty() {
        return Decision::Unchanged {
            reason: "nothing requested",
        };
    }
    let Some(spec) = spec else {
        return Decision::Deny("the pod has no spec".into());
    };
    let service_account = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let ports = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
    };
    let mut used: BTreeSet<i32> = ports().map(|p| p.container_port).collect();
    let port_names: BTreeSet<&str> = ports().filter_map(|p| p.name.as_deref()).collect();
    if let Some(clash) = port_names
        .iter()
        .find(|n| **n == sidecar::RELAY_PORT_NAME || n.starts_with(WORKER_PORT_PREFIX))
    {
        return Decision::Deny(format!(
            "the pod already names a port {clash:?}, and Ferry names the ports of the containers it injects {:?} and {WORKER_PORT_PREFIX}<n>; rename it",
            sidecar::RELAY_PORT_NAME
        ));
    }

    let mut added = Vec::new();
    let mut injected = Vec::new();
    if let Some(relay) = &requested.relay {
        let port = sidecar::free_port(&used, RELAY_METRICS_PORT);
        used.insert(port);
        added.push(sidecar::relay(relay, image, service_account, port));
        injected.push("relay".to_owned());
    }
    for (n, worker) in workers.iter().enumerate() {
        let port = sidecar::free_port(&used, consumer_sidecar::WORKER_METRICS_PORT);
        let port_name = format!("{WORKER_PORT_PREFIX}{n}");
        let container = match (worker.build)((port, &port_name)) {
            Ok(c) => c,
            Err(e) => {
                // The consumer's own status says so (InvalidSpec); the pod is not held up.
                tracing::warn!(consumer = worker.consumer, error = %e, "worker not injected");
                continue;
            }
        };
        if names.contains(container.name.as_str()) {
            // Copied from an injected pod: it has this worker already (an older one shows in
            // the consumer's status as a pod to restart).
            continue;
        }
        used.insert(port);
        added.push(container);
        injected.push(format!("worker:{}", worker.consumer));
    }
    if added.is_empty() {
        return Decision::Unchanged {
            reason: "no worker could be built",
        };
    }
    // The token mount the API server's ServiceAccount plugin would add after the webhook, which
    // would make the API server call the webhook a second time (see token_mount).
    if let Some(mount) = service_account_token_mount(spec) {
        for container in &mut added {
            let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
            if !mounts.iter().any(|m| m.mount_path == TOKEN_MOUNT_PATH) {
                mounts.push(mount.clone());
            }
        }
    }

    // The relay and every worker checking contracts read them from one pod volume.
    let reads_contracts = requested.relay.is_some()
        || added.iter().any(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == contract_delivery::VOLUME)
        });
    if reads_contracts
        && spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == contract_delivery::VOLUME)
    {
        return Decision::Deny(format!(
            "the pod already has a volume {:?}, the name Ferry gives the event contracts its relay and workers read; rename it",
            contract_delivery::VOLUME
        ));
    }

    let mut after = pod.clone();
    if let Some(spec) = after.spec.as_mut() {
        // Last among the init containers: regular ones (a schema migration creating the outbox
        // table) finish first, and as native sidecars the relay and workers still start
        // before, and stop after, the service's containers.
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .extend(added);
        if reads_contracts {
            spec.volumes
                .get_or_insert_with(Vec::new)
                .push(contract_delivery::volume());
        }
    }
    after
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED.into(), injected.join(","));
    match (serde_json::to_value(pod), serde_json::to_value(&after)) {
        (Ok(before), Ok(after)) => Decision::Inject {
            patch: json_patch::diff(&before, &after),
            injected,
        },
        (Err(e), _) | (_, Err(e)) => Decision::Deny(format!("cannot encode the pod: {e}")),
    }
}

/// The names of injected workers' metrics ports: `ferry-w0`, `ferry-w1`, … (a pod's port
/// names are unique and at most 15 characters).
pub const WORKER_PORT_PREFIX: &str = "ferry-w";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::annotations::DATABASE_SECRET;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
    use serde_json::json;

    fn image() -> SidecarImage {
        crate::webhook::sidecar::test_image()
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn service_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": "order-",
                "labels": {"ferry.dev/inject": "enabled", "app": "order"},
                "annotations": {DATABASE_SECRET: "order-db"}
            },
            "spec": {
                "serviceAccountName": "order-service",
                "containers": [{
                    "name": "web", "image": "shop/order:1",
                    "ports": [{"containerPort": 8000, "name": "http"}],
                    "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "order-db", "key": "DATABASE_URL"}}}]
                }]
            }
        })
    }

    /// Applies the decision's patch as the API server would.
    fn admitted(before: &serde_json::Value, decision: &Decision) -> serde_json::Value {
        let Decision::Inject { patch, .. } = decision else {
            panic!("expected an injection, got {decision:?}");
        };
        let mut doc = before.clone();
        json_patch::patch(&mut doc, patch).expect("the patch applies");
        doc
    }

    fn init_names(doc: &serde_json::Value) -> Vec<String> {
        doc["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn a_relay_is_added_as_the_last_init_container_and_nothing_else_changes() {
        let before = service_pod();
        let decision = decide(&pod(before.clone()), &image(), &[]);
        let after = admitted(&before, &decision);
        assert_eq!(init_names(&after), vec![RELAY_CONTAINER]);
        assert_eq!(after["metadata"]["annotations"][INJECTED], "relay");
        // Everything but the two additions is as it was.
        let mut trimmed = after.clone();
        assert_eq!(
            after["spec"]["volumes"],
            json!([{"name": "ferry-contracts",
                    "configMap": {"name": "ferry-contracts", "optional": true}}]),
            "the namespace's event contracts, for the relay"
        );
        let spec = trimmed["spec"].as_object_mut().expect("spec");
        spec.remove("initContainers");
        spec.remove("volumes");
        trimmed["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove(INJECTED);
        assert_eq!(trimmed, before);
    }

    #[test]
    fn existing_init_containers_run_first() {
        let mut before = service_pod();
        before["spec"]["initContainers"] =
            json!([{"name": "migrate", "image": "shop/order:1", "args": ["migrate"]}]);
        let after = admitted(&before, &decide(&pod(before.clone()), &image(), &[]));
        assert_eq!(init_names(&after), vec!["migrate", RELAY_CONTAINER]);
    }

    #[test]
    fn the_marker_joins_the_pods_own_annotations() {
        let mut before = service_pod();
        before["metadata"]["annotations"] = json!({DATABASE_SECRET: "db"});
        let after = admitted(&before, &decide(&pod(before.clone()), &image(), &[]));
        assert_eq!(after["metadata"]["annotations"][DATABASE_SECRET], "db");
        assert_eq!(after["metadata"]["annotations"][INJECTED], "relay");
    }

    #[test]
    fn the_metrics_port_avoids_every_port_of_the_pod() {
        let mut before = service_pod();
        before["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "exporter", "image": "x", "ports": [{"containerPort": 9464}]}));
        before["spec"]["initContainers"] = json!([{"name": "proxy", "image": "y", "restartPolicy": "Always", "ports": [{"containerPort": 9465}]}]);
        let after = admitted(&before, &decide(&pod(before.clone()), &image(), &[]));
        let relay = &after["spec"]["initContainers"][1];
        assert_eq!(relay["name"], RELAY_CONTAINER);
        assert_eq!(relay["ports"][0]["containerPort"], 9466);
        let addr = relay["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "FERRY_METRICS_ADDR")
            .expect("metrics address");
        assert_eq!(addr["value"], "0.0.0.0:9466");
    }

    #[test]
    fn injected_containers_carry_the_token_mount_so_the_api_server_calls_the_webhook_once() {
        let mut before = service_pod();
        let token = json!({"name": "kube-api-access-x7k2p", "mountPath": TOKEN_MOUNT_PATH, "readOnly": true});
        before["spec"]["containers"][0]["volumeMounts"] = json!([token]);
        before["spec"]["volumes"] =
            json!([{"name": "kube-api-access-x7k2p", "projected": {"sources": []}}]);
        let after = admitted(
            &before,
            &decide(&pod(before.clone()), &image(), &[notify_worker(8000)]),
        );
        let injected = after["spec"]["initContainers"].as_array().expect("init");
        assert_eq!(injected.len(), 2, "the relay and the worker");
        let contracts = json!({"name": "ferry-contracts", "mountPath": "/etc/ferry/contracts", "readOnly": true});
        assert_eq!(injected[0]["volumeMounts"], json!([contracts, token]));
        assert_eq!(injected[1]["volumeMounts"], json!([token]));
        // What the ServiceAccount plugin does when the API server runs it again: it mounts the
        // token into every container without a mount at its path. Nothing is left to mount, so
        // the pod does not change after the webhook and the webhook is not called again.
        let lacking: Vec<&str> = after["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .chain(after["spec"]["containers"].as_array())
            .flatten()
            .filter(|c| {
                !c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["mountPath"] == TOKEN_MOUNT_PATH)
            })
            .map(|c| c["name"].as_str().unwrap_or_default())
            .collect();
        assert!(lacking.is_empty(), "{lacking:?}");
    }

    #[test]
    fn without_an_automounted_token_nothing_is_mounted() {
        let before = service_pod();
        let after = admitted(&before, &decide(&pod(before.clone()), &image(), &[]));
        let mounts = after["spec"]["initContainers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts");
        assert!(
            mounts.iter().all(|m| m["mountPath"] != TOKEN_MOUNT_PATH),
            "{mounts:?}"
        );
        let volumes = after["spec"]["volumes"].as_array().expect("volumes");
        assert!(
            volumes.iter().all(|v| v["name"] == "ferry-contracts"),
            "no token volume added: {volumes:?}"
        );
    }

    #[test]
    fn a_port_named_like_the_relays_is_denied() {
        let mut before = service_pod();
        before["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 7000, "name": "ferry-relay"}]);
        let Decision::Deny(message) = decide(&pod(before), &image(), &[]) else {
            panic!("expected a denial");
        };
        assert!(message.contains("ferry-relay"), "{message}");
    }

    #[test]
    fn a_volume_named_like_the_contracts_is_denied() {
        let mut before = service_pod();
        before["spec"]["volumes"] = json!([{"name": "ferry-contracts", "emptyDir": {}}]);
        let Decision::Deny(message) = decide(&pod(before), &image(), &[]) else {
            panic!("expected a denial");
        };
        assert!(message.contains("ferry-contracts"), "{message}");
    }

    #[test]
    fn an_injected_pod_is_left_alone() {
        let before = service_pod();
        let once = admitted(&before, &decide(&pod(before.clone()), &image(), &[]));
        assert_eq!(
            decide(&pod(once.clone()), &image(), &[]),
            Decision::Unchanged {
                reason: "already injected"
            }
        );
        // Re-applied without the marker (someone copied the pod): the container tells.
        let mut copied = once;
        copied["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove(INJECTED);
        assert!(matches!(
            decide(&pod(copied), &image(), &[]),
            Decision::Unchanged { .. }
        ));
    }

    #[test]
    fn a_pod_that_asks_for_nothing_is_left_alone() {
        let mut before = service_pod();
        before["metadata"]["annotations"] = json!({"team": "shop"});
        assert_eq!(
            decide(&pod(before), &image(), &[]),
            Decision::Unchanged {
                reason: "nothing requested"
            }
        );
    }

    #[test]
    fn a_bad_annotation_denies_the_pod_with_its_name() {
        let mut before = service_pod();
        before["metadata"]["annotations"]["ferry.dev/outbox-batch-size"] = json!("lots");
        let Decision::Deny(message) = decide(&pod(before), &image(), &[]) else {
            panic!("expected a denial");
        };
        assert!(message.contains("ferry.dev/outbox-batch-size"), "{message}");
    }

    #[test]
    fn the_default_service_account_is_used_when_none_is_named() {
        let p = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some([(DATABASE_SECRET.to_owned(), "db".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        container_port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let before = serde_json::to_value(&p).expect("json");
        let after = admitted(&before, &decide(&p, &image(), &[]));
        let env = after["spec"]["initContainers"][0]["env"].to_string();
        assert!(env.contains("ferry-kafka-default"), "{env}");
    }

    fn notify_worker(placement_port: i32) -> Worker<'static> {
        worker_of(placement_port, false)
    }

    fn worker_of(placement_port: i32, validate: bool) -> Worker<'static> {
        let consumer: crate::api::EventConsumer = serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop"},
            "spec": {"topics": ["orders"], "serviceAccount": "notification",
                     "placement": "Sidecar", "podSelector": {"app": "order"},
                     "delivery": {"http": {"port": placement_port, "path": "/events"}},
                     "validate": validate},
        }))
        .expect("consumer");
        let resolved = crate::consumer::resolve::Resolved {
            group: "shop.notify".into(),
            sources: vec![crate::consumer::resolve::SourceTopic {
                event_topic: "orders".into(),
                kafka: "orders.v1".into(),
                partitions: 1,
            }],
            dead_letter: crate::consumer::resolve::DeadLetter::Managed("shop.notify.dlq".into()),
        };
        let settings = crate::consumer::deployment::WorkerSettings {
            image: "ferry-sidecar:0.1.0".into(),
            pull_policy: "IfNotPresent".into(),
            kafka_env: vec![],
        };
        Worker {
            consumer: "notify".into(),
            build: Box::new(move |port| {
                consumer_sidecar::worker(&consumer, &resolved, &settings, port)
            }),
        }
    }

    #[test]
    fn a_selected_worker_follows_the_relay_on_its_own_port() {
        let before = service_pod();
        let decision = decide(&pod(before.clone()), &image(), &[notify_worker(8000)]);
        let after = admitted(&before, &decision);
        assert_eq!(init_names(&after), vec![RELAY_CONTAINER, "notify-worker"]);
        assert_eq!(
            after["metadata"]["annotations"][INJECTED],
            "relay,worker:notify"
        );
        let worker = &after["spec"]["initContainers"][1];
        assert_eq!(worker["restartPolicy"], "Always");
        assert_eq!(worker["ports"][0]["containerPort"], 9465);
        assert_eq!(worker["ports"][0]["name"], "ferry-w0");
        assert_eq!(worker["readinessProbe"]["httpGet"]["port"], "ferry-w0");
        let args = worker["args"].to_string();
        assert!(
            args.contains("--target-url=http://127.0.0.1:8000/events"),
            "{args}"
        );
        // Reinvoked after another webhook: nothing more.
        assert_eq!(
            decide(&pod(after), &image(), &[notify_worker(8000)]),
            Decision::Unchanged {
                reason: "already injected"
            }
        );
    }

    #[test]
    fn a_worker_alone_is_injected_into_a_pod_without_an_outbox() {
        let mut before = service_pod();
        before["metadata"]["annotations"] = json!({});
        before["spec"]["containers"][0]["ports"] = json!([{"containerPort": 9465}]);
        let after = admitted(
            &before,
            &decide(&pod(before.clone()), &image(), &[notify_worker(8000)]),
        );
        assert_eq!(init_names(&after), vec!["notify-worker"]);
        assert_eq!(
            after["spec"]["initContainers"][0]["ports"][0]["containerPort"], 9466,
            "the service's port 9465 is avoided"
        );
    }

    #[test]
    fn a_validating_worker_reads_the_contracts_from_the_one_volume() {
        let volumes = |after: &serde_json::Value| {
            after["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["name"] == contract_delivery::VOLUME)
                .count()
        };
        // Beside the relay: both mount the volume the relay brings, added once.
        let before = service_pod();
        let after = admitted(
            &before,
            &decide(&pod(before.clone()), &image(), &[worker_of(8000, true)]),
        );
        assert_eq!(volumes(&after), 1);
        let worker = &after["spec"]["initContainers"][1];
        assert!(
            worker["args"]
                .to_string()
                .contains("--contracts-dir=/etc/ferry/contracts"),
            "{worker}"
        );
        assert!(
            worker["volumeMounts"]
                .to_string()
                .contains(contract_delivery::MOUNT_PATH)
        );
        // Alone (no outbox): the worker brings the volume itself.
        let mut alone = service_pod();
        alone["metadata"]["annotations"] = json!({});
        let after = admitted(
            &alone,
            &decide(&pod(alone.clone()), &image(), &[worker_of(8000, true)]),
        );
        assert_eq!(volumes(&after), 1);
        // Without validate and without a relay, no volume, and a pod's own volume of that
        // name is no clash.
        alone["spec"]["volumes"] = json!([{"name": contract_delivery::VOLUME, "emptyDir": {}}]);
        let after = admitted(
            &alone,
            &decide(&pod(alone.clone()), &image(), &[worker_of(8000, false)]),
        );
        assert_eq!(volumes(&after), 1, "the pod's own, untouched");
        let Decision::Deny(message) = decide(&pod(alone), &image(), &[worker_of(8000, true)])
        else {
            panic!("expected a denial: the validating worker needs the name");
        };
        assert!(message.contains(contract_delivery::VOLUME), "{message}");
    }

    #[test]
    fn a_port_named_like_an_injected_workers_is_denied() {
        let mut before = service_pod();
        before["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 7000, "name": "ferry-w0"}]);
        let Decision::Deny(message) = decide(&pod(before), &image(), &[notify_worker(8000)]) else {
            panic!("expected a denial");
        };
        assert!(message.contains("ferry-w0"), "{message}");
    }
}
