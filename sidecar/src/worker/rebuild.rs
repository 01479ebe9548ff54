//! Rebuilding the ordered-retry index after an assignment (DESIGN §5 "Ordered retries").
//!
//! [`super::retry::Parking`] lives in memory: after a crash, a rebalance or a restart, the
//! new owner of a partition does not know which keys have records waiting in its retry tiers,
//! and would let a key's new main-topic records overtake them. So when a main-topic partition
//! is assigned (with `ordering=key` and tiers), the worker first reads the same partition of
//! every tier topic from the group's committed offset to its end — exactly the records still
//! waiting — and only then lets that partition's main and tier records start. Reading happens
//! on a blocking thread with a short-lived consumer that joins no group.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use super::retry::{self, Origin};

/// Timeout of each metadata or offset request of a scan.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of a scan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the retry tiers")]
    Kafka(#[from] KafkaError),
    #[error("the retry tiers were not read to their end within {0:?}")]
    Timeout(Duration),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A record waiting in a tier: its key, where it was first read, and the tier it is in.
pub type Waiting = (Vec<u8>, Origin, usize);

/// Reads partition `partition` of each tier topic (`(tier, topic)`) from `group`'s committed
/// offset to its end; returns the keyed records found, in origin order (a record seen in two
/// tiers, as after a crash between the copy and the commit, is listed for each, lower tier
/// first, so the later one wins). Blocking.
pub fn waiting_records(
    base: &ClientConfig,
    group: &str,
    partition: i32,
    tiers: &[(usize, String)],
    timeout: Duration,
) -> Result<Vec<Waiting>> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for (_, topic) in tiers {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
    let mut assign = TopicPartitionList::new();
    let mut ends: HashMap<&str, i64> = HashMap::new();
    for (_, topic) in tiers {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        let start = match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        if start < high {
            assign.add_partition_offset(topic, partition, Offset::Offset(start))?;
            ends.insert(topic, high);
        }
    }
    let mut found = Vec::new();
    if ends.is_empty() {
        return Ok(found);
    }
    consumer.assign(&assign)?;
    let tier_of: HashMap<&str, usize> = tiers.iter().map(|(i, t)| (t.as_str(), *i)).collect();
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Timeout(timeout));
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            // Nothing more came: a gap at the end (e.g. a transaction marker) ends a partition
            // whose read position reached its end.
            let position = consumer.position()?;
            ends.retain(|topic, end| {
                !matches!(
                    position.find_partition(topic, partition).map(|e| e.offset()),
                    Some(Offset::Offset(p)) if p >= *end
                )
            });
            continue;
        };
        let message = message?;
        let topic = message.topic();
        if let Some(key) = message.key() {
            let value = |name: &str| retry::header_i64(&message, name);
            let origin = (
                value(retry::ORIGINAL_PARTITION_HEADER)
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(partition),
                value(retry::ORIGINAL_OFFSET_HEADER).unwrap_or(message.offset()),
            );
            if let Some(tier) = tier_of.get(topic) {
                found.push((key.to_vec(), origin, *tier));
            }
        }
        if ends
            .get(topic)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(topic);
        }
    }
    found.sort_by_key(|(_, origin, tier)| (*origin, *tier));
    Ok(found)
}
