//! Authenticated encryption of stored values: SM4-GCM (GB/T 32907 with the GCM mode of
//! NIST SP 800-38D, as RFC 8998 uses it) for the national suite and AES-256-GCM for the
//! international one. 96-bit nonces, 128-bit tags appended to the ciphertext.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{AesGcm, Nonce};
use zeroize::Zeroizing;

use crate::keys::Suite;
use crate::primitives::PrimitiveError;

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes.
pub const TAG_LEN: usize = 16;

type Sm4Gcm = AesGcm<sm4::Sm4, U12>;
type Aes256Gcm = AesGcm<aes::Aes256, U12>;

/// An AEAD algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AeadAlgorithm {
    /// SM4-GCM, 128-bit key.
    Sm4Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl AeadAlgorithm {
    /// The algorithm a suite stores its data with.
    #[must_use]
    pub const fn for_suite(suite: Suite) -> Self {
        match suite {
            Suite::Gm => Self::Sm4Gcm,
            Suite::Intl => Self::Aes256Gcm,
        }
    }

    /// Key length in bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Self::Sm4Gcm => 16,
            Self::Aes256Gcm => 32,
        }
    }

    /// The stable name stored next to wrapped keys: `sm4-gcm` or `aes-256-gcm`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sm4Gcm => "sm4-gcm",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Parses [`Self::name`].
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sm4-gcm" => Some(Self::Sm4Gcm),
            "aes-256-gcm" => Some(Self::Aes256Gcm),
            _ => None,
        }
    }
}

/// A key bound to its algorithm, ready to seal and open.
#[derive(Clone)]
pub struct AeadKey {
    algorithm: AeadAlgorithm,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AeadKey({})", self.algorithm.name())
    }
}

impl AeadKey {
    /// Wraps raw key bytes.
    ///
    /// # Errors
    /// [`PrimitiveError`] when the length is not the algorithm's.
    pub fn new(algorithm: AeadAlgorithm, key: &[u8]) -> Result<Self, PrimitiveError> {
        if key.len() != algorithm.key_len() {
            return Err(PrimitiveError);
        }
        Ok(Self {
            algorithm,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The algorithm.
    #[must_use]
    pub const fn algorithm(&self) -> AeadAlgorithm {
        self.algorithm
    }

    /// The raw key (to wrap it under another key).
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.key
    }

    /// Encrypts `plaintext` under `nonce` with `aad` authenticated: ciphertext ‖ tag.
    /// A nonce must never repeat under one key; callers draw it at random.
    #[must_use]
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        let nonce = Nonce::<U12>::from(*nonce);
        // GCM refuses only messages above 2^36 bytes; stored values are far below that.
        let sealed = match self.algorithm {
            AeadAlgorithm::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| aes_gcm::Error)
                .and_then(|c| c.encrypt_in_place(&nonce, aad, &mut buf)),
            AeadAlgorithm::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| aes_gcm::Error)
                .and_then(|c| c.encrypt_in_place(&nonce, aad, &mut buf)),
        };
        debug_assert!(sealed.is_ok(), "key length checked in new");
        buf
    }

    /// Decrypts ciphertext ‖ tag.
    ///
    /// # Errors
    /// [`PrimitiveError`] when the tag does not verify (wrong key, nonce, aad, or altered
    /// bytes).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
        let mut buf = Zeroizing::new(sealed.to_vec());
        let nonce = Nonce::<U12>::from(*nonce);
        match self.algorithm {
            AeadAlgorithm::Sm4Gcm => Sm4Gcm::new_from_slice(&self.key)
                .map_err(|_| PrimitiveError)?
                .decrypt_in_place(&nonce, aad, &mut *buf),
            AeadAlgorithm::Aes256Gcm => Aes256Gcm::new_from_slice(&self.key)
                .map_err(|_| PrimitiveError)?
                .decrypt_in_place(&nonce, aad, &mut *buf),
        }
        .map_err(|_| PrimitiveError)?;
        Ok(buf)
    }
}
