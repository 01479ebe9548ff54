//! The command line of `ferry-sidecar`.

use clap::{Parser, Subcommand};

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
    Worker(Box<crate::worker::config::WorkerArgs>),
}

impl Cli {
    /// Runs the chosen subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Relay(args) => {
                args.log.init();
                Ok(crate::relay::run(*args, crate::shutdown::signal()).await?)
            }
            Command::Worker(args) => {
                args.log.init();
                crate::worker::run(*args, crate::shutdown::signal()).await?;
                Ok(())
            }
        }
    }
}
