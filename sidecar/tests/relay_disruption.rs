//! Restarting the brokers or the database under a running relay: nothing is lost, per-key
//! order holds, and the relay recovers by itself (the same process keeps running). These
//! tests stop shared services, so they live in this binary alone and hold the disruption lock.
//! One of them freezes the broker (SIGSTOP) so deliveries fail after a short `message.timeout.ms`
//! while chunks are pipelined, to check that a key whose row failed holds back its later rows.

#[path = "relay/support.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_testkit::{Service, TempTopic, disruption_lock, require_env};
use support::*;

const KEYS: usize = 200;

fn rows(from_seq: i64, per_key: i64) -> Vec<(String, i64)> {
    (from_seq..from_seq + per_key)
        .flat_map(|s| (0..KEYS).map(move |k| (format!("k{k}"), s)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_crash_mid_stream_loses_nothing_and_the_relay_recovers_by_itself() {
    let env = require_env!();
    let _lock = disruption_lock().await;
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    for chunk in rows(0, 100).chunks(5_000) {
        outbox.insert(topic.name(), chunk).await;
    }
    let mut relay = spawn_relay(
        "relay-broker-crash",
        env,
        &outbox.url(),
        None,
        &["--batch-size=200", "--idle-poll-interval=100ms"],
    );
    wait_for(
        "the relay to be mid-stream",
        Duration::from_secs(60),
        || async { outbox.unpublished().await < 15_000 },
    )
    .await;

    env.kill_service(Service::Kafka)
        .await
        .expect("kill -9 Kafka");
    // Rows keep being written while the broker is away.
    for chunk in rows(100, 25).chunks(1_000) {
        outbox.insert(topic.name(), chunk).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.start_service(Service::Kafka)
        .await
        .expect("start Kafka");

    wait_for(
        "the backlog to drain after the broker returns",
        Duration::from_secs(180),
        || async { outbox.unpublished().await == 0 },
    )
    .await;
    assert!(
        relay.try_status().expect("status").is_none(),
        "the same relay process recovered"
    );
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), 125)).collect();
    let records = read_distinct(env, topic.name(), 25_000, Duration::from_secs(120)).await;
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "broker crash: {} records for 25000 rows, {duplicates} duplicates",
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stream_loses_nothing_and_the_relay_recovers_by_itself() {
    let env = require_env!();
    let _lock = disruption_lock().await;
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    for chunk in rows(0, 100).chunks(5_000) {
        outbox.insert(topic.name(), chunk).await;
    }
    let mut relay = spawn_relay(
        "relay-db-restart",
        env,
        &outbox.url(),
        None,
        &["--batch-size=200", "--idle-poll-interval=100ms"],
    );
    wait_for(
        "the relay to be mid-stream",
        Duration::from_secs(60),
        || async { outbox.unpublished().await < 15_000 },
    )
    .await;

    env.kill_service(Service::Postgres)
        .await
        .expect("stop PostgreSQL (immediate)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.start_service(Service::Postgres)
        .await
        .expect("start PostgreSQL");
    // The test's own session died with the server; a new one writes more rows.
    let outbox = TestOutbox {
        client: outbox.schema.connect().await.expect("reconnect"),
        schema: outbox.schema,
    };
    for chunk in rows(100, 25).chunks(5_000) {
        outbox.insert(topic.name(), chunk).await;
    }

    wait_for(
        "the backlog to drain after the restart",
        Duration::from_secs(120),
        || async { outbox.unpublished().await == 0 },
    )
    .await;
    assert!(
        relay.try_status().expect("status").is_none(),
        "the same relay process recovered"
    );
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), 125)).collect();
    let records = read_distinct(env, topic.name(), 25_000, Duration::from_secs(120)).await;
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "database restart: {} records for 25000 rows, {duplicates} duplicates",
        records.len()
    );
    assert!(
        duplicates <= 200,
        "at most the batch whose mark was lost is re-published: {duplicates}"
    );
}

/// Reads `ferry_relay_held_keys` from a relay's `/metrics`.
async fn held_keys(port: u16) -> Option<i64> {
    let body = metrics_body(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("ferry_relay_held_keys "))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `held_keys` becomes positive within `timeout` (never panics: Kafka may be frozen).
async fn keys_get_held(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if held_keys(port).await.unwrap_or(0) > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_delivery_failed_holds_back_its_later_rows_across_pipelined_chunks() {
    const KEYS: usize = 20;
    const FREEZES: usize = 4;
    let env = require_env!();
    let _lock = disruption_lock().await;
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let port = free_port();
    // A frozen broker answers nothing: deliveries fail after 1.5 s, long after a 0.5 s hold
    // would have run out had it counted from the send. Meanwhile the next chunk was read
    // ahead (skipping the failing rows) with later rows of every failing key; none of them
    // may be sent before the failed rows are.
    let mut relay = spawn_relay_on(
        "relay-failed-delivery",
        env,
        &outbox.url(),
        port,
        &[
            "--batch-size=100",
            "--idle-poll-interval=50ms",
            "--kafka-option=message.timeout.ms=1500",
        ],
    );
    // A writer: one row per key every 20 ms (1,000 rows/s) throughout; a key's seq grows
    // with every round, so commit order per key is seq order.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let client = outbox.schema.connect().await.expect("connect");
        let topic = topic.name().to_owned();
        tokio::spawn(async move {
            let mut seq = 0;
            while writing.load(Ordering::SeqCst) {
                let rows: Vec<(String, i64)> = (0..KEYS).map(|k| (format!("k{k}"), seq)).collect();
                insert(&client, &topic, &rows, 64).await.expect("insert");
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seq
        })
    };
    wait_for("rows to flow", Duration::from_secs(30), || async {
        outbox.rows().await > 2_000 && outbox.unpublished().await < 500
    })
    .await;

    // Several freezes, so that the broker comes back at different points of the pipeline.
    let mut failures_seen = 0;
    for _ in 0..FREEZES {
        env.pause_service(Service::Kafka)
            .await
            .expect("freeze Kafka");
        let held = keys_get_held(port, Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        env.resume_service(Service::Kafka)
            .await
            .expect("thaw Kafka");
        failures_seen += usize::from(held);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert!(
        failures_seen > 0,
        "no delivery failed while Kafka was frozen: the test did not test anything"
    );
    writing.store(false, Ordering::SeqCst);
    let per_key = writer.await.expect("writer");

    wait_for(
        "the backlog to drain after the broker thawed",
        Duration::from_secs(120),
        || async { outbox.unpublished().await == 0 },
    )
    .await;
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), per_key)).collect();
    let total = KEYS * per_key as usize;
    let records = read_distinct(env, topic.name(), total, Duration::from_secs(120)).await;
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "failed deliveries: {failures_seen}/{FREEZES} freezes held keys, {} records for {total} rows, {duplicates} duplicates",
        records.len()
    );
}
