//! The chart's alerts and dashboard (issue #17): the PrometheusRule as Helm renders it passes
//! `promtool check rules`, and `promtool test rules` (charts/ferry/files/alerts-test.yaml) shows
//! each alert firing on the synthetic series that mean trouble and quiet on healthy ones; the
//! dashboard ConfigMap holds valid JSON whose every panel queries something, and the API server
//! accepts it. That each metric they query exists in a scrape of the running binaries is
//! checked by the tests that scrape them (`assert_chart_metrics_exposed` in relay_publish,
//! worker_delivery and consumer_scaling).

use std::process::Command;

use ferry_testkit::{
    TempNamespace, TestEnv, chart_metrics, repo_root, require_env, succeed, succeed_with_input,
};
use serde_json::Value;

fn chart() -> String {
    repo_root().join("charts/ferry").display().to_string()
}

/// `helm template` of one template with `set`, released into `namespace`.
fn render(env: &TestEnv, template: &str, set: &str, namespace: &str) -> String {
    let mut helm = env.command("helm");
    helm.args(["template", "ferry", &chart(), "-n", namespace, "--set", set]);
    helm.args(["--show-only", template]);
    succeed(helm)
}

/// The lines of `text` after the one equal to `marker`, without `indent` leading spaces.
fn block_after(text: &str, marker: &str, indent: usize) -> String {
    let mut lines = text.lines().skip_while(|l| *l != marker);
    assert!(lines.next().is_some(), "no line {marker:?} in:\n{text}");
    lines
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn promtool(env: &TestEnv, args: &[&str], dir: &std::path::Path) -> String {
    let mut promtool: Command = env.command("promtool");
    promtool.args(args).current_dir(dir);
    succeed(promtool)
}

#[test]
fn the_rendered_alert_rules_pass_promtool_and_fire_on_synthetic_series() {
    let env = require_env!();
    let rule = render(
        env,
        "templates/prometheusrule.yaml",
        "metrics.prometheusRule.enabled=true,metrics.prometheusRule.labels.release=prometheus",
        "monitoring",
    );
    assert!(rule.contains("kind: PrometheusRule"), "{rule}");
    assert!(rule.contains("release: prometheus"), "{rule}");
    let dir = std::env::temp_dir().join(ferry_testkit::unique_name("alerts"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The PrometheusRule's spec is a rules file: check and test what Helm rendered.
    std::fs::write(dir.join("alerts.yaml"), block_after(&rule, "spec:", 2)).expect("rules");
    std::fs::copy(
        repo_root().join("charts/ferry/files/alerts-test.yaml"),
        dir.join("alerts-test.yaml"),
    )
    .expect("rule tests");
    let checked = promtool(env, &["check", "rules", "alerts.yaml"], &dir);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = promtool(env, &["test", "rules", "alerts-test.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_dashboard_is_valid_json_that_the_api_server_accepts() {
    let env = require_env!();
    let ns = TempNamespace::create(env).await.expect("namespace");
    let map = render(
        env,
        "templates/dashboard.yaml",
        "metrics.dashboard.enabled=true",
        ns.name(),
    );
    assert!(map.contains("grafana_dashboard: \"1\""), "{map}");
    let json = block_after(&map, "  ferry.json: |-", 4);
    let dashboard: Value = serde_json::from_str(&json).expect("the dashboard is JSON");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("charts/ferry/files/dashboard.json"))
            .expect("dashboard.json"),
    )
    .expect("dashboard.json is JSON");
    assert_eq!(dashboard, file, "the ConfigMap carries the file unchanged");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("ferry_"))),
            "every panel queries a Ferry metric: {panel}"
        );
    }
    for prefix in ["ferry_operator_", "ferry_relay_", "ferry_worker_"] {
        assert!(
            !chart_metrics(prefix).is_empty(),
            "nothing of {prefix} is watched"
        );
    }
    let mut kubectl = env.command("kubectl");
    kubectl.args(["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"]);
    let applied = succeed_with_input(kubectl, &map);
    assert!(applied.contains("configmap/ferry-dashboard"), "{applied}");
}
