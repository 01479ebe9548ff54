//! The desired ACL set: which Kafka ACLs each principal should hold, a pure function of the
//! grants ([`super::grants`]), and the difference to what Kafka holds (DESIGN §3).
//!
//! ```text
//!  ProducerGrant ─┐                      ┌─ create what is missing
//!                 ├─ desired_acls() ── diff() ─┤
//!  ConsumerGrant ─┘        ▲             └─ delete what is no longer declared
//!                          │                   (only for principals Ferry manages)
//!              DescribeAcls (actual)
//! ```
//!
//! Every service account gets one principal, `User:<namespace>.<serviceAccount>`
//! ([`super::principal`]):
//! - a producer: WRITE + DESCRIBE + DESCRIBE_CONFIGS on each topic it produces to (the relay
//!   reads the topic's `max.message.bytes` and `cleanup.policy` to refuse a record the broker
//!   would reject before sending it);
//! - a consumer: READ + DESCRIBE on its topics, READ on its group, READ + WRITE + DESCRIBE on
//!   its retry topics (it both parks records there and consumes them back), and READ + WRITE +
//!   DESCRIBE on its dead-letter topic (READ so `kubectl ferry dlq` can list and replay its
//!   dead letters with the consumer's own credential instead of an admin's, issue #18).
//!
//! WRITE implies IDEMPOTENT_WRITE since Kafka 3.0 (KIP-679), so idempotent producers need no
//! cluster ACL.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    grants::{ConsumerGrant, ProducerGrant},
    principal::{is_ferry_shaped, principal},
};
use crate::kafka::acls::{AclBinding, Operation, ResourceType};

/// The ACLs each principal should hold, keyed by principal.
pub fn desired_acls(
    producers: &[ProducerGrant],
    consumers: &[ConsumerGrant],
) -> BTreeMap<String, BTreeSet<AclBinding>> {
    let mut desired: BTreeMap<String, BTreeSet<AclBinding>> = BTreeMap::new();
    let mut grant = |principal: &str, resource: ResourceType, name: &str, ops: &[Operation]| {
        let set = desired.entry(principal.to_owned()).or_default();
        for op in ops {
            set.insert(AclBinding::allow(principal, resource, name, *op));
        }
    };
    use Operation::{Describe, DescribeConfigs, Read, Write};
    for p in producers {
        let who = principal(&p.namespace, &p.service_account);
        grant(
            &who,
            ResourceType::Topic,
            &p.topic,
            &[Write, Describe, DescribeConfigs],
        );
    }
    for c in consumers {
        let who = principal(&c.namespace, &c.service_account);
        for topic in &c.topics {
            grant(&who, ResourceType::Topic, topic, &[Read, Describe]);
        }
        grant(&who, ResourceType::Group, &c.group, &[Read]);
        for topic in &c.retry_topics {
            grant(&who, ResourceType::Topic, topic, &[Read, Write, Describe]);
        }
        if let Some(topic) = &c.dead_letter_topic {
            grant(&who, ResourceType::Topic, topic, &[Read, Write, Describe]);
        }
    }
    desired
}

/// What to change in Kafka so that the managed principals hold exactly what is desired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AclDiff {
    pub create: Vec<AclBinding>,
    pub delete: Vec<AclBinding>,
}

impl AclDiff {
    /// Whether Kafka already matches.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// Compares the desired ACLs with what Kafka holds (`actual`, all principals). A principal is
/// managed when it is desired or in `managed` (it had a Ferry credential); bindings of any other
/// principal are never touched, whatever they are. Of a managed principal, every binding that
/// is not desired is deleted, including DENY and prefixed ones added by hand.
pub fn diff(
    desired: &BTreeMap<String, BTreeSet<AclBinding>>,
    actual: &[AclBinding],
    managed: &BTreeSet<String>,
) -> AclDiff {
    let is_managed =
        |p: &str| is_ferry_shaped(p) && (desired.contains_key(p) || managed.contains(p));
    let actual: BTreeSet<&AclBinding> =
        actual.iter().filter(|b| is_managed(&b.principal)).collect();
    let wanted: BTreeSet<&AclBinding> = desired
        .iter()
        .filter(|(p, _)| is_ferry_shaped(p))
        .flat_map(|(_, set)| set.iter())
        .collect();
    AclDiff {
        create: wanted.difference(&actual).map(|b| (*b).clone()).collect(),
        delete: actual.difference(&wanted).map(|b| (*b).clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::acls::{PatternType, Permission};

    fn producer(ns: &str, sa: &str, topic: &str) -> ProducerGrant {
        ProducerGrant {
            resource: format!("EventTopic/{ns}/{topic}"),
            namespace: ns.into(),
            service_account: sa.into(),
            topic: topic.into(),
        }
    }

    fn consumer(ns: &str, sa: &str) -> ConsumerGrant {
        ConsumerGrant {
            resource: format!("EventConsumer/{ns}/{sa}"),
            namespace: ns.into(),
            service_account: sa.into(),
            group: "notification-svc".into(),
            topics: vec!["orders.v1".into()],
            retry_topics: vec!["orders.v1.notification-svc.retry.5s".into()],
            dead_letter_topic: Some("dlq.v1".into()),
        }
    }

    fn ops(set: &BTreeSet<AclBinding>, resource: ResourceType, name: &str) -> BTreeSet<Operation> {
        set.iter()
            .filter(|b| b.resource_type == resource && b.resource_name == name)
            .map(|b| b.operation)
            .collect()
    }

    #[test]
    fn producers_get_write_describe_and_describe_configs_on_their_topic_only() {
        let desired = desired_acls(&[producer("shop", "user-service", "users.v1")], &[]);
        let set = &desired["User:shop.user-service"];
        assert_eq!(set.len(), 3);
        assert_eq!(
            ops(set, ResourceType::Topic, "users.v1"),
            [
                Operation::Write,
                Operation::Describe,
                Operation::DescribeConfigs
            ]
            .into()
        );
        assert!(set.iter().all(|b| b.pattern == PatternType::Literal
            && b.permission == Permission::Allow
            && b.host == "*"));
    }

    #[test]
    fn consumers_get_read_on_topics_and_group_and_write_on_retry_and_dead_letter() {
        let desired = desired_acls(&[], &[consumer("shop", "notification-service")]);
        let set = &desired["User:shop.notification-service"];
        assert_eq!(
            ops(set, ResourceType::Topic, "orders.v1"),
            [Operation::Read, Operation::Describe].into()
        );
        assert_eq!(
            ops(set, ResourceType::Group, "notification-svc"),
            [Operation::Read].into()
        );
        assert_eq!(
            ops(
                set,
                ResourceType::Topic,
                "orders.v1.notification-svc.retry.5s"
            ),
            [Operation::Read, Operation::Write, Operation::Describe].into()
        );
        assert_eq!(
            ops(set, ResourceType::Topic, "dlq.v1"),
            [Operation::Read, Operation::Write, Operation::Describe].into()
        );
        // Nothing else: no WRITE on the main topic, no other group.
        assert_eq!(set.len(), 2 + 1 + 3 + 3);
    }

    #[test]
    fn one_principal_per_service_account_and_namespace() {
        let desired = desired_acls(
            &[
                producer("a", "svc", "t1"),
                producer("b", "svc", "t1"),
                producer("a", "svc", "t2"),
            ],
            &[],
        );
        assert_eq!(
            desired.keys().cloned().collect::<Vec<_>>(),
            ["User:a.svc", "User:b.svc"]
        );
        assert_eq!(desired["User:a.svc"].len(), 6);
    }

    #[test]
    fn a_producer_and_consumer_role_merge_without_duplicates() {
        let mut c = consumer("shop", "order-service");
        c.topics = vec!["orders.v1".into()];
        let desired = desired_acls(&[producer("shop", "order-service", "orders.v1")], &[c]);
        let set = &desired["User:shop.order-service"];
        assert_eq!(
            ops(set, ResourceType::Topic, "orders.v1"),
            [
                Operation::Read,
                Operation::Write,
                Operation::Describe,
                Operation::DescribeConfigs
            ]
            .into()
        );
    }

    #[test]
    fn diff_creates_missing_and_deletes_undeclared_for_managed_principals() {
        let desired = desired_acls(&[producer("shop", "user-service", "users.v1")], &[]);
        let stale = AclBinding::allow(
            "User:shop.user-service",
            ResourceType::Topic,
            "old.v1",
            Operation::Write,
        );
        let kept = AclBinding::allow(
            "User:shop.user-service",
            ResourceType::Topic,
            "users.v1",
            Operation::Write,
        );
        let d = diff(&desired, &[stale.clone(), kept], &BTreeSet::new());
        assert_eq!(d.delete, vec![stale]);
        let created: BTreeSet<Operation> = d.create.iter().map(|b| b.operation).collect();
        assert_eq!(
            created,
            [Operation::Describe, Operation::DescribeConfigs].into()
        );
    }

    #[test]
    fn diff_removes_everything_of_a_principal_no_longer_declared_but_still_managed() {
        let gone = AclBinding::allow(
            "User:shop.old-service",
            ResourceType::Topic,
            "users.v1",
            Operation::Write,
        );
        let mut deny = gone.clone();
        deny.permission = Permission::Deny;
        deny.pattern = PatternType::Prefixed;
        let managed: BTreeSet<String> = ["User:shop.old-service".to_owned()].into();
        let d = diff(&BTreeMap::new(), &[gone.clone(), deny.clone()], &managed);
        assert_eq!(d.delete.len(), 2);
        assert!(d.delete.contains(&gone) && d.delete.contains(&deny));
        assert!(d.create.is_empty());
    }

    #[test]
    fn diff_never_touches_foreign_principals() {
        let foreign = [
            AclBinding::allow(
                "User:admin",
                ResourceType::Topic,
                "users.v1",
                Operation::All,
            ),
            AclBinding::allow(
                "User:ANONYMOUS",
                ResourceType::Cluster,
                "kafka-cluster",
                Operation::All,
            ),
            AclBinding::allow("User:*", ResourceType::Topic, "public", Operation::Read),
            AclBinding::allow("User:other-tool", ResourceType::Group, "g", Operation::Read),
            // Ferry-shaped but neither declared nor holding a Ferry credential.
            AclBinding::allow(
                "User:team.unmanaged",
                ResourceType::Topic,
                "t",
                Operation::Read,
            ),
        ];
        let desired = desired_acls(&[producer("shop", "user-service", "users.v1")], &[]);
        // Even if someone lists them as managed, foreign-shaped principals are never touched.
        let managed: BTreeSet<String> = ["User:admin".to_owned(), "User:*".to_owned()].into();
        let d = diff(&desired, &foreign, &managed);
        assert!(d.delete.is_empty(), "{:?}", d.delete);
        assert_eq!(d.create.len(), 3);
    }

    #[test]
    fn diff_of_a_converged_state_is_empty() {
        let desired = desired_acls(&[producer("a", "p", "t")], &[consumer("a", "c")]);
        let actual: Vec<AclBinding> = desired.values().flatten().cloned().collect();
        assert!(diff(&desired, &actual, &BTreeSet::new()).is_empty());
    }
}
