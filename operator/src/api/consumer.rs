//! `EventConsumer`: a service's subscription to EventTopics (DESIGN §2, §5).
//!
//! The operator turns it into a worker Deployment, retry and dead-letter topics, ACLs and
//! replica counts driven by lag ([`crate::consumer`]); this module only declares the API.

// Several printer columns share a `type_`; clippy takes the repeats for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// A consumer group that delivers the events of some EventTopics to a service.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferry.dev",
    version = "v1alpha1",
    kind = "EventConsumer",
    plural = "eventconsumers",
    namespaced,
    status = "EventConsumerStatus",
    shortname = "ec",
    category = "ferry",
    doc = "Delivers the events of EventTopics to a service over HTTP (or to the team's own consumer container), with retries, a dead-letter topic, de-duplication and lag-driven scaling.",
    printcolumn(
        name = "Topics",
        type_ = "string",
        json_path = ".spec.topics",
        description = "the EventTopics consumed"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "worker replicas"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lag.total",
        description = "records not yet processed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "whether the workers run as declared"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.placement != 'Sidecar' || (has(self.podSelector) && size(self.podSelector) > 0)").message("placement: Sidecar needs spec.podSelector: the labels of the service pods the worker is injected into"))]
#[x_kube(validation = Rule::new("!has(self.podSelector) || self.placement == 'Sidecar'").message("spec.podSelector goes with placement: Sidecar; a Deployment-placed consumer runs its own worker pods"))]
#[x_kube(validation = Rule::new("self.placement != 'Sidecar' || (has(self.delivery.http) && has(self.delivery.http.port))").message("placement: Sidecar delivers to the service in its own pod: set delivery.http.port (and path) instead of a Service, URL or container"))]
#[x_kube(validation = Rule::new("self.placement == 'Sidecar' || !has(self.delivery.http) || !has(self.delivery.http.port)").message("delivery.http.port (the service on localhost) needs placement: Sidecar; a worker Deployment reaches the service through delivery.http.service"))]
#[x_kube(validation = Rule::new("self.placement != 'Sidecar' || !has(self.scaling)").message("placement: Sidecar runs one worker in each selected service pod, so spec.scaling does not apply: scale the service instead"))]
pub struct EventConsumerSpec {
    /// Names of EventTopics in this namespace to consume.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, size(t) > 0)").message("topics must name EventTopics; empty names are not allowed"))]
    pub topics: Vec<String>,

    /// The service account whose Kafka identity consumes.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub service_account: String,

    /// The Kafka consumer group; defaults to <namespace>.<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub group_id: Option<String>,

    /// Where each record goes.
    pub delivery: Delivery,

    /// Check records against the topic's schema before delivery.
    #[serde(default)]
    pub validate: bool,

    /// Which records may be delivered in parallel.
    #[serde(default)]
    pub ordering: Ordering,

    /// Most records in delivery at once per worker.
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_in_flight: i32,

    /// In-process retries, then retry tiers, then the dead-letter topic.
    #[serde(default)]
    pub retry: Retry,

    /// Where records go that cannot be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,

    /// De-duplication by event id, stored in the service's PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,

    /// Where the workers run: their own Deployment, or injected into the service's pods.
    #[serde(default)]
    pub placement: Placement,

    /// With `placement: Sidecar`, the labels of the service pods that get a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,

    /// Worker replicas, driven by lag and never above the partition count (placement:
    /// Deployment; absent: one worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,

    /// Where a new consumer group starts reading.
    #[serde(default)]
    pub start_from: StartFrom,

    /// Compute resources of the worker container (a Kubernetes ResourceRequirements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::preserve_unknown_fields")]
    pub resources: Option<serde_json::Value>,
}

/// 64 records in flight: enough to keep a typical HTTP service busy without a flood after a
/// restart (the reference guide's consumer handled one at a time).
const fn default_max_in_flight() -> i32 {
    64
}

/// Where an EventConsumer's workers run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Placement {
    /// A worker Deployment of its own, scaled by lag.
    #[default]
    Deployment,
    /// A worker injected next to each service pod that `podSelector` matches, delivering to
    /// the service on localhost; its replicas are the service's.
    Sidecar,
}

/// How records reach the service: exactly one of http or container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) != has(self.container)").message("delivery needs exactly one of http or container"))]
pub struct Delivery {
    /// Deliver each record as a CloudEvent over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDelivery>,
    /// Run the team's own consumer code with the consumer's Kafka credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDelivery>,
}

/// An HTTP endpoint: a Service of this namespace or a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.service), has(self.url), has(self.port)].filter(x, x).size() == 1").message("http delivery needs exactly one of service, url or port"))]
#[x_kube(validation = Rule::new("!has(self.path) || has(self.port)").message("delivery.http.path goes with port; a service target has its own path and a URL includes it"))]
pub struct HttpDelivery {
    /// A Service in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,
    /// A full http:// URL. (The worker speaks plain HTTP: an https:// URL is refused here
    /// rather than failing in the worker.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    #[x_kube(validation = Rule::new("self.startsWith('http://')").message("delivery.http.url must start with http://: the worker delivers over plain HTTP only (no TLS yet); point it at a plain-HTTP endpoint or use delivery.http.service"))]
    pub url: Option<String>,
    /// A port of the service in the worker's own pod (placement: Sidecar): events go to
    /// http://127.0.0.1:<port><path>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The HTTP path events are POSTed to, with `port` (default /).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// How long one delivery may take (e.g. 10s).
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub timeout: String,
}

/// Ten seconds per delivery: a slow endpoint is retried rather than holding a slot for ever.
fn default_timeout() -> String {
    "10s".to_owned()
}

/// A port and path on a Service of this namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTarget {
    /// The Service's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Service's port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The HTTP path events are POSTed to.
    #[serde(default = "default_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

fn default_path() -> String {
    "/".to_owned()
}

/// The team's own consumer container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDelivery {
    /// The container image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A plain environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct EnvVar {
    /// Its name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// Which records may be delivered in parallel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// One record at a time per partition.
    Partition,
    /// In order within a key, in parallel across keys.
    #[default]
    Key,
    /// In parallel up to maxInFlight.
    Unordered,
}

/// Retries: in-process attempts with backoff, then non-blocking retry tiers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// In-process attempts before a record moves to the first retry tier.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 0, max = 100))]
    pub attempts: i32,
    /// Backoff between in-process attempts (exponential with jitter).
    #[serde(default)]
    pub backoff: RetryBackoff,
    /// Delays of the retry tiers, ascending (one retry topic each), e.g. [5s, 1m, 10m].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 10),
        inner(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))
    )]
    #[x_kube(validation = Rule::new("self.all(d, d.matches('^([0-9]+(ms|s|m|h))+$')) && self.map(d, duration(d)).isSorted() && self.all(d, self.filter(e, duration(e) == duration(d)).size() == 1)").message("retry delays must be whole durations such as 5s, 1m or 10m, in strictly ascending order"))]
    pub delays: Vec<String>,
}

/// Three in-process attempts, as the reference guide's consumer loop does.
const fn default_attempts() -> i32 {
    3
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            backoff: RetryBackoff::default(),
            delays: Vec::new(),
        }
    }
}

/// Exponential backoff bounds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBackoff {
    /// The first delay.
    #[serde(default = "default_initial")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub initial: String,
    /// The longest delay.
    #[serde(default = "default_max")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub max: String,
}

/// 200 ms first delay, 10 s cap: the values DESIGN §2 shows.
fn default_initial() -> String {
    "200ms".to_owned()
}

fn default_max() -> String {
    "10s".to_owned()
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
        }
    }
}

/// The dead-letter topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct DeadLetter {
    /// An EventTopic in this namespace; default: a managed <group>.dlq topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub topic: Option<String>,
}

/// De-duplication by event id.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.databaseSecretRef)").message("idempotency needs databaseSecretRef when enabled"))]
pub struct Idempotency {
    /// Skip events already delivered to this group.
    #[serde(default)]
    pub enabled: bool,
    /// The Secret key holding the PostgreSQL URL where delivered ids are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_secret_ref: Option<SecretKeyRef>,
    /// How long delivered ids are remembered (e.g. 7d).
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub window: String,
}

/// Seven days: Kafka's default retention.ms, so an id is remembered as long as its record can
/// be re-read.
fn default_window() -> String {
    "7d".to_owned()
}

/// A key in a Secret of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Replica bounds for the workers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("scaling.minReplicas must not exceed scaling.maxReplicas"))]
pub struct Scaling {
    /// Fewest worker replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most worker replicas (also capped by the partition count).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Lag per replica above which another replica is added.
    #[serde(default = "default_lag_threshold")]
    #[schemars(range(min = 1))]
    pub lag_threshold: i64,
}

/// One replica at rest, up to one more than that unless asked: scaling is opt-in.
const fn default_min_replicas() -> i32 {
    1
}

const fn default_max_replicas() -> i32 {
    1
}

/// 1,000 records of lag per replica: the value DESIGN §2 shows.
const fn default_lag_threshold() -> i64 {
    1000
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            lag_threshold: default_lag_threshold(),
        }
    }
}

/// Where a new consumer group starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record kept.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// What the workers are doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventConsumerStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Worker replicas wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Worker replicas ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Records not yet processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// The Kafka topics the workers read and write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<ConsumerTopics>,
    /// The Kafka principals and ACLs this resource declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<super::AccessStatus>,
    /// Ready, Reconciling and Stalled, as kstatus reads them, and AccessGranted: whether Kafka
    /// holds the ACLs in `access`. A map keyed by `type`, so the two controllers that write
    /// conditions (consumer: the kstatus three; identity: AccessGranted) merge under
    /// server-side apply instead of replacing each other's.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The Kafka topics of one EventConsumer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerTopics {
    /// The Kafka topics consumed (the EventTopics' topicName).
    #[serde(default)]
    pub source: Vec<String>,
    /// One retry topic per source topic and delay tier, managed by the operator.
    #[serde(default)]
    pub retry: Vec<String>,
    /// The dead-letter topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Whether the dead-letter topic is the managed `<group>.dlq` (deleted with the consumer).
    #[serde(default)]
    pub dead_letter_managed: bool,
}

/// Consumer lag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Over all topics.
    pub total: i64,
    /// Per topic.
    #[serde(default)]
    pub by_topic: BTreeMap<String, i64>,
    /// Partitions whose committed offset has not moved while they had lag and workers ran: a
    /// record stuck in delivery. Their lag adds no replicas (more workers cannot help it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck: Vec<StuckPartition>,
}

/// A partition whose records are not being processed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StuckPartition {
    /// The Kafka topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset that has not moved.
    pub committed: i64,
    /// Records behind it.
    pub lag: i64,
}
