//! Test support for tests that talk to the real environment `make env-up` starts.
//!
//! [`TestEnv::get`] reads `.ferry/env` once. Every test then takes resources of its own with
//! random names — a [`TempNamespace`], [`TempTopic`] or [`TempSchema`] — so tests run in
//! parallel and re-runs never collide; each one removes itself when dropped.
//!
//! With `CI=true`, a missing or unreachable environment fails the test loudly; elsewhere
//! [`require_env!`] prints why and skips, so `cargo test` works on a laptop without the services.
//!
//! One home for what the test trees (operator, sidecar, testkit's own, bench) share: waiting
//! for a condition ([`wait_for`], [`eventually`]), a [`free_port`] for a child's server, one
//! plain [`http_get`], test topics ([`TempTopic`], named or not) and, with the `acls` feature,
//! ACLs a test grants ([`Grant`]). Names follow one style: `Temp*` for what a test owns and
//! the drop removes, verbs for helpers.

mod chart_metrics;
mod cleanup;
mod env;
#[cfg(feature = "acls")]
mod grant;
mod http;
mod kafka;
mod kafka_cluster;
mod kube;
pub mod log_audit;
mod net;
mod node;
pub mod pod_env;
mod poll;
mod postgres;
mod process;
mod services;
mod temp_path;
mod tools;

pub use chart_metrics::{assert_chart_metrics_exposed, chart_metrics, exposed_metrics};
pub use cleanup::run_to_completion;
pub use env::{TestEnv, in_ci, unique_name};
#[cfg(feature = "acls")]
pub use grant::Grant;
pub use http::http_get;
pub use kafka::TempTopic;
pub use kafka_cluster::{
    BrokerOutage, ClusterTopic, KafkaCluster, MIN_INSYNC_REPLICAS, PartitionState,
    REPLICATION_FACTOR,
};
pub use kube::TempNamespace;
pub use net::free_port;
pub use node::{RealNode, container_log, ferry_image, pod_ready, wait_for_pod};
pub use poll::{Check, POLL_EVERY, eventually, wait_for};
pub use postgres::{OUTBOX_SQL, TempSchema};
pub use process::{ChildProcess, peak_rss_kib};
pub use services::{Service, disruption_lock};
pub use temp_path::TempPath;
pub use tools::{repo_root, run, succeed, succeed_with_input};

/// The three-broker Kafka cluster, or return from the calling test after printing why it was
/// skipped (a panic under `CI=true`, as with [`require_env!`]).
#[macro_export]
macro_rules! require_kafka_cluster {
    () => {
        match $crate::KafkaCluster::get() {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

/// The environment, or return from the calling test after printing why it was skipped.
/// Under `CI=true` a missing environment panics instead: CI never skips silently.
#[macro_export]
macro_rules! require_env {
    () => {
        match $crate::TestEnv::get() {
            Some(env) => env,
            None => return,
        }
    };
}

/// The real node of the environment, or return from the calling test after printing why it
/// was skipped. Under `CI=true` a missing node panics instead.
#[macro_export]
macro_rules! require_node {
    ($env:expr) => {
        match $env.real_node() {
            Some(node) => node,
            None => return,
        }
    };
}
