//! Ferry's data plane: the outbox relay (PostgreSQL outbox -> Kafka) and the consumer worker
//! (Kafka -> the service over HTTP).

pub mod cli;
pub mod envelope;
pub mod relay;
pub mod telemetry;
pub mod worker;
