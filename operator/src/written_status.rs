//! What this process last wrote as each object's status, so a reconcile does not skip a
//! status write on the word of a cache that has not seen the last one yet.
//!
//! A controller reconciles the object its watch cache holds, and the cache learns of the
//! controller's own status write only when the watch event for it arrives. Two reconciles in
//! quick succession (a Deployment rolling out in a few milliseconds under KWOK) can therefore
//! go: the first writes `RollingOut` over `Ready`; the second, still reading the cached `Ready`,
//! computes `Ready` again, finds "nothing changed" and skips its write — and the status stays
//! `RollingOut` until the next resync, minutes later. Comparing with the last write instead
//! of the cache alone closes that: a write is skipped only when the cache *and* the last write
//! both already say what the reconcile found. (Whichever of the two is newer, the server then
//! holds it; when they disagree, one write settles it.)

use std::{collections::HashMap, hash::Hash, sync::Mutex};

/// The last status written per object, keyed by what identifies the object (its UID, so a
/// deleted and re-created object of the same name starts afresh).
pub struct WrittenStatus<K, S> {
    last: Mutex<HashMap<K, S>>,
}

impl<K, S> Default for WrittenStatus<K, S> {
    fn default() -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, S: PartialEq> WrittenStatus<K, S> {
    /// Whether `desired` is already the object's status: the cached object shows it and this
    /// process's last write (if any) was it too.
    pub fn is_current(&self, key: &K, cached: &S, desired: &S) -> bool {
        if cached != desired {
            return false;
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(key).is_none_or(|written| written == desired)
    }

    /// Records `written` as the status last applied for `key`.
    pub fn record(&self, key: K, written: S) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(key, written);
    }

    /// Drops `key`'s record once the object is gone.
    pub fn forget(&self, key: &K) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_the_cache_has_not_seen_yet_is_not_taken_for_the_current_status() {
        let written = WrittenStatus::default();
        // The cache shows Ready; this process has just written RollingOut over it.
        written.record("uid", "RollingOut");
        // A reconcile reading the stale cache finds Ready again: that must be written.
        assert!(!written.is_current(&"uid", &"Ready", &"Ready"));
        written.record("uid", "Ready");
        assert!(written.is_current(&"uid", &"Ready", &"Ready"));
    }

    #[test]
    fn the_cache_alone_decides_before_the_first_write() {
        let written: WrittenStatus<&str, &str> = WrittenStatus::default();
        assert!(written.is_current(&"uid", &"Ready", &"Ready"));
        assert!(!written.is_current(&"uid", &"RollingOut", &"Ready"));
    }

    #[test]
    fn a_cache_that_disagrees_with_the_last_write_is_written_to() {
        // Someone else changed the status after our write: the cache is newer and differs.
        let written = WrittenStatus::default();
        written.record("uid", "Ready");
        assert!(!written.is_current(&"uid", &"Stalled", &"Ready"));
    }

    #[test]
    fn a_forgotten_object_starts_afresh() {
        let written = WrittenStatus::default();
        written.record("uid", "RollingOut");
        written.forget(&"uid");
        assert!(written.is_current(&"uid", &"Ready", &"Ready"));
    }
}
