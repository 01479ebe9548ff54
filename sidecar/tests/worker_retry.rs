//! Retry tiers and per-key order: records that fail go through the tier topics and, with
//! `ordering=key`, the later records of their key follow them there instead of overtaking;
//! other keys keep flowing. A record failing every tier ends in the dead-letter topic.

mod worker;

use std::{collections::HashMap, sync::Arc, time::Duration};

use ferry_testkit::require_env;
use worker::{
    Target, Topics, envelope, header_of, produce, produce_events, producer, read_all, spawn_worker,
};

const KEYS: u64 = 5;
const PER_KEY: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_through_retry_tiers() {
    let env = require_env!();
    let topics = Topics::create(env, 2, &["1s", "2s"], true).await;
    // o-10 is k0's seq 2: fails 3 times (2 in-process, tier 1s), then succeeds in tier 2s.
    // o-26 is k1's seq 5: always fails, so it ends in the dead-letter topic.
    let target = Target::start(Arc::new(|r, seen| match r.id.as_str() {
        "o-10" if seen < 3 => 503,
        "o-26" => 503,
        _ => 200,
    }))
    .await;
    let ids = produce_events(env, &topics.main.name, "o", KEYS * PER_KEY, KEYS).await;
    let mut worker = spawn_worker(
        env,
        "retry",
        &topics,
        &target.url,
        &[
            "--ordering=key",
            "--retry-attempts=2",
            "--retry-backoff-initial=10ms",
            "--retry-backoff-max=100ms",
        ],
    );
    target
        .wait_for(Duration::from_secs(60), "all but o-26 delivered", |d| {
            ids.iter()
                .filter(|id| *id != "o-26")
                .all(|id| d.contains_key(id))
        })
        .await;
    let dead = read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(30));
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");

    let requests = target.requests();
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for r in requests.iter().filter(|r| r.status == 200) {
        seqs.entry(r.key.clone()).or_default().push(r.seq);
    }
    for (key, got) in &seqs {
        let expected: Vec<u64> = (0..PER_KEY).filter(|s| !(key == "k1" && *s == 5)).collect();
        assert_eq!(
            got, &expected,
            "key {key} delivered out of order or incompletely"
        );
    }
    // The retried record took its tiers: 4 attempts, the last ones carrying ferry-attempt 3, 4.
    let attempts: Vec<&str> = requests
        .iter()
        .filter(|r| r.id == "o-10")
        .map(|r| r.headers["ferry-attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    // With tracing off and no traceparent in the record, the worker makes one up once per
    // pass: both in-process attempts carry the same one, so the service can tie them together.
    let traceparents: Vec<&str> = requests
        .iter()
        .filter(|r| r.id == "o-10")
        .map(|r| r.headers["traceparent"].as_str())
        .collect();
    assert!(traceparents[0].starts_with("00-"), "{traceparents:?}");
    assert_eq!(traceparents[0], traceparents[1], "{traceparents:?}");
    // Other keys were not held up by k0's wait in the tiers.
    let k0_retry_done = requests
        .iter()
        .find(|r| r.id == "o-10" && r.status == 200)
        .expect("o-10 delivered")
        .at;
    let k2_done = requests
        .iter()
        .filter(|r| r.key == "k2")
        .map(|r| r.at)
        .max()
        .expect("k2 delivered");
    assert!(k2_done < k0_retry_done, "k2 waited behind k0's retries");
    // The tier delays were honoured: 1 s then 2 s between o-10's tier attempts.
    let times: Vec<_> = requests
        .iter()
        .filter(|r| r.id == "o-10")
        .map(|r| r.at)
        .collect();
    assert!(
        times[2] - times[1] >= Duration::from_millis(950),
        "tier 1 too early: {:?}",
        times[2] - times[1]
    );
    assert!(
        times[3] - times[2] >= Duration::from_millis(1950),
        "tier 2 too early: {:?}",
        times[3] - times[2]
    );

    assert_eq!(dead.len(), 1, "o-26 dead-lettered");
    assert_eq!(header_of(&dead[0], "ferry-attempts").as_deref(), Some("4"));
    assert_eq!(
        header_of(&dead[0], "ferry-error").as_deref(),
        Some("target answered 503 Service Unavailable")
    );
    assert_eq!(
        header_of(&dead[0], "ferry-original-topic").as_deref(),
        Some(topics.main.name.as_str())
    );
}

/// The index of keys parked in a tier lives in memory; a `kill -9` while a key is parked must
/// not let that key's next main-topic record overtake the ones waiting in the tier: the new
/// worker reads the tiers back before it delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_key_stays_ordered_across_kill_dash_nine() {
    let env = require_env!();
    // A tier long enough that the parked records are still waiting when the worker is back.
    let topics = Topics::create(env, 1, &["12s"], true).await;
    // p-0 (key k, seq 0) fails its first pass, so it moves to the tier; p-1 follows it.
    let target = Target::start(Arc::new(|r, seen| match r.id.as_str() {
        "p-0" if seen == 0 => 503,
        _ => 200,
    }))
    .await;
    let extra = [
        "--ordering=key",
        "--retry-attempts=1",
        // Static membership: the restarted worker takes the partitions back at once.
        "--kafka-option=group.instance.id=parked-key-worker",
    ];
    let p = producer(env);
    produce(&p, &topics.main.name, "k", &envelope("p-0", "k", 0)).await;
    produce(&p, &topics.main.name, "k", &envelope("p-1", "k", 1)).await;
    let mut worker = spawn_worker(env, "parked-key", &topics, &target.url, &extra);
    // Both are in the tier once it holds two records (p-1 followed, undelivered).
    let parked = read_all(env, &topics.tiers[0].name, 2, Duration::from_secs(30));
    assert_eq!(parked.len(), 2, "p-0 and p-1 in the tier");
    // Wait for the main-topic commit past both, so the restart does not simply re-read them.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker::committed(env, &topics.group, &topics.main.name, 1) != [Some(2)] {
        assert!(
            std::time::Instant::now() < deadline,
            "main topic not committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.kill9().await.expect("kill -9");
    let mut worker = spawn_worker(env, "parked-key", &topics, &target.url, &extra);
    // p-2 arrives while p-0 and p-1 still wait in the tier.
    produce(&p, &topics.main.name, "k", &envelope("p-2", "k", 2)).await;
    produce(&p, &topics.main.name, "other", &envelope("p-3", "other", 0)).await;
    target
        .wait_for(Duration::from_secs(60), "all four delivered", |d| {
            ["p-0", "p-1", "p-2", "p-3"]
                .iter()
                .all(|id| d.contains_key(*id))
        })
        .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    let requests = target.requests();
    let order: Vec<&str> = requests
        .iter()
        .filter(|r| r.status == 200 && r.key == "k")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        order,
        ["p-0", "p-1", "p-2"],
        "key k delivered out of order after the crash"
    );
    let first = |id: &str| {
        requests
            .iter()
            .find(|r| r.id == id && r.status == 200)
            .map(|r| r.at)
            .expect("delivered")
    };
    assert!(
        first("p-3") < first("p-0"),
        "another key waited behind k's parked records"
    );
}

/// Records waiting in the one tier of the rebuild test: more than one short attempt reads.
const WAITING: u64 = 30_000;

/// After an assignment (ordering=key) the worker reads the partition's tiers back before it
/// lets the partition's records start. However large the tiers, that read must finish: with
/// each attempt bounded to 10 ms (the hidden `--tier-scan-timeout`), an attempt that starts
/// over each time never reads 30,000 waiting records; one that resumes where the last one
/// stopped does, and the main topic's records flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_read_back_finishes_however_large_the_tier() {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::FutureRecord,
    };
    let env = require_env!();
    let topics = Topics::create(env, 1, &["1h"], true).await;
    let p = producer(env);
    // Waiting for an hour: held in the tier for the whole test, never delivered.
    let not_before = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..WAITING {
        let key = format!("t{}", i % 100);
        let offset = i.to_string();
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
                value: Some(&offset),
            });
        let payload = envelope(&format!("t-{i}"), &key, i / 100);
        let record = FutureRecord::to(&topics.tiers[0].name)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        match p.send_result(record) {
            Ok(delivery) => pending.push_back(delivery),
            Err((e, _)) => panic!("produce failed: {e}"),
        }
        // Keep librdkafka's queue bounded: wait for the oldest sends.
        while pending.len() > 5_000 {
            let oldest = pending.pop_front().expect("pending");
            oldest
                .await
                .expect("not cancelled")
                .map_err(|(e, _)| e)
                .expect("produced");
        }
    }
    for delivery in pending {
        delivery
            .await
            .expect("not cancelled")
            .map_err(|(e, _)| e)
            .expect("produced");
    }
    produce(&p, &topics.main.name, "fresh", &envelope("m-1", "fresh", 0)).await;
    let target = Target::ok().await;
    let mut worker = spawn_worker(
        env,
        "tier-read-back",
        &topics,
        &target.url,
        &["--ordering=key", "--tier-scan-timeout=10ms"],
    );
    target
        .wait_for(
            Duration::from_secs(120),
            "the main topic's record, once the tier was read back",
            |d| d.contains_key("m-1"),
        )
        .await;
    assert_eq!(
        target.requests().len(),
        1,
        "only the main topic's record is due"
    );
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}
