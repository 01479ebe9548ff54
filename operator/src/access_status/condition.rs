//! Where a resource's access stands, as its status shows it: the `AccessGranted` condition,
//! and access folded into `Ready` (a resource is Ready only once Kafka holds its ACLs). Pure;
//! the one rule both kinds' status follows.

use super::book::Access;
use crate::{
    api::{Condition, ConditionStatus},
    status::{self, Outcome},
};

/// The condition type that says whether Kafka holds a resource's ACLs.
pub const ACCESS_GRANTED: &str = "AccessGranted";

/// Where a resource's access stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Kafka holds every ACL the resource declares (or it declares none).
    Granted,
    /// The identity controller has not yet handled this generation.
    Pending,
    /// Converging failed.
    Failed(super::Failure),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_status::book::tests::{denied, entry};

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
}
