//! Which admitted record may start next (DESIGN §5 "Ordering").
//!
//! Every record belongs to a lane — its partition (`ordering=partition`), its partition and key
//! (`ordering=key`), or none (`ordering=unordered`, and null keys). A lane runs one record at a
//! time, in the order records were pushed; records of different lanes run side by side. The
//! caller bounds how many run at once (`--max-in-flight`) by how often it calls
//! [`Scheduler::pop_ready`].

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    hash::Hash,
};

/// Lanes of records; `L` names a lane, `T` is the record.
#[derive(Debug)]
pub struct Scheduler<L, T> {
    /// Records waiting behind the running record of their lane. A lane is present while one
    /// of its records runs.
    lanes: HashMap<L, VecDeque<T>>,
    /// Records free to start, oldest first.
    ready: VecDeque<(Option<L>, T)>,
}

impl<L, T> Default for Scheduler<L, T> {
    fn default() -> Self {
        Self {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
        }
    }
}

impl<L: Hash + Eq + Clone, T> Scheduler<L, T> {
    /// Adds a record; `None` means it may run beside anything.
    pub fn push(&mut self, lane: Option<L>, item: T) {
        let Some(lane) = lane else {
            self.ready.push_back((None, item));
            return;
        };
        match self.lanes.entry(lane.clone()) {
            Entry::Occupied(mut waiting) => waiting.get_mut().push_back(item),
            Entry::Vacant(v) => {
                v.insert(VecDeque::new());
                self.ready.push_back((Some(lane), item));
            }
        }
    }

    /// The next record free to start, with its lane (hand the lane back to
    /// [`Scheduler::complete`] when it is done).
    pub fn pop_ready(&mut self) -> Option<(Option<L>, T)> {
        self.ready.pop_front()
    }

    /// The running record of `lane` finished: its next record becomes ready.
    pub fn complete(&mut self, lane: Option<&L>) {
        let Some(lane) = lane else { return };
        if let Some(waiting) = self.lanes.get_mut(lane) {
            match waiting.pop_front() {
                Some(next) => self.ready.push_back((Some(lane.clone()), next)),
                None => {
                    self.lanes.remove(lane);
                }
            }
        }
    }

    /// Records ready or waiting (not those running).
    pub fn queued(&self) -> usize {
        self.ready.len() + self.lanes.values().map(VecDeque::len).sum::<usize>()
    }

    /// Drops every record for which `keep` is false (e.g. of revoked partitions). A lane whose
    /// ready head is dropped is freed (its next kept record becomes ready), or it would stay
    /// busy for ever; a lane whose head is running is freed by that record's `complete`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for waiting in self.lanes.values_mut() {
            waiting.retain(&mut keep);
        }
        let mut freed = Vec::new();
        self.ready.retain(|(lane, t)| {
            let kept = keep(t);
            if !kept && let Some(lane) = lane {
                freed.push(lane.clone());
            }
            kept
        });
        for lane in freed {
            self.complete(Some(&lane));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<L: Hash + Eq + Clone, T>(s: &mut Scheduler<L, T>) -> Vec<(Option<L>, T)> {
        std::iter::from_fn(|| s.pop_ready()).collect()
    }

    #[test]
    fn one_record_per_lane_at_a_time_in_order() {
        let mut s = Scheduler::default();
        for (lane, n) in [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("b", 5)] {
            s.push(Some(lane), n);
        }
        let first = drain(&mut s);
        assert_eq!(first, vec![(Some("a"), 1), (Some("b"), 3)]);
        assert_eq!(s.queued(), 3);
        s.complete(Some(&"a"));
        assert_eq!(drain(&mut s), vec![(Some("a"), 2)]);
        s.complete(Some(&"a"));
        s.complete(Some(&"b"));
        assert_eq!(drain(&mut s), vec![(Some("a"), 4), (Some("b"), 5)]);
        s.complete(Some(&"a"));
        s.complete(Some(&"b"));
        assert_eq!(s.queued(), 0);
        s.push(Some("a"), 6);
        assert_eq!(
            drain(&mut s),
            vec![(Some("a"), 6)],
            "an idle lane starts at once"
        );
    }

    #[test]
    fn unlaned_records_never_wait() {
        let mut s: Scheduler<&str, i32> = Scheduler::default();
        s.push(None, 1);
        s.push(None, 2);
        assert_eq!(drain(&mut s), vec![(None, 1), (None, 2)]);
        s.complete(None);
    }

    #[test]
    fn retain_drops_waiting_records_but_keeps_lanes_consistent() {
        let mut s = Scheduler::default();
        s.push(Some(1), "keep-1");
        s.push(Some(1), "drop");
        s.push(Some(1), "keep-2");
        assert_eq!(drain(&mut s).len(), 1);
        s.retain(|t| !t.starts_with("drop"));
        s.complete(Some(&1));
        assert_eq!(drain(&mut s), vec![(Some(1), "keep-2")]);
    }

    /// The stall a rebalance once caused: a dropped ready head must not leave its lane busy.
    #[test]
    fn dropping_a_ready_head_frees_its_lane() {
        let mut s = Scheduler::default();
        s.push(Some("k"), ("old", 1));
        s.push(Some("k"), ("old", 2));
        s.retain(|(generation, _)| *generation != "old");
        assert_eq!(s.queued(), 0);
        s.push(Some("k"), ("new", 3));
        assert_eq!(
            drain(&mut s),
            vec![(Some("k"), ("new", 3))],
            "lane k stayed busy"
        );
    }

    /// Random pushes and completions: a lane never has two records running, and each lane's
    /// records start in push order.
    #[test]
    fn randomised_lanes_keep_order_and_exclusivity() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = Scheduler::default();
        let mut running: HashMap<u8, u32> = HashMap::new();
        let mut next_seq: HashMap<u8, u32> = HashMap::new();
        let mut expect_seq: HashMap<u8, u32> = HashMap::new();
        for _ in 0..5000 {
            if rng.random_bool(0.6) {
                let lane = rng.random_range(0..8u8);
                let seq = next_seq.entry(lane).or_default();
                s.push(Some(lane), (lane, *seq));
                *seq += 1;
            } else if let Some(&lane) = running.keys().next() {
                running.remove(&lane);
                s.complete(Some(&lane));
            }
            while let Some((lane, (l, seq))) = s.pop_ready() {
                assert_eq!(lane, Some(l));
                assert!(
                    running.insert(l, seq).is_none(),
                    "lane {l} ran twice at once"
                );
                let expected = expect_seq.entry(l).or_default();
                assert_eq!(seq, *expected, "lane {l} out of order");
                *expected += 1;
            }
        }
    }
}
