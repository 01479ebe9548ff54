//! The one way a duration is written on a Ferry command line, in a `FERRY_*` variable or in a
//! chart value: humantime's form, a number and a unit, repeatable (`200ms`, `10s`, `5m`, `1h`,
//! `1h30m`, `7d`, `5 minutes`). Every duration flag of every binary uses [`parse`] as its
//! `value_parser` and a `std::time::Duration` field, so `--timeout 10s` and
//! `--resync-interval 5m` read alike.
//!
//! The operator parsed with jiff's friendly format before; the forms its docs and tests use
//! (`30s`, `5m`, `2s`, `1h30m`) parse the same here. Not accepted (jiff-only, used nowhere):
//! ISO 8601 (`PT5M`), commas (`1h, 30m`), `ago`. A bare number has no unit and is refused.
//!
//! ```ignore
//! #[arg(long, env = "FERRY_TIMEOUT", default_value = "10s", value_parser = ferry_common::duration::parse)]
//! timeout: std::time::Duration,
//! ```

use std::time::Duration;

/// Why a flag's value is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{input:?} is not a duration such as 200ms, 10s, 5m or 1h")]
pub struct Error {
    input: String,
    #[source]
    source: humantime::DurationError,
}

/// Parses a duration such as `200ms`, `10s`, `5m`, `1h` or `1h30m`: the `value_parser` of
/// every duration flag.
pub fn parse(input: &str) -> Result<Duration, Error> {
    humantime::parse_duration(input).map_err(|source| Error {
        input: input.to_owned(),
        source,
    })
}

/// Writes a duration back in the form [`parse`] reads (`1m 30s`), for messages and for a
/// child process's flags.
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_used_by_both_binaries_parse() {
        let cases = [
            ("200ms", Duration::from_millis(200)),
            ("10s", Duration::from_secs(10)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("5 minutes", Duration::from_secs(300)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("0s", Duration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).ok(), Some(want), "{input}");
        }
    }

    #[test]
    fn non_durations_are_refused_with_the_input_named() {
        for input in ["soon", "-5s", "", "15", "5 parsecs"] {
            let err = parse(input).expect_err(input);
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_millis(200),
            Duration::from_secs(90),
            Duration::from_secs(7 * 86_400),
        ] {
            assert_eq!(parse(&format(d)).ok(), Some(d));
        }
    }

    #[test]
    fn works_as_a_clap_value_parser() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[arg(long, default_value = "10s", value_parser = parse)]
            timeout: Duration,
        }
        let cli = Cli::try_parse_from(["x", "--timeout=5m"]).expect("parses");
        assert_eq!(cli.timeout, Duration::from_secs(300));
        let cli = Cli::try_parse_from(["x"]).expect("default parses");
        assert_eq!(cli.timeout, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["x", "--timeout=soon"]).is_err());
    }
}
