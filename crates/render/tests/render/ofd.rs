//! OFDs of every case: checked clean by an independent reader (ofd-core: structure and the SM3
//! digests of the signature's references), read back by another (PyPI ofdkit: the invoice's
//! fields equal the XML's), the SM2 signature verified by our verifier and by OpenSSL over the
//! documented bytes; a one-byte change to any signed part, or to the signature, is caught.

use fapiao_render::ofd::{SIGNATURE_XML, SIGNED_VALUE, pack, parts, verify::read_signed};
use fapiao_render::{render_ofd, render_xml, verify};

use crate::files::{openssl_verifies_as_device, run};
use crate::fixtures::{cases, device, draft_from_json, font, issue, sign};

/// The signed OFD of `inv`, signed by the test device.
fn signed_ofd(inv: &fapiao_model::Invoice) -> (Vec<u8>, String) {
    let xml = render_xml(inv, Some(&sign(inv)));
    let unsigned = render_ofd(inv, &xml, font()).unwrap();
    let value = device().key.sign(unsigned.signed_bytes()).unwrap();
    (unsigned.sign(&value), xml)
}

/// Our verifier: the package and digests, then the SM2 signature with the key of the
/// certificate in the attached XML's `KeyInfo`.
fn our_verdict(ofd: &[u8]) -> Result<(), String> {
    let signed = read_signed(ofd).map_err(|e| e.to_string())?;
    let xml = verify::read_signed(&signed.xml).map_err(|e| e.to_string())?;
    let cert = fapiao_crypto::Certificate::from_der(&xml.certificate).map_err(|e| e.to_string())?;
    cert.public_key()
        .map_err(|e| e.to_string())?
        .verify(&signed.signed_bytes, &signed.signature)
        .map_err(|e| e.to_string())
}

fn all_cases() -> Vec<(&'static str, fapiao_model::Invoice)> {
    let mut all = cases();
    all.push((
        "edge",
        issue(draft_from_json(&crate::layout::longest_order()), 990),
    ));
    all
}

#[test]
fn every_case_renders_an_ofd_that_independent_readers_check_and_read_back() {
    let ofdkit = std::env::var("FAPIAO_OFDKIT").unwrap_or_else(|_| "ofdkit".to_owned());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, inv) in all_cases() {
        let (ofd, xml) = signed_ofd(&inv);
        // Deterministic: the same parts (Signature.xml holds the digest of every one; only
        // the SM2 signature value differs between signings, its nonce being random).
        let again = render_ofd(&inv, &xml, font()).unwrap();
        assert!(
            read_signed(&ofd).unwrap().signed_bytes == again.signed_bytes(),
            "{name}: not deterministic"
        );
        let path = d.join(format!("{name}.ofd"));
        std::fs::write(&path, &ofd).unwrap();

        let report = ofd_core::verify::check_path(&path);
        assert!(report.conforms(), "{name}: {:?}", report.problems);
        assert_eq!(report.signatures.len(), 1, "{name}");
        assert_eq!(
            report.signatures[0].verdict(),
            ofd_core::verify::SigVerdict::Valid,
            "{name}"
        );
        our_verdict(&ofd).unwrap_or_else(|e| panic!("{name}: {e}"));

        // ofdkit reads the fields back: equal to the XML's.
        let (ok, out) = run(d, &ofdkit, &["invoice", path.to_str().unwrap()]);
        assert!(ok, "{name}: {out}");
        let read: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
        // Read from the 发票标引 (the text objects it points at), not only OFD.xml's data.
        assert!(
            read["sources"]
                .as_array()
                .is_some_and(|s| s.contains(&"custom_tags".into())),
            "{name}: {read}"
        );
        let x = verify::read_signed(&xml).unwrap();
        let draft = inv.draft();
        let t = draft.totals();
        let issued = inv.issued_at();
        let date = format!(
            "{}-{:02}-{:02}",
            issued.year(),
            u8::from(issued.month()),
            issued.day()
        );
        for (field, want) in [
            ("invoice_number", x.number.clone()),
            ("issue_date", date),
            ("amount_without_tax", t.amount.to_string()),
            ("tax_amount", t.tax.to_string()),
            ("total_amount", x.total.clone()),
        ] {
            assert_eq!(
                read[field].as_str(),
                Some(want.as_str()),
                "{name}: {field}: {read}"
            );
        }
        assert_eq!(
            read["seller"]["tax_id"].as_str(),
            Some(x.seller_id.as_str()),
            "{name}: {read}"
        );
        assert_eq!(
            read["seller"]["name"].as_str(),
            Some(x.seller_name.as_str()),
            "{name}: {read}"
        );
        if let Some(buyer) = &draft.buyer().taxpayer_id {
            assert_eq!(
                read["buyer"]["tax_id"].as_str(),
                Some(buyer.to_string().as_str()),
                "{name}"
            );
        }
    }
}

#[test]
fn a_one_byte_change_to_any_signed_part_or_the_signature_fails_verification() {
    let (_, inv) = cases().remove(1);
    let (ofd, _) = signed_ofd(&inv);
    our_verdict(&ofd).unwrap();
    let original = parts(&ofd).unwrap();
    for (k, (name, data)) in original.iter().enumerate() {
        if data.is_empty() {
            continue;
        }
        let mut changed = original.clone();
        let at = data.len() / 2;
        changed[k].1[at] ^= 0x01;
        let tampered = pack(&changed);
        let ours = our_verdict(&tampered);
        assert!(ours.is_err(), "{name}: a changed byte passed our verifier");
        if name != SIGNED_VALUE {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("t.ofd");
            std::fs::write(&path, &tampered).unwrap();
            if name != SIGNATURE_XML {
                assert!(
                    !ofd_core::verify::check_path(&path).conforms(),
                    "{name}: ofd-core"
                );
            }
        }
    }
    // A part added after signing is not covered.
    let mut extra = original;
    extra.push(("Doc_0/Res/extra.png".to_owned(), vec![1, 2, 3]));
    assert!(
        our_verdict(&pack(&extra))
            .unwrap_err()
            .contains("not covered")
    );
}

#[test]
fn openssl_verifies_the_ofd_signature_over_the_documented_bytes() {
    let (_, inv) = cases().remove(0);
    let (ofd, _) = signed_ofd(&inv);
    let signed = read_signed(&ofd).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (ok, out) = openssl_verifies_as_device(tmp.path(), &signed.signed_bytes, &signed.signature);
    assert!(
        ok && out.contains("Signature Verified Successfully"),
        "{out}"
    );
}
