//! What a pass found for each resource, for its status: the principals and ACLs it declares
//! and whether Kafka holds them (pure; the pass records it in the
//! [`AccessBook`](crate::access_status::AccessBook)).
//!
//! A resource refused by the grants shows its refusal; otherwise one of its own identities'
//! failures, or a failure of the whole pass.

use std::{borrow::Borrow, collections::HashMap};

use kube::ResourceExt;

use super::{Error, desired_acls, failures::Failures, grants};
use crate::{
    access_status::{Access, Failure, Kind, ResourceKey},
    api::{AccessStatus, EventConsumer, EventTopic},
    kafka::AclBinding,
};

/// The entry of every live resource in scope.
pub fn findings(
    topics: &[impl Borrow<EventTopic>],
    consumers: &[impl Borrow<EventConsumer>],
    grants: &grants::Grants,
    pass_failure: Option<&Error>,
    failures: &Failures,
) -> HashMap<ResourceKey, Access> {
    let by_resource = grants.by_resource();
    let none = grants::Grants::default();
    let entry = |generation, resource: &str| {
        let own = by_resource.get(resource).unwrap_or(&none);
        let declared = declared_access(own);
        let failure = match grants.refused.get(resource) {
            Some(refusal) => Some(Failure {
                reason: refusal.reason.to_owned(),
                message: refusal.message.clone(),
                transient: false,
            }),
            None if declared.principals.is_empty() => None,
            None => own
                .identities()
                .iter()
                .find_map(|id| failures.by_identity.get(id))
                .or(pass_failure)
                .map(Error::as_failure),
        };
        Access {
            generation,
            declared,
            failure,
        }
    };
    let mut findings = HashMap::new();
    for topic in topics.iter().map(Borrow::borrow) {
        let (ns, name) = (topic.namespace().unwrap_or_default(), topic.name_any());
        let resource = grants::topic_resource(&ns, &name);
        let key = (Kind::EventTopic, ns, name);
        findings.insert(key, entry(topic.metadata.generation, &resource));
    }
    for consumer in consumers.iter().map(Borrow::borrow) {
        let (ns, name) = (
            consumer.namespace().unwrap_or_default(),
            consumer.name_any(),
        );
        let resource = grants::consumer_resource(&ns, &name);
        let key = (Kind::EventConsumer, ns, name);
        findings.insert(key, entry(consumer.metadata.generation, &resource));
    }
    findings
}

/// The principals and ACLs `grants` (of one resource) derive, as its status shows them.
fn declared_access(grants: &grants::Grants) -> AccessStatus {
    let desired = desired_acls::desired_acls(&grants.producers, &grants.consumers);
    AccessStatus {
        principals: desired.keys().cloned().collect(),
        acls: desired.values().flatten().map(describe_acl).collect(),
    }
}

/// `User:ns.sa WRITE Topic:orders`: one ACL as a person reads it, the operation spelled as
/// Kafka's tools spell it (`DESCRIBE_CONFIGS`).
fn describe_acl(binding: &AclBinding) -> String {
    format!(
        "{} {} {:?}:{}",
        binding.principal,
        upper_snake(&format!("{:?}", binding.operation)),
        binding.resource_type,
        binding.resource_name
    )
}

/// `DescribeConfigs` → `DESCRIBE_CONFIGS`.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::grants::tests::{consumer, topic},
        kafka::acls::{Operation, ResourceType},
    };
    use serde_json::json;

    #[test]
    fn acls_read_as_kafka_tools_print_them() {
        let b = AclBinding::allow(
            "User:ns.sa",
            ResourceType::Topic,
            "orders",
            Operation::DescribeConfigs,
        );
        assert_eq!(describe_acl(&b), "User:ns.sa DESCRIBE_CONFIGS Topic:orders");
        assert_eq!(upper_snake("Write"), "WRITE");
    }

    #[test]
    fn each_resource_shows_its_own_access_or_why_it_has_none() {
        let topics = [topic(
            "a",
            "t",
            json!({"topicName": "t.v1", "producers": [{"serviceAccount": "p"}]}),
        )];
        let consumers = [consumer(
            "a",
            "c",
            json!({"topics": ["t"], "serviceAccount": "s", "groupId": "b.outside",
                   "delivery": {"http": {"url": "http://x"}}}),
        )];
        let grants = grants::from_resources(&topics, &consumers);
        let found = findings(&topics, &consumers, &grants, None, &Failures::default());
        let t = &found[&(Kind::EventTopic, "a".to_owned(), "t".to_owned())];
        assert_eq!(t.declared.principals, ["User:a.p"]);
        assert_eq!(t.failure, None);
        let c = &found[&(Kind::EventConsumer, "a".to_owned(), "c".to_owned())];
        assert!(c.declared.principals.is_empty());
        assert_eq!(
            c.failure.as_ref().map(|f| f.reason.as_str()),
            Some("GroupOutsideNamespace")
        );
    }
}
