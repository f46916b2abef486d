//! What ships beside the binary stays true to it: the dashboard and the
//! alerting rules query only metrics squadron registers, and README.md
//! documents every one of them.

use std::collections::BTreeSet;
use std::path::Path;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap()
}

/// `squadron_*` names in a text, with histogram suffixes removed.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("squadron_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(base.to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metric names squadron registers.
fn registered() -> BTreeSet<String> {
    let src = read("src/telemetry/metrics.rs");
    names(&src)
        .into_iter()
        .filter(|n| src.contains(&format!("\"{n}\"")))
        .collect()
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/squadron.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned() + "\n")
        .collect();
    let used = names(&exprs);
    let known = registered();
    assert!(used.len() >= 12, "{used:?}");
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries unknown metrics: {unknown:?}"
    );
}

#[test]
fn alerting_rules_use_registered_metrics_and_pass_promtool() {
    let text = read("deploy/prometheus/squadron-alerts.yml");
    let unknown: Vec<_> = names(&text).difference(&registered()).cloned().collect();
    assert!(
        unknown.is_empty(),
        "alerting rules use unknown metrics: {unknown:?}"
    );
    for alert in [
        "SquadronConsumerLagGrowing",
        "SquadronDeadLettersAppearing",
        "SquadronFailedOnInput",
        "SquadronRuleReloadFailing",
        "SquadronNotReady",
        "SquadronShiftOverPageBudget",
    ] {
        assert!(text.contains(alert), "{alert}");
    }
    match std::process::Command::new("promtool")
        .args(["check", "rules", "deploy/prometheus/squadron-alerts.yml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => {
            eprintln!("promtool not installed: scripts/test.sh installs it and checks these rules")
        }
    }
}

#[test]
fn readme_documents_every_metric() {
    let readme = read("README.md");
    let missing: Vec<_> = registered()
        .into_iter()
        .filter(|n| !readme.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}
