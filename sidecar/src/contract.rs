//! `ferry-sidecar contract check`: a service's event fixtures against its EventTopic's schema,
//! in the service's own CI, with the check the relay makes at publish
//! ([`ferry_common::contract`]). Exits 0 when every event meets the contract, 1 when one does
//! not (each violation printed with its file and path), 2 when the EventTopic or its schema
//! cannot be read.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Subcommand};
use ferry_common::contract::Contract;
use serde_json::Value;

/// `ferry-sidecar contract ...`.
#[derive(Debug, Args)]
pub struct ContractArgs {
    #[command(subcommand)]
    command: ContractCommand,
}

#[derive(Debug, Subcommand)]
enum ContractCommand {
    /// Check event envelopes (JSON files) against an EventTopic's `spec.schema`.
    Check(CheckArgs),
}

/// What `contract check` reads.
#[derive(Debug, Args)]
struct CheckArgs {
    /// The EventTopic manifest (YAML or JSON; several documents allowed) whose `spec.schema`
    /// the events must meet.
    #[arg(long)]
    topic_file: PathBuf,
    /// Which EventTopic of the file (its `metadata.name`), when it holds several.
    #[arg(long)]
    topic: Option<String>,
    /// The JSON Schema document, for an EventTopic that takes it from a ConfigMap
    /// (`schema.configMapRef`); overrides an inline `schema.jsonSchema`.
    #[arg(long)]
    schema_file: Option<PathBuf>,
    /// Event envelopes, one JSON document per file.
    #[arg(required = true)]
    events: Vec<PathBuf>,
}

/// Why the contract could not be read (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an EventTopic manifest: {reason}")]
    Topic { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Schema { path: PathBuf, reason: String },
}

impl ContractArgs {
    /// Runs the subcommand, printing one line per event (and per violation) on stdout.
    pub fn run(self) -> ExitCode {
        let ContractCommand::Check(args) = self.command;
        match args.contract() {
            Ok(contract) => {
                let mut out = std::io::stdout().lock();
                if check_all(&contract, &args.events, &mut out) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("ferry-sidecar contract check: {e}");
                ExitCode::from(2)
            }
        }
    }
}

impl CheckArgs {
    /// The EventTopic's contract: its schema (inline, or `--schema-file`) and event filter.
    fn contract(&self) -> Result<Contract, Error> {
        let topic_path = &self.topic_file;
        let invalid = |reason: String| Error::Topic {
            path: topic_path.clone(),
            reason,
        };
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(&read(topic_path)?).map_err(|e| invalid(e.to_string()))?;
        let name = |d: &Value| {
            d.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let topics: Vec<&Value> = documents
            .iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some("EventTopic"))
            .filter(|d| self.topic.is_none() || name(d) == self.topic)
            .collect();
        let topic = match topics[..] {
            [topic] => topic,
            [] => {
                return Err(invalid(match &self.topic {
                    Some(wanted) => format!("it has no EventTopic named {wanted}"),
                    None => "it holds no EventTopic".into(),
                }));
            }
            _ => {
                let names: Vec<String> = topics.iter().filter_map(|t| name(t)).collect();
                return Err(invalid(format!(
                    "it holds several EventTopics ({}): name one with --topic",
                    names.join(", ")
                )));
            }
        };
        let Some(schema) = topic.pointer("/spec/schema") else {
            return Err(Error::Topic {
                path: topic_path.clone(),
                reason: "it has no spec.schema: there is no contract to check".into(),
            });
        };
        let event = schema.get("event").and_then(Value::as_str);
        let (document, source) = match (&self.schema_file, schema.get("jsonSchema")) {
            (Some(file), _) => {
                let text = read(file)?;
                let document = serde_json::from_str(&text).map_err(|e| Error::Schema {
                    path: file.clone(),
                    reason: format!("not JSON: {e}"),
                })?;
                (document, file.clone())
            }
            (None, Some(inline)) => (inline.clone(), topic_path.clone()),
            (None, None) => {
                return Err(Error::Topic {
                    path: topic_path.clone(),
                    reason: "its schema is in a ConfigMap (schema.configMapRef): pass that document with --schema-file".into(),
                });
            }
        };
        Contract::compile(&document, event).map_err(|e| Error::Schema {
            path: source,
            reason: e.to_string(),
        })
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Checks every file, writing `ok <file>` or `FAIL <file>` and one line per violation; whether
/// all passed. A file that cannot be read or is not JSON fails like a violation.
fn check_all(contract: &Contract, files: &[PathBuf], out: &mut impl std::io::Write) -> bool {
    let mut all = true;
    for file in files {
        let shown = file.display();
        let problems: Vec<String> = match std::fs::read_to_string(file) {
            Err(e) => vec![format!("cannot read it: {e}")],
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Err(e) => vec![format!("not JSON: {e}")],
                Ok(envelope) => contract
                    .check(&envelope)
                    .err()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
        };
        // Output is best effort: a closed stdout must not turn a failure into a pass.
        if problems.is_empty() {
            let _ = writeln!(out, "ok   {shown}");
        } else {
            all = false;
            let _ = writeln!(out, "FAIL {shown}");
            for problem in problems {
                let _ = writeln!(out, "  {problem}");
            }
        }
    }
    all
}
