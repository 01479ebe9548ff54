//! The pure core of the topic controller: what must change in Kafka so the topic matches the
//! EventTopic's spec, and which differences cannot be fixed. No I/O; unit-tested exhaustively.

use std::collections::BTreeMap;

use crate::{
    api::{EventTopicSpec, UnmanagedConfigs},
    kafka::{ConfigOp, NewTopicSpec, TopicState, topic_config},
};

/// What the spec asks for, in Kafka's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The Kafka topic's name.
    pub name: String,
    /// Partitions wanted.
    pub partitions: i32,
    /// Replication factor wanted; `None` leaves it to the broker.
    pub replication_factor: Option<i32>,
    /// The per-topic overrides wanted.
    pub config: BTreeMap<String, String>,
    /// Whether overrides `config` does not list stay (`unmanagedConfigs: Keep`).
    pub keep_unmanaged: bool,
}

impl Desired {
    /// Reads the spec; `name` is the resolved Kafka topic name.
    pub fn from_spec(name: String, spec: &EventTopicSpec) -> Self {
        Self {
            name,
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            config: spec.config.clone(),
            keep_unmanaged: spec.unmanaged_configs == UnmanagedConfigs::Keep,
        }
    }

    /// Configs that may not be set, each with its reason; empty when all are fine.
    pub fn config_refusals(&self) -> Vec<String> {
        self.config
            .keys()
            .filter_map(|k| topic_config::refusal(k))
            .collect()
    }

    /// The CreateTopics request for this topic.
    pub fn to_new_topic(&self) -> NewTopicSpec {
        NewTopicSpec {
            name: self.name.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            config: self.config.clone(),
        }
    }
}

/// The changes that bring an existing topic to the spec, and what cannot be changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Grow to this many partitions.
    pub grow_to: Option<i32>,
    /// Incremental config changes: sets for missing or different values, deletes for
    /// overrides the spec does not list (unless they are kept).
    pub config_ops: Vec<ConfigOp>,
    /// Overrides the topic has and the spec does not list, with their values (removed by
    /// `config_ops` unless kept): what an adoption reports before it changes anything.
    pub unmanaged: BTreeMap<String, String>,
    /// Differences Kafka cannot fix (sentences for the condition message).
    pub not_supported: Vec<String>,
}

impl Plan {
    /// Compares the spec with the topic as Kafka has it.
    pub fn diff(desired: &Desired, actual: &TopicState) -> Self {
        let mut plan = Plan::default();
        if desired.partitions > actual.partitions {
            plan.grow_to = Some(desired.partitions);
        } else if desired.partitions < actual.partitions {
            plan.not_supported.push(format!(
                "the Kafka topic has {} partitions and the spec asks for {}; Kafka cannot remove partitions",
                actual.partitions, desired.partitions
            ));
        }
        if let Some(rf) = desired.replication_factor
            && rf != actual.replication_factor
        {
            plan.not_supported.push(format!(
                "the Kafka topic has replication factor {} and the spec asks for {rf}; changing it needs a partition reassignment, which Ferry does not do",
                actual.replication_factor
            ));
        }
        for (key, value) in &desired.config {
            if actual.config.get(key) != Some(value) {
                plan.config_ops.push(ConfigOp::Set {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        for (key, value) in &actual.config {
            if !desired.config.contains_key(key) {
                plan.unmanaged.insert(key.clone(), value.clone());
                if !desired.keep_unmanaged {
                    plan.config_ops.push(ConfigOp::Delete { key: key.clone() });
                }
            }
        }
        plan
    }

    /// `key=value, ...` of the overrides the spec does not list, for an Event.
    pub fn describe_unmanaged(&self) -> String {
        self.unmanaged
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether Kafka must be changed.
    pub fn has_changes(&self) -> bool {
        self.grow_to.is_some() || !self.config_ops.is_empty()
    }

    /// A short description of the changes, for Events and logs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.grow_to {
            parts.push(format!("partitions grown to {n}"));
        }
        let set: Vec<&str> = self
            .config_ops
            .iter()
            .filter_map(|op| match op {
                ConfigOp::Set { key, .. } => Some(key.as_str()),
                ConfigOp::Delete { .. } => None,
            })
            .collect();
        let removed: Vec<&str> = self
            .config_ops
            .iter()
            .filter_map(|op| match op {
                ConfigOp::Delete { key } => Some(key.as_str()),
                ConfigOp::Set { .. } => None,
            })
            .collect();
        if !set.is_empty() {
            parts.push(format!("set {}", set.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("removed overrides {}", removed.join(", ")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn desired(partitions: i32, rf: Option<i32>, cfg: &[(&str, &str)]) -> Desired {
        Desired {
            name: "t".into(),
            partitions,
            replication_factor: rf,
            config: config(cfg),
            keep_unmanaged: false,
        }
    }

    fn actual(partitions: i32, rf: i32, cfg: &[(&str, &str)]) -> TopicState {
        TopicState {
            topic_id: "id".into(),
            partitions,
            replication_factor: rf,
            config: config(cfg),
        }
    }

    #[test]
    fn in_sync_topic_needs_nothing() {
        let plan = Plan::diff(
            &desired(3, Some(1), &[("retention.ms", "1")]),
            &actual(3, 1, &[("retention.ms", "1")]),
        );
        assert_eq!(plan, Plan::default());
        assert!(!plan.has_changes());
    }

    #[test]
    fn partitions_grow_but_never_shrink() {
        let grow = Plan::diff(&desired(6, None, &[]), &actual(3, 1, &[]));
        assert_eq!(grow.grow_to, Some(6));
        assert!(grow.not_supported.is_empty());
        let shrink = Plan::diff(&desired(2, None, &[]), &actual(3, 1, &[]));
        assert_eq!(shrink.grow_to, None);
        assert!(!shrink.has_changes());
        assert!(shrink.not_supported[0].contains("cannot remove partitions"));
    }

    #[test]
    fn replication_factor_change_is_not_supported() {
        let plan = Plan::diff(&desired(1, Some(3), &[]), &actual(1, 1, &[]));
        assert!(!plan.has_changes());
        assert!(plan.not_supported[0].contains("replication factor 1"));
        // Unset means "whatever the broker chose": never a difference.
        assert!(
            Plan::diff(&desired(1, None, &[]), &actual(1, 3, &[]))
                .not_supported
                .is_empty()
        );
    }

    #[test]
    fn configs_are_set_changed_and_removed() {
        let plan = Plan::diff(
            &desired(
                1,
                None,
                &[("retention.ms", "2"), ("cleanup.policy", "compact")],
            ),
            &actual(
                1,
                1,
                &[
                    ("retention.ms", "1"),
                    ("segment.ms", "100"),
                    ("cleanup.policy", "compact"),
                ],
            ),
        );
        assert_eq!(
            plan.config_ops,
            vec![
                ConfigOp::Set {
                    key: "retention.ms".into(),
                    value: "2".into()
                },
                ConfigOp::Delete {
                    key: "segment.ms".into()
                },
            ]
        );
        assert_eq!(
            plan.describe(),
            "set retention.ms; removed overrides segment.ms"
        );
        assert_eq!(plan.unmanaged, config(&[("segment.ms", "100")]));
        assert_eq!(plan.describe_unmanaged(), "segment.ms=100");
    }

    #[test]
    fn unmanaged_configs_are_reported_and_kept_when_asked() {
        let mut keep = desired(1, None, &[("cleanup.policy", "compact")]);
        keep.keep_unmanaged = true;
        let topic = actual(
            1,
            1,
            &[("retention.ms", "-1"), ("cleanup.policy", "delete")],
        );
        let plan = Plan::diff(&keep, &topic);
        assert_eq!(
            plan.config_ops,
            vec![ConfigOp::Set {
                key: "cleanup.policy".into(),
                value: "compact".into()
            }],
            "the listed key is managed, the other kept"
        );
        assert_eq!(plan.unmanaged, config(&[("retention.ms", "-1")]));
        // Kept overrides are no change: an in-sync topic stays in sync.
        let synced = actual(
            1,
            1,
            &[("retention.ms", "-1"), ("cleanup.policy", "compact")],
        );
        assert!(!Plan::diff(&keep, &synced).has_changes());
    }

    #[test]
    fn refused_configs_are_named() {
        let d = desired(
            1,
            None,
            &[
                ("retention.ms", "1"),
                ("unclean.leader.election.enable", "true"),
                ("bogus", "x"),
            ],
        );
        let refusals = d.config_refusals();
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert!(refusals.iter().any(|r| r.contains("bogus")));
        assert!(
            refusals
                .iter()
                .any(|r| r.contains("unclean.leader.election.enable"))
        );
    }
}
