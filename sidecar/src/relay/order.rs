//! Per-key ordering, the pure part: which rows of a batch may be sent, and which keys wait.
//!
//! A row's ordering key is its topic plus its `key` column ([`KeyId`]): rows with one key go to
//! one partition, so Kafka keeps them in the order the relay sends them, which is id order
//! (rows are read `ORDER BY id`). When a row fails for a reason that may pass (a broker outage,
//! a full queue), its key is *held*: its later rows in the same batch are not sent
//! ([`BatchGate`]), and later batches skip the key until its backoff runs out ([`Holds`]); the
//! failed row is then first in line again. Other keys keep flowing all the while. Rows that can
//! never be published (poison) do not hold their key: they go to the dead-letter topic.
//!
//! A chunk read while the previous one was in Kafka did not see that chunk's rows (their ids
//! were excluded from the read). Every key the previous chunk left unpublished is *behind* in
//! such a chunk: none of its rows are sent there, however short its hold, because an earlier
//! row of the key is missing from the chunk ([`BatchGate::new`]'s `behind`).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

pub use ferry_common::backoff::{HOLD_MAX, HOLD_MIN};

/// How long a hold whose key has not been retried is remembered (its rows may have been
/// handled elsewhere, e.g. marked by hand); keeps the map from growing without bound.
const HOLD_FORGET_AFTER: Duration = Duration::from_secs(600);

/// Separates topic and key in a [`KeyId`]; the unit separator cannot occur in a topic name.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// The ordering identity of a row: `topic ␟ key-as-json-text`, built the same way in SQL
/// (`coalesce(topic,'') || chr(31) || coalesce(key::text,'null')`) so a held key can be
/// excluded in the query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The identity of a row with this `topic` and `key` column text.
    pub fn new(topic: Option<&str>, key_json: Option<&str>) -> Self {
        Self(format!(
            "{}{KEY_SEPARATOR}{}",
            topic.unwrap_or_default(),
            key_json.unwrap_or("null")
        ))
    }

    /// The identity as the SQL expression computes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
struct Hold {
    until: Instant,
    failures: usize,
}

/// Keys that wait after a transient failure, each with its own exponential backoff.
#[derive(Debug, Default)]
pub struct Holds {
    held: HashMap<KeyId, Hold>,
}

impl Holds {
    /// Records a transient failure of `key`: it waits longer with every failure in a row.
    pub fn fail(&mut self, key: &KeyId, now: Instant) {
        let hold = self.held.entry(key.clone()).or_insert(Hold {
            until: now,
            failures: 0,
        });
        hold.failures += 1;
        let delay = ferry_common::backoff::held_key()
            .nth(hold.failures - 1)
            .unwrap_or(HOLD_MAX);
        hold.until = now + delay;
    }

    /// Records that a row of `key` reached Kafka: the key flows freely again.
    pub fn succeed(&mut self, key: &KeyId) {
        self.held.remove(key);
    }

    /// Whether `key` must wait at `now`.
    pub fn is_held(&self, key: &KeyId, now: Instant) -> bool {
        self.held.get(key).is_some_and(|h| h.until > now)
    }

    /// The keys waiting at `now`, for the query to skip (and forgets stale holds).
    pub fn waiting(&mut self, now: Instant) -> Vec<String> {
        self.held.retain(|_, h| h.until + HOLD_FORGET_AFTER > now);
        self.held
            .iter()
            .filter(|(_, h)| h.until > now)
            .map(|(k, _)| k.as_str().to_owned())
            .collect()
    }

    /// When the next held key may be retried, so an idle relay wakes up for it.
    pub fn next_release(&self, now: Instant) -> Option<Instant> {
        self.held
            .values()
            .map(|h| h.until)
            .filter(|u| *u > now)
            .min()
    }

    /// How many keys are held at `now` (a gauge).
    pub fn count(&self, now: Instant) -> usize {
        self.held.values().filter(|h| h.until > now).count()
    }
}

/// Decides, row by row in id order, whether a row of this batch may be sent: not when its
/// key is held, nor when an earlier row of its key is behind (left unpublished by the chunk
/// this one was read past) or already failed in this batch.
#[derive(Debug)]
pub struct BatchGate<'a> {
    holds: &'a Holds,
    behind: &'a HashSet<KeyId>,
    now: Instant,
    failed: HashSet<KeyId>,
    deferred: HashSet<KeyId>,
}

impl<'a> BatchGate<'a> {
    /// A gate for one batch; `behind` are the keys an earlier, unread row of which is still
    /// unpublished (empty for a batch read with nothing in flight).
    pub fn new(holds: &'a Holds, behind: &'a HashSet<KeyId>, now: Instant) -> Self {
        Self {
            holds,
            behind,
            now,
            failed: HashSet::new(),
            deferred: HashSet::new(),
        }
    }

    /// Whether the next row of `key` may be sent.
    pub fn admit(&self, key: &KeyId) -> bool {
        !self.failed.contains(key)
            && !self.deferred.contains(key)
            && !self.behind.contains(key)
            && !self.holds.is_held(key, self.now)
    }

    /// A row of `key` failed (transiently) in this batch: its later rows stay behind.
    pub fn fail(&mut self, key: &KeyId) {
        self.failed.insert(key.clone());
    }

    /// A row of `key` is to be re-sent alone later in this batch (its batch was refused):
    /// its later rows stay behind it, without a hold (the key did not fail).
    pub fn defer(&mut self, key: &KeyId) {
        self.deferred.insert(key.clone());
    }

    /// Whether a row of `key` failed (transiently) in this batch.
    pub fn has_failed(&self, key: &KeyId) -> bool {
        self.failed.contains(key)
    }

    /// The keys that failed in this batch.
    pub fn into_failed(self) -> HashSet<KeyId> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> KeyId {
        KeyId::new(Some("t"), Some(k))
    }

    #[test]
    fn key_identity_matches_the_sql_expression() {
        assert_eq!(
            KeyId::new(Some("orders"), Some("\"o-1\"")).as_str(),
            "orders\u{1f}\"o-1\""
        );
        assert_eq!(KeyId::new(None, None).as_str(), "\u{1f}null");
        assert_ne!(
            KeyId::new(Some("a"), Some("1")),
            KeyId::new(Some("b"), Some("1"))
        );
    }

    #[test]
    fn a_failed_key_holds_its_later_rows_and_lets_others_flow() {
        let holds = Holds::default();
        let now = Instant::now();
        let behind = HashSet::new();
        let mut gate = BatchGate::new(&holds, &behind, now);
        assert!(gate.admit(&key("a")));
        gate.fail(&key("a"));
        assert!(
            !gate.admit(&key("a")),
            "a's later rows wait behind the failed one"
        );
        assert!(gate.admit(&key("b")), "other keys flow");
        assert_eq!(gate.into_failed(), HashSet::from([key("a")]));
    }

    #[test]
    fn held_keys_back_off_exponentially_and_are_released() {
        let mut holds = Holds::default();
        let t0 = Instant::now();
        holds.fail(&key("a"), t0);
        assert!(holds.is_held(&key("a"), t0));
        assert!(!holds.is_held(&key("b"), t0));
        assert_eq!(holds.waiting(t0), vec![key("a").as_str().to_owned()]);
        assert_eq!(holds.next_release(t0), Some(t0 + HOLD_MIN));
        // After the first wait the key is tried again (its failed row is first in line).
        let t1 = t0 + HOLD_MIN;
        assert!(!holds.is_held(&key("a"), t1));
        assert!(holds.waiting(t1).is_empty());
        // A second failure in a row waits twice as long, up to HOLD_MAX.
        holds.fail(&key("a"), t1);
        assert_eq!(holds.next_release(t1), Some(t1 + 2 * HOLD_MIN));
        for _ in 0..20 {
            holds.fail(&key("a"), t1);
        }
        assert_eq!(holds.next_release(t1), Some(t1 + HOLD_MAX));
        // Success clears the key entirely.
        holds.succeed(&key("a"));
        assert!(!holds.is_held(&key("a"), t1));
        assert_eq!(holds.count(t1), 0);
    }

    #[test]
    fn a_deferred_key_waits_in_this_batch_without_a_hold() {
        let holds = Holds::default();
        let behind = HashSet::new();
        let mut gate = BatchGate::new(&holds, &behind, Instant::now());
        gate.defer(&key("a"));
        assert!(
            !gate.admit(&key("a")),
            "a's later rows wait for its re-send"
        );
        assert!(!gate.has_failed(&key("a")));
        assert!(gate.admit(&key("b")));
        assert!(
            gate.into_failed().is_empty(),
            "no backoff for a deferred key"
        );
    }

    #[test]
    fn a_gate_respects_holds_from_earlier_batches() {
        let mut holds = Holds::default();
        let now = Instant::now();
        holds.fail(&key("a"), now);
        let behind = HashSet::new();
        let gate = BatchGate::new(&holds, &behind, now);
        assert!(!gate.admit(&key("a")));
        assert!(gate.admit(&key("b")));
    }

    #[test]
    fn keys_behind_an_unpublished_row_wait_even_when_their_hold_ran_out() {
        // The previous chunk's row of "a" failed long ago (its hold has expired), but this
        // chunk was read while that row was in flight: a's rows here come after it.
        let mut holds = Holds::default();
        let failed_at = Instant::now();
        holds.fail(&key("a"), failed_at);
        let later = failed_at + HOLD_MAX;
        let behind = HashSet::from([key("a")]);
        let mut gate = BatchGate::new(&holds, &behind, later);
        assert!(!gate.admit(&key("a")), "a waits behind its unpublished row");
        assert!(gate.admit(&key("b")), "other keys flow");
        gate.fail(&key("b"));
        assert_eq!(
            gate.into_failed(),
            HashSet::from([key("b")]),
            "a key behind did not fail here, so its backoff does not grow"
        );
    }

    #[test]
    fn stale_holds_are_forgotten() {
        let mut holds = Holds::default();
        let now = Instant::now();
        holds.fail(&key("a"), now);
        holds.waiting(now + HOLD_FORGET_AFTER + HOLD_MAX);
        assert!(holds.held.is_empty());
    }
}
