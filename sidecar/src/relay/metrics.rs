//! The relay's Prometheus metrics (served on `/metrics` by `crate::telemetry`): backlog and
//! its age, what was published, dead-lettered and failed, batch latency, and leadership.
//! Labels are bounded (a reason kind, never a key, topic or id).

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Batch latency buckets: 1 ms to ~16 s, doubling; the 50 ms target sits mid-range.
const BATCH_SECONDS_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 15);

/// The `reason` label of failure counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A poison kind (`not_envelope`, `unknown_topic`, ...).
    pub reason: &'static str,
}

/// Every metric of the relay.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// 1 while this relay holds its table's lock.
    pub leader: Gauge,
    /// Unpublished rows (refreshed periodically by the leader).
    pub backlog_rows: Gauge,
    /// Age of the oldest unpublished row in seconds.
    pub oldest_unpublished_age: Gauge<f64, AtomicU64>,
    /// Rows confirmed by Kafka on their own topic.
    pub published: Counter,
    /// Poison rows confirmed on the dead-letter topic, by reason.
    pub dead_lettered: Family<ReasonLabel, Counter>,
    /// Poison rows marked failed in the table, by reason.
    pub failed: Family<ReasonLabel, Counter>,
    /// Keys waiting after a transient failure.
    pub held_keys: Gauge,
    /// Rows held because their topic does not exist or may not be written yet, by reason
    /// (`unknown_topic`, `denied`): a deploy whose topic or ACLs are not there yet.
    pub topic_waits: Family<ReasonLabel, Counter>,
    /// Time from reading a batch to marking it.
    pub batch_duration: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (prefix `ferry_` comes from it).
    pub fn register(registry: &mut Registry) -> Self {
        let (start, factor, count) = BATCH_SECONDS_BUCKETS;
        let metrics = Self {
            leader: Gauge::default(),
            backlog_rows: Gauge::default(),
            oldest_unpublished_age: Gauge::default(),
            published: Counter::default(),
            dead_lettered: Family::default(),
            failed: Family::default(),
            held_keys: Gauge::default(),
            topic_waits: Family::default(),
            batch_duration: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(start, factor, count),
            ),
        };
        registry.register(
            "relay_leader",
            "1 while this relay publishes its outbox table",
            metrics.leader.clone(),
        );
        registry.register(
            "outbox_backlog_rows",
            "Unpublished outbox rows",
            metrics.backlog_rows.clone(),
        );
        registry.register(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row",
            metrics.oldest_unpublished_age.clone(),
        );
        registry.register(
            "outbox_published",
            "Outbox rows confirmed by Kafka",
            metrics.published.clone(),
        );
        registry.register(
            "outbox_dead_lettered",
            "Poison outbox rows written to the dead-letter topic",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "outbox_failed",
            "Poison outbox rows marked failed in the table",
            metrics.failed.clone(),
        );
        registry.register(
            "relay_held_keys",
            "Keys waiting after a transient publish failure",
            metrics.held_keys.clone(),
        );
        registry.register(
            "relay_topic_waits",
            "Outbox rows held because their topic does not exist or may not be written yet",
            metrics.topic_waits.clone(),
        );
        registry.register(
            "relay_batch_duration_seconds",
            "Time from reading a batch to marking it",
            metrics.batch_duration.clone(),
        );
        metrics
    }
}
