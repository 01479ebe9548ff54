//! From resources to grants: what each declared EventTopic and EventConsumer asks of Kafka's
//! authorizer, as the small domain types [`super::desired_acls`] derives ACLs from, and what is refused
//! because it would reach beyond the resource's own namespace.
//!
//! Grants follow ownership ([`crate::ownership`]):
//! - an EventTopic in Conflict (an older one owns its Kafka topic), naming a Kafka-internal
//!   topic, or naming a retry or managed dead-letter topic of another namespace's consumer
//!   group grants its producers and consumers nothing;
//! - an EventConsumer's group must be its namespace's (`<namespace>.` prefix; its retry topics
//!   `<topic>.<group>.retry.<delay>` and its managed `<group>.dlq` follow from the group); its
//!   topics and its `deadLetter.topic` must name EventTopics of its namespace that own their
//!   Kafka topic. Otherwise it is refused whole: no ACL at all, and a reason on its status.
//!
//! The consumer side (groups, retry and dead-letter topics) is [`super::consumer_grants`].
//!
//! The API server refuses a group outside the namespace at admission (the
//! ValidatingAdmissionPolicy `crdgen` writes); this check holds without it.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
};

use kube::ResourceExt;

use super::consumer_grants::{consumer_grant, reserved_names};
use crate::{
    api::{EventConsumer, EventTopic},
    ownership,
};

/// A service account allowed to publish to one Kafka topic (from an EventTopic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerGrant {
    /// The resource that declares it (`EventTopic/<ns>/<name>`), whose status shows it.
    pub resource: String,
    pub namespace: String,
    pub service_account: String,
    pub topic: String,
}

/// A service account consuming as one group (from an EventConsumer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGrant {
    /// The resource that declares it (`EventConsumer/<ns>/<name>`), whose status shows it.
    pub resource: String,
    pub namespace: String,
    pub service_account: String,
    pub group: String,
    pub topics: Vec<String>,
    pub retry_topics: Vec<String>,
    pub dead_letter_topic: Option<String>,
}

/// A service account in a namespace: one Kafka principal.
pub type Identity = (String, String);

/// Why a resource is granted nothing: a reason word for its condition and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A CamelCase word (`GroupOutsideNamespace`, `TopicInConflict`, ...).
    pub reason: &'static str,
    /// What a person should change, in a sentence.
    pub message: String,
}

/// Everything the declared resources grant, and who declared it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grants {
    pub producers: Vec<ProducerGrant>,
    pub consumers: Vec<ConsumerGrant>,
    /// Which resources (`EventTopic/<ns>/<name>` or `EventConsumer/<ns>/<name>`) reference each
    /// identity, for Events and status.
    pub referenced_by: BTreeMap<Identity, BTreeSet<String>>,
    /// Resources granted nothing, and why.
    pub refused: BTreeMap<String, Refusal>,
}

impl Grants {
    /// Every identity that needs a credential.
    pub fn identities(&self) -> BTreeSet<Identity> {
        self.referenced_by.keys().cloned().collect()
    }

    /// The grants each resource declares (what its status shows), keyed by resource; a
    /// resource that declares nothing has no entry.
    pub fn by_resource(&self) -> BTreeMap<String, Grants> {
        let mut split: BTreeMap<String, Grants> = BTreeMap::new();
        for p in &self.producers {
            let own = split.entry(p.resource.clone()).or_default();
            own.producers.push(p.clone());
        }
        for c in &self.consumers {
            let own = split.entry(c.resource.clone()).or_default();
            own.consumers.push(c.clone());
        }
        for (resource, own) in &mut split {
            for p in &own.producers {
                let id = (p.namespace.clone(), p.service_account.clone());
                own.referenced_by
                    .entry(id)
                    .or_default()
                    .insert(resource.clone());
            }
            for c in &own.consumers {
                let id = (c.namespace.clone(), c.service_account.clone());
                own.referenced_by
                    .entry(id)
                    .or_default()
                    .insert(resource.clone());
            }
        }
        split
    }
}

/// `EventTopic/<ns>/<name>`: how grants name the resource that declares them.
pub fn topic_resource(namespace: &str, name: &str) -> String {
    format!("EventTopic/{namespace}/{name}")
}

/// `EventConsumer/<ns>/<name>`.
pub fn consumer_resource(namespace: &str, name: &str) -> String {
    format!("EventConsumer/{namespace}/{name}")
}

/// What an EventTopic name resolves to within its namespace, for a consumer.
pub(super) enum Resolved {
    /// The Kafka topic it owns.
    Owned(String),
    /// It does not own its Kafka topic: the reason word (`Conflict` or `InternalTopic`) and
    /// a sentence saying why.
    NotOwned(&'static str, String),
}

/// Derives the grants of all resources. Resources being deleted grant nothing, so their access
/// is revoked while their finalizers still run. A consumer's topic that names no EventTopic in
/// its namespace is skipped (it has no Kafka topic to grant yet). Takes the objects as the
/// caches hold them (`Arc`) or as tests build them.
pub fn from_resources(
    topics: &[impl Borrow<EventTopic>],
    consumers: &[impl Borrow<EventConsumer>],
) -> Grants {
    let topics: Vec<&EventTopic> = topics.iter().map(Borrow::borrow).collect();
    let consumers: Vec<&EventConsumer> = consumers.iter().map(Borrow::borrow).collect();
    let mut grants = Grants::default();
    let live = |meta: &kube::api::ObjectMeta| meta.deletion_timestamp.is_none();
    // Ownership counts every EventTopic in scope, as the topic controller's does: one being
    // deleted still owns its topic until it is gone.
    let owners = ownership::owners(topics.iter().copied());
    let reserved = reserved_names(&topics, &consumers);
    let mut resolved: BTreeMap<(String, String), Resolved> = BTreeMap::new();
    for topic in topics.iter().filter(|t| live(&t.metadata)) {
        let ns = topic.namespace().unwrap_or_default();
        let resource = topic_resource(&ns, &topic.name_any());
        let name = topic.kafka_topic_name().to_owned();
        let not_owned = if ownership::is_internal_topic(&name) {
            Some((
                "InternalTopic",
                format!("Kafka topic {name} is Kafka-internal; Ferry grants no access to it"),
            ))
        } else if let Some(owner_ns) = reserved.get(&name).filter(|owner_ns| **owner_ns != ns) {
            Some((
                "ReservedTopicName",
                format!(
                    "Kafka topic {name} is a retry or dead-letter topic of a consumer group of namespace {owner_ns}; no access is granted through this EventTopic"
                ),
            ))
        } else {
            match owners.get(&name) {
                Some(owner)
                    if owner.namespace() != topic.namespace()
                        || owner.name_any() != topic.name_any() =>
                {
                    Some((
                        "Conflict",
                        format!(
                            "Kafka topic {name} belongs to the older EventTopic {}/{}; no access is granted through this one",
                            owner.namespace().unwrap_or_default(),
                            owner.name_any()
                        ),
                    ))
                }
                _ => None,
            }
        };
        if let Some((reason, message)) = not_owned {
            resolved.insert(
                (ns.clone(), topic.name_any()),
                Resolved::NotOwned(
                    reason,
                    format!("EventTopic {}: {message}", topic.name_any()),
                ),
            );
            grants.refused.insert(resource, Refusal { reason, message });
            continue;
        }
        resolved.insert(
            (ns.clone(), topic.name_any()),
            Resolved::Owned(name.clone()),
        );
        for producer in &topic.spec.producers {
            grants.producers.push(ProducerGrant {
                resource: resource.clone(),
                namespace: ns.clone(),
                service_account: producer.service_account.clone(),
                topic: name.clone(),
            });
            grants
                .referenced_by
                .entry((ns.clone(), producer.service_account.clone()))
                .or_default()
                .insert(resource.clone());
        }
    }
    for consumer in consumers.iter().filter(|c| live(&c.metadata)) {
        let ns = consumer.namespace().unwrap_or_default();
        let resource = consumer_resource(&ns, &consumer.name_any());
        match consumer_grant(consumer, &ns, &resource, &resolved) {
            Ok(grant) => {
                grants
                    .referenced_by
                    .entry((ns.clone(), grant.service_account.clone()))
                    .or_default()
                    .insert(resource);
                grants.consumers.push(grant);
            }
            Err(refusal) => {
                grants.refused.insert(resource, refusal);
            }
        }
    }
    grants
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn topic(ns: &str, name: &str, spec: serde_json::Value) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .expect("valid EventTopic")
    }

    pub(crate) fn consumer(ns: &str, name: &str, spec: serde_json::Value) -> EventConsumer {
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
                    "groupId": "shop.notification-svc",
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
        assert_eq!(notify.group, "shop.notification-svc");
        assert_eq!(notify.topics, ["orders.v1"]);
        assert_eq!(
            notify.retry_topics,
            [
                "orders.v1.shop.notification-svc.retry.5s",
                "orders.v1.shop.notification-svc.retry.1m"
            ]
        );
        assert!(grants.refused.is_empty(), "{:?}", grants.refused);
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

    pub(crate) fn at(mut t: EventTopic, created: &str) -> EventTopic {
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created.parse().expect("time"),
        ));
        t
    }

    pub(crate) fn reason(grants: &Grants, resource: &str) -> Option<&'static str> {
        grants.refused.get(resource).map(|r| r.reason)
    }

    #[test]
    fn a_topic_in_conflict_grants_nothing_to_its_producers_or_consumers() {
        let owner = at(
            topic(
                "a",
                "orders",
                json!({"topicName": "orders.v1", "producers": [{"serviceAccount": "p"}]}),
            ),
            "2026-01-01T00:00:00Z",
        );
        let thief = at(
            topic(
                "b",
                "stolen",
                json!({"topicName": "orders.v1", "producers": [{"serviceAccount": "thief"}]}),
            ),
            "2026-01-02T00:00:00Z",
        );
        let spy = consumer(
            "b",
            "spy",
            json!({"topics": ["stolen"], "serviceAccount": "spy", "delivery": {"http": {"url": "http://x"}}}),
        );
        let grants = from_resources(&[thief, owner], &[spy]);
        assert_eq!(grants.producers.len(), 1);
        assert_eq!(grants.producers[0].service_account, "p");
        assert!(grants.consumers.is_empty());
        assert_eq!(reason(&grants, "EventTopic/b/stolen"), Some("Conflict"));
        assert_eq!(
            reason(&grants, "EventConsumer/b/spy"),
            Some("TopicInConflict")
        );
        assert!(
            grants.refused["EventConsumer/b/spy"]
                .message
                .contains("a/orders"),
            "{:?}",
            grants.refused
        );
        assert_eq!(
            grants.identities().into_iter().collect::<Vec<_>>(),
            [("a".to_owned(), "p".to_owned())],
            "no credential for a principal that is granted nothing"
        );
    }

    #[test]
    fn kafka_internal_topics_are_never_granted() {
        let t = topic(
            "a",
            "offsets",
            json!({"topicName": "__consumer_offsets", "producers": [{"serviceAccount": "p"}]}),
        );
        let c = consumer(
            "a",
            "c",
            json!({"topics": ["offsets"], "serviceAccount": "c",
                                          "delivery": {"http": {"url": "http://x"}}}),
        );
        let grants = from_resources(&[t], &[c]);
        assert!(grants.producers.is_empty() && grants.consumers.is_empty());
        assert_eq!(
            reason(&grants, "EventTopic/a/offsets"),
            Some("InternalTopic")
        );
        assert_eq!(reason(&grants, "EventConsumer/a/c"), Some("InternalTopic"));
    }

    #[test]
    fn each_resource_sees_only_its_own_grants() {
        let t = topic(
            "a",
            "t",
            json!({"producers": [{"serviceAccount": "p"}, {"serviceAccount": "q"}]}),
        );
        let c = consumer(
            "a",
            "c",
            json!({"topics": ["t"], "serviceAccount": "p",
                                          "delivery": {"http": {"url": "http://x"}}}),
        );
        let grants = from_resources(&[t], &[c]).by_resource();
        let topic_only = &grants["EventTopic/a/t"];
        assert_eq!(topic_only.producers.len(), 2);
        assert!(topic_only.consumers.is_empty());
        assert_eq!(topic_only.identities().len(), 2);
        let consumer_only = &grants["EventConsumer/a/c"];
        assert!(consumer_only.producers.is_empty());
        assert_eq!(consumer_only.consumers.len(), 1);
        assert_eq!(
            consumer_only.identities().into_iter().collect::<Vec<_>>(),
            [("a".to_owned(), "p".to_owned())]
        );
    }
}
