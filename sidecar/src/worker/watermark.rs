//! Offset tracking for one partition: which records were read, which are being worked on,
//! which are done, and so the highest offset that may be committed (DESIGN §5 "Commit after
//! success only").
//!
//! Records are admitted in offset order (Kafka hands them out that way, with gaps after
//! compaction or transaction markers) and finish in any order. The commit watermark is the
//! offset of the first record not yet done, or one past the last admitted record when all are
//! done: everything below it is delivered, skipped as a duplicate, or acknowledged by Kafka in
//! a retry or dead-letter topic.
//!
//! The watermark reaches Kafka in two steps: it is *stored* with librdkafka (the worker then
//! asks it to commit the stored offsets, one request at a time), and it is *committed* once
//! Kafka acknowledged a commit covering it. Entries leave the window only then, so the window's
//! length bounds what a crash could redeliver.

use std::collections::VecDeque;

/// Misuse of the tracker by its caller; a bug, never a Kafka condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("offset {offset} admitted after {last}: offsets must increase")]
    NotIncreasing { offset: i64, last: i64 },
    #[error("offset {0} is not in the window")]
    Unknown(i64),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Read from Kafka, waiting for its turn (behind its key, or for a free slot).
    Queued,
    /// A delivery (or a retry/dead-letter write) is running.
    InFlight,
    /// Finished: nothing more to do before it may be committed.
    Done,
}

/// The uncommitted records of one partition, in offset order.
#[derive(Debug, Default, Clone)]
pub struct PartitionWindow {
    entries: VecDeque<(i64, State)>,
    /// How many entries at the front are done: the watermark is the entry after them, so it
    /// moves in amortised O(1) per finished record instead of a scan of the window.
    done_prefix: usize,
    /// The offset of the last acknowledged commit (the next offset to read after a restart).
    committed: Option<i64>,
    /// The highest offset handed to librdkafka's offset store and not yet acknowledged.
    stored: Option<i64>,
    in_flight: usize,
}

impl PartitionWindow {
    /// Takes a record read from Kafka into the window.
    pub fn admit(&mut self, offset: i64) -> Result<()> {
        let last = self
            .entries
            .back()
            .map(|(o, _)| *o)
            .or(self.committed.map(|c| c - 1));
        if let Some(last) = last
            && offset <= last
        {
            return Err(Error::NotIncreasing { offset, last });
        }
        self.entries.push_back((offset, State::Queued));
        Ok(())
    }

    fn index(&self, offset: i64) -> Result<usize> {
        self.entries
            .binary_search_by_key(&offset, |(o, _)| *o)
            .map_err(|_| Error::Unknown(offset))
    }

    /// Marks a queued record as being worked on.
    pub fn start(&mut self, offset: i64) -> Result<()> {
        let i = self.index(offset)?;
        if self.entries[i].1 == State::Queued {
            self.entries[i].1 = State::InFlight;
            self.in_flight += 1;
        }
        Ok(())
    }

    /// Marks a record done (from any state); done twice is harmless.
    pub fn finish(&mut self, offset: i64) -> Result<()> {
        let i = self.index(offset)?;
        if self.entries[i].1 == State::InFlight {
            self.in_flight -= 1;
        }
        self.entries[i].1 = State::Done;
        while self
            .entries
            .get(self.done_prefix)
            .is_some_and(|(_, s)| *s == State::Done)
        {
            self.done_prefix += 1;
        }
        Ok(())
    }

    /// The offset below which every admitted record is done (`None` before the first record).
    fn watermark(&self) -> Option<i64> {
        match self.entries.get(self.done_prefix) {
            Some((o, _)) => Some(*o),
            None => self.entries.back().map(|(o, _)| o + 1),
        }
    }

    /// The watermark, if committing it is progress: past the last acknowledged commit and past
    /// the first record still open. What a synchronous commit (revocation, shutdown) sends.
    pub fn committable(&self) -> Option<i64> {
        if self.done_prefix == 0 {
            return None;
        }
        let watermark = self.watermark()?;
        match self.committed {
            Some(c) if watermark <= c => None,
            _ => Some(watermark),
        }
    }

    /// The watermark, if it moved past what was last stored or committed: what to hand to
    /// librdkafka's offset store now.
    pub fn to_store(&self) -> Option<i64> {
        let watermark = self.committable()?;
        match self.stored {
            Some(s) if watermark <= s => None,
            _ => Some(watermark),
        }
    }

    /// Records that `offset` was stored; it is not offered for storing again meanwhile.
    pub fn stored(&mut self, offset: i64) {
        self.stored = Some(self.stored.map_or(offset, |s| s.max(offset)));
    }

    /// A commit failed: the watermark is offered again.
    pub fn commit_failed(&mut self) {
        self.stored = None;
    }

    /// Whether a stored watermark awaits its commit.
    pub fn awaiting_commit(&self) -> bool {
        match (self.stored, self.committed) {
            (Some(s), Some(c)) => s > c,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Records that Kafka acknowledged a commit of `offset`: entries below it leave the
    /// window. Returns how many left.
    pub fn committed(&mut self, offset: i64) -> usize {
        let before = self.entries.len();
        while self.entries.front().is_some_and(|(o, _)| *o < offset) {
            if let Some((_, State::InFlight)) = self.entries.pop_front() {
                // Only reachable if a caller commits past unfinished work; keep counts right.
                self.in_flight -= 1;
            }
        }
        let released = before - self.entries.len();
        self.done_prefix = self.done_prefix.saturating_sub(released);
        while self
            .entries
            .get(self.done_prefix)
            .is_some_and(|(_, s)| *s == State::Done)
        {
            self.done_prefix += 1;
        }
        self.committed = Some(self.committed.map_or(offset, |c| c.max(offset)));
        released
    }

    /// Records read but not yet covered by a commit: what a crash now would redeliver.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing uncommitted is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records whose delivery is running.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(offsets: &[i64]) -> PartitionWindow {
        let mut w = PartitionWindow::default();
        for &o in offsets {
            w.admit(o).expect("increasing");
        }
        w
    }

    #[test]
    fn empty_window_commits_nothing() {
        assert_eq!(PartitionWindow::default().committable(), None);
    }

    #[test]
    fn watermark_stops_at_the_first_unfinished_record() {
        let mut w = window(&[10, 11, 12, 13]);
        w.finish(11).expect("known");
        w.finish(13).expect("known");
        assert_eq!(w.committable(), None, "10 is not done: nothing to commit");
        w.finish(10).expect("known");
        assert_eq!(w.committable(), Some(12));
        w.finish(12).expect("known");
        assert_eq!(w.committable(), Some(14), "all done: one past the last");
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        let mut w = window(&[3, 7, 20]);
        w.finish(3).expect("known");
        w.finish(7).expect("known");
        assert_eq!(w.committable(), Some(20));
        w.finish(20).expect("known");
        assert_eq!(w.committable(), Some(21));
    }

    #[test]
    fn a_commit_shrinks_the_window_and_is_not_repeated() {
        let mut w = window(&[0, 1, 2]);
        w.finish(0).expect("known");
        w.finish(1).expect("known");
        assert_eq!(w.to_store(), Some(2));
        w.stored(2);
        assert!(w.awaiting_commit());
        assert_eq!(w.to_store(), None, "not stored twice while on its way");
        assert_eq!(
            w.committable(),
            Some(2),
            "a synchronous commit still covers a stored watermark"
        );
        assert_eq!(w.len(), 3, "nothing leaves before the acknowledgement");
        w.commit_failed();
        assert_eq!(w.to_store(), Some(2), "offered again after a failure");
        w.stored(2);
        assert_eq!(w.committed(2), 2);
        assert!(!w.awaiting_commit());
        assert_eq!(w.len(), 1);
        assert_eq!(w.committable(), None, "2 still open, 2 already committed");
        w.finish(2).expect("known");
        assert_eq!(w.committable(), Some(3));
        assert_eq!(w.committed(3), 1);
        assert!(w.is_empty());
        assert_eq!(w.committable(), None, "empty after a commit: nothing new");
    }

    #[test]
    fn offsets_must_increase_also_across_commits() {
        let mut w = window(&[5]);
        assert_eq!(w.admit(5), Err(Error::NotIncreasing { offset: 5, last: 5 }));
        w.finish(5).expect("known");
        assert_eq!(w.committed(6), 1);
        assert!(w.admit(5).is_err());
        w.admit(6).expect("next after the commit");
    }

    #[test]
    fn in_flight_counts_follow_the_states() {
        let mut w = window(&[1, 2, 3]);
        w.start(1).expect("known");
        w.start(2).expect("known");
        w.start(2).expect("starting twice counts once");
        assert_eq!(w.in_flight(), 2);
        w.finish(2).expect("known");
        w.finish(2).expect("finishing twice is harmless");
        assert_eq!(w.in_flight(), 1);
        w.finish(3).expect("a queued record may finish (skipped)");
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.finish(9), Err(Error::Unknown(9)));
    }

    /// Every order of finishing five records: the watermark never passes an unfinished one.
    #[test]
    fn exhaustive_finish_orders_never_commit_past_unfinished_work() {
        let offsets = [0_i64, 1, 2, 4, 8];
        let mut order: Vec<usize> = (0..offsets.len()).collect();
        permutations(&mut order, 0, &mut |perm| {
            let mut w = window(&offsets);
            let mut done = [false; 5];
            for &i in perm {
                w.finish(offsets[i]).expect("known");
                done[i] = true;
                let first_open = done.iter().position(|d| !d);
                let expected = match first_open {
                    Some(0) => None,
                    Some(j) => Some(offsets[j]),
                    None => Some(offsets[4] + 1),
                };
                assert_eq!(w.committable(), expected, "{perm:?}");
            }
        });
    }

    /// Random admits, finishes, stores and commits against a plain model: the incremental
    /// watermark always equals the first unfinished offset, and a commit only ever covers
    /// finished records.
    #[test]
    fn randomised_operations_match_a_plain_model() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(11);
        let mut w = PartitionWindow::default();
        // (offset, done) of every record not yet covered by a commit.
        let mut model: Vec<(i64, bool)> = Vec::new();
        let mut next = 0_i64;
        let mut committed: Option<i64> = None;
        for _ in 0..20_000 {
            match rng.random_range(0..10) {
                0..=3 => {
                    next += rng.random_range(1..3);
                    w.admit(next).expect("increasing");
                    model.push((next, false));
                }
                4..=7 if !model.is_empty() => {
                    let i = rng.random_range(0..model.len());
                    w.finish(model[i].0).expect("known");
                    model[i].1 = true;
                }
                8 => {
                    if let Some(offset) = w.to_store() {
                        w.stored(offset);
                    }
                }
                _ => {
                    if let Some(offset) = w.committable() {
                        assert!(
                            model.iter().filter(|(o, _)| *o < offset).all(|(_, d)| *d),
                            "commit of {offset} covers unfinished work"
                        );
                        w.committed(offset);
                        model.retain(|(o, _)| *o >= offset);
                        committed = Some(offset);
                    }
                }
            }
            let first_open = model.iter().find(|(_, d)| !d).map(|(o, _)| *o);
            let expected = match (model.first(), first_open) {
                (None, _) => None,
                (Some((first, _)), Some(open)) if open == *first => None,
                (Some(_), Some(open)) => Some(open),
                (Some(_), None) => model.last().map(|(o, _)| o + 1),
            }
            .filter(|wm| committed.is_none_or(|c| *wm > c));
            assert_eq!(w.committable(), expected);
            assert_eq!(w.len(), model.len());
        }
    }

    fn permutations(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permutations(v, k + 1, f);
            v.swap(k, i);
        }
    }
}
