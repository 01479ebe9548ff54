//! `make bench-worker`: how fast `ferry-sidecar worker` (the release binary, as a separate
//! process) delivers to a local no-op HTTP endpoint, against the environment `make env-up`
//! started. Prints, with two baselines measured in the same run — the raw rdkafka consume rate
//! of the same topic, and the raw HTTP rate: the same POSTs through the worker's own client at
//! the same concurrency from this process, no Kafka (the ceiling for events/s into this
//! endpoint on this machine; each throughput figure is also printed as a share of it):
//! - events/s for 100,000 events per ordering mode and `--max-in-flight` setting (first to
//!   last 2xx);
//! - p99 produce→2xx at a steady 1,000 events/s;
//! - the worker's peak RSS (VmHWM) over all runs;
//! - the key-concurrency table: 10,000 events on one partition, the endpoint sleeping a
//!   random 0–5 ms, 100 in flight, 1/10/100/10,000 distinct keys: wall seconds each, next to
//!   the floor the sleeps alone impose (the longest key's sum of sleeps, or the sum over 100
//!   lanes, whichever is larger).
//!
//! The table's endpoint draws each event's sleep from its index (uniform 0–5,000 µs, the same
//! in every run) and sleeps it with `nanosleep` on the thread serving the connection (a
//! thread per connection, as a synchronous service runs), not with a tokio timer, which
//! rounds every sleep up to its next 1 ms tick (≈ +0.5 ms per request). The one-key rows
//! print how much of the wall time was spent inside the endpoint's handler and what the rest
//! (the worker and HTTP on both sides) cost per event.
//!
//! `FERRY_BENCH_TRACING=on` runs every worker with tracing on ([`otlp_sink`]).
//!
//! Not a test: it asserts nothing and prints figures for a person to read.
//!
//! One file on purpose: each section is a straight script (stage, run the binary, measure,
//! print), read top to bottom; splitting it would scatter one measurement over several files.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

#[path = "../otlp_sink.rs"]
mod otlp_sink;

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use ferry_sidecar::{
    envelope::Envelope,
    worker::{
        config::DEFAULT_MAX_CONNECTIONS,
        delivery::{Delivery, Position, Verdict, traceparent},
    },
};
use ferry_testkit::{ChildProcess, TestEnv, unique_name};
use futures::StreamExt;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord, Producer},
};

/// `--otlp-endpoint=<the sink>` while `FERRY_BENCH_TRACING=on` ([`otlp_sink`]): every worker
/// this benchmark starts exports its spans there.
static TRACING_FLAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

const EVENTS: u64 = 100_000;
const THROUGHPUT_KEYS: u64 = 10_000;
const THROUGHPUT_PARTITIONS: i32 = 4;
/// The throughput runs' `--max-in-flight` settings, each run with every ordering
/// (FERRY_BENCH_THROUGHPUT_IN_FLIGHT overrides the list): 1,000, where DESIGN §10's targets
/// are read, and 256, which bounds a crash's redeliveries to 256 at some cost in events/s.
const THROUGHPUT_MAX_IN_FLIGHT: &str = "1000,256";
const LATENCY_RATE: u64 = 1_000;
const LATENCY_EVENTS: u64 = 5_000;
const TABLE_EVENTS: u64 = 10_000;
const TABLE_MAX_IN_FLIGHT: u64 = 100;
/// Warm-up events per round before the latency run (each round is 0.5 s at 10 ms apart).
const WARM_UP_EVENTS: u64 = 50;

/// The least wall time the table's sleeps allow with `keys` keys: a key's events run one after
/// another, and at most `TABLE_MAX_IN_FLIGHT` run at once.
fn sleep_floor_secs(keys: u64) -> f64 {
    let mut per_key = vec![0_u64; usize::try_from(keys).expect("fits")];
    for i in 0..TABLE_EVENTS {
        per_key[usize::try_from(i % keys).expect("fits")] += sleep_us(i);
    }
    let longest = per_key.iter().copied().max().unwrap_or(0);
    let total: u64 = per_key.iter().sum();
    (longest.max(total / TABLE_MAX_IN_FLIGHT)) as f64 / 1e6
}

#[derive(Default)]
struct Endpoint {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    sleep: std::sync::atomic::AtomicBool,
    latencies_us: Mutex<Vec<u64>>,
    /// Time spent inside the handler (body parse, sleep, bookkeeping), summed over requests:
    /// the table's wall time minus this is what the worker and the HTTP round trips cost.
    held_us: AtomicU64,
}

impl Endpoint {
    fn reset(&self, sleep: bool) {
        self.count.store(0, Ordering::SeqCst);
        *self.first.lock().expect("lock") = None;
        *self.last.lock().expect("lock") = None;
        self.sleep.store(sleep, Ordering::SeqCst);
        self.latencies_us.lock().expect("lock").clear();
        self.held_us.store(0, Ordering::SeqCst);
    }
}

/// The longest sleep of the key-concurrency table, in µs (the "random 0–5 ms").
const SLEEP_MAX_US: u64 = 5_000;

/// Event `i`'s sleep: uniform over 0..=5,000 µs, from a SplitMix64 hash of `i`, so every run
/// (and the floor computed from the produced events) sees the same sleeps.
fn sleep_us(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % (SLEEP_MAX_US + 1)
}

/// What the endpoint does with a request, on whichever server received it: note its latency
/// and count it, after sleeping the event's draw on the calling thread when the table asks.
fn handle(e: &Endpoint, body: &[u8]) {
    let entered = Instant::now();
    let data = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    if e.sleep.load(Ordering::Relaxed)
        && let Some(i) = data["i"].as_u64()
    {
        std::thread::sleep(Duration::from_micros(sleep_us(i)));
    }
    let now = Instant::now();
    if let Some(sent) = data["sent_us"].as_u64() {
        let now_us = unix_us();
        e.latencies_us
            .lock()
            .expect("lock")
            .push(now_us.saturating_sub(sent));
    }
    e.first.lock().expect("lock").get_or_insert(now);
    *e.last.lock().expect("lock") = Some(now);
    e.held_us.fetch_add(
        u64::try_from(entered.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    e.count.fetch_add(1, Ordering::SeqCst);
}

/// The async no-op endpoint of the throughput and latency runs (never asked to sleep).
async fn receive(State(e): State<Arc<Endpoint>>, body: Bytes) -> StatusCode {
    handle(&e, &body);
    StatusCode::NO_CONTENT
}

/// The sleeping endpoint of the key table: every connection is served on a thread of its own
/// that sleeps in place, as a synchronous service (the shop's Django under a sync WSGI server)
/// does. An async server would have to hand each sleep to a blocking thread and back — two
/// thread wake-ups per request that are the endpoint's cost, not the worker's (≈ 190 µs per
/// event on this machine, measured with `in the endpoint's handler` below). Returns its URL.
fn serve_thread_per_connection(endpoint: Arc<Endpoint>) -> String {
    let listener =
        std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let endpoint = endpoint.clone();
            std::thread::spawn(move || serve_connection(&endpoint, stream));
        }
    });
    url
}

/// One connection's requests, one at a time, on the calling thread.
fn serve_connection(endpoint: &Arc<Endpoint>, stream: std::net::TcpStream) {
    use http_body_util::{BodyExt, Empty};
    // SAFETY: prctl(PR_SET_TIMERSLACK) changes only this thread's timer slack (how late the
    // kernel may end its sleeps; 50 µs by default), so the sleeps last what was drawn.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_nonblocking(true);
        let stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
        let service =
            hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| {
                let endpoint = endpoint.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    handle(&endpoint, &body);
                    let mut response = hyper::Response::new(Empty::<Bytes>::new());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    Ok::<_, hyper::Error>(response)
                }
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
}

fn unix_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_micros(),
    )
    .expect("fits")
}

fn payload(i: u64, key: &str, sent_us: Option<u64>) -> Vec<u8> {
    let data = match sent_us {
        Some(s) => serde_json::json!({"i": i, "sent_us": s}),
        None => serde_json::json!({"i": i}),
    };
    serde_json::to_vec(&serde_json::json!({
        "schema": "bench.v1", "event": "bench.happened", "id": format!("b-{i}"),
        "ts": 1_700_000_000, "key": key, "data": data, "headers": {}
    }))
    .expect("json")
}

async fn create_topic(config: &ClientConfig, partitions: i32) -> String {
    let name = unique_name("bench");
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    for r in admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create")
    {
        r.expect("created");
    }
    name
}

async fn delete_topic(config: &ClientConfig, name: &str) {
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin");
    let _ = admin.delete_topics(&[name], &AdminOptions::new()).await;
}

fn fill(producer: &FutureProducer, topic: &str, n: u64, keys: u64) {
    for i in 0..n {
        let key = format!("k{}", i % keys);
        let body = payload(i, &key, None);
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&body)) {
                Ok(_) => break,
                Err(_) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flushed");
}

struct Worker {
    child: ChildProcess,
}

impl Worker {
    fn start(env: &TestEnv, topic: &str, url: &str, ordering: &str, max_in_flight: &str) -> Worker {
        let binary = std::env::var("FERRY_SIDECAR_BIN")
            .unwrap_or_else(|_| "target/release/ferry-sidecar".to_owned());
        let kafka = env.kafka_args();
        let args = [
            "worker".to_owned(),
            format!("--topics={topic}"),
            format!("--group={}", unique_name("bench")),
            format!("--target-url={url}"),
            format!("--ordering={ordering}"),
            format!("--max-in-flight={max_in_flight}"),
            "--dead-letter-topic=bench.dlq".to_owned(),
            "--metrics-addr=127.0.0.1:0".to_owned(),
            // FERRY_BENCH_WORKER_LOG=debug (with FERRY_TEST_LOGS=<dir>) for the worker's timings.
            format!(
                "--log-level={}",
                std::env::var("FERRY_BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".to_owned())
            ),
        ];
        // FERRY_BENCH_WORKER_ARGS: more worker flags (whitespace-separated), for A/B runs of
        // settings, e.g. `--kafka-option=fetch.wait.max.ms=10 --max-connections=64`.
        let extra = std::env::var("FERRY_BENCH_WORKER_ARGS").unwrap_or_default();
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(extra.split_whitespace())
            .chain(TRACING_FLAG.get().map(String::as_str))
            .collect();
        let kafka_env = kafka.to_env();
        // FERRY_BENCH_WORKER_ENV: variables for the worker only (whitespace-separated K=V),
        // e.g. `TOKIO_WORKER_THREADS=1`.
        let worker_env = std::env::var("FERRY_BENCH_WORKER_ENV").unwrap_or_default();
        let envs: Vec<(&str, &str)> = kafka_env
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(
                worker_env
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('=')),
            )
            .collect();
        let child =
            ChildProcess::spawn("bench-worker", binary, &args, &envs).expect("spawn worker");
        Worker { child }
    }

    /// CPU seconds (user + system) the worker used so far, from /proc/<pid>/stat.
    fn cpu_secs(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the ')'.
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        // USER_HZ is 100 on Linux.
        ticks / 100.0
    }

    /// Peak resident set size in MiB, from /proc.
    fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        ferry_testkit::peak_rss_kib(pid).map_or(0.0, |kib| kib as f64 / 1024.0)
    }

    async fn stop(mut self) {
        let _ = self.child.terminate(Duration::from_secs(30)).await;
    }
}

async fn wait_for(endpoint: &Endpoint, n: u64, timeout: Duration) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    while endpoint.count.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = (*endpoint.first.lock().expect("lock"))?;
    let last = (*endpoint.last.lock().expect("lock"))?;
    Some((last - first).as_secs_f64())
}

fn raw_consume_rate(config: &ClientConfig, topic: &str, n: u64) -> f64 {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", unique_name("raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut count = 0;
    let mut started = None;
    while count < n {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            count += 1;
        }
    }
    let elapsed = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    count as f64 / elapsed
}

/// The ceiling for "events/s into the local no-op endpoint" on this machine: the same POSTs
/// the worker makes (its own [`Delivery`], same headers and body, same client settings), `n` of
/// them, `concurrency` at once, from this process, with no Kafka in between.
async fn raw_http_rate(endpoint: &Endpoint, url: &str, n: u64, concurrency: usize) -> f64 {
    let delivery = Delivery::new(
        url.to_owned(),
        Duration::from_secs(10),
        DEFAULT_MAX_CONNECTIONS,
    )
    .expect("client");
    let started = Instant::now();
    let delivered = futures::stream::iter(0..n)
        .map(|i| {
            let delivery = &delivery;
            async move {
                let envelope = Envelope::parse(&payload(i, "k", None)).expect("envelope");
                let position = Position {
                    topic: "bench",
                    partition: 0,
                    offset: i64::try_from(i).expect("fits"),
                };
                let traceparent = traceparent(&envelope, None);
                delivery
                    .deliver(&envelope, &position, 1, &traceparent)
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .filter(|v| std::future::ready(*v == Verdict::Delivered))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        endpoint.count.load(Ordering::SeqCst),
        n,
        "the endpoint saw every request"
    );
    delivered as f64 / secs
}

#[tokio::main]
async fn main() {
    let Some(env) = TestEnv::get() else {
        eprintln!("no environment: run `make env-up` first");
        std::process::exit(1);
    };
    let config = env.kafka_config();
    let producer: FutureProducer = config
        .clone()
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("producer");
    let endpoint = Arc::new(Endpoint::default());
    let app = Router::new()
        .route("/", post(receive))
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let tracing = otlp_sink::Sink::from_env().await;
    if let Some((_, flag)) = &tracing {
        let _ = TRACING_FLAG.set(flag.clone());
    }
    let mut peak_rss: f64 = 0.0;
    // FERRY_BENCH_SECTIONS=throughput,latency,table picks parts (all by default), for profiling.
    let sections = std::env::var("FERRY_BENCH_SECTIONS")
        .unwrap_or_else(|_| "throughput,latency,table".to_owned());
    let section = |name: &str| sections.split(',').any(|s| s.trim() == name);

    let throughput_in_flight = std::env::var("FERRY_BENCH_THROUGHPUT_IN_FLIGHT")
        .unwrap_or_else(|_| THROUGHPUT_MAX_IN_FLIGHT.to_owned());
    println!(
        "ferry-sidecar worker benchmark ({EVENTS} events, {THROUGHPUT_PARTITIONS} partitions, {THROUGHPUT_KEYS} keys, max-in-flight {throughput_in_flight}, max-connections {DEFAULT_MAX_CONNECTIONS})"
    );
    let topic = create_topic(&config, THROUGHPUT_PARTITIONS).await;
    fill(&producer, &topic, EVENTS, THROUGHPUT_KEYS);
    let raw = raw_consume_rate(&config, &topic, EVENTS);
    println!("  baseline: raw rdkafka consume          {raw:>10.0} records/s");
    let in_flights: Vec<&str> = throughput_in_flight.split(',').map(str::trim).collect();
    let most_in_flight = in_flights
        .iter()
        .map(|n| n.parse::<usize>().expect("a number of records"))
        .max()
        .unwrap_or(1);
    endpoint.reset(false);
    let http = raw_http_rate(&endpoint, &url, EVENTS, most_in_flight).await;
    println!(
        "  baseline: raw HTTP, no Kafka           {http:>10.0} requests/s (the worker's own client: {most_in_flight} at once over at most {DEFAULT_MAX_CONNECTIONS} connections)"
    );
    // FERRY_BENCH_ORDERINGS=key,... picks the throughput runs' orderings (all by default).
    let orderings = std::env::var("FERRY_BENCH_ORDERINGS")
        .unwrap_or_else(|_| "key,partition,unordered".to_owned());
    let orderings: Vec<&str> = if section("throughput") {
        orderings.split(',').map(str::trim).collect()
    } else {
        Vec::new()
    };
    for (in_flight, ordering) in in_flights
        .iter()
        .flat_map(|f| orderings.iter().map(move |o| (*f, *o)))
    {
        endpoint.reset(false);
        let worker = Worker::start(env, &topic, &url, ordering, in_flight);
        let secs = wait_for(&endpoint, EVENTS, Duration::from_secs(300)).await;
        let rss = worker.peak_rss_mib();
        let cpu_us = worker.cpu_secs() * 1e6 / EVENTS as f64;
        peak_rss = peak_rss.max(rss);
        worker.stop().await;
        match secs {
            Some(s) => println!(
                "  ordering={ordering:<10} in flight {in_flight:>5}: {:>7.0} events/s = {:>3.0}% of raw HTTP ({s:.2} s, worker CPU {cpu_us:.0} µs/event, peak RSS {rss:.1} MiB)",
                EVENTS as f64 / s,
                100.0 * EVENTS as f64 / s / http
            ),
            None => println!(
                "  ordering={ordering:<10} in flight {in_flight:>5}: did not finish within 300 s"
            ),
        }
    }
    delete_topic(&config, &topic).await;

    if section("latency") {
        latency_run(env, &config, &producer, &endpoint, &url, &mut peak_rss).await;
    }
    if section("table") {
        let table_url = serve_thread_per_connection(endpoint.clone());
        table_runs(
            env,
            &config,
            &producer,
            &endpoint,
            &table_url,
            &mut peak_rss,
        )
        .await;
    }
    println!("  worker peak RSS (VmHWM): {peak_rss:.1} MiB");
    match &tracing {
        Some((sink, _)) => println!("  {}", sink.summary()),
        None => println!("  tracing off (FERRY_BENCH_TRACING=on turns it on)"),
    }
}

/// p99 produce→2xx at a steady rate, after a warm-up.
async fn latency_run(
    env: &TestEnv,
    config: &ClientConfig,
    producer: &FutureProducer,
    endpoint: &Endpoint,
    url: &str,
    peak_rss: &mut f64,
) {
    let topic = create_topic(config, THROUGHPUT_PARTITIONS).await;
    endpoint.reset(false);
    let worker = Worker::start(env, &topic, url, "key", "64");
    // Warm up: until the worker has joined, been assigned every partition and delivered a
    // steady trickle (and the producer knows the topic), nothing is measured.
    let mut warm = 0;
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < warm_deadline {
        for _ in 0..WARM_UP_EVENTS {
            let key = format!("w{warm}");
            let body = payload(warm, &key, None);
            let _ = producer.send_result(FutureRecord::to(&topic).key(&key).payload(&body));
            warm += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if endpoint.count.load(Ordering::SeqCst) >= warm - WARM_UP_EVENTS / 2 {
            break;
        }
    }
    let _ = wait_for(endpoint, warm, Duration::from_secs(30)).await;
    endpoint.reset(false);
    let started = Instant::now();
    for i in 0..LATENCY_EVENTS {
        let due = started + Duration::from_micros(i * 1_000_000 / LATENCY_RATE);
        tokio::time::sleep_until(due.into()).await;
        let key = format!("k{}", i % 100);
        let body = payload(i, &key, Some(unix_us()));
        let _ = producer.send_result(FutureRecord::to(&topic).key(&key).payload(&body));
    }
    let _ = wait_for(endpoint, LATENCY_EVENTS, Duration::from_secs(60)).await;
    let rss = worker.peak_rss_mib();
    *peak_rss = peak_rss.max(rss);
    worker.stop().await;
    let mut lat = endpoint.latencies_us.lock().expect("lock").clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "  produce→2xx at {LATENCY_RATE}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events after {warm} warm-up events; peak RSS {rss:.1} MiB)",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        lat.len()
    );
    delete_topic(config, &topic).await;
}

/// For a run through one lane (one request at a time): how the wall time `secs` splits into
/// time inside the endpoint's handler and the rest (the worker, HTTP on both sides, wake-ups).
fn one_lane_split(endpoint: &Endpoint, secs: f64) -> String {
    let held = endpoint.held_us.load(Ordering::SeqCst) as f64 / 1e6;
    format!(
        "; in the endpoint's handler {held:.2} s, outside it {:.0} µs per event",
        (secs - held) * 1e6 / TABLE_EVENTS as f64
    )
}

/// The key-concurrency table, with its no-sleep baseline.
async fn table_runs(
    env: &TestEnv,
    config: &ClientConfig,
    producer: &FutureProducer,
    endpoint: &Endpoint,
    url: &str,
    peak_rss: &mut f64,
) {
    println!(
        "  key concurrency: {TABLE_EVENTS} events, 1 partition, endpoint sleeps 0-5 ms (thread sleep, fixed per event), {TABLE_MAX_IN_FLIGHT} in flight"
    );
    // The same 10,000 events through one key into an endpoint that does not sleep: what one
    // lane costs per event besides the service (HTTP round trip, endpoint, worker).
    {
        let topic = create_topic(config, 1).await;
        fill(producer, &topic, TABLE_EVENTS, 1);
        endpoint.reset(false);
        let worker = Worker::start(env, &topic, url, "key", &TABLE_MAX_IN_FLIGHT.to_string());
        let secs = wait_for(endpoint, TABLE_EVENTS, Duration::from_secs(120)).await;
        worker.stop().await;
        match secs {
            Some(s) => println!(
                "    baseline: 1 key, no sleep: {s:.2} s ({:.0} µs per event in one lane{})",
                s * 1e6 / TABLE_EVENTS as f64,
                one_lane_split(endpoint, s)
            ),
            None => println!("    baseline: 1 key, no sleep: did not finish within 120 s"),
        }
        delete_topic(config, &topic).await;
    }
    // The same sleeps through one lane without the worker or Kafka: this process's client
    // (the worker's own `Delivery`) posting the 10,000 events one at a time. The 1-key row
    // cannot be faster than this on this machine.
    {
        endpoint.reset(true);
        let secs = TABLE_EVENTS as f64 / raw_http_rate(endpoint, url, TABLE_EVENTS, 1).await;
        println!(
            "    baseline: 1 lane, the sleeps, raw HTTP one at a time, no Kafka: {secs:.2} s{}",
            one_lane_split(endpoint, secs)
        );
    }
    for keys in [1_u64, 10, 100, 10_000] {
        let topic = create_topic(config, 1).await;
        fill(producer, &topic, TABLE_EVENTS, keys);
        endpoint.reset(true);
        let worker = Worker::start(env, &topic, url, "key", &TABLE_MAX_IN_FLIGHT.to_string());
        let secs = wait_for(endpoint, TABLE_EVENTS, Duration::from_secs(120)).await;
        let rss = worker.peak_rss_mib();
        *peak_rss = peak_rss.max(rss);
        worker.stop().await;
        let floor = sleep_floor_secs(keys);
        match secs {
            Some(s) => println!(
                "    {keys:>6} keys: {s:>6.2} s (floor from the sleeps alone {floor:.2} s; peak RSS {rss:.1} MiB{})",
                if keys == 1 {
                    one_lane_split(endpoint, s)
                } else {
                    String::new()
                }
            ),
            None => println!("    {keys:>6} keys: did not finish within 120 s"),
        }
        delete_topic(config, &topic).await;
    }
}
