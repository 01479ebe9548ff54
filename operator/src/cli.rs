//! The command line of `ferry-operator`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::crdgen;

/// Ferry's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "ferry-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers.
    Run(Box<crate::run::RunArgs>),
    /// Print the CRDs as YAML, or write one file per CRD into --out-dir.
    Crdgen {
        /// Directory to write `<plural>.ferry.dev.yaml` files into; prints to stdout if unset.
        #[arg(long, env = "FERRY_CRD_OUT_DIR")]
        out_dir: Option<PathBuf>,
    },
}

impl Cli {
    /// Runs the chosen subcommand to completion.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(args) => args.run().await,
            Command::Crdgen { out_dir: None } => {
                print!("{}", crdgen::render_all()?);
                Ok(())
            }
            Command::Crdgen { out_dir: Some(dir) } => {
                for path in crdgen::write_all(&dir)? {
                    eprintln!("wrote {path}");
                }
                Ok(())
            }
        }
    }
}
