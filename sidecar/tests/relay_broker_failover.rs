//! Broker failover under the real relay, on the three-broker cluster (replication factor 3,
//! `min.insync.replicas` 2): the broker leading every partition of the relay's topic is killed
//! with `kill -9` while rows stream in, the two left elect new leaders and keep accepting
//! acks=all writes, and later the broker comes back and takes its leaderships back. Nothing may
//! be lost or marked failed, every key's rows reach Kafka in commit order, and duplicates stay
//! within one unconfirmed batch (`--batch-size`), the most docs/outbox.md lets a relay re-send.

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

use ferry_testkit::{ClusterTopic, REPLICATION_FACTOR, require_kafka_cluster};
use rand::seq::IndexedRandom;
use support::*;

/// How long any one step may take: generous, for a 2-core machine under heavy load (one run
/// with a load average of 18 saw the worker deliver 26 events/s).
const PATIENCE: Duration = Duration::from_secs(300);
const KEYS: usize = 200;
/// 20,000 rows, written over ~40 s so the stream runs through the kill, the failover and the
/// restart.
const PER_KEY: i64 = 100;
const ROWS_PER_TRANSACTION: usize = 50;
const WRITER_PAUSE: Duration = Duration::from_millis(80);
/// The writer stays at most this many rows ahead of the relay, so rows keep arriving through
/// the kill, the failover and the restart however fast this machine is.
const AHEAD: i64 = 2_000;
const BATCH: usize = 500;
/// Rows the relay must publish before the kill, and again while the broker is down.
const PROGRESS: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_broker_mid_stream_loses_nothing_and_keeps_key_order() {
    let cluster = require_kafka_cluster!();
    cluster.start_all().await.expect("every broker up");
    let env = cluster.env();
    let leader = *cluster.nodes().choose(&mut rand::rng()).expect("nodes");
    let topic = ClusterTopic::create(cluster, 3, leader)
        .await
        .expect("topic");
    let outbox = TestOutbox::create(env).await;
    let published = || async { outbox.rows().await - outbox.unpublished().await };

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let client = outbox.schema.connect().await.expect("connect");
        let topic = topic.name().to_owned();
        let writing = writing.clone();
        tokio::spawn(async move {
            let rows: Vec<(String, i64)> = (0..PER_KEY)
                .flat_map(|s| (0..KEYS).map(move |k| (format!("k{k}"), s)))
                .collect();
            let mut written = 0;
            for chunk in rows.chunks(ROWS_PER_TRANSACTION) {
                loop {
                    let published: i64 = client
                        .query_one(
                            "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL",
                            &[],
                        )
                        .await
                        .expect("count")
                        .get(0);
                    if written - published <= AHEAD {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                insert(&client, &topic, chunk, 200).await.expect("insert");
                written += i64::try_from(chunk.len()).expect("fits");
                tokio::time::sleep(WRITER_PAUSE).await;
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    let batch = format!("--batch-size={BATCH}");
    let relay = spawn_relay(
        "relay-broker-failover",
        env,
        &outbox.url(),
        None,
        &[batch.as_str(), "--idle-poll-interval=50ms"],
    );

    wait_for("rows to flow", PATIENCE, || async {
        published().await >= PROGRESS
    })
    .await;
    assert!(
        writing.load(Ordering::SeqCst),
        "the writer finished before the kill: the test no longer kills mid-stream"
    );
    let outage = cluster
        .kill_broker(leader)
        .await
        .expect("kill -9 the leader");
    let killed_at = Instant::now();
    let at_kill = published().await;
    let failed_over = cluster
        .wait_partitions(
            topic.name(),
            "led by a surviving broker",
            PATIENCE,
            move |ps| ps.iter().all(|p| p.leader.is_some_and(|l| l != leader)),
        )
        .await
        .expect("new leaders");
    let election = killed_at.elapsed();
    wait_for(
        "the relay to publish with the leader broker down",
        PATIENCE,
        || async { published().await >= at_kill + PROGRESS },
    )
    .await;
    let resumed = killed_at.elapsed();
    let writing_at_restart = writing.load(Ordering::SeqCst);

    outage.restart().await.expect("restart the broker");
    cluster
        .wait_partitions(
            topic.name(),
            "led by the restarted broker again, every replica in sync",
            PATIENCE,
            move |ps| {
                ps.iter()
                    .all(|p| p.leader == Some(leader) && p.isr.len() == REPLICATION_FACTOR)
            },
        )
        .await
        .expect("leadership back");
    let back = killed_at.elapsed();
    let writing_when_back = writing.load(Ordering::SeqCst);

    writer.await.expect("writer");
    outbox.stop_once_settled(relay, PATIENCE).await;
    let failed: i64 = outbox
        .client
        .query_one(
            "SELECT count(*) FROM outbox WHERE publish_error IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(failed, 0, "rows marked failed during the failover");

    let total = KEYS * usize::try_from(PER_KEY).expect("fits");
    let records = read_distinct(env, topic.name(), total, PATIENCE).await;
    // Whatever reached Kafka is in by now (the relay is gone): read on briefly to count
    // duplicates honestly.
    let all = read_topic(env, topic.name(), Duration::from_secs(3), |r| {
        r.len() > records.len() + BATCH
    })
    .await;
    let records = if all.len() > records.len() {
        all
    } else {
        records
    };
    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), PER_KEY)).collect();
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "broker {leader} killed at {at_kill} published rows; new leaders {:?} after {election:?}; \
         publishing again {resumed:?} after the kill; leadership back after {back:?} (writer still \
         writing at restart: {writing_at_restart}, when back: {writing_when_back}); {} records \
         for {total} rows, {duplicates} duplicates",
        failed_over.iter().map(|p| p.leader).collect::<Vec<_>>(),
        records.len()
    );
    assert!(
        duplicates <= BATCH,
        "{duplicates} duplicates exceed one unconfirmed batch ({BATCH})"
    );
}
