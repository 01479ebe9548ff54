//! What each resource was granted in Kafka, handed from the identity controller to the
//! controller that writes that resource's status.
//!
//! ```text
//!  identity::reconcile_all ──record()──▶ AccessBook ──changed EventTopics──▶ topic controller
//!   (derives and applies every ACL)        (per resource: principals,     (folds the entry into
//!                                            ACLs, failure, generation)     the one status it writes)
//! ```
//!
//! ACLs are converged for the whole scope at once, but each resource's status has one writer
//! (one server-side-apply field manager, DESIGN §7): two writers of one `conditions` list would
//! undo each other. So the identity controller does not write EventTopic status; it records what
//! each resource was granted, or why granting failed, and wakes the EventTopic's controller,
//! whose `Ready` then means "the topic is as declared and its producers may write to it".

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::{
    api::{AccessStatus, Condition, ConditionStatus, EventTopic},
    status::{self, Outcome},
};

/// The condition type that says whether Kafka holds a resource's ACLs.
pub const ACCESS_GRANTED: &str = "AccessGranted";

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

/// Where a resource's access stands, as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Kafka holds every ACL the resource declares (or it declares none).
    Granted,
    /// The identity controller has not yet handled this generation.
    Pending,
    /// Converging failed.
    Failed(Failure),
}

impl Access {
    /// The state for a resource now at `generation` that `declares_any` principal. An entry
    /// for an older generation is pending, also when the new one declares nothing but the old
    /// one did: Ready must wait until the removed producers' ACLs are revoked.
    pub fn state(entry: Option<&Access>, generation: Option<i64>, declares_any: bool) -> State {
        match entry {
            Some(Access {
                failure: Some(failure),
                generation: seen,
                ..
            }) if *seen == generation => State::Failed(failure.clone()),
            Some(Access {
                generation: seen, ..
            }) if *seen == generation => State::Granted,
            // Nothing to grant or revoke: not waiting on the identity controller.
            _ if !declares_any && entry.is_none_or(|e| e.declared.principals.is_empty()) => {
                State::Granted
            }
            _ => State::Pending,
        }
    }
}

impl State {
    /// The `AccessGranted` condition, keeping the transition time from `previous`.
    pub fn condition(
        &self,
        previous: &[Condition],
        generation: Option<i64>,
        now: &str,
    ) -> Condition {
        let (status, reason, message) = match self {
            State::Granted => (
                ConditionStatus::True,
                "Granted",
                "Kafka holds the ACLs in status.access".to_owned(),
            ),
            State::Pending => (
                ConditionStatus::Unknown,
                "Pending",
                "waiting for the identity controller to grant this generation".to_owned(),
            ),
            State::Failed(f) => (ConditionStatus::False, f.reason.as_str(), f.message.clone()),
        };
        status::condition(
            ACCESS_GRANTED,
            status,
            reason,
            &message,
            generation,
            previous,
            now,
        )
    }

    /// `outcome` (what the resource's own controller found) with access folded in: a resource
    /// is Ready only once its ACLs are in place; a problem of its own comes first.
    pub fn fold(&self, outcome: Outcome) -> Outcome {
        let Outcome::Ready { message } = outcome else {
            return outcome;
        };
        match self {
            State::Granted => Outcome::Ready { message },
            State::Pending => Outcome::Progressing {
                reason: "GrantingAccess".into(),
                message: format!("{message}; waiting for its ACLs"),
            },
            State::Failed(f) if f.transient => Outcome::Retrying {
                reason: f.reason.clone(),
                message: format!("ACLs not in place: {}", f.message),
            },
            State::Failed(f) => Outcome::Stalled {
                reason: f.reason.clone(),
                message: format!("ACLs not in place: {}", f.message),
            },
        }
    }
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
mod tests {
    use super::*;

    fn entry(generation: i64, principals: &[&str], failure: Option<Failure>) -> Access {
        Access {
            generation: Some(generation),
            declared: AccessStatus {
                principals: principals.iter().map(|p| (*p).to_owned()).collect(),
                acls: vec![],
            },
            failure,
        }
    }

    fn denied(transient: bool) -> Failure {
        Failure {
            reason: "KafkaNotAuthorized".into(),
            message: "ClusterAuthorizationFailed".into(),
            transient,
        }
    }

    #[test]
    fn a_stale_or_missing_entry_is_pending_unless_nothing_is_declared() {
        let e = entry(1, &["User:ns.app"], None);
        assert_eq!(Access::state(Some(&e), Some(1), true), State::Granted);
        assert_eq!(Access::state(Some(&e), Some(2), true), State::Pending);
        assert_eq!(Access::state(None, Some(2), true), State::Pending);
        assert_eq!(Access::state(None, Some(2), false), State::Granted);
        let failed = entry(2, &["User:ns.app"], Some(denied(false)));
        assert_eq!(
            Access::state(Some(&failed), Some(2), true),
            State::Failed(denied(false))
        );
        // A failure seen for an older generation says nothing about this one.
        assert_eq!(Access::state(Some(&failed), Some(3), true), State::Pending);
        // The last producer removed: pending until the identity controller has revoked it.
        assert_eq!(Access::state(Some(&e), Some(2), false), State::Pending);
        let revoked = entry(2, &[], None);
        assert_eq!(
            Access::state(Some(&revoked), Some(2), false),
            State::Granted
        );
        assert_eq!(
            Access::state(Some(&revoked), Some(3), false),
            State::Granted
        );
    }

    #[test]
    fn access_is_folded_into_ready_only() {
        let ready = Outcome::Ready {
            message: "ok".into(),
        };
        assert_eq!(State::Granted.fold(ready.clone()), ready);
        assert!(matches!(
            State::Pending.fold(ready.clone()),
            Outcome::Progressing { reason, .. } if reason == "GrantingAccess"
        ));
        assert!(matches!(
            State::Failed(denied(false)).fold(ready.clone()),
            Outcome::Stalled { reason, .. } if reason == "KafkaNotAuthorized"
        ));
        assert!(matches!(
            State::Failed(denied(true)).fold(ready),
            Outcome::Retrying { reason, .. } if reason == "KafkaNotAuthorized"
        ));
        // The topic's own problem is what its owner must fix first.
        let conflict = Outcome::Stalled {
            reason: "Conflict".into(),
            message: "older wins".into(),
        };
        assert_eq!(
            State::Failed(denied(false)).fold(conflict.clone()),
            conflict
        );
    }

    #[test]
    fn the_condition_carries_the_failure() {
        let c = State::Failed(denied(false)).condition(&[], Some(4), "t1");
        assert_eq!(c.type_, ACCESS_GRANTED);
        assert_eq!(c.status, ConditionStatus::False);
        assert_eq!(c.reason, "KafkaNotAuthorized");
        assert_eq!(c.observed_generation, Some(4));
        let again = State::Failed(denied(false)).condition(&[c], Some(4), "t2");
        assert_eq!(again.last_transition_time, "t1");
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
