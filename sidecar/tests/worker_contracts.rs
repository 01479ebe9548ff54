//! The worker's `--contracts-dir` (an EventConsumer's `validate`) and tombstones, against the
//! real binary, Kafka and an HTTP target: a record breaking its topic's contract is
//! dead-lettered with the failing path and never delivered, other events and a tombstone are
//! not held to it (the tombstone is skipped, not dead-lettered), and a contract changed on
//! disk applies to the running worker.

mod worker;

use std::time::Duration;

use ferry_testkit::{require_env, unique_name};
use rdkafka::{
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use worker::{Target, Topics, header_of, produce, producer, read_all, spawn_worker};

fn event(id: &str, event: &str, key: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": "test.v1", "event": event, "id": id, "ts": 1_700_000_000,
        "key": key, "data": {"key": key, "seq": seq}, "headers": {}
    }))
    .expect("json")
}

/// Produces a tombstone: the key, no value.
async fn produce_tombstone(p: &FutureProducer, topic: &str, key: &str) {
    p.send(
        FutureRecord::<str, [u8]>::to(topic).key(key),
        Timeout::After(Duration::from_secs(30)),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("tombstone produced");
}

fn contract(maximum: u64) -> String {
    serde_json::json!({
        "event": "test.happened",
        "jsonSchema": {
            "type": "object",
            "required": ["key", "seq"],
            "properties": {"key": {"type": "string"}, "seq": {"type": "integer", "maximum": maximum}}
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_breaking_the_contract_are_dead_lettered_and_tombstones_skipped() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], true).await;
    let dir = std::env::temp_dir().join(unique_name("worker-contracts"));
    std::fs::create_dir_all(&dir).expect("contracts dir");
    let file = dir.join(format!("{}.json", topics.main.name));
    std::fs::write(&file, contract(100)).expect("contract");

    let target = Target::ok().await;
    let p = producer(env);
    let main = topics.main.name.as_str();
    produce(&p, main, "k", &event("g-1", "test.happened", "k", 1)).await;
    produce(&p, main, "k", &event("b-1", "test.happened", "k", 500)).await;
    produce_tombstone(&p, main, "k").await;
    // Another event type on the topic: the contract names only test.happened.
    produce(&p, main, "k", &event("o-1", "other.happened", "k", 500)).await;
    produce(&p, main, "k", &event("g-2", "test.happened", "k", 2)).await;

    let dir_arg = format!("--contracts-dir={}", dir.display());
    let mut running = spawn_worker(env, "contracts", &topics, &target.url, &[&dir_arg]);
    target
        .wait_for(Duration::from_secs(60), "g-1, o-1 and g-2", |d| {
            ["g-1", "o-1", "g-2"].iter().all(|id| d.contains_key(*id))
        })
        .await;
    let dead = read_all(env, &topics.dead_letter_name, 2, Duration::from_secs(10));
    assert_eq!(
        dead.iter()
            .map(|m| header_of(m, "ferry-original-offset"))
            .collect::<Vec<_>>(),
        [Some("1".to_owned())],
        "only b-1 is dead-lettered: not the tombstone at offset 2"
    );
    let error = header_of(&dead[0], "ferry-error").unwrap_or_default();
    assert!(
        error.starts_with("schema violation") && error.contains("/data/seq"),
        "{error}"
    );
    assert_eq!(header_of(&dead[0], "ferry-attempts").as_deref(), Some("0"));
    let delivered = target.delivered();
    assert!(!delivered.contains_key("b-1"), "{delivered:?}");
    assert_eq!(target.requests().len(), 3, "g-1, o-1, g-2 once each");

    // A wider contract written while the worker runs applies without a restart.
    std::fs::write(&file, contract(1_000)).expect("contract");
    tokio::time::sleep(Duration::from_secs(7)).await;
    produce(&p, main, "k", &event("b-2", "test.happened", "k", 500)).await;
    target
        .wait_for(Duration::from_secs(60), "b-2", |d| d.contains_key("b-2"))
        .await;

    running
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(
        worker::committed(env, &topics.group, main, 1),
        [Some(6)],
        "every record, the tombstone and the dead letter included, is committed"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_contracts_a_tombstone_is_skipped_and_the_next_record_delivered() {
    let env = require_env!();
    let topics = Topics::create(env, 1, &[], true).await;
    let target = Target::ok().await;
    let p = producer(env);
    let main = topics.main.name.as_str();
    produce_tombstone(&p, main, "k").await;
    produce(&p, main, "k", &event("g-1", "test.happened", "k", 1)).await;
    let mut running = spawn_worker(env, "tombstone", &topics, &target.url, &[]);
    target
        .wait_for(Duration::from_secs(60), "g-1", |d| d.contains_key("g-1"))
        .await;
    running
        .terminate(Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(target.requests().len(), 1);
    assert!(
        read_all(env, &topics.dead_letter_name, 1, Duration::from_secs(5)).is_empty(),
        "a tombstone is not poison"
    );
    assert_eq!(worker::committed(env, &topics.group, main, 1), [Some(2)]);
}
