//! Event contracts: an EventTopic's JSON Schema (draft 2020-12) for the envelope's `data`
//! (DESIGN §2, `spec.schema`), compiled once and checked per event, and the check that a new
//! schema does not break the events or the consumers of the old one.
//!
//! The relay checks each row before it publishes, the worker before it delivers (when the
//! EventConsumer asks), the operator each schema change at admission, and
//! `ferry-sidecar contract check` a service's fixtures in its own CI: one implementation, so
//! the four agree.

use std::{collections::BTreeSet, fmt};

use serde_json::Value;

/// Why a schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a JSON Schema (draft 2020-12) this crate can compile; names what is wrong.
    #[error("not a valid JSON Schema (draft 2020-12): {0}")]
    InvalidSchema(String),
}

/// One way an event breaks its contract: where in the envelope, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// A JSON Pointer into the envelope (`/data/email`), `/data` for `data` as a whole.
    pub path: String,
    /// What is wrong, as the validator words it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A compiled contract: the schema, and which events it applies to.
pub struct Contract {
    validator: jsonschema::Validator,
    event: Option<String>,
}

impl fmt::Debug for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Contract")
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl Contract {
    /// Compiles `schema` once; `event`, when set, limits the contract to envelopes whose
    /// `event` is that name (others pass unchecked). `format` is asserted, not only noted:
    /// a team that writes `"format": "email"` means it. References are resolved within the
    /// document only; a remote `$ref` is refused here rather than fetched at run time.
    pub fn compile(schema: &Value, event: Option<&str>) -> Result<Self, Error> {
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| Error::InvalidSchema(e.to_string()))?;
        Ok(Self {
            validator,
            event: event.map(str::to_owned),
        })
    }

    /// Checks one envelope: its `data` against the schema. A tombstone (the payload JSON
    /// `null`, which deletes a key on a compacted topic) and an event the contract does not
    /// name pass. Every violation is returned, each with its path.
    pub fn check(&self, envelope: &Value) -> Result<(), Vec<Violation>> {
        let object = match envelope {
            Value::Null => return Ok(()),
            Value::Object(object) => object,
            _ => {
                return Err(vec![Violation {
                    path: String::new(),
                    message: "the payload is not an envelope (a JSON object)".into(),
                }]);
            }
        };
        let event = object
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.check_data(event, object.get("data").unwrap_or(&Value::Null))
    }

    /// Checks the `data` of an envelope whose `event` is `event` (for a caller that parsed
    /// the envelope itself, as the relay does).
    pub fn check_data(&self, event: &str, data: &Value) -> Result<(), Vec<Violation>> {
        if self.event.as_deref().is_some_and(|wanted| wanted != event) {
            return Ok(());
        }
        let violations: Vec<Violation> = self
            .validator
            .iter_errors(data)
            .map(|e| Violation {
                path: format!("/data{}", e.instance_path()),
                message: e.to_string(),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

/// Keywords that only describe: changing them breaks nothing.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "examples",
    "default",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
];

/// Keywords [`breaking_changes`] reads itself; any other keyword that changes is reported,
/// since Ferry cannot prove the change harmless.
const UNDERSTOOD: &[&str] = &[
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
];

/// What in `new` breaks events valid under `old`, or consumers relying on it — the common
/// cases, each as a sentence naming the path: a field newly required, a property removed, a
/// type, enum or bound narrowed, extra properties newly refused. A change to a keyword not
/// understood here (`oneOf`, `$ref`, ...) is reported too: refusing what cannot be proved is
/// the safe answer, and `compatibility: none` is the way past it. Empty: compatible.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut found = Vec::new();
    compare(old, new, "", &mut found);
    found
}

fn compare(old: &Value, new: &Value, path: &str, found: &mut Vec<String>) {
    let at = if path.is_empty() { "/" } else { path };
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        // `true`/`false` schemas, or a schema replaced by one of them.
        if old != new
            && new != &Value::Bool(true)
            && !(new.is_object() && new.as_object().is_some_and(|o| o.is_empty()))
        {
            found.push(format!("{at}: the schema changed from {old} to {new}"));
        }
        return;
    };

    let types = |s: &serde_json::Map<String, Value>| -> Option<BTreeSet<String>> {
        match s.get("type")? {
            Value::String(t) => Some(BTreeSet::from([t.clone()])),
            Value::Array(ts) => Some(
                ts.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        }
    };
    if let Some(new_types) = types(new) {
        let old_types = types(old);
        let accepts =
            |t: &str| new_types.contains(t) || (t == "integer" && new_types.contains("number"));
        match old_types {
            None => found.push(format!(
                "{at}: type narrowed from any to {}",
                join(&new_types)
            )),
            Some(old_types) => {
                let lost: Vec<&String> = old_types.iter().filter(|t| !accepts(t)).collect();
                if !lost.is_empty() {
                    found.push(format!(
                        "{at}: type narrowed from {} to {}",
                        join(&old_types),
                        join(&new_types)
                    ));
                }
            }
        }
    }

    if let Some(new_enum) = new.get("enum").and_then(Value::as_array) {
        match old.get("enum").and_then(Value::as_array) {
            None => found.push(format!(
                "{at}: enum added (values outside it are refused now)"
            )),
            Some(old_enum) => {
                let removed: Vec<String> = old_enum
                    .iter()
                    .filter(|v| !new_enum.contains(v))
                    .map(Value::to_string)
                    .collect();
                if !removed.is_empty() {
                    found.push(format!("{at}: enum values removed: {}", removed.join(", ")));
                }
            }
        }
    }
    if let Some(c) = new.get("const")
        && old.get("const") != Some(c)
    {
        found.push(format!("{at}: const {c} added or changed"));
    }

    let required = |s: &serde_json::Map<String, Value>| -> BTreeSet<String> {
        s.get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_required = required(old);
    for name in required(new).difference(&old_required) {
        found.push(format!(
            "{at}: new required field {name:?} (old events lack it; add it as optional)"
        ));
    }

    let empty = serde_json::Map::new();
    let old_props = old
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let new_props = new
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (name, old_prop) in old_props {
        let child = format!("{path}/{name}");
        match new_props.get(name) {
            None => found.push(format!(
                "{child}: property removed (consumers may rely on it; keep it, optional if need be)"
            )),
            Some(new_prop) => compare(old_prop, new_prop, &child, found),
        }
    }
    let closed = |s: &serde_json::Map<String, Value>| {
        s.get("additionalProperties") == Some(&Value::Bool(false))
    };
    if closed(new) && !closed(old) {
        found.push(format!(
            "{at}: additionalProperties: false added (old events with other fields are refused)"
        ));
    }
    if let (Some(o), Some(n)) = (
        old.get("additionalProperties"),
        new.get("additionalProperties"),
    ) && o.is_object()
        && n.is_object()
    {
        compare(o, n, &format!("{path}/*"), found);
    }
    match (old.get("items"), new.get("items")) {
        (Some(o), Some(n)) => compare(o, n, &format!("{path}/[]"), found),
        (None, Some(n)) if n != &Value::Bool(true) => {
            found.push(format!(
                "{at}: items constrained (old events' items may not match)"
            ));
        }
        _ => {}
    }

    // Bounds: a larger lower bound or a smaller upper bound narrows.
    for (keyword, lower) in [
        ("minimum", true),
        ("exclusiveMinimum", true),
        ("minLength", true),
        ("minItems", true),
        ("maximum", false),
        ("exclusiveMaximum", false),
        ("maxLength", false),
        ("maxItems", false),
    ] {
        let Some(n) = new.get(keyword).and_then(Value::as_f64) else {
            continue;
        };
        let narrowed = match old.get(keyword).and_then(Value::as_f64) {
            None => true,
            Some(o) if lower => n > o,
            Some(o) => n < o,
        };
        if narrowed {
            found.push(format!("{at}: {keyword} narrowed to {n}"));
        }
    }
    for keyword in ["pattern", "format"] {
        if let Some(n) = new.get(keyword)
            && old.get(keyword) != Some(n)
        {
            found.push(format!("{at}: {keyword} {n} added or changed"));
        }
    }

    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for keyword in keys {
        if ANNOTATIONS.contains(&keyword.as_str()) || UNDERSTOOD.contains(&keyword.as_str()) {
            continue;
        }
        if old.get(keyword) != new.get(keyword) {
            found.push(format!(
                "{at}: {keyword} changed, which Ferry cannot check for compatibility (set compatibility: none to accept it)"
            ));
        }
    }
}

fn join(types: &BTreeSet<String>) -> String {
    types
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("|")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_schema() -> Value {
        json!({
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "integer"},
                "email": {"type": "string", "format": "email"},
                "plan": {"enum": ["free", "pro"]},
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        })
    }

    fn envelope(event: &str, data: Value) -> Value {
        json!({"schema": "users.v1", "event": event, "id": "e1", "ts": "2026-12-01T00:00:00Z", "data": data})
    }

    #[test]
    fn a_valid_event_passes_and_each_violation_names_its_path() {
        let contract = Contract::compile(&user_schema(), None).expect("compiles");
        contract
            .check(&envelope(
                "user.created",
                json!({"id": 1, "email": "a@b.example"}),
            ))
            .expect("valid");
        let violations = contract
            .check(&envelope(
                "user.created",
                json!({"id": "one", "email": "not an address", "plan": "gold", "address": {"city": 7}}),
            ))
            .expect_err("invalid");
        let paths: BTreeSet<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(
            paths,
            BTreeSet::from([
                "/data/id",
                "/data/email",
                "/data/plan",
                "/data/address/city"
            ]),
            "{violations:?}"
        );
        let missing = contract
            .check(&envelope("user.created", json!({"id": 1})))
            .expect_err("email missing");
        assert_eq!(missing[0].path, "/data");
        assert!(missing[0].message.contains("email"), "{}", missing[0]);
    }

    #[test]
    fn tombstones_and_other_events_pass_and_a_non_envelope_does_not() {
        let contract = Contract::compile(&user_schema(), Some("user.created")).expect("compiles");
        contract.check(&Value::Null).expect("a tombstone passes");
        contract
            .check(&envelope("user.deleted", json!({"id": "x"})))
            .expect("not this contract's event");
        assert!(
            contract
                .check(&envelope("user.created", json!({"id": "x"})))
                .is_err()
        );
        assert!(contract.check(&json!([1, 2])).is_err());
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused_with_the_reason() {
        let error = Contract::compile(&json!({"type": "no-such-type"}), None).expect_err("refused");
        assert!(error.to_string().contains("no-such-type"), "{error}");
        let remote = Contract::compile(&json!({"$ref": "https://example.com/s.json"}), None);
        assert!(remote.is_err(), "a remote reference is not fetched");
    }

    #[test]
    fn compatible_changes_pass() {
        let old = user_schema();
        let mut new = old.clone();
        new["properties"]["nickname"] = json!({"type": "string"});
        new["properties"]["plan"] = json!({"enum": ["free", "pro", "team"]});
        new["properties"]["id"] = json!({"type": "number", "description": "widened"});
        new["description"] = json!("users");
        assert_eq!(breaking_changes(&old, &new), Vec::<String>::new());
    }

    #[test]
    fn each_breaking_change_is_named_with_its_path() {
        let old = user_schema();
        let cases = [
            (
                "required",
                json!(["id", "email", "plan"]),
                "new required field \"plan\"",
            ),
            (
                "additionalProperties",
                json!(false),
                "additionalProperties: false added",
            ),
        ];
        for (keyword, value, expected) in cases {
            let mut new = old.clone();
            new[keyword] = value;
            let found = breaking_changes(&old, &new);
            assert!(
                found.iter().any(|f| f.contains(expected)),
                "{keyword}: {found:?}"
            );
        }
        let mut new = old.clone();
        new["properties"]
            .as_object_mut()
            .expect("props")
            .remove("email");
        new["required"] = json!(["id"]);
        assert!(
            breaking_changes(&old, &new)
                .iter()
                .any(|f| f.starts_with("/email: property removed"))
        );
        let mut new = old.clone();
        new["properties"]["plan"] = json!({"enum": ["pro"]});
        assert!(
            breaking_changes(&old, &new)
                .iter()
                .any(|f| f == "/plan: enum values removed: \"free\"")
        );
        let mut new = old.clone();
        new["properties"]["address"]["properties"]["city"] = json!({"type": "integer"});
        assert!(
            breaking_changes(&old, &new)
                .iter()
                .any(|f| f == "/address/city: type narrowed from string to integer")
        );
        let mut new = old.clone();
        new["properties"]["email"]["maxLength"] = json!(64);
        assert!(
            breaking_changes(&old, &new)
                .iter()
                .any(|f| f.starts_with("/email: maxLength narrowed"))
        );
        let mut new = old.clone();
        new["oneOf"] = json!([{"required": ["id"]}]);
        assert!(
            breaking_changes(&old, &new)
                .iter()
                .any(|f| f.contains("oneOf changed"))
        );
    }
}
