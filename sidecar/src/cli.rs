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
    Relay {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Deliver Kafka records to a service over HTTP.
    Worker(Box<crate::worker::config::WorkerArgs>),
}

impl Cli {
    /// Runs the chosen subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Relay { kafka, log } => {
                log.init();
                kafka.client_config()?;
                anyhow::bail!("the relay is not built yet (outbox relay issue)")
            }
            Command::Worker(args) => {
                args.log.init();
                crate::worker::run(*args, crate::shutdown::signal()).await?;
                Ok(())
            }
        }
    }
}
