//! Mutual-TLS configurations for rustls, built from our PKI material: TLS 1.2 and 1.3 only, the
//! ring provider's AEAD suites only, client certificates required between roles, and
//! revocation checked against exactly one current CRL per issuer (rustls-webpki consults only
//! the first CRL it finds for an issuer, so older ones are never passed).
//!
//! Transport keys are always P-256: no SM2 TLS exists in Rust; the national algorithms protect
//! every message at the envelope layer instead.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::cert::{CertError, Certificate, Subject};
use crate::keys::{KeyAlgorithm, PrivateKey};
use crate::path::TrustStore;

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

/// A server configuration: TLS 1.2/1.3, our certificate, and (for [`ClientAuth::Required`])
/// client certificates verified against the trust store's P-256 roots and current CRLs.
///
/// # Errors
/// [`TlsError`].
pub fn server_config(
    identity: &TlsIdentity,
    trust: &TrustStore,
    client_auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_err)?;
    let builder = match client_auth {
        ClientAuth::Required | ClientAuth::Optional => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(trust)?, provider())
                .with_crls(crls(trust));
            let verifier = if client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let (certs, key) = identity.rustls_parts()?;
    builder.with_single_cert(certs, key).map_err(rustls_err)
}

/// A client configuration: TLS 1.2/1.3, servers verified against the trust store's P-256 roots
/// and current CRLs, presenting `identity` when given.
///
/// # Errors
/// [`TlsError`].
pub fn client_config(
    identity: Option<&TlsIdentity>,
    trust: &TrustStore,
) -> Result<ClientConfig, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Rustls(e.to_string());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(trust)?, provider())
            .with_crls(crls(trust))
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_err)?
        .with_webpki_verifier(verifier);
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

/// Who a verified TLS peer is, from the leaf certificate rustls verified.
///
/// # Errors
/// [`CertError`] if there is no certificate or it names no Fapiao subject.
pub fn peer_subject(peer_certificates: &[CertificateDer<'_>]) -> Result<Subject, CertError> {
    let leaf = peer_certificates.first().ok_or(CertError::Malformed)?;
    Certificate::from_der(leaf)?.subject()
}
