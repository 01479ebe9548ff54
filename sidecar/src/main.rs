//! `ferry-sidecar`: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: the worker allocates each record on the run loop's thread
/// and frees it on a delivery task's, which glibc serves with arena locks (~18% of the
/// worker's CPU in a profile of `make bench-worker`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = ferry_sidecar::cli::Cli::parse();
    cli.runtime()?.block_on(cli.run())
}
