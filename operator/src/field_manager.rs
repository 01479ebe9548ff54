//! The server-side-apply field managers the operator writes under (DESIGN §7).
//!
//! A field manager owns the fields it applied; applying again without one of them removes it.
//! So each status part has exactly one manager, and two writers of one object never name the
//! same field:
//!
//! ```text
//!  OPERATOR: every Secret, Lease and status field a controller writes for its own kind
//!  ACCESS:   status.access and the AccessGranted condition of an EventConsumer, written by
//!            the identity controller beside the consumer controller's Ready, lag and replicas
//!            (conditions merge by `type`: the CRDs declare them a list-map)
//! ```

/// What the operator's controllers write: their kind's status, credential Secrets, the Lease.
pub const OPERATOR: &str = "ferry-operator";

/// What the identity controller writes into the status of a kind another controller owns.
pub const ACCESS: &str = "ferry-operator-access";
