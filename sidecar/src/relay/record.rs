//! Outbox rows as Kafka records, the pure part: the record key ([`kafka_key`]), the headers
//! ([`record_headers`]) and the whole record ([`prepare`]), or the [`Reason`] a row can never
//! be a record (it is then [`Poisoned`], set aside by `dead_letter.rs`).
//!
//! Each row becomes a record: the row's `topic`, a key from the row's `key`, the payload as
//! written, and headers from the row's `headers` plus `ferry-event-id` and `traceparent`. A
//! payload of JSON `null` is a tombstone: a record with the row's key and no value, which
//! deletes the key's earlier records from a compacted topic (`users.v1`); it carries no event,
//! so no contract applies to it, and without a key it would delete nothing, so it is poison.
//! Nothing here is parsed into floating point: keys and header values keep their numbers as
//! written ([`super::canonical`]).

use ferry_common::headers;
use serde_json::Value;

use super::{
    canonical::{self, Json},
    failure::Reason,
    order::KeyId,
    outbox::OutboxRow,
    topics::RecordSize,
};
use crate::{
    contracts::{self, Contracts},
    envelope::Envelope,
};

/// The W3C Trace Context header (<https://www.w3.org/TR/trace-context/>), copied from the
/// envelope's `headers` when the row has none.
pub const TRACEPARENT: &str = "traceparent";

/// The Kafka key of a row: a JSON string as is, a number as written, `null` (or no key) as
/// no key, anything else as canonical JSON (sorted object keys, no spaces, numbers as
/// written), so equal keys always land on one partition.
pub fn kafka_key(key_json: Option<&str>) -> std::result::Result<Option<Vec<u8>>, Reason> {
    let Some(text) = key_json else {
        return Ok(None);
    };
    let key =
        canonical::parse(text).map_err(|e| Reason::BadColumn(format!("key is not JSON: {e}")))?;
    Ok(match key {
        Json::Null => None,
        Json::String(s) => Some(s.into_bytes()),
        Json::Other(text) => Some(text.into_bytes()),
        object @ Json::Object(_) => Some(object.to_text().into_bytes()),
    })
}

/// The record headers of a row: its `headers` object (strings as is, other values as
/// canonical JSON with numbers as written),
/// then `ferry-event-id`, then `traceparent` from the envelope's headers if the row has none
/// (a tombstone has no envelope: only its own headers).
pub fn record_headers(
    headers_json: Option<&str>,
    envelope: Option<&Envelope>,
) -> std::result::Result<Vec<(String, Vec<u8>)>, Reason> {
    let mut out = Vec::with_capacity(2);
    match headers_json.map(canonical::parse) {
        None | Some(Ok(Json::Null)) => {}
        Some(Ok(Json::Object(members))) => {
            out.reserve(members.len() + 2);
            for (k, v) in members {
                // A string member as its text, anything else as canonical JSON.
                let bytes = match v {
                    Json::String(s) => s.into_bytes(),
                    Json::Other(text) => text.into_bytes(),
                    other => other.to_text().into_bytes(),
                };
                out.push((k, bytes));
            }
        }
        Some(Ok(_)) => {
            return Err(Reason::BadColumn("headers is not a JSON object".into()));
        }
        Some(Err(e)) => return Err(Reason::BadColumn(format!("headers is not JSON: {e}"))),
    }
    out.retain(|(k, _)| k != headers::EVENT_ID);
    let Some(envelope) = envelope else {
        return Ok(out);
    };
    out.push((headers::EVENT_ID.into(), envelope.id.clone().into_bytes()));
    if !out.iter().any(|(k, _)| k == TRACEPARENT)
        && let Some(tp) = envelope.headers.get(TRACEPARENT).and_then(Value::as_str)
    {
        out.push((TRACEPARENT.into(), tp.as_bytes().to_vec()));
    }
    Ok(out)
}

/// A row ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// The row's id.
    pub id: i64,
    /// Its ordering identity.
    pub key_id: KeyId,
    /// The record's topic (never empty).
    pub topic: String,
    /// The record key ([`kafka_key`]).
    pub key: Option<Vec<u8>>,
    /// The record value: the payload column's text; `None` for a tombstone.
    pub payload: Option<Vec<u8>>,
    /// The record headers ([`record_headers`]).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The envelope's `id`; `None` for a tombstone.
    pub event_id: Option<String>,
    /// The framed record's size bounds, checked against the topic's limits.
    pub size: RecordSize,
}

/// A poison row on its way to the dead-letter topic (or the error column), with whatever
/// could be read of it.
#[derive(Debug)]
pub struct Poisoned {
    /// The row's id.
    pub id: i64,
    /// Its ordering identity (held when the row cannot be set aside yet).
    pub key_id: KeyId,
    /// The row's topic, if not empty.
    pub topic: Option<String>,
    /// The record key, if the key column was usable.
    pub key: Option<Vec<u8>>,
    /// The payload column's text, if any.
    pub payload: Option<Vec<u8>>,
    /// The envelope's `id`, if the payload was an envelope.
    pub event_id: Option<String>,
    /// Why it can never be published.
    pub reason: Reason,
}

/// A row as a record ready to send, or as poison with what could be read of it; a row whose
/// `data` breaks its topic's entry in `contracts` is poison too.
pub fn prepare(
    row: OutboxRow,
    contracts: &Contracts,
) -> std::result::Result<Prepared, Box<Poisoned>> {
    let key_id = KeyId::new(row.topic.as_deref(), row.key.as_deref());
    let key = kafka_key(row.key.as_deref());
    if row.payload.as_deref().map(str::trim) == Some("null") {
        return tombstone(row, key_id, key);
    }
    let envelope = match row.payload.as_deref() {
        None => Err(Reason::NotEnvelope("payload is NULL".into())),
        Some(text) => {
            Envelope::parse(text.as_bytes()).map_err(|e| Reason::NotEnvelope(e.to_string()))
        }
    };
    let poison =
        |reason: Reason, key: Option<Vec<u8>>, event_id: Option<String>, row: OutboxRow| {
            Box::new(Poisoned {
                id: row.id,
                key_id: key_id.clone(),
                topic: row.topic.filter(|t| !t.is_empty()),
                key,
                payload: row.payload.map(String::into_bytes),
                event_id,
                reason,
            })
        };
    let key = match key {
        Ok(k) => k,
        Err(reason) => return Err(poison(reason, None, None, row)),
    };
    let envelope = match envelope {
        Ok(e) => e,
        Err(reason) => return Err(poison(reason, key, None, row)),
    };
    let event_id = envelope.id.clone();
    let Some(topic) = row.topic.clone().filter(|t| !t.is_empty()) else {
        return Err(poison(Reason::MissingTopic, key, Some(event_id), row));
    };
    if let Some(contract) = contracts.get(&topic)
        && let Err(violations) = contracts::check(contract, &envelope)
    {
        return Err(poison(
            Reason::SchemaViolation(violations),
            key,
            Some(event_id),
            row,
        ));
    }
    let headers = match record_headers(row.headers.as_deref(), Some(&envelope)) {
        Ok(h) => h,
        Err(reason) => return Err(poison(reason, key, Some(event_id), row)),
    };
    let payload = row.payload.map(String::into_bytes).unwrap_or_default();
    let size = RecordSize::of(key.as_deref(), &payload, &headers);
    Ok(Prepared {
        id: row.id,
        key_id,
        topic,
        key,
        payload: Some(payload),
        headers,
        event_id: Some(event_id),
        size,
    })
}

/// A row whose payload is JSON `null` as a tombstone: its key, its own headers, no value.
fn tombstone(
    row: OutboxRow,
    key_id: KeyId,
    key: std::result::Result<Option<Vec<u8>>, Reason>,
) -> std::result::Result<Prepared, Box<Poisoned>> {
    let topic = row.topic.clone().filter(|t| !t.is_empty());
    let key = key.and_then(|k| {
        k.ok_or_else(|| {
            Reason::BadColumn(
                "a tombstone (payload null) needs a key: it deletes that key's records".into(),
            )
        })
    });
    let checked = key.and_then(|key| {
        let topic = topic.clone().ok_or(Reason::MissingTopic)?;
        let headers = record_headers(row.headers.as_deref(), None)?;
        Ok((key, topic, headers))
    });
    match checked {
        Ok((key, topic, headers)) => Ok(Prepared {
            id: row.id,
            key_id,
            size: RecordSize::of(Some(&key), &[], &headers),
            topic,
            key: Some(key),
            payload: None,
            headers,
            event_id: None,
        }),
        Err(reason) => Err(Box::new(Poisoned {
            id: row.id,
            key_id,
            topic,
            key: kafka_key(row.key.as_deref()).ok().flatten(),
            payload: row.payload.map(String::into_bytes),
            event_id: None,
            reason,
        })),
    }
}

impl Prepared {
    /// The row, refused for `reason`, on its way to being set aside.
    pub fn poison(self, reason: Reason) -> Poisoned {
        Poisoned {
            id: self.id,
            key_id: self.key_id,
            topic: Some(self.topic),
            key: self.key,
            // A tombstone's row said `null`.
            payload: Some(self.payload.unwrap_or_else(|| b"null".to_vec())),
            event_id: self.event_id,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(headers: Value) -> Envelope {
        Envelope::from_value(json!({"schema":"s","event":"e","id":"ev-1","ts":1,"headers":headers}))
            .expect("valid")
    }

    #[test]
    fn keys_follow_the_contract() {
        assert_eq!(kafka_key(None), Ok(None));
        assert_eq!(kafka_key(Some("null")), Ok(None));
        assert_eq!(kafka_key(Some("\"o-1\"")), Ok(Some(b"o-1".to_vec())));
        assert_eq!(kafka_key(Some("42")), Ok(Some(b"42".to_vec())));
        assert_eq!(
            kafka_key(Some(r#"{"b": 1, "a": {"d": [1, 2], "c": "x"}}"#)),
            Ok(Some(br#"{"a":{"c":"x","d":[1,2]},"b":1}"#.to_vec()))
        );
        assert!(matches!(
            kafka_key(Some("{nope")),
            Err(Reason::BadColumn(_))
        ));
    }

    #[test]
    fn numbers_in_keys_and_headers_are_kept_as_written() {
        assert_eq!(
            kafka_key(Some("123456789012345678901234567890")),
            Ok(Some(b"123456789012345678901234567890".to_vec()))
        );
        assert_eq!(
            kafka_key(Some(
                r#"{"b": 0.10000000000000000000001, "a": 18446744073709551617}"#
            )),
            Ok(Some(
                br#"{"a":18446744073709551617,"b":0.10000000000000000000001}"#.to_vec()
            ))
        );
        let h = record_headers(
            Some(r#"{"amount": 12345678901234567890.123456789}"#),
            Some(&envelope(Value::Null)),
        )
        .expect("valid");
        assert!(h.contains(&("amount".into(), b"12345678901234567890.123456789".to_vec())));
    }

    #[test]
    fn headers_carry_the_event_id_and_trace_context() {
        let h = record_headers(
            Some(r#"{"x-tenant":"t1","n":3}"#),
            Some(&envelope(json!({"traceparent":"00-abc-def-01"}))),
        )
        .expect("valid");
        assert!(h.contains(&("x-tenant".into(), b"t1".to_vec())));
        assert!(h.contains(&("n".into(), b"3".to_vec())));
        assert!(h.contains(&("ferry-event-id".into(), b"ev-1".to_vec())));
        assert!(h.contains(&("traceparent".into(), b"00-abc-def-01".to_vec())));
        // The row's own traceparent wins over the envelope's; a forged event id does not.
        let h = record_headers(
            Some(r#"{"traceparent":"row","ferry-event-id":"forged"}"#),
            Some(&envelope(json!({"traceparent":"env"}))),
        )
        .expect("valid");
        let get = |k: &str| {
            h.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("traceparent"), vec![b"row".to_vec()]);
        assert_eq!(get("ferry-event-id"), vec![b"ev-1".to_vec()]);
        assert!(matches!(
            record_headers(Some("[1]"), Some(&envelope(Value::Null))),
            Err(Reason::BadColumn(_))
        ));
        assert_eq!(
            record_headers(None, Some(&envelope(Value::Null)))
                .expect("ok")
                .len(),
            1
        );
    }

    #[test]
    fn rows_that_cannot_be_published_are_poison_with_their_reason() {
        let row = |topic: Option<&str>, payload: &str| OutboxRow {
            id: 7,
            topic: topic.map(str::to_owned),
            key: Some("\"k\"".into()),
            payload: Some(payload.into()),
            headers: None,
        };
        let ok = r#"{"schema":"s","event":"e","id":"ev","ts":1}"#;
        let none = Contracts::default();
        assert!(prepare(row(Some("t"), ok), &none).is_ok());
        let not_envelope = prepare(row(Some("t"), r#"{"hello":1}"#), &none).expect_err("poison");
        assert_eq!(not_envelope.reason.label(), "not_envelope");
        let no_topic = prepare(row(None, ok), &none).expect_err("poison");
        assert_eq!(no_topic.reason, Reason::MissingTopic);
        assert_eq!(no_topic.event_id.as_deref(), Some("ev"));
        assert_eq!(
            prepare(row(Some(""), ok), &none)
                .expect_err("poison")
                .reason,
            Reason::MissingTopic
        );
    }

    #[test]
    fn a_row_breaking_its_topics_contract_is_poison_naming_each_path() {
        let contracts = Contracts::of(
            "users",
            json!({"event": "user.created", "jsonSchema": {"type": "object", "required": ["id"],
                   "properties": {"id": {"type": "string"}, "email": {"format": "email"}}}}),
        );
        let row = |topic: &str, payload: &str| OutboxRow {
            id: 3,
            topic: Some(topic.to_owned()),
            key: Some("\"k\"".into()),
            payload: Some(payload.into()),
            headers: None,
        };
        let valid = r#"{"schema":"s","event":"user.created","id":"ev","ts":1,"data":{"id":"u1","email":"a@b.example"}}"#;
        assert!(prepare(row("users", valid), &contracts).is_ok());
        let bad = r#"{"schema":"s","event":"user.created","id":"ev","ts":1,"data":{"id":7,"email":"nope"}}"#;
        let poison = prepare(row("users", bad), &contracts).expect_err("poison");
        assert_eq!(poison.reason.label(), "schema_violation");
        let text = poison.reason.to_string();
        assert!(
            text.contains("/data/id") && text.contains("/data/email"),
            "{text}"
        );
        assert_eq!(poison.event_id.as_deref(), Some("ev"));
        // Another event on the topic, and another topic, are not this contract's.
        let other = r#"{"schema":"s","event":"user.deleted","id":"ev","ts":1,"data":{"id":7}}"#;
        assert!(prepare(row("users", other), &contracts).is_ok());
        assert!(prepare(row("orders", bad), &contracts).is_ok());
    }

    #[test]
    fn a_null_payload_is_a_tombstone_with_its_key_and_no_contract() {
        let contracts = Contracts::of(
            "users",
            json!({"jsonSchema": {"type": "object", "required": ["id"]}}),
        );
        let row = |key: Option<&str>, topic: &str| OutboxRow {
            id: 9,
            topic: Some(topic.to_owned()),
            key: key.map(str::to_owned),
            payload: Some("null".into()),
            headers: Some(r#"{"x-tenant":"t1"}"#.into()),
        };
        let t = prepare(row(Some("\"u1\""), "users"), &contracts).expect("a tombstone");
        assert_eq!(t.payload, None);
        assert_eq!(t.key.as_deref(), Some(b"u1".as_slice()));
        assert_eq!(t.event_id, None);
        // Its own headers only: there is no event to name.
        assert_eq!(t.headers, vec![("x-tenant".to_owned(), b"t1".to_vec())]);
        // Set aside later (Kafka refused it), its copy says what the row said.
        let set_aside = t.poison(Reason::Invalid("refused".into()));
        assert_eq!(set_aside.payload.as_deref(), Some(b"null".as_slice()));

        // Without a key it would delete nothing.
        for key in [None, Some("null")] {
            let keyless = prepare(row(key, "users"), &contracts).expect_err("poison");
            assert_eq!(keyless.reason.label(), "bad_column");
            assert!(
                keyless.reason.to_string().contains("tombstone"),
                "{}",
                keyless.reason
            );
            assert_eq!(keyless.payload.as_deref(), Some(b"null".as_slice()));
        }
        assert_eq!(
            prepare(row(Some("\"u1\""), ""), &contracts)
                .expect_err("poison")
                .reason,
            Reason::MissingTopic
        );
        // SQL NULL is not JSON null: still not an envelope.
        let mut sql_null = row(Some("\"u1\""), "users");
        sql_null.payload = None;
        assert_eq!(
            prepare(sql_null, &contracts)
                .expect_err("poison")
                .reason
                .label(),
            "not_envelope"
        );
    }
}
