//! The relay's Prometheus metrics (served on `/metrics` by the common telemetry server), all
//! named `ferry_relay_*`: backlog and its age, what was published, dead-lettered and failed,
//! topic waits, batch latency, and leadership. Labels are bounded (a reason kind, never a key,
//! topic or id).
//!
//! A batch's outcome is logged and counted here and nowhere else ([`Metrics::record`]): each
//! poison row set aside and each topic not writable yet gets its log line and its counter
//! together. Levels: WARN for what is retried or has a home (a row waiting for its topic, a
//! copy on the dead-letter topic); ERROR for a row left in the table for a person to act on
//! (marked failed in `publish_error`).

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::batch::BatchOutcome;

/// Batch latency buckets: 1 ms to ~16 s, doubling; the 50 ms target sits mid-range.
const BATCH_SECONDS_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 15);

/// The `reason` label of failure counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A poison kind (`not_envelope`, `too_large`, ...) or a wait (`unknown_topic`, `denied`).
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
    /// Creates the metrics and registers them in `registry` (prefix `ferry_` comes from it;
    /// every name here starts with `relay_`).
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
        // Every poison reason starts at 0: an alert on `increase()` then sees the first failed
        // row, which a series that appears at 1 never shows.
        for reason in super::failure::Reason::LABELS {
            let _ = metrics.dead_lettered.get_or_create(&ReasonLabel { reason });
            let _ = metrics.failed.get_or_create(&ReasonLabel { reason });
        }
        registry.register(
            "relay_leader",
            "1 while this relay publishes its outbox table",
            metrics.leader.clone(),
        );
        registry.register(
            "relay_backlog_rows",
            "Unpublished outbox rows",
            metrics.backlog_rows.clone(),
        );
        registry.register(
            "relay_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row",
            metrics.oldest_unpublished_age.clone(),
        );
        registry.register(
            "relay_published",
            "Outbox rows confirmed by Kafka",
            metrics.published.clone(),
        );
        registry.register(
            "relay_dead_lettered",
            "Poison outbox rows written to the dead-letter topic",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "relay_failed",
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

    /// Logs and counts what became of a batch: published rows, each poison row set aside,
    /// and each topic whose rows wait.
    pub fn record(&self, outcome: &BatchOutcome) {
        self.published.inc_by(outcome.published.len() as u64);
        for row in &outcome.dead_lettered {
            tracing::warn!(
                outbox_id = row.id,
                event_id = row.event_id.as_deref().unwrap_or(""),
                topic = row.topic.as_deref().unwrap_or(""),
                reason = %row.reason,
                "poison row written to the dead-letter topic"
            );
            self.dead_lettered
                .get_or_create(&ReasonLabel {
                    reason: row.reason.label(),
                })
                .inc();
        }
        for (row, text) in &outcome.failed {
            tracing::error!(
                outbox_id = row.id,
                event_id = row.event_id.as_deref().unwrap_or(""),
                topic = row.topic.as_deref().unwrap_or(""),
                reason = %text,
                "poison row kept in the table with publish_error; it waits for a person"
            );
            self.failed
                .get_or_create(&ReasonLabel {
                    reason: row.reason.label(),
                })
                .inc();
        }
        for wait in &outcome.unavailable {
            tracing::warn!(topic = %wait.topic, reason = wait.label, error = %wait.text, rows = wait.rows, "topic not writable yet; holding its rows and retrying with backoff");
            self.topic_waits
                .get_or_create(&ReasonLabel { reason: wait.label })
                .inc_by(wait.rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{batch::SetAside, failure::Reason};

    #[test]
    fn every_relay_metric_is_named_ferry_relay() {
        let mut registry = Registry::with_prefix("ferry");
        let metrics = Metrics::register(&mut registry);
        let row = SetAside {
            id: 1,
            event_id: None,
            topic: None,
            reason: Reason::MissingTopic,
        };
        metrics.record(&BatchOutcome {
            published: vec![2],
            dead_lettered: vec![row.clone()],
            failed: vec![(row, "missing".into())],
            ..BatchOutcome::default()
        });
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert!(!names.is_empty());
        for line in names {
            assert!(line.starts_with("ferry_relay_"), "{line}");
        }
        assert!(text.contains("ferry_relay_published_total 1"), "{text}");
        assert!(
            text.contains(r#"ferry_relay_failed_total{reason="missing_topic"} 1"#),
            "{text}"
        );
    }
}
