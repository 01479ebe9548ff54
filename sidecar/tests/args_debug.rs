//! `Debug` of the sidecar's parsed command line shows no secret: the DSNs of `relay
//! --database-url` and `worker --idempotency-database-url`, the Kafka password and secret
//! `--kafka-option` values all redact themselves, so a `{:?}` in a log line or a panic message
//! leaks nothing.

use clap::Parser;
use ferry_sidecar::cli::Cli;

/// Every secret a test passes contains this, so one search finds any of them.
const MARK: &str = "hunter2";

fn debug_of(args: &[&str]) -> String {
    let cli = Cli::try_parse_from(args.iter().copied()).expect("valid arguments");
    format!("{cli:?}")
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(MARK), "a secret shows in Debug: {text}");
    assert!(
        text.contains("redacted"),
        "the check reads real output: {text}"
    );
}

const KAFKA: [&str; 5] = [
    "--kafka-bootstrap=b:9092",
    "--kafka-username=svc",
    "--kafka-password=pw-hunter2",
    "--kafka-option=sasl.password=opt-hunter2",
    "--kafka-option=ssl.key.password=key-hunter2",
];

#[test]
fn relay_arguments_redact_the_database_url_and_kafka_secrets() {
    let mut args = vec![
        "ferry-sidecar",
        "relay",
        "--database-url=postgresql://app:db-hunter2@db:5432/app",
    ];
    args.extend(KAFKA);
    let text = debug_of(&args);
    assert_no_secret(&text);
    assert!(text.contains("b:9092"), "other settings still show: {text}");
}

#[test]
fn worker_arguments_redact_the_idempotency_database_url_and_kafka_secrets() {
    let mut args = vec![
        "ferry-sidecar",
        "worker",
        "--topics=a",
        "--group=ns.g",
        "--target-url=http://svc:8000/events",
        "--dead-letter-topic=ns.g.dlq",
        "--idempotency-database-url=postgresql://app:db-hunter2@db:5432/app",
    ];
    args.extend(KAFKA);
    assert_no_secret(&debug_of(&args));
}
