//! The shipped Prometheus rules: `promtool` (Debian's prometheus package) checks them and
//! runs their unit tests (`deploy/prometheus/*_test.yml`), and every metric they name is one
//! the roles export — an alert on a metric nobody exports never fires.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus; ./test.sh installs it): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let mut tests = Vec::new();
    let mut rules = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with("_test.yml") {
            tests.push(name);
        } else if name.ends_with(".yml") {
            rules.push(name);
        }
    }
    assert!(
        !rules.is_empty() && !tests.is_empty(),
        "{rules:?} {tests:?}"
    );
    for r in &rules {
        let text = promtool(&dir, &["check", "rules", r]);
        assert!(text.contains("SUCCESS"), "{text}");
        // Every rule file has its tests.
        let test = r.replace(".yml", "_test.yml");
        assert!(tests.contains(&test), "{r} has no {test}");
    }
    for t in &tests {
        let text = promtool(&dir, &["test", "rules", t]);
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

/// The `fapiao_…` names in `text` (histogram series reduced to their family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("fapiao_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(family.to_owned());
        rest = &tail[end..];
    }
    out
}

fn sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn every_metric_an_alert_names_is_exported() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut code = String::new();
    for krate in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut code);
        }
    }
    let named = metric_names(&rules);
    assert!(named.len() >= 10, "{named:?}");
    for m in named {
        assert!(
            code.contains(&format!("\"{m}\"")),
            "{m} is named by an alert but no role exports it"
        );
    }
}
