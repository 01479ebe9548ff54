//! How many workers an EventConsumer runs — pure, so every rule has a test.
//!
//! `replicas = ceil(lag / lagThreshold)` within `[minReplicas, min(maxReplicas, partitions)]`
//! (a partition is worked by one member of the group, so more workers than partitions idle):
//! - up at once: a backlog grows while we wait;
//! - down only after the wanted count stayed below the current one for a cooldown, so a
//!   backlog drained in bursts does not make the group rebalance back and forth;
//! - never below one while there is any lag, also with `minReplicas: 0`, which scales to zero
//!   only when the group has no lag, and back to one as soon as a record arrives;
//! - lag on stuck partitions (a record stuck in delivery: the committed offset does not move
//!   while workers run) is left out of the count: more workers cannot help it (KEDA's
//!   `excludePersistentLag`), though it still keeps one worker.

use std::time::{Duration, Instant};

use crate::api::Scaling;

/// What the scaler knows about a consumer's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagInput {
    /// Lag of partitions that are moving (or idle), which more workers can work off.
    pub movable: i64,
    /// All lag, stuck partitions included.
    pub total: i64,
}

/// What the scaler remembers of one consumer between decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Since when fewer workers than run have been enough.
    below_since: Option<Instant>,
}

/// The bounds `[lower, upper]` for `scaling` over topics of at most `partitions` partitions.
pub fn bounds(scaling: &Scaling, partitions: i32) -> (i32, i32) {
    let upper = scaling.max_replicas.min(partitions).max(1);
    (scaling.min_replicas.clamp(0, upper), upper)
}

/// The replicas to run now. `current` is what runs (`None`: no Deployment yet); `lag` is
/// `None` until the first lag round has seen the group.
pub fn decide(
    scaling: &Scaling,
    partitions: i32,
    current: Option<i32>,
    lag: Option<LagInput>,
    memory: &mut Memory,
    cooldown: Duration,
    now: Instant,
) -> i32 {
    let (lower, upper) = bounds(scaling, partitions);
    let Some(lag) = lag else {
        // Nothing measured yet: keep what runs, and start with at least one worker so a new
        // group's backlog (or its first record) is seen.
        return current.unwrap_or_else(|| lower.max(1)).clamp(lower, upper);
    };
    let threshold = scaling.lag_threshold.max(1);
    // ceil(lag / threshold) in integers (i64::div_ceil is not stable).
    let movable = lag.movable.max(0);
    let by_lag = movable / threshold + i64::from(movable % threshold != 0);
    let mut wanted = i32::try_from(by_lag)
        .unwrap_or(i32::MAX)
        .clamp(lower, upper);
    if lag.total > 0 {
        wanted = wanted.max(1);
    }
    let Some(current) = current else {
        return wanted;
    };
    if wanted >= current {
        memory.below_since = None;
        return wanted;
    }
    let since = *memory.below_since.get_or_insert(now);
    if now.duration_since(since) >= cooldown {
        memory.below_since = None;
        wanted
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(300);

    fn scaling(min: i32, max: i32, threshold: i64) -> Scaling {
        Scaling {
            min_replicas: min,
            max_replicas: max,
            lag_threshold: threshold,
        }
    }

    fn lag(movable: i64, total: i64) -> Option<LagInput> {
        Some(LagInput { movable, total })
    }

    #[test]
    fn ceil_of_lag_over_threshold_within_bounds() {
        let s = scaling(1, 6, 1000);
        let now = Instant::now();
        let mut m = Memory::default();
        assert_eq!(decide(&s, 12, Some(1), lag(0, 0), &mut m, COOLDOWN, now), 1);
        assert_eq!(decide(&s, 12, Some(1), lag(1, 1), &mut m, COOLDOWN, now), 1);
        assert_eq!(
            decide(&s, 12, Some(1), lag(1001, 1001), &mut m, COOLDOWN, now),
            2
        );
        assert_eq!(
            decide(&s, 12, Some(2), lag(3000, 3000), &mut m, COOLDOWN, now),
            3
        );
        assert_eq!(
            decide(
                &s,
                12,
                Some(3),
                lag(1_000_000, 1_000_000),
                &mut m,
                COOLDOWN,
                now
            ),
            6,
            "maxReplicas caps"
        );
        assert_eq!(
            decide(
                &s,
                4,
                Some(3),
                lag(1_000_000, 1_000_000),
                &mut m,
                COOLDOWN,
                now
            ),
            4,
            "the partition count caps"
        );
    }

    #[test]
    fn down_only_after_the_cooldown_and_up_at_once() {
        let s = scaling(1, 6, 100);
        let t0 = Instant::now();
        let mut m = Memory::default();
        assert_eq!(decide(&s, 6, Some(5), lag(50, 50), &mut m, COOLDOWN, t0), 5);
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(decide(&s, 6, Some(5), lag(50, 50), &mut m, COOLDOWN, t1), 5);
        // A burst resets the cooldown.
        assert_eq!(
            decide(&s, 6, Some(5), lag(600, 600), &mut m, COOLDOWN, t1),
            6
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(decide(&s, 6, Some(6), lag(50, 50), &mut m, COOLDOWN, t2), 6);
        let t3 = t2 + COOLDOWN;
        assert_eq!(decide(&s, 6, Some(6), lag(50, 50), &mut m, COOLDOWN, t3), 1);
    }

    #[test]
    fn zero_only_without_lag_and_back_to_one_at_once() {
        let s = scaling(0, 3, 1000);
        let t0 = Instant::now();
        let mut m = Memory::default();
        assert_eq!(decide(&s, 3, Some(1), lag(0, 0), &mut m, COOLDOWN, t0), 1);
        assert_eq!(
            decide(&s, 3, Some(1), lag(0, 0), &mut m, COOLDOWN, t0 + COOLDOWN),
            0
        );
        assert_eq!(
            decide(&s, 3, Some(0), lag(1, 1), &mut m, COOLDOWN, t0 + COOLDOWN),
            1,
            "a record wakes the group at once"
        );
    }

    #[test]
    fn stuck_lag_adds_no_workers_but_keeps_one() {
        let s = scaling(0, 6, 10);
        let t0 = Instant::now();
        let mut m = Memory::default();
        assert_eq!(decide(&s, 6, Some(1), lag(0, 500), &mut m, COOLDOWN, t0), 1);
        assert_eq!(
            decide(&s, 6, Some(1), lag(0, 500), &mut m, COOLDOWN, t0 + COOLDOWN),
            1,
            "never below one while lag > 0"
        );
        assert_eq!(
            decide(&s, 6, Some(1), lag(25, 525), &mut m, COOLDOWN, t0),
            3
        );
    }

    #[test]
    fn before_any_measurement() {
        let mut m = Memory::default();
        let now = Instant::now();
        assert_eq!(
            decide(&scaling(0, 3, 1), 3, None, None, &mut m, COOLDOWN, now),
            1
        );
        assert_eq!(
            decide(&scaling(2, 3, 1), 3, None, None, &mut m, COOLDOWN, now),
            2
        );
        assert_eq!(
            decide(&scaling(0, 3, 1), 3, Some(0), None, &mut m, COOLDOWN, now),
            0
        );
        assert_eq!(
            decide(&scaling(1, 8, 1), 2, Some(5), None, &mut m, COOLDOWN, now),
            2
        );
        assert_eq!(
            bounds(&scaling(4, 8, 1), 2),
            (2, 2),
            "partitions cap minReplicas too"
        );
    }
}
