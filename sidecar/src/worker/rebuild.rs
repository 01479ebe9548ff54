//! Rebuilding the ordered-retry index after an assignment (DESIGN §5 "Ordered retries").
//!
//! [`super::retry::Parking`] lives in memory: after a crash, a rebalance or a restart, the
//! new owner of a partition does not know which keys have records waiting in its retry tiers,
//! and would let a key's new main-topic records overtake them. So when a main-topic partition
//! is assigned (with `ordering=key` or `partition`, and tiers), the worker first reads the same partition of
//! every tier topic from the group's committed offset to its end — exactly the records still
//! waiting — and only then lets that partition's main and tier records start. Reading happens
//! on a blocking thread with a short-lived consumer that joins no group, in attempts of
//! `--tier-scan-timeout` each that resume where the last one stopped.
//!
//! Before reading, the scan checks that the layout keeps a tier's partition P with the main
//! topic's partition P (see [`super::layout`]): equal partition counts, and every member of the
//! group subscribed to the same topics. Otherwise the partition waits, and the check is tried
//! again.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use ferry_common::headers;

use super::retry::{self, Origin};

/// Timeout of each metadata or offset request of a scan.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of a scan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the retry tiers")]
    Kafka(#[from] KafkaError),
    /// The tiers are not laid out so that their partition P is always worked with the main
    /// topic's partition P; the partition waits until they are.
    #[error("{0}")]
    Layout(String),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A record waiting in a tier: its key (if any), where it was first read, and the tier it is
/// in.
pub type Waiting = (Option<Vec<u8>>, Origin, usize);

/// The read-back of one main partition's tiers, resumable: an attempt that runs out of time
/// keeps what it read and where it stopped, and the next attempt goes on from there (a restart
/// from the committed offsets would never finish a tier larger than one attempt reads).
pub struct Scan {
    /// Joins no group; `group.id` only to read the group's committed offsets.
    consumer: BaseConsumer,
    group: String,
    main: String,
    partition: i32,
    /// `(tier, topic)` of each tier of `main`.
    tiers: Vec<(usize, String)>,
    /// This worker's subscription (sorted), which every member of the group must share.
    subscription: Vec<String>,
    /// Set once the read positions are assigned.
    started: bool,
    /// Tier topics not yet read to their end, with the end (high watermark at the start).
    ends: HashMap<String, i64>,
    found: Vec<Waiting>,
}

impl Scan {
    /// A read-back of `main`'s partition `partition` in `tiers` (`(tier, topic)`), for a
    /// worker of `group` subscribed to `subscription`.
    pub fn new(
        base: &ClientConfig,
        group: &str,
        main: &str,
        partition: i32,
        tiers: Vec<(usize, String)>,
        mut subscription: Vec<String>,
    ) -> Result<Self> {
        let consumer: BaseConsumer = base
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()?;
        subscription.sort();
        Ok(Self {
            consumer,
            group: group.to_owned(),
            main: main.to_owned(),
            partition,
            tiers,
            subscription,
            started: false,
            ends: HashMap::new(),
            found: Vec::new(),
        })
    }

    /// Records found so far.
    pub fn found(&self) -> usize {
        self.found.len()
    }

    /// Reads on for about `budget` (at least one poll, so every attempt makes progress).
    /// `Ok(true)` once every tier partition was read to its end. Blocking.
    pub fn resume(&mut self, budget: Duration) -> Result<bool> {
        if !self.started {
            self.check_partition_counts()?;
            self.check_members()?;
            self.start()?;
        }
        let partition = self.partition;
        let tier_of: HashMap<&str, usize> =
            self.tiers.iter().map(|(i, t)| (t.as_str(), *i)).collect();
        let deadline = Instant::now() + budget;
        while !self.ends.is_empty() {
            match self.consumer.poll(Duration::from_millis(100)) {
                None => {
                    // Nothing more came: a gap at the end (e.g. a transaction marker) ends a
                    // partition whose read position reached its end.
                    let position = self.consumer.position()?;
                    self.ends.retain(|topic, end| {
                        !matches!(
                            position.find_partition(topic, partition).map(|e| e.offset()),
                            Some(Offset::Offset(p)) if p >= *end
                        )
                    });
                }
                Some(message) => {
                    let message = message?;
                    let topic = message.topic();
                    let value = |name: &str| retry::header_i64(&message, name);
                    let origin = (
                        value(headers::ORIGINAL_PARTITION)
                            .and_then(|p| i32::try_from(p).ok())
                            .unwrap_or(partition),
                        value(headers::ORIGINAL_OFFSET).unwrap_or(message.offset()),
                    );
                    if let Some(tier) = tier_of.get(topic) {
                        self.found
                            .push((message.key().map(<[u8]>::to_vec), origin, *tier));
                    }
                    if self
                        .ends
                        .get(topic)
                        .is_some_and(|end| message.offset() + 1 >= *end)
                    {
                        self.ends.remove(topic);
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(self.ends.is_empty())
    }

    /// The records found, in origin order (a record seen in two tiers, as after a crash
    /// between the copy and the commit, is listed for each, lower tier first, so the later
    /// one wins).
    pub fn into_waiting(mut self) -> Vec<Waiting> {
        self.found.sort_by_key(|(_, origin, tier)| (*origin, *tier));
        self.found
    }

    /// Assigns each tier partition from the group's committed offset (or its start) to the
    /// end it has now: exactly the records still waiting.
    fn start(&mut self) -> Result<()> {
        let partition = self.partition;
        let mut list = TopicPartitionList::new();
        for (_, topic) in &self.tiers {
            list.add_partition(topic, partition);
        }
        let committed = self.consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
        let mut assign = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for (_, topic) in &self.tiers {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
            let start = match committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            if start < high {
                assign.add_partition_offset(topic, partition, Offset::Offset(start))?;
                ends.insert(topic.clone(), high);
            }
        }
        if !ends.is_empty() {
            self.consumer.assign(&assign)?;
        }
        self.ends = ends;
        self.started = true;
        Ok(())
    }

    /// Each tier has exactly its main topic's partitions (checked again at every assignment,
    /// since a topic may have grown since the worker started).
    fn check_partition_counts(&self) -> Result<()> {
        let count = |topic: &str| -> Result<usize> {
            let md = self.consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len()))
        };
        let main = count(&self.main)?;
        for (_, tier) in &self.tiers {
            let found = count(tier)?;
            if found != main {
                return Err(Error::Layout(super::layout::count_mismatch(
                    tier, found, &self.main, main,
                )));
            }
        }
        Ok(())
    }

    /// Every member of the group subscribes to the same topics as this worker: the range
    /// assignor co-partitions only topics with the same subscribers (a rollout that changes
    /// `--retry-delays` or `--topics` has members that differ until it completes).
    fn check_members(&self) -> Result<()> {
        let groups = self
            .consumer
            .fetch_group_list(Some(&self.group), REQUEST_TIMEOUT)?;
        let Some(group) = groups.groups().iter().find(|g| g.name() == self.group) else {
            return Ok(());
        };
        for member in group.members() {
            let Some(topics) = member.metadata().and_then(super::layout::subscribed_topics) else {
                continue;
            };
            if topics != self.subscription {
                return Err(Error::Layout(format!(
                    "group member {} subscribes to {topics:?}, this worker to {:?}: while \
                     members differ (a rollout that changes the topics or --retry-delays), the \
                     range assignor may split a topic's partition from its retry tiers' \
                     partition, so the partition waits until they agree",
                    member.client_id(),
                    self.subscription
                )));
            }
        }
        Ok(())
    }
}
