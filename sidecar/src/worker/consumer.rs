//! The worker's Kafka consumer: its settings and librdkafka's callbacks into the worker.
//!
//! The settings are librdkafka's at-least-once pattern (the worker stores and commits offsets
//! itself, see [`super::commit`]) with a prefetch sized to `--max-in-flight`, so a busy worker
//! stays within DESIGN §10's memory target. The callbacks ([`WorkerContext`]) run inside the
//! consumer's poll, on the run loop's task: rebalances and commit answers go to the shared
//! [`Assignment`], librdkafka's statistics to the lag and coordinator gauges.

use std::sync::Arc;

use rdkafka::{
    ClientConfig, ClientContext, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    types::RDKafkaErrorCode,
};

use super::{assignment::Assignment, config::WorkerArgs, intake};

/// librdkafka statistics interval, for the lag gauge (Prometheus scrapes every 15-30 s).
const STATS_INTERVAL_MS: &str = "5000";
/// Bytes of read-ahead librdkafka may hold per record the worker may have in flight: an
/// assumed typical event of 1 KiB, times 4 so fetches stay ahead of deliveries.
const PREFETCH_BYTES_PER_RECORD: usize = 4 * 1024;
/// Bounds on librdkafka's prefetch queue in KiB: at least one default
/// `max.partition.fetch.bytes` (1 MiB), at most 16 MiB (its 64 MiB default alone exceeds
/// DESIGN §10's 30 MiB RSS target).
const PREFETCH_KBYTES_MIN: usize = 1024;
const PREFETCH_KBYTES_MAX: usize = 16 * 1024;
/// `max.partition.fetch.bytes`: a quarter of librdkafka's 1 MiB default, so a fetch over a few
/// partitions stays within the prefetch bound (a bigger record is still returned whole).
const PARTITION_FETCH_BYTES: &str = "262144";
/// `fetch.queue.backoff.ms`: how long librdkafka waits before fetching a partition again once
/// its queue reached the prefetch bound above. Its 1,000 ms default is for a queue the
/// application drains slowly; the run loop drains it at once into the intake, so with the
/// bound at ~one fetch the default stalled every partition for up to 1 s per fetch (librdkafka's
/// CONFIGURATION.md says to lower it in exactly that case): `make bench-worker` went from
/// ~6,300 to ~16,000 events/s with ordering=key. 10 ms is a few fetch round trips on a local
/// broker, so a busy partition is fetched again about as soon as its records are taken.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The consumer's settings: librdkafka's at-least-once pattern (offsets stored by the worker
/// once done, committed by librdkafka in the background and on request) and a prefetch bounded
/// by `--max-in-flight`.
pub fn settings(base: &ClientConfig, args: &WorkerArgs) -> ClientConfig {
    let prefetch_kbytes = (args.max_in_flight * PREFETCH_BYTES_PER_RECORD / 1024)
        .clamp(PREFETCH_KBYTES_MIN, PREFETCH_KBYTES_MAX);
    let mut config = base.clone();
    config
        .set("group.id", &args.group)
        // The worker commits what it stored itself, one request at a time (see
        // [`super::commit`]; on revocation and close synchronously): librdkafka's background
        // commit sends a request every interval whether or not the last one was answered, and
        // a slow coordinator then falls ever further behind. librdkafka refuses to store
        // offsets of partitions no longer assigned.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", args.start_from.as_str())
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", prefetch_kbytes.to_string())
        // librdkafka prefetches until either bound is met; its 100,000-record default would
        // hold far more small records than the worker can have in flight.
        .set(
            "queued.min.messages",
            intake::high_mark(args.max_in_flight).to_string(),
        )
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("max.partition.fetch.bytes", PARTITION_FETCH_BYTES)
        // librdkafka raises it to at least `message.max.bytes` (1 MB by default) by itself.
        .set("fetch.max.bytes", (prefetch_kbytes * 1024).to_string())
        // Range assignment gives one member the same partition number of a topic and of its
        // tiers, so a key's main and tier records meet in one worker's bookkeeping.
        .set("partition.assignment.strategy", "range");
    // `--kafka-option` wins over these defaults, as it does over the shared settings.
    for (k, v) in &args.kafka.options {
        config.set(k, v);
    }
    config
}

/// librdkafka's callbacks for the worker's consumer.
pub struct WorkerContext {
    /// The state the callbacks act on.
    pub assignment: Arc<Assignment>,
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for the internal UA partition and for unknown lag.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.assignment
                        .metrics
                        .set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
        // librdkafka talks to the coordinator through a logical broker of this name.
        if let Some(coordinator) = statistics
            .brokers
            .values()
            .find(|b| b.name.starts_with("GroupCoordinator"))
        {
            self.assignment
                .metrics
                .set_coordinator_requests(coordinator.outbuf_cnt + coordinator.waitresp_cnt);
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.assignment.revoke(consumer, list),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            // librdkafka keeps a partition's pause flag across revoke and re-assign; a new
            // assignment starts with a fresh, unpaused intake, so resume it explicitly.
            if let Err(e) = consumer.resume(list) {
                tracing::warn!(error = %e, "cannot resume newly assigned partitions");
            }
            self.assignment.assign(list);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let ok = match &result {
            Ok(()) => true,
            // Nothing was waiting: an earlier commit covered it already. Not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
            Err(e) => {
                // The offsets are offered again; a crash before that redelivers them.
                tracing::warn!(error = %e, "offset commit failed");
                false
            }
        };
        tracing::debug!(offsets = ?offsets, ok, "commit answered");
        self.assignment.commit_answered(offsets, ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::config::testing::minimal as args;

    fn get(config: &ClientConfig, key: &str) -> String {
        config.get(key).unwrap_or_default().to_owned()
    }

    #[test]
    fn prefetch_follows_max_in_flight_within_its_bounds() {
        let base = ClientConfig::new();
        let small = settings(&base, &args(&["--max-in-flight=1"]));
        assert_eq!(get(&small, "queued.max.messages.kbytes"), "1024");
        assert_eq!(get(&small, "queued.min.messages"), "256");
        let middle = settings(&base, &args(&["--max-in-flight=1000"]));
        assert_eq!(get(&middle, "queued.max.messages.kbytes"), "4000");
        assert_eq!(get(&middle, "fetch.max.bytes"), "4096000");
        assert_eq!(get(&middle, "queued.min.messages"), "1000");
        let large = settings(&base, &args(&["--max-in-flight=100000"]));
        assert_eq!(get(&large, "queued.max.messages.kbytes"), "16384");
    }

    #[test]
    fn the_worker_commits_itself_and_kafka_options_win() {
        let base = ClientConfig::new();
        let plain = settings(&base, &args(&[]));
        assert_eq!(get(&plain, "group.id"), "g");
        assert_eq!(get(&plain, "enable.auto.commit"), "false");
        assert_eq!(get(&plain, "enable.auto.offset.store"), "false");
        assert_eq!(get(&plain, "auto.offset.reset"), "earliest");
        assert_eq!(get(&plain, "partition.assignment.strategy"), "range");
        let overridden = settings(&base, &args(&["--kafka-option=fetch.queue.backoff.ms=50"]));
        assert_eq!(get(&overridden, "fetch.queue.backoff.ms"), "50");
    }
}
