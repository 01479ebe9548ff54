//! What the plugin needs to know about one EventConsumer, read from its resource (and its
//! EventTopics) through the API server: its consumer group, its dead-letter topic, its Kafka
//! source topics, its first retry tier, and whose Kafka credential it uses. The names come
//! from the same functions the operator and the worker use (`ferry_common::naming`,
//! `consumer_grants::group_id`), so the plugin reads and writes exactly their topics.

use ferry_common::naming;
use ferry_operator::{
    api::{EventConsumer, EventTopic},
    identity::{consumer_grants::group_id, credentials::secret_name},
};
use ferry_sidecar::dlq::target::Target;
use kube::{Api, ResourceExt, api::ListParams};

use crate::{
    cluster::Cluster,
    error::{Error, Result},
};

/// One EventConsumer as the dead-letter commands see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (the replay ledger is owned by it, so it goes when the consumer goes).
    pub uid: Option<String>,
    /// Its Kafka consumer group: dead letters carry it in `ferry-group`.
    pub group: String,
    /// Its dead-letter topic (possibly shared with other consumers).
    pub dead_letter_topic: String,
    /// The Kafka topics it consumes.
    pub sources: Vec<String>,
    /// The delay of its first retry tier (`spec.retry.delays[0]`), if it has tiers.
    pub first_delay: Option<String>,
    /// The Secret holding its Kafka credential, `ferry-kafka-<serviceAccount>`.
    pub credential_secret: String,
}

impl ConsumerView {
    /// The view of `consumer`, with `topics` the EventTopics of its namespace. Prefers what
    /// the operator wrote in status (the topics it actually made) and falls back to the spec.
    pub fn from_resource(consumer: &EventConsumer, topics: &[EventTopic]) -> Result<Self> {
        let namespace = consumer.namespace().unwrap_or_default();
        let name = consumer.name_any();
        let group = group_id(consumer);
        let status_topics = consumer.status.as_ref().and_then(|s| s.topics.as_ref());
        let kafka_name = |event_topic: &str| {
            topics
                .iter()
                .find(|t| t.name_any() == event_topic)
                .map(|t| {
                    t.status
                        .as_ref()
                        .and_then(|s| s.topic_name.clone())
                        .unwrap_or_else(|| t.kafka_topic_name().to_owned())
                })
        };
        let sources = match status_topics {
            Some(s) if !s.source.is_empty() => s.source.clone(),
            _ => consumer
                .spec
                .topics
                .iter()
                .map(|t| kafka_name(t).unwrap_or_else(|| t.clone()))
                .collect(),
        };
        let dead_letter_topic = match status_topics.and_then(|s| s.dead_letter.clone()) {
            Some(t) => t,
            None => match consumer.spec.dead_letter.as_ref().and_then(|d| d.topic.as_ref()) {
                Some(event_topic) => kafka_name(event_topic).ok_or_else(|| {
                    Error::unusable(format!(
                        "EventConsumer {namespace}/{name} names the dead-letter EventTopic {event_topic}, which does not exist"
                    ))
                })?,
                None => naming::default_dead_letter_topic(&group),
            },
        };
        Ok(Self {
            uid: consumer.uid(),
            first_delay: consumer.spec.retry.delays.first().cloned(),
            credential_secret: secret_name(&consumer.spec.service_account),
            namespace,
            name,
            group,
            dead_letter_topic,
            sources,
        })
    }

    /// Reads the EventConsumer `name` and its namespace's EventTopics as the user.
    pub async fn fetch(cluster: &Cluster, name: &str) -> Result<Self> {
        let ns = &cluster.namespace;
        let consumers: Api<EventConsumer> = Api::namespaced(cluster.client.clone(), ns);
        let consumer = consumers.get(name).await.map_err(|e| {
            Error::from_kube(
                e,
                format!("reading EventConsumer {ns}/{name}"),
                format!("get on eventconsumers.ferry.dev in namespace {ns}"),
                Some(("EventConsumer", ns, name)),
            )
        })?;
        let topics: Api<EventTopic> = Api::namespaced(cluster.client.clone(), ns);
        let topics = topics
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                Error::from_kube(
                    e,
                    format!("listing EventTopics in {ns}"),
                    format!("list on eventtopics.ferry.dev in namespace {ns}"),
                    None,
                )
            })?
            .items;
        Self::from_resource(&consumer, &topics)
    }

    /// What the shared dead-letter code needs of this consumer.
    pub fn target(&self) -> Target {
        Target {
            name: self.name.clone(),
            group: self.group.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            sources: self.sources.clone(),
            first_delay: self.first_delay.clone(),
        }
    }

    /// Where a dead letter first read from `original_topic` goes back to
    /// ([`Target::first_tier`]).
    pub fn first_tier(&self, original_topic: &str) -> Option<String> {
        self.target().first_tier(original_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_operator::api::{
        ConsumerTopics, DeadLetter, Delivery, EventConsumerSpec, EventConsumerStatus,
        EventTopicSpec, HttpDelivery, Retry,
    };

    fn consumer(delays: &[&str], dead_letter: Option<&str>) -> EventConsumer {
        let spec: EventConsumerSpec = serde_json::from_value(serde_json::json!({
            "topics": ["orders"],
            "serviceAccount": "notification-service",
            "delivery": {"http": {"url": "http://x/"}},
        }))
        .expect("spec");
        let mut c = EventConsumer::new(
            "notify",
            EventConsumerSpec {
                retry: Retry {
                    delays: delays.iter().map(|d| (*d).to_owned()).collect(),
                    ..Retry::default()
                },
                dead_letter: dead_letter.map(|t| DeadLetter {
                    topic: Some(t.to_owned()),
                    ..DeadLetter::default()
                }),
                delivery: Delivery {
                    http: Some(HttpDelivery {
                        service: None,
                        url: Some("http://x/".into()),
                        port: None,
                        path: None,
                        timeout: "10s".into(),
                    }),
                    container: None,
                },
                ..spec
            },
        );
        c.metadata.namespace = Some("shop".into());
        c
    }

    fn topic(name: &str, kafka: &str) -> EventTopic {
        let spec: EventTopicSpec =
            serde_json::from_value(serde_json::json!({"topicName": kafka, "partitions": 3}))
                .expect("spec");
        let mut t = EventTopic::new(name, spec);
        t.metadata.namespace = Some("shop".into());
        t
    }

    #[test]
    fn defaults_follow_the_operators_names() {
        let view = ConsumerView::from_resource(
            &consumer(&["5s", "1m"], None),
            &[topic("orders", "orders.v1")],
        )
        .expect("view");
        assert_eq!(view.group, "shop.notify");
        assert_eq!(view.dead_letter_topic, "shop.notify.dlq");
        assert_eq!(view.sources, ["orders.v1"]);
        assert_eq!(view.credential_secret, "ferry-kafka-notification-service");
        assert_eq!(
            view.first_tier("orders.v1").as_deref(),
            Some("orders.v1.shop.notify.retry.5s")
        );
    }

    #[test]
    fn a_named_dead_letter_topic_is_its_event_topics_kafka_name_and_status_wins() {
        let topics = [topic("orders", "orders.v1"), topic("dlq", "dlq.v1")];
        let view = ConsumerView::from_resource(&consumer(&[], Some("dlq")), &topics).expect("view");
        assert_eq!(view.dead_letter_topic, "dlq.v1");
        assert_eq!(view.first_tier("orders.v1"), None);

        let mut c = consumer(&[], Some("dlq"));
        c.status = Some(EventConsumerStatus {
            topics: Some(ConsumerTopics {
                source: vec!["orders.v2".into()],
                dead_letter: Some("dlq.v2".into()),
                ..ConsumerTopics::default()
            }),
            ..EventConsumerStatus::default()
        });
        let view = ConsumerView::from_resource(&c, &topics).expect("view");
        assert_eq!(
            (view.sources, view.dead_letter_topic),
            (vec!["orders.v2".to_owned()], "dlq.v2".to_owned())
        );
    }

    #[test]
    fn a_missing_dead_letter_event_topic_is_said() {
        let err = ConsumerView::from_resource(&consumer(&[], Some("gone")), &[])
            .expect_err("no such EventTopic");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
