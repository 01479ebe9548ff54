//! The run loop: the one task that moves records from Kafka to the delivery tasks and their
//! results back into commits.
//!
//! Each turn takes the same named steps — [`admit`](RunLoop::admit) due records from the
//! intakes into the scheduler while the window has room, [`flow`](RunLoop::flow) (pause or
//! resume partitions by their intake), [`dispatch`](RunLoop::dispatch) ready records to
//! delivery tasks while fewer than `--max-in-flight` run, and [`commit`](Committer::step) —
//! then waits for the next event: a rebalance ([`RunLoop::on_rebalance`]), a finished tier scan
//! ([`RunLoop::on_scan`]), a commit answer, delivery reports ([`RunLoop::on_report`]) or
//! records ([`RunLoop::on_record`]), or a timer (a tier record coming due, the state line, the
//! next commit). Rare events are served first, so a steady stream of records and reports
//! cannot starve them. After shutdown, [`RunLoop::drain`] lets running deliveries finish and
//! commits.

mod dispatch;
mod rebalance;
mod records;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use rdkafka::{ClientConfig, consumer::StreamConsumer};
use tokio::{sync::mpsc, time::Instant};

use super::{
    assignment::{Assignment, Tp},
    commit::Committer,
    config::Ordering,
    consumer::WorkerContext,
    finish::Finish,
    intake::{self, Intake},
    lanes::{Lane, ParkingKey},
    metrics::Metrics,
    process::{Context, Job},
    retry::Parking,
    scan::{Gate, ScanDone},
    scheduler::Scheduler,
};

/// How often the run loop logs its state at debug level.
const STATE_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// How long the run loop sleeps when nothing is held in a tier: only a safety net, since
/// records, reports, commit answers and rebalances all wake it.
const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Records taken from librdkafka's queue per run-loop turn before admitting and dispatching
/// (a guess: large enough to amortise a turn, small enough to start deliveries promptly).
const RECV_BATCH: usize = 256;

/// A delivery task's report to the run loop.
struct Report {
    lane: Option<Lane>,
    job: Job,
    finish: Finish,
}

/// What the run loop is built from (see [`RunLoop::new`]).
pub struct Parts {
    pub consumer: Arc<StreamConsumer<WorkerContext>>,
    pub context: Arc<Context>,
    pub assignment: Arc<Assignment>,
    /// The shared Kafka settings, for the tier scans' consumers.
    pub base: ClientConfig,
    pub ordering: Ordering,
    pub max_in_flight: usize,
    /// How long one attempt at reading a partition's tiers may take (`--tier-scan-timeout`).
    pub scan_timeout: Duration,
    pub metrics: Metrics,
}

/// The run loop's state; owned by its task.
pub struct RunLoop {
    consumer: Arc<StreamConsumer<WorkerContext>>,
    /// Records one partition's intake holds before the partition is paused.
    intake_high: usize,
    /// A paused partition resumes once its intake drains to this.
    intake_low: usize,
    committer: Committer,
    base: ClientConfig,
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
    /// Per partition read from, its intake (few partitions: a vector beats a map here).
    intakes: Vec<(Tp, Intake)>,
    /// The intake `admit` looks at next (round robin).
    cursor: usize,
    scheduler: Scheduler<Lane, Job>,
    /// Per parking key, the records waiting in tiers (ordered retries).
    parking: Parking<ParkingKey>,
    in_flight: usize,
    reports: (
        mpsc::UnboundedSender<Report>,
        mpsc::UnboundedReceiver<Report>,
    ),
    metrics: Metrics,
}

impl RunLoop {
    /// A run loop with empty intakes, nothing in flight and nothing asked of Kafka yet.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            consumer,
            context,
            assignment,
            base,
            ordering,
            max_in_flight,
            scan_timeout,
            metrics,
        } = parts;
        let intake_high = intake::high_mark(max_in_flight);
        Self {
            committer: Committer::new(consumer.clone(), assignment.clone(), max_in_flight),
            consumer,
            intake_high,
            intake_low: intake::low_mark(intake_high),
            base,
            scan_timeout,
            gates: HashMap::new(),
            scans: mpsc::unbounded_channel(),
            context,
            assignment,
            ordering,
            max_in_flight,
            intakes: Vec::new(),
            cursor: 0,
            scheduler: Scheduler::default(),
            parking: Parking::default(),
            in_flight: 0,
            reports: mpsc::unbounded_channel(),
            metrics,
        }
    }

    /// Turns until `shutdown` completes (see the module doc).
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let consumer = self.consumer.clone();
        // One stream for the worker's life: `recv()` would register a waker slot per record.
        let mut stream = consumer.stream();
        let mut state_at = Instant::now() + STATE_LOG_INTERVAL;
        let mut turns: u64 = 0;
        loop {
            self.admit();
            self.flow();
            self.dispatch();
            self.committer.step();
            let now = Instant::now();
            if now >= state_at {
                self.log_state(turns);
                turns = 0;
                state_at = now + STATE_LOG_INTERVAL;
            }
            turns += 1;
            let wake = self.next_wake(now, state_at);
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = self.assignment.changed.notified() => self.on_rebalance(),
                Some(done) = self.scans.1.recv() => self.on_scan(done),
                () = self.assignment.committed.notified() => {}
                Some(report) = self.reports.1.recv() => {
                    self.on_report(report);
                    while let Ok(report) = self.reports.1.try_recv() {
                        self.on_report(report);
                    }
                }
                message = stream.next() => {
                    self.on_record(message);
                    // Take what librdkafka already holds before admitting and dispatching.
                    for _ in 1..RECV_BATCH {
                        match stream.next().now_or_never() {
                            Some(message) => self.on_record(message),
                            None => break,
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// When the loop must wake even if nothing happens: the first held tier record coming
    /// due, the state line, or the next commit.
    fn next_wake(&self, now: Instant, state_at: Instant) -> Instant {
        self.intakes
            .iter()
            .filter_map(|(_, i)| i.held.waiting_until(now))
            .min()
            .unwrap_or(now + IDLE_WAKE)
            .min(state_at)
            .min(self.committer.due().unwrap_or(state_at))
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
            committing = self.committer.asking(),
            "run loop state"
        );
    }

    /// After shutdown: no new work; running deliveries get until `timeout`; then the watermark
    /// is committed synchronously.
    pub async fn drain(&mut self, timeout: Duration) {
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
        self.committer.commit_final();
    }

    /// The shared assignment (closed by `run` once the loop is done).
    pub fn assignment(&self) -> &Arc<Assignment> {
        &self.assignment
    }
}
