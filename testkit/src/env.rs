//! Reading `.ferry/env`, the file of shell `export`s that `make env-up` writes.

use std::{collections::HashMap, path::PathBuf, sync::OnceLock};

use anyhow::{Context, bail};
use ferry_common::kafka::{KafkaArgs, Password, SecurityProtocol};
use rand::{Rng, distr::Alphanumeric};
use rdkafka::ClientConfig;

/// The addresses and credentials of the running test environment.
#[derive(Debug)]
pub struct TestEnv {
    pub(crate) vars: HashMap<String, String>,
}

/// Whether this run is CI's, where a missing service is a failure and never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `prefix` plus a random lowercase suffix: a valid name for a Kubernetes namespace, a Kafka
/// topic or group, and a PostgreSQL identifier alike.
pub fn unique_name(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{prefix}-{suffix}")
}

impl TestEnv {
    /// The environment, read once per test binary. `None` (after printing why) when it is
    /// missing outside CI; a panic when it is missing in CI.
    pub fn get() -> Option<&'static TestEnv> {
        static ENV: OnceLock<Result<TestEnv, String>> = OnceLock::new();
        match ENV.get_or_init(|| Self::load().map_err(|e| format!("{e:#}"))) {
            Ok(env) => Some(env),
            Err(reason) if in_ci() => {
                panic!(
                    "CI=true but the Ferry test environment is missing: {reason}; run `make env-up`"
                )
            }
            Err(reason) => {
                eprintln!("skipped: no Ferry test environment ({reason}); run `make env-up`");
                None
            }
        }
    }

    /// Where `.ferry/env` is: `$FERRY_ENV_FILE`, else at the top of the workspace.
    pub fn path() -> PathBuf {
        match std::env::var_os("FERRY_ENV_FILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ferry/env"),
        }
    }

    fn load() -> anyhow::Result<TestEnv> {
        let path = Self::path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let vars = parse_exports(&text);
        for required in [
            "KUBECONFIG",
            "FERRY_KAFKA_BOOTSTRAP",
            "FERRY_KAFKA_USERNAME",
            "FERRY_KAFKA_PASSWORD",
            "FERRY_DATABASE_URL",
        ] {
            if !vars.contains_key(required) {
                bail!("{} does not set {required}", path.display());
            }
        }
        Ok(TestEnv { vars })
    }

    /// A variable from `.ferry/env`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> &str {
        self.var(name).unwrap_or_default()
    }

    /// The Kafka settings of the admin (a super user), as a binary would parse them.
    pub fn kafka_args(&self) -> KafkaArgs {
        self.kafka_args_as(
            self.required("FERRY_KAFKA_USERNAME"),
            self.required("FERRY_KAFKA_PASSWORD"),
        )
    }

    /// The Kafka settings of another SCRAM user on the same listener.
    pub fn kafka_args_as(&self, username: &str, password: &str) -> KafkaArgs {
        let protocol = match self.var("FERRY_KAFKA_SECURITY_PROTOCOL") {
            Some(p) if p.eq_ignore_ascii_case("SASL_PLAINTEXT") => SecurityProtocol::SaslPlaintext,
            Some(p) if p.eq_ignore_ascii_case("SASL_SSL") => SecurityProtocol::SaslSsl,
            Some(p) if p.eq_ignore_ascii_case("SSL") => SecurityProtocol::Ssl,
            _ => SecurityProtocol::Plaintext,
        };
        KafkaArgs {
            bootstrap: self.required("FERRY_KAFKA_BOOTSTRAP").to_owned(),
            security_protocol: protocol,
            sasl_mechanism: self.var("FERRY_KAFKA_SASL_MECHANISM").map(str::to_owned),
            username: Some(username.to_owned()),
            password: Some(Password::from(password.to_owned())),
            options: Vec::new(),
        }
    }

    /// An rdkafka configuration for the admin user.
    pub fn kafka_config(&self) -> ClientConfig {
        self.kafka_args()
            .client_config()
            .expect(".ferry/env has complete Kafka settings")
    }

    /// A superuser DSN for the test PostgreSQL.
    pub fn database_url(&self) -> &str {
        self.required("FERRY_DATABASE_URL")
    }

    /// The kubeconfig of the test control plane (cluster admin).
    pub fn kubeconfig(&self) -> &str {
        self.required("KUBECONFIG")
    }
}

/// Parses `export KEY=value` lines; values may be single- or double-quoted. Lines that refer
/// to other variables (like `PATH=...:$PATH`) are kept verbatim; tests do not need them.
fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(value);
            (key.trim().to_owned(), unquoted.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_bare_exports() {
        let vars = parse_exports(
            "# comment\nexport A='x y'\nexport B=\"z\"\nexport C=plain\nexport D='a=b'\nnot an export\n",
        );
        assert_eq!(vars["A"], "x y");
        assert_eq!(vars["B"], "z");
        assert_eq!(vars["C"], "plain");
        assert_eq!(vars["D"], "a=b");
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(a.starts_with("t-") && a.len() == 12);
        assert!(
            a.chars()
                .all(|c| c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
