//! `ferry-sidecar contract check` as a service's CI runs it: the real binary on the shop's
//! EventTopic manifest and fixture, and on broken fixtures, schemas and manifests.

use std::{path::PathBuf, process::Output};

use ferry_testkit::TempPath;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-sidecar");

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/shop")
}

fn check(args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(["contract", "check"])
        .args(args)
        .output()
        .expect("ferry-sidecar runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A file under a fresh temporary path, removed on drop.
fn file(name: &str, text: &str) -> TempPath {
    let path = TempPath::new(name);
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn the_shops_fixture_meets_its_contract_and_broken_events_fail_with_their_paths() {
    let topics = examples().join("k8s/topics.yaml");
    let fixture = examples().join("user-service/contracts/user-created.json");
    let topics = topics.to_str().expect("utf-8");
    let ok = check(&[
        "--topic-file",
        topics,
        "--topic",
        "users-v1",
        fixture.to_str().expect("utf-8"),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).starts_with("ok "), "{}", stdout(&ok));

    let bad_email = file(
        "bad-email.json",
        r#"{"event": "user.created", "id": "e", "data": {"user_id": "5f0c2d8e-6b1a-4c3e-8f7d-9a2b4c6d8e01", "email": "not an address"}}"#,
    );
    let missing = file(
        "missing.json",
        r#"{"event": "user.created", "id": "e", "data": {"user_id": 7}}"#,
    );
    let other_event = file(
        "other.json",
        r#"{"event": "user.deleted", "id": "e", "data": {"user_id": 7}}"#,
    );
    let tombstone = file("tombstone.json", "null");
    let not_json = file("not-json.json", "{");
    let out = check(&[
        "--topic-file",
        topics,
        "--topic",
        "users-v1",
        bad_email.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
        other_event.to_str().expect("utf-8"),
        tombstone.to_str().expect("utf-8"),
        not_json.to_str().expect("utf-8"),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let verdict = |p: &TempPath| {
        lines
            .iter()
            .position(|l| l.ends_with(&p.display().to_string()))
            .map(|i| {
                (
                    lines[i].split_whitespace().next().unwrap_or_default(),
                    lines.get(i + 1).copied().unwrap_or_default(),
                )
            })
            .expect("a line per file")
    };
    let (v, detail) = verdict(&bad_email);
    assert_eq!(v, "FAIL");
    assert!(detail.contains("/data/email"), "{text}");
    let (v, _) = verdict(&missing);
    assert_eq!(v, "FAIL");
    assert!(
        text.contains("/data/user_id"),
        "the wrong type is named: {text}"
    );
    assert!(text.contains("\"email\" is a required property"), "{text}");
    assert_eq!(
        verdict(&other_event).0,
        "ok",
        "another event is not this contract's"
    );
    assert_eq!(verdict(&tombstone).0, "ok", "a tombstone passes");
    let (v, detail) = verdict(&not_json);
    assert_eq!(v, "FAIL");
    assert!(detail.contains("not JSON"), "{text}");
}

#[test]
fn an_unreadable_contract_exits_2_and_says_why() {
    let fixture = examples().join("user-service/contracts/user-created.json");
    let fixture = fixture.to_str().expect("utf-8");
    let topics = examples().join("k8s/topics.yaml");
    let topics = topics.to_str().expect("utf-8");

    let several = check(&["--topic-file", topics, fixture]);
    assert_eq!(several.status.code(), Some(2));
    assert!(
        stderr(&several).contains("name one with --topic"),
        "{}",
        stderr(&several)
    );

    let no_schema = check(&["--topic-file", topics, "--topic", "orders-v1", fixture]);
    assert_eq!(no_schema.status.code(), Some(2));
    assert!(
        stderr(&no_schema).contains("no spec.schema"),
        "{}",
        stderr(&no_schema)
    );

    let from_config_map = file(
        "topic.yaml",
        "apiVersion: ferry.dev/v1alpha1\nkind: EventTopic\nmetadata: {name: t}\nspec:\n  schema:\n    configMapRef: {name: schemas, key: t.json}\n",
    );
    let path = from_config_map.to_str().expect("utf-8");
    let needs_file = check(&["--topic-file", path, fixture]);
    assert_eq!(needs_file.status.code(), Some(2));
    assert!(
        stderr(&needs_file).contains("--schema-file"),
        "{}",
        stderr(&needs_file)
    );

    let broken_schema = file("schema.json", r#"{"type": "no-such-type"}"#);
    let broken = check(&[
        "--topic-file",
        path,
        "--schema-file",
        broken_schema.to_str().expect("utf-8"),
        fixture,
    ]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        stderr(&broken).contains("not a valid JSON Schema"),
        "{}",
        stderr(&broken)
    );

    let good_schema = file(
        "schema.json",
        r#"{"type": "object", "required": ["email"]}"#,
    );
    let passes = check(&[
        "--topic-file",
        path,
        "--schema-file",
        good_schema.to_str().expect("utf-8"),
        fixture,
    ]);
    assert_eq!(passes.status.code(), Some(0), "{}", stdout(&passes));
}
