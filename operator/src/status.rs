//! kstatus conditions from what a reconcile found — pure, shared by every kind.
//!
//! A reconcile ends in one [`Outcome`]; [`conditions`] turns it into the `Ready`,
//! `Reconciling` and `Stalled` conditions kstatus (kubectl wait, Flux, Argo CD) reads, keeping
//! each condition's `lastTransitionTime` when its status did not change.

use crate::api::{Condition, ConditionStatus};

/// The `Ready` condition type.
pub const READY: &str = "Ready";
/// The `Reconciling` condition type (kstatus: work in progress).
pub const RECONCILING: &str = "Reconciling";
/// The `Stalled` condition type (kstatus: cannot progress without a change by a person).
pub const STALLED: &str = "Stalled";

/// How a reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The world matches the spec.
    Ready { message: String },
    /// Changes were made or are under way; the next reconcile checks them.
    Progressing { reason: String, message: String },
    /// A transient failure (e.g. Kafka unreachable); retried with backoff.
    Retrying { reason: String, message: String },
    /// The spec cannot be realised as it is (conflict, invalid config, unsupported change).
    Stalled { reason: String, message: String },
}

impl Outcome {
    /// The `Ready` condition's reason.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Ready { .. } => READY,
            Outcome::Progressing { reason, .. }
            | Outcome::Retrying { reason, .. }
            | Outcome::Stalled { reason, .. } => reason,
        }
    }

    fn message(&self) -> &str {
        match self {
            Outcome::Ready { message }
            | Outcome::Progressing { message, .. }
            | Outcome::Retrying { message, .. }
            | Outcome::Stalled { message, .. } => message,
        }
    }
}

/// One condition, keeping its `lastTransitionTime` from `previous` when `status` did not change.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: &[Condition],
    now: &str,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The three kstatus conditions for `outcome`, computed from `generation` at time `now`
/// (RFC 3339), keeping transition times from `previous`.
pub fn conditions(
    previous: &[Condition],
    outcome: &Outcome,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    use ConditionStatus::{False, True};
    let reason = outcome.reason();
    let message = outcome.message();
    let (ready, reconciling, stalled) = match outcome {
        Outcome::Ready { .. } => (True, False, False),
        Outcome::Progressing { .. } | Outcome::Retrying { .. } => (False, True, False),
        Outcome::Stalled { .. } => (False, False, True),
    };
    let side_reason = |status| if status == True { reason } else { READY };
    let side_message = |status| if status == True { message } else { "" };
    vec![
        condition(READY, ready, reason, message, generation, previous, now),
        condition(
            RECONCILING,
            reconciling,
            side_reason(reconciling),
            side_message(reconciling),
            generation,
            previous,
            now,
        ),
        condition(
            STALLED,
            stalled,
            side_reason(stalled),
            side_message(stalled),
            generation,
            previous,
            now,
        ),
    ]
}

/// Whether `conditions` say Ready=True for `generation`.
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions.iter().any(|c| {
        c.type_ == READY && c.status == ConditionStatus::True && c.observed_generation == generation
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn ready_means_not_reconciling_and_not_stalled() {
        let c = conditions(
            &[],
            &Outcome::Ready {
                message: "ok".into(),
            },
            Some(2),
            "t1",
        );
        assert_eq!(get(&c, READY).status, ConditionStatus::True);
        assert_eq!(get(&c, RECONCILING).status, ConditionStatus::False);
        assert_eq!(get(&c, STALLED).status, ConditionStatus::False);
        assert!(c.iter().all(|c| c.observed_generation == Some(2)));
        assert!(is_ready(&c, Some(2)));
        assert!(
            !is_ready(&c, Some(3)),
            "a newer generation is not ready yet"
        );
    }

    #[test]
    fn stalled_and_retrying_carry_the_reason() {
        let stalled = Outcome::Stalled {
            reason: "Conflict".into(),
            message: "older wins".into(),
        };
        let c = conditions(&[], &stalled, Some(1), "t1");
        assert_eq!(get(&c, READY).status, ConditionStatus::False);
        assert_eq!(get(&c, READY).reason, "Conflict");
        assert_eq!(get(&c, STALLED).status, ConditionStatus::True);
        assert_eq!(get(&c, STALLED).message, "older wins");
        assert_eq!(get(&c, RECONCILING).status, ConditionStatus::False);

        let retrying = Outcome::Retrying {
            reason: "KafkaUnavailable".into(),
            message: "down".into(),
        };
        let c = conditions(&c, &retrying, Some(1), "t2");
        assert_eq!(get(&c, READY).reason, "KafkaUnavailable");
        assert_eq!(get(&c, RECONCILING).status, ConditionStatus::True);
        assert_eq!(get(&c, STALLED).status, ConditionStatus::False);
        assert!(!is_ready(&c, Some(1)));
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let ready = Outcome::Ready {
            message: "ok".into(),
        };
        let first = conditions(&[], &ready, Some(1), "t1");
        let again = conditions(&first, &ready, Some(1), "t2");
        assert_eq!(get(&again, READY).last_transition_time, "t1");
        let broken = Outcome::Stalled {
            reason: "InvalidConfig".into(),
            message: "x".into(),
        };
        let later = conditions(&again, &broken, Some(2), "t3");
        assert_eq!(get(&later, READY).last_transition_time, "t3");
        // Reconciling stayed False throughout, so its time is the first one.
        assert_eq!(get(&later, RECONCILING).last_transition_time, "t1");
    }
}
