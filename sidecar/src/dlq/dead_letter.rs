//! One dead-lettered record, read off the dead-letter topic: where it is there, which event it
//! is (`ferry-event-id`, else the envelope's `id`) and of what type (the envelope's `event`),
//! where it came from and why it failed (the worker's `ferry-*` headers, DESIGN §5,
//! `ferry_common::headers`). Pure: built from an rdkafka message, unit-tested beside it.

use std::collections::BTreeMap;

use ferry_common::headers;
use jiff::Timestamp;
use rdkafka::{
    Message,
    message::{Headers, OwnedMessage},
};
use serde::{Deserialize, Serialize};

/// A dead letter, as `dlq list`, `dlq show` and `dlq replay` see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The event id consumers de-duplicate on; kept by a replay.
    pub event_id: Option<String>,
    /// The envelope's event type.
    pub event_type: Option<String>,
    /// The dead-letter topic.
    pub topic: String,
    /// Its partition there.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The topic the worker first read it from.
    pub original_topic: Option<String>,
    /// The partition it was first read from.
    pub original_partition: Option<i32>,
    /// The offset it was first read from.
    pub original_offset: Option<i64>,
    /// Delivery attempts before it was given up.
    pub attempts: Option<u32>,
    /// The last failure (`ferry-error`).
    pub reason: Option<String>,
    /// The consumer group that gave up (`ferry-group`).
    pub group: Option<String>,
    /// When it was given up: `ferry-failed-at`, else the record's timestamp.
    pub failed_at: Option<Timestamp>,
    /// Set on a reference copy: why Kafka refused the full copy; it has no payload, and the
    /// record itself is at the original coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_refused: Option<String>,
    /// The record key, as text (lossy).
    pub key: Option<String>,
    /// Every header, as text (lossy).
    pub headers: BTreeMap<String, String>,
    /// The payload: JSON when it is JSON, else text (lossy).
    pub payload: Option<serde_json::Value>,
    /// The bytes a replay writes back (not in the JSON form, which a replay Job's selection
    /// ConfigMap carries for `dlq list`/`show`).
    #[serde(skip)]
    pub raw: Raw,
}

/// The record as Kafka holds it, for a byte-exact replay.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Raw {
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    /// Reads a dead-letter record.
    pub fn from_message(message: &OwnedMessage) -> Self {
        let raw_headers: Vec<(String, Option<Vec<u8>>)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| (x.key.to_owned(), x.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let text: BTreeMap<String, String> = raw_headers
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_deref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let header = |name: &str| text.get(name).cloned();
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
        let envelope: Option<serde_json::Value> = message
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok());
        let from_envelope = |field: &str| {
            envelope
                .as_ref()
                .and_then(|e| e.get(field))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let failed_at = header(headers::FAILED_AT)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .or_else(|| {
                message
                    .timestamp()
                    .to_millis()
                    .and_then(|ms| Timestamp::from_millisecond(ms).ok())
            });
        Self {
            event_id: header(headers::EVENT_ID).or_else(|| from_envelope("id")),
            event_type: from_envelope("event"),
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            original_topic: header(headers::ORIGINAL_TOPIC),
            original_partition: number(headers::ORIGINAL_PARTITION)
                .and_then(|p| i32::try_from(p).ok()),
            original_offset: number(headers::ORIGINAL_OFFSET),
            attempts: number(headers::ATTEMPTS).and_then(|a| u32::try_from(a).ok()),
            reason: header(headers::ERROR),
            group: header(headers::GROUP),
            failed_at,
            copy_refused: header(headers::COPY_REFUSED),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: envelope.or_else(|| {
                message
                    .payload()
                    .map(|p| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
            }),
            headers: text,
            raw: Raw {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
                headers: raw_headers,
            },
        }
    }

    /// Whether the worker of `group` wrote it (a shared dead-letter topic holds several
    /// consumers' dead letters, and the relay's poison rows, which carry no group).
    pub fn belongs_to(&self, group: &str) -> bool {
        self.group.as_deref() == Some(group)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rdkafka::{
        Timestamp as KafkaTimestamp,
        message::{Header, OwnedHeaders},
    };

    /// A dead letter as the worker writes it.
    pub(crate) fn record(offset: i64, pairs: &[(&str, &str)], payload: &str) -> OwnedMessage {
        let mut h = OwnedHeaders::new();
        for (k, v) in pairs {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        OwnedMessage::new(
            Some(payload.as_bytes().to_vec()),
            Some(b"order-1".to_vec()),
            "shop.notify.dlq".into(),
            KafkaTimestamp::CreateTime(1_700_000_000_000),
            2,
            offset,
            Some(h),
        )
    }

    pub(crate) const ENVELOPE: &str = r#"{"schema":"orders.v1","event":"order.created","id":"evt-1","ts":"2026-11-30T10:00:00Z","key":"order-1","data":{"total":3},"headers":{}}"#;

    #[test]
    fn reads_the_workers_headers_and_the_envelope() {
        let dl = DeadLetter::from_message(&record(
            7,
            &[
                (headers::ERROR, "HTTP 422 Unprocessable Entity"),
                (headers::ORIGINAL_TOPIC, "orders.v1"),
                (headers::ORIGINAL_PARTITION, "2"),
                (headers::ORIGINAL_OFFSET, "41"),
                (headers::ATTEMPTS, "4"),
                (headers::GROUP, "shop.notify"),
                (headers::FAILED_AT, "2026-11-30T10:05:00Z"),
            ],
            ENVELOPE,
        ));
        assert_eq!(dl.event_id.as_deref(), Some("evt-1"));
        assert_eq!(dl.event_type.as_deref(), Some("order.created"));
        assert_eq!((dl.partition, dl.offset), (2, 7));
        assert_eq!(dl.original_topic.as_deref(), Some("orders.v1"));
        assert_eq!(
            (dl.original_partition, dl.original_offset),
            (Some(2), Some(41))
        );
        assert_eq!(dl.attempts, Some(4));
        assert_eq!(dl.reason.as_deref(), Some("HTTP 422 Unprocessable Entity"));
        assert!(dl.belongs_to("shop.notify") && !dl.belongs_to("shop.other"));
        assert_eq!(
            dl.failed_at,
            Some("2026-11-30T10:05:00Z".parse().expect("time"))
        );
        assert_eq!(dl.raw.payload.as_deref(), Some(ENVELOPE.as_bytes()));
        assert_eq!(dl.raw.headers.len(), 7);
    }

    #[test]
    fn the_event_id_header_wins_and_a_non_envelope_is_kept_as_text() {
        let dl = DeadLetter::from_message(&record(0, &[(headers::EVENT_ID, "evt-9")], "not json"));
        assert_eq!(dl.event_id.as_deref(), Some("evt-9"));
        assert_eq!(dl.event_type, None);
        assert_eq!(dl.payload, Some(serde_json::json!("not json")));
        // No ferry-failed-at: the record's own time.
        assert_eq!(
            dl.failed_at,
            Some(Timestamp::from_millisecond(1_700_000_000_000).expect("time"))
        );
        assert!(!dl.belongs_to("shop.notify"));
    }
}
