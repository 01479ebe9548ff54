//! The versioned event envelope services write into their outbox and workers unwrap:
//! `{schema, event, id, ts, key, data, headers}` (the reference guide's contract).
//!
//! The relay refuses a payload that is not an envelope (it goes to the dead-letter topic with
//! the reason); the worker maps the envelope onto CloudEvent attributes (`ce-id` = `id`,
//! `ce-type` = `event`, `ce-time` from `ts`) and delivers `data` as the body.
//!
//! `data` is kept as the raw JSON text of the record ([`RawValue`]), never parsed into numbers
//! and maps: a service gets its integers beyond 2^53 or u64, its decimals a double cannot hold
//! and its object key order exactly as the producer wrote them (parsing into `f64` and a sorted
//! map would round the first two and reorder the third). Not parsing it is also the cheaper
//! path per event.

use serde::{Deserialize, Serialize};
use serde_json::{Value, error::Category, value::RawValue};

/// Why a payload is not a usable envelope; the text goes into `ferry-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload is not an event envelope: {0}")]
    NotEnvelope(String),
    #[error("envelope field `{0}` is empty")]
    EmptyField(&'static str),
}

/// One event as a service publishes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Which contract `data` follows, e.g. `users.v1`.
    pub schema: String,
    /// What happened, e.g. `user.created`; the CloudEvent `type`.
    pub event: String,
    /// Unique per event; consumers de-duplicate on it. A string, or a number as text.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// When it happened: Unix seconds (a number) or an RFC 3339 string.
    pub ts: Value,
    /// The entity the event is about; also the Kafka key.
    #[serde(default)]
    pub key: Value,
    /// The event's facts, as the producer wrote them (raw JSON text; `null` when absent).
    #[serde(default)]
    pub data: Box<RawValue>,
    /// Free-form metadata, e.g. `traceparent`.
    #[serde(default)]
    pub headers: Value,
}

/// Equal when every field is; `data` compares as written (its raw text).
impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
            && self.event == other.event
            && self.id == other.id
            && self.ts == other.ts
            && self.key == other.key
            && self.data.get() == other.data.get()
            && self.headers == other.headers
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "id must be a string or number, not {other}"
        ))),
    }
}

impl Envelope {
    /// Parses and checks an envelope from raw bytes, in one pass (`data` is only delimited).
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            // JSON, but not the envelope's shape.
            Category::Data => Error::NotEnvelope(e.to_string()),
            Category::Io | Category::Syntax | Category::Eof => Error::NotJson(e.to_string()),
        })?;
        envelope.checked()
    }

    /// Checks an already-parsed JSON value (a `jsonb` column arrives this way).
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| Error::NotEnvelope(e.to_string()))?;
        envelope.checked()
    }

    fn checked(self) -> Result<Self, Error> {
        let envelope = self;
        if envelope.id.is_empty() {
            return Err(Error::EmptyField("id"));
        }
        if envelope.event.is_empty() {
            return Err(Error::EmptyField("event"));
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_reference_guides_envelope() {
        let e = Envelope::parse(
            br#"{"schema":"users.v1","event":"user.created","id":"e-1","ts":1690000000,
                "key":{"user_id":1},"data":{"email":"a@b"},"headers":{}}"#,
        )
        .expect("valid");
        assert_eq!(e.id, "e-1");
        assert_eq!(e.event, "user.created");
        assert_eq!(e.key, json!({"user_id": 1}));
        assert_eq!(e.data.get(), r#"{"email":"a@b"}"#);
    }

    /// `data` keeps its text: big integers, exact decimals, out-of-range numbers and key order.
    #[test]
    fn data_is_kept_as_written() {
        let data = r#"{"z":1,"big":12345678901234567890,"dec":0.1000000000000000055511151231257827,"huge":1e400, "a" : [1.0]}"#;
        let e = Envelope::parse(
            format!(r#"{{"schema":"s","event":"x","id":"1","ts":1,"data":{data}}}"#).as_bytes(),
        )
        .expect("valid");
        assert_eq!(e.data.get(), data);
        let none =
            Envelope::parse(br#"{"schema":"s","event":"x","id":"1","ts":1}"#).expect("valid");
        assert_eq!(none.data.get(), "null");
    }

    #[test]
    fn numeric_ids_become_text() {
        let e =
            Envelope::from_value(json!({"schema":"s","event":"x","id":42,"ts":1})).expect("valid");
        assert_eq!(e.id, "42");
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(matches!(
            Envelope::parse(b"{not json"),
            Err(Error::NotJson(_))
        ));
        assert!(matches!(Envelope::parse(b"poison"), Err(Error::NotJson(_))));
        assert!(matches!(
            Envelope::parse(br#"{"hello": "world"}"#),
            Err(Error::NotEnvelope(_))
        ));
        assert!(matches!(Envelope::parse(b"42"), Err(Error::NotEnvelope(_))));
        assert!(matches!(
            Envelope::from_value(json!({"hello": "world"})),
            Err(Error::NotEnvelope(_))
        ));
        assert!(matches!(
            Envelope::from_value(json!({"schema":"s","event":"x","id":{},"ts":1})),
            Err(Error::NotEnvelope(_))
        ));
        assert_eq!(
            Envelope::from_value(json!({"schema":"s","event":"","id":"1","ts":1})),
            Err(Error::EmptyField("event"))
        );
    }
}
