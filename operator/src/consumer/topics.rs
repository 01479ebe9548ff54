//! The Kafka topics an EventConsumer owns — its retry tiers and managed dead-letter topic —
//! as a pure function of its resolved sources, and the changes that make Kafka match.
//!
//! - one retry topic per source topic and delay tier (`ferry_common::naming::retry_topic`),
//!   with the source's partition count: the worker keeps per-key order through a tier only
//!   when tier partition P is worked together with source partition P, and refuses a tier of
//!   another size (`sidecar/src/worker/layout.rs`); grown when the source grows;
//! - the managed dead-letter topic `<group>.dlq`, unless `deadLetter.topic` names an
//!   EventTopic, with the largest source's partition count.
//!
//! Partitions only grow (Kafka cannot shrink a topic); retention is put back when changed.

use std::{collections::BTreeMap, time::Duration};

use ferry_common::naming;

use super::{
    duration,
    resolve::{DeadLetter, Resolved},
};
use crate::{
    api::EventConsumer,
    kafka::{ConfigOp, NewTopicSpec, TopicState},
};

/// A record waits in a tier for its delay, plus however long the workers are down or behind:
/// keep it four times the delay ("a few times", issue #13) …
const RETRY_RETENTION_FACTOR: u32 = 4;
/// … but never less than Kafka's default `retention.ms` of 7 days, so a record parked in a
/// tier outlives a weekend outage of the workers as long as a record of any other topic.
const RETRY_RETENTION_FLOOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// One topic the consumer owns, as it should be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManagedTopic {
    /// Its Kafka name.
    pub name: String,
    /// Its partitions.
    pub partitions: i32,
    /// Its `retention.ms`.
    pub retention_ms: u64,
}

impl ManagedTopic {
    fn config(&self) -> BTreeMap<String, String> {
        [
            ("cleanup.policy".to_owned(), "delete".to_owned()),
            ("retention.ms".to_owned(), self.retention_ms.to_string()),
        ]
        .into()
    }

    /// The topic to create.
    pub fn to_new_topic(&self) -> NewTopicSpec {
        NewTopicSpec {
            name: self.name.clone(),
            partitions: self.partitions,
            // The broker's default.replication.factor, as for an EventTopic without one.
            replication_factor: None,
            config: self.config(),
        }
    }
}

/// A change that makes Kafka match one [`ManagedTopic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It does not exist.
    Create(NewTopicSpec),
    /// It has fewer partitions than its source.
    Grow(i32),
    /// Its configs differ.
    Alter(Vec<ConfigOp>),
}

/// The topics `consumer` owns, from its spec: its retry delays and dead-letter retention.
pub fn of(consumer: &EventConsumer, resolved: &Resolved) -> Vec<ManagedTopic> {
    desired(
        resolved,
        &consumer.spec.retry.delays,
        crate::api::DeadLetter::retention(consumer.spec.dead_letter.as_ref()),
    )
}

/// The retry tiers' topics and, unless an EventTopic is named, the dead-letter topic kept for
/// `dead_letter_retention` (the CRD's duration syntax).
pub fn desired(
    resolved: &Resolved,
    delays: &[String],
    dead_letter_retention: &str,
) -> Vec<ManagedTopic> {
    let mut topics = Vec::new();
    for source in &resolved.sources {
        for delay in delays {
            let delay_ms = duration::parse(delay).unwrap_or_default();
            let retention = (delay_ms * RETRY_RETENTION_FACTOR).max(RETRY_RETENTION_FLOOR);
            topics.push(ManagedTopic {
                name: naming::retry_topic(&source.kafka, &resolved.group, delay),
                partitions: source.partitions,
                retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
    if let DeadLetter::Managed(name) = &resolved.dead_letter {
        // The CRD admits only its duration syntax; anything else gets the default.
        let retention = duration::parse(dead_letter_retention)
            .or_else(|| duration::parse(crate::api::DEFAULT_DEAD_LETTER_RETENTION))
            .unwrap_or_default();
        topics.push(ManagedTopic {
            name: name.clone(),
            partitions: resolved.max_partitions(),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
        });
    }
    topics
}

/// What to change so that `actual` (`None`: absent) matches `wanted`.
pub fn diff(wanted: &ManagedTopic, actual: Option<&TopicState>) -> Vec<Change> {
    let Some(actual) = actual else {
        return vec![Change::Create(wanted.to_new_topic())];
    };
    let mut changes = Vec::new();
    if actual.partitions < wanted.partitions {
        changes.push(Change::Grow(wanted.partitions));
    }
    let ops: Vec<ConfigOp> = wanted
        .config()
        .into_iter()
        .filter(|(k, v)| actual.config.get(k) != Some(v))
        .map(|(key, value)| ConfigOp::Set { key, value })
        .collect();
    if !ops.is_empty() {
        changes.push(Change::Alter(ops));
    }
    changes
}

/// Retry tiers the status still lists but the spec no longer asks for (a delay removed, a
/// source dropped): deleted once the workers that used them are gone (the rollout is done),
/// listed until then so a deletion of the consumer still finds them.
pub fn retired(previous: &[String], wanted: &[String]) -> Vec<String> {
    previous
        .iter()
        .filter(|t| !wanted.contains(t))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::resolve::SourceTopic;

    fn resolved(dead_letter: DeadLetter) -> Resolved {
        Resolved {
            group: "shop.notify".into(),
            sources: vec![
                SourceTopic {
                    event_topic: "orders".into(),
                    kafka: "orders.v1".into(),
                    partitions: 6,
                },
                SourceTopic {
                    event_topic: "users".into(),
                    kafka: "users.v1".into(),
                    partitions: 2,
                },
            ],
            dead_letter,
        }
    }

    #[test]
    fn one_tier_per_source_and_delay_with_the_sources_partitions() {
        let topics = desired(
            &resolved(DeadLetter::Managed("shop.notify.dlq".into())),
            &["5s".into(), "30d".into()],
            "14d",
        );
        let shape: Vec<(&str, i32)> = topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions))
            .collect();
        assert_eq!(
            shape,
            [
                ("orders.v1.shop.notify.retry.5s", 6),
                ("orders.v1.shop.notify.retry.30d", 6),
                ("users.v1.shop.notify.retry.5s", 2),
                ("users.v1.shop.notify.retry.30d", 2),
                ("shop.notify.dlq", 6),
            ]
        );
        // A short delay keeps the 7-day floor; a long one four times itself.
        assert_eq!(topics[0].retention_ms, 7 * 86_400_000);
        assert_eq!(topics[1].retention_ms, 4 * 30 * 86_400_000);
        assert_eq!(topics[4].retention_ms, 14 * 86_400_000);
    }

    #[test]
    fn the_dead_letter_retention_is_the_consumers() {
        let dlq = |retention: &str| {
            desired(
                &resolved(DeadLetter::Managed("shop.notify.dlq".into())),
                &[],
                retention,
            )[0]
            .retention_ms
        };
        assert_eq!(dlq("3d"), 3 * 86_400_000);
        assert_eq!(dlq("36h"), 36 * 3_600_000);
        assert_eq!(
            dlq("soon"),
            14 * 86_400_000,
            "not the CRD's syntax: the default"
        );
    }

    #[test]
    fn retired_tiers_are_the_listed_ones_no_longer_wanted() {
        let previous = ["a.g.retry.5s".to_owned(), "a.g.retry.1m".to_owned()];
        let wanted = ["a.g.retry.5s".to_owned(), "a.g.retry.10m".to_owned()];
        assert_eq!(retired(&previous, &wanted), ["a.g.retry.1m"]);
        assert!(retired(&[], &wanted).is_empty());
    }

    #[test]
    fn a_named_dead_letter_topic_is_not_managed() {
        let topics = desired(
            &resolved(DeadLetter::EventTopic("dlq.v1".into())),
            &[],
            "1d",
        );
        assert!(topics.is_empty(), "{topics:?}");
    }

    #[test]
    fn diff_creates_grows_and_puts_configs_back() {
        let wanted = ManagedTopic {
            name: "t".into(),
            partitions: 4,
            retention_ms: 1000,
        };
        assert!(matches!(diff(&wanted, None)[..], [Change::Create(ref t)] if t.partitions == 4));
        let mut actual = TopicState {
            topic_id: "id".into(),
            partitions: 4,
            replication_factor: 1,
            config: wanted.config(),
        };
        assert!(diff(&wanted, Some(&actual)).is_empty(), "in sync");
        actual.partitions = 2;
        actual.config.insert("retention.ms".into(), "5".into());
        assert_eq!(
            diff(&wanted, Some(&actual)),
            [
                Change::Grow(4),
                Change::Alter(vec![ConfigOp::Set {
                    key: "retention.ms".into(),
                    value: "1000".into()
                }])
            ]
        );
        actual.partitions = 8;
        actual.config = wanted.config();
        assert!(
            diff(&wanted, Some(&actual)).is_empty(),
            "never shrinks: {:?}",
            diff(&wanted, Some(&actual))
        );
    }
}
