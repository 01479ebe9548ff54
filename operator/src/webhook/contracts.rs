//! Admission of an EventTopic's contract (`spec.schema`): a schema that does not compile is
//! refused at `kubectl apply`, and so is a change that breaks events valid under the current
//! schema — unless the new spec says `compatibility: none`. The decision is pure
//! ([`admit`]); the check itself is [`ferry_common::contract`], the one the relay and
//! `ferry-sidecar contract check` use.
//!
//! A schema kept in a ConfigMap (`configMapRef`) changes without the EventTopic changing, so it
//! cannot be checked here: the EventTopic is admitted with a warning that says so.

use ferry_common::contract::{self, Contract};

use crate::api::{Compatibility, EventTopic, TopicSchema};

/// Whether `new` (replacing `old` on an update) may be stored: its warnings, or the message
/// the refusal shows.
pub fn admit(new: &EventTopic, old: Option<&EventTopic>) -> Result<Vec<String>, String> {
    let Some(schema) = &new.spec.schema else {
        // No contract, or the contract dropped: no event can break that.
        return Ok(Vec::new());
    };
    let Some(document) = &schema.json_schema else {
        let at = schema
            .config_map_ref
            .as_ref()
            .map(|r| format!("ConfigMap {} key {}", r.name, r.key))
            .unwrap_or_default();
        return Ok(vec![format!(
            "spec.schema is in {at}, which admission cannot see: its validity and its compatibility with the previous schema are not checked; check it with `ferry-sidecar contract check --schema-file`"
        )]);
    };
    Contract::compile(document, schema.event.as_deref())
        .map_err(|e| format!("spec.schema.jsonSchema is refused: {e}"))?;
    if schema.compatibility == Compatibility::None {
        return Ok(Vec::new());
    }
    let Some(before) = old.and_then(|o| o.spec.schema.as_ref()) else {
        // The first contract of the topic defines it.
        return Ok(Vec::new());
    };
    let Some(before_document) = &before.json_schema else {
        return Ok(vec![
            "spec.schema moved from a ConfigMap to jsonSchema: it is not compared with the schema the ConfigMap held".into(),
        ]);
    };
    let mut breaking = contract::breaking_changes(before_document, document);
    breaking.extend(event_filter_change(before, schema));
    if breaking.is_empty() {
        return Ok(Vec::new());
    }
    Err(format!(
        "spec.schema change breaks events valid under the current schema (compatibility: backward): {}. Keep it backward compatible (new fields optional; nothing removed or narrowed), publish the change as a new topic version, or set spec.schema.compatibility: none to accept it",
        breaking.join("; ")
    ))
}

/// A schema that starts to apply to events it did not check before narrows what is valid.
fn event_filter_change(before: &TopicSchema, after: &TopicSchema) -> Option<String> {
    match (&before.event, &after.event) {
        (Some(b), None) => Some(format!(
            "event filter removed: the schema now applies to every event, not only {b}"
        )),
        (Some(b), Some(a)) if a != b => Some(format!(
            "event filter changed from {b} to {a}: {a} events are checked now"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn topic(schema: Value) -> EventTopic {
        serde_json::from_value(json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "EventTopic",
            "metadata": {"name": "users", "namespace": "shop"},
            "spec": {"partitions": 1, "schema": schema},
        }))
        .expect("topic")
    }

    fn inline(document: Value) -> Value {
        json!({"jsonSchema": document, "event": "user.created"})
    }

    fn user() -> Value {
        json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}})
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_on_create() {
        let refused = admit(&topic(inline(json!({"type": "strnig"}))), None).expect_err("refused");
        assert!(
            refused.starts_with("spec.schema.jsonSchema is refused"),
            "{refused}"
        );
        assert!(refused.contains("strnig"), "{refused}");
        assert_eq!(admit(&topic(inline(user())), None), Ok(vec![]));
    }

    #[test]
    fn a_breaking_change_is_refused_naming_it_unless_compatibility_is_none() {
        let old = topic(inline(user()));
        let mut narrowed = user();
        narrowed["required"] = json!(["id", "email"]);
        narrowed["properties"]["email"] = json!({"type": "string"});
        let refused = admit(&topic(inline(narrowed.clone())), Some(&old)).expect_err("breaking");
        assert!(
            refused.contains("new required field \"email\""),
            "{refused}"
        );
        assert!(refused.contains("compatibility: none"), "{refused}");

        let mut none = inline(narrowed);
        none["compatibility"] = json!("none");
        assert_eq!(admit(&topic(none), Some(&old)), Ok(vec![]));

        let mut widened = user();
        widened["properties"]["email"] = json!({"type": "string"});
        assert_eq!(admit(&topic(inline(widened)), Some(&old)), Ok(vec![]));
    }

    #[test]
    fn widening_the_event_filter_is_breaking_and_the_first_schema_is_free() {
        let old = topic(inline(user()));
        let every_event = topic(json!({"jsonSchema": user()}));
        let refused = admit(&every_event, Some(&old)).expect_err("breaking");
        assert!(refused.contains("event filter removed"), "{refused}");
        let without = serde_json::from_value::<EventTopic>(json!({
            "metadata": {"name": "users"}, "spec": {"partitions": 1}}))
        .expect("topic");
        assert_eq!(admit(&every_event, Some(&without)), Ok(vec![]));
    }

    #[test]
    fn a_config_map_schema_is_admitted_with_a_warning() {
        let warnings = admit(
            &topic(json!({"configMapRef": {"name": "schemas", "key": "users.json"}})),
            None,
        )
        .expect("admitted");
        assert!(
            warnings[0].contains("ConfigMap schemas key users.json"),
            "{warnings:?}"
        );
    }
}
