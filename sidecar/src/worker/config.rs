//! The worker's command line (DESIGN §9a): every flag also reads a `FERRY_*` variable, so the
//! operator's Deployment, the chart and a person at a shell configure the worker the same way.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};
use ferry_common::{kafka::KafkaArgs, otel::TraceArgs, telemetry::LogArgs};

/// `--max-in-flight` default: DESIGN §2's example `maxInFlight: 64`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// `--max-connections` default: a service seldom serves more requests at once than this (a
/// Django pod runs a few workers), and each open HTTP/1.1 connection costs tens of KiB.
/// `make bench-worker`, ordering=key at --max-in-flight 1000, one runtime thread, two runs each:
/// 64 connections 20,900-26,200 events/s at peak RSS 27.6-28.1 MiB; 96: 18,700-27,200 at
/// 28.7-30.2 MiB; 128: 19,200-29,900 at 31.0-31.4 MiB (DESIGN §10: ≤ 30 MiB).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// `--metrics-addr` default: every interface (the kubelet probes the pod IP), port 9090 — the
/// worker's port since its first version (it appears in no design text); kept apart from the
/// relay's `DEFAULT_METRICS_ADDR` (9464) so a pod running both sidecars serves both.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9090";

/// How records may be delivered concurrently (DESIGN §5 "Ordering").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ordering {
    /// One record at a time per partition.
    Partition,
    /// Parallel across keys, strictly in order within a key (null keys are unordered).
    Key,
    /// Parallel up to `--max-in-flight`, no order.
    Unordered,
}

/// Where to start when the group has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartFrom {
    Earliest,
    Latest,
}

impl StartFrom {
    /// librdkafka's `auto.offset.reset` value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// `ferry-sidecar worker` flags.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Topics to consume, comma-separated.
    #[arg(long, env = "FERRY_TOPICS", value_delimiter = ',', required = true)]
    pub topics: Vec<String>,

    /// Consumer group id; also names the retry topics and scopes de-duplication.
    #[arg(long, env = "FERRY_GROUP")]
    pub group: String,

    /// Where each event is POSTed as a CloudEvent (binary content mode).
    #[arg(long, env = "FERRY_TARGET_URL")]
    pub target_url: String,

    /// Join the consumer group only once the target accepts TCP connections: an injected
    /// worker starts before the service in its pod, and deliveries to a service still booting
    /// would use up their retries.
    #[arg(long, env = "FERRY_WAIT_FOR_TARGET")]
    pub wait_for_target: bool,

    /// Delivery order guarantee.
    #[arg(long, env = "FERRY_ORDERING", default_value = "key")]
    pub ordering: Ordering,

    /// Most deliveries at once; also bounds the records read but not yet committed, so a crash
    /// redelivers at most this many.
    #[arg(long, env = "FERRY_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Most requests on the wire to the service at once, and so about as many keep-alive
    /// connections; deliveries beyond it wait for one (`--max-in-flight` still counts them).
    /// Raise it towards `--max-in-flight` for a slow service that serves many in parallel.
    #[arg(long, env = "FERRY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Timeout of one HTTP delivery (DESIGN §2's example `timeout: 10s`).
    #[arg(long, env = "FERRY_TIMEOUT", default_value = "10s", value_parser = ferry_common::duration::parse)]
    pub timeout: Duration,

    /// In-process delivery attempts before a record moves to the first retry tier
    /// (DESIGN §2's example `attempts: 3`).
    #[arg(long, env = "FERRY_RETRY_ATTEMPTS", default_value_t = 3)]
    pub retry_attempts: u32,

    /// First in-process backoff (DESIGN §2's example `initial: 200ms`).
    #[arg(long, env = "FERRY_RETRY_BACKOFF_INITIAL", default_value = "200ms", value_parser = ferry_common::duration::parse)]
    pub retry_backoff_initial: Duration,

    /// Longest in-process backoff (DESIGN §2's example `max: 10s`).
    #[arg(long, env = "FERRY_RETRY_BACKOFF_MAX", default_value = "10s", value_parser = ferry_common::duration::parse)]
    pub retry_backoff_max: Duration,

    /// Retry tiers, comma-separated delays (e.g. `5s,1m,10m`); one topic each,
    /// `<topic>.<group>.retry.<delay>`. Empty: failures go straight to the dead-letter topic.
    #[arg(long, env = "FERRY_RETRY_DELAYS", value_delimiter = ',', value_parser = parse_delay)]
    pub retry_delays: Vec<Delay>,

    /// Dead-letter topic for permanent failures, poison records and exhausted retries.
    #[arg(long, env = "FERRY_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: String,

    /// A directory of event contracts, `<kafka topic>.json` each (what the relay's
    /// `--contracts-dir` reads; the EventConsumer's `validate`): a record whose `data` breaks
    /// its topic's contract goes to the dead-letter topic, every violation's path in the
    /// reason, and is not delivered. Read again every few seconds.
    #[arg(long, env = "FERRY_CONTRACTS_DIR")]
    pub contracts_dir: Option<std::path::PathBuf>,

    /// PostgreSQL DSN of the de-duplication store; unset: no de-duplication.
    #[arg(long, env = "FERRY_IDEMPOTENCY_DATABASE_URL", hide_env_values = true)]
    pub idempotency_database_url: Option<ferry_common::redact::Redacted>,

    /// How long delivered event ids are remembered (DESIGN §2's example `window: 7d`).
    #[arg(long, env = "FERRY_IDEMPOTENCY_WINDOW", default_value = "7d", value_parser = ferry_common::duration::parse)]
    pub idempotency_window: Duration,

    /// Where a group without committed offsets starts.
    #[arg(long, env = "FERRY_START_FROM", default_value = "earliest")]
    pub start_from: StartFrom,

    /// How long in-flight work may finish after a revocation or SIGTERM before it is
    /// abandoned; below Kubernetes' default 30 s grace period.
    #[arg(long, env = "FERRY_DRAIN_TIMEOUT", default_value = "20s", value_parser = ferry_common::duration::parse)]
    pub drain_timeout: Duration,

    /// How long one attempt at reading a main partition's retry tiers back after an
    /// assignment (ordered retries) may take before it yields and is resumed where it
    /// stopped. Hidden: a test knob, the default suits every tier size.
    #[arg(long, env = "FERRY_TIER_SCAN_TIMEOUT", default_value = "30s", value_parser = ferry_common::duration::parse, hide = true)]
    pub tier_scan_timeout: Duration,

    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Tracing settings (off unless an OTLP endpoint is set).
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// One retry tier's delay, kept with its text so topic names show what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delay {
    /// As written, e.g. `5s`; the suffix of the tier's topic name.
    pub label: String,
    /// How long a record waits in the tier before its next attempt.
    pub duration: Duration,
}

fn parse_delay(s: &str) -> Result<Delay, ferry_common::duration::Error> {
    let label = s.trim().to_owned();
    let duration = ferry_common::duration::parse(&label)?;
    Ok(Delay { label, duration })
}

/// Flag parsing for unit tests of the modules that read `WorkerArgs`.
#[cfg(test)]
pub mod testing {
    use clap::Parser;

    use super::WorkerArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerArgs,
    }

    /// The worker's flags from `argv` (after the program name).
    pub fn parse(argv: &[&str]) -> Result<WorkerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("w").chain(argv.iter().copied())).map(|c| c.worker)
    }

    /// The least flags a worker starts with, plus `extra`.
    pub fn minimal(extra: &[&str]) -> WorkerArgs {
        let mut argv = vec![
            "--topics=a",
            "--group=g",
            "--target-url=http://x/events",
            "--dead-letter-topic=dlq",
            "--kafka-bootstrap=b:9092",
        ];
        argv.extend_from_slice(extra);
        parse(&argv).expect("valid flags")
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::parse, *};

    #[test]
    fn parses_the_designs_flags() {
        let w = parse(&[
            "--topics=a,b",
            "--group=g",
            "--target-url=http://x/events",
            "--retry-delays=5s,1m,10m",
            "--dead-letter-topic=dlq",
            "--kafka-bootstrap=b:9092",
            "--ordering=unordered",
        ])
        .expect("valid flags");
        assert_eq!(w.topics, ["a", "b"]);
        assert_eq!(w.ordering, Ordering::Unordered);
        assert_eq!(w.retry_delays.len(), 3);
        assert_eq!(w.retry_delays[1].label, "1m");
        assert_eq!(w.retry_delays[2].duration, Duration::from_secs(600));
        assert_eq!(w.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(w.timeout, Duration::from_secs(10));
    }

    #[test]
    fn refuses_a_bad_delay() {
        assert!(
            parse(&[
                "--topics=a",
                "--group=g",
                "--target-url=http://x",
                "--dead-letter-topic=d",
                "--kafka-bootstrap=b",
                "--retry-delays=soon",
            ])
            .is_err()
        );
    }
}
