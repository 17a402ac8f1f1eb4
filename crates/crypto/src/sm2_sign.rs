//! SM2 signing (GB/T 32918.2-2016 §6.1, with [`SM2_DISTID`](crate::keys::SM2_DISTID)) with what does not change
//! between a key's signatures computed once.
//!
//! The nonce is RFC 6979's with SM3 over the key and the digest, **hedged** with 32 bytes of
//! fresh randomness as the additional data of RFC 6979 §3.6: a broken RNG leaves it as safe
//! as the deterministic nonce, and a fault injected into one signing cannot be replayed
//! against the same nonce. With no added data it is the `sm2` crate's signature, byte for
//! byte (tested), with the same constant-time `[k]G` from the crate's precomputed generator
//! table. What differs is that `(1 + d)⁻¹` — a constant-time scalar inversion, about a fifth
//! of a signature's time — and the key's `Z` digest are computed when the key is loaded rather
//! than at every signature. And where the crate gives up on the rare nonce that makes `r = 0`,
//! `r + k = n` or `s = 0`, this takes the generator's next nonce, as the standard's step A3
//! says. Every signature is verified before it leaves ([`crate::PrivateKey::sign`]).

use sm2::elliptic_curve::ff::PrimeField as _;
use sm2::elliptic_curve::ops::Reduce as _;
use sm2::elliptic_curve::point::AffineCoordinates as _;
use sm2::elliptic_curve::sec1::ToSec1Point as _;
use sm2::elliptic_curve::subtle::ConstantTimeEq as _;
use sm2::elliptic_curve::{Curve as _, Group as _};
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar, SecretKey, Sm2, U256};
use sm3::{Digest as _, Sm3};
use zeroize::Zeroize as _;

/// A key ready to sign with.
#[derive(Clone)]
pub(crate) struct Signer {
    d: NonZeroScalar,
    /// `(1 + d)⁻¹`.
    inverse: Scalar,
    /// `Z` of the key's public point and [`SM2_DISTID`](crate::keys::SM2_DISTID).
    z: [u8; 32],
    /// The public key, to verify each signature with before it leaves.
    public: sm2::PublicKey,
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.d.zeroize();
        self.inverse.zeroize();
    }
}

impl Signer {
    /// `None` for the one secret without a signer: `d = n − 1`, where `1 + d` has no inverse
    /// (a generated key is never that; the standard excludes it).
    pub(crate) fn new(secret: &SecretKey) -> Option<Self> {
        let d = secret.to_nonzero_scalar();
        let inverse = Option::<Scalar>::from((*d + Scalar::ONE).invert())?;
        let point = secret.public_key().to_sec1_point(false);
        Some(Self {
            d,
            inverse,
            z: crate::sm2_verify::z_digest(point.as_bytes()),
            public: secret.public_key(),
        })
    }

    /// The public key.
    pub(crate) fn public(&self) -> &sm2::PublicKey {
        &self.public
    }

    /// This signer with `(1 + d)⁻¹` off by one: what a fault injected into the computation of
    /// `s` produces, for testing the check after signing.
    #[cfg(test)]
    pub(crate) fn faulty(&self) -> Self {
        let mut f = self.clone();
        f.inverse += Scalar::ONE;
        f
    }

    /// Signs `message`: `e = SM3(Z ‖ M)`, then `(r, s)`, the nonce hedged with `added`
    /// (RFC 6979 §3.6 additional data; empty: the deterministic nonce).
    pub(crate) fn sign(&self, message: &[u8], added: &[u8]) -> sm2::dsa::Signature {
        let digest = Sm3::new()
            .chain_update(self.z)
            .chain_update(message)
            .finalize();
        let e = Scalar::reduce(&digest);
        let mut nonces = rfc6979::KGenerator::<Sm3, U256>::new(
            &self.d.to_repr(),
            &e.to_bytes(),
            added,
            &Sm2::ORDER,
        );
        loop {
            let mut k_bytes = FieldBytes::default();
            nonces.fill_next_k(&mut k_bytes);
            let k = Option::<Scalar>::from(Scalar::from_repr(k_bytes));
            k_bytes.zeroize();
            // The generator hands out only values in [1, n − 1].
            let Some(mut k) = k else {
                continue;
            };
            let x1 = ProjectivePoint::mul_by_generator(&k).to_affine().x();
            let r = e + Scalar::reduce(&x1);
            let s = self.inverse * (k - r * *self.d);
            let unusable = r.is_zero() | (r + k).ct_eq(&Scalar::ZERO) | s.is_zero();
            k.zeroize();
            if bool::from(unusable) {
                continue;
            }
            if let Ok(signature) = sm2::dsa::Signature::from_scalars(r, s) {
                return signature;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SM2_DISTID;
    use sm2::dsa::signature::Signer as _;
    use sm2::elliptic_curve::Generate as _;

    /// The same signatures as the `sm2` crate's signer, byte for byte, for fresh keys and
    /// messages of every size up to a few kilobytes, and they verify.
    #[test]
    fn signatures_are_the_sm2_crates() {
        let mut rng = crate::rng::system_rng();
        for i in 0..64_usize {
            let secret = SecretKey::generate_from_rng(&mut rng);
            let ours = Signer::new(&secret).unwrap();
            let theirs = sm2::dsa::SigningKey::new(SM2_DISTID, &secret).unwrap();
            let message: Vec<u8> = (0..i * 61).map(|j| (i * 7 + j).to_le_bytes()[0]).collect();
            let signature = ours.sign(&message, &[]);
            let expected: sm2::dsa::Signature = theirs.try_sign(&message).unwrap();
            assert_eq!(signature.to_bytes(), expected.to_bytes(), "key {i}");
            assert!(crate::sm2_verify::verify(
                &secret.public_key(),
                &message,
                &signature
            ));
            assert!(!crate::sm2_verify::verify(
                &secret.public_key(),
                &[&message[..], b"x"].concat(),
                &signature
            ));
        }
    }

    /// Hedged nonces: each signature of the same message differs, and each verifies.
    #[test]
    fn hedged_signatures_differ_and_verify() {
        let mut rng = crate::rng::system_rng();
        let secret = SecretKey::generate_from_rng(&mut rng);
        let signer = Signer::new(&secret).unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..16_u8 {
            let added = [i; 32];
            let signature = signer.sign(b"invoice", &added);
            assert!(crate::sm2_verify::verify(
                signer.public(),
                b"invoice",
                &signature
            ));
            assert!(seen.insert(signature.to_bytes().to_vec()));
        }
        assert_eq!(
            signer.sign(b"invoice", &[1; 32]),
            signer.sign(b"invoice", &[1; 32]),
            "the same added data, the same nonce"
        );
    }

    /// `d = n − 1` has no signer; `d = n − 2` does.
    #[test]
    fn the_one_secret_without_an_inverse_has_no_signer() {
        let minus_one = -Scalar::ONE;
        let secret = SecretKey::from_bytes(&minus_one.to_bytes()).unwrap();
        assert!(Signer::new(&secret).is_none());
        let secret = SecretKey::from_bytes(&(minus_one - Scalar::ONE).to_bytes()).unwrap();
        assert!(Signer::new(&secret).is_some());
    }
}
