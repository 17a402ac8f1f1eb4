//! `fapiao verify <invoice.xml|invoice.pdf|invoice.ofd>`: the check a buyer or an auditor runs on a
//! downloaded invoice, offline — the schema first, then the issuing device's SM2 signature
//! over the exact signed bytes, its certificate's chain to the CA as it stood when it signed,
//! the certificate naming the seller, and (given `--receipt`) tax's signed receipt for exactly
//! this content. The procedure is in `docs/layout.md` and `fapiao_render::verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fapiao_crypto::{Certificate, Crl, Purpose, Role, TrustStore};
use fapiao_protocol::wire::{SignedReceipt, UploadStatus};
use fapiao_render::verify::{SignedXml, attached_xml, read_signed};
use time::{OffsetDateTime, UtcOffset};

use crate::VerifyArgs;

/// China Standard Time, in which `SignatureTime` is written.
fn cst() -> UtcOffset {
    UtcOffset::from_hms(8, 0, 0).expect("UTC+8 is a valid offset")
}

pub(crate) fn run(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let trust = trust(args)?;
    // An OFD: its package and digests here, its device signature once the attached XML has
    // given the certificate (checked with the XML's below).
    let mut ofd = None;
    let xml = if bytes.starts_with(b"%PDF") {
        match attached_xml(&bytes) {
            Ok(x) => x,
            Err(e) => return Ok(invalid(&e.to_string())),
        }
    } else if bytes.starts_with(b"PK\x03\x04") {
        match fapiao_render::ofd::verify::read_signed(&bytes) {
            Ok(o) => {
                let xml = o.xml.clone();
                ofd = Some(o);
                xml
            }
            Err(e) => return Ok(invalid(&e.to_string())),
        }
    } else {
        match String::from_utf8(bytes) {
            Ok(x) => x,
            Err(_) => return Ok(invalid("not UTF-8 text")),
        }
    };
    let doc = match read_signed(&xml) {
        Ok(d) => d,
        Err(e) => return Ok(invalid(&e.to_string())),
    };
    let signer = match check_signature(&doc, &trust) {
        Ok(s) => s,
        Err(why) => return Ok(invalid(&why)),
    };
    if let Some(o) = &ofd {
        let by_device = Certificate::from_der(&doc.certificate)
            .ok()
            .and_then(|c| c.public_key().ok())
            .is_some_and(|k| k.verify(&o.signed_bytes, &o.signature).is_ok());
        if !by_device {
            return Ok(invalid(
                "OFD: SignedValue.dat is not the device's signature of Signature.xml",
            ));
        }
    }
    println!(
        "valid: 数电票 {} of {} ({}), total {}",
        doc.number, doc.seller_name, doc.seller_id, doc.total
    );
    println!(
        "  signed {} (UTC+8) by {signer}, whose certificate chains to the CA and was valid then",
        doc.signed_at
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap_or_else(|_| doc.signed_at.to_string())
    );
    if ofd.is_some() {
        println!("  OFD: every part covered by its Signature.xml, which the same device signed");
    }
    if let Some(path) = &args.receipt {
        match check_receipt(path, &doc, &trust) {
            Ok(line) => println!("  {line}"),
            Err(why) => return Ok(invalid(&format!("tax receipt: {why}"))),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn invalid(why: &str) -> ExitCode {
    println!("INVALID: {why}");
    ExitCode::from(1)
}

/// The roots and CRLs: `--root`/`--crl`, else the data directory's.
fn trust(args: &VerifyArgs) -> anyhow::Result<TrustStore> {
    let layout = fapiao_system::Layout::at(&args.data);
    let existing = |v: Vec<PathBuf>| v.into_iter().filter(|p| p.exists()).collect::<Vec<_>>();
    let roots = if args.root.is_empty() {
        existing(layout.trust_files())
    } else {
        args.root.clone()
    };
    anyhow::ensure!(
        !roots.is_empty(),
        "no CA to check against: give --root <ca.crt.pem> (or --data of `fapiao up`)"
    );
    let crls = if args.crl.is_empty() && args.root.is_empty() {
        existing(layout.crl_files())
    } else {
        args.crl.clone()
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let mut certs = Vec::new();
    for p in &roots {
        certs.extend(
            Certificate::from_pem_chain(&read(p)?).with_context(|| format!("{}", p.display()))?,
        );
    }
    let mut trust = TrustStore::new(certs)?;
    for p in &crls {
        trust.add_crl(Crl::from_pem(&read(p)?).with_context(|| format!("{}", p.display()))?);
    }
    Ok(trust)
}

/// Step 4: the certificate and the signature; who signed.
fn check_signature(doc: &SignedXml, trust: &TrustStore) -> Result<String, String> {
    let cert = Certificate::from_der(&doc.certificate)
        .map_err(|e| format!("KeyInfo is not a certificate: {e}"))?;
    let at = doc.signed_at.assume_offset(cst());
    trust
        .validate_at(&cert, &[], Purpose::Signing, at)
        .map_err(|e| format!("the signing certificate was not valid when it signed: {e}"))?;
    let subject = cert
        .subject()
        .map_err(|e| format!("the signing certificate names no holder: {e}"))?;
    if !matches!(subject.role, Role::Device | Role::Agent)
        || subject.taxpayer_id.as_deref() != Some(doc.seller_id.as_str())
    {
        return Err(format!(
            "signed by {}, not an issuing device of the seller {}",
            subject.identity(),
            doc.seller_id
        ));
    }
    cert.public_key()
        .map_err(|e| e.to_string())?
        .verify(&doc.signed_bytes, &doc.signature)
        .map_err(|_| "the signature does not verify over the signed elements".to_owned())?;
    Ok(subject.identity())
}

/// Tax's receipt (the invoice JSON of the ERP API, or the receipt alone) for this content.
fn check_receipt(
    path: &std::path::Path,
    doc: &SignedXml,
    trust: &TrustStore,
) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let receipt = value.get("receipt").cloned().unwrap_or(value);
    let signed: SignedReceipt = serde_json::from_value(receipt)
        .map_err(|e| format!("{}: not a signed receipt: {e}", path.display()))?;
    let r = &signed.receipt;
    if !matches!(r.status, UploadStatus::Accepted | UploadStatus::Duplicate) {
        return Err(format!("tax did not accept it ({:?})", r.status));
    }
    let at = r
        .accepted_at
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .ok_or("no acceptance time")?;
    signed
        .verify_at(trust, at)
        .map_err(|e| format!("does not verify: {e}"))?;
    let hash = fapiao_protocol::erp::hex(&fapiao_crypto::primitives::sm3(&doc.signed_bytes));
    if r.number != doc.number || r.content_hash != hash {
        return Err("it is for another invoice or other content".into());
    }
    Ok(format!(
        "tax accepted exactly this content at {} (receipt signed by tax, valid then)",
        r.accepted_at.as_deref().unwrap_or_default()
    ))
}
