//! Apply: makes the consumer's workers and own topics what the EventConsumer declares —
//! resolve its EventTopics (missing or unready: wait, say so), create, grow and correct the
//! retry tiers and managed dead-letter topic, wait for the credential Secret, size the workers
//! (the scaler) and apply the worker Deployment, with an Event for every change and a comment
//! on every requeue.

use std::time::Instant;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use tracing::info;

use super::{
    Context, Error, Result, deployment,
    resolve::Resolved,
    scaler,
    status::{self, Found, status_topics},
    topics::{self, Change},
};
use crate::{
    api::{EventConsumer, Placement},
    identity::credentials,
    kafka, recent, reconcile,
    reconcile::PublishEvent as _,
    status::Outcome,
};

impl EventConsumer {
    /// The namespace, which every EventConsumer has (it is a namespaced kind).
    pub(super) fn namespace_or_err(&self) -> Result<String> {
        self.namespace().ok_or(Error::MissingNamespace)
    }

    /// Makes the workers and topics match the spec and reports what it found.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace_or_err()?;
        let resolved = match ctx.resolve(self) {
            Ok(r) => r,
            Err(waiting) => {
                let outcome = Outcome::Progressing {
                    reason: waiting.reason.into(),
                    message: waiting.message,
                };
                self.finish(ctx, outcome, Found::default()).await?;
                // Requeue at the resync interval only: the EventTopic watch wakes us when one
                // is created or becomes Ready.
                return Ok(Action::requeue(ctx.resync));
            }
        };

        let managed = topics::of(self, &resolved);
        let wanted: Vec<String> = status_topics(&resolved, &managed, &[]).retry;
        let listed = self
            .status
            .as_ref()
            .and_then(|s| s.topics.as_ref())
            .map(|t| t.retry.clone())
            .unwrap_or_default();
        let retired = topics::retired(&listed, &wanted);
        let status_topics = status_topics(&resolved, &managed, &retired);
        // Created or corrected topics need no second pass: Kafka has answered that they are
        // in place, and the next resync describes them again. Going on at once saves every
        // new consumer a status write and a reconcile.
        if let Some(outcome) = self.converge_topics_unless_recent(ctx, &managed).await? {
            self.finish(ctx, outcome, Found::default()).await?;
            // Requeue at the resync interval: a spec change triggers a reconcile anyway.
            return Ok(Action::requeue(ctx.resync));
        }

        let secret = credentials::secret_name(&self.spec.service_account);
        let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
        if secrets
            .get_metadata_opt(&secret)
            .await
            .map_err(Error::Kube)?
            .is_none()
        {
            let outcome = Outcome::Progressing {
                reason: "CredentialsNotFound".into(),
                message: format!(
                    "Secret {secret} with the Kafka credential of service account {} does not exist yet; the identity controller creates it (see the AccessGranted condition), then the workers start",
                    self.spec.service_account
                ),
            };
            let found = Found {
                topics: Some(status_topics),
                deployment: None,
                pods: None,
            };
            self.finish(ctx, outcome, found).await?;
            // Requeue at the resync interval only: the credential Secret watch wakes us.
            return Ok(Action::requeue(ctx.resync));
        }
        if self.spec.placement == Placement::Sidecar {
            return self
                .reconcile_sidecar(ctx, &resolved, status_topics, &retired)
                .await;
        }

        let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
        let name = deployment::name(&self.name_any());
        let existing = deployments.get_opt(&name).await.map_err(Error::Kube)?;
        let current = existing
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas);
        let replicas = self.replicas(ctx, &resolved, current);
        let desired = match deployment::build(self, &resolved, &ctx.settings, replicas) {
            Ok(d) => d,
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
        // Applied a moment ago and changed by nobody since (its generation is the one the
        // apply left): the Deployment as read is what an apply would return.
        let uid = self.metadata.uid.clone().unwrap_or_default();
        let fingerprint = |generation: Option<i64>| recent::fingerprint(&(&desired, generation));
        let applied = match &existing {
            Some(current)
                if ctx.applied_deployments.is_current(
                    &uid,
                    fingerprint(current.metadata.generation),
                    Instant::now(),
                ) =>
            {
                current.clone()
            }
            _ => {
                let applied = deployments
                    .patch(
                        &name,
                        &PatchParams::apply(crate::field_manager::OPERATOR).force(),
                        &Patch::Apply(&desired),
                    )
                    .await
                    .map_err(Error::Kube)?;
                ctx.applied_deployments.record(
                    uid,
                    fingerprint(applied.metadata.generation),
                    Instant::now(),
                );
                applied
            }
        };
        self.report_deployment_change(ctx, existing.as_ref(), &applied, replicas)
            .await;

        let rolled_out = status::deployment_outcome(&applied);
        let mut status_topics = status_topics;
        if matches!(rolled_out, Outcome::Ready { .. }) && !retired.is_empty() {
            // No worker of the old template is left to read them.
            self.delete_topics(ctx, &retired, "its retry tier is no longer in the spec")
                .await?;
            status_topics.retry.retain(|t| !retired.contains(t));
        }
        let outcome = status::fold_access(
            self.status.as_ref().map_or(&[][..], |s| &s.conditions),
            self.metadata.generation,
            rolled_out,
        );
        let found = Found {
            topics: Some(status_topics),
            deployment: Some(applied),
            pods: None,
        };
        self.finish(ctx, outcome, found).await?;
        // Requeue at the resync interval: drift in Kafka is found this way; the Deployment
        // watch and the lag rounds wake us for everything else.
        Ok(Action::requeue(ctx.resync))
    }

    /// The replicas to run: the scaler's decision on the last lag round.
    fn replicas(&self, ctx: &Context, resolved: &Resolved, current: Option<i32>) -> i32 {
        let key = ObjectRef::from_obj(self);
        let lag = ctx.lag.get(&key).map(|o| o.scaler_input());
        let mut memories = ctx.scale.lock().unwrap_or_else(|e| e.into_inner());
        let memory = memories.entry(key).or_default();
        scaler::decide(
            &self.spec.scaling.clone().unwrap_or_default(),
            resolved.max_partitions(),
            current,
            lag,
            memory,
            ctx.cooldown,
            Instant::now(),
        )
    }

    /// Events for a new Deployment, a new template or a new size.
    async fn report_deployment_change(
        &self,
        ctx: &Context,
        before: Option<&Deployment>,
        after: &Deployment,
        replicas: i32,
    ) {
        let name = after.metadata.name.clone().unwrap_or_default();
        let Some(before) = before else {
            info!(deployment = name, replicas, "created worker Deployment");
            self.publish(
                &ctx.events,
                EventType::Normal,
                "DeploymentCreated",
                "Create",
                format!("created worker Deployment {name} with {replicas} replicas"),
            )
            .await;
            return;
        };
        let old = before.spec.as_ref().and_then(|s| s.replicas);
        if old != Some(replicas) {
            info!(
                deployment = name,
                from = old,
                to = replicas,
                "scaled workers"
            );
            self.publish(
                &ctx.events,
                EventType::Normal,
                "Scaled",
                "Scale",
                format!(
                    "scaled worker Deployment {name} from {} to {replicas} replicas (lag {})",
                    old.unwrap_or(0),
                    self.status
                        .as_ref()
                        .and_then(|s| s.lag.as_ref())
                        .map_or(0, |l| l.total)
                ),
            )
            .await;
        }
        let template = |d: &Deployment| d.spec.as_ref().map(|s| s.template.clone());
        if template(before) != template(after) {
            info!(deployment = name, "updated worker pod template");
            self.publish(
                &ctx.events,
                EventType::Normal,
                "DeploymentUpdated",
                "Update",
                format!("rolled worker Deployment {name} to a new pod template"),
            )
            .await;
        }
    }

    /// [`Self::converge_topics`], unless this process found the same topics in place a moment
    /// ago (see [`crate::recent`]).
    async fn converge_topics_unless_recent(
        &self,
        ctx: &Context,
        managed: &[topics::ManagedTopic],
    ) -> Result<Option<Outcome>> {
        let uid = self.metadata.uid.clone().unwrap_or_default();
        let fingerprint = recent::fingerprint(managed);
        if ctx
            .converged_topics
            .is_current(&uid, fingerprint, Instant::now())
        {
            return Ok(None);
        }
        let refused = self.converge_topics(ctx, managed).await?;
        if refused.is_none() {
            ctx.converged_topics
                .record(uid, fingerprint, Instant::now());
        }
        Ok(refused)
    }

    /// Creates, grows and corrects the consumer's own topics; what Kafka refused, if anything.
    async fn converge_topics(
        &self,
        ctx: &Context,
        managed: &[topics::ManagedTopic],
    ) -> Result<Option<Outcome>> {
        let described =
            futures::future::join_all(managed.iter().map(|t| ctx.kafka.describe(&t.name))).await;
        let mut changes = Vec::new();
        for (wanted, found) in managed.iter().zip(described) {
            let actual = match self.kafka_call(ctx, async { found }).await? {
                Ok(actual) => actual,
                Err(refusal) => return Ok(Some(self.refused(ctx, &wanted.name, refusal).await)),
            };
            changes.extend(
                topics::diff(wanted, actual.as_ref())
                    .into_iter()
                    .map(|change| (wanted, change)),
            );
        }
        // All at once: each call waits for a batch of every reconcile's requests, so one
        // after another would cost a consumer with three new topics three batch rounds.
        let results = futures::future::join_all(
            changes
                .into_iter()
                .map(|(wanted, change)| apply_change(ctx, wanted, change)),
        )
        .await;
        let mut changed = Vec::new();
        let mut refused = None;
        for (wanted, result, note) in results {
            match self.kafka_call(ctx, async { result }).await? {
                Ok(()) => {
                    info!(topic = wanted.name, note, "changed consumer topic");
                    changed.push(note);
                }
                // Created by someone else since our describe: in place all the same.
                Err(refusal)
                    if refusal.code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists => {}
                Err(refusal) => {
                    refused.get_or_insert((wanted, refusal));
                }
            }
        }
        // An Event for every change Kafka made, also when another was refused; sent at once,
        // not one API round trip after another (a new consumer has three).
        futures::future::join_all(changed.into_iter().map(|note| {
            self.publish(
                &ctx.events,
                EventType::Normal,
                "TopicChanged",
                "Update",
                note,
            )
        }))
        .await;
        match refused {
            Some((wanted, refusal)) => Ok(Some(self.refused(ctx, &wanted.name, refusal).await)),
            None => Ok(None),
        }
    }

    async fn refused(&self, ctx: &Context, topic: &str, refusal: kafka::Refusal) -> Outcome {
        let outcome = Outcome::Stalled {
            reason: "KafkaRefused".into(),
            message: format!("Kafka refused the change to topic {topic}: {refusal}"),
        };
        self.publish(
            &ctx.events,
            EventType::Warning,
            "KafkaRefused",
            "Reconcile",
            reconcile::outcome_message(&outcome),
        )
        .await;
        outcome
    }

    /// Runs a Kafka call; when Kafka is unreachable, says so in the status and fails so the
    /// controller backs off.
    async fn kafka_call<T>(
        &self,
        ctx: &Context,
        call: impl std::future::Future<Output = kafka::Result<T>>,
    ) -> Result<T> {
        reconcile::kafka_call(call, |outcome| self.finish(ctx, outcome, Found::default()))
            .await
            .map_err(Error::Kafka)
    }
}

/// Makes one change to one of the consumer's topics: Kafka's answer and the note for its Event.
async fn apply_change<'a>(
    ctx: &Context,
    wanted: &'a topics::ManagedTopic,
    change: Change,
) -> (
    &'a topics::ManagedTopic,
    kafka::Result<std::result::Result<(), kafka::Refusal>>,
    String,
) {
    let (result, note) = match change {
        Change::Create(spec) => (
            ctx.kafka.create(spec).await,
            format!(
                "created Kafka topic {} with {} partitions",
                wanted.name, wanted.partitions
            ),
        ),
        Change::Grow(partitions) => (
            ctx.kafka.grow(&wanted.name, partitions).await,
            format!(
                "grew Kafka topic {} to {partitions} partitions (as its source)",
                wanted.name
            ),
        ),
        Change::Alter(ops) => (
            ctx.kafka.alter(&wanted.name, ops).await,
            format!("put back the configs of Kafka topic {}", wanted.name),
        ),
    };
    (wanted, result, note)
}
