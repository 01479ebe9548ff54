//! From an EventConsumer's EventTopic names to the Kafka topics its workers use — pure.
//!
//! The workers need every source topic's Kafka name and partition count, and a dead-letter
//! topic. Until every EventTopic it names exists and is Ready, the consumer waits, and says
//! which ones and why in its `Ready` condition (not a crash, not a silent wait).

use ferry_common::naming;
use kube::ResourceExt;

use crate::{
    api::{EventConsumer, EventTopic},
    identity::consumer_grants as grants,
    status,
};

/// One topic the workers read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTopic {
    /// The EventTopic's name.
    pub event_topic: String,
    /// Its Kafka topic.
    pub kafka: String,
    /// Its partitions (as the topic controller last saw them in Kafka).
    pub partitions: i32,
}

/// Where records go that cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// The operator's own `<group>.dlq`, created and deleted with the consumer.
    Managed(String),
    /// An EventTopic's Kafka topic, owned by that EventTopic.
    EventTopic(String),
}

impl DeadLetter {
    /// The Kafka topic's name.
    pub fn name(&self) -> &str {
        match self {
            DeadLetter::Managed(n) | DeadLetter::EventTopic(n) => n,
        }
    }
}

/// Everything the workers' topics are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The consumer group.
    pub group: String,
    /// The topics read, in spec order.
    pub sources: Vec<SourceTopic>,
    /// The dead-letter topic.
    pub dead_letter: DeadLetter,
}

impl Resolved {
    /// The largest source's partition count: the most workers that can share the load.
    pub fn max_partitions(&self) -> i32 {
        self.sources.iter().map(|s| s.partitions).max().unwrap_or(1)
    }
}

/// Why the workers cannot start yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `TopicNotFound` or `TopicNotReady`.
    pub reason: &'static str,
    /// Which EventTopics and why, for a person.
    pub message: String,
}

/// Resolves `consumer`'s topics against the EventTopics of its namespace (`topics` may hold
/// others; they are ignored).
pub fn resolve<'a>(
    consumer: &EventConsumer,
    topics: impl IntoIterator<Item = &'a EventTopic> + Clone,
) -> Result<Resolved, Waiting> {
    let namespace = consumer.namespace().unwrap_or_default();
    let find = |name: &str| {
        topics
            .clone()
            .into_iter()
            .find(|t| t.namespace().as_deref() == Some(namespace.as_str()) && t.name_any() == name)
    };
    let mut missing = Vec::new();
    let mut not_ready = Vec::new();
    let mut check = |name: &str| -> Option<&'a EventTopic> {
        match find(name) {
            None => {
                missing.push(name.to_owned());
                None
            }
            Some(t) if t.metadata.deletion_timestamp.is_some() => {
                not_ready.push(format!("{name} is being deleted"));
                None
            }
            Some(t) => {
                let ready = t
                    .status
                    .as_ref()
                    .is_some_and(|s| status::is_ready(&s.conditions, t.metadata.generation));
                if ready {
                    Some(t)
                } else {
                    let why = t
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::READY))
                        .map(|c| format!("{name} is not Ready ({}: {})", c.reason, c.message))
                        .unwrap_or_else(|| format!("{name} is not Ready yet"));
                    not_ready.push(why);
                    None
                }
            }
        }
    };
    let sources: Vec<SourceTopic> = consumer
        .spec
        .topics
        .iter()
        .filter_map(|name| {
            check(name).map(|t| SourceTopic {
                event_topic: name.clone(),
                kafka: t.kafka_topic_name().to_owned(),
                partitions: t
                    .status
                    .as_ref()
                    .and_then(|s| s.partitions)
                    .unwrap_or(t.spec.partitions),
            })
        })
        .collect();
    let group = grants::group_id(consumer);
    let named = consumer
        .spec
        .dead_letter
        .as_ref()
        .and_then(|d| d.topic.as_deref());
    let dead_letter = match named {
        None => Some(DeadLetter::Managed(naming::default_dead_letter_topic(
            &group,
        ))),
        Some(name) => check(name).map(|t| DeadLetter::EventTopic(t.kafka_topic_name().to_owned())),
    };
    if !missing.is_empty() {
        return Err(Waiting {
            reason: "TopicNotFound",
            message: format!(
                "EventTopic {} not found in namespace {namespace}; the workers start once {} created",
                missing.join(", "),
                if missing.len() == 1 {
                    "it is"
                } else {
                    "they are"
                }
            ),
        });
    }
    if !not_ready.is_empty() {
        return Err(Waiting {
            reason: "TopicNotReady",
            message: format!(
                "EventTopic {}; the workers start once it is Ready",
                not_ready.join("; ")
            ),
        });
    }
    Ok(Resolved {
        group,
        sources,
        // Every name was found above, so the dead letter resolved too.
        dead_letter: dead_letter.unwrap_or_else(|| {
            DeadLetter::Managed(naming::default_dead_letter_topic(&grants::group_id(
                consumer,
            )))
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn consumer(spec: serde_json::Value) -> EventConsumer {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify", "namespace": "shop", "generation": 1},
            "spec": spec,
        }))
        .expect("valid EventConsumer")
    }

    fn topic(name: &str, kafka: &str, partitions: i32, ready: bool) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": name, "namespace": "shop", "generation": 2},
            "spec": {"topicName": kafka, "partitions": 1},
            "status": {"partitions": partitions, "conditions": [{
                "type": "Ready", "status": if ready {"True"} else {"False"},
                "reason": if ready {"Ready"} else {"InvalidConfig"},
                "message": "bad retention", "observedGeneration": 2,
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .expect("valid EventTopic")
    }

    fn spec(topics: &[&str]) -> serde_json::Value {
        json!({"topics": topics, "serviceAccount": "notify",
               "delivery": {"http": {"url": "http://x/"}}})
    }

    #[test]
    fn resolves_kafka_names_partitions_and_the_managed_dead_letter() {
        let topics = [
            topic("orders", "orders.v1", 6, true),
            topic("users", "users.v1", 3, true),
        ];
        let r = resolve(&consumer(spec(&["orders", "users"])), &topics).expect("resolved");
        assert_eq!(r.group, "shop.notify");
        assert_eq!(
            r.sources
                .iter()
                .map(|s| (s.kafka.as_str(), s.partitions))
                .collect::<Vec<_>>(),
            [("orders.v1", 6), ("users.v1", 3)]
        );
        assert_eq!(r.dead_letter, DeadLetter::Managed("shop.notify.dlq".into()));
        assert_eq!(r.max_partitions(), 6);
    }

    #[test]
    fn a_named_dead_letter_topic_is_an_event_topic() {
        let topics = [
            topic("orders", "orders.v1", 2, true),
            topic("dlq", "dlq.v1", 1, true),
        ];
        let mut s = spec(&["orders"]);
        s["deadLetter"] = json!({"topic": "dlq"});
        let r = resolve(&consumer(s), &topics).expect("resolved");
        assert_eq!(r.dead_letter, DeadLetter::EventTopic("dlq.v1".into()));
    }

    #[test]
    fn missing_and_unready_topics_say_which_and_why() {
        let topics = [topic("orders", "orders.v1", 2, false)];
        let w = resolve(&consumer(spec(&["orders", "users"])), &topics).expect_err("waits");
        assert_eq!(w.reason, "TopicNotFound");
        assert!(w.message.contains("users"), "{}", w.message);
        let w = resolve(&consumer(spec(&["orders"])), &topics).expect_err("waits");
        assert_eq!(w.reason, "TopicNotReady");
        assert!(
            w.message
                .contains("orders is not Ready (InvalidConfig: bad retention)"),
            "{}",
            w.message
        );
        let mut s = spec(&["orders"]);
        s["deadLetter"] = json!({"topic": "nowhere"});
        let ready = [topic("orders", "orders.v1", 2, true)];
        let w = resolve(&consumer(s), &ready).expect_err("waits");
        assert_eq!(w.reason, "TopicNotFound");
        assert!(w.message.contains("nowhere"), "{}", w.message);
    }

    #[test]
    fn other_namespaces_do_not_count() {
        let mut t = topic("orders", "orders.v1", 2, true);
        t.metadata.namespace = Some("elsewhere".into());
        let w = resolve(&consumer(spec(&["orders"])), [&t]).expect_err("waits");
        assert_eq!(w.reason, "TopicNotFound");
    }
}
