//! `kubectl ferry`: a kubectl plugin (`kubectl-ferry` on the PATH) to see Ferry at a glance,
//! inspect dead-lettered events and replay them (issue #18).
//!
//! ```text
//!  laptop: kubectl ferry ──(kubeconfig, user's RBAC)──▶ API server
//!            │   EventConsumer, EventTopics          get eventconsumers, eventtopics
//!            │   Secret ferry-kafka-<serviceAccount>  get secrets/<that one>
//!            │   ConfigMap ferry-replays-<consumer>   get/patch configmaps (replay ledger)
//!            │   Event on the EventConsumer            create events (audit, best effort)
//!            ▼
//!          Kafka ──(the consumer's own SCRAM principal)──▶ READ its dead-letter topic,
//!                                                          WRITE its first retry tier
//! ```
//!
//! # How the plugin reaches Kafka, and why
//! No Kafka admin credential ever leaves the cluster. The plugin connects as the consumer's
//! own Kafka principal, whose credential the operator already keeps in the Secret
//! `ferry-kafka-<serviceAccount>`, read through the API server with the user's RBAC. So:
//! - **who may** is decided by Kubernetes RBAC, where the platform team already decides who
//!   may touch a team's namespace: a user who may `get` that Secret could already run a pod
//!   with it; a user who may not is refused with the API server's own sentence and what to ask
//!   for. Every read of the Secret is in the API server's audit log.
//! - **what it can do** in Kafka is what that consumer's workers can do, nothing more: read its
//!   own dead letters (the operator grants each consumer READ on its dead-letter topic, issue
//!   #18; the worker wrote them, so nothing new is disclosed) and write its own retry tiers,
//!   which only its own group reads. It cannot read another team's topics (the broker refuses).
//! - the replay goes back **through the worker**: into the consumer's first retry tier, due at
//!   once, with its key, partition, payload and event id, so the worker delivers it with its
//!   usual retries, per-key order and de-duplication by event id ([`replay`]).
//! - where brokers are not reachable from the laptop, `--kafka-bootstrap` points the plugin at a
//!   `kubectl port-forward` (or any name the laptop knows) instead of the Secret's address.
//!   Kafka clients then connect to each broker's *advertised* address, so this works where the
//!   brokers advertise an address the laptop reaches (a single broker forwarded on its own
//!   port, an external listener); a cluster whose brokers are reachable only from inside needs
//!   the in-cluster variant below. That is this design's real limit.
//!
//! The issue also sketches a stricter variant: the plugin asks the operator (an `EventReplay`
//! resource or an annotation) and the operator runs a Job under a dedicated principal with
//! READ on the dead-letter topic and WRITE on the first tier only, so no Kafka credential
//! reaches the laptop at all and GitOps can trigger replays. That needs a controller, a
//! principal kind and a Job image; the pure parts here ([`dead_letter`], [`filter`],
//! [`replay::plan`], [`ledger`]) are what such a Job would run. Until then the consumer's own
//! credential is the least privilege that exists.
//!
//! # Modules
//! [`cluster`] (kubeconfig, `--context`, `--as`), [`consumer`] (the EventConsumer's topics and
//! group, named by the functions the operator and worker use), [`credential`] (the Secret to
//! Kafka settings), [`scan`] (read a dead-letter topic once), [`dead_letter`] (one record),
//! [`filter`], [`replay`], [`ledger`] (what was replayed), [`dlq`] and [`status`] (the
//! commands), [`output`] (table, JSON, YAML, colour).

pub mod cluster;
pub mod consumer;
pub mod credential;
pub mod dlq;
pub mod error;
pub mod in_cluster;
pub mod ledger;
pub mod output;
pub mod status;

/// The dead-letter code the plugin shares with the operator's replay Job.
pub use ferry_sidecar::dlq::{dead_letter, filter, replay, scan};

use clap::{Parser, Subcommand};

pub use error::{Error, Result};

/// `kubectl ferry`: Ferry at a glance, and its dead letters.
#[derive(Parser, Debug, Clone)]
#[command(name = "kubectl ferry", bin_name = "kubectl ferry", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub kube: cluster::KubeArgs,
    #[command(flatten)]
    pub reach: dlq::KafkaReach,
    #[command(subcommand)]
    pub command: Command,
}

/// The plugin's commands.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// EventTopics, EventConsumers and injected pods on one screen.
    Status(status::StatusArgs),
    /// Dead-lettered events of an EventConsumer: list, show, replay.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
}

impl Cli {
    /// Runs the command and returns what to print on stdout.
    pub async fn run(&self) -> Result<String> {
        let Self {
            kube,
            reach,
            command,
        } = self;
        match command {
            Command::Status(args) => status::run(args, kube, reach).await,
            Command::Dlq(command) => dlq::run(command, kube, reach).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_kubectl_flags_go_anywhere() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "kubectl-ferry",
            "dlq",
            "replay",
            "notify",
            "-n",
            "shop",
            "--all",
            "--rate",
            "5/s",
            "--as",
            "alice",
        ])
        .expect("parses");
        assert_eq!(cli.kube.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.kube.as_user.as_deref(), Some("alice"));
        let Command::Dlq(dlq::DlqCommand::Replay(args)) = cli.command else {
            panic!("replay")
        };
        assert!(args.all && !args.dry_run && args.rate == Some(5.0));
        assert!(Cli::try_parse_from(["kubectl-ferry", "status", "-A", "-o", "yaml"]).is_ok());
        assert!(Cli::try_parse_from(["kubectl-ferry", "dlq", "show", "notify"]).is_err());
    }
}
