//! The published documents match the code: docs/ERROR-CODES.md is the code registry, and the
//! OpenAPI document's error codes are exactly the registry's.

use std::path::PathBuf;

use fapiao_protocol::Code;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn error_codes_document_is_the_registry() {
    let path = docs().join("ERROR-CODES.md");
    let want = fapiao_protocol::codes::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/ERROR-CODES.md is stale: run with UPDATE_DOCS=1"
    );
}

#[test]
fn codes_are_unique_snake_case_and_parse_back() {
    let mut seen = std::collections::HashSet::new();
    for c in Code::ALL {
        assert!(seen.insert(c.as_str()), "{c} twice");
        assert!(
            c.as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
        assert_eq!(Code::parse(c.as_str()), Some(*c));
        assert!((400..600).contains(&c.http_status()));
    }
}

#[test]
fn openapi_error_codes_are_the_registry() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(docs().join("openapi.json")).unwrap())
            .unwrap();
    let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let registry: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, registry);
}

#[test]
fn the_webhook_signature_example_is_what_the_code_signs() {
    let doc = std::fs::read_to_string(docs().join("webhooks.md")).unwrap();
    let value = |label: &str| -> String {
        let line = doc
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in docs/webhooks.md"));
        line[label.len()..].trim().trim_matches('`').to_owned()
    };
    let secret = value("secret:");
    let ts: i64 = value("X-Fapiao-Timestamp:").parse().unwrap();
    let signature = value("X-Fapiao-Signature:");
    let body = doc
        .split("Body (raw bytes, one line):")
        .nth(1)
        .and_then(|rest| rest.split("```json\n").nth(1))
        .and_then(|rest| rest.split('\n').next())
        .unwrap();
    assert_eq!(
        fapiao_protocol::erp::sign_webhook(secret.as_bytes(), ts, body.as_bytes()),
        signature
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["event"], "invoice.issued");
}
