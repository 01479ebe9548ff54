//! `kubectl ferry`: a kubectl plugin (`kubectl-ferry` on the PATH) to see Ferry at a glance,
//! inspect dead-lettered events and replay them (issue #18).
//!
//! ```text
//!  laptop: kubectl ferry ──(kubeconfig, user's RBAC)──▶ API server
//!            │   dlq list/show/replay: EventReplay, wait ──▶ operator ──▶ Job (dlq-replay)
//!            │                                             own principal: READ dead letters,
//!            │                                             WRITE first tier; status.result
//!            │   --direct:
//!            │   EventConsumer, EventTopics          get eventconsumers, eventtopics
//!            │   Secret ferry-kafka-<serviceAccount>  get secrets/<that one>
//!            │   ConfigMap ferry-replays-<consumer>   get/patch configmaps (replay ledger)
//!            ▼
//!          Kafka ──(the consumer's own SCRAM principal)──▶ READ its dead-letter topic,
//!                                                          WRITE its first retry tier
//! ```
//!
//! # How the plugin reaches Kafka, and why
//! No Kafka admin credential ever leaves the cluster. `dlq list`, `show` and `replay` ask the
//! operator ([`in_cluster`]): they create an `EventReplay` (a dry run for `list`/`show`), the
//! operator runs a Job under a principal that may read only that consumer's dead letters and
//! write only where the replay goes, and the plugin prints the outcome the Job wrote into the
//! EventReplay's status (and, for a dry run, the selection it wrote into a ConfigMap). No Kafka
//! credential reaches the laptop and the brokers need not be reachable from it; a GitOps user
//! commits the same resource. The Kafka logic is shared with that Job
//! (`ferry_sidecar::dlq`: [`dead_letter`], [`filter`], [`scan`], [`replay`], the ledger).
//!
//! With `--direct` they connect from the laptop as the consumer's own Kafka principal, whose
//! credential the operator keeps in the Secret `ferry-kafka-<serviceAccount>`, read through
//! the API server with the user's RBAC:
//! - **who may** is decided by Kubernetes RBAC: a user who may `get` that Secret could already
//!   run a pod with it; a user who may not is refused with the API server's own sentence.
//! - **what it can do** in Kafka is what that consumer's workers can do, nothing more: read its
//!   own dead letters and write its own retry tiers. It cannot read another team's topics.
//! - where brokers are not reachable from the laptop, `--kafka-bootstrap` points the plugin at a
//!   `kubectl port-forward`; this works where the brokers advertise an address the laptop
//!   reaches (the in-cluster default has no such limit).
//!
//! # Modules
//! [`cluster`] (kubeconfig, `--context`, `--as`), [`consumer`] (the EventConsumer's topics and
//! group, named by the functions the operator and worker use), [`credential`] (the Secret to
//! Kafka settings), [`ledger`] (the ledger ConfigMap as the user), [`dlq`], [`in_cluster`] and
//! [`status`] (the commands), [`output`] (table, JSON, YAML, colour).

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
            Command::Status(args) => status::run(args, kube).await,
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
