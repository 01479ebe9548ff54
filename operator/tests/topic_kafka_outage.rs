//! Kafka stopped under a running operator: EventTopics report `KafkaUnavailable` and retry
//! with backoff, and converge once the broker is back. Stops the broker, so it is a test
//! binary of its own holding `disruption_lock()`.

mod support;

use std::time::Duration;

use ferry_operator::api::ConditionStatus::{False, True};
use ferry_testkit::{Service, disruption_lock, require_env, unique_name};
use serde_json::json;
use support::Fixture;

#[tokio::test]
async fn kafka_outage_is_reported_then_recovered() {
    let env = require_env!();
    let _lock = disruption_lock().await;
    let f = std::sync::Arc::new(Fixture::new(env).await);
    let operator = f.operator("a");
    let before = unique_name("before");
    let during = unique_name("during");
    f.apply("before", json!({"topicName": before, "partitions": 2}))
        .await;
    f.wait_ready("before", True, "Ready", Duration::from_secs(60))
        .await;

    env.stop_service(Service::Kafka).await.expect("Kafka stops");
    // Everything that may fail while Kafka is down runs in a task, so Kafka is started again
    // even when it panics.
    let outage = {
        let f = std::sync::Arc::clone(&f);
        let during = during.clone();
        tokio::spawn(async move {
            f.apply("during", json!({"topicName": during, "partitions": 3}))
                .await;
            let et = f
                .wait_ready("during", False, "KafkaUnavailable", Duration::from_secs(90))
                .await;
            let reconciling = et
                .status
                .expect("status")
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Reconciling")
                .expect("Reconciling");
            assert_eq!(
                reconciling.status, True,
                "a transient failure is still reconciling"
            );
        })
    };
    let outcome = outage.await;
    env.start_service(Service::Kafka)
        .await
        .expect("Kafka starts");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }

    // Backoff retries find the broker again.
    f.wait_ready("during", True, "Ready", Duration::from_secs(180))
        .await;
    let kafka = f
        .kafka_topic(&during, |t| t.is_some())
        .await
        .expect("created after the outage");
    assert_eq!(kafka.partitions, 3);
    f.wait_ready("before", True, "Ready", Duration::from_secs(60))
        .await;
    let metrics = operator.metrics().await.expect("metrics");
    assert!(
        metrics.contains("ferry_operator_reconcile_errors_total{kind=\"EventTopic\""),
        "errors were counted:\n{metrics}"
    );
    // The reconcile-error series the chart's alert and dashboard query, as the operator
    // exposes them once it has counted some.
    ferry_testkit::assert_chart_metrics_exposed("ferry_operator_reconcile_", &metrics);
    let _ = f.kafka.delete_topics(&[before, during]).await;
}
