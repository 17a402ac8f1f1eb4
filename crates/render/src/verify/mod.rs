//! Reading a downloaded invoice back, as a buyer or an auditor checks it offline: the XML
//! (or the XML attached to the PDF), checked against the schema **before anything is read
//! from it**, and the exact bytes the issuing device signed taken from it
//! ([`read_signed`]); the cryptographic checks are the caller's (`fapiao verify`).
//!
//! The procedure (`docs/layout.md`, "Checking a signature"):
//! 1. The file is well-formed UTF-8 XML without a DTD, and valid against
//!    `schema/EInvoice.xsd`: so each of `Header`, `EInvoiceData`, `SellerAuthentication`,
//!    `TaxSupervisionInfo` and `TaxBureauSignature` (with one `SignatureTime`) occurs exactly
//!    once, in that order. A file carrying a second, forged `EInvoiceData` is refused here,
//!    before any "first occurrence" could be taken.
//! 2. `TaxBureauSignature/Reference@URI` names exactly those nodes.
//! 3. The signed bytes are the five elements exactly as they appear in the file, from `<` to
//!    the end of their closing tag, concatenated in that order (no re-serialization).
//! 4. `SignatureValue` (base64 DER SM2 signature) verifies over them with the public key of the
//!    certificate in `KeyInfo` (SM3, ID `1234567812345678`), which chains to the CA, was valid
//!    for signing at `SignatureTime`, and names the seller's taxpayer id.

mod pdf;
mod schema;

pub use pdf::attached_xml;

use roxmltree::{Document, Node, ParsingOptions};
use time::PrimitiveDateTime;
use time::macros::format_description;

use crate::xml::{REFERENCE_URI, SM2_WITH_SM3};

/// `Reference@URI` as sample files from the field spell it (the element names in other
/// case); accepted as naming the same nodes.
pub const REFERENCE_URI_AS_SEEN: &str = "/Einvoice/Header|/Einvoice/EinvoiceData|/Einvoice/SellerAuthentication|/Einvoice/TaxSupervisionInfo|/Einvoice/TaxBureauSignature/SignatureTime";

/// What a signed invoice XML says, as far as its signature is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedXml {
    /// `TaxSupervisionInfo/InvoiceNumber`.
    pub number: String,
    /// `EInvoiceData/SellerInformation/SellerIdNum`.
    pub seller_id: String,
    /// `EInvoiceData/SellerInformation/SellerName`.
    pub seller_name: String,
    /// `EInvoiceData/BasicInformation/TotalTax-includedAmount`.
    pub total: String,
    /// `TaxBureauSignature/SignatureTime` (China Standard Time).
    pub signed_at: PrimitiveDateTime,
    /// The bytes the device signed (step 3).
    pub signed_bytes: Vec<u8>,
    /// `SignatureValue`, DER.
    pub signature: Vec<u8>,
    /// `KeyInfo`, the device's certificate, DER.
    pub certificate: Vec<u8>,
}

/// Why a file is not a signed invoice to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not well-formed XML (or it has a DTD).
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// Not valid against the schema.
    #[error("not valid against the schema: {0}")]
    Schema(String),
    /// No `TaxBureauSignature`: an unsigned document.
    #[error("the document is not signed (no TaxBureauSignature)")]
    Unsigned,
    /// The signature element is not what Fapiao's procedure checks.
    #[error("{0}")]
    Signature(String),
    /// A PDF without exactly one attached XML.
    #[error("PDF: {0}")]
    Pdf(String),
}

/// Steps 1–3 of the procedure on `xml`.
///
/// # Errors
/// [`DocumentError`] for the first step that fails.
pub fn read_signed(xml: &str) -> Result<SignedXml, DocumentError> {
    let options = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(xml, options)
        .map_err(|e| DocumentError::Xml(e.to_string()))?;
    schema::validate(&doc).map_err(DocumentError::Schema)?;
    let root = doc.root_element();
    let part = |name: &str| child(root, name);
    let signature = part("TaxBureauSignature").ok_or(DocumentError::Unsigned)?;
    let uri = child(signature, "Reference")
        .and_then(|r| r.attribute("URI"))
        .unwrap_or_default();
    if uri != REFERENCE_URI && uri != REFERENCE_URI_AS_SEEN {
        return Err(DocumentError::Signature(format!(
            "Reference@URI names other nodes than the signed ones ({REFERENCE_URI})"
        )));
    }
    if field(signature, "SignatureAlgorithm") != SM2_WITH_SM3 {
        return Err(DocumentError::Signature(format!(
            "SignatureAlgorithm is not SM2 with SM3 ({SM2_WITH_SM3})"
        )));
    }
    let time = child(signature, "SignatureTime")
        .ok_or_else(|| DocumentError::Signature("no SignatureTime".into()))?;
    let signed_at = PrimitiveDateTime::parse(
        time.text().unwrap_or_default(),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .map_err(|e| DocumentError::Signature(format!("SignatureTime: {e}")))?;
    let mut signed_bytes = Vec::new();
    for name in [
        "Header",
        "EInvoiceData",
        "SellerAuthentication",
        "TaxSupervisionInfo",
    ] {
        let n = part(name).ok_or_else(|| DocumentError::Schema(format!("{name} missing")))?;
        signed_bytes.extend_from_slice(&xml.as_bytes()[n.range()]);
    }
    signed_bytes.extend_from_slice(&xml.as_bytes()[time.range()]);
    let b64 = |name: &str| -> Result<Vec<u8>, DocumentError> {
        unbase64(&field(signature, name))
            .ok_or_else(|| DocumentError::Signature(format!("{name} is not base64")))
    };
    let data = part("EInvoiceData").ok_or(DocumentError::Unsigned)?;
    let seller = child(data, "SellerInformation");
    let basic = child(data, "BasicInformation");
    let supervision = part("TaxSupervisionInfo").ok_or(DocumentError::Unsigned)?;
    Ok(SignedXml {
        number: field(supervision, "InvoiceNumber"),
        seller_id: seller.map(|s| field(s, "SellerIdNum")).unwrap_or_default(),
        seller_name: seller.map(|s| field(s, "SellerName")).unwrap_or_default(),
        total: basic
            .map(|b| field(b, "TotalTax-includedAmount"))
            .unwrap_or_default(),
        signed_at,
        signed_bytes,
        signature: b64("SignatureValue")?,
        certificate: b64("KeyInfo")?,
    })
}

/// The first child element of `n` named `name` (the schema allows one).
fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The text of `n`'s child `name`, or empty.
fn field(n: Node<'_, '_>, name: &str) -> String {
    child(n, name)
        .and_then(|c| c.text())
        .unwrap_or_default()
        .to_owned()
}

/// Strict standard base64 (padded, no whitespace): the bytes, or `None`.
pub(crate) fn unbase64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0_u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * u32::try_from(pad).ok()?;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::unbase64;
    use crate::base64;

    #[test]
    fn base64_round_trips_and_refuses_the_malformed() {
        for n in 0..40_u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm 9v"] {
            assert_eq!(unbase64(bad), None, "{bad}");
        }
    }
}
