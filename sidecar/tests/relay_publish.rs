//! The relay against the real PostgreSQL and Kafka: no gaps, poison rows, shutdown,
//! retention, wake-ups and telemetry (ACL denials and refused batches: relay_hardening.rs).
//! Every test has its own table and topics.

#[path = "relay/support.rs"]
mod support;

use std::{collections::HashSet, time::Duration};

use clap::Parser;
use ferry_sidecar::relay::RelayArgs;
use ferry_testkit::{TempTopic, TestEnv, assert_chart_metrics_exposed, require_env};
use support::*;

/// Rows `(key, seq)` for `keys` keys with `per_key` rows each, interleaved across keys.
fn rows(prefix: &str, keys: usize, per_key: i64) -> Vec<(String, i64)> {
    (0..per_key)
        .flat_map(|s| (0..keys).map(move |k| (format!("{prefix}-{k}"), s)))
        .collect()
}

#[tokio::test]
async fn a_transaction_that_commits_late_with_a_lower_id_is_still_published() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let relay = spawn_relay(
        "relay-gap",
        env,
        &outbox.url(),
        None,
        &["--idle-poll-interval=100ms"],
    );

    // Transaction A takes the lower id and stays open.
    let mut late = outbox.schema.connect().await.expect("connect");
    let tx = late.transaction().await.expect("begin");
    let low = insert(&tx, topic.name(), &[("late".into(), 0)], 0)
        .await
        .expect("insert")[0];
    // Transaction B takes a higher id and commits first; the relay publishes it.
    let high = outbox.insert(topic.name(), &[("early".into(), 0)]).await[0];
    assert!(
        low < high,
        "the late transaction holds the lower id ({low} < {high})"
    );
    let records = read_topic(env, topic.name(), Duration::from_secs(30), |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some("early"));
    // Let the relay poll past the gap a few times, then commit A.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.commit().await.expect("commit");

    let records = read_topic(env, topic.name(), Duration::from_secs(30), |r| r.len() >= 2).await;
    let keys: Vec<_> = records.iter().filter_map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        vec!["early".to_owned(), "late".to_owned()],
        "the lower id is published after all"
    );
    // Headers: event id and the trace context of the row.
    assert_eq!(
        records[1].headers.get("ferry-event-id").map(String::as_str),
        Some("late:0")
    );
    assert!(records[1].headers.contains_key("traceparent"));
    outbox
        .stop_once_settled(relay, Duration::from_secs(30))
        .await;
}

/// The words each poison kind's reason text contains.
fn phrase(kind: &str) -> &'static str {
    match kind {
        "not_envelope" => "not an envelope",
        "missing_topic" => "missing topic",
        "too_large" => "too large",
        other => panic!("unknown poison kind {other}"),
    }
}

/// Inserts one row of each poison kind between good rows of the same key; returns the
/// poison row ids by kind and the good `(key, seq)` rows.
async fn insert_poison(
    outbox: &TestOutbox,
    topic: &str,
) -> (Vec<(i64, &'static str)>, Vec<(String, i64)>) {
    let c = &outbox.client;
    let mut good = Vec::new();
    let mut poison = Vec::new();
    let mut seq = 0;
    let mut good_row = |good: &mut Vec<(String, i64)>| {
        let row = ("p".to_owned(), seq);
        seq += 1;
        good.push(row.clone());
        row
    };
    let one = |sql: &'static str| async move {
        let row = c.query_one(sql, &[&topic]).await.expect("insert poison");
        row.get::<_, i64>(0)
    };
    outbox.insert(topic, &[good_row(&mut good)]).await;
    poison.push((
        one("INSERT INTO outbox (topic, key, payload) VALUES ($1, '\"p\"', '{\"hello\":\"world\"}') RETURNING id").await,
        "not_envelope",
    ));
    outbox.insert(topic, &[good_row(&mut good)]).await;
    poison.push((
        one("INSERT INTO outbox (topic, key, payload) SELECT NULL::text, '\"p\"', '{\"schema\":\"s\",\"event\":\"e\",\"id\":\"no-topic\",\"ts\":1}' WHERE $1::text IS NOT NULL RETURNING id").await,
        "missing_topic",
    ));
    outbox.insert(topic, &[good_row(&mut good)]).await;
    poison.push((
        one("INSERT INTO outbox (topic, key, payload) VALUES ($1, '\"p\"', jsonb_build_object('schema','s','event','e','id','big','ts',1,'data', repeat('x', 1200000))) RETURNING id").await,
        "too_large",
    ));
    outbox.insert(topic, &[good_row(&mut good)]).await;
    (poison, good)
}

#[tokio::test]
async fn poison_rows_go_to_the_dead_letter_topic_with_their_reason_while_others_flow() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let dlt = TempTopic::create(env, 1).await.expect("dead-letter topic");
    let outbox = TestOutbox::create(env).await;
    let (poison, good) = insert_poison(&outbox, topic.name()).await;
    let mut relay =
        spawn_relay_dead_lettering("relay-poison-dlt", env, &outbox.url(), None, dlt.name());

    let published = read_topic(env, topic.name(), Duration::from_secs(60), |r| {
        r.len() >= good.len()
    })
    .await;
    let got: Vec<_> = published.iter().filter_map(Record::key_seq).collect();
    assert_eq!(
        got, good,
        "every good row, in order, around the poison ones"
    );
    let dead = read_topic(env, dlt.name(), Duration::from_secs(60), |r| {
        r.len() >= poison.len()
    })
    .await;
    assert_eq!(
        dead.len(),
        poison.len(),
        "one dead-letter record per poison row"
    );
    for (id, kind) in &poison {
        let record = dead
            .iter()
            .find(|r| r.headers.get("ferry-outbox-id") == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("row {id} ({kind}) is not in the dead-letter topic"));
        assert_eq!(
            record.headers.get("ferry-error-kind").map(String::as_str),
            Some(*kind)
        );
        let reason = record
            .headers
            .get("ferry-error")
            .expect("ferry-error header");
        let expected = phrase(kind);
        assert!(
            reason.contains(expected),
            "{kind}: ferry-error {reason:?} names the reason"
        );
        if *kind == "too_large" {
            assert_eq!(record.raw_len, 0, "a too-large payload is not copied");
        } else {
            assert!(record.raw_len > 0, "{kind}: the payload is kept");
        }
    }
    wait_for("all rows marked", Duration::from_secs(10), || async {
        outbox.unpublished().await == 0
    })
    .await;
    let failed: Vec<i64> = outbox
        .client
        .query("SELECT id FROM outbox WHERE publish_error IS NOT NULL", &[])
        .await
        .expect("failed rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let kept: Vec<i64> = poison
        .iter()
        .filter(|(_, kind)| *kind == "too_large")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        failed, kept,
        "dead-lettered rows are resolved; only the too-large one, whose copy has no payload, is kept as failed"
    );
    relay
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
}

#[tokio::test]
async fn without_a_dead_letter_topic_poison_rows_are_marked_failed_with_the_reason() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let (poison, good) = insert_poison(&outbox, topic.name()).await;
    let mut relay = spawn_relay(
        "relay-poison-mark",
        env,
        &outbox.url(),
        None,
        &["--idle-poll-interval=100ms"],
    );

    let published = read_topic(env, topic.name(), Duration::from_secs(60), |r| {
        r.len() >= good.len()
    })
    .await;
    let got: Vec<_> = published.iter().filter_map(Record::key_seq).collect();
    assert_eq!(
        got, good,
        "every good row, in order, around the poison ones"
    );
    wait_for("all rows settled", Duration::from_secs(20), || async {
        outbox.unpublished().await == 0
    })
    .await;
    for (id, kind) in &poison {
        let row = outbox
            .client
            .query_one(
                "SELECT publish_error, published_at IS NULL FROM outbox WHERE id = $1",
                &[id],
            )
            .await
            .expect("row");
        let reason: Option<String> = row.get(0);
        let reason = reason.unwrap_or_else(|| panic!("row {id} ({kind}) has no publish_error"));
        assert!(reason.contains(phrase(kind)), "{kind}: {reason:?}");
        assert!(
            row.get::<_, bool>(1),
            "a failed row is not marked published"
        );
    }
    relay
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
}

#[tokio::test]
async fn sigterm_while_busy_marks_nothing_that_was_not_delivered() {
    let env = require_env!();
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    for chunk in rows("s", 100, 300).chunks(5_000) {
        outbox.insert(topic.name(), chunk).await;
    }
    let mut relay = spawn_relay(
        "relay-sigterm",
        env,
        &outbox.url(),
        None,
        &["--batch-size=1000"],
    );
    wait_for("the relay to be busy", Duration::from_secs(30), || async {
        outbox.unpublished().await < 30_000
    })
    .await;
    let status = relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    let status = status.expect("the relay exits by itself within the grace period");
    assert!(status.success(), "clean exit: {status}");

    let marked: HashSet<(String, i64)> = outbox
        .client
        .query("SELECT key #>> '{}', (payload -> 'data' ->> 'seq')::bigint FROM outbox WHERE published_at IS NOT NULL", &[])
        .await
        .expect("marked rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        !marked.is_empty() && marked.len() < 30_000,
        "stopped mid-stream ({} marked)",
        marked.len()
    );
    let records = read_distinct(env, topic.name(), marked.len(), Duration::from_secs(60)).await;
    let delivered: HashSet<(String, i64)> = records.iter().filter_map(Record::key_seq).collect();
    let missing: Vec<_> = marked.difference(&delivered).take(5).collect();
    assert!(missing.is_empty(), "marked but not in Kafka: {missing:?}");
}

#[tokio::test]
async fn published_rows_are_deleted_after_the_retention_or_at_once_and_telemetry_reports() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let retained = TestOutbox::create(env).await;
    let deleted = TestOutbox::create(env).await;
    let port = free_port();
    let mut with_retention = spawn_relay_on(
        "relay-retention",
        env,
        &retained.url(),
        port,
        &["--published-retention=2s", "--idle-poll-interval=100ms"],
    );
    let mut deleting = spawn_relay(
        "relay-delete",
        env,
        &deleted.url(),
        None,
        &["--delete-published", "--idle-poll-interval=100ms"],
    );
    retained.insert(topic.name(), &rows("r", 10, 10)).await;
    deleted.insert(topic.name(), &rows("x", 10, 10)).await;

    // Marked first (the rows are still there, published) ...
    wait_for("retained rows marked", Duration::from_secs(30), || async {
        retained.unpublished().await == 0
    })
    .await;
    assert!(
        retained.rows().await > 0,
        "marked rows stay until the retention passes"
    );
    let metrics = metrics_body(port, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("ferry_relay_published_total 100"),
        "{metrics}"
    );
    assert!(metrics.contains("ferry_relay_leader 1"), "{metrics}");
    assert!(metrics.contains("ferry_relay_backlog_rows"), "{metrics}");
    // Every relay metric the chart's alerts and dashboard query is one this relay exposes.
    assert_chart_metrics_exposed("ferry_relay_", &metrics);
    assert!(
        metrics.contains("ferry_relay_batch_duration_seconds_count"),
        "{metrics}"
    );
    assert_eq!(
        ferry_testkit::http_get(port, "/healthz")
            .await
            .map(|(status, _)| status),
        Some(200),
        "healthz"
    );
    assert_eq!(
        ferry_testkit::http_get(port, "/readyz")
            .await
            .map(|(status, _)| status),
        Some(200),
        "readyz"
    );
    // ... then deleted once older than the retention.
    wait_for(
        "retention to delete the rows",
        Duration::from_secs(30),
        || async { retained.rows().await == 0 },
    )
    .await;
    wait_for(
        "delete-published to empty the table",
        Duration::from_secs(30),
        || async { deleted.rows().await == 0 },
    )
    .await;
    let records = read_topic(env, topic.name(), Duration::from_secs(30), |r| {
        r.len() >= 200
    })
    .await;
    assert_eq!(
        records.len(),
        200,
        "every row reached Kafka before it left the table"
    );
    with_retention
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
    deleting
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
}

#[tokio::test]
async fn notify_wakes_an_idle_relay_at_once() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    outbox
        .client
        .batch_execute(include_str!("relay/notify_trigger.sql"))
        .await
        .expect("trigger from docs/outbox.md");
    // An idle interval far longer than the test: only NOTIFY can wake the relay in time.
    let mut relay = spawn_relay(
        "relay-notify",
        env,
        &outbox.url(),
        None,
        &["--notify", "--idle-poll-interval=1h"],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    outbox.insert(topic.name(), &[("n".into(), 0)]).await;
    let records = read_topic(env, topic.name(), Duration::from_secs(10), |r| {
        !r.is_empty()
    })
    .await;
    assert_eq!(
        records.len(),
        1,
        "published within seconds although the idle interval is an hour"
    );
    relay
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
}

fn args(env: &TestEnv, url: &str, extra: &[&str]) -> RelayArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }
    let bootstrap = format!(
        "--kafka-bootstrap={}",
        env.var("FERRY_KAFKA_BOOTSTRAP").unwrap_or_default()
    );
    let database = format!("--database-url={url}");
    let mut all = vec![
        "relay",
        bootstrap.as_str(),
        database.as_str(),
        "--metrics-addr=127.0.0.1:0",
    ];
    all.extend_from_slice(extra);
    let mut relay = Cli::try_parse_from(all).expect("valid flags").relay;
    relay.kafka = env.kafka_args();
    relay
}

#[tokio::test]
async fn a_misshapen_table_is_refused_at_start_with_what_is_missing() {
    let env = require_env!();
    let outbox = TestOutbox::create(env).await;
    outbox
        .client
        .batch_execute("CREATE TABLE django_outbox (id bigserial PRIMARY KEY, topic text, key jsonb, payload jsonb, created_at timestamptz)")
        .await
        .expect("table");
    let run = |extra: &'static [&'static str]| {
        ferry_sidecar::relay::run(args(env, &outbox.url(), extra), std::future::pending())
    };
    let timeout = Duration::from_secs(20);

    let err = tokio::time::timeout(timeout, run(&["--outbox-table=django_outbox"]))
        .await
        .expect("fails fast")
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("headers") && text.contains("published_at") && !text.contains("payload"),
        "{text}"
    );

    let err = tokio::time::timeout(timeout, run(&["--outbox-table=no_such_outbox"]))
        .await
        .expect("fails fast")
        .expect_err("refused");
    assert!(err.to_string().contains("does not exist"), "{err}");

    outbox
        .client
        .batch_execute("ALTER TABLE outbox DROP COLUMN publish_error")
        .await
        .expect("alter");
    let err = tokio::time::timeout(timeout, run(&[]))
        .await
        .expect("fails fast")
        .expect_err("refused");
    assert!(err.to_string().contains("publish_error"), "{err}");
}
