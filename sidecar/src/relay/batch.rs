//! One batch on its way through Kafka: which rows may still be sent ([`BatchGate`]), what is
//! in flight, and what became of each row ([`BatchOutcome`], which the caller marks and
//! counts).
//!
//! A row Kafka confirmed is published; a row whose *batch* Kafka refused is a suspect, re-sent
//! alone later with its key's later rows waiting behind it; a row that may pass later holds its
//! key; a row whose topic is not writable yet waits too and is counted per topic ([`TopicWait`]);
//! a poison row is set aside by `dead_letter.rs`. Only the awaiting of delivery reports touches
//! Kafka here.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use rdkafka::producer::{DeliveryFuture, future_producer::OwnedDeliveryResult};

use super::{
    failure::{Failure, Reason, classify},
    order::{BatchGate, Holds, KeyId},
    record::{Poisoned, Prepared},
};

/// A poison row that was set aside in this batch, as the log line and counter describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The row's id.
    pub id: i64,
    /// The envelope's `id`, if the payload was an envelope.
    pub event_id: Option<String>,
    /// The row's topic, if not empty.
    pub topic: Option<String>,
    /// Why it can never be published.
    pub reason: Reason,
}

impl From<&Poisoned> for SetAside {
    fn from(p: &Poisoned) -> Self {
        Self {
            id: p.id,
            event_id: p.event_id.clone(),
            topic: p.topic.clone(),
            reason: p.reason.clone(),
        }
    }
}

/// Rows of one topic held in a batch because the topic does not exist or may not be written
/// yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicWait {
    /// The topic.
    pub topic: String,
    /// `unknown_topic` or `denied`, the `reason` label of the waits counter.
    pub label: &'static str,
    /// What Kafka said.
    pub text: String,
    /// How many rows wait.
    pub rows: u64,
}

/// What became of a batch; the caller marks rows accordingly and counts them.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Rows Kafka confirmed on their topic: mark them published.
    pub published: Vec<i64>,
    /// Poison rows Kafka confirmed on the dead-letter topic: mark them published too.
    pub dead_lettered: Vec<SetAside>,
    /// Poison rows to mark failed, with the text for `publish_error`.
    pub failed: Vec<(SetAside, String)>,
    /// Rows left unpublished for a later batch (transient failure, or held key).
    pub held: usize,
    /// The keys of those rows: a chunk read past them must not send these keys.
    pub undelivered: HashSet<KeyId>,
    /// Topics whose rows wait because the topic does not exist or may not be written yet.
    pub unavailable: Vec<TopicWait>,
}

impl BatchOutcome {
    /// A row of `key` stays for a later batch.
    pub fn hold(&mut self, key: KeyId) {
        self.held += 1;
        self.undelivered.insert(key);
    }

    /// A poison row that cannot be set aside now: its key waits and it is tried again.
    pub fn hold_poison(&mut self, p: Poisoned, holds: &mut Holds, now: Instant) {
        holds.fail(&p.key_id, now);
        self.hold(p.key_id);
    }
}

/// The failure a delivery report carries, if any.
pub fn report_failure(
    report: std::result::Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
    topic: &str,
) -> Option<Failure> {
    match report {
        Ok(Ok(_)) => None,
        Ok(Err((e, _))) => Some(classify(&e, topic)),
        Err(_) => Some(Failure::Transient("producer dropped the delivery".into())),
    }
}

/// One batch on its way: which rows may still be sent, what is in flight, and what became
/// of each row so far.
pub struct Batch<'a> {
    /// Which rows may still be sent.
    pub gate: BatchGate<'a>,
    in_flight: Vec<(Prepared, DeliveryFuture)>,
    /// Bytes in flight per topic, kept only for topics whose batches are limited.
    bytes_in_flight: HashMap<String, usize>,
    /// What became of the rows so far.
    pub outcome: BatchOutcome,
    /// Poison rows, to be set aside once the batch is through.
    pub poisoned: Vec<Poisoned>,
    /// Rows whose batch Kafka refused, with the reason it gave, to re-send alone.
    pub suspects: Vec<(Prepared, Reason)>,
    /// Keys with a row Kafka confirmed in this batch, and the highest such row id.
    pub delivered_keys: HashMap<KeyId, i64>,
    /// Per unavailable topic: the reason label, what Kafka said, and how many rows wait.
    unavailable_topics: HashMap<String, (&'static str, String, u64)>,
}

impl<'a> Batch<'a> {
    /// A batch gated by `holds` and `behind` at `now`, starting with the rows already found
    /// to be poison.
    pub fn new(
        holds: &'a Holds,
        behind: &'a HashSet<KeyId>,
        now: Instant,
        poisoned: Vec<Poisoned>,
    ) -> Self {
        Self {
            gate: BatchGate::new(holds, behind, now),
            in_flight: Vec::new(),
            bytes_in_flight: HashMap::new(),
            outcome: BatchOutcome::default(),
            poisoned,
            suspects: Vec::new(),
            delivered_keys: HashMap::new(),
            unavailable_topics: HashMap::new(),
        }
    }

    /// Bytes of `topic`'s records in flight (for topics whose batches are limited).
    pub fn bytes_in_flight(&self, topic: &str) -> usize {
        self.bytes_in_flight.get(topic).copied().unwrap_or(0)
    }

    /// `p` was handed to the producer; `limited` says whether its topic's bytes are counted.
    pub fn sent(&mut self, p: Prepared, delivery: DeliveryFuture, limited: bool) {
        if limited {
            match self.bytes_in_flight.get_mut(&p.topic) {
                Some(bytes) => *bytes += p.size.in_batch_max,
                None => {
                    self.bytes_in_flight
                        .insert(p.topic.clone(), p.size.in_batch_max);
                }
            }
        }
        self.in_flight.push((p, delivery));
    }

    /// Awaits every report in flight and settles each row.
    pub async fn drain(&mut self) {
        self.bytes_in_flight.clear();
        let (rows, deliveries): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().unzip();
        let reports = futures::future::join_all(deliveries).await;
        for (p, report) in rows.into_iter().zip(reports) {
            match report_failure(report, &p.topic) {
                None => self.delivered(p),
                Some(Failure::Suspect(reason)) => {
                    // Its key's later rows wait until it is re-sent alone.
                    self.gate.defer(&p.key_id);
                    self.suspects.push((p, reason));
                }
                Some(failure) => self.failed(p, failure),
            }
        }
    }

    /// Kafka confirmed `p` on its topic.
    pub fn delivered(&mut self, p: Prepared) {
        tracing::trace!(outbox_id = p.id, event_id = p.event_id.as_deref().unwrap_or("tombstone"), topic = %p.topic, "published");
        let highest = self.delivered_keys.entry(p.key_id).or_insert(p.id);
        *highest = (*highest).max(p.id);
        self.outcome.published.push(p.id);
    }

    /// A row that was not admitted: it stays for a later batch.
    pub fn hold(&mut self, key: KeyId) {
        self.outcome.hold(key);
    }

    /// `p` failed: poison is set aside later, a topic not writable yet waits, anything else
    /// holds the key (WARN: the row is retried, nothing is lost).
    pub fn failed(&mut self, p: Prepared, failure: Failure) {
        match failure {
            Failure::Poison(reason) | Failure::Suspect(reason) => {
                self.poisoned.push(p.poison(reason))
            }
            Failure::Unavailable { label, text } => self.unavailable(p, label, text),
            Failure::Transient(error) => {
                tracing::warn!(outbox_id = p.id, event_id = p.event_id.as_deref().unwrap_or("tombstone"), topic = %p.topic, %error, "publish failed; holding the key");
                self.gate.fail(&p.key_id);
                self.hold(p.key_id);
            }
        }
    }

    /// A row whose topic does not exist or may not be written yet: its key is held with
    /// backoff; the topic is reported once per batch ([`TopicWait`]).
    pub fn unavailable(&mut self, p: Prepared, label: &'static str, text: String) {
        match self.unavailable_topics.get_mut(&p.topic) {
            Some(entry) => entry.2 += 1,
            None => {
                self.unavailable_topics
                    .insert(p.topic.clone(), (label, text, 1));
            }
        }
        self.gate.fail(&p.key_id);
        self.hold(p.key_id);
    }

    /// Ends the batch: what became of its rows so far, its poison rows in id order (to be set
    /// aside), and which keys got through or failed (to apply to the holds).
    pub fn finish(self) -> (BatchOutcome, Vec<Poisoned>, KeyChanges) {
        let Batch {
            gate,
            mut outcome,
            mut poisoned,
            delivered_keys,
            unavailable_topics,
            ..
        } = self;
        outcome.unavailable = unavailable_topics
            .into_iter()
            .map(|(topic, (label, text, rows))| TopicWait {
                topic,
                label,
                text,
                rows,
            })
            .collect();
        poisoned.sort_by_key(|p| p.id);
        let keys = KeyChanges {
            delivered: delivered_keys,
            failed: gate.into_failed(),
        };
        (outcome, poisoned, keys)
    }
}

/// Which keys got through and which failed in a batch.
#[derive(Debug)]
pub struct KeyChanges {
    delivered: HashMap<KeyId, i64>,
    failed: HashSet<KeyId>,
}

impl KeyChanges {
    /// Keys that got through (and did not also fail) flow freely again; keys that failed back
    /// off from `now`, when the failure is known (a delivery that took the whole
    /// `message.timeout.ms` still holds its key for the full backoff).
    pub fn apply(self, holds: &mut Holds, now: Instant) {
        for key in self.delivered.keys() {
            if !self.failed.contains(key) {
                holds.succeed(key);
            }
        }
        for key in &self.failed {
            holds.fail(key, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::topics::RecordSize;

    fn row(id: i64, key: &str, topic: &str) -> Prepared {
        Prepared {
            id,
            key_id: KeyId::new(Some(topic), Some(key)),
            topic: topic.into(),
            key: Some(key.as_bytes().to_vec()),
            payload: Some(Vec::new()),
            headers: Vec::new(),
            event_id: Some(format!("ev-{id}")),
            size: RecordSize::of(None, &[], &[]),
        }
    }

    #[test]
    fn a_finished_batch_frees_delivered_keys_and_holds_failed_ones() {
        let mut holds = Holds::default();
        let now = Instant::now();
        let a = KeyId::new(Some("t"), Some("a"));
        let b = KeyId::new(Some("t"), Some("b"));
        holds.fail(&a, now);
        let behind = HashSet::new();
        let snapshot = Holds::default();
        let mut batch = Batch::new(&snapshot, &behind, now, Vec::new());
        batch.delivered(row(2, "a", "t"));
        batch.delivered(row(1, "a", "t"));
        assert_eq!(batch.delivered_keys.get(&a), Some(&2), "the highest id");
        batch.failed(row(3, "b", "t"), Failure::Transient("queue full".into()));
        assert!(!batch.gate.admit(&b), "b's later rows wait");
        batch.failed(
            row(4, "c", "t"),
            Failure::Poison(Reason::Invalid("x".into())),
        );
        let (outcome, poisoned, keys) = batch.finish();
        keys.apply(&mut holds, now);
        assert_eq!(outcome.published, vec![2, 1]);
        assert_eq!(outcome.held, 1);
        assert!(outcome.undelivered.contains(&b));
        assert!(!holds.is_held(&a, now), "a got through");
        assert!(holds.is_held(&b, now), "b backs off");
        assert_eq!(poisoned.iter().map(|p| p.id).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn rows_of_a_topic_not_writable_yet_are_reported_once_per_topic() {
        let holds = Holds::default();
        let behind = HashSet::new();
        let now = Instant::now();
        let mut batch = Batch::new(&holds, &behind, now, Vec::new());
        for id in 1..=3 {
            batch.unavailable(row(id, "k", "late"), "unknown_topic", "no".into());
        }
        let (outcome, _, _) = batch.finish();
        assert_eq!(
            outcome.unavailable,
            vec![TopicWait {
                topic: "late".into(),
                label: "unknown_topic",
                text: "no".into(),
                rows: 3
            }]
        );
        assert_eq!(outcome.held, 3);
    }
}
