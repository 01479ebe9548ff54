//! Publishing a batch of outbox rows to Kafka: the producer and its settings, and the order
//! of work for one batch.
//!
//! The producer is idempotent with `acks=all`, so a record Kafka confirmed is durable and
//! records of one key land in send order. A batch is built into records (`record.rs`), sent
//! row by row in id order through the batch's gate (`batch.rs`), then every delivery report
//! is awaited; only then does the caller mark the rows reported delivered. Poison rows are set
//! aside by `dead_letter.rs`. Any other failure holds the row's key so its later rows wait
//! behind it; so does a topic that does not exist or may not be written *yet*.
//!
//! Kafka refuses a record batch whole and librdkafka reports the refusal on every record of
//! the batch, so no row is called poison for a batch's error: what the topic's config says
//! ([`super::topics`]) is checked before sending, and the rows of a refused batch are re-sent
//! alone ([`Publisher::isolate`]) until the one really at fault is found.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    admin::AdminClient,
    client::DefaultClientContext,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use tokio::sync::watch;

use crate::contracts::Contracts;

use super::{
    batch::{Batch, BatchOutcome, report_failure},
    dead_letter::DeadLetters,
    error::{Error, Result},
    failure::{Failure, Reason, classify_send},
    order::{Holds, KeyId},
    outbox::OutboxRow,
    record::{Prepared, prepare},
    topics::{TOPIC_CHECK_TIMEOUT, TopicCheck, TopicFacts, Topics},
};

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

/// librdkafka's default `batch.size`: the most bytes of records it puts in one batch.
const LIBRDKAFKA_BATCH_SIZE: usize = 1_000_000;

/// The Kafka side of the relay.
pub struct Publisher {
    config: ClientConfig,
    producer: FutureProducer,
    /// Where poison rows go.
    dead_letters: DeadLetters,
    /// What is known of each destination topic.
    topics: Topics,
    /// The producer's `batch.size`: a topic taking less gets its records in smaller waves.
    batch_size: usize,
    /// Whether record sizes are what the broker sees (no compression).
    sizes_exact: bool,
    /// The event contracts of `--contracts-dir`, kept current; `None` without it.
    contracts: Option<watch::Receiver<Arc<Contracts>>>,
}

impl Publisher {
    /// A producer for `config` (the `--kafka-*` settings) with the relay's defaults, and an
    /// admin client that reads the topics' configs; `table` is the outbox table's name,
    /// `contracts` what rows are checked against.
    pub fn new(
        mut config: ClientConfig,
        dead_letter_topic: Option<String>,
        table: String,
        contracts: Option<watch::Receiver<Arc<Contracts>>>,
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
            dead_letters: DeadLetters::new(dead_letter_topic, table),
            topics: Topics::new(admin),
            batch_size,
            sizes_exact,
            contracts,
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
        // One snapshot per batch: a reload lands between batches, never inside one.
        let contracts = self
            .contracts
            .as_ref()
            .map(|c| c.borrow().clone())
            .unwrap_or_default();
        for row in rows {
            match prepare(row, &contracts) {
                Ok(p) => prepared.push(p),
                Err(p) => poisoned.push(*p),
            }
        }
        let unavailable = self
            .topics
            .check(&self.producer, prepared.iter().map(|p| p.topic.as_str()))
            .await;

        let span = super::trace::start(&prepared);
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

        let (mut outcome, poisoned, keys) = batch.finish();
        keys.apply(holds, Instant::now());
        self.dead_letters
            .set_aside(
                &self.producer,
                poisoned,
                holds,
                can_mark_failed,
                &mut outcome,
            )
            .await;
        self.renew_if_fatal();
        super::trace::settle(span, &outcome);
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
                tracing::warn!(outbox_id = p.id, event_id = p.event_id.as_deref().unwrap_or("tombstone"), topic = %p.topic, "re-sent after a later row of its key that Kafka already took: this key's order is broken once; grant DESCRIBE_CONFIGS on the topic to prevent it");
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

    fn send(&self, p: &Prepared) -> std::result::Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(p.headers.len());
        for (k, v) in &p.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&p.topic).headers(headers);
        if let Some(payload) = &p.payload {
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
