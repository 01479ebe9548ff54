//! The partitions this worker owns right now, their uncommitted windows, and what happens when
//! the group rebalances (DESIGN §5 "Rebalances and deploys").
//!
//! Every assignment gets a new generation number. Work is tagged with the generation of the
//! partition it came from; a result whose generation is no longer current is dropped, so a late
//! answer from an old assignment can never move a commit. Delivery tasks mark their records done
//! here directly, under one short lock, so the rebalance callback — which librdkafka runs inside
//! the consumer's poll, on the run loop's task — can wait for them without the run loop.
//!
//! On revocation the callback waits (bounded by `--drain-timeout`) for the revoked partitions'
//! running deliveries, commits their watermarks synchronously, and forgets them; records that
//! had not started are left for the next owner.
//!
//! Fencing covers side effects too: a retry or dead-letter copy is written only under a
//! [`CopyFence`], taken while the partition is ours. Once the drain deadline passed, the
//! revocation closes the partition to new copies and waits for the copies already on their
//! way, so no copy of a revoked partition's record is written after its revocation returned
//! (the next owner, which redoes the record, would otherwise see it twice — or see a tier copy
//! it never accounted for).
//!
//! One file on purpose, over the usual ~500 lines with its tests: ownership, windows, commit
//! bookkeeping, the revocation drain and the copy fence all live under the one lock and one
//! condition variable; split, each part would reach into the others' state. librdkafka's
//! callbacks that call into it are in [`super::consumer`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering as AtomicOrdering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext},
};
use tokio::sync::Notify;

use super::{metrics::Metrics, watermark::PartitionWindow};

/// How long a revocation waits for copies already on their way: librdkafka answers every copy
/// within the copy producer's `message.timeout.ms` (10 s, see [`super::copy::COPY_TIMEOUT_MS`]), plus margin.
const COPY_FENCE_WAIT: Duration = Duration::from_secs(15);

/// A topic partition; the topic is shared, as every record of a partition names it.
pub type Tp = (Arc<str>, i32);

#[derive(Debug)]
struct Owned {
    generation: u64,
    window: PartitionWindow,
    /// Copies being written for its records now.
    copies: usize,
    /// Set by a revocation: no new copy may start.
    fenced: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_generation: u64,
    partitions: HashMap<Tp, Owned>,
    /// Sum of the windows' lengths: records read and not yet covered by a commit.
    window: usize,
    /// Set once the worker is closing: revocations no longer wait for deliveries.
    closing: bool,
}

/// Shared between the run loop, the delivery tasks and librdkafka's callbacks.
#[derive(Debug)]
pub struct Assignment {
    inner: Mutex<Inner>,
    finished: Condvar,
    drain_timeout: Duration,
    /// Wakes the run loop after a rebalance, so it drops stale queued work promptly.
    pub changed: Notify,
    /// Wakes the run loop after a commit answer (served inside the consumer's poll, which
    /// does not return a record for it), so it admits records into the shrunken window.
    pub committed: Notify,
    /// Commit answers so far (paces the worker's own commit requests).
    answers: AtomicU64,
    /// Where the consumer's callbacks (see [`super::consumer`]) report lag and coordinator load.
    pub(super) metrics: Metrics,
}

impl Assignment {
    /// Nothing assigned yet.
    pub fn new(drain_timeout: Duration, metrics: Metrics) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            finished: Condvar::new(),
            drain_timeout,
            changed: Notify::new(),
            committed: Notify::new(),
            answers: AtomicU64::new(0),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep going with them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation of `tp` if it is assigned now.
    pub fn generation(&self, tp: &Tp) -> Option<u64> {
        self.lock().partitions.get(tp).map(|o| o.generation)
    }

    /// Every partition assigned now, with its generation.
    pub fn partitions(&self) -> Vec<(Tp, u64)> {
        self.lock()
            .partitions
            .iter()
            .map(|(tp, o)| (tp.clone(), o.generation))
            .collect()
    }

    /// Whether work tagged (`tp`, `generation`) still counts.
    pub fn is_current(&self, tp: &Tp, generation: u64) -> bool {
        self.generation(tp) == Some(generation)
    }

    /// Takes a record read from Kafka into its partition's window; false if stale.
    pub fn admit(&self, tp: &Tp, generation: u64, offset: i64) -> bool {
        let mut inner = self.lock();
        let Some(owned) = inner.partitions.get_mut(tp) else {
            return false;
        };
        if owned.generation != generation {
            return false;
        }
        match owned.window.admit(offset) {
            Ok(()) => {
                inner.window += 1;
                true
            }
            Err(e) => {
                tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %e, "record not admitted");
                false
            }
        }
    }

    /// Marks a record's work as started.
    pub fn start(&self, tp: &Tp, generation: u64, offset: i64) -> bool {
        let mut inner = self.lock();
        match inner.partitions.get_mut(tp) {
            Some(o) if o.generation == generation => o.window.start(offset).is_ok(),
            _ => false,
        }
    }

    /// Allows one copy of a record of (`tp`, `generation`) to be written while the returned
    /// fence lives; `None` once the partition is revoked (or being revoked): write nothing.
    pub fn begin_copy(&self, tp: &Tp, generation: u64) -> Option<CopyFence<'_>> {
        let mut inner = self.lock();
        match inner.partitions.get_mut(tp) {
            Some(o) if o.generation == generation && !o.fenced => {
                o.copies += 1;
                Some(CopyFence {
                    assignment: self,
                    tp: tp.clone(),
                    generation,
                })
            }
            _ => None,
        }
    }

    /// Marks a record done; false (and nothing changes) if its assignment is gone.
    pub fn finish(&self, tp: &Tp, generation: u64, offset: i64) -> bool {
        let done = {
            let mut inner = self.lock();
            match inner.partitions.get_mut(tp) {
                Some(o) if o.generation == generation => o.window.finish(offset).is_ok(),
                _ => false,
            }
        };
        self.finished.notify_all();
        done
    }

    /// Records read and not yet committed, over all partitions.
    pub fn window(&self) -> usize {
        self.lock().window
    }

    /// Deliveries running, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .partitions
            .values()
            .map(|o| o.window.in_flight())
            .sum()
    }

    /// The watermarks that moved since they were last stored, as a list for librdkafka's
    /// offset store; they are marked stored and not offered again until a commit answers.
    pub fn take_stores(&self) -> Option<TopicPartitionList> {
        let mut inner = self.lock();
        let mut list = TopicPartitionList::new();
        for (tp, owned) in &mut inner.partitions {
            if let Some(offset) = owned.window.to_store()
                && list
                    .add_partition_offset(&tp.0, tp.1, Offset::Offset(offset))
                    .is_ok()
            {
                owned.window.stored(offset);
            }
        }
        (list.count() > 0).then_some(list)
    }

    /// Every watermark past its last acknowledged commit (stored or not), for a synchronous
    /// commit on revocation or shutdown.
    pub fn commits_due(&self) -> Option<TopicPartitionList> {
        let inner = self.lock();
        let mut list = TopicPartitionList::new();
        for (tp, owned) in &inner.partitions {
            if let Some(offset) = owned.window.committable() {
                let _ = list.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset));
            }
        }
        (list.count() > 0).then_some(list)
    }

    /// Whether some stored watermark still waits for its commit.
    pub fn awaiting_commit(&self) -> bool {
        self.lock()
            .partitions
            .values()
            .any(|o| o.window.awaiting_commit())
    }

    /// Kafka answered a commit: on success the windows shrink, else the offsets are offered
    /// again. Offsets are absolute, so an answer for an older assignment is harmless; an
    /// answer for a partition assigned anew applies to the new window only if it is past
    /// that window's records, which a commit of the old owner's watermark cannot be.
    pub fn commit_answered(&self, list: &TopicPartitionList, ok: bool) {
        let mut inner = self.lock();
        let mut released = 0;
        for element in list.elements() {
            let tp: Tp = (Arc::from(element.topic()), element.partition());
            let Some(owned) = inner.partitions.get_mut(&tp) else {
                continue;
            };
            match (ok && element.error().is_ok(), element.offset()) {
                (true, Offset::Offset(offset)) => released += owned.window.committed(offset),
                (true, _) => {}
                (false, _) => owned.window.commit_failed(),
            }
        }
        inner.window -= released;
        drop(inner);
        self.answers.fetch_add(1, AtomicOrdering::Relaxed);
        self.committed.notify_one();
    }

    /// How many commit answers arrived so far.
    pub fn commit_answers(&self) -> u64 {
        self.answers.load(AtomicOrdering::Relaxed)
    }

    /// Called by librdkafka after partitions were assigned.
    pub(super) fn assign(&self, list: &TopicPartitionList) {
        {
            let mut inner = self.lock();
            let generation = inner.next_generation;
            inner.next_generation += 1;
            for element in list.elements() {
                let tp: Tp = (Arc::from(element.topic()), element.partition());
                tracing::info!(
                    topic = element.topic(),
                    partition = element.partition(),
                    generation,
                    "partition assigned"
                );
                let replaced = inner.partitions.insert(
                    tp,
                    Owned {
                        generation,
                        window: PartitionWindow::default(),
                        copies: 0,
                        fenced: false,
                    },
                );
                // Assigned again without a revocation in between (e.g. a lost assignment):
                // the old window's records no longer count against the worker's window.
                if let Some(old) = replaced {
                    inner.window -= old.window.len();
                }
            }
        }
        self.changed.notify_one();
    }

    /// Called by librdkafka before partitions are taken away: drain, commit, forget.
    pub(super) fn revoke<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        list: &TopicPartitionList,
    ) {
        let revoked: Vec<Tp> = list
            .elements()
            .iter()
            .map(|e| (Arc::from(e.topic()), e.partition()))
            .collect();
        let wait = || {
            self.wait_for_deliveries(&revoked);
            self.fence_copies(&revoked);
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
        if let Some(commits) = self.commits_due() {
            let commit = || consumer.commit(&commits, CommitMode::Sync);
            let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(commit)
                }
                _ => commit(),
            };
            self.commit_answered(&commits, result.is_ok());
            match result {
                Ok(()) => tracing::info!(offsets = ?commits, "committed on revocation"),
                Err(e) => {
                    tracing::warn!(error = %e, "commit on revocation failed; the next owner redelivers")
                }
            }
        }
        let mut inner = self.lock();
        for tp in &revoked {
            if let Some(owned) = inner.partitions.remove(tp) {
                inner.window -= owned.window.len();
                tracing::info!(topic = %tp.0, partition = tp.1, abandoned = owned.window.len(), "partition revoked");
            }
        }
        drop(inner);
        self.changed.notify_one();
    }

    fn wait_for_deliveries(&self, revoked: &[Tp]) {
        let deadline = Instant::now() + self.drain_timeout;
        let mut inner = self.lock();
        loop {
            let running: usize = revoked
                .iter()
                .filter_map(|tp| inner.partitions.get(tp))
                .map(|o| o.window.in_flight())
                .sum();
            if running == 0 || inner.closing {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    running,
                    "drain deadline passed; abandoning running deliveries"
                );
                return;
            }
            inner = match self.finished.wait_timeout(inner, deadline - now) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Closes the revoked partitions to new copies, then waits (bounded by
    /// [`COPY_FENCE_WAIT`]; not when closing) for the copies already on their way.
    fn fence_copies(&self, revoked: &[Tp]) {
        let deadline = Instant::now() + COPY_FENCE_WAIT;
        let mut inner = self.lock();
        for tp in revoked {
            if let Some(o) = inner.partitions.get_mut(tp) {
                o.fenced = true;
            }
        }
        loop {
            let copying: usize = revoked
                .iter()
                .filter_map(|tp| inner.partitions.get(tp))
                .map(|o| o.copies)
                .sum();
            if copying == 0 || inner.closing {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(copying, "copies of revoked partitions still unanswered");
                return;
            }
            inner = match self.finished.wait_timeout(inner, deadline - now) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// The worker is closing; later revocations do not wait.
    pub fn close(&self) {
        self.lock().closing = true;
        self.finished.notify_all();
    }
}

/// A copy on its way for a record of a partition this worker owned when it started (see
/// [`Assignment::begin_copy`]); the partition's revocation waits until it is dropped.
pub struct CopyFence<'a> {
    assignment: &'a Assignment,
    tp: Tp,
    generation: u64,
}

impl Drop for CopyFence<'_> {
    fn drop(&mut self) {
        {
            let mut inner = self.assignment.lock();
            if let Some(o) = inner.partitions.get_mut(&self.tp)
                && o.generation == self.generation
            {
                o.copies = o.copies.saturating_sub(1);
            }
        }
        self.assignment.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment() -> Assignment {
        let mut registry = prometheus_client::registry::Registry::default();
        Assignment::new(Duration::from_secs(1), Metrics::register(&mut registry))
    }

    fn list(topic: &str, partition: i32) -> TopicPartitionList {
        let mut l = TopicPartitionList::new();
        l.add_partition(topic, partition);
        l
    }

    /// A record started under one assignment finishes after the partition was assigned
    /// again: its result must neither mark the new window's record done nor reach a commit,
    /// and a commit answer meant for the old assignment must not release the new window.
    #[test]
    fn a_late_result_of_an_old_assignment_never_commits() {
        let a = assignment();
        let tp: Tp = (Arc::from("t"), 0);
        a.assign(&list("t", 0));
        let old = a.generation(&tp).expect("assigned");
        assert!(a.admit(&tp, old, 10));
        assert!(a.start(&tp, old, 10));
        assert!(a.admit(&tp, old, 11));
        assert!(a.start(&tp, old, 11));
        assert!(a.finish(&tp, old, 10));
        let stored = a.take_stores().expect("10 is done");
        assert_eq!(
            stored.find_partition("t", 0).map(|e| e.offset()),
            Some(Offset::Offset(11))
        );

        // Revoked and assigned again (another member had it meanwhile): a new generation, a
        // new window that reads from the committed offset again.
        a.assign(&list("t", 0));
        let new = a.generation(&tp).expect("assigned");
        assert_ne!(old, new);
        assert!(a.admit(&tp, new, 11));
        assert!(a.admit(&tp, new, 12));
        assert_eq!(a.window(), 2, "the old window no longer counts");

        assert!(
            !a.finish(&tp, old, 11),
            "the old assignment's result was taken"
        );
        assert!(!a.is_current(&tp, old));
        assert!(
            a.take_stores().is_none(),
            "nothing of the new window is done"
        );
        assert!(a.commits_due().is_none(), "no synchronous commit either");

        assert!(a.finish(&tp, new, 11));
        let due = a.commits_due().expect("11 done now");
        assert_eq!(
            due.find_partition("t", 0).map(|e| e.offset()),
            Some(Offset::Offset(12))
        );
    }

    /// A copy may start only while its partition is ours under the same generation and not
    /// being revoked; a revocation waits for a copy on its way.
    #[test]
    fn copies_are_fenced_by_the_assignment() {
        let a = Arc::new(assignment());
        let tp: Tp = (Arc::from("t"), 0);
        a.assign(&list("t", 0));
        let old = a.generation(&tp).expect("assigned");
        let fence = a.begin_copy(&tp, old).expect("ours");
        a.assign(&list("t", 0));
        let new = a.generation(&tp).expect("assigned");
        assert!(
            a.begin_copy(&tp, old).is_none(),
            "an old generation copies nothing"
        );
        drop(fence);

        let on_its_way = a.begin_copy(&tp, new).expect("ours");
        let revoking = {
            let a = a.clone();
            let tp = tp.clone();
            std::thread::spawn(move || {
                a.fence_copies(std::slice::from_ref(&tp));
                Instant::now()
            })
        };
        // The revocation closed the partition to new copies and waits for the one on its way.
        while a.begin_copy(&tp, new).is_some() {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        let dropped = Instant::now();
        drop(on_its_way);
        let returned = revoking.join().expect("revocation");
        assert!(
            returned >= dropped,
            "the revocation returned before the copy was answered"
        );
    }
}
