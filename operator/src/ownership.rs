//! Who owns a Kafka topic name: a pure function of the EventTopics in scope, shared by the
//! topic controller (which reports every other claimant `Conflict` and leaves the topic alone)
//! and the identity controller (which grants a claimant's producers and consumers nothing), so
//! the two always agree and access follows ownership.
//!
//! ```text
//!  EventTopics naming Kafka topic T ──▶ oldest (creationTimestamp, namespace, name) owns T
//!                                       every other one: Conflict, no ACLs
//!  T starts with "__"                ──▶ Kafka-internal: nobody owns it, nobody is granted it
//! ```

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::EventTopic;

/// Kafka reserves topic names that start with two underscores for itself
/// (`org.apache.kafka.common.internals.Topic`: `__consumer_offsets`, `__transaction_state`,
/// KRaft's `__cluster_metadata`); Ferry never creates, adopts, deletes or grants them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Whether a Kafka topic name is Kafka-internal.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with(INTERNAL_TOPIC_PREFIX)
}

/// The order in which EventTopics claim a name: older first; within one second (the
/// resolution of creationTimestamp) by namespace, then name, so every replica decides alike.
fn rank(topic: &EventTopic) -> (Option<Time>, Option<String>, String) {
    (
        topic.creation_timestamp(),
        topic.namespace(),
        topic.name_any(),
    )
}

fn same_resource(a: &EventTopic, b: &EventTopic) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// The older EventTopic among `all` that owns `topic`'s Kafka topic, if it is not `topic`
/// itself: then `topic` is in Conflict.
pub fn older_owner<'a>(
    topic: &EventTopic,
    all: impl IntoIterator<Item = &'a EventTopic>,
) -> Option<&'a EventTopic> {
    let name = topic.kafka_topic_name();
    let me = rank(topic);
    all.into_iter()
        // The name first: borrowed, so a pass over 10,000 EventTopics allocates nothing.
        .filter(|other| other.kafka_topic_name() == name && !same_resource(other, topic))
        .filter(|other| rank(other) < me)
        .min_by_key(|other| rank(other))
}

/// The owner of every Kafka topic name the EventTopics in `all` declare.
pub fn owners<'a>(
    all: impl IntoIterator<Item = &'a EventTopic>,
) -> BTreeMap<String, &'a EventTopic> {
    let mut owners: BTreeMap<String, &EventTopic> = BTreeMap::new();
    for topic in all {
        let entry = owners
            .entry(topic.kafka_topic_name().to_owned())
            .or_insert(topic);
        if rank(topic) < rank(entry) {
            *entry = topic;
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(ns: &str, name: &str, kafka: &str, created: &str) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"topicName": kafka}
        }))
        .expect("valid EventTopic")
    }

    #[test]
    fn the_oldest_claimant_owns_the_name() {
        let old = topic("b", "orders", "orders.v1", "2026-01-01T00:00:00Z");
        let new = topic("a", "mine", "orders.v1", "2026-01-02T00:00:00Z");
        let unrelated = topic("a", "users", "users.v1", "2025-01-01T00:00:00Z");
        let all = [old.clone(), new.clone(), unrelated.clone()];
        assert_eq!(
            older_owner(&new, &all).map(ResourceExt::name_any),
            Some("orders".into())
        );
        assert!(older_owner(&old, &all).is_none());
        assert!(older_owner(&unrelated, &all).is_none());
        let owners = owners(&all);
        assert_eq!(owners["orders.v1"].namespace().as_deref(), Some("b"));
        assert_eq!(owners["users.v1"].name_any(), "users");
    }

    #[test]
    fn a_tie_within_one_second_is_broken_by_namespace_then_name() {
        let a = topic("a", "x", "t", "2026-01-01T00:00:00Z");
        let b = topic("b", "x", "t", "2026-01-01T00:00:00Z");
        let a2 = topic("a", "y", "t", "2026-01-01T00:00:00Z");
        let all = [b.clone(), a2.clone(), a.clone()];
        assert!(older_owner(&a, &all).is_none());
        assert_eq!(
            older_owner(&a2, &all).map(ResourceExt::name_any),
            Some("x".into())
        );
        assert_eq!(
            older_owner(&b, &all).and_then(|o| o.namespace()),
            Some("a".into())
        );
        assert_eq!(owners(&all)["t"].namespace().as_deref(), Some("a"));
    }

    #[test]
    fn internal_names_are_recognised() {
        for name in [
            "__consumer_offsets",
            "__transaction_state",
            "__cluster_metadata",
            "__x",
        ] {
            assert!(is_internal_topic(name), "{name}");
        }
        for name in ["_schemas", "orders.v1", "a__b"] {
            assert!(!is_internal_topic(name), "{name}");
        }
    }
}
