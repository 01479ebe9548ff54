//! Logging set-up shared by every binary: structured JSON lines on stderr (what a log pipeline in
//! a cluster wants), or human-readable text for a person at a terminal.

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Logging flags every binary flattens into its command line.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long = "log-format", env = "FERRY_LOG_FORMAT", default_value = "json")]
    pub format: LogFormat,

    /// Which levels to log, in `tracing`'s EnvFilter syntax (e.g. `info,ferry_sidecar=debug`).
    #[arg(long = "log-level", env = "FERRY_LOG", default_value = "info")]
    pub filter: String,
}

impl LogArgs {
    /// Installs the global subscriber; call once, at start-up.
    pub fn init(&self) {
        let filter = EnvFilter::try_new(&self.filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        // A second call (as in tests) keeps the first subscriber; that is fine.
        let _ = match self.format {
            LogFormat::Json => builder.json().flatten_event(true).try_init(),
            LogFormat::Text => builder.try_init(),
        };
    }
}
