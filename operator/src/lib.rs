//! Ferry's operator: reconciles `EventTopic` and `EventConsumer` resources into Kafka topics,
//! Kafka identities and ACLs, and consumer-worker Deployments, and serves the webhook that
//! injects the outbox relay.

pub mod acl;
pub mod cli;
pub mod kafka;
