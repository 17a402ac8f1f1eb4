//! `fapiao bench` end to end, small: the whole system in the process, every figure present,
//! every stage span seen, and bad flags refused by name.

use crate::{fapiao, stderr, stdout};

/// Spans of a stage per invoice, from a bench's JSON report.
fn stage(report: &serde_json::Value, name: &str) -> f64 {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("stage {name}"))["per_invoice"]
        .as_f64()
        .unwrap()
}

/// Envelopes sealed per invoice add up: the order's request and answer (shared by a batch of
/// `batch`), and a request and an answer per upload and per notice exchange of the outbox
/// (shared by the invoices each carries); the crypto bound counts the same exchanges.
fn exchanges_add_up(r: &serde_json::Value, batch: f64) {
    let (uploads, notices) = (stage(r, "tax.upload"), stage(r, "cloud.notify"));
    assert!(uploads > 0.0 && uploads <= 1.0, "{}", r["stages"]);
    assert!(notices > 0.0 && notices <= 1.0, "{}", r["stages"]);
    let expected = 2.0 / batch + 2.0 * (uploads + notices);
    for name in ["envelope.seal", "envelope.open"] {
        assert!(
            (stage(r, name) - expected).abs() < 0.1,
            "{name}: expected {expected}: {}",
            r["stages"]
        );
    }
    for b in r["crypto_bound"].as_array().unwrap() {
        let x = &b["exchanges"];
        assert!(
            (x["order"].as_f64().unwrap() - 1.0 / batch).abs() < 1e-9,
            "{b}"
        );
        assert!(
            (x["upload"].as_f64().unwrap() - uploads).abs() < 1e-9,
            "{b}"
        );
        assert!(
            (x["notice"].as_f64().unwrap() - notices).abs() < 1e-9,
            "{b}"
        );
    }
}

#[test]
fn a_small_bench_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = fapiao(&[
        "bench",
        "--count",
        "24",
        "--concurrency",
        "4",
        "--phase-seconds",
        "1",
        "--suite",
        "intl",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for needle in [
        "closed loop",
        "CPU per invoice",
        "crypto bound",
        "pipeline / crypto bound",
        "open loop",
        "envelope.seal",
        "memory",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["suite"], "intl");
    assert_eq!(r["closed"]["invoices"], 24);
    assert_eq!(r["closed"]["errors"], 0);
    assert!(r["closed"]["cpu_ms_per_invoice"].as_f64().unwrap() > 0.0);
    assert_eq!(r["open"].as_array().unwrap().len(), 3);
    let suites: Vec<&str> = r["crypto_bound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["suite"].as_str().unwrap())
        .collect();
    assert_eq!(suites, ["intl", "gm"]);
    // Every invoice went through every stage: its order's exchange, an upload and a notice
    // exchange (alone or with others), one device signature, two verifications.
    exchanges_add_up(&r, 1.0);
    let stage = |name: &str| stage(&r, name);
    assert!((stage("invoice.sign") - 1.0).abs() < 0.01);
    assert!((stage("invoice.verify") - 2.0).abs() < 0.5);
    assert!(stage("db.commit") >= 1.0);
    let rss = r["rss_kib"].as_array().unwrap();
    assert!(rss.iter().all(|v| v.as_u64().unwrap() > 0));
    // Each open-loop phase samples memory at least at its end (once a minute besides).
    for phase in r["open"].as_array().unwrap() {
        let rss = phase["rss_kib"].as_array().unwrap();
        assert_eq!(rss.len(), 1, "{phase}");
        assert!(rss[0].as_u64().unwrap() > 0, "{phase}");
    }
}

/// The async flow: orders queue at cloud, the agent issues and uploads them; the run ends when
/// cloud has every invoice accepted by tax.
#[test]
fn an_async_bench_measures_the_agent_path() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = fapiao(&[
        "bench",
        "--mode",
        "async",
        "--count",
        "12",
        "--concurrency",
        "2",
        "--suite",
        "intl",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("async mode"), "{text}");
    assert!(text.contains("not measured in async mode"), "{text}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["closed"]["invoices"], 12);
    assert_eq!(r["closed"]["errors"], 0);
    assert!(r["open"].as_array().unwrap().is_empty());
    let stage = |name: &str| stage(&r, name);
    // The agent signed each invoice once; tax, platform and cloud each verified it.
    assert!(
        (stage("invoice.sign") - 1.0).abs() < 0.01,
        "{}",
        r["stages"]
    );
    assert!(
        (3.0 - 0.01..=4.0).contains(&stage("invoice.verify")),
        "{}",
        r["stages"]
    );
    // Envelopes add up over the agent path's exchanges, each shared by the invoices it
    // carries (batches: at most one exchange of each kind per invoice), plus the agent's
    // few supply exchanges (a block, its assignment at tax, quota) at the start.
    let kinds = [
        "cloud.pull",
        "tax.upload",
        "platform.report",
        "cloud.notify",
        "cloud.ack",
    ];
    for name in kinds {
        let share = stage(name);
        assert!(share > 0.0 && share <= 1.0, "{name}: {}", r["stages"]);
    }
    let expected: f64 = kinds.iter().map(|k| 2.0 * stage(k)).sum();
    for name in ["envelope.seal", "envelope.open"] {
        let extra = stage(name) - expected;
        assert!(
            (0.0..=8.0 / 12.0 + 1e-9).contains(&extra),
            "{name}: {} for {expected} in exchanges: {}",
            stage(name),
            r["stages"]
        );
    }
    for b in r["crypto_bound"].as_array().unwrap() {
        let x = &b["exchanges"];
        assert_eq!(x["flow"], "async", "{b}");
        for (field, name) in ["pull", "upload", "report", "notice", "ack"]
            .iter()
            .zip(kinds)
        {
            assert!(
                (x[field].as_f64().unwrap() - stage(name)).abs() < 1e-9,
                "{field}: {b}"
            );
        }
        assert_eq!(x["order"], 0.0, "{b}");
    }
}

/// Orders sent ten at a time through the batch endpoint: every invoice still issued, signed and
/// uploaded once, but the order's envelope pair is paid once per batch, and the outbox carries
/// the ten (committed together) in shared upload and notice exchanges; the crypto bound counts
/// it the same way.
#[test]
fn a_batched_bench_pays_the_order_exchange_once_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = fapiao(&[
        "bench",
        "--count",
        "40",
        "--concurrency",
        "2",
        "--batch",
        "10",
        "--phase-seconds",
        "1",
        "--rate",
        "20",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("10 orders per ERP request"),
        "{}",
        stdout(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        (r["batch"].as_u64(), r["closed"]["invoices"].as_u64()),
        (Some(10), Some(40))
    );
    assert_eq!(r["closed"]["errors"], 0);
    assert_eq!(r["open"][0]["errors"], 0);
    exchanges_add_up(&r, 10.0);
    let stage = |name: &str| stage(&r, name);
    assert!(
        (stage("invoice.sign") - 1.0).abs() < 0.01,
        "{}",
        r["stages"]
    );
    assert!(
        stage("tax.upload") <= 0.5,
        "ten invoices committed together share upload exchanges: {}",
        r["stages"]
    );
    assert!(stage("db.commit") < 1.0, "grouped commits: {}", r["stages"]);
}

#[test]
fn bad_bench_flags_are_named() {
    let o = fapiao(&["bench", "--mode", "batch"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--mode batch: sync or async"),
        "{}",
        stderr(&o)
    );
    let o = fapiao(&["bench", "--rate", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--rate"), "{}", stderr(&o));
    let o = fapiao(&["bench", "--batch", "101"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--batch"), "{}", stderr(&o));
}
