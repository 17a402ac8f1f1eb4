//! `fapiao pki` and `fapiao envelope` end to end, with OpenSSL reading what the CLI writes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::{fapiao_in, stderr, stdout};

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = fapiao_in(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

fn issue_party(dir: &Path, suite: &str, role: &str, name: &str, prefix: &str) {
    for profile in ["signing", "encryption"] {
        let out = format!(
            "{prefix}.{}",
            if profile == "signing" { "sign" } else { "enc" }
        );
        ok(
            dir,
            &[
                "pki",
                "issue",
                "--suite",
                suite,
                "--role",
                role,
                "--name",
                name,
                "--profile",
                profile,
                "--out",
                &out,
            ],
        );
    }
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn a_ca_issues_revokes_and_publishes_a_crl_openssl_agrees_with() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let shown = ok(
        d,
        &["pki", "init", "--suite", "intl", "--name", "Test Root"],
    );
    assert!(shown.contains("CA:          yes"), "{shown}");
    let shown = ok(
        d,
        &[
            "pki",
            "issue",
            "--suite",
            "intl",
            "--role",
            "platform",
            "--name",
            "platform-1",
            "--profile",
            "tls-server",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            "srv",
        ],
    );
    assert!(shown.contains("serverAuth"), "{shown}");
    // Keys are encrypted PKCS#8, readable only by their owner.
    let key = std::fs::read_to_string(d.join("srv.key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    assert!(!key.contains("key passphrase"));
    assert_eq!(
        std::fs::metadata(d.join("srv.key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(
        openssl(
            d,
            &[
                "pkey",
                "-in",
                "srv.key.pem",
                "-passin",
                "pass:key passphrase",
                "-noout"
            ]
        )
        .0
    );
    let (ok_verify, out) = openssl(
        d,
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-CAfile",
            "pki/intl/ca.crt.pem",
            "srv.crt.pem",
        ],
    );
    assert!(ok_verify, "{out}");

    let o = fapiao_in(
        d,
        &["pki", "revoke", "--suite", "intl", "--cert", "srv.crt.pem"],
    );
    assert!(
        o.status.success() && stderr(&o).contains("revoked"),
        "{}",
        stderr(&o)
    );
    ok(d, &["pki", "crl", "--suite", "intl"]);
    let (verified, out) = openssl(
        d,
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            "pki/intl/crl.pem",
            "-CAfile",
            "pki/intl/ca.crt.pem",
            "srv.crt.pem",
        ],
    );
    assert!(!verified && out.contains("certificate revoked"), "{out}");
    assert!(ok(d, &["pki", "show", "pki/intl/crl.pem"]).contains("revoked:"));
}

#[test]
fn mistakes_are_clear_errors_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let o = fapiao_in(
        d,
        &[
            "pki",
            "issue",
            "--suite",
            "gm",
            "--role",
            "cloud",
            "--name",
            "c",
            "--profile",
            "signing",
            "--out",
            "c",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pki init --suite gm"), "{}", stderr(&o));
    ok(d, &["pki", "init", "--suite", "gm"]);
    let o = fapiao_in(d, &["pki", "init", "--suite", "gm"]);
    assert!(
        stderr(&o).contains("already holds a gm CA"),
        "{}",
        stderr(&o)
    );
    ok(
        d,
        &[
            "pki",
            "issue",
            "--suite",
            "gm",
            "--role",
            "cloud",
            "--name",
            "c",
            "--profile",
            "signing",
            "--out",
            "c",
        ],
    );
    let before = std::fs::read(d.join("c.key.pem")).unwrap();
    let o = fapiao_in(
        d,
        &[
            "pki",
            "issue",
            "--suite",
            "gm",
            "--role",
            "cloud",
            "--name",
            "c",
            "--profile",
            "signing",
            "--out",
            "c",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(d.join("c.key.pem")).unwrap(), before);
    for (args, expected) in [
        (
            vec!["--role", "mayor", "--profile", "signing"],
            "--role mayor",
        ),
        (
            vec!["--role", "device", "--profile", "signing"],
            "taxpayer id",
        ),
        (
            vec!["--role", "cloud", "--profile", "tls-server"],
            "--dns or --ip",
        ),
        (
            vec!["--role", "cloud", "--profile", "tls-client"],
            "INTL CA",
        ),
    ] {
        let mut full = vec!["pki", "issue", "--suite", "gm", "--name", "x", "--out", "x"];
        full.extend(args);
        let o = fapiao_in(d, &full);
        assert_eq!(o.status.code(), Some(2), "{full:?}");
        assert!(stderr(&o).contains(expected), "{full:?}: {}", stderr(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args(["pki", "crl", "--suite", "gm"])
        .current_dir(d)
        .env_remove("FAPIAO_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("FAPIAO_CA_PASSPHRASE"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn envelopes_seal_and_open_from_the_command_line_per_suite() {
    for suite in ["gm", "intl"] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        ok(d, &["pki", "init", "--suite", suite]);
        issue_party(d, suite, "cloud", "cloud-1", "cloud");
        issue_party(d, suite, "platform", "platform-1", "platform");
        std::fs::write(
            d.join("order.json"),
            "{\"order_id\":\"YF-1\",\"buyer\":\"北京华章商贸有限公司\"}",
        )
        .unwrap();
        ok(
            d,
            &[
                "envelope",
                "seal",
                "--suite",
                suite,
                "--party",
                "cloud",
                "--to",
                "platform.enc.crt.pem",
                "--type",
                "order.issue",
                "--in",
                "order.json",
                "--out",
                "env.der",
            ],
        );
        let trust = format!("pki/{suite}/ca.crt.pem");
        let crl = format!("pki/{suite}/crl.pem");
        let o = fapiao_in(
            d,
            &[
                "envelope", "open", "--suite", suite, "--party", "platform", "--trust", &trust,
                "--crl", &crl, "--in", "env.der",
            ],
        );
        assert!(o.status.success(), "{suite}: {}", stderr(&o));
        assert_eq!(
            stdout(&o),
            "{\"order_id\":\"YF-1\",\"buyer\":\"北京华章商贸有限公司\"}"
        );
        assert!(
            stderr(&o).contains("from cloud:cloud-1 to platform:platform-1, type order.issue"),
            "{}",
            stderr(&o)
        );
        // The cloud cannot open what was sealed to the platform: rejected, exit 1.
        let o = fapiao_in(
            d,
            &[
                "envelope", "open", "--suite", suite, "--party", "cloud", "--trust", &trust,
                "--crl", &crl, "--in", "env.der",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("envelope_not_for_us"), "{}", stderr(&o));
    }
}
