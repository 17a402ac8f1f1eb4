//! The certificate authority: a root per suite that issues certificates by [`Profile`] and
//! publishes cumulative CRLs.

use der::asn1::BitString;
use rand_core::CryptoRng;
use signature::Keypair;
use spki::{AlgorithmIdentifierOwned, Document, DynSignatureAlgorithmIdentifier, EncodePublicKey};
use time::OffsetDateTime;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder, CrlBuilder};
use x509_cert::crl::RevokedCert;
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

use crate::cert::{CertError, Certificate, Profile, Role, Subject, to_x509_time};
use crate::crl::Crl;
use crate::keys::{KeyAlgorithm, PrivateKey, PublicKey};

/// A certificate to issue.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// Who it is for.
    pub subject: Subject,
    /// What it is for.
    pub profile: Profile,
    /// The holder's public key.
    pub public_key: PublicKey,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// One revoked certificate, for a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
}

/// A certificate authority: its certificate and signing key.
#[derive(Debug, Clone)]
pub struct Ca {
    cert: Certificate,
    key: PrivateKey,
}

impl Ca {
    /// Creates a self-signed root CA.
    ///
    /// # Errors
    /// [`CertError`] when the subject is not a CA subject or building fails.
    pub fn create_root<R: CryptoRng + ?Sized>(
        subject: &Subject,
        key: PrivateKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        rng: &mut R,
    ) -> Result<Self, CertError> {
        if subject.role != Role::Ca {
            return Err(CertError::ProfileNotIssuable {
                ca: key.algorithm().name(),
                profile: "root",
                reason: "a root certificate's subject has role ca",
            });
        }
        let name = subject.to_name()?;
        let spki = key
            .public_key()
            .to_spki()
            .map_err(|e| CertError::Build(e.to_string()))?;
        let profile = FapiaoProfile {
            subject: name.clone(),
            issuer: name,
            profile: Profile::Root,
        };
        let validity = Validity::new(to_x509_time(not_before)?, to_x509_time(not_after)?);
        let builder = CertificateBuilder::new(profile, SerialNumber::generate(rng), validity, spki)
            .map_err(|e| CertError::Build(e.to_string()))?;
        let cert = sign(builder, &key)?;
        Ok(Self {
            cert: Certificate::from_inner(cert)?,
            key,
        })
    }

    /// Loads a CA from its certificate and key.
    ///
    /// # Errors
    /// [`CertError::ProfileKeyMismatch`] if the key does not belong to the certificate or the
    /// certificate is not a CA.
    pub fn from_parts(cert: Certificate, key: PrivateKey) -> Result<Self, CertError> {
        let matches = cert.public_key().is_ok_and(|k| k == key.public_key());
        if !matches || !cert.is_ca() {
            return Err(CertError::ProfileKeyMismatch {
                profile: "root",
                expected: "the CA's own",
                found: "another",
            });
        }
        Ok(Self { cert, key })
    }

    /// The CA certificate.
    #[must_use]
    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// The CA key.
    #[must_use]
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    /// Issues a certificate, refusing profile/key mismatches: TLS profiles need P-256 keys and
    /// an INTL (P-256) CA, since TLS peers verify chains with WebPKI; message profiles need a
    /// key of the CA's own algorithm; devices and agents carry a taxpayer id, others none.
    ///
    /// # Errors
    /// [`CertError`] naming the mismatch.
    pub fn issue<R: CryptoRng + ?Sized>(
        &self,
        req: &CertificateRequest,
        rng: &mut R,
    ) -> Result<Certificate, CertError> {
        let ca_alg = self.key.algorithm();
        let key_alg = req.public_key.algorithm();
        let profile_name = req.profile.name();
        match &req.profile {
            Profile::Root => {
                return Err(CertError::ProfileNotIssuable {
                    ca: ca_alg.name(),
                    profile: profile_name,
                    reason: "roots are self-signed",
                });
            }
            Profile::TlsServer { .. } | Profile::TlsClient => {
                if ca_alg != KeyAlgorithm::P256 {
                    return Err(CertError::ProfileNotIssuable {
                        ca: ca_alg.name(),
                        profile: profile_name,
                        reason: "TLS chains are verified with P-256; use the INTL CA",
                    });
                }
                if key_alg != KeyAlgorithm::P256 {
                    return Err(CertError::ProfileKeyMismatch {
                        profile: profile_name,
                        expected: "P-256",
                        found: key_alg.name(),
                    });
                }
            }
            Profile::Signing | Profile::Encryption => {
                if key_alg != ca_alg {
                    return Err(CertError::ProfileKeyMismatch {
                        profile: profile_name,
                        expected: ca_alg.name(),
                        found: key_alg.name(),
                    });
                }
            }
        }
        if req.subject.role.is_person() && req.profile != Profile::TlsClient {
            return Err(CertError::ProfileNotIssuable {
                ca: ca_alg.name(),
                profile: profile_name,
                reason: "operators, auditors and monitors hold a tls-client certificate only",
            });
        }
        match (req.subject.role, &req.subject.taxpayer_id) {
            (Role::Ca, _) => {
                return Err(CertError::ProfileNotIssuable {
                    ca: ca_alg.name(),
                    profile: profile_name,
                    reason: "only roots have role ca",
                });
            }
            (r, None) if r.is_enterprise() => {
                return Err(CertError::TaxpayerId {
                    role: r,
                    requirement: "carry the enterprise's taxpayer id",
                });
            }
            (r, Some(_)) if !r.is_enterprise() => {
                return Err(CertError::TaxpayerId {
                    role: r,
                    requirement: "carry no taxpayer id",
                });
            }
            _ => {}
        }
        let profile = FapiaoProfile {
            subject: req.subject.to_name()?,
            issuer: self.cert.subject_name().clone(),
            profile: req.profile.clone(),
        };
        let spki = req
            .public_key
            .to_spki()
            .map_err(|e| CertError::Build(e.to_string()))?;
        let validity = Validity::new(to_x509_time(req.not_before)?, to_x509_time(req.not_after)?);
        let builder = CertificateBuilder::new(profile, SerialNumber::generate(rng), validity, spki)
            .map_err(|e| CertError::Build(e.to_string()))?;
        Certificate::from_inner(sign(builder, &self.key)?)
    }

    /// Signs a cumulative CRL listing every revocation so far.
    ///
    /// # Errors
    /// [`CertError::Build`] or [`CertError::Time`].
    pub fn crl(
        &self,
        revoked: &[Revocation],
        number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Crl, CertError> {
        let build = |e: der::Error| CertError::Build(e.to_string());
        let entries = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCert {
                    serial_number: SerialNumber::new(&r.serial).map_err(build)?,
                    revocation_date: to_x509_time(r.revoked_at)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, CertError>>()?;
        let crl_number = CrlNumber::try_from(number).map_err(build)?;
        let builder = CrlBuilder::new_with_this_update(
            self.cert.inner(),
            crl_number,
            to_x509_time(this_update)?,
        )
        .map_err(build)?
        .with_next_update(Some(to_x509_time(next_update)?))
        .with_certificates(entries.into_iter());
        let list = sign(builder, &self.key)?;
        Crl::from_inner(list)
    }
}

/// Builds any x509-cert object, signing its TBS DER with our key (DER signature).
fn sign<B: Builder>(mut builder: B, key: &PrivateKey) -> Result<B::Output, CertError> {
    let signer = KeySigner { key };
    let tbs = builder
        .finalize(&signer)
        .map_err(|e| CertError::Build(e.to_string()))?;
    let sig = key
        .sign(&tbs)
        .map_err(|e| CertError::Build(e.to_string()))?;
    let bits = BitString::from_bytes(&sig).map_err(|e| CertError::Build(e.to_string()))?;
    builder
        .assemble(bits, &signer)
        .map_err(|e| CertError::Build(e.to_string()))
}

/// Adapts a [`PrivateKey`] to the builder's signer traits (signing itself happens in [`sign`]).
struct KeySigner<'a> {
    key: &'a PrivateKey,
}

#[derive(Clone)]
struct SpkiDer(Vec<u8>);

impl EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> spki::Result<Document> {
        Document::try_from(self.0.as_slice()).map_err(spki::Error::from)
    }
}

impl Keypair for KeySigner<'_> {
    type VerifyingKey = SpkiDer;
    fn verifying_key(&self) -> SpkiDer {
        SpkiDer(self.key.public_key().to_spki_der().unwrap_or_default())
    }
}

impl DynSignatureAlgorithmIdentifier for KeySigner<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.key.algorithm().signature_algorithm())
    }
}

struct FapiaoProfile {
    subject: Name,
    issuer: Name,
    profile: Profile,
}

impl BuilderProfile for FapiaoProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: spki::SubjectPublicKeyInfoRef<'_>,
        issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<x509_cert::ext::Extension>> {
        Ok(self.profile.extensions(&self.subject, spk, issuer_spk)?)
    }
}
