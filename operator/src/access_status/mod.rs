//! The status view of Kafka access: what the identity controller found for each resource, as
//! `status.access` (the type: [`crate::api::AccessStatus`]) and the `AccessGranted` condition.
//!
//! Access is spread over one idea per file; which is which:
//!
//! ```text
//!  identity/grants.rs, identity/consumer_grants.rs  who may do what: resources → grants,
//!                                                   following topic ownership (pure)
//!  identity/desired_acls.rs                         the desired ACL set per principal and its
//!                                                   diff to what Kafka holds (pure)
//!  kafka/acls.rs                                    the Kafka wire layer (Create/Describe/
//!                                                   DeleteAcls through librdkafka)
//!  access_status/ (here), api/access_status.rs      the status view
//! ```
//!
//! ACLs are converged for the whole scope at once, but a resource's status is written by the
//! controller of its kind. So the identity controller records what each resource was granted,
//! or why granting failed, in the [`AccessBook`] and wakes the EventTopics concerned; the
//! EventTopic controller folds the entry into the status it writes ([`State::fold`],
//! [`State::condition`]), and `Ready` means "the topic is as declared and its producers may
//! write to it". For EventConsumers, whose status the consumer controller writes, the identity
//! controller writes the access part itself, and only that part ([`write_consumer_access`]).

pub mod book;
pub mod condition;
mod consumer;

pub use book::{Access, AccessBook, Failure, Kind, ResourceKey};
pub use condition::{ACCESS_GRANTED, State};
pub use consumer::{consumer_patch, write_consumer_access};
