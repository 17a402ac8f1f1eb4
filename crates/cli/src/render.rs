//! `fapiao render`: an invoice file → the 数电票 XML and the PDF and OFD layout files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use fapiao_crypto::{Certificate, KeyAlgorithm, PrivateKey, Purpose};
use fapiao_model::Invoice;
use fapiao_render::{
    DeviceSignature, bundled_font, render_ofd, render_pdf, render_xml, signed_content,
};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use zeroize::Zeroizing;

use crate::RenderArgs;
use crate::pki::{Passphrase, with_suffix};

/// What `render` will do.
pub(crate) struct Plan {
    invoice: Invoice,
    pdf: Option<PathBuf>,
    xml: Option<PathBuf>,
    ofd: Option<PathBuf>,
    device: Option<(PrivateKey, Certificate)>,
}

impl Plan {
    pub(crate) fn from_args(
        args: RenderArgs,
        key_pass: &dyn Fn(Option<PathBuf>) -> Passphrase,
    ) -> anyhow::Result<Self> {
        if args.pdf.is_none() && args.xml.is_none() && args.ofd.is_none() {
            bail!("give --pdf, --xml and/or --ofd");
        }
        if args.ofd.is_some() && args.device.is_none() {
            bail!("--ofd: an OFD is signed by the issuing device; give --device");
        }
        let text = fs::read_to_string(&args.invoice)
            .with_context(|| format!("reading {}", args.invoice.display()))?;
        let invoice = Invoice::from_json(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.invoice.display()))?;
        let device = match &args.device {
            None => None,
            Some(prefix) => Some(load_device(
                prefix,
                &key_pass(args.key_passphrase_file.clone()).read()?,
            )?),
        };
        Ok(Self {
            invoice,
            pdf: args.pdf,
            xml: args.xml,
            ofd: args.ofd,
            device,
        })
    }
}

/// The issuing device `prefix`: `prefix.crt.pem` and `prefix.key.pem` (the key opened with
/// `passphrase`), which must be an SM2 signing certificate with its key.
fn load_device(prefix: &Path, passphrase: &[u8]) -> anyhow::Result<(PrivateKey, Certificate)> {
    let crt = with_suffix(prefix, ".crt.pem");
    let key = with_suffix(prefix, ".key.pem");
    let cert = Certificate::from_pem(
        &fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?,
    )?;
    let pem = Zeroizing::new(
        fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?,
    );
    let key = PrivateKey::from_encrypted_pem(&pem, passphrase)
        .with_context(|| format!("opening {}", key.display()))?;
    if key.algorithm() != KeyAlgorithm::Sm2
        || cert.public_key().ok() != Some(key.public_key())
        || !cert.allows(Purpose::Signing)
    {
        bail!(
            "{} must be an SM2 signing certificate with its key",
            prefix.display()
        );
    }
    Ok((key, cert))
}

pub(crate) fn run(plan: &Plan, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let signature = match &plan.device {
        None => None,
        Some((key, cert)) => {
            let china =
                now.to_offset(UtcOffset::from_hms(8, 0, 0).expect("UTC+8 is a valid offset"));
            let signed_at =
                PrimitiveDateTime::new(china.date(), china.time()).replace_nanosecond(0)?;
            let value = key.sign(&signed_content(&plan.invoice, signed_at))?;
            Some(DeviceSignature {
                signed_at,
                value,
                certificate: cert.der().to_vec(),
            })
        }
    };
    let xml = render_xml(&plan.invoice, signature.as_ref());
    if let Some(path) = &plan.xml {
        fs::write(path, &xml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {} ({} bytes)", path.display(), xml.len());
    }
    if let Some(path) = &plan.pdf {
        let font = bundled_font()?;
        let pdf = render_pdf(&plan.invoice, &xml, &font)?;
        fs::write(path, &pdf).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} ({} bytes, PDF/A-3u with the XML attached)",
            path.display(),
            pdf.len()
        );
    }
    if let (Some(path), Some((key, _))) = (&plan.ofd, &plan.device) {
        let font = bundled_font()?;
        let unsigned = render_ofd(&plan.invoice, &xml, &font)?;
        let value = key.sign(unsigned.signed_bytes())?;
        let ofd = unsigned.sign(&value);
        fs::write(path, &ofd).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} ({} bytes, OFD with the XML attached, signed by the device)",
            path.display(),
            ofd.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
