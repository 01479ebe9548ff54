//! Smoke tests of the local environment: each asserts something a fake would get wrong, so a
//! green run means the real Kafka (with its authorizer), kube-apiserver with KWOK nodes, and
//! PostgreSQL are there.

use std::time::Duration;

use ferry_testkit::{TempNamespace, TempSchema, TempTopic, require_env};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use rdkafka::{
    ClientConfig,
    consumer::Consumer,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};

/// How long a produce may wait for its delivery report before the test gives up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

async fn produce(config: &ClientConfig, topic: &str) -> Result<(), KafkaError> {
    let producer: FutureProducer = config
        .clone()
        .set("message.timeout.ms", "15000")
        .create()
        .expect("producer config is valid");
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            DELIVERY_TIMEOUT,
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

#[tokio::test]
async fn kafka_admin_creates_a_topic_with_the_requested_partitions() {
    let env = require_env!();
    let topic = TempTopic::create(env, 3)
        .await
        .expect("admin creates a topic");
    let consumer: rdkafka::consumer::BaseConsumer =
        env.kafka_config().create().expect("metadata client");
    let metadata = tokio::task::spawn_blocking({
        let name = topic.name().to_owned();
        move || consumer.fetch_metadata(Some(&name), Duration::from_secs(10))
    })
    .await
    .expect("metadata task")
    .expect("metadata");
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic.name())
        .expect("the new topic is in the metadata");
    assert_eq!(found.error(), None, "topic metadata carries no error");
    assert_eq!(found.partitions().len(), 3);
}

#[tokio::test]
async fn a_scram_user_without_acls_is_refused_by_the_authorizer() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1)
        .await
        .expect("admin creates a topic");

    // The admin (a super user) may write to the topic ...
    produce(&env.kafka_config(), topic.name())
        .await
        .expect("the admin produces");

    // ... a user that authenticates but has no ACLs may not ...
    let no_acl = env
        .kafka_args_as(
            env.var("FERRY_KAFKA_NOACL_USERNAME")
                .expect("no-ACL user in .ferry/env"),
            env.var("FERRY_KAFKA_NOACL_PASSWORD")
                .expect("no-ACL password in .ferry/env"),
        )
        .client_config()
        .expect("complete settings");
    let refused = produce(&no_acl, topic.name()).await;
    assert!(
        matches!(
            refused,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::TopicAuthorizationFailed
            ))
        ),
        "expected TopicAuthorizationFailed, got {refused:?}"
    );

    // ... and a wrong password does not get in at all.
    let wrong = env
        .kafka_args_as("admin", "not-the-password")
        .client_config()
        .expect("complete settings");
    assert!(
        produce(&wrong, topic.name()).await.is_err(),
        "a wrong password is refused"
    );
}

#[tokio::test]
async fn a_deployment_gets_ready_pods_on_kwok_nodes() {
    let env = require_env!();
    let namespace = TempNamespace::create(env).await.expect("namespace");
    let deployments: Api<Deployment> = Api::namespaced(namespace.client(), namespace.name());
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "smoke"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "smoke"}},
            "template": {
                "metadata": {"labels": {"app": "smoke"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/smoke:1"}]}
            }
        }
    }))
    .expect("a valid Deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("the API server accepts the Deployment");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ready = deployments
            .get_status("smoke")
            .await
            .expect("deployment status")
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        if ready == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment has {ready}/2 ready replicas after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let pods: Api<Pod> = Api::namespaced(namespace.client(), namespace.name());
    let pods = pods
        .list(&ListParams::default().labels("app=smoke"))
        .await
        .expect("pods");
    assert_eq!(pods.items.len(), 2);
    for pod in pods.items {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "pod scheduled onto a KWOK node, not {node:?}"
        );
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
}

#[tokio::test]
async fn postgres_round_trip_in_an_isolated_schema() {
    let env = require_env!();
    let schema = TempSchema::create(env).await.expect("schema");
    let client = schema.connect().await.expect("connect");
    client
        .batch_execute("CREATE TABLE smoke (id bigserial PRIMARY KEY, body jsonb NOT NULL)")
        .await
        .expect("create table");
    client
        .execute(
            "INSERT INTO smoke (body) VALUES ($1::text::jsonb)",
            &[&r#"{"hello": "ferry"}"#],
        )
        .await
        .expect("insert");
    let row = client
        .query_one(
            "SELECT current_schema(), body->>'hello', pg_backend_pid() FROM smoke",
            &[],
        )
        .await
        .expect("select");
    assert_eq!(
        row.get::<_, String>(0),
        schema.name(),
        "unqualified names land in the test's schema"
    );
    assert_eq!(row.get::<_, String>(1), "ferry");
    assert!(row.get::<_, i32>(2) > 0, "a real server process answered");
}
