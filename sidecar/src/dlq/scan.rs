//! Reads a dead-letter topic once, from each partition's first kept record to its end as of
//! the start of the scan (records written meanwhile wait for the next command), with the
//! consumer's credential. No consumer group is joined and no offset is committed: the scan
//! assigns partitions itself and starts from explicit offsets, so it never disturbs the
//! workers' group. (librdkafka refuses `assign` without a `group.id`: the reader names
//! `reader_group`, a group its principal may use — the consumer's own from the plugin, the replay
//! principal's own in a replay Job — and nothing is ever committed to it.)

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use super::{
    dead_letter::DeadLetter,
    error::{Error, Result},
    filter::Filter,
};

/// How long one metadata or watermark request may take (librdkafka's default request timeout
/// is 30 s; a laptop on a VPN is slow, but a person should not wait longer than this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the whole read may go without a record before it gives up: the records exist
/// (the watermarks say so), so a long silence means the broker is unreachable or refuses.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Every record of `topic` written by `group`'s workers that `filter` selects, in partition
/// and offset order (the others are dropped as they are read, so a large dead-letter topic
/// costs memory only for what is selected). The reader names `reader_group` (never commits).
pub async fn scan(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    reader_group: &str,
    filter: &Filter,
) -> Result<Vec<DeadLetter>> {
    let (config, topic, group, reader_group, filter) = (
        config.clone(),
        topic.to_owned(),
        group.to_owned(),
        reader_group.to_owned(),
        filter.clone(),
    );
    tokio::task::spawn_blocking(move || {
        scan_blocking(&config, &topic, &group, &reader_group, &filter)
    })
    .await
    .map_err(|e| Error::Unusable(format!("the dead-letter reader stopped: {e}")))?
}

fn scan_blocking(
    config: &ClientConfig,
    topic: &str,
    group: &str,
    reader_group: &str,
    filter: &Filter,
) -> Result<Vec<DeadLetter>> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", reader_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| Error::kafka("creating the dead-letter reader", e))?;
    let ends = watermarks(&consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0usize;
    for &(partition, low, high) in &ends {
        if high > low {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(low))
                .map_err(|e| Error::kafka("assigning the dead-letter partitions", e))?;
            remaining += 1;
        }
    }
    let mut found = Vec::new();
    if remaining == 0 {
        return Ok(found);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| Error::kafka("assigning the dead-letter partitions", e))?;
    let end_of = |p: i32| ends.iter().find(|e| e.0 == p).map_or(0, |e| e.2);
    let mut done: Vec<i32> = Vec::new();
    let mut last_progress = Instant::now();
    while done.len() < remaining {
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(Error::Unusable(format!(
                "no record of {topic} arrived for {}s although its watermarks say some exist",
                STALL_TIMEOUT.as_secs()
            )));
        }
        let Some(polled) = consumer.poll(Duration::from_millis(500)) else {
            // A partition whose last offsets hold no record (a control marker) ends by
            // position rather than by a record.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(at) = e.offset()
                        && at >= end_of(e.partition())
                        && !done.contains(&e.partition())
                    {
                        done.push(e.partition());
                    }
                }
            }
            continue;
        };
        let message = polled.map_err(|e| Error::kafka(format!("reading {topic}"), e))?;
        last_progress = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        let end = end_of(partition);
        if offset < end {
            let dl = DeadLetter::from_message(&message.detach());
            if dl.belongs_to(group) && filter.matches(&dl) {
                found.push(dl);
            }
        }
        if offset + 1 >= end && !done.contains(&partition) {
            done.push(partition);
        }
    }
    found.sort_by_key(|d| (d.partition, d.offset));
    Ok(found)
}

/// Each partition of `topic` with its low and high watermark.
pub fn watermarks(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| Error::kafka(format!("describing {topic}"), e))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(Error::Unusable(format!(
            "Kafka does not list topic {topic}"
        )));
    };
    if let Some(e) = t.error() {
        return Err(Error::kafka(
            format!("describing {topic}"),
            KafkaError::MetadataFetch(e.into()),
        ));
    }
    let mut out = Vec::new();
    for p in t.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
            .map_err(|e| Error::kafka(format!("reading the offsets of {topic}"), e))?;
        out.push((p.id(), low, high));
    }
    Ok(out)
}
