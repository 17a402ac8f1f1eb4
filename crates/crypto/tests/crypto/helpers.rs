use std::path::Path;
use std::process::Command;

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, Certificate, CertificateRequest, Crl, PrivateKey, Profile, Revocation, Role, Subject,
    Suite, TrustStore,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// The fixed "now" of the tests.
pub(crate) const NOW: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);

/// A fresh CA of one suite, with a current CRL.
pub(crate) struct Pki {
    pub(crate) suite: Suite,
    pub(crate) ca: Ca,
    pub(crate) revoked: Vec<Revocation>,
}

pub(crate) fn subject(role: Role, name: &str) -> Subject {
    let taxpayer_id = role
        .is_enterprise()
        .then(|| "91310115MA1FP0001X".to_owned());
    Subject {
        role,
        name: name.to_owned(),
        taxpayer_id,
    }
}

impl Pki {
    pub(crate) fn new(suite: Suite) -> Self {
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let subject = Subject {
            role: Role::Ca,
            name: format!("Fapiao Test Root {suite}"),
            taxpayer_id: None,
        };
        let ca = Ca::create_root(
            &subject,
            key,
            NOW - Duration::days(30),
            NOW + Duration::days(3650),
            &mut system_rng(),
        )
        .unwrap();
        Self {
            suite,
            ca,
            revoked: Vec::new(),
        }
    }

    pub(crate) fn issue_with(
        &self,
        role: Role,
        name: &str,
        profile: Profile,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (PrivateKey, Certificate) {
        let alg = match profile {
            Profile::TlsServer { .. } | Profile::TlsClient => fapiao_crypto::KeyAlgorithm::P256,
            _ => self.suite.key_algorithm(),
        };
        let key = PrivateKey::generate(alg, &mut system_rng());
        let req = CertificateRequest {
            subject: subject(role, name),
            profile,
            public_key: key.public_key(),
            not_before,
            not_after,
        };
        (key, self.ca.issue(&req, &mut system_rng()).unwrap())
    }

    pub(crate) fn issue(
        &self,
        role: Role,
        name: &str,
        profile: Profile,
    ) -> (PrivateKey, Certificate) {
        self.issue_with(
            role,
            name,
            profile,
            NOW - Duration::days(1),
            NOW + Duration::days(365),
        )
    }

    pub(crate) fn revoke(&mut self, cert: &Certificate) {
        self.revoked.push(Revocation {
            serial: cert.serial().to_vec(),
            revoked_at: NOW - Duration::hours(1),
        });
    }

    pub(crate) fn crl(&self) -> Crl {
        let number = u64::try_from(self.revoked.len()).unwrap() + 1;
        self.ca
            .crl(
                &self.revoked,
                number,
                NOW - Duration::hours(1),
                NOW + Duration::days(7),
            )
            .unwrap()
    }

    /// The trust with a CRL current at `now` (TLS handshakes check the wall clock).
    pub(crate) fn trust_at(&self, now: OffsetDateTime) -> TrustStore {
        let number = u64::try_from(self.revoked.len()).unwrap() + 1;
        let crl = self
            .ca
            .crl(
                &self.revoked,
                number,
                now - Duration::hours(1),
                now + Duration::days(7),
            )
            .unwrap();
        let mut t = TrustStore::new(vec![self.ca.certificate().clone()]).unwrap();
        t.add_crl(crl);
        t
    }

    pub(crate) fn trust(&self) -> TrustStore {
        let mut t = TrustStore::new(vec![self.ca.certificate().clone()]).unwrap();
        t.add_crl(self.crl());
        t
    }
}

pub(crate) fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_owned()
}

/// Runs a tool; returns (success, stdout + stderr).
pub(crate) fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub(crate) fn openssl(args: &[&str]) -> (bool, String) {
    run("openssl", args)
}

/// A party with dual certificates from this PKI.
pub(crate) fn party(pki: &Pki, role: Role, name: &str) -> fapiao_crypto::envelope::LocalParty {
    let (sk, sc) = pki.issue(role, name, Profile::Signing);
    let (ek, ec) = pki.issue(role, name, Profile::Encryption);
    fapiao_crypto::envelope::LocalParty::new(pki.suite, sk, sc, ek, ec, Vec::new()).unwrap()
}

/// A party with keys, for tests that need the key files too.
pub(crate) struct PartyFiles {
    pub(crate) party: fapiao_crypto::envelope::LocalParty,
    pub(crate) signing_key: PrivateKey,
    pub(crate) signing_cert: Certificate,
    pub(crate) encryption_key: PrivateKey,
    pub(crate) encryption_cert: Certificate,
}

pub(crate) fn party_files(pki: &Pki, role: Role, name: &str) -> PartyFiles {
    let (sk, sc) = pki.issue(role, name, Profile::Signing);
    let (ek, ec) = pki.issue(role, name, Profile::Encryption);
    let party = fapiao_crypto::envelope::LocalParty::new(
        pki.suite,
        sk.clone(),
        sc.clone(),
        ek.clone(),
        ec.clone(),
        Vec::new(),
    )
    .unwrap();
    PartyFiles {
        party,
        signing_key: sk,
        signing_cert: sc,
        encryption_key: ek,
        encryption_cert: ec,
    }
}

pub(crate) fn message(
    from: &fapiao_crypto::envelope::LocalParty,
    to: &fapiao_crypto::envelope::LocalParty,
    id: &str,
) -> fapiao_crypto::envelope::Message {
    fapiao_crypto::envelope::Message {
        header: fapiao_crypto::envelope::Header {
            protocol_version: 1,
            sender: from.identity().to_owned(),
            recipient: to.identity().to_owned(),
            message_type: "order.issue".to_owned(),
            message_id: id.to_owned(),
            created_at: NOW,
        },
        payload: "{\"order_id\":\"YF-2026-000101\",\"total\":\"16960.00\",\"buyer\":\"北京华章商贸有限公司\"}".as_bytes().to_vec(),
    }
}

/// An unencrypted PKCS#8 PEM of a key, for OpenSSL.
pub(crate) fn key_pem(key: &PrivateKey) -> String {
    der::pem::encode_string(
        "PRIVATE KEY",
        der::pem::LineEnding::LF,
        &key.to_pkcs8_der().unwrap(),
    )
    .unwrap()
}

pub(crate) fn public_pem(key: &PrivateKey) -> String {
    der::pem::encode_string(
        "PUBLIC KEY",
        der::pem::LineEnding::LF,
        &key.public_key().to_spki_der().unwrap(),
    )
    .unwrap()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens an envelope as `me` with the PKI's current trust and a fresh replay guard.
pub(crate) fn open_fresh(
    pki: &Pki,
    me: &fapiao_crypto::envelope::LocalParty,
    envelope: &[u8],
) -> Result<fapiao_crypto::envelope::Opened, fapiao_crypto::envelope::OpenError> {
    let trust = pki.trust();
    let guard = fapiao_crypto::envelope::MemoryReplayGuard::new();
    fapiao_crypto::envelope::Opener::new(me, &trust, &guard).open(envelope, NOW)
}
