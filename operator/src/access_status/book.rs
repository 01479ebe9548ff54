//! The hand-over from the identity controller to the status writers: per resource, the
//! principals and ACLs it declares and whether Kafka holds them, replaced after every pass.
//!
//! ```text
//!  identity::reconcile ──record()──▶ AccessBook ──changed EventTopics──▶ topic controller
//!   (derives and applies every ACL)   (per resource: principals,       (folds the entry into
//!                                      ACLs, failure, generation)        the status it writes)
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::api::{AccessStatus, EventTopic};

/// Which kind of resource an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    EventTopic,
    EventConsumer,
}

/// A resource: kind, namespace, name.
pub type ResourceKey = (Kind, String, String);

/// Why Kafka does not hold a resource's ACLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// A CamelCase word (`KafkaNotAuthorized`, `KafkaUnavailable`, ...).
    pub reason: String,
    /// The cause, for a person.
    pub message: String,
    /// Whether retrying can fix it without a person (Kafka down) or not (missing rights).
    pub transient: bool,
}

/// What the identity controller found for one resource in its last pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The resource's `metadata.generation` the pass read.
    pub generation: Option<i64>,
    /// Its principals and ACLs.
    pub declared: AccessStatus,
    /// Set when the pass failed to converge Kafka.
    pub failure: Option<Failure>,
}

/// The identity controller's per-resource findings, shared with the status writers.
#[derive(Clone)]
pub struct AccessBook {
    entries: Arc<Mutex<HashMap<ResourceKey, Access>>>,
    topics: mpsc::UnboundedSender<ObjectRef<EventTopic>>,
}

impl AccessBook {
    /// A book and the stream of EventTopics whose access changed (for `Controller::reconcile_on`).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<ObjectRef<EventTopic>>) {
        let (topics, changed) = mpsc::unbounded_channel();
        let book = Self {
            entries: Arc::default(),
            topics,
        };
        (book, changed)
    }

    /// The entry of one resource.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Access> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Replaces every entry with the findings of one pass and wakes the EventTopics whose
    /// access changed in a way their status shows (ones that declare no producers are not
    /// woken: their status does not wait on access).
    pub fn record(&self, findings: HashMap<ResourceKey, Access>) {
        let previous = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *entries, findings.clone())
        };
        for (key, access) in &findings {
            let (Kind::EventTopic, namespace, name) = key else {
                continue;
            };
            let before = previous.get(key);
            let matters = !access.declared.principals.is_empty()
                || before.is_some_and(|b| !b.declared.principals.is_empty());
            if matters && before != Some(access) {
                // The receiver is gone only while the controller shuts down.
                let _ = self.topics.send(ObjectRef::new(name).within(namespace));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(generation: i64, principals: &[&str], failure: Option<Failure>) -> Access {
        Access {
            generation: Some(generation),
            declared: AccessStatus {
                principals: principals.iter().map(|p| (*p).to_owned()).collect(),
                acls: vec![],
            },
            failure,
        }
    }

    pub(crate) fn denied(transient: bool) -> Failure {
        Failure {
            reason: "KafkaNotAuthorized".into(),
            message: "ClusterAuthorizationFailed".into(),
            transient,
        }
    }

    #[tokio::test]
    async fn only_topics_whose_shown_access_changed_are_woken() {
        let (book, mut woken) = AccessBook::new();
        let key = |name: &str| (Kind::EventTopic, "ns".to_owned(), name.to_owned());
        book.record(HashMap::from([
            (key("with"), entry(1, &["User:ns.app"], None)),
            (key("without"), entry(1, &[], None)),
            (
                (Kind::EventConsumer, "ns".into(), "c".into()),
                entry(1, &["User:ns.app"], None),
            ),
        ]));
        assert_eq!(woken.try_recv().map(|r| r.name), Ok("with".to_owned()));
        assert!(woken.try_recv().is_err(), "nothing else woken");

        // The same findings again wake nobody; a failure wakes the topic it concerns.
        book.record(HashMap::from([
            (key("with"), entry(1, &["User:ns.app"], Some(denied(false)))),
            (key("without"), entry(2, &[], None)),
        ]));
        assert_eq!(woken.try_recv().map(|r| r.name), Ok("with".to_owned()));
        assert!(woken.try_recv().is_err());
        assert!(
            book.get(Kind::EventConsumer, "ns", "c").is_none(),
            "a pass replaces all entries"
        );
        // A topic whose last producer went is woken once more, to clear its access.
        book.record(HashMap::from([(key("with"), entry(2, &[], None))]));
        assert_eq!(woken.try_recv().map(|r| r.name), Ok("with".to_owned()));
    }
}
