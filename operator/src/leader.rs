//! Leader election: the Lease only one replica holds while it runs the controllers, its
//! duration flag, and an error that tells a newcomer what to do when the Lease's namespace is
//! missing (the usual first stumble outside a cluster).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};

use crate::field_manager;

/// The shortest Lease that can be renewed in time: it is renewed a third of its duration
/// before it ends, in whole seconds.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(2);

/// Why the Lease could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the leader-election Lease's namespace {namespace:?} does not exist: create it (`kubectl create namespace {namespace}`) or pass --lease-namespace (FERRY_LEASE_NAMESPACE) naming an existing namespace, such as the operator's own"
    )]
    NamespaceMissing {
        namespace: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("setting up the leader Lease {namespace}/{name}")]
    Setup {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
}

/// Parses `--lease-duration`: a duration as every duration flag takes it (`15s`, `1m`), or a
/// bare number of seconds (`15`), the form the flag took before it was a duration.
pub fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let duration = match s.trim().parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => ferry_common::duration::parse(s).map_err(|e| e.to_string())?,
    };
    if duration < MIN_LEASE_DURATION {
        return Err(format!(
            "a Lease shorter than {} cannot be renewed in time",
            ferry_common::duration::format(MIN_LEASE_DURATION)
        ));
    }
    Ok(duration)
}

/// The Lease `namespace/name`, held as `identity` for `duration` (whole seconds) and renewed a
/// third of it before it ends.
pub async fn lease(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    duration: Duration,
) -> Result<LeaseManager, Error> {
    let seconds = duration.as_secs();
    LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .with_field_manager(field_manager::OPERATOR)
        .build()
        .await
        .map_err(|source| match &source {
            LeaseManagerError::KubeError(kube::Error::Api(e)) if e.code == 404 => {
                Error::NamespaceMissing {
                    namespace: namespace.to_owned(),
                    source,
                }
            }
            _ => Error::Setup {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_durations_are_durations_or_bare_seconds() {
        assert_eq!(parse_lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_lease_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_lease_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_lease_duration("1").is_err(), "too short to renew");
        assert!(parse_lease_duration("500ms").is_err(), "too short to renew");
        assert!(parse_lease_duration("soon").is_err());
    }
}
