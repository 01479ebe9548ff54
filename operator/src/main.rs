//! `ferry-operator`: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc, as in `ferry-sidecar`: glibc keeps an arena per runtime
/// thread, and what a burst of reconciles allocated on one thread and freed on another stays in
/// the operator's resident memory long after the burst.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ferry_operator::cli::Cli::parse().run().await
}
