//! What a pass could not do, kept apart by whom it concerns, so one team's problem (a Secret
//! its namespace refuses, an ACL Kafka refuses for its principal) neither stops the others'
//! access nor shows on their resources.

use std::collections::BTreeMap;

use tracing::warn;

use super::{Error, grants::Identity, principal};

/// The failures of one pass.
#[derive(Debug, Default)]
pub struct Failures {
    /// Failures of one identity: shown on the resources that declare it.
    pub by_identity: BTreeMap<Identity, Error>,
    /// Failures no declared resource is concerned with (removing an identity nobody declares).
    pub unattributed: Option<Error>,
}

impl Failures {
    /// Records a failure of `identity` (the first one stays).
    pub fn of_identity(&mut self, identity: Identity, error: Error) {
        warn!(error = %error, cause = ?error, principal = %principal::principal(&identity.0, &identity.1), "identity not converged");
        self.by_identity.entry(identity).or_insert(error);
    }

    /// Records a failure of a Ferry principal (`User:<ns>.<sa>`) on its identity.
    pub fn of_principal(&mut self, principal: &str, error: Error) {
        match principal::identity_of(principal) {
            Some(identity) => self.of_identity(identity, error),
            None => self.unattributed(error),
        }
    }

    /// Records a failure that concerns no declared resource.
    pub fn unattributed(&mut self, error: Error) {
        warn!(error = %error, cause = ?error, "identity clean-up failed");
        self.unattributed.get_or_insert(error);
    }

    /// One of the failures, to fail the pass with.
    pub fn into_first(self) -> Option<Error> {
        self.by_identity.into_values().next().or(self.unattributed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka;

    #[test]
    fn a_principal_failure_is_pinned_on_its_identity() {
        let mut failures = Failures::default();
        failures.of_principal("User:shop.app", Error::Kafka(kafka::Error::Timeout));
        failures.of_principal("User:admin", Error::Kafka(kafka::Error::BatcherGone));
        assert!(
            failures
                .by_identity
                .contains_key(&("shop".to_owned(), "app".to_owned()))
        );
        assert!(failures.unattributed.is_some());
        assert!(failures.into_first().is_some());
        assert!(Failures::default().into_first().is_none());
    }
}
