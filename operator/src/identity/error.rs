//! Why an identity pass failed, as a metric label and as the `AccessGranted` condition shows it.

use crate::{access_status::Failure, kafka};

/// Why a pass failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed")]
    Kube(#[from] kube::Error),
    #[error("Kafka admin request failed")]
    Kafka(#[from] kafka::Error),
    #[error("the EventTopic and EventConsumer caches do not hold their first list yet")]
    CacheNotFilled,
}

impl Error {
    /// A bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Kafka(_) => "kafka",
            Error::CacheNotFilled => "cache",
        }
    }

    /// How this failure shows in the `AccessGranted` condition of the resources it concerns.
    pub fn as_failure(&self) -> Failure {
        let (reason, transient) = match self {
            // The API server refused (a quota, a policy, a namespace being deleted): a person
            // acts.
            Error::Kube(kube::Error::Api(e)) if (400..500).contains(&e.code) && e.code != 429 => {
                ("KubernetesRefused", false)
            }
            Error::Kube(_) | Error::CacheNotFilled => ("KubernetesUnavailable", true),
            Error::Kafka(e) if e.is_unavailable() => ("KafkaUnavailable", true),
            Error::Kafka(e) if e.is_authorization() => ("KafkaNotAuthorized", false),
            Error::Kafka(_) => ("KafkaRefused", false),
        };
        Failure {
            reason: reason.to_owned(),
            message: ferry_common::errors::chain(self),
            transient,
        }
    }
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_down_is_transient_and_a_refusal_is_not() {
        let down = Error::Kafka(kafka::Error::Timeout).as_failure();
        assert_eq!(
            (down.reason.as_str(), down.transient),
            ("KafkaUnavailable", true)
        );
        let refused = Error::Kafka(kafka::Error::Request {
            code: rdkafka::types::RDKafkaErrorCode::ClusterAuthorizationFailed,
            message: "denied".into(),
        })
        .as_failure();
        assert_eq!(
            (refused.reason.as_str(), refused.transient),
            ("KafkaNotAuthorized", false)
        );
        assert_eq!(Error::Kafka(kafka::Error::Timeout).metric_label(), "kafka");
    }
}
