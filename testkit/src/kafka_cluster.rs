//! The three-broker Kafka cluster (`FERRY_KAFKA_CLUSTER=1 make env-up`; `make test` starts it)
//! for tests that kill a broker: replication factor 3, `min.insync.replicas` 2, the same users
//! and ACL enforcement as the single broker. [`KafkaCluster::env`] is a [`TestEnv`] whose Kafka
//! is the cluster, so every helper that takes a `&TestEnv` works against it unchanged.
//!
//! A test creates a [`ClusterTopic`] whose partitions all prefer one leader, looks the leader
//! up with [`KafkaCluster::partitions`], and crashes it with [`KafkaCluster::kill_broker`]: the
//! [`BrokerOutage`] it returns holds [`disruption_lock`] and brings the broker back when the
//! test restarts it, or when it is dropped (a failing test never leaves the cluster degraded).

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use ferry_common::kafka::KafkaArgs;
use rdkafka::{
    ClientConfig, TopicPartitionList,
    admin::{NewTopic, TopicReplication},
    consumer::{BaseConsumer, Consumer},
};
use tokio::sync::MutexGuard;

use crate::{
    TestEnv,
    cleanup::run_to_completion,
    disruption_lock, in_ci,
    kafka::{create_topic, delete_topic},
    services::run_ctl,
    unique_name,
};

/// The `.ferry/env` variable with the cluster's bootstrap list (scripts/env/kafka-cluster.sh).
const BOOTSTRAP_VAR: &str = "FERRY_KAFKA_CLUSTER_BOOTSTRAP";
/// Replicas of every [`ClusterTopic`]: one per broker.
pub const REPLICATION_FACTOR: usize = 3;
/// `min.insync.replicas` of every [`ClusterTopic`]: acks=all writes go on with one broker down.
pub const MIN_INSYNC_REPLICAS: usize = 2;
/// How long a new topic may take to get its leaders and in-sync replicas (generous: a loaded
/// 2-core machine runs three brokers and the tests).
const SETTLE_WITHIN: Duration = Duration::from_secs(120);
/// Kafka's topic of committed offsets, whose partition leaders coordinate the groups.
const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How long one metadata request may take while a broker is down (librdkafka then retries
/// another broker).
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The running three-broker cluster of the test environment.
#[derive(Debug)]
pub struct KafkaCluster {
    env: TestEnv,
    nodes: Vec<i32>,
}

/// One partition as the cluster's metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition id.
    pub id: i32,
    /// The leader's node id; `None` while the partition has none (leader election).
    pub leader: Option<i32>,
    /// The node ids holding a replica, preferred leader first.
    pub replicas: Vec<i32>,
    /// The node ids in sync with the leader.
    pub isr: Vec<i32>,
}

impl KafkaCluster {
    /// The cluster, read once per test binary: `None` (after printing why) when the environment
    /// has none; a panic under `CI=true`, where `make test` always starts it.
    pub fn get() -> Option<&'static KafkaCluster> {
        static CLUSTER: OnceLock<Result<KafkaCluster, String>> = OnceLock::new();
        let env = TestEnv::get()?;
        match CLUSTER.get_or_init(|| Self::from_env(env)) {
            Ok(cluster) => Some(cluster),
            Err(reason) if in_ci() => panic!("CI=true but {reason}"),
            Err(reason) => {
                eprintln!("skipped: {reason}");
                None
            }
        }
    }

    fn from_env(env: &TestEnv) -> Result<KafkaCluster, String> {
        let bootstrap = env.var(BOOTSTRAP_VAR).ok_or_else(|| {
            format!(
                "the test environment has no Kafka cluster ({BOOTSTRAP_VAR} unset); run \
                 `FERRY_KAFKA_CLUSTER=1 make env-up`"
            )
        })?;
        // Node N listens on the N-th address (kafka-cluster.sh numbers them from 1).
        let count = bootstrap.split(',').filter(|a| !a.is_empty()).count();
        let nodes = (1..=i32::try_from(count).unwrap_or(0)).collect();
        let mut vars = env.vars.clone();
        vars.insert("FERRY_KAFKA_BOOTSTRAP".to_owned(), bootstrap.to_owned());
        Ok(KafkaCluster {
            env: TestEnv { vars },
            nodes,
        })
    }

    /// The test environment with the cluster as its Kafka (PostgreSQL and Kubernetes as usual).
    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// The admin's settings for the cluster, as a binary would parse them.
    pub fn kafka_args(&self) -> KafkaArgs {
        self.env.kafka_args()
    }

    /// The node ids of the brokers (`ctl.sh`'s `kafka-<id>`).
    pub fn nodes(&self) -> &[i32] {
        &self.nodes
    }

    /// Starts every broker that is not running (one a crashed earlier run left down) and
    /// waits until each serves clients.
    pub async fn start_all(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            self.env.ctl_raw("start", &format!("kafka-{node}")).await?;
        }
        Ok(())
    }

    /// The partitions of `topic` as the cluster reports them now.
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<PartitionState>> {
        let client: BaseConsumer = self.env.kafka_config().create()?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_partitions(&client, &topic)).await?
    }

    /// The leader of one partition of `topic` (`None` during an election).
    pub async fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<Option<i32>> {
        let partitions = self.partitions(topic).await?;
        partitions
            .iter()
            .find(|p| p.id == partition)
            .map(|p| p.leader)
            .with_context(|| format!("{topic} has no partition {partition}"))
    }

    /// The broker coordinating consumer group `group`: the leader of the group's partition of
    /// `__consumer_offsets` (Kafka's `abs(group.hashCode()) % offsets.topic.num.partitions`).
    /// Creates `__consumer_offsets` first if no group has used the cluster yet.
    pub async fn group_coordinator(&self, group: &str) -> anyhow::Result<i32> {
        let consumer: BaseConsumer = self.env.kafka_config().set("group.id", group).create()?;
        // Asking for a group's offsets makes the client look up the group's coordinator, which
        // creates `__consumer_offsets`; what the answer says does not matter.
        tokio::task::spawn_blocking(move || {
            let mut probe = TopicPartitionList::new();
            probe.add_partition(OFFSETS_TOPIC, 0);
            let _ = consumer.committed_offsets(probe, METADATA_TIMEOUT);
        })
        .await?;
        let offsets = self
            .wait_partitions(OFFSETS_TOPIC, "led everywhere", SETTLE_WITHIN, |ps| {
                !ps.is_empty() && ps.iter().all(|p| p.leader.is_some())
            })
            .await?;
        let partition = offsets_partition(group, i32::try_from(offsets.len())?);
        offsets
            .iter()
            .find(|p| p.id == partition)
            .and_then(|p| p.leader)
            .with_context(|| format!("no leader for {OFFSETS_TOPIC} partition {partition}"))
    }

    /// Polls `topic`'s metadata until `done` holds for its partitions; fails after `timeout`
    /// naming `what` and the last state seen.
    pub async fn wait_partitions(
        &self,
        topic: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[PartitionState]) -> bool + Send + 'static,
    ) -> anyhow::Result<Vec<PartitionState>> {
        let client: BaseConsumer = self.env.kafka_config().create()?;
        let (topic, what) = (topic.to_owned(), what.to_owned());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                let seen = read_partitions(&client, &topic);
                if let Ok(partitions) = &seen
                    && done(partitions)
                {
                    return seen;
                }
                if Instant::now() > deadline {
                    bail!("{topic}: not {what} after {timeout:?}; last seen {seen:?}");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
        .await?
    }

    /// Kills broker `node` with SIGKILL, as a crash would, holding [`disruption_lock`] until
    /// the returned outage ends. The broker stays down until [`BrokerOutage::restart`] (or the
    /// outage's drop) starts it again.
    pub async fn kill_broker(&self, node: i32) -> anyhow::Result<BrokerOutage<'_>> {
        ensure!(self.nodes.contains(&node), "no Kafka node {node}");
        let lock = disruption_lock().await;
        self.env.ctl_raw("kill", &format!("kafka-{node}")).await?;
        Ok(BrokerOutage {
            cluster: self,
            node,
            _lock: lock,
            restarted: false,
        })
    }
}

/// A broker killed by [`KafkaCluster::kill_broker`]; started again by [`BrokerOutage::restart`]
/// or, failing that, when dropped.
pub struct BrokerOutage<'a> {
    cluster: &'a KafkaCluster,
    node: i32,
    _lock: MutexGuard<'static, ()>,
    restarted: bool,
}

impl BrokerOutage<'_> {
    /// The killed broker's node id.
    pub fn node(&self) -> i32 {
        self.node
    }

    /// Starts the broker again (same data directory, as after a crash) and waits until it
    /// serves clients; it still has to catch up before it rejoins the in-sync replicas.
    pub async fn restart(mut self) -> anyhow::Result<()> {
        self.restarted = true;
        let service = format!("kafka-{}", self.node);
        self.cluster.env.ctl_raw("start", &service).await
    }
}

impl Drop for BrokerOutage<'_> {
    fn drop(&mut self) {
        if self.restarted {
            return;
        }
        let (ctl, offset) = match self.cluster.env.ctl_command() {
            Ok(command) => command,
            Err(e) => {
                eprintln!("could not restart the killed broker: {e:#}");
                return;
            }
        };
        let service = format!("kafka-{}", self.node);
        run_to_completion(async move {
            if let Err(e) = run_ctl(ctl, offset, "start", service).await {
                eprintln!("could not restart the killed broker: {e:#}");
            }
        });
    }
}

/// A topic on the cluster with [`REPLICATION_FACTOR`] replicas and [`MIN_INSYNC_REPLICAS`],
/// deleted when dropped.
pub struct ClusterTopic {
    name: String,
    admin_config: ClientConfig,
}

impl ClusterTopic {
    /// Creates a topic with a random name and `partitions` partitions whose preferred leader
    /// is broker `leader`, and returns once every partition is led by it with all replicas in
    /// sync.
    pub async fn create(
        cluster: &KafkaCluster,
        partitions: i32,
        leader: i32,
    ) -> anyhow::Result<ClusterTopic> {
        Self::create_named(cluster, &unique_name("failover"), partitions, leader).await
    }

    /// [`ClusterTopic::create`] with a chosen name (a worker's dead-letter topic, say).
    pub async fn create_named(
        cluster: &KafkaCluster,
        name: &str,
        partitions: i32,
        leader: i32,
    ) -> anyhow::Result<ClusterTopic> {
        let assignment = preferring(&cluster.nodes, leader, partitions)?;
        let rows: Vec<&[i32]> = assignment.iter().map(Vec::as_slice).collect();
        let admin_config = cluster.env.kafka_config();
        let min_isr = MIN_INSYNC_REPLICAS.to_string();
        let topic = NewTopic::new(name, partitions, TopicReplication::Variable(&rows))
            .set("min.insync.replicas", &min_isr);
        create_topic(&admin_config, topic).await?;
        let created = ClusterTopic {
            name: name.to_owned(),
            admin_config,
        };
        let count = usize::try_from(partitions)?;
        cluster
            .wait_partitions(
                name,
                "led by its preferred leader with every replica in sync",
                SETTLE_WITHIN,
                move |ps| {
                    ps.len() == count
                        && ps.iter().all(|p| {
                            p.leader == p.replicas.first().copied()
                                && p.isr.len() == REPLICATION_FACTOR
                        })
                },
            )
            .await?;
        Ok(created)
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ClusterTopic {
    fn drop(&mut self) {
        delete_topic(&self.admin_config, &self.name);
    }
}

/// The `__consumer_offsets` partition of `group`: `Utils.abs(group.hashCode()) % partitions`,
/// with Java's `String.hashCode` (over UTF-16 code units, wrapping).
fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0_i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions
}

/// A replica assignment of `partitions` partitions over `nodes`, each partition's replica list
/// starting with `leader` (its preferred leader) followed by the other nodes, rotated per
/// partition so followers share the load.
fn preferring(nodes: &[i32], leader: i32, partitions: i32) -> anyhow::Result<Vec<Vec<i32>>> {
    ensure!(
        nodes.contains(&leader),
        "no Kafka node {leader} in {nodes:?}"
    );
    ensure!(
        nodes.len() >= REPLICATION_FACTOR,
        "{} brokers cannot hold {REPLICATION_FACTOR} replicas",
        nodes.len()
    );
    let followers: Vec<i32> = nodes.iter().copied().filter(|n| *n != leader).collect();
    Ok((0..usize::try_from(partitions)?)
        .map(|p| {
            let mut replicas = vec![leader];
            replicas
                .extend((0..REPLICATION_FACTOR - 1).map(|i| followers[(p + i) % followers.len()]));
            replicas
        })
        .collect())
}

fn read_partitions(client: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<PartitionState>> {
    let metadata = client.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("no metadata for {topic}"))?;
    if let Some(error) = found.error() {
        bail!("metadata for {topic}: {error:?}");
    }
    let mut partitions: Vec<PartitionState> = found
        .partitions()
        .iter()
        .map(|p| PartitionState {
            id: p.id(),
            leader: (p.leader() >= 0).then_some(p.leader()),
            replicas: p.replicas().to_vec(),
            isr: p.isr().to_vec(),
        })
        .collect();
    partitions.sort_by_key(|p| p.id);
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_prefers_the_leader_and_spreads_its_followers() {
        let assignment = preferring(&[1, 2, 3], 2, 4).expect("assignment");
        assert_eq!(
            assignment,
            vec![vec![2, 1, 3], vec![2, 3, 1], vec![2, 1, 3], vec![2, 3, 1]]
        );
    }

    #[test]
    fn offsets_partition_follows_javas_string_hash() {
        // String.hashCode in Java 17: "group" 98629247, "ferry-worker-group-0001" -586089909,
        // "polygenelubricants" Integer.MIN_VALUE (Kafka's Utils.abs makes that 0).
        assert_eq!(offsets_partition("group", 50), 98_629_247 % 50);
        assert_eq!(
            offsets_partition("ferry-worker-group-0001", 50),
            (-586_089_909_i32 & 0x7fff_ffff) % 50
        );
        assert_eq!(offsets_partition("polygenelubricants", 50), 0);
    }

    #[test]
    fn refuses_an_unknown_leader_and_too_few_brokers() {
        assert!(preferring(&[1, 2, 3], 4, 1).is_err());
        assert!(preferring(&[1, 2], 1, 1).is_err());
    }
}
