//! `ferry-operator run` against the real API server when its Lease's namespace does not exist:
//! it stops at once, and says what to create or which flag to pass.

use std::{process::Stdio, time::Duration};

use ferry_testkit::{require_env, unique_name};

#[tokio::test]
async fn a_missing_lease_namespace_says_what_to_create_or_which_flag_to_pass() {
    let env = require_env!();
    let missing = unique_name("no-such-ns");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry-operator"));
    command
        .args([
            "run",
            "--lease-namespace",
            &missing,
            "--metrics-addr",
            "127.0.0.1:0",
            "--kubeconfig",
            env.kubeconfig(),
            "--log-format",
            "text",
        ])
        .envs(env.kafka_args().to_env())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Generous on a loaded machine; the operator gives up at its first request.
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the operator stops by itself")
        .expect("the operator runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must fail: {stderr}");
    for expected in [
        format!("kubectl create namespace {missing}"),
        "--lease-namespace".to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "the error says {expected:?}: {stderr}"
        );
    }
}
