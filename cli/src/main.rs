//! `kubectl-ferry`: parses the command line and runs it ([`kubectl_ferry::Cli::run`]).

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = kubectl_ferry::Cli::parse();
    match cli.run().await {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
