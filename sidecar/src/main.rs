//! `ferry-sidecar`: parses the command line and hands over to the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: with more than one runtime thread (the relay's default) a
/// record allocated on one thread is freed on another, which glibc serves with arena locks
/// (~18% of the worker's CPU in a profile of `make bench-worker` on two threads).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = ferry_sidecar::cli::Cli::parse();
    cli.runtime()?.block_on(cli.run())
}
