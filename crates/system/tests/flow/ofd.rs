//! The OFD through the ERP API: signed by the device that issued the invoice (whose key is at
//! platform), byte-identical on every download, and in the zip of the three layout files.

use fapiao_crypto::Certificate;
use fapiao_render::ofd::{parts, verify::read_signed};

use fapiao_protocol::Response;

use crate::helpers::*;

/// `ofd` checks as `fapiao verify` checks it — package, the SM3 digest of every part, the
/// device's SM2 signature of `Signature.xml` with the attached XML's `KeyInfo` certificate —
/// and its attached XML is `xml`.
pub(crate) fn assert_signed_ofd(ofd: &[u8], xml: &[u8]) {
    let signed = read_signed(ofd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        signed.xml.as_bytes(),
        xml,
        "the OFD carries the invoice's XML"
    );
    let doc = fapiao_render::verify::read_signed(&signed.xml).unwrap();
    let key = Certificate::from_der(&doc.certificate)
        .unwrap()
        .public_key()
        .unwrap();
    key.verify(&signed.signed_bytes, &signed.signature)
        .expect("SignedValue.dat is the issuing device's signature of Signature.xml");
}

/// The `filename*` of a download (percent-decoded).
pub(crate) fn download_name(r: &Response) -> String {
    let header = r.headers["content-disposition"].to_str().unwrap();
    let encoded = header
        .split("filename*=UTF-8''")
        .nth(1)
        .unwrap_or_else(|| panic!("no filename*: {header}"));
    let bytes = encoded.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&encoded[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_invoice_s_ofd_is_signed_by_its_issuing_device_and_the_same_on_every_download() {
    let env = Env::start().await;
    let erp = env.erp(SZ);
    let r = post(&erp, "/v1/invoices", &order(SZ, "OFD-1", "118.00")).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    let xml = get(&erp, &format!("/v1/invoices/{number}/xml")).await;
    let stem = download_name(&xml).strip_suffix(".xml").unwrap().to_owned();
    assert!(
        stem.starts_with(&format!("dzfp_{number}_")) && stem.len() > 20 + 5 + 14,
        "named as the national platform names it: {stem}"
    );

    let first = get(&erp, &format!("/v1/invoices/{number}/ofd")).await;
    assert_eq!(
        (
            first.status,
            first.headers["content-type"].to_str().unwrap()
        ),
        (200, "application/ofd"),
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(download_name(&first), format!("{stem}.ofd"));
    assert_signed_ofd(&first.body, &xml.body);
    // Platform signed it once; cloud keeps the value: the same file again, without platform.
    let again = get(&erp, &format!("/v1/invoices/{number}/ofd")).await;
    assert_eq!(again.status, 200);
    assert!(
        first.body == again.body,
        "a second download is byte-identical"
    );

    // The zip of the three, named alike; its OFD and XML are the ones downloaded.
    let zip = get(&erp, &format!("/v1/invoices/{number}/zip")).await;
    assert_eq!(
        (zip.status, zip.headers["content-type"].to_str().unwrap()),
        (200, "application/zip")
    );
    assert_eq!(download_name(&zip), format!("{stem}.zip"));
    let files = parts(&zip.body).expect("a readable zip");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{stem}.pdf"),
            format!("{stem}.ofd"),
            format!("{stem}.xml")
        ]
    );
    assert!(files[1].1 == first.body.to_vec() && files[2].1 == xml.body.to_vec());
    assert!(files[0].1.starts_with(b"%PDF"));

    // Two first downloads at once (two replicas would do the same): platform signs twice —
    // SM2 signatures differ each time — and the first value kept is served to both.
    let r = post(&erp, "/v1/invoices", &order(SZ, "OFD-2", "5.00")).await;
    let second = json_of(&r)["number"].as_str().unwrap().to_owned();
    let path = format!("/v1/invoices/{second}/ofd");
    let (a, b) = tokio::join!(get(&erp, &path), get(&erp, &path));
    assert_eq!((a.status, b.status), (200, 200));
    assert!(a.body == b.body, "both answers are the kept file");
    assert!(get(&erp, &path).await.body == a.body);

    // Another enterprise's invoice is not found, its OFD neither.
    let r = get(&env.erp(SH), &format!("/v1/invoices/{number}/ofd")).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].clone()),
        (404, "invoice_not_found".into())
    );
}
