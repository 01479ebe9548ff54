//! What every binary shows of itself: log lines ([`log`]) and the small HTTP server a kubelet
//! probes and Prometheus scrapes ([`server`]: `/healthz`, `/readyz`, `/metrics`).

pub mod log;
pub mod server;

pub use log::{LogArgs, LogFormat};
pub use server::{Health, TelemetryServer};
