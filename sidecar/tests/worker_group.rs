//! Several workers in one group: one is killed and another added mid-stream; nothing is lost.
//! And de-duplication: the same event id produced twice is delivered once.

mod worker;

use std::time::Duration;

use ferry_testkit::{TempSchema, require_env};
use rdkafka::producer::FutureRecord;
use worker::{Target, Topics, envelope, produce, produce_events, producer, spawn_worker};

const GROUP_OPTIONS: [&str; 2] = [
    // The broker's minimum: a killed member leaves the group within seconds.
    "--kafka-option=session.timeout.ms=6000",
    "--kafka-option=heartbeat.interval.ms=1000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_one_added_lose_nothing() {
    let env = require_env!();
    let topics = Topics::create(env, 6, &[], true).await;
    let target = Target::ok().await;
    let producing = {
        let topic = topics.main.name.clone();
        tokio::spawn(async move { produce_events(env, &topic, "m", 20_000, 200).await })
    };
    let mut extra = vec!["--ordering=key", "--max-in-flight=32"];
    extra.extend(GROUP_OPTIONS);
    let mut w1 = spawn_worker(env, "group-1", &topics, &target.url, &extra);
    let mut w2 = spawn_worker(env, "group-2", &topics, &target.url, &extra);
    let mut w3 = spawn_worker(env, "group-3", &topics, &target.url, &extra);
    target
        .wait_for(Duration::from_secs(60), "a first part delivered", |d| {
            d.len() >= 3_000
        })
        .await;
    w2.kill9().await.expect("kill -9");
    let mut w4 = spawn_worker(env, "group-4", &topics, &target.url, &extra);
    let ids = producing.await.expect("producer");
    target
        .wait_for(Duration::from_secs(120), "every event delivered", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    for w in [&mut w1, &mut w3, &mut w4] {
        w.terminate(Duration::from_secs(30)).await.expect("stop");
    }
    let delivered = target.delivered();
    assert!(ids.iter().all(|id| delivered.contains_key(id)));
    // Per-key order survives the rebalances for everything delivered once.
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    let mut regressions = 0;
    for r in target.requests() {
        if let Some(prev) = last.insert(r.key.clone(), r.seq)
            && r.seq <= prev
        {
            regressions += 1;
        }
    }
    let duplicates: usize = delivered.values().map(|n| n - 1).sum();
    assert!(
        regressions <= duplicates,
        "{regressions} order regressions but only {duplicates} redeliveries explain them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_twice_is_delivered_once() {
    let env = require_env!();
    let schema = TempSchema::create(env).await.expect("schema");
    let topics = Topics::create(env, 2, &[], true).await;
    let target = Target::ok().await;
    let p = producer(env);
    // The same event twice (a relay re-publish after a crash), different keys' events around.
    produce(&p, &topics.main.name, "a", &envelope("same", "a", 0)).await;
    produce(&p, &topics.main.name, "b", &envelope("other-1", "b", 0)).await;
    produce(&p, &topics.main.name, "a", &envelope("same", "a", 0)).await;
    produce(&p, &topics.main.name, "b", &envelope("other-2", "b", 1)).await;
    let url = format!("--idempotency-database-url={}", schema.url());
    let mut worker = spawn_worker(env, "dedup", &topics, &target.url, &[&url]);
    target
        .wait_for(Duration::from_secs(60), "both others", |d| {
            d.contains_key("other-1") && d.contains_key("other-2")
        })
        .await;
    // Both copies of "same" share key "a" and so a lane: the second is read after the first.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker::committed(env, &topics.group, &topics.main.name, 2)
        .iter()
        .flatten()
        .sum::<i64>()
        < 4
    {
        assert!(std::time::Instant::now() < deadline, "not all committed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(target.delivered().get("same"), Some(&1), "delivered twice");
    let db = schema.connect().await.expect("connect");
    let row = db
        .query_one(
            "SELECT count(*) FROM ferry_worker_delivered WHERE group_id = $1",
            &[&topics.group],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 3, "three distinct ids remembered");
}

/// Copies of one event id under different keys run in different lanes, so they are in flight
/// at the same moment, in one worker and across two: the claim must still let one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_event_are_delivered_once() {
    const IDS: u64 = 20;
    const COPIES: u64 = 6;
    let env = require_env!();
    let schema = TempSchema::create(env).await.expect("schema");
    let topics = Topics::create(env, 2, &[], true).await;
    // Slow answers keep each copy's delivery open while the others start.
    let target = Target::slow(100).await;
    let url = format!("--idempotency-database-url={}", schema.url());
    let extra = ["--ordering=key", url.as_str()];
    let mut one = spawn_worker(env, "dedup-concurrent-1", &topics, &target.url, &extra);
    let mut two = spawn_worker(env, "dedup-concurrent-2", &topics, &target.url, &extra);
    // Both members joined and hold a partition each (the broker delays a new group's first
    // rebalance by 3 s by default) before the copies arrive, all at once.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let p = producer(env);
    let mut sends = Vec::new();
    for copy in 0..COPIES {
        for i in 0..IDS {
            // A key per copy: copies land in different lanes and on both partitions.
            let key = format!("c{copy}-{i}");
            let payload = envelope(&format!("dup-{i}"), &key, 0);
            sends.push(
                p.send_result(
                    FutureRecord::to(&topics.main.name)
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("enqueued"),
            );
        }
    }
    for send in sends {
        send.await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("produced");
    }
    let total = i64::try_from(IDS * COPIES).expect("fits");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while worker::committed(env, &topics.group, &topics.main.name, 2)
        .iter()
        .flatten()
        .sum::<i64>()
        < total
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not all committed: {:?}",
            worker::committed(env, &topics.group, &topics.main.name, 2)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    one.terminate(Duration::from_secs(30)).await.expect("stop");
    two.terminate(Duration::from_secs(30)).await.expect("stop");
    let delivered = target.delivered();
    for i in 0..IDS {
        assert_eq!(
            delivered.get(&format!("dup-{i}")),
            Some(&1),
            "dup-{i} delivered {:?} times",
            delivered.get(&format!("dup-{i}"))
        );
    }
    assert_eq!(delivered.len(), usize::try_from(IDS).expect("fits"));
}
