//! No loss through crashes: the real worker binary is `kill -9`ed at random moments, over and
//! over, while 50,000 events flow. Afterwards every event must have had a 2xx at least once,
//! and duplicates must stay within `--max-in-flight` per crash.

mod worker;

use std::time::{Duration, Instant};

use ferry_testkit::require_env;
use rand::Rng;
use worker::{Target, Topics, produce_events, spawn_worker};

const EVENTS: u64 = 50_000;
const KILLS: usize = 20;
const MAX_IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_never_loses_an_event() {
    let env = require_env!();
    let topics = Topics::create(env, 4, &[], true).await;
    let target = Target::ok().await;
    let producing = {
        let topic = topics.main.name.clone();
        tokio::spawn(async move { produce_events(env, &topic, "e", EVENTS, 500).await })
    };
    let extra = [
        "--ordering=key".to_owned(),
        format!("--max-in-flight={MAX_IN_FLIGHT}"),
        // Static membership: the restarted worker takes its partitions back at once instead
        // of waiting for the killed one's session to time out.
        "--kafka-option=group.instance.id=worker-under-test".to_owned(),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut kills = 0;
    let started = Instant::now();
    let mut worker = spawn_worker(env, "no-loss", &topics, &target.url, &extra);
    while kills < KILLS {
        let pause = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        worker.kill9().await.expect("kill -9");
        kills += 1;
        worker = spawn_worker(env, "no-loss", &topics, &target.url, &extra);
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "kill loop took too long"
        );
    }
    let ids = producing.await.expect("producer task");
    target
        .wait_for(Duration::from_secs(180), "every event delivered", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");

    let delivered = target.delivered();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !delivered.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let total: usize = delivered.values().sum();
    let duplicates = total - ids.len();
    eprintln!(
        "{kills} kills, {total} deliveries of {} events, {duplicates} duplicates",
        ids.len()
    );
    assert!(
        duplicates <= kills * MAX_IN_FLIGHT,
        "{duplicates} duplicates after {kills} crashes exceeds {MAX_IN_FLIGHT} per crash"
    );
}
