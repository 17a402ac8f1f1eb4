//! Suites and keys: [`Suite`] (GM: SM2/SM3/SM4, INTL: P-256/SHA-256/AES), [`PrivateKey`] and
//! [`PublicKey`] over SM2 and P-256, signatures in DER, keys as encrypted PKCS#8.

use std::fmt;
use std::sync::Arc;

use der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::CryptoRng;
use sm2::elliptic_curve::Generate;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::oid;

/// The SM2 distinguishing identifier (GM/T 0009 default), bound into every SM2 signature.
pub const SM2_DISTID: &str = "1234567812345678";

/// PBKDF2 iterations for encrypted private keys (PBKDF2-HMAC-SHA256 + AES-256-CBC, which
/// OpenSSL reads).
const PBKDF2_ITERATIONS: u32 = 200_000;

/// A message-security suite, chosen explicitly and passed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// The national suite: SM2 signatures with SM3, SM2 encryption of an SM4 key, SM4-CBC.
    Gm,
    /// The international suite: ECDSA P-256 with SHA-256, ECDH P-256, AES-256.
    Intl,
}

impl Suite {
    /// Both suites, for tests and benchmarks that run once per suite.
    pub const ALL: [Self; 2] = [Self::Gm, Self::Intl];

    /// Parses `gm` or `intl`.
    ///
    /// # Errors
    /// [`CryptoError::UnknownSuite`].
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        match text {
            "gm" => Ok(Self::Gm),
            "intl" => Ok(Self::Intl),
            other => Err(CryptoError::UnknownSuite {
                name: other.to_owned(),
            }),
        }
    }

    /// `gm` or `intl`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Gm => "gm",
            Self::Intl => "intl",
        }
    }

    /// The key algorithm of this suite's message keys.
    #[must_use]
    pub fn key_algorithm(self) -> KeyAlgorithm {
        match self {
            Self::Gm => KeyAlgorithm::Sm2,
            Self::Intl => KeyAlgorithm::P256,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An elliptic-curve key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// SM2 (GM/T 0003).
    Sm2,
    /// NIST P-256.
    P256,
}

impl KeyAlgorithm {
    /// The signature algorithm identifier for signatures by keys of this algorithm.
    #[must_use]
    pub fn signature_algorithm(self) -> AlgorithmIdentifierOwned {
        let oid = match self {
            Self::Sm2 => oid::SM2_WITH_SM3,
            Self::P256 => oid::ECDSA_WITH_SHA256,
        };
        AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    /// `SM2` or `P-256`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sm2 => "SM2",
            Self::P256 => "P-256",
        }
    }
}

/// A private key. Zeroized on drop; `Debug` shows only the algorithm.
#[derive(Clone)]
pub struct PrivateKey {
    inner: PrivateInner,
}

/// The secret and its ready signer (building a signer derives the public key, a scalar
/// multiplication, so it is done once per key rather than per signature). P-256 signs with
/// `ring` (assembly field arithmetic, about five times faster here than the portable `p256`
/// crate, which keeps the key itself: encoding, ECDH, certificates).
#[derive(Clone)]
enum PrivateInner {
    Sm2(sm2::SecretKey, Box<crate::sm2_sign::Signer>),
    P256(p256::SecretKey, Arc<ring::signature::EcdsaKeyPair>),
}

impl PrivateInner {
    /// `None` for `d = n − 1`, which GB/T 32918.1 excludes (it has no signer).
    fn sm2(secret: sm2::SecretKey) -> Option<Self> {
        let signer = crate::sm2_sign::Signer::new(&secret)?;
        Some(Self::Sm2(secret, Box::new(signer)))
    }

    fn p256(secret: p256::SecretKey) -> Self {
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Zeroizing::new(secret.to_bytes()).as_slice(),
            &secret.public_key().to_sec1_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("a valid P-256 secret key and its own public key make a signer");
        Self::P256(secret, Arc::new(signer))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, ..)", self.algorithm().name())
    }
}

impl PrivateKey {
    /// Generates a fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(algorithm: KeyAlgorithm, rng: &mut R) -> Self {
        let inner = match algorithm {
            KeyAlgorithm::Sm2 => loop {
                if let Some(inner) = PrivateInner::sm2(sm2::SecretKey::generate_from_rng(rng)) {
                    break inner;
                }
            },
            KeyAlgorithm::P256 => PrivateInner::p256(p256::SecretKey::generate_from_rng(rng)),
        };
        Self { inner }
    }

    /// The key's algorithm.
    #[must_use]
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.inner {
            PrivateInner::Sm2(..) => KeyAlgorithm::Sm2,
            PrivateInner::P256(..) => KeyAlgorithm::P256,
        }
    }

    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            PrivateInner::Sm2(k, _) => PublicKey::Sm2(k.public_key()),
            PrivateInner::P256(k, _) => PublicKey::P256(k.public_key()),
        }
    }

    /// Signs a message: SM2 with SM3 and [`SM2_DISTID`], or ECDSA P-256 with SHA-256. The
    /// signature is DER `SEQUENCE { r, s }`, as X.509, CMS and OpenSSL expect. SM2 nonces are
    /// RFC 6979's hedged with 32 fresh random bytes (§3.6); P-256 nonces come from the system
    /// RNG hedged with the key and the message digest (`ring`): a failing RNG reveals no key
    /// either way. Every signature is verified with the public key before it is returned: a
    /// fault while signing (a glitch, a flipped bit) yields an error, never a faulty
    /// signature, which for SM2 and ECDSA can give the key away.
    ///
    /// # Errors
    /// [`CryptoError::Signing`] if the signer fails or its signature does not verify.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.inner {
            PrivateInner::Sm2(_, signer) => {
                let mut added = Zeroizing::new([0_u8; 32]);
                rand_core::Rng::fill_bytes(&mut crate::rng::system_rng(), added.as_mut());
                let signature = signer.sign(message, added.as_ref());
                if !crate::sm2_verify::verify(signer.public(), message, &signature) {
                    return Err(CryptoError::Signing);
                }
                Ok(signature.to_der().to_vec())
            }
            PrivateInner::P256(_, signer) => {
                use ring::signature::KeyPair as _;
                let signature = signer
                    .sign(&ring::rand::SystemRandom::new(), message)
                    .map_err(|_| CryptoError::Signing)?;
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    signer.public_key().as_ref(),
                )
                .verify(message, signature.as_ref())
                .map_err(|_| CryptoError::Signing)?;
                Ok(signature.as_ref().to_vec())
            }
        }
    }

    /// The unencrypted PKCS#8 DER (for handing to rustls in memory). Treat as secret.
    ///
    /// # Errors
    /// [`CryptoError::KeyEncoding`].
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = match &self.inner {
            PrivateInner::Sm2(k, _) => k.to_pkcs8_der(),
            PrivateInner::P256(k, _) => k.to_pkcs8_der(),
        }
        .map_err(|_| CryptoError::KeyEncoding)?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// Writes the key as encrypted PKCS#8 PEM (PBES2: PBKDF2-HMAC-SHA256, AES-256-CBC), which
    /// OpenSSL reads with `-passin`.
    ///
    /// # Errors
    /// [`CryptoError::KeyEncoding`].
    pub fn to_encrypted_pem<R: CryptoRng + ?Sized>(
        &self,
        passphrase: &[u8],
        rng: &mut R,
    ) -> Result<Zeroizing<String>, CryptoError> {
        let mut salt = [0_u8; 16];
        let mut iv = [0_u8; 16];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut iv);
        let params = pkcs8::pkcs5::pbes2::Parameters::generate_pbkdf2_sha256_aes256cbc(
            PBKDF2_ITERATIONS,
            &salt,
            iv,
        )
        .map_err(|_| CryptoError::KeyEncoding)?;
        let der = self.to_pkcs8_der()?;
        let info = pkcs8::PrivateKeyInfoRef::try_from(der.as_slice())
            .map_err(|_| CryptoError::KeyEncoding)?;
        let encrypted = info
            .encrypt_with_params(params, passphrase)
            .map_err(|_| CryptoError::KeyEncoding)?;
        encrypted
            .to_pem("ENCRYPTED PRIVATE KEY", der::pem::LineEnding::LF)
            .map_err(|_| CryptoError::KeyEncoding)
    }

    /// Reads an encrypted PKCS#8 PEM key (SM2 or P-256).
    ///
    /// # Errors
    /// [`CryptoError::KeyDecryption`] for a wrong passphrase or a damaged file,
    /// [`CryptoError::UnsupportedKey`] for another curve.
    pub fn from_encrypted_pem(pem: &str, passphrase: &[u8]) -> Result<Self, CryptoError> {
        let (label, der) =
            der::pem::decode_vec(pem.as_bytes()).map_err(|_| CryptoError::KeyDecryption)?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(CryptoError::KeyDecryption);
        }
        let der = Zeroizing::new(der);
        let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der)
            .map_err(|_| CryptoError::KeyDecryption)?;
        let plain = info
            .decrypt(passphrase)
            .map_err(|_| CryptoError::KeyDecryption)?;
        Self::from_pkcs8_der(plain.as_bytes())
    }

    /// Reads an unencrypted PKCS#8 DER key.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedKey`] for anything but an SM2 or P-256 EC key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let info =
            pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|_| CryptoError::UnsupportedKey)?;
        let curve = info
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .ok_or(CryptoError::UnsupportedKey)?;
        let inner = if curve == oid::SM2_CURVE {
            PrivateInner::sm2(
                sm2::SecretKey::from_pkcs8_der(der).map_err(|_| CryptoError::UnsupportedKey)?,
            )
            .ok_or(CryptoError::UnsupportedKey)?
        } else if curve == oid::P256_CURVE {
            PrivateInner::p256(
                p256::SecretKey::from_pkcs8_der(der).map_err(|_| CryptoError::UnsupportedKey)?,
            )
        } else {
            return Err(CryptoError::UnsupportedKey);
        };
        Ok(Self { inner })
    }

    pub(crate) fn sm2(&self) -> Option<&sm2::SecretKey> {
        match &self.inner {
            PrivateInner::Sm2(k, _) => Some(k),
            PrivateInner::P256(..) => None,
        }
    }

    pub(crate) fn p256(&self) -> Option<&p256::SecretKey> {
        match &self.inner {
            PrivateInner::P256(k, _) => Some(k),
            PrivateInner::Sm2(..) => None,
        }
    }
}

/// A public key (SM2 or P-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// SM2.
    Sm2(sm2::PublicKey),
    /// P-256.
    P256(p256::PublicKey),
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedKey`] for anything but an SM2 or P-256 EC key.
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, CryptoError> {
        if spki.algorithm.oid != oid::EC_PUBLIC_KEY {
            return Err(CryptoError::UnsupportedKey);
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .ok_or(CryptoError::UnsupportedKey)?;
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or(CryptoError::UnsupportedKey)?;
        if curve == oid::SM2_CURVE {
            sm2::PublicKey::from_sec1_bytes(point)
                .map(Self::Sm2)
                .map_err(|_| CryptoError::UnsupportedKey)
        } else if curve == oid::P256_CURVE {
            p256::PublicKey::from_sec1_bytes(point)
                .map(Self::P256)
                .map_err(|_| CryptoError::UnsupportedKey)
        } else {
            Err(CryptoError::UnsupportedKey)
        }
    }

    /// The key as a SubjectPublicKeyInfo (the encoding OpenSSL uses for both curves).
    ///
    /// # Errors
    /// [`CryptoError::KeyEncoding`].
    pub fn to_spki(&self) -> Result<SubjectPublicKeyInfoOwned, CryptoError> {
        match self {
            Self::Sm2(k) => SubjectPublicKeyInfoOwned::from_key(k),
            Self::P256(k) => SubjectPublicKeyInfoOwned::from_key(k),
        }
        .map_err(|_| CryptoError::KeyEncoding)
    }

    /// The SubjectPublicKeyInfo DER.
    ///
    /// # Errors
    /// [`CryptoError::KeyEncoding`].
    pub fn to_spki_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.to_spki()?
            .to_der()
            .map_err(|_| CryptoError::KeyEncoding)
    }

    /// The key's algorithm.
    #[must_use]
    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            Self::Sm2(_) => KeyAlgorithm::Sm2,
            Self::P256(_) => KeyAlgorithm::P256,
        }
    }

    /// Verifies a DER signature made by [`PrivateKey::sign`] (or OpenSSL with the same
    /// algorithm and, for SM2, `distid:1234567812345678`).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, message: &[u8], signature_der: &[u8]) -> Result<(), CryptoError> {
        let ok = match self {
            Self::Sm2(k) => {
                let sig = sm2::dsa::Signature::from_der(signature_der)
                    .map_err(|_| CryptoError::BadSignature)?;
                crate::sm2_verify::verify(k, message, &sig)
            }
            // `ring`: strict DER, r and s in [1, n), the point on the curve.
            Self::P256(k) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                k.to_sec1_bytes(),
            )
            .verify(message, signature_der)
            .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::system_rng;

    /// A fault while signing (here a corrupted `(1 + d)⁻¹`) yields an error, not the faulty
    /// signature, which would reveal `d` to anyone holding it and a good one.
    #[test]
    fn a_fault_while_signing_is_caught_before_the_signature_leaves() {
        let key = PrivateKey::generate(KeyAlgorithm::Sm2, &mut system_rng());
        let PrivateInner::Sm2(secret, signer) = &key.inner else {
            unreachable!("an SM2 key")
        };
        let faulty = PrivateKey {
            inner: PrivateInner::Sm2(secret.clone(), Box::new(signer.faulty())),
        };
        assert_eq!(faulty.sign(b"invoice"), Err(CryptoError::Signing));
        key.public_key()
            .verify(b"invoice", &key.sign(b"invoice").unwrap())
            .unwrap();
    }

    #[test]
    fn sign_then_verify_per_suite_and_a_flipped_bit_fails() {
        for suite in Suite::ALL {
            let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
            let sig = key.sign(b"invoice").unwrap();
            key.public_key().verify(b"invoice", &sig).unwrap();
            assert_eq!(
                key.public_key().verify(b"invoicE", &sig),
                Err(CryptoError::BadSignature)
            );
            let other = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
            assert_eq!(
                other.public_key().verify(b"invoice", &sig),
                Err(CryptoError::BadSignature)
            );
        }
    }

    #[test]
    fn encrypted_pem_round_trips_and_refuses_a_wrong_passphrase() {
        for suite in Suite::ALL {
            let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
            let pem = key
                .to_encrypted_pem(b"correct horse", &mut system_rng())
                .unwrap();
            assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
            let back = PrivateKey::from_encrypted_pem(&pem, b"correct horse").unwrap();
            assert_eq!(back.public_key(), key.public_key());
            assert_eq!(
                PrivateKey::from_encrypted_pem(&pem, b"wrong").unwrap_err(),
                CryptoError::KeyDecryption
            );
        }
    }

    #[test]
    fn spki_round_trips() {
        for suite in Suite::ALL {
            let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng()).public_key();
            let spki = key.to_spki().unwrap();
            assert_eq!(PublicKey::from_spki(&spki).unwrap(), key);
        }
    }
}
