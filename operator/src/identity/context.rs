//! What every identity pass shares: clients, settings, the Event publisher, metrics, the
//! backoff after failures, and which credentials this process already pushed to Kafka.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ferry_common::backoff::{self, ExponentialBackoff};
use kube::{Api, Client, Resource};

use super::credentials::ClientSettings;
use crate::{
    access_status::AccessBook, cache::Caches, events::Publisher, kafka::KafkaAdmin,
    metrics::Metrics,
};

/// Everything the controller needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Kafka's admin API (credentials and ACLs are not batched: one pass makes few calls).
    pub admin: KafkaAdmin,
    /// How clients reach Kafka, written into every credential Secret.
    pub settings: ClientSettings,
    /// Watch one namespace, or all with `None`.
    pub namespace: Option<String>,
    /// The EventTopics and EventConsumers in scope, which each pass reads.
    pub caches: Caches,
    /// Publishes Kubernetes Events.
    pub events: Publisher,
    /// Where each pass records what every resource was granted, for the status writers.
    pub book: AccessBook,
    /// Metrics.
    pub metrics: Metrics,
    /// How often every credential is pushed to Kafka again and Kafka's ACLs are read again.
    pub resync: Duration,
    /// Which credentials this process has pushed to Kafka since the last resync.
    pub asserted: Asserted,
    backoff: Mutex<ExponentialBackoff>,
}

impl Context {
    /// A context for a controller over `namespace` (all with `None`), whose `caches` watch the
    /// same scope.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        admin: KafkaAdmin,
        settings: ClientSettings,
        namespace: Option<String>,
        caches: Caches,
        events: Publisher,
        book: AccessBook,
        metrics: Metrics,
        resync: Duration,
    ) -> Self {
        Self {
            client,
            admin,
            settings,
            namespace,
            caches,
            events,
            book,
            metrics,
            resync,
            asserted: Asserted::default(),
            backoff: Mutex::new(backoff::identity_retry()),
        }
    }

    /// The API of `K` over the controller's scope.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// The wait before retrying after the next failure.
    pub fn next_backoff(&self) -> Duration {
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        // identity_retry() never ends; its longest wait if it did.
        backoff.next().unwrap_or(Duration::from_secs(60))
    }

    /// Starts the backoff from its shortest wait again, after a pass that succeeded.
    pub fn reset_backoff(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        *backoff = backoff::identity_retry();
    }
}

/// The credentials this process has pushed to Kafka, so a pass triggered by a change does not
/// push every credential again. Kafka cannot be asked which users exist (see
/// `kafka/scram.rs`), so once per resync interval this is forgotten and every credential is
/// pushed again: a credential lost in Kafka comes back within one resync interval.
#[derive(Debug, Clone, Default)]
pub struct Asserted(Arc<Mutex<AssertedState>>);

#[derive(Debug, Default)]
struct AssertedState {
    /// User name → fingerprint of the password pushed.
    pushed: HashMap<String, u64>,
    /// When `pushed` was last emptied.
    since: Option<Instant>,
}

impl Asserted {
    fn fingerprint(password: &str) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        password.hash(&mut hasher);
        hasher.finish()
    }

    /// Whether `password` of `user` was pushed since the last time this forgot.
    pub fn contains(&self, user: &str, password: &str) -> bool {
        let state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.pushed.get(user) == Some(&Self::fingerprint(password))
    }

    /// Records that `password` of `user` was pushed.
    pub fn record(&self, user: &str, password: &str) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state
            .pushed
            .insert(user.to_owned(), Self::fingerprint(password));
    }

    /// Forgets everything if it last did so `every` ago or more (or never), so the pass about
    /// to run pushes every credential again.
    pub fn forget_if_due(&self, every: Duration, now: Instant) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .since
            .is_none_or(|since| now.duration_since(since) >= every)
        {
            state.pushed.clear();
            state.since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_forgotten_once_per_resync() {
        let asserted = Asserted::default();
        let start = Instant::now();
        asserted.forget_if_due(Duration::from_secs(10), start);
        asserted.record("ns.app", "pw");
        assert!(asserted.contains("ns.app", "pw"));
        assert!(
            !asserted.contains("ns.app", "other"),
            "a new password is pushed"
        );
        asserted.forget_if_due(Duration::from_secs(10), start + Duration::from_secs(9));
        assert!(asserted.contains("ns.app", "pw"), "not due yet");
        asserted.forget_if_due(Duration::from_secs(10), start + Duration::from_secs(10));
        assert!(!asserted.contains("ns.app", "pw"), "due: pushed again");
    }
}
