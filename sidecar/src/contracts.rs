//! The event contracts the relay enforces at publish and the worker, with its EventConsumer's
//! `validate`, before delivery: one file per Kafka topic in `--contracts-dir` (`<topic>.json`,
//! the EventTopic's `spec.schema` in its inline form:
//! `{"jsonSchema": {...}, "event": "user.created"}`), each compiled once
//! ([`ferry_common::contract`]). A row or record whose `data` breaks its topic's contract goes
//! to the dead-letter topic with every violation's path.
//!
//! The directory is read again every [`RELOAD_INTERVAL`], so a changed schema (a ConfigMap
//! volume the kubelet updates in place) takes effect without a restart. A file that cannot be
//! read or compiled is reported and its topic keeps the contract it had: a broken edit must not
//! silently stop the checks.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ferry_common::contract::{Contract, Violation};
use serde_json::Value;
use tokio::sync::watch;

use crate::envelope::Envelope;

/// How often the directory is read again for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The compiled contract of each topic that has one.
#[derive(Debug, Default, Clone)]
pub struct Contracts {
    by_topic: HashMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The file's text, to recompile only what changed.
    text: String,
    contract: Arc<Contract>,
}

impl Contracts {
    /// The contract of `topic`, if it has one.
    pub fn get(&self, topic: &str) -> Option<&Contract> {
        self.by_topic.get(topic).map(|e| e.contract.as_ref())
    }

    /// One topic's contract from its file's JSON, for tests of the code that reads contracts.
    #[cfg(test)]
    pub fn of(topic: &str, schema: Value) -> Self {
        let text = schema.to_string();
        let contract = compile(&text).expect("a valid contract");
        Self {
            by_topic: HashMap::from([(
                topic.to_owned(),
                Entry {
                    text,
                    contract: Arc::new(contract),
                },
            )]),
        }
    }

    /// How many topics have a contract.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether no topic has a contract.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// What `dir` holds now, reusing `self`'s compiled contracts whose files did not change;
    /// a file that cannot be used keeps its previous contract and is reported in the second
    /// value. A topic whose file is gone has no contract any more.
    pub fn reload(&self, dir: &Path) -> (Contracts, Vec<String>) {
        let mut next = Contracts::default();
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // No directory, no contracts (a relay run outside a pod; in a pod the kubelet
            // mounts the ConfigMap's directory even while the ConfigMap does not exist).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (Contracts::default(), Vec::new());
            }
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", dir.display()));
                return (self.clone(), problems);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The kubelet's `..data` and `..2026_...` entries start with dots.
            let Some(topic) = topic_of(&path) else {
                continue;
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(format!("cannot read {}: {e}", path.display()));
                    self.keep(&topic, &mut next);
                    continue;
                }
            };
            if let Some(known) = self.by_topic.get(&topic)
                && known.text == text
            {
                next.by_topic.insert(topic, known.clone());
                continue;
            }
            match compile(&text) {
                Ok(contract) => {
                    next.by_topic.insert(
                        topic,
                        Entry {
                            text,
                            contract: Arc::new(contract),
                        },
                    );
                }
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    self.keep(&topic, &mut next);
                }
            }
        }
        (next, problems)
    }

    fn keep(&self, topic: &str, next: &mut Contracts) {
        if let Some(known) = self.by_topic.get(topic) {
            next.by_topic.insert(topic.to_owned(), known.clone());
        }
    }
}

/// The topic a contract file is for: `users.v1.json` → `users.v1`; not a dot file.
fn topic_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') || !path.is_file() {
        return None;
    }
    name.strip_suffix(".json")
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

fn compile(text: &str) -> Result<Contract, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let document = schema
        .get("jsonSchema")
        .ok_or("no jsonSchema (expected the EventTopic's spec.schema, inline)")?;
    let event = schema.get("event").and_then(Value::as_str);
    Contract::compile(document, event).map_err(|e| e.to_string())
}

/// Loads `dir` now, then keeps the returned contracts current until the receiver is dropped.
pub fn watch(dir: PathBuf) -> watch::Receiver<Arc<Contracts>> {
    let (first, problems) = Contracts::default().reload(&dir);
    report(&dir, &first, &problems);
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RELOAD_INTERVAL).await;
            let current = tx.borrow().clone();
            let (next, problems) = current.reload(&dir);
            let changed = next.by_topic.len() != current.by_topic.len()
                || next.by_topic.iter().any(|(topic, e)| {
                    current
                        .by_topic
                        .get(topic)
                        .is_none_or(|c| !Arc::ptr_eq(&c.contract, &e.contract))
                });
            if changed || !problems.is_empty() {
                report(&dir, &next, &problems);
            }
            if changed && tx.send(Arc::new(next)).is_err() {
                return;
            }
        }
    });
    rx
}

fn report(dir: &Path, contracts: &Contracts, problems: &[String]) {
    tracing::info!(
        dir = %dir.display(),
        topics = contracts.len(),
        "event contracts loaded"
    );
    for problem in problems {
        tracing::warn!(
            problem,
            "an event contract cannot be used; its topic keeps its previous contract, if any"
        );
    }
}

/// Checks `envelope`'s `data` against `contract` (parsed here, so only for topics that have
/// one: the envelope keeps `data` as raw text); on a violation, every path ([`describe`]).
pub fn check(contract: &Contract, envelope: &Envelope) -> Result<(), String> {
    let data: Value =
        serde_json::from_str(envelope.data.get()).map_err(|e| format!("data is not JSON: {e}"))?;
    contract
        .check_data(&envelope.event, &data)
        .map_err(|violations| describe(&violations))
}

/// The poison reason for `violations`, cut to a size a Kafka header carries comfortably.
pub fn describe(violations: &[Violation]) -> String {
    const LIMIT: usize = 1024;
    let mut text = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() > LIMIT {
        let mut end = LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, value: &Value) {
        std::fs::write(dir.join(name), value.to_string()).expect("written");
    }

    #[test]
    fn files_become_contracts_and_a_broken_edit_keeps_the_last_good_one() {
        let dir = std::env::temp_dir().join(format!("ferry-contracts-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let schema = json!({"jsonSchema": {"type": "object", "required": ["id"]}});
        write(&dir, "users.v1.json", &schema);
        write(&dir, "..data", &json!({}));
        std::fs::write(dir.join("notes.txt"), "not a contract").expect("written");
        let (first, problems) = Contracts::default().reload(&dir);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(first.len(), 1);
        let contract = first.get("users.v1").expect("users.v1");
        assert!(contract.check_data("e", &json!({"id": 1})).is_ok());
        assert!(contract.check_data("e", &json!({})).is_err());

        std::fs::write(dir.join("users.v1.json"), "{not json").expect("written");
        let (second, problems) = first.reload(&dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            second
                .get("users.v1")
                .is_some_and(|c| c.check_data("e", &json!({})).is_err()),
            "the last good contract still applies"
        );

        std::fs::remove_file(dir.join("users.v1.json")).expect("removed");
        let (third, problems) = second.reload(&dir);
        assert!(problems.is_empty());
        assert!(third.is_empty(), "a removed file removes its contract");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let violations: Vec<Violation> = (0..200)
            .map(|i| Violation {
                path: format!("/data/é{i}"),
                message: "is wrong".into(),
            })
            .collect();
        let text = describe(&violations);
        assert!(text.len() <= 1024 + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}
