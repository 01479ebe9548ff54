//! A dead-letter topic that cannot be written (missing, or the worker's principal is denied)
//! must hold the commit back at the failed record until it can be written, and then recover.

mod worker;

use std::time::Duration;

use ferry_operator::kafka::acls::{Operation, ResourceType};
use ferry_testkit::{TempTopic, require_env};
use worker::{
    Grant, Target, Topics, envelope, produce, producer, read_all, spawn_worker, spawn_worker_as,
};

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

    let _dlq = TempTopic::create_named(env, &topics.dead_letter_name, 1)
        .await
        .expect("dead-letter topic");
    let dead = read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(60));
    assert_eq!(
        dead.len(),
        1,
        "the poison record reached the dead-letter topic once it existed"
    );
    worker::wait_committed(
        env,
        &topics.group,
        &topics.main.name,
        &[Some(3)],
        "never committed after recovery",
    )
    .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}

/// The dead-letter topic exists but the worker's principal may not write it (an operator
/// that forgot the grant): the poison record's copy is refused by the authorizer, so nothing is
/// committed past it while the good records around it flow; once the grant appears, the copy
/// is written and the commit moves past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_denied_by_acl_holds_the_commit_until_granted() {
    let env = require_env!();
    let (Some(user), Some(password)) = (
        env.var("FERRY_KAFKA_NOACL_USERNAME"),
        env.var("FERRY_KAFKA_NOACL_PASSWORD"),
    ) else {
        panic!(".ferry/env has no FERRY_KAFKA_NOACL_* user");
    };
    let topics = Topics::create(env, 1, &[], true).await;
    // What the operator grants a consumer, minus the dead-letter write. IdempotentWrite lets
    // the (idempotent) copy producer get its producer id without write access to any topic.
    let _consumer = Grant::allow(
        env,
        user,
        &[
            (ResourceType::Topic, &topics.main.name, Operation::Read),
            (ResourceType::Topic, &topics.main.name, Operation::Describe),
            (ResourceType::Group, &topics.group, Operation::Read),
            (
                ResourceType::Cluster,
                "kafka-cluster",
                Operation::IdempotentWrite,
            ),
        ],
    )
    .await;
    let target = Target::ok().await;
    let p = producer(env);
    produce(&p, &topics.main.name, "a", &envelope("acl-1", "a", 0)).await;
    produce(&p, &topics.main.name, "b", b"poison").await;
    produce(&p, &topics.main.name, "a", &envelope("acl-2", "a", 1)).await;
    let mut worker = spawn_worker_as(
        (user, password),
        env,
        "dlq-denied",
        &topics,
        &target.url,
        &["--ordering=key"],
    );
    target
        .wait_for(Duration::from_secs(60), "the good records", |d| {
            d.contains_key("acl-1") && d.contains_key("acl-2")
        })
        .await;
    // Give the worker time to (wrongly) commit past the poison record if it were going to.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = worker::committed(env, &topics.group, &topics.main.name, 1);
    assert!(
        matches!(held[0], None | Some(0) | Some(1)),
        "committed past the record whose dead letter was refused: {held:?}"
    );
    assert!(
        read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(2)).is_empty(),
        "a dead letter was written without the grant"
    );

    let _dead_letter = Grant::allow(
        env,
        user,
        &[(
            ResourceType::Topic,
            &topics.dead_letter_name,
            Operation::Write,
        )],
    )
    .await;
    let dead = read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(60));
    assert_eq!(
        dead.len(),
        1,
        "the poison record reached the dead-letter topic once granted"
    );
    worker::wait_committed(
        env,
        &topics.group,
        &topics.main.name,
        &[Some(3)],
        "never committed after the grant",
    )
    .await;
    worker
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
}
