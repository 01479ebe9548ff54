//! `ferry-operator run`: placeholder until the controller lands.
use clap::Args;
use ferry_common::{kafka::KafkaArgs, telemetry::LogArgs};

/// Flags of `ferry-operator run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    log: LogArgs,
}

impl RunArgs {
    /// Runs the operator until SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self { kafka, log } = self;
        log.init();
        kafka.client_config()?;
        anyhow::bail!("not yet")
    }
}
