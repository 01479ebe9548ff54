//! Fencing covers side effects (DESIGN §5 "Rebalances and deploys"): a worker whose partition
//! was revoked writes no retry-tier or dead-letter copy of that partition's records afterwards.
//!
//! Worker A alone owns both partitions; the service holds A's requests for X and Y, both on
//! partition 1, open. Worker B joins: A's partitions are revoked, A's 1 s drain deadline
//! passes with X and Y still running, and B gets partition 1 and delivers X and Y. Only then
//! does the service answer A's old requests: 503 for X (A would copy it to the retry tier) and
//! 400 for Y (A would dead-letter it). Neither copy may appear: the records are B's now, and
//! B delivered them.

mod worker;

use std::{sync::Arc, time::Duration};

use ferry_testkit::{require_env, unique_name};
use rdkafka::producer::FutureRecord;
use worker::{
    Received, Target, Topics, Wait, envelope, producer, read_all, spawn_worker, wait_group,
};

const GROUP_OPTIONS: [&str; 2] = [
    // The broker's minimum: a member that stops heartbeating leaves within seconds.
    "--kafka-option=session.timeout.ms=6000",
    "--kafka-option=heartbeat.interval.ms=1000",
];
/// Bound on each wait for the group, a held request or deliveries.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_worker_writes_no_copy_of_the_records_it_lost() {
    let env = require_env!();
    let topics = Topics::create(env, 2, &["1s"], true).await;
    let topic = topics.main.name.clone();
    let target = Target::start_with(
        Arc::new(|r, nth| match (r.id.as_str(), nth) {
            ("x", 0) => 503,
            ("y", 0) => 400,
            _ => 200,
        }),
        Arc::new(|r: &Received| match (r.id.as_str(), r.nth) {
            ("x" | "y", 0) => Wait::UntilReleased,
            _ => Wait::No,
        }),
    )
    .await;
    let p = producer(env);
    for (id, key, partition) in [("w", "kw", 0), ("x", "kx", 1), ("y", "ky", 1)] {
        p.send(
            FutureRecord::to(&topic)
                .key(key)
                .partition(partition)
                .payload(&envelope(id, key, 0)),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
    }

    // The range assignor orders members by member id, which the broker makes from the client
    // id: A ("a-…") keeps partition 0 and B ("b-…") gets partition 1 once both are members.
    let a_client = unique_name("a-fencing");
    let b_client = unique_name("b-fencing");
    let options = |client: &str| {
        let mut extra = vec![
            "--ordering=key".to_owned(),
            "--retry-attempts=1".to_owned(),
            "--drain-timeout=1s".to_owned(),
            // Longer than the whole test: X's and Y's held requests must end in an answer.
            "--timeout=120s".to_owned(),
            format!("--kafka-option=client.id={client}"),
        ];
        extra.extend(GROUP_OPTIONS.iter().map(|s| (*s).to_owned()));
        extra
    };
    let (a_options, b_options) = (options(&a_client), options(&b_client));
    let a_extra: Vec<&str> = a_options.iter().map(String::as_str).collect();
    let b_extra: Vec<&str> = b_options.iter().map(String::as_str).collect();
    let (a_url, b_url) = (format!("{}/a", target.url), format!("{}/b", target.url));

    let mut a = spawn_worker(env, "fencing-a", &topics, &a_url, &a_extra);
    wait_group(
        env,
        &topics.group,
        &topic,
        &[(&a_client, &[0, 1])],
        WAIT,
        "A alone owns both partitions",
    )
    .await;
    target.wait_held(2, WAIT).await;

    let mut b = spawn_worker(env, "fencing-b", &topics, &b_url, &b_extra);
    wait_group(
        env,
        &topics.group,
        &topic,
        &[(&a_client, &[0]), (&b_client, &[1])],
        WAIT,
        "B joined: A partition 0, B partition 1",
    )
    .await;
    let b_delivered = |log: &[Received], id: &str| {
        log.iter()
            .any(|r| r.id == id && r.path.ends_with("/b") && r.status == 200)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !(b_delivered(&target.requests(), "x") && b_delivered(&target.requests(), "y")) {
        assert!(
            std::time::Instant::now() < deadline,
            "B did not deliver X and Y: {:?}",
            target.requests()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        target.held_now(),
        2,
        "A's requests for X and Y are still open"
    );

    // A's old requests are answered now: 503 (X) and 400 (Y).
    target.release_held();
    let deadline = std::time::Instant::now() + WAIT;
    while target.requests().iter().filter(|r| r.nth == 0).count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "A's held requests were not answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a copy A wrongly writes (it would write it at once) to be read back.
    let tier = read_all(env, &topics.tiers[0].name, 1, Duration::from_secs(10));
    let dead = read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(5));
    for (worker, name) in [(&mut a, "A"), (&mut b, "B")] {
        let status = worker.terminate(WAIT).await.expect("stop");
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} exited with {status:?}"
        );
    }
    assert!(
        tier.is_empty(),
        "A copied X to the retry tier after losing its partition: {tier:?}"
    );
    assert!(
        dead.is_empty(),
        "A dead-lettered Y after losing its partition: {dead:?}"
    );
}
