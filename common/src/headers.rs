//! The `ferry-*` Kafka record headers Ferry writes, in one place: consumers, operators and
//! tools read them off published records, retry-tier records and dead letters, so their
//! spelling is part of Ferry's contract (README "Worker: retry tiers, dead letters and
//! ordering", docs/outbox.md "Poison rows"). The relay and the worker both write some of them
//! (`ferry-error`, `ferry-original-topic`), so neither owns the names.

/// Every published event (relay): the envelope's `id`, what consumers de-duplicate on.
pub const EVENT_ID: &str = "ferry-event-id";

/// Dead letters (relay and worker) and retry-tier records (worker): why the record left its
/// topic (relay: the poison row's reason; worker: the last delivery failure).
pub const ERROR: &str = "ferry-error";

/// Relay dead letters: the poison reason's bounded label (`ferry_outbox` metric label too).
pub const ERROR_KIND: &str = "ferry-error-kind";

/// Relay dead letters: the outbox row's id.
pub const OUTBOX_ID: &str = "ferry-outbox-id";

/// Relay dead letters: the outbox table the row came from.
pub const OUTBOX_TABLE: &str = "ferry-outbox-table";

/// Dead letters and retry-tier records: the topic the record was first read from (worker) or
/// was meant for (relay).
pub const ORIGINAL_TOPIC: &str = "ferry-original-topic";

/// Worker copies: the partition the record was first read from.
pub const ORIGINAL_PARTITION: &str = "ferry-original-partition";

/// Worker copies: the offset the record was first read from.
pub const ORIGINAL_OFFSET: &str = "ferry-original-offset";

/// Worker retry-tier records: when the record becomes due, in Unix milliseconds.
pub const NOT_BEFORE: &str = "ferry-not-before";

/// Worker copies: delivery attempts so far, carried across tiers.
pub const ATTEMPTS: &str = "ferry-attempts";

/// Worker dead letters: the consumer group that gave up.
pub const GROUP: &str = "ferry-group";

/// Worker dead letters: when it gave up, RFC 3339.
pub const FAILED_AT: &str = "ferry-failed-at";

/// Worker reference copies in the dead-letter topic: why Kafka refused the record's copy,
/// which is why the reference carries no payload.
pub const COPY_REFUSED: &str = "ferry-copy-refused";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_lowercase_and_prefixed() {
        let all = [
            EVENT_ID,
            ERROR,
            ERROR_KIND,
            OUTBOX_ID,
            OUTBOX_TABLE,
            ORIGINAL_TOPIC,
            ORIGINAL_PARTITION,
            ORIGINAL_OFFSET,
            NOT_BEFORE,
            ATTEMPTS,
            GROUP,
            FAILED_AT,
            COPY_REFUSED,
        ];
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for name in all {
            assert!(name.starts_with("ferry-"), "{name}");
            assert_eq!(name, name.to_ascii_lowercase(), "{name}");
        }
    }
}
