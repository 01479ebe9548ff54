//! The operator's watch caches: one watch per kind for the whole process, shared by every part
//! that reads that kind.
//!
//! ```text
//!  kube-apiserver ─watch─▶ strip ─▶ store ─┬─▶ topic controller   (subscribe: its triggers)
//!                                           ├─▶ consumer controller
//!                                           ├─▶ identity controller (reads the store per pass)
//!                                           └─▶ webhook, lag rounds (read the store)
//! ```
//!
//! Before this, each part kept its own watch: 10,000 EventTopics were held three times, and
//! every identity pass listed all of them from the API server (`make bench-operator`). Objects
//! are stored without `managedFields` and kubectl's last-applied annotation, which nothing
//! here reads and which are most of a small object's size.
//!
//! kube-runtime's own shared streams forward neither deletions nor a snapshot to a late
//! subscriber; a controller that starts with each leadership term needs both. Here a
//! subscriber first gets every cached object, then every change, deletions included.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt as _, stream};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::warn;

use crate::api::{EventConsumer, EventTopic};

/// kubectl's client-side apply keeps the whole object again in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The caches every part of the operator reads, one watch each.
#[derive(Clone)]
pub struct Caches {
    /// Every EventTopic in scope.
    pub topics: SharedCache<EventTopic>,
    /// Every EventConsumer in scope.
    pub consumers: SharedCache<EventConsumer>,
}

impl Caches {
    /// Starts watching EventTopics and EventConsumers in `namespace` (all when `None`); the
    /// watches run until the returned guard is dropped.
    pub fn start(client: &kube::Client, namespace: Option<&str>) -> (Caches, CacheTasks) {
        let (topics, topic_task) = SharedCache::start(scoped(client, namespace));
        let (consumers, consumer_task) = SharedCache::start(scoped(client, namespace));
        (
            Caches { topics, consumers },
            CacheTasks(vec![topic_task, consumer_task]),
        )
    }

    /// Whether both caches hold their first list.
    pub fn filled(&self) -> bool {
        crate::reconcile::cache_filled(&self.topics.store)
            && crate::reconcile::cache_filled(&self.consumers.store)
    }

    /// Waits until both caches hold their first list (for ever if the API server never
    /// answers: bound it with a timeout).
    pub async fn wait_until_filled(&self) {
        let _ = self.topics.store.wait_until_ready().await;
        let _ = self.consumers.store.wait_until_ready().await;
    }
}

/// The tasks that fill [`Caches`]; dropping it stops them.
pub struct CacheTasks(Vec<JoinHandle<()>>);

impl Drop for CacheTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One kind's cache: a store to read and changes to subscribe to.
pub struct SharedCache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    shared: Arc<Mutex<Subscribers<K>>>,
    /// Whether the store is complete: listed at least once and not relisting.
    complete: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for SharedCache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            shared: self.shared.clone(),
            complete: self.complete.clone(),
        }
    }
}

struct Subscribers<K: Resource<DynamicType = ()> + Clone + 'static> {
    senders: Vec<mpsc::UnboundedSender<watcher::Event<K>>>,
    writer: Writer<K>,
}

/// A watch stream's item, as kube-runtime's stream helpers expect it.
pub type Change<K> = Result<watcher::Event<K>, watcher::Error>;

impl<K> SharedCache<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts the watch of `api`; the task runs until aborted.
    pub fn start(api: Api<K>) -> (Self, JoinHandle<()>) {
        Self::from_changes(
            watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(strip),
        )
    }

    /// A cache filled from `changes` (a watch, or a test's feed); the task runs until aborted
    /// or `changes` ends.
    fn from_changes(
        changes: impl Stream<Item = Change<K>> + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let writer = Writer::default();
        let store = writer.as_reader();
        let shared = Arc::new(Mutex::new(Subscribers {
            senders: Vec::new(),
            writer,
        }));
        let (complete_tx, complete) = watch::channel(false);
        let task = tokio::spawn(fill(changes, shared.clone(), complete_tx));
        (
            Self {
                store,
                shared,
                complete,
            },
            task,
        )
    }

    /// The cached objects (kept without `managedFields`).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every cached object (as `InitApply`, once the store is complete), then every change as
    /// it is stored. Starts when the first list is in and no relist is under way, so no object
    /// is missed; ends when the cache stops.
    pub fn subscribe(&self) -> impl Stream<Item = Change<K>> + Send + 'static {
        let shared = self.shared.clone();
        let mut complete = self.complete.clone();
        let store = self.store.clone();
        let receiver = async move {
            loop {
                if complete.wait_for(|c| *c).await.is_err() {
                    // The cache stopped before its first list: an empty subscription.
                    return mpsc::unbounded_channel().1;
                }
                // Under the lock, so no change lands between the snapshot and the subscription,
                // and a relist that began since the wait is waited out too.
                let mut subscribers = shared.lock().unwrap_or_else(|p| p.into_inner());
                if !*complete.borrow() {
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(watcher::Event::Init);
                for object in store.state() {
                    let _ = tx.send(watcher::Event::InitApply(object.as_ref().clone()));
                }
                let _ = tx.send(watcher::Event::InitDone);
                subscribers.senders.push(tx);
                return rx;
            }
        };
        stream::once(receiver)
            .flat_map(|rx| stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) }))
            .map(Ok)
    }
}

/// Stores each change, then hands it to every subscriber.
async fn fill<K>(
    changes: impl Stream<Item = Change<K>>,
    shared: Arc<Mutex<Subscribers<K>>>,
    complete: watch::Sender<bool>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + 'static,
{
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let event = match change {
            Ok(event) => event,
            Err(e) => {
                // Retried with backoff by the watcher; the store keeps what it had.
                warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                continue;
            }
        };
        let mut subscribers = shared.lock().unwrap_or_else(|p| p.into_inner());
        subscribers.writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::Init => complete.send_replace(false),
            watcher::Event::InitDone => complete.send_replace(true),
            _ => false,
        };
        subscribers
            .senders
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// Drops what nothing in the operator reads and what weighs most in a small object.
fn strip<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(name: &str) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": name, "namespace": "ns", "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"partitions": 1},
        }))
        .expect("topic")
    }

    fn names(events: &[watcher::Event<EventTopic>]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                watcher::Event::Init => "init".to_owned(),
                watcher::Event::InitDone => "done".to_owned(),
                watcher::Event::InitApply(t) => {
                    format!("+{}", t.metadata.name.clone().unwrap_or_default())
                }
                watcher::Event::Apply(t) => {
                    format!("~{}", t.metadata.name.clone().unwrap_or_default())
                }
                watcher::Event::Delete(t) => {
                    format!("-{}", t.metadata.name.clone().unwrap_or_default())
                }
            })
            .collect()
    }

    /// A cache fed from the returned sender instead of an API server.
    fn fed() -> (
        SharedCache<EventTopic>,
        futures::channel::mpsc::UnboundedSender<Change<EventTopic>>,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let (cache, _task) =
            SharedCache::from_changes(rx.map(|c: Change<EventTopic>| c.map(|e| e.modify(strip))));
        (cache, tx)
    }

    async fn take(
        stream: &mut (impl Stream<Item = Change<EventTopic>> + Unpin),
        n: usize,
    ) -> Vec<watcher::Event<EventTopic>> {
        let mut out = Vec::new();
        for _ in 0..n {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
                .await
                .expect("an event in time")
                .expect("open")
                .expect("no error");
            out.push(next);
        }
        out
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_cached_objects_then_changes_and_deletions() {
        let (cache, feed) = fed();
        // Subscribed before the first list: it waits for it, then sees it whole.
        let mut early = Box::pin(cache.subscribe());
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(topic("a")),
            watcher::Event::InitApply(topic("b")),
            watcher::Event::InitDone,
        ] {
            feed.unbounded_send(Ok(e)).expect("feed");
        }
        let seen = names(&take(&mut early, 4).await);
        assert_eq!(seen[0], "init");
        assert_eq!(seen[3], "done");
        let mut listed = seen[1..3].to_vec();
        listed.sort();
        assert_eq!(listed, ["+a", "+b"]);

        let mut late = Box::pin(cache.subscribe());
        let first = take(&mut late, 4).await;
        assert_eq!(names(&first).len(), 4, "the snapshot, framed as a list");
        feed.unbounded_send(Ok(watcher::Event::Delete(topic("a"))))
            .expect("feed");
        feed.unbounded_send(Ok(watcher::Event::Apply(topic("c"))))
            .expect("feed");
        assert_eq!(names(&take(&mut late, 2).await), ["-a", "~c"]);
        assert_eq!(names(&take(&mut early, 2).await), ["-a", "~c"]);

        let mut stored: Vec<_> = cache
            .store()
            .state()
            .iter()
            .map(|t| t.metadata.name.clone().unwrap_or_default())
            .collect();
        stored.sort();
        assert_eq!(stored, ["b", "c"]);
    }

    #[tokio::test]
    async fn a_subscriber_waits_out_a_relist_instead_of_taking_half_of_it() {
        let (cache, feed) = fed();
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(topic("a")),
            watcher::Event::InitDone,
            // A relist starts (the watch fell too far behind) and has delivered one object.
            watcher::Event::Init,
            watcher::Event::InitApply(topic("b")),
        ] {
            feed.unbounded_send(Ok(e)).expect("feed");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut late = Box::pin(cache.subscribe());
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), late.next()).await;
        assert!(waited.is_err(), "nothing before the relist completes");
        feed.unbounded_send(Ok(watcher::Event::InitDone))
            .expect("feed");
        let seen = names(&take(&mut late, 3).await);
        assert_eq!(
            seen,
            ["init", "+b", "done"],
            "the relisted state, not a mix"
        );
    }

    #[test]
    fn stored_objects_keep_their_own_annotations_but_not_field_managers() {
        let mut t = topic("a");
        strip(&mut t);
        assert!(t.metadata.managed_fields.is_none());
        let annotations = t.metadata.annotations.expect("annotations");
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
    }
}
