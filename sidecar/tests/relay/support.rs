//! Helpers shared by the relay's real-service tests: an outbox table in a schema of its own,
//! a writer of envelope rows, the real relay binary as a child process, and a reader that
//! collects what reached a Kafka topic.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ferry_testkit::{ChildProcess, TempSchema, TestEnv};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    message::Headers,
};
use serde_json::Value;
use tokio_postgres::Client;

// The relay tests' `use support::*` finds these in the test kit, their one home.
#[allow(unused_imports)]
pub use ferry_testkit::{Grant, free_port, wait_for};

pub use ferry_testkit::OUTBOX_SQL;

/// An outbox table of its own for one test.
pub struct TestOutbox {
    pub schema: TempSchema,
    pub client: Client,
}

impl TestOutbox {
    /// Creates the schema and the table.
    pub async fn create(env: &TestEnv) -> TestOutbox {
        let schema = TempSchema::create(env).await.expect("schema");
        let client = schema.connect().await.expect("connect");
        client
            .batch_execute(OUTBOX_SQL)
            .await
            .expect("create outbox");
        TestOutbox { schema, client }
    }

    /// The DSN whose `search_path` finds the table.
    pub fn url(&self) -> String {
        self.schema.url()
    }

    /// Inserts one row per `(key, seq)` in one transaction; returns the ids.
    pub async fn insert(&self, topic: &str, rows: &[(String, i64)]) -> Vec<i64> {
        insert(&self.client, topic, rows, 0).await.expect("insert")
    }

    /// Waits (up to `within`) until every row is published or set aside, then stops `relay`.
    pub async fn stop_once_settled(&self, mut relay: ChildProcess, within: Duration) {
        wait_for("every row settled", within, || async {
            self.unpublished().await == 0
        })
        .await;
        relay
            .terminate(Duration::from_secs(30))
            .await
            .expect("terminate");
    }

    /// Rows not yet marked (nor marked failed).
    pub async fn unpublished(&self) -> i64 {
        self.client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND publish_error IS NULL",
                &[],
            )
            .await
            .expect("count")
            .get(0)
    }

    /// All rows still in the table.
    pub async fn rows(&self) -> i64 {
        self.client
            .query_one("SELECT count(*) FROM outbox", &[])
            .await
            .expect("count")
            .get(0)
    }
}

/// Inserts envelope rows `(key, seq)` for `topic` in one transaction (one statement), with
/// `pad` bytes of filler in `data`; returns the ids in insert order.
pub async fn insert(
    client: &impl tokio_postgres::GenericClient,
    topic: &str,
    rows: &[(String, i64)],
    pad: usize,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let keys: Vec<&str> = rows.iter().map(|(k, _)| k.as_str()).collect();
    let seqs: Vec<i64> = rows.iter().map(|(_, s)| *s).collect();
    let filler = "x".repeat(pad);
    let ids = client
        .query(
            "INSERT INTO outbox (topic, key, payload, headers)
             SELECT $1, to_jsonb(k),
                    jsonb_build_object('schema', 'test.v1', 'event', 'test.happened',
                        'id', k || ':' || s, 'ts', 1, 'key', k,
                        'data', jsonb_build_object('key', k, 'seq', s, 'pad', $4::text)),
                    jsonb_build_object('traceparent', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')
             FROM unnest($2::text[], $3::bigint[]) WITH ORDINALITY AS u(k, s, n)
             ORDER BY n
             RETURNING id::int8",
            &[&topic, &keys, &seqs, &filler],
        )
        .await?;
    Ok(ids.iter().map(|r| r.get(0)).collect())
}

/// Environment variables that point the relay at the test Kafka as `user` (admin if `None`).
pub fn kafka_envs(env: &TestEnv, user: Option<(&str, &str)>) -> Vec<(String, String)> {
    let kafka = match user {
        Some((u, p)) => env.kafka_args_as(u, p),
        None => env.kafka_args(),
    };
    kafka
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The `ferry-sidecar` binary: the one cargo built for these tests, or, in `make bench-relay`
/// (a crate of its own, to which cargo gives no binary of another package), the release
/// binary `$FERRY_SIDECAR_BIN` names.
fn sidecar_binary() -> String {
    match option_env!("CARGO_BIN_EXE_ferry-sidecar") {
        Some(path) => path.to_owned(),
        None => std::env::var("FERRY_SIDECAR_BIN")
            .expect("FERRY_SIDECAR_BIN names the ferry-sidecar binary to run"),
    }
}

/// Starts the real `ferry-sidecar relay` binary against `url` with `extra` flags; logs at
/// `warn` unless `FERRY_LOG` says otherwise.
pub fn spawn_relay(
    name: &str,
    env: &TestEnv,
    url: &str,
    user: Option<(&str, &str)>,
    extra: &[&str],
) -> ChildProcess {
    spawn_relay_with_port(name, env, url, user, free_port(), extra)
}

/// Like [`spawn_relay`] as `user`, setting poison rows aside on `dead_letter_topic` and
/// polling an idle table every 100 ms.
pub fn spawn_relay_dead_lettering(
    name: &str,
    env: &TestEnv,
    url: &str,
    user: Option<(&str, &str)>,
    dead_letter_topic: &str,
) -> ChildProcess {
    spawn_relay(
        name,
        env,
        url,
        user,
        &[
            "--dead-letter-topic",
            dead_letter_topic,
            "--idle-poll-interval=100ms",
        ],
    )
}

/// Like [`spawn_relay`] as `user`, with a telemetry port the caller knows.
pub fn spawn_relay_with_port(
    name: &str,
    env: &TestEnv,
    url: &str,
    user: Option<(&str, &str)>,
    port: u16,
    extra: &[&str],
) -> ChildProcess {
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["relay", "--metrics-addr", addr.as_str()];
    args.extend_from_slice(extra);
    let mut envs = kafka_envs(env, user);
    envs.push(("FERRY_DATABASE_URL".into(), url.to_owned()));
    envs.push((
        "FERRY_LOG".into(),
        std::env::var("FERRY_LOG").unwrap_or_else(|_| "warn".into()),
    ));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ChildProcess::spawn(name, sidecar_binary(), &args, &envs).expect("spawn relay")
}

/// Like [`spawn_relay`] with a telemetry port the caller knows.
pub fn spawn_relay_on(
    name: &str,
    env: &TestEnv,
    url: &str,
    port: u16,
    extra: &[&str],
) -> ChildProcess {
    spawn_relay_with_port(name, env, url, None, port, extra)
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Value>,
    pub raw_len: usize,
    /// The payload's bytes as text, exactly as they reached Kafka.
    pub raw: Option<String>,
    pub headers: HashMap<String, String>,
}

impl Record {
    /// `data.key` and `data.seq` of a test envelope.
    pub fn key_seq(&self) -> Option<(String, i64)> {
        let data = self.payload.as_ref()?.get("data")?;
        Some((
            data.get("key")?.as_str()?.to_owned(),
            data.get("seq")?.as_i64()?,
        ))
    }
}

/// Reads `topic` from the beginning until `done` says so or `timeout` passes.
pub async fn read_topic(
    env: &TestEnv,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: StreamConsumer = {
        let mut config: ClientConfig = env.kafka_config();
        config
            .set("group.id", ferry_testkit::unique_name("relay-test"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        config.create().expect("consumer")
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left.min(Duration::from_millis(500)), consumer.recv()).await {
            Ok(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().and_then(|p| serde_json::from_slice(p).ok()),
                    raw_len: m.payload().map_or(0, <[u8]>::len),
                    raw: m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
                    headers,
                });
            }
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => {}
        }
    }
    records
}

/// GETs `path` from a relay's telemetry server: its body, `None` when it does not answer.
pub async fn metrics_body(port: u16, path: &str) -> Option<String> {
    ferry_testkit::http_get(port, path)
        .await
        .map(|(_, body)| body)
}

/// Checks that every key's records, by first occurrence, carry seq 0, 1, 2, ... in order and
/// that `expected` (key → count) is complete; returns the number of duplicates.
pub fn check_per_key_order(records: &[Record], expected: &HashMap<String, i64>) -> usize {
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut duplicates = 0;
    for r in records {
        let (key, seq) = r.key_seq().expect("a test envelope");
        assert_eq!(
            r.key.as_deref(),
            Some(key.as_str()),
            "Kafka key is the row's key"
        );
        let list = seen.entry(key).or_default();
        if list.contains(&seq) {
            duplicates += 1;
        } else {
            list.push(seq);
        }
    }
    for (key, count) in expected {
        let got = seen.get(key).cloned().unwrap_or_default();
        let want: Vec<i64> = (0..*count).collect();
        assert_eq!(
            got, want,
            "key {key}: first occurrences out of order or missing"
        );
    }
    duplicates
}

/// Checks that every row of `expected` (key → count) arrived, in whatever order: what the
/// relay promises for a topic whose config it may not read (docs/outbox.md, "Refused batches":
/// a row re-sent from a refused batch may land after a later row of its key, once).
pub fn check_complete(records: &[Record], expected: &HashMap<String, i64>) {
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in records {
        let (key, seq) = r.key_seq().expect("a test envelope");
        seen.entry(key).or_default().push(seq);
    }
    for (key, count) in expected {
        let mut got = seen.get(key).cloned().unwrap_or_default();
        got.sort_unstable();
        got.dedup();
        let want: Vec<i64> = (0..*count).collect();
        assert_eq!(got, want, "key {key}: rows missing");
    }
}

/// Reads `topic` until it holds `distinct` different test rows (duplicates do not count),
/// or `timeout` passes.
pub async fn read_distinct(
    env: &TestEnv,
    topic: &str,
    distinct: usize,
    timeout: Duration,
) -> Vec<Record> {
    // Counted incrementally: `done` sees the slice after every new record.
    let mut seen = std::collections::HashSet::new();
    read_topic(env, topic, timeout, move |records| {
        if let Some(key_seq) = records.last().and_then(Record::key_seq) {
            seen.insert(key_seq);
        }
        seen.len() >= distinct
    })
    .await
}

/// The `.ferry/env` user that has no ACL of its own.
pub fn noacl_user(env: &TestEnv) -> (&str, &str) {
    match (
        env.var("FERRY_KAFKA_NOACL_USERNAME"),
        env.var("FERRY_KAFKA_NOACL_PASSWORD"),
    ) {
        (Some(user), Some(password)) => (user, password),
        _ => panic!(".ferry/env has no FERRY_KAFKA_NOACL_* user"),
    }
}

/// The value of the counter or gauge `name` (with its labels, e.g.
/// `ferry_relay_topic_waits_total{reason="denied"}`) on a relay's `/metrics`; 0 if absent.
pub async fn metric(port: u16, name: &str) -> f64 {
    let Some(body) = metrics_body(port, "/metrics").await else {
        return 0.0;
    };
    body.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}
