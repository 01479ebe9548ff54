//! `make bench-relay`: the outbox relay against the real PostgreSQL and Kafka of
//! `make env-up`, with 256-byte payloads and 1,000 keys (DESIGN §10). Prints:
//! - the burst case (issue #20, `burst.rs`): 100,000 rows written in 1,000-row transactions
//!   while the relay runs on a fresh table, beside the same rows pre-filled, per run; and
//!   the backlog while a writer adds 10,000 rows/s for a minute;
//! - rows/s draining 200,000 pre-filled rows (the real `ferry-sidecar relay` binary, release);
//! - p50/p99 commit→mark latency at a steady 1,000 rows/s, after a second of warm-up
//!   (`published_at` minus `clock_timestamp()` read just before the writer's COMMIT, both on
//!   the database clock; a row is marked only after Kafka acknowledged it, so this is an upper
//!   bound of commit→ack), and for reference the same from `created_at` (transaction start);
//! - the relay's peak RSS (VmHWM);
//! - baselines measured in the same run: raw rdkafka produce rate of the same records, and the
//!   raw SQL select-and-mark rate of the same table shape without Kafka.
//!
//! `FERRY_BENCH_TRACING=on` runs the drain and the steady rate with tracing on ([`otlp_sink`]).
//! `FERRY_BENCH_RELAY_CASES=contracts` (also part of a full run): 100,000 pre-filled rows drained
//! with an event contract on their topic (`--contracts-dir`, a schema of ten properties, two
//! required, one enum, one nested object) beside the same drain without one, alternately.
//!
//! Targets: ≥ 50,000 rows/s, p99 ≤ 50 ms, ≤ 30 MiB. Not a test: it asserts nothing.

#[path = "../../sidecar/tests/relay/support.rs"]
mod support;

mod burst;
#[path = "../otlp_sink.rs"]
mod otlp_sink;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use ferry_sidecar::relay::{config, pipeline, publish};
use ferry_testkit::{TempTopic, TestEnv};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};
use support::{TestOutbox, insert, spawn_relay};

const ROWS: usize = 200_000;
const KEYS: usize = 1_000;
const PAYLOAD_BYTES: usize = 256;
const STEADY_RATE: usize = 1_000;
const STEADY_SECONDS: u64 = 15;
const WARM_UP_SECONDS: u64 = 1;
const FILL_CHUNK: usize = 10_000;
const SQL_BATCH: i64 = 1_000;

fn rows(n: usize, from: usize) -> Vec<(String, i64)> {
    (from..from + n)
        .map(|i| (format!("k{}", i % KEYS), (i / KEYS) as i64))
        .collect()
}

/// The filler length that makes the envelope `PAYLOAD_BYTES` long.
async fn pad_for_payload(outbox: &TestOutbox, topic: &str) -> usize {
    let id = insert(&outbox.client, topic, &[("k0".into(), 0)], 0)
        .await
        .expect("probe")[0];
    let len: i32 = outbox
        .client
        .query_one(
            "SELECT length(payload::text) FROM outbox WHERE id = $1",
            &[&id],
        )
        .await
        .expect("probe length")
        .get(0);
    outbox
        .client
        .execute("DELETE FROM outbox WHERE id = $1", &[&id])
        .await
        .expect("probe delete");
    PAYLOAD_BYTES.saturating_sub(len as usize)
}

async fn fill(outbox: &TestOutbox, topic: &str, pad: usize) {
    for start in (0..ROWS).step_by(FILL_CHUNK) {
        insert(&outbox.client, topic, &rows(FILL_CHUNK, start), pad)
            .await
            .expect("fill");
    }
}

/// p50, p99 and max of latencies in milliseconds (nearest rank).
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Self {
            count: ms.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50, self.p99, self.max
        )
    }
}

/// CPU seconds (user + system) the process `pid` has used so far; `/proc/<pid>/stat` counts
/// in clock ticks of `USER_HZ`, which is 100 on Linux.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Baseline: the same 200,000 records produced straight through rdkafka with the relay's
/// producer settings, every delivery report awaited.
async fn raw_produce_rate(env: &TestEnv, payload: &[u8]) -> f64 {
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let producer: FutureProducer = {
        let mut config: ClientConfig = env.kafka_config();
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "1");
        config.create().expect("producer")
    };
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    let started = Instant::now();
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(1_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for i in chunk {
            let record = FutureRecord::to(topic.name())
                .key(&keys[i % KEYS])
                .payload(payload);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for d in futures::future::join_all(deliveries).await {
            d.expect("report").expect("delivered");
        }
    }
    ROWS as f64 / started.elapsed().as_secs_f64()
}

/// Baseline: the relay's read query (its shape with no key held and no id skipped) and mark
/// statement on a filled table, one after the other on one session, without Kafka.
async fn raw_sql_rate(env: &TestEnv, pad: usize) -> f64 {
    let outbox = TestOutbox::create(env).await;
    fill(&outbox, "sql-only", pad).await;
    outbox
        .client
        .batch_execute("VACUUM ANALYZE outbox")
        .await
        .expect("analyze");
    let fetch = outbox
        .client
        .prepare(
            "SELECT id, topic, key::text, payload::text, headers::text FROM outbox \
             WHERE published_at IS NULL AND publish_error IS NULL \
             ORDER BY id LIMIT $1",
        )
        .await
        .expect("prepare");
    let mark = outbox
        .client
        .prepare(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
        )
        .await
        .expect("prepare");
    let started = Instant::now();
    let mut done = 0;
    loop {
        let rows = outbox
            .client
            .query(&fetch, &[&SQL_BATCH])
            .await
            .expect("fetch");
        if rows.is_empty() {
            break;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        done += outbox.client.execute(&mark, &[&ids]).await.expect("mark");
    }
    done as f64 / started.elapsed().as_secs_f64()
}

/// The burst case (issue #20), each run beside the pre-filled drain of the same rows, then the
/// sustained case.
async fn burst_cases(env: &TestEnv, topic: &str, pad: usize, runs: usize) {
    for (label, extra) in [
        ("marks published_at", &[][..]),
        ("--delete-published", &["--delete-published"][..]),
    ] {
        for run in 1..=runs {
            let prefilled = burst::run(env, topic, pad, true, extra).await;
            let during = burst::run(env, topic, pad, false, extra).await;
            let target = during.writer.as_secs_f64() * 1.5 + prefilled.drain.as_secs_f64();
            println!(
                "burst     {label}, run {run}: {} rows pre-filled: {prefilled}",
                burst::BURST_ROWS
            );
            println!(
                "burst     {label}, run {run}: {} rows written while it runs: {during}   [target <= {target:.2} s]",
                burst::BURST_ROWS
            );
        }
    }
    let sustained = burst::sustained(env, topic, pad).await;
    println!(
        "sustained {:.0} rows/s for {} s in 1,000-row transactions: backlog each second median {} rows, max {} rows; oldest unpublished row at most {:.2} s old   [target backlog <= {} rows, 2 batches]",
        sustained.rate,
        burst::SUSTAINED_SECONDS,
        sustained.median_backlog,
        sustained.max_backlog,
        sustained.max_age,
        2 * config::DEFAULT_BATCH_SIZE
    );
}

/// The contract of the benchmark's rows: realistic in shape (ten properties, two required, an
/// enum, a nested object, formats), and met by every row (`key`, `seq` and `pad` are what the
/// rows carry; the rest is optional), so every row is checked and published.
fn bench_contract() -> serde_json::Value {
    serde_json::json!({"jsonSchema": {
        "type": "object",
        "required": ["key", "seq"],
        "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": 64},
            "seq": {"type": "integer", "minimum": 0},
            "pad": {"type": "string"},
            "status": {"enum": ["created", "paid", "shipped", "cancelled"]},
            "customer": {"type": "object", "required": ["id"], "properties": {
                "id": {"type": "string"}, "tier": {"type": "string"}}},
            "amount": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "created_at": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"type": "string", "maxLength": 500}
        }
    }})
}

/// The contracts case: pre-filled drains with and without a contract on the topic, alternately,
/// `runs` times each (DESIGN §10: validation may cost at most 20% of the drain rate).
async fn contracts_cases(env: &TestEnv, topic: &str, pad: usize, runs: usize) {
    let dir = ferry_testkit::TempPath::new("ferry-bench-contracts");
    std::fs::create_dir_all(&*dir).expect("contracts dir");
    std::fs::write(
        dir.join(format!("{topic}.json")),
        bench_contract().to_string(),
    )
    .expect("contract written");
    let dir_arg = dir.display().to_string();
    let with_contract = ["--contracts-dir", dir_arg.as_str()];
    let rate = |d: &burst::Drain| burst::BURST_ROWS as f64 / d.drain.as_secs_f64();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let plain = burst::run(env, topic, pad, true, &[]).await;
        let checked = burst::run(env, topic, pad, true, &with_contract).await;
        println!(
            "contracts run {run}: {} rows pre-filled, no contract: {:.0} rows/s; with the contract: {:.0} rows/s",
            burst::BURST_ROWS,
            rate(&plain),
            rate(&checked)
        );
        without.push(rate(&plain));
        with.push(rate(&checked));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (off, on) = (mean(&without), mean(&with));
    println!(
        "contracts mean of {runs}: {off:.0} rows/s without, {on:.0} rows/s with the contract: {:+.1}%   [target >= -20%]",
        (on / off - 1.0) * 100.0
    );
}

#[tokio::main]
async fn main() {
    let Some(env) = TestEnv::get() else {
        eprintln!("bench-relay needs the environment: run `make env-up`");
        std::process::exit(2);
    };
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let mut outbox = TestOutbox::create(env).await;
    let pad = pad_for_payload(&outbox, topic.name()).await;
    let payload: String = outbox
        .client
        .query_one(
            "SELECT jsonb_build_object('schema', 'test.v1', 'event', 'test.happened', 'id', 'k1:1', 'ts', 1, 'key', 'k1',
                 'data', jsonb_build_object('key', 'k1', 'seq', 1, 'pad', repeat('x', $1)))::text",
            &[&(pad as i32)],
        )
        .await
        .expect("payload")
        .get(0);
    println!(
        "relay benchmark: {ROWS} rows, {KEYS} keys, {}-byte payloads, 3 partitions",
        payload.len()
    );
    // The relay runs with its defaults, the settings docs/outbox.md recommends.
    println!(
        "relay     settings: --batch-size {} (chunks of {}), --idle-poll-interval {}, no --notify, marks published_at; producer {}",
        config::DEFAULT_BATCH_SIZE,
        pipeline::chunk_size(config::DEFAULT_BATCH_SIZE),
        config::DEFAULT_IDLE_POLL_INTERVAL,
        publish::PRODUCER_DEFAULTS
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // The burst case (issue #20): `FERRY_BENCH_RELAY_RUNS` runs (default 3; it varies from run
    // to run). `FERRY_BENCH_RELAY_CASES=burst` runs only it, `=drain` only what follows it
    // (the drain and the steady rate, where `FERRY_BENCH_TRACING` applies).
    let runs: usize = std::env::var("FERRY_BENCH_RELAY_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let cases = std::env::var("FERRY_BENCH_RELAY_CASES").unwrap_or_default();
    if cases.is_empty() || cases == "burst" {
        burst_cases(env, topic.name(), pad, runs).await;
    }
    if cases.is_empty() || cases == "contracts" {
        contracts_cases(env, topic.name(), pad, runs).await;
    }
    if cases == "burst" || cases == "contracts" {
        return;
    }

    // Baselines first, on their own topic and table.
    let produce_rate = raw_produce_rate(env, payload.as_bytes()).await;
    let sql_rate = raw_sql_rate(env, pad).await;

    // Drain 200,000 pre-filled rows with the real relay binary.
    fill(&outbox, topic.name(), pad).await;
    outbox
        .client
        .batch_execute("VACUUM ANALYZE outbox")
        .await
        .expect("analyze");
    let first_id: i64 = outbox
        .client
        .query_one("SELECT min(id) FROM outbox", &[])
        .await
        .expect("first id")
        .get(0);
    let spawned = Instant::now();
    // FERRY_BENCH_TRACING=on: this relay (the drain and the steady rate) exports its spans.
    let tracing = otlp_sink::Sink::from_env().await;
    let tracing_flag: Vec<&str> = tracing.iter().map(|(_, flag)| flag.as_str()).collect();
    let mut relay = spawn_relay("relay-bench", env, &outbox.url(), None, &tracing_flag);
    let pid = relay.id().expect("relay pid");
    // Index probes only, so watching costs the database next to nothing: the first row's
    // mark by primary key, and the lowest unpublished id through the partial index. (An
    // `EXISTS (.. published_at IS NOT NULL)` here was a parallel sequential scan of the whole
    // table every 20 ms, about 45 ms each: it took a core from the relay and PostgreSQL.)
    let mut first_marked = None;
    loop {
        let first: bool = outbox
            .client
            .query_one(
                "SELECT published_at IS NOT NULL FROM outbox WHERE id = $1",
                &[&first_id],
            )
            .await
            .expect("first row")
            .get(0);
        if first_marked.is_none() && first {
            first_marked = Some(Instant::now());
        }
        let left = outbox
            .client
            .query_opt(
                "SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .expect("progress")
            .is_some();
        if !left {
            break;
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(600),
            "drain took over 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = spawned.elapsed();
    let drain_rate = ROWS as f64 / drain.as_secs_f64();
    let drain_after_start =
        first_marked.map(|t| ROWS as f64 / t.elapsed().max(Duration::from_millis(1)).as_secs_f64());
    let rss_after_drain = ferry_testkit::peak_rss_kib(pid);
    let cpu_after_drain = cpu_seconds(pid);

    // Steady 1,000 rows/s: 10 rows per 10 ms, each tick one transaction. The first second
    // warms up (the relay comes out of its idle backoff) and is not measured. Each
    // transaction reads `clock_timestamp()` as its last statement before COMMIT: its rows'
    // commit time, on the database clock like `published_at`, without the time the insert
    // itself took (which `created_at`, the transaction's start, includes).
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut steady_from = i64::MAX;
    let mut committed_at: Vec<(i64, f64)> = Vec::new();
    let per_tick = STEADY_RATE / 100;
    let warm_up_ticks = WARM_UP_SECONDS as usize * 100;
    for t in 0..((WARM_UP_SECONDS + STEADY_SECONDS) as usize * 100) {
        tick.tick().await;
        let batch = rows(per_tick, ROWS + t * per_tick);
        let tx = outbox.client.transaction().await.expect("begin");
        let ids = insert(&tx, topic.name(), &batch, pad)
            .await
            .expect("steady insert");
        let at: f64 = tx
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .expect("commit time")
            .get(0);
        tx.commit().await.expect("commit");
        if t == warm_up_ticks {
            steady_from = ids[0] - 1;
        }
        if t >= warm_up_ticks {
            committed_at.extend(ids.iter().map(|id| (*id, at)));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox.unpublished().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (id, published_at, created_at), epoch seconds on the database clock.
    let marked: HashMap<i64, (f64, f64)> = outbox
        .client
        .query(
            "SELECT id, extract(epoch FROM published_at)::float8, extract(epoch FROM created_at)::float8
             FROM outbox WHERE id > $1 AND published_at IS NOT NULL",
            &[&steady_from],
        )
        .await
        .expect("published_at")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut from_commit = Vec::new();
    let mut from_start = Vec::new();
    for (id, at) in &committed_at {
        if let Some((published, created)) = marked.get(id) {
            from_commit.push((published - at) * 1e3);
            from_start.push((published - created) * 1e3);
        }
    }
    let from_commit = Percentiles::of(from_commit);
    let from_start = Percentiles::of(from_start);
    let rss = ferry_testkit::peak_rss_kib(pid);
    relay
        .terminate(Duration::from_secs(30))
        .await
        .expect("terminate");

    let mib = |kib: Option<u64>| {
        kib.map_or("n/a".to_owned(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!("baseline  raw rdkafka produce (idempotent, acks=all): {produce_rate:>9.0} records/s");
    println!("baseline  raw SQL select-and-mark, batches of {SQL_BATCH}:  {sql_rate:>9.0} rows/s");
    println!(
        "relay     drain {ROWS} rows: {drain_rate:>9.0} rows/s incl. start-up ({:.2} s){}   [target >= 50000]",
        drain.as_secs_f64(),
        drain_after_start.map_or(String::new(), |r| format!(
            ", {r:.0} rows/s from the first mark"
        ))
    );
    println!(
        "relay     / produce baseline: {:.2}   / SQL baseline: {:.2}   relay CPU in the drain: {}",
        drain_rate / produce_rate,
        drain_rate / sql_rate,
        cpu_after_drain.map_or("n/a".to_owned(), |s| format!(
            "{s:.2} s ({:.1} us/row)",
            s * 1e6 / ROWS as f64
        ))
    );
    println!(
        "relay     steady {STEADY_RATE} rows/s for {STEADY_SECONDS} s after {WARM_UP_SECONDS} s warm-up ({} of {} rows marked): commit->mark {from_commit}   [target p99 <= 50 ms]",
        from_commit.count,
        committed_at.len(),
    );
    println!(
        "relay     (the same rows from their transaction's start, created_at->mark, incl. the insert itself: {from_start})"
    );
    println!(
        "relay     peak RSS: {} after the drain, {} at the end   [target <= 30 MiB]",
        mib(rss_after_drain),
        mib(rss)
    );
    match &tracing {
        Some((sink, _)) => println!("relay     {}", sink.summary()),
        None => println!("relay     tracing off (FERRY_BENCH_TRACING=on turns it on)"),
    }
}
