//! The command line of `ferry-sidecar`, and the async runtime it runs on.

use std::{num::NonZeroUsize, process::ExitCode};

use clap::{Parser, Subcommand};

/// The worker's runtime threads unless `--runtime-threads` says otherwise: the worker shares
/// its pod's CPU with the service it delivers to, and one thread spares the cross-thread
/// wake-ups and per-thread allocator caches of two. `make bench-worker`, ordering=key at
/// --max-in-flight 1000 over 128 connections on 2 cores, one thread against two in one
/// sitting: 23,100-28,400 against 25,500-27,700 events/s, 27-35 against 39-44 µs of CPU per
/// event, peak RSS 32.4-32.8 against 38.6-41.8 MiB.
const WORKER_RUNTIME_THREADS: NonZeroUsize = NonZeroUsize::MIN;

/// Ferry's sidecar: outbox relay and consumer worker.
#[derive(Debug, Parser)]
#[command(name = "ferry-sidecar", version)]
pub struct Cli {
    /// Threads of the async runtime. Default: 1 for `worker`, one per CPU for `relay` (the
    /// settings their benchmarks measure).
    #[arg(long, global = true, env = "FERRY_RUNTIME_THREADS")]
    runtime_threads: Option<NonZeroUsize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a PostgreSQL outbox table to Kafka.
    Relay(Box<crate::relay::RelayArgs>),
    /// Deliver Kafka records to a service over HTTP.
    Worker(Box<crate::worker::config::WorkerArgs>),
    /// Replay an EventConsumer's dead letters (the Job of an EventReplay).
    DlqReplay(Box<crate::dlq::job::ReplayJobArgs>),
    /// Check event fixtures against an EventTopic's schema (for a service's own CI).
    Contract(crate::contract::ContractArgs),
}

impl Cli {
    /// The runtime the chosen subcommand runs on: multi-threaded even with one thread, since
    /// the worker blocks in place for its synchronous commits (a current-thread runtime
    /// cannot).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let threads = self.runtime_threads.or(match self.command {
            Command::Worker(_) => Some(WORKER_RUNTIME_THREADS),
            Command::Relay(_) | Command::DlqReplay(_) | Command::Contract(_) => None,
        });
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if let Some(n) = threads {
            builder.worker_threads(n.get());
        }
        builder.build()
    }

    /// Runs the chosen subcommand to completion; the exit code says how it ended.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Relay(args) => {
                args.log.init();
                let _tracing = args
                    .trace
                    .init("ferry-relay", ferry_common::otel::Spans::Linked)?;
                crate::relay::run(*args, ferry_common::shutdown::signal()).await?;
            }
            Command::Worker(args) => {
                args.log.init();
                let _tracing = args
                    .trace
                    .init("ferry-worker", ferry_common::otel::Spans::Small)?;
                crate::worker::run(*args, ferry_common::shutdown::signal()).await?;
            }
            Command::DlqReplay(args) => {
                args.log.init();
                crate::dlq::job::run(*args).await?;
            }
            Command::Contract(args) => return Ok(args.run()),
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(threads: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([
            "ferry-sidecar",
            "worker",
            threads,
            "--topics=t",
            "--group=g",
            "--target-url=http://127.0.0.1:1/",
            "--dead-letter-topic=d",
            "--kafka-bootstrap=127.0.0.1:1",
        ])
    }

    #[test]
    fn runtime_threads_is_global_and_refuses_zero() {
        let cli = parse("--runtime-threads=3").expect("parses");
        assert_eq!(cli.runtime_threads, NonZeroUsize::new(3));
        let zero = parse("--runtime-threads=0").expect_err("zero threads accepted");
        assert_eq!(zero.kind(), clap::error::ErrorKind::ValueValidation);
    }
}
