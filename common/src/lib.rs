//! What both Ferry binaries share, so it is written once: the Kafka client settings every
//! binary takes from flags or `FERRY_KAFKA_*` variables, and how they log.

pub mod errors;
pub mod kafka;
pub mod naming;
pub mod telemetry;
