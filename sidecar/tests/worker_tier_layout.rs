//! Ordering through retry tiers holds only if a tier's partition P is always worked by the
//! worker that owns its main topic's partition P (a key's records in the tier and on the main
//! topic then meet in one worker's bookkeeping). The worker copies a record to the tier
//! partition of its own partition number and relies on the range assignor, which gives one
//! member the same partition of topics with equal partition counts and equal subscriptions.
//! A layout that breaks this is refused at start with a clear message; `ordering=partition` is
//! at least as strict as `key` through the tiers.

mod worker;

use std::{sync::Arc, time::Duration};

use ferry_testkit::{ChildProcess, require_env};
use worker::{NamedTopic, Target, Topics, envelope, produce, producer, spawn_worker};

/// How long a worker that refuses its layout may take to exit.
const REFUSAL: Duration = Duration::from_secs(60);

async fn assert_refused(worker: &mut ChildProcess, what: &str) {
    match tokio::time::timeout(REFUSAL, worker.wait()).await {
        Ok(status) => {
            let status = status.expect("wait for the worker");
            assert!(!status.success(), "{what}: the worker exited with {status}");
        }
        Err(_) => panic!("{what}: the worker kept running instead of refusing the layout"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_whose_partition_count_differs_from_its_topic_is_refused() {
    let env = require_env!();
    let mut topics = Topics::create(env, 2, &[], true).await;
    // More partitions than the main topic: the range assignor would give tier partitions 2
    // and 3 (and, with two members, 1) to another member than main partition 1.
    let tier = format!("{}.{}.retry.1s", topics.main.name, topics.group);
    topics.tiers.push(NamedTopic::create(env, &tier, 4).await);
    topics.delays.push("1s".to_owned());
    let target = Target::ok().await;
    let mut worker = spawn_worker(
        env,
        "layout-count",
        &topics,
        &target.url,
        &["--ordering=key"],
    );
    assert_refused(&mut worker, "a tier of 4 partitions for a topic of 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignor_that_does_not_co_partition_is_refused() {
    let env = require_env!();
    let topics = Topics::create(env, 2, &["1s"], true).await;
    let target = Target::ok().await;
    let mut worker = spawn_worker(
        env,
        "layout-assignor",
        &topics,
        &target.url,
        &[
            "--ordering=key",
            "--kafka-option=partition.assignment.strategy=roundrobin",
        ],
    );
    assert_refused(&mut worker, "the roundrobin assignor with retry tiers").await;
}

/// With `ordering=partition`, a record that waits in a tier holds back every later record of
/// its partition (they follow it into the tier), whatever their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_partition_holds_through_the_tiers() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &["1s"], true).await;
    // o-0 fails its first pass: it waits a second in the tier, then is delivered.
    let target = Target::start(Arc::new(|r, seen| match r.id.as_str() {
        "o-0" if seen == 0 => 503,
        _ => 200,
    }))
    .await;
    let p = producer(env);
    let ids: Vec<String> = (0..6).map(|i| format!("o-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let key = format!("k{i}");
        produce(&p, &topics.main.name, &key, &envelope(id, &key, 0)).await;
    }
    let mut worker = spawn_worker(
        env,
        "partition-order",
        &topics,
        &target.url,
        &["--ordering=partition", "--retry-attempts=1"],
    );
    target
        .wait_for(Duration::from_secs(60), "all six delivered", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    let order: Vec<String> = target
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .map(|r| r.id)
        .collect();
    assert_eq!(
        order, ids,
        "the partition was delivered out of order around its record in the tier"
    );
}
