//! kstatus-compatible conditions (`Ready`, `Reconciling`, `Stalled`), shared by both kinds.
//!
//! The shape is `metav1.Condition`'s, written out so the CRD schema says exactly what the
//! operator writes; tools such as `kubectl wait --for=condition=Ready` and Flux/Argo health
//! checks read it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation about a resource, as kstatus reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reconciling` or `Stalled` (kstatus), or `AccessGranted` (whether Kafka holds
    /// the resource's ACLs).
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A CamelCase word a program can match on (e.g. `Conflict`, `InvalidConfig`).
    pub reason: String,
    /// What a person should know, in a sentence.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}
