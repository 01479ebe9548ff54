//! What the relay knows about each destination topic before it sends to it, so that a record
//! the broker would refuse is found before it shares a batch with others.
//!
//! Kafka accepts or rejects a record *batch* whole, and librdkafka reports the batch's error
//! on every record in it. Two things the topic's config says make a record refused: a record
//! without a key on a compacted topic (`cleanup.policy=compact`, `INVALID_RECORD`) and a
//! record (or batch) larger than `max.message.bytes` (`MSG_SIZE_TOO_LARGE`). [`TopicFacts`]
//! holds those two settings, read with DescribeConfigs; [`TopicFacts::refuse`] finds the rows
//! that can never be written, and [`TopicFacts::batch_limit`] says how many bytes of one topic
//! may be in flight at once so that no batch librdkafka builds exceeds the topic's limit.
//! When DescribeConfigs is refused (an identity without `DESCRIBE_CONFIGS`), the facts stay
//! unknown and the publisher finds a refused row by re-sending the batch's rows alone
//! (`publish.rs`), learning a safe batch limit as it goes ([`TopicFacts::learn`]).
//!
//! A topic that does not exist yet or may not be written yet (just created by the operator,
//! ACLs still propagating) is [`TopicCheck::Unavailable`]: its rows are held, never poison.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
    producer::{FutureProducer, Producer},
};

use super::failure::Reason;

/// How long what was learned about a topic that exists stays valid before it is looked up
/// again (a changed `max.message.bytes` is noticed within this).
pub const TOPIC_CHECK_TTL: Duration = Duration::from_secs(60);

/// How long one metadata or DescribeConfigs request may take before the batch goes ahead
/// without it.
pub const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Kafka's record batch header (`DefaultRecordBatch.RECORD_BATCH_OVERHEAD`, magic v2).
pub const BATCH_OVERHEAD: usize = 61;

/// The most a record's framing adds to its key, value and headers: the length, attributes,
/// timestamp and offset deltas (`DefaultRecord.MAX_RECORD_OVERHEAD`), plus a 5-byte varint
/// for each of key length, value length and header count.
const RECORD_OVERHEAD_MAX: usize = 21 + 3 * 5;

/// The least it adds: one byte for each of those seven varints and the attributes.
const RECORD_OVERHEAD_MIN: usize = 7;

/// Per header, the most (two 5-byte varints) and the least (two 1-byte varints) framing.
const HEADER_OVERHEAD: (usize, usize) = (2, 10);

/// How large a record is once framed, as bounds (varint widths are not worth computing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSize {
    /// The record alone in a batch is at least this large (batch header included).
    pub alone_min: usize,
    /// The record adds at most this much to a batch.
    pub in_batch_max: usize,
}

impl RecordSize {
    /// The size of a record with this key, value and headers.
    pub fn of(key: Option<&[u8]>, value: &[u8], headers: &[(String, Vec<u8>)]) -> Self {
        let data = key.map_or(0, <[u8]>::len)
            + value.len()
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let (header_min, header_max) = HEADER_OVERHEAD;
        Self {
            alone_min: BATCH_OVERHEAD + RECORD_OVERHEAD_MIN + data + header_min * headers.len(),
            in_batch_max: RECORD_OVERHEAD_MAX + data + header_max * headers.len(),
        }
    }
}

/// What the relay knows of one topic's config; `None` where it could not learn it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicFacts {
    /// `cleanup.policy` includes `compact`: a record without a key is refused.
    pub compacted: Option<bool>,
    /// `max.message.bytes`: the largest record batch the broker takes for the topic.
    pub max_message_bytes: Option<usize>,
    /// The largest record that went through alone after the topic refused a batch as too
    /// large while its `max.message.bytes` was unknown: a batch limit known to work.
    pub learned_limit: Option<usize>,
}

impl TopicFacts {
    /// Why a record can never be written to this topic, if the facts say so. `sizes_exact`
    /// is false when the producer compresses (the sizes here are uncompressed).
    pub fn refuse(&self, has_key: bool, size: RecordSize, sizes_exact: bool) -> Option<Reason> {
        if !has_key && self.compacted == Some(true) {
            return Some(Reason::Invalid(
                "the topic is compacted (cleanup.policy=compact) and the row's key is NULL".into(),
            ));
        }
        match self.max_message_bytes {
            Some(max) if sizes_exact && size.alone_min > max => Some(Reason::TooLarge(format!(
                "the record takes at least {} bytes, the topic's max.message.bytes is {max}",
                size.alone_min
            ))),
            _ => None,
        }
    }

    /// The most bytes of this topic's records that may be in flight at once, when the
    /// producer's own batches (`batch_size`, librdkafka's `batch.size`) could exceed what the
    /// topic takes; `None` when any batch fits.
    pub fn batch_limit(&self, batch_size: usize) -> Option<usize> {
        match self.max_message_bytes {
            Some(max) if max < batch_size + BATCH_OVERHEAD => Some(max),
            Some(_) => None,
            None => self.learned_limit,
        }
    }

    /// Whether a record of `size` may join `in_flight` bytes already sent to this topic
    /// without making a batch the topic refuses.
    pub fn fits(&self, batch_size: usize, in_flight: usize, size: RecordSize) -> bool {
        match self.batch_limit(batch_size) {
            Some(limit) => {
                in_flight == 0 || BATCH_OVERHEAD + in_flight + size.in_batch_max <= limit
            }
            None => true,
        }
    }

    /// A record that added `in_batch_max` bytes went through alone after the topic refused a
    /// batch as too large: batches that large are known to work.
    pub fn learn(&mut self, in_batch_max: usize) {
        let proven = BATCH_OVERHEAD + in_batch_max;
        self.learned_limit = Some(self.learned_limit.map_or(proven, |l| l.max(proven)));
    }
}

/// Whether the rows of a topic may be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicCheck {
    /// The topic exists (or could not be looked up: the delivery reports will tell).
    Ready,
    /// The topic does not exist or may not be written yet: hold its rows.
    Unavailable {
        /// `unknown_topic` or `denied`, the `reason` label of the waits counter.
        label: &'static str,
        /// What Kafka said.
        text: String,
    },
}

#[derive(Debug)]
struct Entry {
    checked_at: Instant,
    facts: TopicFacts,
}

/// The topics the relay has looked up, with what it learned of each.
pub struct Topics {
    admin: Option<AdminClient<DefaultClientContext>>,
    entries: HashMap<String, Entry>,
}

impl Topics {
    /// `admin` reads topic configs; without one (it could not be created) facts stay unknown.
    pub fn new(admin: Option<AdminClient<DefaultClientContext>>) -> Self {
        Self {
            admin,
            entries: HashMap::new(),
        }
    }

    /// Looks up the topics among `names` not checked within [`TOPIC_CHECK_TTL`]: whether
    /// they exist and may be described (metadata), and their config (DescribeConfigs).
    /// Returns the topics that are unavailable; every other topic is ready.
    pub async fn check<'a>(
        &mut self,
        producer: &FutureProducer,
        names: impl Iterator<Item = &'a str>,
    ) -> HashMap<String, TopicCheck> {
        let now = Instant::now();
        // Rows come in runs of one topic: look each run up once, not each row.
        let mut previous = None;
        let unchecked: HashSet<&str> = names
            .filter(|name| previous.replace(*name) != Some(*name))
            .filter(|name| {
                self.entries
                    .get(*name)
                    .is_none_or(|e| now.duration_since(e.checked_at) > TOPIC_CHECK_TTL)
            })
            .collect();
        let mut unavailable = HashMap::new();
        for name in unchecked {
            match lookup(producer, name).await {
                TopicCheck::Ready => {
                    let learned = self.entries.get(name).and_then(|e| e.facts.learned_limit);
                    let mut facts = self.describe(name).await;
                    facts.learned_limit = learned;
                    self.entries.insert(
                        name.to_owned(),
                        Entry {
                            checked_at: now,
                            facts,
                        },
                    );
                }
                check @ TopicCheck::Unavailable { .. } => {
                    self.entries.remove(name);
                    unavailable.insert(name.to_owned(), check);
                }
            }
        }
        unavailable
    }

    /// What is known of `topic` (nothing, if it was never looked up).
    pub fn facts(&self, topic: &str) -> TopicFacts {
        self.entries
            .get(topic)
            .map(|e| e.facts.clone())
            .unwrap_or_default()
    }

    /// Records a batch limit learned by re-sending (see [`TopicFacts::learn`]).
    pub fn learn(&mut self, topic: &str, in_batch_max: usize) {
        if let Some(entry) = self.entries.get_mut(topic) {
            entry.facts.learn(in_batch_max);
        }
    }

    /// The topic's `cleanup.policy` and `max.message.bytes`, or nothing where DescribeConfigs
    /// was refused or failed (the relay then finds refused rows by re-sending them alone).
    async fn describe(&self, topic: &str) -> TopicFacts {
        let Some(admin) = &self.admin else {
            return TopicFacts::default();
        };
        let options = AdminOptions::new().request_timeout(Some(TOPIC_CHECK_TIMEOUT));
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await;
        let resource = match described.as_deref() {
            Ok([Ok(resource), ..]) => resource,
            Ok([Err(code), ..]) => {
                tracing::debug!(%topic, error = %code, "cannot describe the topic's config; relying on re-sending refused batches");
                return TopicFacts::default();
            }
            Ok([]) => return TopicFacts::default(),
            Err(error) => {
                tracing::debug!(%topic, %error, "cannot describe the topic's config; relying on re-sending refused batches");
                return TopicFacts::default();
            }
        };
        let value = |name: &str| resource.get(name).and_then(|e| e.value.clone());
        TopicFacts {
            compacted: value("cleanup.policy").map(|p| p.split(',').any(|s| s.trim() == "compact")),
            max_message_bytes: value("max.message.bytes").and_then(|v| v.parse().ok()),
            learned_limit: None,
        }
    }
}

/// Whether `topic` exists and may be described, from the cluster's metadata. A failed lookup
/// (brokers away) lets the rows go ahead; their delivery reports then tell.
async fn lookup(producer: &FutureProducer, topic: &str) -> TopicCheck {
    let producer = producer.clone();
    let name = topic.to_owned();
    let looked_up = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&name), TOPIC_CHECK_TIMEOUT)
            .map(|m| m.topics().first().and_then(|t| t.error()))
    })
    .await;
    match looked_up {
        Ok(Ok(None)) => TopicCheck::Ready,
        Ok(Ok(Some(code))) => match RDKafkaErrorCode::from(code) {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                TopicCheck::Unavailable {
                    label: "unknown_topic",
                    text: format!("topic {topic} does not exist"),
                }
            }
            RDKafkaErrorCode::TopicAuthorizationFailed => TopicCheck::Unavailable {
                label: "denied",
                text: format!("not authorized to access topic {topic}"),
            },
            other => {
                tracing::debug!(%topic, error = %other, "topic lookup inconclusive");
                TopicCheck::Ready
            }
        },
        Ok(Err(error)) => {
            tracing::debug!(%topic, %error, "topic lookup failed");
            TopicCheck::Ready
        }
        Err(error) => {
            tracing::debug!(%topic, %error, "topic lookup task failed");
            TopicCheck::Ready
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(bytes: usize) -> RecordSize {
        RecordSize::of(Some(b"k"), &vec![b'x'; bytes], &[])
    }

    #[test]
    fn record_size_bounds_bracket_kafkas_framing() {
        // A 100-byte value with a 1-byte key and one 2+3-byte header: Kafka frames it as
        // 61 + 1 (length) + 1 + 1 + 1 + 1 + 1 + 1 + 100 + 1 + (1 + 2 + 1 + 3) = 177 bytes.
        let s = RecordSize::of(Some(b"k"), &[0; 100], &[("ab".into(), b"cde".to_vec())]);
        assert!(s.alone_min <= 177, "{s:?}");
        assert!(BATCH_OVERHEAD + s.in_batch_max >= 177, "{s:?}");
    }

    #[test]
    fn a_null_key_is_refused_only_by_a_compacted_topic() {
        let compacted = TopicFacts {
            compacted: Some(true),
            ..TopicFacts::default()
        };
        assert!(matches!(
            compacted.refuse(false, size(10), true),
            Some(Reason::Invalid(_))
        ));
        assert_eq!(compacted.refuse(true, size(10), true), None);
        assert_eq!(TopicFacts::default().refuse(false, size(10), true), None);
    }

    #[test]
    fn a_record_larger_than_the_topic_takes_is_refused_when_sizes_are_exact() {
        let small = TopicFacts {
            max_message_bytes: Some(1_000),
            ..TopicFacts::default()
        };
        assert!(matches!(
            small.refuse(true, size(2_000), true),
            Some(Reason::TooLarge(_))
        ));
        assert_eq!(small.refuse(true, size(500), true), None);
        assert_eq!(
            small.refuse(true, size(2_000), false),
            None,
            "compressed: only the broker can tell"
        );
    }

    #[test]
    fn batches_are_bounded_only_below_the_producers_batch_size() {
        let default = TopicFacts {
            max_message_bytes: Some(1_048_588),
            ..TopicFacts::default()
        };
        assert_eq!(default.batch_limit(1_000_000), None);
        assert!(default.fits(1_000_000, 999_000, size(10_000)));
        let small = TopicFacts {
            max_message_bytes: Some(10_000),
            ..TopicFacts::default()
        };
        assert_eq!(small.batch_limit(1_000_000), Some(10_000));
        assert!(small.fits(1_000_000, 0, size(20_000)), "alone always goes");
        assert!(small.fits(1_000_000, 5_000, size(1_000)));
        assert!(!small.fits(1_000_000, 9_000, size(1_000)));
    }

    #[test]
    fn a_limit_is_learned_from_records_that_went_through_alone() {
        let mut unknown = TopicFacts::default();
        assert_eq!(unknown.batch_limit(1_000_000), None);
        unknown.learn(3_000);
        unknown.learn(2_000);
        assert_eq!(unknown.batch_limit(1_000_000), Some(BATCH_OVERHEAD + 3_000));
        assert!(!unknown.fits(1_000_000, 2_000, size(2_000)));
        // A described limit wins over a learned one.
        unknown.max_message_bytes = Some(2_000_000);
        assert_eq!(unknown.batch_limit(1_000_000), None);
    }
}
