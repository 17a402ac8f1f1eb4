//! The ERP API as documented: every documented route exists and demands a signature, the
//! document is served, and the layout downloads are the real files (xmllint against the XSD,
//! pdftotext, qpdf, pdfdetach).

use std::process::Command;

use crate::helpers::*;

fn tool(dir: &std::path::Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_routes_exist_and_downloads_are_real_layout_files() {
    let env = Env::start().await;
    let erp = env.erp(SZ);
    let r = post(&erp, "/v1/invoices", &order(SZ, "DL-1", "88.80")).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();

    // The served document is the one in docs/.
    let served = erp
        .send_raw(http::Method::GET, "/v1/openapi.json", &[], b"")
        .await
        .unwrap();
    assert_eq!(served.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&served.body).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(doc, file);

    // Each documented operation exists and refuses an unsigned request.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let p = path
                .replace("{number}", &number)
                .replace("{order_id}", "ORDER-1")
                .replace("{id}", "we_000000000000000000000000")
                .replace("{delivery}", "1");
            let m: http::Method = method.to_uppercase().parse().unwrap();
            let r = erp.send_raw(m, &p, &[], b"").await.unwrap();
            if path == "/v1/openapi.json" {
                assert_eq!(r.status, 200);
            } else if path == "/v1/tax-codes" {
                // Public, and says what it needs.
                assert_eq!(
                    (r.status, json_of(&r)["code"].as_str().unwrap_or("")),
                    (400, "invalid_request"),
                    "{method} {path}"
                );
            } else {
                assert_eq!(
                    (r.status, json_of(&r)["code"].as_str().unwrap_or("")),
                    (401, "unauthenticated"),
                    "{method} {path}"
                );
            }
        }
    }
    assert_eq!(operations, 19);

    // The official table, searched as an ERP picks its codes.
    let r = erp
        .send_raw(
            http::Method::GET,
            "/v1/tax-codes?q=%E8%8B%B9%E6%9E%9C",
            &[],
            b"",
        )
        .await
        .unwrap();
    let v = json_of(&r);
    assert_eq!(
        (r.status, v["catalog_version"].as_str()),
        (200, Some("32.0")),
        "{v}"
    );
    let apple = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["code"] == "1010115010100000000")
        .unwrap_or_else(|| panic!("苹果 in {v}"));
    assert_eq!(
        (&apple["short_name"], &apple["leaf"], &apple["rates"][0]),
        (&"水果".into(), &true.into(), &"9%".into())
    );
    let r = erp
        .send_raw(
            http::Method::GET,
            "/v1/tax-codes?q=1030206&limit=3",
            &[],
            b"",
        )
        .await
        .unwrap();
    let v = json_of(&r);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{v}");
    assert!(
        items
            .iter()
            .all(|i| i["code"].as_str().unwrap().starts_with("1030206"))
    );
    // What the router and extractors answer on their own is the one JSON shape too, with
    // the request id in the body and the header; successes carry the header as well.
    for (method, path, body, status, code) in [
        (
            http::Method::GET,
            "/v1/nothing-here",
            Vec::new(),
            404,
            "not_found",
        ),
        (
            http::Method::DELETE,
            "/v1/invoices",
            Vec::new(),
            405,
            "method_not_allowed",
        ),
        (
            http::Method::POST,
            "/v1/invoices",
            vec![b'x'; 300 * 1024],
            413,
            "request_too_large",
        ),
    ] {
        let r = erp
            .send_raw(
                method.clone(),
                path,
                &[("x-request-id", "probe-1".into())],
                &body,
            )
            .await
            .unwrap();
        let v = json_of(&r);
        assert_eq!(
            (
                r.status,
                v["code"].as_str().unwrap_or(""),
                v["request_id"].as_str()
            ),
            (status, code, Some("probe-1")),
            "{method} {path}: {v}"
        );
        assert_eq!(r.headers["x-request-id"], "probe-1", "{method} {path}");
        if status == 413 {
            // Not read to its end: the connection closes, and says so.
            assert_eq!(r.headers["connection"], "close", "{method} {path}");
        }
    }
    let ok = erp
        .send_raw(http::Method::GET, "/v1/openapi.json", &[], b"")
        .await
        .unwrap();
    assert!(ok.headers.contains_key("x-request-id"));

    // Downloads.
    let dir = tempfile::tempdir().unwrap();
    let xml = get(&erp, &format!("/v1/invoices/{number}/xml")).await;
    assert_eq!(xml.status, 200);
    assert!(
        xml.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("filename=\"dzfp_{number}.xml\"")),
        "an ASCII name for clients that read no filename*"
    );
    assert!(
        crate::ofd::download_name(&xml)
            .starts_with(&format!("dzfp_{number}_北京华章商贸有限公司_")),
        "the national platform's name"
    );
    std::fs::write(dir.path().join("i.xml"), &xml.body).unwrap();
    let xsd =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../render/schema/EInvoice.xsd");
    let (ok, out) = tool(
        dir.path(),
        "xmllint",
        &["--noout", "--schema", xsd.to_str().unwrap(), "i.xml"],
    );
    assert!(ok, "{out}");
    let text = String::from_utf8(xml.body.to_vec()).unwrap();
    assert!(
        text.contains(&number) && text.contains("<SignatureValue>"),
        "signed XML"
    );

    let pdf = get(&erp, &format!("/v1/invoices/{number}/pdf")).await;
    assert_eq!(
        (pdf.status, pdf.headers["content-type"].to_str().unwrap()),
        (200, "application/pdf")
    );
    std::fs::write(dir.path().join("i.pdf"), &pdf.body).unwrap();
    let (ok, out) = tool(dir.path(), "qpdf", &["--check", "i.pdf"]);
    assert!(ok, "{out}");
    let (_, text) = tool(dir.path(), "pdftotext", &["-layout", "i.pdf", "-"]);
    assert!(
        text.contains(&number) && text.contains("深圳味源食品有限公司"),
        "{text}"
    );
    let (ok, out) = tool(dir.path(), "pdfdetach", &["-list", "i.pdf"]);
    assert!(ok && out.contains(&format!("dzfp_{number}.xml")), "{out}");
    let r = get(&env.erp(SH), &format!("/v1/invoices/{number}/pdf")).await;
    assert_eq!(r.status, 404, "another enterprise's invoice is not found");

    // The QR code printed on the downloaded PDF is what 查验 takes: scan it, ask tax.
    let (ok, out) = tool(
        dir.path(),
        "pdftoppm",
        &["-r", "200", "-f", "1", "-l", "1", "-png", "i.pdf", "page"],
    );
    assert!(ok, "{out}");
    let png = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|f| f.starts_with("page") && f.ends_with(".png"))
        .unwrap();
    let (ok, qr) = tool(
        dir.path(),
        "zbarimg",
        &[
            "--nodbus",
            "-q",
            "--raw",
            "-Sdisable",
            "-Sqrcode.enable",
            &png,
        ],
    );
    assert!(ok, "{qr}");
    let qr = qr.trim();
    assert!(qr.starts_with(&format!("01,32,,{number},")), "{qr}");
    settle(&env).await;
    let tax = fapiao_protocol::HttpsClient::new(
        &env.system.tax_url(),
        std::sync::Arc::new(fapiao_crypto::tls::client_config(None, env.trust()).unwrap()),
    )
    .unwrap();
    let query: String = qr
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = tax
        .request(
            http::Method::GET,
            &format!("/v1/verify?qr={query}"),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(json_of(&r)["result"], "valid", "{}", json_of(&r));

    // Exactly those three facts: a total a cent off, or another day, is not this invoice.
    let fields: Vec<&str> = qr.split(',').collect();
    let (total, date) = (fields[4], fields[5]);
    let cent_off = (fapiao_model::Amount::parse(total).unwrap()
        + fapiao_model::Amount::parse("0.01").unwrap())
    .to_string();
    let next_day = format!(
        "{}{}",
        &date[..6],
        if &date[6..] == "28" { "27" } else { "28" }
    );
    for (n, d, t) in [
        (number.as_str(), date, cent_off.as_str()),
        (number.as_str(), next_day.as_str(), total),
    ] {
        let r = tax
            .request(
                http::Method::GET,
                &format!("/v1/verify?number={n}&date={d}&total={t}"),
                &[],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(json_of(&r)["result"], "unknown", "{d} {t}: {}", json_of(&r));
    }
    let r = tax
        .request(
            http::Method::GET,
            &format!("/v1/verify?number={number}&date={date}&total={total}"),
            &[],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(json_of(&r)["result"], "valid", "{}", json_of(&r));
    env.system.shutdown().await;
}
