//! Which partition layouts keep ordering through the retry tiers (DESIGN §5 "Ordered retries").
//!
//! A record that leaves partition P of its topic for a retry tier is copied to the tier's
//! partition P, and a key's later records are held back by the index of the worker that owns P
//! (see [`super::retry::Parking`], rebuilt from the tiers' partition P after every assignment,
//! see [`super::rebuild`]). That is only sound if tier partition P is always worked by the
//! worker that owns the topic's partition P. The worker relies on the range assignor, which
//! gives one member the same partition of every topic that has the same partition count and
//! the same subscribers, and refuses what breaks that:
//! - at start: a tier whose partition count differs from its topic's (with `ordering=key` or
//!   `partition`; an unordered worker needs at least the topic's partitions), and an
//!   assignment strategy other than `range` or the broker-side group protocol, whose assignors
//!   Ferry does not control (`--kafka-option partition.assignment.strategy` / `group.protocol`);
//! - at every assignment, before a main partition's records start: the same partition counts
//!   again (a topic may have grown), every tier partition P assigned to this worker together
//!   with P, and every member of the group subscribed to the same topics (during a rollout that
//!   changes `--retry-delays`, members differ: the partition waits until the rollout is done).
//!
//! The refusals are pure; [`check_tiers`] is the one shell, the start-up check against the
//! topics' metadata.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use super::{
    consumer::WorkerContext,
    error::{Error, Result},
    retry::Tiers,
};

/// How long the start-up check waits for a topic's metadata (a guess: a broker that does not
/// answer in 30 s is down, and the worker had better say so than hang).
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the worker refuses `--kafka-option`s that would let another assignor place tier
/// partitions; `None` if they are fine. Only ordered workers with tiers care.
pub fn refused_options(ordered_with_tiers: bool, options: &[(String, String)]) -> Option<String> {
    if !ordered_with_tiers {
        return None;
    }
    for (key, value) in options {
        let value = value.trim();
        match key.as_str() {
            "partition.assignment.strategy" if !value.eq_ignore_ascii_case("range") => {
                return Some(format!(
                    "--kafka-option partition.assignment.strategy={value}: with retry tiers and \
                     ordering key or partition the worker needs the range assignor, which gives \
                     one worker the same partition of a topic and of its retry tiers"
                ));
            }
            "group.protocol" if !value.eq_ignore_ascii_case("classic") => {
                return Some(format!(
                    "--kafka-option group.protocol={value}: with retry tiers and ordering key or \
                     partition the worker needs the classic protocol's client-side range assignor"
                ));
            }
            _ => {}
        }
    }
    None
}

/// Why tier `tier` (`found` partitions) does not fit main topic `main` (`needed`); `None` if
/// it does: equal counts for an ordered worker, at least as many for an unordered one (a copy
/// goes to its own partition number).
pub fn refused_counts(
    ordered: bool,
    tier: &str,
    found: usize,
    main: &str,
    needed: usize,
) -> Option<String> {
    if found == 0 {
        return Some(format!(
            "retry topic {tier} is missing; create it with the {needed} partitions of {main} first"
        ));
    }
    let fits = if ordered {
        found == needed
    } else {
        found >= needed
    };
    (!fits).then(|| count_mismatch(tier, found, main, needed))
}

/// The message for a tier whose partition count differs from its topic's.
pub fn count_mismatch(tier: &str, found: usize, main: &str, needed: usize) -> String {
    format!(
        "retry topic {tier} has {found} partitions and {main} has {needed}: a retry tier must have \
         exactly its topic's partitions, so that its partition P is worked together with the \
         topic's partition P (ordering through the tiers); give both the same count"
    )
}

/// The topics of a member's subscription (Kafka's `ConsumerProtocolSubscription`: version,
/// then the topic names, then data this does not need), sorted; `None` if malformed.
pub fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    let mut rest = metadata;
    let _version = take(&mut rest, 2)?;
    let count = i32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
    let mut topics = Vec::with_capacity(usize::try_from(count).ok()?.min(1024));
    for _ in 0..count {
        let len = i16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
        let name = take(&mut rest, usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8_lossy(name).into_owned());
    }
    topics.sort();
    Some(topics)
}

/// The retry tiers must exist with the partitions of their main topic: a record is copied to
/// its own partition number, and (ordered) tier partition P must be worked with the topic's
/// partition P (see [`layout`]).
pub fn check_tiers(
    consumer: &StreamConsumer<WorkerContext>,
    tiers: &Tiers,
    topics: &[String],
    ordered: bool,
) -> Result<()> {
    let fetch = |topic: &str| -> Result<usize> {
        let md =
            tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT))?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    };
    for main in topics {
        if tiers.is_empty() {
            break;
        }
        let needed = fetch(main)?;
        for tier in 0..tiers.len() {
            let Some(topic) = tiers.topic(main, tier) else {
                continue;
            };
            let found = fetch(topic)?;
            if let Some(refused) = refused_counts(ordered, topic, found, main, needed) {
                return Err(Error::Layout(refused));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_the_range_assignor_and_the_classic_protocol_keep_tiers_with_their_topic() {
        assert_eq!(refused_options(true, &options(&[])), None);
        assert_eq!(
            refused_options(
                true,
                &options(&[
                    ("partition.assignment.strategy", "range"),
                    ("group.protocol", "classic")
                ])
            ),
            None
        );
        for refused in [
            ("partition.assignment.strategy", "roundrobin"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("partition.assignment.strategy", "range,roundrobin"),
            ("group.protocol", "consumer"),
        ] {
            let message = refused_options(true, &options(&[refused])).expect("refused");
            assert!(message.contains(refused.1), "{message}");
        }
        assert_eq!(
            refused_options(
                false,
                &options(&[("partition.assignment.strategy", "roundrobin")])
            ),
            None,
            "no tiers, or unordered: any assignor"
        );
    }

    #[test]
    fn ordered_workers_need_equal_counts_unordered_at_least_as_many() {
        assert_eq!(refused_counts(true, "t.r", 3, "t", 3), None);
        let more = refused_counts(true, "t.r", 4, "t", 3).expect("refused");
        assert!(more.contains("t.r has 4 partitions and t has 3"), "{more}");
        assert!(refused_counts(true, "t.r", 2, "t", 3).is_some());
        assert_eq!(refused_counts(false, "t.r", 4, "t", 3), None);
        assert!(refused_counts(false, "t.r", 2, "t", 3).is_some());
        assert!(
            refused_counts(false, "t.r", 0, "t", 3).is_some_and(|m| m.contains("missing")),
            "a missing tier"
        );
    }

    #[test]
    fn reads_the_topics_of_a_subscription() {
        // Version 1, topics ["b", "a"], user data null, no owned partitions.
        let mut bytes = vec![0, 1, 0, 0, 0, 2, 0, 1, b'b', 0, 1, b'a'];
        bytes.extend_from_slice(&(-1_i32).to_be_bytes());
        bytes.extend_from_slice(&0_i32.to_be_bytes());
        assert_eq!(
            subscribed_topics(&bytes),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(subscribed_topics(&bytes[..7]), None, "truncated");
    }
}
