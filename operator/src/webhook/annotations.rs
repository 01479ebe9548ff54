//! What a pod asks Ferry to inject, read from its `ferry.dev/*` annotations (DESIGN §6).
//!
//! Pure: a map of annotations in, the relay's settings (or nothing) out. Every way an
//! annotation can be wrong is an [`Error`] naming the annotation, because the webhook denies the
//! pod with that message: a typo must fail at `kubectl apply`, not as a relay that crash-loops
//! or silently does something else.

use std::{collections::BTreeMap, time::Duration};

/// The prefix of every annotation Ferry reads or writes on a pod.
pub const PREFIX: &str = "ferry.dev/";

/// The DSN Secret of the service's database: `<secret>[/<key>]`. Its presence asks for a relay.
pub const DATABASE_SECRET: &str = "ferry.dev/outbox-database-secret";
/// The outbox table (`--outbox-table`).
pub const TABLE: &str = "ferry.dev/outbox-table";
/// The relay's dead-letter topic (`--dead-letter-topic`).
pub const DEAD_LETTER_TOPIC: &str = "ferry.dev/outbox-dead-letter-topic";
/// Rows per batch (`--batch-size`).
pub const BATCH_SIZE: &str = "ferry.dev/outbox-batch-size";
/// The longest idle poll interval (`--idle-poll-interval`).
pub const IDLE_POLL_INTERVAL: &str = "ferry.dev/outbox-idle-poll-interval";
/// `true` to wake on `NOTIFY ferry_outbox` (`--notify`).
pub const NOTIFY: &str = "ferry.dev/outbox-notify";
/// `true` to delete rows once published (`--delete-published`).
pub const DELETE_PUBLISHED: &str = "ferry.dev/outbox-delete-published";
/// How long published rows are kept (`--published-retention`).
pub const PUBLISHED_RETENTION: &str = "ferry.dev/outbox-published-retention";
/// The relay container's CPU request.
pub const CPU: &str = "ferry.dev/outbox-cpu";
/// The relay container's memory request and limit.
pub const MEMORY: &str = "ferry.dev/outbox-memory";
/// Written by the webhook: what it injected. A pod that has it is never injected again.
pub const INJECTED: &str = "ferry.dev/injected";

/// Every annotation a pod may carry under [`PREFIX`]; anything else is a typo and denied.
const KNOWN: [&str; 11] = [
    DATABASE_SECRET,
    TABLE,
    DEAD_LETTER_TOPIC,
    BATCH_SIZE,
    IDLE_POLL_INTERVAL,
    NOTIFY,
    DELETE_PUBLISHED,
    PUBLISHED_RETENTION,
    CPU,
    MEMORY,
    INJECTED,
];

/// The key of the DSN in the Secret when the annotation names none: Django's and the
/// reference guide's variable name.
pub const DEFAULT_DATABASE_KEY: &str = "DATABASE_URL";

/// The largest `--batch-size` `ferry-sidecar relay` accepts (its `MAX_BATCH_SIZE`: a tenth of
/// librdkafka's default producer queue).
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// Why a pod's annotations cannot be honoured. The text is what `kubectl` shows the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown annotation {0}: Ferry reads only {known} on pods", known = KNOWN.join(", "))]
    Unknown(String),
    #[error("annotation {annotation}: {problem} (got {value:?})")]
    Malformed {
        annotation: &'static str,
        value: String,
        problem: &'static str,
    },
    #[error(
        "annotation {0} configures the outbox relay, which needs {DATABASE_SECRET}: <secret>[/<key>] naming the database's DSN"
    )]
    RelayWithoutDatabase(&'static str),
    #[error(
        "annotations {DELETE_PUBLISHED} and {PUBLISHED_RETENTION} contradict each other: rows are either deleted at once or kept for the retention"
    )]
    DeleteAndRetain,
}

/// A key of a Secret: where the relay's DSN comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// The relay a pod asked for, validated: each field is passed to `ferry-sidecar relay` as its
/// `FERRY_*` variable, unset ones keep the relay's own defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelaySettings {
    pub database: Option<SecretKey>,
    pub table: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub batch_size: Option<u32>,
    pub idle_poll_interval: Option<String>,
    pub notify: bool,
    pub delete_published: bool,
    pub published_retention: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// What the pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// The relay, when the pod names its database.
    pub relay: Option<RelaySettings>,
    /// Whether the webhook has already injected this pod (its own marker is present).
    pub already_injected: bool,
}

/// Reads the pod's annotations. Errors name the first annotation that is wrong, in name order
/// (stable, so the message does not change between attempts).
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Requested, Error> {
    let mut relay = RelaySettings::default();
    let mut tuning: Option<&'static str> = None;
    for (name, value) in annotations.range(PREFIX.to_owned()..) {
        if !name.starts_with(PREFIX) {
            break;
        }
        let Some(known) = KNOWN.iter().copied().find(|k| k == name) else {
            return Err(Error::Unknown(name.clone()));
        };
        let malformed = |problem| Error::Malformed {
            annotation: known,
            value: value.clone(),
            problem,
        };
        match known {
            DATABASE_SECRET => relay.database = Some(secret_key(value).ok_or_else(|| malformed("expected <secret>[/<key>]: a Secret name (lower-case letters, digits, '-', '.') and optionally a key (letters, digits, '-', '_', '.')"))?),
            TABLE => relay.table = Some(table(value).ok_or_else(|| malformed("expected a table name, optionally schema-qualified (shop.outbox), without spaces or quotes"))?),
            DEAD_LETTER_TOPIC => relay.dead_letter_topic = Some(topic(value).ok_or_else(|| malformed("expected a Kafka topic name: 1 to 249 letters, digits, '.', '_' or '-'"))?),
            BATCH_SIZE => relay.batch_size = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_BATCH_SIZE).contains(n))
                    .ok_or_else(|| malformed("expected a whole number of rows from 1 to 10000"))?,
            ),
            IDLE_POLL_INTERVAL => relay.idle_poll_interval = Some(duration(value).ok_or_else(|| malformed("expected a duration such as 250ms, 1s or 5m"))?),
            NOTIFY => relay.notify = boolean(value).ok_or_else(|| malformed("expected true or false"))?,
            DELETE_PUBLISHED => relay.delete_published = boolean(value).ok_or_else(|| malformed("expected true or false"))?,
            PUBLISHED_RETENTION => relay.published_retention = Some(duration(value).ok_or_else(|| malformed("expected a duration such as 12h or 7d"))?),
            CPU => relay.cpu = Some(quantity(value).ok_or_else(|| malformed("expected a CPU quantity such as 50m or 1"))?),
            MEMORY => relay.memory = Some(quantity(value).ok_or_else(|| malformed("expected a memory quantity such as 64Mi or 1Gi"))?),
            INJECTED => {}
            _ => unreachable!("every known annotation is matched"),
        }
        if known != DATABASE_SECRET && known != INJECTED {
            tuning.get_or_insert(known);
        }
    }
    if relay.delete_published && relay.published_retention.is_some() {
        return Err(Error::DeleteAndRetain);
    }
    let relay = match (&relay.database, tuning) {
        (Some(_), _) => Some(relay),
        (None, Some(annotation)) => return Err(Error::RelayWithoutDatabase(annotation)),
        (None, None) => None,
    };
    Ok(Requested {
        relay,
        already_injected: annotations.contains_key(INJECTED),
    })
}

/// `<secret>[/<key>]`: a DNS-subdomain Secret name and a Secret data key.
fn secret_key(value: &str) -> Option<SecretKey> {
    let (name, key) = match value.split_once('/') {
        Some((name, key)) => (name, key),
        None => (value, DEFAULT_DATABASE_KEY),
    };
    let name_ok = (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let key_ok = (1..=253).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (name_ok && key_ok).then(|| SecretKey {
        name: name.to_owned(),
        key: key.to_owned(),
    })
}

/// A table name as the relay resolves it (`to_regclass`): anything PostgreSQL could name,
/// minus what only a quoted identifier may hold, which the relay's flag does not take either.
fn table(value: &str) -> Option<String> {
    let part_ok = |p: &str| {
        (1..=63).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            && !p.as_bytes()[0].is_ascii_digit()
    };
    let ok = match value.split_once('.') {
        Some((schema, name)) => part_ok(schema) && part_ok(name),
        None => part_ok(value),
    };
    ok.then(|| value.to_owned())
}

/// A Kafka topic name (Kafka's `Topic.validate`).
fn topic(value: &str) -> Option<String> {
    let ok = (1..=249).contains(&value.len())
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    ok.then(|| value.to_owned())
}

/// A duration the relay's flags accept, non-zero.
fn duration(value: &str) -> Option<String> {
    ferry_common::duration::parse(value)
        .ok()
        .filter(|d| *d > Duration::ZERO)
        .map(|_| value.to_owned())
}

fn boolean(value: &str) -> Option<bool> {
    match value {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A Kubernetes resource quantity (`<number><suffix>`, suffixes from apimachinery's
/// `resource.Quantity`), checked here so a typo is denied with the annotation's name instead of
/// the API server's message about a container field the person never wrote.
fn quantity(value: &str) -> Option<String> {
    const SUFFIXES: [&str; 15] = [
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi",
    ];
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit())
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    (number_ok && (SUFFIXES.contains(&suffix) || suffix == "Ei")).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> Result<Requested, Error> {
        parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn no_ferry_annotation_asks_for_nothing() {
        let got = parse_pairs(&[("app", "x"), ("prometheus.io/scrape", "true")]).expect("valid");
        assert_eq!(got.relay, None);
        assert!(!got.already_injected);
    }

    #[test]
    fn the_database_secret_asks_for_a_relay_with_the_default_key() {
        let got = parse_pairs(&[(DATABASE_SECRET, "order-db")]).expect("valid");
        let relay = got.relay.expect("a relay");
        assert_eq!(
            relay.database,
            Some(SecretKey {
                name: "order-db".into(),
                key: "DATABASE_URL".into()
            })
        );
        assert_eq!(relay.table, None);
    }

    #[test]
    fn every_tuning_annotation_is_read() {
        let got = parse_pairs(&[
            (DATABASE_SECRET, "order-db/dsn"),
            (TABLE, "shop.outbox"),
            (DEAD_LETTER_TOPIC, "orders.dlq"),
            (BATCH_SIZE, "500"),
            (IDLE_POLL_INTERVAL, "250ms"),
            (NOTIFY, "true"),
            (PUBLISHED_RETENTION, "7d"),
            (CPU, "100m"),
            (MEMORY, "64Mi"),
        ])
        .expect("valid");
        let relay = got.relay.expect("a relay");
        assert_eq!(relay.database.expect("db").key, "dsn");
        assert_eq!(relay.table.as_deref(), Some("shop.outbox"));
        assert_eq!(relay.dead_letter_topic.as_deref(), Some("orders.dlq"));
        assert_eq!(relay.batch_size, Some(500));
        assert_eq!(relay.idle_poll_interval.as_deref(), Some("250ms"));
        assert!(relay.notify);
        assert!(!relay.delete_published);
        assert_eq!(relay.published_retention.as_deref(), Some("7d"));
        assert_eq!(relay.cpu.as_deref(), Some("100m"));
        assert_eq!(relay.memory.as_deref(), Some("64Mi"));
    }

    #[test]
    fn an_unknown_ferry_annotation_is_named() {
        let err = parse_pairs(&[(DATABASE_SECRET, "db"), ("ferry.dev/outbox-tabel", "x")])
            .expect_err("typo");
        assert_eq!(err, Error::Unknown("ferry.dev/outbox-tabel".into()));
        assert!(err.to_string().contains("ferry.dev/outbox-tabel"));
    }

    #[test]
    fn malformed_values_are_denied_with_the_annotation_and_the_value() {
        for (annotation, value) in [
            (DATABASE_SECRET, ""),
            (DATABASE_SECRET, "Order_DB"),
            (DATABASE_SECRET, "db/"),
            (DATABASE_SECRET, "db/a key"),
            (TABLE, "outbox; drop table x"),
            (TABLE, "\"Outbox\""),
            (TABLE, "a.b.c"),
            (DEAD_LETTER_TOPIC, "bad topic"),
            (DEAD_LETTER_TOPIC, ".."),
            (BATCH_SIZE, "0"),
            (BATCH_SIZE, "10001"),
            (BATCH_SIZE, "ten"),
            (IDLE_POLL_INTERVAL, "soon"),
            (IDLE_POLL_INTERVAL, "0s"),
            (NOTIFY, "yes"),
            (DELETE_PUBLISHED, "True"),
            (PUBLISHED_RETENTION, "forever"),
            (CPU, "lots"),
            (CPU, "-1"),
            (MEMORY, "64MB"),
            (MEMORY, ""),
        ] {
            let mut pairs = vec![(annotation, value)];
            if annotation != DATABASE_SECRET {
                pairs.push((DATABASE_SECRET, "db"));
            }
            let err = parse_pairs(&pairs).expect_err(value);
            let text = err.to_string();
            assert!(
                text.contains(annotation) && text.contains(&format!("{value:?}")),
                "{annotation}={value:?}: {text}"
            );
        }
    }

    #[test]
    fn tuning_without_a_database_is_denied() {
        let err = parse_pairs(&[(TABLE, "outbox")]).expect_err("no database");
        assert_eq!(err, Error::RelayWithoutDatabase(TABLE));
        assert!(err.to_string().contains(DATABASE_SECRET));
    }

    #[test]
    fn delete_and_retention_together_are_denied() {
        let err = parse_pairs(&[
            (DATABASE_SECRET, "db"),
            (DELETE_PUBLISHED, "true"),
            (PUBLISHED_RETENTION, "1h"),
        ])
        .expect_err("contradiction");
        assert_eq!(err, Error::DeleteAndRetain);
    }

    #[test]
    fn the_webhooks_own_marker_is_known_and_reported() {
        let got = parse_pairs(&[(DATABASE_SECRET, "db"), (INJECTED, "relay")]).expect("valid");
        assert!(got.already_injected);
        assert!(got.relay.is_some());
    }

    #[test]
    fn annotations_of_other_prefixes_are_ignored() {
        // Sorted after "ferry.dev/" but not under it, and a look-alike prefix.
        let got = parse_pairs(&[
            ("ferry.dev.example/x", "1"),
            ("ferry.devx/y", "2"),
            ("sidecar.ferry.dev/z", "3"),
        ])
        .expect("valid");
        assert_eq!(got.relay, None);
    }

    #[test]
    fn quantities_follow_kubernetes() {
        for ok in ["1", "0.5", "250m", "64Mi", "1Gi", "2G", "1.5"] {
            assert!(quantity(ok).is_some(), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "1 Gi", "1gi", "0", "1e3x"] {
            assert!(quantity(bad).is_none(), "{bad}");
        }
    }
}
