//! The worker's Prometheus metrics (DESIGN §8): records processed by outcome, delivery
//! latency, deliveries in flight, copies Kafka refused for good, and consumer lag per
//! partition. Labels are bounded: outcome and copy names and topic/partition, never keys or
//! offsets.

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// How a record finished.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// The service answered 2xx.
    delivered,
    /// Skipped: its event id was already delivered for this group.
    duplicate,
    /// Copied to a retry tier.
    retried,
    /// Copied to the dead-letter topic.
    dead_lettered,
    /// Its copies were refused for good; a reference (no payload) is in the dead-letter topic.
    referenced,
    /// Even its reference copy was refused: it exists only in its own topic (logged at ERROR).
    lost,
    /// Dropped unfinished: its partition was revoked or the worker stopped.
    abandoned,
    /// Skipped: a tombstone, which carries no event.
    tombstone,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Which kind of copy Kafka refused.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CopyKind {
    /// A copy to a retry tier.
    retry,
    /// A copy to the dead-letter topic (full or reference).
    dead_letter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    copy: CopyKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// All worker metrics, registered once under the `ferry_worker_` prefix.
#[derive(Debug, Clone)]
pub struct Metrics {
    processed: Family<OutcomeLabels, Counter>,
    copies_refused: Family<CopyLabels, Counter>,
    latency: Histogram,
    in_flight: Gauge,
    lag: Family<PartitionLabels, Gauge>,
    coordinator_requests: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            processed: Family::default(),
            copies_refused: Family::default(),
            // 1 ms .. ~16 s, doubling: local services answer in ms, `--timeout` caps at 10 s.
            latency: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 15,
            )),
            in_flight: Gauge::default(),
            lag: Family::default(),
            coordinator_requests: Gauge::default(),
        };
        // Every outcome and copy kind starts at 0: an alert on `increase()` then sees the
        // first lost record, which a series that appears at 1 never shows.
        for outcome in [
            Outcome::delivered,
            Outcome::duplicate,
            Outcome::retried,
            Outcome::dead_lettered,
            Outcome::referenced,
            Outcome::lost,
            Outcome::abandoned,
            Outcome::tombstone,
        ] {
            let _ = metrics.processed.get_or_create(&OutcomeLabels { outcome });
        }
        for copy in [CopyKind::retry, CopyKind::dead_letter] {
            let _ = metrics.copies_refused.get_or_create(&CopyLabels { copy });
        }
        let sub = registry.sub_registry_with_prefix("worker");
        sub.register(
            "processed",
            "Records finished, by outcome",
            metrics.processed.clone(),
        );
        sub.register(
            "copies_refused",
            "Retry or dead-letter copies Kafka refused for good (too large, invalid); alert on any",
            metrics.copies_refused.clone(),
        );
        sub.register(
            "delivery_duration_seconds",
            "Time of one HTTP delivery attempt",
            metrics.latency.clone(),
        );
        sub.register(
            "in_flight_records",
            "Deliveries running now",
            metrics.in_flight.clone(),
        );
        sub.register(
            "lag_records",
            "Records behind the partition's end (librdkafka statistics)",
            metrics.lag.clone(),
        );
        sub.register(
            "coordinator_requests",
            "Requests to the group coordinator (commits, heartbeats) queued or awaiting their answer (librdkafka statistics); a growing number means the coordinator falls behind",
            metrics.coordinator_requests.clone(),
        );
        metrics
    }

    /// Counts one finished record.
    pub fn processed(&self, outcome: Outcome) {
        self.processed
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one copy refused for good.
    pub fn copy_refused(&self, copy: CopyKind) {
        self.copies_refused
            .get_or_create(&CopyLabels { copy })
            .inc();
    }

    /// Observes one delivery attempt's duration.
    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Sets the number of running deliveries.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets one partition's lag.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_owned(),
                partition,
            })
            .set(lag);
    }

    /// Sets the number of requests to the group coordinator not yet answered.
    pub fn set_coordinator_requests(&self, n: i64) {
        self.coordinator_requests.set(n);
    }
}
