//! How results are printed: kubectl's `--output` choices (a table for people, JSON or YAML for
//! programs), and colour only when stdout is a terminal and `NO_COLOR` is unset.

use std::io::IsTerminal;

use clap::ValueEnum;
use serde::Serialize;

use crate::error::{Error, Result};

/// `-o/--output`, as kubectl spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns for a person.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `value` as JSON or YAML.
pub fn structured(value: &impl Serialize, format: Format) -> Result<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::unusable(format!("cannot print JSON: {e}"))),
        Format::Yaml => serde_saphyr::to_string(value)
            .map_err(|e| Error::unusable(format!("cannot print YAML: {e}"))),
        Format::Table => Err(Error::usage("a table is not a structured format")),
    }
}

/// Columns padded as kubectl pads them: upper-case headers, three spaces between columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_width(cell));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(&cell);
            if i < last {
                let pad = widths[i].saturating_sub(visible_width(&cell)) + 3;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect(), &mut out);
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

/// Characters a terminal shows (ANSI colour codes take no room).
fn visible_width(s: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// Colours a cell: green for good, red for bad, yellow for in-between — on a terminal only.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

/// A cell's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
}

impl Paint {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset (no-color.org).
    pub fn detect() -> Self {
        Self {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Never colour.
    pub const fn off() -> Self {
        Self { on: false }
    }

    /// `text` in `tone`'s colour.
    pub fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.on {
            return text.to_owned();
        }
        let code = match tone {
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
        };
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    }
}

/// A duration as a person reads it in a table (`5m`, `3h`, `2d`), as kubectl's AGE column.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "-".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_ignoring_colour() {
        let bad = Paint { on: true }.paint("False", Tone::Bad);
        let out = table(
            &["name", "ready"],
            &[
                vec!["orders".into(), "True".into()],
                vec!["a".into(), bad.clone()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME     READY");
        assert_eq!(lines[1], "orders   True");
        assert_eq!(lines[2], format!("a        {bad}"));
        assert_eq!(Paint::off().paint("x", Tone::Good), "x");
    }

    #[test]
    fn ages_read_like_kubectls() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(4 * 3600), "4h");
        assert_eq!(age(3 * 86_400), "3d");
    }

    #[test]
    fn json_and_yaml() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(
            structured(&v, Format::Json).expect("json"),
            "{\n  \"a\": 1\n}\n"
        );
        assert!(structured(&v, Format::Yaml).expect("yaml").contains("a: 1"));
    }
}
