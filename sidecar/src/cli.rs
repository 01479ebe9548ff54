//! The command line of `ferry-sidecar`.

use clap::{Parser, Subcommand};
use ferry_common::{kafka::KafkaArgs, telemetry::LogArgs};

/// Ferry's sidecar: outbox relay and consumer worker.
#[derive(Debug, Parser)]
#[command(name = "ferry-sidecar", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a PostgreSQL outbox table to Kafka.
    Relay(Box<crate::relay::RelayArgs>),
    /// Deliver Kafka records to a service over HTTP.
    Worker {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        log: LogArgs,
    },
}

impl Cli {
    /// Runs the chosen subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Relay(args) => {
                args.log.init();
                Ok(crate::relay::run(*args, crate::shutdown::signal()).await?)
            }
            Command::Worker { kafka, log } => {
                log.init();
                kafka.client_config()?;
                anyhow::bail!("the worker is not built yet (consumer worker issue)")
            }
        }
    }
}
