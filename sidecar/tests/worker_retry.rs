//! Retry tiers and per-key order: records that fail go through the tier topics and, with
//! `ordering=key`, the later records of their key follow them there instead of overtaking;
//! other keys keep flowing. A record failing every tier ends in the dead-letter topic.

mod worker;

use std::{collections::HashMap, sync::Arc, time::Duration};

use ferry_testkit::require_env;
use worker::{Target, Topics, header_of, produce_events, read_all, spawn_worker};

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
