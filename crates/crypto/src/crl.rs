//! Certificate revocation lists: parsed, verified against their issuer, and looked up.

use der::{Decode, DecodePem, Encode, EncodePem};
use time::OffsetDateTime;

use crate::cert::{CertError, Certificate, hex, to_offset};

/// A parsed CRL with its DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    der: Vec<u8>,
    inner: x509_cert::crl::CertificateList,
}

impl Crl {
    pub(crate) fn from_inner(inner: x509_cert::crl::CertificateList) -> Result<Self, CertError> {
        let der = inner.to_der().map_err(|_| CertError::Malformed)?;
        Ok(Self { der, inner })
    }

    /// Parses DER.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let inner =
            x509_cert::crl::CertificateList::from_der(der).map_err(|_| CertError::Malformed)?;
        Ok(Self {
            der: der.to_vec(),
            inner,
        })
    }

    /// Parses PEM (`X509 CRL`).
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let inner = x509_cert::crl::CertificateList::from_pem(pem.as_bytes())
            .map_err(|_| CertError::Malformed)?;
        Self::from_inner(inner)
    }

    /// The DER encoding.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text.
    ///
    /// # Errors
    /// [`CertError::Malformed`] (never for a parsed CRL).
    pub fn to_pem(&self) -> Result<String, CertError> {
        self.inner
            .to_pem(der::pem::LineEnding::LF)
            .map_err(|_| CertError::Malformed)
    }

    /// The issuer as RFC 4514 text.
    #[must_use]
    pub fn issuer_text(&self) -> String {
        self.inner.tbs_cert_list.issuer.to_string()
    }

    /// When it was issued.
    #[must_use]
    pub fn this_update(&self) -> OffsetDateTime {
        to_offset(self.inner.tbs_cert_list.this_update)
    }

    /// When the next one is due; a CRL without it never counts as current.
    #[must_use]
    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.inner.tbs_cert_list.next_update.map(to_offset)
    }

    /// The revocation date of a serial number, if revoked.
    #[must_use]
    pub fn revoked_at(&self, serial: &[u8]) -> Option<OffsetDateTime> {
        self.inner
            .tbs_cert_list
            .revoked_certificates
            .as_ref()?
            .iter()
            .find(|r| r.serial_number.as_bytes() == serial)
            .map(|r| to_offset(r.revocation_date))
    }

    /// Serial numbers listed, in hex.
    #[must_use]
    pub fn revoked_serials(&self) -> Vec<String> {
        self.inner
            .tbs_cert_list
            .revoked_certificates
            .as_ref()
            .map(|v| v.iter().map(|r| hex(r.serial_number.as_bytes())).collect())
            .unwrap_or_default()
    }

    /// Whether the CRL names this issuer and carries its valid signature.
    #[must_use]
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        if self.inner.tbs_cert_list.issuer != *issuer.subject_name() {
            return false;
        }
        let (Ok(tbs), Some(sig), Ok(key)) = (
            self.inner.tbs_cert_list.to_der(),
            self.inner.signature.as_bytes(),
            issuer.public_key(),
        ) else {
            return false;
        };
        key.verify(&tbs, sig).is_ok()
    }

    pub(crate) fn issuer_name(&self) -> &x509_cert::name::Name {
        &self.inner.tbs_cert_list.issuer
    }
}
