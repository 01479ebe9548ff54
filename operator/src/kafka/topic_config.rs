//! Which topic configs an EventTopic may set: Kafka's topic-level configs (Kafka 4.x, "Topic
//! Configs" in the Kafka documentation), minus those that are unsafe to hand to a manifest.

/// Topic configs Kafka 4.x accepts, from the Kafka documentation's "Topic Configs" table.
const KNOWN: &[&str] = &[
    "cleanup.policy",
    "compression.gzip.level",
    "compression.lz4.level",
    "compression.type",
    "compression.zstd.level",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
    "remote.storage.enable",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.index.bytes",
    "segment.jitter.ms",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Known configs that a manifest must not set, and why.
const UNSAFE: &[(&str, &str)] = &[
    (
        "unclean.leader.election.enable",
        "it lets an out-of-sync replica become leader and silently lose committed events",
    ),
    (
        "leader.replication.throttled.replicas",
        "replication throttles belong to partition-reassignment tooling, which sets and clears them",
    ),
    (
        "follower.replication.throttled.replicas",
        "replication throttles belong to partition-reassignment tooling, which sets and clears them",
    ),
    (
        "flush.messages",
        "forcing fsync per message defeats Kafka's replication-based durability and slows the broker",
    ),
    (
        "flush.ms",
        "forcing fsync on a timer defeats Kafka's replication-based durability and slows the broker",
    ),
    (
        "file.delete.delay.ms",
        "it is a broker maintenance setting, not a property of the topic's data",
    ),
    (
        "preallocate",
        "it is a broker storage setting, not a property of the topic's data",
    ),
    (
        "remote.storage.enable",
        "tiered storage must be set up by the cluster operator; turning it off again can delete data",
    ),
    (
        "remote.log.delete.on.disable",
        "tiered storage must be set up by the cluster operator; turning it off again can delete data",
    ),
];

/// Why a config key is refused, in a sentence; `None` if it may be set.
pub fn refusal(key: &str) -> Option<String> {
    if let Some((_, why)) = UNSAFE.iter().find(|(k, _)| *k == key) {
        return Some(format!("config {key} is not allowed: {why}"));
    }
    if !KNOWN.contains(&key) {
        return Some(format!("config {key} is not a Kafka topic config"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everyday_configs_are_allowed() {
        for key in [
            "cleanup.policy",
            "retention.ms",
            "min.insync.replicas",
            "max.message.bytes",
        ] {
            assert_eq!(refusal(key), None, "{key}");
        }
    }

    #[test]
    fn unknown_and_unsafe_configs_are_refused() {
        let unknown = refusal("retention.days").expect("unknown");
        assert!(unknown.contains("not a Kafka topic config"), "{unknown}");
        let broker_level = refusal("log.retention.ms").expect("broker config");
        assert!(
            broker_level.contains("not a Kafka topic config"),
            "{broker_level}"
        );
        let unsafe_key = refusal("unclean.leader.election.enable").expect("unsafe");
        assert!(unsafe_key.contains("lose committed events"), "{unsafe_key}");
    }

    #[test]
    fn every_unsafe_key_is_a_known_key() {
        for (key, _) in UNSAFE {
            assert!(KNOWN.contains(key), "{key}");
        }
    }
}
