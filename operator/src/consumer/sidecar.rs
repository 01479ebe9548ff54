//! `placement: Sidecar`: the worker runs inside each service pod that `podSelector` matches,
//! injected by the webhook at pod creation ([`crate::webhook`]), and delivers to the service on
//! localhost. Its replicas are the service's, so there is no Deployment and no scaler.
//!
//! This module builds that container (pure, the webhook calls it) and reads back from the
//! selected pods how many run it, for the status: a consumer created or changed after its pods
//! were is `Ready=False` with reason `PodsToRestart`, not silent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
    runtime::{controller::Action, events::EventType},
};
use tracing::info;

use super::{
    Context, Error, Result,
    deployment::{self, Invalid, WorkerSettings},
    resolve::Resolved,
    status::{self, Found},
};
use crate::{
    api::{ConsumerTopics, EventConsumer, Placement},
    reconcile::PublishEvent as _,
    status::Outcome,
};

/// Where an injected worker serves `/healthz`, `/readyz` and `/metrics` unless the pod uses
/// that port: the one after the relay's 9464.
pub const WORKER_METRICS_PORT: i32 = 9465;

/// Whether `consumer` has its worker injected into a pod labelled `labels`.
pub fn selects(consumer: &EventConsumer, labels: &BTreeMap<String, String>) -> bool {
    consumer.spec.placement == Placement::Sidecar
        && consumer.spec.pod_selector.as_ref().is_some_and(|wanted| {
            !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
}

/// The injected worker's container name: `<consumer>-worker`, as its Deployment would be.
pub fn container_name(consumer: &str) -> String {
    deployment::name(consumer)
}

/// The worker container injected into a selected pod, serving its probes on `port` named
/// `port_name`: a native sidecar that waits for the service to accept connections before it
/// joins the group (it starts before the service's containers).
pub fn worker(
    consumer: &EventConsumer,
    resolved: &Resolved,
    settings: &WorkerSettings,
    (port, port_name): (i32, &str),
) -> Result<Container, Invalid> {
    let name = consumer.name_any();
    if name.len() > 56 {
        return Err(Invalid::NameTooLong(name));
    }
    let http = consumer.spec.delivery.http.as_ref();
    let target = format!(
        "http://127.0.0.1:{}{}",
        http.and_then(|h| h.port).unwrap_or_default(),
        http.and_then(|h| h.path.as_deref()).unwrap_or("/"),
    );
    let timeout = http.map_or("10s", |h| h.timeout.as_str());
    let mut container = deployment::worker_container(
        consumer,
        resolved,
        settings,
        target,
        timeout,
        (port, port_name),
    )?;
    container.name = container_name(&name);
    container.restart_policy = Some("Always".to_owned());
    // The worker writes no files; the service's pod need not gain a `/tmp` for it. It keeps
    // only the contracts it checks with `validate` (the webhook adds that volume).
    container.volume_mounts = container
        .volume_mounts
        .take()
        .map(|mounts| {
            mounts
                .into_iter()
                .filter(|m| m.name == crate::contract_delivery::VOLUME)
                .collect::<Vec<_>>()
        })
        .filter(|mounts| !mounts.is_empty());
    if let Some(args) = container.args.as_mut() {
        args.push("--wait-for-target".to_owned());
    }
    Ok(container)
}

/// The worker's args without its port, which differs from pod to pod: what must match for a
/// pod to run the current worker.
fn comparable(args: &[String]) -> Vec<&String> {
    args.iter()
        .filter(|a| !a.starts_with("--metrics-addr="))
        .collect()
}

/// How the selected pods stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCount {
    /// Pods the selector matches (not terminating, not finished).
    pub selected: i32,
    /// Of those, pods that run the current worker.
    pub current: i32,
    /// Of those, pods that are Ready (a native sidecar's readiness counts towards it).
    pub ready: i32,
}

/// Counts `pods` (already selected by label) against the worker the webhook would inject now.
pub fn count(consumer: &EventConsumer, pods: &[Pod], desired: &Container) -> PodCount {
    let name = container_name(&consumer.name_any());
    let want = comparable(desired.args.as_deref().unwrap_or_default());
    let mut count = PodCount::default();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if pod.metadata.deletion_timestamp.is_some()
            || matches!(phase, Some("Succeeded" | "Failed"))
        {
            continue;
        }
        count.selected += 1;
        let current = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .any(|c| {
                c.name == name
                    && c.image == desired.image
                    && comparable(c.args.as_deref().unwrap_or_default()) == want
            });
        if !current {
            continue;
        }
        count.current += 1;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            count.ready += 1;
        }
    }
    count
}

/// `podSelector` as a label selector, `k=v,…`.
fn selector(consumer: &EventConsumer) -> String {
    consumer
        .spec
        .pod_selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the workers stand, from the selected pods.
pub fn outcome(consumer: &EventConsumer, count: PodCount) -> Outcome {
    let selector = selector(consumer);
    let PodCount {
        selected,
        current,
        ready,
    } = count;
    if selected == 0 {
        return Outcome::Progressing {
            reason: "NoPodsSelected".into(),
            message: format!(
                "no running pod matches podSelector {selector}: the worker runs inside the service's pods, which must also carry the label ferry.dev/inject=enabled"
            ),
        };
    }
    if current < selected {
        return Outcome::Progressing {
            reason: "PodsToRestart".into(),
            message: format!(
                "{} of {selected} pods matching {selector} run no worker of this EventConsumer or an older one (they started before it was created or changed): restart them, e.g. kubectl rollout restart deployment <service>",
                selected - current
            ),
        };
    }
    if ready < selected {
        return Outcome::Progressing {
            reason: "WaitingForWorkers".into(),
            message: format!("{ready} of {selected} pods matching {selector} are ready"),
        };
    }
    Outcome::Ready {
        message: format!("{selected} pods matching {selector} run the worker"),
    }
}

impl EventConsumer {
    /// The rest of a reconcile with `placement: Sidecar`, once topics and credentials are in
    /// place: no Deployment (one left from `placement: Deployment` is deleted), the status
    /// from the selected pods.
    pub(super) async fn reconcile_sidecar(
        &self,
        ctx: &Context,
        resolved: &Resolved,
        mut topics: ConsumerTopics,
        retired: &[String],
    ) -> Result<Action> {
        let namespace = self.namespace_or_err()?;
        self.delete_worker_deployment(ctx, &namespace).await?;
        let desired = match worker(
            self,
            resolved,
            &ctx.settings,
            (WORKER_METRICS_PORT, "ferry-w0"),
        ) {
            Ok(c) => c,
            Err(invalid) => {
                let outcome = Outcome::Stalled {
                    reason: "InvalidSpec".into(),
                    message: invalid.to_string(),
                };
                self.finish(ctx, outcome, Found::default()).await?;
                // Requeue at the resync interval only: a spec change triggers a reconcile.
                return Ok(Action::requeue(ctx.resync));
            }
        };
        // Only opted-in pods: the webhook never sees the others, so they could never be
        // restarted into running the worker.
        let selector = format!(
            "{},{}={}",
            selector(self),
            crate::webhook::INJECT_LABEL,
            crate::webhook::INJECT_ENABLED
        );
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::Kube)?
            .items;
        let count = count(self, &pods, &desired);
        let workers = outcome(self, count);
        if matches!(workers, Outcome::Ready { .. }) && !retired.is_empty() {
            // No pod runs a worker of the old spec any more.
            self.delete_topics(ctx, retired, "its retry tier is no longer in the spec")
                .await?;
            topics.retry.retain(|t| !retired.contains(t));
        }
        let outcome = status::fold_access(
            self.status.as_ref().map_or(&[][..], |s| &s.conditions),
            self.metadata.generation,
            workers,
        );
        let found = Found {
            topics: Some(topics),
            deployment: None,
            pods: Some(count),
        };
        self.finish(ctx, outcome, found).await?;
        // Requeue at the resync interval: the pod watch wakes us when selected pods change.
        Ok(Action::requeue(ctx.resync))
    }

    /// Deletes the worker Deployment, if a `placement: Deployment` left one.
    async fn delete_worker_deployment(&self, ctx: &Context, namespace: &str) -> Result<()> {
        let name = deployment::name(&self.name_any());
        let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
            ctx.client.clone(),
            namespace,
        );
        match deployments.delete(&name, &DeleteParams::foreground()).await {
            Ok(_) => {
                info!(
                    deployment = name,
                    "deleted worker Deployment: placement is Sidecar"
                );
                self.publish(
                    &ctx.events,
                    EventType::Normal,
                    "DeploymentDeleted",
                    "Delete",
                    format!("deleted worker Deployment {name}: the workers now run inside the selected pods (placement: Sidecar)"),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::Kube(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::resolve::{DeadLetter, SourceTopic};
    use serde_json::json;

    fn consumer(placement: &str, selector: serde_json::Value) -> EventConsumer {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop", "generation": 1},
            "spec": {"topics": ["orders"], "serviceAccount": "notification",
                     "placement": placement, "podSelector": selector,
                     "delivery": {"http": {"port": 8000, "path": "/events"}}},
        }))
        .expect("valid EventConsumer")
    }

    fn resolved() -> Resolved {
        Resolved {
            group: "shop.notify".into(),
            sources: vec![SourceTopic {
                event_topic: "orders".into(),
                kafka: "orders.v1".into(),
                partitions: 3,
            }],
            dead_letter: DeadLetter::Managed("shop.notify.dlq".into()),
        }
    }

    fn settings() -> WorkerSettings {
        WorkerSettings {
            image: "ferry-sidecar:0.1.0".into(),
            pull_policy: "IfNotPresent".into(),
            kafka_env: vec![("FERRY_KAFKA_BOOTSTRAP".into(), "kafka:9092".into())],
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_sidecar_consumers_whose_every_label_matches_select_a_pod() {
        let c = consumer("Sidecar", json!({"app": "notification", "tier": "web"}));
        assert!(selects(
            &c,
            &labels(&[("app", "notification"), ("tier", "web"), ("x", "y")])
        ));
        assert!(!selects(&c, &labels(&[("app", "notification")])));
        assert!(!selects(&c, &labels(&[("app", "order"), ("tier", "web")])));
        let deployment_placed = consumer("Deployment", json!({"app": "notification"}));
        assert!(!selects(
            &deployment_placed,
            &labels(&[("app", "notification")])
        ));
        let empty = consumer("Sidecar", json!({}));
        assert!(
            !selects(&empty, &labels(&[("app", "notification")])),
            "an empty selector selects nothing"
        );
    }

    #[test]
    fn the_injected_worker_delivers_to_localhost_as_a_native_sidecar_and_waits_for_the_service() {
        let c = consumer("Sidecar", json!({"app": "notification"}));
        let w = worker(&c, &resolved(), &settings(), (9466, "ferry-w1")).expect("a worker");
        assert_eq!(w.name, "notify-worker");
        assert_eq!(w.restart_policy.as_deref(), Some("Always"));
        let args = w.args.clone().unwrap_or_default();
        for expected in [
            "--target-url=http://127.0.0.1:8000/events",
            "--metrics-addr=0.0.0.0:9466",
            "--wait-for-target",
            "--group=shop.notify",
            "--topics=orders.v1",
        ] {
            assert!(
                args.contains(&expected.to_owned()),
                "{expected} in {args:?}"
            );
        }
        let port = &w.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.container_port, port.name.as_deref()),
            (9466, Some("ferry-w1"))
        );
        assert!(
            w.volume_mounts.is_none(),
            "no volume asked of the service's pod"
        );
        let secret_refs: Vec<_> = w
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .map(|r| (r.name.clone(), r.key.clone()))
            .collect();
        assert!(secret_refs.contains(&("ferry-kafka-notification".into(), "password".into())));
    }

    fn pod(init: Option<Container>, ready: bool, terminating: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "notification"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod");
        if let (Some(spec), Some(c)) = (pod.spec.as_mut(), init) {
            spec.init_containers = Some(vec![c]);
        }
        if terminating {
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().expect("time"),
                ));
        }
        pod
    }

    #[test]
    fn pods_without_the_current_worker_are_counted_as_to_restart() {
        let c = consumer("Sidecar", json!({"app": "notification"}));
        let desired = worker(&c, &resolved(), &settings(), (9465, "ferry-w0")).expect("worker");
        // Injected at another port: still the current worker.
        let elsewhere = worker(&c, &resolved(), &settings(), (9470, "ferry-w3")).expect("worker");
        let mut older = desired.clone();
        older.args = Some(vec!["worker".into(), "--max-in-flight=1".into()]);
        let pods = [
            pod(Some(elsewhere), true, false),
            pod(Some(desired.clone()), false, false),
            pod(Some(older), true, false),
            pod(None, true, false),
            pod(None, true, true),
        ];
        let n = count(&c, &pods, &desired);
        assert_eq!(
            n,
            PodCount {
                selected: 4,
                current: 2,
                ready: 1
            }
        );
        assert_eq!(outcome(&c, n).reason(), "PodsToRestart");
        let fine = count(&c, &pods[..1], &desired);
        assert_eq!(outcome(&c, fine).reason(), "Ready");
        assert_eq!(
            outcome(&c, count(&c, &pods[1..2], &desired)).reason(),
            "WaitingForWorkers"
        );
        assert_eq!(outcome(&c, PodCount::default()).reason(), "NoPodsSelected");
    }
}
