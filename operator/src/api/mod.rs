//! Ferry's custom resources, group `ferry.dev`, version `v1alpha1` (DESIGN §2): the Rust types
//! from which `crds/*.yaml` is generated (`ferry-operator crdgen`), and nothing else.
//!
//! Validation lives in the types, so the API server refuses a bad spec at `kubectl apply`:
//! OpenAPI bounds come from `#[schemars(..)]`, CEL rules (including transition rules such as
//! "partitions never decrease") from `#[x_kube(validation = ..)]`. Each rule's message is the
//! sentence a person reads when the apply is refused.

mod access_status;
mod condition;
mod consumer;
mod replay;
mod topic;

pub use access_status::AccessStatus;
pub use condition::{Condition, ConditionStatus};
pub use consumer::{
    ConsumerTopics, ContainerDelivery, DEFAULT_DEAD_LETTER_RETENTION, DeadLetter, Delivery, EnvVar,
    EventConsumer, EventConsumerSpec, EventConsumerStatus, HttpDelivery, Idempotency, Lag,
    Ordering, Placement, Retry, RetryBackoff, Scaling, SecretKeyRef, ServiceTarget, StartFrom,
    StuckPartition,
};
pub use replay::{EventReplay, EventReplaySpec, EventReplayStatus, ReplayPhase, ReplayResult};
pub use topic::{
    Compatibility, ConfigMapKeyRef, DeletionPolicy, EventTopic, EventTopicSpec, EventTopicStatus,
    Producer, TopicSchema, UnmanagedConfigs,
};

/// The API group of every Ferry resource.
pub const GROUP: &str = "ferry.dev";

/// A schema for free-form JSON (a JSON Schema document, a container's resources): the API
/// server keeps whatever is there instead of pruning it.
fn preserve_unknown_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Kafka's topic-name rule (`org.apache.kafka.common.internals.Topic`): ASCII letters, digits,
/// `.`, `_` and `-`, at most 249 characters.
pub const TOPIC_NAME_PATTERN: &str = r"^[a-zA-Z0-9._-]+$";

/// Kafka's topic-name length limit (`Topic.MAX_NAME_LENGTH`).
pub const TOPIC_NAME_MAX_LENGTH: usize = 249;

/// A duration as people write it in manifests: Go's syntax (`200ms`, `5s`, `1m30s`, `2h`) plus
/// days (`7d`), which Go lacks but retention windows need.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$";

/// A duration in Go's syntax only, so CEL's `duration()` can compare it (retry delays).
pub const GO_DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
