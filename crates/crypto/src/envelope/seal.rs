//! Sealing: sign the message (CMS `SignedData`), then encrypt it to the recipient
//! (`AuthEnvelopedData`).

use super::*;

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
pub(super) fn encrypt_to<R: CryptoRng>(
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

/// Builds the `ContentInfo(SignedData)` DER over the message.
pub(super) fn sign_content(
    me: &LocalParty,
    message: &Message,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
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
