//! The relay's settings: every flag of `ferry-sidecar relay` (DESIGN §9a), each also read from
//! a `FERRY_*` variable so the injected sidecar, the chart and a person at a shell configure it
//! the same way. This struct is the user documentation of the relay.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use ferry_common::{kafka::KafkaArgs, otel::TraceArgs, telemetry::LogArgs};

/// The outbox table's name when `--outbox-table` is not given: the reference table of
/// docs/outbox.md (`CREATE TABLE outbox`). A Django model's table is `<app>_outbox` unless its
/// `db_table` says `outbox`, so Django projects usually set the flag.
pub const DEFAULT_OUTBOX_TABLE: &str = "outbox";

/// Rows per batch (two pipelined chunks of 500). 1,000 keeps a batch well inside librdkafka's
/// default producer queue (`queue.buffering.max.messages` = 100,000) and one
/// `UPDATE .. WHERE id = ANY($1)` small, while amortising the round trips enough for the
/// 50,000 rows/s target (DESIGN §10).
pub const DEFAULT_BATCH_SIZE: u32 = 1_000;

/// The largest batch accepted: a tenth of librdkafka's default producer queue, so a batch (and
/// its dead-letter copies) always fits in the queue without `QueueFull`.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// How long an idle relay waits between polls of an empty table. One second bounds the
/// latency of the first row after a quiet period to about a second (use `--notify` for less),
/// at one cheap index probe per second on the service's database.
pub const DEFAULT_IDLE_POLL_INTERVAL: &str = "1s";

/// Where `/healthz`, `/readyz` and `/metrics` listen; the port the chart's pod template and
/// Prometheus annotations use for the sidecar.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";

/// Settings of `ferry-sidecar relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// PostgreSQL DSN of the service's own database, which holds the outbox table.
    #[arg(long, env = "FERRY_DATABASE_URL", hide_env_values = true)]
    pub database_url: ferry_common::redact::Redacted,

    /// The outbox table, optionally schema-qualified (`shop.outbox`); resolved with the
    /// session's `search_path` like any SQL name.
    #[arg(long, env = "FERRY_OUTBOX_TABLE", default_value = DEFAULT_OUTBOX_TABLE)]
    pub outbox_table: String,

    /// Topic that receives rows that can never be published (not an envelope, missing or
    /// unknown topic, denied, too large), with the reason in a `ferry-error` header. Without it
    /// such rows are marked failed in the table's `publish_error` column instead.
    #[arg(long, env = "FERRY_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,

    /// A directory of event contracts, `<kafka topic>.json` each (an EventTopic's
    /// `spec.schema`, inline: `{"jsonSchema": {...}, "event": "..."}`): a row whose `data`
    /// breaks its topic's contract is poison (`schema_violation`, every violation's path in the
    /// reason). Read again every few seconds, so a changed schema needs no restart.
    #[arg(long, env = "FERRY_CONTRACTS_DIR")]
    pub contracts_dir: Option<std::path::PathBuf>,

    /// The most rows sent to Kafka and not yet marked, so the most a crash re-publishes.
    /// The relay reads and publishes chunks of half of it: one chunk is marked while the
    /// next is in Kafka.
    #[arg(
        long,
        env = "FERRY_OUTBOX_BATCH_SIZE",
        default_value_t = DEFAULT_BATCH_SIZE,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE))
    )]
    pub batch_size: u32,

    /// The longest wait between polls once the table is empty (polling backs off to it, and
    /// starts again at once when a batch comes back full), e.g. `1s`, `250ms`.
    #[arg(
        long,
        env = "FERRY_OUTBOX_IDLE_POLL_INTERVAL",
        default_value = DEFAULT_IDLE_POLL_INTERVAL,
        value_parser = ferry_common::duration::parse
    )]
    pub idle_poll_interval: Duration,

    /// Also wake up on `NOTIFY ferry_outbox` (the opt-in trigger in docs/outbox.md). Off by
    /// default: NOTIFY takes an instance-wide lock at commit, which can slow a busy database.
    #[arg(long, env = "FERRY_OUTBOX_NOTIFY")]
    pub notify: bool,

    /// Delete rows as soon as they are published instead of setting `published_at` (less MVCC
    /// churn; the table only ever holds the backlog).
    #[arg(
        long,
        env = "FERRY_OUTBOX_DELETE_PUBLISHED",
        conflicts_with = "published_retention"
    )]
    pub delete_published: bool,

    /// Delete rows whose `published_at` is older than this (e.g. `7d`); without it (and
    /// without `--delete-published`) published rows stay, as with the plain Django model.
    #[arg(
        long,
        env = "FERRY_OUTBOX_PUBLISHED_RETENTION",
        value_parser = ferry_common::duration::parse
    )]
    pub published_retention: Option<Duration>,

    /// Address of the `/healthz`, `/readyz` and `/metrics` server.
    #[arg(long, env = "FERRY_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,

    /// Kafka connection settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Logging settings.
    #[command(flatten)]
    pub log: LogArgs,

    /// Tracing settings (off unless an OTLP endpoint is set).
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// What happens to a row once it is in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposal {
    /// Set `published_at = now()` and keep the row (the Django default).
    Mark,
    /// Set `published_at`, and delete rows older than the retention.
    MarkThenDelete(Duration),
    /// Delete the row at once.
    Delete,
}

impl RelayArgs {
    /// How published rows leave the table.
    pub fn disposal(&self) -> Disposal {
        match (self.delete_published, self.published_retention) {
            (true, _) => Disposal::Delete,
            (false, Some(age)) => Disposal::MarkThenDelete(age),
            (false, None) => Disposal::Mark,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }

    fn parse(extra: &[&str]) -> Result<RelayArgs, clap::Error> {
        let base = [
            "relay",
            "--database-url=postgresql://u@h/db",
            "--kafka-bootstrap=b:9092",
        ];
        Cli::try_parse_from(base.iter().chain(extra.iter()).copied()).map(|c| c.relay)
    }

    #[test]
    fn defaults_follow_the_design() {
        let args = parse(&[]).expect("valid");
        assert_eq!(args.outbox_table, DEFAULT_OUTBOX_TABLE);
        assert_eq!(args.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(args.idle_poll_interval, Duration::from_secs(1));
        assert_eq!(args.disposal(), Disposal::Mark);
        assert!(!args.notify);
    }

    #[test]
    fn durations_and_disposal_parse() {
        let args = parse(&["--idle-poll-interval=250ms", "--published-retention=7d"]).expect("ok");
        assert_eq!(args.idle_poll_interval, Duration::from_millis(250));
        assert_eq!(
            args.disposal(),
            Disposal::MarkThenDelete(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse(&["--delete-published"]).expect("ok").disposal(),
            Disposal::Delete
        );
    }

    #[test]
    fn contradictions_and_out_of_range_values_are_refused() {
        assert!(parse(&["--delete-published", "--published-retention=1h"]).is_err());
        assert!(parse(&["--batch-size=0"]).is_err());
        assert!(parse(&["--batch-size=10001"]).is_err());
        assert!(parse(&["--idle-poll-interval=soon"]).is_err());
    }
}
