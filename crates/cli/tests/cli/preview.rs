//! `fapiao preview` on the example orders.

use crate::{fapiao, stdout};

#[test]
fn preview_prints_parties_lines_and_the_upper_case_total() {
    let o = fapiao(&["preview", "examples/orders/basic.json"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    for expected in [
        "电子发票（普通发票）",
        "北京华章商贸有限公司",
        "91310115MA1FP0001X",
        "*信息技术服务*订单管理系统定制开发",
        "¥16000.00",
        "⊗壹万陆仟玖佰陆拾圆整",
        "（小写）¥16960.00",
        "开票人：李静",
    ] {
        assert!(out.contains(expected), "missing {expected} in\n{out}");
    }
}

#[test]
fn every_valid_example_previews() {
    for name in [
        "basic",
        "special",
        "inclusive",
        "discount",
        "natural-person",
    ] {
        let o = fapiao(&["preview", &format!("examples/orders/{name}.json")]);
        assert!(o.status.success(), "{name}: {o:?}");
    }
}

#[test]
fn a_natural_person_id_is_masked_in_the_preview() {
    let out = stdout(&fapiao(&["preview", "examples/orders/natural-person.json"]));
    assert!(out.contains("310115********1239"), "{out}");
    assert!(!out.contains("310115199003071239"), "{out}");
}

#[test]
fn an_invalid_order_prints_every_finding_and_exits_2() {
    let o = fapiao(&["preview", "examples/orders/invalid.json"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    for path in [
        "seller.taxpayer_id",
        "buyer.name",
        "items[0].tax_rate",
        "items[0].amount",
        "items[1].amount",
        "items[2].colour",
    ] {
        assert!(
            err.contains(&format!("  {path}: ")),
            "missing {path} in\n{err}"
        );
    }
    assert!(o.stdout.is_empty());
}

#[test]
fn json_output_is_machine_readable_both_ways() {
    let ok: serde_json::Value = serde_json::from_slice(
        &fapiao(&["preview", "--json", "examples/orders/special.json"]).stdout,
    )
    .unwrap();
    assert_eq!(ok["totals"]["total"], "15180.60");
    assert_eq!(ok["lines"][0]["tax_rate"], "13%");
    let bad = fapiao(&["preview", "--json", "examples/orders/invalid.json"]);
    assert_eq!(bad.status.code(), Some(2));
    let findings: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(
        findings["findings"][0]["code"],
        "taxpayer_id_check_character"
    );
}

#[test]
fn an_operator_catalog_replaces_the_bundled_one() {
    let dir = std::env::temp_dir().join(format!("fapiao-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("catalog.csv");
    std::fs::write(
        &csv,
        "code,short_name,default_rate,name\n3040201010000000000,软件服务,6%,软件开发服务\n",
    )
    .unwrap();
    let o = fapiao(&[
        "preview",
        "--catalog",
        csv.to_str().unwrap(),
        "examples/orders/basic.json",
    ]);
    // The maintenance code is not in this catalog.
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("items[1].tax_code: unknown_tax_code"));
    std::fs::write(&csv, "code,short_name\n").unwrap();
    let o = fapiao(&[
        "preview",
        "--catalog",
        csv.to_str().unwrap(),
        "examples/orders/basic.json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tax catalog line 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let o = fapiao(&["preview", "examples/orders/nope.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("reading order examples/orders/nope.json"));
}

#[test]
fn render_writes_a_pdf_and_xml_from_an_invoice_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pdf = tmp.path().join("out.pdf");
    let xml = tmp.path().join("out.xml");
    let o = fapiao(&[
        "render",
        "examples/invoices/special.json",
        "--pdf",
        pdf.to_str().unwrap(),
        "--xml",
        xml.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains("<EIid>26442000000000000102</EIid>"), "{text}");
    assert!(
        !text.contains("TaxBureauSignature"),
        "unsigned without --device"
    );
    // An edited invoice file is refused with the field that disagrees.
    let edited = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/invoices/special.json"),
    )
    .unwrap()
    .replace("\"total\": \"15180.60\"", "\"total\": \"15180.61\"");
    std::fs::write(tmp.path().join("edited.json"), edited).unwrap();
    let o = fapiao(&[
        "render",
        tmp.path().join("edited.json").to_str().unwrap(),
        "--xml",
        xml.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("totals.total"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn preview_with_a_number_writes_an_invoice_file_render_reads() {
    let o = fapiao(&[
        "preview",
        "examples/orders/basic.json",
        "--number",
        "26312000000000000101",
        "--issued-at",
        "2026-11-20 10:15:30",
        "--json",
    ]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/invoices/basic.json")
        )
        .unwrap()
    );
    let o = fapiao(&[
        "preview",
        "examples/orders/basic.json",
        "--number",
        "25312000000000000101",
        "--issued-at",
        "2026-11-20 10:15:30",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("issue year"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
