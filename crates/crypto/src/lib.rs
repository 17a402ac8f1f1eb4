//! Fapiao's message security: the GM (SM2/SM3/SM4) and INTL (P-256/SHA-256/AES) suites, keys,
//! the CA and its certificates and CRLs, certificate path validation, signed-and-encrypted
//! envelopes with replay protection, and mutual-TLS configurations.
//!
//! Depends on no other Fapiao crate. Time (`now`) and randomness are arguments, with one
//! exception: P-256 signature nonces and ECDH ephemeral keys are drawn by `ring` from the
//! system RNG itself (its RNG trait is sealed). Otherwise the one module that reads the system
//! RNG is [`rng`].

pub mod aead;
mod ca;
mod cert;
mod crl;
pub mod envelope;
mod error;
pub mod hex;
mod keys;
mod live;
pub mod oid;
mod path;
pub mod primitives;
pub mod rng;
mod sm2_pke;
mod sm2_sign;
mod sm2_verify;
pub mod tls;

pub use ca::{Ca, CertificateRequest, Revocation};
pub use cert::{CertError, Certificate, Profile, Purpose, Role, Subject};
pub use crl::Crl;
pub use error::CryptoError;
pub use keys::{KeyAlgorithm, PrivateKey, PublicKey, SM2_DISTID, Suite};
pub use live::LiveTrust;
pub use path::{PathError, SignatureCache, TrustStore};
