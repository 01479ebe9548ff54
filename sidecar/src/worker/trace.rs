//! The worker's part of a trace: one `process <topic>` span per delivery attempt, a child of
//! the record's `traceparent` header (the service's row's, which the relay copies as written;
//! else the envelope's `headers.traceparent`), whose own `traceparent` goes with the HTTP
//! request so the service's handler is its child. A retry in process, a copy to a retry tier
//! and dead-lettering are events on the attempt that led to them; a failed attempt's status is
//! an error.
//!
//! With tracing off nothing here runs but one atomic read per attempt, and the request carries
//! the `traceparent` [`super::delivery::traceparent`] chose.

use std::{sync::Arc, time::Duration};

use ferry_common::otel::{self, KeyValue, Kind, Span};
use rdkafka::Message as _;

use super::{finish::Finished, process::Job};

/// The span of attempt number `attempt` at delivering `job`; `kafka_header` and `envelope` are
/// the record's `traceparent` header and the envelope's, the parent in that order.
pub fn attempt(
    job: &Job,
    kafka_header: Option<&str>,
    envelope: Option<&str>,
    attempt: u32,
) -> Option<Span> {
    if !otel::enabled() {
        return None;
    }
    let parent = kafka_header
        .filter(|h| otel::parse_traceparent(h).is_some())
        .or(envelope);
    otel::start(
        format!("process {}", job.main_topic),
        Kind::Consumer,
        parent,
        || {
            let mut attributes = vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.destination.name", Arc::clone(&job.main_topic)),
                KeyValue::new(
                    "messaging.destination.partition.id",
                    job.origin.0.to_string(),
                ),
                KeyValue::new("messaging.kafka.offset", job.origin.1),
                KeyValue::new("ferry.attempt", i64::from(attempt)),
            ];
            // Read from a retry tier: where this copy was read, which the record's origin
            // above is not. A main-topic record's would repeat it, on every span.
            if job.tier.is_some() {
                attributes.extend([
                    KeyValue::new("messaging.kafka.source.topic", Arc::clone(&job.tp.0)),
                    KeyValue::new("ferry.read_offset", job.message.offset()),
                ]);
            }
            attributes
        },
    )
}

/// The attempt failed and is retried in process after `delay`.
pub fn retrying(span: Option<Span>, reason: &str, delay: Duration) {
    if let Some(mut span) = span {
        span.fail(reason.to_owned());
        span.event(
            "retry",
            vec![
                KeyValue::new("ferry.reason", reason.to_owned()),
                KeyValue::new("ferry.delay_ms", delay.as_millis() as i64),
            ],
        );
    }
}

/// The last attempt failed with `reason` and the record was settled as `finished`.
pub fn settled(span: Option<Span>, reason: &str, finished: &Finished) {
    let Some(mut span) = span else { return };
    span.fail(reason.to_owned());
    let (name, attributes) = match finished {
        Finished::Parked {
            tier, retry_topic, ..
        } => (
            "parked",
            vec![
                KeyValue::new("ferry.retry_tier", *tier as i64),
                KeyValue::new("ferry.retry_topic", retry_topic.clone()),
            ],
        ),
        Finished::DeadLettered {
            dead_letter_topic, ..
        }
        | Finished::Referenced {
            dead_letter_topic, ..
        } => (
            "dead_lettered",
            vec![KeyValue::new(
                "ferry.dead_letter_topic",
                dead_letter_topic.clone(),
            )],
        ),
        Finished::Lost { .. } => ("lost", Vec::new()),
        Finished::Delivered { .. }
        | Finished::Duplicate { .. }
        | Finished::Abandoned
        | Finished::Tombstone => ("abandoned", Vec::new()),
    };
    span.event(name, attributes);
}
