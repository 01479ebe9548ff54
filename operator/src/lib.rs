//! Ferry's operator: reconciles `EventTopic` and `EventConsumer` resources into Kafka topics,
//! Kafka identities and ACLs, and consumer-worker Deployments, and serves the webhook that
//! injects the outbox relay.
//!
//! ```text
//!  kube-apiserver ──watch EventTopic──▶ topic (Controller) ──admin calls──▶ kafka ──▶ broker
//!        ▲                                   │
//!        ├──── status (server-side apply) ◀──┘        leader (Lease): only one replica acts
//!        │                                   ▲ access_status (AccessBook)
//!        └─watch all──▶ identity ────────────┴──── credentials, ACLs ──▶ kafka ──▶ broker
//!  EventConsumer ─watch─▶ consumer (Controller) ──▶ worker Deployment, retry/DLQ topics, lag
//!  EventReplay ─watch─▶ replay (Controller) ──▶ principal + ACLs, Job (dlq-replay) ──▶ status
//! ```
//!
//! Every controller has one shape (`reconcile` → `finalizer` → apply/cleanup, an `error_policy`
//! counted by `metric_label`): [`topic`] is the one to copy; [`identity`] reconciles the whole
//! scope as one object in the same shape. [`events`] and [`field_manager`] are what every
//! controller writes with.

pub mod access_status;
pub mod admission;
pub mod api;
pub mod apidoc;
pub mod cache;
pub mod cli;
pub mod consumer;
pub mod container;
pub mod contract_delivery;
pub mod crdgen;
pub mod events;
pub mod field_manager;
pub mod identity;
pub mod kafka;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod recent;
pub mod reconcile;
pub mod replay;
pub mod run;
pub mod status;
pub mod topic;
pub mod webhook;
pub mod written_status;
