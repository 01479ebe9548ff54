//! The outbox relay (`ferry-sidecar relay`): publishes a PostgreSQL outbox table to Kafka
//! without loss and in key order (DESIGN §4).
//!
//! ```text
//!   service tx ──INSERT──▶ outbox table ──fetch (published_at IS NULL, id order)──▶ relay
//!                               ▲                                                  │ produce
//!                               └──── mark / delete exactly the delivered rows ◀───┘ (acks=all)
//! ```
//!
//! Every relay first checks the table's shape ([`outbox::inspect`]), then competes for the
//! table's advisory lock ([`leader`]); the winner publishes chunk after chunk
//! ([`publish::Publisher`]), reading the next and marking the previous one on two database
//! sessions while a chunk is in Kafka ([`pipeline`]), as the others stand by, ready to take
//! over. Per-key order and held keys live in [`order`], the polling rhythm in [`pacing`].
//! Shutdown is an argument: when it completes, the chunk in flight is finished and every
//! delivered row is marked, then `run` returns.

pub mod canonical;
pub mod config;
pub mod housekeeping;
pub mod leader;
pub mod metrics;
pub mod order;
pub mod outbox;
pub mod pacing;
pub mod pipeline;
pub mod publish;
pub mod session;
pub mod topics;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

use config::Disposal;
pub use config::RelayArgs;
use leader::{Candidate, Leadership};
use metrics::{Metrics, ReasonLabel};
use order::{Holds, KeyId};
use outbox::{Outbox, OutboxRow, TableInfo};
use pacing::Pacer;
use pipeline::Marks;
use publish::Publisher;

use crate::telemetry::{Health, TelemetryServer};

/// Reconnect backoff after a database or leadership failure: quick first retry (a restart
/// of PostgreSQL takes a few seconds), capped so a long outage costs little.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// See [`RECONNECT_MIN`].
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How long shutdown waits for anything left in the producer's queue (batches already awaited
/// their reports; this only covers stray dead-letter copies). Well inside a 30 s grace period.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Why the relay stopped or restarted a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("PostgreSQL statement failed: {0}")]
    Database(#[source] tokio_postgres::Error),
    #[error(
        "outbox table {0:?} does not exist (check --outbox-table and the search_path); docs/outbox.md has the SQL"
    )]
    NoTable(String),
    #[error(
        "outbox table {table} is missing column(s): {missing}; docs/outbox.md has the expected shape"
    )]
    MissingColumns { table: String, missing: String },
    #[error(
        "outbox table {0} has no publish_error column, needed to mark poison rows failed without a --dead-letter-topic; add it (docs/outbox.md) or set --dead-letter-topic"
    )]
    NoErrorColumn(String),
    #[error(
        "outbox table {table} has column(s) of a type the relay cannot use: {wrong}; docs/outbox.md has the expected shape"
    )]
    ColumnTypes { table: String, wrong: String },
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    KafkaSettings(#[from] ferry_common::kafka::Error),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::Error),
    #[error("the leadership lock session ended")]
    LeadershipLost,
    #[error("the work session ended")]
    WorkSessionLost,
}

impl Error {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Connect(_) => "connect",
            Error::Database(_) => "database",
            Error::NoTable(_)
            | Error::MissingColumns { .. }
            | Error::ColumnTypes { .. }
            | Error::NoErrorColumn(_) => "table",
            Error::Producer(_) | Error::KafkaSettings(_) => "kafka",
            Error::Telemetry(_) => "telemetry",
            Error::LeadershipLost | Error::WorkSessionLost => "session",
        }
    }
}

/// The relay's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the relay until `shutdown` completes (then finishes the batch in flight and returns).
/// Fails at start when the table is missing or misshapen; later database and Kafka failures
/// are retried, never fatal.
pub async fn run(
    args: RelayArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let disposal = args.disposal();
    let RelayArgs {
        database_url,
        outbox_table,
        dead_letter_topic,
        batch_size,
        idle_poll_interval,
        notify,
        delete_published: _,
        published_retention: _,
        metrics_addr,
        kafka,
        log: _,
    } = args;
    let database_url = database_url.into_exposed();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // A wrong table is a configuration error: say so once, clearly, and exit. A database
    // that is not reachable yet (the pod started first) is waited for.
    let Some(table) = inspect_when_reachable(&database_url, &outbox_table, &stop).await? else {
        return Ok(());
    };
    if dead_letter_topic.is_none() && !table.has_error_column {
        return Err(Error::NoErrorColumn(table.name));
    }

    let mut registry = Registry::with_prefix("ferry");
    let metrics = Metrics::register(&mut registry);
    let health = Health::default();
    let server = TelemetryServer::bind(metrics_addr, registry, health.clone()).await?;
    let server_stop = stopped(stop.clone());
    let server_task = tokio::spawn(server.serve(server_stop));
    let publisher = Publisher::new(
        kafka.client_config()?,
        dead_letter_topic,
        table.name.clone(),
    )?;
    publisher.warm_up();
    tracing::info!(table = %table.name, batch_size, notify, "outbox relay starting");

    let mut relay = Relay {
        database_url,
        table,
        batch_size,
        idle_poll_interval,
        notify,
        disposal,
        publisher,
        metrics,
        health,
        stop,
    };
    let mut reconnect = reconnect_schedule();
    while !relay.stopping() {
        let started = Instant::now();
        let result = relay.lead_or_stand_by().await;
        relay.health.set_ready(false);
        relay.metrics.leader.set(0);
        match result {
            Ok(()) => break,
            Err(error) => {
                if started.elapsed() > RECONNECT_MAX * 2 {
                    reconnect = reconnect_schedule();
                }
                let wait = reconnect.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(%error, kind = error.metric_label(), retry_in_ms = wait.as_millis() as u64, "relay session failed; reconnecting");
                let mut stop = relay.stop.clone();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    relay.publisher.flush(SHUTDOWN_FLUSH);
    tracing::info!("outbox relay stopped");
    let _ = server_task.await;
    Ok(())
}

/// Checks the table's shape as soon as the database answers; `None` if shut down first.
async fn inspect_when_reachable(
    url: &str,
    table: &str,
    stop: &watch::Receiver<bool>,
) -> Result<Option<TableInfo>> {
    let mut reconnect = reconnect_schedule();
    loop {
        let inspected = match session::connect(url, None).await {
            Ok(check) => outbox::inspect(&check.client, table).await,
            Err(e) => Err(e),
        };
        match inspected {
            Ok(info) => return Ok(Some(info)),
            Err(error @ (Error::Connect(_) | Error::Database(_))) => {
                let wait = reconnect.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "cannot check the outbox table yet");
                let mut stop = stop.clone();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(error) => return Err(error),
        }
    }
}

fn reconnect_schedule() -> backon::ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The state one relay process carries across sessions.
struct Relay {
    database_url: String,
    table: TableInfo,
    batch_size: u32,
    idle_poll_interval: Duration,
    notify: bool,
    disposal: Disposal,
    publisher: Publisher,
    metrics: Metrics,
    health: Health,
    stop: watch::Receiver<bool>,
}

impl Relay {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the lock (a healthy standby is ready), then publishes until shutdown (`Ok`)
    /// or until a session fails (`Err`, the caller reconnects).
    async fn lead_or_stand_by(&mut self) -> Result<()> {
        let mut candidate =
            Candidate::connect(&self.database_url, leader::lock_key(self.table.oid)).await?;
        let leadership = loop {
            if self.stopping() {
                return Ok(());
            }
            match candidate.try_lead().await? {
                Ok(leadership) => break leadership,
                Err(again) => candidate = again,
            }
            if candidate.is_closed() {
                return Err(Error::LeadershipLost);
            }
            self.health.set_ready(true);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = tokio::time::sleep(leader::STANDBY_RETRY) => {}
            }
        };
        tracing::info!(table = %self.table.name, "leading: this relay publishes the outbox");
        self.metrics.leader.set(1);
        self.publish_while_leading(leadership).await
    }

    async fn publish_while_leading(&mut self, leadership: Leadership) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let delete = self.disposal == Disposal::Delete;
        // Both sessions at once: each connect and prepare is a few round trips, and a new
        // leader should start publishing as soon as it can.
        let (url, table) = (&self.database_url, &self.table);
        let open = |wake: Option<Arc<Notify>>| async move {
            let session = session::connect(url, wake).await?;
            let outbox = Outbox::prepare(session.client, table.clone(), delete).await?;
            Ok::<_, Error>((outbox, session.closed))
        };
        let ((reader, mut work_closed), (marker, mut marking_closed)) =
            tokio::try_join!(open(self.notify.then(|| wake.clone())), open(None))?;
        if self.notify {
            reader.listen().await?;
        }
        self.health.set_ready(true);
        let mut lost = leadership.lost.clone();
        let mut holds = Holds::default();
        let mut pacer = Pacer::new(self.idle_poll_interval);
        // Gauges and retention on a session of their own, so they never stall a chunk; the
        // guard stops them when this relay stops leading.
        let _housekeeping = AbortOnDrop(tokio::spawn(housekeeping::run(
            self.database_url.clone(),
            self.table.clone(),
            self.disposal,
            self.metrics.clone(),
        )));
        let chunk = pipeline::chunk_size(self.batch_size);
        let overlap_marks = pipeline::overlaps_marks(self.batch_size);
        // A chunk read while the previous one was in Kafka, the keys that chunk left
        // unpublished (its ids were skipped by the read, so they are behind here), and when
        // the read started.
        let mut ahead: Option<(Vec<OutboxRow>, HashSet<KeyId>, Instant)> = None;
        // The delivered chunk whose mark runs while the next chunk is in Kafka.
        let mut unmarked: Option<Marks> = None;
        loop {
            if self.stopping() || *lost.borrow() {
                // SIGTERM (or a lost lock): the chunk in flight is already settled; mark it
                // (marking delivered rows is right whoever leads), send nothing more.
                if let Some(marks) = unmarked.take() {
                    self.apply(&marker, marks).await?;
                }
                if self.stopping() {
                    return Ok(());
                }
                return Err(Error::LeadershipLost);
            }
            if *work_closed.borrow() || *marking_closed.borrow() {
                return Err(Error::WorkSessionLost);
            }
            let now = Instant::now();
            let (rows, behind, read_at) = match ahead.take() {
                Some(chunk) => chunk,
                None => {
                    // Nothing is in flight or unmarked here: nothing is skipped but held keys.
                    let read_at = Instant::now();
                    let rows = reader.fetch(chunk, &holds.waiting(now), &[]).await?;
                    (rows, HashSet::new(), read_at)
                }
            };
            let fetched = rows.len();
            if fetched > 0 {
                let read_next = fetched == chunk as usize;
                ahead = self
                    .publish_chunk(
                        &reader,
                        &marker,
                        ChunkInFlight {
                            rows,
                            behind,
                            read_at,
                        },
                        &mut holds,
                        &mut unmarked,
                        read_next,
                        overlap_marks,
                    )
                    .await?;
            }
            let now = Instant::now();
            self.metrics.held_keys.set(holds.count(now) as i64);
            let mut delay = pacer.next_delay(fetched, chunk as usize, read_at.elapsed());
            if ahead.is_some() {
                continue;
            }
            if let Some(release) = holds.next_release(now) {
                delay = delay.min(release - now);
            }
            if delay.is_zero() {
                continue;
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wake.notified(), if self.notify => {}
                _ = stop.wait_for(|s| *s) => {}
                _ = lost.wait_for(|l| *l) => {}
                _ = work_closed.wait_for(|c| *c) => {}
                _ = marking_closed.wait_for(|c| *c) => {}
            }
        }
    }

    /// Publishes one chunk while (on the other sessions) the previous chunk is marked and,
    /// when this one is full, the next is read. Returns the chunk read ahead, if any rows.
    /// This chunk's marks are left in `unmarked` when a next chunk follows at once (they run
    /// while it is in Kafka), else applied before returning.
    #[allow(clippy::too_many_arguments)]
    async fn publish_chunk(
        &mut self,
        reader: &Outbox,
        marker: &Outbox,
        chunk: ChunkInFlight,
        holds: &mut Holds,
        unmarked: &mut Option<Marks>,
        read_next: bool,
        overlap_marks: bool,
    ) -> Result<Option<(Vec<OutboxRow>, HashSet<KeyId>, Instant)>> {
        let ChunkInFlight {
            rows,
            behind,
            read_at,
        } = chunk;
        let fetched = rows.len();
        let limit = pipeline::chunk_size(self.batch_size);
        let previous = unmarked.take();
        // The next read skips this chunk (in Kafka) and the previous one (its mark may not
        // be committed when the read's snapshot is taken).
        let skip: Vec<i64> = rows
            .iter()
            .map(|r| r.id)
            .chain(previous.iter().flat_map(Marks::ids))
            .collect();
        let held = read_next.then(|| holds.waiting(Instant::now()));
        let started = Instant::now();
        let publish = async {
            let outcome = self
                .publisher
                .publish_batch(rows, holds, &behind, self.table.has_error_column)
                .await;
            (outcome, started.elapsed())
        };
        let mark_previous = async {
            let Some(marks) = previous else {
                return Ok(Duration::ZERO);
            };
            let at = Instant::now();
            apply_marks(marker, &self.metrics, marks).await?;
            Ok::<_, Error>(at.elapsed())
        };
        let read = async {
            let Some(held) = held else {
                return Ok((Vec::new(), Instant::now(), Duration::ZERO));
            };
            let at = Instant::now();
            let rows = reader.fetch(limit, &held, &skip).await?;
            Ok::<_, Error>((rows, at, at.elapsed()))
        };
        let ((outcome, publish_time), marked, next) = tokio::join!(publish, mark_previous, read);
        let mark_time = marked?;
        let (next, next_read_at, read_time) = next?;
        self.count(&outcome);
        tracing::debug!(
            fetched,
            published = outcome.published.len(),
            dead_lettered = outcome.dead_lettered.len(),
            failed = outcome.failed.len(),
            held = outcome.held,
            publish_ms = publish_time.as_secs_f64() * 1e3,
            mark_previous_ms = mark_time.as_secs_f64() * 1e3,
            read_next_ms = read_time.as_secs_f64() * 1e3,
            step_ms = started.elapsed().as_secs_f64() * 1e3,
            "chunk published"
        );
        let marks = Marks::of(&outcome, read_at);
        if next.is_empty() {
            self.apply(marker, marks).await?;
            return Ok(None);
        }
        if overlap_marks {
            *unmarked = Some(marks);
        } else {
            self.apply(marker, marks).await?;
        }
        Ok(Some((next, outcome.undelivered, next_read_at)))
    }

    async fn apply(&self, marker: &Outbox, marks: Marks) -> Result<()> {
        apply_marks(marker, &self.metrics, marks).await
    }

    fn count(&self, outcome: &publish::BatchOutcome) {
        self.metrics
            .published
            .inc_by(outcome.published.len() as u64);
        for (_, reason) in &outcome.dead_lettered {
            self.metrics
                .dead_lettered
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .inc();
        }
        for (reason, rows) in &outcome.unavailable {
            self.metrics
                .topic_waits
                .get_or_create(&ReasonLabel { reason })
                .inc_by(*rows);
        }
        for (_, reason, _) in &outcome.failed {
            self.metrics
                .failed
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .inc();
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A chunk about to be published.
struct ChunkInFlight {
    rows: Vec<OutboxRow>,
    /// Keys an earlier row of which is unpublished and was skipped by this chunk's read.
    behind: HashSet<KeyId>,
    read_at: Instant,
}

/// Marks (or deletes) a chunk's delivered rows and records its failed ones, on the mark
/// session; observes the chunk's read-to-mark duration.
async fn apply_marks(marker: &Outbox, metrics: &Metrics, marks: Marks) -> Result<()> {
    marker.mark_published(&marks.delivered).await?;
    marker.mark_failed(&marks.failed).await?;
    if let Some(read_at) = marks.read_at {
        metrics
            .batch_duration
            .observe(read_at.elapsed().as_secs_f64());
    }
    Ok(())
}
