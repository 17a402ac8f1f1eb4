//! Opening: decrypt, verify the signature and the signer's path, then the header's checks in
//! the module's order.

use super::*;

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
pub(super) fn decrypt_envelope(
    me: &LocalParty,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
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
