//! The EventConsumer controller: makes each EventConsumer's workers, retry tiers and
//! dead-letter topic real, and sizes the workers by lag (DESIGN §2, §5, §7).
//!
//! ```text
//!  EventConsumer ─watch─▶ reconcile ─▶ finalizer
//!  EventTopic ──(names)──▶    │         ├─ Apply   → resolve topics (missing/unready: wait, say so)
//!  credential Secret ─────▶   │         │            → retry tiers + managed DLQ in Kafka
//!  worker Deployment ─owns─▶  │         │            → Secret present? → replicas (scaler)
//!  lag round (every          ─┘         │            → Deployment (SSA) → status (SSA)
//!   --lag-interval) ─────────▶          └─ Cleanup → Deployment, retry tiers, managed DLQ
//! ```
//!
//! Pure cores beside the shell: [`resolve`] (EventTopics → Kafka names), [`topics`] (the
//! topics the consumer owns and the diff to Kafka), [`deployment`] (the worker Deployment),
//! [`scaler`] (replicas from lag), [`status`] (what `Ready` says); [`lag`] measures every
//! consumer group at once and wakes the consumers whose lag changed.
//!
//! Status is shared with the identity controller, which writes `access` and the
//! `AccessGranted` condition: this controller applies its own fields under its own field
//! manager ([`STATUS_MANAGER`]), and `conditions` is a list keyed by `type`, so the two merge.
//! `Ready` folds `AccessGranted` in.

pub mod deployment;
pub mod duration;
pub mod lag;
pub mod resolve;
pub mod scaler;
pub mod status;
pub mod topics;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_common::backoff::{self, ExponentialBackoff};
use futures::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::EventType,
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    api::{ConsumerTopics, EventConsumer, EventConsumerStatus, EventTopic},
    events::Publisher,
    identity::{consumer_grants as grants, credentials},
    kafka::{self, Batched},
    metrics::Metrics,
    status::{self as kstatus, Outcome},
};
use deployment::WorkerSettings;
use resolve::{DeadLetter, Resolved};
use topics::Change;

/// The kind label in metrics and logs.
const KIND: &str = "EventConsumer";

/// The finalizer that makes deletion wait until the workers are gone and the consumer's own
/// Kafka topics are deleted (Kafka is outside garbage collection).
pub const FINALIZER: &str = "ferry.dev/delete-consumer-topics";

/// The field manager of this controller's status fields; the identity controller applies
/// `access` and `AccessGranted` under its own, and server-side apply merges the two.
pub const STATUS_MANAGER: &str = "ferry-operator/consumer";

/// After creating or growing topics, check again soon: Kafka applies them asynchronously.
const VERIFY_AFTER: Duration = Duration::from_secs(1);

/// Why a reconcile failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka admin request failed")]
    Kafka(#[source] kafka::Error),
    #[error("Kafka refused to delete topic {topic}: {refusal}")]
    DeleteRefused {
        topic: String,
        refusal: kafka::Refusal,
    },
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    #[error("finalizer failed")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("EventConsumer has no namespace")]
    MissingNamespace,
}

impl Error {
    /// A bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kafka(e) => e.metric_label(),
            Error::DeleteRefused { .. } => "delete_refused",
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
    pub events: Publisher,
    /// Metrics.
    pub metrics: Metrics,
    /// What goes into every worker pod besides the spec.
    pub settings: WorkerSettings,
    /// How often an in-sync consumer is checked again, to put back drift.
    pub resync: Duration,
    /// How long fewer workers must suffice before the Deployment shrinks.
    pub cooldown: Duration,
    /// The last lag round's findings per consumer.
    pub lag: lag::LagBook,
    topics: Store<EventTopic>,
    scale: Mutex<HashMap<ObjectRef<EventConsumer>, scaler::Memory>>,
    backoffs: Mutex<HashMap<ObjectRef<EventConsumer>, ExponentialBackoff>>,
}

/// The settings of a [`Context`] that do not come from the controller's caches.
pub struct Settings {
    pub client: Client,
    pub kafka: Batched,
    pub events: Publisher,
    pub metrics: Metrics,
    pub worker: WorkerSettings,
    pub resync: Duration,
    pub cooldown: Duration,
    pub lag_interval: Duration,
}

impl Context {
    fn next_backoff(&self, key: ObjectRef<EventConsumer>) -> Duration {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs
            .entry(key)
            .or_insert_with(backoff::controller_requeue)
            .next()
            .unwrap_or(Duration::from_secs(300))
    }

    fn reset_backoff(&self, key: &ObjectRef<EventConsumer>) {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs.remove(key);
    }
}

/// Runs the controller (and the lag rounds) until `shutdown` completes. `namespace` limits
/// what it watches; all namespaces when `None`.
pub async fn run(
    settings: Settings,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = settings.client.clone();
    let ns = namespace.as_deref();
    let (topic_store, topic_writer) = reflector::store();
    let topic_events = reflector::reflector(
        topic_writer,
        watcher(
            api::<EventTopic>(&client, ns),
            watcher::Config::default().any_semantic(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (lag_tx, mut lag_rx) = tokio::sync::mpsc::unbounded_channel();
    let controller = Controller::new(
        api::<EventConsumer>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    let consumers = controller.store();
    let by_topic = consumers.clone();
    let by_secret = consumers.clone();
    let controller = controller
        .owns(
            api::<Deployment>(&client, ns),
            watcher::Config::default().labels("app.kubernetes.io/name=ferry-worker"),
        )
        .watches_stream(topic_events, move |topic: EventTopic| {
            // Every consumer that names this EventTopic (as a source or its dead letter).
            let ns = topic.namespace();
            let name = topic.name_any();
            by_topic
                .state()
                .iter()
                .filter(|c| c.namespace() == ns && names_topic(c, &name))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(
            api::<Secret>(&client, ns),
            watcher::Config::default().labels(&format!("{}=scram", credentials::CREDENTIAL_LABEL)),
            move |secret: Secret| {
                // Every consumer whose credential this is.
                let ns = secret.namespace();
                let name = secret.name_any();
                by_secret
                    .state()
                    .iter()
                    .filter(|c| {
                        c.namespace() == ns
                            && credentials::secret_name(&c.spec.service_account) == name
                    })
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(futures::stream::poll_fn(move |cx| lag_rx.poll_recv(cx)));
    let lag_interval = settings.lag_interval;
    let lag_topics = topic_store.clone();
    let ctx = Arc::new(Context {
        client: settings.client,
        kafka: settings.kafka.clone(),
        events: settings.events,
        metrics: settings.metrics.clone(),
        settings: settings.worker,
        resync: settings.resync,
        cooldown: settings.cooldown,
        lag: lag::LagBook::default(),
        topics: topic_store,
        scale: Mutex::new(HashMap::new()),
        backoffs: Mutex::new(HashMap::new()),
    });
    let rounds = lag::run(
        settings.kafka.admin().clone(),
        consumers,
        lag_topics,
        ctx.lag.clone(),
        settings.metrics,
        lag_interval,
        lag_tx,
    );
    let controller = controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "EventConsumer controller event");
            }
        });
    // The lag rounds run as long as the controller does.
    tokio::select! {
        () = controller => {}
        () = rounds => {}
    }
}

/// Whether `consumer` names EventTopic `name` as a source or as its dead-letter topic.
fn names_topic(consumer: &EventConsumer, name: &str) -> bool {
    consumer.spec.topics.iter().any(|t| t == name)
        || consumer
            .spec
            .dead_letter
            .as_ref()
            .and_then(|d| d.topic.as_deref())
            == Some(name)
}

/// Entry point of one reconcile.
pub async fn reconcile(consumer: Arc<EventConsumer>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(KIND);
    let _ = ctx.topics.wait_until_ready().await;
    let namespace = consumer.namespace().ok_or(Error::MissingNamespace)?;
    let api = Api::<EventConsumer>::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(consumer.as_ref());
    let group = grants::group_id(&consumer);
    if !grants::group_in_namespace(&group, &namespace)
        && !consumer.finalizers().iter().any(|f| f == FINALIZER)
    {
        // Another namespace's group (it slipped past the tenancy admission policy, e.g. it
        // predates it): nothing is created for it, so no finalizer either — the policy would
        // refuse the update that adds or removes one.
        if consumer.meta().deletion_timestamp.is_none() {
            let outcome = Outcome::Stalled {
                reason: "GroupOutsideNamespace".into(),
                message: format!(
                    "spec.groupId {group} is outside namespace {namespace}: consumer groups of this namespace must start with \"{namespace}.\"; no workers or topics are created"
                ),
            };
            consumer.finish(&ctx, outcome, Found::default()).await?;
        }
        // No requeue: only a spec change can fix it, and that wakes the controller.
        return Ok(Action::await_change());
    }
    let result = finalizer(&api, FINALIZER, consumer, |event| async {
        match event {
            finalizer::Event::Apply(c) => c.reconcile(&ctx).await,
            finalizer::Event::Cleanup(c) => c.cleanup(&ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// After an error: count it and retry with per-object exponential backoff.
pub fn error_policy(consumer: Arc<EventConsumer>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.metric_label());
    let delay = ctx.next_backoff(ObjectRef::from_obj(consumer.as_ref()));
    warn!(
        namespace = consumer.namespace().unwrap_or_default(),
        name = consumer.name_any(),
        error = %ferry_common::errors::chain(error),
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "EventConsumer reconcile failed"
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

fn outcome_message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ready { message }
        | Outcome::Progressing { message, .. }
        | Outcome::Retrying { message, .. }
        | Outcome::Stalled { message, .. } => message.clone(),
    }
}

/// The topics of `resolved` as the status lists them, with the `retired` tiers not deleted
/// yet.
fn status_topics(
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
struct Found {
    topics: Option<ConsumerTopics>,
    deployment: Option<Deployment>,
}

impl EventConsumer {
    fn namespace_or_err(&self) -> Result<String> {
        self.namespace().ok_or(Error::MissingNamespace)
    }

    /// Makes the workers and topics match the spec and reports what it found.
    pub async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace_or_err()?;
        let resolved = match resolve::resolve(
            self,
            ctx.topics
                .state()
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>(),
        ) {
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

        let managed = topics::desired(&resolved, &self.spec.retry.delays);
        let wanted: Vec<String> = status_topics(&resolved, &managed, &[]).retry;
        let listed = self
            .status
            .as_ref()
            .and_then(|s| s.topics.as_ref())
            .map(|t| t.retry.clone())
            .unwrap_or_default();
        let retired = topics::retired(&listed, &wanted);
        let status_topics = status_topics(&resolved, &managed, &retired);
        match self.converge_topics(ctx, &managed).await? {
            TopicsOutcome::InSync => {}
            TopicsOutcome::Changed => {
                let outcome = Outcome::Progressing {
                    reason: "CreatingTopics".into(),
                    message: "creating or growing the retry and dead-letter topics".into(),
                };
                let found = Found {
                    topics: Some(status_topics),
                    deployment: None,
                };
                self.finish(ctx, outcome, found).await?;
                // Requeue soon: the next describe confirms the topics.
                return Ok(Action::requeue(VERIFY_AFTER));
            }
            TopicsOutcome::Refused(outcome) => {
                self.finish(ctx, outcome, Found::default()).await?;
                // Requeue at the resync interval: a spec change triggers a reconcile anyway.
                return Ok(Action::requeue(ctx.resync));
            }
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
            };
            self.finish(ctx, outcome, found).await?;
            // Requeue at the resync interval only: the credential Secret watch wakes us.
            return Ok(Action::requeue(ctx.resync));
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
        let applied = deployments
            .patch(
                &name,
                &PatchParams::apply(crate::field_manager::OPERATOR).force(),
                &Patch::Apply(&desired),
            )
            .await
            .map_err(Error::Kube)?;
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
            &self.spec.scaling,
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
                ctx,
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
                ctx,
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
                ctx,
                EventType::Normal,
                "DeploymentUpdated",
                "Update",
                format!("rolled worker Deployment {name} to a new pod template"),
            )
            .await;
        }
    }

    /// Creates, grows and corrects the consumer's own topics.
    async fn converge_topics(
        &self,
        ctx: &Context,
        managed: &[topics::ManagedTopic],
    ) -> Result<TopicsOutcome> {
        let described =
            futures::future::join_all(managed.iter().map(|t| ctx.kafka.describe(&t.name))).await;
        let mut changed = false;
        for (wanted, found) in managed.iter().zip(described) {
            let actual = match self.kafka_call(ctx, async { found }).await? {
                Ok(actual) => actual,
                Err(refusal) => return Ok(self.refused(ctx, &wanted.name, refusal).await),
            };
            for change in topics::diff(wanted, actual.as_ref()) {
                let (result, note) = match change {
                    Change::Create(spec) => (
                        self.kafka_call(ctx, ctx.kafka.create(spec)).await?,
                        format!(
                            "created Kafka topic {} with {} partitions",
                            wanted.name, wanted.partitions
                        ),
                    ),
                    Change::Grow(partitions) => (
                        self.kafka_call(ctx, ctx.kafka.grow(&wanted.name, partitions))
                            .await?,
                        format!(
                            "grew Kafka topic {} to {partitions} partitions (as its source)",
                            wanted.name
                        ),
                    ),
                    Change::Alter(ops) => (
                        self.kafka_call(ctx, ctx.kafka.alter(&wanted.name, ops))
                            .await?,
                        format!("put back the configs of Kafka topic {}", wanted.name),
                    ),
                };
                match result {
                    Ok(()) => {
                        info!(topic = wanted.name, note, "changed consumer topic");
                        self.publish(ctx, EventType::Normal, "TopicChanged", "Update", note)
                            .await;
                        changed = true;
                    }
                    // Created by someone else since our describe: the next pass sees it.
                    Err(refusal)
                        if refusal.code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists =>
                    {
                        changed = true;
                    }
                    Err(refusal) => return Ok(self.refused(ctx, &wanted.name, refusal).await),
                }
            }
        }
        Ok(if changed {
            TopicsOutcome::Changed
        } else {
            TopicsOutcome::InSync
        })
    }

    async fn refused(&self, ctx: &Context, topic: &str, refusal: kafka::Refusal) -> TopicsOutcome {
        let outcome = Outcome::Stalled {
            reason: "KafkaRefused".into(),
            message: format!("Kafka refused the change to topic {topic}: {refusal}"),
        };
        self.publish(
            ctx,
            EventType::Warning,
            "KafkaRefused",
            "Reconcile",
            outcome_message(&outcome),
        )
        .await;
        TopicsOutcome::Refused(outcome)
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
                    if let Err(status_error) = self.finish(ctx, outcome, Found::default()).await {
                        warn!(error = %status_error, "cannot record KafkaUnavailable");
                    }
                }
                Err(Error::Kafka(e))
            }
        }
    }

    /// Stops the workers, then deletes the consumer's own topics (the retry tiers and the
    /// managed dead-letter topic; never an EventTopic's).
    pub async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        let namespace = self.namespace_or_err()?;
        // The workers first, so none writes to a topic being deleted (garbage collection
        // would remove the Deployment too, but only after the finalizer is done).
        let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
        match deployments
            .delete(
                &deployment::name(&self.name_any()),
                &DeleteParams::foreground(),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
        let mut names: Vec<String> = Vec::new();
        if let Some(t) = self.status.as_ref().and_then(|s| s.topics.as_ref()) {
            names.extend(t.retry.iter().cloned());
            if t.dead_letter_managed {
                names.extend(t.dead_letter.iter().cloned());
            }
        }
        // Also what the spec names now, in case the status never got written.
        if let Ok(resolved) = resolve::resolve(
            self,
            ctx.topics
                .state()
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>(),
        ) {
            names.extend(
                topics::desired(&resolved, &self.spec.retry.delays)
                    .into_iter()
                    .map(|t| t.name),
            );
        }
        names.sort();
        names.dedup();
        self.delete_topics(ctx, &names, "the EventConsumer is being deleted")
            .await?;
        ctx.lag.forget(&ObjectRef::from_obj(self));
        Ok(Action::await_change())
    }

    /// Deletes the consumer's own topics `names` (already gone counts as deleted), with an
    /// Event for each saying `why`.
    async fn delete_topics(&self, ctx: &Context, names: &[String], why: &str) -> Result<()> {
        for name in names {
            match ctx.kafka.delete(name).await.map_err(Error::Kafka)? {
                Ok(()) => {
                    info!(topic = name, why, "deleted consumer topic");
                    self.publish(
                        ctx,
                        EventType::Normal,
                        "TopicDeleted",
                        "Delete",
                        format!("deleted Kafka topic {name}: {why}"),
                    )
                    .await;
                }
                Err(refusal) => {
                    return Err(Error::DeleteRefused {
                        topic: name.clone(),
                        refusal,
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes this controller's status fields for `outcome` (server-side apply under
    /// [`STATUS_MANAGER`]), unless nothing changed. Fields not found this time keep their
    /// last value.
    async fn finish(&self, ctx: &Context, outcome: Outcome, found: Found) -> Result<()> {
        let previous = self.status.clone().unwrap_or_default();
        let now = jiff::Timestamp::now().to_string();
        let generation = self.metadata.generation;
        ctx.metrics.reconciled(KIND, outcome_label(&outcome));
        let conditions = kstatus::conditions(&previous.conditions, &outcome, generation, &now);
        let deployment_status = found.deployment.as_ref().and_then(|d| d.status.as_ref());
        let lag = ctx
            .lag
            .get(&ObjectRef::from_obj(self))
            .map(|o| o.lag)
            .or_else(|| previous.lag.clone());
        let status = EventConsumerStatus {
            observed_generation: generation,
            replicas: found
                .deployment
                .as_ref()
                .and_then(|d| d.spec.as_ref())
                .and_then(|s| s.replicas)
                .or(previous.replicas),
            ready_replicas: match &found.deployment {
                Some(_) => Some(
                    deployment_status
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0),
                ),
                None => previous.ready_replicas,
            },
            lag,
            topics: found.topics.or_else(|| previous.topics.clone()),
            // The identity controller's fields.
            access: None,
            conditions,
        };
        let mine_before: Vec<_> = previous
            .conditions
            .iter()
            .filter(|c| {
                [kstatus::READY, kstatus::RECONCILING, kstatus::STALLED].contains(&c.type_.as_str())
            })
            .cloned()
            .collect();
        let unchanged = status.observed_generation == previous.observed_generation
            && status.replicas == previous.replicas
            && status.ready_replicas == previous.ready_replicas
            && status.lag == previous.lag
            && status.topics == previous.topics
            && status.conditions == mine_before;
        if unchanged {
            return Ok(());
        }
        let namespace = self.namespace_or_err()?;
        let api = Api::<EventConsumer>::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "EventConsumer",
            "status": status,
        });
        api.patch_status(
            &self.name_any(),
            &PatchParams::apply(STATUS_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::Kube)?;
        Ok(())
    }

    /// Records a Kubernetes Event on this EventConsumer (best effort: Events are advisory).
    async fn publish(
        &self,
        ctx: &Context,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        ctx.events
            .publish(&self.object_ref(&()), type_, reason, action, &note)
            .await;
    }
}

/// How converging the consumer's own topics ended.
enum TopicsOutcome {
    /// Kafka matched already.
    InSync,
    /// Something was created or changed; confirm on the next pass.
    Changed,
    /// Kafka refused; the status says why.
    Refused(Outcome),
}
