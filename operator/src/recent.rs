//! What this process put in place for each EventConsumer a moment ago — its worker Deployment,
//! its Kafka topics — so a reconcile woken again soon after (a Deployment's rollout changes its
//! status four or five times, and each change wakes the consumer) does not apply the same
//! Deployment and describe the same topics once more. With 1,000 consumers applied at once
//! that repeated work was most of what the API server and Kafka were asked.
//!
//! Drift still goes back. A record holds a fingerprint of what was applied *and* of what the
//! server answered (for a Deployment, its `metadata.generation`, which every spec change by
//! anyone moves), so a change made by someone else no longer matches. And a record is trusted
//! for the resync interval only: after it, the reconcile applies and describes as if it had
//! never seen the consumer, which finds changes that leave no trace in a generation (a label,
//! a topic altered directly in Kafka).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
    time::{Duration, Instant},
};

/// The fingerprint of something applied, recorded per object and trusted for a while.
pub struct Recent<K> {
    last: Mutex<HashMap<K, (u64, Instant)>>,
    trusted_for: Duration,
}

impl<K: Eq + Hash> Recent<K> {
    /// Records are trusted for `trusted_for` (the controller's resync interval).
    pub fn new(trusted_for: Duration) -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
            trusted_for,
        }
    }

    /// Whether `fingerprint` was recorded for `key` less than the trusted interval before `now`.
    pub fn is_current(&self, key: &K, fingerprint: u64, now: Instant) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(key).is_some_and(|(recorded, at)| {
            *recorded == fingerprint && now.saturating_duration_since(*at) < self.trusted_for
        })
    }

    /// Records `fingerprint` as just put in place for `key`.
    pub fn record(&self, key: K, fingerprint: u64, now: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(key, (fingerprint, now));
    }

    /// Drops `key`'s record: the object is going away, or what it recorded may no longer hold.
    pub fn forget(&self, key: &K) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(key);
    }
}

/// A fingerprint of `value` as its JSON (every resource and spec here serializes; none
/// implements `Hash`), streamed into the hasher. Equal JSON, equal fingerprint; a value that
/// does not serialize gets a random one, which matches no record, so nothing is skipped for it.
pub fn fingerprint<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    /// Feeds what serde_json writes straight into the hasher.
    struct Hashing(DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(DefaultHasher::new());
    match serde_json::to_writer(&mut hashing, value) {
        Ok(()) => hashing.0.finish(),
        Err(_) => rand::random(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(300);

    #[test]
    fn the_same_thing_applied_a_moment_ago_is_current() {
        let recent = Recent::new(RESYNC);
        let now = Instant::now();
        recent.record("uid", fingerprint(&("spec", Some(3))), now);
        assert!(recent.is_current(&"uid", fingerprint(&("spec", Some(3))), now));
        assert!(!recent.is_current(&"other", fingerprint(&("spec", Some(3))), now));
    }

    #[test]
    fn a_change_by_someone_else_or_by_the_spec_is_not_current() {
        let recent = Recent::new(RESYNC);
        let now = Instant::now();
        recent.record("uid", fingerprint(&("spec", Some(3))), now);
        // Someone edited the Deployment: its generation moved.
        assert!(!recent.is_current(&"uid", fingerprint(&("spec", Some(4))), now));
        // The consumer's spec changed what is wanted.
        assert!(!recent.is_current(&"uid", fingerprint(&("spec v2", Some(3))), now));
    }

    #[test]
    fn a_record_is_not_trusted_past_the_resync_interval() {
        let recent = Recent::new(RESYNC);
        let then = Instant::now();
        recent.record("uid", 7, then);
        assert!(recent.is_current(&"uid", 7, then + RESYNC - Duration::from_secs(1)));
        assert!(!recent.is_current(&"uid", 7, then + RESYNC));
    }

    #[test]
    fn a_forgotten_record_is_not_current() {
        let recent = Recent::new(RESYNC);
        let now = Instant::now();
        recent.record("uid", 7, now);
        recent.forget(&"uid");
        assert!(!recent.is_current(&"uid", 7, now));
    }
}
