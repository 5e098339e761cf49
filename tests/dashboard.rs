//! The Grafana dashboard: every query is valid PromQL (checked by promtool)
//! and names only metrics that a running Kumulus exports.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{Kumulus, Options, Repo};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn queries() -> Vec<String> {
    common::dashboard_queries()
        .into_iter()
        .map(|(_, expr)| expr)
        .collect()
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("kumulus_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_query_is_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = queries()
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("kumulus:dashboard_{i}"), "expr": q}))
        .collect();
    let file = dir.path().join("rules.yml");
    // JSON is YAML.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus) is needed; scripts/test.sh installs it");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_metric_of_the_dashboard_is_exported() {
    let k = Kumulus::start(Options::default()).await;
    let token = k.login("ana").await;
    let repo = Repo::example();
    let id = k.submit(&token, json!({"url": repo.path()})).await;
    k.wait_for(&token, &id, &["succeeded"], 60).await;
    let wanted: BTreeSet<String> = queries().iter().flat_map(|q| metric_names(q)).collect();
    assert!(wanted.len() >= 10, "{wanted:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = k.text("/metrics").await;
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|m| {
                !text
                    .lines()
                    .any(|l| l.starts_with(m.as_str()) && l[m.len()..].starts_with([' ', '{']))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not exported: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
