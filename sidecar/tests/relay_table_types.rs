//! The outbox table's column *types*, against the real PostgreSQL: an older Django project's
//! table (`integer` id, `varchar` topic, `timestamp` without time zone) is published like the
//! reference one, a `uuid` id is refused at start with a message naming it, and every base
//! type PostgreSQL offers, in every column, is either read correctly or refused by name —
//! never a panic.

#[path = "relay/support.rs"]
mod support;

use std::time::Duration;

use clap::Parser;
use ferry_sidecar::relay::{
    RelayArgs,
    outbox::{self, Outbox},
    session,
};
use ferry_testkit::{TempTopic, TestEnv, require_env};
use support::*;

fn args(env: &TestEnv, url: &str, extra: &[&str]) -> RelayArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }
    let database = format!("--database-url={url}");
    let mut all = vec![
        "relay",
        "--kafka-bootstrap=unused:9092",
        database.as_str(),
        "--metrics-addr=127.0.0.1:0",
    ];
    all.extend_from_slice(extra);
    let mut relay = Cli::try_parse_from(all).expect("valid flags").relay;
    relay.kafka = env.kafka_args();
    relay
}

/// A Django `Outbox` model of an older project: `AutoField` id (`serial`, an `integer`),
/// `CharField` topic and error, naive `DateTimeField`s.
const DJANGO_OLD_SQL: &str = "
CREATE TABLE outbox (
    id            serial PRIMARY KEY,
    topic         varchar(200) NOT NULL,
    key           jsonb,
    payload       jsonb,
    headers       jsonb,
    created_at    timestamp NOT NULL DEFAULT now(),
    published_at  timestamp NULL,
    publish_error varchar(40) NULL
);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integer_id_table_of_an_older_django_project_is_published_in_order() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let schema = ferry_testkit::TempSchema::create(env)
        .await
        .expect("schema");
    let client = schema.connect().await.expect("connect");
    client.batch_execute(DJANGO_OLD_SQL).await.expect("table");
    let rows: Vec<(String, i64)> = (0..5)
        .flat_map(|s| (0..4).map(move |k| (format!("dj-{k}"), s)))
        .collect();
    insert(&client, topic.name(), &rows, 0)
        .await
        .expect("insert");
    let poison: i32 = client
        .query_one(
            "INSERT INTO outbox (topic, key, payload) VALUES ($1, '\"p\"', '{\"not\":\"an envelope\"}') RETURNING id",
            &[&topic.name()],
        )
        .await
        .expect("insert poison")
        .get(0);
    let mut relay = spawn_relay(
        "relay-django-int",
        env,
        &schema.url(),
        None,
        &["--idle-poll-interval=100ms"],
    );
    let records = read_distinct(env, topic.name(), rows.len(), Duration::from_secs(60)).await;
    let expected = (0..4).map(|k| (format!("dj-{k}"), 5)).collect();
    check_per_key_order(&records, &expected);
    wait_for("every row settled", Duration::from_secs(30), || async {
        client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND publish_error IS NULL",
                &[],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
            == 0
    })
    .await;
    let reason: Option<String> = client
        .query_one("SELECT publish_error FROM outbox WHERE id = $1", &[&poison])
        .await
        .expect("row")
        .get(0);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("not an envelope")),
        "the reason, cut to the column's length: {reason:?}"
    );
    assert!(
        relay.try_status().expect("status").is_none(),
        "the relay is still running"
    );
    relay
        .terminate(Duration::from_secs(10))
        .await
        .expect("terminate");
}

#[tokio::test]
async fn a_uuid_or_nullable_id_is_refused_at_start_naming_the_column_and_its_type() {
    let env = require_env!();
    let schema = ferry_testkit::TempSchema::create(env)
        .await
        .expect("schema");
    let client = schema.connect().await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE uuid_outbox (id uuid PRIMARY KEY, topic text, key jsonb, payload jsonb, headers jsonb, created_at timestamptz, published_at timestamptz, publish_error text);
             CREATE TABLE loose_outbox (id bigint, topic text, key jsonb, payload jsonb, headers jsonb, created_at timestamptz, published_at timestamptz, publish_error text);",
        )
        .await
        .expect("tables");
    for (table, words) in [
        ("--outbox-table=uuid_outbox", ["id is uuid", "bigint"]),
        (
            "--outbox-table=loose_outbox",
            ["id may be NULL", "NOT NULL"],
        ),
    ] {
        let run =
            ferry_sidecar::relay::run(args(env, &schema.url(), &[table]), std::future::pending());
        let err = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("fails fast")
            .expect_err("refused");
        let text = err.to_string();
        for word in words {
            assert!(text.contains(word), "{table}: {text}");
        }
    }
}

/// The contract's columns with their reference types; the column under test gets another.
const COLUMNS: [(&str, &str); 8] = [
    ("id", "bigint NOT NULL"),
    ("topic", "text"),
    ("key", "jsonb"),
    ("payload", "jsonb"),
    ("headers", "jsonb"),
    ("created_at", "timestamptz"),
    ("published_at", "timestamptz"),
    ("publish_error", "text"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_base_type_in_every_column_is_read_or_refused_by_name() {
    let env = require_env!();
    let schema = ferry_testkit::TempSchema::create(env)
        .await
        .expect("schema");
    let client = schema.connect().await.expect("connect");
    let types: Vec<String> = client
        .query(
            "SELECT oid::regtype::text FROM pg_type WHERE typtype = 'b' AND typisdefined ORDER BY 1",
            &[],
        )
        .await
        .expect("types")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        types.len() > 50,
        "PostgreSQL offers {} base types",
        types.len()
    );
    let (mut accepted, mut refused, mut not_a_column) = (Vec::new(), 0, Vec::new());
    for (column, _) in COLUMNS {
        for ty in &types {
            let definition: Vec<String> = COLUMNS
                .iter()
                .map(|(name, reference)| {
                    if *name != column {
                        format!("{name} {reference}")
                    } else if *name == "id" {
                        format!("{name} {ty} NOT NULL")
                    } else {
                        format!("{name} {ty}")
                    }
                })
                .collect();
            let create = format!("CREATE TABLE shape ({})", definition.join(", "));
            if let Err(e) = client.batch_execute(&create).await {
                not_a_column.push(format!("{ty}: {e}"));
                continue;
            }
            match outbox::inspect(&client, "shape").await {
                Ok(info) => {
                    exercise(&schema.url(), info, column, ty).await;
                    accepted.push(format!("{column} {ty}"));
                }
                Err(e) => {
                    // PostgreSQL prints the type with its modifiers (`bit(1)[]` for `bit[]`).
                    let text = e.to_string();
                    let named = format!("{column} is {}", ty.trim_end_matches("[]"));
                    assert!(
                        text.contains(&named),
                        "{column} {ty}: the refusal names the column and its type: {text}"
                    );
                    refused += 1;
                }
            }
            client
                .batch_execute("DROP TABLE shape")
                .await
                .expect("drop");
        }
    }
    eprintln!(
        "{} accepted ({accepted:?}), {refused} refused, {} not usable as a column: {not_a_column:?}",
        accepted.len(),
        not_a_column.len()
    );
    for must in [
        "id integer",
        "id smallint",
        "topic character varying",
        "key json",
        "created_at timestamp without time zone",
        "publish_error character varying",
    ] {
        assert!(accepted.iter().any(|a| a == must), "{must} is accepted");
    }
    assert!(
        refused > 1_000,
        "most (column, type) pairs are refused: {refused}"
    );
}

/// Runs every statement of the relay on a table `inspect` accepted, with one row in it.
async fn exercise(url: &str, info: outbox::TableInfo, column: &str, ty: &str) {
    let what = format!("{column} {ty}");
    let session = session::connect(url, None).await.expect("connect");
    session
        .client
        .batch_execute(
            "INSERT INTO shape (id, topic, key, payload, headers, created_at) VALUES \
             (1, 't', '\"k\"', '{\"schema\":\"s\",\"event\":\"e\",\"id\":\"1\",\"ts\":1}', '{}', now())",
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: insert: {e}"));
    let outbox = Outbox::prepare(session.client, info, false)
        .await
        .unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
    let rows = outbox
        .fetch(10, &[], &[])
        .await
        .unwrap_or_else(|e| panic!("{what}: fetch: {e}"));
    assert_eq!(rows.len(), 1, "{what}");
    assert_eq!(rows[0].id, 1, "{what}");
    assert_eq!(rows[0].topic.as_deref(), Some("t"), "{what}");
    outbox
        .fetch(10, &["t\u{1f}\"x\"".to_owned()], &[2])
        .await
        .unwrap_or_else(|e| panic!("{what}: fetch with skips: {e}"));
    outbox
        .mark_failed(&[(
            1,
            "a reason longer than any short varchar column takes".into(),
        )])
        .await
        .unwrap_or_else(|e| panic!("{what}: mark failed: {e}"));
    assert_eq!(
        outbox
            .mark_published(&[1])
            .await
            .unwrap_or_else(|e| panic!("{what}: mark: {e}")),
        1,
        "{what}"
    );
    outbox
        .backlog()
        .await
        .unwrap_or_else(|e| panic!("{what}: backlog: {e}"));
    outbox
        .delete_published_before(Duration::from_secs(3_600))
        .await
        .unwrap_or_else(|e| panic!("{what}: retention: {e}"));
}
