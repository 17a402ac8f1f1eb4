//! SM2 signature verification (GB/T 32918.2-2016 §7.1, with [`SM2_DISTID`]) in variable time,
//! with fixed-base tables.
//!
//! The key, the message and the signature are all public, so timing leaks nothing secret;
//! signing (the `sm2` crate) and encryption and decryption ([`crate::sm2_pke`]) stay
//! constant-time.
//!
//! Verifying computes `[s]G + [t]P`. Both points are fixed for a signer: `G` always, and `P`
//! for every message of the same device or role, and a system sees few signers (one device
//! per enterprise, one key per role). So each point gets a table of its multiples `j·16^i`
//! (`j` ≤ 8, 65 windows, affine), and a multiplication is at most 65 additions of table entries
//! selected by the scalar's signed radix-16 digits — no doublings — instead of the joint wNAF's
//! 256 doublings and about 100 additions. The generator's table is built once. A key's table
//! (520 points, 37 KB: about 700 additions and doublings and one batched inversion) is built
//! on its second verification, so a key seen once costs nothing extra, and kept in a bounded
//! least-recently-used cache together with its `Z` digest.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use sm2::elliptic_curve::Group as _;
use sm2::elliptic_curve::ff::PrimeField as _;
use sm2::elliptic_curve::ops::{MulByGeneratorVartime as _, Reduce as _};
use sm2::elliptic_curve::point::{AffineCoordinates as _, BatchNormalize as _};
use sm2::elliptic_curve::sec1::ToSec1Point as _;
use sm2::{AffinePoint, ProjectivePoint, Scalar};
use sm3::Digest as _;

use crate::keys::SM2_DISTID;

/// Signed radix-16 digits of a scalar below 2^256: 64 digits and a carry.
const WINDOWS: usize = 65;

/// Multiples per window: `1·16^i … 8·16^i` (digits are in [-8, 8]).
const PER_WINDOW: usize = 8;

/// Public keys whose tables are kept.
const KEYS_KEPT: usize = 64;

/// Public keys remembered as seen once (forgotten all together when full).
const SEEN_KEPT: usize = 4096;

/// `ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG`: what every SM2 `Z` hash starts with for [`SM2_DISTID`]
/// (GB/T 32918.2-2016 §5.5), with the curve parameters of GB/T 32918.5-2017.
static Z_PREFIX: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const CURVE: [&str; 4] = [
        // a
        "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
        // b
        "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
        // xG
        "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
        // yG
        "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
    ];
    let id = SM2_DISTID.as_bytes();
    let entl = u16::try_from(id.len() * 8).unwrap_or(u16::MAX);
    let mut prefix = entl.to_be_bytes().to_vec();
    prefix.extend_from_slice(id);
    for hex in CURVE {
        prefix.extend_from_slice(&crate::hex::decode(hex).unwrap_or_default());
    }
    prefix
});

/// The generator's table.
static GENERATOR: LazyLock<Table> = LazyLock::new(|| Table::new(ProjectivePoint::GENERATOR));

/// The tables of recently used keys.
static KEYS: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

/// `j·16^i·P` for `j` in 1..=8 and `i` in 0..65, affine: entry `i·8 + j − 1`.
struct Table(Vec<AffinePoint>);

impl Table {
    fn new(point: ProjectivePoint) -> Self {
        let mut multiples = Vec::with_capacity(WINDOWS * PER_WINDOW);
        let mut base = point;
        for _ in 0..WINDOWS {
            let mut multiple = base;
            multiples.push(multiple);
            for _ in 1..PER_WINDOW {
                multiple += base;
                multiples.push(multiple);
            }
            base = base.double().double().double().double();
        }
        Self(ProjectivePoint::batch_normalize(multiples.as_slice()))
    }

    /// `[k]P`, in variable time.
    fn mul(&self, k: &Scalar) -> ProjectivePoint {
        let mut sum = ProjectivePoint::IDENTITY;
        for (i, digit) in signed_radix16(k).into_iter().enumerate() {
            let j = usize::from(digit.unsigned_abs());
            if let Some(multiple) = j
                .checked_sub(1)
                .and_then(|j| self.0.get(i * PER_WINDOW + j))
            {
                if digit > 0 {
                    sum += multiple;
                } else {
                    sum -= multiple;
                }
            }
        }
        sum
    }
}

/// `k = Σ dᵢ·16^i` with every `dᵢ` in [-8, 8] (the last one 0 or 1).
fn signed_radix16(k: &Scalar) -> [i8; WINDOWS] {
    let bytes = k.to_repr();
    let mut digits = [0_i8; WINDOWS];
    for (i, byte) in bytes.iter().rev().enumerate() {
        digits[2 * i] = i8::try_from(byte & 0x0f).unwrap_or_default();
        digits[2 * i + 1] = i8::try_from(byte >> 4).unwrap_or_default();
    }
    for i in 0..WINDOWS - 1 {
        let carry = (digits[i] + 8) >> 4;
        digits[i] -= carry << 4;
        digits[i + 1] += carry;
    }
    digits
}

/// A key ready to verify with: its table and its `Z` digest.
struct Prepared {
    table: Table,
    z: [u8; 32],
}

/// Tables by uncompressed point, with the time of last use; and keys seen once.
#[derive(Default)]
struct Cache {
    tables: HashMap<Vec<u8>, (Arc<Prepared>, u64)>,
    seen: HashSet<Vec<u8>>,
    clock: u64,
}

impl Cache {
    /// The key's table if kept; otherwise whether it was seen before (and now it has been).
    fn lookup(&mut self, point: &[u8]) -> Result<Arc<Prepared>, bool> {
        self.clock += 1;
        if let Some((prepared, used)) = self.tables.get_mut(point) {
            *used = self.clock;
            return Ok(Arc::clone(prepared));
        }
        if self.seen.remove(point) {
            return Err(true);
        }
        if self.seen.len() >= SEEN_KEPT {
            self.seen.clear();
        }
        self.seen.insert(point.to_vec());
        Err(false)
    }

    fn keep(&mut self, point: &[u8], prepared: Arc<Prepared>) {
        if self.tables.len() >= KEYS_KEPT
            && let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.tables.remove(&oldest);
        }
        self.tables.insert(point.to_vec(), (prepared, self.clock));
    }
}

/// `Z` of an uncompressed public point (`04 ‖ x ‖ y`) with [`SM2_DISTID`].
pub(crate) fn z_digest(point: &[u8]) -> [u8; 32] {
    sm3::Sm3::new()
        .chain_update(Z_PREFIX.as_slice())
        .chain_update(point.get(1..).unwrap_or_default())
        .finalize()
        .into()
}

/// Verifies an SM2 signature.
pub(crate) fn verify(
    key: &sm2::PublicKey,
    message: &[u8],
    signature: &sm2::dsa::Signature,
) -> bool {
    let point = key.to_sec1_point(false);
    let point = point.as_bytes();
    let found = KEYS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .lookup(point);
    let prepared = match found {
        Ok(prepared) => Some(prepared),
        Err(true) => {
            let prepared = Arc::new(Prepared {
                table: Table::new(ProjectivePoint::from(*key.as_affine())),
                z: z_digest(point),
            });
            KEYS.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keep(point, Arc::clone(&prepared));
            Some(prepared)
        }
        Err(false) => None,
    };
    let z = prepared.as_ref().map_or_else(|| z_digest(point), |p| p.z);
    let e = Scalar::reduce(
        &sm3::Sm3::new()
            .chain_update(z)
            .chain_update(message)
            .finalize(),
    );
    let (r, s) = (signature.r(), signature.s());
    let t = *r + *s;
    if bool::from(t.is_zero()) {
        return false;
    }
    let sum = match prepared {
        Some(prepared) => GENERATOR.mul(&s) + prepared.table.mul(&t),
        None => ProjectivePoint::mul_by_generator_and_mul_add_vartime(
            &s,
            &t,
            &ProjectivePoint::from(*key.as_affine()),
        ),
    };
    if bool::from(sum.is_identity()) {
        return false;
    }
    *r == e + Scalar::reduce(&sum.to_affine().x())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::Field as _;

    /// The table agrees with plain multiplication, for edge scalars (zero, one, the digit
    /// boundaries, the largest) and random ones, on the generator and on another point.
    #[test]
    fn table_multiplication_agrees_with_plain_multiplication() {
        let mut rng = crate::rng::system_rng();
        let other = ProjectivePoint::GENERATOR * Scalar::random(&mut rng);
        let minus_one = -Scalar::ONE;
        let mut scalars = vec![
            Scalar::ZERO,
            Scalar::ONE,
            minus_one,
            minus_one - Scalar::ONE,
        ];
        for v in [
            7_u64,
            8,
            9,
            15,
            16,
            17,
            0x88,
            0x8888_8888_8888_8888,
            u64::MAX,
        ] {
            scalars.push(Scalar::from(v));
            scalars.push(-Scalar::from(v));
        }
        let mut power = Scalar::ONE;
        for _ in 0..256 {
            scalars.push(power);
            power = power.double();
        }
        scalars.extend((0..64).map(|_| Scalar::random(&mut rng)));
        let table = Table::new(other);
        for k in &scalars {
            assert_eq!(GENERATOR.mul(k), ProjectivePoint::GENERATOR * k, "{k:?}");
            assert_eq!(table.mul(k), other * k, "{k:?}");
        }
    }

    #[test]
    fn digits_are_signed_radix_16_and_sum_back() {
        let mut rng = crate::rng::system_rng();
        for k in [-Scalar::ONE, Scalar::random(&mut rng)] {
            let digits = signed_radix16(&k);
            assert!(digits.iter().all(|d| (-8..=8).contains(d)));
            assert!((0..=1).contains(&digits[WINDOWS - 1]));
            let sixteen = Scalar::from(16_u64);
            let sum = digits.iter().rev().fold(Scalar::ZERO, |acc, &d| {
                let m = Scalar::from(u64::from(d.unsigned_abs()));
                acc * sixteen + if d < 0 { -m } else { m }
            });
            assert_eq!(sum, k);
        }
    }

    /// A key's table is built on its second verification, and used from then on.
    #[test]
    fn a_key_gets_its_table_on_second_use() {
        let key =
            crate::PrivateKey::generate(crate::KeyAlgorithm::Sm2, &mut crate::rng::system_rng());
        let crate::PublicKey::Sm2(public) = key.public_key() else {
            unreachable!("an SM2 key")
        };
        let signature = key.sign(b"invoice").unwrap();
        let signature = sm2::dsa::Signature::from_der(&signature).unwrap();
        let point = public.to_sec1_point(false);
        let kept = || KEYS.lock().unwrap().tables.contains_key(point.as_bytes());
        assert!(verify(&public, b"invoice", &signature));
        assert!(!kept());
        assert!(verify(&public, b"invoice", &signature));
        assert!(kept());
        assert!(verify(&public, b"invoice", &signature));
        assert!(!verify(&public, b"invoicE", &signature));
    }
}
