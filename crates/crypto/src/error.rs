//! The crate's error types.

/// Failures of keys and primitive operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A suite name other than `gm` or `intl`.
    #[error("unknown suite `{name}`: use gm or intl")]
    UnknownSuite {
        /// The name given.
        name: String,
    },
    /// A key of another algorithm or curve than SM2 and P-256.
    #[error("unsupported key: only SM2 and P-256 EC keys are used")]
    UnsupportedKey,
    /// A key that could not be encoded.
    #[error("the key could not be encoded")]
    KeyEncoding,
    /// An encrypted key that could not be opened (wrong passphrase or damaged).
    #[error("the private key could not be decrypted: wrong passphrase or damaged file")]
    KeyDecryption,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
    /// A signature that does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// A key of the wrong algorithm for the operation.
    #[error("expected a {expected} key, found {found}")]
    WrongKeyAlgorithm {
        /// Algorithm needed.
        expected: &'static str,
        /// Algorithm given.
        found: &'static str,
    },
}
