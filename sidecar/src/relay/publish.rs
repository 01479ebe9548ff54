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
//! other failure holds the row's key ([`Holds`]) so its later rows wait behind it.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer},
};
use serde_json::Value;

use super::{
    Error, Result,
    order::{BatchGate, Holds, KeyId},
    outbox::OutboxRow,
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

/// How long a topic that exists and may be written stays known before it is checked again.
const TOPIC_CHECK_TTL: Duration = Duration::from_secs(60);

/// How long one topic metadata request may take before the batch goes ahead unchecked.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a row can never be published; the text goes into `ferry-error` or `publish_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The payload is not a Ferry envelope.
    NotEnvelope(String),
    /// The `topic` column is empty.
    MissingTopic,
    /// The topic does not exist in Kafka.
    UnknownTopic(String),
    /// The relay's Kafka identity may not write the topic.
    Denied(String),
    /// The record is larger than Kafka accepts.
    TooLarge(String),
    /// The `key` or `headers` column is not usable.
    BadColumn(String),
}

impl Reason {
    /// A bounded label for the `failed` counter.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NotEnvelope(_) => "not_envelope",
            Reason::MissingTopic => "missing_topic",
            Reason::UnknownTopic(_) => "unknown_topic",
            Reason::Denied(_) => "denied",
            Reason::TooLarge(_) => "too_large",
            Reason::BadColumn(_) => "bad_column",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotEnvelope(e) => write!(f, "not an envelope: {e}"),
            Reason::MissingTopic => f.write_str("missing topic: the row's topic is empty"),
            Reason::UnknownTopic(t) => write!(f, "unknown topic: {t} does not exist"),
            Reason::Denied(e) => write!(f, "denied by ACL: {e}"),
            Reason::TooLarge(e) => write!(f, "message too large: {e}"),
            Reason::BadColumn(e) => write!(f, "bad column: {e}"),
        }
    }
}

/// How a failed send or delivery is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It will never work: dead-letter the row.
    Poison(Reason),
    /// It may work later: hold the key and retry.
    Transient(String),
}

/// Sorts a Kafka error into poison or transient, for a record bound for `topic`.
pub fn classify(error: &KafkaError, topic: &str) -> Failure {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidRecord) => {
            Failure::Poison(Reason::TooLarge(error.to_string()))
        }
        // Local: librdkafka learned from the cluster that the topic does not exist.
        Some(C::UnknownTopic) => Failure::Poison(Reason::UnknownTopic(topic.to_owned())),
        Some(C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
            Failure::Poison(Reason::Denied(error.to_string()))
        }
        _ => Failure::Transient(error.to_string()),
    }
}

/// The Kafka key of a row: a JSON string as is, a number as its text, `null` (or no key) as
/// no key, anything else as canonical JSON (sorted object keys, no spaces), so equal keys
/// always land on one partition.
pub fn kafka_key(key_json: Option<&str>) -> std::result::Result<Option<Vec<u8>>, Reason> {
    let Some(text) = key_json else {
        return Ok(None);
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Reason::BadColumn(format!("key is not JSON: {e}")))?;
    Ok(match value {
        Value::Null => None,
        Value::String(s) => Some(s.into_bytes()),
        Value::Number(n) => Some(n.to_string().into_bytes()),
        other => Some(canonical_json(&other).into_bytes()),
    })
}

/// JSON with object keys sorted at every level, independent of how the value was built.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// The record headers of a row: its `headers` object (strings as is, other values as JSON),
/// then `ferry-event-id`, then `traceparent` from the envelope's headers if the row has none.
pub fn record_headers(
    headers_json: Option<&str>,
    envelope: &Envelope,
) -> std::result::Result<Vec<(String, Vec<u8>)>, Reason> {
    let mut out = Vec::new();
    match headers_json.map(serde_json::from_str::<Value>) {
        None | Some(Ok(Value::Null)) => {}
        Some(Ok(Value::Object(map))) => {
            for (k, v) in map {
                let bytes = match v {
                    Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
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
}

/// The Kafka side of the relay.
pub struct Publisher {
    config: ClientConfig,
    producer: FutureProducer,
    dead_letter_topic: Option<String>,
    known_topics: HashMap<String, Instant>,
}

impl Publisher {
    /// A producer for `config` (the `--kafka-*` settings) with the relay's defaults.
    pub fn new(mut config: ClientConfig, dead_letter_topic: Option<String>) -> Result<Self> {
        for (key, value) in PRODUCER_DEFAULTS {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        let producer = config.create().map_err(Error::Producer)?;
        Ok(Self {
            config,
            producer,
            dead_letter_topic,
            known_topics: HashMap::new(),
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
    /// without a dead-letter topic may be marked failed (else they are held, never dropped).
    pub async fn publish_batch(
        &mut self,
        rows: Vec<OutboxRow>,
        holds: &mut Holds,
        behind: &HashSet<KeyId>,
        can_mark_failed: bool,
    ) -> BatchOutcome {
        let now = Instant::now();
        let mut outcome = BatchOutcome::default();
        let mut poisoned = Vec::new();
        let mut prepared = Vec::with_capacity(rows.len());
        for row in rows {
            match prepare(row) {
                Ok(p) => prepared.push(p),
                Err(p) => poisoned.push(*p),
            }
        }
        let refused = self.check_topics(&prepared).await;

        // Send in id order; a key's later rows stay behind its failed one.
        let mut gate = BatchGate::new(holds, behind, now);
        let mut in_flight: Vec<(Prepared, DeliveryFuture)> = Vec::with_capacity(prepared.len());
        for p in prepared {
            if !gate.admit(&p.key_id) {
                outcome.held += 1;
                outcome.undelivered.insert(p.key_id);
                continue;
            }
            if let Some(reason) = refused.get(&p.topic) {
                poisoned.push(p.poison(reason.clone()));
                continue;
            }
            match self.send(&p) {
                Ok(delivery) => in_flight.push((p, delivery)),
                Err(e) => match classify(&e, &p.topic) {
                    Failure::Poison(reason) => poisoned.push(p.poison(reason)),
                    Failure::Transient(error) => {
                        tracing::warn!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, %error, "could not send; holding the key");
                        gate.fail(&p.key_id);
                        outcome.held += 1;
                        outcome.undelivered.insert(p.key_id);
                    }
                },
            }
        }

        // Every delivery report of the batch, in id order.
        let (rows, deliveries): (Vec<_>, Vec<_>) = in_flight.into_iter().unzip();
        let reports = futures::future::join_all(deliveries).await;
        let mut delivered_keys = HashSet::new();
        for (p, report) in rows.into_iter().zip(reports) {
            let failure = match report {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(classify(&e, &p.topic)),
                Err(_) => Some(Failure::Transient("producer dropped the delivery".into())),
            };
            match failure {
                None => {
                    tracing::trace!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, "published");
                    delivered_keys.insert(p.key_id.clone());
                    outcome.published.push(p.id);
                }
                Some(Failure::Poison(reason)) => poisoned.push(p.poison(reason)),
                Some(Failure::Transient(error)) => {
                    tracing::warn!(outbox_id = p.id, event_id = %p.event_id, topic = %p.topic, %error, "delivery failed; holding the key");
                    gate.fail(&p.key_id);
                    outcome.held += 1;
                    outcome.undelivered.insert(p.key_id);
                }
            }
        }
        // A hold counts from when the failure is known: a delivery that took the whole
        // `message.timeout.ms` still holds its key for the full backoff.
        let now = Instant::now();
        let failed_keys = gate.into_failed();
        for key in &delivered_keys {
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

    /// Sends poison rows to the dead-letter topic, or lists them to be marked failed.
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
                    holds.fail(&p.key_id, now);
                    outcome.held += 1;
                    outcome.undelivered.insert(p.key_id);
                }
            }
            return;
        };
        let mut sent = Vec::new();
        for p in poisoned {
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
                Ok(Ok(_)) => outcome.dead_lettered.push((p.id, p.reason)),
                Ok(Err((e, _))) => {
                    self.dead_letter_failed(p, &e, &dlt, holds, can_mark_failed, outcome, now)
                }
                Err(_) => {
                    holds.fail(&p.key_id, now);
                    outcome.held += 1;
                    outcome.undelivered.insert(p.key_id);
                }
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
        let permanent = matches!(classify(error, dlt), Failure::Poison(_));
        tracing::warn!(outbox_id = p.id, dead_letter_topic = dlt, %error, permanent, "dead-letter write failed");
        if permanent && can_mark_failed {
            let text = format!(
                "{}; the dead-letter topic {dlt} refused it: {error}",
                p.reason
            );
            outcome.failed.push((p.id, p.reason, text));
        } else {
            holds.fail(&p.key_id, now);
            outcome.held += 1;
            outcome.undelivered.insert(p.key_id);
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
        // reason and the row id, and the row keeps the payload.
        if let (Some(payload), false) = (&p.payload, matches!(p.reason, Reason::TooLarge(_))) {
            record = record.payload(payload);
        }
        if let Some(key) = &p.key {
            record = record.key(key);
        }
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Looks up topics not checked recently: unknown and unreadable ones are poison without
    /// waiting `topic.metadata.propagation.max.ms` per batch. A failed lookup (brokers away)
    /// lets the batch go ahead; its delivery reports then tell.
    async fn check_topics(&mut self, rows: &[Prepared]) -> HashMap<String, Reason> {
        let now = Instant::now();
        let unchecked: HashSet<String> = rows
            .iter()
            .filter(|p| {
                self.known_topics
                    .get(&p.topic)
                    .is_none_or(|at| now.duration_since(*at) > TOPIC_CHECK_TTL)
            })
            .map(|p| p.topic.clone())
            .collect();
        let mut refused = HashMap::new();
        for topic in unchecked {
            let producer = self.producer.clone();
            let name = topic.clone();
            let looked_up = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&name), TOPIC_CHECK_TIMEOUT)
                    .map(|m| m.topics().first().and_then(|t| t.error()))
            })
            .await;
            match looked_up {
                Ok(Ok(None)) => {
                    self.known_topics.insert(topic, now);
                }
                Ok(Ok(Some(code))) => match RDKafkaErrorCode::from(code) {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        refused.insert(topic.clone(), Reason::UnknownTopic(topic));
                    }
                    RDKafkaErrorCode::TopicAuthorizationFailed => {
                        let text = format!("not authorized to access topic {topic}");
                        refused.insert(topic, Reason::Denied(text));
                    }
                    other => tracing::debug!(%topic, error = %other, "topic lookup inconclusive"),
                },
                Ok(Err(error)) => tracing::debug!(%topic, %error, "topic lookup failed"),
                Err(error) => tracing::debug!(%topic, %error, "topic lookup task failed"),
            }
        }
        refused
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
    Ok(Prepared {
        id: row.id,
        key_id,
        topic,
        key,
        payload: row.payload.map(String::into_bytes).unwrap_or_default(),
        headers,
        event_id,
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
    fn kafka_errors_are_sorted_into_poison_and_transient() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge), "t").clone(),
            Failure::Poison(Reason::TooLarge(
                e(RDKafkaErrorCode::MessageSizeTooLarge).to_string()
            ))
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::UnknownTopic), "t"),
            Failure::Poison(Reason::UnknownTopic("t".into()))
        );
        assert!(matches!(
            classify(&e(RDKafkaErrorCode::TopicAuthorizationFailed), "t"),
            Failure::Poison(Reason::Denied(_))
        ));
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
}
