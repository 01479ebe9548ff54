//! Ferry's operator: reconciles `EventTopic` and `EventConsumer` resources into Kafka topics,
//! Kafka identities and ACLs, and consumer-worker Deployments, and serves the webhook that
//! injects the outbox relay.
//!
//! ```text
//!  kube-apiserver ──watch EventTopic──▶ topic (Controller) ──admin calls──▶ kafka ──▶ broker
//!        ▲                                   │
//!        ├──── status (server-side apply) ◀──┘        leader (Lease): only one replica acts
//!        │                                   ▲ access (AccessBook)
//!        └─watch all──▶ identity ────────────┴──── credentials, ACLs ──▶ kafka ──▶ broker
//!  EventConsumer ─watch─▶ consumer (Controller) ──▶ worker Deployment, retry/DLQ topics, lag
//! ```

pub mod access;
pub mod acl;
pub mod admission;
pub mod api;
pub mod cli;
pub mod consumer;
pub mod crdgen;
pub mod identity;
pub mod kafka;
pub mod metrics;
pub mod ownership;
pub mod run;
pub mod status;
pub mod topic;
