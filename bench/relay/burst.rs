//! The burst case of `make bench-relay` (issue #20): the relay already running on a freshly
//! created outbox table (the recommended partial index, no statistics yet), and a service
//! writing 100,000 rows in 1,000-row transactions as fast as it can. Measured: the writer's
//! own time, seconds from the first insert until the relay reports the last row published,
//! and what PostgreSQL's statistics say the table's index scans fetched meanwhile; beside it
//! the same 100,000 rows pre-filled (and vacuumed) before the relay starts, in the same run.

use std::time::{Duration, Instant};

use ferry_testkit::{TestEnv, free_port};
use tokio_postgres::Client;

use crate::support::{TestOutbox, insert, metric, spawn_relay_on, wait_for};

/// Rows in the burst (issue #20).
pub const BURST_ROWS: usize = 100_000;
/// Rows per writer transaction (issue #20).
const BURST_TX_ROWS: usize = 1_000;

/// What one run of a case measured.
pub struct Drain {
    /// The writer's own time for the whole burst (zero for a pre-filled table).
    pub writer: Duration,
    /// From the first insert (pre-filled: from the relay's start) to the last row published.
    pub drain: Duration,
    /// `pg_stat_user_tables.idx_tup_fetch`: heap tuples fetched by index scans.
    pub idx_tup_fetch: i64,
    /// `pg_stat_user_indexes.idx_tup_read` of the partial index: index entries it returned.
    pub partial_index_reads: i64,
    /// Index scans of the table (`idx_scan`): the reads, the marks and the probes.
    pub idx_scan: i64,
    /// Autovacuum runs on the table during the case.
    pub autovacuums: i64,
    /// Autoanalyze runs on the table during the case (each re-plans the relay's read).
    pub autoanalyzes: i64,
}

impl std::fmt::Display for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writer {:5.2} s, drained {:6.2} s; index tuples fetched {:>10} (partial index read {:>10}, {} index scans), autovacuum {} autoanalyze {}",
            self.writer.as_secs_f64(),
            self.drain.as_secs_f64(),
            self.idx_tup_fetch,
            self.partial_index_reads,
            self.idx_scan,
            self.autovacuums,
            self.autoanalyzes,
        )
    }
}

/// The statistics PostgreSQL keeps for the table `outbox` of the client's schema.
async fn table_stats(client: &Client) -> (i64, i64, i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT coalesce(t.idx_tup_fetch, 0), coalesce(i.idx_tup_read, 0), coalesce(t.idx_scan, 0),
                    t.autovacuum_count, t.autoanalyze_count
             FROM pg_stat_user_tables t
             LEFT JOIN pg_stat_user_indexes i ON i.relid = t.relid AND i.indexrelname = 'outbox_unpublished'
             WHERE t.relid = 'outbox'::regclass",
            &[],
        )
        .await
        .expect("table stats");
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

fn burst_rows(tx: usize) -> Vec<(String, i64)> {
    (tx * BURST_TX_ROWS..(tx + 1) * BURST_TX_ROWS)
        .map(|i| (format!("k{}", i % 1_000), (i / 1_000) as i64))
        .collect()
}

/// Waits until the relay on `port` reports `rows` published; panics after 10 minutes.
async fn published(port: u16, rows: usize, from: Instant) -> Duration {
    loop {
        if metric(port, "ferry_relay_published_total").await >= rows as f64 {
            return from.elapsed();
        }
        assert!(
            from.elapsed() < Duration::from_secs(600),
            "drain took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One case on a fresh table: `prefill` writes the rows before the relay starts (and vacuums
/// and analyzes them), else the relay starts first and the burst is written while it runs.
pub async fn run(env: &TestEnv, topic: &str, pad: usize, prefill: bool, extra: &[&str]) -> Drain {
    let outbox = TestOutbox::create(env).await;
    if prefill {
        for tx in 0..BURST_ROWS / BURST_TX_ROWS {
            insert(&outbox.client, topic, &burst_rows(tx), pad)
                .await
                .expect("fill");
        }
        outbox
            .client
            .batch_execute("VACUUM ANALYZE outbox")
            .await
            .expect("vacuum");
    }
    let before = table_stats(&outbox.client).await;
    let port = free_port();
    let mut args = vec!["--idle-poll-interval=1s"];
    args.extend_from_slice(extra);
    let mut relay = spawn_relay_on("relay-burst", env, &outbox.url(), port, &args);
    // Leading (ready) and polling the empty table before the first insert.
    let ready = Instant::now();
    while metric(port, "ferry_relay_leader").await < 1.0 {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "relay not leading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let mut writer = Duration::ZERO;
    if !prefill {
        for tx in 0..BURST_ROWS / BURST_TX_ROWS {
            insert(&outbox.client, topic, &burst_rows(tx), pad)
                .await
                .expect("burst insert");
        }
        writer = started.elapsed();
    }
    let drain = published(port, BURST_ROWS, started).await;
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    // A backend reports its statistics at exit at the latest: wait until the relay's
    // sessions (their last statements all name published_at) have ended. Then check, after
    // reading them, that nothing is left.
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
    let after = table_stats(&outbox.client).await;
    let left: i64 = outbox
        .client
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .expect("left")
        .get(0);
    assert_eq!(left, 0, "rows left unpublished after the drain");
    Drain {
        writer,
        drain,
        idx_tup_fetch: after.0 - before.0,
        partial_index_reads: after.1 - before.1,
        idx_scan: after.2 - before.2,
        autovacuums: after.3 - before.3,
        autoanalyzes: after.4 - before.4,
    }
}

/// Seconds of the sustained case (issue #20).
pub const SUSTAINED_SECONDS: usize = 60;
/// Transactions of `BURST_TX_ROWS` per second in the sustained case: 10,000 rows/s.
const SUSTAINED_TX_PER_SECOND: usize = 10;

/// What the sustained case saw, sampled once a second.
pub struct Sustained {
    /// Rows per second the writer achieved.
    pub rate: f64,
    /// Largest backlog seen (rows written, not yet reported published by the relay).
    pub max_backlog: i64,
    /// The median backlog.
    pub median_backlog: i64,
    /// Largest age of the oldest unpublished row, in seconds.
    pub max_age: f64,
}

/// The relay running on a fresh table while a writer adds 1,000-row transactions at 10,000
/// rows/s for a minute; the backlog (rows written minus rows the relay reports published) and
/// the oldest unpublished row's age, each second.
pub async fn sustained(env: &TestEnv, topic: &str, pad: usize) -> Sustained {
    let outbox = TestOutbox::create(env).await;
    let port = free_port();
    let mut relay = spawn_relay_on(
        "relay-sustained",
        env,
        &outbox.url(),
        port,
        &["--idle-poll-interval=1s"],
    );
    let ready = Instant::now();
    while metric(port, "ferry_relay_leader").await < 1.0 {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "relay not leading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(
        1_000 / SUSTAINED_TX_PER_SECOND as u64,
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut backlogs = Vec::new();
    let mut max_age = 0f64;
    for tx in 0..SUSTAINED_SECONDS * SUSTAINED_TX_PER_SECOND {
        tick.tick().await;
        insert(&outbox.client, topic, &burst_rows(tx), pad)
            .await
            .expect("sustained insert");
        if (tx + 1) % SUSTAINED_TX_PER_SECOND == 0 {
            let written = ((tx + 1) * BURST_TX_ROWS) as f64;
            backlogs.push((written - metric(port, "ferry_relay_published_total").await) as i64);
            let age: f64 = outbox
                .client
                .query_one(
                    "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at))::float8, 0)
                     FROM outbox WHERE published_at IS NULL",
                    &[],
                )
                .await
                .expect("age")
                .get(0);
            max_age = max_age.max(age);
        }
    }
    let rate = (SUSTAINED_SECONDS * SUSTAINED_TX_PER_SECOND * BURST_TX_ROWS) as f64
        / started.elapsed().as_secs_f64();
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");
    backlogs.sort_unstable();
    Sustained {
        rate,
        max_backlog: backlogs.last().copied().unwrap_or(0),
        median_backlog: backlogs.get(backlogs.len() / 2).copied().unwrap_or(0),
        max_age,
    }
}
