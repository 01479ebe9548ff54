//! The plugin with what the real operator makes: `ferry-operator run` turns an EventTopic and
//! an EventConsumer into topics, the consumer's principal, its ACLs (READ on its dead-letter
//! topic included) and its credential Secret; the plugin then lists the consumer's dead letters
//! and replays them into the tier the operator created, with nothing but that Secret, and
//! `status` shows the dead letter as the operator's lag round counted it.

mod support;

use std::time::Duration;

use ferry_common::headers;
use ferry_operator::api::{ConditionStatus, EventConsumer, EventTopic};
use ferry_testkit::{ChildProcess, TempNamespace, free_port, require_env, wait_for};
use kube::{Api, api::PostParams};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use support::{
    CONSUMER, DELAY, SERVICE_ACCOUNT, TOPIC, admin_producer, envelope, install_crds, produce,
    workspace_binary,
};

const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_read_and_replayed_with_what_the_operator_made() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let client = ns.client();
    install_crds(&client).await;
    let kafka_topic = format!("{}.orders", ns.name());
    let topics: Api<EventTopic> = Api::namespaced(client.clone(), ns.name());
    let topic: EventTopic = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
        "metadata": {"name": TOPIC},
        "spec": {"topicName": kafka_topic, "partitions": 1, "deletionPolicy": "Delete",
                 "producers": [{"serviceAccount": "order-service"}]},
    }))
    .expect("EventTopic");
    topics
        .create(&PostParams::default(), &topic)
        .await
        .expect("EventTopic");
    let consumers: Api<EventConsumer> = Api::namespaced(client.clone(), ns.name());
    let consumer: EventConsumer = serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "EventConsumer",
        "metadata": {"name": CONSUMER},
        "spec": {"topics": [TOPIC], "serviceAccount": SERVICE_ACCOUNT,
                 "delivery": {"http": {"url": "http://127.0.0.1:1/"}},
                 "retry": {"delays": [DELAY]}},
    }))
    .expect("EventConsumer");
    consumers
        .create(&PostParams::default(), &consumer)
        .await
        .expect("EventConsumer");

    let metrics = format!("127.0.0.1:{}", free_port());
    let args = [
        "run",
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--metrics-addr",
        &metrics,
        "--kubeconfig",
        env.kubeconfig(),
        "--log-format",
        "text",
        // Lag and dead letters counted every second, for `status` below.
        "--lag-interval",
        "1s",
    ];
    let mut vars = env.kafka_args().to_env();
    vars.push(("FERRY_POD_NAME", "kubectl-ferry-test".to_owned()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut operator =
        ChildProcess::spawn("operator", workspace_binary("ferry-operator"), &args, &vars)
            .expect("operator");

    // Access granted and topics made: the status names the dead-letter topic and the tier.
    let status = wait_for("the consumer's topics and access", WITHIN, || async {
        let c = consumers.get(CONSUMER).await.ok()?;
        let s = c.status?;
        let granted = s
            .conditions
            .iter()
            .any(|c| c.type_ == "AccessGranted" && c.status == ConditionStatus::True);
        let topics = s.topics?;
        (granted && topics.dead_letter.is_some() && !topics.retry.is_empty()).then_some(topics)
    })
    .await;
    let dead_letter = status.dead_letter.clone().expect("dead-letter topic");
    let tier = status.retry[0].clone();
    let group = format!("{}.{CONSUMER}", ns.name());

    let dead = [
        (headers::ERROR, "target answered 422 Unprocessable Entity"),
        (headers::ORIGINAL_TOPIC, kafka_topic.as_str()),
        (headers::ORIGINAL_PARTITION, "0"),
        (headers::ORIGINAL_OFFSET, "0"),
        (headers::ATTEMPTS, "4"),
        (headers::GROUP, group.as_str()),
        (headers::FAILED_AT, "2026-11-30T10:00:00Z"),
    ];
    produce(
        &admin_producer(env),
        &dead_letter,
        Some(0),
        "k1",
        &envelope("op-1", "order.created"),
        &dead,
    )
    .await;

    let plugin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-ferry"))
            .args(args)
            .args(["-n", ns.name()])
            .env("KUBECONFIG", env.kubeconfig())
            .output()
            .expect("kubectl-ferry runs");
        assert!(
            out.status.success(),
            "kubectl-ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // The ACLs may reach the broker's authorizer a moment after AccessGranted is written.
    let listed: Value = wait_for("the dead letter listed", WITHIN, || async {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-ferry"))
            .args([
                "dlq",
                "list",
                "--direct",
                CONSUMER,
                "-o",
                "json",
                "-n",
                ns.name(),
            ])
            .env("KUBECONFIG", env.kubeconfig())
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await;
    assert_eq!(listed[0]["eventId"], "op-1");
    assert_eq!(listed[0]["topic"], dead_letter.as_str());

    let out = plugin(&["dlq", "replay", "--direct", CONSUMER, "--id", "op-1"]);
    assert!(out.contains("replayed:           1"), "{out}");
    assert!(out.contains(&tier), "{out}");
    let reader: BaseConsumer = env.kafka_config().create().expect("reader");
    let (_, high) = reader
        .fetch_watermarks(&tier, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(high, 1, "the replayed record is in the operator's tier");

    // The operator counts the dead letter with the lag; status shows its count (the plugin
    // itself reads no Kafka for it).
    wait_for("one dead letter counted in status", WITHIN, || async {
        let screen = plugin(&["status"]);
        let line = screen.lines().find(|l| l.starts_with(CONSUMER))?.to_owned();
        line.contains("   1   ").then_some(())
    })
    .await;

    // Leave the namespace to the operator's finalizers before it stops.
    let _ = consumers.delete(CONSUMER, &Default::default()).await;
    let _ = topics.delete(TOPIC, &Default::default()).await;
    let _ = wait_for("the operator's cleanup", WITHIN, || async {
        consumers
            .get_opt(CONSUMER)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let _ = operator.terminate(Duration::from_secs(10)).await;
}
