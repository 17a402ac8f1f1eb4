//! `fapiao envelope seal|open`: produce and check envelopes by hand, so an integrator building
//! the other side of a connection can test against Fapiao.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use fapiao_crypto::envelope::{Header, LocalParty, MemoryReplayGuard, Message, Opener, seal};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{Certificate, Crl, PrivateKey, Suite, TrustStore};
use rand_core::Rng;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::pki::{Passphrase, with_suffix};

/// Loads `<prefix>.sign.{crt,key}.pem` and `<prefix>.enc.{crt,key}.pem`.
pub(crate) fn load_party(
    prefix: &Path,
    suite: Suite,
    pass: &Passphrase,
) -> anyhow::Result<LocalParty> {
    let passphrase = pass.read()?;
    let load = |kind: &str| -> anyhow::Result<(PrivateKey, Certificate)> {
        let base = with_suffix(prefix, kind);
        let crt = with_suffix(&base, ".crt.pem");
        let key = with_suffix(&base, ".key.pem");
        let cert = Certificate::from_pem(
            &fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?,
        )
        .with_context(|| format!("{} is not a certificate", crt.display()))?;
        let pem = Zeroizing::new(
            fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?,
        );
        let key = PrivateKey::from_encrypted_pem(&pem, &passphrase)
            .with_context(|| format!("opening {}", key.display()))?;
        Ok((key, cert))
    };
    let (sk, sc) = load(".sign")?;
    let (ek, ec) = load(".enc")?;
    Ok(LocalParty::new(suite, sk, sc, ek, ec, Vec::new())?)
}

fn read_input(path: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    match path {
        Some(p) => fs::read(p).with_context(|| format!("reading {}", p.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
            Ok(buf)
        }
    }
}

fn write_output(path: Option<&PathBuf>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(p) => fs::write(p, bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
            Ok(())
        }
    }
}

/// What `envelope seal` does.
pub(crate) struct SealPlan {
    pub(crate) party: LocalParty,
    pub(crate) recipient: Certificate,
    pub(crate) message_type: String,
    pub(crate) message_id: Option<String>,
    pub(crate) protocol_version: u16,
    pub(crate) input: Option<PathBuf>,
    pub(crate) output: Option<PathBuf>,
}

pub(crate) fn run_seal(plan: &SealPlan, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let recipient = plan
        .recipient
        .subject()
        .context("the recipient certificate names no Fapiao holder")?;
    let id = plan.message_id.clone().unwrap_or_else(|| {
        let mut bytes = [0_u8; 16];
        system_rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    });
    let created_at = now.replace_nanosecond(0).context("clock")?;
    let message = Message {
        header: Header {
            protocol_version: plan.protocol_version,
            sender: plan.party.identity().to_owned(),
            recipient: recipient.identity(),
            message_type: plan.message_type.clone(),
            message_id: id.clone(),
            created_at,
        },
        payload: read_input(plan.input.as_ref())?,
    };
    let sealed = seal(&plan.party, &plan.recipient, &message, &mut system_rng())?;
    write_output(plan.output.as_ref(), &sealed)?;
    eprintln!(
        "sealed {} bytes from {} to {} (id {id})",
        sealed.len(),
        plan.party.identity(),
        recipient.identity()
    );
    Ok(ExitCode::SUCCESS)
}

/// What `envelope open` does.
pub(crate) struct OpenPlan {
    pub(crate) party: LocalParty,
    pub(crate) trust: TrustStore,
    pub(crate) window: Duration,
    pub(crate) max_version: u16,
    pub(crate) input: Option<PathBuf>,
    pub(crate) output: Option<PathBuf>,
}

pub(crate) fn load_trust(roots: &[PathBuf], crls: &[PathBuf]) -> anyhow::Result<TrustStore> {
    let mut certs = Vec::new();
    for r in roots {
        let text = fs::read_to_string(r).with_context(|| format!("reading {}", r.display()))?;
        certs.extend(
            Certificate::from_pem_chain(&text)
                .with_context(|| format!("{} holds no certificate", r.display()))?,
        );
    }
    let mut trust = TrustStore::new(certs)?;
    for c in crls {
        let text = fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?;
        trust.add_crl(
            Crl::from_pem(&text).with_context(|| format!("{} is not a CRL", c.display()))?,
        );
    }
    Ok(trust)
}

pub(crate) fn run_open(plan: &OpenPlan, now: OffsetDateTime) -> anyhow::Result<ExitCode> {
    let bytes = read_input(plan.input.as_ref())?;
    let guard = MemoryReplayGuard::new();
    let opener = Opener::new(&plan.party, &plan.trust, &guard)
        .freshness(plan.window)
        .versions(1..=plan.max_version);
    match opener.open(&bytes, now) {
        Ok(opened) => {
            let h = &opened.message.header;
            eprintln!(
                "verified: from {} to {}, type {}, id {}, version {}, created {}",
                h.sender,
                h.recipient,
                h.message_type,
                h.message_id,
                h.protocol_version,
                h.created_at.format(&Rfc3339)?
            );
            write_output(plan.output.as_ref(), &opened.message.payload)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("rejected ({}): {e}", e.peer_code());
            Ok(ExitCode::from(1))
        }
    }
}
