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
#[x_kube(validation = Rule::new("!self.validate || has(self.delivery.http)").message("validate: true is done by Ferry's worker before it delivers over HTTP; with delivery.container your own consumer reads the records, so check them there"))]
#[x_kube(validation = Rule::new("self.placement != 'Sidecar' || !has(self.scaling)").message("placement: Sidecar runs one worker in each selected service pod, so spec.scaling does not apply: scale the service instead"))]
pub struct EventConsumerSpec {
    /// Names of EventTopics in this namespace to consume (their `metadata.name`, not the Kafka
    /// topic name). No worker starts until each exists and is Ready (`TopicNotFound`,
    /// `TopicNotReady`).
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, size(t) > 0)").message("topics must name EventTopics; empty names are not allowed"))]
    pub topics: Vec<String>,

    /// The service account whose Kafka principal, `User:<namespace>.<serviceAccount>`, consumes:
    /// the operator creates its credential Secret `ferry-kafka-<serviceAccount>` and grants it
    /// read access to the topics and the group, and read and write access to the retry tiers and
    /// the dead-letter topic.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub service_account: String,

    /// The Kafka consumer group; defaults to `<namespace>.<name>`. It must start with
    /// `<namespace>.`: the tenancy admission policy shipped in `crds/` refuses any other, and
    /// without the policy the operator grants nothing (`GroupOutsideNamespace`). The retry tiers
    /// `<topic>.<group>.retry.<delay>` and the managed dead-letter topic `<group>.dlq` are named
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub group_id: Option<String>,

    /// Where each record goes: exactly one of `http` (the worker POSTs it as a CloudEvent) or
    /// `container` (the team's own consumer).
    pub delivery: Delivery,

    /// Check each record against its EventTopic's `spec.schema` before delivery: a record that
    /// breaks it goes to the dead-letter topic, every violation's path in `ferry-error`, and
    /// never reaches the service. The relay already checks at publish; this also catches
    /// records written by producers outside Ferry. Needs `delivery.http` (a team's own
    /// container reads records itself).
    #[serde(default)]
    pub validate: bool,

    /// Which records may be delivered in parallel: `partition` (one at a time per
    /// partition), `key` (in order within a key, in parallel across keys) or `unordered` (up
    /// to maxInFlight at once). With `partition` and `key`, a record waiting in a retry tier
    /// holds the later records of its partition or key behind it.
    #[serde(default)]
    pub ordering: Ordering,

    /// Most records in delivery at once per worker; it also bounds the records read but not
    /// yet committed, so a worker that crashes redelivers at most this many.
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_in_flight: i32,

    /// What happens to a record the service does not take: in-process attempts with backoff,
    /// then one pass through each retry tier, then the dead-letter topic. 429, 5xx, timeouts
    /// and connection errors are retried; any other answer but 2xx (a 4xx, a 3xx) sends the
    /// record to the dead-letter topic at once.
    #[serde(default)]
    pub retry: Retry,

    /// Where records go that cannot be delivered. Absent: the managed topic `<group>.dlq`,
    /// created and deleted with this consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,

    /// De-duplication by event id: an event whose id was already delivered for this group
    /// is skipped, so a redelivery after a crash or rebalance has no second effect. The ids
    /// are kept in a PostgreSQL database (usually the service's own). Absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,

    /// Where the workers run: `Deployment` (a worker Deployment `<name>-worker`, scaled by
    /// lag) or `Sidecar` (a worker injected next to each service pod that `podSelector`
    /// matches, delivering to the service on localhost; pods that started before the consumer
    /// or its last change get it only when restarted: reason `PodsToRestart`).
    #[serde(default)]
    pub placement: Placement,

    /// With `placement: Sidecar`, the labels of the service pods that get a worker. Only pods
    /// labelled `ferry.dev/inject: enabled` reach the injection webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,

    /// Worker replicas, sized by lag every `--lag-interval` of the operator: `ceil(lag /
    /// lagThreshold)` within `minReplicas`..`maxReplicas`, never above the widest topic's
    /// partition count, down only after `--scale-down-cooldown`. Placement `Deployment` only;
    /// absent: one worker. Do not also put an HPA on the worker Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,

    /// Where a group without committed offsets starts reading: `earliest` (the oldest record
    /// the topic keeps) or `latest` (only records produced after the group joins). A group
    /// that has committed offsets continues from them.
    #[serde(default)]
    pub start_from: StartFrom,

    /// Compute resources of the worker container (a Kubernetes ResourceRequirements). Absent:
    /// 50m CPU and 64Mi memory requested, 256Mi memory limit.
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

/// How records reach the service: exactly one of `http` or `container`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) != has(self.container)").message("delivery needs exactly one of http or container"))]
pub struct Delivery {
    /// Deliver each record as a CloudEvent over HTTP (binary mode: the envelope's `data` is
    /// the body, its `id`, `event` and `ts` the `ce-id`, `ce-type` and `ce-time` headers): a
    /// 2xx answer means done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDelivery>,
    /// Run the team's own consumer image instead of Ferry's worker, with this consumer's Kafka
    /// settings and credential as `FERRY_KAFKA_*` variables and `FERRY_TOPICS`, `FERRY_GROUP`
    /// and `FERRY_DEAD_LETTER_TOPIC`: a migration path for consumer code that already exists.
    /// ACLs, lag and scaling still apply; retries and de-duplication are the image's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDelivery>,
}

/// An HTTP endpoint: a Service of this namespace or a URL.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.service), has(self.url), has(self.port)].filter(x, x).size() == 1").message("http delivery needs exactly one of service, url or port"))]
#[x_kube(validation = Rule::new("!has(self.path) || has(self.port)").message("delivery.http.path goes with port; a service target has its own path and a URL includes it"))]
pub struct HttpDelivery {
    /// A Service in this namespace, reached by its cluster DNS name.
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
    /// How long one delivery attempt may take (e.g. 10s); a timeout is retried like a 5xx.
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
    /// The container image, run as a non-root user with a read-only root filesystem (a
    /// writable `/tmp`).
    #[schemars(length(min = 1))]
    pub image: String,
    /// The container's command (its entrypoint); absent: the image's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The command's arguments; absent: the image's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables added after Ferry's, so one of the same name overrides Ferry's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// A plain environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct EnvVar {
    /// The variable's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The variable's value (plain text: put secrets in the image's own Secret mounts).
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
    /// In-process delivery attempts on the main topic before a record moves to the first
    /// retry tier (or, without tiers, to the dead-letter topic); 0 counts as 1. Each tier
    /// gives the record one more attempt.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 0, max = 100))]
    pub attempts: i32,
    /// Wait between in-process attempts: exponential (doubling) from `initial` to `max`, with
    /// jitter; a longer `Retry-After` of a 429 or 5xx answer is honoured.
    #[serde(default)]
    pub backoff: RetryBackoff,
    /// Delays of the retry tiers, ascending, e.g. [5s, 1m, 10m]: one retry topic each,
    /// `<topic>.<group>.retry.<delay>`, created by the operator with the source's partition
    /// count. A record waits in a tier until its delay has passed, without blocking the main
    /// topic. Empty: failures go straight to the dead-letter topic. Remove a delay only once
    /// its tier is drained: what waits there is not read any more.
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
    /// The wait before the second attempt.
    #[serde(default = "default_initial")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub initial: String,
    /// The longest wait between two attempts.
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.topic) || !has(self.retention)").message("deadLetter.retention is for the managed dead-letter topic; a named topic keeps what its EventTopic's config says (retention.ms)"))]
pub struct DeadLetter {
    /// The name of an EventTopic of this namespace that owns its Kafka topic (else
    /// `DeadLetterTopicNotFound` or `DeadLetterTopicInConflict`, and no access is granted);
    /// several consumers may share it. Absent: the managed `<group>.dlq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub topic: Option<String>,
    /// How long the managed dead-letter topic keeps a record (its `retention.ms`; default 14d):
    /// long enough for a person to look and replay, bounded so that a service refusing
    /// everything cannot fill the brokers' disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"))]
    pub retention: Option<String>,
}

/// Fourteen days: two weekends for a person to notice dead letters and replay them.
pub const DEFAULT_DEAD_LETTER_RETENTION: &str = "14d";

impl DeadLetter {
    /// The managed topic's retention as written, or the default.
    pub fn retention(dead_letter: Option<&Self>) -> &str {
        dead_letter
            .and_then(|d| d.retention.as_deref())
            .unwrap_or(DEFAULT_DEAD_LETTER_RETENTION)
    }
}

/// De-duplication by event id.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.databaseSecretRef)").message("idempotency needs databaseSecretRef when enabled"))]
pub struct Idempotency {
    /// Skip events whose id (the envelope's `id`) was already delivered for this group.
    #[serde(default)]
    pub enabled: bool,
    /// The key of a Secret in this namespace holding the PostgreSQL URL where delivered ids
    /// are kept (given to the worker by reference, never copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_secret_ref: Option<SecretKeyRef>,
    /// How long delivered ids are remembered (e.g. 7d); older ones are pruned. Keep it at
    /// least as long as a record can be redelivered (the topic's retention).
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
    /// Fewest worker replicas; 0 scales to zero while there is no lag (one worker returns
    /// with the first record).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most worker replicas (also capped by the partition count).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Records of lag per replica: the operator wants `ceil(lag / lagThreshold)` replicas.
    /// Lag of a stuck partition adds none.
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
    /// Worker replicas wanted (the worker Deployment's `spec.replicas`; with
    /// `placement: Sidecar`, the selected pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Worker replicas ready (with `placement: Sidecar`, the selected pods that run the
    /// current worker and are Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Records not yet processed, measured by the operator every `--lag-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// Records the dead-letter topic holds (over its partitions, the end offset minus the
    /// earliest kept), measured with the lag: a growing number is a service refusing events.
    /// A dead-letter topic several consumers share counts their records too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<i64>,
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
    /// The dead-letter topic's Kafka name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Whether the dead-letter topic is the managed `<group>.dlq` (deleted with the consumer).
    #[serde(default)]
    pub dead_letter_managed: bool,
}

/// Consumer lag: records between the group's committed offset (or, for a partition it never
/// committed, where `startFrom` begins) and the end of each partition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Records not yet processed over all consumed topics.
    pub total: i64,
    /// Records not yet processed per Kafka topic.
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
