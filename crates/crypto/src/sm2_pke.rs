//! SM2 public-key encryption (GB/T 32918.4-2016) with the GM/T 0009 ASN.1 ciphertext
//! `SEQUENCE { x INTEGER, y INTEGER, hash OCTET STRING, ciphertext OCTET STRING }` (C1, C3,
//! C2). Every multiplication involving a secret (`k`, `d`) is constant-time; the curve's
//! cofactor is 1, so a point on the curve other than the identity is in the group and no
//! `[h]` multiplication is needed.

use der::asn1::{OctetStringRef, UintRef};
use der::{Decode as _, Encode as _};
use sm2::elliptic_curve::Group as _;
use sm2::elliptic_curve::sec1::{FromSec1Point as _, Sec1Point, ToSec1Point as _};
use sm2::{AffinePoint, NonZeroScalar, ProjectivePoint};
use sm3::Digest as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::primitives::PrimitiveError;

/// Coordinate length.
const FIELD: usize = 32;

/// The ciphertext's ASN.1 form.
#[derive(der::Sequence)]
struct Cipher<'a> {
    x: UintRef<'a>,
    y: UintRef<'a>,
    hash: &'a OctetStringRef,
    ciphertext: &'a OctetStringRef,
}

/// `x ‖ y` of an affine point that is not the identity.
fn coordinates(point: &ProjectivePoint) -> Option<Zeroizing<Vec<u8>>> {
    let encoded = point.to_affine().to_sec1_point(false);
    let bytes = encoded.as_bytes();
    (bytes.len() == 1 + 2 * FIELD).then(|| Zeroizing::new(bytes[1..].to_vec()))
}

/// `C2 = M ⊕ KDF(x2 ‖ y2, |M|)` (SM3 counter-mode KDF, GB/T 32918.4 §5.4.3); `None` if the
/// key stream is all zero.
fn mask(shared: &[u8], input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(input.to_vec());
    let mut any = 0_u8;
    for (counter, chunk) in (1_u32..).zip(out.chunks_mut(32)) {
        let block = sm3::Sm3::new()
            .chain_update(shared)
            .chain_update(counter.to_be_bytes())
            .finalize();
        for (byte, key) in chunk.iter_mut().zip(block) {
            any |= key;
            *byte ^= key;
        }
    }
    (any != 0).then_some(out)
}

/// `C3 = SM3(x2 ‖ M ‖ y2)`.
fn check_value(shared: &[u8], message: &[u8]) -> [u8; 32] {
    let (x2, y2) = shared.split_at(FIELD);
    sm3::Sm3::new()
        .chain_update(x2)
        .chain_update(message)
        .chain_update(y2)
        .finalize()
        .into()
}

/// Encrypts with the given `k`; `None` if this `k` gives an all-zero key stream (draw another).
pub(crate) fn encrypt_with(
    key: &sm2::PublicKey,
    k: &NonZeroScalar,
    message: &[u8],
) -> Result<Option<Vec<u8>>, PrimitiveError> {
    if message.is_empty() {
        return Err(PrimitiveError);
    }
    let c1 = coordinates(&ProjectivePoint::mul_by_generator(k)).ok_or(PrimitiveError)?;
    let shared =
        coordinates(&(ProjectivePoint::from(*key.as_affine()) * **k)).ok_or(PrimitiveError)?;
    let Some(c2) = mask(&shared, message) else {
        return Ok(None);
    };
    let c3 = check_value(&shared, message);
    let (x1, y1) = c1.split_at(FIELD);
    let der = |_: der::Error| PrimitiveError;
    Cipher {
        x: UintRef::new(x1).map_err(der)?,
        y: UintRef::new(y1).map_err(der)?,
        hash: OctetStringRef::new(&c3).map_err(der)?,
        ciphertext: OctetStringRef::new(&c2).map_err(der)?,
    }
    .to_der()
    .map(Some)
    .map_err(der)
}

/// Decrypts; every failure (malformed, point off the curve, wrong key, altered) is the same
/// [`PrimitiveError`].
pub(crate) fn decrypt(
    key: &sm2::SecretKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, PrimitiveError> {
    let cipher = Cipher::from_der(ciphertext).map_err(|_| PrimitiveError)?;
    let mut c1 = [0_u8; 1 + 2 * FIELD];
    c1[0] = 0x04;
    for (coordinate, out) in [cipher.x, cipher.y].iter().zip([1, 1 + FIELD]) {
        let bytes = coordinate.as_bytes();
        let at = (out + FIELD)
            .checked_sub(bytes.len())
            .filter(|at| *at >= out)
            .ok_or(PrimitiveError)?;
        c1[at..out + FIELD].copy_from_slice(bytes);
    }
    let c1 = Sec1Point::<sm2::Sm2>::from_bytes(c1).map_err(|_| PrimitiveError)?;
    let c1: AffinePoint = Option::from(AffinePoint::from_sec1_point(&c1)).ok_or(PrimitiveError)?;
    let shared = ProjectivePoint::from(c1) * *key.to_nonzero_scalar();
    if bool::from(shared.is_identity()) {
        return Err(PrimitiveError);
    }
    let shared = coordinates(&shared).ok_or(PrimitiveError)?;
    let message = mask(&shared, cipher.ciphertext.as_bytes()).ok_or(PrimitiveError)?;
    let expected = check_value(&shared, &message);
    if bool::from(expected.ct_eq(cipher.hash.as_bytes())) {
        Ok(message)
    } else {
        Err(PrimitiveError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap().to_vec()
    }

    /// GB/T 32918.5-2017 Annex A.3: with the annex's `k`, exactly the annex's ciphertext
    /// (C1, C3, C2 in GM/T 0009 form); and it decrypts back.
    #[test]
    fn the_encryption_example_of_gb_t_32918_5_annex_a() {
        let secret = sm2::SecretKey::from_slice(&unhex(
            "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8",
        ))
        .unwrap();
        let k = NonZeroScalar::try_from(
            unhex("59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21").as_slice(),
        )
        .unwrap();
        let ct = encrypt_with(&secret.public_key(), &k, b"encryption standard")
            .unwrap()
            .unwrap();
        let expected = unhex(
            "307c 0220 04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73
                  022100 E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0
                  0420 59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766
                  0413 21886CA989CA9C7D58087307CA93092D651EFA",
        );
        assert_eq!(ct, expected);
        assert_eq!(
            decrypt(&secret, &ct).unwrap().as_slice(),
            b"encryption standard"
        );
    }

    /// Round trips at lengths around the KDF's 32-byte blocks; any altered byte, a wrong key
    /// or trailing bytes fail.
    #[test]
    fn round_trips_and_refusals() {
        use sm2::elliptic_curve::Generate as _;
        let mut rng = crate::rng::system_rng();
        let secret = sm2::SecretKey::generate_from_rng(&mut rng);
        let other = sm2::SecretKey::generate_from_rng(&mut rng);
        for len in [1, 16, 31, 32, 33, 64, 100] {
            let message = vec![0xa5_u8; len];
            let k = NonZeroScalar::try_generate_from_rng(&mut rng).unwrap();
            let ct = encrypt_with(&secret.public_key(), &k, &message)
                .unwrap()
                .unwrap();
            assert_eq!(decrypt(&secret, &ct).unwrap().as_slice(), message);
            assert!(decrypt(&other, &ct).is_err());
            for i in 0..ct.len() {
                let mut bad = ct.clone();
                bad[i] ^= 0x01;
                assert!(decrypt(&secret, &bad).is_err(), "byte {i} of {len}");
            }
            let mut long = ct.clone();
            long.push(0);
            assert!(decrypt(&secret, &long).is_err());
        }
        let k = NonZeroScalar::try_generate_from_rng(&mut rng).unwrap();
        assert!(encrypt_with(&secret.public_key(), &k, b"").is_err());
    }
}
