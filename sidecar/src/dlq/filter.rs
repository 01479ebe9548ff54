//! Which dead letters a command selects: by reason (a case-insensitive substring of
//! `ferry-error`), event type, event id, original topic, and a time range on when each was
//! given up. `--since`/`--until` take an RFC 3339 time or a duration back from now (`2h`,
//! `7d`), as `kubectl logs --since` does. Pure.

use clap::Args;
use jiff::Timestamp;

use super::{
    dead_letter::DeadLetter,
    error::{Error, Result},
};

/// The selection flags shared by `dlq list` and `dlq replay`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only dead letters whose reason contains this text (case-insensitive).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only events of this type (the envelope's `event`).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only these event ids (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Only dead letters first read from this Kafka topic.
    #[arg(long = "topic")]
    pub original_topic: Option<String>,
    /// Only dead letters given up at or after this time: RFC 3339, or a duration ago (`2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only dead letters given up before this time: RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
}

/// A parsed selection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    reason: Option<String>,
    event_type: Option<String>,
    ids: Vec<String>,
    original_topic: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
}

impl FilterArgs {
    /// The filter these flags mean, with relative times counted back from `now`.
    pub fn parse(&self, now: Timestamp) -> Result<Filter> {
        Ok(Filter {
            reason: self.reason.as_ref().map(|r| r.to_lowercase()),
            event_type: self.event_type.clone(),
            ids: self.ids.clone(),
            original_topic: self.original_topic.clone(),
            since: self.since.as_deref().map(|s| time(s, now)).transpose()?,
            until: self.until.as_deref().map(|s| time(s, now)).transpose()?,
        })
    }
}

/// An RFC 3339 time, or a duration before `now`.
fn time(input: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(t) = input.parse::<Timestamp>() {
        return Ok(t);
    }
    let ago = ferry_common::duration::parse(input).map_err(|_| {
        Error::Usage(format!(
            "{input:?} is neither an RFC 3339 time (2026-11-30T10:00:00Z) nor a duration (2h, 7d)"
        ))
    })?;
    let ago =
        jiff::SignedDuration::try_from(ago).map_err(|e| Error::Usage(format!("{input:?}: {e}")))?;
    now.checked_sub(ago)
        .map_err(|e| Error::Usage(format!("{input:?}: {e}")))
}

impl Filter {
    /// Whether `dl` is selected.
    pub fn matches(&self, dl: &DeadLetter) -> bool {
        let reason_ok = self.reason.as_ref().is_none_or(|want| {
            dl.reason
                .as_ref()
                .is_some_and(|r| r.to_lowercase().contains(want))
        });
        let type_ok = self
            .event_type
            .as_ref()
            .is_none_or(|want| dl.event_type.as_ref() == Some(want));
        let id_ok =
            self.ids.is_empty() || dl.event_id.as_ref().is_some_and(|id| self.ids.contains(id));
        let topic_ok = self
            .original_topic
            .as_ref()
            .is_none_or(|want| dl.original_topic.as_ref() == Some(want));
        let since_ok = self
            .since
            .is_none_or(|since| dl.failed_at.is_some_and(|t| t >= since));
        let until_ok = self
            .until
            .is_none_or(|until| dl.failed_at.is_some_and(|t| t < until));
        reason_ok && type_ok && id_ok && topic_ok && since_ok && until_ok
    }

    /// Whether nothing narrows the selection (a replay of everything asks for `--all`).
    pub fn is_everything(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(reason: &str, event_type: &str, id: &str, at: &str) -> DeadLetter {
        DeadLetter {
            event_id: Some(id.into()),
            event_type: Some(event_type.into()),
            topic: "dlq".into(),
            partition: 0,
            offset: 0,
            original_topic: Some("orders.v1".into()),
            original_partition: Some(0),
            original_offset: Some(0),
            attempts: Some(1),
            reason: Some(reason.into()),
            group: Some("g".into()),
            failed_at: Some(at.parse().expect("time")),
            copy_refused: None,
            key: None,
            headers: Default::default(),
            payload: None,
            raw: Default::default(),
        }
    }

    fn now() -> Timestamp {
        "2026-11-30T12:00:00Z".parse().expect("now")
    }

    #[test]
    fn each_flag_selects_what_it_says() {
        let a = dl(
            "HTTP 422 Unprocessable",
            "order.created",
            "a",
            "2026-11-30T11:30:00Z",
        );
        let b = dl(
            "HTTP 400 Bad Request",
            "order.paid",
            "b",
            "2026-11-29T11:30:00Z",
        );
        let pick = |args: FilterArgs| {
            let f = args.parse(now()).expect("filter");
            [&a, &b]
                .into_iter()
                .filter(|d| f.matches(d))
                .map(|d| d.event_id.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(FilterArgs::default()), ["a", "b"]);
        let reason = FilterArgs {
            reason: Some("unprocessable".into()),
            ..FilterArgs::default()
        };
        assert_eq!(pick(reason), ["a"]);
        let kind = FilterArgs {
            event_type: Some("order.paid".into()),
            ..FilterArgs::default()
        };
        assert_eq!(pick(kind), ["b"]);
        let since = FilterArgs {
            since: Some("1h".into()),
            ..FilterArgs::default()
        };
        assert_eq!(pick(since), ["a"]);
        let until = FilterArgs {
            until: Some("2026-11-30T00:00:00Z".into()),
            ..FilterArgs::default()
        };
        assert_eq!(pick(until), ["b"]);
        let ids = FilterArgs {
            ids: vec!["b".into(), "z".into()],
            ..FilterArgs::default()
        };
        assert_eq!(pick(ids), ["b"]);
        let topic = FilterArgs {
            original_topic: Some("users.v1".into()),
            ..FilterArgs::default()
        };
        assert!(pick(topic).is_empty());
    }

    #[test]
    fn a_time_that_is_neither_is_refused() {
        let args = FilterArgs {
            since: Some("yesterday".into()),
            ..FilterArgs::default()
        };
        assert!(args.parse(now()).is_err());
        assert!(
            FilterArgs::default()
                .parse(now())
                .expect("f")
                .is_everything()
        );
    }
}
