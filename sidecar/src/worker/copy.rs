//! Retry and dead-letter copies that Kafka can never accept (DESIGN §5 "Bounded retries").
//!
//! A copy is the record plus the `ferry-*` headers, so it can be larger than the record was: a
//! record that fits its own topic may not fit a tier or the dead-letter topic (their
//! `max.message.bytes`, or the copy producer's `message.max.bytes`). Such a copy is refused for
//! good; retrying it for ever would pin its partition's watermark and, once the in-flight
//! window filled, stop every partition. So a copy refused for a permanent reason gets a bounded
//! outcome instead: the record goes on to the dead-letter topic, and if the dead-letter copy is
//! refused too, a *reference* copy is written there — no payload and none of the record's own
//! headers, but where the record is (`ferry-original-topic/partition/offset`, which replay
//! tooling follows back to the record while its topic retains it), why it failed
//! (`ferry-error`) and why its copy was refused (`ferry-copy-refused`). Transient errors (a
//! broker away, a topic not yet created, an ACL not yet granted) are retried as before.
//!
//! The copy producer is sized to the copy topics: its `message.max.bytes` is the largest of
//! their `max.message.bytes` (so it refuses locally only what no copy topic takes), its
//! `batch.size` the smallest (so a batch never exceeds the limit of the topic it goes to, and a
//! size refusal always names the one record that is too large, never its batch-mates).

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    error::{KafkaError, KafkaResult},
    producer::FutureProducer,
    types::RDKafkaErrorCode,
};

use super::retry::Tiers;

/// How long librdkafka may try to deliver a retry/dead-letter copy before the worker sees an
/// error and tries again itself (librdkafka's default of 300 s would hide a missing topic).
pub const COPY_TIMEOUT_MS: &str = "10000";
/// The copy producer's queue bound in KiB: copies are written one per failing record and
/// awaited, so a few MiB is plenty (librdkafka's default is 1 GiB).
const COPY_QUEUE_KBYTES: &str = "4096";

/// Kafka's default `max.message.bytes` of a topic (the broker's `message.max.bytes`,
/// 1 MiB + 12 bytes of batch overhead): assumed for a copy topic whose config cannot be read.
pub const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
/// How long the worker waits at start for the copy topics' configs.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reference copy keeps the record's key up to this size (keys are ids; a key larger than
/// this may itself be why the copy was refused).
pub const REFERENCE_KEY_MAX: usize = 1024;

/// Whether Kafka refused a copy for a reason that retrying cannot change: the record is too
/// large for the topic or the producer, or the broker finds it invalid (e.g. no key for a
/// compacted topic, or a topic policy). Authorization and unknown-topic errors are not: an ACL
/// or a topic may appear any moment.
pub fn is_permanent(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::PolicyViolation
        )
    )
}

/// The copy producer's size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `message.max.bytes`: the largest copy topic limit.
    pub message_max_bytes: usize,
    /// `batch.size`: the smallest copy topic limit.
    pub batch_size: usize,
}

impl Limits {
    /// Limits from each copy topic's `max.message.bytes` (`None`: unknown, Kafka's default
    /// assumed).
    pub fn from_topics<'a>(limits: impl IntoIterator<Item = &'a Option<usize>>) -> Self {
        let known: Vec<usize> = limits
            .into_iter()
            .map(|l| l.unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES))
            .collect();
        Self {
            message_max_bytes: known
                .iter()
                .copied()
                .max()
                .unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
            batch_size: known
                .iter()
                .copied()
                .min()
                .unwrap_or(KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
        }
    }

    /// Sets them on the producer's configuration.
    pub fn apply(&self, config: &mut ClientConfig) {
        config
            .set("message.max.bytes", self.message_max_bytes.to_string())
            .set("batch.size", self.batch_size.to_string());
    }
}

/// The producer of retry and dead-letter copies, sized to the copy topics (the tiers of
/// `tiers` and `dead_letter_topic`) as the module doc says.
pub async fn producer(
    base: &ClientConfig,
    tiers: &Tiers,
    dead_letter_topic: &str,
    options: &[(String, String)],
) -> KafkaResult<FutureProducer> {
    let copy_topics: Vec<String> = tiers
        .tier_topics()
        .cloned()
        .chain(std::iter::once(dead_letter_topic.to_owned()))
        .collect();
    let limits = Limits::from_topics(topic_limits(base, &copy_topics).await.values());
    tracing::info!(
        message_max_bytes = limits.message_max_bytes,
        batch_size = limits.batch_size,
        "copy producer sized to the retry and dead-letter topics"
    );
    producer_settings(base, &limits, options).create()
}

/// The copy producer's settings: acks from every replica and idempotence (a copy counts only
/// once Kafka has it for sure), a bounded time and queue, `limits`; `--kafka-option`s
/// (`options`) still win, as everywhere.
pub fn producer_settings(
    base: &ClientConfig,
    limits: &Limits,
    options: &[(String, String)],
) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", COPY_TIMEOUT_MS)
        .set("queue.buffering.max.kbytes", COPY_QUEUE_KBYTES);
    limits.apply(&mut config);
    for (k, v) in options {
        config.set(k, v);
    }
    config
}

/// Each topic's `max.message.bytes`, where the worker may read it (DESCRIBE_CONFIGS on the
/// topic); `None` for a topic whose config could not be read (missing, not allowed, or no
/// answer in time), logged once.
pub async fn topic_limits(
    base: &ClientConfig,
    topics: &[String],
) -> HashMap<String, Option<usize>> {
    let mut out: HashMap<String, Option<usize>> =
        topics.iter().map(|t| (t.clone(), None)).collect();
    let admin: AdminClient<DefaultClientContext> = match base.create() {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(error = %e, "cannot read the copy topics' max.message.bytes; assuming Kafka's default");
            return out;
        }
    };
    let specifiers: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(t.as_str()))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let described = tokio::time::timeout(
        DESCRIBE_TIMEOUT + Duration::from_secs(1),
        admin.describe_configs(&specifiers, &options),
    )
    .await;
    let results = match described {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "cannot read the copy topics' max.message.bytes; assuming Kafka's default");
            return out;
        }
        Err(_) => {
            tracing::info!(
                "no answer about the copy topics' max.message.bytes; assuming Kafka's default"
            );
            return out;
        }
    };
    for (topic, result) in topics.iter().zip(results) {
        let limit = result.ok().and_then(|r| {
            r.get("max.message.bytes")
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<usize>().ok())
        });
        match limit {
            Some(l) => tracing::debug!(topic, max_message_bytes = l, "copy topic limit"),
            None => tracing::info!(
                topic,
                "cannot read max.message.bytes (topic missing, or DESCRIBE_CONFIGS not granted); assuming Kafka's default"
            ),
        }
        out.insert(topic.clone(), limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_validity_refusals_are_permanent_access_and_absence_are_not() {
        let produce = KafkaError::MessageProduction;
        assert!(is_permanent(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(is_permanent(&produce(RDKafkaErrorCode::InvalidRecord)));
        assert!(!is_permanent(&produce(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
        assert!(!is_permanent(&produce(
            RDKafkaErrorCode::UnknownTopicOrPartition
        )));
        assert!(!is_permanent(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_permanent(&produce(RDKafkaErrorCode::NotEnoughReplicas)));
    }

    #[test]
    fn the_producer_is_safe_and_sized_and_kafka_options_win() {
        let limits = Limits {
            message_max_bytes: 2_000_000,
            batch_size: 100_000,
        };
        let options = [("message.timeout.ms".to_owned(), "5000".to_owned())];
        let config = producer_settings(&ClientConfig::new(), &limits, &options);
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.max.bytes"), Some("2000000"));
        assert_eq!(config.get("batch.size"), Some("100000"));
        assert_eq!(
            config.get("queue.buffering.max.kbytes"),
            Some(COPY_QUEUE_KBYTES)
        );
        assert_eq!(
            config.get("message.timeout.ms"),
            Some("5000"),
            "--kafka-option wins"
        );
    }

    #[test]
    fn the_producer_takes_the_largest_copy_and_batches_for_the_smallest_topic() {
        assert_eq!(
            Limits::from_topics(&[Some(100_000), None, Some(5_000_000)]),
            Limits {
                message_max_bytes: 5_000_000,
                batch_size: 100_000
            }
        );
        assert_eq!(
            Limits::from_topics(&[None]),
            Limits {
                message_max_bytes: KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
                batch_size: KAFKA_DEFAULT_MAX_MESSAGE_BYTES
            }
        );
    }
}
