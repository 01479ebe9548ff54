//! What every EventConsumer reconcile shares: clients, caches, the scaler's memory, what was
//! applied a moment ago and each object's backoff after errors.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::{
    Client,
    runtime::reflector::{ObjectRef, Store},
};

use super::{deployment::WorkerSettings, lag, resolve, scaler};
use crate::recent::Recent;
use crate::{
    api::{EventConsumer, EventConsumerStatus, EventTopic},
    events::Publisher,
    kafka::Batched,
    metrics::Metrics,
    reconcile::Backoffs,
    written_status::WrittenStatus,
};

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
    /// Every EventTopic the controller sees, to resolve the consumer's topics.
    pub(super) topics: Store<EventTopic>,
    /// The scaler's memory per consumer (when fewer workers started to suffice).
    pub(super) scale: Mutex<HashMap<ObjectRef<EventConsumer>, scaler::Memory>>,
    /// Each consumer's backoff after failed reconciles.
    pub(super) backoffs: Backoffs<ObjectRef<EventConsumer>>,
    /// The status last written per consumer (by UID), which the cache may not show yet.
    pub(super) written: WrittenStatus<String, EventConsumerStatus>,
    /// The worker Deployment each consumer (by UID) had applied a moment ago.
    pub(super) applied_deployments: Recent<String>,
    /// The topics each consumer (by UID) found in place a moment ago.
    pub(super) converged_topics: Recent<String>,
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
    /// How many EventConsumers are reconciled at once (`--max-concurrent-reconciles`).
    pub concurrency: u16,
}

impl Context {
    /// The wait before retrying `key` after its next failure.
    pub fn next_backoff(&self, key: ObjectRef<EventConsumer>) -> Duration {
        self.backoffs.next(key)
    }

    /// Starts `key`'s backoff from its shortest wait again, after a reconcile that succeeded.
    pub fn reset_backoff(&self, key: &ObjectRef<EventConsumer>) {
        self.backoffs.reset(key);
    }

    /// `consumer`'s EventTopics resolved to Kafka names, from the EventTopics the controller
    /// sees; why not yet when one is missing or not Ready.
    pub(super) fn resolve(
        &self,
        consumer: &EventConsumer,
    ) -> Result<resolve::Resolved, resolve::Waiting> {
        resolve::resolve(
            consumer,
            self.topics
                .state()
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>(),
        )
    }
}
