//! The telemetry server every sidecar mode runs beside its work lives in
//! [`ferry_common::telemetry::server`], shared with the operator; this module only keeps the
//! old path (`crate::telemetry::{Health, TelemetryServer}`) working until the relay and the
//! worker import it from there, and then goes.

pub use ferry_common::telemetry::server::{Error, Health, TelemetryServer};
