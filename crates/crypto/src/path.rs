//! Certificate path validation (RFC 5280 §6, the parts Fapiao's PKI uses), for SM2 and P-256:
//! chain to a configured root, validity at a given `now`, CA constraints, key usage for the
//! purpose, and revocation from the issuer's one current CRL.

use time::{Duration, OffsetDateTime};

use crate::cert::{Certificate, Purpose};
use crate::crl::Crl;
use crate::keys::KeyAlgorithm;
use crate::oid;

/// Longest chain accepted, root included.
const MAX_DEPTH: usize = 5;

/// Why a certificate path is not valid. Each check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A root given to the trust store is not a self-signed CA certificate.
    #[error("trust anchor {subject} is not a self-signed CA certificate")]
    BadTrustAnchor {
        /// Its subject.
        subject: String,
    },
    /// No root or intermediate names the certificate's issuer.
    #[error("no trusted issuer for {subject} (issuer {issuer})")]
    UnknownIssuer {
        /// The certificate's subject.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// The issuer is known but its signature on the certificate does not verify.
    #[error("the signature on {subject} does not verify with its issuer's key")]
    BadSignature {
        /// The certificate's subject.
        subject: String,
    },
    /// Past `notAfter`.
    #[error("{subject} expired at {not_after} (now {now})")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its end of validity.
        not_after: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },
    /// Before `notBefore`.
    #[error("{subject} is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its start of validity.
        not_before: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },
    /// An issuer that is not a CA allowed to sign certificates.
    #[error("{subject} is not a CA and cannot issue certificates")]
    NotACa {
        /// The would-be issuer.
        subject: String,
    },
    /// The certificate's key usage does not allow the purpose.
    #[error("{subject} is not valid for {purpose:?}")]
    WrongUsage {
        /// The certificate's subject.
        subject: String,
        /// The purpose asked for.
        purpose: Purpose,
    },
    /// The issuer published no CRL we hold.
    #[error("no CRL from {issuer}: revocation status unknown")]
    CrlMissing {
        /// The issuer.
        issuer: String,
    },
    /// The issuer's newest CRL is past its `nextUpdate` (or has none).
    #[error("the CRL of {issuer} is not current (next update {next_update:?}, now {now})")]
    CrlExpired {
        /// The issuer.
        issuer: String,
        /// Its `nextUpdate`.
        next_update: Option<OffsetDateTime>,
        /// The time of the check.
        now: OffsetDateTime,
    },
    /// Revoked.
    #[error("{subject} (serial {serial}) was revoked at {revoked_at}")]
    Revoked {
        /// The certificate's subject.
        subject: String,
        /// Its serial in hex.
        serial: String,
        /// When.
        revoked_at: OffsetDateTime,
    },
    /// More intermediates than allowed.
    #[error("certificate chain longer than {MAX_DEPTH}")]
    TooLong,
}

/// The roots a party trusts and the current CRLs it holds.
///
/// Validation repeats every check on every call — validity periods, key usage, the issuer's
/// CA flag, CRL currency and revocation — except the signature verifications: that a given
/// certificate or CRL (exact DER) was signed by a given issuer (exact DER) is a fact that never
/// changes, so each verified pair is remembered ([`SignatureCache`], shared by clones). A
/// revocation therefore takes effect at the first validation after the CRL that lists it is
/// added, exactly as without the cache; only the public-key operations, two or more per
/// validation, are saved.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    roots: Vec<Certificate>,
    crls: Vec<Crl>,
    verified: SignatureCache,
    crl_grace: Duration,
}

/// Signatures already verified, as SHA-256 of (signed object DER ‖ issuer certificate DER).
/// Bounded: when full it is emptied and refills from use.
#[derive(Debug, Clone, Default)]
pub struct SignatureCache(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>);

impl SignatureCache {
    /// Most pairs remembered (a few hundred KiB).
    pub const CAPACITY: usize = 8192;

    fn key(signed: &[u8], issuer: &Certificate) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update((signed.len() as u64).to_be_bytes());
        h.update(signed);
        h.update(issuer.der());
        h.finalize().into()
    }

    /// Whether `signed` (a certificate's or CRL's DER) was signed by `issuer`: remembered, or
    /// found by `verify` and then remembered if true.
    fn check(&self, signed: &[u8], issuer: &Certificate, verify: impl FnOnce() -> bool) -> bool {
        let key = Self::key(signed, issuer);
        if self.0.lock().is_ok_and(|set| set.contains(&key)) {
            return true;
        }
        let ok = verify();
        if ok && let Ok(mut set) = self.0.lock() {
            if set.len() >= Self::CAPACITY {
                set.clear();
            }
            set.insert(key);
        }
        ok
    }

    /// Pairs remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |s| s.len())
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TrustStore {
    /// A store trusting these roots; each must be a self-signed CA certificate.
    ///
    /// # Errors
    /// [`PathError::BadTrustAnchor`].
    pub fn new(roots: Vec<Certificate>) -> Result<Self, PathError> {
        for r in &roots {
            if !r.allows(Purpose::CertSign)
                || r.subject_name() != r.issuer_name()
                || !signed_by(r, r)
            {
                return Err(PathError::BadTrustAnchor {
                    subject: r.subject_text(),
                });
            }
        }
        Ok(Self {
            roots,
            crls: Vec::new(),
            verified: SignatureCache::default(),
            crl_grace: Duration::ZERO,
        })
    }

    /// How long past its `nextUpdate` a CRL still counts as current (default none): time for
    /// the CA's next CRL to arrive. Past it, every certificate of that issuer is refused.
    pub fn set_crl_grace(&mut self, grace: Duration) {
        self.crl_grace = grace;
    }

    /// The grace past a CRL's `nextUpdate` ([`Self::set_crl_grace`]).
    #[must_use]
    pub fn crl_grace(&self) -> Duration {
        self.crl_grace
    }

    /// Whether the newest CRL of `cert`'s issuer (a root) is current at `now`, grace
    /// included, and does not list `cert`: what a TLS handshake checks on top of rustls-webpki
    /// (which neither reloads nor, as configured, looks at `nextUpdate`). A `cert` whose issuer
    /// is not a root is left to the full path check.
    ///
    /// # Errors
    /// [`PathError::CrlMissing`], [`PathError::CrlExpired`] or [`PathError::Revoked`].
    pub fn check_revocation_now(
        &self,
        cert: &Certificate,
        now: OffsetDateTime,
    ) -> Result<(), PathError> {
        let Some(issuer) = self
            .roots
            .iter()
            .find(|r| r.subject_name() == cert.issuer_name() && self.signed_by(cert, r))
        else {
            return Ok(());
        };
        self.check_revocation(cert, issuer, now, Revocation::Current)
    }

    /// The verified-signature cache (for measurements and tests).
    #[must_use]
    pub fn signature_cache(&self) -> &SignatureCache {
        &self.verified
    }

    fn signed_by(&self, cert: &Certificate, issuer: &Certificate) -> bool {
        self.verified
            .check(cert.der(), issuer, || signed_by(cert, issuer))
    }

    fn crl_signed_by(&self, crl: &Crl, issuer: &Certificate) -> bool {
        crl.issuer_name() == issuer.subject_name()
            && self
                .verified
                .check(crl.der(), issuer, || crl.is_signed_by(issuer))
    }

    /// Adds a CRL. Several CRLs of one issuer may be held; validation uses the newest one that
    /// verifies (never an older one, which could miss a revocation).
    pub fn add_crl(&mut self, crl: Crl) {
        self.crls.push(crl);
    }

    /// Replaces every CRL.
    pub fn set_crls(&mut self, crls: Vec<Crl>) {
        self.crls = crls;
    }

    /// The roots.
    #[must_use]
    pub fn roots(&self) -> &[Certificate] {
        &self.roots
    }

    /// Every CRL held, as added.
    #[must_use]
    pub fn crls(&self) -> &[Crl] {
        &self.crls
    }

    /// The newest CRL of each issuer we can verify (what a TLS verifier should be given).
    #[must_use]
    pub fn current_crls(&self) -> Vec<Crl> {
        let mut out: Vec<Crl> = Vec::new();
        for crl in &self.crls {
            match out
                .iter_mut()
                .find(|c| c.issuer_name() == crl.issuer_name())
            {
                Some(existing) if existing.this_update() < crl.this_update() => {
                    *existing = crl.clone()
                }
                Some(_) => {}
                None => out.push(crl.clone()),
            }
        }
        out
    }

    /// Validates `leaf` for `purpose` at `now`, building the chain from the roots and the
    /// given intermediates. Returns the path, leaf first and root last.
    ///
    /// # Errors
    /// [`PathError`] naming the first failed check.
    pub fn validate(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
        purpose: Purpose,
        now: OffsetDateTime,
    ) -> Result<Vec<Certificate>, PathError> {
        self.validate_as_of(leaf, intermediates, purpose, now, Revocation::Current)
    }

    /// Validates `leaf` for `purpose` as it stood at `at`, a time in the past (when it signed
    /// something kept, such as an audit head): validity periods at `at`, and revocation from
    /// the newest CRL held that was issued at or after `at`, or was current at `at`. A
    /// certificate revoked after `at` stays valid for what it signed before; one revoked at
    /// or before `at` does not. Later CRLs never make an old signature fail for being old.
    ///
    /// # Errors
    /// [`PathError`] naming the first failed check.
    pub fn validate_at(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
        purpose: Purpose,
        at: OffsetDateTime,
    ) -> Result<Vec<Certificate>, PathError> {
        self.validate_as_of(leaf, intermediates, purpose, at, Revocation::AsOf)
    }

    fn validate_as_of(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
        purpose: Purpose,
        now: OffsetDateTime,
        revocation: Revocation,
    ) -> Result<Vec<Certificate>, PathError> {
        check_time(leaf, now)?;
        if !leaf.allows(purpose) {
            return Err(PathError::WrongUsage {
                subject: leaf.subject_text(),
                purpose,
            });
        }
        let mut path = vec![leaf.clone()];
        let mut current = leaf.clone();
        for _ in 0..MAX_DEPTH {
            let issuer = self.find_issuer(&current, intermediates)?;
            check_time(&issuer, now)?;
            if !issuer.allows(Purpose::CertSign) {
                return Err(PathError::NotACa {
                    subject: issuer.subject_text(),
                });
            }
            self.check_revocation(&current, &issuer, now, revocation)?;
            let is_root = self.roots.iter().any(|r| r == &issuer);
            path.push(issuer.clone());
            if is_root {
                return Ok(path);
            }
            current = issuer;
        }
        Err(PathError::TooLong)
    }

    fn find_issuer(
        &self,
        cert: &Certificate,
        intermediates: &[Certificate],
    ) -> Result<Certificate, PathError> {
        let candidates: Vec<&Certificate> = self
            .roots
            .iter()
            .chain(intermediates)
            .filter(|c| c.subject_name() == cert.issuer_name() && *c != cert)
            .collect();
        if candidates.is_empty() {
            return Err(PathError::UnknownIssuer {
                subject: cert.subject_text(),
                issuer: cert.issuer_text(),
            });
        }
        candidates
            .into_iter()
            .find(|c| self.signed_by(cert, c))
            .cloned()
            .ok_or_else(|| PathError::BadSignature {
                subject: cert.subject_text(),
            })
    }

    fn check_revocation(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        now: OffsetDateTime,
        revocation: Revocation,
    ) -> Result<(), PathError> {
        let crl = self
            .crls
            .iter()
            .filter(|c| self.crl_signed_by(c, issuer))
            .max_by_key(|c| c.this_update())
            .ok_or_else(|| PathError::CrlMissing {
                issuer: issuer.subject_text(),
            })?;
        let current_at =
            crl.this_update() <= now && crl.next_update().is_some_and(|n| now < n + self.crl_grace);
        let current = match revocation {
            Revocation::Current => current_at,
            Revocation::AsOf => current_at || crl.this_update() >= now,
        };
        if !current {
            return Err(PathError::CrlExpired {
                issuer: issuer.subject_text(),
                next_update: crl.next_update(),
                now,
            });
        }
        if let Some(revoked_at) = crl.revoked_at(cert.serial())
            && (revocation == Revocation::Current || revoked_at <= now)
        {
            return Err(PathError::Revoked {
                subject: cert.subject_text(),
                serial: cert.serial_hex(),
                revoked_at,
            });
        }
        Ok(())
    }
}

/// Which revocation status a validation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// Now, from a current CRL.
    Current,
    /// At a past time, from a CRL issued since or current then.
    AsOf,
}

fn check_time(cert: &Certificate, now: OffsetDateTime) -> Result<(), PathError> {
    if now < cert.not_before() {
        return Err(PathError::NotYetValid {
            subject: cert.subject_text(),
            not_before: cert.not_before(),
            now,
        });
    }
    if now > cert.not_after() {
        return Err(PathError::Expired {
            subject: cert.subject_text(),
            not_after: cert.not_after(),
            now,
        });
    }
    Ok(())
}

/// Whether `issuer`'s key made the signature on `cert`, with the algorithm it declares.
pub(crate) fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    let (Ok((alg, sig, tbs)), Ok(key)) = (cert.signed_parts(), issuer.public_key()) else {
        return false;
    };
    let expected = match key.algorithm() {
        KeyAlgorithm::Sm2 => oid::SM2_WITH_SM3,
        KeyAlgorithm::P256 => oid::ECDSA_WITH_SHA256,
    };
    alg == expected && key.verify(&tbs, &sig).is_ok()
}
