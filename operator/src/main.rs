//! `ferry-operator`: parses the command line and hands over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferry_operator::cli::Cli::parse().run().await
}
