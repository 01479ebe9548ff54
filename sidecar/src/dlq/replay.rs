//! `dlq replay`: sends selected dead letters back to their consumer, each keeping its key,
//! payload, partition and event id, so the worker's de-duplication (by event id) prevents a
//! second effect if a record is delivered twice.
//!
//! Where a record goes back to (the module's one decision, [`plan`], pure):
//! - the consumer's **first retry tier** of the record's original topic, on the original
//!   partition (a tier partition is worked with its source partition, so per-key order holds),
//!   due at once (`ferry-not-before` = now) and naming its origin (`ferry-original-*`), exactly
//!   as the worker writes a tier copy; only this consumer's group reads the tier, so no other
//!   consumer sees the replay. The consumer's own credential may write it.
//! - its **source topic** when it has no tiers, only with `--to-source`: every consumer group of
//!   that topic then receives the event again (those with idempotency skip it). It is written
//!   with the credential of one of the topic's producers, the only principals that may.
//!
//! The `ferry-*` headers the worker writes (attempts, error, group, …) are dropped, so the
//! replayed record starts with fresh attempts; headers the service or relay set are kept.
//! Records already in the [`ledger`](super::ledger) are skipped unless `--again`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_common::headers;
use futures::future::join_all;
use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use serde::Serialize;

use super::{
    dead_letter::DeadLetter,
    error::{Error, Result},
    ledger::Ledger,
    target::Target,
};
use crate::worker::retry::FERRY_HEADERS;

/// How long Kafka may take to acknowledge one replayed record (librdkafka's own default is
/// 300 s, far too long for a person waiting at a terminal).
const SEND_TIMEOUT_MS: &str = "30000";
/// Records sent between two ledger writes: a crash replays at most this many again (harmless,
/// de-duplicated), and the ledger is not rewritten for every record.
pub const LEDGER_EVERY: usize = 100;

/// Where replayed records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The first retry tier (the default; needs `spec.retry.delays`).
    FirstTier,
    /// The source topic (`--to-source`).
    Source,
}

/// One record to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Send {
    /// Its event id.
    pub event_id: Option<String>,
    /// Where it is in the dead-letter topic.
    pub from: Coordinates,
    /// The topic it goes to.
    pub topic: String,
    /// The partition it goes to (its original one).
    pub partition: i32,
    /// Its key.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    /// Its payload.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    /// Its headers.
    #[serde(skip)]
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record's place in a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coordinates {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl Coordinates {
    fn of(dl: &DeadLetter) -> Self {
        Self {
            topic: dl.topic.clone(),
            partition: dl.partition,
            offset: dl.offset,
        }
    }
}

/// A selected record that cannot be replayed, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Its event id.
    pub event_id: Option<String>,
    /// Where it is in the dead-letter topic.
    pub from: Coordinates,
    /// Why.
    pub reason: String,
}

/// What a replay does.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Records to send.
    pub sends: Vec<Send>,
    /// Selected records the ledger says were replayed before (skipped without `--again`).
    pub already_replayed: Vec<Coordinates>,
    /// Selected records that cannot be replayed.
    pub skipped: Vec<Skipped>,
}

/// What to do with `selected`: pure.
pub fn plan(
    selected: &[DeadLetter],
    consumer: &Target,
    destination: Destination,
    ledger: &Ledger,
    again: bool,
    now: SystemTime,
) -> Plan {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .to_string();
    let mut plan = Plan::default();
    for dl in selected {
        let from = Coordinates::of(dl);
        if !again && ledger.contains(&dl.topic, dl.partition, dl.offset) {
            plan.already_replayed.push(from);
            continue;
        }
        let skip = |reason: String| Skipped {
            event_id: dl.event_id.clone(),
            from: Coordinates::of(dl),
            reason,
        };
        if let Some(why) = &dl.copy_refused {
            plan.skipped.push(skip(format!(
                "a reference copy without payload (Kafka refused the full copy: {why}); the record is at {}/{}@{}",
                dl.original_topic.as_deref().unwrap_or("?"),
                dl.original_partition.unwrap_or(-1),
                dl.original_offset.unwrap_or(-1),
            )));
            continue;
        }
        let (Some(original), Some(partition)) = (&dl.original_topic, dl.original_partition) else {
            plan.skipped
                .push(skip("no ferry-original-topic/partition headers".into()));
            continue;
        };
        if !consumer.sources.contains(original) {
            plan.skipped.push(skip(format!(
                "its topic {original} is no longer consumed by {}",
                consumer.name
            )));
            continue;
        }
        let topic = match destination {
            Destination::Source => original.clone(),
            Destination::FirstTier => match consumer.first_tier(original) {
                Some(t) => t,
                None => {
                    plan.skipped
                        .push(skip("the consumer has no retry tier".into()));
                    continue;
                }
            },
        };
        let mut out: Vec<(String, Vec<u8>)> = dl
            .raw
            .headers
            .iter()
            .filter(|(k, _)| !FERRY_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect();
        if destination == Destination::FirstTier {
            out.push((headers::NOT_BEFORE.into(), now_ms.clone().into_bytes()));
            out.push((
                headers::ORIGINAL_TOPIC.into(),
                original.clone().into_bytes(),
            ));
            out.push((
                headers::ORIGINAL_PARTITION.into(),
                partition.to_string().into_bytes(),
            ));
            if let Some(offset) = dl.original_offset {
                out.push((
                    headers::ORIGINAL_OFFSET.into(),
                    offset.to_string().into_bytes(),
                ));
            }
        }
        plan.sends.push(Send {
            event_id: dl.event_id.clone(),
            from,
            topic,
            partition,
            key: dl.raw.key.clone(),
            payload: dl.raw.payload.clone(),
            headers: out,
        });
    }
    plan
}

/// A producer for replays: every replica acknowledges, idempotent, bounded in time.
pub fn producer(base: &ClientConfig) -> Result<FutureProducer> {
    base.clone()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", SEND_TIMEOUT_MS)
        .create()
        .map_err(|e| Error::kafka("creating the replay producer", e))
}

/// Sends `sends` in order, at most `rate` per second, calling `acked` after each batch with
/// the records Kafka acknowledged (so the caller records them), and stops at the first
/// failure, after reporting what was acknowledged before it.
pub async fn send<F, Fut>(
    producer: &FutureProducer,
    sends: &[Send],
    rate: Option<f64>,
    mut acked: F,
) -> Result<()>
where
    F: FnMut(Vec<Coordinates>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut pace = rate.filter(|r| *r > 0.0).map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    for batch in sends.chunks(LEDGER_EVERY) {
        let mut pending = Vec::with_capacity(batch.len());
        for s in batch {
            if let Some(p) = pace.as_mut() {
                p.tick().await;
            }
            let mut h = OwnedHeaders::new_with_capacity(s.headers.len());
            for (k, v) in &s.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&s.topic)
                .partition(s.partition)
                .headers(h);
            if let Some(k) = &s.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &s.payload {
                record = record.payload(p.as_slice());
            }
            pending.push(producer.send(record, Timeout::Never));
        }
        let results = join_all(pending).await;
        let mut done = Vec::new();
        let mut failure = None;
        for (s, r) in batch.iter().zip(results) {
            match r {
                Ok(_) => done.push(s.from.clone()),
                Err((e, _)) if failure.is_none() => {
                    failure = Some(Error::kafka(format!("replaying into {}", s.topic), e));
                }
                Err(_) => {}
            }
        }
        acked(done).await?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::dead_letter::tests::{ENVELOPE, record};

    fn consumer(delay: Option<&str>) -> Target {
        Target {
            name: "notify".into(),
            group: "shop.notify".into(),
            dead_letter_topic: "shop.notify.dlq".into(),
            sources: vec!["orders.v1".into()],
            first_delay: delay.map(str::to_owned),
        }
    }

    fn dead_letter(offset: i64, extra: &[(&str, &str)]) -> DeadLetter {
        let mut pairs = vec![
            (headers::EVENT_ID, "evt-1"),
            ("traceparent", "00-abc-def-01"),
            (headers::ERROR, "HTTP 422"),
            (headers::ORIGINAL_TOPIC, "orders.v1"),
            (headers::ORIGINAL_PARTITION, "2"),
            (headers::ORIGINAL_OFFSET, "41"),
            (headers::ATTEMPTS, "4"),
            (headers::GROUP, "shop.notify"),
            (headers::FAILED_AT, "2026-11-30T10:05:00Z"),
        ];
        pairs.extend_from_slice(extra);
        DeadLetter::from_message(&record(offset, &pairs, ENVELOPE))
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_000)
    }

    fn names(s: &Send) -> Vec<(&str, String)> {
        s.headers
            .iter()
            .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn a_dead_letter_goes_back_to_the_first_tier_as_the_worker_writes_a_tier_copy() {
        let p = plan(
            &[dead_letter(7, &[])],
            &consumer(Some("5s")),
            Destination::FirstTier,
            &Ledger::default(),
            false,
            at(),
        );
        let [s] = p.sends.as_slice() else {
            panic!("one send: {p:?}")
        };
        assert_eq!(s.topic, "orders.v1.shop.notify.retry.5s");
        assert_eq!(s.partition, 2);
        assert_eq!(s.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(s.payload.as_deref(), Some(ENVELOPE.as_bytes()));
        assert_eq!(
            names(s),
            [
                (headers::EVENT_ID, "evt-1".to_owned()),
                ("traceparent", "00-abc-def-01".to_owned()),
                (headers::NOT_BEFORE, "1800000000000".to_owned()),
                (headers::ORIGINAL_TOPIC, "orders.v1".to_owned()),
                (headers::ORIGINAL_PARTITION, "2".to_owned()),
                (headers::ORIGINAL_OFFSET, "41".to_owned()),
            ]
        );
    }

    #[test]
    fn to_the_source_only_the_records_own_headers_go() {
        let p = plan(
            &[dead_letter(7, &[])],
            &consumer(None),
            Destination::Source,
            &Ledger::default(),
            false,
            at(),
        );
        assert_eq!(p.sends[0].topic, "orders.v1");
        assert_eq!(p.sends[0].partition, 2);
        assert_eq!(
            names(&p.sends[0]),
            [
                (headers::EVENT_ID, "evt-1".to_owned()),
                ("traceparent", "00-abc-def-01".to_owned())
            ]
        );
    }

    #[test]
    fn the_ledger_skips_what_was_replayed_unless_again() {
        let mut ledger = Ledger::default();
        ledger.insert("shop.notify.dlq", 2, 7);
        let selected = [dead_letter(7, &[]), dead_letter(8, &[])];
        let c = consumer(Some("5s"));
        let p = plan(&selected, &c, Destination::FirstTier, &ledger, false, at());
        assert_eq!(p.sends.len(), 1);
        assert_eq!(p.sends[0].from.offset, 8);
        assert_eq!(p.already_replayed.len(), 1);
        let p = plan(&selected, &c, Destination::FirstTier, &ledger, true, at());
        assert_eq!(p.sends.len(), 2);
    }

    #[test]
    fn what_cannot_go_back_is_skipped_with_a_reason() {
        let reference = dead_letter(1, &[(headers::COPY_REFUSED, "MessageSizeTooLarge")]);
        let mut no_origin = dead_letter(2, &[]);
        no_origin.original_topic = None;
        let mut gone = dead_letter(3, &[]);
        gone.original_topic = Some("users.v1".into());
        let p = plan(
            &[reference, no_origin, gone, dead_letter(4, &[])],
            &consumer(None),
            Destination::FirstTier,
            &Ledger::default(),
            false,
            at(),
        );
        let reasons: Vec<&str> = p.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("reference copy"), "{reasons:?}");
        assert!(reasons[1].contains("no ferry-original"), "{reasons:?}");
        assert!(reasons[2].contains("no longer consumed"), "{reasons:?}");
        assert!(reasons[3].contains("no retry tier"), "{reasons:?}");
        assert!(p.sends.is_empty());
    }
}
