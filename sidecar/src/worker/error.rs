//! Why the worker stops: the one error type of `ferry-sidecar worker`, which every submodule's
//! own error converts into (each submodule imports it from here, never from the module root).

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka settings")]
    Settings(#[from] ferry_common::kafka::Error),
    #[error("Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A retry-tier layout that cannot keep ordering through the tiers (see
    /// [`super::layout`]).
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Delivery(#[from] super::delivery::Error),
    #[error(transparent)]
    Dedup(#[from] super::dedup::Error),
    #[error(transparent)]
    Telemetry(#[from] ferry_common::telemetry::server::Error),
    #[error("--target-url {0}")]
    TargetUrl(String),
    #[error("--max-in-flight must be at least 1")]
    MaxInFlight,
    #[error("the run loop stopped unexpectedly")]
    RunLoop(#[from] tokio::task::JoinError),
}

/// `Result` of the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;
