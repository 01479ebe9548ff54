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
//! controller wakes an EventTopic when its producers' access changes ([`crate::access_status`]).
//!
//! One idea per file: [`plan`] the pure diff, [`apply`] and [`cleanup`] the two finalizer
//! events, [`status`] the one status write, [`context`] and [`error`] what they share. This
//! root wires them: `run`, `reconcile` and `error_policy`, the shape every controller copies.

mod apply;
mod cleanup;
mod context;
mod error;
pub mod plan;
mod status;
mod wake;

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt as _,
        controller::Action,
        finalizer::{self, finalizer},
        reflector::{ObjectRef, Store},
    },
};
use serde_json::json;
use tracing::warn;

use crate::{
    api::{DeletionPolicy, EventTopic},
    cache::SharedCache,
};
pub use context::Context;
pub use error::{Error, Result};

/// The kind label in metrics and logs.
const KIND: &str = "EventTopic";

/// The finalizer that makes deletion wait for the Kafka topic to be deleted.
pub const FINALIZER: &str = "ferry.dev/delete-kafka-topic";

/// Runs the controller until `shutdown` completes over the EventTopics of `topics`;
/// `access_changed` names EventTopics to reconcile because their producers' access changed,
/// `concurrency` bounds the reconciles in flight.
pub async fn run(
    topics: SharedCache<EventTopic>,
    ctx_parts: impl FnOnce(Store<EventTopic>) -> Context,
    mut access_changed: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<EventTopic>>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let changes = topics
        .subscribe()
        .applied_objects()
        .predicate_filter(wake::topic_changed, Default::default());
    let controller = Controller::for_stream(changes, topics.store())
        .with_config(crate::reconcile::controller_config(concurrency))
        .reconcile_on(futures::stream::poll_fn(move |cx| {
            access_changed.poll_recv(cx)
        }));
    let store = controller.store();
    let ctx = Arc::new(ctx_parts(store.clone()));
    let shutdown = shutdown.shared();
    let controller = controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "EventTopic controller event");
            }
        });
    crate::reconcile::run_until_drained(controller, store, shutdown).await;
}

/// Entry point of one reconcile: the finalizer only for `deletionPolicy: Delete`.
pub async fn reconcile(topic: Arc<EventTopic>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start(KIND);
    if !crate::reconcile::cache_filled(&ctx.store) {
        return Ok(Action::requeue(crate::reconcile::CACHE_FILL_WAIT));
    }
    let namespace = topic.namespace().ok_or(Error::MissingNamespace)?;
    let api = Api::<EventTopic>::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(topic.as_ref());
    if topic.meta().deletion_timestamp.is_some() {
        ctx.written
            .forget(&topic.metadata.uid.clone().unwrap_or_default());
    }
    let result = match topic.spec.deletion_policy {
        DeletionPolicy::Delete => crate::reconcile::finalized(
            finalizer(&api, FINALIZER, topic, |event| async {
                match event {
                    finalizer::Event::Apply(t) => t.reconcile(&ctx).await,
                    finalizer::Event::Cleanup(t) => t.cleanup(&ctx).await,
                }
            })
            .await,
        )
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
    if let Error::Finalizer(e) = error
        && crate::reconcile::is_stale_finalizer_write(e)
    {
        // Not a failure: the cache was behind the server; read it again soon.
        tracing::debug!(
            name = topic.name_any(),
            "finalizer write on a stale object; retrying"
        );
        return Action::requeue(crate::reconcile::STALE_CACHE_RETRY);
    }
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
