//! A dead-letter topic that cannot be written (missing, or the worker's principal is denied)
//! must hold the commit back at the failed record until it can be written, and then recover.

mod worker;

use std::time::Duration;

use ferry_testkit::require_env;
use worker::{NamedTopic, Target, Topics, envelope, produce, producer, read_all, spawn_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_holds_the_commit_until_it_exists() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], false).await;
    let target = Target::ok().await;
    let p = producer(env);
    produce(&p, &topics.main.name, "a", &envelope("g-1", "a", 0)).await;
    produce(&p, &topics.main.name, "b", b"poison").await;
    produce(&p, &topics.main.name, "a", &envelope("g-2", "a", 1)).await;
    let mut worker = spawn_worker(env, "dlq-outage", &topics, &target.url, &["--ordering=key"]);
    target
        .wait_for(Duration::from_secs(60), "the good records", |d| {
            d.contains_key("g-1") && d.contains_key("g-2")
        })
        .await;
    // Give the worker time to (wrongly) commit past the poison record if it were going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = worker::committed(env, &topics.group, &topics.main.name, 1);
    assert!(
        matches!(held[0], None | Some(0) | Some(1)),
        "committed past the record whose dead letter was never written: {held:?}"
    );

    let _dlq = NamedTopic::create(env, &topics.dead_letter_name, 1).await;
    let dead = read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(60));
    assert_eq!(
        dead.len(),
        1,
        "the poison record reached the dead-letter topic once it existed"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = worker::committed(env, &topics.group, &topics.main.name, 1);
        if committed == [Some(3)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never committed after recovery: {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}
