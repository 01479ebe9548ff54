//! Kafka identities and ACLs derived from EventTopics and EventConsumers, checked with the
//! Secret's own credentials against the real broker (authorizer on): what is declared works,
//! nothing else does, and changes take effect within one reconcile.

mod support;

use std::{sync::Arc, time::Duration};

use ferry_operator::{
    access_status::AccessBook,
    api::{EventConsumer, EventTopic},
    cache::{CacheTasks, Caches},
    events::Publisher,
    identity::{self, credentials::ClientSettings},
    kafka::{
        KafkaAdmin,
        acls::{AclBinding, Operation, ResourceType},
    },
};
use ferry_testkit::{
    TempNamespace, TempTopic, TestEnv, eventually, require_env, unique_name, wait_for,
};
use futures::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams},
    runtime::events::Reporter,
};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
};
use serde_json::json;
use tokio::task::JoinHandle;

/// Kafka applies ACL and credential changes through its metadata log a moment after the admin
/// call; with a 300 ms debounce and a 2 s resync, every change shows within this.
const WITHIN: Duration = Duration::from_secs(30);

/// Events as the operator records them.
fn publisher(ns: &TempNamespace) -> Publisher {
    Publisher::new(
        ns.client(),
        Reporter {
            controller: "ferry-operator".into(),
            instance: None,
        },
    )
}

struct Operator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _caches: CacheTasks,
}

impl Operator {
    async fn start(env: &TestEnv, ns: &TempNamespace) -> Operator {
        let admin =
            KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin client");
        let settings = ClientSettings {
            bootstrap_servers: env
                .var("FERRY_KAFKA_BOOTSTRAP")
                .expect("bootstrap")
                .to_owned(),
            security_protocol: "SASL_PLAINTEXT".to_owned(),
        };
        let (caches, cache_tasks) = Caches::start(&ns.client(), Some(ns.name()));
        let ctx = identity::Context::new(
            ns.client(),
            admin,
            settings,
            Some(ns.name().to_owned()),
            caches,
            publisher(ns),
            AccessBook::new().0,
            Default::default(),
            Duration::from_secs(2),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(identity::run(Arc::new(ctx), async move {
            let _ = stopped.await;
        }));
        Operator {
            stop: Some(stop),
            task,
            _caches: cache_tasks,
        }
    }

    /// Stops the controller as a pod stop would (the next one starts from nothing but the API
    /// server and Kafka).
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn apply<K>(api: &Api<K>, name: &str, body: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("ferry-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

fn event_topic(name: &str, kafka: &str, producers: &[&str]) -> serde_json::Value {
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

/// The (username, password) in a service account's credential Secret, once it exists.
async fn credential(ns: &TempNamespace, sa: &str) -> (String, String) {
    let secrets: Api<Secret> = Api::namespaced(ns.client(), ns.name());
    eventually("the credential Secret", WITHIN, || async {
        let secret = secrets.get_opt(&format!("ferry-kafka-{sa}")).await.ok()??;
        let data = secret.data?;
        let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
        Some((text("username")?, text("password")?))
    })
    .await
    .unwrap_or_else(|e| panic!("no credential Secret for {sa}: {e}"))
}

async fn produce(
    env: &TestEnv,
    (user, password): &(String, String),
    topic: &str,
) -> Result<(), KafkaError> {
    support::produce_as(env, user, password, topic).await
}

/// Reads one record of `topic` as `group`; the authorizer's refusal comes back as the error.
async fn consume_one(
    env: &TestEnv,
    (user, password): &(String, String),
    group: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    let consumer: StreamConsumer = env
        .kafka_args_as(user, password)
        .client_config()
        .expect("settings")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    match tokio::time::timeout(Duration::from_secs(15), consumer.recv()).await {
        Ok(Ok(m)) => {
            assert_eq!(m.topic(), topic);
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(KafkaError::MessageConsumption(
            RDKafkaErrorCode::OperationTimedOut,
        )),
    }
}

#[tokio::test]
async fn declared_access_works_and_nothing_else_does() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let orders = TempTopic::create(env, 1).await.expect("topic");
    let other = TempTopic::create(env, 1).await.expect("topic");
    // A group of the namespace's own: Ferry grants no other (see tests/tenancy.rs).
    let group = format!("{}.{}", ns.name(), unique_name("group"));
    let _operator = Operator::start(env, &ns).await;

    let topics: Api<EventTopic> = Api::namespaced(ns.client(), ns.name());
    let consumers: Api<EventConsumer> = Api::namespaced(ns.client(), ns.name());
    apply(
        &topics,
        "orders",
        event_topic("orders", orders.name(), &["order-service"]),
    )
    .await;
    apply(&topics, "other", event_topic("other", other.name(), &[])).await;
    apply(
        &consumers,
        "notify",
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
            "metadata": {"name": "notify"},
            "spec": {
                "topics": ["orders"], "serviceAccount": "notification-service", "groupId": group,
                "delivery": {"http": {"url": "http://notification:8000/events"}}
            }
        }),
    )
    .await;

    let producer = credential(&ns, "order-service").await;
    assert_eq!(producer.0, format!("{}.order-service", ns.name()));
    let consumer = credential(&ns, "notification-service").await;

    // The declared producer produces (once its ACLs have propagated) ...
    wait_for("the producer may write", WITHIN, || {
        produce(env, &producer, orders.name()).map(|r| r.is_ok())
    })
    .await;
    // ... but not to a topic it did not declare.
    assert!(
        support::write_denied(&produce(env, &producer, other.name()).await),
        "no write beyond the declared topic"
    );
    // A service account nobody declared is refused, even holding a valid credential of the
    // same shape (made by hand here, as a leaked or stale one would be).
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
    let rogue = (format!("{}.rogue-service", ns.name()), unique_name("pw"));
    admin
        .upsert_scram_credential(&rogue.0, &rogue.1)
        .await
        .expect("a hand-made credential");
    let refused = produce(env, &rogue, orders.name()).await;
    assert!(
        support::write_denied(&refused),
        "an undeclared service account is refused: {refused:?}"
    );
    admin
        .delete_scram_credential(&rogue.0)
        .await
        .expect("clean up");

    // The consumer reads its topic with its group ...
    consume_one(env, &consumer, &group, orders.name())
        .await
        .expect("the consumer reads its topic");
    // ... but not with another group, not another topic, and it cannot produce to the topic.
    let other_group = consume_one(
        env,
        &consumer,
        &format!("{}.{}", ns.name(), unique_name("group")),
        orders.name(),
    )
    .await;
    assert!(
        matches!(
            other_group,
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::GroupAuthorizationFailed
            ))
        ),
        "another group is refused: {other_group:?}"
    );
    let other_topic = consume_one(env, &consumer, &group, other.name()).await;
    assert!(
        matches!(
            other_topic,
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::TopicAuthorizationFailed
            ))
        ),
        "another topic is refused: {other_topic:?}"
    );
    assert!(
        support::write_denied(&produce(env, &consumer, orders.name()).await),
        "a consumer cannot produce"
    );

    // Removing the producer revokes its write within one reconcile, and its identity goes.
    apply(&topics, "orders", event_topic("orders", orders.name(), &[])).await;
    wait_for("the write is revoked", WITHIN, || {
        produce(env, &producer, orders.name()).map(|r| support::write_denied(&r) || r.is_err())
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(ns.client(), ns.name());
    wait_for("the producer's Secret is removed", WITHIN, || async {
        secrets
            .get_opt("ferry-kafka-order-service")
            .await
            .is_ok_and(|s| s.is_none())
    })
    .await;
    let left = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30))
        .expect("admin")
        .describe_acls(Some(&format!("User:{}", producer.0)))
        .await
        .expect("describe");
    assert!(
        left.is_empty(),
        "no ACLs left for a removed identity: {left:?}"
    );
}

#[tokio::test]
async fn foreign_acls_survive_passwords_are_stable_and_rotation_replaces_them() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let admin = KafkaAdmin::new(&env.kafka_config(), Duration::from_secs(30)).expect("admin");
    let foreign_principal = format!("User:{}", unique_name("other-tool"));
    let foreign = AclBinding::allow(
        &foreign_principal,
        ResourceType::Topic,
        topic.name(),
        Operation::Read,
    );
    admin
        .create_acls(std::slice::from_ref(&foreign))
        .await
        .expect("foreign ACL");

    let topics: Api<EventTopic> = Api::namespaced(ns.client(), ns.name());
    apply(
        &topics,
        "events",
        event_topic("events", topic.name(), &["app"]),
    )
    .await;
    let operator = Operator::start(env, &ns).await;
    let first = credential(&ns, "app").await;
    wait_for("the producer may write", WITHIN, || {
        produce(env, &first, topic.name()).map(|r| r.is_ok())
    })
    .await;

    // An operator restart keeps the password: clients holding it keep working.
    operator.stop().await;
    let operator = Operator::start(env, &ns).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // at least one full pass
    assert_eq!(
        credential(&ns, "app").await,
        first,
        "the password survives a restart"
    );
    produce(env, &first, topic.name())
        .await
        .expect("still works after the restart");
    assert_eq!(
        admin
            .describe_acls(Some(&foreign_principal))
            .await
            .expect("describe"),
        vec![foreign.clone()],
        "an ACL of a principal Ferry does not manage survives"
    );

    // A credential deleted directly in Kafka is restored with the same password at the next
    // resync, and an ACL deleted by hand comes back too.
    admin
        .delete_scram_credential(&first.0)
        .await
        .expect("delete behind the operator's back");
    let principal = format!("User:{}", first.0);
    let owned = admin
        .describe_acls(Some(&principal))
        .await
        .expect("describe");
    assert!(!owned.is_empty());
    admin
        .delete_acls(&owned)
        .await
        .expect("delete ACLs by hand");
    wait_for("the credential and ACLs are restored", WITHIN, || {
        produce(env, &first, topic.name()).map(|r| r.is_ok())
    })
    .await;

    // Rotation: a new password that works, the old one stops working, the request is consumed.
    let secrets: Api<Secret> = Api::namespaced(ns.client(), ns.name());
    secrets
        .patch(
            "ferry-kafka-app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ferry.dev/rotate-credentials": "now"}}}),
            ),
        )
        .await
        .expect("request rotation");
    let rotated = eventually("the password is rotated", WITHIN, || async {
        let c = credential(&ns, "app").await;
        (c != first).then_some(c)
    })
    .await
    .expect("the password is rotated");
    wait_for("the new password works", WITHIN, || {
        produce(env, &rotated, topic.name()).map(|r| r.is_ok())
    })
    .await;
    let old = produce(env, &first, topic.name()).await;
    assert!(
        old.is_err() && !support::write_denied(&old),
        "the old password no longer authenticates: {old:?}"
    );
    let annotations = secrets
        .get("ferry-kafka-app")
        .await
        .expect("secret")
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key("ferry.dev/rotate-credentials"),
        "the rotation request is consumed"
    );

    operator.stop().await;
    admin.delete_acls(&[foreign]).await.expect("clean up");
}

#[tokio::test]
async fn an_admin_without_rights_is_reported_on_the_resources() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    support::install_crds(&ns.client()).await.expect("CRDs");
    let topics: Api<EventTopic> = Api::namespaced(ns.client(), ns.name());
    apply(
        &topics,
        "events",
        event_topic("events", &unique_name("t"), &["app"]),
    )
    .await;

    // The operator connects as a user the authorizer gives nothing.
    let weak = env
        .kafka_args_as(
            env.var("FERRY_KAFKA_NOACL_USERNAME").expect("no-ACL user"),
            env.var("FERRY_KAFKA_NOACL_PASSWORD")
                .expect("no-ACL password"),
        )
        .client_config()
        .expect("settings");
    let admin = KafkaAdmin::new(&weak, Duration::from_secs(10)).expect("admin client");
    let (caches, _cache_tasks) = Caches::start(&ns.client(), Some(ns.name()));
    tokio::time::timeout(WITHIN, caches.wait_until_filled())
        .await
        .expect("the caches list the namespace");
    let ctx = identity::Context::new(
        ns.client(),
        admin,
        ClientSettings {
            bootstrap_servers: "unused:9092".into(),
            security_protocol: "SASL_PLAINTEXT".into(),
        },
        Some(ns.name().to_owned()),
        caches,
        publisher(&ns),
        AccessBook::new().0,
        Default::default(),
        Duration::from_secs(2),
    );
    let error = identity::Scope::new(Some(ns.name()))
        .reconcile(&ctx)
        .await
        .expect_err("an admin without rights fails");
    assert_eq!(error.metric_label(), "kafka");

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ns.client(), ns.name());
    let note = eventually("a Warning Event on the EventTopic", WITHIN, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("AccessFailed"))
            .and_then(|e| e.note)
    })
    .await
    .expect("a Warning Event on the EventTopic");
    assert!(
        note.to_lowercase().contains("authorization"),
        "the Event names the cause: {note}"
    );
    // Nothing was handed out that Kafka does not accept.
    let secrets: Api<Secret> = Api::namespaced(ns.client(), ns.name());
    assert!(
        secrets
            .get_opt("ferry-kafka-app")
            .await
            .expect("get")
            .is_none()
    );
}
