//! Broker failover under the real worker, on the three-broker cluster (replication factor 3,
//! `min.insync.replicas` 2): the broker that leads every partition of the worker's topic and
//! coordinates its consumer group is killed with `kill -9` while events stream in, and later
//! restarted (it then takes its leaderships back). Every event must reach the HTTP target with
//! a 2xx, every key's events in the order they were produced, the group's commits must reach
//! the end of every partition, and duplicates stay within what was in flight (`--max-in-flight`).

mod worker;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_testkit::{
    ChildProcess, ClusterTopic, KafkaCluster, REPLICATION_FACTOR, require_kafka_cluster,
    unique_name,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use worker::{Received, Target, committed, produce_events};

const PARTITIONS: i32 = 4;
/// How long any one step may take: generous, for a 2-core machine under heavy load (one run
/// with a load average of 18 saw the worker deliver 26 events/s).
const PATIENCE: Duration = Duration::from_secs(300);
const KEYS: u64 = 200;
/// 30,000 events in batches of 1,000, each acknowledged before the next.
const BATCHES: u64 = 30;
const PER_BATCH: u64 = 1_000;
/// The producer stays at most this many events ahead of the deliveries, so events keep
/// arriving through the kill, the failover and the restart however fast this machine is.
const AHEAD: usize = 4_000;
const MAX_IN_FLIGHT: usize = 64;
/// Events the worker must deliver before the kill, and again while the broker is down.
const PROGRESS: usize = 3_000;

/// The real worker binary against the cluster, as the admin.
fn spawn_worker(
    cluster: &KafkaCluster,
    topic: &str,
    group: &str,
    target: &str,
    dead_letter: &str,
) -> ChildProcess {
    let args = [
        "worker".to_owned(),
        format!("--topics={topic}"),
        format!("--group={group}"),
        format!("--target-url={target}"),
        format!("--dead-letter-topic={dead_letter}"),
        "--ordering=key".to_owned(),
        format!("--max-in-flight={MAX_IN_FLIGHT}"),
        "--metrics-addr=127.0.0.1:0".to_owned(),
        // Debug (a line per delivery and commit) only when FERRY_TEST_LOGS sends it to a file.
        if std::env::var_os("FERRY_TEST_LOGS").is_some() {
            "--log-level=info,ferry_sidecar=debug".to_owned()
        } else {
            "--log-level=info".to_owned()
        },
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kafka = cluster.kafka_args().to_env();
    let envs: Vec<(&str, &str)> = kafka.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ChildProcess::spawn(
        "worker-broker-failover",
        env!("CARGO_BIN_EXE_ferry-sidecar"),
        &args,
        &envs,
    )
    .expect("spawn worker")
}

/// `(batch, index)` of an event id `b<batch>-<index>`: the order it was produced in.
fn produced_at(id: &str) -> (u64, u64) {
    let (batch, index) = id
        .strip_prefix('b')
        .and_then(|rest| rest.split_once('-'))
        .expect("an id b<batch>-<index>");
    (batch.parse().expect("batch"), index.parse().expect("index"))
}

/// The longest time without a request reaching the target, and when it began (seconds after
/// `since`, negative if before).
fn longest_pause(requests: &[Received], since: Instant) -> (Duration, f64) {
    let mut arrivals: Vec<Instant> = requests.iter().map(|r| r.at).collect();
    arrivals.sort();
    arrivals
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max_by_key(|(gap, _)| *gap)
        .map_or((Duration::ZERO, 0.0), |(gap, from)| {
            let offset = if from >= since {
                (from - since).as_secs_f64()
            } else {
                -(since - from).as_secs_f64()
            };
            (gap, offset)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_broker_and_group_coordinator_loses_no_event() {
    let cluster = require_kafka_cluster!();
    cluster.start_all().await.expect("every broker up");
    let env = cluster.env();
    // The broker to kill coordinates the group and leads every partition of its topic.
    let group = unique_name("g");
    let leader = cluster
        .group_coordinator(&group)
        .await
        .expect("group coordinator");
    let topic = ClusterTopic::create(cluster, PARTITIONS, leader)
        .await
        .expect("topic");
    let dead_letter =
        ClusterTopic::create_named(cluster, &format!("{}.dlq", topic.name()), 1, leader)
            .await
            .expect("dead-letter topic");
    let target = Arc::new(Target::ok().await);
    let started = Instant::now();

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let topic = topic.name().to_owned();
        let (producing, target) = (producing.clone(), target.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for b in 0..BATCHES {
                let waiting_since = Instant::now();
                while ids.len() > target.delivered().len() + AHEAD {
                    assert!(
                        waiting_since.elapsed() < PATIENCE,
                        "the worker stopped delivering: {} of {} produced events delivered \
                         after {PATIENCE:?}",
                        target.delivered().len(),
                        ids.len()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ids.extend(produce_events(env, &topic, &format!("b{b:02}"), PER_BATCH, KEYS).await);
            }
            producing.store(false, Ordering::SeqCst);
            ids
        })
    };
    let mut worker = spawn_worker(
        cluster,
        topic.name(),
        &group,
        &target.url,
        dead_letter.name(),
    );

    target
        .wait_for(PATIENCE, "events to flow", |d| d.len() >= PROGRESS)
        .await;
    assert!(
        producing.load(Ordering::SeqCst),
        "the producer finished before the kill: the test no longer kills mid-stream"
    );
    let outage = cluster
        .kill_broker(leader)
        .await
        .expect("kill -9 the leader");
    let killed_at = Instant::now();
    let at_kill = target.delivered().len();
    let before = started.elapsed();
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
    target
        .wait_for(PATIENCE, "deliveries with the leader broker down", |d| {
            d.len() >= at_kill + PROGRESS
        })
        .await;
    let resumed = killed_at.elapsed();
    let coordinator_while_down = cluster.group_coordinator(&group).await.ok();
    let producing_at_restart = producing.load(Ordering::SeqCst);

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
    let producing_when_back = producing.load(Ordering::SeqCst);

    let ids = producer.await.expect("producer task");
    target
        .wait_for(PATIENCE, "every event delivered", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    // Every offset is committed once its record is delivered: the group's commits must reach
    // the end of every partition, through the coordinator's move and back.
    let ends: Vec<Option<i64>> = {
        let reader: BaseConsumer = env.kafka_config().create().expect("consumer");
        (0..PARTITIONS)
            .map(|p| {
                let (_, high) = reader
                    .fetch_watermarks(topic.name(), p, Duration::from_secs(30))
                    .expect("watermarks");
                Some(high)
            })
            .collect()
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = committed(env, &group, topic.name(), PARTITIONS);
        if now == ends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commits stopped short of the end: {now:?}, end {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");

    // Per key, first deliveries in production order; nothing missing.
    let mut first: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut deliveries = 0;
    for r in target
        .requests()
        .iter()
        .filter(|r| (200..300).contains(&r.status))
    {
        deliveries += 1;
        if seen.insert(r.id.clone()) {
            first
                .entry(r.key.clone())
                .or_default()
                .push(produced_at(&r.id));
        }
    }
    for (key, order) in &first {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "key {key}: delivered out of production order: {order:?}"
        );
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicates = deliveries - ids.len();
    let (pause, pause_from) = longest_pause(&target.requests(), killed_at);
    eprintln!(
        "broker {leader} (leader and group coordinator) killed at {at_kill} delivered events; new \
         leaders {:?} after {election:?}; delivering again {resumed:?} after the kill (coordinator \
         then {coordinator_while_down:?}); leadership back after {back:?} (producer still producing \
         at restart: {producing_at_restart}, when back: {producing_when_back}); {at_kill} \
         deliveries in the {before:?} before the kill; longest pause in deliveries {pause:?}, \
         from {pause_from:.1} s after the kill; {deliveries} deliveries of {} events, \
         {duplicates} duplicates",
        failed_over.iter().map(|p| p.leader).collect::<Vec<_>>(),
        ids.len()
    );
    assert!(
        duplicates <= MAX_IN_FLIGHT,
        "{duplicates} duplicates exceed what was in flight ({MAX_IN_FLIGHT})"
    );
}
