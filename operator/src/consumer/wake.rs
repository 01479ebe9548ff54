//! What wakes an EventConsumer: only changes its reconcile would act on or report. Each wake
//! is a reconcile that reads the Deployment and the credential Secret again, and with 1,000
//! consumers applied at once most wakes were the controller's own status writes and the worker
//! Deployments' rollouts announcing every step (`make bench-operator`: 11.3 reconciles per
//! consumer on the way to Ready, 6.0 with the consumer filter, 5.0 with both).

use std::collections::HashMap;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{ResourceExt as _, runtime::watcher};

use crate::recent::fingerprint;
use crate::{access_status::ACCESS_GRANTED, api::EventConsumer};

/// What, in an EventConsumer, asks for a reconcile: its spec (generation), its deletion, its
/// finalizers, and the identity controller's `AccessGranted` condition that `Ready` folds in.
/// Not the rest of its status, which this controller writes itself.
pub(super) fn consumer_changed(consumer: &EventConsumer) -> Option<u64> {
    let access = consumer
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ACCESS_GRANTED));
    Some(fingerprint(&(
        consumer.metadata.generation,
        consumer.metadata.deletion_timestamp.is_some(),
        consumer.finalizers(),
        access,
    )))
}

/// What, in a worker Deployment, the consumer's reconcile reports or puts back: its spec
/// (generation), size, labels and owner, and the replica counts and stall its status shows —
/// not a condition's new reason or timestamp, which a rollout changes at every step.
fn deployment_fingerprint(deployment: &Deployment) -> u64 {
    let status = deployment.status.as_ref();
    let stalled = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "False")
        });
    fingerprint(&(
        deployment.metadata.generation,
        deployment.metadata.deletion_timestamp.is_some(),
        &deployment.metadata.labels,
        &deployment.metadata.owner_references,
        deployment.spec.as_ref().and_then(|s| s.replicas),
        status.map(|s| {
            (
                s.observed_generation,
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
            )
        }),
        stalled,
    ))
}

/// The worker Deployments of a watch that changed in a way [`deployment_fingerprint`] sees,
/// and every deleted one (a deleted Deployment is put back).
pub(super) fn deployment_changes(
    events: impl Stream<Item = Result<watcher::Event<Deployment>, watcher::Error>>,
) -> impl Stream<Item = Result<Deployment, watcher::Error>> {
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                let now = deployment_fingerprint(&d);
                let before = seen.insert(d.metadata.uid.clone().unwrap_or_default(), now);
                (before != Some(now)).then_some(Ok(d))
            }
            Ok(watcher::Event::Delete(d)) => {
                seen.remove(d.metadata.uid.as_deref().unwrap_or_default());
                Some(Ok(d))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(changed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "w", "uid": "u1", "generation": 1},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("deployment")
    }

    async fn passed(events: Vec<watcher::Event<Deployment>>) -> Vec<Deployment> {
        deployment_changes(futures::stream::iter(events.into_iter().map(Ok)))
            .map(|d| d.expect("no error"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_rollout_step_that_changes_nothing_reported_does_not_wake_the_consumer() {
        let created = deployment(json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated"}]}));
        let same_counts = deployment(json!({"observedGeneration": 1, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}));
        let available = deployment(json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}));
        let stalled = deployment(json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}));
        let woke = passed(vec![
            watcher::Event::Apply(created),
            watcher::Event::Apply(same_counts),
            watcher::Event::Apply(available.clone()),
            watcher::Event::Apply(stalled),
            watcher::Event::Delete(available),
        ])
        .await;
        // Created, available, stalled and deleted wake it; the new reason alone does not.
        assert_eq!(woke.len(), 4, "{woke:?}");
    }

    #[tokio::test]
    async fn a_hand_edit_wakes_the_consumer_and_a_deleted_one_always_does() {
        let mut edited = deployment(json!({"observedGeneration": 1}));
        let original = edited.clone();
        edited.metadata.generation = Some(2);
        let mut relabelled = original.clone();
        relabelled.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        let woke = passed(vec![
            watcher::Event::InitApply(original.clone()),
            watcher::Event::InitDone,
            watcher::Event::Apply(edited),
            watcher::Event::Apply(relabelled),
            watcher::Event::Delete(original.clone()),
            watcher::Event::Delete(original),
        ])
        .await;
        assert_eq!(woke.len(), 5, "{woke:?}");
    }

    #[test]
    fn the_consumers_own_status_writes_do_not_wake_it_but_access_does() {
        let consumer = |status: serde_json::Value| -> EventConsumer {
            serde_json::from_value(json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
                "metadata": {"name": "c", "uid": "u", "generation": 3},
                "spec": {"topics": ["t"], "serviceAccount": "s",
                         "delivery": {"http": {"url": "http://s/"}}},
                "status": status,
            }))
            .expect("consumer")
        };
        let rolling = consumer(json!({"observedGeneration": 3, "readyReplicas": 0,
            "conditions": [{"type": "Ready", "status": "False", "reason": "RollingOut",
                            "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z",
                            "observedGeneration": 3}]}));
        let ready = consumer(json!({"observedGeneration": 3, "readyReplicas": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                            "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z",
                            "observedGeneration": 3}]}));
        assert_eq!(consumer_changed(&rolling), consumer_changed(&ready));
        let granted = consumer(json!({"conditions": [{"type": "AccessGranted",
            "status": "True", "reason": "Granted", "message": "",
            "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 3}]}));
        assert_ne!(consumer_changed(&rolling), consumer_changed(&granted));
    }
}
