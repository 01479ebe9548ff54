//! The consumer side of the grants: an EventConsumer's group must be its namespace's, and its
//! topics and dead-letter topic must be EventTopics of its namespace that own their Kafka topic;
//! the retry and dead-letter topics named after a namespace's groups are that namespace's
//! alone (pure; [`super::grants`] calls it).

use std::collections::BTreeMap;

use ferry_common::naming;
use kube::ResourceExt;

use super::grants::{ConsumerGrant, Refusal, Resolved};
use crate::api::{EventConsumer, EventTopic};

/// The consumer group of an EventConsumer: `spec.groupId`, else `<namespace>.<name>`.
pub fn group_id(consumer: &EventConsumer) -> String {
    consumer.spec.group_id.clone().unwrap_or_else(|| {
        format!(
            "{}.{}",
            consumer.namespace().unwrap_or_default(),
            consumer.name_any()
        )
    })
}

/// Whether a consumer group belongs to `namespace`: `<namespace>.` and at least one more
/// character. Namespaces cannot contain dots, so no namespace's prefix is another's.
pub fn group_in_namespace(group: &str, namespace: &str) -> bool {
    group
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| !rest.is_empty())
}

/// The Kafka topics Ferry names after each namespace's consumer groups (retry tiers and managed
/// dead-letter topics), with the namespace they belong to: an EventTopic of another namespace
/// that names one would reach into that namespace's retries or dead letters, so it grants
/// nothing. Only groups inside their namespace reserve names (no other is granted anything).
pub(super) fn reserved_names(
    topics: &[&EventTopic],
    consumers: &[&EventConsumer],
) -> BTreeMap<String, String> {
    let kafka_names: BTreeMap<(String, String), String> = topics
        .iter()
        .map(|t| {
            (
                (t.namespace().unwrap_or_default(), t.name_any()),
                t.kafka_topic_name().to_owned(),
            )
        })
        .collect();
    let mut reserved = BTreeMap::new();
    for consumer in consumers {
        let ns = consumer.namespace().unwrap_or_default();
        let group = group_id(consumer);
        if !group_in_namespace(&group, &ns) {
            continue;
        }
        for t in &consumer.spec.topics {
            let Some(kafka) = kafka_names.get(&(ns.clone(), t.clone())) else {
                continue;
            };
            for delay in &consumer.spec.retry.delays {
                reserved.insert(naming::retry_topic(kafka, &group, delay), ns.clone());
            }
        }
        let managed_dead_letter = consumer
            .spec
            .dead_letter
            .as_ref()
            .is_none_or(|d| d.topic.is_none());
        if managed_dead_letter {
            reserved.insert(naming::default_dead_letter_topic(&group), ns.clone());
        }
    }
    reserved
}

/// One EventConsumer's grant, or why it gets none.
pub(super) fn consumer_grant(
    consumer: &EventConsumer,
    ns: &str,
    resource: &str,
    resolved: &BTreeMap<(String, String), Resolved>,
) -> Result<ConsumerGrant, Refusal> {
    let group = group_id(consumer);
    if !group_in_namespace(&group, ns) {
        return Err(Refusal {
            reason: "GroupOutsideNamespace",
            message: format!(
                "spec.groupId {group} is outside namespace {ns}: consumer groups of this namespace (and the retry and dead-letter topics named after them) must start with \"{ns}.\"; no access is granted"
            ),
        });
    }
    let mut topics = Vec::new();
    for t in &consumer.spec.topics {
        match resolved.get(&(ns.to_owned(), t.clone())) {
            Some(Resolved::Owned(name)) => topics.push(name.clone()),
            Some(Resolved::NotOwned(why_reason, why)) => {
                return Err(Refusal {
                    reason: if *why_reason == "InternalTopic" {
                        "InternalTopic"
                    } else {
                        "TopicInConflict"
                    },
                    message: format!("{why}; this consumer is granted nothing"),
                });
            }
            // No such EventTopic (yet): nothing to grant for it.
            None => {}
        }
    }
    let retry_topics = topics
        .iter()
        .flat_map(|t| {
            consumer
                .spec
                .retry
                .delays
                .iter()
                .map(|d| naming::retry_topic(t, &group, d))
        })
        .collect();
    let named = consumer
        .spec
        .dead_letter
        .as_ref()
        .and_then(|d| d.topic.as_ref());
    let dead_letter_topic = match named {
        None => naming::default_dead_letter_topic(&group),
        Some(et) => match resolved.get(&(ns.to_owned(), et.clone())) {
            Some(Resolved::Owned(name)) => name.clone(),
            Some(Resolved::NotOwned(_, why)) => {
                return Err(Refusal {
                    reason: "DeadLetterTopicInConflict",
                    message: format!(
                        "deadLetter.topic {et}: {why}; this consumer is granted nothing"
                    ),
                });
            }
            None => {
                return Err(Refusal {
                    reason: "DeadLetterTopicNotFound",
                    message: format!(
                        "deadLetter.topic {et} names no EventTopic in namespace {ns}; create it or leave deadLetter.topic unset for the managed {}",
                        naming::default_dead_letter_topic(&group)
                    ),
                });
            }
        },
    };
    Ok(ConsumerGrant {
        resource: resource.to_owned(),
        namespace: ns.to_owned(),
        service_account: consumer.spec.service_account.clone(),
        group,
        topics,
        retry_topics,
        dead_letter_topic: Some(dead_letter_topic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::grants::{
        from_resources,
        tests::{at, consumer, reason, topic},
    };
    use serde_json::json;

    #[test]
    fn groups_are_confined_to_their_namespace() {
        assert!(group_in_namespace("shop.notify", "shop"));
        assert!(group_in_namespace("shop.a.b", "shop"));
        for (group, ns) in [
            ("shop", "shop"),
            ("shop.", "shop"),
            ("shopping.x", "shop"),
            ("other.x", "shop"),
            ("x.shop.y", "shop"),
        ] {
            assert!(!group_in_namespace(group, ns), "{group} in {ns}");
        }
        let t = topic("shop", "orders", json!({"topicName": "orders.v1"}));
        let c = |name: &str, group: Option<&str>| {
            let mut spec = json!({"topics": ["orders"], "serviceAccount": name,
                                  "delivery": {"http": {"url": "http://x"}},
                                  "retry": {"delays": ["5s"]}});
            if let Some(g) = group {
                spec["groupId"] = json!(g);
            }
            consumer("shop", name, spec)
        };
        let grants = from_resources(
            &[t],
            &[
                c("default", None),
                c("own", Some("shop.own")),
                c("thief", Some("victim.notify")),
            ],
        );
        assert_eq!(
            reason(&grants, "EventConsumer/shop/thief"),
            Some("GroupOutsideNamespace")
        );
        assert!(
            grants.refused["EventConsumer/shop/thief"]
                .message
                .contains("victim.notify")
        );
        let groups: Vec<&str> = grants.consumers.iter().map(|c| c.group.as_str()).collect();
        assert_eq!(groups, ["shop.default", "shop.own"]);
        // Retry and dead-letter topics follow from the group.
        assert_eq!(
            grants.consumers[1].retry_topics,
            ["orders.v1.shop.own.retry.5s"]
        );
        assert_eq!(
            grants.consumers[1].dead_letter_topic.as_deref(),
            Some("shop.own.dlq")
        );
    }

    #[test]
    fn a_dead_letter_topic_must_be_an_owned_event_topic_of_the_namespace() {
        let topics = [
            topic("shop", "orders", json!({"topicName": "orders.v1"})),
            at(
                topic("shop", "dlq", json!({"topicName": "dlq.v1"})),
                "2026-01-01T00:00:00Z",
            ),
            at(
                topic("shop", "dlq-copy", json!({"topicName": "dlq.v1"})),
                "2026-01-02T00:00:00Z",
            ),
            topic("other", "theirs", json!({"topicName": "theirs.v1"})),
        ];
        let c = |name: &str, dlq: &str| {
            consumer(
                "shop",
                name,
                json!({"topics": ["orders"], "serviceAccount": name,
                                          "delivery": {"http": {"url": "http://x"}},
                                          "deadLetter": {"topic": dlq}}),
            )
        };
        let grants = from_resources(
            &topics,
            &[
                c("ok", "dlq"),
                c("copy", "dlq-copy"),
                c("missing", "nowhere"),
                c("foreign", "theirs"),
            ],
        );
        assert_eq!(grants.consumers.len(), 1);
        assert_eq!(
            grants.consumers[0].dead_letter_topic.as_deref(),
            Some("dlq.v1")
        );
        assert_eq!(
            reason(&grants, "EventConsumer/shop/copy"),
            Some("DeadLetterTopicInConflict")
        );
        assert_eq!(
            reason(&grants, "EventConsumer/shop/missing"),
            Some("DeadLetterTopicNotFound")
        );
        assert_eq!(
            reason(&grants, "EventConsumer/shop/foreign"),
            Some("DeadLetterTopicNotFound")
        );
    }

    #[test]
    fn another_namespaces_retry_and_dead_letter_topics_are_not_granted() {
        let topics = [
            topic("b", "orders", json!({"topicName": "orders.v1"})),
            // Namespace a names b's managed dead-letter topic and one of its retry tiers.
            at(
                topic(
                    "a",
                    "steal-dlq",
                    json!({"topicName": "b.notify.dlq", "producers": [{"serviceAccount": "p"}]}),
                ),
                "2026-01-02T00:00:00Z",
            ),
            topic(
                "a",
                "steal-retry",
                json!({"topicName": "orders.v1.b.notify.retry.5s"}),
            ),
            // b may declare its own (to set its retention, say); declared first, it owns it.
            at(
                topic(
                    "b",
                    "own-dlq",
                    json!({"topicName": "b.notify.dlq", "producers": [{"serviceAccount": "q"}]}),
                ),
                "2026-01-01T00:00:00Z",
            ),
        ];
        let consumers = [
            consumer(
                "b",
                "notify",
                json!({"topics": ["orders"], "serviceAccount": "n",
                                           "delivery": {"http": {"url": "http://x"}},
                                           "retry": {"delays": ["5s"]}}),
            ),
            consumer(
                "a",
                "reader",
                json!({"topics": ["steal-retry"], "serviceAccount": "r",
                                           "delivery": {"http": {"url": "http://x"}}}),
            ),
        ];
        let grants = from_resources(&topics, &consumers);
        assert_eq!(
            reason(&grants, "EventTopic/a/steal-dlq"),
            Some("ReservedTopicName")
        );
        assert_eq!(
            reason(&grants, "EventTopic/a/steal-retry"),
            Some("ReservedTopicName")
        );
        assert_eq!(
            reason(&grants, "EventConsumer/a/reader"),
            Some("TopicInConflict")
        );
        let producers: Vec<&str> = grants
            .producers
            .iter()
            .map(|p| p.namespace.as_str())
            .collect();
        assert_eq!(producers, ["b"], "only b's own EventTopic grants");
    }
}
