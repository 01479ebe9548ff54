//! How a record finished: the one place each outcome is logged and counted.
//!
//! The paths of [`super::process`] end in a [`Finished`], which carries what its log line
//! says; [`Finished::emit`] writes that line and counts the outcome in
//! `ferry_worker_processed_total` together, so a line and its count never drift apart. Levels:
//! DEBUG for a delivery (the common case), INFO for a duplicate skipped or a record moved to a
//! retry tier, WARN for a dead letter (handled, but someone may want to look), ERROR only for a
//! record that is lost from the worker's hands (no copy anywhere; a person must act).

use rdkafka::Message;

use super::{
    metrics::{Metrics, Outcome},
    process::Job,
};

/// How a record finished, with what the key-order bookkeeping needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Nothing left to do for it: delivered, duplicate or dead-lettered.
    Done(Outcome),
    /// It now waits in tier `tier`.
    Parked { tier: usize },
    /// Given up unfinished (revoked, or the worker stopped): the next owner redoes it.
    Abandoned,
}

/// How a record ended, with the details of its log line.
#[derive(Debug)]
pub enum Finished {
    /// The service answered 2xx.
    Delivered { attempts: u32 },
    /// Its event id was already delivered for this group.
    Duplicate { id: String },
    /// Copied to retry tier `tier` (topic `retry_topic`).
    Parked {
        tier: usize,
        retry_topic: String,
        attempts: u32,
        reason: String,
    },
    /// Copied to the dead-letter topic.
    DeadLettered {
        dead_letter_topic: String,
        attempts: u32,
        reason: String,
    },
    /// The dead-letter topic refused the record; a reference copy went there instead.
    Referenced {
        dead_letter_topic: String,
        attempts: u32,
        reason: String,
        copy_refused: String,
    },
    /// The dead-letter topic refused even the reference copy.
    Lost {
        dead_letter_topic: String,
        attempts: u32,
        reason: String,
        copy_refused: String,
        reference_refused: String,
    },
    /// Given up unfinished: revoked, or the worker stopped.
    Abandoned,
    /// A tombstone (no value): it only deletes its key's earlier records from a compacted
    /// topic and carries no event to deliver.
    Tombstone,
}

impl Finished {
    /// Logs the record's end, counts it, and says what the run loop needs of it.
    pub fn emit(self, job: &Job, metrics: &Metrics) -> Finish {
        let (topic, partition, offset) = (&*job.tp.0, job.tp.1, job.message.offset());
        // `id` is parsed again here, and only when the line is logged: the hot path (a
        // delivery, at DEBUG) pays nothing for it when DEBUG is off.
        let finish = match self {
            Self::Delivered { attempts } => {
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    id = job.event_id().as_deref(),
                    attempts,
                    "delivered"
                );
                Finish::Done(Outcome::delivered)
            }
            Self::Duplicate { id } => {
                tracing::info!(topic, partition, offset, id = %id, "duplicate skipped");
                Finish::Done(Outcome::duplicate)
            }
            Self::Parked {
                tier,
                retry_topic,
                attempts,
                reason,
            } => {
                tracing::info!(topic, partition, offset, id = job.event_id().as_deref(), retry_topic = %retry_topic, attempts, reason = %reason, "moved to retry tier");
                Finish::Parked { tier }
            }
            Self::DeadLettered {
                dead_letter_topic,
                attempts,
                reason,
            } => {
                tracing::warn!(topic, partition, offset, id = job.event_id().as_deref(), dead_letter_topic = %dead_letter_topic, attempts, reason = %reason, "dead-lettered");
                Finish::Done(Outcome::dead_lettered)
            }
            Self::Referenced {
                dead_letter_topic,
                attempts,
                reason,
                copy_refused,
            } => {
                tracing::warn!(topic, partition, offset, id = job.event_id().as_deref(), dead_letter_topic = %dead_letter_topic, attempts, reason = %reason, copy_refused = %copy_refused, "dead-lettered as a reference without the payload: the dead-letter topic refuses the record itself");
                Finish::Done(Outcome::referenced)
            }
            Self::Lost {
                dead_letter_topic,
                attempts,
                reason,
                copy_refused,
                reference_refused,
            } => {
                tracing::error!(topic, partition, offset, id = job.event_id().as_deref(), dead_letter_topic = %dead_letter_topic, attempts, reason = %reason, copy_refused = %copy_refused, reference_refused = %reference_refused, "given up: the dead-letter topic refuses even a reference copy; the record remains only in its own topic at this offset");
                Finish::Done(Outcome::lost)
            }
            Self::Tombstone => {
                tracing::debug!(topic, partition, offset, "tombstone skipped");
                Finish::Done(Outcome::tombstone)
            }
            Self::Abandoned => {
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    "abandoned: revoked or stopping; the next owner redoes it"
                );
                Finish::Abandoned
            }
        };
        metrics.processed(match finish {
            Finish::Done(outcome) => outcome,
            Finish::Parked { .. } => Outcome::retried,
            Finish::Abandoned => Outcome::abandoned,
        });
        finish
    }
}
