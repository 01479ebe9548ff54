//! Why the relay stops or restarts a session: the one error type of every relay module, kept
//! beside them so each imports it from `super::error`, never from the module root.

/// Why the relay stopped or restarted a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("PostgreSQL statement failed: {0}")]
    Database(#[source] tokio_postgres::Error),
    #[error(
        "outbox table {0:?} does not exist (check --outbox-table and the search_path); docs/outbox.md has the SQL"
    )]
    NoTable(String),
    #[error(
        "outbox table {table} is missing column(s): {missing}; docs/outbox.md has the expected shape"
    )]
    MissingColumns { table: String, missing: String },
    #[error(
        "outbox table {0} has no publish_error column, needed to mark poison rows failed without a --dead-letter-topic; add it (docs/outbox.md) or set --dead-letter-topic"
    )]
    NoErrorColumn(String),
    #[error(
        "outbox table {table} has column(s) of a type the relay cannot use: {wrong}; docs/outbox.md has the expected shape"
    )]
    ColumnTypes { table: String, wrong: String },
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    KafkaSettings(#[from] ferry_common::kafka::Error),
    #[error(transparent)]
    Telemetry(#[from] ferry_common::telemetry::server::Error),
    #[error("the leadership lock session ended")]
    LeadershipLost,
    #[error("the work session ended")]
    WorkSessionLost,
}

impl Error {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Connect(_) => "connect",
            Error::Database(_) => "database",
            Error::NoTable(_)
            | Error::MissingColumns { .. }
            | Error::ColumnTypes { .. }
            | Error::NoErrorColumn(_) => "table",
            Error::Producer(_) | Error::KafkaSettings(_) => "kafka",
            Error::Telemetry(_) => "telemetry",
            Error::LeadershipLost | Error::WorkSessionLost => "session",
        }
    }
}

/// The relay's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
