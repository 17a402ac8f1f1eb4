//! `fapiao pki`: a file-based certificate authority per suite.
//!
//! Layout of `--dir`: `<suite>/ca.crt.pem`, `<suite>/ca.key.pem` (encrypted PKCS#8, 0600),
//! `<suite>/index.tsv` (one line per issued certificate: serial, profile, subject, not after,
//! status `V`/`R`, revocation time), `<suite>/crl.pem` and `<suite>/crl.number`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, Certificate, CertificateRequest, Crl, PrivateKey, Profile, Revocation, Role, Subject, Suite,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Where a passphrase comes from: a file, else an environment variable.
pub(crate) struct Passphrase {
    pub(crate) file: Option<PathBuf>,
    pub(crate) env: &'static str,
}

impl Passphrase {
    pub(crate) fn read(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if let Some(path) = &self.file {
            let text = Zeroizing::new(
                fs::read(path)
                    .with_context(|| format!("reading passphrase file {}", path.display()))?,
            );
            let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
            if trimmed.is_empty() {
                bail!("passphrase file {} is empty", path.display());
            }
            return Ok(Zeroizing::new(trimmed.to_vec()));
        }
        match std::env::var_os(self.env) {
            Some(v) if !v.is_empty() => Ok(Zeroizing::new(v.into_encoded_bytes())),
            _ => bail!("no passphrase: give a passphrase file or set {}", self.env),
        }
    }
}

/// Environment variable of the CA key's passphrase.
pub(crate) const CA_PASSPHRASE_ENV: &str = "FAPIAO_CA_PASSPHRASE";
/// Environment variable of issued keys' passphrase.
pub(crate) const KEY_PASSPHRASE_ENV: &str = "FAPIAO_KEY_PASSPHRASE";

fn suite_dir(dir: &Path, suite: Suite) -> PathBuf {
    dir.join(suite.name())
}

/// Writes a new file with mode 0600 (for keys) or 0644; never overwrites.
pub(crate) fn write_new(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Replaces a file atomically (write to a temporary sibling, fsync, rename).
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, false)?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// `pki init`: a root CA for a suite, with an empty CRL.
pub(crate) fn init(
    dir: &Path,
    suite: Suite,
    name: &str,
    days: i64,
    passphrase: &Passphrase,
    now: OffsetDateTime,
) -> anyhow::Result<Certificate> {
    let sdir = suite_dir(dir, suite);
    if sdir.join("ca.crt.pem").exists() {
        bail!(
            "{} already holds a {suite} CA; remove it first to start over",
            sdir.display()
        );
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // The CA's key lives here: owner only.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&sdir)
            .with_context(|| format!("creating {}", sdir.display()))?;
    }
    let pass = passphrase.read()?;
    let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
    let subject = Subject {
        role: Role::Ca,
        name: name.to_owned(),
        taxpayer_id: None,
    };
    let ca = Ca::create_root(
        &subject,
        key,
        now - Duration::minutes(5),
        now + Duration::days(days),
        &mut system_rng(),
    )?;
    let key_pem = ca.key().to_encrypted_pem(&pass, &mut system_rng())?;
    write_new(&sdir.join("ca.key.pem"), key_pem.as_bytes(), true)?;
    write_new(
        &sdir.join("ca.crt.pem"),
        ca.certificate().to_pem()?.as_bytes(),
        false,
    )?;
    write_new(&sdir.join("index.tsv"), b"", false)?;
    publish_crl(dir, suite, &ca, 7, now)?;
    Ok(ca.certificate().clone())
}

fn load_ca(dir: &Path, suite: Suite, passphrase: &Passphrase) -> anyhow::Result<Ca> {
    let sdir = suite_dir(dir, suite);
    let cert_path = sdir.join("ca.crt.pem");
    let cert = Certificate::from_pem(&fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "reading {} (run `fapiao pki init --suite {suite}` first)",
            cert_path.display()
        )
    })?)?;
    let key_pem =
        Zeroizing::new(fs::read_to_string(sdir.join("ca.key.pem")).context("reading the CA key")?);
    let key = PrivateKey::from_encrypted_pem(&key_pem, &passphrase.read()?)
        .context("opening the CA key")?;
    Ok(Ca::from_parts(cert, key)?)
}

/// What `pki issue` is asked for.
pub(crate) struct IssuePlan {
    pub(crate) suite: Suite,
    pub(crate) subject: Subject,
    pub(crate) profile: Profile,
    pub(crate) days: i64,
    pub(crate) out: PathBuf,
}

impl IssuePlan {
    pub(crate) fn from_args(suite: Suite, args: crate::IssueArgs) -> anyhow::Result<Self> {
        let crate::IssueArgs {
            role,
            name,
            taxpayer_id,
            profile,
            dns,
            ip: ips,
            days,
            out,
            ..
        } = args;
        let role = role.as_str();
        let role = Role::parse(role).with_context(|| {
            let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
            format!("--role {role} is not one of {}", names.join(", "))
        })?;
        let profile = match profile.as_str() {
            "signing" => Profile::Signing,
            "encryption" => Profile::Encryption,
            "tls-client" => Profile::TlsClient,
            "tls-server" => {
                if dns.is_empty() && ips.is_empty() {
                    bail!("--profile tls-server needs at least one --dns or --ip");
                }
                Profile::TlsServer {
                    dns_names: dns,
                    ip_addresses: ips,
                }
            }
            other => {
                bail!("--profile {other} is not one of signing, encryption, tls-server, tls-client")
            }
        };
        if !(1..=3650).contains(&days) {
            bail!("--days must be 1 to 3650");
        }
        Ok(Self {
            suite,
            subject: Subject {
                role,
                name,
                taxpayer_id,
            },
            profile,
            days,
            out,
        })
    }
}

/// `pki issue`: a key pair and a certificate for it; returns the certificate.
pub(crate) fn issue(
    dir: &Path,
    plan: &IssuePlan,
    ca_pass: &Passphrase,
    key_pass: &Passphrase,
    now: OffsetDateTime,
) -> anyhow::Result<Certificate> {
    let ca = load_ca(dir, plan.suite, ca_pass)?;
    let key_passphrase = key_pass.read()?;
    let alg = match plan.profile {
        Profile::TlsServer { .. } | Profile::TlsClient => fapiao_crypto::KeyAlgorithm::P256,
        _ => plan.suite.key_algorithm(),
    };
    let key = PrivateKey::generate(alg, &mut system_rng());
    let req = CertificateRequest {
        subject: plan.subject.clone(),
        profile: plan.profile.clone(),
        public_key: key.public_key(),
        not_before: now - Duration::minutes(5),
        not_after: now + Duration::days(plan.days),
    };
    let cert = ca.issue(&req, &mut system_rng())?;
    let (crt_path, key_path) = (
        with_suffix(&plan.out, ".crt.pem"),
        with_suffix(&plan.out, ".key.pem"),
    );
    write_new(
        &key_path,
        key.to_encrypted_pem(&key_passphrase, &mut system_rng())?
            .as_bytes(),
        true,
    )?;
    write_new(&crt_path, cert.to_pem()?.as_bytes(), false)?;
    let line = format!(
        "{}\t{}\t{}\t{}\tV\t\n",
        cert.serial_hex(),
        plan.profile.name(),
        cert.subject_text(),
        cert.not_after().format(&Rfc3339)?
    );
    append(&suite_dir(dir, plan.suite).join("index.tsv"), &line)?;
    Ok(cert)
}

pub(crate) fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn append(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// `pki revoke`: marks a serial revoked in the index. Returns false if it was already.
pub(crate) fn revoke(
    dir: &Path,
    suite: Suite,
    serial: &str,
    now: OffsetDateTime,
) -> anyhow::Result<bool> {
    let index = suite_dir(dir, suite).join("index.tsv");
    let text =
        fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let serial = serial.to_ascii_lowercase();
    let mut found = false;
    let mut changed = false;
    let mut out = String::new();
    for line in text.lines() {
        let mut cols: Vec<String> = line.split('\t').map(str::to_owned).collect();
        if cols.first().is_some_and(|s| *s == serial) && cols.len() >= 6 {
            found = true;
            if cols[4] == "V" {
                cols[4] = "R".into();
                cols[5] = now.format(&Rfc3339)?;
                changed = true;
            }
        }
        out.push_str(&cols.join("\t"));
        out.push('\n');
    }
    if !found {
        bail!(
            "serial {serial} was not issued by the {suite} CA in {}",
            dir.display()
        );
    }
    replace(&index, out.as_bytes())?;
    Ok(changed)
}

/// `pki crl`: signs and writes the current cumulative CRL.
pub(crate) fn crl(
    dir: &Path,
    suite: Suite,
    passphrase: &Passphrase,
    days: i64,
    now: OffsetDateTime,
) -> anyhow::Result<Crl> {
    let ca = load_ca(dir, suite, passphrase)?;
    publish_crl(dir, suite, &ca, days, now)
}

fn publish_crl(
    dir: &Path,
    suite: Suite,
    ca: &Ca,
    days: i64,
    now: OffsetDateTime,
) -> anyhow::Result<Crl> {
    let sdir = suite_dir(dir, suite);
    let index =
        fs::read_to_string(sdir.join("index.tsv")).context("reading the certificate index")?;
    let mut revoked = Vec::new();
    for line in index.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() >= 6 && cols[4] == "R" {
            revoked.push(Revocation {
                serial: fapiao_crypto::hex::decode(cols[0])
                    .map(|s| s.to_vec())
                    .with_context(|| format!("bad serial in index: {}", cols[0]))?,
                revoked_at: OffsetDateTime::parse(cols[5], &Rfc3339)
                    .context("bad revocation time in index")?,
            });
        }
    }
    let number_path = sdir.join("crl.number");
    let number = fs::read_to_string(&number_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let crl = ca.crl(
        &revoked,
        number,
        now - Duration::minutes(5),
        now + Duration::days(days),
    )?;
    replace(&sdir.join("crl.pem"), crl.to_pem()?.as_bytes())?;
    replace(&number_path, format!("{number}\n").as_bytes())?;
    Ok(crl)
}

/// `pki show`: a certificate or CRL, human-readable.
pub(crate) fn show(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.contains("BEGIN X509 CRL") {
        let crl = Crl::from_pem(&text)?;
        let serials = crl.revoked_serials();
        return Ok(format!(
            "CRL\nthis update: {}\nnext update: {}\nrevoked:     {}\n",
            crl.this_update().format(&Rfc3339)?,
            crl.next_update()
                .map(|t| t.format(&Rfc3339))
                .transpose()?
                .unwrap_or_else(|| "-".into()),
            if serials.is_empty() {
                "none".to_owned()
            } else {
                serials.join(", ")
            }
        ));
    }
    Ok(Certificate::from_pem(&text)
        .with_context(|| format!("{} is not a PEM certificate or CRL", path.display()))?
        .describe())
}
