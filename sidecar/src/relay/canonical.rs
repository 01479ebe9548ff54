//! Canonical JSON text for record keys and header values, with numbers exactly as written.
//!
//! Equal keys must give equal record keys, so a key that is an object is written canonically:
//! members sorted by name (the last of duplicate names wins), no spaces, strings escaped the
//! way serde_json escapes them. Numbers are copied from the row's text, never parsed into an
//! `f64` (which rounds integers past 2^64 and decimals past 17 digits, and prints `1.50` as
//! `1.5`): `{"id": 123456789012345678901234567890}` keys its record as written.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// The text is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotJson(String);

/// What a JSON text holds, one level deep, for a caller that treats objects, strings and
/// `null` apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// A string, unescaped.
    String(String),
    /// An object: its members by name (the last of duplicate names wins), each one level
    /// deep (an object inside it is [`Json::Other`], its canonical text).
    Object(BTreeMap<String, Json>),
    /// A number, `true`, `false`, an array, or an object inside an object, as canonical text.
    Other(String),
}

impl Json {
    /// The canonical text of the value (strings quoted and escaped as serde_json does).
    pub fn to_text(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::String(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                push_string(&mut out, s);
                out
            }
            Json::Object(members) => {
                let mut out = String::from("{");
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_string(&mut out, name);
                    out.push(':');
                    match value {
                        Json::Other(text) => out.push_str(text),
                        other => out.push_str(&other.to_text()),
                    }
                }
                out.push('}');
                out
            }
            Json::Other(text) => text.clone(),
        }
    }
}

/// The canonical text of `text`.
pub fn canonical(text: &str) -> Result<String, NotJson> {
    validate(text)?;
    walk(text)
}

/// `text` parsed one level deep. One pass of serde_json for the shapes rows carry most (a
/// string key, a headers object of strings); numbers stay as written everywhere.
pub fn parse(text: &str) -> Result<Json, NotJson> {
    match text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .as_bytes()
        .first()
    {
        Some(b'"') => serde_json::from_str(text)
            .map(Json::String)
            .map_err(not_json),
        Some(b'{') => {
            // serde_json checks the whole text and delimits each member's value; a
            // `BTreeMap` sorts the names and keeps the last of duplicates.
            let members: BTreeMap<String, &RawValue> =
                serde_json::from_str(text).map_err(not_json)?;
            members
                .into_iter()
                .map(|(name, value)| Ok((name, member(value.get())?)))
                .collect::<Result<_, NotJson>>()
                .map(Json::Object)
        }
        _ => canonical(text).map(|out| {
            if out == "null" {
                Json::Null
            } else {
                Json::Other(out)
            }
        }),
    }
}

/// One member's value, from its raw text (valid JSON, no surrounding space).
fn member(raw: &str) -> Result<Json, NotJson> {
    match raw.as_bytes().first() {
        Some(b'"') => unescape(raw).map(Json::String),
        Some(b'{' | b'[') => walk(raw).map(Json::Other),
        _ if raw == "null" => Ok(Json::Null),
        // A number, `true` or `false`: already canonical, as written.
        _ => Ok(Json::Other(raw.to_owned())),
    }
}

/// The canonical text of `text`, which serde_json found valid.
fn walk(text: &str) -> Result<String, NotJson> {
    let mut out = String::with_capacity(text.len());
    Cursor::new(text).value(&mut out)?;
    Ok(out)
}

fn not_json(e: serde_json::Error) -> NotJson {
    NotJson(e.to_string())
}

/// Checks the syntax without building anything (serde_json's own check).
fn validate(text: &str) -> Result<(), NotJson> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(not_json)
}

fn unescape(quoted: &str) -> Result<String, NotJson> {
    serde_json::from_str(quoted).map_err(not_json)
}

fn malformed() -> NotJson {
    NotJson("malformed JSON".into())
}

/// A reader over text serde_json found valid (so it may be simple, yet never panics).
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), NotJson> {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(malformed())
        }
    }

    /// The next string token, quotes and escapes included.
    fn string(&mut self) -> Result<&'a str, NotJson> {
        self.expect(b'"')?;
        let start = self.at - 1;
        loop {
            match self.peek().ok_or_else(malformed)? {
                b'\\' => self.at += 2,
                b'"' => {
                    self.at += 1;
                    return self.text.get(start..self.at).ok_or_else(malformed);
                }
                _ => self.at += 1,
            }
        }
    }

    /// The members of the object at the cursor, each value in canonical text.
    fn members(&mut self) -> Result<BTreeMap<String, String>, NotJson> {
        self.expect(b'{')?;
        let mut members = BTreeMap::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(members);
        }
        loop {
            self.skip_space();
            let name = unescape(self.string()?)?;
            self.expect(b':')?;
            let mut value = String::new();
            self.value(&mut value)?;
            members.insert(name, value);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(members);
                }
                _ => return Err(malformed()),
            }
        }
    }

    /// Writes the canonical text of the value at the cursor.
    fn value(&mut self, out: &mut String) -> Result<(), NotJson> {
        self.skip_space();
        match self.peek().ok_or_else(malformed)? {
            b'{' => {
                out.push('{');
                for (i, (name, value)) in self.members()?.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_string(out, &name);
                    out.push(':');
                    out.push_str(&value);
                }
                out.push('}');
            }
            b'[' => {
                self.at += 1;
                out.push('[');
                self.skip_space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                } else {
                    loop {
                        self.value(out)?;
                        self.skip_space();
                        match self.peek() {
                            Some(b',') => {
                                self.at += 1;
                                out.push(',');
                            }
                            Some(b']') => {
                                self.at += 1;
                                break;
                            }
                            _ => return Err(malformed()),
                        }
                    }
                }
                out.push(']');
            }
            b'"' => {
                let s = unescape(self.string()?)?;
                push_string(out, &s);
            }
            _ => {
                // A number, true, false or null: copied as written.
                let start = self.at;
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
                out.push_str(self.text.get(start..self.at).ok_or_else(malformed)?);
            }
        }
        Ok(())
    }
}

fn push_string(out: &mut String, s: &str) {
    // Serialising a string cannot fail.
    if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn objects_are_sorted_and_compact_at_every_level() {
        assert_eq!(
            canonical(r#"{"b": 1, "a": {"d": [1, 2], "c": "x"}}"#).expect("json"),
            r#"{"a":{"c":"x","d":[1,2]},"b":1}"#
        );
        assert_eq!(canonical(r#" { } "#).expect("json"), "{}");
        assert_eq!(canonical(r#"[ ]"#).expect("json"), "[]");
        assert_eq!(canonical(r#"{"a":1,"a":2}"#).expect("json"), r#"{"a":2}"#);
    }

    #[test]
    fn numbers_are_kept_as_written() {
        let big = r#"{"n": 123456789012345678901234567890, "d": 0.10000000000000000000001, "s": 1.50, "e": 1e400}"#;
        assert_eq!(
            canonical(big).expect("json"),
            r#"{"d":0.10000000000000000000001,"e":1e400,"n":123456789012345678901234567890,"s":1.50}"#
        );
        assert_eq!(canonical("-7").expect("json"), "-7");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let text = r#"{"k\u0041": "tab\there \"q\" \u00e9 \/ \u0001"}"#;
        let value: Value = serde_json::from_str(text).expect("json");
        assert_eq!(canonical(text).expect("json"), value.to_string());
    }

    #[test]
    fn what_serde_json_would_write_is_unchanged_for_ordinary_json() {
        for text in [
            r#"{"z":[true,false,null],"a":"x","m":{"y":-3,"b":[{"q":1}]}}"#,
            r#""plain""#,
            "42",
            "true",
            "null",
        ] {
            // serde_json's map (without preserve_order) is sorted too.
            let value: Value = serde_json::from_str(text).expect("json");
            assert_eq!(canonical(text).expect("json"), value.to_string(), "{text}");
        }
    }

    #[test]
    fn one_level_parse_tells_shapes_apart() {
        assert_eq!(parse(" null ").expect("json"), Json::Null);
        assert_eq!(
            parse(r#""a\"b""#).expect("json"),
            Json::String("a\"b".into())
        );
        assert_eq!(
            parse("12345678901234567890123").expect("json"),
            Json::Other("12345678901234567890123".into())
        );
        let members = |text: &str| match parse(text).expect("json") {
            Json::Object(members) => members.into_iter().collect::<Vec<_>>(),
            other => panic!("an object: {other:?}"),
        };
        assert_eq!(
            members(r#"{"b": {"y": 2, "x": 1}, "a": "s"}"#),
            vec![
                ("a".to_owned(), Json::String("s".into())),
                ("b".to_owned(), Json::Other(r#"{"x":1,"y":2}"#.into()))
            ]
        );
        assert_eq!(
            members(r#" {"n": 1.50, "z": null, "l": [ 1, {"b":2,"a":1} ], "a": 1, "a": 2} "#),
            vec![
                ("a".to_owned(), Json::Other("2".into())),
                ("l".to_owned(), Json::Other(r#"[1,{"a":1,"b":2}]"#.into())),
                ("n".to_owned(), Json::Other("1.50".into())),
                ("z".to_owned(), Json::Null),
            ]
        );
        assert_eq!(
            parse(" \"k\\u0041\" ").expect("json"),
            Json::String("kA".into())
        );
    }

    #[test]
    fn a_parsed_value_writes_back_its_canonical_text() {
        for text in [
            r#"{"b": 1, "a": {"d": [1, 2], "c": "x\"y"}, "n": null, "s": "\u00e9"}"#,
            r#""tab\there""#,
            "12345678901234567890123",
            "null",
            "[ 1.50 ]",
        ] {
            assert_eq!(
                parse(text).expect("json").to_text(),
                canonical(text).expect("json"),
                "{text}"
            );
        }
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for text in [
            "{nope",
            "",
            "[1,",
            r#"{"a" 1}"#,
            "1 2",
            r#""a" 1"#,
            r#"{"a":1} x"#,
            r#"{"a":01}"#,
        ] {
            assert!(canonical(text).is_err(), "{text}");
            assert!(parse(text).is_err(), "{text}");
        }
    }
}
