//! The metrics the chart's alert rules and dashboard query, so that tests which scrape a
//! running binary can check each one exists there: a renamed metric would otherwise leave an
//! alert that can never fire and a panel that stays empty.

use std::collections::BTreeSet;

use crate::repo_root;

/// Every `ferry_*` metric name in `charts/ferry/files/alerts.yaml` and `dashboard.json` that
/// starts with `prefix` (e.g. `ferry_relay_`), without the `_total`, `_bucket`, `_sum` and
/// `_count` suffixes a scrape adds to counters and histograms.
pub fn chart_metrics(prefix: &str) -> BTreeSet<String> {
    let files = repo_root().join("charts/ferry/files");
    ["alerts.yaml", "dashboard.json"]
        .iter()
        .flat_map(|f| {
            let path = files.join(f);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            names(&text)
        })
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The metric families a Prometheus text exposition declares (its `# TYPE` lines).
pub fn exposed_metrics(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| family(n).to_owned())
        .collect()
}

/// Panics naming every metric of the chart with `prefix` that `scrape` does not expose.
pub fn assert_chart_metrics_exposed(prefix: &str, scrape: &str) {
    let wanted = chart_metrics(prefix);
    assert!(
        !wanted.is_empty(),
        "the chart's alerts and dashboard query no {prefix}* metric"
    );
    let exposed = exposed_metrics(scrape);
    let missing: Vec<&String> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the chart's alerts or dashboard query {missing:?}, which the binary does not expose:\n{scrape}"
    );
}

/// The `ferry_[a-z0-9_]+` words of `text`, as families.
fn names(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("ferry_") {
        let before_ok = i == 0
            || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if before_ok && len > "ferry_".len() {
            found.push(family(&tail[..len]).to_owned());
        }
        rest = &tail[len.max(1)..];
    }
    found
}

/// A sample's family: its name without the suffix a counter or histogram sample adds.
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_families_of_whole_words() {
        let text = r#"rate(ferry_relay_published_total{a="b"}[5m]) x_ferry_no
            histogram_quantile(0.99, ferry_worker_delivery_duration_seconds_bucket) ferry_"#;
        assert_eq!(
            names(text),
            [
                "ferry_relay_published",
                "ferry_worker_delivery_duration_seconds"
            ]
        );
    }

    #[test]
    fn exposed_families_come_from_type_lines() {
        let scrape = "# HELP ferry_relay_published Rows.\n# TYPE ferry_relay_published counter\nferry_relay_published_total 3\n# TYPE ferry_relay_leader gauge\n";
        assert_eq!(
            exposed_metrics(scrape),
            ["ferry_relay_leader", "ferry_relay_published"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn the_chart_queries_each_binarys_metrics() {
        for prefix in ["ferry_operator_", "ferry_relay_", "ferry_worker_"] {
            assert!(!chart_metrics(prefix).is_empty(), "{prefix}");
        }
    }
}
