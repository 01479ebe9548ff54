//! The versioned event envelope services write into their outbox and workers unwrap:
//! `{schema, event, id, ts, key, data, headers}` (the reference guide's contract).
//!
//! The relay refuses a payload that is not an envelope (it goes to the dead-letter topic with
//! the reason); the worker maps the envelope onto CloudEvent attributes (`ce-id` = `id`,
//! `ce-type` = `event`, `ce-time` from `ts`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The event's facts.
    #[serde(default)]
    pub data: Value,
    /// Free-form metadata, e.g. `traceparent`.
    #[serde(default)]
    pub headers: Value,
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
    /// Parses and checks an envelope from raw bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Checks an already-parsed JSON value (a `jsonb` column arrives this way).
    pub fn from_value(value: Value) -> Result<Self, Error> {
        let envelope: Envelope =
            serde_json::from_value(value).map_err(|e| Error::NotEnvelope(e.to_string()))?;
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
