//! Setting poison rows aside: a copy on the dead-letter topic (`--dead-letter-topic`), or the
//! reason in the row's `publish_error` column; never a row dropped while it is the only copy.
//!
//! The copy keeps the row's key and payload and says why in `ferry-*` headers
//! ([`copy_headers`]). A row too large for Kafka ([`Reason::keeps_row`]) gets a copy without
//! its payload (a notice naming the table and row id) and is kept, marked failed. A copy that
//! cannot be written *yet* holds its row's key and is tried again; only a copy refused for
//! good marks the row failed. Kafka refuses a batch of copies whole, like any batch, so copies
//! of a refused batch are re-sent alone before any is called refused ([`settle`] is the pure
//! decision; [`DeadLetters::set_aside`] the Kafka side).

use std::time::Instant;

use ferry_common::headers;
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};

use super::{
    batch::{BatchOutcome, SetAside},
    failure::{Failure, Reason, classify, classify_send},
    order::Holds,
    record::Poisoned,
};

/// How a poison row's dead-letter copy fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copy {
    /// Kafka confirmed it.
    Written,
    /// Kafka refused it; `permanent` when it was refused alone for a reason that will not
    /// pass (too large, invalid), else it may pass (topic not there yet, broker away).
    Refused {
        /// What Kafka said.
        error: String,
        /// Whether it can never be written.
        permanent: bool,
    },
}

impl Copy {
    /// A refusal of a copy sent alone (`send()` failed at once, or a re-send of one copy).
    pub fn refused_alone(error: &KafkaError, dead_letter_topic: &str) -> Self {
        Copy::Refused {
            error: error.to_string(),
            permanent: matches!(classify_send(error, dead_letter_topic), Failure::Poison(_)),
        }
    }
}

/// What becomes of a poison row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Its copy is on the dead-letter topic: mark it published.
    DeadLettered,
    /// Mark it failed with this text in `publish_error` (it stays in the table).
    Failed(String),
    /// Hold its key and try again later.
    Hold,
}

/// What becomes of a poison row for `reason` whose copy fared as `copy` (`None`: no copy was
/// written, there is no dead-letter topic); `can_mark_failed` says whether the table has a
/// `publish_error` column.
pub fn settle(
    reason: &Reason,
    copy: Option<&Copy>,
    dead_letter_topic: &str,
    can_mark_failed: bool,
) -> Settle {
    match copy {
        None if can_mark_failed => Settle::Failed(reason.to_string()),
        None => Settle::Hold,
        Some(Copy::Written) if reason.keeps_row() => Settle::Failed(format!(
            "{reason}; the row is kept: its copy on the dead-letter topic {dead_letter_topic} carries no payload"
        )),
        Some(Copy::Written) => Settle::DeadLettered,
        Some(Copy::Refused {
            error,
            permanent: true,
        }) if can_mark_failed => Settle::Failed(format!(
            "{reason}; the dead-letter topic {dead_letter_topic} refused it: {error}"
        )),
        Some(Copy::Refused { .. }) => Settle::Hold,
    }
}

/// The `ferry-*` headers of a poison row's dead-letter copy; `table` is the outbox table.
pub fn copy_headers(p: &Poisoned, table: &str) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (headers::ERROR, p.reason.to_string()),
        (headers::ERROR_KIND, p.reason.label().to_owned()),
        (headers::OUTBOX_ID, p.id.to_string()),
        (headers::OUTBOX_TABLE, table.to_owned()),
    ];
    if let Some(topic) = &p.topic {
        out.push((headers::ORIGINAL_TOPIC, topic.clone()));
    }
    if let Some(event_id) = &p.event_id {
        out.push((headers::EVENT_ID, event_id.clone()));
    }
    out
}

/// Where poison rows go.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    /// `--dead-letter-topic`, if set.
    topic: Option<String>,
    /// The outbox table, named in the copies.
    table: String,
}

impl DeadLetters {
    /// Poison rows of `table` go to `topic`, or without one to `publish_error`.
    pub fn new(topic: Option<String>, table: String) -> Self {
        Self { topic, table }
    }

    /// Sets `poisoned` aside through `producer` and records in `outcome` what became of each;
    /// a row that cannot be set aside now holds its key in `holds`.
    pub async fn set_aside(
        &self,
        producer: &FutureProducer,
        poisoned: Vec<Poisoned>,
        holds: &mut Holds,
        can_mark_failed: bool,
        outcome: &mut BatchOutcome,
    ) {
        let now = Instant::now();
        let Some(dlt) = self.topic.as_deref() else {
            for p in poisoned {
                let decision = settle(&p.reason, None, "", can_mark_failed);
                apply(p, decision, None, holds, outcome, now);
            }
            return;
        };
        let mut sent = Vec::new();
        for p in poisoned {
            if p.reason.keeps_row() && !can_mark_failed {
                tracing::warn!(
                    outbox_id = p.id,
                    "a row too large for Kafka is the only copy of its payload and the table has no publish_error column to set it aside; holding its key"
                );
                outcome.hold_poison(p, holds, now);
                continue;
            }
            match self.send(producer, dlt, &p) {
                Ok(delivery) => sent.push((p, delivery)),
                Err(e) => {
                    let copy = Copy::refused_alone(&e, dlt);
                    self.settle(p, copy, dlt, can_mark_failed, holds, outcome, now);
                }
            }
        }
        let (rows, deliveries): (Vec<_>, Vec<_>) = sent.into_iter().unzip();
        let reports = futures::future::join_all(deliveries).await;
        let now = Instant::now();
        let mut suspects = Vec::new();
        for (p, report) in rows.into_iter().zip(reports) {
            let copy = match report {
                Ok(Ok(_)) => Copy::Written,
                Ok(Err((e, _))) => match classify(&e, dlt) {
                    // The batch of copies was refused: this copy may be fine alone.
                    Failure::Suspect(_) => {
                        suspects.push(p);
                        continue;
                    }
                    _ => Copy::Refused {
                        error: e.to_string(),
                        permanent: false,
                    },
                },
                Err(_) => Copy::Refused {
                    error: "producer dropped the delivery".into(),
                    permanent: false,
                },
            };
            self.settle(p, copy, dlt, can_mark_failed, holds, outcome, now);
        }
        if !suspects.is_empty() {
            tracing::info!(
                rows = suspects.len(),
                dead_letter_topic = dlt,
                "Kafka refused a batch of dead-letter copies; re-sending them alone"
            );
        }
        for p in suspects {
            let copy = match self.send(producer, dlt, &p) {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Copy::Written,
                    Ok(Err((e, _))) => Copy::refused_alone(&e, dlt),
                    Err(_) => Copy::Refused {
                        error: "producer dropped the delivery".into(),
                        permanent: false,
                    },
                },
                Err(e) => Copy::refused_alone(&e, dlt),
            };
            self.settle(
                p,
                copy,
                dlt,
                can_mark_failed,
                holds,
                outcome,
                Instant::now(),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        p: Poisoned,
        copy: Copy,
        dlt: &str,
        can_mark_failed: bool,
        holds: &mut Holds,
        outcome: &mut BatchOutcome,
        now: Instant,
    ) {
        let decision = settle(&p.reason, Some(&copy), dlt, can_mark_failed);
        apply(p, decision, Some((&copy, dlt)), holds, outcome, now);
    }

    fn send(
        &self,
        producer: &FutureProducer,
        dlt: &str,
        p: &Poisoned,
    ) -> std::result::Result<DeliveryFuture, KafkaError> {
        let fields = copy_headers(p, &self.table);
        let mut headers = OwnedHeaders::new_with_capacity(fields.len());
        for (key, value) in &fields {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(dlt).headers(headers);
        // A record too large for its topic is too large here too: the copy carries the
        // reason and the row's table and id, and the row keeps the payload.
        if let (Some(payload), false) = (&p.payload, p.reason.keeps_row()) {
            record = record.payload(payload);
        }
        if let Some(key) = &p.key {
            record = record.key(key);
        }
        producer.send_result(record).map_err(|(e, _)| e)
    }
}

/// Records `decision` for `p` in `outcome` (or holds its key). A copy that will be tried
/// again is logged here (WARN: nothing is lost); rows set aside are logged and counted with
/// the batch's outcome (`metrics.rs`).
fn apply(
    p: Poisoned,
    decision: Settle,
    copy: Option<(&Copy, &str)>,
    holds: &mut Holds,
    outcome: &mut BatchOutcome,
    now: Instant,
) {
    match decision {
        Settle::DeadLettered => outcome.dead_lettered.push(SetAside::from(&p)),
        Settle::Failed(text) => outcome.failed.push((SetAside::from(&p), text)),
        Settle::Hold => {
            if let Some((Copy::Refused { error, permanent }, dlt)) = copy {
                tracing::warn!(outbox_id = p.id, dead_letter_topic = dlt, %error, permanent, "dead-letter write failed; holding the key and retrying");
            }
            outcome.hold_poison(p, holds, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::order::KeyId;

    fn poisoned(reason: Reason) -> Poisoned {
        Poisoned {
            id: 7,
            key_id: KeyId::new(Some("t"), Some("\"k\"")),
            topic: Some("t".into()),
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            event_id: Some("ev".into()),
            reason,
        }
    }

    #[test]
    fn a_copy_names_the_reason_the_row_and_where_it_was_going() {
        let h = copy_headers(&poisoned(Reason::MissingTopic), "shop.outbox");
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ferry-error-kind"), Some("missing_topic"));
        assert_eq!(get("ferry-outbox-id"), Some("7"));
        assert_eq!(get("ferry-outbox-table"), Some("shop.outbox"));
        assert_eq!(get("ferry-original-topic"), Some("t"));
        assert_eq!(get("ferry-event-id"), Some("ev"));
        assert!(get("ferry-error").is_some_and(|e| e.contains("missing topic")));
        let mut unknown = poisoned(Reason::NotEnvelope("x".into()));
        unknown.topic = None;
        unknown.event_id = None;
        assert_eq!(copy_headers(&unknown, "outbox").len(), 4);
    }

    #[test]
    fn a_written_copy_settles_the_row_unless_it_is_the_only_copy() {
        let invalid = Reason::Invalid("x".into());
        let too_large = Reason::TooLarge("x".into());
        assert_eq!(
            settle(&invalid, Some(&Copy::Written), "dlt", true),
            Settle::DeadLettered
        );
        assert!(matches!(
            settle(&too_large, Some(&Copy::Written), "dlt", true),
            Settle::Failed(text) if text.contains("the row is kept")
        ));
    }

    #[test]
    fn only_a_copy_refused_for_good_marks_the_row_failed() {
        let invalid = Reason::Invalid("x".into());
        let refused = |permanent| Copy::Refused {
            error: "no".into(),
            permanent,
        };
        assert!(matches!(
            settle(&invalid, Some(&refused(true)), "dlt", true),
            Settle::Failed(text) if text.contains("the dead-letter topic dlt refused it")
        ));
        assert_eq!(
            settle(&invalid, Some(&refused(true)), "dlt", false),
            Settle::Hold,
            "without publish_error the row waits"
        );
        assert_eq!(
            settle(&invalid, Some(&refused(false)), "dlt", true),
            Settle::Hold
        );
    }

    #[test]
    fn without_a_dead_letter_topic_the_row_is_marked_failed_or_waits() {
        assert_eq!(
            settle(&Reason::MissingTopic, None, "", true),
            Settle::Failed(Reason::MissingTopic.to_string())
        );
        assert_eq!(settle(&Reason::MissingTopic, None, "", false), Settle::Hold);
    }

    #[test]
    fn a_refused_batch_of_copies_is_not_a_refusal_of_each_copy() {
        use rdkafka::error::RDKafkaErrorCode as C;
        let batch_refused = KafkaError::MessageProduction(C::MessageSizeTooLarge);
        assert!(
            matches!(classify(&batch_refused, "dlt"), Failure::Suspect(_)),
            "a report of a batch refusal is re-sent alone"
        );
        assert_eq!(
            Copy::refused_alone(&batch_refused, "dlt"),
            Copy::Refused {
                error: batch_refused.to_string(),
                permanent: true
            },
            "refused alone, it is for good"
        );
        let away = KafkaError::MessageProduction(C::MessageTimedOut);
        assert!(matches!(
            Copy::refused_alone(&away, "dlt"),
            Copy::Refused {
                permanent: false,
                ..
            }
        ));
    }
}
