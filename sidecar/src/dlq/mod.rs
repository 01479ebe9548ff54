//! Dead letters read and replayed: one implementation for `kubectl ferry` (the plugin) and
//! for `ferry-sidecar dlq-replay` (the Job the operator runs for an EventReplay, issue #18).
//!
//! ```text
//!  dead-letter topic ─scan─▶ DeadLetter ─filter─▶ selected ─plan(ledger)─▶ sends ─send─▶ tier
//! ```
//!
//! Pure: [`dead_letter`] (one record), [`filter`], [`replay::plan`], [`ledger`] (what was
//! replayed). Shells: [`scan`] (read a dead-letter topic once), [`replay::send`], [`job`].

pub mod dead_letter;
mod error;
pub mod filter;
pub mod job;
pub mod ledger;
pub mod replay;
pub mod scan;
pub mod target;

pub use error::{Error, Result};
