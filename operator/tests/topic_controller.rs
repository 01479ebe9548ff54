//! The EventTopic controller against a real kube-apiserver and a real Kafka broker: the real
//! `ferry-operator run` binary watches a namespace of its own; each test tries to break one
//! promise of DESIGN §2 (create, adopt, grow, config sync, invalid config, conflicts, drift,
//! deletion policies, restarts, leader election).

mod support;

use std::{collections::BTreeMap, time::Duration};

use ferry_operator::{
    api::ConditionStatus::{False, True},
    kafka::{ConfigOp, NewTopicSpec},
};
use ferry_testkit::{eventually, require_env, unique_name};
use kube::ResourceExt;
use serde_json::json;
use support::Fixture;

/// Long enough for a cold operator to start, win its Lease and converge on a loaded 2-core CI.
const CONVERGE: Duration = Duration::from_secs(60);

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn cleanup(f: &Fixture, topics: &[String]) {
    let _ = f.kafka.delete_topics(topics).await;
}

#[tokio::test]
async fn creates_grows_and_syncs_configs() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let topic = unique_name("orders");

    f.apply(
        "orders",
        json!({"topicName": topic, "partitions": 2, "replicationFactor": 1,
               "config": {"retention.ms": "600000", "cleanup.policy": "delete"}}),
    )
    .await;
    let et = f.wait_ready("orders", True, "Ready", CONVERGE).await;
    let status = et.status.expect("status");
    let kafka = f
        .kafka_topic(&topic, |t| t.is_some())
        .await
        .expect("exists");
    assert_eq!(kafka.partitions, 2);
    assert_eq!(
        kafka.config,
        config(&[("retention.ms", "600000"), ("cleanup.policy", "delete")])
    );
    assert_eq!(status.topic_id.as_deref(), Some(kafka.topic_id.as_str()));
    assert_eq!(status.partitions, Some(2));
    assert_eq!(status.replication_factor, Some(1));
    assert_eq!(status.topic_name.as_deref(), Some(topic.as_str()));
    assert!(
        et.metadata.finalizers.unwrap_or_default().is_empty(),
        "Retain adds no finalizer"
    );
    // The status is written by server-side apply under one field manager.
    let status_managers: Vec<(Option<String>, Option<String>)> = et
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .map(|m| (m.manager, m.operation))
        .collect();
    assert_eq!(
        status_managers,
        [(Some("ferry-operator".to_owned()), Some("Apply".to_owned()))]
    );
    f.wait_event("orders", "Created", CONVERGE).await;

    // Grow, change one config, add another, drop one.
    f.apply(
        "orders",
        json!({"topicName": topic, "partitions": 5, "replicationFactor": 1,
               "config": {"retention.ms": "900000", "max.message.bytes": "2000000"}}),
    )
    .await;
    let et = f.wait_ready("orders", True, "Ready", CONVERGE).await;
    assert_eq!(et.status.expect("status").partitions, Some(5));
    let kafka = f
        .kafka_topic(&topic, |t| t.is_some())
        .await
        .expect("exists");
    assert_eq!(kafka.partitions, 5);
    assert_eq!(
        kafka.config,
        config(&[("retention.ms", "900000"), ("max.message.bytes", "2000000")]),
        "cleanup.policy override removed, others set"
    );
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn adopts_an_existing_topic_and_removes_foreign_overrides() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let topic = unique_name("users");
    f.kafka
        .create_topics(&[NewTopicSpec {
            name: topic.clone(),
            partitions: 3,
            replication_factor: Some(1),
            config: config(&[("segment.ms", "3600000"), ("cleanup.policy", "compact")]),
        }])
        .await
        .expect("request")[0]
        .1
        .clone()
        .expect("created by hand");
    let before = f
        .kafka_topic(&topic, |t| t.is_some())
        .await
        .expect("exists");

    let _operator = f.operator("a");
    f.apply(
        "users",
        json!({"topicName": topic, "partitions": 3, "config": {"cleanup.policy": "compact"}}),
    )
    .await;
    let et = f.wait_ready("users", True, "Ready", CONVERGE).await;
    let after = f
        .kafka_topic(&topic, |t| {
            t.is_some_and(|t| !t.config.contains_key("segment.ms"))
        })
        .await
        .expect("exists");
    assert_eq!(after.topic_id, before.topic_id, "adopted, not re-created");
    assert_eq!(after.config, config(&[("cleanup.policy", "compact")]));
    assert_eq!(et.status.expect("status").topic_id, Some(before.topic_id));
    f.wait_event("users", "Adopted", CONVERGE).await;
    // What was removed was reported first, with its value, so a person can put it back.
    f.wait_event("users", "UnmanagedConfigs", CONVERGE).await;
    let notes = f.event_notes("users", "UnmanagedConfigs").await;
    assert!(
        notes.iter().any(|n| n.contains("segment.ms=3600000")),
        "the Event names the config and its value: {notes:?}"
    );
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn adoption_keeps_configs_outside_the_spec_when_asked() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let topic = unique_name("legacy");
    f.kafka
        .create_topics(&[NewTopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: Some(1),
            config: config(&[("retention.ms", "-1"), ("cleanup.policy", "delete")]),
        }])
        .await
        .expect("request")[0]
        .1
        .clone()
        .expect("created by hand");
    f.kafka_topic(&topic, |t| t.is_some()).await;

    let _operator = f.operator("a");
    f.apply(
        "legacy",
        json!({"topicName": topic, "unmanagedConfigs": "Keep",
               "config": {"cleanup.policy": "compact"}}),
    )
    .await;
    f.wait_ready("legacy", True, "Ready", CONVERGE).await;
    f.wait_event("legacy", "UnmanagedConfigs", CONVERGE).await;
    let notes = f.event_notes("legacy", "UnmanagedConfigs").await;
    assert!(
        notes.iter().any(|n| n.contains("retention.ms=-1")),
        "the Event names the kept config: {notes:?}"
    );
    // Several resyncs later, the config outside the spec is still there; the spec's own key
    // was set.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kafka = f
        .kafka_topic(&topic, |t| {
            t.is_some_and(|t| t.config.get("cleanup.policy").map(String::as_str) == Some("compact"))
        })
        .await
        .expect("exists");
    assert_eq!(
        kafka.config,
        config(&[("retention.ms", "-1"), ("cleanup.policy", "compact")])
    );
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn refuses_unknown_unsafe_and_invalid_configs() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let unsafe_topic = unique_name("unsafe");
    let bad_value_topic = unique_name("badvalue");

    f.apply(
        "unsafe",
        json!({"topicName": unsafe_topic,
        "config": {"unclean.leader.election.enable": "true", "retention.days": "7"}}),
    )
    .await;
    let et = f
        .wait_ready("unsafe", False, "InvalidConfig", CONVERGE)
        .await;
    let ready = et
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready
            .message
            .contains("unclean.leader.election.enable is not allowed"),
        "{}",
        ready.message
    );
    assert!(
        ready
            .message
            .contains("retention.days is not a Kafka topic config"),
        "{}",
        ready.message
    );
    // Nothing was created for a refused spec.
    assert!(f.kafka_topic(&unsafe_topic, |_| true).await.is_none());

    // A known key with a value Kafka refuses: Kafka's own reason reaches the condition.
    f.apply(
        "badvalue",
        json!({"topicName": bad_value_topic, "config": {"retention.ms": "soon"}}),
    )
    .await;
    f.wait_ready("badvalue", False, "InvalidConfig", CONVERGE)
        .await;

    // Fixing the spec makes it Ready.
    f.apply(
        "unsafe",
        json!({"topicName": unsafe_topic, "config": {"retention.ms": "60000"}}),
    )
    .await;
    f.wait_ready("unsafe", True, "Ready", CONVERGE).await;
    cleanup(&f, &[unsafe_topic, bad_value_topic]).await;
}

#[tokio::test]
async fn the_older_event_topic_wins_a_conflict() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let topic = unique_name("shared");

    f.apply("a-first", json!({"topicName": topic, "partitions": 2}))
        .await;
    f.wait_ready("a-first", True, "Ready", CONVERGE).await;
    f.apply(
        "b-second",
        json!({"topicName": topic, "partitions": 4, "config": {"retention.ms": "1000"}}),
    )
    .await;
    let loser = f.wait_ready("b-second", False, "Conflict", CONVERGE).await;
    let message = loser
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(message.contains("a-first"), "{message}");
    // The loser changed nothing in Kafka, and the winner stays Ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kafka = f
        .kafka_topic(&topic, |t| t.is_some())
        .await
        .expect("exists");
    assert_eq!(kafka.partitions, 2);
    assert!(kafka.config.is_empty(), "{:?}", kafka.config);
    f.wait_ready("a-first", True, "Ready", CONVERGE).await;

    // Once the winner is gone (Retain keeps the topic), the other takes the topic over.
    f.delete("a-first").await;
    f.wait_ready("b-second", True, "Ready", CONVERGE).await;
    let kafka = f
        .kafka_topic(&topic, |t| t.is_some_and(|t| t.partitions == 4))
        .await
        .expect("exists");
    assert_eq!(kafka.config, config(&[("retention.ms", "1000")]));
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn drift_made_in_kafka_is_reverted_and_reported() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let topic = unique_name("drift");
    f.apply(
        "drift",
        json!({"topicName": topic, "partitions": 2, "config": {"retention.ms": "600000"}}),
    )
    .await;
    f.wait_ready("drift", True, "Ready", CONVERGE).await;

    // Someone changes the topic directly in Kafka.
    f.kafka
        .alter_topic_configs(&[(
            topic.clone(),
            vec![
                ConfigOp::Set {
                    key: "retention.ms".into(),
                    value: "1".into(),
                },
                ConfigOp::Set {
                    key: "segment.ms".into(),
                    value: "1000000".into(),
                },
            ],
        )])
        .await
        .expect("alter")[0]
        .1
        .clone()
        .expect("altered");
    f.kafka
        .create_partitions(&[(topic.clone(), 3)])
        .await
        .expect("grow by hand");

    // The resync (2 s in tests) reverts the configs; partitions cannot shrink and are reported.
    f.wait_event("drift", "DriftReverted", CONVERGE).await;
    let kafka = f
        .kafka_topic(&topic, |t| {
            t.is_some_and(|t| t.config == config(&[("retention.ms", "600000")]))
        })
        .await
        .expect("exists");
    assert_eq!(kafka.partitions, 3);
    let et = f.wait_ready("drift", False, "NotSupported", CONVERGE).await;
    let message = et
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready")
        .message;
    assert!(message.contains("cannot remove partitions"), "{message}");
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn replication_factor_mismatch_is_not_supported() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let topic = unique_name("rf");
    f.kafka
        .create_topics(&[NewTopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: Some(1),
            config: BTreeMap::new(),
        }])
        .await
        .expect("create");
    let _operator = f.operator("a");
    f.apply(
        "rf",
        json!({"topicName": topic, "partitions": 1, "replicationFactor": 3}),
    )
    .await;
    let et = f.wait_ready("rf", False, "NotSupported", CONVERGE).await;
    let stalled = et
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Stalled")
        .expect("Stalled");
    assert_eq!(stalled.status, True);
    assert!(
        stalled.message.contains("replication factor 1"),
        "{}",
        stalled.message
    );
    cleanup(&f, &[topic]).await;
}

#[tokio::test]
async fn deletion_policies_delete_or_retain_the_kafka_topic() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let deleted = unique_name("gone");
    let retained = unique_name("kept");
    f.apply(
        "gone",
        json!({"topicName": deleted, "deletionPolicy": "Delete"}),
    )
    .await;
    f.apply("kept", json!({"topicName": retained})).await;
    let gone = f.wait_ready("gone", True, "Ready", CONVERGE).await;
    let kept = f.wait_ready("kept", True, "Ready", CONVERGE).await;
    assert_eq!(
        gone.finalizers(),
        ["ferry.dev/delete-kafka-topic".to_owned()]
    );
    assert!(kept.finalizers().is_empty());

    f.delete("gone").await;
    f.delete("kept").await;
    eventually("both EventTopics go away", CONVERGE, || async {
        let a = f.api.get_opt("gone").await.ok()?;
        let b = f.api.get_opt("kept").await.ok()?;
        (a.is_none() && b.is_none()).then_some(())
    })
    .await
    .expect("both EventTopics go away");
    assert!(
        f.kafka_topic(&deleted, |t| t.is_none()).await.is_none(),
        "Delete deleted the topic"
    );
    assert!(
        f.kafka_topic(&retained, |t| t.is_some()).await.is_some(),
        "Retain kept the topic"
    );
    cleanup(&f, &[retained]).await;
}

#[tokio::test]
async fn a_restart_mid_reconcile_converges() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let names: Vec<String> = (0..20).map(|_| unique_name("restart")).collect();
    let mut first = f.operator("first");
    // Give it a moment to lead, then apply everything and kill -9 it while it works.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (i, topic) in names.iter().enumerate() {
        f.apply(&format!("t{i}"), json!({"topicName": topic, "partitions": 1 + (i % 3), "config": {"retention.ms": "3600000"}}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.process.kill9().await.expect("kill -9");

    let _second = f.operator("second");
    for (i, topic) in names.iter().enumerate() {
        f.wait_ready(&format!("t{i}"), True, "Ready", CONVERGE)
            .await;
        let kafka = f.kafka_topic(topic, |t| t.is_some()).await.expect("exists");
        assert_eq!(kafka.partitions, 1 + (i % 3) as i32, "{topic}");
        assert_eq!(
            kafka.config,
            config(&[("retention.ms", "3600000")]),
            "{topic}"
        );
    }
    cleanup(&f, &names).await;
}

#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_over() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let a = f.operator("a");
    let b = f.operator("b");
    // Exactly one leads, and keeps doing so while both run.
    let leaders = eventually("one leader", CONVERGE, || async {
        let (la, lb) = (a.is_leader().await?, b.is_leader().await?);
        (la != lb).then_some((la, lb))
    })
    .await
    .expect("one leader");
    for _ in 0..10 {
        let (la, lb) = (a.is_leader().await, b.is_leader().await);
        assert!(
            !(la == Some(true) && lb == Some(true)),
            "two leaders at once"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut leader, standby) = if leaders.0 { (a, b) } else { (b, a) };
    let t1 = unique_name("lead");
    f.apply("one", json!({"topicName": t1})).await;
    f.wait_ready("one", True, "Ready", CONVERGE).await;
    // The standby made no reconcile at all.
    let text = standby.metrics().await.expect("standby metrics");
    assert!(
        !text.contains("ferry_operator_reconciles_total{"),
        "standby reconciled:\n{text}"
    );

    leader.process.kill9().await.expect("kill -9 the leader");
    eventually("the standby takes over", CONVERGE, || async {
        standby.is_leader().await?.then_some(())
    })
    .await
    .expect("the standby takes over");
    let t2 = unique_name("lead");
    f.apply("two", json!({"topicName": t2})).await;
    f.wait_ready("two", True, "Ready", CONVERGE).await;
    cleanup(&f, &[t1, t2]).await;
}

#[tokio::test]
async fn sigterm_drains_and_hands_over_the_lease() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let mut a = f.operator("a");
    eventually("the only replica leads", CONVERGE, || async {
        a.is_leader().await?.then_some(())
    })
    .await
    .expect("the only replica leads");
    let b = f.operator("b");
    let status = a
        .process
        .terminate(Duration::from_secs(20))
        .await
        .expect("SIGTERM")
        .expect("exits by itself within the grace period");
    assert!(status.success(), "{status}");
    // The released Lease lets the standby lead without waiting for it to expire.
    let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        f.ns.client(),
        f.ns.name(),
    );
    eventually("the standby takes over", CONVERGE, || async {
        b.is_leader().await?.then_some(())
    })
    .await
    .expect("the standby takes over");
    let lease = leases.get("ferry-operator").await.expect("Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
}

#[tokio::test]
async fn a_failed_renewal_stops_the_controllers_and_the_replica_leads_again() {
    let env = require_env!();
    let f = Fixture::new(env).await;
    let mut a = f.operator("a");
    eventually("the only replica leads", CONVERGE, || async {
        a.is_leader().await?.then_some(())
    })
    .await
    .expect("the only replica leads");
    // Deleting the Lease makes the next renewal fail (404), as a refused or timed-out request
    // on a loaded API server would: leadership can no longer be confirmed.
    let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        f.ns.client(),
        f.ns.name(),
    );
    leases
        .delete("ferry-operator", &Default::default())
        .await
        .expect("delete the Lease");
    // It stays up as a standby and rejoins: the Lease is written again, by this replica.
    // (The time it spends not leading is about a second; too short to poll for reliably.)
    eventually("the Lease is taken again", CONVERGE, || async {
        leases.get_opt("ferry-operator").await.ok()?.map(|_| ())
    })
    .await
    .expect("the replica rejoins the election and takes the Lease again");
    eventually("the replica leads again", CONVERGE, || async {
        a.is_leader().await?.then_some(())
    })
    .await
    .expect("the replica leads again");
    assert!(
        a.process.try_status().expect("status").is_none(),
        "the process must not exit on a failed renewal"
    );
    let lease = leases.get("ferry-operator").await.expect("Lease again");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("a")
    );
    let topic = unique_name("rejoined");
    f.apply("after", json!({"topicName": topic})).await;
    f.wait_ready("after", True, "Ready", CONVERGE).await;
    cleanup(&f, &[topic]).await;
}

/// The contracts the relays enforce: each EventTopic's schema lands in its namespace's
/// `ferry-contracts` ConfigMap under its Kafka topic's name (a `configMapRef` one read from its
/// ConfigMap), follows a change, and leaves with the schema or the EventTopic — also one
/// deleted without a finalizer, which no reconcile sees.
#[tokio::test]
async fn schemas_are_delivered_to_the_namespaces_contracts_config_map() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};

    let env = require_env!();
    let f = Fixture::new(env).await;
    let _operator = f.operator("a");
    let (users, orders) = (unique_name("users"), unique_name("orders"));
    let config_maps = Api::<ConfigMap>::namespaced(f.ns.client(), f.ns.name());
    let contract = |key: String| {
        let config_maps = config_maps.clone();
        async move {
            let cm = config_maps.get_opt("ferry-contracts").await.ok()??;
            let text = cm.data.unwrap_or_default().get(&key)?.clone();
            serde_json::from_str::<serde_json::Value>(&text).ok()
        }
    };
    let user = json!({"type": "object", "required": ["id"]});
    f.apply(
        "users",
        json!({"topicName": users, "schema": {"event": "user.created", "jsonSchema": user}}),
    )
    .await;
    let delivered = eventually("the users contract", CONVERGE, || {
        contract(format!("{users}.json"))
    })
    .await
    .expect("the schema is delivered");
    assert_eq!(
        delivered,
        json!({"event": "user.created", "jsonSchema": user})
    );

    // A schema kept in a ConfigMap of the namespace.
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "schemas"},
                "data": {"orders.json": r#"{"type": "object", "required": ["order_id"]}"#}}))
            .expect("ConfigMap"),
        )
        .await
        .expect("schemas ConfigMap");
    f.apply(
        "orders",
        json!({"topicName": orders, "deletionPolicy": "Delete",
               "schema": {"configMapRef": {"name": "schemas", "key": "orders.json"}}}),
    )
    .await;
    let delivered = eventually("the orders contract", CONVERGE, || {
        contract(format!("{orders}.json"))
    })
    .await
    .expect("the referenced schema is delivered");
    assert_eq!(
        delivered,
        json!({"jsonSchema": {"type": "object", "required": ["order_id"]}})
    );
    // An edit of that ConfigMap alone (no EventTopic changes) follows.
    config_maps
        .patch(
            "schemas",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"orders.json": r#"{"type": "object"}"#}})),
        )
        .await
        .expect("schemas edited");
    eventually("the edited orders contract", CONVERGE, || async {
        (contract(format!("{orders}.json")).await? == json!({"jsonSchema": {"type": "object"}}))
            .then_some(())
    })
    .await
    .expect("the edited ConfigMap is delivered");

    // A changed schema follows.
    let wider =
        json!({"type": "object", "required": ["id"], "properties": {"email": {"type": "string"}}});
    f.apply(
        "users",
        json!({"topicName": users, "schema": {"event": "user.created", "jsonSchema": wider}}),
    )
    .await;
    eventually("the changed users contract", CONVERGE, || async {
        (contract(format!("{users}.json")).await?["jsonSchema"] == wider).then_some(())
    })
    .await
    .expect("the change is delivered");

    // The schema dropped, and an EventTopic without a finalizer deleted: their keys go.
    f.apply(
        "orders",
        json!({"topicName": orders, "deletionPolicy": "Delete"}),
    )
    .await;
    f.delete("users").await;
    eventually("both keys gone", CONVERGE, || async {
        let cm = config_maps.get_opt("ferry-contracts").await.ok()??;
        cm.data.unwrap_or_default().is_empty().then_some(())
    })
    .await
    .expect("the contracts ConfigMap follows");
    f.delete("orders").await;
    cleanup(&f, &[users, orders]).await;
}
