//! The dead-letter library's errors: sentences a person can act on, since both the plugin's
//! user and the reader of an EventReplay's status meet them directly.

use std::fmt;

/// What went wrong reading or replaying dead letters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Kafka refused or failed an operation.
    #[error("Kafka ({doing}): {source}")]
    Kafka {
        /// What was being done.
        doing: String,
        /// Kafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The consumer cannot be served as asked (no such topic, no way back).
    #[error("{0}")]
    Unusable(String),

    /// A filter or flag value that means nothing.
    #[error("{0}")]
    Usage(String),
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a Kafka error with what was being done.
    pub fn kafka(doing: impl fmt::Display, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            doing: doing.to_string(),
            source,
        }
    }

    /// A bounded label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kafka { .. } => "kafka",
            Self::Unusable(_) => "unusable",
            Self::Usage(_) => "usage",
        }
    }
}
