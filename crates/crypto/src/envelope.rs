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

/// Seals a message: signs it with `me`'s signing key, then encrypts it to the recipient's
/// encryption certificate. `rng` draws the content key, the IV and the SM2 encryption; a P-256
/// signature nonce and the ECDH ephemeral key come from the system RNG (`ring`).
///
/// # Errors
/// [`SealError`].
pub fn seal<R: CryptoRng>(
    me: &LocalParty,
    recipient: &Certificate,
    message: &Message,
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    if message.header.sender != me.identity {
        return Err(SealError::Sender {
            header: message.header.sender.clone(),
            party: me.identity.clone(),
        });
    }
    let signed = sign_content(me, message)?;
    encrypt_to(me.suite, recipient, &signed, rng)
}

/// Builds the enveloped layer around any plaintext.
fn encrypt_to<R: CryptoRng>(
    suite: Suite,
    recipient: &Certificate,
    signed: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, SealError> {
    let recipient_key = recipient
        .public_key()
        .map_err(|_| SealError::Recipient(suite))?;
    if recipient_key.algorithm() != suite.key_algorithm() || !recipient.allows(Purpose::Encryption)
    {
        return Err(SealError::Recipient(suite));
    }
    let ids = SuiteIds::of(suite);
    let aead = AeadAlgorithm::for_suite(suite);
    let mut cek = Zeroizing::new(vec![0_u8; aead.key_len()]);
    let mut nonce = [0_u8; NONCE_LEN];
    rng.fill_bytes(cek.as_mut());
    rng.fill_bytes(&mut nonce);
    let recipient_info = match suite {
        Suite::Gm => {
            let wrapped =
                primitives::sm2_encrypt(&recipient_key, cek.as_ref(), rng).map_err(encoding)?;
            RecipientInfo::Ktri(KeyTransRecipientInfo {
                version: CmsVersion::V0,
                rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(recipient)),
                key_enc_alg: alg(oid::SM2_ENCRYPTION, None),
                enc_key: OctetString::new(wrapped).map_err(encoding)?,
            })
        }
        Suite::Intl => {
            let wrap_alg = alg(oid::AES256_WRAP, None);
            let shared_info = shared_info(&wrap_alg, 256, None)?;
            let (point, kek) =
                primitives::ephemeral_ecdh_kek(&recipient_key, KdfHash::Sha256, &shared_info, 32)
                    .map_err(encoding)?;
            let wrapped = primitives::aes_key_wrap(&kek, cek.as_ref()).map_err(encoding)?;
            RecipientInfo::Kari(KeyAgreeRecipientInfo {
                version: CmsVersion::V3,
                originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
                    algorithm: alg(oid::EC_PUBLIC_KEY, None),
                    public_key: BitString::from_bytes(&point).map_err(encoding)?,
                }),
                ukm: None,
                key_enc_alg: alg(
                    oid::ECDH_SHA256_KDF,
                    Some(Any::encode_from(&wrap_alg).map_err(encoding)?),
                ),
                recipient_enc_keys: vec![RecipientEncryptedKey {
                    rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(
                        recipient,
                    )),
                    enc_key: OctetString::new(wrapped).map_err(encoding)?,
                }],
            })
        }
    };
    // No authenticated attributes: the additional data is empty (RFC 5083 §2.2).
    let mut sealed = AeadKey::new(aead, &cek)
        .map_err(encoding)?
        .seal(&nonce, &[], signed);
    let tag = sealed.split_off(sealed.len() - TAG_LEN);
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec()).map_err(encoding)?,
        icv_len: TAG_LEN_U8,
    };
    let enveloped = AuthEnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(vec![recipient_info]).map_err(encoding)?),
        auth_encrypted_content_info: EncryptedContentInfo {
            content_type: ids.data,
            content_enc_alg: alg(
                content_oid(suite),
                Some(Any::encode_from(&params).map_err(encoding)?),
            ),
            encrypted_content: Some(OctetString::new(sealed).map_err(encoding)?),
        },
        auth_attrs: None,
        mac: OctetString::new(tag).map_err(encoding)?,
        unauth_attrs: None,
    };
    ContentInfo {
        content_type: oid::AUTH_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
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

/// Remembers message ids for the freshness window, so a replay is refused. Persistent stores
/// implement it for multi-process deployments.
pub trait ReplayGuard: Send + Sync {
    /// Records `(sender, message_id)` until `expires`; returns `Ok(false)` if it was already
    /// recorded and has not expired.
    ///
    /// # Errors
    /// A description of a storage failure.
    fn check_and_remember(
        &self,
        sender: &str,
        message_id: &str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, String>;
}

/// An in-memory [`ReplayGuard`], pruned as entries expire.
///
/// Expired entries are swept when the map has doubled since the last sweep, or a minute
/// after it ([`Self::SWEEP_EVERY`]), once it holds at least [`Self::SWEEP_FLOOR`] entries: a
/// check costs amortized O(1) however many ids are live in the window, and the map holds at
/// most the live ones and a minute's more, never more than about twice the live ones — so
/// its size settles as soon as the window has filled. An id is held as
/// 128 bits of SHA-256 over its sender and message id (32 bytes an entry with its expiry, no
/// allocation), so a busy window of ids costs a few MiB, not tens.
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<[u8; 16], OffsetDateTime>,
    /// Sweep when `ids` reaches this many entries.
    sweep_at: usize,
    /// When the last sweep was.
    swept_at: Option<OffsetDateTime>,
}

/// The first 128 bits of SHA-256 over `sender` (length-prefixed) and `message_id`: two
/// different ids collide with probability 2^-128, and a guard holding 2^32 ids sees a
/// collision with probability 2^-64.
fn id_key(sender: &str, message_id: &str) -> [u8; 16] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(
            u64::try_from(sender.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        )
        .chain_update(sender.as_bytes())
        .chain_update(message_id.as_bytes())
        .finalize();
    let mut key = [0_u8; 16];
    key.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    key
}

impl MemoryReplayGuard {
    /// No sweep below this many entries.
    pub const SWEEP_FLOOR: usize = 4096;

    /// A sweep at the latest this long after the last one (given the floor).
    pub const SWEEP_EVERY: Duration = Duration::minutes(1);

    /// An empty guard.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids it holds (live, or expired and not swept yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.ids.len())
    }

    /// Whether it holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_remember(
        &self,
        sender: &str,
        message_id: &str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, String> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| "replay guard lock poisoned".to_owned())?;
        let due = seen.ids.len() >= seen.sweep_at
            || seen.swept_at.is_none_or(|t| now - t >= Self::SWEEP_EVERY);
        if due && seen.ids.len() >= Self::SWEEP_FLOOR {
            seen.ids.retain(|_, exp| *exp > now);
            seen.sweep_at = 2 * seen.ids.len();
            seen.swept_at = Some(now);
        }
        let key = id_key(sender, message_id);
        match seen.ids.get(&key) {
            Some(exp) if *exp > now => Ok(false),
            _ => {
                seen.ids.insert(key, expires);
                Ok(true)
            }
        }
    }
}

/// What a successfully opened envelope carries.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The verified message.
    pub message: Message,
    /// The sender's signing certificate (path-validated).
    pub signer: Certificate,
    /// The sender as named by its certificate.
    pub signer_subject: Subject,
}

/// Opens envelopes addressed to one party.
pub struct Opener<'a> {
    me: &'a LocalParty,
    trust: &'a TrustStore,
    replay: &'a dyn ReplayGuard,
    freshness: Duration,
    versions: RangeInclusive<u16>,
    peer: Option<&'a str>,
}

impl<'a> Opener<'a> {
    /// Default freshness window, each side of `now`.
    pub const DEFAULT_FRESHNESS: Duration = Duration::minutes(5);

    /// An opener with the default freshness window and protocol version 1 only.
    #[must_use]
    pub fn new(me: &'a LocalParty, trust: &'a TrustStore, replay: &'a dyn ReplayGuard) -> Self {
        Self {
            me,
            trust,
            replay,
            freshness: Self::DEFAULT_FRESHNESS,
            versions: 1..=1,
            peer: None,
        }
    }

    /// Requires the signer to be `identity` (`role:name`), the peer that presented the
    /// envelope (its TLS client certificate), checked before the message id is remembered:
    /// someone else presenting a captured envelope neither gets it handled nor uses up its id.
    #[must_use]
    pub fn presented_by(mut self, identity: &'a str) -> Self {
        self.peer = Some(identity);
        self
    }

    /// Sets the freshness window.
    #[must_use]
    pub fn freshness(mut self, window: Duration) -> Self {
        self.freshness = window;
        self
    }

    /// Sets the supported protocol versions.
    #[must_use]
    pub fn versions(mut self, versions: RangeInclusive<u16>) -> Self {
        self.versions = versions;
        self
    }

    /// Opens and checks an envelope (see the module docs for the order of checks).
    ///
    /// # Errors
    /// [`OpenError`] for the first failed check.
    pub fn open(&self, envelope: &[u8], now: OffsetDateTime) -> Result<Opened, OpenError> {
        let plaintext = decrypt_envelope(self.me, envelope)?;
        let verified = verify_signed(&plaintext, self.me.suite)?;
        let intermediates: Vec<Certificate> = verified
            .certificates
            .iter()
            .filter(|c| *c != &verified.signer)
            .cloned()
            .collect();
        self.trust
            .validate(&verified.signer, &intermediates, Purpose::Signing, now)
            .map_err(OpenError::Certificate)?;
        let message = Message::from_der(&verified.content)?;
        let signer_subject = verified
            .signer
            .subject()
            .map_err(|_| OpenError::BadSignature)?;
        let h = &message.header;
        if h.sender != signer_subject.identity() {
            return Err(OpenError::SenderMismatch {
                header: h.sender.clone(),
                certificate: signer_subject.identity(),
            });
        }
        if h.recipient != self.me.identity {
            return Err(OpenError::WrongRecipient {
                recipient: h.recipient.clone(),
            });
        }
        if !self.versions.contains(&h.protocol_version) {
            return Err(OpenError::UnsupportedVersion {
                version: h.protocol_version,
                supported: format!("{}..={}", self.versions.start(), self.versions.end()),
            });
        }
        if (h.created_at - now).abs() > self.freshness {
            return Err(OpenError::Stale {
                created_at: h.created_at,
                now,
                window_seconds: self.freshness.whole_seconds(),
            });
        }
        if let Some(peer) = self.peer
            && peer != h.sender
        {
            return Err(OpenError::NotFromPeer {
                peer: peer.to_owned(),
                signer: h.sender.clone(),
            });
        }
        let expires = h.created_at + self.freshness;
        match self
            .replay
            .check_and_remember(&h.sender, &h.message_id, expires, now)
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(OpenError::Replayed {
                    sender: h.sender.clone(),
                    message_id: h.message_id.clone(),
                });
            }
            Err(e) => return Err(OpenError::ReplayGuard(e)),
        }
        Ok(Opened {
            message,
            signer: verified.signer,
            signer_subject,
        })
    }
}

/// Parses the outer `ContentInfo(AuthEnvelopedData)` and decrypts it.
fn decrypt_envelope(me: &LocalParty, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let outer = ContentInfo::from_der(envelope).map_err(|_| OpenError::Malformed)?;
    if outer.content_type != oid::AUTH_ENVELOPED_DATA {
        return Err(OpenError::Malformed);
    }
    let env: AuthEnvelopedData = outer
        .content
        .decode_as()
        .map_err(|_| OpenError::Malformed)?;
    decrypt_for(me, &env)
}

/// Checks the enveloped layer's structure, finds our recipient info, recovers the content key
/// and opens the content. From key transport on, every failure is the one
/// [`OpenError::Undecryptable`], checked in constant time by the AEAD.
fn decrypt_for(me: &LocalParty, env: &AuthEnvelopedData) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let ids = SuiteIds::of(me.suite);
    let ours = &issuer_and_serial(&me.encryption_cert);
    let eci = &env.auth_encrypted_content_info;
    if env.version != CmsVersion::V0
        || env.originator_info.is_some()
        || env.auth_attrs.is_some()
        || env.unauth_attrs.is_some()
        || eci.content_type != ids.data
        || eci.content_enc_alg.oid != content_oid(me.suite)
    {
        return Err(OpenError::Malformed);
    }
    let params: GcmParameters = eci
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as().ok())
        .ok_or(OpenError::Malformed)?;
    let nonce: [u8; NONCE_LEN] = params
        .nonce
        .as_bytes()
        .try_into()
        .map_err(|_| OpenError::Malformed)?;
    if params.icv_len != TAG_LEN_U8 || env.mac.as_bytes().len() != TAG_LEN {
        return Err(OpenError::Malformed);
    }
    let ct = eci
        .encrypted_content
        .as_ref()
        .ok_or(OpenError::Malformed)?
        .as_bytes();
    let aead = AeadAlgorithm::for_suite(me.suite);
    let cek = match me.suite {
        Suite::Gm => {
            let ktri = env
                .recip_infos
                .0
                .iter()
                .find_map(|ri| match ri {
                    RecipientInfo::Ktri(k) if matches!(&k.rid, RecipientIdentifier::IssuerAndSerialNumber(i) if i == ours) => Some(k),
                    _ => None,
                })
                .ok_or(OpenError::NotForUs)?;
            if ktri.version != CmsVersion::V0
                || ktri.key_enc_alg.oid != oid::SM2_ENCRYPTION
                || !null_or_absent(ktri.key_enc_alg.parameters.as_ref())
            {
                return Err(OpenError::Malformed);
            }
            primitives::sm2_decrypt(&me.encryption_key, ktri.enc_key.as_bytes())
                .map_err(undecryptable)?
        }
        Suite::Intl => {
            let (kari, rek) = env
                .recip_infos
                .0
                .iter()
                .find_map(|ri| match ri {
                    RecipientInfo::Kari(k) => k
                        .recipient_enc_keys
                        .iter()
                        .find(|r| matches!(&r.rid, KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(i) if i == ours))
                        .map(|r| (k, r)),
                    _ => None,
                })
                .ok_or(OpenError::NotForUs)?;
            let hash = match kari.key_enc_alg.oid {
                o if o == oid::ECDH_SHA256_KDF => KdfHash::Sha256,
                o if o == oid::ECDH_SHA1_KDF => KdfHash::Sha1,
                _ => return Err(OpenError::Malformed),
            };
            let wrap_alg: AlgorithmIdentifierOwned = kari
                .key_enc_alg
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or(OpenError::Malformed)?;
            let (kek_len, kek_bits) = match wrap_alg.oid {
                o if o == oid::AES256_WRAP => (32, 256),
                o if o == oid::AES128_WRAP => (16, 128),
                _ => return Err(OpenError::Malformed),
            };
            let OriginatorIdentifierOrKey::OriginatorKey(orig) = &kari.originator else {
                return Err(OpenError::Malformed);
            };
            if kari.version != CmsVersion::V3
                || orig.algorithm.oid != oid::EC_PUBLIC_KEY
                || !null_or_absent_or_p256(orig.algorithm.parameters.as_ref())
                || !null_or_absent(wrap_alg.parameters.as_ref())
            {
                return Err(OpenError::Malformed);
            }
            let point = orig.public_key.as_bytes().ok_or(OpenError::Malformed)?;
            let eph = p256::PublicKey::from_sec1_bytes(point).map_err(|_| OpenError::Malformed)?;
            let info = shared_info(&wrap_alg, kek_bits, kari.ukm.as_ref())
                .map_err(|_| OpenError::Malformed)?;
            let kek = primitives::ecdh_kek(
                &me.encryption_key,
                &PublicKey::P256(eph),
                hash,
                &info,
                kek_len,
            )
            .map_err(undecryptable)?;
            primitives::aes_key_unwrap(&kek, rek.enc_key.as_bytes()).map_err(undecryptable)?
        }
    };
    if cek.len() != aead.key_len() {
        return Err(OpenError::Undecryptable);
    }
    let key = AeadKey::new(aead, &cek).map_err(undecryptable)?;
    let mut sealed = Vec::with_capacity(ct.len() + TAG_LEN);
    sealed.extend_from_slice(ct);
    sealed.extend_from_slice(env.mac.as_bytes());
    key.open(&nonce, &[], &sealed).map_err(undecryptable)
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

/// Builds the `ContentInfo(SignedData)` DER over the message.
fn sign_content(me: &LocalParty, message: &Message) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let ids = SuiteIds::of(me.suite);
    let content = message.to_der()?;
    let digest = ids.hash(&content);
    let created = to_der_datetime(message.header.created_at).ok_or(SealError::Encoding)?;
    let signing_time = UtcTime::from_date_time(created).map_err(encoding)?;
    let attrs = SetOfVec::try_from(vec![
        attribute(
            oid::ATTR_CONTENT_TYPE,
            Any::encode_from(&ids.data).map_err(encoding)?,
        )?,
        attribute(
            oid::ATTR_SIGNING_TIME,
            Any::encode_from(&signing_time).map_err(encoding)?,
        )?,
        attribute(
            oid::ATTR_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(digest.to_vec()).map_err(encoding)?)
                .map_err(encoding)?,
        )?,
    ])
    .map_err(encoding)?;
    let signature = me
        .signing_key
        .sign(&attrs.to_der().map_err(encoding)?)
        .map_err(|_| SealError::Encoding)?;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(&me.signing_cert)),
        digest_alg: alg(ids.digest, None),
        signed_attrs: Some(attrs),
        signature_algorithm: me.signing_key.algorithm().signature_algorithm(),
        signature: OctetString::new(signature).map_err(encoding)?,
        unsigned_attrs: None,
    };
    let mut certs = vec![CertificateChoices::Certificate(
        me.signing_cert.inner().clone(),
    )];
    certs.extend(
        me.chain
            .iter()
            .map(|c| CertificateChoices::Certificate(c.inner().clone())),
    );
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![alg(ids.digest, None)]).map_err(encoding)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ids.data,
            econtent: Some(
                Any::encode_from(&OctetString::new(content).map_err(encoding)?)
                    .map_err(encoding)?,
            ),
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certs).map_err(encoding)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(encoding)?),
    };
    let info = ContentInfo {
        content_type: ids.signed,
        content: Any::encode_from(&signed).map_err(encoding)?,
    };
    Ok(Zeroizing::new(info.to_der().map_err(encoding)?))
}

struct Verified {
    content: Vec<u8>,
    signer: Certificate,
    certificates: Vec<Certificate>,
}

/// Parses the decrypted `ContentInfo(SignedData)` and checks digest and signature. Any
/// structural problem here counts as a bad signature: the peer learns nothing more.
fn verify_signed(plaintext: &[u8], suite: Suite) -> Result<Verified, OpenError> {
    let ids = SuiteIds::of(suite);
    let info = ContentInfo::from_der(plaintext).map_err(bad_signature)?;
    if info.content_type != ids.signed {
        return Err(OpenError::BadSignature);
    }
    let sd: SignedData = info.content.decode_as().map_err(bad_signature)?;
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .and_then(|e| e.decode_as::<OctetString>().ok())
        .ok_or(OpenError::BadSignature)?
        .into_bytes()
        .into_vec();
    let certificates: Vec<Certificate> = sd
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(c) => Certificate::from_inner(c.clone()).ok(),
                    CertificateChoices::Other(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [si] = sd.signer_infos.0.as_slice() else {
        return Err(OpenError::BadSignature);
    };
    let SignerIdentifier::IssuerAndSerialNumber(sid) = &si.sid else {
        return Err(OpenError::BadSignature);
    };
    let signer = certificates
        .iter()
        .find(|c| issuer_and_serial(c) == *sid)
        .cloned()
        .ok_or(OpenError::BadSignature)?;
    let digest_ok =
        |a: &AlgorithmIdentifierOwned| a.oid == ids.digest && null_or_absent(a.parameters.as_ref());
    if sd.version != CmsVersion::V1
        || si.version != CmsVersion::V1
        || si.unsigned_attrs.is_some()
        || sd.crls.is_some()
        || !sd.digest_algorithms.iter().all(digest_ok)
        || !digest_ok(&si.digest_alg)
        || !null_or_absent(si.signature_algorithm.parameters.as_ref())
    {
        return Err(OpenError::BadSignature);
    }
    let attrs = si.signed_attrs.as_ref().ok_or(OpenError::BadSignature)?;
    let digest_attr = attrs
        .iter()
        .find(|a| a.oid == oid::ATTR_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or(OpenError::BadSignature)?;
    let type_attr = attrs
        .iter()
        .find(|a| a.oid == oid::ATTR_CONTENT_TYPE)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or(OpenError::BadSignature)?;
    if type_attr != sd.encap_content_info.econtent_type {
        return Err(OpenError::BadSignature);
    }
    use subtle::ConstantTimeEq;
    if !bool::from(digest_attr.as_bytes().ct_eq(&ids.hash(&content))) {
        return Err(OpenError::BadSignature);
    }
    let key = signer.public_key().map_err(|_| OpenError::BadSignature)?;
    let expected_sig_alg = match (key.algorithm(), suite) {
        (KeyAlgorithm::Sm2, Suite::Gm) => [oid::SM2_WITH_SM3, oid::SM2_WITH_SM3],
        (KeyAlgorithm::P256, Suite::Intl) => [oid::ECDSA_WITH_SHA256, oid::EC_PUBLIC_KEY],
        _ => return Err(OpenError::BadSignature),
    };
    if !expected_sig_alg.contains(&si.signature_algorithm.oid) {
        return Err(OpenError::BadSignature);
    }
    key.verify(
        &attrs.to_der().map_err(bad_signature)?,
        si.signature.as_bytes(),
    )
    .map_err(|_| OpenError::BadSignature)?;
    Ok(Verified {
        content,
        signer,
        certificates,
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
