//! Lag rounds: every `--lag-interval`, the lag of every EventConsumer at once, into a
//! [`LagBook`] the reconciler reads (status, scaling), a gauge, and a wake-up for each
//! consumer whose lag changed.
//!
//! One round costs one ListOffsets for every partition of every consumed topic, the
//! committed offsets of every group (pipelined, one request per group: librdkafka's limit),
//! and, only for partitions a group has never committed that start from the earliest record,
//! one more ListOffsets for their start. Lag per partition is `end - committed`; the pure
//! [`measure`] also finds partitions that are stuck. Two more ListOffsets (end and start of
//! every dead-letter partition) count the records each dead-letter topic holds, so the status
//! and a gauge show dead letters piling up without anyone reading Kafka from a laptop.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use super::scaler::LagInput;
use crate::{
    api::{EventConsumer, EventTopic, Lag, StartFrom, StuckPartition},
    identity::consumer_grants as grants,
    kafka::{
        KafkaAdmin,
        offsets::{Partition, Spec},
    },
    metrics::Metrics,
};

/// A partition whose committed offset stayed the same for this many rounds while it had lag
/// and workers were ready counts as stuck: one round is too few (a delivery may take a whole
/// `--timeout`, a retry backoff longer), three rounds of the 10 s default are 30 s.
const STUCK_ROUNDS: u32 = 3;

/// What one lag round found for one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// For the status.
    pub lag: Lag,
    /// Lag of the partitions that are not stuck.
    pub movable: i64,
    /// Records the dead-letter topic holds (`None`: not measured this round).
    pub dead_letters: Option<i64>,
}

impl Observation {
    /// What the scaler reads.
    pub fn scaler_input(&self) -> LagInput {
        LagInput {
            movable: self.movable,
            total: self.lag.total,
        }
    }
}

/// The last observation per consumer, shared by the lag rounds (writer) and the reconciler.
#[derive(Clone, Default)]
pub struct LagBook(Arc<Mutex<HashMap<ObjectRef<EventConsumer>, Observation>>>);

impl LagBook {
    /// The last observation of `key`.
    pub fn get(&self, key: &ObjectRef<EventConsumer>) -> Option<Observation> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Records an observation; whether it differs from the last one.
    pub fn set(&self, key: ObjectRef<EventConsumer>, observation: Observation) -> bool {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        book.insert(key, observation.clone()) != Some(observation)
    }

    /// Drops a deleted consumer.
    pub fn forget(&self, key: &ObjectRef<EventConsumer>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// How long each partition's committed offset has stood still, carried between rounds.
pub type Progress = BTreeMap<Partition, (i64, u32)>;

/// One consumer's lag from the offsets of one round — pure. `partitions` are the consumed
/// partitions; a partition without a committed offset counts from `start` (its earliest
/// offset) for `StartFrom::Earliest` and has no lag for `Latest`. `workers_ready` says whether
/// any worker ran since the last round: only then can a still offset mean a stuck partition.
pub fn measure(
    partitions: &[Partition],
    end: &BTreeMap<Partition, i64>,
    committed: &BTreeMap<Partition, i64>,
    start: &BTreeMap<Partition, i64>,
    start_from: StartFrom,
    workers_ready: bool,
    progress: &Progress,
) -> (Observation, Progress) {
    let mut lag = Lag::default();
    let mut movable = 0;
    let mut next = Progress::new();
    for key in partitions {
        let Some(&end) = end.get(key) else { continue };
        let (behind, committed) = match (committed.get(key), start_from) {
            (Some(&c), _) => ((end - c).max(0), Some(c)),
            (None, StartFrom::Earliest) => {
                ((end - start.get(key).copied().unwrap_or(0)).max(0), None)
            }
            (None, StartFrom::Latest) => (0, None),
        };
        lag.total += behind;
        *lag.by_topic.entry(key.0.clone()).or_default() += behind;
        let still = match (committed, progress.get(key)) {
            (Some(c), Some(&(before, rounds))) if c == before && behind > 0 && workers_ready => {
                rounds + 1
            }
            _ => 0,
        };
        if let Some(c) = committed {
            next.insert(key.clone(), (c, still));
        }
        if still >= STUCK_ROUNDS {
            lag.stuck.push(StuckPartition {
                topic: key.0.clone(),
                partition: key.1,
                committed: committed.unwrap_or_default(),
                lag: behind,
            });
        } else {
            movable += behind;
        }
    }
    (
        Observation {
            lag,
            movable,
            dead_letters: None,
        },
        next,
    )
}

/// Records `partitions` hold between `start` and `end` — pure; `None` unless every partition
/// was measured both ways (a half-measured topic would show a number that is simply wrong).
pub fn held(
    partitions: &[Partition],
    start: &BTreeMap<Partition, i64>,
    end: &BTreeMap<Partition, i64>,
) -> Option<i64> {
    if partitions.is_empty() {
        return None;
    }
    partitions.iter().try_fold(0, |sum, key| {
        Some(sum + (end.get(key)? - start.get(key)?).max(0))
    })
}

/// The partitions of a consumer's dead-letter topic: a named one has its EventTopic's count;
/// the managed `<group>.dlq` has the widest source's, as the controller creates and grows it.
fn dead_letter_partitions(
    consumer: &EventConsumer,
    sources: &[Partition],
    topics: &[Arc<EventTopic>],
) -> Vec<Partition> {
    let Some(status) = consumer.status.as_ref().and_then(|s| s.topics.as_ref()) else {
        return Vec::new();
    };
    let Some(name) = status.dead_letter.as_ref() else {
        return Vec::new();
    };
    let count = if status.dead_letter_managed {
        sources.iter().map(|(_, p)| p + 1).max().unwrap_or(0)
    } else {
        let ns = consumer.namespace();
        topics
            .iter()
            .find(|t| t.namespace() == ns && t.kafka_topic_name() == *name)
            .map_or(0, |t| partition_count(t))
    };
    (0..count).map(|p| (name.clone(), p)).collect()
}

/// An EventTopic's partitions as Kafka has them (status), else as asked (spec).
fn partition_count(topic: &EventTopic) -> i32 {
    topic
        .status
        .as_ref()
        .and_then(|s| s.partitions)
        .unwrap_or(topic.spec.partitions)
}

/// The Kafka topics and partition counts a consumer reads, from its status and the EventTopics.
fn partitions_of(consumer: &EventConsumer, topics: &[Arc<EventTopic>]) -> Vec<Partition> {
    let Some(sources) = consumer.status.as_ref().and_then(|s| s.topics.as_ref()) else {
        return Vec::new();
    };
    let ns = consumer.namespace();
    sources
        .source
        .iter()
        .flat_map(|name| {
            let count = topics
                .iter()
                .find(|t| t.namespace() == ns && t.kafka_topic_name() == *name)
                .map_or(0, |t| partition_count(t));
            (0..count).map(move |p| (name.clone(), p))
        })
        .collect()
}

/// Runs lag rounds every `interval` until dropped.
pub async fn run(
    admin: KafkaAdmin,
    consumers: Store<EventConsumer>,
    topics: Store<EventTopic>,
    book: LagBook,
    metrics: Metrics,
    interval: Duration,
    wake: UnboundedSender<ObjectRef<EventConsumer>>,
) {
    let mut progress: HashMap<ObjectRef<EventConsumer>, Progress> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = round(
            &admin,
            &consumers,
            &topics,
            &book,
            &metrics,
            &wake,
            &mut progress,
        )
        .await
        {
            // The next round tries again; the status keeps the last lag meanwhile.
            warn!(error = %ferry_common::errors::chain(&e), "lag round failed");
        }
    }
}

async fn round(
    admin: &KafkaAdmin,
    consumers: &Store<EventConsumer>,
    topics: &Store<EventTopic>,
    book: &LagBook,
    metrics: &Metrics,
    wake: &UnboundedSender<ObjectRef<EventConsumer>>,
    progress: &mut HashMap<ObjectRef<EventConsumer>, Progress>,
) -> crate::kafka::Result<()> {
    let topics = topics.state();
    let consumers: Vec<(Arc<EventConsumer>, String, Vec<Partition>)> = consumers
        .state()
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            let group = grants::group_id(&c);
            let partitions = partitions_of(&c, &topics);
            (c, group, partitions)
        })
        .filter(|(_, _, p)| !p.is_empty())
        .collect();
    if consumers.is_empty() {
        return Ok(());
    }
    let all: Vec<Partition> = consumers
        .iter()
        .flat_map(|(_, _, p)| p.iter().cloned())
        .collect();
    let end = admin.list_offsets(&all, Spec::Latest).await?;
    let mut groups: Vec<String> = consumers.iter().map(|(_, g, _)| g.clone()).collect();
    groups.sort();
    groups.dedup();
    let committed = admin.committed_offsets(&groups).await?;
    let none = BTreeMap::new();
    let uncommitted: Vec<Partition> = consumers
        .iter()
        .filter(|(c, _, _)| c.spec.start_from == StartFrom::Earliest)
        .flat_map(|(_, g, p)| {
            let done = committed
                .get(g)
                .and_then(|r| r.as_ref().ok())
                .unwrap_or(&none);
            p.iter()
                .filter(|k| !done.contains_key(*k))
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    let start = admin.list_offsets(&uncommitted, Spec::Earliest).await?;
    let dead_letter: Vec<Vec<Partition>> = consumers
        .iter()
        .map(|(c, _, sources)| dead_letter_partitions(c, sources, &topics))
        .collect();
    let (dl_start, dl_end) = dead_letter_offsets(admin, dead_letter.concat()).await;
    for ((consumer, group, partitions), dead_letter) in consumers.iter().zip(&dead_letter) {
        let done = match committed.get(group) {
            Some(Ok(done)) => done,
            Some(Err(refusal)) => {
                debug!(group, %refusal, "no committed offsets for group");
                continue;
            }
            None => &none,
        };
        let key = ObjectRef::from_obj(consumer.as_ref());
        let workers_ready = consumer
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            > 0;
        let before = progress.remove(&key).unwrap_or_default();
        let (mut observation, after) = measure(
            partitions,
            &end,
            done,
            &start,
            consumer.spec.start_from,
            workers_ready,
            &before,
        );
        observation.dead_letters = held(dead_letter, &dl_start, &dl_end);
        progress.insert(key.clone(), after);
        let (namespace, name) = (
            consumer.namespace().unwrap_or_default(),
            consumer.name_any(),
        );
        metrics.set_consumer_lag(&namespace, &name, observation.lag.total);
        if let Some(records) = observation.dead_letters {
            metrics.set_consumer_dead_letters(&namespace, &name, records);
        }
        if book.set(key.clone(), observation) {
            let _ = wake.send(key);
        }
    }
    Ok(())
}

/// The start and end offsets of the dead-letter partitions. A failure here costs only this
/// round's dead-letter counts (logged), never the lag the scaling needs.
async fn dead_letter_offsets(
    admin: &KafkaAdmin,
    mut partitions: Vec<Partition>,
) -> (BTreeMap<Partition, i64>, BTreeMap<Partition, i64>) {
    partitions.sort();
    partitions.dedup();
    let (start, end) = tokio::join!(
        admin.list_offsets(&partitions, Spec::Earliest),
        admin.list_offsets(&partitions, Spec::Latest)
    );
    match (start, end) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(e), _) | (_, Err(e)) => {
            warn!(
                error = %ferry_common::errors::chain(&e),
                partitions = partitions.len(),
                first = ?partitions.first(),
                "cannot count dead letters this round"
            );
            (BTreeMap::new(), BTreeMap::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str, n: i32) -> Partition {
        (t.to_owned(), n)
    }

    fn map(entries: &[(Partition, i64)]) -> BTreeMap<Partition, i64> {
        entries.iter().cloned().collect()
    }

    #[test]
    fn lag_is_end_minus_committed_by_topic() {
        let parts = [p("a", 0), p("a", 1), p("b", 0)];
        let end = map(&[(p("a", 0), 100), (p("a", 1), 50), (p("b", 0), 7)]);
        let committed = map(&[(p("a", 0), 90), (p("a", 1), 50), (p("b", 0), 0)]);
        let (o, _) = measure(
            &parts,
            &end,
            &committed,
            &BTreeMap::new(),
            StartFrom::Earliest,
            true,
            &Progress::new(),
        );
        assert_eq!(o.lag.total, 17);
        assert_eq!(o.lag.by_topic["a"], 10);
        assert_eq!(o.lag.by_topic["b"], 7);
        assert_eq!(o.movable, 17);
        assert!(o.lag.stuck.is_empty());
    }

    #[test]
    fn uncommitted_partitions_count_from_their_start_or_not_at_all() {
        let parts = [p("a", 0)];
        let end = map(&[(p("a", 0), 100)]);
        let start = map(&[(p("a", 0), 40)]);
        let (o, _) = measure(
            &parts,
            &end,
            &BTreeMap::new(),
            &start,
            StartFrom::Earliest,
            false,
            &Progress::new(),
        );
        assert_eq!(o.lag.total, 60, "retention deleted the first 40");
        let (o, _) = measure(
            &parts,
            &end,
            &BTreeMap::new(),
            &start,
            StartFrom::Latest,
            false,
            &Progress::new(),
        );
        assert_eq!(o.lag.total, 0);
    }

    #[test]
    fn a_still_offset_with_lag_and_running_workers_is_stuck_after_some_rounds() {
        let parts = [p("a", 0), p("a", 1)];
        let end = map(&[(p("a", 0), 100), (p("a", 1), 10)]);
        let committed = map(&[(p("a", 0), 60), (p("a", 1), 10)]);
        let mut progress = Progress::new();
        let mut last = None;
        for _ in 0..=STUCK_ROUNDS {
            let (o, next) = measure(
                &parts,
                &end,
                &committed,
                &BTreeMap::new(),
                StartFrom::Earliest,
                true,
                &progress,
            );
            progress = next;
            last = Some(o);
        }
        let o = last.expect("measured");
        assert_eq!(
            o.lag.stuck,
            [StuckPartition {
                topic: "a".into(),
                partition: 0,
                committed: 60,
                lag: 40
            }]
        );
        assert_eq!(o.movable, 0, "stuck lag adds no workers");
        assert_eq!(o.lag.total, 40, "but still shows");
        // It moves again: no longer stuck.
        let moved = map(&[(p("a", 0), 61), (p("a", 1), 10)]);
        let (o, _) = measure(
            &parts,
            &end,
            &moved,
            &BTreeMap::new(),
            StartFrom::Earliest,
            true,
            &progress,
        );
        assert!(o.lag.stuck.is_empty());
        assert_eq!(o.movable, 39);
    }

    #[test]
    fn without_workers_nothing_is_stuck() {
        let parts = [p("a", 0)];
        let end = map(&[(p("a", 0), 100)]);
        let committed = map(&[(p("a", 0), 60)]);
        let mut progress = Progress::new();
        for _ in 0..=STUCK_ROUNDS + 1 {
            let (o, next) = measure(
                &parts,
                &end,
                &committed,
                &BTreeMap::new(),
                StartFrom::Earliest,
                false,
                &progress,
            );
            assert!(o.lag.stuck.is_empty(), "scaled to zero, not stuck");
            progress = next;
        }
    }

    #[test]
    fn dead_letters_held_count_only_when_every_partition_was_measured() {
        let parts = [p("d", 0), p("d", 1)];
        let start = map(&[(p("d", 0), 10), (p("d", 1), 0)]);
        let end = map(&[(p("d", 0), 15), (p("d", 1), 2)]);
        assert_eq!(held(&parts, &start, &end), Some(7));
        let half = map(&[(p("d", 0), 15)]);
        assert_eq!(
            held(&parts, &start, &half),
            None,
            "a partition not measured"
        );
        assert_eq!(held(&[], &start, &end), None, "no dead-letter topic");
    }

    fn consumer(dead_letter: &str, managed: bool) -> EventConsumer {
        let mut c: EventConsumer = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop"},
            "spec": {"topics": ["orders"], "serviceAccount": "notify",
                     "delivery": {"http": {"url": "http://x/"}}},
        }))
        .expect("consumer");
        c.status = Some(crate::api::EventConsumerStatus {
            topics: Some(crate::api::ConsumerTopics {
                source: vec!["orders.v1".into()],
                dead_letter: Some(dead_letter.into()),
                dead_letter_managed: managed,
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    fn topic(name: &str, kafka: &str, partitions: i32) -> Arc<EventTopic> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"topicName": kafka, "partitions": partitions},
            }))
            .expect("topic"),
        )
    }

    #[test]
    fn a_managed_dead_letter_topic_has_the_widest_sources_partitions() {
        let sources = [p("orders.v1", 0), p("orders.v1", 1), p("orders.v1", 2)];
        let got = dead_letter_partitions(&consumer("shop.notify.dlq", true), &sources, &[]);
        assert_eq!(
            got,
            [
                p("shop.notify.dlq", 0),
                p("shop.notify.dlq", 1),
                p("shop.notify.dlq", 2)
            ]
        );
    }

    #[test]
    fn a_named_dead_letter_topic_has_its_event_topics_partitions() {
        let topics = [topic("orders", "orders.v1", 3), topic("dlq", "dlq.v1", 2)];
        let sources = [p("orders.v1", 0), p("orders.v1", 1), p("orders.v1", 2)];
        let got = dead_letter_partitions(&consumer("dlq.v1", false), &sources, &topics);
        assert_eq!(got, [p("dlq.v1", 0), p("dlq.v1", 1)]);
        let missing = dead_letter_partitions(&consumer("gone.v1", false), &sources, &topics);
        assert!(
            missing.is_empty(),
            "an EventTopic not in the cache is not counted"
        );
    }
}
