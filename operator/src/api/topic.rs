//! `EventTopic`: one Kafka topic, declared in Kubernetes (DESIGN §2).
//!
//! The spec is what the topic must look like; the topic controller (`crate::topic`) makes the
//! Kafka topic so and writes what it found into the status.

// Several printer columns share a `type_`; clippy takes the repeats for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// A Kafka topic with its partitions and configs, owned by this resource.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "EventTopic",
    plural = "eventtopics",
    namespaced,
    status = "EventTopicStatus",
    shortname = "et",
    category = "ferry",
    doc = "A Kafka topic declared in Kubernetes: Ferry creates or adopts it, keeps its partitions and configs as declared, and grants its producers write access.",
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName", description = "the Kafka topic"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".status.partitions", description = "partitions the Kafka topic has"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "whether the Kafka topic matches the spec"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1, description = "why it is or is not ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("(has(self.spec.topicName) ? self.spec.topicName : self.metadata.name) == (has(oldSelf.spec.topicName) ? oldSelf.spec.topicName : oldSelf.metadata.name)").message("topicName is immutable: create a new EventTopic for a new Kafka topic"),
    validation = Rule::new("has(self.spec.topicName) || size(self.metadata.name) <= 249").message("metadata.name is used as the Kafka topic name and Kafka allows at most 249 characters: set a shorter spec.topicName"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.replicationFactor) == has(oldSelf.replicationFactor)").message("replicationFactor is immutable: it cannot be added or removed after creation")
)]
pub struct EventTopicSpec {
    /// The Kafka topic's name; defaults to metadata.name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(
        validation = Rule::new("self != '.' && self != '..'").message("topicName cannot be '.' or '..' (Kafka refuses them)"),
        validation = Rule::new("!self.startsWith('__')").message("topicName cannot start with '__': such names are Kafka-internal topics (__consumer_offsets, __transaction_state), which Ferry never adopts")
    )]
    pub topic_name: Option<String>,

    /// How many partitions the topic has. It may grow, never shrink (Kafka cannot remove
    /// partitions). More partitions means more consumers can work in parallel.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions cannot decrease: Kafka cannot remove partitions from a topic"))]
    pub partitions: i32,

    /// How many brokers hold a copy of each partition; absent: the broker's
    /// `default.replication.factor`. Immutable after creation (it can be neither added nor
    /// removed); a topic found with another factor is reported, not changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable after creation"))]
    pub replication_factor: Option<i32>,

    /// Kafka topic configs (e.g. `cleanup.policy: compact`, `retention.ms: "604800000"`),
    /// values as strings. Configs not listed here fall back to the broker's defaults: overrides
    /// made elsewhere are removed, unless unmanagedConfigs is Keep. A key that is not a Kafka
    /// topic config, or an unsafe one (`unclean.leader.election.enable`, replication
    /// throttles), stalls the EventTopic with reason `InvalidConfig`, as does a value Kafka
    /// refuses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z][a-z0-9.]*$') && size(k) <= 128)").message("config keys are Kafka topic config names such as retention.ms or cleanup.policy"))]
    pub config: BTreeMap<String, String>,

    /// Service accounts of this namespace allowed to publish to the topic: each gets the
    /// Kafka principal `User:<namespace>.<serviceAccount>`, its credential Secret
    /// `ferry-kafka-<serviceAccount>` and WRITE, DESCRIBE and DESCRIBE_CONFIGS on the topic.
    /// Removing one revokes its access.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub producers: Vec<Producer>,

    /// A contract for the envelope's `data`: `ferry-sidecar contract check` checks a service's
    /// event fixtures against it. Not enforced at run time yet: neither the relay nor the
    /// worker checks events against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<TopicSchema>,

    /// What happens to the Kafka topic when this resource is deleted: `Retain` (default) keeps
    /// it and its data, `Delete` deletes both. Either way the producers' access is revoked.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What happens to config overrides the Kafka topic has and `config` does not list (found
    /// when an existing topic is adopted, or set later outside Ferry): Remove (default) makes
    /// `config` the whole truth; Keep leaves them alone. Either way an adoption reports them
    /// in an Event, with their values, before anything changes.
    #[serde(default)]
    pub unmanaged_configs: UnmanagedConfigs,
}

/// What the operator does with a Kafka topic's config overrides that the spec does not list.
///
/// Remove is the default because the spec is the whole truth elsewhere too: drift made
/// directly in Kafka is reverted, and what Git holds is what Kafka has. Adopting a topic whose
/// overrides matter (a `retention.ms` of -1 keeps data for ever; removing it lets the broker
/// default delete old data) means listing them in `config`, or choosing Keep; the
/// `UnmanagedConfigs` Event names each one with its value before it is removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UnmanagedConfigs {
    /// Remove overrides the spec does not list (the broker's default applies again).
    #[default]
    Remove,
    /// Keep overrides the spec does not list; only the listed keys are managed.
    Keep,
}

/// One partition unless the spec says otherwise (Kafka's own `num.partitions` default is 1).
const fn default_partitions() -> i32 {
    1
}

/// A service account allowed to publish to the topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Producer {
    /// Name of a service account in the EventTopic's namespace (it need not exist yet).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub service_account: String,
}

/// A JSON Schema (2020-12) for the events' `data`, inline or from a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jsonSchema) != has(self.configMapRef)").message("schema needs exactly one of jsonSchema or configMapRef"))]
pub struct TopicSchema {
    /// The JSON Schema document itself, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::preserve_unknown_fields")]
    pub json_schema: Option<serde_json::Value>,
    /// A key of a ConfigMap in this namespace that holds the JSON Schema document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// The envelope `event` the schema is for (`user.created`); events by other names pass
    /// unchecked. Absent: every event on the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub event: Option<String>,
    /// Which schema changes are meant to be allowed: `backward` (the new schema accepts
    /// every event the old one did) or `none` (any change). Not checked yet.
    #[serde(default)]
    pub compatibility: Compatibility,
}

/// A key in a ConfigMap of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which schema changes are accepted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compatibility {
    /// A new schema must accept every event the old one accepted.
    #[default]
    Backward,
    /// Any change is accepted.
    None,
}

/// What deleting the EventTopic does to the Kafka topic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the Kafka topic and its data (safe default: deleting a manifest loses no events).
    #[default]
    Retain,
    /// Delete the Kafka topic and its data.
    Delete,
}

/// What the operator last saw of the Kafka topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTopicStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Kafka topic's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// The Kafka topic's id (a UUID, base64 as Kafka prints it); changes if the topic is
    /// deleted and created again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the Kafka topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replicas per partition the Kafka topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// The Kafka principals and ACLs this resource declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<super::AccessStatus>,
    /// Ready, Reconciling and Stalled, as kstatus reads them, and AccessGranted: whether Kafka
    /// holds the ACLs in `access`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl EventTopic {
    /// The Kafka topic this resource names: spec.topicName, else metadata.name.
    pub fn kafka_topic_name(&self) -> &str {
        self.spec
            .topic_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}
