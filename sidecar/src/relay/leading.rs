//! What the leader does: open its sessions, then read, publish and mark chunk after chunk
//! until shutdown or a lost session, overlapping the three steps as `pipeline.rs` explains;
//! a standby waits for the lock meanwhile.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use ferry_common::telemetry::Health;
use tokio::sync::{Notify, watch};

use super::{
    config::Disposal,
    error::{Error, Result},
    housekeeping,
    leader::{self, Candidate, Leadership},
    metrics::Metrics,
    order::{Holds, KeyId},
    outbox::{Outbox, OutboxRow, TableInfo},
    pacing::Pacer,
    pipeline::{self, Marks},
    publish::Publisher,
    session,
};

/// The state one relay process carries across sessions.
pub(super) struct Relay {
    /// `--database-url`, exposed.
    pub(super) database_url: String,
    /// The checked outbox table.
    pub(super) table: TableInfo,
    /// `--batch-size`: the most rows sent and not yet marked.
    pub(super) batch_size: u32,
    /// `--idle-poll-interval`.
    pub(super) idle_poll_interval: Duration,
    /// `--notify`.
    pub(super) notify: bool,
    /// What becomes of a published row.
    pub(super) disposal: Disposal,
    /// The Kafka side.
    pub(super) publisher: Publisher,
    /// Every relay metric.
    pub(super) metrics: Metrics,
    /// The `/readyz` flag.
    pub(super) health: Health,
    /// Becomes true at shutdown.
    pub(super) stop: watch::Receiver<bool>,
}

impl Relay {
    /// Whether shutdown has begun.
    pub(super) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits for the lock (a healthy standby is ready), then publishes until shutdown (`Ok`)
    /// or until a session fails (`Err`, the caller reconnects).
    pub(super) async fn lead_or_stand_by(&mut self) -> Result<()> {
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
        reader.read_in_id_order().await?;
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
        self.metrics.record(&outcome);
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
