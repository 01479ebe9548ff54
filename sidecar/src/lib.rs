//! Ferry's data plane: the outbox relay (PostgreSQL outbox -> Kafka) and the consumer worker
//! (Kafka -> the service over HTTP), and the Job that replays a consumer's dead letters
//! (`dlq-replay`, for an EventReplay); `contract check` for a service's CI.

pub mod cli;
pub mod contract;
pub mod contracts;
pub mod dlq;
pub mod envelope;
pub mod relay;
pub mod worker;
