//! What every EventTopic reconcile shares, and each object's backoff after errors.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ferry_common::backoff::{self, ExponentialBackoff};
use kube::{
    Client,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    access_status::AccessBook, api::EventTopic, events::Publisher, kafka::Batched, metrics::Metrics,
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
    backoffs: Mutex<HashMap<ObjectRef<EventTopic>, ExponentialBackoff>>,
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
            backoffs: Mutex::new(HashMap::new()),
        }
    }

    /// The wait before retrying `key` after its next failure.
    pub fn next_backoff(&self, key: ObjectRef<EventTopic>) -> Duration {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs
            .entry(key)
            .or_insert_with(backoff::controller_requeue)
            .next()
            // controller_requeue() never ends; its longest wait if it did.
            .unwrap_or(Duration::from_secs(300))
    }

    /// Starts `key`'s backoff from its shortest wait again, after a reconcile that succeeded.
    pub fn reset_backoff(&self, key: &ObjectRef<EventTopic>) {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|e| e.into_inner());
        backoffs.remove(key);
    }
}
