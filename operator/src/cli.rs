//! The command line of `ferry-operator`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{apidoc, crdgen};

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
    /// Print the API reference (Markdown) generated from the CRDs in --crd-dir, or write it
    /// to --out (`make generate` writes docs/api.md).
    Apidoc {
        /// Directory of the generated CRD YAML files to document.
        #[arg(long, env = "FERRY_CRD_DIR", default_value = "crds")]
        crd_dir: PathBuf,
        /// File to write; prints to stdout if unset.
        #[arg(long, env = "FERRY_APIDOC_OUT")]
        out: Option<PathBuf>,
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
            Command::Apidoc { crd_dir, out: None } => {
                print!("{}", apidoc::render_dir(&crd_dir)?);
                Ok(())
            }
            Command::Apidoc {
                crd_dir,
                out: Some(path),
            } => {
                apidoc::write(&crd_dir, &path)?;
                eprintln!("wrote {}", path.display());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn debug_of_the_arguments_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "ferry-operator",
            "run",
            "--kafka-bootstrap=b:9092",
            "--kafka-username=admin",
            "--kafka-password=pw-hunter2",
            "--kafka-option=sasl.password=opt-hunter2",
            "--kafka-option=ssl.keystore.password=store-hunter2",
            "--kafka-option=sasl.oauthbearer.client.secret=oauth-hunter2",
            "--kafka-option=client.id=ferry",
        ])
        .expect("valid arguments");
        let text = format!("{cli:?}");
        assert!(!text.contains("hunter2"), "a secret shows in Debug: {text}");
        assert!(
            text.contains("b:9092") && text.contains("client.id") && text.contains("ferry"),
            "other settings still show: {text}"
        );
    }

    #[test]
    fn reconciles_in_flight_are_bounded_and_never_zero() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(
                ["ferry-operator", "run", "--kafka-bootstrap=b:9092"]
                    .iter()
                    .chain(extra),
            )
        };
        let default = format!("{:?}", parse(&[]).expect("defaults"));
        assert!(
            default.contains("max_concurrent_reconciles: 32"),
            "{default}"
        );
        let zero = parse(&["--max-concurrent-reconciles=0"])
            .expect_err("zero would stop every controller")
            .to_string();
        assert!(zero.contains("--max-concurrent-reconciles"), "{zero}");
    }
}
