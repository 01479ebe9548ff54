//! How the leader overlaps PostgreSQL and Kafka without widening the crash window.
//!
//! The work of one chunk is read → publish (every report awaited) → mark. Done one after the
//! other, SQL time and Kafka time add up; so the leader runs three chunks at once, each on its
//! own resource:
//!
//! ```text
//!   work session:   read k+1 (skipping the ids of k and k-1)
//!   Kafka:          publish k (sent only once k-1's reports are all in)
//!   mark session:   mark k-1 (one statement, only its delivered rows)
//! ```
//!
//! Rows sent but not yet marked are what a crash re-publishes: chunk k-1 (being marked) and
//! chunk k (in Kafka). `--batch-size` bounds that window, so a chunk is half a batch
//! ([`chunk_size`]) and a crash still re-publishes at most one batch, as DESIGN §4 promises.
//! Per-key order across chunks is kept by [`super::order::BatchGate`]'s `behind` keys.

use std::time::Instant;

use super::batch::BatchOutcome;

/// Chunks sent to Kafka and not yet marked at any time: the one being marked and the one in
/// Kafka.
pub const UNMARKED_CHUNKS: u32 = 2;

/// Rows per read and publish, so that [`UNMARKED_CHUNKS`] chunks fit in `batch_size` (the
/// crash duplicate bound). A batch size of 1 gives chunks of 1 that are marked before the
/// next is sent ([`overlaps_marks`] is false).
pub fn chunk_size(batch_size: u32) -> u32 {
    (batch_size / UNMARKED_CHUNKS).max(1)
}

/// Whether a chunk's mark may run while the next chunk is in Kafka without exceeding
/// `batch_size` unmarked rows.
pub fn overlaps_marks(batch_size: u32) -> bool {
    chunk_size(batch_size) * UNMARKED_CHUNKS <= batch_size
}

/// What one published chunk asks of the mark session.
#[derive(Debug, Default)]
pub struct Marks {
    /// Rows Kafka confirmed (on their topic or the dead-letter topic): mark or delete them.
    pub delivered: Vec<i64>,
    /// Poison rows to mark failed, with the reason.
    pub failed: Vec<(i64, String)>,
    /// When the chunk's read started (for the batch-duration histogram).
    pub read_at: Option<Instant>,
}

impl Marks {
    /// The marks a chunk's outcome calls for.
    pub fn of(outcome: &BatchOutcome, read_at: Instant) -> Self {
        let mut delivered = outcome.published.clone();
        delivered.extend(outcome.dead_lettered.iter().map(|row| row.id));
        Self {
            delivered,
            failed: outcome
                .failed
                .iter()
                .map(|(row, text)| (row.id, text.clone()))
                .collect(),
            read_at: Some(read_at),
        }
    }

    /// The rows a read must skip until these marks are committed.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.delivered
            .iter()
            .copied()
            .chain(self.failed.iter().map(|(id, _)| *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{batch::SetAside, failure::Reason};

    fn set_aside(id: i64) -> SetAside {
        SetAside {
            id,
            event_id: None,
            topic: None,
            reason: Reason::MissingTopic,
        }
    }

    #[test]
    fn the_unmarked_window_never_exceeds_the_batch_size() {
        for batch_size in 1..=10_000 {
            let chunk = chunk_size(batch_size);
            assert!(chunk >= 1);
            let window = if overlaps_marks(batch_size) {
                UNMARKED_CHUNKS * chunk
            } else {
                chunk
            };
            assert!(window <= batch_size, "batch size {batch_size}: {window}");
        }
        assert_eq!(chunk_size(1_000), 500);
        assert!(overlaps_marks(1_000));
        assert_eq!(chunk_size(1), 1);
        assert!(
            !overlaps_marks(1),
            "a batch of one is marked before the next"
        );
        assert_eq!(chunk_size(3), 1, "two chunks of one, never two of two");
    }

    #[test]
    fn marks_cover_exactly_the_settled_rows() {
        let outcome = BatchOutcome {
            published: vec![1, 3],
            dead_lettered: vec![set_aside(4)],
            failed: vec![(set_aside(5), "missing".into())],
            held: 1,
            ..BatchOutcome::default()
        };
        let marks = Marks::of(&outcome, Instant::now());
        assert_eq!(marks.delivered, vec![1, 3, 4]);
        assert_eq!(marks.failed, vec![(5, "missing".to_owned())]);
        assert_eq!(marks.ids().collect::<Vec<_>>(), vec![1, 3, 4, 5]);
    }
}
