//! `fapiao verify` on files `fapiao render --device` signs: the XML and the PDF check out
//! offline; a file carrying a second, forged `EInvoiceData` is refused although a naive
//! "first occurrence" check (shown here with OpenSSL) would accept it; OpenSSL and gmssl verify
//! the signature by the documented procedure; tax's receipt is checked against the content.

use std::path::Path;
use std::process::Command;

use fapiao_crypto::{Certificate, PrivateKey};
use fapiao_protocol::wire::{Receipt, SignedReceipt, UploadStatus};

use crate::{fapiao_in, stderr, stdout};

const SELLER: &str = "91440300MA5GK00036";

/// A GM CA with an issuing device of the seller of `examples/invoices/special.json`, a tax
/// signing key and the CA's CRL, and that invoice rendered and signed: (xml, pdf).
fn signed_files(d: &Path) -> (String, String) {
    let run = |args: &[&str]| {
        let o = fapiao_in(d, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    };
    run(&["pki", "init", "--suite", "gm"]);
    run(&[
        "pki",
        "issue",
        "--suite",
        "gm",
        "--role",
        "device",
        "--name",
        "dev-1",
        "--taxpayer-id",
        SELLER,
        "--profile",
        "signing",
        "--out",
        "device",
    ]);
    run(&[
        "pki",
        "issue",
        "--suite",
        "gm",
        "--role",
        "tax",
        "--name",
        "tax",
        "--profile",
        "signing",
        "--out",
        "tax",
    ]);
    run(&["pki", "crl", "--suite", "gm"]);
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/invoices/special.json");
    run(&[
        "render",
        example.to_str().unwrap(),
        "--device",
        "device",
        "--xml",
        "dzfp.xml",
        "--pdf",
        "dzfp.pdf",
        "--ofd",
        "dzfp.ofd",
    ]);
    (
        d.join("dzfp.xml").to_str().unwrap().to_owned(),
        d.join("dzfp.pdf").to_str().unwrap().to_owned(),
    )
}

fn verify(d: &Path, file: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "verify",
        file,
        "--root",
        "pki/gm/ca.crt.pem",
        "--crl",
        "pki/gm/crl.pem",
    ];
    args.extend(extra);
    let o = fapiao_in(d, &args);
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// The five signed elements of `xml`, each taken at its first occurrence as a naive checker
/// would (the documented procedure requires each to occur exactly once, which the schema
/// step enforces), concatenated.
fn first_occurrences(xml: &str) -> Vec<u8> {
    let mut out = String::new();
    for name in [
        "Header",
        "EInvoiceData",
        "SellerAuthentication",
        "TaxSupervisionInfo",
        "SignatureTime",
    ] {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open).unwrap();
        let end = xml[start..].find(&close).unwrap() + start + close.len();
        out.push_str(&xml[start..end]);
    }
    out.into_bytes()
}

fn between<'a>(xml: &'a str, open: &str, close: &str) -> &'a str {
    let start = xml.find(open).unwrap() + open.len();
    &xml[start..start + xml[start..].find(close).unwrap()]
}

/// OpenSSL's verdict on `signature` (base64 DER) over `signed` with the certificate's key.
fn openssl_verifies(d: &Path, signed: &[u8], signature_b64: &str, cert_b64: &str) -> bool {
    let sh = |script: &str| {
        Command::new("bash")
            .args(["-c", script])
            .current_dir(d)
            .output()
            .unwrap()
    };
    std::fs::write(d.join("signed.bin"), signed).unwrap();
    std::fs::write(d.join("sig.b64"), signature_b64).unwrap();
    std::fs::write(d.join("cert.b64"), cert_b64).unwrap();
    let o = sh(
        "base64 -d sig.b64 > sig.der && base64 -d cert.b64 > cert.der && \
         openssl x509 -inform DER -in cert.der -pubkey -noout > pub.pem && \
         openssl pkey -pubin -in pub.pem -outform DER | tail -c 64 | xxd -p | tr -d '\\n' > pub.hex && \
         openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt distid:1234567812345678 \
         -pubin -inkey pub.pem -in signed.bin -sigfile sig.der",
    );
    String::from_utf8_lossy(&o.stdout).contains("Signature Verified Successfully")
}

#[test]
fn a_signed_xml_pdf_and_ofd_verify_offline_and_openssl_and_gmssl_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (xml_path, pdf_path) = signed_files(d);
    let ofd_path = d.join("dzfp.ofd").to_str().unwrap().to_owned();
    for file in [&xml_path, &pdf_path, &ofd_path] {
        let (code, out) = verify(d, file, &[]);
        assert_eq!(code, Some(0), "{file}: {out}");
        assert!(
            out.contains("valid: 数电票 26442000000000000102") && out.contains("device:dev-1"),
            "{out}"
        );
    }
    // An OFD whose signature value is another signature of the device (the XML's, over
    // other bytes), and one with a part changed after signing: both invalid.
    let ofd = std::fs::read(&ofd_path).unwrap();
    let mut parts = fapiao_render::ofd::parts(&ofd).unwrap();
    let xml_signature = {
        let xml = std::fs::read_to_string(&xml_path).unwrap();
        let b64 = between(&xml, "<SignatureValue>", "</SignatureValue>").to_owned();
        Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(b64.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap()
            .stdout
    };
    let at = |parts: &[(String, Vec<u8>)], name: &str| {
        parts.iter().position(|(n, _)| n == name).unwrap()
    };
    let mut swapped = parts.clone();
    let k = at(&swapped, fapiao_render::ofd::SIGNED_VALUE);
    swapped[k].1 = xml_signature;
    std::fs::write(d.join("swapped.ofd"), fapiao_render::ofd::pack(&swapped)).unwrap();
    let (code, out) = verify(d, d.join("swapped.ofd").to_str().unwrap(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not the device's signature"), "{out}");
    let k = at(&parts, "Doc_0/Pages/Page_0/Content.xml");
    let text = String::from_utf8(parts[k].1.clone()).unwrap();
    parts[k].1 = text
        .replacen("26442000000000000102", "26442000000000000103", 1)
        .into_bytes();
    std::fs::write(d.join("changed.ofd"), fapiao_render::ofd::pack(&parts)).unwrap();
    let (code, out) = verify(d, d.join("changed.ofd").to_str().unwrap(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Content.xml: its SM3 digest does not match"),
        "{out}"
    );
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    assert!(xml.contains(
        "<Reference URI=\"/EInvoice/Header|/EInvoice/EInvoiceData|/EInvoice/SellerAuthentication|/EInvoice/TaxSupervisionInfo|/EInvoice/TaxBureauSignature/SignatureTime\"/>"
    ));
    let signed = first_occurrences(&xml);
    let (sig, cert) = (
        between(&xml, "<SignatureValue>", "</SignatureValue>"),
        between(&xml, "<KeyInfo>", "</KeyInfo>"),
    );
    assert!(openssl_verifies(d, &signed, sig, cert));
    // gmssl, on the same bytes (the key as OpenSSL read it from the certificate).
    let script = "import sys, base64\nfrom gmssl import sm2\nsigned = open(sys.argv[1], 'rb').read()\nsig = base64.b64decode(open(sys.argv[2]).read())\nv = sm2.CryptSM2(private_key='', public_key='', asn1=True)\nv.public_key = open(sys.argv[3]).read().strip()\nsys.exit(0 if v.verify_with_sm3(sig.hex(), signed) else 1)\n";
    let o = Command::new("python3")
        .args(["-c", script, "signed.bin", "sig.b64", "pub.hex"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "gmssl: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The total changed in the one EInvoiceData: the signature no longer holds.
    let total = between(
        &xml,
        "<TotalTax-includedAmount>",
        "</TotalTax-includedAmount>",
    );
    let edited = xml.replacen(
        &format!("<TotalTax-includedAmount>{total}</TotalTax-includedAmount>"),
        "<TotalTax-includedAmount>1.00</TotalTax-includedAmount>",
        1,
    );
    std::fs::write(d.join("edited.xml"), &edited).unwrap();
    let (code, out) = verify(d, "edited.xml", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not verify"), "{out}");
    // Another CA: the device is not one of it.
    let other = tempfile::tempdir().unwrap();
    assert!(
        fapiao_in(other.path(), &["pki", "init", "--suite", "gm"])
            .status
            .success()
    );
    let root = other.path().join("pki/gm/ca.crt.pem");
    let o = fapiao_in(d, &["verify", &xml_path, "--root", root.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("not valid when it signed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_second_forged_einvoicedata_is_refused_though_first_occurrences_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (xml_path, _) = signed_files(d);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    // The forged copy goes after the genuine one: a reader that shows the last occurrence
    // (or a renderer working from it) sees another total, while the first still verifies.
    let data = format!(
        "<EInvoiceData>{}</EInvoiceData>",
        between(&xml, "<EInvoiceData>", "</EInvoiceData>")
    );
    let total = between(
        &xml,
        "<TotalTax-includedAmount>",
        "</TotalTax-includedAmount>",
    );
    let forged_data = data.replace(
        &format!("<TotalTax-includedAmount>{total}</TotalTax-includedAmount>"),
        "<TotalTax-includedAmount>99999.00</TotalTax-includedAmount>",
    );
    let forged = xml.replacen(&data, &format!("{data}{forged_data}"), 1);
    assert_ne!(forged, xml);
    let (sig, cert) = (
        between(&forged, "<SignatureValue>", "</SignatureValue>"),
        between(&forged, "<KeyInfo>", "</KeyInfo>"),
    );
    assert!(
        openssl_verifies(d, &first_occurrences(&forged), sig, cert),
        "the attack works against a first-occurrence check"
    );
    std::fs::write(d.join("forged.xml"), &forged).unwrap();
    let (code, out) = verify(d, "forged.xml", &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("schema") && out.contains("EInvoiceData"),
        "{out}"
    );
    // Nor is the forged copy passed off with a DTD, or in place of the genuine one.
    let with_dtd = xml.replacen("<EInvoice>", "<!DOCTYPE EInvoice []><EInvoice>", 1);
    std::fs::write(d.join("dtd.xml"), &with_dtd).unwrap();
    assert_eq!(verify(d, "dtd.xml", &[]).0, Some(1));
}

/// RFC 3339, a minute ago (the CA and its CRL were made just now).
#[expect(
    clippy::disallowed_methods,
    reason = "the test's certificates are made for now"
)]
fn a_minute_ago() -> String {
    (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn tax_s_receipt_is_checked_against_the_content() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (xml_path, _) = signed_files(d);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let key = PrivateKey::from_encrypted_pem(
        &std::fs::read_to_string(d.join("tax.key.pem")).unwrap(),
        b"key passphrase",
    )
    .unwrap();
    let cert =
        Certificate::from_pem(&std::fs::read_to_string(d.join("tax.crt.pem")).unwrap()).unwrap();
    let hash = fapiao_protocol::erp::hex(&fapiao_crypto::primitives::sm3(&first_occurrences(&xml)));
    let receipt = |number: &str, content_hash: &str| {
        let signed = SignedReceipt::sign(
            Receipt {
                number: number.to_owned(),
                status: UploadStatus::Accepted,
                code: None,
                reason: None,
                content_hash: content_hash.to_owned(),
                accepted_at: Some(a_minute_ago()),
                receipt_id: "r-1".to_owned(),
            },
            &key,
            &cert,
        )
        .unwrap();
        // As the ERP API's invoice JSON carries it.
        serde_json::json!({"number": number, "receipt": signed}).to_string()
    };
    std::fs::write(d.join("good.json"), receipt("26442000000000000102", &hash)).unwrap();
    let (code, out) = verify(d, &xml_path, &["--receipt", "good.json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tax accepted exactly this content"), "{out}");
    std::fs::write(
        d.join("other.json"),
        receipt("26442000000000000102", &"0".repeat(64)),
    )
    .unwrap();
    let (code, out) = verify(d, &xml_path, &["--receipt", "other.json"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("other content"), "{out}");
}
