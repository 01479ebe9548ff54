//! Lag and lag-driven scaling against the real broker, API server and KWOK: lag rounds every
//! second (`--lag-interval 1s`), a 4 s scale-down cooldown. A backlog produced while nothing
//! consumes (KWOK's pods run nothing) shows in `status.lag` and raises replicas, capped at the
//! partition count; a local worker (the generated container, resolved by `pod_env`) drains it
//! and replicas come down to zero after the cooldown (`minReplicas: 0`); one record brings one
//! worker back at once, and a partition whose records nobody moves is named as stuck. The
//! records of the managed dead-letter topic are counted into `status.deadLetters` and a gauge,
//! and a deleted consumer's series go away.

mod consumer_support;
mod support;

use std::time::Duration;

use consumer_support::{
    CONVERGE, Consumers, produce, resolved_worker, sidecar_binary, spawn_local, target,
};
use ferry_operator::api::ConditionStatus::True;
use ferry_testkit::{require_env, unique_name, wait_for};
use kube::api::DeleteParams;
use rdkafka::producer::FutureProducer;
use serde_json::json;

#[tokio::test]
async fn lag_scales_workers_up_to_the_partitions_down_to_zero_and_back() {
    let env = require_env!();
    let binary = sidecar_binary();
    let t = Consumers::new(env, &[]).await;
    let source = unique_name("orders");
    t.topic("orders", &source, 4).await;
    let (port, _seen) = target().await;
    t.apply(
        "scaled",
        json!({"topics": ["orders"], "serviceAccount": "scaled",
               "delivery": {"http": {"url": format!("http://127.0.0.1:{port}/events")}},
               "scaling": {"minReplicas": 0, "maxReplicas": 6, "lagThreshold": 10}}),
    )
    .await;

    // No lag: after the cooldown, zero workers, and that is Ready. The empty managed
    // dead-letter topic counts 0 (measured, not unknown).
    let c = t
        .wait_for("scaled", "scaled to zero", CONVERGE, |c| {
            c.status.as_ref().is_some_and(|s| {
                s.replicas == Some(0)
                    && s.lag.as_ref().is_some_and(|l| l.total == 0)
                    && s.dead_letters == Some(0)
            })
        })
        .await;
    let dead_letter = c
        .status
        .and_then(|s| s.topics)
        .and_then(|t| t.dead_letter)
        .expect("the managed dead-letter topic in status");
    t.wait_ready("scaled", True, "Ready", CONVERGE).await;

    // A backlog of 50 at 10 per worker wants 5; the topic's 4 partitions cap it.
    let producer: FutureProducer = env
        .kafka_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    produce(&producer, &source, 0, 50).await;
    let c = t
        .wait_for("scaled", "lag 50 and 4 replicas", CONVERGE, |c| {
            c.status.as_ref().is_some_and(|s| {
                s.replicas == Some(4) && s.lag.as_ref().is_some_and(|l| l.total == 50)
            })
        })
        .await;
    let lag = c.status.and_then(|s| s.lag).expect("lag");
    assert_eq!(lag.by_topic.get(&source), Some(&50));
    assert_eq!(
        t.deployment("scaled").await.spec.and_then(|s| s.replicas),
        Some(4)
    );
    t.f.wait_event("scaled", "Scaled", CONVERGE).await;
    let metrics = t.operator.metrics().await.unwrap_or_default();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_operator_consumer_lag_records{")
                && l.contains("consumer=\"scaled\"")),
        "a lag gauge per consumer"
    );

    // Three records dead-lettered (written straight to the topic): the status and the gauge
    // count them, and they add no lag (the dead-letter topic is not consumed).
    produce(&producer, &dead_letter, 0, 3).await;
    let c = t
        .wait_for("scaled", "three dead letters", CONVERGE, |c| {
            c.status.as_ref().is_some_and(|s| s.dead_letters == Some(3))
        })
        .await;
    assert_eq!(c.status.and_then(|s| s.lag).map(|l| l.total), Some(50));
    let metrics = t.operator.metrics().await.unwrap_or_default();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("ferry_operator_consumer_dead_letter_records{")
                && l.contains("consumer=\"scaled\"")
                && l.ends_with(" 3")
        ),
        "a dead-letter gauge per consumer:\n{metrics}"
    );
    // Every consumer metric the chart's alerts and dashboard query is one the operator exposes
    // (its reconcile errors: topic_kafka_outage, where there are some).
    ferry_testkit::assert_chart_metrics_exposed("ferry_operator_consumer_", &metrics);
    ferry_testkit::assert_chart_metrics_exposed("ferry_operator_leader", &metrics);

    // A local worker drains it; after the cooldown the workers go to zero again.
    let resolved = resolved_worker(&t, "scaled", "scaled-worker-local").await;
    let mut worker = spawn_local(&resolved, &binary);
    t.wait_for("scaled", "drained and scaled to zero", CONVERGE, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.replicas == Some(0) && s.lag.as_ref().is_some_and(|l| l.total == 0))
    })
    .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("the worker stops");

    // One record wakes one worker at once; nobody moves it (KWOK runs nothing), so after a
    // few rounds its partition is named stuck, and it still keeps one worker.
    produce(&producer, &source, 50, 1).await;
    let c = t
        .wait_for(
            "scaled",
            "one replica and a stuck partition",
            CONVERGE,
            |c| {
                c.status.as_ref().is_some_and(|s| {
                    s.replicas == Some(1) && s.lag.as_ref().is_some_and(|l| l.stuck.len() == 1)
                })
            },
        )
        .await;
    let stuck = &c.status.and_then(|s| s.lag).expect("lag").stuck[0];
    assert_eq!((stuck.topic.as_str(), stuck.lag), (source.as_str(), 1));

    // Deleted: its lag and dead-letter series leave the operator's metrics.
    t.api
        .delete("scaled", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("the deleted consumer's series to go", CONVERGE, || async {
        let metrics = t.operator.metrics().await?;
        (!metrics.contains("consumer=\"scaled\"")).then_some(())
    })
    .await;
}
