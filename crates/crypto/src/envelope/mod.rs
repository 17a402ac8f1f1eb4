//! Envelopes: every message between roles is signed by its sender and then encrypted to its
//! recipient (patent paragraphs 0007 and 0026).
//!
//! # Format
//! The signed content is the DER of
//! ```text
//! FapiaoMessage ::= SEQUENCE {
//!   version      INTEGER (0..65535),   -- protocol version
//!   sender       UTF8String,           -- role:name of the signer, as in its certificate
//!   recipient    UTF8String,           -- role:name of the addressee
//!   messageType  UTF8String,
//!   messageId    UTF8String,           -- unique per sender
//!   createdAt    GeneralizedTime,
//!   payload      OCTET STRING }
//! ```
//! wrapped in CMS (RFC 5652) `SignedData` (attached, signer certificate included, signed
//! attributes contentType, signingTime and messageDigest), whose `ContentInfo` DER is the
//! plaintext of an `AuthEnvelopedData` (RFC 5083): authenticated encryption, so a changed
//! byte anywhere in the ciphertext fails one tag check before anything of the plaintext is
//! looked at.
//! - **INTL**: ECDSA P-256/SHA-256; one `KeyAgreeRecipientInfo` (ephemeral-static ECDH P-256,
//!   `dhSinglePass-stdDH-sha256kdf-scheme`, `id-aes256-wrap`, RFC 5753) and AES-256-GCM content
//!   (RFC 5084: 12-byte nonce, 16-byte tag). `openssl cms -decrypt` then `openssl cms -verify`
//!   read it; we read what `openssl cms -sign | openssl cms -encrypt -aes-256-gcm` writes (SHA-1
//!   or SHA-256 KDF).
//! - **GM**: the signed layer with the GM/T 0010 content types (`1.2.156.10197.6.1.4.2.x`), SM3
//!   digest, SM2 signature (distinguishing ID `1234567812345678`); one `KeyTransRecipientInfo`
//!   carrying the SM4 key encrypted with SM2 (GM/T 0009 ciphertext), SM4-GCM content
//!   (`1.2.156.10197.1.104.8`, the same parameters).
//!
//! # Opening
//! Checks run in order, each with its own [`OpenError`]: well-formed; addressed to our
//! encryption certificate; decrypts; signature valid; signer certificate path valid for
//! signing (root, validity, usage, CRL); sender matches the certificate; recipient is us;
//! protocol version supported; created within the freshness window; message id not seen before.
//! Whatever fails after key transport is reported to peers as one code
//! ([`OpenError::peer_code`]) and counted under one label ([`OpenError::reason`]).

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use cms::authenveloped_data::AuthEnvelopedData;
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo,
    KeyTransRecipientInfo, OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey,
    RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier, OctetString, SetOfVec, UtcTime};
use der::{Any, Decode, Encode, Sequence, Tagged};
use rand_core::CryptoRng;
use spki::AlgorithmIdentifierOwned;
use time::{Duration, OffsetDateTime};
use x509_cert::attr::Attribute;
use zeroize::Zeroizing;

use crate::aead::{AeadAlgorithm, AeadKey, NONCE_LEN, TAG_LEN};
use crate::cert::{Certificate, Purpose, Subject};
use crate::keys::{KeyAlgorithm, PrivateKey, PublicKey, Suite};
use crate::oid;
use crate::path::{PathError, TrustStore};
use crate::primitives::{self, KdfHash};

mod open;
mod replay;
mod seal;

pub use open::*;
pub use replay::*;
pub use seal::*;

/// What every envelope says about itself, inside the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the payload.
    pub protocol_version: u16,
    /// `role:name` of the sender; must match its signing certificate.
    pub sender: String,
    /// `role:name` of the recipient.
    pub recipient: String,
    /// What the payload is, e.g. `order.issue`.
    pub message_type: String,
    /// Unique per sender; replays are refused.
    pub message_id: String,
    /// When the sender made it (whole seconds).
    pub created_at: OffsetDateTime,
}

/// A message: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

#[derive(Sequence)]
struct MessageAsn1 {
    version: u16,
    sender: String,
    recipient: String,
    message_type: String,
    message_id: String,
    created_at: GeneralizedTime,
    payload: OctetString,
}

impl Message {
    /// The signed-content DER (the `FapiaoMessage` above).
    ///
    /// # Errors
    /// [`SealError::Encoding`] for a time outside GeneralizedTime.
    pub fn to_der(&self) -> Result<Vec<u8>, SealError> {
        let h = &self.header;
        let created = to_der_datetime(h.created_at).ok_or(SealError::Encoding)?;
        MessageAsn1 {
            version: h.protocol_version,
            sender: h.sender.clone(),
            recipient: h.recipient.clone(),
            message_type: h.message_type.clone(),
            message_id: h.message_id.clone(),
            created_at: GeneralizedTime::from_date_time(created),
            payload: OctetString::new(self.payload.clone()).map_err(|_| SealError::Encoding)?,
        }
        .to_der()
        .map_err(|_| SealError::Encoding)
    }

    /// Parses the signed-content DER.
    ///
    /// # Errors
    /// [`OpenError::Malformed`].
    pub fn from_der(der: &[u8]) -> Result<Self, OpenError> {
        let m = MessageAsn1::from_der(der).map_err(|_| OpenError::Malformed)?;
        let secs = i64::try_from(m.created_at.to_unix_duration().as_secs())
            .map_err(|_| OpenError::Malformed)?;
        Ok(Self {
            header: Header {
                protocol_version: m.version,
                sender: m.sender,
                recipient: m.recipient,
                message_type: m.message_type,
                message_id: m.message_id,
                created_at: OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|_| OpenError::Malformed)?,
            },
            payload: m.payload.into_bytes().into_vec(),
        })
    }
}

/// A party's own message-security material: the dual certificates (signing and encryption)
/// with their keys, and any intermediates to send along.
#[derive(Debug, Clone)]
pub struct LocalParty {
    suite: Suite,
    signing_key: PrivateKey,
    signing_cert: Certificate,
    encryption_key: PrivateKey,
    encryption_cert: Certificate,
    chain: Vec<Certificate>,
    identity: String,
}

impl LocalParty {
    /// Assembles a party, checking keys match certificates and the suite.
    ///
    /// # Errors
    /// [`SealError::Party`] naming what does not fit.
    pub fn new(
        suite: Suite,
        signing_key: PrivateKey,
        signing_cert: Certificate,
        encryption_key: PrivateKey,
        encryption_cert: Certificate,
        chain: Vec<Certificate>,
    ) -> Result<Self, SealError> {
        let alg = suite.key_algorithm();
        let fits = |k: &PrivateKey, c: &Certificate| {
            k.algorithm() == alg && c.public_key().is_ok_and(|p| p == k.public_key())
        };
        if !fits(&signing_key, &signing_cert) {
            return Err(SealError::Party(
                "the signing key does not match the signing certificate or suite",
            ));
        }
        if !fits(&encryption_key, &encryption_cert) {
            return Err(SealError::Party(
                "the encryption key does not match the encryption certificate or suite",
            ));
        }
        let s = signing_cert
            .subject()
            .map_err(|_| SealError::Party("the signing certificate has no Fapiao subject"))?;
        let e = encryption_cert
            .subject()
            .map_err(|_| SealError::Party("the encryption certificate has no Fapiao subject"))?;
        if s != e {
            return Err(SealError::Party(
                "signing and encryption certificates name different holders",
            ));
        }
        Ok(Self {
            suite,
            signing_key,
            signing_cert,
            encryption_key,
            encryption_cert,
            chain,
            identity: s.identity(),
        })
    }

    /// The suite.
    #[must_use]
    pub fn suite(&self) -> Suite {
        self.suite
    }
    /// `role:name`, the sender/recipient string of this party.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }
    /// The encryption certificate peers seal to.
    #[must_use]
    pub fn encryption_certificate(&self) -> &Certificate {
        &self.encryption_cert
    }
    /// The signing certificate.
    #[must_use]
    pub fn signing_certificate(&self) -> &Certificate {
        &self.signing_cert
    }
}

/// Why sealing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The local party's material does not fit together.
    #[error("{0}")]
    Party(&'static str),
    /// The recipient certificate's key is not of this suite or not for encryption.
    #[error("the recipient certificate is not a {0} encryption certificate")]
    Recipient(Suite),
    /// The sender in the header is not this party.
    #[error("the header's sender `{header}` is not this party (`{party}`)")]
    Sender {
        /// Sender in the header.
        header: String,
        /// This party's identity.
        party: String,
    },
    /// DER encoding or a primitive failed.
    #[error("the envelope could not be encoded")]
    Encoding,
}

/// `GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen AES-GCM-ICVlen DEFAULT 12 }`
/// (RFC 5084 §3.2; the same for SM4-GCM). Fapiao writes a 12-byte nonce and a 16-byte tag,
/// and opens nothing else.
#[derive(Sequence)]
struct GcmParameters {
    nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

/// The tag length as `GCMParameters` states it.
const TAG_LEN_U8: u8 = 16;

/// The content-encryption algorithm of a suite's envelopes.
fn content_oid(suite: Suite) -> ObjectIdentifier {
    match suite {
        Suite::Gm => oid::SM4_GCM,
        Suite::Intl => oid::AES256_GCM,
    }
}

/// Why an envelope was refused, one variant per check, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a well-formed envelope of our suite.
    #[error("not a well-formed envelope")]
    Malformed,
    /// Encrypted to another certificate than our encryption certificate.
    #[error("the envelope is not addressed to our encryption certificate")]
    NotForUs,
    /// Key transport or the content's authentication failed (deliberately without detail).
    #[error("the envelope could not be decrypted")]
    Undecryptable,
    /// The signature (or the signed digest) does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signer's certificate is not valid for signing now.
    #[error("the signer's certificate is not acceptable: {0}")]
    Certificate(PathError),
    /// The header's sender is not the certificate holder.
    #[error("the header names sender `{header}` but the certificate is `{certificate}`")]
    SenderMismatch {
        /// Sender in the header.
        header: String,
        /// Identity in the signing certificate.
        certificate: String,
    },
    /// The header is addressed to someone else.
    #[error("the message is addressed to `{recipient}`, not to us")]
    WrongRecipient {
        /// Recipient in the header.
        recipient: String,
    },
    /// A protocol version we do not speak.
    #[error("protocol version {version} is not supported (supported: {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        version: u16,
        /// What we support.
        supported: String,
    },
    /// Created outside the freshness window.
    #[error("created at {created_at}, outside the {window_seconds}s window around {now}")]
    Stale {
        /// When it says it was created.
        created_at: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
        /// The window, each side.
        window_seconds: i64,
    },
    /// The message id was already seen within the window.
    #[error("message {message_id} from {sender} was already received")]
    Replayed {
        /// Sender.
        sender: String,
        /// The repeated id.
        message_id: String,
    },
    /// Signed by another party than the peer that presented it ([`Opener::presented_by`]).
    #[error("the envelope is signed by {signer}, not by the peer {peer} that presented it")]
    NotFromPeer {
        /// The presenting peer.
        peer: String,
        /// The signer.
        signer: String,
    },
    /// The replay guard could not be consulted.
    #[error("the replay guard failed: {0}")]
    ReplayGuard(String),
}

impl OpenError {
    /// What a peer is told. Before key transport the reason is harmless to share (the
    /// structure, the addressee); from key transport on, every failure is the same
    /// `envelope_rejected`, so no oracle is offered.
    #[must_use]
    pub fn peer_code(&self) -> &'static str {
        match self {
            Self::Malformed => "envelope_malformed",
            Self::NotForUs => "envelope_not_for_us",
            Self::ReplayGuard(_) => "envelope_unavailable",
            _ => "envelope_rejected",
        }
    }

    /// The label a failure is counted under where others may read it (metrics): one
    /// `rejected` for every failure from key transport on, as [`Self::peer_code`]. The
    /// variant itself is for the role's own log.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotForUs => "not_for_us",
            Self::ReplayGuard(_) => "replay_guard",
            _ => "rejected",
        }
    }
}

/// Content types and algorithms of a suite.
struct SuiteIds {
    data: ObjectIdentifier,
    signed: ObjectIdentifier,
    digest: ObjectIdentifier,
}

impl SuiteIds {
    fn of(suite: Suite) -> Self {
        match suite {
            Suite::Gm => Self {
                data: oid::GM_DATA,
                signed: oid::GM_SIGNED_DATA,
                digest: oid::SM3,
            },
            Suite::Intl => Self {
                data: oid::DATA,
                signed: oid::SIGNED_DATA,
                digest: oid::SHA256,
            },
        }
    }

    fn hash(&self, data: &[u8]) -> [u8; 32] {
        if self.digest == oid::SM3 {
            primitives::sm3(data)
        } else {
            primitives::sha256(data)
        }
    }
}

fn alg(oid: ObjectIdentifier, parameters: Option<Any>) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters }
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.issuer_name().clone(),
        serial_number: cert.inner().tbs_certificate().serial_number().clone(),
    }
}

/// RFC 5753 `ECC-CMS-SharedInfo`.
#[derive(Sequence)]
struct EccCmsSharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    entity_u_info: Option<OctetString>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// The DER `ECC-CMS-SharedInfo` for the KDF: the wrap algorithm, the sender's user keying
/// material if any, and the KEK length in bits.
fn shared_info(
    wrap: &AlgorithmIdentifierOwned,
    kek_bits: u32,
    ukm: Option<&OctetString>,
) -> Result<Vec<u8>, SealError> {
    EccCmsSharedInfo {
        key_info: wrap.clone(),
        entity_u_info: ukm.cloned(),
        supp_pub_info: OctetString::new(kek_bits.to_be_bytes().to_vec())
            .map_err(|_| SealError::Encoding)?,
    }
    .to_der()
    .map_err(|_| SealError::Encoding)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, SealError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(|_| SealError::Encoding)?,
    })
}

/// Parameters that are absent or an explicit NULL.
fn null_or_absent(p: Option<&Any>) -> bool {
    p.is_none_or(|a| a.tag() == der::Tag::Null && a.value().is_empty())
}

/// The originator key's parameters: absent, NULL or the P-256 curve (OpenSSL writes the curve).
fn null_or_absent_or_p256(p: Option<&Any>) -> bool {
    null_or_absent(p)
        || p.and_then(|a| a.decode_as::<ObjectIdentifier>().ok()) == Some(oid::P256_CURVE)
}

fn encoding<E>(_: E) -> SealError {
    SealError::Encoding
}

fn bad_signature<E>(_: E) -> OpenError {
    OpenError::BadSignature
}

fn undecryptable<E>(_: E) -> OpenError {
    OpenError::Undecryptable
}

fn to_der_datetime(t: OffsetDateTime) -> Option<der::DateTime> {
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)).ok()
}

/// Dangerous single steps of sealing and opening, for integrators building the other side by
/// hand and for tests that check each layer against an independent implementation (e.g.
/// `openssl pkeyutl -decrypt` on the wrapped key). Nothing here checks signatures,
/// certificates, freshness or replay: use [`crate::envelope::seal`] and [`crate::envelope::Opener`] for messages.
pub mod hazmat {
    use rand_core::CryptoRng;
    use zeroize::Zeroizing;

    use super::{
        AuthEnvelopedData, Certificate, ContentInfo, Decode, Encode, LocalParty, Message,
        OctetString, OpenError, RecipientInfo, SealError, SignedData, Suite,
    };

    /// Decrypts the enveloped layer addressed to `me`, returning the signed layer unverified.
    ///
    /// # Errors
    /// [`OpenError::Malformed`], [`OpenError::NotForUs`] or [`OpenError::Undecryptable`].
    pub fn decrypt(me: &LocalParty, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        super::decrypt_envelope(me, envelope)
    }

    /// Encrypts any plaintext (normally a signed layer) to a recipient's encryption certificate.
    ///
    /// # Errors
    /// [`SealError`].
    pub fn encrypt<R: CryptoRng>(
        suite: Suite,
        recipient: &Certificate,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SealError> {
        super::encrypt_to(suite, recipient, plaintext, rng)
    }

    /// Signs a message without checking that its sender is `me`.
    ///
    /// # Errors
    /// [`SealError::Encoding`].
    pub fn sign(me: &LocalParty, message: &Message) -> Result<Zeroizing<Vec<u8>>, SealError> {
        super::sign_content(me, message)
    }

    /// The enveloped layer.
    #[derive(Debug, Clone)]
    pub struct Enveloped {
        /// The content-encryption key as encrypted to the recipient (GM: GM/T 0009 SM2
        /// ciphertext; INTL: the AES-wrapped key).
        pub wrapped_key: Vec<u8>,
        /// The GCM nonce (12 bytes).
        pub nonce: Vec<u8>,
        /// The encrypted content.
        pub ciphertext: Vec<u8>,
        /// The GCM tag (16 bytes).
        pub tag: Vec<u8>,
    }

    /// The signed layer (from the decrypted plaintext).
    #[derive(Debug, Clone)]
    pub struct Signed {
        /// DER of the signed attributes as a SET, the exact bytes the signature covers.
        pub signed_attributes: Vec<u8>,
        /// The DER signature.
        pub signature: Vec<u8>,
        /// The signed content (the `FapiaoMessage` DER).
        pub content: Vec<u8>,
    }

    /// Parses the outer layer.
    #[must_use]
    pub fn enveloped(envelope: &[u8]) -> Option<Enveloped> {
        let env: AuthEnvelopedData = ContentInfo::from_der(envelope)
            .ok()?
            .content
            .decode_as()
            .ok()?;
        let wrapped_key = match env.recip_infos.0.iter().next()? {
            RecipientInfo::Ktri(k) => k.enc_key.as_bytes().to_vec(),
            RecipientInfo::Kari(k) => k.recipient_enc_keys.first()?.enc_key.as_bytes().to_vec(),
            _ => return None,
        };
        let eci = env.auth_encrypted_content_info;
        let params: super::GcmParameters = eci.content_enc_alg.parameters?.decode_as().ok()?;
        Some(Enveloped {
            wrapped_key,
            nonce: params.nonce.into_bytes().into_vec(),
            ciphertext: eci.encrypted_content?.into_bytes().into_vec(),
            tag: env.mac.into_bytes().into_vec(),
        })
    }

    /// Parses the signed layer.
    #[must_use]
    pub fn signed(plaintext: &[u8]) -> Option<Signed> {
        let sd: SignedData = ContentInfo::from_der(plaintext)
            .ok()?
            .content
            .decode_as()
            .ok()?;
        let si = sd.signer_infos.0.iter().next()?;
        Some(Signed {
            signed_attributes: si.signed_attrs.as_ref()?.to_der().ok()?,
            signature: si.signature.as_bytes().to_vec(),
            content: sd
                .encap_content_info
                .econtent?
                .decode_as::<OctetString>()
                .ok()?
                .into_bytes()
                .into_vec(),
        })
    }
}
