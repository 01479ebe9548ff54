//! What a resource was granted shows in its status (the real operator binary, real API server,
//! real broker with its authorizer on): the principals and ACLs, an `AccessGranted` condition,
//! `Ready` only once the producers may write, a missing admin right as a condition with its
//! reason (and recovery once granted), and never a password.

mod support;

use std::time::Duration;

use ferry_operator::{
    api::{ConditionStatus, EventConsumer},
    kafka::acls::{AclBinding, Operation, ResourceType},
};
use ferry_testkit::{eventually, require_env, unique_name};
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use support::{Fixture, MANAGER, produce_as};

/// A pass is debounced 300 ms and the test operator resyncs every 2 s; failed passes back off
/// from 1 s doubling, so a fixed right is picked up within a few of them.
const WITHIN: Duration = Duration::from_secs(60);

fn condition(
    conditions: &[ferry_operator::api::Condition],
    type_: &str,
) -> Option<ConditionStatus> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status)
}

#[tokio::test]
async fn status_names_principals_and_acls_and_ready_means_producers_may_write() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("access-a");
    let ns = f.ns.name().to_owned();
    let kafka_topic = unique_name("orders");
    f.apply(
        "orders",
        json!({"topicName": kafka_topic, "producers": [{"serviceAccount": "order-service"}]}),
    )
    .await;
    let consumers: Api<EventConsumer> = Api::namespaced(f.ns.client(), &ns);
    consumers
        .patch(
            "notify",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
                "metadata": {"name": "notify"},
                "spec": {"topics": ["orders"], "serviceAccount": "notification-service",
                         "delivery": {"http": {"url": "http://notification:8000/events"}}}
            })),
        )
        .await
        .expect("EventConsumer applied");

    let topic = f
        .wait_ready("orders", ConditionStatus::True, "Ready", WITHIN)
        .await;
    let status = topic.status.clone().expect("status");
    let producer = format!("User:{ns}.order-service");
    let access = status.access.clone().expect("status.access");
    assert_eq!(access.principals, vec![producer.clone()]);
    let mut acls = access.acls.clone();
    acls.sort();
    assert_eq!(
        acls,
        vec![
            format!("{producer} DESCRIBE Topic:{kafka_topic}"),
            format!("{producer} DESCRIBE_CONFIGS Topic:{kafka_topic}"),
            format!("{producer} WRITE Topic:{kafka_topic}"),
        ]
    );
    assert_eq!(
        condition(&status.conditions, "AccessGranted"),
        Some(ConditionStatus::True)
    );

    // Ready means the producer may write: its credential works right away (allowing only for
    // the broker applying the ACL from its metadata log).
    let secrets: Api<Secret> = Api::namespaced(f.ns.client(), &ns);
    let password = |secret: &Secret| {
        let data = secret.data.as_ref().expect("Secret data");
        String::from_utf8(data["password"].0.clone()).expect("UTF-8 password")
    };
    let producer_password = password(
        &secrets
            .get("ferry-kafka-order-service")
            .await
            .expect("Secret"),
    );
    eventually(
        "the producer writes once its EventTopic is Ready",
        Duration::from_secs(5),
        || async {
            produce_as(
                env,
                &format!("{ns}.order-service"),
                &producer_password,
                &kafka_topic,
            )
            .await
            .ok()
        },
    )
    .await
    .expect("the producer writes once its EventTopic is Ready");
    // ... and reads its topic's configs (the relay checks max.message.bytes and
    // cleanup.policy before it sends).
    let as_producer = ferry_operator::kafka::KafkaAdmin::new(
        &env.kafka_args_as(&format!("{ns}.order-service"), &producer_password)
            .client_config()
            .expect("settings"),
        Duration::from_secs(30),
    )
    .expect("admin client as the producer");
    let described = as_producer
        .describe_topics(std::slice::from_ref(&kafka_topic))
        .await
        .expect("describe request");
    assert!(
        matches!(&described[0].1, Ok(Some(_))),
        "the producer may describe its topic's configs: {:?}",
        described[0].1
    );

    // The consumer's status names its principal, group and dead-letter topic.
    let consumer = eventually("EventConsumer AccessGranted", WITHIN, || async {
        let c = consumers.get("notify").await.ok()?;
        let s = c.status.clone()?;
        (condition(&s.conditions, "AccessGranted") == Some(ConditionStatus::True)).then_some(c)
    })
    .await
    .expect("EventConsumer AccessGranted");
    let consumer_access = consumer
        .status
        .as_ref()
        .and_then(|s| s.access.clone())
        .expect("EventConsumer status.access");
    let consumer_principal = format!("User:{ns}.notification-service");
    assert_eq!(consumer_access.principals, vec![consumer_principal.clone()]);
    for expected in [
        format!("{consumer_principal} READ Topic:{kafka_topic}"),
        format!("{consumer_principal} READ Group:{ns}.notify"),
        format!("{consumer_principal} WRITE Topic:{ns}.notify.dlq"),
    ] {
        assert!(
            consumer_access.acls.contains(&expected),
            "{expected} in {:?}",
            consumer_access.acls
        );
    }

    // No password anywhere a person or a log collector reads: statuses and Events.
    let consumer_password = password(
        &secrets
            .get("ferry-kafka-notification-service")
            .await
            .expect("Secret"),
    );
    let events: Api<Event> = Api::namespaced(f.ns.client(), &ns);
    let mut visible =
        serde_json::to_string(&f.api.get("orders").await.expect("get").status).expect("JSON");
    visible +=
        &serde_json::to_string(&consumers.get("notify").await.expect("get").status).expect("JSON");
    for event in events
        .list(&Default::default())
        .await
        .expect("Events")
        .items
    {
        visible += &event.note.unwrap_or_default();
    }
    assert!(visible.contains(&producer), "the check reads real text");
    for secret in [&producer_password, &consumer_password] {
        assert!(!visible.contains(secret.as_str()), "a password leaked");
    }

    // The producer removed: the status says so and shows no principal.
    f.apply("orders", json!({"topicName": kafka_topic})).await;
    let topic = f
        .wait_ready("orders", ConditionStatus::True, "Ready", WITHIN)
        .await;
    let status = topic.status.expect("status");
    assert_eq!(status.access, None, "no producer, no access shown");
    // Ready again means the removed producer's ACLs are gone from Kafka.
    let left = f
        .kafka
        .describe_acls(Some(&producer))
        .await
        .expect("describe ACLs");
    assert!(
        left.is_empty(),
        "Ready while the removed producer still holds {left:?}"
    );
    assert_eq!(
        condition(&status.conditions, "AccessGranted"),
        Some(ConditionStatus::True)
    );
}

#[tokio::test]
async fn an_admin_lacking_acl_rights_shows_as_a_condition_and_recovers_when_granted() {
    let env = require_env!();
    let f = Fixture::new(env).await;

    // An admin credential that may manage topics but not ACLs or credentials (a common
    // mistake when the chart is given a topic-admin user).
    let user = unique_name("topic-admin");
    let principal = format!("User:{user}");
    let password = unique_name("pw");
    f.kafka
        .upsert_scram_credential(&user, &password)
        .await
        .expect("weak admin credential");
    let topic_rights = [AclBinding::allow(
        &principal,
        ResourceType::Topic,
        "*",
        Operation::All,
    )];
    let cluster_rights = [
        AclBinding::allow(
            &principal,
            ResourceType::Cluster,
            "kafka-cluster",
            Operation::Alter,
        ),
        AclBinding::allow(
            &principal,
            ResourceType::Cluster,
            "kafka-cluster",
            Operation::Describe,
        ),
    ];
    f.kafka
        .create_acls(&topic_rights)
        .await
        .expect("topic rights");
    let _operator = support::Operator::start(
        env,
        f.ns.name(),
        "access-weak",
        &["--kafka-username", &user, "--kafka-password", &password],
    );

    let kafka_topic = unique_name("payments");
    f.apply(
        "payments",
        json!({"topicName": kafka_topic, "producers": [{"serviceAccount": "payment-service"}]}),
    )
    .await;
    let topic = f
        .wait_ready(
            "payments",
            ConditionStatus::False,
            "KafkaNotAuthorized",
            WITHIN,
        )
        .await;
    let status = topic.status.expect("status");
    let access = status
        .conditions
        .iter()
        .find(|c| c.type_ == "AccessGranted")
        .expect("AccessGranted condition");
    assert_eq!(access.status, ConditionStatus::False);
    assert!(
        access.message.to_lowercase().contains("authorization"),
        "the condition names the cause: {}",
        access.message
    );
    assert_eq!(
        condition(&status.conditions, "Stalled"),
        Some(ConditionStatus::True),
        "a missing right needs a person"
    );
    assert_eq!(
        status.access.map(|a| a.principals),
        Some(vec![format!("User:{}.payment-service", f.ns.name())]),
        "what it asks for is shown while it is refused"
    );
    // The topic itself was created: only its access is missing.
    f.kafka_topic(&kafka_topic, |t| t.is_some()).await;

    // A person grants the rights: the operator recovers by itself.
    f.kafka
        .create_acls(&cluster_rights)
        .await
        .expect("cluster rights");
    let topic = f
        .wait_ready("payments", ConditionStatus::True, "Ready", WITHIN)
        .await;
    assert_eq!(
        condition(&topic.status.expect("status").conditions, "AccessGranted"),
        Some(ConditionStatus::True)
    );

    let all: Vec<AclBinding> = topic_rights.into_iter().chain(cluster_rights).collect();
    f.kafka.delete_acls(&all).await.expect("clean up ACLs");
    f.kafka
        .delete_scram_credential(&user)
        .await
        .expect("clean up credential");
}
