//! What an integrator sees: one error shape for reds and blues, strict JSON (no repeated keys,
//! no spaces around amounts), remarks with line breaks, and an invoice object that shows the
//! record beside its signature, times with their offset, and for a blue what remains to
//! reverse and its reds.

use serde_json::json;

use crate::helpers::*;

fn finding(v: &serde_json::Value) -> (String, String) {
    let f = &v["findings"][0];
    (
        f["path"].as_str().unwrap_or_default().to_owned(),
        f["code"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape_and_the_invoice_shows_its_reds() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    let before = snapshot(&env.system).await;

    // A repeated key is refused where it is, whichever copy an ERP meant.
    let mut text = order(SH, "DUP-1", "10").to_string();
    text.insert_str(text.len() - 1, r#","drawer":"王五""#);
    let r = erp
        .send(http::Method::POST, "/v1/invoices", text.as_bytes())
        .await
        .unwrap();
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["code"].as_str()),
        (422, Some("invalid_order")),
        "{v}"
    );
    assert_eq!(
        finding(&v),
        ("drawer".into(), "malformed_document".into()),
        "{v}"
    );
    // An amount with spaces around it.
    let mut o = order(SH, "SPACE-1", "10");
    o["items"][1]["amount"] = json!(" 100.00");
    let r = post(&erp, "/v1/invoices", &o).await;
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["code"].as_str()),
        (422, Some("invalid_order")),
        "{v}"
    );
    assert_eq!(
        finding(&v),
        ("items[1].amount".into(), "invalid_decimal".into()),
        "{v}"
    );
    // A value of the wrong kind names its field in JSON's words.
    let mut o = order(SH, "TYPE-1", "10");
    o["buyer"] = json!("北京华章商贸有限公司");
    let r = post(&erp, "/v1/invoices", &o).await;
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["code"].as_str()),
        (422, Some("invalid_order")),
        "{v}"
    );
    let message = v["findings"][0]["message"].as_str().unwrap();
    assert_eq!(finding(&v).0, "buyer", "{v}");
    assert!(
        message.contains("expected an object") && !message.contains("struct"),
        "{v}"
    );
    assert_eq!(
        snapshot(&env.system).await,
        before,
        "nothing refused was issued"
    );

    // A remark on several lines is kept as written.
    let mut o = order(SH, "REMARK-1", "10");
    o["remarks"] = json!("合同号 HT-2026-001\r\n项目：运维服务\n付款方式：转账");
    let r = post(&erp, "/v1/invoices", &o).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let blue = json_of(&r);
    let number = blue["number"].as_str().unwrap().to_owned();
    assert_eq!(
        blue["invoice"]["remarks"], "合同号 HT-2026-001\n项目：运维服务\n付款方式：转账",
        "{blue}"
    );
    let mut o = order(SH, "REMARK-2", "10");
    o["remarks"] = json!("1\n2\n3\n4\n5\n6");
    let v = json_of(&post(&erp, "/v1/invoices", &o).await);
    assert_eq!(
        finding(&v),
        ("remarks".into(), "invalid_text".into()),
        "{v}"
    );
    let pdf = get(&erp, &format!("/v1/invoices/{number}/pdf")).await;
    assert_eq!(pdf.status, 200);

    // Rare characters of names draw: 𠮷 (CJK Extension B) and 䶮 (Extension A), from the
    // fallback face; the PDF downloads and its text is the name.
    let mut o = order(SH, "RARE-1", "10");
    o["buyer"]["name"] = json!("𠮷䶮商贸有限公司");
    let r = post(&erp, "/v1/invoices", &o).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let rare = json_of(&r)["number"].as_str().unwrap().to_owned();
    let pdf = get(&erp, &format!("/v1/invoices/{rare}/pdf")).await;
    assert_eq!(pdf.status, 200, "{}", json_of(&pdf));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rare.pdf"), &pdf.body).unwrap();
    let out = std::process::Command::new("pdftotext")
        .current_dir(dir.path())
        .args(["rare.pdf", "-"])
        .output()
        .expect("pdftotext (poppler-utils; test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("𠮷䶮商贸有限公司"), "{text}");
    let fonts = std::process::Command::new("pdffonts")
        .current_dir(dir.path())
        .arg("rare.pdf")
        .output()
        .unwrap();
    let fonts = String::from_utf8_lossy(&fonts.stdout);
    assert!(
        // The name's common characters in the 宋体, the rare ones in the fallback.
        fonts.contains("NotoSerifCJK") && fonts.contains("NotoSansCJK"),
        "{fonts}"
    );

    // The invoice object: the record and the signature side by side, times with offsets,
    // nothing reversed yet.
    assert!(blue["invoice"]["invoice"].is_null(), "not nested: {blue}");
    assert!(blue["signature"]["value"].is_string(), "{blue}");
    assert!(
        blue["issued_at"].as_str().unwrap().ends_with("+08:00"),
        "{blue}"
    );
    assert_eq!(blue["remaining"], blue["total"], "{blue}");
    assert_eq!(blue["reds"], json!([]), "{blue}");

    // Reds: a missing field and a bad reason are the red's own code, with findings.
    let red_path = format!("/v1/invoices/{number}/red");
    for (body, path, code) in [
        (json!({"order_id": "RED-A"}), "reason", "required"),
        (
            json!({"order_id": "RED-A", "reason": 2}),
            "reason",
            "malformed_document",
        ),
        (
            json!({"order_id": "RED-A", "reason": "09"}),
            "reason",
            "invalid_choice",
        ),
        (
            json!({"order_id": "RED-A", "reason": "01", "colour": "red"}),
            "colour",
            "unknown_field",
        ),
    ] {
        let r = post(&erp, &red_path, &body).await;
        let v = json_of(&r);
        assert_eq!(
            (r.status, v["code"].as_str()),
            (422, Some("red_invalid")),
            "{body}: {v}"
        );
        assert_eq!(finding(&v), (path.into(), code.into()), "{body}: {v}");
    }
    // A red's 开票人 follows an order's rules (and the layout's): nothing numbered.
    for drawer in ["王😀", "王\u{202E}芳", &"王".repeat(31)] {
        let r = post(
            &erp,
            &red_path,
            &json!({"order_id": "RED-D", "reason": "01", "drawer": drawer}),
        )
        .await;
        let v = json_of(&r);
        assert_eq!(r.status, 422, "{drawer}: {v}");
        assert!(v["message"].as_str().unwrap().contains("drawer"), "{v}");
    }
    let r = post(
        &erp,
        &red_path,
        &json!({"order_id": "RED-P", "reason": "04", "buyer_confirmation": "buyer ok",
                "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "50.00"}]}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let red = json_of(&r);
    // Without a drawer of its own, a red has the blue's.
    assert_eq!(red["invoice"]["drawer"], blue["invoice"]["drawer"], "{red}");
    assert!(red["invoice"]["drawer"].is_string(), "{red}");
    let r = get(&erp, &format!("/v1/invoices/{number}")).await;
    let now = json_of(&r);
    assert_eq!(now["reds"][0]["number"], red["number"], "{now}");
    assert!(
        now["reds"][0]["issued_at"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );
    let remaining: rust_decimal::Decimal = now["remaining"].as_str().unwrap().parse().unwrap();
    let total: rust_decimal::Decimal = now["total"].as_str().unwrap().parse().unwrap();
    let red_total: rust_decimal::Decimal = red["total"].as_str().unwrap().parse().unwrap();
    assert!(red_total < rust_decimal::Decimal::ZERO, "{red}");
    assert_eq!(remaining, total + red_total, "{now}");
    // The listing names the blue of a red.
    let list = json_of(&get(&erp, "/v1/invoices?kind=red").await);
    assert_eq!(list["items"][0]["blue_number"], number.as_str(), "{list}");
    assert!(
        list["items"][0]["issued_at"]
            .as_str()
            .unwrap()
            .ends_with("+08:00")
    );
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seller_particulars_come_from_the_registry() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    admin_patch(
        &env,
        SH,
        json!({"seller": {"address": "上海市浦东新区张江路88号", "bank_name": "招商银行上海张江支行",
                          "bank_account": "121900000000001"}}),
    )
    .await;
    let before = snapshot(&env.system).await;
    // Another address than the registered one: refused on the field, nothing numbered.
    let mut o = order(SH, "PART-1", "10");
    o["seller"]["address"] = json!("别的地址");
    let r = post(&erp, "/v1/invoices", &o).await;
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["code"].as_str()),
        (422, Some("invalid_order")),
        "{v}"
    );
    assert_eq!(finding(&v).0, "seller.address", "{v}");
    assert_eq!(snapshot(&env.system).await, before);
    // Left out: the invoice carries the registered ones; what is not registered is the order's.
    let mut o = order(SH, "PART-2", "10");
    o["seller"]["phone"] = json!("021-50800001");
    let r = post(&erp, "/v1/invoices", &o).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let seller = &json_of(&r)["invoice"]["seller"];
    assert_eq!(seller["address"], "上海市浦东新区张江路88号", "{seller}");
    assert_eq!(seller["bank_account"], "121900000000001", "{seller}");
    assert_eq!(seller["phone"], "021-50800001", "{seller}");
    env.system.shutdown().await;
}
