//! Kafka client settings shared by `ferry-operator` and `ferry-sidecar`.
//!
//! Every binary flattens [`KafkaArgs`] into its command line, so a flag, its `FERRY_KAFKA_*`
//! variable and the `.ferry/env` file written by `make env-up` all mean the same thing. The one
//! way from settings to a client is [`KafkaArgs::client_config`].

use std::fmt;

use clap::{Args, ValueEnum};
use rdkafka::ClientConfig;

/// Why the Kafka settings cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--kafka-security-protocol {protocol} needs --kafka-sasl-mechanism, --kafka-username and --kafka-password"
    )]
    MissingSaslCredentials { protocol: SecurityProtocol },
    #[error("--kafka-option {0:?} is not of the form key=value")]
    BadOption(String),
}

/// `security.protocol` as librdkafka spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka (and the JVM client) expects.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the protocol authenticates with SASL, and so needs a mechanism and credentials.
    pub const fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A password that never shows in `Debug` output, logs or error messages.
pub type Password = crate::redact::Redacted;

/// Fragments of librdkafka setting names whose values are secrets (`sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `ssl_key`,
/// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`): a `--kafka-option` with
/// such a key shows its value redacted in `Debug` (from librdkafka's CONFIGURATION.md).
const SECRET_OPTION_FRAGMENTS: [&str; 5] = [
    "password",
    "secret",
    "key.pem",
    "ssl_key",
    "oauthbearer.config",
];

/// The variable of `--kafka-option`, named like the other `FERRY_KAFKA_*` settings.
pub const OPTIONS_ENV: &str = "FERRY_KAFKA_OPTIONS";

/// Separates the `key=value` pairs of [`OPTIONS_ENV`] (and of one `--kafka-option`). Not `,`:
/// librdkafka list values use it (`debug=broker,topic`, `bootstrap.servers`); not a newline:
/// PEM values (`ssl.ca.pem`) hold them. No librdkafka setting's value needs a `;`.
pub const OPTION_SEPARATOR: char = ';';

/// Whether a librdkafka setting holds a secret.
fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_OPTION_FRAGMENTS.iter().any(|f| key.contains(f))
}

/// Kafka connection settings, the same for every Ferry binary. `Debug` shows no secret: the
/// password and secret `--kafka-option` values print as `<redacted>`.
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Comma-separated host:port list of brokers to bootstrap from.
    #[arg(long = "kafka-bootstrap", env = "FERRY_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,

    /// How to talk to the brokers (librdkafka's `security.protocol`).
    #[arg(
        long = "kafka-security-protocol",
        env = "FERRY_KAFKA_SECURITY_PROTOCOL",
        default_value = "PLAINTEXT",
        ignore_case = true
    )]
    pub security_protocol: SecurityProtocol,

    /// SASL mechanism, e.g. SCRAM-SHA-512 (librdkafka's `sasl.mechanism`).
    #[arg(long = "kafka-sasl-mechanism", env = "FERRY_KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,

    /// SASL user name (the Kafka principal is `User:<name>`).
    #[arg(long = "kafka-username", env = "FERRY_KAFKA_USERNAME")]
    pub username: Option<String>,

    /// SASL password; prefer the variable so it stays out of the process list.
    #[arg(
        long = "kafka-password",
        env = "FERRY_KAFKA_PASSWORD",
        hide_env_values = true,
        value_parser = parse_password
    )]
    pub password: Option<Password>,

    /// Any other librdkafka setting as key=value; repeatable, applied last so it wins. The
    /// variable holds several, separated by `;` (e.g. `linger.ms=5;client.id=shop`); a value
    /// cannot contain `;`. Flags given replace the variable's list.
    #[arg(
        long = "kafka-option",
        env = OPTIONS_ENV,
        value_delimiter = OPTION_SEPARATOR,
        value_parser = parse_option
    )]
    pub options: Vec<(String, String)>,
}

fn parse_password(s: &str) -> Result<Password, std::convert::Infallible> {
    Ok(Password::from(s))
}

impl fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            bootstrap,
            security_protocol,
            sasl_mechanism,
            username,
            password,
            options,
        } = self;
        let options: Vec<(&str, &str)> = options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_option(k) {
                    crate::redact::REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaArgs")
            .field("bootstrap", bootstrap)
            .field("security_protocol", security_protocol)
            .field("sasl_mechanism", sasl_mechanism)
            .field("username", username)
            .field("password", password)
            .field("options", &options)
            .finish()
    }
}

fn parse_option(s: &str) -> Result<(String, String), Error> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(Error::BadOption(s.to_owned())),
    }
}

impl KafkaArgs {
    /// The librdkafka configuration for these settings; producers and consumers add their own
    /// keys on top of it.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("security.protocol", self.security_protocol.as_str())
            // A producer's default is `true` (librdkafka): a typo in a topic name would create
            // the topic on a broker that allows it. Topics are created by the operator only.
            .set("allow.auto.create.topics", "false");
        if self.security_protocol.uses_sasl() {
            let (Some(mechanism), Some(username), Some(password)) =
                (&self.sasl_mechanism, &self.username, &self.password)
            else {
                return Err(Error::MissingSaslCredentials {
                    protocol: self.security_protocol,
                });
            };
            config
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", username)
                .set("sasl.password", password.expose());
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        Ok(config)
    }

    /// The same settings as `FERRY_KAFKA_*` variables, for a child process (a test's binary, a
    /// worker pod) to read back through its flags; `--kafka-option`s as one
    /// [`OPTIONS_ENV`], left out when there are none.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("FERRY_KAFKA_BOOTSTRAP", self.bootstrap.clone()),
            (
                "FERRY_KAFKA_SECURITY_PROTOCOL",
                self.security_protocol.as_str().to_owned(),
            ),
        ];
        let optional = [
            ("FERRY_KAFKA_SASL_MECHANISM", self.sasl_mechanism.clone()),
            ("FERRY_KAFKA_USERNAME", self.username.clone()),
            (
                "FERRY_KAFKA_PASSWORD",
                self.password.as_ref().map(|p| p.expose().to_owned()),
            ),
        ];
        env.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        if !self.options.is_empty() {
            let options: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            env.push((OPTIONS_ENV, options.join(&OPTION_SEPARATOR.to_string())));
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn parse(args: &[&str]) -> Result<KafkaArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied())).map(|c| c.kafka)
    }

    #[test]
    fn sasl_settings_reach_librdkafka() {
        let args = parse(&[
            "--kafka-bootstrap=127.0.0.1:9092",
            "--kafka-security-protocol=sasl_plaintext",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-username=admin",
            "--kafka-password=s3cret",
            "--kafka-option=client.id=ferry-test",
            "--kafka-option=sasl.mechanism=PLAIN",
        ])
        .expect("valid flags");
        let config = args.client_config().expect("complete settings");
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(config.get("sasl.username"), Some("admin"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert_eq!(config.get("client.id"), Some("ferry-test"));
        assert_eq!(config.get("allow.auto.create.topics"), Some("false"));
        // --kafka-option is applied last, so it overrides a first-class flag.
        assert_eq!(config.get("sasl.mechanism"), Some("PLAIN"));
    }

    #[test]
    fn sasl_without_credentials_is_refused() {
        let args = parse(&[
            "--kafka-bootstrap=b:9092",
            "--kafka-security-protocol=SASL_PLAINTEXT",
        ])
        .expect("valid flags");
        let err = args.client_config().expect_err("credentials are missing");
        assert!(err.to_string().contains("--kafka-username"), "{err}");
    }

    #[test]
    fn plaintext_sets_no_sasl_keys() {
        let config = parse(&["--kafka-bootstrap=b:9092", "--kafka-username=ignored"])
            .expect("valid flags")
            .client_config()
            .expect("plaintext needs no credentials");
        assert_eq!(config.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(config.get("sasl.username"), None);
    }

    #[test]
    fn malformed_option_is_refused() {
        assert!(parse(&["--kafka-bootstrap=b:9092", "--kafka-option=novalue"]).is_err());
        assert!(parse(&["--kafka-bootstrap=b:9092", "--kafka-option==v"]).is_err());
    }

    #[test]
    fn to_env_round_trips_through_the_flags_variables() {
        let args = parse(&[
            "--kafka-bootstrap=b:9092",
            "--kafka-security-protocol=SASL_SSL",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-username=u",
            "--kafka-password=p",
        ])
        .expect("valid flags");
        let env = args.to_env();
        assert_eq!(env.len(), 5);
        // Every name is one the flags read, with the value they would read.
        let lookup = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(lookup("FERRY_KAFKA_BOOTSTRAP"), Some("b:9092"));
        assert_eq!(lookup("FERRY_KAFKA_SECURITY_PROTOCOL"), Some("SASL_SSL"));
        assert_eq!(lookup("FERRY_KAFKA_SASL_MECHANISM"), Some("SCRAM-SHA-512"));
        assert_eq!(lookup("FERRY_KAFKA_USERNAME"), Some("u"));
        assert_eq!(lookup("FERRY_KAFKA_PASSWORD"), Some("p"));
        let plain = parse(&["--kafka-bootstrap=b:9092"])
            .expect("valid")
            .to_env();
        assert_eq!(plain.len(), 2, "unset settings are left out: {plain:?}");
    }

    #[test]
    fn options_round_trip_through_their_variable() {
        let args = parse(&[
            "--kafka-bootstrap=b:9092",
            "--kafka-option=linger.ms=5",
            "--kafka-option=debug=broker,topic",
        ])
        .expect("valid flags");
        let env = args.to_env();
        let (_, options) = env
            .iter()
            .find(|(k, _)| *k == OPTIONS_ENV)
            .expect("options are passed on");
        assert_eq!(options, "linger.ms=5;debug=broker,topic");
        // Read back as a child's flags would read the variable.
        let back = parse(&[
            "--kafka-bootstrap=b:9092",
            &format!("--kafka-option={options}"),
        ])
        .expect("the variable's form parses");
        assert_eq!(back.options, args.options);
    }

    #[test]
    fn password_and_secret_options_are_redacted_in_debug() {
        let args = parse(&[
            "--kafka-bootstrap=b:9092",
            "--kafka-password=hunter2",
            "--kafka-option=sasl.password=hunter2",
            "--kafka-option=ssl.key.pem=hunter2",
            "--kafka-option=sasl.oauthbearer.client.secret=hunter2",
            "--kafka-option=linger.ms=5",
        ])
        .expect("valid flags");
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(r#"("linger.ms", "5")"#), "{shown}");
        assert!(
            shown.contains(r#"("sasl.password", "<redacted>")"#),
            "{shown}"
        );
    }
}
