//! Apply: makes the Kafka topic what the EventTopic declares — refuses what it must not touch
//! (a Kafka-internal name, a topic an older EventTopic owns, configs Ferry does not allow),
//! then creates, adopts or changes the topic, with an Event for every change and a comment on
//! every requeue.

use std::time::Duration;

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType, reflector::Store},
};
use tracing::info;

use super::{
    Context, Error, Result,
    plan::{Desired, Plan},
};
use crate::{
    api::EventTopic,
    kafka::{self, TopicState},
    ownership, reconcile,
    reconcile::PublishEvent as _,
    status::{self, Outcome},
};

/// After a change, check again soon: Kafka applies topic changes asynchronously, and the next
/// describe confirms them (1 s is a few metadata-propagation rounds on a healthy cluster).
const VERIFY_AFTER: Duration = Duration::from_secs(1);

/// A conflict resolves when the older EventTopic goes away; nothing watches for that, so
/// the loser looks again this often.
const CONFLICT_RECHECK: Duration = Duration::from_secs(15);

impl EventTopic {
    /// The older EventTopic (namespace, name) that names the same Kafka topic, if any: it wins
    /// the topic ([`crate::ownership`], the rule the identity controller grants by).
    pub(super) fn conflicting_owner(&self, store: &Store<EventTopic>) -> Option<(String, String)> {
        let all = store.state();
        ownership::older_owner(self, all.iter().map(AsRef::as_ref))
            .map(|owner| (owner.namespace().unwrap_or_default(), owner.name_any()))
    }

    /// Makes the Kafka topic match the spec and reports what it found.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let desired = Desired::from_spec(self.kafka_topic_name().to_owned(), &self.spec);

        if ownership::is_internal_topic(&desired.name) {
            // The CRD refuses such names; an object stored before that rule still gets here.
            let outcome = Outcome::Stalled {
                reason: "InternalTopic".into(),
                message: format!(
                    "Kafka topic {} is Kafka-internal (names starting with '{}' belong to the broker): Ferry never creates, adopts or grants it",
                    desired.name,
                    ownership::INTERNAL_TOPIC_PREFIX
                ),
            };
            self.finish(ctx, outcome, None).await?;
            // Requeue at the resync interval only: topicName is immutable, nothing will change.
            return Ok(Action::requeue(ctx.resync));
        }

        if let Some((owner_namespace, owner_name)) = self.conflicting_owner(&ctx.store) {
            let outcome = Outcome::Stalled {
                reason: "Conflict".into(),
                message: format!(
                    "Kafka topic {} already belongs to the older EventTopic {owner_namespace}/{owner_name}; no access is granted through this one",
                    desired.name,
                ),
            };
            self.finish(ctx, outcome, None).await?;
            // Requeue: nothing else tells us when the older EventTopic goes away.
            return Ok(Action::requeue(CONFLICT_RECHECK));
        }

        let refusals = desired.config_refusals();
        if !refusals.is_empty() {
            let outcome = Outcome::Stalled {
                reason: "InvalidConfig".into(),
                message: refusals.join("; "),
            };
            self.finish(ctx, outcome, None).await?;
            // Requeue at the resync interval only: a spec change triggers a reconcile anyway.
            return Ok(Action::requeue(ctx.resync));
        }

        let found = match self
            .kafka_call(ctx, ctx.kafka.describe(&desired.name))
            .await?
        {
            Ok(found) => found,
            Err(refusal) => return self.refused(ctx, "KafkaRefused", refusal).await,
        };
        let Some(actual) = found else {
            return self.create(ctx, &desired).await;
        };
        // First sight of a topic this resource did not create.
        let adopted = self.status.as_ref().is_none_or(|s| s.topic_id.is_none())
            && !self.ready_reason_is("Creating");
        if adopted {
            self.publish(
                &ctx.events,
                EventType::Normal,
                "Adopted",
                "Adopt",
                format!(
                    "adopted existing Kafka topic {} ({} partitions)",
                    desired.name, actual.partitions
                ),
            )
            .await;
        }

        self.compare(ctx, &desired, &actual, adopted).await
    }

    /// Compares the topic found in Kafka with the spec: changes what differs, or reports it in
    /// sync. `adopted`: first sight of a topic this resource did not create.
    async fn compare(
        &self,
        ctx: &Context,
        desired: &Desired,
        actual: &TopicState,
        adopted: bool,
    ) -> Result<Action> {
        let plan = Plan::diff(desired, actual);
        if adopted && !plan.unmanaged.is_empty() {
            // Before anything changes: a person can put back what is removed.
            let (type_, what) = if desired.keep_unmanaged {
                (
                    EventType::Normal,
                    "keeping them (spec.unmanagedConfigs: Keep)",
                )
            } else {
                (
                    EventType::Warning,
                    "removing them (spec.unmanagedConfigs: Remove); list them in spec.config or set unmanagedConfigs: Keep to keep them",
                )
            };
            let note = format!(
                "Kafka topic {} has configs the spec does not list: {}; {what}",
                desired.name,
                plan.describe_unmanaged()
            );
            self.publish(&ctx.events, type_, "UnmanagedConfigs", "Adopt", note)
                .await;
        }
        if plan.has_changes() {
            return self.apply_plan(ctx, desired, actual, &plan).await;
        }
        let outcome = if plan.not_supported.is_empty() {
            Outcome::Ready {
                message: format!("Kafka topic {} matches the spec", desired.name),
            }
        } else {
            Outcome::Stalled {
                reason: "NotSupported".into(),
                message: plan.not_supported.join("; "),
            }
        };
        self.finish(ctx, outcome, Some(actual)).await?;
        // Requeue at the resync interval: drift made directly in Kafka is found this way.
        Ok(Action::requeue(ctx.resync))
    }

    async fn create(&self, ctx: &Context, desired: &Desired) -> Result<Action> {
        match self
            .kafka_call(ctx, ctx.kafka.create(desired.to_new_topic()))
            .await?
        {
            Ok(()) => {
                info!(
                    topic = desired.name,
                    partitions = desired.partitions,
                    "created Kafka topic"
                );
                self.publish(
                    &ctx.events,
                    EventType::Normal,
                    "Created",
                    "Create",
                    format!(
                        "created Kafka topic {} with {} partitions",
                        desired.name, desired.partitions
                    ),
                )
                .await;
                // Kafka answers CreateTopics once its controller holds the topic; the broker
                // usually shows it a moment later. Seen now, the status goes straight to Ready:
                // one status write per new topic instead of two. Not seen, or the describe
                // failed: "Creating", and the next pass looks again.
                if let Ok(Ok(Some(actual))) = ctx.kafka.describe(&desired.name).await {
                    return self.compare(ctx, desired, &actual, false).await;
                }
                let outcome = Outcome::Progressing {
                    reason: "Creating".into(),
                    message: format!(
                        "created Kafka topic {}; waiting for it to show",
                        desired.name
                    ),
                };
                self.finish(ctx, outcome, None).await?;
                // Requeue soon: the next describe confirms the topic and fills in the status.
                Ok(Action::requeue(VERIFY_AFTER))
            }
            // Created by someone else since our describe: adopt it on the next pass.
            Err(refusal)
                if refusal.code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists =>
            {
                Ok(Action::requeue(VERIFY_AFTER))
            }
            Err(refusal)
                if matches!(
                    refusal.code,
                    rdkafka::types::RDKafkaErrorCode::InvalidConfig
                        | rdkafka::types::RDKafkaErrorCode::PolicyViolation
                ) =>
            {
                self.refused(ctx, "InvalidConfig", refusal).await
            }
            Err(refusal) => self.refused(ctx, "KafkaRefused", refusal).await,
        }
    }

    async fn apply_plan(
        &self,
        ctx: &Context,
        desired: &Desired,
        actual: &TopicState,
        plan: &Plan,
    ) -> Result<Action> {
        let generation = self.metadata.generation;
        let was_ready = self
            .status
            .as_ref()
            .is_some_and(|s| status::is_ready(&s.conditions, generation));
        if let Some(partitions) = plan.grow_to
            && let Err(refusal) = self
                .kafka_call(ctx, ctx.kafka.grow(&desired.name, partitions))
                .await?
        {
            return self.refused(ctx, "KafkaRefused", refusal).await;
        }
        if !plan.config_ops.is_empty()
            && let Err(refusal) = self
                .kafka_call(ctx, ctx.kafka.alter(&desired.name, plan.config_ops.clone()))
                .await?
        {
            return self.refused(ctx, "InvalidConfig", refusal).await;
        }
        let changes = plan.describe();
        info!(
            topic = desired.name,
            changes,
            drift = was_ready,
            "updated Kafka topic"
        );
        if was_ready {
            // The spec did not change since the topic was last in sync: someone changed Kafka.
            self.publish(
                &ctx.events,
                EventType::Warning,
                "DriftReverted",
                "Update",
                format!(
                    "Kafka topic {} was changed outside Ferry; reverted: {changes}",
                    desired.name
                ),
            )
            .await;
        } else {
            self.publish(
                &ctx.events,
                EventType::Normal,
                "Updated",
                "Update",
                format!("Kafka topic {}: {changes}", desired.name),
            )
            .await;
        }
        let outcome = Outcome::Progressing {
            reason: "Updating".into(),
            message: format!("Kafka topic {}: {changes}", desired.name),
        };
        self.finish(ctx, outcome, Some(actual)).await?;
        // Requeue soon to confirm the change took effect.
        Ok(Action::requeue(VERIFY_AFTER))
    }

    /// Runs a Kafka call; when Kafka is unreachable, says so in the status and fails so the
    /// controller backs off.
    pub(super) async fn kafka_call<T>(
        &self,
        ctx: &Context,
        call: impl std::future::Future<Output = kafka::Result<T>>,
    ) -> Result<T> {
        reconcile::kafka_call(call, |outcome| self.finish(ctx, outcome, None))
            .await
            .map_err(Error::Kafka)
    }

    async fn refused(
        &self,
        ctx: &Context,
        reason: &str,
        refusal: kafka::Refusal,
    ) -> Result<Action> {
        let outcome = Outcome::Stalled {
            reason: reason.into(),
            message: format!(
                "Kafka refused the change to topic {}: {refusal}",
                self.kafka_topic_name()
            ),
        };
        self.publish(
            &ctx.events,
            EventType::Warning,
            reason,
            "Reconcile",
            reconcile::outcome_message(&outcome),
        )
        .await;
        self.finish(ctx, outcome, None).await?;
        // Requeue at the resync interval: a spec change triggers a reconcile anyway.
        Ok(Action::requeue(ctx.resync))
    }

    fn ready_reason_is(&self, reason: &str) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == status::READY && c.reason == reason)
        })
    }
}
