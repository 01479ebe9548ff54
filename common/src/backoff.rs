//! Every backoff schedule of Ferry, one constructor per policy, each with the reason for its
//! numbers. A schedule is an iterator of waits (backon's [`ExponentialBackoff`]): take `next()`
//! before each retry, drop it (or build a new one) once the operation succeeds.
//!
//! All are exponential with factor 2. "Jitter" adds a random 0–100 % of the step (backon's
//! jitter), so that many keys, topics or pods failing together do not retry in step; the
//! policies without it are per-key schedules whose waits are checked by exact tests.
//!
//! | policy                      | first  | cap     | jitter | ends after     | used by           |
//! |-----------------------------|--------|---------|--------|----------------|-------------------|
//! | [`controller_requeue`]      | 1 s    | 5 min   | yes    | never          | operator topics   |
//! | [`identity_retry`]          | 1 s    | 60 s    | no     | never          | operator identity |
//! | [`relay_reconnect`]         | 200 ms | 5 s     | yes    | never          | relay sessions    |
//! | [`held_key`]                | 500 ms | 30 s    | no     | never          | relay held keys   |
//! | [`idle_poll`]               | given  | given   | no     | never          | relay idle reads  |
//! | [`delivery_retry`]          | given  | given   | yes    | given attempts | worker delivery   |
//! | [`copy_write`]              | 1 s    | 5 s     | yes    | never          | worker copies     |
//! | [`dedup_store_unavailable`] | 1 s    | 5 s     | yes    | never          | worker dedup      |
//! | [`dedup_claim`]             | 5 ms   | 500 ms  | yes    | never          | worker dedup lock |

use std::time::Duration;

pub use backon::ExponentialBackoff;
use backon::{BackoffBuilder, ExponentialBuilder};

/// Factor between two steps of every schedule: doubling, the usual choice (controller-runtime,
/// gRPC, backon's default).
const FACTOR: f32 = 2.0;

/// An exponential schedule from `first` to `cap`, without end.
fn unbounded(first: Duration, cap: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(FACTOR)
        .without_max_times()
}

/// Requeue of an object whose reconcile failed (the operator's `error_policy`), per object.
/// From 1 s (an API-server or Kafka hiccup passes in about that), doubling up to 5 min:
/// controller-runtime's default limiter caps at 1000 s, 5 min keeps recovery after a Kafka
/// outage prompt. Jitter, so many objects failing together do not retry in step.
pub fn controller_requeue() -> ExponentialBackoff {
    unbounded(Duration::from_secs(1), Duration::from_secs(300))
        .with_jitter()
        .build()
}

/// Retry of the identity controller's failed pass over the whole scope (credentials, then
/// ACLs). From 1 s, doubling up to 60 s: one pass covers every identity, so there is one
/// schedule per operator and nothing to spread with jitter; 60 s bounds how long a repaired
/// Kafka waits for its identities.
pub fn identity_retry() -> ExponentialBackoff {
    unbounded(Duration::from_secs(1), Duration::from_secs(60)).build()
}

/// The longest wait of [`relay_reconnect`]; a session that ran longer than twice this before
/// failing starts the schedule again from its first step.
pub const RELAY_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Reconnect of the relay after a database or leadership failure: a quick first retry at
/// 200 ms (a restart of PostgreSQL takes a few seconds), capped at [`RELAY_RECONNECT_MAX`]
/// so a long outage costs little; jitter, so the replicas of a deployment do not reconnect in
/// step.
pub fn relay_reconnect() -> ExponentialBackoff {
    unbounded(Duration::from_millis(200), RELAY_RECONNECT_MAX)
        .with_jitter()
        .build()
}

/// The worker's wait for its service to accept connections before it joins its group
/// (`--wait-for-target`, injected workers): every 250 ms at first (a Django pod starts in a
/// few seconds), up to every 2 s, for as long as it takes.
pub fn target_wait() -> ExponentialBackoff {
    unbounded(Duration::from_millis(250), Duration::from_secs(2)).build()
}

/// The first wait of a held key; short, since most failures (a leader election, a full
/// queue) pass within a second.
pub const HOLD_MIN: Duration = Duration::from_millis(500);

/// The longest wait of a held key; bounds how stale a recovered key can get.
pub const HOLD_MAX: Duration = Duration::from_secs(30);

/// The waits of a relay ordering key held after a failure that may pass: [`HOLD_MIN`]
/// doubling to [`HOLD_MAX`]. No jitter: the `n`-th failure of a key waits exactly the `n`-th
/// step (`held_key().nth(n - 1)`), which the relay's ordering tests check.
pub fn held_key() -> ExponentialBackoff {
    unbounded(HOLD_MIN, HOLD_MAX).build()
}

/// The relay's waits between reads of an outbox that has gone idle: from `first` (the
/// relay's shortest gap between reads, `relay::pacing::MIN_POLL_DELAY`) doubling to `idle`
/// (`--idle-poll-interval`), so a trickle is picked up quickly and an idle table costs little.
/// No jitter: one schedule per relay, and the pacing tests check its exact steps.
pub fn idle_poll(first: Duration, idle: Duration) -> ExponentialBackoff {
    unbounded(first, idle).build()
}

/// The worker's in-process delivery retries of one record: from `initial` doubling to `max`
/// (`--retry-backoff-initial`, `--retry-backoff-max`), at most `retries` waits (the attempts
/// after the first; then the record goes to a retry tier or the dead-letter topic). Jitter,
/// so the records of a failing service do not retry in step.
pub fn delivery_retry(initial: Duration, max: Duration, retries: usize) -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_factor(FACTOR)
        .with_max_times(retries)
        .with_jitter()
        .build()
}

/// The longest wait between attempts to write a retry or dead-letter copy: a guess at how
/// often a fixed ACL or a newly created topic should be noticed.
pub const COPY_WRITE_MAX: Duration = Duration::from_secs(5);

/// The worker's attempts to write a retry-tier or dead-letter copy Kafka refused: from 1 s
/// (backon's default first step, kept when this was written inline) to [`COPY_WRITE_MAX`],
/// without end (the record is not done until its copy is; offsets wait). Jitter, as many
/// records of a partition may be refused together.
pub fn copy_write() -> ExponentialBackoff {
    unbounded(Duration::from_secs(1), COPY_WRITE_MAX)
        .with_jitter()
        .build()
}

/// The worker's retries of an idempotency-store (PostgreSQL) call that failed: the schedule of
/// [`copy_write`] (1 s to [`COPY_WRITE_MAX`], endless, jitter), since a record waiting on the
/// store holds its offsets just as a record waiting on its copy does.
pub fn dedup_store_unavailable() -> ExponentialBackoff {
    copy_write()
}

/// The longest wait for another worker's claim on an event id: the holder's delivery usually
/// takes milliseconds; its own retries take longer and are rare.
pub const DEDUP_CLAIM_MAX: Duration = Duration::from_millis(500);

/// The worker's waits for the advisory lock another worker holds on the same event id: from
/// 5 ms (a delivery to a healthy service) to [`DEDUP_CLAIM_MAX`], without end (the caller
/// stops when the record is no longer wanted). Jitter, so waiters do not retry in step.
pub fn dedup_claim() -> ExponentialBackoff {
    unbounded(Duration::from_millis(5), DEDUP_CLAIM_MAX)
        .with_jitter()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Every jittered step lies in [step, 2·step).
    fn within_jitter(got: &[Duration], steps: &[Duration]) {
        assert_eq!(got.len(), steps.len());
        for (g, s) in got.iter().zip(steps) {
            assert!(*g >= *s && *g < *s * 2, "{g:?} outside [{s:?}, 2·{s:?})");
        }
    }

    #[test]
    fn held_key_doubles_from_half_a_second_to_thirty() {
        let got: Vec<_> = held_key().take(9).collect();
        let want: Vec<_> = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
            .map(ms)
            .to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn identity_retry_doubles_from_one_second_to_sixty() {
        let got: Vec<_> = identity_retry().take(8).collect();
        let want = [1, 2, 4, 8, 16, 32, 60, 60]
            .map(Duration::from_secs)
            .to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn idle_poll_doubles_to_the_idle_interval() {
        let got: Vec<_> = idle_poll(ms(5), ms(30)).take(5).collect();
        assert_eq!(got, [5, 10, 20, 30, 30].map(ms).to_vec());
    }

    #[test]
    fn jittered_policies_keep_their_steps() {
        let s = Duration::from_secs;
        let n = 11;
        within_jitter(
            &controller_requeue().take(n).collect::<Vec<_>>(),
            &[1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map(s),
        );
        within_jitter(
            &relay_reconnect().take(7).collect::<Vec<_>>(),
            &[200, 400, 800, 1600, 3200, 5000, 5000].map(ms),
        );
        within_jitter(
            &copy_write().take(5).collect::<Vec<_>>(),
            &[1000, 2000, 4000, 5000, 5000].map(ms),
        );
        within_jitter(
            &dedup_store_unavailable().take(5).collect::<Vec<_>>(),
            &[1000, 2000, 4000, 5000, 5000].map(ms),
        );
        within_jitter(
            &dedup_claim().take(9).collect::<Vec<_>>(),
            &[5, 10, 20, 40, 80, 160, 320, 500, 500].map(ms),
        );
    }

    #[test]
    fn delivery_retry_stops_after_its_retries() {
        let got: Vec<_> = delivery_retry(ms(200), ms(500), 4).collect();
        within_jitter(&got, &[200, 400, 500, 500].map(ms));
        assert_eq!(delivery_retry(ms(200), ms(500), 0).next(), None);
    }
}
