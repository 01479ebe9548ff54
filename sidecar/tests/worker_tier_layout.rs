//! Ordering through retry tiers holds only if a tier's partition P is always worked by the
//! worker that owns its main topic's partition P (a key's records in the tier and on the main
//! topic then meet in one worker's bookkeeping). The worker copies a record to the tier
//! partition of its own partition number and relies on the range assignor, which gives one
//! member the same partition of topics with equal partition counts and equal subscriptions.
//! A layout that breaks this is refused at start with a clear message; `ordering=partition` is
//! at least as strict as `key` through the tiers.

mod worker;

use std::{sync::Arc, time::Duration};

use ferry_testkit::{ChildProcess, TempTopic, require_env};
use worker::{Target, Topics, envelope, produce, producer, spawn_worker};

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
    topics
        .tiers
        .push(TempTopic::create_named(env, &tier, 4).await.expect("tier"));
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

/// A rollout that adds a delay (`--retry-delays=1s` → `1s,2s`): while the old worker A and the
/// new worker B are both members, the range assignor gives the new tier (only B subscribes to
/// it) to B and the main partition to A, which knows nothing of what waits in that tier. Key
/// k's seq 0 waits there (B put it there), and seq 1 followed it; seq 2 arrives meanwhile.
/// Key order must hold: the partition waits while the members disagree, and once A is gone, B
/// delivers seq 0, 1, 2 in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_changes_the_delays_keeps_key_order() {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, CommitMode, Consumer},
        message::{Header, OwnedHeaders},
        producer::FutureRecord,
    };
    use worker::{Received, wait_group};
    const WAIT: Duration = Duration::from_secs(60);
    const GROUP_OPTIONS: [&str; 2] = [
        "--kafka-option=session.timeout.ms=6000",
        "--kafka-option=heartbeat.interval.ms=1000",
    ];
    let env = require_env!();
    let mut topics = Topics::create(env, 1, &["1s", "2s"], true).await;
    let main = topics.main.name.clone();
    let p = producer(env);
    // seq 0 (offset 0) was moved to the 2s tier by a new worker: its copy waits there for 20 s,
    // and the group's main-topic offset is past it.
    produce(&p, &main, "k", &envelope("k-0", "k", 0)).await;
    produce(&p, &main, "k", &envelope("k-1", "k", 1)).await;
    let not_before = (std::time::SystemTime::now() + Duration::from_secs(20))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ferry-not-before",
            value: Some(&not_before),
        })
        .insert(Header {
            key: "ferry-original-partition",
            value: Some("0"),
        })
        .insert(Header {
            key: "ferry-original-offset",
            value: Some("0"),
        })
        .insert(Header {
            key: "ferry-attempts",
            value: Some("2"),
        });
    p.send(
        FutureRecord::to(&topics.tiers[1].name)
            .key("k")
            .partition(0)
            .payload(&envelope("k-0", "k", 0))
            .headers(headers),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("tier record produced");
    let committer: BaseConsumer = env
        .kafka_config()
        .set("group.id", &topics.group)
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&main, 0, Offset::Offset(1))
        .expect("offset");
    committer
        .commit(&offsets, CommitMode::Sync)
        .expect("main topic committed past seq 0");
    drop(committer);

    let target = Target::ok().await;
    let a_client = ferry_testkit::unique_name("a-rollout");
    let b_client = ferry_testkit::unique_name("b-rollout");
    let options = |client: &str| {
        let mut extra = vec![
            "--ordering=key".to_owned(),
            format!("--kafka-option=client.id={client}"),
        ];
        extra.extend(GROUP_OPTIONS.iter().map(|s| (*s).to_owned()));
        extra
    };
    let (a_options, b_options) = (options(&a_client), options(&b_client));
    let a_extra: Vec<&str> = a_options.iter().map(String::as_str).collect();
    let b_extra: Vec<&str> = b_options.iter().map(String::as_str).collect();
    // B (new: 1s,2s) first; then A (old: 1s only), which the range assignor, ordering members
    // by id, gives the main partition.
    let mut b = spawn_worker(
        env,
        "rollout-b",
        &topics,
        &format!("{}/b", target.url),
        &b_extra,
    );
    wait_group(
        env,
        &topics.group,
        &main,
        &[(&b_client, &[0])],
        WAIT,
        "B alone",
    )
    .await;
    topics.delays = vec!["1s".to_owned()];
    let mut a = spawn_worker(
        env,
        "rollout-a",
        &topics,
        &format!("{}/a", target.url),
        &a_extra,
    );
    wait_group(
        env,
        &topics.group,
        &main,
        &[(&a_client, &[0]), (&b_client, &[])],
        WAIT,
        "A (old delays) owns the main partition, B (new delays) the new tier",
    )
    .await;
    produce(&p, &main, "k", &envelope("k-2", "k", 2)).await;
    // While both are members, long enough for A to deliver seq 2 if it were going to.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = a.terminate(WAIT).await.expect("stop A");
    assert!(status.is_some_and(|s| s.success()), "A: {status:?}");
    target
        .wait_for(WAIT, "k-0, k-1 and k-2", |d| {
            ["k-0", "k-1", "k-2"].iter().all(|id| d.contains_key(*id))
        })
        .await;
    let status = b.terminate(WAIT).await.expect("stop B");
    assert!(status.is_some_and(|s| s.success()), "B: {status:?}");
    let order: Vec<(String, String)> = target
        .requests()
        .into_iter()
        .filter(|r: &Received| r.status == 200)
        .map(|r| (r.id, r.path))
        .collect();
    let ids: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        ["k-0", "k-1", "k-2"],
        "key k out of order through the rollout: {order:?}"
    );
}
