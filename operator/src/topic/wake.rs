//! What wakes an EventTopic: its spec (generation), its deletion and its finalizers — not its
//! status, which this controller writes itself. Every status write used to come back as a
//! wake and a describe in Kafka; with 10,000 EventTopics applied at once those were most of the
//! reconciles. Access changes arrive from the identity controller on their own channel, and
//! drift in Kafka is found by the requeue every `--resync-interval`.

use kube::ResourceExt as _;

use crate::{api::EventTopic, recent::fingerprint};

/// The part of an EventTopic whose change asks for a reconcile.
pub(super) fn topic_changed(topic: &EventTopic) -> Option<u64> {
    Some(fingerprint(&(
        topic.metadata.generation,
        topic.metadata.deletion_timestamp.is_some(),
        topic.finalizers(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(generation: i64, finalizers: &[&str], status: serde_json::Value) -> EventTopic {
        serde_json::from_value(json!({
            "metadata": {"name": "t", "namespace": "ns", "generation": generation,
                         "finalizers": finalizers},
            "spec": {"partitions": 1},
            "status": status,
        }))
        .expect("topic")
    }

    #[test]
    fn its_own_status_write_does_not_wake_it_but_a_spec_or_finalizer_change_does() {
        let created = topic(1, &[], json!(null));
        let status_written = topic(1, &[], json!({"topicId": "abc", "conditions": []}));
        assert_eq!(topic_changed(&created), topic_changed(&status_written));
        assert_ne!(
            topic_changed(&created),
            topic_changed(&topic(2, &[], json!(null)))
        );
        assert_ne!(
            topic_changed(&created),
            topic_changed(&topic(1, &["ferry.dev/delete-kafka-topic"], json!(null)))
        );
        let mut deleting = created.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_ne!(topic_changed(&created), topic_changed(&deleting));
    }
}
