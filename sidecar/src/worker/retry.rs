//! Retry tiers (DESIGN §5 "Bounded retries" and "Ordered retries").
//!
//! A record that still fails after its in-process attempts is copied into the next tier's
//! topic, `<topic>.<group>.retry.<delay>`, on the same partition number, with a
//! `ferry-not-before` header. The worker consumes the tier topics in the same group; a tier
//! partition whose head record is not due is paused (see [`HeldQueue`]), so tiers never block
//! the main topic. After the last tier the record goes to the dead-letter topic.
//!
//! With `ordering=key`, [`Parking`] remembers, per key, the records that sit in tiers, in key
//! order: a later record of a parked key follows the one before it into that tier instead of
//! overtaking it, and a tier record whose predecessor moved on to a later tier follows it there.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use ferry_common::headers;

use super::config::Delay;

/// The headers the worker writes itself; copies drop older values of these (their names and
/// meanings are in [`ferry_common::headers`], shared with the relay).
pub const FERRY_HEADERS: [&str; 9] = [
    headers::NOT_BEFORE,
    headers::ATTEMPTS,
    headers::ERROR,
    headers::ORIGINAL_TOPIC,
    headers::ORIGINAL_PARTITION,
    headers::ORIGINAL_OFFSET,
    headers::GROUP,
    headers::FAILED_AT,
    headers::COPY_REFUSED,
];

/// The topic of one retry tier, named as the operator names it when it grants access.
pub fn tier_topic(topic: &str, group: &str, delay: &Delay) -> String {
    ferry_common::naming::retry_topic(topic, group, &delay.label)
}

/// What a consumed topic is to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A topic the service subscribed to.
    Main,
    /// Tier `tier` (0-based) of main topic `topic`.
    Tier { topic: String, tier: usize },
}

/// The tiers of every main topic, and the way back from a tier topic to its main topic.
#[derive(Debug, Clone)]
pub struct Tiers {
    delays: Vec<Delay>,
    by_topic: HashMap<String, Source>,
    names: HashMap<String, Vec<String>>,
}

impl Tiers {
    /// The tiers of `topics` for `group`.
    pub fn new(topics: &[String], group: &str, delays: &[Delay]) -> Self {
        let mut by_topic = HashMap::new();
        let mut names = HashMap::new();
        for topic in topics {
            by_topic.insert(topic.clone(), Source::Main);
            let tiers: Vec<String> = delays.iter().map(|d| tier_topic(topic, group, d)).collect();
            for (tier, name) in tiers.iter().enumerate() {
                by_topic.insert(
                    name.clone(),
                    Source::Tier {
                        topic: topic.clone(),
                        tier,
                    },
                );
            }
            names.insert(topic.clone(), tiers);
        }
        Self {
            delays: delays.to_vec(),
            by_topic,
            names,
        }
    }

    /// Every topic to subscribe to: main topics and their tiers.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut all: Vec<String> = self.by_topic.keys().cloned().collect();
        all.sort();
        all
    }

    /// Every tier topic (which must exist before the worker starts).
    pub fn tier_topics(&self) -> impl Iterator<Item = &String> {
        self.names.values().flatten()
    }

    /// What `topic` is; `None` for a topic the worker does not know.
    pub fn source(&self, topic: &str) -> Option<&Source> {
        self.by_topic.get(topic)
    }

    /// Tier `tier`'s topic for main topic `topic`.
    pub fn topic(&self, topic: &str, tier: usize) -> Option<&str> {
        self.names.get(topic)?.get(tier).map(String::as_str)
    }

    /// How many tiers there are.
    pub fn len(&self) -> usize {
        self.delays.len()
    }

    /// Whether failures go straight to the dead-letter topic.
    pub fn is_empty(&self) -> bool {
        self.delays.is_empty()
    }

    /// When a record written to tier `tier` now becomes due.
    pub fn not_before(&self, tier: usize, now: SystemTime) -> SystemTime {
        now + self.delays.get(tier).map_or(Duration::ZERO, |d| d.duration)
    }
}

/// A numeric Ferry header of a tier record (`ferry-not-before`, `ferry-original-*`), if present
/// and readable.
pub fn header_i64(message: &impl rdkafka::Message, name: &str) -> Option<i64> {
    use rdkafka::message::Headers;
    message
        .headers()
        .and_then(|h| h.iter().find(|x| x.key == name))
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .and_then(|v| v.parse::<i64>().ok())
}

/// Unix milliseconds of `t`, as written into `ferry-not-before`.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The monotonic instant at which wall-clock `not_before_ms` is reached, seen from
/// (`now_wall`, `now`).
pub fn due_instant(not_before_ms: u64, now_wall: SystemTime, now: Instant) -> Instant {
    let wait = Duration::from_millis(not_before_ms.saturating_sub(unix_millis(now_wall)));
    now + wait
}

/// The records of one tier partition, held in offset order until each is due.
#[derive(Debug)]
pub struct HeldQueue<T> {
    records: VecDeque<(Instant, T)>,
}

impl<T> Default for HeldQueue<T> {
    fn default() -> Self {
        Self {
            records: VecDeque::new(),
        }
    }
}

impl<T> HeldQueue<T> {
    /// Appends a record that becomes due at `due`.
    pub fn push(&mut self, due: Instant, record: T) {
        self.records.push_back((due, record));
    }

    /// The head record if it is due at `now`; a later record never passes an earlier one.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.records.front()?.0 <= now {
            self.records.pop_front().map(|(_, r)| r)
        } else {
            None
        }
    }

    /// When the head record becomes due, if it is not yet.
    pub fn waiting_until(&self, now: Instant) -> Option<Instant> {
        self.records.front().map(|(d, _)| *d).filter(|d| *d > now)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Where the router sends a record of a key with parked records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Deliver it now.
    Deliver,
    /// Copy it, undelivered, to tier `tier`, behind the record before it.
    Follow { tier: usize },
}

/// A record's identity across tiers: where it was first read.
pub type Origin = (i32, i64);

/// Per key, the records waiting in tiers, in key order, with the tier each is in.
#[derive(Debug, Default)]
pub struct Parking<K> {
    keys: HashMap<K, VecDeque<(Origin, usize)>>,
}

impl<K: std::hash::Hash + Eq + Clone> Parking<K> {
    /// Routes a record read from its main topic. `Follow` reserves its place at once.
    pub fn route_new(&mut self, key: &K, origin: Origin) -> Route {
        match self.keys.get_mut(key) {
            Some(parked) => match parked.back() {
                Some(&(_, tier)) => {
                    parked.push_back((origin, tier));
                    Route::Follow { tier }
                }
                None => Route::Deliver,
            },
            None => Route::Deliver,
        }
    }

    /// Routes a record that came due in a tier: delivered if nothing of its key is ahead of
    /// it, else it follows its predecessor into that one's tier.
    pub fn route_due(&mut self, key: &K, origin: Origin) -> Route {
        let Some(parked) = self.keys.get_mut(key) else {
            return Route::Deliver;
        };
        match parked.iter().position(|(o, _)| *o == origin) {
            Some(i) if i > 0 => {
                let tier = parked[i - 1].1;
                parked[i].1 = tier;
                Route::Follow { tier }
            }
            // Head of its key, or unknown (state lost in a crash or rebalance): deliver.
            _ => Route::Deliver,
        }
    }

    /// The record now sits in tier `tier` (its copy was acknowledged by Kafka).
    pub fn parked(&mut self, key: &K, origin: Origin, tier: usize) {
        let parked = self.keys.entry(key.clone()).or_default();
        match parked.iter_mut().find(|(o, _)| *o == origin) {
            Some(entry) => entry.1 = tier,
            None => parked.push_back((origin, tier)),
        }
    }

    /// The record left the tiers (delivered, dead-lettered, or abandoned).
    pub fn left(&mut self, key: &K, origin: Origin) {
        if let Some(parked) = self.keys.get_mut(key) {
            parked.retain(|(o, _)| *o != origin);
            if parked.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Drops the records for which `drop` is true (e.g. of a partition that was revoked, or
    /// is about to be rebuilt from its tier topics).
    pub fn forget(&mut self, mut drop: impl FnMut(&K, Origin) -> bool) {
        self.keys.retain(|key, parked| {
            parked.retain(|(origin, _)| !drop(key, *origin));
            !parked.is_empty()
        });
    }

    /// Keys with records in tiers.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays() -> Vec<Delay> {
        ["5s", "1m"]
            .iter()
            .map(|l| Delay {
                label: (*l).to_owned(),
                duration: ferry_common::duration::parse(l).expect("valid"),
            })
            .collect()
    }

    #[test]
    fn names_and_sources_of_tiers() {
        let tiers = Tiers::new(&["orders.v1".to_owned()], "notify", &delays());
        assert_eq!(
            tiers.topic("orders.v1", 1),
            Some("orders.v1.notify.retry.1m")
        );
        assert_eq!(
            tiers.source("orders.v1.notify.retry.5s"),
            Some(&Source::Tier {
                topic: "orders.v1".to_owned(),
                tier: 0
            })
        );
        assert_eq!(tiers.source("orders.v1"), Some(&Source::Main));
        assert_eq!(tiers.subscriptions().len(), 3);
        assert_eq!(tiers.topic("orders.v1", 2), None, "no third tier");
    }

    /// Time is paused: the held record is released exactly at its due instant, never before,
    /// and the one behind it never overtakes it.
    #[tokio::test(start_paused = true)]
    async fn held_records_are_released_when_due_and_in_order() {
        let tiers = Tiers::new(&["t".to_owned()], "g", &delays());
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let not_before = unix_millis(tiers.not_before(0, wall));
        let mut q = HeldQueue::default();
        q.push(due_instant(not_before, wall, Instant::now()), "first");
        // Already due, but behind "first".
        q.push(Instant::now(), "second");

        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(q.pop_due(Instant::now()), None, "released early");
        assert_eq!(
            q.waiting_until(Instant::now()).map(|d| d - Instant::now()),
            Some(Duration::from_millis(1))
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(q.pop_due(Instant::now()), Some("first"));
        assert_eq!(q.pop_due(Instant::now()), Some("second"));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_already_past_due_is_released_at_once() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(50);
        let due = due_instant(10_000, wall, Instant::now());
        assert_eq!(due, Instant::now());
    }

    #[test]
    fn later_records_of_a_parked_key_follow_it() {
        let mut p = Parking::default();
        assert_eq!(p.route_new(&"k", (0, 1)), Route::Deliver);
        // 1 failed and is in tier 0.
        p.parked(&"k", (0, 1), 0);
        assert_eq!(p.route_new(&"k", (0, 2)), Route::Follow { tier: 0 });
        assert_eq!(
            p.route_new(&"other", (0, 3)),
            Route::Deliver,
            "other keys flow"
        );
        // 1 comes due first (same partition, earlier) and fails again: tier 1.
        assert_eq!(p.route_due(&"k", (0, 1)), Route::Deliver);
        p.parked(&"k", (0, 1), 1);
        // A new record follows the tail (2, still in tier 0), not the head.
        assert_eq!(p.route_new(&"k", (0, 4)), Route::Follow { tier: 0 });
        // 2 comes due in tier 0: 1 is ahead of it in tier 1, so 2 follows it there.
        assert_eq!(p.route_due(&"k", (0, 2)), Route::Follow { tier: 1 });
        assert_eq!(p.route_due(&"k", (0, 4)), Route::Follow { tier: 1 });
        // 1 is delivered from tier 1; 2 is now the head and is delivered, then 4.
        p.left(&"k", (0, 1));
        assert_eq!(p.route_due(&"k", (0, 2)), Route::Deliver);
        p.left(&"k", (0, 2));
        assert_eq!(p.route_due(&"k", (0, 4)), Route::Deliver);
        p.left(&"k", (0, 4));
        assert_eq!(p.keys(), 0);
        assert_eq!(p.route_new(&"k", (0, 5)), Route::Deliver, "key free again");
    }

    /// After a crash the index is rebuilt from the tier topics (`parked` in origin order):
    /// a new main-topic record of such a key follows, others flow; `forget` drops one
    /// partition's records only.
    #[test]
    fn a_rebuilt_index_holds_new_records_back_and_forget_is_per_partition() {
        let mut p = Parking::default();
        p.parked(&"k", (0, 1), 1);
        p.parked(&"k", (0, 2), 0);
        p.parked(&"j", (1, 7), 0);
        assert_eq!(p.route_new(&"k", (0, 9)), Route::Follow { tier: 0 });
        assert_eq!(p.route_due(&"k", (0, 1)), Route::Deliver);
        assert_eq!(
            p.route_due(&"k", (0, 2)),
            Route::Follow { tier: 1 },
            "2 is behind 1, which is in tier 1"
        );
        p.forget(|_, (partition, _)| partition == 0);
        assert_eq!(p.keys(), 1);
        assert_eq!(p.route_new(&"k", (0, 10)), Route::Deliver);
        assert_eq!(p.route_new(&"j", (1, 8)), Route::Follow { tier: 0 });
    }

    #[test]
    fn unknown_tier_records_are_delivered() {
        let mut p: Parking<&str> = Parking::default();
        assert_eq!(p.route_due(&"k", (1, 9)), Route::Deliver);
    }
}
