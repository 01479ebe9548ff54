//! Adaptive polling: how long the relay waits before it reads the outbox again.
//!
//! A full batch means more rows are waiting: read again at once. A partial batch means the
//! relay has caught up: read again [`MIN_POLL_DELAY`] after the previous read *started* (the
//! time spent publishing and marking counts towards it), so a steady trickle is published
//! within milliseconds and costs at most one read per step. Each empty poll doubles the wait,
//! up to `--idle-poll-interval`, so a quiet table costs one cheap query per interval instead of
//! a fixed sleep's constant load.

use std::time::Duration;

use ferry_common::backoff::{self, ExponentialBackoff};

/// The shortest time between the starts of two reads while rows trickle in, and the first
/// step of the idle backoff. 5 ms is a tenth of the 50 ms p99 commit→ack target (DESIGN §10)
/// while costing at most 200 reads/s under a trickle.
pub const MIN_POLL_DELAY: Duration = Duration::from_millis(5);

/// Chooses the wait before the next poll.
#[derive(Debug)]
pub struct Pacer {
    idle: Duration,
    backoff: ExponentialBackoff,
}

impl Pacer {
    /// A pacer that backs off to `idle` (never below [`MIN_POLL_DELAY`]).
    pub fn new(idle: Duration) -> Self {
        let idle = idle.max(MIN_POLL_DELAY);
        Self {
            idle,
            backoff: Self::schedule(idle),
        }
    }

    fn schedule(idle: Duration) -> ExponentialBackoff {
        backoff::idle_poll(MIN_POLL_DELAY, idle)
    }

    /// The wait after a poll that returned `rows` of at most `batch_size` and started
    /// `since_poll` ago.
    pub fn next_delay(&mut self, rows: usize, batch_size: usize, since_poll: Duration) -> Duration {
        if rows >= batch_size {
            self.backoff = Self::schedule(self.idle);
            Duration::ZERO
        } else if rows > 0 {
            self.backoff = Self::schedule(self.idle);
            MIN_POLL_DELAY.saturating_sub(since_poll)
        } else {
            self.backoff.next().unwrap_or(self.idle)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batches_poll_at_once_and_empty_ones_back_off_to_idle() {
        let idle = Duration::from_millis(100);
        let mut pacer = Pacer::new(idle);
        assert_eq!(pacer.next_delay(10, 10, Duration::ZERO), Duration::ZERO);
        assert_eq!(pacer.next_delay(3, 10, Duration::ZERO), MIN_POLL_DELAY);
        let waits: Vec<_> = (0..8)
            .map(|_| pacer.next_delay(0, 10, Duration::ZERO))
            .collect();
        assert_eq!(waits[0], MIN_POLL_DELAY);
        assert_eq!(waits[1], 2 * MIN_POLL_DELAY);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(*waits.last().expect("waits"), idle);
        // New rows reset the backoff.
        assert_eq!(pacer.next_delay(1, 10, Duration::ZERO), MIN_POLL_DELAY);
        assert_eq!(pacer.next_delay(0, 10, Duration::ZERO), MIN_POLL_DELAY);
    }

    #[test]
    fn a_trickle_is_read_one_step_after_the_previous_read_started() {
        let mut pacer = Pacer::new(Duration::from_secs(1));
        let step = MIN_POLL_DELAY;
        assert_eq!(pacer.next_delay(3, 10, step / 5), step - step / 5);
        assert_eq!(
            pacer.next_delay(3, 10, step * 2),
            Duration::ZERO,
            "publishing took longer than a step: read again at once"
        );
        // An empty read still backs off from its end, whatever the read took.
        assert_eq!(pacer.next_delay(0, 10, step * 2), MIN_POLL_DELAY);
    }

    #[test]
    fn an_idle_interval_below_the_minimum_is_raised() {
        let mut pacer = Pacer::new(Duration::ZERO);
        assert_eq!(pacer.next_delay(0, 10, Duration::ZERO), MIN_POLL_DELAY);
    }
}
