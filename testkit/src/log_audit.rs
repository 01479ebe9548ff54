//! `make test`'s log audit: no log line of a whole test run holds a password or a DSN with its
//! password (issue: observability, logs).
//!
//! Two kinds of finding. The environment's own secrets, looked up by value wherever they appear:
//! its Kafka users' passwords and the password in its PostgreSQL DSNs (which every relay and
//! worker test hands a Ferry binary). And shapes that carry a secret whatever its value: a URL
//! whose user info has a password (`postgresql://app:s3cret@db/app`), and a `sasl.password`
//! setting with a value (librdkafka's and the binaries' configuration dumps must redact it) —
//! these catch the passwords the operator generates for each principal, which the audit cannot
//! know.
//!
//! A finding names the file, the line and what leaked, never the secret itself.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
};

/// The environment variables whose values are secrets.
const SECRET_VARS: [&str; 2] = ["FERRY_KAFKA_PASSWORD", "FERRY_KAFKA_NOACL_PASSWORD"];
/// The environment variables that hold DSNs whose password is a secret.
const DSN_VARS: [&str; 2] = ["FERRY_DATABASE_URL", "FERRY_NODE_DATABASE_URL"];
/// Values a redacting formatter writes instead of a secret.
const REDACTED: [&str; 4] = ["<redacted>", "[redacted]", "***", "[hidden]"];
/// Shorter secrets are not searched for by value: they would match by chance.
const MIN_SECRET_LEN: usize = 8;

/// What a log line must not hold.
#[derive(Debug, Default)]
pub struct Secrets {
    /// (what it is, its value).
    known: Vec<(String, String)>,
}

/// One line that leaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// What leaked: a variable's name, or the shape.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.what)
    }
}

impl Secrets {
    /// The environment's secrets, from variables as `.ferry/env` exports them.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Secrets {
        let mut known = Vec::new();
        for name in SECRET_VARS {
            if let Some(value) = var(name) {
                known.push((name.to_owned(), value));
            }
        }
        for name in DSN_VARS {
            if let Some(password) = var(name).as_deref().and_then(url_password) {
                known.push((format!("the password of {name}"), password.to_owned()));
            }
        }
        known.retain(|(_, value)| value.len() >= MIN_SECRET_LEN);
        Secrets { known }
    }

    /// How many secrets are looked for by value.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// What `line` leaks, if anything.
    pub fn leaks(&self, line: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .known
            .iter()
            .filter(|(_, value)| line.contains(value.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        if url_with_password(line) {
            found.push("a URL with its password".to_owned());
        }
        if sasl_password_value(line) {
            found.push("a sasl.password value".to_owned());
        }
        found
    }

    /// Reads every file under `roots` (recursively; a missing root is skipped) and returns the
    /// number of files read and the lines that leak.
    pub fn audit(&self, roots: &[PathBuf]) -> std::io::Result<(usize, Vec<Finding>)> {
        let mut files = Vec::new();
        for root in roots {
            collect_files(root, &mut files)?;
        }
        let mut findings = Vec::new();
        for file in &files {
            let reader = BufReader::new(std::fs::File::open(file)?);
            for (i, line) in reader.split(b'\n').enumerate() {
                let line = line?;
                for what in self.leaks(&String::from_utf8_lossy(&line)) {
                    findings.push(Finding {
                        file: file.clone(),
                        line: i + 1,
                        what,
                    });
                }
            }
        }
        Ok((files.len(), findings))
    }
}

fn collect_files(path: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            collect_files(&entry, into)?;
        }
    } else if meta.is_file() {
        into.push(path.to_owned());
    }
    Ok(())
}

/// The password in a URL's user info (`scheme://user:password@host`), if it has one.
fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let end = rest.find(|c: char| c == '/' || c == '@' || c.is_whitespace())?;
    if !rest[end..].starts_with('@') {
        return None;
    }
    let (_, password) = rest[..end].split_once(':')?;
    Some(password).filter(|p| !p.is_empty())
}

/// Whether any URL in `line` carries a password that is not redacted.
fn url_with_password(line: &str) -> bool {
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        // The scheme and the user info of this URL: from the word before `://`.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |j| j + 1);
        if url_password(&rest[start..]).is_some_and(|p| !is_redacted(p)) {
            return true;
        }
        rest = &rest[i + 3..];
    }
    false
}

/// Whether `line` sets `sasl.password` to a value that is not redacted.
fn sasl_password_value(line: &str) -> bool {
    let key = "sasl.password";
    let mut rest = line;
    while let Some(i) = rest.find(key) {
        let after = &rest[i + key.len()..];
        // `key = value`, `key: value`, `"key": "value"`, `("key", "value")`.
        let quoted = |c: char| c.is_whitespace() || c == '"' || c == '\'';
        let separator = after.trim_start_matches(quoted);
        if let Some(value) = separator.strip_prefix(['=', ':', ',']) {
            let value = value.trim_start_matches(quoted);
            if !value.is_empty() && !is_redacted(value) && !value.starts_with([')', ']', '}']) {
                return true;
            }
        }
        rest = after;
    }
    false
}

fn is_redacted(value: &str) -> bool {
    REDACTED.iter().any(|r| value.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::from_vars(|name| match name {
            "FERRY_KAFKA_PASSWORD" => Some("5f0c2a9b948f08a39a572cd7f137967b".into()),
            "FERRY_DATABASE_URL" => {
                Some("postgresql://postgres:9d1e0f77aa3c@127.0.0.1:55432/postgres".into())
            }
            "FERRY_NODE_DATABASE_URL" => {
                Some("postgresql://postgres@10.244.0.1:55432/postgres".into())
            }
            _ => None,
        })
    }

    #[test]
    fn the_environments_secrets_are_found_by_value_and_named() {
        let s = secrets();
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            s.leaks("connecting as admin with 5f0c2a9b948f08a39a572cd7f137967b"),
            vec!["FERRY_KAFKA_PASSWORD"]
        );
        // The DSN's password alone, without its URL around it.
        assert_eq!(
            s.leaks(r#"{"password":"9d1e0f77aa3c"}"#),
            vec!["the password of FERRY_DATABASE_URL"]
        );
    }

    #[test]
    fn a_url_with_a_password_is_found_whatever_the_password() {
        let s = Secrets::default();
        for line in [
            "relay started database=postgresql://app:hunter2@db:5432/app",
            r#"{"dsn":"postgres://order_service:order-service-pw@postgres/order_service"}"#,
            "error connecting to http://user:pw@proxy:3128/",
        ] {
            assert_eq!(s.leaks(line), vec!["a URL with its password"], "{line}");
        }
    }

    #[test]
    fn urls_without_a_password_or_with_it_redacted_are_fine() {
        let s = Secrets::default();
        for line in [
            "database=postgresql://postgres@127.0.0.1:55432/postgres",
            "database=postgresql://app:<redacted>@db/app",
            "bootstrap SASL_PLAINTEXT://127.0.0.1:9092 ready",
            "GET https://127.0.0.1:6443/api/v1/pods?labelSelector=a@b",
            "mailto user@example.com at http://host:80/x",
            "--storage-driver-password=\"root\"",
        ] {
            assert!(s.leaks(line).is_empty(), "{line}: {:?}", s.leaks(line));
        }
    }

    #[test]
    fn a_sasl_password_setting_leaks_unless_redacted() {
        let s = Secrets::default();
        assert_eq!(
            s.leaks(r#"config [("sasl.password", "Zx81-generated")]"#),
            vec!["a sasl.password value"]
        );
        assert_eq!(
            s.leaks("sasl.password = Zx81"),
            vec!["a sasl.password value"]
        );
        for line in [
            r#"config [("sasl.password", "<redacted>")]"#,
            "sasl.password = [hidden]",
            "the sasl.password option (librdkafka) is set from the Secret",
        ] {
            assert!(s.leaks(line).is_empty(), "{line}");
        }
    }

    #[test]
    fn the_audit_reads_every_file_below_its_roots_and_names_file_and_line() {
        let root = std::env::temp_dir().join(crate::unique_name("log-audit"));
        std::fs::create_dir_all(root.join("tests")).expect("dirs");
        std::fs::write(root.join("kafka.log"), "started\nstill fine\n").expect("write");
        std::fs::write(
            root.join("tests/relay-1.log"),
            "ok\nusing postgresql://postgres:9d1e0f77aa3c@127.0.0.1:55432/postgres\n",
        )
        .expect("write");
        let (files, findings) = secrets()
            .audit(&[root.clone(), root.join("missing")])
            .expect("audit");
        assert_eq!(files, 2);
        let file = root.join("tests/relay-1.log");
        assert_eq!(
            findings,
            vec![
                Finding {
                    file: file.clone(),
                    line: 2,
                    what: "the password of FERRY_DATABASE_URL".into()
                },
                Finding {
                    file,
                    line: 2,
                    what: "a URL with its password".into()
                },
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
