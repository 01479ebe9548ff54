//! The outbox relay (`ferry-sidecar relay`): publishes a PostgreSQL outbox table to Kafka
//! without loss and in key order (DESIGN §4).
//!
//! ```text
//!   service tx ──INSERT──▶ outbox table ──fetch (published_at IS NULL, id order)──▶ relay
//!                               ▲                                                  │ produce
//!                               └──── mark / delete exactly the delivered rows ◀───┘ (acks=all)
//! ```
//!
//! Every relay first checks the table's shape ([`outbox::inspect`]), then competes for the
//! table's advisory lock ([`leader`]); the winner ([`leading`]) publishes chunk after chunk
//! ([`publish::Publisher`]), reading the next and marking the previous one on two database
//! sessions while a chunk is in Kafka ([`pipeline`]), as the others stand by, ready to take
//! over. A row becomes a record in [`record`]; a batch's rows are gated, sent and settled in
//! [`batch`] (per-key order and held keys in [`order`], what a topic takes in [`topics`], what
//! an error means in [`failure`]); poison rows are set aside in [`dead_letter`]. The polling
//! rhythm is [`pacing`], the telemetry [`metrics`] and
//! [`trace`] (a span per record). Shutdown is an argument ([`run`]): when
//! it completes, the chunk in flight is finished and every delivered row is marked.
//!
//! This file only wires: every submodule imports its [`Error`] from [`error`], beside it.

pub mod batch;
pub mod canonical;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod failure;
pub mod housekeeping;
pub mod leader;
mod leading;
pub mod metrics;
pub mod order;
pub mod outbox;
pub mod pacing;
pub mod pipeline;
pub mod publish;
pub mod record;
mod run;
pub mod session;
pub mod topics;
pub mod trace;

pub use config::RelayArgs;
pub use error::{Error, Result};
pub use run::run;
