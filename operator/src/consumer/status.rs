//! What an EventConsumer's `Ready` says — pure: from the worker Deployment's state and the
//! `AccessGranted` condition the identity controller writes beside ours.
//!
//! `Ready=True` means the workers run as declared (every replica of the current template
//! available, or scaled to zero with no lag) and Kafka holds their ACLs. Otherwise the reason
//! names what is missing: `RollingOut`, `WaitingForWorkers`, `DeploymentStalled` (the rollout
//! passed its progress deadline), `GrantingAccess`, or the identity controller's own reason.
//!
//! And the one write of the status ([`EventConsumer::finish`]): this controller's fields under
//! its own field manager, unless nothing changed; the identity controller's `access` and
//! `AccessGranted` merge beside them.

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt, runtime::reflector::ObjectRef};

use super::{
    Context, Error, KIND, Result, STATUS_MANAGER,
    resolve::{DeadLetter, Resolved},
    topics,
};
use crate::{
    access_status::ACCESS_GRANTED,
    api::{Condition, ConditionStatus, ConsumerTopics, EventConsumer, EventConsumerStatus},
    reconcile,
    status::{self as kstatus, Outcome},
};

/// Where the worker Deployment stands.
pub fn deployment_outcome(deployment: &Deployment) -> Outcome {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = deployment.status.as_ref() else {
        return Outcome::Progressing {
            reason: "RollingOut".into(),
            message: format!("Deployment {name} created; waiting for its first status"),
        };
    };
    if let Some(stalled) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Outcome::Stalled {
            reason: "DeploymentStalled".into(),
            message: format!(
                "Deployment {name} made no progress: {}",
                stalled.message.clone().unwrap_or_default()
            ),
        };
    }
    if status.observed_generation < deployment.metadata.generation {
        return Outcome::Progressing {
            reason: "RollingOut".into(),
            message: format!("Deployment {name}: the new template is being rolled out"),
        };
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if wanted == 0 {
        return if total == 0 {
            Outcome::Ready {
                message: format!("Deployment {name} is scaled to zero: the group has no lag"),
            }
        } else {
            Outcome::Progressing {
                reason: "ScalingDown".into(),
                message: format!("Deployment {name}: {total} worker pods still stopping"),
            }
        };
    }
    if updated < wanted || available < wanted || total > wanted {
        return Outcome::Progressing {
            reason: "WaitingForWorkers".into(),
            message: format!(
                "Deployment {name}: {available} of {wanted} worker pods available ({updated} on the current template)"
            ),
        };
    }
    Outcome::Ready {
        message: format!("{wanted} worker pods of Deployment {name} available"),
    }
}

/// `outcome` with the identity controller's `AccessGranted` condition folded in: a consumer
/// is Ready only once its ACLs are in place for this generation; its own problem comes first.
pub fn fold_access(conditions: &[Condition], generation: Option<i64>, outcome: Outcome) -> Outcome {
    let Outcome::Ready { message } = outcome else {
        return outcome;
    };
    let access = conditions.iter().find(|c| c.type_ == ACCESS_GRANTED);
    match access {
        Some(c) if c.observed_generation == generation && c.status == ConditionStatus::True => {
            Outcome::Ready { message }
        }
        Some(c) if c.observed_generation == generation && c.status == ConditionStatus::False => {
            Outcome::Stalled {
                reason: c.reason.clone(),
                message: format!("{message}, but Kafka access is not granted: {}", c.message),
            }
        }
        _ => Outcome::Progressing {
            reason: "GrantingAccess".into(),
            message: format!("{message}; waiting for its ACLs"),
        },
    }
}

/// The topics of `resolved` as the status lists them, with the `retired` tiers not deleted
/// yet.
pub(super) fn status_topics(
    resolved: &Resolved,
    managed: &[topics::ManagedTopic],
    retired: &[String],
) -> ConsumerTopics {
    let dead_letter = resolved.dead_letter.name().to_owned();
    ConsumerTopics {
        source: resolved.sources.iter().map(|s| s.kafka.clone()).collect(),
        retry: managed
            .iter()
            .map(|t| t.name.clone())
            .filter(|n| *n != dead_letter)
            .chain(retired.iter().cloned())
            .collect(),
        dead_letter: Some(dead_letter),
        dead_letter_managed: matches!(resolved.dead_letter, DeadLetter::Managed(_)),
    }
}

/// What a reconcile found, for the status.
#[derive(Default)]
pub(super) struct Found {
    /// The consumer's topics, if resolved.
    pub topics: Option<ConsumerTopics>,
    /// The worker Deployment as applied, if it was.
    pub deployment: Option<Deployment>,
    /// With placement: Sidecar, the selected pods and how many run the worker.
    pub pods: Option<super::sidecar::PodCount>,
}

impl EventConsumer {
    /// Writes this controller's status fields for `outcome` (server-side apply under
    /// [`STATUS_MANAGER`]), unless nothing changed. Fields not found this time keep their
    /// last value.
    pub(super) async fn finish(&self, ctx: &Context, outcome: Outcome, found: Found) -> Result<()> {
        let previous = self.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let generation = self.metadata.generation;
        ctx.metrics
            .reconciled(KIND, reconcile::outcome_label(&outcome));
        let conditions = kstatus::conditions(&previous.conditions, &outcome, generation, &now);
        let deployment_status = found.deployment.as_ref().and_then(|d| d.status.as_ref());
        let observed = ctx.lag.get(&ObjectRef::from_obj(self));
        let dead_letters = observed
            .as_ref()
            .and_then(|o| o.dead_letters)
            .or(previous.dead_letters);
        let lag = observed.map(|o| o.lag).or_else(|| previous.lag.clone());
        let status = EventConsumerStatus {
            observed_generation: generation,
            replicas: found
                .deployment
                .as_ref()
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas)
                .or(found.pods.map(|p| p.selected))
                .or(previous.replicas),
            ready_replicas: match (&found.deployment, found.pods) {
                (Some(_), _) => Some(
                    deployment_status
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0),
                ),
                (None, Some(pods)) => Some(pods.ready),
                (None, None) => previous.ready_replicas,
            },
            lag,
            dead_letters,
            topics: found.topics.or_else(|| previous.topics.clone()),
            // The identity controller's fields.
            access: None,
            conditions,
        };
        // The fields this controller writes, as the cached object shows them.
        let cached = EventConsumerStatus {
            access: None,
            conditions: previous
                .conditions
                .iter()
                .filter(|c| {
                    [kstatus::READY, kstatus::RECONCILING, kstatus::STALLED]
                        .contains(&c.type_.as_str())
                })
                .cloned()
                .collect(),
            ..previous
        };
        let uid = self.metadata.uid.clone().unwrap_or_default();
        if ctx.written.is_current(&uid, &cached, &status) {
            return Ok(());
        }
        let namespace = self.namespace_or_err()?;
        let api = Api::<EventConsumer>::namespaced(ctx.client.clone(), &namespace);
        reconcile::apply_status(&api, &self.name_any(), STATUS_MANAGER, &status)
            .await
            .map_err(Error::Kube)?;
        ctx.written.record(uid, status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, replicas: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "n-worker", "generation": generation},
            "spec": {"replicas": replicas, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("valid Deployment")
    }

    fn reason(o: &Outcome) -> &str {
        o.reason()
    }

    #[test]
    fn ready_only_when_every_replica_of_this_template_is_available() {
        let d = deployment(
            2,
            2,
            json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2}),
        );
        assert!(matches!(deployment_outcome(&d), Outcome::Ready { .. }));
        let d = deployment(
            2,
            2,
            json!({"observedGeneration": 1, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(reason(&deployment_outcome(&d)), "RollingOut");
        let d = deployment(
            2,
            2,
            json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(reason(&deployment_outcome(&d)), "WaitingForWorkers");
        let d = deployment(
            2,
            2,
            json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 1}),
        );
        let o = deployment_outcome(&d);
        assert_eq!(reason(&o), "WaitingForWorkers");
        assert!(format!("{o:?}").contains("1 of 2"), "{o:?}");
    }

    #[test]
    fn a_missed_progress_deadline_is_stalled() {
        let d = deployment(
            1,
            1,
            json!({"observedGeneration": 1, "conditions": [{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"n-worker-1\" has timed out progressing."}]}),
        );
        let o = deployment_outcome(&d);
        assert!(matches!(o, Outcome::Stalled { .. }));
        assert_eq!(reason(&o), "DeploymentStalled");
        assert!(format!("{o:?}").contains("timed out"), "{o:?}");
    }

    #[test]
    fn zero_replicas_is_ready_once_the_pods_are_gone() {
        let d = deployment(3, 0, json!({"observedGeneration": 3}));
        assert!(matches!(deployment_outcome(&d), Outcome::Ready { .. }));
        let d = deployment(3, 0, json!({"observedGeneration": 3, "replicas": 1}));
        assert_eq!(reason(&deployment_outcome(&d)), "ScalingDown");
    }

    fn access(status: &str, reason: &str, generation: i64) -> Condition {
        serde_json::from_value(json!({"type": "AccessGranted", "status": status,
            "reason": reason, "message": "denied", "observedGeneration": generation,
            "lastTransitionTime": "t"}))
        .expect("condition")
    }

    #[test]
    fn access_is_folded_in() {
        let ready = || Outcome::Ready {
            message: "ok".into(),
        };
        assert!(matches!(
            fold_access(&[access("True", "Granted", 4)], Some(4), ready()),
            Outcome::Ready { .. }
        ));
        assert_eq!(
            reason(&fold_access(
                &[access("True", "Granted", 3)],
                Some(4),
                ready()
            )),
            "GrantingAccess",
            "granted for an older generation"
        );
        assert_eq!(
            reason(&fold_access(&[], Some(4), ready())),
            "GrantingAccess"
        );
        assert_eq!(
            reason(&fold_access(
                &[access("False", "GroupOutsideNamespace", 4)],
                Some(4),
                ready()
            )),
            "GroupOutsideNamespace"
        );
        let waiting = Outcome::Progressing {
            reason: "TopicNotFound".into(),
            message: "m".into(),
        };
        assert_eq!(
            reason(&fold_access(&[access("False", "X", 4)], Some(4), waiting)),
            "TopicNotFound",
            "the consumer's own problem comes first"
        );
    }
}
