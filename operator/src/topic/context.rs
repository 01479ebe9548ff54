//! What every EventTopic reconcile shares, and each object's backoff after errors.

use std::time::Duration;

use kube::{
    Client,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    access_status::AccessBook,
    api::{EventTopic, EventTopicStatus},
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
    /// Every EventTopic the controller sees, to find two naming one Kafka topic.
    pub store: Store<EventTopic>,
    /// How often an in-sync topic is checked again for drift.
    pub resync: Duration,
    /// What the identity controller granted each EventTopic's producers.
    pub access: AccessBook,
    backoffs: Backoffs<ObjectRef<EventTopic>>,
    /// The status last written per topic (by UID), which the cache may not show yet.
    pub(super) written: WrittenStatus<String, EventTopicStatus>,
}

impl Context {
    /// A context for a controller whose cache is `store`.
    pub fn new(
        client: Client,
        kafka: Batched,
        events: Publisher,
        metrics: Metrics,
        store: Store<EventTopic>,
        resync: Duration,
        access: AccessBook,
    ) -> Self {
        Self {
            client,
            kafka,
            events,
            metrics,
            store,
            resync,
            access,
            backoffs: Backoffs::default(),
            written: WrittenStatus::default(),
        }
    }

    /// The wait before retrying `key` after its next failure.
    pub fn next_backoff(&self, key: ObjectRef<EventTopic>) -> Duration {
        self.backoffs.next(key)
    }

    /// Starts `key`'s backoff from its shortest wait again, after a reconcile that succeeded.
    pub fn reset_backoff(&self, key: &ObjectRef<EventTopic>) {
        self.backoffs.reset(key);
    }
}
