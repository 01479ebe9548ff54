//! Secrets that never show in `Debug` output, logs, panics or error messages: passwords and
//! DSNs that carry one (`postgresql://user:password@host/db`).
//!
//! Every argument struct of the binaries derives `Debug`, and a `{:?}` of it in a log line or a
//! panic message must leak nothing: a field that holds a secret is a [`Redacted`], whose
//! `Debug` prints `<redacted>`. The value comes out only through [`Redacted::expose`], at the
//! one place that hands it to a client library. clap parses it like a `String` (it is
//! `From<String>`), so a flag changes only its field's type.

use std::fmt;

/// What `Debug` prints instead of the secret.
pub const REDACTED: &str = "<redacted>";

/// A secret string (a password, or a DSN that may carry one).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// The secret itself, for handing to a client library and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret itself, owned, for a client library that takes a `String`.
    pub fn into_exposed(self) -> String {
        self.0
    }
}

impl From<String> for Redacted {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Redacted {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_expose_returns_it() {
        let dsn = Redacted::from("postgresql://app:hunter2@db/app");
        assert_eq!(format!("{dsn:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(dsn.clone())), "Some(<redacted>)");
        assert_eq!(dsn.expose(), "postgresql://app:hunter2@db/app");
        assert_eq!(dsn.into_exposed(), "postgresql://app:hunter2@db/app");
    }

    #[test]
    fn clap_parses_it_like_a_string() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[arg(long)]
            database_url: Redacted,
            #[arg(long)]
            other_url: Option<Redacted>,
        }
        let cli = Cli::try_parse_from(["x", "--database-url=postgresql://u:hunter2@h/d"])
            .expect("parses");
        assert_eq!(cli.database_url.expose(), "postgresql://u:hunter2@h/d");
        assert!(cli.other_url.is_none());
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
