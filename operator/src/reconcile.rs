//! What every controller's reconcile shares, written once: each object's backoff after
//! errors, the metric labels of an outcome and of a finalizer error, the Kafka call that
//! reports an unreachable Kafka in the status, the status write by server-side apply, and the
//! Events on a controller's own objects.
//!
//! The EventTopic ([`crate::topic`]) and EventConsumer ([`crate::consumer`]) controllers have
//! the same shape (reconcile → finalizer → apply/cleanup, `error_policy` with backoff); the
//! pieces of that shape which are the same logic live here, so a fix lands in both.

use std::{
    collections::HashMap, fmt::Display, future::Future, hash::Hash, sync::Mutex, time::Duration,
};

use ferry_common::backoff::{self, ExponentialBackoff};
use futures::FutureExt as _;
use kube::runtime::reflector::Store;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::{events::EventType, finalizer},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::warn;

use crate::{events::Publisher, kafka, status::Outcome};

/// The longest wait of [`backoff::controller_requeue`]; it never ends, so this is only the
/// answer if it did.
const LONGEST_BACKOFF: Duration = Duration::from_secs(300);

/// Each object's backoff after failed reconciles: grows with every failure, starts over after
/// a success.
pub struct Backoffs<K> {
    by_key: Mutex<HashMap<K, ExponentialBackoff>>,
}

impl<K> Default for Backoffs<K> {
    fn default() -> Self {
        Self {
            by_key: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Backoffs<K> {
    /// The wait before retrying `key` after its next failure.
    pub fn next(&self, key: K) -> Duration {
        let mut backoffs = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        backoffs
            .entry(key)
            .or_insert_with(backoff::controller_requeue)
            .next()
            .unwrap_or(LONGEST_BACKOFF)
    }

    /// Starts `key`'s backoff from its shortest wait again, after a reconcile that succeeded.
    pub fn reset(&self, key: &K) {
        let mut backoffs = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        backoffs.remove(key);
    }
}

/// A bounded label for the reconciled metric.
pub fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ready { .. } => "ready",
        Outcome::Progressing { .. } => "progressing",
        Outcome::Retrying { .. } => "retrying",
        Outcome::Stalled { .. } => "stalled",
    }
}

/// The message of `outcome`, for an Event that repeats it.
pub fn outcome_message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ready { message }
        | Outcome::Progressing { message, .. }
        | Outcome::Retrying { message, .. }
        | Outcome::Stalled { message, .. } => message.clone(),
    }
}

/// A bounded label for a finalizer error: the label of the apply or cleanup error inside it
/// (`label`), else `finalizer`.
pub fn finalizer_label<E>(
    error: &finalizer::Error<E>,
    label: impl Fn(&E) -> &'static str,
) -> &'static str
where
    E: std::error::Error + 'static,
{
    match error {
        finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
            label(inner)
        }
        _ if is_stale_finalizer_write(error) => STALE_CACHE,
        _ => "finalizer",
    }
}

/// The metric label of a reconcile that acted on a cached object older than the server's.
pub const STALE_CACHE: &str = "stale_cache";

/// How soon a reconcile that acted on a stale cached object runs again: the watch event that
/// freshens the cache usually arrives within it (and wakes the object sooner anyway).
pub const STALE_CACHE_RETRY: Duration = Duration::from_secs(1);

/// Whether adding or removing the finalizer was refused because the object the reconcile read
/// from the cache is older than the server's: kube-runtime's finalizer helper guards its JSON
/// patch with a `test` of the cached finalizer list, which the API server answers with 422
/// Invalid when the list has changed (typically: this controller's own earlier addition, not
/// yet seen by a lagging watch). Not a failure to back off from — the next reconcile reads a
/// fresher object — so the error policies retry it after [`STALE_CACHE_RETRY`] without
/// growing the object's backoff. Under load (1,000 EventConsumers applied at once) treating it
/// as an error let the backoff of an object that had done nothing wrong reach ten minutes.
pub fn is_stale_finalizer_write<E>(error: &finalizer::Error<E>) -> bool
where
    E: std::error::Error + 'static,
{
    match error {
        finalizer::Error::AddFinalizer(kube::Error::Api(e))
        | finalizer::Error::RemoveFinalizer(kube::Error::Api(e)) => e.code == 422 || e.code == 409,
        _ => false,
    }
}

/// The finalizer helper's result, with the one refusal that means success: removing the
/// finalizer from an object that is already gone (404). A reconcile woken by its own cleanup
/// (the worker Deployment it deleted) reads a cache that still shows the object being deleted,
/// runs the cleanup again and finds the object gone at the end; counted as a failure, 1,000
/// consumers deleted at once made 1,557 reconcile errors (and `FerryReconcileErrors` fire).
pub fn finalized<E: std::error::Error + 'static>(
    result: Result<kube::runtime::controller::Action, finalizer::Error<E>>,
) -> Result<kube::runtime::controller::Action, finalizer::Error<E>> {
    match result {
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(e))) if e.code == 404 => {
            Ok(kube::runtime::controller::Action::await_change())
        }
        other => other,
    }
}

/// Runs a Kafka call; when Kafka is unreachable, `record`s a `KafkaUnavailable` outcome in
/// the status (best effort) and returns the error, so the controller backs off.
pub async fn kafka_call<T, E, F>(
    call: impl Future<Output = kafka::Result<T>>,
    record: impl FnOnce(Outcome) -> F,
) -> kafka::Result<T>
where
    E: Display,
    F: Future<Output = Result<(), E>>,
{
    match call.await {
        Ok(value) => Ok(value),
        Err(e) => {
            if e.is_unavailable() {
                let outcome = Outcome::Retrying {
                    reason: "KafkaUnavailable".into(),
                    message: format!("cannot reach Kafka: {e}"),
                };
                // Best effort: the error below is what drives the retry.
                if let Err(status_error) = record(outcome).await {
                    warn!(error = %status_error, "cannot record KafkaUnavailable");
                }
            }
            Err(e)
        }
    }
}

/// Applies `status` as object `name`'s status under field manager `manager` (server-side
/// apply, forced: these fields are this controller's alone).
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Records Kubernetes Events on a controller's own objects.
pub trait PublishEvent {
    /// Records an Event on this object through `events` (best effort: Events are advisory).
    fn publish(
        &self,
        events: &Publisher,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> impl Future<Output = ()> + Send;
}

impl<K: Resource<DynamicType = ()> + Sync> PublishEvent for K {
    async fn publish(
        &self,
        events: &Publisher,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        events
            .publish(&self.object_ref(&()), type_, reason, action, &note)
            .await;
    }
}

/// A controller's configuration: at most `concurrency` reconciles in flight. Each reconcile's
/// deadline then counts its own work, not the time it waited behind every other object's
/// requests in the API server and Kafka — unbounded, a burst of applies ends in deadlines
/// missed and work started over.
pub fn controller_config(concurrency: u16) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(concurrency)
}

/// How soon a reconcile that found its cache not yet filled runs again.
pub const CACHE_FILL_WAIT: Duration = Duration::from_secs(1);

/// Whether `store` holds its first full list. A reconcile that needs the whole cache (to find
/// conflicts, to resolve topics) requeues after [`CACHE_FILL_WAIT`] instead of awaiting it:
/// the cache is filled by the controller's own watch streams, which graceful shutdown stops
/// polling, so a reconcile waiting for the fill when SIGTERM came (an operator stopped just
/// after it started leading) would hold the shutdown until the kubelet's SIGKILL.
pub fn cache_filled<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Drives `controller` (a `Controller` built with `graceful_shutdown_on(shutdown)`, run to
/// completion) until it ends — or, if `shutdown` comes before `store` holds its first list,
/// at once. kube-runtime holds every reconcile until that first list and, on graceful
/// shutdown, stops the watch that would deliver it, so its drain would wait for ever; no
/// reconcile can have started then, so there is nothing to drain.
pub async fn run_until_drained<K>(
    controller: impl Future<Output = ()>,
    store: Store<K>,
    shutdown: impl Future<Output = ()>,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let before_first_list = async {
        shutdown.await;
        if cache_filled(&store) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = controller => {}
        () = before_first_list => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            ..Status::default()
        }))
    }

    #[test]
    fn a_refused_finalizer_patch_is_a_stale_cache_not_a_failure() {
        let stale: finalizer::Error<std::io::Error> =
            finalizer::Error::AddFinalizer(api_error(422));
        assert!(is_stale_finalizer_write(&stale));
        assert_eq!(finalizer_label(&stale, |_| "inner"), STALE_CACHE);
        let removed: finalizer::Error<std::io::Error> =
            finalizer::Error::RemoveFinalizer(api_error(409));
        assert!(is_stale_finalizer_write(&removed));
        // The API server unreachable or refusing for other reasons is a failure.
        let forbidden: finalizer::Error<std::io::Error> =
            finalizer::Error::AddFinalizer(api_error(403));
        assert!(!is_stale_finalizer_write(&forbidden));
        assert_eq!(finalizer_label(&forbidden, |_| "inner"), "finalizer");
        let applied: finalizer::Error<std::io::Error> =
            finalizer::Error::ApplyFailed(std::io::Error::other("x"));
        assert!(!is_stale_finalizer_write(&applied));
    }

    #[test]
    fn a_finalizer_removed_from_an_object_already_gone_is_done() {
        let gone: Result<_, finalizer::Error<std::io::Error>> =
            Err(finalizer::Error::RemoveFinalizer(api_error(404)));
        assert!(finalized(gone).is_ok());
        // Not found while adding it, or any other refusal, stays an error.
        let adding: Result<_, finalizer::Error<std::io::Error>> =
            Err(finalizer::Error::AddFinalizer(api_error(404)));
        assert!(finalized(adding).is_err());
        let forbidden: Result<_, finalizer::Error<std::io::Error>> =
            Err(finalizer::Error::RemoveFinalizer(api_error(403)));
        assert!(finalized(forbidden).is_err());
    }
}
