//! `ferry-sidecar`: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferry_sidecar::cli::Cli::parse().run().await
}
