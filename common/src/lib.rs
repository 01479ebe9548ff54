//! What both Ferry binaries share, so it is written once: the Kafka client settings every
//! binary takes from flags or `FERRY_KAFKA_*` variables, how they log, serve their telemetry
//! and export their traces, how they stop, how a duration is written, every backoff schedule,
//! the `ferry-*` record header names, event contracts (JSON Schema), and how they keep secrets
//! out of `Debug` output.

pub mod backoff;
pub mod contract;
pub mod duration;
pub mod errors;
pub mod headers;
pub mod kafka;
pub mod naming;
pub mod otel;
pub mod redact;
pub mod shutdown;
pub mod telemetry;
