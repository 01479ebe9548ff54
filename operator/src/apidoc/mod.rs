//! `ferry-operator apidoc`: the API reference (`docs/api.md`) generated from the CRDs.
//!
//! ```text
//!  operator/src/api ──crdgen──▶ crds/*.yaml ──apidoc──▶ docs/api.md
//!                                  (read)    schema.rs: sections and fields
//!                                            markdown.rs: tables
//! ```
//!
//! It reads whatever `crds/*.yaml` holds (every `CustomResourceDefinition`, and every
//! `ValidatingAdmissionPolicy` shipped beside them; other documents are skipped), so a new
//! CRD is documented without touching this module. `make generate` writes the page;
//! `make generate-check` renders it from freshly generated CRDs and fails on any difference.

mod markdown;
mod schema;

use std::path::{Path, PathBuf};

use k8s_openapi::{
    api::admissionregistration::v1::ValidatingAdmissionPolicy,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};

/// Why the reference could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not YAML")]
    Parse {
        path: String,
        /// Boxed: saphyr's error is large, and every `Result` of this module would carry it.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{path} holds a {kind} that does not parse as one")]
    Shape {
        path: String,
        kind: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{dir} holds no CustomResourceDefinition")]
    NoCrds { dir: String },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Errors of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The documents of a CRD directory that the reference describes.
#[derive(Debug, Default)]
pub struct Documents {
    /// Every CRD, ordered by kind.
    pub crds: Vec<CustomResourceDefinition>,
    /// Every admission policy, ordered by name.
    pub policies: Vec<ValidatingAdmissionPolicy>,
}

impl Documents {
    /// Sorts the documents out of YAML texts (`(path, text)`, each one or more documents).
    pub fn parse<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut documents = Self::default();
        for (path, text) in files {
            let values: Vec<serde_json::Value> =
                serde_saphyr::from_multiple(text).map_err(|source| Error::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            for value in values {
                let kind = value
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let shape = |source| Error::Shape {
                    path: path.to_owned(),
                    kind: kind.clone(),
                    source,
                };
                match kind.as_str() {
                    "CustomResourceDefinition" => documents
                        .crds
                        .push(serde_json::from_value(value.clone()).map_err(shape)?),
                    "ValidatingAdmissionPolicy" => documents
                        .policies
                        .push(serde_json::from_value(value.clone()).map_err(shape)?),
                    _ => {}
                }
            }
        }
        documents
            .crds
            .sort_by(|a, b| a.spec.names.kind.cmp(&b.spec.names.kind));
        documents
            .policies
            .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(documents)
    }

    /// The reference as Markdown.
    pub fn render(&self) -> String {
        markdown::render(&self.crds, &self.policies)
    }
}

/// Reads every `*.yaml` of `dir` (in file-name order) and renders the reference.
pub fn render_dir(dir: &Path) -> Result<String> {
    let read = |path: &Path, source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| read(dir, source))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|source| read(dir, source))?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    paths.sort();
    let texts = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|source| read(p, source))?;
            Ok((p.display().to_string(), text))
        })
        .collect::<Result<Vec<_>>>()?;
    let documents = Documents::parse(texts.iter().map(|(p, t)| (p.as_str(), t.as_str())))?;
    if documents.crds.is_empty() {
        return Err(Error::NoCrds {
            dir: dir.display().to_string(),
        });
    }
    Ok(documents.render())
}

/// Renders the reference from `crd_dir` into `out`.
pub fn write(crd_dir: &Path, out: &Path) -> Result<()> {
    let text = render_dir(crd_dir)?;
    std::fs::write(out, text).map_err(|source| Error::Write {
        path: out.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdgen;

    /// Ferry's own generated files, as `crds/` holds them.
    fn generated() -> Documents {
        let files = crdgen::files().expect("crdgen renders");
        Documents::parse(files.iter().map(|(p, t)| (p.as_str(), t.as_str()))).expect("parses")
    }

    #[test]
    fn every_crd_and_the_policy_are_read_from_the_generated_files() {
        let documents = generated();
        let kinds: Vec<&str> = documents
            .crds
            .iter()
            .map(|c| c.spec.names.kind.as_str())
            .collect();
        assert_eq!(kinds, ["EventConsumer", "EventReplay", "EventTopic"]);
        assert_eq!(documents.crds, {
            let mut crds = crdgen::crds();
            crds.sort_by(|a, b| a.spec.names.kind.cmp(&b.spec.names.kind));
            crds
        });
        assert_eq!(documents.policies, [crate::admission::policy()]);
    }

    /// Every field the schemas declare has a row, with a description; every CEL message and
    /// every default shows up.
    #[test]
    fn the_reference_covers_every_field_default_and_rule_message_of_ferrys_crds() {
        let documents = generated();
        let text = documents.render();
        for crd in &documents.crds {
            let kind = &crd.spec.names.kind;
            let root = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("a schema");
            for rule in root.x_kubernetes_validations.iter().flatten() {
                let message = rule
                    .message
                    .as_deref()
                    .expect("every Ferry rule has a message");
                assert!(
                    text.contains(message),
                    "{kind}: lacks the rule message {message:?}"
                );
            }
            for section in schema::sections(root) {
                for rule in &section.rules {
                    assert!(
                        text.contains(&markdown_text(&rule.message)),
                        "{kind} {}: lacks {:?}",
                        section.path,
                        rule.message
                    );
                }
                for field in &section.fields {
                    let description = field.description.as_deref().unwrap_or_default();
                    assert!(
                        !description.trim().is_empty(),
                        "{kind} {}.{} has no description: add a doc comment in operator/src/api",
                        section.path,
                        field.name
                    );
                    assert!(
                        text.contains(&format!("| `{}`", field.name)),
                        "{kind} {}.{} has no row",
                        section.path,
                        field.name
                    );
                    if let Some(default) = &field.default {
                        assert!(
                            text.contains(&format!("`{default}`")),
                            "{kind}: default {default}"
                        );
                    }
                    for rule in &field.rules {
                        assert!(
                            text.contains(&markdown_text(&rule.message)),
                            "{kind} {}.{}: lacks {:?}",
                            section.path,
                            field.name,
                            rule.message
                        );
                    }
                }
            }
        }
        assert!(text.contains("## Admission policy `ferry-tenancy.ferry.dev`"));
    }

    /// How a message appears in a table cell.
    fn markdown_text(message: &str) -> String {
        message
            .replace('_', "\\_")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('|', "\\|")
    }

    #[test]
    fn documents_of_other_kinds_are_skipped_and_a_directory_without_crds_is_an_error() {
        let documents = Documents::parse([(
            "binding.yaml",
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )])
        .expect("parses");
        assert!(documents.crds.is_empty() && documents.policies.is_empty());
        let dir = std::env::temp_dir().join(format!("ferry-apidoc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        assert!(matches!(render_dir(&dir), Err(Error::NoCrds { .. })));
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_broken_file_names_itself() {
        let error =
            Documents::parse([("crds/x.yaml", "kind: CustomResourceDefinition\nspec: 3\n")])
                .expect_err("does not parse as a CRD");
        assert!(error.to_string().contains("crds/x.yaml"), "{error}");
    }
}
