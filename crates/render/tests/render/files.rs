//! Every case rendered, then read back by independent tools.

use std::path::Path;
use std::process::Command;

use fapiao_render::{RenderError, qr_content, render_pdf, render_xml, signed_content};

use crate::fixtures::{cases, device, draft_from_json, font, issue, sign};

/// Whether `openssl pkeyutl` verifies `signature` (DER, SM2 with SM3, ID
/// `1234567812345678`) over `message` with the test device's certificate; its output.
pub(crate) fn openssl_verifies_as_device(
    d: &Path,
    message: &[u8],
    signature: &[u8],
) -> (bool, String) {
    std::fs::write(d.join("message.bin"), message).unwrap();
    std::fs::write(d.join("signature.der"), signature).unwrap();
    let cert = fapiao_crypto::Certificate::from_der(&device().cert_der).unwrap();
    std::fs::write(d.join("device.pem"), cert.to_pem().unwrap()).unwrap();
    let (ok, out) = run(
        d,
        "openssl",
        &[
            "x509",
            "-in",
            "device.pem",
            "-pubkey",
            "-noout",
            "-out",
            "device.pub",
        ],
    );
    assert!(ok, "{out}");
    run(
        d,
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-digest",
            "sm3",
            "-pubin",
            "-inkey",
            "device.pub",
            "-pkeyopt",
            "distid:1234567812345678",
            "-in",
            "message.bin",
            "-sigfile",
            "signature.der",
        ],
    )
}

pub(crate) fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program} must be installed (poppler-utils, qpdf, zbar-tools, libxml2-utils): {e}"
            )
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn schema() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schema/EInvoice.xsd")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn every_case_renders_and_real_tools_read_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, invoice) in cases() {
        let xml = render_xml(&invoice, Some(&sign(&invoice)));
        let pdf = render_pdf(&invoice, &xml, font()).unwrap();
        let (xml_path, pdf_path) = (format!("{name}.xml"), format!("{name}.pdf"));
        std::fs::write(d.join(&xml_path), &xml).unwrap();
        std::fs::write(d.join(&pdf_path), &pdf).unwrap();

        // The XML is valid against our schema.
        let (ok, out) = run(d, "xmllint", &["--noout", "--schema", &schema(), &xml_path]);
        assert!(ok, "{name}: {out}");

        // The PDF is structurally clean.
        let (ok, out) = run(d, "qpdf", &["--check", &pdf_path]);
        assert!(
            ok && out.contains("No syntax or stream encoding errors"),
            "{name}: {out}"
        );

        // Its text is extractable: names, number, upper-case total, item names.
        let (ok, text) = run(d, "pdftotext", &["-layout", &pdf_path, "-"]);
        assert!(ok, "{name}: {text}");
        let draft = invoice.draft();
        let mut expected = vec![
            draft.seller().name.clone(),
            draft.buyer().name.clone(),
            invoice.number().to_string(),
            draft.total_in_words().to_owned(),
            format!("¥{}", draft.totals().total),
            "价税合计（大写）".to_owned(),
            "开票人".to_owned(),
        ];
        expected.extend(draft.lines().iter().take(3).map(|l| l.printed_name()));
        for e in expected {
            assert!(text.contains(&e), "{name}: `{e}` missing from\n{text}");
        }

        // The embedded XML comes out byte for byte.
        let (ok, out) = run(
            d,
            "pdfdetach",
            &["-save", "1", "-o", "detached.xml", &pdf_path],
        );
        assert!(ok, "{name}: {out}");
        assert_eq!(
            std::fs::read(d.join("detached.xml")).unwrap(),
            xml.as_bytes(),
            "{name}"
        );

        // The font is embedded and subset.
        let (ok, fonts) = run(d, "pdffonts", &[&pdf_path]);
        assert!(
            ok && fonts.lines().skip(2).all(|l| l.contains(" yes yes ")),
            "{name}: {fonts}"
        );

        // The QR code on the rasterised first page decodes to the expected content.
        let (ok, out) = run(
            d,
            "pdftoppm",
            &["-r", "200", "-f", "1", "-l", "1", "-png", &pdf_path, name],
        );
        assert!(ok, "{out}");
        let png = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|f| f.starts_with(&format!("{name}-")) && f.ends_with(".png"))
            .unwrap();
        let (ok, decoded) = run(
            d,
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
        assert!(ok, "{name}: {decoded}");
        assert_eq!(decoded.trim(), qr_content(&invoice), "{name}");
    }
}

#[test]
fn output_is_byte_identical_for_the_same_input() {
    let (_, invoice) = cases().remove(0);
    // One signature (SM2 signatures are hedged with fresh randomness: two differ).
    let signature = sign(&invoice);
    let xml = render_xml(&invoice, Some(&signature));
    assert_eq!(xml, render_xml(&invoice, Some(&signature)));
    assert_eq!(
        render_pdf(&invoice, &xml, font()).unwrap(),
        render_pdf(&invoice, &xml, font()).unwrap()
    );
}

#[test]
fn red_invoices_show_negatives_the_marker_and_the_official_remark() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, red) = cases().into_iter().find(|(n, _)| *n == "red-full").unwrap();
    let xml = render_xml(&red, None);
    assert!(xml.contains("<InIssuType><LabelCode>N</LabelCode>"));
    assert!(xml.contains("<TotalTax-includedAmount>-16960.00</TotalTax-includedAmount>"));
    assert!(xml.contains("<RedEInvoice><OriginalInvoiceCode>26312000000000000101</OriginalInvoiceCode><CreditNoteNumber>31011526112000123456</CreditNoteNumber></RedEInvoice>"));
    std::fs::write(
        tmp.path().join("red.pdf"),
        render_pdf(&red, &xml, font()).unwrap(),
    )
    .unwrap();
    let (_, text) = run(tmp.path(), "pdftotext", &["-layout", "red.pdf", "-"]);
    for e in [
        "（负数）壹万陆仟玖佰陆拾圆整",
        "¥-16960.00",
        "-10000.00",
        "被红冲蓝字数电发票号码：26312000000000000101",
        "红字发票信息确认单编号：31011526112000123456",
    ] {
        assert!(text.contains(e), "`{e}` missing from\n{text}");
    }
    assert!(qr_content(&red).starts_with("01,32,,26312000000000000201,-16960.00,20261120,,"));
}

#[test]
fn sixty_lines_continue_over_pages_with_totals_on_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_, inv) = cases()
        .into_iter()
        .find(|(n, _)| *n == "sixty-lines")
        .unwrap();
    let xml = render_xml(&inv, None);
    std::fs::write(d.join("long.pdf"), render_pdf(&inv, &xml, font()).unwrap()).unwrap();
    let (_, info) = run(d, "pdfinfo", &["long.pdf"]);
    let pages: usize = info
        .lines()
        .find(|l| l.starts_with("Pages:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(pages >= 6, "{info}");
    let total = format!("¥{}", inv.draft().totals().total);
    for page in 1..=pages {
        let p = page.to_string();
        let (_, text) = run(
            d,
            "pdftotext",
            &["-layout", "-f", &p, "-l", &p, "long.pdf", "-"],
        );
        assert!(text.contains(&format!("第{page}页/共{pages}页")), "{text}");
        assert_eq!(text.contains(&total), page == pages, "page {page}:\n{text}");
    }
    let (_, all) = run(d, "pdftotext", &["-layout", "long.pdf", "-"]);
    for i in 1..=60 {
        assert!(
            all.contains(&format!("系统模块{i:02}定制开发")),
            "line {i} missing"
        );
    }
}

#[test]
fn a_character_the_font_lacks_is_reported() {
    let order = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/basic.json"),
    )
    .unwrap()
    .replace("北京华章商贸有限公司", "北京\u{2A6D6}商贸有限公司");
    let inv = issue(draft_from_json(&order), 999);
    let err = render_pdf(&inv, &render_xml(&inv, None), font()).unwrap_err();
    assert_eq!(
        err,
        RenderError::MissingGlyph {
            character: '\u{2A6D6}',
            field: "buyer.name"
        }
    );
}

/// Every character of a legacy Chinese encoding, as Python's own codec decodes it: GB 2312's
/// double-byte area (rows A1–F7, cells A1–FE), or GBK's (lead 81–FE, trail 40–FE) restricted
/// to Han ideographs.
fn characters_of(encoding: &str) -> Vec<char> {
    let script = match encoding {
        "gb2312" => {
            "import sys\n\
             out = []\n\
             for hi in range(0xA1, 0xF8):\n\
             \x20   for lo in range(0xA1, 0xFF):\n\
             \x20       try: out.append(bytes([hi, lo]).decode('gb2312'))\n\
             \x20       except UnicodeDecodeError: pass\n\
             sys.stdout.write(''.join(out))\n"
        }
        "gbk-han" => {
            "import sys, unicodedata\n\
             out = []\n\
             for hi in range(0x81, 0xFF):\n\
             \x20   for lo in range(0x40, 0xFF):\n\
             \x20       try: c = bytes([hi, lo]).decode('gbk')\n\
             \x20       except UnicodeDecodeError: continue\n\
             \x20       if unicodedata.name(c, '').startswith('CJK '): out.append(c)\n\
             sys.stdout.write(''.join(out))\n"
        }
        other => panic!("no script for {other}"),
    };
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONIOENCODING", "utf-8")
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().chars().collect()
}

#[test]
fn the_bundled_font_covers_gb2312_and_the_gbk_han_set() {
    let gb2312 = characters_of("gb2312");
    // GB 2312 has 7,445 graphic characters; GBK 21,003 Han ideographs (CJK Unified plus the
    // compatibility ideographs Python's codec also maps).
    assert_eq!(gb2312.len(), 7445, "Python's GB 2312 codec");
    let gbk_han = characters_of("gbk-han");
    assert!(gbk_han.len() >= 20_900, "GBK Han: {}", gbk_han.len());
    for (set, chars) in [("GB 2312", &gb2312), ("GBK Han", &gbk_han)] {
        let missing: Vec<char> = chars
            .iter()
            .copied()
            .filter(|&c| font().missing(&c.to_string()).is_some())
            .collect();
        assert!(
            missing.is_empty(),
            "{set}: the font lacks {} characters: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
    }

    // Characters outside GB 2312 that are common in company and personal names are drawn, and
    // read back from the PDF.
    let rare = "堃喆玥赟昇旻珺琇";
    assert!(
        rare.chars()
            .all(|c| !gb2312.contains(&c) && gbk_han.contains(&c))
    );
    let order = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/basic.json"),
    )
    .unwrap()
    .replace("北京华章商贸有限公司", &format!("北京{rare}商贸有限公司"));
    let inv = issue(draft_from_json(&order), 998);
    let pdf = render_pdf(&inv, &render_xml(&inv, None), font()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("rare.pdf"), pdf).unwrap();
    let (ok, text) = run(tmp.path(), "pdftotext", &["rare.pdf", "-"]);
    assert!(ok && text.contains(rare), "{text}");
}

#[test]
fn the_fallback_face_draws_extension_a_whole_and_rare_extension_b_names() {
    // GB 18030-2022 implementation level 1 takes in CJK Extension A whole; names use 生僻字
    // beyond it (𠮷 U+20BB7, Extension B). The primary face has two of Extension A's 6,582.
    let ext_a: Vec<char> = (0x3400..=0x4DBF).filter_map(char::from_u32).collect();
    assert_eq!(ext_a.len(), 6592);
    let missing: Vec<char> = ext_a
        .iter()
        .copied()
        .filter(|&c| font().missing(&c.to_string()).is_some())
        .collect();
    // U+4DB6..U+4DBF were added after Noto Sans CJK's repertoire was fixed (Unicode 13).
    assert!(
        missing
            .iter()
            .all(|&c| ('\u{4DB6}'..='\u{4DBF}').contains(&c)),
        "{missing:?}"
    );
    let name = "𠮷䶮㐀";
    assert_eq!(font().missing(name), None);
    let order = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/basic.json"),
    )
    .unwrap()
    .replace("北京华章商贸有限公司", &format!("北京{name}商贸有限公司"));
    let inv = issue(draft_from_json(&order), 997);
    let xml = render_xml(&inv, None);
    let pdf = render_pdf(&inv, &xml, font()).unwrap();
    assert_eq!(
        pdf,
        render_pdf(&inv, &xml, font()).unwrap(),
        "deterministic"
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ext.pdf"), pdf).unwrap();
    let (ok, text) = run(tmp.path(), "pdftotext", &["ext.pdf", "-"]);
    assert!(
        ok && text.contains(&format!("北京{name}商贸有限公司")),
        "{text}"
    );
    // Neither face draws U+20000: refused, named.
    assert_eq!(font().missing("北京\u{20000}"), Some('\u{20000}'));
}

#[test]
fn the_xml_signature_verifies_with_openssl_over_the_documented_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_, inv) = cases().remove(1);
    let sig = sign(&inv);
    let xml = render_xml(&inv, Some(&sig));
    // The signed bytes are literally the listed nodes of the document.
    let content = String::from_utf8(signed_content(&inv, sig.signed_at)).unwrap();
    for node in [
        "<Header>",
        "<EInvoiceData>",
        "<SellerAuthentication>",
        "<TaxSupervisionInfo>",
    ] {
        let start = xml.find(node).unwrap();
        let close = node.replace('<', "</");
        let end = xml.find(&close).unwrap() + close.len();
        assert!(content.contains(&xml[start..end]), "{node}");
    }
    let (ok, out) = openssl_verifies_as_device(d, content.as_bytes(), &sig.value);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
    // The signature value in the XML is the same DER, base64.
    assert!(xml.contains(&format!(
        "<SignatureValue>{}</SignatureValue>",
        fapiao_render::base64(&sig.value)
    )));
}

/// The pictures of `docs/` (first pages at 110 dpi) and the invoice each shows.
fn pictures() -> Vec<(&'static str, fapiao_model::Invoice)> {
    let mut cases = cases();
    let mut take = |name: &str| {
        let at = cases.iter().position(|(n, _)| *n == name).unwrap();
        cases.remove(at).1
    };
    vec![
        ("invoice-blue", take("basic")),
        ("invoice-special", take("special")),
        ("invoice-red", take("red-full")),
        ("invoice-long", take("sixty-lines")),
        (
            "invoice-edge",
            issue(draft_from_json(&crate::layout::longest_order()), 990),
        ),
    ]
}

/// An RGB picture: width, height, pixels.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut reader = png::Decoder::new(png_bytes).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "pdftoppm writes RGB");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Golden images: each picture of `docs/` is the first page of its invoice as rendered now
/// (pdftoppm, 110 dpi), pixel for pixel but for anti-aliasing — at most 0.05 % of the pixels
/// may differ by more than a quarter of the range. A layout change, intended or not, fails
/// here; `UPDATE_DOCS=1 cargo test -p fapiao-render golden` redraws the pictures after an
/// intended one (look at them before committing).
#[test]
fn golden_images_of_the_docs_match_the_layout() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let update = std::env::var_os("UPDATE_DOCS").is_some();
    let tmp = tempfile::tempdir().unwrap();
    for (file, inv) in pictures() {
        let xml = render_xml(&inv, Some(&sign(&inv)));
        std::fs::write(
            tmp.path().join("x.pdf"),
            render_pdf(&inv, &xml, font()).unwrap(),
        )
        .unwrap();
        let out = tmp.path().join(file);
        let (ok, msg) = run(
            tmp.path(),
            "pdftoppm",
            &[
                "-r",
                "110",
                "-png",
                "-singlefile",
                "x.pdf",
                out.to_str().unwrap(),
            ],
        );
        assert!(ok, "{msg}");
        let now = std::fs::read(out.with_extension("png")).unwrap();
        let golden = docs.join(format!("{file}.png"));
        if update {
            std::fs::write(&golden, &now).unwrap();
            continue;
        }
        let was = std::fs::read(&golden).unwrap_or_else(|_| {
            panic!("docs/{file}.png is missing: UPDATE_DOCS=1 cargo test -p fapiao-render golden")
        });
        let (a, b) = (decode(&was), decode(&now));
        assert_eq!((a.0, a.1), (b.0, b.1), "docs/{file}.png: another page size");
        let differing =
            a.2.chunks_exact(3)
                .zip(b.2.chunks_exact(3))
                .filter(|(p, q)| p.iter().zip(q.iter()).any(|(x, y)| x.abs_diff(*y) > 64))
                .count();
        let allowed = a.2.len() / 3 / 2000;
        assert!(
            differing <= allowed,
            "docs/{file}.png: {differing} pixels differ (at most {allowed}): the layout changed; \
             if intended, UPDATE_DOCS=1 cargo test -p fapiao-render golden and look at the pictures"
        );
    }
}

#[test]
fn an_exempt_line_prints_its_tax_as_stars() {
    let mut order: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/basic.json"),
        )
        .unwrap(),
    )
    .unwrap();
    order["items"] = serde_json::json!([
        {"name": "早籼稻", "tax_code": "1010101010000000000", "unit": "吨", "quantity": "2",
         "unit_price": "3000", "tax_rate": "免税"},
        {"name": "系统运维服务", "tax_code": "3040201030000000000", "amount": "100.00",
         "tax_rate": "6%"}
    ]);
    order.as_object_mut().unwrap().remove("totals");
    let inv = issue(draft_from_json(&order.to_string()), 996);
    let cells = fapiao_render::line_cells(&inv.draft().lines()[0]);
    assert_eq!((cells[6].as_str(), cells[7].as_str()), ("免税", "***"));
    assert_eq!(
        fapiao_render::line_cells(&inv.draft().lines()[1])[7],
        "6.00"
    );
    let pdf = render_pdf(&inv, &render_xml(&inv, None), font()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("exempt.pdf"), pdf).unwrap();
    let (ok, text) = run(tmp.path(), "pdftotext", &["-layout", "exempt.pdf", "-"]);
    assert!(
        ok && text.contains("***") && text.contains("免税"),
        "{text}"
    );
}
