//! From resources to grants: what each declared EventTopic and EventConsumer asks of Kafka's
//! authorizer, as the small domain types [`crate::acl`] derives ACLs from.

use std::collections::{BTreeMap, BTreeSet};

use ferry_common::naming;
use kube::ResourceExt;

use crate::{
    acl::{ConsumerGrant, ProducerGrant},
    api::{EventConsumer, EventTopic},
};

/// A service account in a namespace: one Kafka principal.
pub type Identity = (String, String);

/// Everything the declared resources grant, and who declared it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    pub producers: Vec<ProducerGrant>,
    pub consumers: Vec<ConsumerGrant>,
    /// Which resources (`EventTopic/<ns>/<name>` or `EventConsumer/<ns>/<name>`) reference each
    /// identity, for Events and status.
    pub referenced_by: BTreeMap<Identity, BTreeSet<String>>,
}

impl Grants {
    /// Every identity that needs a credential.
    pub fn identities(&self) -> BTreeSet<Identity> {
        self.referenced_by.keys().cloned().collect()
    }
}

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

/// Derives the grants of all resources. Resources being deleted grant nothing, so their access
/// is revoked while their finalizers still run. A consumer's topic that names no EventTopic in
/// its namespace is skipped (it has no Kafka topic to grant).
pub fn from_resources(topics: &[EventTopic], consumers: &[EventConsumer]) -> Grants {
    let mut grants = Grants::default();
    let live = |meta: &kube::api::ObjectMeta| meta.deletion_timestamp.is_none();
    let mut kafka_name: BTreeMap<(String, String), String> = BTreeMap::new();
    for topic in topics.iter().filter(|t| live(&t.metadata)) {
        let ns = topic.namespace().unwrap_or_default();
        let name = topic.kafka_topic_name();
        kafka_name.insert((ns.clone(), topic.name_any()), name.clone());
        for producer in &topic.spec.producers {
            grants.producers.push(ProducerGrant {
                namespace: ns.clone(),
                service_account: producer.service_account.clone(),
                topic: name.clone(),
            });
            grants
                .referenced_by
                .entry((ns.clone(), producer.service_account.clone()))
                .or_default()
                .insert(format!("EventTopic/{ns}/{}", topic.name_any()));
        }
    }
    for consumer in consumers.iter().filter(|c| live(&c.metadata)) {
        let ns = consumer.namespace().unwrap_or_default();
        let group = group_id(consumer);
        let topics: Vec<String> = consumer
            .spec
            .topics
            .iter()
            .filter_map(|t| kafka_name.get(&(ns.clone(), t.clone())).cloned())
            .collect();
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
        let dead_letter_topic = match consumer
            .spec
            .dead_letter
            .as_ref()
            .and_then(|d| d.topic.as_ref())
        {
            Some(et) => kafka_name.get(&(ns.clone(), et.clone())).cloned(),
            None => Some(naming::default_dead_letter_topic(&group)),
        };
        let sa = consumer.spec.service_account.clone();
        grants.consumers.push(ConsumerGrant {
            namespace: ns.clone(),
            service_account: sa.clone(),
            group,
            topics,
            retry_topics,
            dead_letter_topic,
        });
        grants
            .referenced_by
            .entry((ns.clone(), sa))
            .or_default()
            .insert(format!("EventConsumer/{ns}/{}", consumer.name_any()));
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(ns: &str, name: &str, spec: serde_json::Value) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .expect("valid EventTopic")
    }

    fn consumer(ns: &str, name: &str, spec: serde_json::Value) -> EventConsumer {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .expect("valid EventConsumer")
    }

    #[test]
    fn the_shop_grants() {
        let topics = [
            topic(
                "shop",
                "users-v1",
                json!({"topicName": "users.v1", "producers": [{"serviceAccount": "user-service"}]}),
            ),
            topic(
                "shop",
                "orders-v1",
                json!({"topicName": "orders.v1", "producers": [{"serviceAccount": "order-service"}]}),
            ),
            topic("shop", "dlq-v1", json!({"topicName": "dlq.v1"})),
        ];
        let consumers = [
            consumer(
                "shop",
                "notify",
                json!({
                    "topics": ["orders-v1"], "serviceAccount": "notification-service",
                    "groupId": "notification-svc",
                    "delivery": {"http": {"url": "http://n:8000/events"}},
                    "retry": {"delays": ["5s", "1m"]},
                    "deadLetter": {"topic": "dlq-v1"}
                }),
            ),
            consumer(
                "shop",
                "projection",
                json!({
                    "topics": ["users-v1"], "serviceAccount": "order-service",
                    "delivery": {"http": {"url": "http://o:8000/events"}}
                }),
            ),
        ];
        let grants = from_resources(&topics, &consumers);
        assert_eq!(grants.producers.len(), 2);
        let notify = &grants.consumers[0];
        assert_eq!(notify.group, "notification-svc");
        assert_eq!(notify.topics, ["orders.v1"]);
        assert_eq!(
            notify.retry_topics,
            [
                "orders.v1.notification-svc.retry.5s",
                "orders.v1.notification-svc.retry.1m"
            ]
        );
        assert_eq!(notify.dead_letter_topic.as_deref(), Some("dlq.v1"));
        let projection = &grants.consumers[1];
        assert_eq!(projection.group, "shop.projection");
        assert_eq!(
            projection.dead_letter_topic.as_deref(),
            Some("shop.projection.dlq")
        );
        assert_eq!(
            grants.identities().into_iter().collect::<Vec<_>>(),
            [
                ("shop".to_owned(), "notification-service".to_owned()),
                ("shop".to_owned(), "order-service".to_owned()),
                ("shop".to_owned(), "user-service".to_owned()),
            ]
        );
        assert_eq!(
            grants.referenced_by[&("shop".into(), "order-service".into())].len(),
            2
        );
    }

    #[test]
    fn resources_being_deleted_and_unknown_topics_grant_nothing() {
        let mut gone = topic("a", "t", json!({"producers": [{"serviceAccount": "p"}]}));
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let c = consumer(
            "a",
            "c",
            json!({
                "topics": ["t", "missing"], "serviceAccount": "s",
                "delivery": {"http": {"url": "http://x"}}
            }),
        );
        let grants = from_resources(&[gone], &[c]);
        assert!(grants.producers.is_empty());
        assert!(
            grants.consumers[0].topics.is_empty(),
            "no Kafka topic to grant"
        );
    }

    #[test]
    fn topics_of_another_namespace_are_not_visible() {
        let t = topic("a", "t", json!({}));
        let c = consumer(
            "b",
            "c",
            json!({
                "topics": ["t"], "serviceAccount": "s", "delivery": {"http": {"url": "http://x"}}
            }),
        );
        assert!(from_resources(&[t], &[c]).consumers[0].topics.is_empty());
    }
}
