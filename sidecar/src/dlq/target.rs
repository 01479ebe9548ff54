//! The consumer a replay serves, reduced to what reading and replaying its dead letters needs:
//! its group, its dead-letter topic, its source topics and its first retry tier. The plugin
//! derives it from the EventConsumer resource, the replay Job receives it from the operator.

use ferry_common::naming;

/// One EventConsumer as the dead-letter code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The EventConsumer's name (for messages).
    pub name: String,
    /// Its Kafka consumer group: dead letters carry it in `ferry-group`.
    pub group: String,
    /// Its dead-letter topic (possibly shared with other consumers).
    pub dead_letter_topic: String,
    /// The Kafka topics it consumes.
    pub sources: Vec<String>,
    /// The delay of its first retry tier (`spec.retry.delays[0]`), if it has tiers.
    pub first_delay: Option<String>,
}

impl Target {
    /// Where a dead letter first read from `original_topic` goes back to: the first retry tier
    /// of that topic for this group (the worker consumes it in the same group and
    /// de-duplicates by event id), or `None` when the consumer has no tiers.
    pub fn first_tier(&self, original_topic: &str) -> Option<String> {
        self.first_delay
            .as_deref()
            .map(|delay| naming::retry_topic(original_topic, &self.group, delay))
    }
}
