//! Why an EventConsumer reconcile failed, as a bounded metric label.

use kube::runtime::finalizer;

use crate::{kafka, reconcile};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka admin request failed")]
    Kafka(#[source] kafka::Error),
    #[error("Kafka refused to delete topic {topic}: {refusal}")]
    DeleteRefused {
        topic: String,
        refusal: kafka::Refusal,
    },
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    #[error("finalizer failed")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("EventConsumer has no namespace")]
    MissingNamespace,
    #[error("the reconcile did not finish within {0:?}; abandoned and retried")]
    Timeout(std::time::Duration),
}

impl Error {
    /// A bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kafka(e) => e.metric_label(),
            Error::DeleteRefused { .. } => "delete_refused",
            Error::Kube(_) => "kube",
            Error::Finalizer(e) => reconcile::finalizer_label(e, Error::metric_label),
            Error::MissingNamespace => "missing_namespace",
            Error::Timeout(_) => "timeout",
        }
    }
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
