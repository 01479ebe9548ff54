//! Ferry's one door to Kafka's admin API: topics and their configs, ACLs and SCRAM
//! credentials (DESIGN §3). Controllers call [`KafkaAdmin`]; it calls rdkafka's safe API
//! where it exists and [`native`] (librdkafka's C API) where it does not.
//!
//! Every method takes many topics at once, so a controller can batch: one DescribeTopics or
//! IncrementalAlterConfigs request carries the work of many reconciles ([`batch`]).

pub mod acls;
mod batch;
mod native;
pub mod offsets;
mod scram;
pub mod topic_config;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rdkafka::{
    ClientConfig,
    admin::{
        AdminClient, AdminOptions, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
        TopicReplication,
    },
    client::DefaultClientContext,
    consumer::BaseConsumer,
    error::KafkaError,
    types::RDKafkaErrorCode,
};

pub use acls::AclBinding;
pub use batch::Batched;

/// Why an admin request as a whole failed (per-topic refusals are returned as values).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot create the Kafka admin client")]
    Client(#[source] KafkaError),
    #[error("Kafka admin request failed")]
    Kafka(#[source] KafkaError),
    #[error("Kafka admin request failed: {code}: {message}")]
    Request {
        code: RDKafkaErrorCode,
        message: String,
    },
    #[error("Kafka admin request got no answer in time")]
    Timeout,
    #[error("librdkafka returned an unexpected event type")]
    UnexpectedEvent,
    #[error("{0:?} contains a NUL byte")]
    BadName(String),
    #[error("the admin batcher stopped")]
    BatcherGone,
}

impl Error {
    /// Whether the cluster could not be reached (as opposed to a refusal): the caller reports
    /// `KafkaUnavailable` and retries with backoff.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Timeout | Error::BatcherGone => true,
            Error::Kafka(KafkaError::AdminOp(code)) | Error::Request { code, .. } => matches!(
                code,
                RDKafkaErrorCode::OperationTimedOut
                    | RDKafkaErrorCode::RequestTimedOut
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::NetworkException
                    | RDKafkaErrorCode::BrokerNotAvailable
                    | RDKafkaErrorCode::LeaderNotAvailable
                    | RDKafkaErrorCode::NotController
                    | RDKafkaErrorCode::TimedOutQueue
            ),
            Error::Kafka(_) => true,
            _ => false,
        }
    }

    /// Whether Kafka refused because the admin's principal lacks the rights: a person must
    /// grant them (or fix the credential); retrying alone does not help.
    pub fn is_authorization(&self) -> bool {
        match self {
            Error::Kafka(KafkaError::AdminOp(code)) | Error::Request { code, .. } => matches!(
                code,
                RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Authentication
            ),
            _ => false,
        }
    }

    /// A bounded label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Client(_) => "client",
            Error::Kafka(_) | Error::Request { .. } => "request",
            Error::Timeout => "timeout",
            Error::UnexpectedEvent => "unexpected_event",
            Error::BadName(_) => "bad_name",
            Error::BatcherGone => "batcher_gone",
        }
    }
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A refusal of one topic's operation by Kafka: its error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Kafka's error code.
    pub code: RDKafkaErrorCode,
    /// Kafka's explanation, when it gave one.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// One topic as Kafka has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Kafka's topic id (base64 UUID).
    pub topic_id: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replicas of partition 0 (all partitions have the same count unless reassigned by hand).
    pub replication_factor: i32,
    /// The per-topic config overrides (source DYNAMIC_TOPIC_CONFIG), not broker defaults.
    pub config: BTreeMap<String, String>,
}

/// One incremental config change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigOp {
    /// Set a per-topic override.
    Set { key: String, value: String },
    /// Remove a per-topic override (the broker default applies again).
    Delete { key: String },
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopicSpec {
    /// Its name.
    pub name: String,
    /// Its partitions.
    pub partitions: i32,
    /// Its replication factor; `None` for the broker's default.
    pub replication_factor: Option<i32>,
    /// Its config overrides.
    pub config: BTreeMap<String, String>,
}

/// The Kafka admin client of the operator.
#[derive(Clone)]
pub struct KafkaAdmin {
    client: Arc<AdminClient<DefaultClientContext>>,
    /// The handle committed offsets are fetched with, made on first use ([`offsets`]).
    group_handle: Arc<std::sync::Mutex<Option<Arc<BaseConsumer>>>>,
    config: ClientConfig,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAdmin")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The consumer group of the handle committed offsets are fetched with: never joined, so it
/// never appears with members or offsets.
const OFFSETS_GROUP: &str = "ferry-operator.offset-fetch";

/// Topic-level errors that mean "no such topic".
fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
    )
}

impl KafkaAdmin {
    /// Connects (lazily: librdkafka dials on the first request) with `config`; `timeout`
    /// bounds every request.
    pub fn new(config: &ClientConfig, timeout: Duration) -> Result<Self> {
        let client = config.create().map_err(Error::Client)?;
        Ok(Self {
            client: Arc::new(client),
            group_handle: Arc::default(),
            config: config.clone(),
            timeout,
        })
    }

    /// A consumer handle with a consumer group of its own, for OffsetFetch only. On a
    /// NOT_COORDINATOR answer librdkafka 2.12 asks the handle's own group to find its
    /// coordinator again, and an admin client has none: it dereferences null and the process
    /// dies (librdkafka#5040, open). The group is never joined; it only has to exist.
    fn group_handle(&self) -> Result<Arc<BaseConsumer>> {
        let mut handle = self.group_handle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = handle.as_ref() {
            return Ok(Arc::clone(h));
        }
        let created: Arc<BaseConsumer> = Arc::new(
            self.config
                .clone()
                .set("group.id", OFFSETS_GROUP)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(Error::Client)?,
        );
        *handle = Some(Arc::clone(&created));
        Ok(created)
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Describes topics with their config overrides; `None` for a topic that does not exist.
    pub async fn describe_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<Option<TopicState>, Refusal>)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let described = native::describe_topics(&self.client, names, self.timeout).await?;
        let existing: Vec<&str> = described
            .iter()
            .filter(|d| d.result.is_ok())
            .map(|d| d.name.as_str())
            .collect();
        let specifiers: Vec<ResourceSpecifier<'_>> = existing
            .iter()
            .map(|n| ResourceSpecifier::Topic(n))
            .collect();
        let mut configs = BTreeMap::new();
        if !specifiers.is_empty() {
            let results = self
                .client
                .describe_configs(specifiers.iter(), &self.options())
                .await
                .map_err(Error::Kafka)?;
            for (name, result) in existing.iter().zip(results) {
                configs.insert(name.to_string(), result);
            }
        }
        let mut out = Vec::with_capacity(described.len());
        for d in described {
            let state = match d.result {
                Err((code, _)) if is_unknown_topic(code) => Ok(None),
                Err((code, message)) => Err(Refusal { code, message }),
                Ok((topic_id, partitions, replication_factor)) => {
                    match configs.remove(&d.name) {
                        Some(Ok(resource)) => Ok(Some(TopicState {
                            topic_id,
                            partitions,
                            replication_factor,
                            config: resource
                                .entries
                                .into_iter()
                                .filter(|e| e.source == ConfigSource::DynamicTopic)
                                .filter_map(|e| e.value.map(|v| (e.name, v)))
                                .collect(),
                        })),
                        // Deleted between the two requests.
                        Some(Err(code)) if is_unknown_topic(code) => Ok(None),
                        Some(Err(code)) => Err(Refusal {
                            code,
                            message: String::new(),
                        }),
                        None => Err(Refusal {
                            code: RDKafkaErrorCode::Fail,
                            message: "no config description returned".to_owned(),
                        }),
                    }
                }
            };
            out.push((d.name, state));
        }
        Ok(out)
    }

    /// Creates topics; per topic `Ok` or Kafka's refusal (`TopicAlreadyExists` included).
    pub async fn create_topics(
        &self,
        topics: &[NewTopicSpec],
    ) -> Result<Vec<(String, Result<(), Refusal>)>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                // -1: the broker's default.replication.factor (KIP-464).
                let replication = TopicReplication::Fixed(t.replication_factor.unwrap_or(-1));
                t.config.iter().fold(
                    NewTopic::new(&t.name, t.partitions, replication),
                    |topic, (k, v)| topic.set(k, v),
                )
            })
            .collect();
        let results = self
            .client
            .create_topics(new.iter(), &self.options())
            .await
            .map_err(Error::Kafka)?;
        Ok(refusals(results))
    }

    /// Grows topics to the given partition counts.
    pub async fn create_partitions(
        &self,
        topics: &[(String, i32)],
    ) -> Result<Vec<(String, Result<(), Refusal>)>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let new: Vec<NewPartitions<'_>> = topics
            .iter()
            .map(|(name, count)| NewPartitions::new(name, usize::try_from(*count).unwrap_or(0)))
            .collect();
        let results = self
            .client
            .create_partitions(new.iter(), &self.options())
            .await
            .map_err(Error::Kafka)?;
        Ok(refusals(results))
    }

    /// Changes topic configs incrementally (only the keys named change).
    pub async fn alter_topic_configs(
        &self,
        changes: &[(String, Vec<ConfigOp>)],
    ) -> Result<Vec<(String, Result<(), Refusal>)>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let results =
            native::incremental_alter_topic_configs(&self.client, changes, self.timeout).await?;
        Ok(results
            .into_iter()
            .map(|(name, r)| (name, r.map_err(|(code, message)| Refusal { code, message })))
            .collect())
    }

    /// Deletes topics; a topic that is already gone counts as deleted.
    pub async fn delete_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<(), Refusal>)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let results = self
            .client
            .delete_topics(&refs, &self.options())
            .await
            .map_err(Error::Kafka)?;
        Ok(refusals(results)
            .into_iter()
            .map(|(name, r)| match r {
                Err(refusal) if is_unknown_topic(refusal.code) => (name, Ok(())),
                other => (name, other),
            })
            .collect())
    }

    /// Creates ACL bindings (an existing one is left as it is).
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<()> {
        acls::create_acls(&self.client, bindings, self.timeout).await
    }

    /// Every ACL binding of `principal` (`User:<name>`), or of everyone with `None`.
    pub async fn describe_acls(&self, principal: Option<&str>) -> Result<Vec<AclBinding>> {
        acls::describe_acls(&self.client, principal, self.timeout).await
    }

    /// Deletes exactly these bindings; returns how many Kafka removed.
    pub async fn delete_acls(&self, bindings: &[AclBinding]) -> Result<usize> {
        acls::delete_acls(&self.client, bindings, self.timeout).await
    }

    /// Creates a user's SCRAM-SHA-512 credential or replaces its password; librdkafka salts it
    /// and sends only the salted keys.
    pub async fn upsert_scram_credential(&self, user: &str, password: &str) -> Result<()> {
        scram::upsert(&self.client, user, password, self.timeout).await
    }

    /// Deletes a user's SCRAM-SHA-512 credential (none is not an error).
    pub async fn delete_scram_credential(&self, user: &str) -> Result<()> {
        scram::delete(&self.client, user, self.timeout).await
    }
}

fn refusals(
    results: Vec<std::result::Result<String, (String, RDKafkaErrorCode)>>,
) -> Vec<(String, Result<(), Refusal>)> {
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => (name, Ok(())),
            Err((name, code)) => (
                name,
                Err(Refusal {
                    code,
                    message: String::new(),
                }),
            ),
        })
        .collect()
}
