//! The primitive operations envelopes are made of, exposed so that tests and integrators can
//! check each layer against independent implementations (OpenSSL, gmssl): digests, SM4/AES-CBC,
//! SM2 public-key encryption (GM/T 0009 DER ciphertext), ECDH key agreement with the X9.63 KDF
//! and AES key wrap (RFC 5753 / RFC 3394).

use aes::cipher::KeyInit;
use rand_core::CryptoRng;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::keys::{PrivateKey, PublicKey};

/// A primitive failed. Deliberately without detail: after decryption every failure looks the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cryptographic operation failed")]
pub struct PrimitiveError;

/// SM3 (GB/T 32905).
#[must_use]
pub fn sm3(data: &[u8]) -> [u8; 32] {
    sm3::Sm3::digest(data).into()
}

/// SHA-256.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// SM2 public-key encryption (GB/T 32918.4-2016 §6.1), GM/T 0009 ASN.1 ciphertext (what
/// `openssl pkeyutl -encrypt` produces for SM2 keys): `[k]G` from the generator's
/// constant-time table, `[k]P` in constant time, nothing else (the `sm2` crate's encryptor
/// also multiplies `P` by the cofactor, which is 1 on this curve, at the cost of a third
/// scalar multiplication).
///
/// # Errors
/// [`PrimitiveError`] for a key that is not SM2 or an empty message.
pub fn sm2_encrypt<R: CryptoRng>(
    key: &PublicKey,
    message: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, PrimitiveError> {
    let PublicKey::Sm2(pk) = key else {
        return Err(PrimitiveError);
    };
    loop {
        use sm2::elliptic_curve::Generate as _;
        let k = sm2::NonZeroScalar::try_generate_from_rng(rng).map_err(|_| PrimitiveError)?;
        if let Some(ct) = crate::sm2_pke::encrypt_with(pk, &k, message)? {
            return Ok(ct);
        }
    }
}

/// SM2 decryption (GB/T 32918.4-2016 §7.1) of a GM/T 0009 ASN.1 ciphertext: one
/// constant-time scalar multiplication `[d]C1`.
///
/// # Errors
/// [`PrimitiveError`] for a key that is not SM2 or a ciphertext that does not decrypt.
pub fn sm2_decrypt(
    key: &PrivateKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
    let sk = key.sm2().ok_or(PrimitiveError)?;
    crate::sm2_pke::decrypt(sk, ciphertext)
}

/// The hash of the X9.63 KDF in an ECDH key-agreement scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfHash {
    /// `dhSinglePass-stdDH-sha256kdf-scheme` (what we send).
    Sha256,
    /// `dhSinglePass-stdDH-sha1kdf-scheme` (OpenSSL 3.0's default; accepted).
    Sha1,
}

/// ECDH(P-256) with a static private key, then the ANSI X9.63 KDF: the key-encryption key of
/// RFC 5753 (`kek_len` bytes). The recipient's side of an envelope.
///
/// # Errors
/// [`PrimitiveError`] for non-P-256 keys.
pub fn ecdh_kek(
    private: &PrivateKey,
    peer: &PublicKey,
    hash: KdfHash,
    shared_info: &[u8],
    kek_len: usize,
) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
    let (Some(sk), PublicKey::P256(pk)) = (private.p256(), peer) else {
        return Err(PrimitiveError);
    };
    let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    x963_kdf(shared.raw_secret_bytes(), hash, shared_info, kek_len)
}

/// ECDH(P-256) with a fresh ephemeral key from the system RNG, then the ANSI X9.63 KDF: the
/// sender's side of an envelope. Returns the ephemeral public key (uncompressed SEC1 point)
/// and the key-encryption key. The ephemeral key exists only inside this call (`ring`, whose
/// agreement keys cannot be kept or reused).
///
/// # Errors
/// [`PrimitiveError`] for a non-P-256 peer key or a failing RNG.
pub fn ephemeral_ecdh_kek(
    peer: &PublicKey,
    hash: KdfHash,
    shared_info: &[u8],
    kek_len: usize,
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), PrimitiveError> {
    use ring::agreement;
    let PublicKey::P256(pk) = peer else {
        return Err(PrimitiveError);
    };
    let rng = ring::rand::SystemRandom::new();
    let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| PrimitiveError)?;
    let point = ephemeral
        .compute_public_key()
        .map_err(|_| PrimitiveError)?
        .as_ref()
        .to_vec();
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, pk.to_sec1_bytes());
    let kek = agreement::agree_ephemeral(ephemeral, &peer, |shared| {
        x963_kdf(shared, hash, shared_info, kek_len)
    })
    .map_err(|_| PrimitiveError)??;
    Ok((point, kek))
}

/// The ANSI X9.63 KDF over an ECDH shared secret.
fn x963_kdf(
    secret: &[u8],
    hash: KdfHash,
    shared_info: &[u8],
    kek_len: usize,
) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
    let mut kek = Zeroizing::new(vec![0_u8; kek_len]);
    match hash {
        KdfHash::Sha256 => {
            ansi_x963_kdf::derive_key_into::<sha2::Sha256>(secret, shared_info, &mut kek)
        }
        KdfHash::Sha1 => {
            ansi_x963_kdf::derive_key_into::<sha1::Sha1>(secret, shared_info, &mut kek)
        }
    }
    .map_err(|_| PrimitiveError)?;
    Ok(kek)
}

/// AES key wrap (RFC 3394) with a 16- or 32-byte KEK.
///
/// # Errors
/// [`PrimitiveError`] for a bad KEK or key length.
pub fn aes_key_wrap(kek: &[u8], key: &[u8]) -> Result<Vec<u8>, PrimitiveError> {
    let mut out = vec![0_u8; key.len() + 8];
    match kek.len() {
        16 => aes_kw::KwAes128::new_from_slice(kek)
            .map_err(|_| PrimitiveError)?
            .wrap_key(key, &mut out)
            .map_err(|_| PrimitiveError)?,
        32 => aes_kw::KwAes256::new_from_slice(kek)
            .map_err(|_| PrimitiveError)?
            .wrap_key(key, &mut out)
            .map_err(|_| PrimitiveError)?,
        _ => return Err(PrimitiveError),
    };
    Ok(out)
}

/// AES key unwrap (RFC 3394); fails on the integrity check for a wrong KEK.
///
/// # Errors
/// [`PrimitiveError`].
pub fn aes_key_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(PrimitiveError);
    }
    let mut out = Zeroizing::new(vec![0_u8; wrapped.len() - 8]);
    match kek.len() {
        16 => {
            aes_kw::KwAes128::new_from_slice(kek)
                .map_err(|_| PrimitiveError)?
                .unwrap_key(wrapped, &mut out)
                .map_err(|_| PrimitiveError)?;
        }
        32 => {
            aes_kw::KwAes256::new_from_slice(kek)
                .map_err(|_| PrimitiveError)?
                .unwrap_key(wrapped, &mut out)
                .map_err(|_| PrimitiveError)?;
        }
        _ => return Err(PrimitiveError),
    }
    Ok(out)
}
