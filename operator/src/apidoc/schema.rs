//! A CRD's OpenAPI schema flattened into what a reader looks up: one [`Section`] per object
//! (the kind's `spec`, `spec.delivery`, `spec.delivery.http`, ...), each listing its fields
//! with type, required-ness, default, bounds, enum and the CEL rules' messages.
//!
//! Pure: it reads a [`JSONSchemaProps`] tree and is tested on small hand-made schemas;
//! [`super::markdown`] lays the result out (values inside constraint phrases are already in
//! backticks, the one piece of Markdown here).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool, ValidationRule,
};

/// Fields every object has and the API server documents itself (`kubectl explain`).
const STANDARD_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// One object of the schema: its path from the resource's root and its direct fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Dotted path from the root, arrays as `[]` and map values as `{}`
    /// (`spec.delivery.container.env[]`).
    pub path: String,
    /// The object's description.
    pub description: Option<String>,
    /// CEL rules on the object as a whole (they relate its fields).
    pub rules: Vec<Rule>,
    /// Its fields in the schema's (alphabetical) order.
    pub fields: Vec<Field>,
}

/// One field of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Its JSON name.
    pub name: String,
    /// Its type as people read it: `string`, `integer (int32)`, `[]string`, `map[string]string`,
    /// `object`, `[]object`.
    pub type_name: String,
    /// The path of the section that documents its object (or its items' or values' object).
    pub section: Option<String>,
    /// Whether the parent lists it in `required`.
    pub required: bool,
    /// Its default, as compact JSON (strings without quotes).
    pub default: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Bounds, pattern and enum, each a short phrase with values as Markdown code (`≥ 1`,
    /// ``pattern `^/` ``); the items'
    /// or values' own bounds prefixed with `each item:` / `each value:`.
    pub constraints: Vec<String>,
    /// The CEL rules on the field itself.
    pub rules: Vec<Rule>,
}

/// One CEL rule (`x-kubernetes-validations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The message the API server returns when the rule fails (the rule itself if it has none).
    pub message: String,
    /// The CEL expression.
    pub expression: String,
    /// Whether it compares with the stored object (`oldSelf`): checked on update only.
    pub on_update: bool,
}

impl Rule {
    fn from_validation(rule: &ValidationRule) -> Self {
        let message = rule
            .message
            .clone()
            .or_else(|| {
                rule.message_expression
                    .as_ref()
                    .map(|e| format!("(computed by `{e}`)"))
            })
            .unwrap_or_else(|| format!("fails `{}`", rule.rule));
        Self {
            message,
            expression: rule.rule.clone(),
            on_update: rule.rule.contains("oldSelf"),
        }
    }
}

/// The sections of one resource's schema, the root first (path `""`, holding the rules on the
/// whole object and its top-level fields other than `apiVersion`, `kind` and `metadata`), then
/// each object in depth-first order.
pub fn sections(root: &JSONSchemaProps) -> Vec<Section> {
    let mut out = Vec::new();
    walk_object("", root, &mut out);
    out
}

/// Adds the section of the object at `path`, then the sections of its object-valued fields.
fn walk_object(path: &str, schema: &JSONSchemaProps, out: &mut Vec<Section>) {
    let required = schema.required.clone().unwrap_or_default();
    let properties = schema.properties.clone().unwrap_or_default();
    let mut fields = Vec::new();
    let mut children = Vec::new();
    for (name, field) in &properties {
        if path.is_empty() && STANDARD_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let field_path = join(path, name);
        let (type_name, object) = describe_type(&field_path, field);
        let section = object.as_ref().map(|(child_path, _)| child_path.clone());
        // An object field's own rules are its section's rules: listed there, not twice.
        let own_rules = if section.as_deref() == Some(field_path.as_str()) {
            Vec::new()
        } else {
            rules(field)
        };
        children.extend(object);
        fields.push(Field {
            name: name.clone(),
            type_name,
            section,
            required: required.contains(name),
            default: field.default.as_ref().map(|d| compact(&d.0)),
            description: field.description.clone(),
            constraints: constraints(field),
            rules: own_rules,
        });
    }
    out.push(Section {
        path: path.to_owned(),
        description: schema.description.clone(),
        rules: rules(schema),
        fields,
    });
    for (child_path, child) in children {
        walk_object(&child_path, &child, out);
    }
}

/// A field's type name, and the object (with its section path) that needs a section of its own:
/// the field itself, its items or its map values.
fn describe_type(
    path: &str,
    field: &JSONSchemaProps,
) -> (String, Option<(String, JSONSchemaProps)>) {
    let base = field.type_.as_deref().unwrap_or("any");
    match base {
        "array" => match items(field) {
            Some(item) => {
                let (inner, object) = describe_type(&format!("{path}[]"), item);
                (format!("[]{inner}"), object)
            }
            None => ("[]any".to_owned(), None),
        },
        "object" if has_properties(field) => {
            ("object".to_owned(), Some((path.to_owned(), field.clone())))
        }
        "object" => match map_values(field) {
            Some(values) => {
                let (inner, object) = describe_type(&format!("{path}{{}}"), values);
                (format!("map[string]{inner}"), object)
            }
            None if field.x_kubernetes_preserve_unknown_fields == Some(true) => {
                ("object (any fields, kept as written)".to_owned(), None)
            }
            None => ("object".to_owned(), None),
        },
        _ => match &field.format {
            Some(format) => (format!("{base} ({format})"), None),
            None => (base.to_owned(), None),
        },
    }
}

fn has_properties(schema: &JSONSchemaProps) -> bool {
    schema.properties.as_ref().is_some_and(|p| !p.is_empty())
}

/// The items' schema of an array (a single schema; tuple schemas are not structural).
fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(item) => Some(item),
        JSONSchemaPropsOrArray::Schemas(items) => items.first(),
    }
}

/// The values' schema of a map (`additionalProperties`).
fn map_values(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.additional_properties.as_ref()? {
        JSONSchemaPropsOrBool::Schema(values) => Some(values),
        JSONSchemaPropsOrBool::Bool(_) => None,
    }
}

/// The field's own bounds, then its items' or map values' bounds (prefixed), so a list of
/// patterned strings says so.
fn constraints(field: &JSONSchemaProps) -> Vec<String> {
    let mut out = own_constraints(field);
    if let Some(item) = items(field).filter(|i| !has_properties(i)) {
        out.extend(
            own_constraints(item)
                .into_iter()
                .map(|c| format!("each item: {c}")),
        );
        out.extend(
            rules(item)
                .into_iter()
                .map(|r| format!("each item: {}", r.message)),
        );
    }
    if let Some(values) = map_values(field).filter(|v| !has_properties(v)) {
        out.extend(
            own_constraints(values)
                .into_iter()
                .map(|c| format!("each value: {c}")),
        );
    }
    out
}

/// Enum, numeric bounds, lengths, pattern, item and property counts of one schema node.
fn own_constraints(s: &JSONSchemaProps) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(values) = &s.enum_ {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", compact(&v.0)))
            .collect();
        out.push(format!("one of {}", values.join(", ")));
    }
    let exclusive_min = s.exclusive_minimum == Some(true);
    let exclusive_max = s.exclusive_maximum == Some(true);
    match (s.minimum, s.maximum) {
        (Some(min), Some(max)) if !exclusive_min && !exclusive_max => {
            out.push(format!("{}–{}", number(min), number(max)));
        }
        (min, max) => {
            if let Some(min) = min {
                let op = if exclusive_min { ">" } else { "≥" };
                out.push(format!("{op} {}", number(min)));
            }
            if let Some(max) = max {
                let op = if exclusive_max { "<" } else { "≤" };
                out.push(format!("{op} {}", number(max)));
            }
        }
    }
    push_range(
        &mut out,
        ("character", "characters"),
        s.min_length,
        s.max_length,
    );
    push_range(&mut out, ("item", "items"), s.min_items, s.max_items);
    push_range(
        &mut out,
        ("entry", "entries"),
        s.min_properties,
        s.max_properties,
    );
    if let Some(pattern) = &s.pattern {
        out.push(format!("pattern `{pattern}`"));
    }
    if s.unique_items == Some(true) {
        out.push("items unique".to_owned());
    }
    if let Some(list_type) = &s.x_kubernetes_list_type {
        match &s.x_kubernetes_list_map_keys {
            Some(keys) => out.push(format!(
                "list type `{list_type}`, keyed by `{}`",
                keys.join("`, `")
            )),
            None => out.push(format!("list type `{list_type}`")),
        }
    }
    out
}

/// `1–63 characters`, `at least 1 character`, `at most 64 entries`.
fn push_range(
    out: &mut Vec<String>,
    (one, many): (&str, &str),
    min: Option<i64>,
    max: Option<i64>,
) {
    let unit = |n: i64| if n == 1 { one } else { many };
    match (min, max) {
        (Some(min), Some(max)) => out.push(format!("{min}–{max} {}", unit(max))),
        (Some(min), None) => out.push(format!("at least {min} {}", unit(min))),
        (None, Some(max)) => out.push(format!("at most {max} {}", unit(max))),
        (None, None) => {}
    }
}

fn rules(schema: &JSONSchemaProps) -> Vec<Rule> {
    schema
        .x_kubernetes_validations
        .iter()
        .flatten()
        .map(Rule::from_validation)
        .collect()
}

/// A bound as written in the schema: `65535`, not `65535.0`.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

/// A JSON value as a reader writes it in a manifest: strings bare (the empty one as `""`),
/// the rest as compact JSON.
pub fn compact(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) if s.is_empty() => "\"\"".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: serde_json::Value) -> JSONSchemaProps {
        serde_json::from_value(json).expect("a valid schema")
    }

    #[test]
    fn nested_objects_get_sections_in_depth_first_order_and_standard_fields_are_left_out() {
        let root = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {"type": "object", "description": "the spec", "properties": {
                    "b": {"type": "object", "properties": {"c": {"type": "string"}}},
                    "a": {"type": "string"},
                }},
                "status": {"type": "object", "properties": {"d": {"type": "integer"}}},
            },
            "required": ["spec"],
        }));
        let sections = sections(&root);
        let paths: Vec<&str> = sections.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["", "spec", "spec.b", "status"]);
        let root_fields: Vec<(&str, bool)> = sections[0]
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.required))
            .collect();
        assert_eq!(root_fields, [("spec", true), ("status", false)]);
        assert_eq!(sections[1].description.as_deref(), Some("the spec"));
        let spec_fields: Vec<(&str, Option<&str>)> = sections[1]
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.section.as_deref()))
            .collect();
        assert_eq!(spec_fields, [("a", None), ("b", Some("spec.b"))]);
    }

    #[test]
    fn arrays_maps_formats_and_free_form_objects_read_as_types() {
        let root = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "env": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "lagByTopic": {"type": "object", "additionalProperties": {"type": "integer", "format": "int64"}},
                "port": {"type": "integer", "format": "int32"},
                "resources": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "topics": {"type": "array", "items": {"type": "string"}},
            },
        }));
        let sections = sections(&root);
        let types: Vec<(&str, &str, Option<&str>)> = sections[0]
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.type_name.as_str(), f.section.as_deref()))
            .collect();
        assert_eq!(
            types,
            [
                ("env", "[]object", Some("env[]")),
                ("labels", "map[string]string", None),
                ("lagByTopic", "map[string]integer (int64)", None),
                ("port", "integer (int32)", None),
                ("resources", "object (any fields, kept as written)", None),
                ("topics", "[]string", None),
            ]
        );
        assert_eq!(sections[1].path, "env[]");
        assert_eq!(sections[1].fields[0].name, "name");
    }

    #[test]
    fn bounds_enum_pattern_and_defaults_are_listed() {
        let root = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "port": {"type": "integer", "minimum": 1.0, "maximum": 65535.0, "default": 80},
                "name": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z]+$"},
                "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                "delays": {"type": "array", "maxItems": 10,
                           "items": {"type": "string", "minLength": 2, "pattern": "^[0-9]+s$"}},
                "retry": {"type": "object", "default": {"attempts": 3}, "properties": {"attempts": {"type": "integer"}}},
                "config": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string"}},
                "ratio": {"type": "number", "minimum": 0.5, "exclusiveMinimum": true},
                "count": {"type": "integer", "minimum": 0.0},
                "note": {"type": "string", "minLength": 1, "default": ""},
            },
        }));
        let fields = &sections(&root)[0].fields;
        let by_name = |name: &str| {
            fields
                .iter()
                .find(|f| f.name == name)
                .expect("the field is listed")
                .clone()
        };
        assert_eq!(by_name("port").constraints, ["1–65535"]);
        assert_eq!(by_name("port").default.as_deref(), Some("80"));
        assert_eq!(
            by_name("name").constraints,
            ["1–63 characters", "pattern `^[a-z]+$`"]
        );
        assert_eq!(by_name("mode").constraints, ["one of `A`, `B`"]);
        assert_eq!(by_name("mode").default.as_deref(), Some("A"));
        assert_eq!(
            by_name("delays").constraints,
            [
                "at most 10 items",
                "each item: at least 2 characters",
                "each item: pattern `^[0-9]+s$`"
            ]
        );
        assert_eq!(
            by_name("retry").default.as_deref(),
            Some(r#"{"attempts":3}"#)
        );
        assert_eq!(by_name("config").constraints, ["at most 64 entries"]);
        assert_eq!(by_name("ratio").constraints, ["> 0.5"]);
        assert_eq!(by_name("count").constraints, ["≥ 0"]);
        assert_eq!(by_name("note").constraints, ["at least 1 character"]);
        assert_eq!(by_name("note").default.as_deref(), Some("\"\""));
    }

    #[test]
    fn cel_rules_keep_their_messages_and_say_when_they_compare_with_the_old_object() {
        let root = schema(serde_json::json!({
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.a <= self.b", "message": "a must not exceed b"},
            ],
            "properties": {
                "a": {"type": "integer", "x-kubernetes-validations": [
                    {"rule": "self >= oldSelf", "message": "a cannot decrease"},
                    {"rule": "self != 7"},
                    {"rule": "self != 8", "messageExpression": "'no ' + string(self)"},
                ]},
                "b": {"type": "integer"},
            },
        }));
        let sections = sections(&root);
        assert_eq!(
            sections[0].rules,
            [Rule {
                message: "a must not exceed b".to_owned(),
                expression: "self.a <= self.b".to_owned(),
                on_update: false,
            }]
        );
        let a = &sections[0].fields[0];
        let messages: Vec<(&str, bool)> = a
            .rules
            .iter()
            .map(|r| (r.message.as_str(), r.on_update))
            .collect();
        assert_eq!(
            messages,
            [
                ("a cannot decrease", true),
                ("fails `self != 7`", false),
                ("(computed by `'no ' + string(self)`)", false),
            ]
        );
    }

    #[test]
    fn an_object_fields_rules_are_listed_once_in_its_own_section() {
        let root = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "scaling": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min <= max"}],
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}},
            },
        }));
        let sections = sections(&root);
        assert!(sections[0].fields[0].rules.is_empty());
        assert_eq!(sections[1].path, "scaling");
        assert_eq!(sections[1].rules[0].message, "min <= max");
    }

    #[test]
    fn rules_on_list_items_are_listed_with_the_list() {
        let root = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "topics": {"type": "array", "items": {"type": "string",
                    "x-kubernetes-validations": [{"rule": "size(self) > 0", "message": "no empty names"}]}},
            },
        }));
        assert_eq!(
            sections(&root)[0].fields[0].constraints,
            ["each item: no empty names"]
        );
    }
}
