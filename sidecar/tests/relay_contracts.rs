//! The relay enforcing event contracts (`--contracts-dir`) against real PostgreSQL and Kafka:
//! rows that meet their topic's schema are published in key order, a row that breaks it goes to
//! the dead-letter topic with every violation's path and the rest keeps flowing, and a schema
//! changed on disk takes effect in the running relay. A payload of JSON `null` is a tombstone,
//! which no contract applies to.

#[path = "relay/support.rs"]
mod support;

use std::{collections::HashMap, path::Path, time::Duration};

use ferry_testkit::{ChildProcess, TempPath, TempTopic, TestEnv, require_env};
use serde_json::json;
use support::*;

/// Writes `topic`'s contract file as the operator's ConfigMap would hold it.
fn write_contract(dir: &Path, topic: &str, schema: serde_json::Value) {
    // Written beside, then renamed: a reader never sees half a file (the kubelet swaps a
    // symlink for the same reason).
    let tmp = dir.join(format!(".{topic}.tmp"));
    std::fs::write(&tmp, json!({"jsonSchema": schema}).to_string()).expect("contract written");
    std::fs::rename(&tmp, dir.join(format!("{topic}.json"))).expect("contract in place");
}

/// A topic of `partitions`, a dead-letter topic, an outbox and a contracts directory holding
/// `schema` for the topic.
async fn setup(
    env: &'static TestEnv,
    partitions: i32,
    schema: serde_json::Value,
) -> (TempTopic, TempTopic, TestOutbox, TempPath) {
    let topic = TempTopic::create(env, partitions).await.expect("topic");
    let dlt = TempTopic::create(env, 1).await.expect("dead-letter topic");
    let outbox = TestOutbox::create(env).await;
    let dir = TempPath::new("ferry-contracts");
    std::fs::create_dir_all(&*dir).expect("contracts dir");
    write_contract(&dir, topic.name(), schema);
    (topic, dlt, outbox, dir)
}

/// Starts a relay on `outbox` checking rows against the contracts in `dir`, with poison rows
/// going to `dead_letter_topic`.
fn spawn_checking_relay(
    name: &str,
    env: &TestEnv,
    outbox: &TestOutbox,
    dead_letter_topic: &str,
    dir: &Path,
) -> ChildProcess {
    let dir_arg = dir.display().to_string();
    spawn_relay(
        name,
        env,
        &outbox.url(),
        None,
        &[
            "--dead-letter-topic",
            dead_letter_topic,
            "--idle-poll-interval=100ms",
            "--contracts-dir",
            &dir_arg,
        ],
    )
}

/// Inserts one envelope row of `topic` whose `data` is `data`; returns its id.
async fn insert_data(outbox: &TestOutbox, topic: &str, key: &str, data: serde_json::Value) -> i64 {
    let payload = json!({"schema": "test.v1", "event": "test.happened", "id": format!("{key}-raw"),
                         "ts": 1, "key": key, "data": data});
    outbox
        .client
        .query_one(
            "INSERT INTO outbox (topic, key, payload) VALUES ($1, to_jsonb($2::text), $3::text::jsonb) RETURNING id::int8",
            &[&topic, &key, &payload.to_string()],
        )
        .await
        .expect("insert")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_breaking_their_contract_are_dead_lettered_with_the_path_and_a_new_schema_applies_live()
 {
    let env = require_env!();
    let (topic, dlt, outbox, dir) = setup(
        env,
        2,
        json!({"type": "object", "required": ["key", "seq"],
               "properties": {"seq": {"type": "integer", "minimum": 0}}}),
    )
    .await;

    let good: Vec<(String, i64)> = (0..4)
        .flat_map(|s| (0..5).map(move |k| (format!("c-{k}"), s)))
        .collect();
    outbox.insert(topic.name(), &good[..10]).await;
    let broken = insert_data(
        &outbox,
        topic.name(),
        "c-9",
        json!({"key": "c-9", "seq": "three"}),
    )
    .await;
    outbox.insert(topic.name(), &good[10..]).await;

    let relay = spawn_checking_relay("relay-contracts", env, &outbox, dlt.name(), &dir);
    let mut per_key: HashMap<String, i64> = HashMap::new();
    for (k, _) in &good {
        *per_key.entry(k.clone()).or_default() += 1;
    }
    let records = read_distinct(env, topic.name(), good.len(), Duration::from_secs(60)).await;
    check_per_key_order(&records, &per_key);
    let dead = read_topic(env, dlt.name(), Duration::from_secs(30), |r| !r.is_empty()).await;
    assert_eq!(dead.len(), 1, "only the broken row: {dead:?}");
    assert_eq!(
        dead[0].headers.get("ferry-outbox-id"),
        Some(&broken.to_string())
    );
    assert_eq!(
        dead[0].headers.get("ferry-error-kind").map(String::as_str),
        Some("schema_violation")
    );
    let reason = dead[0]
        .headers
        .get("ferry-error")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.contains("/data/seq"),
        "the reason names the path: {reason}"
    );

    // A new schema (seq at most 10) reaches the running relay: after the reload, a row with
    // seq 50 is refused, one with seq 5 flows.
    write_contract(
        &dir,
        topic.name(),
        json!({"type": "object", "required": ["key", "seq"],
               "properties": {"seq": {"type": "integer", "minimum": 0, "maximum": 10}}}),
    );
    // Two reload rounds of the relay (every 5 s): the wait for the new schema, not a timing.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let too_big = insert_data(
        &outbox,
        topic.name(),
        "c-8",
        json!({"key": "c-8", "seq": 50}),
    )
    .await;
    outbox.insert(topic.name(), &[("c-8".to_owned(), 5)]).await;
    let dead = read_topic(env, dlt.name(), Duration::from_secs(30), |r| r.len() >= 2).await;
    assert_eq!(
        dead.last().and_then(|r| r.headers.get("ferry-outbox-id")),
        Some(&too_big.to_string()),
        "the row the new schema refuses: {dead:?}"
    );
    let records = read_distinct(env, topic.name(), good.len() + 1, Duration::from_secs(30)).await;
    assert!(
        records
            .iter()
            .any(|r| r.key_seq() == Some(("c-8".to_owned(), 5))),
        "the row the new schema accepts is published"
    );
    outbox
        .stop_once_settled(relay, Duration::from_secs(30))
        .await;
}

/// Inserts a tombstone row (payload JSON `null`) of `topic`, keyed `key` (SQL NULL: no key).
async fn insert_tombstone(outbox: &TestOutbox, topic: &str, key: Option<&str>) -> i64 {
    outbox
        .client
        .query_one(
            "INSERT INTO outbox (topic, key, payload) VALUES ($1, to_jsonb($2::text), 'null'::jsonb) RETURNING id::int8",
            &[&topic, &key],
        )
        .await
        .expect("insert")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_payload_publishes_a_tombstone_in_its_keys_order_past_the_contract() {
    let env = require_env!();
    // A contract no tombstone could meet: the check must skip it.
    let (topic, dlt, outbox, dir) = setup(
        env,
        1,
        json!({"type": "object", "required": ["key", "seq"]}),
    )
    .await;
    outbox.insert(topic.name(), &[("u-1".to_owned(), 0)]).await;
    insert_tombstone(&outbox, topic.name(), Some("u-1")).await;
    let keyless = insert_tombstone(&outbox, topic.name(), None).await;
    outbox.insert(topic.name(), &[("u-1".to_owned(), 1)]).await;

    let relay = spawn_checking_relay("relay-tombstone", env, &outbox, dlt.name(), &dir);
    let records = read_topic(env, topic.name(), Duration::from_secs(60), |r| r.len() >= 3).await;
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.key.clone(), r.raw.is_some(), r.key_seq().map(|(_, s)| s)))
        .collect();
    let u1 = Some("u-1".to_owned());
    assert_eq!(
        seen,
        [
            (u1.clone(), true, Some(0)),
            (u1.clone(), false, None),
            (u1, true, Some(1))
        ],
        "the tombstone (key, no value) between the key's events: {records:?}"
    );
    assert!(
        !records[1].headers.contains_key("ferry-event-id"),
        "a tombstone names no event: {:?}",
        records[1].headers
    );
    let dead = read_topic(env, dlt.name(), Duration::from_secs(30), |r| !r.is_empty()).await;
    assert_eq!(dead.len(), 1, "only the keyless tombstone: {dead:?}");
    assert_eq!(
        dead[0].headers.get("ferry-outbox-id"),
        Some(&keyless.to_string())
    );
    assert_eq!(
        dead[0].headers.get("ferry-error-kind").map(String::as_str),
        Some("bad_column")
    );
    outbox
        .stop_once_settled(relay, Duration::from_secs(30))
        .await;
}
