//! The relay's part of a trace: one `send <topic>` span per record it publishes, a child of
//! the `traceparent` the service wrote with its row (column `headers`, else the envelope's
//! `headers`; a new trace when there is none), from the moment the record is handed to the
//! producer until Kafka's delivery report is in. The record's `traceparent` header then
//! carries this span's context, so the worker's span is its child.
//!
//! With tracing off nothing here runs but one atomic read per record, and the header stays the
//! row's as written.

use ferry_common::otel::{self, KeyValue, Kind};

use super::{
    record::{Prepared, TRACEPARENT},
    topics::RecordSize,
};

/// Starts `p`'s span (unless it has one, as on a re-send) and points its `traceparent` header
/// at it; the span ends when `p` is dropped, once its fate is settled.
pub fn start(p: &mut Prepared) {
    if p.span.is_some() {
        return;
    }
    let at = p.headers.iter().position(|(k, _)| k == TRACEPARENT);
    let parent = at.and_then(|i| std::str::from_utf8(&p.headers[i].1).ok());
    let Some(span) = otel::start(format!("send {}", p.topic), Kind::Producer, parent, || {
        vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", p.topic.clone()),
            KeyValue::new(
                "messaging.message.id",
                p.event_id.clone().unwrap_or_default(),
            ),
            KeyValue::new("ferry.outbox.id", p.id),
        ]
    }) else {
        return;
    };
    let traceparent = span.traceparent().into_bytes();
    match at {
        Some(i) => p.headers[i].1 = traceparent,
        None => {
            p.headers.push((TRACEPARENT.into(), traceparent));
            p.size = RecordSize::of(
                p.key.as_deref(),
                p.payload.as_deref().unwrap_or_default(),
                &p.headers,
            );
        }
    }
    p.span = Some(span);
}

/// Marks `p`'s span failed (it ends when `p` is dropped or set aside).
pub fn fail(p: &mut Prepared, what: &'static str) {
    if let Some(span) = &mut p.span {
        span.fail(what);
    }
}
