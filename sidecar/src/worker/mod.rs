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
pub mod dedup;
pub mod delivery;
pub mod metrics;
pub mod process;
pub mod retry;
pub mod scheduler;
pub mod watermark;

use std::{sync::Arc, time::Duration};

use rdkafka::{
    ClientConfig, Message, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::Headers,
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

/// How often the watermark is committed when the window is not filling up; bounds how much
/// a crash redelivers at low rates (a fraction of librdkafka's 5 s auto-commit default).
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// librdkafka statistics interval, for the lag gauge (Prometheus scrapes every 15-30 s).
const STATS_INTERVAL_MS: &str = "5000";
/// How long librdkafka may try to deliver a retry/dead-letter copy before the worker sees an
/// error and tries again itself (librdkafka's default of 300 s would hide a missing topic).
const COPY_TIMEOUT_MS: &str = "10000";
/// librdkafka's prefetch cap in KiB (its default, 65536, alone exceeds DESIGN §10's 30 MiB
/// RSS target); the intake below holds the rest of the read-ahead.
const PREFETCH_KBYTES: &str = "8192";
/// How many records one partition's intake holds before the partition is paused.
const INTAKE_HIGH: usize = 2_000;
/// Paused partitions resume once their intake drains below this.
const INTAKE_LOW: usize = 500;
/// How often the de-duplication store is pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Errors that stop the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka settings")]
    Settings(#[from] ferry_common::kafka::Error),
    #[error("Kafka client")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "retry topic {topic} is missing or has fewer partitions ({found}) than {main} ({needed}); create it first"
    )]
    RetryTopic {
        topic: String,
        main: String,
        found: usize,
        needed: usize,
    },
    #[error(transparent)]
    Delivery(#[from] delivery::Error),
    #[error(transparent)]
    Dedup(#[from] dedup::Error),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::Error),
    #[error("--max-in-flight must be at least 1")]
    MaxInFlight,
}

/// `Result` of the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lane of the scheduler: a partition, optionally narrowed to one key.
type Lane = (Tp, Option<Vec<u8>>);

struct Intake {
    generation: u64,
    held: HeldQueue<Job>,
    paused: bool,
    /// The offset after the last record received, where fetching continues after a resume.
    next: Option<i64>,
}

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
    let assignment = Arc::new(Assignment::new(args.drain_timeout, metrics.clone()));
    let base = args.kafka.client_config()?;
    let consumer: StreamConsumer<WorkerContext> = consumer_config(&base, &args)
        .create_with_context(WorkerContext {
            assignment: assignment.clone(),
        })?;
    check_tiers(&consumer, &tiers, &args.topics)?;
    let producer: FutureProducer = base
        .clone()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", COPY_TIMEOUT_MS)
        .create()?;
    let dedup = match &args.idempotency_database_url {
        Some(url) => Some(
            DedupStore::connect(url.clone(), args.group.clone(), args.idempotency_window).await?,
        ),
        None => None,
    };
    let context = Arc::new(Context {
        group: args.group.clone(),
        dead_letter_topic: args.dead_letter_topic.clone(),
        tiers: tiers.clone(),
        delivery: Delivery::new(args.target_url.clone(), args.timeout)?,
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

    let mut run_loop = RunLoop {
        consumer,
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
    run_loop.run(shutdown).await;
    run_loop.drain(args.drain_timeout).await;
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

fn consumer_config(base: &ClientConfig, args: &WorkerArgs) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", args.start_from.as_str())
        .set("statistics.interval.ms", STATS_INTERVAL_MS)
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
        // Range assignment gives one member the same partition number of a topic and of its
        // tiers, so a key's main and tier records meet in one worker's bookkeeping.
        .set("partition.assignment.strategy", "range");
    // `--kafka-option` wins over these defaults, as it does over the shared settings.
    for (k, v) in &args.kafka.options {
        config.set(k, v);
    }
    config
}

/// The retry tiers must exist with at least the partitions of their main topic, since a
/// record is copied to its own partition number.
fn check_tiers(
    consumer: &StreamConsumer<WorkerContext>,
    tiers: &Tiers,
    topics: &[String],
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
            if found == 0 || found < needed {
                return Err(Error::RetryTopic {
                    topic: topic.to_owned(),
                    main: main.clone(),
                    found,
                    needed,
                });
            }
        }
    }
    Ok(())
}

struct RunLoop {
    consumer: StreamConsumer<WorkerContext>,
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
        let mut commit_at = Instant::now() + COMMIT_INTERVAL;
        loop {
            self.fill();
            self.dispatch();
            let window = self.assignment.window();
            if Instant::now() >= commit_at || window * 2 >= self.max_in_flight {
                self.commit();
                commit_at = Instant::now() + COMMIT_INTERVAL;
            }
            let now = Instant::now();
            let wake = self
                .intakes
                .iter()
                .filter_map(|(_, i)| i.held.waiting_until(now))
                .min()
                .map_or(commit_at, |w| w.min(commit_at));
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                Some(report) = self.reports.1.recv() => self.on_report(report),
                message = self.consumer.recv() => match message {
                    Ok(m) => self.on_message(m.detach()),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                },
                () = self.assignment.changed.notified() => self.forget_stale(),
                () = tokio::time::sleep_until(wake) => {}
            }
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
                let value = |name: &str| {
                    message
                        .headers()
                        .and_then(|h| h.iter().find(|x| x.key == name))
                        .and_then(|h| std::str::from_utf8(h.value?).ok())
                        .and_then(|v| v.parse::<i64>().ok())
                };
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
        let index = match self.intakes.iter().position(|(t, _)| *t == tp) {
            Some(i) => i,
            None => {
                self.intakes.push((
                    tp.clone(),
                    Intake {
                        generation,
                        held: HeldQueue::default(),
                        paused: false,
                        next: None,
                    },
                ));
                self.intakes.len() - 1
            }
        };
        let intake = &mut self.intakes[index].1;
        if intake.generation != generation {
            *intake = Intake {
                generation,
                held: HeldQueue::default(),
                paused: false,
                next: None,
            };
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
        let mut idle_rounds = 0;
        while window < self.max_in_flight && n > 0 && idle_rounds < n {
            self.cursor = (self.cursor + 1) % n;
            let (tp, intake) = &mut self.intakes[self.cursor];
            let Some(job) = intake.held.pop_due(now) else {
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
                intake.held.len() >= INTAKE_HIGH || intake.held.waiting_until(now).is_some();
            let want_resume = !want_pause && intake.held.len() <= INTAKE_LOW;
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

    fn parking_key(&self, job: &Job) -> Option<(Arc<str>, Vec<u8>)> {
        (self.ordering == Ordering::Key)
            .then(|| job.message.key())
            .flatten()
            .map(|k| (job.main_topic.clone(), k.to_vec()))
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
        if let Some(key) = self.parking_key(&job) {
            match finish {
                Finish::Parked { tier } => self.parking.parked(&key, job.origin, tier),
                Finish::Done(_) | Finish::Abandoned => self.parking.left(&key, job.origin),
            }
        }
        self.scheduler.complete(lane.as_ref());
    }

    /// Drops queued work of partitions that are no longer ours (or were re-assigned).
    fn forget_stale(&mut self) {
        let assignment = &self.assignment;
        self.intakes
            .retain(|(tp, intake)| assignment.is_current(tp, intake.generation));
        self.scheduler
            .retain(|job| assignment.is_current(&job.tp, job.generation));
    }

    /// Commits the moved watermarks synchronously; the window shrinks only once Kafka has
    /// acknowledged them, so the window bounds what a crash redelivers. (Commit-callback
    /// acknowledgements of asynchronous commits did not reach this consumer's queue in
    /// rdkafka 0.39's `StreamConsumer`; one synchronous round trip per half window is cheap.)
    fn commit(&self) {
        let Some(list) = self.assignment.take_commits() else {
            return;
        };
        let result = tokio::task::block_in_place(|| self.consumer.commit(&list, CommitMode::Sync));
        self.assignment.commit_answered(&list, result.is_ok());
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed; retried with the next one");
        }
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
        if let Some(list) = self.assignment.take_commits() {
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
