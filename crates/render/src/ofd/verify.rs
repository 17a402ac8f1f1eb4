//! Reading a signed OFD back to check it: the package is a well-formed ZIP, `Signatures.xml`
//! names one signature, its `Signature.xml` lists the SM3 digest of every part of the package
//! (all of them, each once, but the signature's own three files) and each digest matches.
//! What remains — the SM2 signature in `SignedValue.dat` over the exact bytes of
//! `Signature.xml`, by the issuing device whose certificate is the attached XML's `KeyInfo`
//! — is the caller's, who has the cryptography and the trust anchors.

use super::{SIGNATURE_XML, SIGNATURES_XML, SIGNED_VALUE, zip};
use crate::verify::unbase64;

/// A signed OFD whose digests all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOfd {
    /// The bytes signed: `Signature.xml` exactly.
    pub signed_bytes: Vec<u8>,
    /// `SignedValue.dat`: DER `SEQUENCE {r, s}`.
    pub signature: Vec<u8>,
    /// The attached invoice XML (`Doc_0/Attachs/dzfp_<number>.xml`).
    pub xml: String,
}

/// Why an OFD does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OFD: {0}")]
pub struct OfdError(pub String);

fn err(m: impl Into<String>) -> OfdError {
    OfdError(m.into())
}

/// Checks `ofd`'s package and digests; see the module.
///
/// # Errors
/// [`OfdError`] naming what does not hold.
pub fn read_signed(ofd: &[u8]) -> Result<SignedOfd, OfdError> {
    let parts = zip::read(ofd).ok_or_else(|| err("not a readable ZIP package (or a CRC fails)"))?;
    let get = |name: &str| {
        parts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    };
    let signatures = get(SIGNATURES_XML).ok_or_else(|| err("unsigned: no Signatures.xml"))?;
    let signatures =
        std::str::from_utf8(signatures).map_err(|_| err("Signatures.xml: not UTF-8"))?;
    let doc =
        roxmltree::Document::parse(signatures).map_err(|e| err(format!("Signatures.xml: {e}")))?;
    let sigs: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "Signature")
        .collect();
    if sigs.len() != 1 || sigs[0].attribute("BaseLoc") != Some("Sign_0/Signature.xml") {
        return Err(err("Signatures.xml must name exactly Sign_0/Signature.xml"));
    }
    let signed_bytes = get(SIGNATURE_XML).ok_or_else(|| err("no Signature.xml"))?;
    let text = std::str::from_utf8(signed_bytes).map_err(|_| err("Signature.xml: not UTF-8"))?;
    let sig = roxmltree::Document::parse(text).map_err(|e| err(format!("Signature.xml: {e}")))?;
    let named = |name: &str| {
        sig.descendants()
            .filter(|n| n.tag_name().name() == name)
            .collect::<Vec<_>>()
    };
    let method = named("SignatureMethod");
    if method.len() != 1 || method[0].text() != Some(super::SM2_SM3) {
        return Err(err("SignatureMethod is not SM2 with SM3"));
    }
    let refs = named("References");
    if refs.len() != 1 || refs[0].attribute("CheckMethod") != Some(super::SM3) {
        return Err(err("References must be one list checked with SM3"));
    }
    let value_loc = named("SignedValue");
    if value_loc.len() != 1 || value_loc[0].text() != Some(&format!("/{SIGNED_VALUE}")[..]) {
        return Err(err(
            "SignedValue must be /Doc_0/Signs/Sign_0/SignedValue.dat",
        ));
    }
    let mut covered: Vec<&str> = Vec::new();
    for r in named("Reference") {
        let file = r
            .attribute("FileRef")
            .and_then(|f| f.strip_prefix('/'))
            .ok_or_else(|| err("a Reference without an absolute FileRef"))?;
        if covered.contains(&file) {
            return Err(err(format!("{file} is referenced twice")));
        }
        let data = get(file).ok_or_else(|| err(format!("{file} is referenced but absent")))?;
        let want = r
            .children()
            .find(|c| c.tag_name().name() == "CheckValue")
            .and_then(|c| c.text())
            .and_then(unbase64)
            .ok_or_else(|| err(format!("{file}: no CheckValue")))?;
        use sm3::Digest as _;
        if sm3::Sm3::digest(data).as_slice() != want.as_slice() {
            return Err(err(format!("{file}: its SM3 digest does not match")));
        }
        covered.push(file);
    }
    for (name, _) in &parts {
        let own = [SIGNATURES_XML, SIGNATURE_XML, SIGNED_VALUE].contains(&name.as_str());
        if !own && !covered.contains(&name.as_str()) {
            return Err(err(format!("{name} is not covered by the signature")));
        }
    }
    let xml = parts
        .iter()
        .filter(|(n, _)| n.starts_with("Doc_0/Attachs/dzfp_") && n.ends_with(".xml"))
        .map(|(_, d)| d)
        .collect::<Vec<_>>();
    let [xml] = xml[..] else {
        return Err(err("exactly one attached dzfp_<number>.xml expected"));
    };
    Ok(SignedOfd {
        signed_bytes: signed_bytes.to_vec(),
        signature: get(SIGNED_VALUE)
            .ok_or_else(|| err("no SignedValue.dat"))?
            .to_vec(),
        xml: String::from_utf8(xml.clone()).map_err(|_| err("the attached XML is not UTF-8"))?,
    })
}
