//! The relay under a write burst on a freshly created outbox table (issue #20), against the
//! real PostgreSQL and Kafka: the rows written while it runs are all published in key order,
//! a late-committing lower id among them too, and its reads walk the partial index in id
//! order instead of fetching the whole backlog and every marked row's entry on each read.

#[path = "relay/support.rs"]
mod support;

use std::{collections::HashMap, time::Duration};

use ferry_testkit::{TempTopic, require_env};
use support::*;
use tokio::sync::Mutex;

/// Serializes this file's tests: an open transaction of one (the late writer) holds back the
/// database's visibility horizon, which changes what the other's reads find in the index.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Keys of the burst; each gets `TRANSACTIONS * ROWS_PER_TRANSACTION / KEYS` rows.
const KEYS: usize = 100;
const ROWS_PER_TRANSACTION: usize = 1_000;

/// Rows `(key, seq)` of burst transaction `tx`, interleaved across keys.
fn burst(tx: usize) -> Vec<(String, i64)> {
    (tx * ROWS_PER_TRANSACTION..(tx + 1) * ROWS_PER_TRANSACTION)
        .map(|i| (format!("b-{}", i % KEYS), (i / KEYS) as i64))
        .collect()
}

/// A fresh table (without statistics, as a service's new outbox is), the relay running, and a
/// burst of 20 transactions of 1,000 rows; a transaction holding a lower id than most of the
/// burst commits in the middle of it, and its key's next row follows. Everything reaches
/// Kafka once, each key in order, the late row before its key's next.
async fn a_burst_is_published_whole_and_in_key_order(extra: &[&str]) {
    let env = require_env!();
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let mut args = vec!["--idle-poll-interval=100ms"];
    args.extend_from_slice(extra);
    let relay = spawn_relay("relay-burst", env, &outbox.url(), None, &args);

    let mut late = outbox.schema.connect().await.expect("connect");
    let late_tx = late.transaction().await.expect("begin");
    let low = insert(&late_tx, topic.name(), &[("late".into(), 0)], 0)
        .await
        .expect("late insert")[0];
    let transactions = 20;
    let mut late_tx = Some(late_tx);
    for tx in 0..transactions {
        let ids = outbox.insert(topic.name(), &burst(tx)).await;
        assert!(low < ids[0], "the late transaction holds the lower id");
        if tx == transactions / 2 {
            // The relay has read past the open transaction's id by now.
            wait_for(
                "the relay to publish past the open transaction",
                Duration::from_secs(60),
                || async {
                    outbox
                        .client
                        .query_one(
                            "SELECT count(*) < $1 FROM outbox WHERE published_at IS NULL AND publish_error IS NULL",
                            &[&((ROWS_PER_TRANSACTION * transactions / 2) as i64)],
                        )
                        .await
                        .expect("count")
                        .get::<_, bool>(0)
                },
            )
            .await;
            late_tx
                .take()
                .expect("open")
                .commit()
                .await
                .expect("late commit");
            outbox.insert(topic.name(), &[("late".into(), 1)]).await;
        }
    }
    outbox
        .stop_once_settled(relay, Duration::from_secs(120))
        .await;

    let total = transactions * ROWS_PER_TRANSACTION + 2;
    let records = read_distinct(env, topic.name(), total, Duration::from_secs(120)).await;
    let mut expected: HashMap<String, i64> = (0..KEYS)
        .map(|k| {
            (
                format!("b-{k}"),
                (transactions * ROWS_PER_TRANSACTION / KEYS) as i64,
            )
        })
        .collect();
    expected.insert("late".into(), 2);
    let duplicates = check_per_key_order(&records, &expected);
    assert_eq!(duplicates, 0, "no crash, so no duplicates");
}

#[tokio::test]
async fn a_burst_is_published_whole_and_in_key_order_marking_published_at() {
    a_burst_is_published_whole_and_in_key_order(&[]).await;
}

#[tokio::test]
async fn a_burst_is_published_whole_and_in_key_order_deleting_published_rows() {
    a_burst_is_published_whole_and_in_key_order(&["--delete-published"]).await;
}

/// On a table without statistics the relay's read used to be a bitmap scan of the whole
/// partial index and a sort: every read, even an idle poll of an empty table, fetched every
/// unpublished row and the entry of every row marked since the last vacuum (bitmap scans
/// never mark index entries dead). Now it is an ordered index scan that stops at its limit
/// and marks the entries of marked rows dead as it passes them, so the partial index hands
/// out each entry a few times at most. Counted by PostgreSQL (`idx_tup_read`), not timed.
#[tokio::test]
async fn reads_of_a_fresh_table_walk_the_partial_index_in_id_order() {
    let env = require_env!();
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    // No analyze during the test either: the table keeps having no statistics.
    outbox
        .client
        .batch_execute("ALTER TABLE outbox SET (autovacuum_enabled = off)")
        .await
        .expect("autovacuum off");
    let mut relay = spawn_relay(
        "relay-fresh-reads",
        env,
        &outbox.url(),
        None,
        &["--idle-poll-interval=100ms"],
    );
    let transactions = 10;
    for tx in 0..transactions {
        outbox.insert(topic.name(), &burst(tx)).await;
    }
    wait_for("every row published", Duration::from_secs(120), || async {
        outbox.unpublished().await == 0
    })
    .await;
    // Idle polls of the drained table (about 30 at 100 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    // A backend reports its counters at exit at the latest: wait until the relay's sessions
    // (whose last statements all name published_at; this file's tests run one at a time)
    // have ended.
    wait_for(
        "the relay's sessions to end",
        Duration::from_secs(30),
        || async {
            outbox
                .client
                .query_one(
                    "SELECT count(*) = 0 FROM pg_stat_activity
                 WHERE pid <> pg_backend_pid() AND query LIKE '%published_at%'",
                    &[],
                )
                .await
                .expect("sessions")
                .get::<_, bool>(0)
        },
    )
    .await;
    let read: i64 = outbox
        .client
        .query_one(
            "SELECT idx_tup_read FROM pg_stat_user_indexes
             WHERE relid = 'outbox'::regclass AND indexrelname = 'outbox_unpublished'",
            &[],
        )
        .await
        .expect("index stats")
        .get(0);
    let rows = (transactions * ROWS_PER_TRANSACTION) as i64;
    eprintln!("the partial index handed out {read} entries for {rows} rows");
    // Each row's entry: once when read, again while skipped as in flight by the next reads
    // (up to a batch each) and while its mark is not yet dead to every snapshot: about
    // 6.5 entries a row here. The old plan handed out about 60 a row (592,544 for 10,000),
    // most of them in the idle polls after the drain; 20 leaves room on both sides.
    assert!(
        read <= 20 * rows,
        "the partial index handed out {read} entries for {rows} rows: reads rescan the backlog and marked rows' entries"
    );
}
