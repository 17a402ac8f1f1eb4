//! Mutual-TLS configurations for rustls, built from our PKI material: TLS 1.2 and 1.3 only, the
//! ring provider's AEAD suites only, client certificates required between roles, and
//! revocation checked against exactly one current CRL per issuer (rustls-webpki consults only
//! the first CRL it finds for an issuer, so older ones are never passed). The verifiers read a
//! [`LiveTrust`] at every handshake: CRLs reloaded while a role runs take effect on the next
//! connection, and a CRL past its next update (plus grace) refuses its issuer's peers.
//!
//! Transport keys are always P-256: no SM2 TLS exists in Rust; the national algorithms protect
//! every message at the envelope layer instead.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
    UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use time::OffsetDateTime;

use crate::cert::{CertError, Certificate, Subject};
use crate::keys::{KeyAlgorithm, PrivateKey};
use crate::live::LiveTrust;
use crate::path::{PathError, TrustStore};

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The key is not P-256 or does not match the certificate.
    #[error("the TLS key must be P-256 and match the first certificate of the chain")]
    Key,
    /// No P-256 root to verify peers with.
    #[error("the trust store has no P-256 root for TLS")]
    NoRoots,
    /// rustls refused the material.
    #[error("rustls: {0}")]
    Rustls(String),
}

/// A TLS certificate chain (leaf first) and its key.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    chain: Vec<Certificate>,
    key: PrivateKey,
}

impl TlsIdentity {
    /// Pairs a chain with its key.
    ///
    /// # Errors
    /// [`TlsError::Key`] if the key is not P-256 or not the leaf's.
    pub fn new(chain: Vec<Certificate>, key: PrivateKey) -> Result<Self, TlsError> {
        let leaf_matches = chain
            .first()
            .and_then(|c| c.public_key().ok())
            .is_some_and(|p| p == key.public_key());
        if key.algorithm() != KeyAlgorithm::P256 || !leaf_matches {
            return Err(TlsError::Key);
        }
        Ok(Self { chain, key })
    }

    /// The leaf certificate.
    #[must_use]
    pub fn leaf(&self) -> &Certificate {
        &self.chain[0]
    }

    fn rustls_parts(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let certs = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.der().to_vec()))
            .collect();
        let der = self.key.to_pkcs8_der().map_err(|_| TlsError::Key)?;
        Ok((
            certs,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())),
        ))
    }
}

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Required and verified (between roles).
    Required,
    /// Requested and verified when presented, but not required: one listener serves peers
    /// (with certificates) and public callers (ERP API, 查验); handlers that need a peer
    /// refuse requests without one.
    Optional,
    /// Not requested (the ERP-facing API, authenticated per request instead).
    None,
}

/// The one crypto provider Fapiao uses for TLS.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(trust: &TrustStore) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for root in trust.roots().iter().filter(|r| {
        r.public_key()
            .is_ok_and(|k| k.algorithm() == KeyAlgorithm::P256)
    }) {
        store
            .add(CertificateDer::from(root.der().to_vec()))
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(Arc::new(store))
}

fn crls(trust: &TrustStore) -> Vec<CertificateRevocationListDer<'static>> {
    trust
        .current_crls()
        .iter()
        .map(|c| CertificateRevocationListDer::from(c.der().to_vec()))
        .collect()
}

/// A server configuration: TLS 1.2/1.3, our certificate, and (for [`ClientAuth::Required`]
/// and [`ClientAuth::Optional`]) client certificates verified against the trust's P-256 roots
/// and its CRLs as they are at each handshake ([`LiveTrust`]: a CRL reloaded takes effect on
/// the next connection), refusing clients whose issuer's CRL is past its next update (plus
/// the trust's grace).
///
/// # Errors
/// [`TlsError`].
pub fn server_config(
    identity: &TlsIdentity,
    trust: impl Into<LiveTrust>,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_err)?;
    let builder = match client_auth {
        ClientAuth::Required | ClientAuth::Optional => builder.with_client_cert_verifier(Arc::new(
            LiveClientVerifier::new(trust.into(), client_auth == ClientAuth::Optional)?,
        )),
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let (certs, key) = identity.rustls_parts()?;
    builder.with_single_cert(certs, key).map_err(rustls_err)
}

/// A client configuration: TLS 1.2/1.3, servers verified against the trust's P-256 roots and
/// its CRLs as they are at each handshake (as [`server_config`]), presenting `identity` when
/// given.
///
/// # Errors
/// [`TlsError`].
pub fn client_config(
    identity: Option<&TlsIdentity>,
    trust: impl Into<LiveTrust>,
) -> Result<ClientConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LiveServerVerifier::new(trust.into())?));
    match identity {
        Some(id) => {
            let (certs, key) = id.rustls_parts()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(rustls_err)
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn build_client_verifier(
    trust: &TrustStore,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(trust)?, provider())
        .with_crls(crls(trust));
    let verifier = if optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    verifier
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

fn build_server_verifier(trust: &TrustStore) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(roots(trust)?, provider())
        .with_crls(crls(trust))
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))
}

/// The CRL check rustls-webpki does not make: the issuer's newest CRL current at the
/// handshake (its `nextUpdate`, plus the trust's grace, not passed).
fn crl_current(
    trust: &TrustStore,
    end_entity: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let cert = Certificate::from_der(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX))
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::Expired))?;
    trust.check_revocation_now(&cert, now).map_err(|e| {
        rustls::Error::InvalidCertificate(match e {
            PathError::Revoked { .. } => CertificateError::Revoked,
            PathError::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
            _ => CertificateError::UnknownRevocationStatus,
        })
    })
}

/// What a verifier derived from the trust, and the trust's generation it was derived at.
struct Derived<T: ?Sized> {
    generation: u64,
    verifier: Arc<T>,
}

/// Client certificates verified against the current [`LiveTrust`]: the webpki verifier is
/// rebuilt when the trust's generation moves (a CRL reloaded), and the CRL's currency is
/// checked at every handshake.
struct LiveClientVerifier {
    trust: LiveTrust,
    optional: bool,
    derived: Mutex<Derived<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
    schemes: Vec<SignatureScheme>,
}

impl std::fmt::Debug for LiveClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveClientVerifier")
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl LiveClientVerifier {
    fn new(trust: LiveTrust, optional: bool) -> Result<Self, TlsError> {
        let generation = trust.generation();
        let verifier = build_client_verifier(&trust.current(), optional)?;
        Ok(Self {
            hints: verifier.root_hint_subjects().to_vec(),
            schemes: verifier.supported_verify_schemes(),
            derived: Mutex::new(Derived {
                generation,
                verifier,
            }),
            trust,
            optional,
        })
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let generation = self.trust.generation();
        let mut d = self
            .derived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.generation != generation {
            d.verifier = build_client_verifier(&self.trust.current(), self.optional)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            d.generation = generation;
        }
        Ok(d.verifier.clone())
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .verifier()?
            .verify_client_cert(end_entity, intermediates, now)?;
        crl_current(&self.trust.current(), end_entity, now)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Server certificates verified against the current [`LiveTrust`] (as
/// [`LiveClientVerifier`]).
struct LiveServerVerifier {
    trust: LiveTrust,
    derived: Mutex<Derived<WebPkiServerVerifier>>,
    schemes: Vec<SignatureScheme>,
}

impl std::fmt::Debug for LiveServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveServerVerifier").finish_non_exhaustive()
    }
}

impl LiveServerVerifier {
    fn new(trust: LiveTrust) -> Result<Self, TlsError> {
        let generation = trust.generation();
        let verifier = build_server_verifier(&trust.current())?;
        Ok(Self {
            schemes: verifier.supported_verify_schemes(),
            derived: Mutex::new(Derived {
                generation,
                verifier,
            }),
            trust,
        })
    }

    fn verifier(&self) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let generation = self.trust.generation();
        let mut d = self
            .derived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.generation != generation {
            d.verifier = build_server_verifier(&self.trust.current())
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            d.generation = generation;
        }
        Ok(d.verifier.clone())
    }
}

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        crl_current(&self.trust.current(), end_entity, now)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Who a verified TLS peer is, from the leaf certificate rustls verified.
///
/// # Errors
/// [`CertError`] if there is no certificate or it names no Fapiao subject.
pub fn peer_subject(peer_certificates: &[CertificateDer<'_>]) -> Result<Subject, CertError> {
    let leaf = peer_certificates.first().ok_or(CertError::Malformed)?;
    Certificate::from_der(leaf)?.subject()
}
