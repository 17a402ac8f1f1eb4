//! Certificates: who a holder is ([`Subject`], [`Role`]), what it may do ([`Profile`]), and the
//! parsed [`Certificate`] with the accessors path validation and the CLI need.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use const_oid::db::rfc4519::{
    COMMON_NAME, COUNTRY_NAME, ORGANIZATION_NAME, ORGANIZATIONAL_UNIT_NAME,
};
use const_oid::db::rfc5280::{ID_KP_CLIENT_AUTH, ID_KP_SERVER_AUTH};
use der::asn1::{
    Ia5String, ObjectIdentifier, OctetString, PrintableStringRef, SetOfVec, Utf8StringRef,
};
use der::{Decode, DecodePem, Encode, EncodePem, Sequence};
use time::OffsetDateTime;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::name::Name;

use crate::keys::PublicKey;
use crate::oid;

/// The role a certificate holder plays (DESIGN "Roles"), carried as the subject's `OU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The certificate authority.
    Ca,
    /// 电子商务云平台: the e-commerce cloud platform.
    Cloud,
    /// 电子发票服务平台: the e-invoice service platform.
    Platform,
    /// 税务机关受理平台: the tax authority acceptance platform.
    Tax,
    /// 电子发票开具服务装置: an issuing device (subject carries the enterprise's taxpayer id).
    Device,
    /// 电子发票开票前置服务装置: an enterprise's front-end agent (carries its taxpayer id).
    Agent,
    /// A person who operates a role: every admin route, changes included (`CN` names them).
    Operator,
    /// A person who audits: the admin routes that read, nothing that changes.
    Auditor,
    /// A person or monitoring system reading `/metrics` only.
    Monitor,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 9] = [
        Self::Ca,
        Self::Cloud,
        Self::Platform,
        Self::Tax,
        Self::Device,
        Self::Agent,
        Self::Operator,
        Self::Auditor,
        Self::Monitor,
    ];

    /// The lower-case name used in subjects and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Cloud => "cloud",
            Self::Platform => "platform",
            Self::Tax => "tax",
            Self::Device => "device",
            Self::Agent => "agent",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
            Self::Monitor => "monitor",
        }
    }

    /// Parses a role name.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == text)
    }

    /// Whether holders of this role act for one enterprise and so carry its taxpayer id.
    #[must_use]
    pub fn is_enterprise(self) -> bool {
        matches!(self, Self::Device | Self::Agent)
    }

    /// Whether holders are people at an admin port (operator, auditor, monitor), not services:
    /// they hold a TLS client certificate only, and only admin ports let them in.
    #[must_use]
    pub fn is_person(self) -> bool {
        matches!(self, Self::Operator | Self::Auditor | Self::Monitor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a certificate names: `C=CN, O=Fapiao, OU=<role>, CN=<name>` and, for enterprise
/// devices and agents, `organizationIdentifier` (2.5.4.97) = the enterprise's taxpayer id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The holder's role.
    pub role: Role,
    /// The holder's name (`CN`), e.g. `platform-1`.
    pub name: String,
    /// The enterprise's taxpayer id, for devices and agents.
    pub taxpayer_id: Option<String>,
}

impl Subject {
    /// The identity string used as sender and recipient in envelopes: `role:name`.
    #[must_use]
    pub fn identity(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }

    /// Encodes the subject as an X.509 name.
    ///
    /// # Errors
    /// [`CertError::Subject`] for a name or taxpayer id that cannot be encoded.
    pub fn to_name(&self) -> Result<Name, CertError> {
        let mut rdns: Vec<SetOfVec<Atv>> = Vec::new();
        let mut push = |oid: ObjectIdentifier, value: der::Any| -> Result<(), CertError> {
            let set =
                SetOfVec::try_from(vec![Atv { oid, value }]).map_err(|_| CertError::Subject)?;
            rdns.push(set);
            Ok(())
        };
        let utf8 = |s: &str| -> Result<der::Any, CertError> {
            der::Any::encode_from(&Utf8StringRef::new(s).map_err(|_| CertError::Subject)?)
                .map_err(|_| CertError::Subject)
        };
        let country =
            der::Any::encode_from(&PrintableStringRef::new("CN").map_err(|_| CertError::Subject)?)
                .map_err(|_| CertError::Subject)?;
        push(COUNTRY_NAME, country)?;
        push(ORGANIZATION_NAME, utf8("Fapiao")?)?;
        push(ORGANIZATIONAL_UNIT_NAME, utf8(self.role.name())?)?;
        if self.name.is_empty() || self.name.chars().count() > 64 {
            return Err(CertError::Subject);
        }
        push(COMMON_NAME, utf8(&self.name)?)?;
        if let Some(id) = &self.taxpayer_id {
            push(oid::ORGANIZATION_IDENTIFIER, utf8(id)?)?;
        }
        let der = rdns.to_der().map_err(|_| CertError::Subject)?;
        Name::from_der(&der).map_err(|_| CertError::Subject)
    }

    /// Reads the subject back from an X.509 name.
    ///
    /// # Errors
    /// [`CertError::Subject`] when the name lacks the role or common name.
    pub fn from_name(name: &Name) -> Result<Self, CertError> {
        let text = |oid: ObjectIdentifier| -> Option<String> {
            name.iter().find(|atv| atv.oid == oid).and_then(|atv| {
                atv.value
                    .decode_as::<Utf8StringRef<'_>>()
                    .ok()
                    .map(|s| s.as_str().to_owned())
            })
        };
        let role = text(ORGANIZATIONAL_UNIT_NAME)
            .and_then(|r| Role::parse(&r))
            .ok_or(CertError::Subject)?;
        let cn = text(COMMON_NAME).ok_or(CertError::Subject)?;
        Ok(Self {
            role,
            name: cn,
            taxpayer_id: text(oid::ORGANIZATION_IDENTIFIER),
        })
    }
}

/// One attribute of a name, for encoding.
#[derive(Sequence, Clone, PartialEq, Eq, der::ValueOrd)]
struct Atv {
    oid: ObjectIdentifier,
    value: der::Any,
}

/// What a certificate is for; sets its extensions. Issuance refuses a profile that does not
/// match the key or the issuing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// A root CA: `basicConstraints CA:TRUE`, `keyCertSign, cRLSign`.
    Root,
    /// A TLS server: P-256, `serverAuth`, the names and addresses it answers on.
    TlsServer {
        /// DNS names.
        dns_names: Vec<String>,
        /// IP addresses.
        ip_addresses: Vec<IpAddr>,
    },
    /// A TLS client: P-256, `clientAuth`.
    TlsClient,
    /// Message signing (签名证书): `digitalSignature, nonRepudiation`.
    Signing,
    /// Message encryption (加密证书): `keyEncipherment, keyAgreement`.
    Encryption,
}

impl Profile {
    /// `root`, `tls-server`, `tls-client`, `signing` or `encryption`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::TlsServer { .. } => "tls-server",
            Self::TlsClient => "tls-client",
            Self::Signing => "signing",
            Self::Encryption => "encryption",
        }
    }

    pub(crate) fn extensions(
        &self,
        subject: &Name,
        spk: spki::SubjectPublicKeyInfoRef<'_>,
        issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
    ) -> Result<Vec<x509_cert::ext::Extension>, der::Error> {
        use x509_cert::ext::ToExtension;
        use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
        let mut exts = Vec::new();
        let ca = matches!(self, Self::Root);
        exts.push(
            BasicConstraints {
                ca,
                path_len_constraint: None,
            }
            .to_extension(subject, &exts)?,
        );
        let usage = match self {
            Self::Root => KeyUsages::KeyCertSign | KeyUsages::CRLSign,
            Self::TlsServer { .. } | Self::TlsClient => KeyUsages::DigitalSignature.into(),
            Self::Signing => KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
            Self::Encryption => KeyUsages::KeyEncipherment | KeyUsages::KeyAgreement,
        };
        exts.push(KeyUsage(usage).to_extension(subject, &exts)?);
        match self {
            Self::TlsServer {
                dns_names,
                ip_addresses,
            } => {
                exts.push(ExtendedKeyUsage(vec![ID_KP_SERVER_AUTH]).to_extension(subject, &exts)?);
                let mut names = Vec::new();
                for d in dns_names {
                    names.push(GeneralName::DnsName(Ia5String::new(d)?));
                }
                for ip in ip_addresses {
                    let bytes = match ip {
                        IpAddr::V4(v4) => v4.octets().to_vec(),
                        IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    names.push(GeneralName::IpAddress(OctetString::new(bytes)?));
                }
                exts.push(SubjectAltName(names).to_extension(subject, &exts)?);
            }
            Self::TlsClient => {
                exts.push(ExtendedKeyUsage(vec![ID_KP_CLIENT_AUTH]).to_extension(subject, &exts)?)
            }
            _ => {}
        }
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = SubjectKeyIdentifier::try_from(issuer_spk)?;
        exts.push(
            AuthorityKeyIdentifier {
                key_identifier: Some(aki.0),
                ..Default::default()
            }
            .to_extension(subject, &exts)?,
        );
        exts.push(ski.to_extension(subject, &exts)?);
        Ok(exts)
    }
}

/// What a certificate may be used for, as checked by path validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Signing messages.
    Signing,
    /// Receiving encrypted messages.
    Encryption,
    /// Serving TLS.
    TlsServer,
    /// TLS client authentication.
    TlsClient,
    /// Issuing certificates and CRLs.
    CertSign,
}

/// Why a certificate could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a DER or PEM X.509 certificate.
    #[error("not an X.509 certificate")]
    Malformed,
    /// A subject without role or common name, or one that cannot be encoded.
    #[error("the subject needs a role (OU) and a name (CN) of 1-64 characters")]
    Subject,
    /// The key does not fit the profile.
    #[error("profile {profile} needs a {expected} key, got {found}")]
    ProfileKeyMismatch {
        /// The profile.
        profile: &'static str,
        /// The key algorithm it needs.
        expected: &'static str,
        /// The key algorithm given.
        found: &'static str,
    },
    /// The CA cannot issue this profile (TLS certificates come from the INTL CA only).
    #[error("a {ca} CA cannot issue {profile} certificates: {reason}")]
    ProfileNotIssuable {
        /// The CA's key algorithm.
        ca: &'static str,
        /// The profile.
        profile: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// An enterprise role without a taxpayer id, or a platform role with one.
    #[error("{role} certificates {requirement}")]
    TaxpayerId {
        /// The role.
        role: Role,
        /// What is required.
        requirement: &'static str,
    },
    /// Encoding or signing failed.
    #[error("the certificate could not be built: {0}")]
    Build(String),
    /// A time outside what X.509 can express.
    #[error("time out of range for X.509")]
    Time,
}

/// A parsed X.509 certificate with its DER (shared: a clone is two reference counts).
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Arc<[u8]>,
    inner: Arc<x509_cert::Certificate>,
}

/// Certificates parsed from DER, by their DER: every invoice and every receipt carries its
/// signer's certificate, and a system sees few signers (a device per enterprise, one tax).
/// At most [`PARSED_KEPT`] (forgotten all together when full).
static PARSED: LazyLock<Mutex<HashMap<Arc<[u8]>, Certificate>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Parsed certificates kept.
const PARSED_KEPT: usize = 256;

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Certificate({}, serial {})",
            self.inner.tbs_certificate().subject(),
            self.serial_hex()
        )
    }
}

impl Certificate {
    /// Parses DER.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let parsed = || PARSED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = parsed().get(der) {
            return Ok(c.clone());
        }
        let inner = x509_cert::Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
        let c = Self {
            der: Arc::from(der),
            inner: Arc::new(inner),
        };
        let mut kept = parsed();
        if kept.len() >= PARSED_KEPT {
            kept.clear();
        }
        kept.insert(Arc::clone(&c.der), c.clone());
        Ok(c)
    }

    /// Parses one PEM certificate.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let inner =
            x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|_| CertError::Malformed)?;
        Self::from_inner(inner)
    }

    /// Parses every certificate of a PEM bundle.
    ///
    /// # Errors
    /// [`CertError::Malformed`].
    pub fn from_pem_chain(pem: &str) -> Result<Vec<Self>, CertError> {
        x509_cert::Certificate::load_pem_chain(pem.as_bytes())
            .map_err(|_| CertError::Malformed)?
            .into_iter()
            .map(Self::from_inner)
            .collect()
    }

    pub(crate) fn from_inner(inner: x509_cert::Certificate) -> Result<Self, CertError> {
        let der = inner.to_der().map_err(|_| CertError::Malformed)?;
        Ok(Self {
            der: der.into(),
            inner: Arc::new(inner),
        })
    }

    /// The DER encoding.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// PEM text.
    ///
    /// # Errors
    /// [`CertError::Malformed`] (never for a parsed certificate).
    pub fn to_pem(&self) -> Result<String, CertError> {
        self.inner
            .to_pem(der::pem::LineEnding::LF)
            .map_err(|_| CertError::Malformed)
    }

    pub(crate) fn inner(&self) -> &x509_cert::Certificate {
        &self.inner
    }

    /// The holder.
    ///
    /// # Errors
    /// [`CertError::Subject`] if the subject is not a Fapiao subject.
    pub fn subject(&self) -> Result<Subject, CertError> {
        Subject::from_name(self.inner.tbs_certificate().subject())
    }

    /// The subject as RFC 4514 text.
    #[must_use]
    pub fn subject_text(&self) -> String {
        self.inner.tbs_certificate().subject().to_string()
    }

    /// The issuer as RFC 4514 text.
    #[must_use]
    pub fn issuer_text(&self) -> String {
        self.inner.tbs_certificate().issuer().to_string()
    }

    pub(crate) fn issuer_name(&self) -> &Name {
        self.inner.tbs_certificate().issuer()
    }

    pub(crate) fn subject_name(&self) -> &Name {
        self.inner.tbs_certificate().subject()
    }

    /// The serial number's bytes.
    #[must_use]
    pub fn serial(&self) -> &[u8] {
        self.inner.tbs_certificate().serial_number().as_bytes()
    }

    /// The serial number in lower-case hex.
    #[must_use]
    pub fn serial_hex(&self) -> String {
        hex(self.serial())
    }

    /// Start of validity.
    #[must_use]
    pub fn not_before(&self) -> OffsetDateTime {
        to_offset(self.inner.tbs_certificate().validity().not_before)
    }

    /// End of validity.
    #[must_use]
    pub fn not_after(&self) -> OffsetDateTime {
        to_offset(self.inner.tbs_certificate().validity().not_after)
    }

    /// The subject public key.
    ///
    /// # Errors
    /// [`crate::CryptoError::UnsupportedKey`] for keys other than SM2 and P-256.
    pub fn public_key(&self) -> Result<PublicKey, crate::CryptoError> {
        PublicKey::from_spki(self.inner.tbs_certificate().subject_public_key_info())
    }

    /// `basicConstraints CA:TRUE`.
    #[must_use]
    pub fn is_ca(&self) -> bool {
        matches!(self.extension::<BasicConstraints>(), Some(bc) if bc.ca)
    }

    /// The key usage bits, if the extension is present.
    #[must_use]
    pub fn key_usage(&self) -> Option<KeyUsage> {
        self.extension::<KeyUsage>()
    }

    /// The extended key usages, if present.
    #[must_use]
    pub fn extended_key_usage(&self) -> Option<Vec<ObjectIdentifier>> {
        self.extension::<ExtendedKeyUsage>().map(|e| e.0)
    }

    /// Whether this certificate's key usage allows `purpose`.
    #[must_use]
    pub fn allows(&self, purpose: Purpose) -> bool {
        let ku = self.key_usage();
        let has = |u: KeyUsages| ku.as_ref().is_some_and(|k| k.0.contains(u));
        let eku = self.extended_key_usage();
        let has_eku = |o: ObjectIdentifier| eku.as_ref().is_some_and(|e| e.contains(&o));
        match purpose {
            Purpose::Signing => {
                has(KeyUsages::DigitalSignature) && has(KeyUsages::NonRepudiation) && eku.is_none()
            }
            Purpose::Encryption => has(KeyUsages::KeyEncipherment) || has(KeyUsages::KeyAgreement),
            Purpose::TlsServer => has(KeyUsages::DigitalSignature) && has_eku(ID_KP_SERVER_AUTH),
            Purpose::TlsClient => has(KeyUsages::DigitalSignature) && has_eku(ID_KP_CLIENT_AUTH),
            Purpose::CertSign => self.is_ca() && has(KeyUsages::KeyCertSign),
        }
    }

    /// The signature algorithm OID and the signature bytes, and the signed TBS DER.
    pub(crate) fn signed_parts(&self) -> Result<(ObjectIdentifier, Vec<u8>, Vec<u8>), CertError> {
        let tbs = self
            .inner
            .tbs_certificate()
            .to_der()
            .map_err(|_| CertError::Malformed)?;
        let sig = self
            .inner
            .signature()
            .as_bytes()
            .ok_or(CertError::Malformed)?
            .to_vec();
        Ok((self.inner.signature_algorithm().oid, sig, tbs))
    }

    fn extension<T: for<'a> Decode<'a> + const_oid::AssociatedOid>(&self) -> Option<T> {
        self.inner
            .tbs_certificate()
            .get_extension::<T>()
            .ok()
            .flatten()
            .map(|(_, e)| e)
    }

    /// A multi-line human-readable description (for `fapiao pki show`).
    #[must_use]
    pub fn describe(&self) -> String {
        let fmt_time = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        let key = self.public_key().map_or("unsupported".to_owned(), |k| {
            k.algorithm().name().to_owned()
        });
        let sig_alg = match self.inner.signature_algorithm().oid {
            o if o == oid::SM2_WITH_SM3 => "SM2-with-SM3".to_owned(),
            o if o == oid::ECDSA_WITH_SHA256 => "ecdsa-with-SHA256".to_owned(),
            o => o.to_string(),
        };
        let mut uses = Vec::new();
        if let Some(ku) = self.key_usage() {
            for (flag, name) in [
                (KeyUsages::DigitalSignature, "digitalSignature"),
                (KeyUsages::NonRepudiation, "nonRepudiation"),
                (KeyUsages::KeyEncipherment, "keyEncipherment"),
                (KeyUsages::KeyAgreement, "keyAgreement"),
                (KeyUsages::KeyCertSign, "keyCertSign"),
                (KeyUsages::CRLSign, "cRLSign"),
            ] {
                if ku.0.contains(flag) {
                    uses.push(name.to_owned());
                }
            }
        }
        for o in self.extended_key_usage().unwrap_or_default() {
            uses.push(if o == ID_KP_SERVER_AUTH {
                "serverAuth".to_owned()
            } else if o == ID_KP_CLIENT_AUTH {
                "clientAuth".to_owned()
            } else {
                o.to_string()
            });
        }
        let subject = self.subject().map_or(String::new(), |s| {
            format!(
                "\nrole:        {}\nname:        {}{}",
                s.role,
                s.name,
                s.taxpayer_id
                    .map(|t| format!("\ntaxpayer id: {t}"))
                    .unwrap_or_default()
            )
        });
        format!(
            "subject:     {}{subject}\nissuer:      {}\nserial:      {}\nvalid:       {} .. {}\nkey:         {key}\nsignature:   {sig_alg}\nCA:          {}\nusage:       {}\n",
            self.subject_text(),
            self.issuer_text(),
            self.serial_hex(),
            fmt_time(self.not_before()),
            fmt_time(self.not_after()),
            if self.is_ca() { "yes" } else { "no" },
            uses.join(", "),
        )
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub(crate) fn to_offset(t: x509_cert::time::Time) -> OffsetDateTime {
    let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn to_x509_time(t: OffsetDateTime) -> Result<x509_cert::time::Time, CertError> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| CertError::Time)?;
    let dt = der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map_err(|_| CertError::Time)?;
    Ok(x509_cert::time::Time::from(dt))
}
