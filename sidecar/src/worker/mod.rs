//! `ferry-sidecar worker`: Kafka → the service over HTTP (DESIGN §5).
//!
//! ```text
//!  Kafka ──recv──▶ intake (per partition; tier partitions held until due, paused meanwhile)
//!                    │ admit while the uncommitted window < --max-in-flight
//!                    ▼
//!                 scheduler (lanes: partition | partition+key | none)
//!                    │ one running record per lane
//!                    ▼
//!                 delivery tasks ── HTTP ──▶ service
//!                    │ or copy ──▶ retry tier / dead-letter topic (acked by Kafka)
//!                    ▼
//!                 assignment windows ──watermark──▶ commit
//! ```
//!
//! The run loop owns the intake, the scheduler and the key-order bookkeeping; delivery tasks
//! report back over a channel and mark their records done in the shared [`Assignment`], whose
//! windows give the commit watermark. The loop always keeps polling the consumer (librdkafka
//! serves rebalance callbacks inside the poll); partitions whose intake is full are paused.

pub mod assignment;
pub mod config;
pub mod copy;
pub mod dedup;
pub mod delivery;
pub mod layout;
pub mod metrics;
pub mod process;
pub mod rebuild;
pub mod retry;
pub mod scheduler;
pub mod watermark;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use rdkafka::{
    ClientConfig, Message, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaResult,
    message::BorrowedMessage,
    producer::FutureProducer,
};
use tokio::{sync::mpsc, time::Instant};

use self::{
    assignment::{Assignment, Tp, WorkerContext},
    config::{Ordering, WorkerArgs},
    dedup::DedupStore,
    delivery::Delivery,
    metrics::Metrics,
    process::{Context, Finish, Job},
    retry::{HeldQueue, Parking, Route, Source, Tiers},
    scheduler::Scheduler,
};
use crate::telemetry::{Health, TelemetryServer};

/// How often the worker commits its stored watermarks when the window is not filling up;
/// bounds how much a crash redelivers at low rates (librdkafka's own background commit, off
/// here, defaults to 5 s). A filling window asks for a commit at once.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// The worker asks for a commit at once when its uncommitted window reaches 1/this of
/// `--max-in-flight` (and no request is outstanding). A quarter rather than a half: the window
/// only shrinks once Kafka answered, so the sooner the request, the less the window sits full
/// waiting for it; `make bench-worker` A/B at --max-in-flight 256, ordering=key, three pairs
/// in one sitting: 19,700 / 22,000 / 20,700 events/s against 14,800 / 15,900 / 16,700 at a half.
/// At most one request is outstanding, so this adds at most one commit per round trip.
const COMMIT_AT_WINDOW_DIVISOR: usize = 4;
/// How long the worker waits for the answer to its commit request before it asks again.
/// librdkafka answers every request (at the latest with a timeout error after
/// `socket.timeout.ms`, 60 s by default), so this is only a guard against a lost answer; it is
/// long so that a slow coordinator is never sent a second request (issue 11: a queue of
/// unanswered commits on the coordinator's socket starved the worker after a failover).
const COMMIT_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// How often the run loop logs its state at debug level.
const STATE_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// How long the run loop sleeps when nothing is held in a tier: only a safety net, since
/// records, reports, commit answers and rebalances all wake it.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Records taken from librdkafka's queue per run-loop turn before admitting and dispatching
/// (a guess: large enough to amortise a turn, small enough to start deliveries promptly).
const RECV_BATCH: usize = 256;
/// librdkafka statistics interval, for the lag gauge (Prometheus scrapes every 15-30 s).
const STATS_INTERVAL_MS: &str = "5000";
/// How long librdkafka may try to deliver a retry/dead-letter copy before the worker sees an
/// error and tries again itself (librdkafka's default of 300 s would hide a missing topic).
const COPY_TIMEOUT_MS: &str = "10000";
/// Bytes of read-ahead librdkafka may hold per record the worker may have in flight: an
/// assumed typical event of 1 KiB, times 4 so fetches stay ahead of deliveries.
const PREFETCH_BYTES_PER_RECORD: usize = 4 * 1024;
/// Bounds on librdkafka's prefetch queue in KiB: at least one default
/// `max.partition.fetch.bytes` (1 MiB), at most 16 MiB (its 64 MiB default alone exceeds
/// DESIGN §10's 30 MiB RSS target).
const PREFETCH_KBYTES_MIN: usize = 1024;
const PREFETCH_KBYTES_MAX: usize = 16 * 1024;
/// `max.partition.fetch.bytes`: a quarter of librdkafka's 1 MiB default, so a fetch over a few
/// partitions stays within the prefetch bound (a bigger record is still returned whole).
const PARTITION_FETCH_BYTES: &str = "262144";
/// `fetch.queue.backoff.ms`: how long librdkafka waits before fetching a partition again once
/// its queue reached the prefetch bound above. Its 1,000 ms default is for a queue the
/// application drains slowly; the run loop drains it at once into the intake, so with the
/// bound at ~one fetch the default stalled every partition for up to 1 s per fetch (librdkafka's
/// CONFIGURATION.md says to lower it in exactly that case): `make bench-worker` went from
/// ~6,300 to ~16,000 events/s with ordering=key. 10 ms is a few fetch round trips on a local
/// broker, so a busy partition is fetched again about as soon as its records are taken.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// The producer's (retry and dead-letter copies) queue bound in KiB: copies are written one per
/// failing record and awaited, so a few MiB is plenty (librdkafka's default is 1 GiB).
const COPY_QUEUE_KBYTES: &str = "4096";
/// How many records one partition's intake holds, per record in flight, before the partition
/// is paused (the intake is the read-ahead the scheduler draws from).
const INTAKE_PER_IN_FLIGHT: usize = 1;
/// Least intake per partition, so a small `--max-in-flight` does not pause and resume
/// (and refetch) constantly.
const INTAKE_MIN: usize = 256;
/// How often the de-duplication store is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka settings")]
    Settings(#[from] ferry_common::kafka::Error),
    #[error("Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A retry-tier layout that cannot keep ordering through the tiers (see [`layout`]).
    #[error("{0}")]
    Layout(String),
    #[error(transparent)]
    Delivery(#[from] delivery::Error),
    #[error(transparent)]
    Dedup(#[from] dedup::Error),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::Error),
    #[error("--max-in-flight must be at least 1")]
    MaxInFlight,
    #[error("the run loop stopped unexpectedly")]
    RunLoop(#[from] tokio::task::JoinError),
}

/// `Result` of the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lane of the scheduler: a partition, optionally narrowed to one key.
type Lane = (Tp, Option<Vec<u8>>);

struct Intake {
    generation: u64,
    /// The main-topic partition its records belong to (itself, or the one a tier serves).
    main: Tp,
    held: HeldQueue<Job>,
    paused: bool,
    /// The offset after the last record received, where fetching continues after a resume.
    next: Option<i64>,
}

/// Whether a main-topic partition's records may start: closed while its tiers are scanned.
struct Gate {
    generation: u64,
    open: bool,
}

/// An attempt at reading a main-topic partition's tiers back, finished.
struct ScanDone {
    main: Tp,
    generation: u64,
    outcome: ScanOutcome,
}

enum ScanOutcome {
    /// Read to the end: the records waiting in the tiers.
    Done(Vec<rebuild::Waiting>),
    /// The attempt's time ran out; the scan goes on from where it stopped.
    Partial(Box<rebuild::Scan>),
    /// It failed; tried again later (with what it read so far, if anything).
    Failed {
        scan: Option<Box<rebuild::Scan>>,
        error: String,
        layout: bool,
    },
}

/// How long a failed tier scan waits before it is tried again.
const SCAN_RETRY: Duration = Duration::from_secs(1);
/// How long a partition whose tier layout is refused waits before the layout is checked again
/// (it changes with a rebalance, which starts a new scan anyway; this is the safety net).
const LAYOUT_RETRY: Duration = Duration::from_secs(10);

/// A delivery task's report to the run loop.
struct Report {
    lane: Option<Lane>,
    job: Job,
    finish: Finish,
}

/// Runs the worker until `shutdown` completes, then drains and commits.
pub async fn run(args: WorkerArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    if args.max_in_flight == 0 {
        return Err(Error::MaxInFlight);
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix("ferry");
    let metrics = Metrics::register(&mut registry);
    let health = Health::default();
    let server = TelemetryServer::bind(args.metrics_addr, registry, health.clone()).await?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.serve(async move {
        let _ = server_stopped.await;
    }));

    let tiers = Tiers::new(&args.topics, &args.group, &args.retry_delays);
    let ordered = args.ordering != Ordering::Unordered;
    if let Some(refused) =
        layout::refused_options(ordered && !tiers.is_empty(), &args.kafka.options)
    {
        return Err(Error::Layout(refused));
    }
    let assignment = Arc::new(Assignment::new(args.drain_timeout, metrics.clone()));
    let base = args.kafka.client_config()?;
    let consumer: StreamConsumer<WorkerContext> = consumer_config(&base, &args)
        .create_with_context(WorkerContext {
            assignment: assignment.clone(),
        })?;
    check_tiers(&consumer, &tiers, &args.topics, ordered)?;
    let copy_topics: Vec<String> = tiers
        .tier_topics()
        .cloned()
        .chain(std::iter::once(args.dead_letter_topic.clone()))
        .collect();
    let limits = copy::Limits::from_topics(copy::topic_limits(&base, &copy_topics).await.values());
    tracing::info!(
        message_max_bytes = limits.message_max_bytes,
        batch_size = limits.batch_size,
        "copy producer sized to the retry and dead-letter topics"
    );
    let mut producer_config = base.clone();
    producer_config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", COPY_TIMEOUT_MS)
        .set("queue.buffering.max.kbytes", COPY_QUEUE_KBYTES);
    limits.apply(&mut producer_config);
    // `--kafka-option` still wins, as everywhere.
    for (k, v) in &args.kafka.options {
        producer_config.set(k, v);
    }
    let producer: FutureProducer = producer_config.create()?;
    let dedup = match &args.idempotency_database_url {
        Some(url) => Some(
            DedupStore::connect(
                url.expose().to_owned(),
                args.group.clone(),
                args.idempotency_window,
            )
            .await?,
        ),
        None => None,
    };
    let context = Arc::new(Context {
        group: args.group.clone(),
        dead_letter_topic: args.dead_letter_topic.clone(),
        tiers: tiers.clone(),
        delivery: Delivery::new(args.target_url.clone(), args.timeout, args.max_connections)?,
        producer,
        dedup,
        attempts: args.retry_attempts,
        backoff: (args.retry_backoff_initial, args.retry_backoff_max),
        assignment: assignment.clone(),
        metrics: metrics.clone(),
    });
    if context.dedup.is_some() {
        let context = context.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                every.tick().await;
                if let Some(d) = &context.dedup {
                    match d.prune().await {
                        Ok(n) => tracing::info!(pruned = n, "idempotency store pruned"),
                        Err(e) => tracing::warn!(error = %e, "idempotency store prune failed"),
                    }
                }
            }
        });
    }

    let topics: Vec<String> = tiers.subscriptions();
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    health.set_ready(true);
    tracing::info!(topics = ?topics, group = %args.group, ordering = ?args.ordering, max_in_flight = args.max_in_flight, "worker started");

    let intake_high = (args.max_in_flight * INTAKE_PER_IN_FLIGHT).max(INTAKE_MIN);
    let mut run_loop = RunLoop {
        consumer: Arc::new(consumer),
        intake_high,
        intake_low: intake_high / 4,
        commit_asked: None,
        committed_at: Instant::now(),
        base: base.clone(),
        scan_timeout: args.tier_scan_timeout,
        gates: HashMap::new(),
        scans: mpsc::unbounded_channel(),
        context,
        assignment,
        ordering: args.ordering,
        max_in_flight: args.max_in_flight,
        intakes: Vec::new(),
        cursor: 0,
        scheduler: Scheduler::default(),
        parking: Parking::default(),
        in_flight: 0,
        reports: mpsc::unbounded_channel(),
        metrics,
    };
    // The run loop is a task on the runtime's worker threads rather than running on the
    // thread that awaits `run` (the main thread, under `#[tokio::main]`): the deliveries it
    // spawns and the reports they send then stay in the workers' local queues instead of
    // waking another thread for every record.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain_timeout = args.drain_timeout;
    let mut looping = tokio::spawn(async move {
        run_loop
            .run(async {
                let _ = stopped.await;
            })
            .await;
        run_loop.drain(drain_timeout).await;
        run_loop
    });
    tokio::pin!(shutdown);
    let run_loop = tokio::select! {
        () = &mut shutdown => {
            let _ = stop.send(());
            looping.await
        }
        joined = &mut looping => joined,
    }?;
    health.set_ready(false);
    run_loop.assignment.close();
    drop(run_loop);
    let _ = stop_server.send(());
    if let Ok(Err(e)) = server.await {
        tracing::warn!(error = %e, "telemetry server stopped with an error");
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// The consumer's settings: librdkafka's at-least-once pattern (offsets stored by the worker
/// once done, committed by librdkafka in the background and on request) and a prefetch bounded
/// by `--max-in-flight`.
fn consumer_config(base: &ClientConfig, args: &WorkerArgs) -> ClientConfig {
    let prefetch_kbytes = (args.max_in_flight * PREFETCH_BYTES_PER_RECORD / 1024)
        .clamp(PREFETCH_KBYTES_MIN, PREFETCH_KBYTES_MAX);
    let mut config = base.clone();
    config
        .set("group.id", &args.group)
        // The worker commits what it stored itself, one request at a time (see
        // `RunLoop::commit`; on revocation and close synchronously): librdkafka's background
        // commit sends a request every interval whether or not the last one was answered, and
        // a slow coordinator then falls ever further behind. librdkafka refuses to store
        // offsets of partitions no longer assigned.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", args.start_from.as_str())
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", prefetch_kbytes.to_string())
        // librdkafka prefetches until either bound is met; its 100,000-record default would
        // hold far more small records than the worker can have in flight.
        .set(
            "queued.min.messages",
            (args.max_in_flight * INTAKE_PER_IN_FLIGHT)
                .max(INTAKE_MIN)
                .to_string(),
        )
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("max.partition.fetch.bytes", PARTITION_FETCH_BYTES)
        // librdkafka raises it to at least `message.max.bytes` (1 MB by default) by itself.
        .set("fetch.max.bytes", (prefetch_kbytes * 1024).to_string())
        // Range assignment gives one member the same partition number of a topic and of its
        // tiers, so a key's main and tier records meet in one worker's bookkeeping.
        .set("partition.assignment.strategy", "range");
    // `--kafka-option` wins over these defaults, as it does over the shared settings.
    for (k, v) in &args.kafka.options {
        config.set(k, v);
    }
    config
}

/// Asks librdkafka to commit the stored offsets of the current assignment now, without
/// waiting: the answer arrives on the consumer's own queue as an offset-commit event, which
/// the run loop's poll hands to [`WorkerContext`]'s commit callback like the answers of the
/// background commits. rdkafka's `commit(.., CommitMode::Async)` cannot do this: librdkafka
/// answers a plain asynchronous commit only to an `offset_commit_cb`, which rdkafka does not
/// set, and a synchronous commit would block the run loop for a round trip.
fn commit_stored(consumer: &StreamConsumer<WorkerContext>) -> KafkaResult<()> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live consumer's handle (we hold `consumer`). The queue handle from
    // `rd_kafka_queue_get_consumer` is a new reference, destroyed once below after the
    // request took its own; null offsets mean the assignment's stored offsets; a null
    // callback makes librdkafka post the result as an event on that queue.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        if queue.is_null() {
            return Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::UnknownGroup,
            ));
        }
        let err =
            rd::rd_kafka_commit_queue(rk, std::ptr::null(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(rdkafka::error::KafkaError::ConsumerCommit(err.into()))
    }
}

/// The retry tiers must exist with the partitions of their main topic: a record is copied to
/// its own partition number, and (ordered) tier partition P must be worked with the topic's
/// partition P (see [`layout`]).
fn check_tiers(
    consumer: &StreamConsumer<WorkerContext>,
    tiers: &Tiers,
    topics: &[String],
    ordered: bool,
) -> Result<()> {
    let fetch = |topic: &str| -> Result<usize> {
        let md = tokio::task::block_in_place(|| {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(30))
        })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    };
    for main in topics {
        if tiers.is_empty() {
            break;
        }
        let needed = fetch(main)?;
        for tier in 0..tiers.len() {
            let Some(topic) = tiers.topic(main, tier) else {
                continue;
            };
            let found = fetch(topic)?;
            if let Some(refused) = layout::refused_counts(ordered, topic, found, main, needed) {
                return Err(Error::Layout(refused));
            }
        }
    }
    Ok(())
}

struct RunLoop {
    consumer: Arc<StreamConsumer<WorkerContext>>,
    /// Records one partition's intake holds before the partition is paused.
    intake_high: usize,
    /// A paused partition resumes once its intake drains to this.
    intake_low: usize,
    /// The commit-answer count and time when the worker last asked for a commit, until an
    /// answer arrives: one request at a time.
    commit_asked: Option<(u64, Instant)>,
    /// When the worker last asked for a commit (paces the commits of a window not filling up).
    committed_at: Instant,
    /// The shared Kafka settings, for the tier scans' consumers.
    base: ClientConfig,
    /// How long one attempt at reading a partition's tiers may take (`--tier-scan-timeout`).
    scan_timeout: Duration,
    /// Per assigned main partition (ordered retries only): whether its tiers were read.
    gates: HashMap<Tp, Gate>,
    /// Finished tier scans.
    scans: (
        mpsc::UnboundedSender<ScanDone>,
        mpsc::UnboundedReceiver<ScanDone>,
    ),
    context: Arc<Context>,
    assignment: Arc<Assignment>,
    ordering: Ordering,
    max_in_flight: usize,
    intakes: Vec<(Tp, Intake)>,
    cursor: usize,
    scheduler: Scheduler<Lane, Job>,
    parking: Parking<(Arc<str>, Vec<u8>)>,
    in_flight: usize,
    reports: (
        mpsc::UnboundedSender<Report>,
        mpsc::UnboundedReceiver<Report>,
    ),
    metrics: Metrics,
}

impl RunLoop {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        // One stream for the worker's life: `recv()` would register a waker slot per record.
        let mut stream = consumer.stream();
        let mut state_at = Instant::now() + STATE_LOG_INTERVAL;
        let mut turns: u64 = 0;
        loop {
            self.fill();
            self.dispatch();
            self.commit();
            let now = Instant::now();
            if now >= state_at {
                self.log_state(turns);
                turns = 0;
                state_at = now + STATE_LOG_INTERVAL;
            }
            turns += 1;
            let wake = self
                .intakes
                .iter()
                .filter_map(|(_, i)| i.held.waiting_until(now))
                .min()
                .unwrap_or(now + IDLE_WAKE)
                .min(state_at)
                .min(self.commit_due().unwrap_or(state_at));
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                // Rare events first, so a steady stream of records and reports cannot starve
                // them.
                () = self.assignment.changed.notified() => self.forget_stale(),
                Some(done) = self.scans.1.recv() => self.on_scan(done),
                () = self.assignment.committed.notified() => {}
                Some(report) = self.reports.1.recv() => {
                    self.on_report(report);
                    while let Ok(report) = self.reports.1.try_recv() {
                        self.on_report(report);
                    }
                }
                message = stream.next() => {
                    self.on_received(message);
                    // Take what librdkafka already holds before admitting and dispatching.
                    for _ in 1..RECV_BATCH {
                        match stream.next().now_or_never() {
                            Some(message) => self.on_received(message),
                            None => break,
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// One debug line with where records are (the profile of a busy worker).
    fn log_state(&self, turns: u64) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let held: usize = self.intakes.iter().map(|(_, i)| i.held.len()).sum();
        let paused = self.intakes.iter().filter(|(_, i)| i.paused).count();
        tracing::debug!(
            turns,
            held,
            paused,
            queued = self.scheduler.queued(),
            in_flight = self.in_flight,
            window = self.assignment.window(),
            committing = self.commit_asked.is_some(),
            "run loop state"
        );
    }

    fn on_received(&mut self, message: Option<KafkaResult<BorrowedMessage<'_>>>) {
        match message {
            Some(Ok(m)) => self.on_message(m.detach()),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
    }

    /// Files a record read from Kafka into its partition's intake.
    fn on_message(&mut self, message: rdkafka::message::OwnedMessage) {
        let tp: Tp = (Arc::from(message.topic()), message.partition());
        let Some(generation) = self.assignment.generation(&tp) else {
            return;
        };
        let Some(source) = self.context.tiers.source(message.topic()).cloned() else {
            return;
        };
        let now = Instant::now();
        let (main_topic, tier, due, origin) = match source {
            Source::Main => (tp.0.clone(), None, now, (tp.1, message.offset())),
            Source::Tier { topic, tier } => {
                let value = |name: &str| retry::header_i64(&message, name);
                let not_before = value(retry::NOT_BEFORE_HEADER).unwrap_or(0);
                let due = retry::due_instant(
                    u64::try_from(not_before).unwrap_or(0),
                    std::time::SystemTime::now(),
                    now,
                );
                let origin = (
                    value(retry::ORIGINAL_PARTITION_HEADER)
                        .and_then(|p| i32::try_from(p).ok())
                        .unwrap_or(tp.1),
                    value(retry::ORIGINAL_OFFSET_HEADER).unwrap_or(message.offset()),
                );
                (Arc::from(topic.as_str()), Some(tier), due, origin)
            }
        };
        let fresh = || Intake {
            generation,
            main: (main_topic.clone(), tp.1),
            held: HeldQueue::default(),
            paused: false,
            next: None,
        };
        let index = match self.intakes.iter().position(|(t, _)| *t == tp) {
            Some(i) => i,
            None => {
                self.intakes.push((tp.clone(), fresh()));
                self.intakes.len() - 1
            }
        };
        let intake = &mut self.intakes[index].1;
        if intake.generation != generation {
            *intake = fresh();
        }
        intake.next = Some(message.offset() + 1);
        intake.held.push(
            due,
            Job {
                tp,
                generation,
                message,
                main_topic,
                tier,
                origin,
            },
        );
    }

    /// Moves due records from the intakes into the scheduler while the window has room, round
    /// robin over partitions, and pauses or resumes partitions by their intake.
    fn fill(&mut self) {
        let now = Instant::now();
        let mut window = self.assignment.window();
        let n = self.intakes.len();
        let ordered_retries = self.ordered_retries();
        let mut idle_rounds = 0;
        while window < self.max_in_flight && n > 0 && idle_rounds < n {
            self.cursor = (self.cursor + 1) % n;
            let (tp, intake) = &mut self.intakes[self.cursor];
            let gate_open = match self.gates.get(&intake.main) {
                Some(gate) => gate.open,
                // No gate: nothing to read back (no ordered retries); or a partition assigned
                // a moment ago whose gate the run loop has yet to close; or a tier partition
                // whose topic partition is not this worker's, held: its records belong with
                // that partition's owner (see `layout`).
                None => !ordered_retries,
            };
            let Some(job) = gate_open.then(|| intake.held.pop_due(now)).flatten() else {
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            if !self
                .assignment
                .admit(tp, intake.generation, job.message.offset())
            {
                continue;
            }
            window += 1;
            let lane = self.lane(&job);
            self.scheduler.push(lane, job);
        }
        for (tp, intake) in &mut self.intakes {
            let want_pause =
                intake.held.len() >= self.intake_high || intake.held.waiting_until(now).is_some();
            let want_resume = !want_pause && intake.held.len() <= self.intake_low;
            if want_pause != intake.paused && (want_pause || want_resume) {
                let mut list = TopicPartitionList::new();
                list.add_partition(&tp.0, tp.1);
                let result = if want_pause {
                    self.consumer.pause(&list)
                } else {
                    // Seek to where the intake ends: a partition paused right after an
                    // assignment was seen not to fetch again on a bare resume (librdkafka
                    // 2.12), and the seek also drops anything fetched twice.
                    self.consumer
                        .resume(&list)
                        .and_then(|()| match intake.next {
                            Some(next) => self.consumer.seek(
                                &tp.0,
                                tp.1,
                                rdkafka::Offset::Offset(next),
                                Duration::ZERO,
                            ),
                            None => Ok(()),
                        })
                };
                match result {
                    Ok(()) => {
                        tracing::debug!(topic = %tp.0, partition = tp.1, paused = want_pause, held = intake.held.len(), "intake flow control");
                        intake.paused = want_pause;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "pause/resume failed")
                    }
                }
            }
        }
    }

    fn lane(&self, job: &Job) -> Option<Lane> {
        match self.ordering {
            Ordering::Partition => Some((job.tp.clone(), None)),
            Ordering::Key => job
                .message
                .key()
                .map(|k| (job.tp.clone(), Some(k.to_vec()))),
            Ordering::Unordered => None,
        }
    }

    /// Whether records wait in tiers in order (ordering key or partition, with tiers).
    fn ordered_retries(&self) -> bool {
        self.ordering != Ordering::Unordered && !self.context.tiers.is_empty()
    }

    fn parking_key(&self, job: &Job) -> Option<(Arc<str>, Vec<u8>)> {
        self.parking_key_of(&job.main_topic, job.message.key(), job.origin.0)
    }

    /// What a record's order is kept by through the tiers: its key (ordering=key; null keys
    /// are unordered), or its partition (ordering=partition: every later record of the
    /// partition follows one that waits in a tier, whatever its key). Without tiers nothing is
    /// ever parked: no key to copy per record.
    fn parking_key_of(
        &self,
        main: &Arc<str>,
        key: Option<&[u8]>,
        partition: i32,
    ) -> Option<(Arc<str>, Vec<u8>)> {
        if self.context.tiers.is_empty() {
            return None;
        }
        match self.ordering {
            Ordering::Key => key.map(|k| (main.clone(), k.to_vec())),
            Ordering::Partition => Some((main.clone(), partition.to_be_bytes().to_vec())),
            Ordering::Unordered => None,
        }
    }

    /// Starts ready records while fewer than `--max-in-flight` run.
    fn dispatch(&mut self) {
        while self.in_flight < self.max_in_flight {
            let Some((lane, job)) = self.scheduler.pop_ready() else {
                break;
            };
            if !self
                .assignment
                .start(&job.tp, job.generation, job.message.offset())
            {
                // Its partition was revoked since it was read.
                self.scheduler.complete(lane.as_ref());
                continue;
            }
            let route = match self.parking_key(&job) {
                Some(key) if job.tier.is_none() => self.parking.route_new(&key, job.origin),
                Some(key) => self.parking.route_due(&key, job.origin),
                None => Route::Deliver,
            };
            self.in_flight += 1;
            let context = self.context.clone();
            let reports = self.reports.0.clone();
            tokio::spawn(async move {
                let finish = context.process(&job, route).await;
                let _ = reports.send(Report { lane, job, finish });
            });
        }
        self.metrics.set_in_flight(self.in_flight);
    }

    fn on_report(&mut self, report: Report) {
        let Report { lane, job, finish } = report;
        self.in_flight -= 1;
        // A report of an older assignment says nothing about today's index: the scan at
        // assignment rebuilt it from the tier topics.
        if let Some(key) = self.parking_key(&job)
            && self.assignment.is_current(&job.tp, job.generation)
        {
            match finish {
                Finish::Parked { tier } => self.parking.parked(&key, job.origin, tier),
                Finish::Done(_) => self.parking.left(&key, job.origin),
                // An abandoned tier record still waits in its tier (uncommitted there); an
                // abandoned main-topic record was never copied.
                Finish::Abandoned if job.tier.is_none() => self.parking.left(&key, job.origin),
                Finish::Abandoned => {}
            }
        }
        self.scheduler.complete(lane.as_ref());
    }

    /// Drops queued work of partitions that are no longer ours (or were re-assigned), and
    /// with ordered retries, starts rebuilding the index of newly assigned main partitions.
    fn forget_stale(&mut self) {
        let assignment = &self.assignment;
        self.intakes
            .retain(|(tp, intake)| assignment.is_current(tp, intake.generation));
        self.scheduler
            .retain(|job| assignment.is_current(&job.tp, job.generation));
        if !self.ordered_retries() {
            return;
        }
        for (tp, generation) in self.assignment.partitions() {
            if self.context.tiers.source(&tp.0) != Some(&Source::Main)
                || self
                    .gates
                    .get(&tp)
                    .is_some_and(|g| g.generation == generation)
            {
                continue;
            }
            // Closed until the scan is back: none of the partition's records start before.
            self.gates.insert(
                tp.clone(),
                Gate {
                    generation,
                    open: false,
                },
            );
            let (topic, partition) = (tp.0.clone(), tp.1);
            self.parking
                .forget(|(t, _), origin| *t == topic && origin.0 == partition);
            self.start_scan(tp, generation, Duration::ZERO, None);
        }
        let assignment = &self.assignment;
        self.gates
            .retain(|tp, g| assignment.is_current(tp, g.generation));
        let gates = &self.gates;
        self.parking
            .forget(|(t, _), origin| !gates.contains_key(&(t.clone(), origin.0)));
    }

    /// Reads main partition `main`'s tier partitions on a blocking thread, after `delay`, for
    /// one attempt of `--tier-scan-timeout`, going on with `scan` if an earlier attempt began.
    fn start_scan(
        &self,
        main: Tp,
        generation: u64,
        delay: Duration,
        scan: Option<Box<rebuild::Scan>>,
    ) {
        let tiers: Vec<(usize, String)> = (0..self.context.tiers.len())
            .filter_map(|i| {
                self.context
                    .tiers
                    .topic(&main.0, i)
                    .map(|t| (i, t.to_owned()))
            })
            .collect();
        let subscription = self.context.tiers.subscriptions();
        let base = self.base.clone();
        let group = self.context.group.clone();
        let budget = self.scan_timeout;
        let done = self.scans.0.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let (topic, partition) = (main.0.to_string(), main.1);
            let outcome = tokio::task::spawn_blocking(move || {
                let mut scan = match scan {
                    Some(scan) => scan,
                    None => match rebuild::Scan::new(
                        &base,
                        &group,
                        &topic,
                        partition,
                        tiers,
                        subscription,
                    ) {
                        Ok(scan) => Box::new(scan),
                        Err(e) => {
                            return ScanOutcome::Failed {
                                scan: None,
                                error: ferry_common::errors::chain(&e),
                                layout: false,
                            };
                        }
                    },
                };
                match scan.resume(budget) {
                    Ok(true) => ScanOutcome::Done(scan.into_waiting()),
                    Ok(false) => ScanOutcome::Partial(scan),
                    Err(e) => ScanOutcome::Failed {
                        layout: matches!(e, rebuild::Error::Layout(_)),
                        error: ferry_common::errors::chain(&e),
                        scan: Some(scan),
                    },
                }
            })
            .await
            .unwrap_or_else(|e| ScanOutcome::Failed {
                scan: None,
                error: e.to_string(),
                layout: false,
            });
            let _ = done.send(ScanDone {
                main,
                generation,
                outcome,
            });
        });
    }

    /// An attempt at a scan came back: once read to the end (and the layout holds), its
    /// waiting records go into the index and the gate opens; otherwise the scan goes on or is
    /// tried again, the gate staying closed meanwhile.
    fn on_scan(&mut self, done: ScanDone) {
        let ScanDone {
            main,
            generation,
            outcome,
        } = done;
        if self
            .gates
            .get(&main)
            .is_none_or(|g| g.generation != generation)
        {
            // Stale: its consumer is closed on a blocking thread, not on the run loop.
            let scan = match outcome {
                ScanOutcome::Partial(scan) => Some(scan),
                ScanOutcome::Failed { scan, .. } => scan,
                ScanOutcome::Done(_) => None,
            };
            if let Some(scan) = scan {
                tokio::task::spawn_blocking(move || drop(scan));
            }
            return;
        }
        match outcome {
            ScanOutcome::Done(waiting) => {
                // Every tier partition of this partition must be this worker's too (see `layout`).
                let strays: Vec<&str> = (0..self.context.tiers.len())
                    .filter_map(|i| self.context.tiers.topic(&main.0, i))
                    .filter(|t| {
                        self.assignment
                            .generation(&(Arc::from(*t), main.1))
                            .is_none()
                    })
                    .collect();
                if !strays.is_empty() {
                    tracing::warn!(topic = %main.0, partition = main.1, tiers = ?strays, "the partition's retry tiers are assigned to another worker (an assignor that does not co-partition, or members that subscribe differently); the partition waits");
                    self.start_scan(main, generation, LAYOUT_RETRY, None);
                    return;
                }
                tracing::info!(topic = %main.0, partition = main.1, waiting = waiting.len(), "retry tiers read; partition open");
                for (key, origin, tier) in waiting {
                    if let Some(key) = self.parking_key_of(&main.0, key.as_deref(), origin.0) {
                        self.parking.parked(&key, origin, tier);
                    }
                }
                if let Some(gate) = self.gates.get_mut(&main) {
                    gate.open = true;
                }
            }
            ScanOutcome::Partial(scan) => {
                tracing::debug!(topic = %main.0, partition = main.1, found = scan.found(), "retry tiers partly read; going on");
                self.start_scan(main, generation, Duration::ZERO, Some(scan));
            }
            ScanOutcome::Failed {
                scan,
                error,
                layout: true,
            } => {
                tracing::warn!(topic = %main.0, partition = main.1, error, "retry-tier layout refused; the partition waits and the layout is checked again");
                self.start_scan(main, generation, LAYOUT_RETRY, scan);
            }
            ScanOutcome::Failed { scan, error, .. } => {
                tracing::warn!(topic = %main.0, partition = main.1, error, "cannot read the retry tiers; the partition waits and the read is retried where it stopped");
                self.start_scan(main, generation, SCAN_RETRY, scan);
            }
        }
    }

    /// Hands the moved watermarks to librdkafka's offset store and asks Kafka to commit the
    /// stored offsets — every `COMMIT_INTERVAL`, and at once when the window is a quarter full
    /// so the window, which shrinks only once Kafka acknowledged a commit, keeps room to admit.
    /// At most one request is outstanding: watermarks that move meanwhile wait in the store and
    /// go with the next request, so commits never come faster than the coordinator answers.
    /// Nothing here waits for Kafka: the answer comes through the consumer's commit callback,
    /// served by the poll, and wakes the run loop.
    fn commit(&mut self) {
        if let Some(list) = self.assignment.take_stores()
            && let Err(e) = self.consumer.store_offsets(&list)
        {
            // E.g. a partition revoked in between: librdkafka refuses; offered again if ours.
            tracing::debug!(error = %e, offsets = ?list, "offsets not stored");
            self.assignment.commit_answered(&list, false);
        }
        if let Some((answers, at)) = self.commit_asked {
            if self.assignment.commit_answers() == answers && at.elapsed() < COMMIT_ANSWER_WAIT {
                return;
            }
            if self.assignment.commit_answers() == answers {
                tracing::warn!("no answer to the last commit request; asking again");
            }
        }
        self.commit_asked = None;
        if self.commit_due().is_none_or(|due| due > Instant::now()) {
            return;
        }
        match commit_stored(&self.consumer) {
            Ok(()) => {
                let now = Instant::now();
                self.commit_asked = Some((self.assignment.commit_answers(), now));
                self.committed_at = now;
            }
            Err(e) => {
                // Refused before it was sent (no group yet): try again after an interval, not
                // at once, which with a full window would spin the run loop.
                tracing::debug!(error = %e, "commit request refused");
                self.committed_at = Instant::now() + COMMIT_INTERVAL;
            }
        }
    }

    /// When the next commit request is due, if one is: something stored awaits its commit
    /// and no request is outstanding (a timed wake-up is then not needed: the answer wakes).
    fn commit_due(&self) -> Option<Instant> {
        if self.commit_asked.is_some() || !self.assignment.awaiting_commit() {
            return None;
        }
        if self.assignment.window() * COMMIT_AT_WINDOW_DIVISOR >= self.max_in_flight {
            return Some(self.committed_at);
        }
        Some(self.committed_at + COMMIT_INTERVAL)
    }

    /// After shutdown: no new work; running deliveries get until `timeout`; then the watermark
    /// is committed synchronously.
    async fn drain(&mut self, timeout: Duration) {
        tracing::info!(in_flight = self.in_flight, "draining");
        let deadline = Instant::now() + timeout;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, self.reports.1.recv()).await {
                Ok(Some(report)) => {
                    self.in_flight -= 1;
                    drop(report);
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        in_flight = self.in_flight,
                        "drain deadline passed; abandoning running deliveries"
                    );
                    break;
                }
            }
        }
        if let Some(list) = self.assignment.commits_due() {
            let result =
                tokio::task::block_in_place(|| self.consumer.commit(&list, CommitMode::Sync));
            self.assignment.commit_answered(&list, result.is_ok());
            match result {
                Ok(()) => tracing::info!(offsets = ?list, "final commit"),
                Err(e) => tracing::warn!(error = %e, "final commit failed; a restart redelivers"),
            }
        }
    }
}
