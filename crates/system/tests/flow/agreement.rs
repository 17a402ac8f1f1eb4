//! 100 blue invoices for two enterprises and several full and partial reds; cloud, platform
//! and tax agree invoice by invoice, signatures and receipts verify, 查验 answers right.

use std::collections::BTreeMap;

use fapiao_protocol::wire::WireInvoice;
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_platform_and_tax_agree_on_every_invoice() {
    let env = Env::start().await;
    let trust = env.trust();
    let mut blues: BTreeMap<String, (String, Value)> = BTreeMap::new();
    // 100 blues, 50 per enterprise, 10 concurrent requests at a time.
    for batch in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let n = batch * 10 + i;
            let ent = if n % 2 == 0 { SH } else { SZ };
            let erp = env.erp(ent);
            let body = order(
                ent,
                &format!("AG-{n:03}"),
                &format!("{}.{:02}", 10 + n, n % 100),
            );
            tasks.push(tokio::spawn(async move {
                let r = post(&erp, "/v1/invoices", &body).await;
                (ent, r)
            }));
        }
        for t in tasks {
            let (ent, r) = t.await.unwrap();
            let v = json_of(&r);
            assert_eq!(r.status, 201, "{v}");
            blues.insert(
                v["number"].as_str().unwrap().to_owned(),
                (ent.to_owned(), v),
            );
        }
    }
    assert_eq!(blues.len(), 100, "100 distinct numbers");

    // Reds: 3 full, 3 partial (by amount and by quantity), one partial then the rest in full.
    let numbers: Vec<(String, String)> = blues
        .iter()
        .map(|(n, (e, _))| (n.clone(), e.clone()))
        .collect();
    let mut reds = Vec::new();
    for (k, (number, ent)) in numbers.iter().take(7).enumerate() {
        let body = match k {
            0..=2 => json!({"order_id": format!("RF-{k}"), "reason": "01"}),
            3 => {
                json!({"order_id": "RP-3", "reason": "04", "buyer_confirmation": "buyer:confirm:3",
                        "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "30.00"}]}})
            }
            4 => {
                json!({"order_id": "RP-4", "reason": "02", "buyer_confirmation": "buyer:confirm:4",
                        "scope": {"scope": "partial", "lines": [{"line": 1, "quantity": "1"}]}})
            }
            _ => {
                json!({"order_id": format!("RP-{k}"), "reason": "03", "buyer_confirmation": format!("buyer:confirm:{k}"),
                        "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "100.00"}]}})
            }
        };
        let r = post(&env.erp(ent), &format!("/v1/invoices/{number}/red"), &body).await;
        let v = json_of(&r);
        assert_eq!(r.status, 201, "{v}");
        assert_eq!(v["blue_number"], json!(number));
        reds.push((v["number"].as_str().unwrap().to_owned(), ent.clone(), v));
    }
    // The last blue with a partial red: reverse the rest fully; then nothing is left.
    let (last_blue, last_ent) = &numbers[6];
    let r = post(
        &env.erp(last_ent),
        &format!("/v1/invoices/{last_blue}/red"),
        &json!({"order_id": "RF-REST", "reason": "01"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let v = json_of(&r);
    reds.push((
        v["number"].as_str().unwrap().to_owned(),
        last_ent.clone(),
        v,
    ));
    let r = post(
        &env.erp(last_ent),
        &format!("/v1/invoices/{last_blue}/red"),
        &json!({"order_id": "RF-MORE", "reason": "01"}),
    )
    .await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (422, "red_invalid")
    );

    settle(&env).await;

    // Every invoice, three ways.
    let accepted: BTreeMap<String, fapiao_tax::Accepted> = env
        .system
        .tax
        .accepted()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.number.clone(), a))
        .collect();
    let all: Vec<(String, String)> = blues
        .iter()
        .map(|(n, (e, _))| (n.clone(), e.clone()))
        .chain(reds.iter().map(|(n, e, _)| (n.clone(), e.clone())))
        .collect();
    assert_eq!(all.len(), 108);
    assert_eq!(accepted.len(), 108, "tax holds exactly the issued invoices");
    for (number, ent) in &all {
        let c = json_of(&get(&env.erp(ent), &format!("/v1/invoices/{number}")).await);
        assert_eq!(c["tax_status"], "accepted", "{number}: {c}");
        let p = env.system.platform.invoice(number).await.unwrap().unwrap();
        let cw: WireInvoice = serde_json::from_value(
            serde_json::json!({"invoice": c["invoice"], "signature": c["signature"]}),
        )
        .unwrap();
        assert_eq!(
            cw, p.invoice,
            "{number}: cloud and platform hold the same signed invoice"
        );
        let signed = cw.to_signed().unwrap();
        fapiao_issuer::verify(&signed, &trust, crate::now()).unwrap();
        assert_eq!(signed.invoice.number().as_str(), number);
        assert_eq!(
            c["total"].as_str().unwrap(),
            signed.invoice.draft().totals().total.to_string()
        );
        let receipt: fapiao_protocol::wire::SignedReceipt =
            serde_json::from_value(c["receipt"].clone()).unwrap();
        receipt.verify(&trust, crate::now()).unwrap();
        assert_eq!(Some(&receipt), p.receipt.as_ref());
        let hash = fapiao_protocol::erp::hex(&fapiao_crypto::primitives::sm3(
            &fapiao_render::signed_content(&signed.invoice, signed.signature.signed_at),
        ));
        assert_eq!(receipt.receipt.content_hash, hash);
        let a = &accepted[number];
        assert_eq!(
            (a.acceptances, a.duplicates, a.content_hash.as_str()),
            (1, 0, hash.as_str()),
            "{number}"
        );
    }

    // 查验 over HTTPS, with the fields of the QR code.
    let tax = fapiao_protocol::HttpsClient::new(
        &env.system.tax_url(),
        std::sync::Arc::new(fapiao_crypto::tls::client_config(None, &trust).unwrap()),
    )
    .unwrap();
    let check = |number: &str, v: &Value| {
        let signed = serde_json::from_value::<WireInvoice>(
            serde_json::json!({"invoice": v["invoice"], "signature": v["signature"]}),
        )
        .unwrap()
        .to_signed()
        .unwrap();
        let _ = number;
        fapiao_render::qr_content(&signed.invoice)
    };
    let verify = |qr: String| {
        let tax = &tax;
        async move {
            let q: String = qr
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b == b'.' {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            json_of(
                &tax.request(
                    http::Method::GET,
                    &format!("/v1/verify?qr={q}"),
                    &[],
                    Vec::new(),
                )
                .await
                .unwrap(),
            )
        }
    };
    let untouched = &numbers[50];
    assert_eq!(
        verify(check(&untouched.0, &blues[&untouched.0].1)).await["result"],
        "valid"
    );
    let full = &numbers[0];
    let v = verify(check(&full.0, &blues[&full.0].1)).await;
    assert_eq!(
        (v["result"].as_str(), v["reversal"].as_str()),
        (Some("red_reversed"), Some("full"))
    );
    let partial = &numbers[3];
    let v = verify(check(&partial.0, &blues[&partial.0].1)).await;
    assert_eq!(
        (v["result"].as_str(), v["reversal"].as_str()),
        (Some("red_reversed"), Some("partial"))
    );
    assert_eq!(
        verify(check(&numbers[6].0, &blues[&numbers[6].0].1)).await["reversal"],
        "full"
    );
    // Any field off: unknown.
    let qr = check(&untouched.0, &blues[&untouched.0].1);
    let f: Vec<&str> = qr.split(',').collect();
    let off =
        fapiao_model::Amount::parse(f[4]).unwrap() + fapiao_model::Amount::parse("0.01").unwrap();
    let wrong_total = format!(
        "{},{},{},{},{off},{},{},{}",
        f[0], f[1], f[2], f[3], f[5], f[6], f[7]
    );
    assert_eq!(verify(wrong_total).await["result"], "unknown");
    let by_fields = tax
        .request(
            http::Method::GET,
            &format!("/v1/verify?number={}&date=19990101&total={}", f[3], f[4]),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(json_of(&by_fields)["result"], "unknown");

    // The listing pages through an enterprise's 50 blues and its reds, newest first.
    let erp = env.erp(SH);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/invoices?kind=blue&limit=7&cursor={c}"),
            None => "/v1/invoices?kind=blue&limit=7".to_owned(),
        };
        let page = json_of(&get(&erp, &path).await);
        for it in page["items"].as_array().unwrap() {
            assert_eq!(it["kind"], "blue");
            seen.push(it["number"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 50, "no invoice twice across pages");
    let sh_reds = reds.iter().filter(|(_, e, _)| e == SH).count();
    let page = json_of(&get(&erp, "/v1/invoices?kind=red&status=accepted&buyer=华章").await);
    assert_eq!(page["items"].as_array().unwrap().len(), sh_reds);
    let page = json_of(&get(&erp, "/v1/invoices?from=2000-01-01&to=2000-12-31").await);
    assert!(page["items"].as_array().unwrap().is_empty());
    let r = get(&erp, "/v1/invoices?kind=green").await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (400, "invalid_request")
    );
    env.system.shutdown().await;
}
