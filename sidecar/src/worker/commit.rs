//! When and how the worker commits: one request at a time, paced by the uncommitted window.
//!
//! Delivery tasks move their partitions' watermarks in the shared [`Assignment`]; the run loop
//! hands the moved watermarks to librdkafka's offset store and asks Kafka to commit the stored
//! offsets — every [`COMMIT_INTERVAL`], and at once when the window is a quarter full, so the
//! window, which shrinks only once Kafka acknowledged a commit, keeps room to admit. At most
//! one request is outstanding: watermarks that move meanwhile wait in the store and go with the
//! next request, so commits never come faster than the coordinator answers (issue 11). Nothing
//! here waits for Kafka: the answer comes through the consumer's commit callback (see
//! [`super::consumer`]), served by the poll, and wakes the run loop.
//!
//! [`Pace`] is the pure decision (when the next request is due), [`Committer`] the shell that
//! stores, asks and, at shutdown, commits synchronously.

use std::{sync::Arc, time::Duration};

use rdkafka::{
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaResult,
};
use tokio::time::Instant;

use super::{assignment::Assignment, consumer::WorkerContext};

/// How often the worker commits its stored watermarks when the window is not filling up;
/// bounds how much a crash redelivers at low rates (librdkafka's own background commit, off
/// here, defaults to 5 s). A filling window asks for a commit at once.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
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

/// The pacing of commit requests, pure: what was asked when, and when the next request is due.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The commit-answer count and time when the worker last asked for a commit, until an
    /// answer arrives: one request at a time.
    asked: Option<(u64, Instant)>,
    /// When the worker last asked for a commit (paces the commits of a window not filling up).
    committed_at: Instant,
}

/// What became of the outstanding request, if any (see [`Pace::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No request outstanding any more: none was, or its answer arrived.
    Free,
    /// A request is outstanding and may still be answered: ask nothing now.
    Waiting,
    /// The request went unanswered for [`COMMIT_ANSWER_WAIT`]: it is forgotten, ask again.
    GaveUp,
}

impl Pace {
    /// Nothing asked yet; the first request waits an interval from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            asked: None,
            committed_at: now,
        }
    }

    /// Whether a request is outstanding.
    pub fn asking(&self) -> bool {
        self.asked.is_some()
    }

    /// Forgets the outstanding request once its answer arrived (`answers`, the count of commit
    /// answers so far, moved) or it waited [`COMMIT_ANSWER_WAIT`].
    pub fn settle(&mut self, answers: u64, now: Instant) -> Settled {
        let settled = match self.asked {
            None => Settled::Free,
            Some((asked, _)) if asked != answers => Settled::Free,
            Some((_, at)) if now.saturating_duration_since(at) < COMMIT_ANSWER_WAIT => {
                return Settled::Waiting;
            }
            Some(_) => Settled::GaveUp,
        };
        self.asked = None;
        settled
    }

    /// When the next request is due, if one is: something stored awaits its commit and no
    /// request is outstanding (a timed wake-up is then not needed: the answer wakes).
    pub fn due(
        &self,
        awaiting_commit: bool,
        window: usize,
        max_in_flight: usize,
    ) -> Option<Instant> {
        if self.asked.is_some() || !awaiting_commit {
            return None;
        }
        if window * COMMIT_AT_WINDOW_DIVISOR >= max_in_flight {
            return Some(self.committed_at);
        }
        Some(self.committed_at + COMMIT_INTERVAL)
    }

    /// A request went out at `now`, with `answers` answers so far.
    pub fn asked(&mut self, answers: u64, now: Instant) {
        self.asked = Some((answers, now));
        self.committed_at = now;
    }

    /// A request was refused before it was sent (no group yet): the next one waits an
    /// interval, not none, which with a full window would spin the run loop.
    pub fn refused(&mut self, now: Instant) {
        self.committed_at = now + COMMIT_INTERVAL;
    }
}

/// The shell around [`Pace`]: the consumer it commits for and the windows it commits.
pub struct Committer {
    consumer: Arc<StreamConsumer<WorkerContext>>,
    assignment: Arc<Assignment>,
    max_in_flight: usize,
    pace: Pace,
}

impl Committer {
    /// Commits for `consumer` what `assignment`'s windows release, paced by `max_in_flight`.
    pub fn new(
        consumer: Arc<StreamConsumer<WorkerContext>>,
        assignment: Arc<Assignment>,
        max_in_flight: usize,
    ) -> Self {
        Self {
            consumer,
            assignment,
            max_in_flight,
            pace: Pace::new(Instant::now()),
        }
    }

    /// Whether a request is outstanding (for the run loop's state line).
    pub fn asking(&self) -> bool {
        self.pace.asking()
    }

    /// When the run loop must wake to ask for the next commit, if it must.
    pub fn due(&self) -> Option<Instant> {
        self.pace.due(
            self.assignment.awaiting_commit(),
            self.assignment.window(),
            self.max_in_flight,
        )
    }

    /// One step of the run loop: stores the moved watermarks, and asks for a commit if one is
    /// due (see the module doc).
    pub fn step(&mut self) {
        if let Some(list) = self.assignment.take_stores()
            && let Err(e) = self.consumer.store_offsets(&list)
        {
            // E.g. a partition revoked in between: librdkafka refuses; offered again if ours.
            tracing::debug!(error = %e, offsets = ?list, "offsets not stored");
            self.assignment.commit_answered(&list, false);
        }
        match self
            .pace
            .settle(self.assignment.commit_answers(), Instant::now())
        {
            Settled::Waiting => return,
            Settled::GaveUp => tracing::warn!("no answer to the last commit request; asking again"),
            Settled::Free => {}
        }
        if self.due().is_none_or(|due| due > Instant::now()) {
            return;
        }
        match commit_stored(&self.consumer) {
            Ok(()) => self
                .pace
                .asked(self.assignment.commit_answers(), Instant::now()),
            Err(e) => {
                tracing::debug!(error = %e, "commit request refused");
                self.pace.refused(Instant::now());
            }
        }
    }

    /// After the drain: commits what is due synchronously, the worker's last word to Kafka.
    pub fn commit_final(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_not_filling_up_commits_every_interval() {
        let start = Instant::now();
        let pace = Pace::new(start);
        assert_eq!(pace.due(false, 10, 64), None, "nothing awaits a commit");
        assert_eq!(pace.due(true, 1, 64), Some(start + COMMIT_INTERVAL));
    }

    #[test]
    fn a_quarter_full_window_commits_at_once() {
        let start = Instant::now();
        let pace = Pace::new(start);
        assert_eq!(pace.due(true, 15, 64), Some(start + COMMIT_INTERVAL));
        assert_eq!(pace.due(true, 16, 64), Some(start));
    }

    #[test]
    fn one_request_at_a_time_until_answered() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.asked(7, start);
        assert!(pace.asking());
        assert_eq!(pace.due(true, 64, 64), None, "a request is outstanding");
        let soon = start + Duration::from_secs(1);
        assert_eq!(pace.settle(7, soon), Settled::Waiting);
        assert!(pace.asking());
        assert_eq!(pace.settle(8, soon), Settled::Free, "answered");
        assert!(!pace.asking());
        assert_eq!(pace.due(true, 64, 64), Some(start));
        assert_eq!(pace.due(true, 1, 64), Some(start + COMMIT_INTERVAL));
    }

    #[test]
    fn an_unanswered_request_is_asked_again_only_after_the_long_wait() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.asked(3, start);
        let almost = start + COMMIT_ANSWER_WAIT - Duration::from_millis(1);
        assert_eq!(pace.settle(3, almost), Settled::Waiting);
        assert_eq!(pace.settle(3, start + COMMIT_ANSWER_WAIT), Settled::GaveUp);
        assert!(!pace.asking());
        assert_eq!(pace.settle(3, start + COMMIT_ANSWER_WAIT), Settled::Free);
    }

    #[test]
    fn a_refused_request_waits_an_interval_even_with_a_full_window() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        pace.refused(start);
        assert_eq!(pace.due(true, 64, 64), Some(start + COMMIT_INTERVAL));
    }
}
