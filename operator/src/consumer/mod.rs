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
//! [`scaler`] (replicas from lag), [`status`] (what `Ready` says, and its one write); [`lag`]
//! measures every consumer group at once and wakes the consumers whose lag changed.
//!
//! The reconciler has the EventTopic controller's shape ([`crate::topic`]): `apply` and
//! `cleanup` the two finalizer events, `context` and `error` what they share, and the pieces
//! both controllers share in [`crate::reconcile`]. This root wires them: `run`, `reconcile`
//! and `error_policy`.
//!
//! Status is shared with the identity controller, which writes `access` and the
//! `AccessGranted` condition: this controller applies its own fields under its own field
//! manager ([`STATUS_MANAGER`]), and `conditions` is a list keyed by `type`, so the two merge.
//! `Ready` folds `AccessGranted` in.

mod apply;
mod cleanup;
mod context;
pub mod deployment;
pub mod duration;
mod error;
pub mod lag;
pub mod resolve;
pub mod scaler;
pub mod sidecar;
pub mod status;
pub mod topics;
mod wake;

use std::sync::{Arc, Mutex};

use futures::{FutureExt as _, StreamExt};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        finalizer::{self, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::warn;

use crate::{
    api::{EventConsumer, EventTopic},
    cache::Caches,
    identity::{consumer_grants as grants, credentials},
    recent::Recent,
    reconcile::Backoffs,
    status::Outcome,
    written_status::WrittenStatus,
};
pub use context::{Context, Settings};
pub use error::{Error, Result};
use status::Found;

/// The kind label in metrics and logs.
const KIND: &str = "EventConsumer";

/// The finalizer that makes deletion wait until the workers are gone and the consumer's own
/// Kafka topics are deleted (Kafka is outside garbage collection).
pub const FINALIZER: &str = "ferry.dev/delete-consumer-topics";

/// The field manager of this controller's status fields; the identity controller applies
/// `access` and `AccessGranted` under its own, and server-side apply merges the two.
pub const STATUS_MANAGER: &str = "ferry-operator/consumer";

/// Runs the controller (and the lag rounds) over `caches` until `shutdown` completes.
/// `namespace` limits the other watches (Deployments, Secrets, pods) as it limits the caches.
pub async fn run(
    settings: Settings,
    caches: Caches,
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
    let topic_store = caches.topics.store();
    let topic_events = caches.topics.subscribe().touched_objects();
    let (lag_tx, mut lag_rx) = tokio::sync::mpsc::unbounded_channel();
    let consumers = caches.consumers.store();
    let consumer_events = caches
        .consumers
        .subscribe()
        .applied_objects()
        .predicate_filter(wake::consumer_changed, Default::default());
    let controller = Controller::for_stream(consumer_events, consumers.clone())
        .with_config(crate::reconcile::controller_config(settings.concurrency));
    let consumers_for_shutdown = consumers.clone();
    let by_topic = consumers.clone();
    let by_secret = consumers.clone();
    let by_pod = consumers.clone();
    // Opted-in pods (metadata only): their coming and going changes a Sidecar-placed
    // consumer's status.
    let pod_events = watcher(
        api::<PartialObjectMeta<Pod>>(&client, ns),
        watcher::Config::default().labels(&format!(
            "{}={}",
            crate::webhook::INJECT_LABEL,
            crate::webhook::INJECT_ENABLED
        )),
    )
    .default_backoff()
    .touched_objects();
    let controller = controller
        .owns_stream(wake::deployment_changes(
            watcher(
                api::<Deployment>(&client, ns),
                watcher::Config::default().labels("app.kubernetes.io/name=ferry-worker"),
            )
            .default_backoff(),
        ))
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
        .watches_stream(pod_events, move |pod: PartialObjectMeta<Pod>| {
            // Every Sidecar-placed consumer that selects this pod.
            let ns = pod.namespace();
            let labels = pod.labels().clone();
            by_pod
                .state()
                .iter()
                .filter(|c| c.namespace() == ns && sidecar::selects(c, &labels))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
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
        scale: Mutex::default(),
        backoffs: Backoffs::default(),
        written: WrittenStatus::default(),
        applied_deployments: Recent::new(settings.resync),
        converged_topics: Recent::new(settings.resync),
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
    let shutdown = shutdown.shared();
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "EventConsumer controller event");
            }
        });
    let controller =
        crate::reconcile::run_until_drained(controller, consumers_for_shutdown, shutdown);
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
    // The span kube-runtime opens around a reconcile says why it runs (`object.reason`).
    tracing::debug!(name = consumer.name_any(), "reconciling EventConsumer");
    // kube-runtime runs one reconcile per object at a time: a call that never answers would
    // pin this EventConsumer for ever. Abandoned, it is retried with the error backoff.
    tokio::time::timeout(RECONCILE_DEADLINE, reconcile_once(consumer, ctx))
        .await
        .unwrap_or(Err(Error::Timeout(RECONCILE_DEADLINE)))
}

/// The longest one reconcile may take: several Kafka admin calls (30 s each at most by
/// default) and a few API requests fit; anything longer is a call that hangs.
const RECONCILE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(45);

async fn reconcile_once(consumer: Arc<EventConsumer>, ctx: Arc<Context>) -> Result<Action> {
    if !crate::reconcile::cache_filled(&ctx.topics) {
        return Ok(Action::requeue(crate::reconcile::CACHE_FILL_WAIT));
    }
    let namespace = consumer.namespace().ok_or(Error::MissingNamespace)?;
    let api = Api::<EventConsumer>::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(consumer.as_ref());
    if consumer.meta().deletion_timestamp.is_some() {
        let uid = consumer.metadata.uid.clone().unwrap_or_default();
        ctx.written.forget(&uid);
        ctx.applied_deployments.forget(&uid);
        ctx.converged_topics.forget(&uid);
    }
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
    let result = crate::reconcile::finalized(
        finalizer(&api, FINALIZER, consumer, |event| async {
            match event {
                finalizer::Event::Apply(c) => c.reconcile(&ctx).await,
                finalizer::Event::Cleanup(c) => c.cleanup(&ctx).await,
            }
        })
        .await,
    )
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&key);
    }
    result
}

/// After an error: count it and retry with per-object exponential backoff.
pub fn error_policy(consumer: Arc<EventConsumer>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.metric_label());
    if let Error::Finalizer(e) = error
        && crate::reconcile::is_stale_finalizer_write(e)
    {
        // Not a failure: the cache was behind the server; read it again soon.
        tracing::debug!(
            name = consumer.name_any(),
            "finalizer write on a stale object; retrying"
        );
        return Action::requeue(crate::reconcile::STALE_CACHE_RETRY);
    }
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
