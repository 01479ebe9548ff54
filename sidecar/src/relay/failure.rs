//! What can go wrong with a row, the pure part: why a row can never be published
//! ([`Reason`], the text of `ferry-error` and `publish_error`), and how a Kafka error is
//! handled ([`classify`]): poison, a refused batch to re-send alone, a topic not writable
//! yet, or a failure that may pass.
//!
//! Kafka refuses a record batch whole and librdkafka reports the refusal on every record of
//! the batch, so an error that may be the batch's ([`Failure::Suspect`]) never makes a row
//! poison by itself: the publisher and the dead-letter writer re-send such rows alone first.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Why a row can never be published; the text goes into `ferry-error` or `publish_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The payload is not a Ferry envelope.
    NotEnvelope(String),
    /// The `topic` column is empty.
    MissingTopic,
    /// The record is larger than Kafka accepts (the topic's `max.message.bytes` or the
    /// producer's `message.max.bytes`).
    TooLarge(String),
    /// The topic refuses the record itself (a NULL key on a compacted topic).
    Invalid(String),
    /// The `key` or `headers` column is not usable.
    BadColumn(String),
    /// The envelope's `data` breaks its topic's contract (`--contracts-dir`): every
    /// violation with its path.
    SchemaViolation(String),
}

impl Reason {
    /// Every [`Reason::label`], so the counters can start at 0 for each.
    pub const LABELS: [&'static str; 6] = [
        "not_envelope",
        "missing_topic",
        "too_large",
        "invalid_record",
        "bad_column",
        "schema_violation",
    ];

    /// A bounded label for the `failed` counter.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NotEnvelope(_) => "not_envelope",
            Reason::MissingTopic => "missing_topic",
            Reason::TooLarge(_) => "too_large",
            Reason::Invalid(_) => "invalid_record",
            Reason::BadColumn(_) => "bad_column",
            Reason::SchemaViolation(_) => "schema_violation",
        }
    }

    /// Whether the row is the only copy of its payload after it is set aside: a record too
    /// large for Kafka cannot be copied to the dead-letter topic either, so the row is kept
    /// (marked with `publish_error`), never marked published or deleted.
    pub fn keeps_row(&self) -> bool {
        matches!(self, Reason::TooLarge(_))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotEnvelope(e) => write!(f, "not an envelope: {e}"),
            Reason::MissingTopic => f.write_str("missing topic: the row's topic is empty"),
            Reason::TooLarge(e) => write!(f, "message too large: {e}"),
            Reason::Invalid(e) => write!(f, "invalid record: {e}"),
            Reason::BadColumn(e) => write!(f, "bad column: {e}"),
            Reason::SchemaViolation(e) => write!(f, "schema violation: {e}"),
        }
    }
}

/// How a failed send or delivery is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It will never work: dead-letter the row.
    Poison(Reason),
    /// Kafka refused the record's *batch* (too large, or another record in it invalid) and
    /// reported it on every record: re-send the row alone before calling it poison.
    Suspect(Reason),
    /// The topic does not exist or may not be written yet (just created, ACLs propagating):
    /// hold the key with backoff, like any transient failure, and count it.
    Unavailable {
        /// `unknown_topic` or `denied`.
        label: &'static str,
        /// What Kafka said.
        text: String,
    },
    /// It may work later: hold the key and retry.
    Transient(String),
}

/// Sorts a Kafka error into poison, suspect, unavailable or transient.
pub fn classify(error: &KafkaError, topic: &str) -> Failure {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => {
            Failure::Suspect(Reason::TooLarge(error.to_string()))
        }
        Some(C::InvalidRecord | C::InvalidDifferentRecord) => {
            Failure::Suspect(Reason::Invalid(error.to_string()))
        }
        // Local: librdkafka learned from the cluster that the topic does not exist.
        Some(C::UnknownTopic | C::UnknownTopicOrPartition) => Failure::Unavailable {
            label: "unknown_topic",
            text: format!("topic {topic} does not exist: {error}"),
        },
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => Failure::Unavailable {
            label: "denied",
            text: error.to_string(),
        },
        _ => Failure::Transient(error.to_string()),
    }
}

/// [`classify`] for an error `send()` returned at once: librdkafka checks the record alone
/// there (its size against `message.max.bytes`), so a suspect is poison.
pub fn classify_send(error: &KafkaError, topic: &str) -> Failure {
    match classify(error, topic) {
        Failure::Suspect(reason) => Failure::Poison(reason),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reasons_label_is_listed() {
        let reasons = [
            Reason::NotEnvelope(String::new()),
            Reason::MissingTopic,
            Reason::TooLarge(String::new()),
            Reason::Invalid(String::new()),
            Reason::BadColumn(String::new()),
            Reason::SchemaViolation(String::new()),
        ];
        let labels: Vec<&str> = reasons.iter().map(Reason::label).collect();
        assert_eq!(labels, Reason::LABELS);
    }

    #[test]
    fn kafka_errors_are_sorted_into_suspect_unavailable_and_transient() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge), "t"),
            Failure::Suspect(Reason::TooLarge(
                e(RDKafkaErrorCode::MessageSizeTooLarge).to_string()
            ))
        );
        assert!(matches!(
            classify_send(&e(RDKafkaErrorCode::MessageSizeTooLarge), "t"),
            Failure::Poison(Reason::TooLarge(_))
        ));
        for code in [
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::InvalidDifferentRecord,
        ] {
            assert!(matches!(
                classify(&e(code), "t"),
                Failure::Suspect(Reason::Invalid(_))
            ));
        }
        for (code, label) in [
            (RDKafkaErrorCode::UnknownTopic, "unknown_topic"),
            (RDKafkaErrorCode::UnknownTopicOrPartition, "unknown_topic"),
            (RDKafkaErrorCode::TopicAuthorizationFailed, "denied"),
            (RDKafkaErrorCode::ClusterAuthorizationFailed, "denied"),
        ] {
            assert!(
                matches!(classify(&e(code), "t"), Failure::Unavailable { label: l, .. } if l == label),
                "{code:?}"
            );
        }
        assert!(matches!(
            classify(&e(RDKafkaErrorCode::MessageTimedOut), "t"),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&e(RDKafkaErrorCode::QueueFull), "t"),
            Failure::Transient(_)
        ));
        assert!(matches!(
            classify(&e(RDKafkaErrorCode::NotLeaderForPartition), "t"),
            Failure::Transient(_)
        ));
    }

    #[test]
    fn only_rows_too_large_for_kafka_keep_their_row() {
        assert!(Reason::TooLarge("x".into()).keeps_row());
        assert!(!Reason::Invalid("x".into()).keeps_row());
        assert!(!Reason::MissingTopic.keeps_row());
    }
}
