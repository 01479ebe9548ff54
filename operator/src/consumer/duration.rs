//! Durations as EventConsumers spell them (`200ms`, `1.5s`, `1m30s`, `7d`; the CRD's
//! `DURATION_PATTERN`) turned into what the worker's flags parse (humantime, which has no
//! fractions): whole milliseconds or seconds. Pure.

use std::time::Duration;

/// Parses a duration of the CRD's syntax; `None` if it is not one.
pub fn parse(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else if rest.starts_with('d') {
            (86_400_000.0, 1)
        } else {
            return None;
        };
        total += number * unit_ms;
        rest = &rest[len..];
    }
    // Whole milliseconds: the worker's resolution.
    Some(Duration::from_millis(total.round() as u64))
}

/// `d` as a worker flag value: whole seconds when it has no fraction of one, else milliseconds.
pub fn flag(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The CRD's duration text as a worker flag value; text the CRD would not have accepted is
/// passed through for the worker to refuse.
pub fn worker_flag(text: &str) -> String {
    parse(text).map_or_else(|| text.to_owned(), flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_crds_syntax() {
        assert_eq!(parse("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse(""), None);
        assert_eq!(parse("5"), None);
        assert_eq!(parse("s"), None);
        assert_eq!(parse("5x"), None);
    }

    #[test]
    fn flags_have_no_fractions() {
        assert_eq!(worker_flag("1.5s"), "1500ms");
        assert_eq!(worker_flag("10s"), "10s");
        assert_eq!(worker_flag("1m30s"), "90s");
        assert_eq!(worker_flag("7d"), "604800s");
        assert_eq!(worker_flag("200ms"), "200ms");
    }
}
