//! What both Ferry binaries share, so it is written once: the Kafka client settings every
//! binary takes from flags or `FERRY_KAFKA_*` variables, how they log, and how they keep
//! secrets out of `Debug` output.

pub mod errors;
pub mod kafka;
pub mod naming;
pub mod redact;
pub mod telemetry;
