//! What a replay has replayed, so that replaying the same selection again replays nothing
//! unless `--again`: the dead-letter coordinates (topic, partition, offset) already sent back,
//! kept in a ConfigMap `ferry-replays-<consumer>` beside the EventConsumer and owned by it.
//!
//! Why a ConfigMap: it lives where Kubernetes RBAC already reaches (a replay Job's
//! ServiceAccount may get and patch this one by name; a `--direct` user with their own RBAC),
//! needs no Kafka write beyond the replay itself, survives the laptop and the Job, is shared by everyone who replays that consumer, and
//! goes away with the consumer (owner reference). Offsets are kept as merged ranges per
//! partition (`0-41,57`), so a ledger of a million replays stays a few bytes when contiguous.
//! A record that fails again after a replay is dead-lettered at a new offset, so it is
//! selected by the next replay, as it should be.
//!
//! Crash safety: the ledger is written after Kafka acknowledged the replayed records, so a
//! crash in between replays them again next time — harmless, since each keeps its event id
//! and the worker de-duplicates. Two people replaying the same consumer at the same moment
//! may overwrite each other's entries (the last write wins); the cost is the same: a later
//! replay sends those records again and the worker skips them.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::api::ObjectMeta;

/// The ConfigMap key holding the ranges.
const KEY: &str = "replayed";
/// The ConfigMap key holding a line about the last replay (who can read it: anyone who may
/// read the ConfigMap; it is the audit trail a person looks at).
const LAST_KEY: &str = "last-replay";

/// Inclusive offset ranges, sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(i64, i64)>);

impl Ranges {
    /// Whether `offset` is in a range.
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end < offset);
        self.0.get(i).is_some_and(|&(start, _)| start <= offset)
    }

    /// Adds `offset`, merging with neighbours.
    pub fn insert(&mut self, offset: i64) {
        if self.contains(offset) {
            return;
        }
        let i = self.0.partition_point(|&(_, end)| end < offset);
        self.0.insert(i, (offset, offset));
        // Merge with the next and the previous range where they touch.
        if i + 1 < self.0.len() && self.0[i + 1].0 == offset + 1 {
            self.0[i].1 = self.0[i + 1].1;
            self.0.remove(i + 1);
        }
        if i > 0 && self.0[i - 1].1 + 1 == offset {
            self.0[i - 1].1 = self.0[i].1;
            self.0.remove(i);
        }
    }

    fn encode(&self) -> String {
        self.0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn decode(text: &str) -> Option<Self> {
        let mut ranges = Self::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None => {
                    let a = part.parse().ok()?;
                    (a, a)
                }
            };
            if a > b {
                return None;
            }
            // Ranges are few; inserting the ends and merging keeps the invariant simple.
            ranges.insert_range(a, b);
        }
        Some(ranges)
    }

    fn insert_range(&mut self, a: i64, b: i64) {
        self.0.push((a, b));
        self.0.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.0.len());
        for (s, e) in self.0.drain(..) {
            match merged.last_mut() {
                Some(last) if s <= last.1 + 1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }
}

/// Replayed coordinates: topic → partition → offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    replayed: BTreeMap<String, BTreeMap<i32, Ranges>>,
}

impl Ledger {
    /// Whether the record at these coordinates was replayed.
    pub fn contains(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.replayed
            .get(topic)
            .and_then(|p| p.get(&partition))
            .is_some_and(|r| r.contains(offset))
    }

    /// Records a replay.
    pub fn insert(&mut self, topic: &str, partition: i32, offset: i64) {
        self.replayed
            .entry(topic.to_owned())
            .or_default()
            .entry(partition)
            .or_default()
            .insert(offset);
    }

    /// The ConfigMap value: `{"<topic>": {"<partition>": "0-41,57"}}`.
    pub fn encode(&self) -> String {
        let value: BTreeMap<&String, BTreeMap<String, String>> = self
            .replayed
            .iter()
            .map(|(t, parts)| {
                (
                    t,
                    parts
                        .iter()
                        .map(|(p, r)| (p.to_string(), r.encode()))
                        .collect(),
                )
            })
            .collect();
        serde_json::to_string(&value).unwrap_or_default()
    }

    /// Reads a ConfigMap value back; `None` if it is not one.
    pub fn decode(text: &str) -> Option<Self> {
        let value: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(text).ok()?;
        let mut ledger = Self::default();
        for (topic, parts) in value {
            let entry = ledger.replayed.entry(topic).or_default();
            for (p, ranges) in parts {
                entry.insert(p.parse().ok()?, Ranges::decode(&ranges)?);
            }
        }
        Some(ledger)
    }
}

/// The ledger ConfigMap's name.
pub fn configmap_name(consumer: &str) -> String {
    format!("ferry-replays-{consumer}")
}

/// Who a ledger belongs to: the EventConsumer (its uid makes it the ConfigMap's owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The EventConsumer's namespace.
    pub namespace: String,
    /// The EventConsumer's name.
    pub name: String,
    /// Its uid, when known.
    pub uid: Option<String>,
}

/// The ledger read back from its ConfigMap (empty when there is none, or it holds none yet),
/// `Err` with a sentence when it holds one that cannot be read.
pub fn from_configmap(cm: Option<ConfigMap>, owner: &Owner) -> Result<Ledger, String> {
    let Some(text) = cm.and_then(|cm| cm.data).and_then(|mut d| d.remove(KEY)) else {
        return Ok(Ledger::default());
    };
    Ledger::decode(&text).ok_or_else(|| {
        format!(
            "the replay ledger {}/{} is not readable; fix or delete it (deleting it forgets what was replayed)",
            owner.namespace,
            configmap_name(&owner.name)
        )
    })
}

/// The ledger's ConfigMap for server-side apply by `manager`, with `last` (a line about the
/// last replay) beside it; owned by the EventConsumer so it goes when the consumer goes.
pub fn configmap(owner: &Owner, ledger: &Ledger, last: &str, manager: &str) -> ConfigMap {
    let name = configmap_name(&owner.name);
    let owner_references = owner.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: "ferry.dev/v1alpha1".into(),
            kind: "EventConsumer".into(),
            name: owner.name.clone(),
            uid: uid.clone(),
            ..OwnerReference::default()
        }]
    });
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(owner.namespace.clone()),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        manager.to_owned(),
                    ),
                    ("ferry.dev/replays-of".to_owned(), owner.name.clone()),
                ]
                .into(),
            ),
            owner_references,
            ..ObjectMeta::default()
        },
        data: Some(
            [
                (KEY.to_owned(), ledger.encode()),
                (LAST_KEY.to_owned(), last.to_owned()),
            ]
            .into(),
        ),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_answer_membership() {
        let mut r = Ranges::default();
        for o in [5, 3, 4, 10, 1, 11, 2, 0] {
            r.insert(o);
        }
        assert_eq!(r.encode(), "0-5,10-11");
        assert!(r.contains(0) && r.contains(5) && r.contains(11));
        assert!(!r.contains(6) && !r.contains(9) && !r.contains(12) && !r.contains(-1));
        r.insert(7);
        r.insert(6);
        r.insert(8);
        r.insert(9);
        assert_eq!(r.encode(), "0-11");
        assert_eq!(Ranges::decode("0-11"), Some(r));
        assert_eq!(Ranges::decode("3,1-2,9"), Ranges::decode("1-3,9"));
        assert_eq!(Ranges::decode("5-1"), None);
    }

    #[test]
    fn a_ledger_round_trips_through_its_configmap_value() {
        let mut l = Ledger::default();
        l.insert("shop.notify.dlq", 0, 4);
        l.insert("shop.notify.dlq", 0, 5);
        l.insert("shop.notify.dlq", 2, 9);
        assert!(l.contains("shop.notify.dlq", 0, 5));
        assert!(!l.contains("shop.notify.dlq", 1, 5));
        assert!(!l.contains("dlq.v1", 0, 5));
        let text = l.encode();
        assert_eq!(text, r#"{"shop.notify.dlq":{"0":"4-5","2":"9"}}"#);
        assert_eq!(Ledger::decode(&text), Some(l));
        assert_eq!(Ledger::decode("nonsense"), None);
    }
}
