//! The intake: per partition, the records read from Kafka and not yet admitted, in offset
//! order, each held until it is due (at once for the main topic, at its `ferry-not-before` for
//! a tier), and the flow control that pauses a partition whose intake is full or whose head
//! waits.
//!
//! The run loop always keeps polling the consumer (librdkafka serves rebalance callbacks inside
//! the poll), so back-pressure is per partition: pausing one stops librdkafka fetching it
//! without stopping the poll. What is pure here — where a record is placed ([`place`]) and
//! whether a partition should pause or resume ([`flow`]) — is tested beside it; the run loop
//! applies it to the consumer.

use std::{sync::Arc, time::SystemTime};

use ferry_common::headers;
use rdkafka::{Message, message::OwnedMessage};
use tokio::time::Instant;

use super::{
    assignment::Tp,
    process::Job,
    retry::{self, HeldQueue, Origin, Source},
};

/// How many records one partition's intake holds, per record in flight, before the partition
/// is paused (the intake is the read-ahead the scheduler draws from).
const INTAKE_PER_IN_FLIGHT: usize = 1;
/// Least intake per partition, so a small `--max-in-flight` does not pause and resume
/// (and refetch) constantly.
const INTAKE_MIN: usize = 256;
/// A paused partition resumes once its intake drained to 1/this of the high mark.
const INTAKE_LOW_DIVISOR: usize = 4;

/// Records one partition's intake holds before the partition is paused; also librdkafka's
/// `queued.min.messages` (see [`super::consumer`]), so its prefetch matches.
pub fn high_mark(max_in_flight: usize) -> usize {
    (max_in_flight * INTAKE_PER_IN_FLIGHT).max(INTAKE_MIN)
}

/// A paused partition resumes once its intake drains to this.
pub fn low_mark(high: usize) -> usize {
    high / INTAKE_LOW_DIVISOR
}

/// One partition's intake.
pub struct Intake {
    /// The generation of the assignment its records belong to.
    pub generation: u64,
    /// The main-topic partition its records belong to (itself, or the one a tier serves).
    pub main: Tp,
    /// Its records, each held until due.
    pub held: HeldQueue<Job>,
    /// Whether the partition is paused in the consumer.
    pub paused: bool,
    /// The offset after the last record received, where fetching continues after a resume.
    pub next: Option<i64>,
}

impl Intake {
    /// An empty intake of partition `tp` of assignment `generation`, serving `main_topic`.
    pub fn new(tp: &Tp, main_topic: Arc<str>, generation: u64) -> Self {
        Self {
            generation,
            main: (main_topic, tp.1),
            held: HeldQueue::default(),
            paused: false,
            next: None,
        }
    }
}

/// Where a record read from partition `tp` goes: the main topic it belongs to, its tier
/// (`None`: the main topic), when it is due, and where it was first read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub main_topic: Arc<str>,
    pub tier: Option<usize>,
    pub due: Instant,
    pub origin: Origin,
}

/// Places a record of `tp` (a topic of `source`): a main-topic record is due at once and is its
/// own origin; a tier record is due at its `ferry-not-before` and names its origin in its
/// `ferry-original-*` headers (itself, if they are missing).
pub fn place(
    message: &OwnedMessage,
    tp: &Tp,
    source: &Source,
    now: Instant,
    wall: SystemTime,
) -> Placement {
    match source {
        Source::Main => Placement {
            main_topic: tp.0.clone(),
            tier: None,
            due: now,
            origin: (tp.1, message.offset()),
        },
        Source::Tier { topic, tier } => {
            let value = |name: &str| retry::header_i64(message, name);
            let not_before = value(headers::NOT_BEFORE).unwrap_or(0);
            Placement {
                main_topic: Arc::from(topic.as_str()),
                tier: Some(*tier),
                due: retry::due_instant(u64::try_from(not_before).unwrap_or(0), wall, now),
                origin: (
                    value(headers::ORIGINAL_PARTITION)
                        .and_then(|p| i32::try_from(p).ok())
                        .unwrap_or(tp.1),
                    value(headers::ORIGINAL_OFFSET).unwrap_or(message.offset()),
                ),
            }
        }
    }
}

/// Whether a partition should change state: `Some(true)` pause it (its intake reached the high
/// mark, or its head waits for its time), `Some(false)` resume it (drained to the low mark),
/// `None` leave it as it is.
pub fn flow(held: usize, head_waits: bool, paused: bool, high: usize, low: usize) -> Option<bool> {
    let want_pause = held >= high || head_waits;
    let want_resume = !want_pause && held <= low;
    (want_pause != paused && (want_pause || want_resume)).then_some(want_pause)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::{
        Timestamp,
        message::{Header, OwnedHeaders},
    };

    use super::*;

    fn record(offset: i64, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            2,
            offset,
            headers,
        )
    }

    #[test]
    fn marks_follow_max_in_flight_with_a_floor() {
        assert_eq!(high_mark(1), INTAKE_MIN);
        assert_eq!(high_mark(1000), 1000);
        assert_eq!(low_mark(high_mark(1000)), 250);
    }

    #[test]
    fn pauses_when_full_or_waiting_and_resumes_once_drained() {
        let (high, low) = (100, 25);
        assert_eq!(flow(100, false, false, high, low), Some(true));
        assert_eq!(
            flow(3, true, false, high, low),
            Some(true),
            "its head waits"
        );
        assert_eq!(flow(100, false, true, high, low), None, "already paused");
        assert_eq!(flow(50, false, true, high, low), None, "between the marks");
        assert_eq!(flow(25, false, true, high, low), Some(false));
        assert_eq!(flow(0, false, false, high, low), None, "already running");
    }

    #[test]
    fn a_main_record_is_due_at_once_and_its_own_origin() {
        let now = Instant::now();
        let tp: Tp = (Arc::from("orders"), 2);
        let placed = place(&record(7, None), &tp, &Source::Main, now, SystemTime::now());
        assert_eq!(
            placed,
            Placement {
                main_topic: tp.0.clone(),
                tier: None,
                due: now,
                origin: (2, 7),
            }
        );
    }

    #[test]
    fn a_tier_record_is_due_at_its_time_and_names_its_origin() {
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let tp: Tp = (Arc::from("orders.g.retry.5s"), 2);
        let source = Source::Tier {
            topic: "orders".into(),
            tier: 0,
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::NOT_BEFORE,
                value: Some("1005000"),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some("2"),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some("41"),
            });
        let placed = place(&record(3, Some(headers)), &tp, &source, now, wall);
        assert_eq!(&*placed.main_topic, "orders");
        assert_eq!(placed.tier, Some(0));
        assert_eq!(placed.due, now + Duration::from_secs(5));
        assert_eq!(placed.origin, (2, 41));
        let bare = place(&record(3, None), &tp, &source, now, wall);
        assert_eq!(
            (bare.due, bare.origin),
            (now, (2, 3)),
            "no headers: due now, itself"
        );
    }
}
