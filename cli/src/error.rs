//! The plugin's errors: each variant is a sentence a person at a terminal can act on (what was
//! refused, by whom, and what to ask for), because the plugin's users meet them directly.

use std::fmt;

/// What went wrong, for the person who typed the command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or names no usable context.
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),

    /// The API server refused the user (RBAC): the plugin never works around it.
    #[error(
        "access denied: {message}\nkubectl ferry acts with your own Kubernetes permissions; ask your cluster admin for {needed}"
    )]
    Forbidden {
        /// The API server's own sentence (it names the user, verb and resource).
        message: String,
        /// What the user needs, in RBAC words.
        needed: String,
    },

    /// An object the command names does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// In which namespace.
        namespace: String,
        /// Its name.
        name: String,
    },

    /// Any other answer of the API server.
    #[error("Kubernetes API ({doing}): {source}")]
    Api {
        /// What the plugin was doing.
        doing: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },

    /// The consumer's credential Secret lacks what a Kafka client needs.
    #[error("the credential Secret {namespace}/{name} is incomplete: {what}")]
    Credential {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What is missing or wrong.
        what: String,
    },

    /// What the dead-letter code (shared with the replay Job) refused: Kafka's errors, a
    /// consumer that cannot be served as asked, a filter or flag value that means nothing.
    #[error(transparent)]
    Dlq(#[from] ferry_sidecar::dlq::Error),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an API error: a 403 becomes [`Error::Forbidden`] naming what the user needs, a
    /// 404 of `kind`/`name` becomes [`Error::NotFound`].
    pub fn from_kube(
        source: kube::Error,
        doing: impl fmt::Display,
        needed: impl fmt::Display,
        not_found: Option<(&'static str, &str, &str)>,
    ) -> Self {
        if let kube::Error::Api(status) = &source {
            if status.code == 403 {
                return Self::Forbidden {
                    message: status.message.clone(),
                    needed: needed.to_string(),
                };
            }
            if status.code == 404
                && let Some((kind, namespace, name)) = not_found
            {
                return Self::NotFound {
                    kind,
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                };
            }
        }
        Self::Api {
            doing: doing.to_string(),
            source,
        }
    }

    /// Wraps a Kafka error with what was being done.
    pub fn kafka(doing: impl fmt::Display, source: rdkafka::error::KafkaError) -> Self {
        ferry_sidecar::dlq::Error::kafka(doing, source).into()
    }

    /// The consumer cannot be served as asked.
    pub fn unusable(message: impl Into<String>) -> Self {
        ferry_sidecar::dlq::Error::Unusable(message.into()).into()
    }

    /// A filter or flag value that means nothing.
    pub fn usage(message: impl Into<String>) -> Self {
        ferry_sidecar::dlq::Error::Usage(message.into()).into()
    }

    /// The process exit code: 1 for refusals and failures, 2 for usage errors (as clap).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Dlq(ferry_sidecar::dlq::Error::Usage(_)) => 2,
            _ => 1,
        }
    }
}
