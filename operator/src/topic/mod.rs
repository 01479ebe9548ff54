//! The EventTopic controller: makes each Kafka topic what its EventTopic declares.
//!
//! ```text
//!  EventTopic ─watch─▶ reconcile ─▶ finalizer (deletionPolicy: Delete only)
//!                                    ├─ Apply   → EventTopic::reconcile: Kafka-internal name?
//!                                    │            conflict? configs allowed?
//!                                    │            describe → create | adopt (report configs
//!                                    │            outside the spec first) | grow + alter configs
//!                                    │            → Event for every change, status (SSA)
//!                                    │              with the producers' access folded in
//!                                    └─ Cleanup → EventTopic::cleanup: delete the Kafka topic
//! ```
//!
//! The diff is pure ([`plan`]); Kafka calls go through the batched admin layer
//! ([`crate::kafka::Batched`]) so many EventTopics converge with few requests. Each topic is
//! requeued every `--resync-interval` so drift made directly in Kafka is reverted. The identity
//! controller wakes an EventTopic when its producers' access changes ([`crate::access`]).

pub mod plan;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{self, finalizer},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    access::{self, AccessBook},
    api::{DeletionPolicy, EventTopic, EventTopicStatus},
    kafka::{self, Batched, TopicState},
    metrics::Metrics,
    ownership,
    status::{self, Outcome},
};
use plan::{Desired, Plan};

/// The kind label in metrics and logs.
const KIND: &str = "EventTopic";

/// The finalizer that makes deletion wait for the Kafka topic to be deleted.
pub const FINALIZER: &str = "ferry.dev/delete-kafka-topic";

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ferry-operator";

/// After a change, check again soon: Kafka applies topic changes asynchronously, and the next
/// describe confirms them (1 s is a few metadata-propagation rounds on a healthy cluster).
const VERIFY_AFTER: Duration = Duration::from_secs(1);

/// A conflict resolves when the older EventTopic goes away; nothing watches for that, so
/// the loser looks again this often.
const CONFLICT_RECHECK: Duration = Duration::from_secs(15);

/// Backoff after errors: from 1 s, doubling up to 5 min, with jitter so many topics do not
/// retry in step. (controller-runtime's default limiter caps at 1000 s; 5 min keeps recovery
/// after a Kafka outage prompt.)
fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why a reconcile failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka admin request failed")]
    Kafka(#[source] kafka::Error),
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    #[error("finalizer failed")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("EventTopic has no namespace")]
    MissingNamespace,
}

impl Error {
    /// A bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kafka(e) => e.metric_label(),
            Error::Kube(_) => "kube",
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
            Error::MissingNamespace => "missing_namespace",
        }
    }
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Batched Kafka admin calls.
    pub kafka: Batched,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Every EventTopic the controller sees, to find two naming one Kafka topic.
    pub store: Store<EventTopic>,
    /// How often an in-sync topic is checked again for drift.
    pub resync: Duration,
    /// What the identity controller granted each EventTopic's producers.
    pub access: AccessBook,
    backoffs: Mutex<HashMap<ObjectRef<EventTopic>, ExponentialBackoff>>,
}

impl Context {
    /// A context for a controller whose cache is `store`.
    pub fn new(
        client: Client,
        kafka: Batched,
        recorder: Recorder,
        metrics: Metrics,
        store: Store<EventTopic>,
        resync: Duration,
        access: AccessBook,
    ) -> Self {
        Self {
            client,
            kafka,
            recorder,
            metrics,
            store,
            resync,
            access,
            backoffs: Mutex::new(HashMap::new()),
        }
    }

    fn next_backoff(&self, key: ObjectRef<EventTopic>) -> Duration {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs
            .entry(key)
            .or_insert_with(backoff)
            .next()
            .unwrap_or(Duration::from_secs(300))
    }

    fn reset_backoff(&self, key: &ObjectRef<EventTopic>) {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs.remove(key);
    }
}

/// Runs the controller until `shutdown` completes; `api` decides which namespaces it sees,
/// `access_changed` names EventTopics to reconcile because their producers' access changed.
pub async fn run(
    api: Api<EventTopic>,
    ctx_parts: impl FnOnce(Store<EventTopic>) -> Context,
    mut access_changed: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<EventTopic>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(api, watcher::Config::default().any_semantic()).reconcile_on(
        futures::stream::poll_fn(move |cx| access_changed.poll_recv(cx)),
    );
    let ctx = Arc::new(ctx_parts(controller.store()));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "EventTopic controller event");
            }
        })
        .await;
}

/// Entry point of one reconcile: the finalizer only for `deletionPolicy: Delete`.
pub async fn reconcile(topic: Arc<EventTopic>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(KIND);
    let _ = ctx.store.wait_until_ready().await;
    let namespace = topic.namespace().ok_or(Error::MissingNamespace)?;
    let api = Api::<EventTopic>::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(topic.as_ref());
    let result = match topic.spec.deletion_policy {
        DeletionPolicy::Delete => finalizer(&api, FINALIZER, topic, |event| async {
            match event {
                finalizer::Event::Apply(t) => t.reconcile(&ctx).await,
                finalizer::Event::Cleanup(t) => t.cleanup(&ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e))),
        DeletionPolicy::Retain => {
            // Retain adds no finalizer; drop ours if the policy was Delete before.
            if topic.finalizers().iter().any(|f| f == FINALIZER) {
                let kept: Vec<&String> = topic
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .collect();
                let patch = json!({"metadata": {
                    "finalizers": kept,
                    "resourceVersion": topic.resource_version(),
                }});
                api.patch(
                    &topic.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(Error::Kube)?;
            }
            if topic.meta().deletion_timestamp.is_some() {
                // Being deleted with Retain: the Kafka topic stays; nothing to do.
                Ok(Action::await_change())
            } else {
                topic.reconcile(&ctx).await
            }
        }
    };
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// After an error: count it and retry with per-object exponential backoff.
pub fn error_policy(topic: Arc<EventTopic>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.metric_label());
    let delay = ctx.next_backoff(ObjectRef::from_obj(topic.as_ref()));
    warn!(
        namespace = topic.namespace().unwrap_or_default(),
        name = topic.name_any(),
        error = %error,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "EventTopic reconcile failed"
    );
    // Requeue with backoff: errors are transient (Kafka or the API server unreachable).
    Action::requeue(delay)
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ready { .. } => "ready",
        Outcome::Progressing { .. } => "progressing",
        Outcome::Retrying { .. } => "retrying",
        Outcome::Stalled { .. } => "stalled",
    }
}

impl EventTopic {
    /// The older EventTopic (namespace, name) that names the same Kafka topic, if any: it wins
    /// the topic ([`crate::ownership`], the rule the identity controller grants by).
    fn conflicting_owner(&self, store: &Store<EventTopic>) -> Option<(String, String)> {
        let all = store.state();
        ownership::older_owner(self, all.iter().map(AsRef::as_ref))
            .map(|owner| (owner.namespace().unwrap_or_default(), owner.name_any()))
    }

    /// Makes the Kafka topic match the spec and reports what it found.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let desired = Desired::from_spec(self.kafka_topic_name(), &self.spec);

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
                ctx,
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

        let plan = Plan::diff(&desired, &actual);
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
            self.publish(ctx, type_, "UnmanagedConfigs", "Adopt", note)
                .await;
        }
        if plan.has_changes() {
            return self.apply_plan(ctx, &desired, &actual, &plan).await;
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
        self.finish(ctx, outcome, Some(&actual)).await?;
        // Requeue at the resync interval: drift made directly in Kafka is found this way.
        Ok(Action::requeue(ctx.resync))
    }

    /// Deletes the Kafka topic (deletionPolicy: Delete) unless another EventTopic owns it.
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let name = self.kafka_topic_name();
        if ownership::is_internal_topic(&name) || self.conflicting_owner(&ctx.store).is_some() {
            // The topic belongs to an older EventTopic: deleting this one must not touch it.
            return Ok(Action::await_change());
        }
        match self.kafka_call(ctx, ctx.kafka.delete(&name)).await? {
            Ok(()) => {
                info!(topic = name, "deleted Kafka topic");
                self.publish(
                    ctx,
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!("deleted Kafka topic {name} (deletionPolicy: Delete)"),
                )
                .await;
                Ok(Action::await_change())
            }
            Err(refusal) => Err(Error::Kafka(kafka::Error::Request {
                code: refusal.code,
                message: format!("deleting Kafka topic {name}: {}", refusal.message),
            })),
        }
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
                    ctx,
                    EventType::Normal,
                    "Created",
                    "Create",
                    format!(
                        "created Kafka topic {} with {} partitions",
                        desired.name, desired.partitions
                    ),
                )
                .await;
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
                ctx,
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
                ctx,
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
    async fn kafka_call<T>(
        &self,
        ctx: &Context,
        call: impl std::future::Future<Output = kafka::Result<T>>,
    ) -> Result<T> {
        match call.await {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.is_unavailable() {
                    let outcome = Outcome::Retrying {
                        reason: "KafkaUnavailable".into(),
                        message: format!("cannot reach Kafka: {e}"),
                    };
                    // Best effort: the error below is what drives the retry.
                    if let Err(status_error) = self.finish(ctx, outcome, None).await {
                        warn!(error = %status_error, "cannot record KafkaUnavailable");
                    }
                }
                Err(Error::Kafka(e))
            }
        }
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
            ctx,
            EventType::Warning,
            reason,
            "Reconcile",
            outcome_message(&outcome),
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

    /// Writes the status for `outcome` (server-side apply), unless nothing changed.
    async fn finish(
        &self,
        ctx: &Context,
        outcome: Outcome,
        actual: Option<&TopicState>,
    ) -> Result<()> {
        let previous = self.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let generation = self.metadata.generation;
        let namespace = self.namespace().ok_or(Error::MissingNamespace)?;
        let entry = ctx
            .access
            .get(access::Kind::EventTopic, &namespace, &self.name_any());
        let access =
            access::Access::state(entry.as_ref(), generation, !self.spec.producers.is_empty());
        let outcome = access.fold(outcome);
        ctx.metrics.reconciled(KIND, outcome_label(&outcome));
        let mut conditions = status::conditions(&previous.conditions, &outcome, generation, &now);
        conditions.push(access.condition(&previous.conditions, generation, &now));
        let status = EventTopicStatus {
            observed_generation: self.metadata.generation,
            topic_name: Some(self.kafka_topic_name()),
            topic_id: actual
                .map(|a| a.topic_id.clone())
                .or_else(|| previous.topic_id.clone()),
            partitions: actual.map(|a| a.partitions).or(previous.partitions),
            replication_factor: actual
                .map(|a| a.replication_factor)
                .or(previous.replication_factor),
            // What the identity controller confirmed for this generation; until then, the last
            // access shown.
            access: match entry {
                Some(e) if e.generation == generation => {
                    Some(e.declared).filter(|d| !d.principals.is_empty())
                }
                _ => previous.access.clone(),
            },
            conditions,
        };
        if status == previous {
            return Ok(());
        }
        let api = Api::<EventTopic>::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "EventTopic",
            "status": status,
        });
        api.patch_status(
            &self.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;
        Ok(())
    }

    /// Records a Kubernetes Event on this EventTopic (best effort: Events are advisory).
    async fn publish(
        &self,
        ctx: &Context,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            // The Events API caps notes at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &self.object_ref(&())).await {
            warn!(error = %e, reason, "cannot record Event");
        }
    }
}

fn outcome_message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ready { message }
        | Outcome::Progressing { message, .. }
        | Outcome::Retrying { message, .. }
        | Outcome::Stalled { message, .. } => message.clone(),
    }
}
