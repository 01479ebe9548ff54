//! One namespace never gains access to another's topics or consumer groups (the real operator
//! binary, the real API server with Ferry's admission policy, the real broker with its
//! authorizer on): a conflicting EventTopic grants nothing, consumer groups and dead-letter
//! topics stay inside their namespace, and an identity error is reported on its own resource
//! only.
//!
//! Some of these tests run an operator over every namespace, and one removes the admission
//! policy's binding for a while: each holds [`disruption_lock`], and they live in this binary
//! of their own so no other test runs beside them.

mod support;

use std::time::Duration;

use ferry_operator::{
    api::{Condition, ConditionStatus, EventConsumer, EventTopic},
    kafka::{
        KafkaAdmin,
        acls::{AclBinding, Operation, ResourceType},
    },
};
use ferry_testkit::{
    TempNamespace, TestEnv, disruption_lock, eventually, require_env, unique_name,
};
use k8s_openapi::api::{
    admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    core::v1::{ResourceQuota, Secret},
    events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{Operator, produce_as};

/// A cold operator starts, wins its Lease and converges within this on a loaded 2-core CI (an
/// operator over every namespace also works through what earlier test binaries left behind).
const WITHIN: Duration = Duration::from_secs(90);

/// The binding of Ferry's tenancy admission policy, as `crds/` declares it.
const POLICY_BINDING: &str = "ferry-tenancy.ferry.dev";

async fn apply<K>(api: &Api<K>, name: &str, body: Value) -> Result<(), String>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.patch(
        name,
        &PatchParams::apply(support::MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    })
}

fn event_topic(name: &str, kafka: &str, producers: &[&str]) -> Value {
    let producers: Vec<_> = producers
        .iter()
        .map(|p| json!({"serviceAccount": p}))
        .collect();
    json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
        "metadata": {"name": name},
        "spec": {"topicName": kafka, "producers": producers}
    })
}

fn event_consumer(name: &str, spec: Value) -> Value {
    let mut base = json!({"delivery": {"http": {"url": "http://svc:8000/events"}}});
    for (k, v) in spec.as_object().expect("an object").clone() {
        base[k] = v;
    }
    json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
           "metadata": {"name": name}, "spec": base})
}

fn find(conditions: &[Condition], type_: &str) -> Option<Condition> {
    conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// The EventTopic once its Ready condition has `reason` for its current generation.
async fn topic_with_reason(ns: &TempNamespace, name: &str, reason: &str) -> EventTopic {
    let api: Api<EventTopic> = Api::namespaced(ns.client(), ns.name());
    eventually("the EventTopic's Ready reason", WITHIN, || async {
        let t = api.get(name).await.ok()?;
        let ready = find(&t.status.as_ref()?.conditions, "Ready")?;
        (ready.reason == reason && ready.observed_generation == t.metadata.generation).then_some(t)
    })
    .await
    .unwrap_or_else(|e| panic!("EventTopic {name} never Ready with reason {reason}: {e}"))
}

/// The EventConsumer's AccessGranted condition, once the identity controller has handled its
/// current generation.
async fn consumer_access(ns: &TempNamespace, name: &str) -> Condition {
    let api: Api<EventConsumer> = Api::namespaced(ns.client(), ns.name());
    eventually(
        "the EventConsumer's AccessGranted condition",
        WITHIN,
        || async {
            let c = api.get(name).await.ok()?;
            let granted = find(&c.status.as_ref()?.conditions, "AccessGranted")?;
            (granted.observed_generation == c.metadata.generation).then_some(granted)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("EventConsumer {name} never got an AccessGranted condition: {e}"))
}

fn admin(env: &TestEnv) -> KafkaAdmin {
    KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin client")
}

async fn acls_of(env: &TestEnv, principal: &str) -> Vec<AclBinding> {
    admin(env)
        .describe_acls(Some(principal))
        .await
        .expect("describe ACLs")
}

#[tokio::test]
async fn a_conflicting_event_topic_grants_nothing_to_its_producers_or_consumers() {
    let env = require_env!();
    let _serial = disruption_lock().await;
    let owner = TempNamespace::create(env).await.expect("namespace");
    let other = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&owner.client()).await.expect("CRDs");
    let kafka_topic = unique_name("shared");
    let _operator = Operator::start_cluster_wide(env, owner.name(), "tenancy-conflict");

    let owner_topics: Api<EventTopic> = Api::namespaced(owner.client(), owner.name());
    apply(
        &owner_topics,
        "orders",
        event_topic("orders", &kafka_topic, &["order-service"]),
    )
    .await
    .expect("owner's EventTopic");
    topic_with_reason(&owner, "orders", "Ready").await;
    // creationTimestamp has a resolution of one second: the other team's is surely newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Another team names the same Kafka topic, with a producer and a consumer of its own.
    let other_topics: Api<EventTopic> = Api::namespaced(other.client(), other.name());
    apply(
        &other_topics,
        "stolen",
        event_topic("stolen", &kafka_topic, &["thief"]),
    )
    .await
    .expect("the other team's EventTopic");
    let other_consumers: Api<EventConsumer> = Api::namespaced(other.client(), other.name());
    apply(
        &other_consumers,
        "spy",
        event_consumer(
            "spy",
            json!({"topics": ["stolen"], "serviceAccount": "spy"}),
        ),
    )
    .await
    .expect("the other team's EventConsumer");
    let loser = topic_with_reason(&other, "stolen", "Conflict").await;
    let granted = consumer_access(&other, "spy").await;

    // The identity controller has handled both: the newer EventTopic's producer holds no ACL,
    // and the consumer of that EventTopic holds no READ on the owner's topic.
    let thief = format!("User:{}.thief", other.name());
    let held = acls_of(env, &thief).await;
    assert!(
        held.is_empty(),
        "the producer of an EventTopic in Conflict holds {held:?}"
    );
    let spy = format!("User:{}.spy", other.name());
    let reads: Vec<AclBinding> = acls_of(env, &spy)
        .await
        .into_iter()
        .filter(|b| b.resource_type == ResourceType::Topic && b.resource_name == kafka_topic)
        .collect();
    assert!(
        reads.is_empty(),
        "the consumer of an EventTopic in Conflict holds {reads:?}"
    );
    assert_eq!(
        (granted.status, granted.reason.as_str()),
        (ConditionStatus::False, "TopicInConflict"),
        "the consumer says why: {}",
        granted.message
    );
    assert!(
        loser
            .status
            .and_then(|s| s.access)
            .is_none_or(|a| a.acls.is_empty()),
        "the loser's status shows no granted access"
    );
    // The owner keeps its access.
    let owner_acls = acls_of(env, &format!("User:{}.order-service", owner.name())).await;
    assert!(
        owner_acls
            .iter()
            .any(|b| b.operation == Operation::Write && b.resource_name == kafka_topic),
        "the owner's producer keeps WRITE: {owner_acls:?}"
    );
    let _ = admin(env).delete_topics(&[kafka_topic]).await;
}

#[tokio::test]
async fn consumer_groups_and_dead_letter_topics_stay_in_their_namespace() {
    let env = require_env!();
    let _serial = disruption_lock().await;
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let consumers: Api<EventConsumer> = Api::namespaced(ns.client(), ns.name());
    let topics: Api<EventTopic> = Api::namespaced(ns.client(), ns.name());
    let kafka_topic = unique_name("orders");
    apply(&topics, "orders", event_topic("orders", &kafka_topic, &[]))
        .await
        .expect("EventTopic");
    let victim_group = "victim-team.notification".to_owned();
    let intruder = event_consumer(
        "intruder",
        json!({"topics": ["orders"], "serviceAccount": "intruder", "groupId": victim_group}),
    );

    // Admission refuses a group outside the namespace, with a sentence that says why (a new
    // binding takes a moment to be enforced).
    let refusal = eventually(
        "a group of the namespace is accepted",
        Duration::from_secs(30),
        || async { apply(&consumers, "intruder", intruder.clone()).await.err() },
    )
    .await
    .unwrap_or_else(|e| panic!("a groupId of another namespace was accepted: {e}"));
    assert!(
        refusal.contains(&format!("must start with \"{}.\"", ns.name()))
            && refusal.contains(&victim_group),
        "the refusal says why: {refusal}"
    );
    // The default group and one of the namespace's own are accepted.
    apply(
        &consumers,
        "own",
        event_consumer(
            "own",
            json!({"topics": ["orders"], "serviceAccount": "own",
                   "groupId": format!("{}.own-group", ns.name())}),
        ),
    )
    .await
    .expect("a group of the namespace is accepted");

    // Without the policy (a cluster that has not installed it), the operator still grants
    // nothing outside the namespace.
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(ns.client());
    bindings
        .delete(POLICY_BINDING, &DeleteParams::default())
        .await
        .expect("remove the policy binding");
    eventually(
        "without the policy the API server accepts it",
        Duration::from_secs(30),
        || async { apply(&consumers, "intruder", intruder.clone()).await.ok() },
    )
    .await
    .expect("without the policy the API server accepts it");
    // A dead-letter topic that is another EventTopic's (in Conflict here), and one that names
    // no EventTopic at all.
    let dlq_topic = unique_name("dlq");
    apply(
        &topics,
        "dlq-owner",
        event_topic("dlq-owner", &dlq_topic, &[]),
    )
    .await
    .expect("EventTopic");
    // creationTimestamp has a resolution of one second: the copy is surely newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    apply(
        &topics,
        "dlq-copy",
        event_topic("dlq-copy", &dlq_topic, &[]),
    )
    .await
    .expect("EventTopic");
    apply(
        &consumers,
        "conflicting-dlq",
        event_consumer(
            "conflicting-dlq",
            json!({"topics": ["orders"], "serviceAccount": "dlq-a",
                   "deadLetter": {"topic": "dlq-copy"}}),
        ),
    )
    .await
    .expect("EventConsumer");
    apply(
        &consumers,
        "missing-dlq",
        event_consumer(
            "missing-dlq",
            json!({"topics": ["orders"], "serviceAccount": "dlq-b",
                   "deadLetter": {"topic": "nowhere"}}),
        ),
    )
    .await
    .expect("EventConsumer");
    let _operator = Operator::start(env, ns.name(), "tenancy-groups", &[]);

    let refused = consumer_access(&ns, "intruder").await;
    let held = acls_of(env, &format!("User:{}.intruder", ns.name())).await;
    assert!(
        held.is_empty(),
        "a consumer of another namespace's group holds {held:?}"
    );
    assert_eq!(
        (refused.status, refused.reason.as_str()),
        (ConditionStatus::False, "GroupOutsideNamespace"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains(&victim_group),
        "{}",
        refused.message
    );

    for (consumer, sa, reason) in [
        ("conflicting-dlq", "dlq-a", "DeadLetterTopicInConflict"),
        ("missing-dlq", "dlq-b", "DeadLetterTopicNotFound"),
    ] {
        let condition = consumer_access(&ns, consumer).await;
        let held = acls_of(env, &format!("User:{}.{sa}", ns.name())).await;
        assert!(held.is_empty(), "{consumer} holds {held:?}");
        assert_eq!(
            (condition.status, condition.reason.as_str()),
            (ConditionStatus::False, reason),
            "{consumer}: {}",
            condition.message
        );
    }
    // The namespace's own group is granted.
    let own = consumer_access(&ns, "own").await;
    assert_eq!(own.status, ConditionStatus::True, "{}", own.message);

    support::install_admission_policies(&ns.client())
        .await
        .expect("the policy binding restored");
    let _ = admin(env).delete_topics(&[kafka_topic, dlq_topic]).await;
}

#[tokio::test]
async fn an_identity_error_is_reported_on_its_own_resource_only() {
    let env = require_env!();
    let _serial = disruption_lock().await;
    let broken = TempNamespace::create(env).await.expect("namespace");
    let healthy = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&broken.client()).await.expect("CRDs");

    // One team's namespace refuses new Secrets (a quota), so its credential cannot be stored.
    let quotas: Api<ResourceQuota> = Api::namespaced(broken.client(), broken.name());
    apply(
        &quotas,
        "no-secrets",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-secrets"},
               "spec": {"hard": {"count/secrets": "0"}}}),
    )
    .await
    .expect("quota");
    let broken_topic = unique_name("broken");
    let healthy_topic = unique_name("healthy");
    apply(
        &Api::<EventTopic>::namespaced(broken.client(), broken.name()),
        "events",
        event_topic("events", &broken_topic, &["app"]),
    )
    .await
    .expect("EventTopic");
    apply(
        &Api::<EventTopic>::namespaced(healthy.client(), healthy.name()),
        "events",
        event_topic("events", &healthy_topic, &["app"]),
    )
    .await
    .expect("EventTopic");
    let _operator = Operator::start_cluster_wide(env, healthy.name(), "tenancy-errors");

    // The broken namespace's owner is told ...
    let failed_in = |ns: &TempNamespace| {
        let events: Api<Event> = Api::namespaced(ns.client(), ns.name());
        async move {
            events
                .list(&Default::default())
                .await
                .expect("Events")
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("AccessFailed"))
                .filter_map(|e| e.note)
                .collect::<Vec<_>>()
        }
    };
    let notes = eventually(
        "an AccessFailed Event in the broken namespace",
        WITHIN,
        || async { Some(failed_in(&broken).await).filter(|n| !n.is_empty()) },
    )
    .await
    .expect("an AccessFailed Event in the broken namespace");
    assert!(
        notes.iter().any(|n| n.contains("quota")),
        "the Event names the cause: {notes:?}"
    );

    // ... and the other team is neither told about it nor held up by it.
    let secrets: Api<Secret> = Api::namespaced(healthy.client(), healthy.name());
    let password = eventually(
        "the healthy namespace gets its credential",
        WITHIN,
        || async {
            let secret = secrets.get_opt("ferry-kafka-app").await.ok()??;
            String::from_utf8(secret.data?.get("password")?.0.clone()).ok()
        },
    )
    .await
    .expect("the healthy namespace gets its credential");
    let user = format!("{}.app", healthy.name());
    eventually(
        "the healthy namespace's producer may write",
        WITHIN,
        || async { produce_as(env, &user, &password, &healthy_topic).await.ok() },
    )
    .await
    .expect("the healthy namespace's producer may write");
    let leaked = failed_in(&healthy).await;
    assert!(
        leaked.is_empty(),
        "another namespace's error reached this one: {leaked:?}"
    );
    let topic = topic_with_reason(&healthy, "events", "Ready").await;
    assert_eq!(
        find(&topic.status.expect("status").conditions, "AccessGranted").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    let _ = admin(env)
        .delete_topics(&[broken_topic, healthy_topic])
        .await;
}
