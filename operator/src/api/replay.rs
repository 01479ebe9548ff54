//! `EventReplay`: a request to send an EventConsumer's dead letters back to it (issue #18).
//!
//! `kubectl ferry dlq replay` creates one and waits for it; a GitOps user commits one. The
//! operator ([`crate::replay`]) runs a Job for it in the consumer's namespace under a Kafka
//! principal of its own that may READ that consumer's dead-letter topic and WRITE where the
//! replay goes (its first retry tier, or its source topics with `toSource`), and nothing else;
//! the Job writes its outcome into `status.result`, and the operator turns that into `phase`,
//! `conditions` and an Event. An EventReplay runs once: its spec is immutable, and a new
//! replay is a new object.

// Several printer columns share a `type_`; clippy takes the repeats for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// A one-off replay of an EventConsumer's dead letters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "EventReplay",
    plural = "eventreplays",
    namespaced,
    status = "EventReplayStatus",
    shortname = "er",
    category = "ferry",
    doc = "Replays an EventConsumer's dead letters once, from a Job under a Kafka principal that may read only that consumer's dead-letter topic and write only where the replay goes.",
    printcolumn(
        name = "Consumer",
        type_ = "string",
        json_path = ".spec.consumer",
        description = "the EventConsumer replayed"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded or Failed"
    ),
    printcolumn(
        name = "Replayed",
        type_ = "integer",
        json_path = ".status.result.replayed",
        description = "records sent back"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an EventReplay runs once: its spec cannot change; create a new EventReplay"))]
#[x_kube(validation = Rule::new("self.all || self.dryRun || has(self.reason) || has(self.type) || size(self.ids) > 0 || has(self.topic) || has(self.since) || has(self.until)").message("select what to replay (reason, type, ids, topic, since, until) or set all: true, so a replay never floods a service by accident"))]
pub struct EventReplaySpec {
    /// The EventConsumer (in this namespace) whose dead letters are replayed.
    #[schemars(length(min = 1, max = 253))]
    pub consumer: String,

    /// Only dead letters whose reason contains this text (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only events of this type (the envelope's `event`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Only these event ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Only dead letters first read from this Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Only dead letters given up at or after this time: RFC 3339, or a duration before the
    /// EventReplay's creation (`2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only dead letters given up before this time: RFC 3339, or a duration before creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Every dead letter of the consumer (required when nothing else narrows the selection).
    #[serde(default)]
    pub all: bool,

    /// Select and report only: send nothing, record nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many events per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub rate: Option<f64>,
    /// Replay what was replayed before too (the worker still de-duplicates by event id).
    #[serde(default)]
    pub again: bool,
    /// For a consumer without retry tiers: replay into its source topics, which every
    /// consumer group of those topics reads.
    #[serde(default)]
    pub to_source: bool,
}

/// Where an EventReplay is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ReplayPhase {
    /// Accepted; the principal and the Job are being made.
    #[default]
    Pending,
    /// The Job runs.
    Running,
    /// The Job replayed (or, dry, selected) what was asked.
    Succeeded,
    /// It could not: `message` says why.
    Failed,
}

impl ReplayPhase {
    /// Whether the replay is over.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What the replay Job reports (it writes this part of the status itself).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayResult {
    /// `Succeeded` or `Failed`.
    #[serde(default)]
    pub outcome: String,
    /// Dead letters of the consumer the selection matched.
    #[serde(default)]
    pub selected: i64,
    /// Records sent back (in a dry run: that would be).
    #[serde(default)]
    pub replayed: i64,
    /// Selected records replayed before (skipped without `again`).
    #[serde(default)]
    pub already_replayed: i64,
    /// Selected records that cannot be replayed.
    #[serde(default)]
    pub skipped: i64,
    /// A dry run: selected records written into the ConfigMap named by `jobName` (key
    /// `selected.json`), which `kubectl ferry dlq list`/`show` read; fewer than `selected`
    /// when they did not fit in a ConfigMap.
    #[serde(default)]
    pub listed: i64,
    /// The event ids replayed (at most the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replayed_ids: Vec<String>,
    /// Where the records went.
    #[serde(default)]
    pub destination: String,
    /// What happened, or why it failed.
    #[serde(default)]
    pub message: String,
    /// When the Job finished (RFC 3339).
    #[serde(default)]
    pub finished_at: String,
}

/// What the operator and the Job observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventReplayStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReplayPhase>,
    /// What a person should know, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job that runs the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The Kafka principal the Job runs as (removed when the replay is over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// When the Job was started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// The Job's own report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ReplayResult>,
    /// `Ready` (True once Succeeded) and `Stalled` (True once Failed), kstatus-compatible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
