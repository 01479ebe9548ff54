//! The replay controller's errors.

/// What stops one EventReplay reconcile (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A Kafka admin call (credential, ACLs) failed.
    #[error("Kafka admin: {0}")]
    Kafka(#[from] crate::kafka::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object has no namespace (EventReplay is namespaced; a cache glitch).
    #[error("EventReplay without a namespace")]
    MissingNamespace,
}

/// Results of this controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bounded label for the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Kafka(e) => e.metric_label(),
            Self::Finalizer(_) => "finalizer",
            Self::MissingNamespace => "missing_namespace",
        }
    }
}
