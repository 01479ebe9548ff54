//! Publishing a batch of outbox rows to Kafka and sorting out what happened to each.
//!
//! Each row becomes a record: the row's `topic`, a key from the row's `key` ([`kafka_key`]),
//! the payload as written, and headers from the row's `headers` plus `ferry-event-id` and
//! `traceparent`. The producer is idempotent with `acks=all`, so a record Kafka confirmed is
//! durable and records of one key land in send order. The batch is sent row by row in id
//! order through a [`BatchGate`], then every delivery report is awaited; only then does the
//! caller mark the rows reported delivered.
//!
//! A row that can never be published is *poison* ([`Reason`]): it goes to the dead-letter
//! topic with a `ferry-error` header, or is marked failed, and never blocks the table. Any
//! other failure holds the row's key ([`Holds`]) so its later rows wait behind it; so does a
//! topic that does not exist or may not be written *yet* (just created, ACLs propagating).
//!
//! Kafka refuses a record batch whole and librdkafka reports the refusal on every record of
//! the batch, so no row is called poison for a batch's error: what the topic's config says
//! ([`super::topics`]) is checked before sending, and the rows of a refused batch are re-sent
//! alone ([`Publisher::isolate`]) until the one really at fault is found.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    admin::AdminClient,
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{
        DeliveryFuture, FutureProducer, FutureRecord, Producer,
        future_producer::OwnedDeliveryResult,
    },
};
use serde_json::Value;

use super::{
    Error, Result,
    canonical::{self, Json},
    order::{BatchGate, Holds, KeyId},
    outbox::OutboxRow,
    topics::{RecordSize, TOPIC_CHECK_TIMEOUT, TopicCheck, TopicFacts, Topics},
};
use crate::envelope::Envelope;

/// Producer settings the relay's guarantees rest on; a `--kafka-option` of the same name wins.
pub const PRODUCER_DEFAULTS: [(&str, &str); 4] = [
    // No loss and per-key order across retries (DESIGN §4): acks=all is implied.
    ("enable.idempotence", "true"),
    // A batch's delivery reports arrive within Kubernetes' default 30 s termination grace
    // period even when the brokers are gone, so SIGTERM can finish the batch in flight.
    ("message.timeout.ms", "25000"),
    // The relay already hands over a whole batch at once, so waiting for more records only
    // adds latency to every batch (librdkafka's default is 5 ms); 1 ms still coalesces the
    // records of one batch per partition.
    ("linger.ms", "1"),
    // The relay logs its own lines; librdkafka's connection chatter stays out of them.
    ("log.connection.close", "false"),
];

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
}

impl Reason {
    /// A bounded label for the `failed` counter.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NotEnvelope(_) => "not_envelope",
            Reason::MissingTopic => "missing_topic",
            Reason::TooLarge(_) => "too_large",
            Reason::Invalid(_) => "invalid_record",
            Reason::BadColumn(_) => "bad_column",
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
fn classify_send(error: &KafkaError, topic: &str) -> Failure {
    match classify(error, topic) {
        Failure::Suspect(reason) => Failure::Poison(reason),
        other => other,
    }
}

/// The Kafka key of a row: a JSON string as is, a number as written, `null` (or no key) as
/// no key, anything else as canonical JSON (sorted object keys, no spaces, numbers as
/// written), so equal keys always land on one partition.
pub fn kafka_key(key_json: Option<&str>) -> std::result::Result<Option<Vec<u8>>, Reason> {
    let Some(text) = key_json else {
        return Ok(None);
    };
    let key =
        canonical::parse(text).map_err(|e| Reason::BadColumn(format!("key is not JSON: {e}")))?;
    Ok(match key {
        Json::Null => None,
        Json::String(s) => Some(s.into_bytes()),
        Json::Other(text) => Some(text.into_bytes()),
        object @ Json::Object(_) => Some(object.to_text().into_bytes()),
    })
}

/// The record headers of a row: its `headers` object (strings as is, other values as
/// canonical JSON with numbers as written),
/// then `ferry-event-id`, then `traceparent` from the envelope's headers if the row has none.
pub fn record_headers(
    headers_json: Option<&str>,
    envelope: &Envelope,
) -> std::result::Result<Vec<(String, Vec<u8>)>, Reason> {
    let mut out = Vec::with_capacity(2);
    match headers_json.map(canonical::parse) {
        None | Some(Ok(Json::Null)) => {}
        Some(Ok(Json::Object(members))) => {
            out.reserve(members.len() + 2);
            for (k, v) in members {
                // A string member as its text, anything else as canonical JSON.
                let bytes = match v {
                    Json::String(s) => s.into_bytes(),
                    Json::Other(text) => text.into_bytes(),
                    other => other.to_text().into_bytes(),
                };
                out.push((k, bytes));
            }
        }
        Some(Ok(_)) => {
            return Err(Reason::BadColumn("headers is not a JSON object".into()));
        }
        Some(Err(e)) => return Err(Reason::BadColumn(format!("headers is not JSON: {e}"))),
    }
    out.retain(|(k, _)| k != "ferry-event-id");
    out.push(("ferry-event-id".into(), envelope.id.clone().into_bytes()));
    if !out.iter().any(|(k, _)| k == "traceparent")
        && let Some(tp) = envelope.headers.get("traceparent").and_then(Value::as_str)
    {
        out.push(("traceparent".into(), tp.as_bytes().to_vec()));
    }
    Ok(out)
}

/// A row ready to send.
#[derive(Debug)]
struct Prepared {
    id: i64,
    key_id: KeyId,
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    event_id: String,
    size: RecordSize,
}

/// A poison row on its way to the dead-letter topic (or the error column).
#[derive(Debug)]
struct Poisoned {
    id: i64,
    key_id: KeyId,
    topic: Option<String>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    event_id: Option<String>,
    reason: Reason,
}

/// What became of a batch; the caller marks rows accordingly.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Rows Kafka confirmed on their topic: mark them published.
    pub published: Vec<i64>,
    /// Poison rows Kafka confirmed on the dead-letter topic: mark them published too.
    pub dead_lettered: Vec<(i64, Reason)>,
    /// Poison rows to mark failed, with the reason.
    pub failed: Vec<(i64, Reason, String)>,
    /// Rows left unpublished for a later batch (transient failure, or held key).
    pub held: usize,
    /// The keys of those rows: a chunk read past them must not send these keys.
    pub undelivered: HashSet<KeyId>,
    /// Rows held because their topic does not exist or may not be written yet, by reason.
    pub unavailable: HashMap<&'static str, u64>,
}

/// librdkafka's default `batch.size`: the most bytes of records it puts in one batch.
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// The Kafka side of the relay.
pub struct Publisher {
    config: ClientConfig,
    producer: FutureProducer,
    dead_letter_topic: Option<String>,
    /// The outbox table, named in the dead-letter copies of rows kept there.
    table: String,
    topics: Topics,
    /// The producer's `batch.size`: a topic taking less gets its records in smaller waves.
    batch_size: usize,
    /// Whether record sizes are what the broker sees (no compression).
    sizes_exact: bool,
}

impl Publisher {
    /// A producer for `config` (the `--kafka-*` settings) with the relay's defaults, and an
    /// admin client that reads the topics' configs; `table` is the outbox table's name.
    pub fn new(
        mut config: ClientConfig,
        dead_letter_topic: Option<String>,
        table: String,
    ) -> Result<Self> {
        let admin_config = config.clone();
        for (key, value) in PRODUCER_DEFAULTS {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        let producer = config.create().map_err(Error::Producer)?;
        let admin = match admin_config.create::<AdminClient<DefaultClientContext>>() {
            Ok(admin) => Some(admin),
            Err(error) => {
                tracing::warn!(%error, "cannot create a Kafka admin client; topic configs stay unknown");
                None
            }
        };
        let batch_size = config
            .get("batch.size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(LIBRDKAFKA_BATCH_SIZE);
        let sizes_exact = ["compression.type", "compression.codec"]
            .iter()
            .all(|k| config.get(k).is_none_or(|c| c == "none"));
        Ok(Self {
            config,
            producer,
            dead_letter_topic,
            table,
            topics: Topics::new(admin),
            batch_size,
            sizes_exact,
        })
    }

    /// Connects to the cluster in the background (SASL handshake, metadata) while the relay
    /// opens its database sessions, so a new leader's first chunk does not pay for it.
    pub fn warm_up(&self) {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            match producer.client().fetch_metadata(None, TOPIC_CHECK_TIMEOUT) {
                Ok(metadata) => {
                    tracing::debug!(brokers = metadata.brokers().len(), "connected to Kafka")
                }
                Err(error) => tracing::debug!(%error, "Kafka not reachable yet"),
            }
        });
    }

    /// Publishes `rows` (in id order) and reports what became of each. Keys that fail
    /// transiently are held in `holds`; keys in `behind` are not sent at all (an earlier row
    /// of theirs, not in `rows`, is unpublished); `can_mark_failed` says whether poison rows
    /// may be marked failed (else they are held, never dropped).
    pub async fn publish_batch(
        &mut self,
        rows: Vec<OutboxRow>,
        holds: &mut Holds,
        behind: &HashSet<KeyId>,
        can_mark_failed: bool,
    ) -> BatchOutcome {
        let now = Instant::now();
        let mut poisoned = Vec::new();
        let mut prepared = Vec::with_capacity(rows.len());
        for row in rows {
            match prepare(row) {
                Ok(p) => prepared.push(p),
                Err(p) => poisoned.push(*p),
            }
        }
        let unavailable = self
            .topics
            .check(&self.producer, prepared.iter().map(|p| p.topic.as_str()))
            .await;

        // Send in id order; a key's later rows stay behind its failed one.
        let mut batch = Batch::new(holds, behind, now, poisoned);
        // What is known of the topic of the current run of rows (rows come in runs of one
        // topic: one lookup per run, not per row).
        let mut topic: Option<(String, Option<&TopicCheck>, TopicFacts)> = None;
        for p in prepared {
            if !batch.gate.admit(&p.key_id) {
                batch.hold(p.key_id);
                continue;
            }
            let (_, check, facts) = match topic.take() {
                Some(known) if known.0 == p.topic => topic.insert(known),
                _ => topic.insert((
                    p.topic.clone(),
                    unavailable.get(&p.topic),
                    self.topics.facts(&p.topic),
                )),
            };
            if let Some(TopicCheck::Unavailable { label, text }) = check {
                batch.unavailable(p, label, text.clone());
                continue;
            }
            if let Some(reason) = facts.refuse(p.key.is_some(), p.size, self.sizes_exact) {
                batch.poisoned.push(p.poison(reason));
                continue;
            }
            // A topic that takes smaller batches than the producer builds gets its records in
            // waves: every report of the wave is in before the next is sent.
            let limited = facts.batch_limit(self.batch_size).is_some();
            if limited && !facts.fits(self.batch_size, batch.bytes_in_flight(&p.topic), p.size) {
                batch.drain().await;
                if !batch.gate.admit(&p.key_id) {
                    batch.hold(p.key_id);
                    continue;
                }
            }
            match self.send(&p) {
                Ok(delivery) => batch.sent(p, delivery, limited),
                Err(e) => {
                    let failure = classify_send(&e, &p.topic);
                    batch.failed(p, failure);
                }
            }
        }
        batch.drain().await;
        self.isolate(&mut batch).await;

        let Batch {
            gate,
            mut outcome,
            mut poisoned,
            delivered_keys,
            unavailable_topics,
            ..
        } = batch;
        for (topic, (label, text, rows)) in unavailable_topics {
            tracing::warn!(%topic, reason = label, error = %text, rows, "topic not writable yet; holding its rows and retrying with backoff");
            *outcome.unavailable.entry(label).or_default() += rows;
        }
        // A hold counts from when the failure is known: a delivery that took the whole
        // `message.timeout.ms` still holds its key for the full backoff.
        let now = Instant::now();
        let failed_keys = gate.into_failed();
        for key in delivered_keys.keys() {
            if !failed_keys.contains(key) {
                holds.succeed(key);
            }
        }
        for key in &failed_keys {
            holds.fail(key, now);
        }

        poisoned.sort_by_key(|p| p.id);
        self.dispose_poison(poisoned, holds, can_mark_failed, &mut outcome, now)
            .await;
        self.renew_if_fatal();
        outcome
    }

    /// Re-sends, one at a time and in id order, the rows whose batch Kafka refused: the
    /// record that is really at fault fails again alone and is poison; the others are
    /// published. A row that went through alone after a too-large batch teaches the topic a
    /// batch limit that works (when its `max.message.bytes` is unknown).
    async fn isolate(&mut self, batch: &mut Batch<'_>) {
        if batch.suspects.is_empty() {
            return;
        }
        let mut suspects = std::mem::take(&mut batch.suspects);
        suspects.sort_by_key(|(p, _)| p.id);
        tracing::info!(
            rows = suspects.len(),
            "Kafka refused a batch; re-sending its rows alone to find the one at fault"
        );
        for (p, first) in suspects {
            if batch.gate.has_failed(&p.key_id) {
                batch.hold(p.key_id);
                continue;
            }
            // Kafka took a later batch of the partition after refusing this row's: the re-send
            // lands after a later row of its key. Only possible while the topic's limit is
            // unknown (waves keep batches within a known one).
            if batch
                .delivered_keys
                .get(&p.key_id)
                .is_some_and(|id| *id > p.id)
            {
                tracing::warn!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, "re-sent after a later row of its key that Kafka already took: this key's order is broken once; grant DESCRIBE_CONFIGS on the topic to prevent it");
            }
            let report = match self.send(&p) {
                Ok(delivery) => delivery.await,
                Err(e) => {
                    let failure = classify_send(&e, &p.topic);
                    batch.failed(p, failure);
                    continue;
                }
            };
            match report_failure(report, &p.topic) {
                None => {
                    if matches!(first, Reason::TooLarge(_)) {
                        self.topics.learn(&p.topic, p.size.in_batch_max);
                    }
                    batch.delivered(p);
                }
                Some(Failure::Suspect(reason) | Failure::Poison(reason)) => {
                    batch.poisoned.push(p.poison(reason));
                }
                Some(other) => batch.failed(p, other),
            }
        }
    }

    /// Sends poison rows to the dead-letter topic, or lists them to be marked failed. A row
    /// that keeps its payload ([`Reason::keeps_row`]) is marked failed even when its
    /// (payload-less) copy reached the dead-letter topic, so it is never deleted.
    async fn dispose_poison(
        &mut self,
        poisoned: Vec<Poisoned>,
        holds: &mut Holds,
        can_mark_failed: bool,
        outcome: &mut BatchOutcome,
        now: Instant,
    ) {
        for p in &poisoned {
            tracing::warn!(outbox_id = p.id, event_id = p.event_id.as_deref().unwrap_or(""), topic = p.topic.as_deref().unwrap_or(""), reason = %p.reason, "poison row");
        }
        let Some(dlt) = self.dead_letter_topic.clone() else {
            for p in poisoned {
                if can_mark_failed {
                    let text = p.reason.to_string();
                    outcome.failed.push((p.id, p.reason, text));
                } else {
                    hold_poison(p, holds, outcome, now);
                }
            }
            return;
        };
        let mut sent = Vec::new();
        for p in poisoned {
            if p.reason.keeps_row() && !can_mark_failed {
                tracing::warn!(
                    outbox_id = p.id,
                    "a row too large for Kafka is the only copy of its payload and the table has no publish_error column to set it aside; holding its key"
                );
                hold_poison(p, holds, outcome, now);
                continue;
            }
            match self.send_dead_letter(&dlt, &p) {
                Ok(delivery) => sent.push((p, delivery)),
                Err(e) => {
                    self.dead_letter_failed(p, &e, &dlt, holds, can_mark_failed, outcome, now)
                }
            }
        }
        let (rows, deliveries): (Vec<_>, Vec<_>) = sent.into_iter().unzip();
        let reports = futures::future::join_all(deliveries).await;
        let now = Instant::now();
        for (p, report) in rows.into_iter().zip(reports) {
            match report {
                Ok(Ok(_)) if p.reason.keeps_row() => {
                    let text = format!(
                        "{}; the row is kept: its copy on the dead-letter topic {dlt} carries no payload",
                        p.reason
                    );
                    outcome.failed.push((p.id, p.reason, text));
                }
                Ok(Ok(_)) => outcome.dead_lettered.push((p.id, p.reason)),
                Ok(Err((e, _))) => {
                    self.dead_letter_failed(p, &e, &dlt, holds, can_mark_failed, outcome, now)
                }
                Err(_) => hold_poison(p, holds, outcome, now),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter_failed(
        &self,
        p: Poisoned,
        error: &KafkaError,
        dlt: &str,
        holds: &mut Holds,
        can_mark_failed: bool,
        outcome: &mut BatchOutcome,
        now: Instant,
    ) {
        let permanent = matches!(
            classify(error, dlt),
            Failure::Poison(_) | Failure::Suspect(_)
        );
        tracing::warn!(outbox_id = p.id, dead_letter_topic = dlt, %error, permanent, "dead-letter write failed");
        if permanent && can_mark_failed {
            let text = format!(
                "{}; the dead-letter topic {dlt} refused it: {error}",
                p.reason
            );
            outcome.failed.push((p.id, p.reason, text));
        } else {
            hold_poison(p, holds, outcome, now);
        }
    }

    fn send(&self, p: &Prepared) -> std::result::Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(p.headers.len());
        for (k, v) in &p.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&p.topic)
            .payload(&p.payload)
            .headers(headers);
        if let Some(key) = &p.key {
            record = record.key(key);
        }
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    fn send_dead_letter(
        &self,
        dlt: &str,
        p: &Poisoned,
    ) -> std::result::Result<DeliveryFuture, KafkaError> {
        let reason = p.reason.to_string();
        let id = p.id.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "ferry-error",
                value: Some(&reason),
            })
            .insert(Header {
                key: "ferry-error-kind",
                value: Some(p.reason.label()),
            })
            .insert(Header {
                key: "ferry-outbox-id",
                value: Some(&id),
            })
            .insert(Header {
                key: "ferry-outbox-table",
                value: Some(&self.table),
            });
        if let Some(topic) = &p.topic {
            headers = headers.insert(Header {
                key: "ferry-original-topic",
                value: Some(topic),
            });
        }
        if let Some(event_id) = &p.event_id {
            headers = headers.insert(Header {
                key: "ferry-event-id",
                value: Some(event_id),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(dlt).headers(headers);
        // A record too large for its topic is too large here too: the copy carries the
        // reason and the row's table and id, and the row keeps the payload.
        if let (Some(payload), false) = (&p.payload, p.reason.keeps_row()) {
            record = record.payload(payload);
        }
        if let Some(key) = &p.key {
            record = record.key(key);
        }
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// A fatal producer error (e.g. the idempotent producer was fenced or refused) makes the
    /// producer unusable: the next batch gets a new one.
    fn renew_if_fatal(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(error = %code, %reason, "fatal producer error; creating a new producer");
            match self.config.create() {
                Ok(producer) => self.producer = producer,
                Err(error) => tracing::warn!(%error, "could not create a new producer"),
            }
        }
    }

    /// Waits for anything still queued (used at shutdown; batches already await their reports).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// A poison row that cannot be set aside now: its key waits and it is tried again.
fn hold_poison(p: Poisoned, holds: &mut Holds, outcome: &mut BatchOutcome, now: Instant) {
    holds.fail(&p.key_id, now);
    outcome.held += 1;
    outcome.undelivered.insert(p.key_id);
}

/// The failure a delivery report carries, if any.
fn report_failure(
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
struct Batch<'a> {
    gate: BatchGate<'a>,
    in_flight: Vec<(Prepared, DeliveryFuture)>,
    /// Bytes in flight per topic, kept only for topics whose batches are limited.
    bytes_in_flight: HashMap<String, usize>,
    outcome: BatchOutcome,
    poisoned: Vec<Poisoned>,
    /// Rows whose batch Kafka refused, with the reason it gave, to re-send alone.
    suspects: Vec<(Prepared, Reason)>,
    /// Keys with a row Kafka confirmed in this batch, and the highest such row id.
    delivered_keys: HashMap<KeyId, i64>,
    /// Per unavailable topic: the reason label, what Kafka said, and how many rows wait.
    unavailable_topics: HashMap<String, (&'static str, String, u64)>,
}

impl<'a> Batch<'a> {
    fn new(
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

    fn bytes_in_flight(&self, topic: &str) -> usize {
        self.bytes_in_flight.get(topic).copied().unwrap_or(0)
    }

    fn sent(&mut self, p: Prepared, delivery: DeliveryFuture, limited: bool) {
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
    async fn drain(&mut self) {
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

    fn delivered(&mut self, p: Prepared) {
        tracing::trace!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, "published");
        let highest = self.delivered_keys.entry(p.key_id).or_insert(p.id);
        *highest = (*highest).max(p.id);
        self.outcome.published.push(p.id);
    }

    /// A row that was not admitted: it stays for a later batch.
    fn hold(&mut self, key: KeyId) {
        self.outcome.held += 1;
        self.outcome.undelivered.insert(key);
    }

    fn failed(&mut self, p: Prepared, failure: Failure) {
        match failure {
            Failure::Poison(reason) | Failure::Suspect(reason) => {
                self.poisoned.push(p.poison(reason))
            }
            Failure::Unavailable { label, text } => self.unavailable(p, label, text),
            Failure::Transient(error) => {
                tracing::warn!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, %error, "publish failed; holding the key");
                self.gate.fail(&p.key_id);
                self.hold(p.key_id);
            }
        }
    }

    /// A row whose topic does not exist or may not be written yet: its key is held with
    /// backoff; the topic is logged once per batch.
    fn unavailable(&mut self, p: Prepared, label: &'static str, text: String) {
        let entry = self
            .unavailable_topics
            .entry(p.topic.clone())
            .or_insert((label, text, 0));
        entry.2 += 1;
        self.gate.fail(&p.key_id);
        self.hold(p.key_id);
    }
}

fn prepare(row: OutboxRow) -> std::result::Result<Prepared, Box<Poisoned>> {
    let key_id = KeyId::new(row.topic.as_deref(), row.key.as_deref());
    let key = kafka_key(row.key.as_deref());
    let envelope = match row.payload.as_deref() {
        None => Err(Reason::NotEnvelope("payload is NULL".into())),
        Some(text) => {
            Envelope::parse(text.as_bytes()).map_err(|e| Reason::NotEnvelope(e.to_string()))
        }
    };
    let poison =
        |reason: Reason, key: Option<Vec<u8>>, event_id: Option<String>, row: OutboxRow| {
            Box::new(Poisoned {
                id: row.id,
                key_id: key_id.clone(),
                topic: row.topic.filter(|t| !t.is_empty()),
                key,
                payload: row.payload.map(String::into_bytes),
                event_id,
                reason,
            })
        };
    let key = match key {
        Ok(k) => k,
        Err(reason) => return Err(poison(reason, None, None, row)),
    };
    let envelope = match envelope {
        Ok(e) => e,
        Err(reason) => return Err(poison(reason, key, None, row)),
    };
    let event_id = envelope.id.clone();
    let Some(topic) = row.topic.clone().filter(|t| !t.is_empty()) else {
        return Err(poison(Reason::MissingTopic, key, Some(event_id), row));
    };
    let headers = match record_headers(row.headers.as_deref(), &envelope) {
        Ok(h) => h,
        Err(reason) => return Err(poison(reason, key, Some(event_id), row)),
    };
    let payload = row.payload.map(String::into_bytes).unwrap_or_default();
    let size = RecordSize::of(key.as_deref(), &payload, &headers);
    Ok(Prepared {
        id: row.id,
        key_id,
        topic,
        key,
        payload,
        headers,
        event_id,
        size,
    })
}

impl Prepared {
    fn poison(self, reason: Reason) -> Poisoned {
        Poisoned {
            id: self.id,
            key_id: self.key_id,
            topic: Some(self.topic),
            key: self.key,
            payload: Some(self.payload),
            event_id: Some(self.event_id),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(headers: Value) -> Envelope {
        Envelope::from_value(json!({"schema":"s","event":"e","id":"ev-1","ts":1,"headers":headers}))
            .expect("valid")
    }

    #[test]
    fn keys_follow_the_contract() {
        assert_eq!(kafka_key(None), Ok(None));
        assert_eq!(kafka_key(Some("null")), Ok(None));
        assert_eq!(kafka_key(Some("\"o-1\"")), Ok(Some(b"o-1".to_vec())));
        assert_eq!(kafka_key(Some("42")), Ok(Some(b"42".to_vec())));
        assert_eq!(
            kafka_key(Some(r#"{"b": 1, "a": {"d": [1, 2], "c": "x"}}"#)),
            Ok(Some(br#"{"a":{"c":"x","d":[1,2]},"b":1}"#.to_vec()))
        );
        assert!(matches!(
            kafka_key(Some("{nope")),
            Err(Reason::BadColumn(_))
        ));
    }

    #[test]
    fn numbers_in_keys_and_headers_are_kept_as_written() {
        assert_eq!(
            kafka_key(Some("123456789012345678901234567890")),
            Ok(Some(b"123456789012345678901234567890".to_vec()))
        );
        assert_eq!(
            kafka_key(Some(
                r#"{"b": 0.10000000000000000000001, "a": 18446744073709551617}"#
            )),
            Ok(Some(
                br#"{"a":18446744073709551617,"b":0.10000000000000000000001}"#.to_vec()
            ))
        );
        let h = record_headers(
            Some(r#"{"amount": 12345678901234567890.123456789}"#),
            &envelope(Value::Null),
        )
        .expect("valid");
        assert!(h.contains(&("amount".into(), b"12345678901234567890.123456789".to_vec())));
    }

    #[test]
    fn headers_carry_the_event_id_and_trace_context() {
        let h = record_headers(
            Some(r#"{"x-tenant":"t1","n":3}"#),
            &envelope(json!({"traceparent":"00-abc-def-01"})),
        )
        .expect("valid");
        assert!(h.contains(&("x-tenant".into(), b"t1".to_vec())));
        assert!(h.contains(&("n".into(), b"3".to_vec())));
        assert!(h.contains(&("ferry-event-id".into(), b"ev-1".to_vec())));
        assert!(h.contains(&("traceparent".into(), b"00-abc-def-01".to_vec())));
        // The row's own traceparent wins over the envelope's; a forged event id does not.
        let h = record_headers(
            Some(r#"{"traceparent":"row","ferry-event-id":"forged"}"#),
            &envelope(json!({"traceparent":"env"})),
        )
        .expect("valid");
        let get = |k: &str| {
            h.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("traceparent"), vec![b"row".to_vec()]);
        assert_eq!(get("ferry-event-id"), vec![b"ev-1".to_vec()]);
        assert!(matches!(
            record_headers(Some("[1]"), &envelope(Value::Null)),
            Err(Reason::BadColumn(_))
        ));
        assert_eq!(
            record_headers(None, &envelope(Value::Null))
                .expect("ok")
                .len(),
            1
        );
    }

    #[test]
    fn rows_that_cannot_be_published_are_poison_with_their_reason() {
        let row = |topic: Option<&str>, payload: &str| OutboxRow {
            id: 7,
            topic: topic.map(str::to_owned),
            key: Some("\"k\"".into()),
            payload: Some(payload.into()),
            headers: None,
        };
        let ok = r#"{"schema":"s","event":"e","id":"ev","ts":1}"#;
        assert!(prepare(row(Some("t"), ok)).is_ok());
        let not_envelope = prepare(row(Some("t"), r#"{"hello":1}"#)).expect_err("poison");
        assert_eq!(not_envelope.reason.label(), "not_envelope");
        let no_topic = prepare(row(None, ok)).expect_err("poison");
        assert_eq!(no_topic.reason, Reason::MissingTopic);
        assert_eq!(no_topic.event_id.as_deref(), Some("ev"));
        assert_eq!(
            prepare(row(Some(""), ok)).expect_err("poison").reason,
            Reason::MissingTopic
        );
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
