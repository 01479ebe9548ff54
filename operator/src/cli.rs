//! The command line of `ferry-operator`.

use clap::{Parser, Subcommand};
use ferry_common::{kafka::KafkaArgs, telemetry::LogArgs};

/// Ferry's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "ferry-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers and the admission webhook.
    Run {
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
            Command::Run { kafka, log } => {
                log.init();
                kafka.client_config()?;
                anyhow::bail!("the controllers are not built yet (EventTopic issue)")
            }
        }
    }
}
