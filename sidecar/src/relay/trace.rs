//! The relay's part of a trace: one `send` span per batch it publishes, from the first send to
//! the last row set aside, linked to each record's creation context — the `traceparent` the
//! service wrote with its row (column `headers`, else the envelope's `headers`) — as
//! OpenTelemetry's messaging conventions ask of a batch sender. Each record keeps that
//! `traceparent` in its Kafka header as written, so the worker's span is a child of the
//! service's: one trace from the commit to the handler, with the relay's span linked to it.
//!
//! Why not a span per record, as a child of the row's: with every row traced it cost the relay
//! a third of its drain rate on the benchmark (`bench/README.md`, "Tracing cost"); a link costs
//! a parse and forty bytes.
//!
//! With tracing off nothing here runs but one atomic read per batch.

use ferry_common::otel::{self, KeyValue, Kind, Span};

use super::{
    batch::BatchOutcome,
    record::{Prepared, TRACEPARENT},
};

/// Starts the span of a batch about to send `rows`, linked to each row's `traceparent`.
pub fn start(rows: &[Prepared]) -> Option<Span> {
    let mut topics = rows.iter().map(|p| p.topic.as_str());
    let first = topics.next();
    let one_topic = first.filter(|t| topics.all(|other| other == *t));
    let name = match one_topic {
        Some(topic) => format!("send {topic}"),
        None => "send".to_owned(),
    };
    let links = rows.iter().filter_map(|p| {
        let (_, value) = p.headers.iter().find(|(k, _)| k == TRACEPARENT)?;
        std::str::from_utf8(value).ok()
    });
    otel::start_linked(name, Kind::Producer, links, || {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.batch.message_count", rows.len() as i64),
        ];
        if let Some(topic) = one_topic {
            attributes.push(KeyValue::new(
                "messaging.destination.name",
                topic.to_owned(),
            ));
        }
        attributes
    })
}

/// Ends the batch's span with what became of its rows: published, set aside (dead-lettered or
/// marked failed), held for a later batch (a key waiting behind an earlier row, a topic not
/// there yet: they are sent again). A batch that set rows aside is marked failed.
pub fn settle(span: Option<Span>, outcome: &BatchOutcome) {
    let Some(mut span) = span else { return };
    let set_aside = outcome.dead_lettered.len() + outcome.failed.len();
    span.attribute(KeyValue::new(
        "ferry.published",
        outcome.published.len() as i64,
    ));
    span.attribute(KeyValue::new("ferry.set_aside", set_aside as i64));
    span.attribute(KeyValue::new("ferry.held", outcome.held as i64));
    if set_aside > 0 {
        span.fail("rows set aside: poison");
    }
    span.end();
}
