//! Every refusal: the stable code, and nothing stored or consumed anywhere.

use fapiao_crypto::{Role, Suite};
use serde_json::json;
use time::Duration;

use crate::helpers::*;

/// Issues one invoice so ranges and blocks exist, then returns the state to compare with.
async fn warm(env: &Env) -> Snapshot {
    let r = post(&env.erp(SH), "/v1/invoices", &order(SH, "WARM-1", "10")).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    settle(env).await;
    snapshot(&env.system).await
}

async fn refused(
    env: &Env,
    enterprise: &str,
    body: &serde_json::Value,
    status: u16,
    code: &str,
) -> serde_json::Value {
    let r = post(&env.erp(enterprise), "/v1/invoices", body).await;
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["code"].as_str().unwrap_or("")),
        (status, code),
        "{v}"
    );
    assert!(
        v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualification_refusals_change_nothing() {
    let env = Env::start().await;
    let before = warm(&env).await;

    // Invalid order: every finding with its path.
    let mut bad = order(SH, "BAD-1", "100");
    bad["items"][0]["tax_rate"] = json!("7%");
    bad["buyer"]["taxpayer_id"] = json!("91110108MA01XY002D");
    bad["items"][1]["amount"] = json!(100.5);
    let v = refused(&env, SH, &bad, 422, "invalid_order").await;
    let paths: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for p in ["items[0].tax_rate", "buyer.taxpayer_id", "items[1].amount"] {
        assert!(paths.contains(&p), "{p} missing in {paths:?}");
    }
    assert_eq!(snapshot(&env.system).await, before);

    // The official table: a group code (调味品) and a 13 % rate on a 6 % service code, each a
    // finding on its field; nothing numbered.
    let mut bad = order(SH, "BAD-2", "100");
    bad["items"][0]["tax_code"] = json!("1030206000000000000");
    bad["items"][1]["tax_rate"] = json!("13%");
    let v = refused(&env, SH, &bad, 422, "invalid_order").await;
    let findings: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["code"].as_str().unwrap()))
        .collect();
    assert!(
        findings.contains(&("items[0].tax_code", "group_tax_code")),
        "{v}"
    );
    assert!(
        findings.contains(&("items[1].tax_rate", "rate_not_allowed")),
        "{v}"
    );
    assert_eq!(snapshot(&env.system).await, before);
    // A buyer named with a character neither typeface draws (U+20000, CJK Extension B; 𠮷 and
    // 䶮 draw, `contract.rs`), and one with a direction override: refused on the field, naming
    // the character, before any number.
    for (name, shown) in [
        ("北京\u{20000}商贸有限公司", "U+20000"),
        ("北京\u{202E}商贸有限公司", "U+202E"),
    ] {
        let mut b = order(SH, "BAD-4", "100");
        b["buyer"]["name"] = json!(name);
        let v = refused(&env, SH, &b, 422, "invalid_order").await;
        assert_eq!(
            (&v["findings"][0]["path"], &v["findings"][0]["code"]),
            (&json!("buyer.name"), &json!("unsupported_character")),
            "{v}"
        );
        assert!(v.to_string().contains(shown), "{v}");
        assert_eq!(snapshot(&env.system).await, before);
    }
    // A seller name other than the registry's (an invoice once printed "别的公司").
    let mut other_name = order(SH, "BAD-3", "100");
    other_name["seller"]["name"] = json!("别的公司");
    let v = refused(&env, SH, &other_name, 422, "invalid_order").await;
    assert_eq!(v["findings"][0]["path"], "seller.name", "{v}");
    assert_eq!(snapshot(&env.system).await, before);

    // Seller other than the enterprise whose credentials sign.
    refused(
        &env,
        SZ,
        &order(SH, "OTHER-SELLER", "100"),
        422,
        "invalid_order",
    )
    .await;
    assert_eq!(snapshot(&env.system).await, before);

    // Type not allowed.
    admin_patch(&env, SH, json!({"allowed_types": ["special"]})).await;
    refused(
        &env,
        SH,
        &order(SH, "TYPE-1", "100"),
        403,
        "invoice_type_not_allowed",
    )
    .await;
    admin_patch(&env, SH, json!({"allowed_types": ["special", "ordinary"]})).await;
    assert_eq!(snapshot(&env.system).await, before);

    // Over the per-invoice limit: 2 × 500 + 100, +6 % = 1166.00 > 1000.00.
    admin_patch(&env, SH, json!({"invoice_limit": "1000.00"})).await;
    refused(
        &env,
        SH,
        &order(SH, "LIMIT-1", "500"),
        422,
        "over_invoice_limit",
    )
    .await;
    admin_patch(&env, SH, json!({"invoice_limit": "1000000.00"})).await;
    assert_eq!(snapshot(&env.system).await, before);

    // Suspended.
    admin_patch(&env, SH, json!({"status": "suspended"})).await;
    refused(
        &env,
        SH,
        &order(SH, "SUSP-1", "100"),
        403,
        "enterprise_suspended",
    )
    .await;
    admin_patch(&env, SH, json!({"status": "active"})).await;
    assert_eq!(snapshot(&env.system).await, before);

    // Same order_id, other body: 409, the original stands.
    refused(&env, SH, &order(SH, "WARM-1", "11"), 409, "order_conflict").await;
    assert_eq!(snapshot(&env.system).await, before);
    let again = post(&env.erp(SH), "/v1/invoices", &order(SH, "WARM-1", "10")).await;
    assert_eq!(
        again.status, 200,
        "the same order again returns the original"
    );
    assert_eq!(snapshot(&env.system).await, before);

    // Red over what remains: line 2 is 100.00 tax-exclusive.
    let blue = json_of(&get(&env.erp(SH), "/v1/invoices?limit=1").await)["items"][0]["number"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post(
        &env.erp(SH),
        &format!("/v1/invoices/{blue}/red"),
        &json!({
            "order_id": "RED-OVER", "reason": "04", "buyer_confirmation": "buyer ok 1",
            "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "100.01"}]}
        }),
    )
    .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (422, "red_invalid"),
        "{}",
        json_of(&r)
    );
    // A partial red without the buyer's confirmation is not allowed either.
    let r = post(
        &env.erp(SH),
        &format!("/v1/invoices/{blue}/red"),
        &json!({
            "order_id": "RED-NOCONF", "reason": "04",
            "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "10.00"}]}
        }),
    )
    .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (422, "red_invalid"),
        "{}",
        json_of(&r)
    );
    assert_eq!(snapshot(&env.system).await, before);
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orders_racing_for_the_last_of_the_quota_get_one_invoice() {
    let env = Env::start().await;
    let before = warm(&env).await;
    let used: String = before.quota[0].2.clone();
    assert_eq!(used, "127.20");
    // Room for exactly one more 233.20 invoice (2 × 10 + 100 at 6 % is 127.20; 2 × 60 + 100 is 233.20).
    admin_patch(&env, SH, json!({"monthly_quota": "400.00"})).await;
    let (a, b) = (env.erp(SH), env.erp(SH));
    let (oa, ob) = (order(SH, "RACE-A", "60"), order(SH, "RACE-B", "60"));
    let (ra, rb) = tokio::join!(post(&a, "/v1/invoices", &oa), post(&b, "/v1/invoices", &ob));
    let mut statuses = vec![
        (ra.status, json_of(&ra)["code"].clone()),
        (rb.status, json_of(&rb)["code"].clone()),
    ];
    statuses.sort_by_key(|s| s.0);
    assert_eq!(statuses[0].0, 201, "{statuses:?}");
    assert_eq!(
        (statuses[1].0, statuses[1].1.as_str().unwrap()),
        (422, "over_quota"),
        "{statuses:?}"
    );
    settle(&env).await;
    let after = snapshot(&env.system).await;
    assert_eq!(after.quota[0].2, "360.40");
    assert_eq!(
        after.platform[0],
        before.platform[0] + 1,
        "one invoice more, no void"
    );
    assert_eq!(after.platform[2], 0);
    // A red gives quota back.
    let blue = json_of(&if ra.status == 201 { ra } else { rb })["number"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post(
        &env.erp(SH),
        &format!("/v1/invoices/{blue}/red"),
        &json!({"order_id": "RACE-RED", "reason": "01"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    assert_eq!(snapshot(&env.system).await.quota[0].2, "127.20");
    env.system.shutdown().await;
}

/// The `fapiao_envelope_failures_total` lines of a role's metrics.
async fn envelope_failures(env: &Env, admin_port: u16) -> std::collections::BTreeMap<String, u64> {
    let r = person(env, Role::Monitor, admin_port)
        .request(http::Method::GET, "/metrics", &[], Vec::new())
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with("fapiao_envelope_failures_total{"))
        .map(|l| {
            let (label, n) = l.rsplit_once(' ').unwrap();
            (label.to_owned(), n.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_learns_nothing_from_changed_envelopes() {
    // The padding-oracle attack with an ordinary enterprise's agent certificate: an envelope
    // captured on its way from cloud to platform, sent back 255 times with one content byte
    // changed to every other value, watching answers and the metrics any client could read.
    let env = Env::start().await;
    let before = warm(&env).await;
    let layout = env.system.layout.clone();
    let admin = env.system.ports.platform_admin;
    let cloud = Sender::new(&env, &layout.pki_prefix("cloud"));
    let agent = Sender::new(&env, &layout.pki_prefix("agent"));
    let captured = cloud.seal("order.issue", 1, &issue_body(SH, "CAPTURED-1"));
    let layers = fapiao_crypto::envelope::hazmat::enveloped(&captured).unwrap();
    let ct = captured
        .windows(layers.ciphertext.len())
        .position(|w| w == layers.ciphertext.as_slice())
        .unwrap();
    // The byte CBC padding hangs on: the last of the second-to-last block.
    let at = ct + layers.ciphertext.len() - 17;
    let failures_before = envelope_failures(&env, admin).await;

    // What an answer tells: its status and body, less the request id every answer has.
    let told = |r: fapiao_protocol::Response| {
        let mut v: serde_json::Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.body)));
        assert!(
            v["request_id"].as_str().is_some_and(|id| id.len() == 32),
            "{v}"
        );
        v["request_id"] = json!("…");
        (r.status, v.to_string())
    };
    let mut answers = std::collections::BTreeSet::new();
    for delta in 1..=255_u8 {
        let mut e = captured.clone();
        e[at] ^= delta;
        answers.insert(told(agent.post(e).await));
    }
    // The captured envelope itself, unchanged: it opens, but its signer is not the peer.
    answers.insert(told(agent.post(captured.clone()).await));
    // And a failure after decryption and the signature: a replay of the agent's own message.
    let own = agent.seal("order.issue", 99, &json!({}));
    assert_eq!(agent.post(own.clone()).await.status, 200);
    answers.insert(told(agent.post(own).await));
    let answers: Vec<_> = answers.into_iter().collect();
    assert_eq!(answers.len(), 1, "distinguishable answers: {answers:#?}");
    let (status, body) = &answers[0];
    assert_eq!(*status, 403, "{body}");
    assert!(body.contains("\"code\":\"envelope_rejected\""), "{body}");

    let failures_after = envelope_failures(&env, admin).await;
    let mut grown: Vec<_> = failures_after
        .iter()
        .filter(|(label, n)| failures_before.get(*label) != Some(n))
        .map(|(label, n)| (label.clone(), n - failures_before.get(label).unwrap_or(&0)))
        .collect();
    grown.sort();
    // 255 changed envelopes, the captured one and the replay under one label; the agent's own, authenticated
    // version-99 message was answered to it (sealed) and counted as what it was.
    assert_eq!(
        grown,
        [
            (
                "fapiao_envelope_failures_total{reason=\"rejected\"}".to_owned(),
                257
            ),
            (
                "fapiao_envelope_failures_total{reason=\"unsupported_version\"}".to_owned(),
                1
            )
        ],
        "{failures_after:?}"
    );
    assert_eq!(snapshot(&env.system).await, before);
    // None of it used up the captured envelope's id (in memory or in the database): cloud's
    // own delivery still issues.
    let (t, v) = cloud.open(&cloud.post(captured).await);
    assert_eq!(
        (t.as_str(), v["outcome"].as_str()),
        ("order.answer", Some("issued")),
        "{v}"
    );
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_and_sender_refusals_change_nothing() {
    let mut env = Env::start().await;
    let before = warm(&env).await;
    let layout = env.system.layout.clone();
    let now = crate::now();
    let cloud = Sender::new(&env, &layout.pki_prefix("cloud"));

    // Tampered: one byte flipped in the ciphertext's tail.
    let mut e = cloud.seal("order.issue", 1, &issue_body(SH, "TAMPER-1"));
    let n = e.len();
    e[n - 20] ^= 1;
    let r = cloud.post(e).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (403, "envelope_rejected"),
        "{}",
        json_of(&r)
    );
    // Not an envelope at all.
    let r = cloud.post(b"hello".to_vec()).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (400, "envelope_malformed")
    );
    assert_eq!(snapshot(&env.system).await, before);

    // Replayed: the first delivery issues, the second is refused.
    let e = cloud.seal("order.issue", 1, &issue_body(SH, "REPLAY-1"));
    let first = cloud.post(e.clone()).await;
    let (t, v) = cloud.open(&first);
    assert_eq!(
        (t.as_str(), v["outcome"].as_str().unwrap()),
        ("order.answer", "issued"),
        "{v}"
    );
    settle(&env).await;
    let after_first = snapshot(&env.system).await;
    let r = cloud.post(e.clone()).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (403, "envelope_rejected")
    );
    // An order platform refuses writes nothing; its id is remembered all the same.
    let mut bad = issue_body(SH, "REPLAY-BAD");
    bad["order"] = json!({});
    let refused = cloud.seal("order.issue", 1, &bad);
    let (_, v) = cloud.open(&cloud.post(refused.clone()).await);
    assert_eq!(v["outcome"], "refused", "{v}");
    // With platform restarted (its memory of the ids it has seen is gone), both replays
    // are still refused: the issued order's id went to disk in the commit that issued it,
    // the refused one's in a commit of its own.
    env.system.stop("platform").await;
    env.system.restart("platform").await.unwrap();
    for e in [e, refused] {
        let r = cloud.post(e).await;
        assert_eq!(
            (r.status, json_of(&r)["code"].as_str().unwrap()),
            (403, "envelope_rejected")
        );
    }
    assert_eq!(snapshot(&env.system).await, after_first);
    let before = after_first;

    // Unsupported protocol version: a sealed, signed refusal.
    let r = cloud
        .post(cloud.seal("order.issue", 9, &issue_body(SH, "V9-1")))
        .await;
    assert_eq!(r.status, 200);
    let (t, v) = cloud.open(&r);
    assert_eq!(
        (t.as_str(), v["code"].as_str().unwrap()),
        ("refusal", "protocol_version_unsupported"),
        "{v}"
    );
    assert_eq!(snapshot(&env.system).await, before);

    // A cloud the platform does not know (valid certificates).
    let stranger = layout.dir().join("pki/stranger");
    layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "stranger",
            None,
            &stranger,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    let s = Sender::new(&env, &stranger);
    let (_, v) = s.open(
        &s.post(s.seal("order.issue", 1, &issue_body(SH, "STRANGER-1")))
            .await,
    );
    assert_eq!(
        (v["outcome"].as_str().unwrap(), v["code"].as_str().unwrap()),
        ("refused", "cloud_not_registered"),
        "{v}"
    );

    // A registered cloud sending for an enterprise of another cloud.
    env.system
        .platform
        .register_cloud(
            "test",
            &fapiao_platform::Cloud {
                identity: "cloud:stranger".into(),
                url: "https://127.0.0.1:9".into(),
            },
        )
        .await
        .unwrap();
    let (_, v) = s.open(
        &s.post(s.seal("order.issue", 1, &issue_body(SH, "STRANGER-2")))
            .await,
    );
    assert_eq!(
        v["code"].as_str().unwrap(),
        "enterprise_of_another_cloud",
        "{v}"
    );
    // An enterprise nobody registered.
    let (_, v) = s.open(
        &s.post(s.seal(
            "order.issue",
            1,
            &issue_body("91330106MA2CD0004F", "STRANGER-3"),
        ))
        .await,
    );
    assert_eq!(v["code"].as_str().unwrap(), "enterprise_unknown", "{v}");
    assert_eq!(snapshot(&env.system).await, before);

    // Expired signing certificate (TLS certificate still valid).
    let expired = layout.dir().join("pki/expired");
    let certs = layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "cloud",
            None,
            &expired,
            now - Duration::days(10),
            now + Duration::days(1),
        )
        .unwrap();
    drop(certs);
    layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "cloud",
            None,
            &layout.dir().join("pki/expired-sign"),
            now - Duration::days(10),
            now - Duration::days(1),
        )
        .unwrap();
    for ext in ["crt.pem", "key.pem"] {
        std::fs::copy(
            layout.dir().join(format!("pki/expired-sign.sign.{ext}")),
            layout.dir().join(format!("pki/expired.sign.{ext}")),
        )
        .unwrap();
    }
    let x = Sender::new(&env, &expired);
    let r = x
        .post(x.seal("order.issue", 1, &issue_body(SH, "EXPIRED-1")))
        .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (403, "envelope_rejected"),
        "{}",
        json_of(&r)
    );

    // Signed by a certificate of another CA.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = fapiao_system::Layout::at(foreign_dir.path());
    foreign
        .bootstrap(Suite::Gm, fapiao_system::Ports::default(), None, now)
        .unwrap();
    for kind in ["sign", "enc"] {
        for ext in ["crt.pem", "key.pem"] {
            let from = foreign.dir().join(format!("pki/cloud.{kind}.{ext}"));
            let to = layout.dir().join(format!("pki/foreign.{kind}.{ext}"));
            let text = std::fs::read(&from).unwrap();
            std::fs::write(&to, text).unwrap();
        }
    }
    // The foreign keys use the foreign passphrase: re-encrypt them with ours.
    let foreign_pass = std::fs::read_to_string(foreign.passphrase_file()).unwrap();
    let our_pass = std::fs::read_to_string(layout.passphrase_file()).unwrap();
    for kind in ["sign", "enc"] {
        let p = layout.dir().join(format!("pki/foreign.{kind}.key.pem"));
        let k = fapiao_crypto::PrivateKey::from_encrypted_pem(
            &std::fs::read_to_string(&p).unwrap(),
            foreign_pass.trim().as_bytes(),
        )
        .unwrap();
        std::fs::write(
            &p,
            k.to_encrypted_pem(
                our_pass.trim().as_bytes(),
                &mut fapiao_crypto::rng::system_rng(),
            )
            .unwrap()
            .as_bytes(),
        )
        .unwrap();
    }
    for kind in ["tls-server", "tls-client"] {
        for ext in ["crt.pem", "key.pem"] {
            std::fs::copy(
                layout.dir().join(format!("pki/cloud.{kind}.{ext}")),
                layout.dir().join(format!("pki/foreign.{kind}.{ext}")),
            )
            .unwrap();
        }
    }
    let mut f = Sender::new(&env, &layout.dir().join("pki/cloud"));
    let fm = fapiao_service::Material::load(&fapiao_service::MaterialConfig {
        suite: "gm".into(),
        prefix: layout.dir().join("pki/foreign"),
        trust: foreign.trust_files(),
        crls: foreign.crl_files(),
        key_passphrase_file: Some(layout.passphrase_file()),
        master_key_file: Some(layout.dir().join("pki/cloud.master.key")),
        crl_reload_seconds: None,
        crl_grace_seconds: None,
    })
    .unwrap();
    f.material.party = fm.party;
    let r = f
        .post(f.seal("order.issue", 1, &issue_body(SH, "FOREIGN-1")))
        .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (403, "envelope_rejected"),
        "{}",
        json_of(&r)
    );
    assert_eq!(snapshot(&env.system).await, before);

    // Revoked: the cloud's own signing certificate, once the platform reloads the CRL.
    let revoked = layout.dir().join("pki/revoked");
    let certs = layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "cloud",
            None,
            &revoked,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    let rv = Sender::new(&env, &revoked);
    let r = rv
        .post(rv.seal("order.issue", 1, &issue_body(SH, "REVOKED-0")))
        .await;
    assert_eq!(
        rv.open(&r).1["outcome"],
        "issued",
        "valid before revocation"
    );
    settle(&env).await;
    let before = snapshot(&env.system).await;
    layout.revoke(&certs[0], now).unwrap();
    let mut system = env.system;
    system.stop("platform").await;
    system.restart("platform").await.unwrap();
    let env = Env {
        dir: env.dir,
        system,
    };
    let rv = Sender::new(&env, &revoked);
    let r = rv
        .post(rv.seal("order.issue", 1, &issue_body(SH, "REVOKED-1")))
        .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (403, "envelope_rejected"),
        "{}",
        json_of(&r)
    );
    assert_eq!(snapshot(&env.system).await, before);
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erp_requests_must_be_signed_fresh_and_new() {
    let mut env = Env::start().await;
    let erp = env.erp(SH);
    let creds = erp.credentials().clone();
    let body = order(SH, "AUTH-1", "100").to_string();
    let signed = |ts: i64, nonce: &str, secret: &str| {
        vec![
            ("x-fapiao-key", creds.key_id.clone()),
            ("x-fapiao-timestamp", ts.to_string()),
            ("x-fapiao-nonce", nonce.to_owned()),
            (
                "x-fapiao-signature",
                fapiao_protocol::erp::sign(
                    secret.as_bytes(),
                    "POST",
                    "/v1/invoices",
                    ts,
                    nonce,
                    body.as_bytes(),
                ),
            ),
        ]
    };
    let t = crate::now().unix_timestamp();
    let cases = [
        (Vec::new(), "unauthenticated"),
        (
            signed(t, "nonce-aaaaaaaaaaaa1", "sk_wrong"),
            "unauthenticated",
        ),
        (
            signed(t - 600, "nonce-aaaaaaaaaaaa2", &creds.secret),
            "request_stale",
        ),
    ];
    for (headers, code) in cases {
        let r = erp
            .send_raw(
                http::Method::POST,
                "/v1/invoices",
                &headers,
                body.as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(
            (r.status, json_of(&r)["code"].as_str().unwrap()),
            (401, code),
            "{}",
            json_of(&r)
        );
    }
    let h = signed(t, "nonce-aaaaaaaaaaaa3", &creds.secret);
    let r = erp
        .send_raw(http::Method::POST, "/v1/invoices", &h, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let r = erp
        .send_raw(http::Method::POST, "/v1/invoices", &h, body.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (401, "request_replayed")
    );
    // An order platform refuses writes nothing at cloud; its nonce is spent all the same.
    let bad = json!({"order_id": "AUTH-BAD"}).to_string();
    let nonce = "nonce-aaaaaaaaaaaa4";
    let hb = vec![
        ("x-fapiao-key", creds.key_id.clone()),
        ("x-fapiao-timestamp", t.to_string()),
        ("x-fapiao-nonce", nonce.to_owned()),
        (
            "x-fapiao-signature",
            fapiao_protocol::erp::sign(
                creds.secret.as_bytes(),
                "POST",
                "/v1/invoices",
                t,
                nonce,
                bad.as_bytes(),
            ),
        ),
    ];
    let r = erp
        .send_raw(http::Method::POST, "/v1/invoices", &hb, bad.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (422, "invalid_order"),
        "{}",
        json_of(&r)
    );
    // With cloud restarted (its memory of the nonces it has seen is gone), both replays are
    // still refused: the issued order's nonce went to disk in the commit that stored the
    // invoice, the refused one's in a commit of its own.
    env.system.stop("cloud").await;
    env.system.restart("cloud").await.unwrap();
    let erp = env.erp(SH);
    for (headers, body) in [(&h, &body), (&hb, &bad)] {
        let r = erp
            .send_raw(http::Method::POST, "/v1/invoices", headers, body.as_bytes())
            .await
            .unwrap();
        assert_eq!(
            (r.status, json_of(&r)["code"].as_str().unwrap()),
            (401, "request_replayed"),
            "{}",
            json_of(&r)
        );
    }
    // Another enterprise cannot read this one's invoice.
    let number = json_of(&get(&erp, "/v1/invoices?limit=1").await)["items"][0]["number"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = get(&env.erp(SZ), &format!("/v1/invoices/{number}")).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (404, "invoice_not_found")
    );
    env.system.shutdown().await;
}

/// A newer table named in platform's config (`catalog = "…"`) replaces the bundled one: its
/// codes and 简称 are used, a code it lacks is unknown, and the finding names its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_file_in_the_config_replaces_the_bundled_table() {
    let mut env = Env::start().await;
    let file = env.system.layout.dir().join("tax-codes-2027.csv");
    std::fs::write(
        &file,
        "code,name,short_name,rate,description\n\
         3040201010000000000,软件开发服务,软件服务,6%,\n",
    )
    .unwrap();
    env.system.stop("platform").await;
    let path = env.system.layout.config_path("platform");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("catalog = {:?}\n{text}", file.display().to_string()),
    )
    .unwrap();
    env.system.restart("platform").await.unwrap();

    let mut one = order(SH, "CAT-1", "10");
    one["items"].as_array_mut().unwrap().truncate(1);
    one["items"][0]["tax_code"] = json!("3040201010000000000");
    let r = post(&env.erp(SH), "/v1/invoices", &one).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    let xml = get(&env.erp(SH), &format!("/v1/invoices/{number}/xml")).await;
    let xml = String::from_utf8_lossy(&xml.body).into_owned();
    assert!(xml.contains("*软件服务*"), "the file's 简称: {xml}");
    // Each invoice records the catalog its order was validated against.
    let version: Option<String> =
        fapiao_store::query_scalar("SELECT catalog_version FROM invoices WHERE number = $1")
            .bind(&number)
            .fetch_one(env.system.platform.db().pool())
            .await
            .unwrap();
    assert_eq!(version.as_deref(), Some("tax-codes-2027"));
    let mut other = order(SH, "CAT-2", "10");
    other["items"].as_array_mut().unwrap().truncate(1);
    other["items"][0]["tax_code"] = json!("3040201030000000000");
    let v = refused(&env, SH, &other, 422, "invalid_order").await;
    assert!(
        v.to_string().contains("unknown_tax_code") && v.to_string().contains("tax-codes-2027"),
        "{v}"
    );
    env.system.shutdown().await;
}
