//! The worker never has more than one offset commit on its way to the group coordinator
//! (issue 11): while the coordinator does not answer, newer watermarks wait for the answer
//! and go with the next request instead of queueing request after request on the socket,
//! which after a broker failover starved the worker (its window, freed only by commit
//! answers, stayed full behind a growing queue). The broker is frozen with SIGSTOP mid-stream
//! (it keeps its connections, answers nothing), the worker's librdkafka statistics are read
//! from `/metrics` meanwhile, and after the thaw every event must still arrive.

mod worker;

use std::time::{Duration, Instant};

use ferry_testkit::{Service, disruption_lock, http_get, require_env};
use worker::{Target, Topics, produce_events, spawn_worker};

const EVENTS: u64 = 5_000;
const MAX_IN_FLIGHT: usize = 64;
/// How long the broker stays frozen: long enough for librdkafka's old background commit
/// (every 100 ms) to have queued dozens of requests, well inside the 45 s session timeout.
const FROZEN: Duration = Duration::from_secs(10);
/// Requests the coordinator may have outstanding from one worker: one commit, one heartbeat
/// (librdkafka sends the next only after the last answered), and one for any other group
/// request that happens to be on its way.
const BOUND: i64 = 3;
/// Generous, for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// `ferry_worker_coordinator_requests` from the worker's `/metrics`, once it is reported.
async fn coordinator_requests(port: u16) -> Option<i64> {
    let (_, body) = http_get(port, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("ferry_worker_coordinator_requests "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_coordinator_gets_one_commit_at_a_time() {
    let env = require_env!();
    let _lock = disruption_lock().await;
    let topics = Topics::create(env, 4, &[], true).await;
    let ids = produce_events(env, &topics.main.name, "e", EVENTS, 200).await;
    // Slow answers, so deliveries (and moved watermarks) keep finishing into the freeze.
    let target = Target::slow(20).await;
    let port = ferry_testkit::free_port();
    let extra = [
        "--ordering=key".to_owned(),
        format!("--max-in-flight={MAX_IN_FLIGHT}"),
        format!("--metrics-addr=127.0.0.1:{port}"),
        // Statistics (the gauge's source) twice a second instead of every 5 s.
        "--kafka-option=statistics.interval.ms=500".to_owned(),
    ];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut worker = spawn_worker(env, "commit-pace", &topics, &target.url, &extra);

    target
        .wait_for(PATIENCE, "deliveries under way", |d| d.len() >= 500)
        .await;
    let deadline = Instant::now() + PATIENCE;
    while coordinator_requests(port).await.is_none() {
        assert!(Instant::now() < deadline, "the gauge was never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    env.pause_service(Service::Kafka)
        .await
        .expect("freeze kafka");
    // Nothing here may panic before the thaw, or the broker stays frozen for the next test.
    let frozen_until = Instant::now() + FROZEN;
    let mut samples = Vec::new();
    while Instant::now() < frozen_until {
        if let Some(n) = coordinator_requests(port).await {
            samples.push(n);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.resume_service(Service::Kafka)
        .await
        .expect("thaw kafka");

    let most = samples.iter().copied().max().unwrap_or(0);
    eprintln!("coordinator requests outstanding while frozen: {samples:?}");
    assert!(
        !samples.is_empty(),
        "no statistics while the broker was frozen"
    );
    assert!(
        most <= BOUND,
        "{most} requests outstanding at the frozen coordinator (at most {BOUND} expected): {samples:?}"
    );

    target
        .wait_for(PATIENCE, "every event delivered after the thaw", |d| {
            ids.iter().all(|id| d.contains_key(id))
        })
        .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}
