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
//!
//! The sum is kept in Jacobian coordinates of our own (`x = X/Z²`, `y = Y/Z³`), to which a
//! table entry is added with a variable-time mixed addition (8 multiplications and 3
//! squarings, against 11 and many more additions for the complete formula the curve crate
//! uses in constant time). Both multiplications go into one sum. The final check needs the
//! sum's affine `x` only modulo `n`: `x ≡ r − e (mod n)` holds exactly when `X = v·Z²` for
//! `v = (r − e) mod n` or, where it is still below `p`, `v + n` — so verifying takes no field
//! inversion at all.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use sm2::elliptic_curve::Curve as _;
use sm2::elliptic_curve::Group as _;
use sm2::elliptic_curve::bigint::{ArrayEncoding as _, CheckedAdd as _};
use sm2::elliptic_curve::ff::PrimeField as _;
use sm2::elliptic_curve::hazmat::FieldArithmetic;
use sm2::elliptic_curve::ops::{MulByGeneratorVartime as _, Reduce as _};
use sm2::elliptic_curve::point::{AffineCoordinates as _, BatchNormalize as _};
use sm2::elliptic_curve::sec1::ToSec1Point as _;
use sm2::{ProjectivePoint, Scalar, Sm2, U256};
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

/// An element of SM2's base field (the curve crate's own).
type Fe = <Sm2 as FieldArithmetic>::FieldElement;

/// The generator's table.
static GENERATOR: LazyLock<Option<Table>> =
    LazyLock::new(|| Table::new(ProjectivePoint::GENERATOR));

/// The tables of recently used keys.
static KEYS: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

/// A point other than the identity, affine.
#[derive(Clone, Copy, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

/// A point in Jacobian coordinates: `(X : Y : Z)` is `(X/Z², Y/Z³)`, and `Z = 0` the identity.
#[derive(Clone, Copy, Debug)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    const IDENTITY: Self = Self {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn is_identity(&self) -> bool {
        bool::from(self.z.is_zero())
    }

    /// `2·self` (`dbl-2001-b`, for `a = −3`). SM2's group has odd order, so no point but the
    /// identity has `y = 0`.
    fn double(&self) -> Self {
        if self.is_identity() {
            return *self;
        }
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x * gamma;
        let t = (self.x - delta) * (self.x + delta);
        let alpha = t.double() + t;
        let beta4 = beta.double().double();
        let x = alpha.square() - beta4.double();
        let z = (self.y + self.z).square() - gamma - delta;
        let y = alpha * (beta4 - x) - gamma.square().double().double().double();
        Self { x, y, z }
    }

    /// `self + q`, or `self − q` when `negate` (variable-time mixed addition, `Z₂ = 1`).
    fn add_affine(&self, q: &Affine, negate: bool) -> Self {
        let qy = if negate { -q.y } else { q.y };
        if self.is_identity() {
            return Self {
                x: q.x,
                y: qy,
                z: Fe::ONE,
            };
        }
        let zz = self.z.square();
        let h = q.x * zz - self.x;
        let r = qy * self.z * zz - self.y;
        if bool::from(h.is_zero()) {
            return if bool::from(r.is_zero()) {
                self.double()
            } else {
                Self::IDENTITY
            };
        }
        let hh = h.square();
        let hhh = h * hh;
        let v = self.x * hh;
        let x = r.square() - hhh - v.double();
        let y = r * (v - x) - self.y * hhh;
        let z = self.z * h;
        Self { x, y, z }
    }

    /// Whether the affine `x` of this point (not the identity) is `v` modulo `n`, for `v` below
    /// `n`: `X = v·Z²`, or `X = (v + n)·Z²` where `v + n` is still below `p` (`n < p < 2n`).
    fn x_is_modulo_n(&self, v: &Scalar) -> bool {
        let zz = self.z.square();
        let matches = |candidate: Option<Fe>| candidate.is_some_and(|c| self.x == c * zz);
        let plus_n = U256::from_be_byte_array(v.to_repr())
            .checked_add(Sm2::ORDER.as_ref())
            .into_option();
        matches(Fe::from_repr(v.to_repr()).into_option())
            || plus_n.is_some_and(|w| matches(Fe::from_repr(w.to_be_byte_array()).into_option()))
    }
}

/// `j·16^i·P` for `j` in 1..=8 and `i` in 0..65, affine: entry `i·8 + j − 1`.
struct Table(Vec<Affine>);

impl Table {
    /// The table of `point`; `None` if a multiple is the identity, which only a point of the
    /// wrong order has (a public key on the curve never is one).
    fn new(point: ProjectivePoint) -> Option<Self> {
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
        if multiples.iter().any(|m| bool::from(m.is_identity())) {
            return None;
        }
        ProjectivePoint::batch_normalize(multiples.as_slice())
            .iter()
            .map(|a| {
                Some(Affine {
                    x: Fe::from_repr(a.x()).into_option()?,
                    y: Fe::from_repr(a.y()).into_option()?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .map(Self)
    }

    /// Adds `[k]·P` to `sum`, in variable time: one table entry per non-zero digit.
    fn mul_add(&self, k: &Scalar, mut sum: Jacobian) -> Jacobian {
        for (i, digit) in signed_radix16(k).into_iter().enumerate() {
            let j = usize::from(digit.unsigned_abs());
            if let Some(multiple) = j
                .checked_sub(1)
                .and_then(|j| self.0.get(i * PER_WINDOW + j))
            {
                sum = sum.add_affine(multiple, digit < 0);
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
        Err(true) => Table::new(ProjectivePoint::from(*key.as_affine())).map(|table| {
            let prepared = Arc::new(Prepared {
                table,
                z: z_digest(point),
            });
            KEYS.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keep(point, Arc::clone(&prepared));
            prepared
        }),
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
    let v = *r - e;
    match (GENERATOR.as_ref(), prepared) {
        (Some(generator), Some(prepared)) => {
            let sum = prepared
                .table
                .mul_add(&t, generator.mul_add(&s, Jacobian::IDENTITY));
            !sum.is_identity() && sum.x_is_modulo_n(&v)
        }
        _ => {
            let sum = ProjectivePoint::mul_by_generator_and_mul_add_vartime(
                &s,
                &t,
                &ProjectivePoint::from(*key.as_affine()),
            );
            !bool::from(sum.is_identity()) && Scalar::reduce(&sum.to_affine().x()) == v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::ff::Field as _;

    /// The affine coordinates of a Jacobian point, as the curve crate encodes them (`None`
    /// for the identity).
    fn affine(p: &Jacobian) -> Option<(Vec<u8>, Vec<u8>)> {
        let zi = p.z.invert().into_option()?;
        let x = p.x * zi.square();
        let y = p.y * zi.square() * zi;
        Some((x.to_repr().to_vec(), y.to_repr().to_vec()))
    }

    fn expected(p: ProjectivePoint) -> Option<(Vec<u8>, Vec<u8>)> {
        (!bool::from(p.is_identity())).then(|| {
            let a = p.to_affine();
            (a.x().to_vec(), a.y().to_vec())
        })
    }

    fn table(point: ProjectivePoint) -> Table {
        Table::new(point).expect("a point of prime order")
    }

    /// The table agrees with plain multiplication, for edge scalars (zero, one, the digit
    /// boundaries, the largest) and random ones, on the generator and on another point; and
    /// two multiplications added into one sum agree with their sum.
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
        let generator = GENERATOR.as_ref().expect("the generator's table");
        let table = table(other);
        for k in &scalars {
            let g = generator.mul_add(k, Jacobian::IDENTITY);
            assert_eq!(
                affine(&g),
                expected(ProjectivePoint::GENERATOR * k),
                "{k:?}"
            );
            let p = table.mul_add(k, Jacobian::IDENTITY);
            assert_eq!(affine(&p), expected(other * k), "{k:?}");
            let both = table.mul_add(&scalars[5], g);
            let sum = ProjectivePoint::GENERATOR * k + other * scalars[5];
            assert_eq!(affine(&both), expected(sum), "{k:?}");
        }
    }

    /// Adding a point to itself doubles it, adding its negation gives the identity, and the
    /// sum goes on correctly from either: the cases the general formula cannot handle. With
    /// the generator's table twice, `[s]G + [s]G` and `[s]G − [s]G` hit them at the first
    /// digit of the second multiplication.
    #[test]
    fn mixed_addition_handles_doubling_and_the_identity() {
        let generator = GENERATOR.as_ref().expect("the generator's table");
        for (s, t) in [(3_u64, 3_u64), (1, 1), (8, 8), (0x1234, 0x1234)] {
            let (s, t) = (Scalar::from(s), Scalar::from(t));
            let sum = generator.mul_add(&t, generator.mul_add(&s, Jacobian::IDENTITY));
            assert_eq!(affine(&sum), expected(ProjectivePoint::GENERATOR * (s + t)));
            let zero = generator.mul_add(&-t, generator.mul_add(&s, Jacobian::IDENTITY));
            assert!(zero.is_identity());
            let on = generator.mul_add(&Scalar::from(5_u64), zero);
            let five = ProjectivePoint::GENERATOR * Scalar::from(5_u64);
            assert_eq!(affine(&on), expected(five));
        }
        assert!(Jacobian::IDENTITY.double().is_identity());
    }

    /// The final check without inversion: `X/Z²` is `v` modulo `n` when it is `v` or `v + n`
    /// (below `p`), and not when it is anything else; `Z` is not 1. (The check reads `X` and
    /// `Z` only, so the points need not be on the curve: an `x` at or above `n` is a chance
    /// of about 2⁻⁹⁶ for a real sum.)
    #[test]
    fn the_final_check_compares_x_modulo_n_in_jacobian_coordinates() {
        let mut rng = crate::rng::system_rng();
        let n = *Sm2::ORDER.as_ref();
        let fe = |u: U256| {
            Fe::from_repr(u.to_be_byte_array())
                .into_option()
                .expect("below p")
        };
        let mut at = |x: Fe| {
            let lambda = Fe::random(&mut rng);
            Jacobian {
                x: x * lambda.square(),
                y: Fe::ONE,
                z: lambda,
            }
        };
        let big = Scalar::reduce(
            &U256::from_be_hex(P_HEX)
                .wrapping_sub(&n)
                .wrapping_sub(&U256::ONE),
        );
        for v in [
            Scalar::ZERO,
            Scalar::ONE,
            Scalar::from(12345_u64),
            big,
            big + Scalar::ONE,
            -Scalar::ONE,
        ] {
            let v_int = U256::from_be_byte_array(v.to_repr());
            assert!(at(fe(v_int)).x_is_modulo_n(&v), "x = v");
            assert!(
                !at(fe(v_int.wrapping_add(&U256::ONE))).x_is_modulo_n(&v),
                "x = v + 1"
            );
            let plus_n = v_int.checked_add(&n).into_option();
            match plus_n.and_then(|w| Fe::from_repr(w.to_be_byte_array()).into_option()) {
                Some(above) => assert!(at(above).x_is_modulo_n(&v), "x = v + n"),
                // v + n is p or more: no x has this v twice.
                None => assert!(plus_n.is_none_or(|w| w >= U256::from_be_hex(P_HEX))),
            }
        }
    }

    /// SM2's field modulus.
    const P_HEX: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF";

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

    /// Once a key has its table, verification agrees with the `sm2` crate's verifier: its
    /// signer's signatures verify, and a changed message, `r` or `s` does not.
    #[test]
    fn table_verification_agrees_with_the_sm2_crate() {
        use sm2::dsa::signature::{Signer as _, Verifier as _};
        use sm2::elliptic_curve::Generate as _;
        let mut rng = crate::rng::system_rng();
        for k in 0..8_usize {
            let secret = sm2::SecretKey::generate_from_rng(&mut rng);
            let signer = sm2::dsa::SigningKey::new(SM2_DISTID, &secret).unwrap();
            let verifier = sm2::dsa::VerifyingKey::new(SM2_DISTID, secret.public_key()).unwrap();
            for i in 0..8_usize {
                let message: Vec<u8> = (0..k * 300 + i)
                    .map(|j| (j * 13 + k).to_le_bytes()[0])
                    .collect();
                let signature: sm2::dsa::Signature = signer.try_sign(&message).unwrap();
                let (r, s) = (*signature.r(), *signature.s());
                let changed = [
                    sm2::dsa::Signature::from_scalars(r + Scalar::ONE, s).unwrap(),
                    sm2::dsa::Signature::from_scalars(r, s + Scalar::ONE).unwrap(),
                ];
                let cases = [
                    (&message[..], &signature),
                    (&b"another message"[..], &signature),
                    (&message[..], &changed[0]),
                    (&message[..], &changed[1]),
                ];
                for (j, (m, sig)) in cases.into_iter().enumerate() {
                    assert_eq!(
                        verify(&secret.public_key(), m, sig),
                        verifier.verify(m, sig).is_ok(),
                        "key {k}, message {i}, case {j}"
                    );
                    assert_eq!(verifier.verify(m, sig).is_ok(), j == 0);
                }
            }
            let point = secret.public_key().to_sec1_point(false);
            assert!(KEYS.lock().unwrap().tables.contains_key(point.as_bytes()));
        }
    }

    /// The signatures the verification algorithm's own checks must catch: `t = r + s = 0`
    /// (step B5) and `[s]G + [t]P` at infinity. Made with the signer's secret `d`: for any
    /// `r`, `s = −r·d/(1 + d)` puts the sum at infinity. Both verifiers refuse each, before
    /// and after the key has its table.
    #[test]
    fn t_zero_and_a_sum_at_infinity_are_refused() {
        use sm2::dsa::signature::Verifier as _;
        use sm2::elliptic_curve::Generate as _;
        use sm2::elliptic_curve::ff::Field as _;
        let mut rng = crate::rng::system_rng();
        let secret = sm2::SecretKey::generate_from_rng(&mut rng);
        let d = *secret.to_nonzero_scalar();
        let key = secret.public_key();
        let theirs = sm2::dsa::VerifyingKey::new(SM2_DISTID, key).unwrap();
        for _ in 0..4 {
            let r = Scalar::random(&mut rng);
            let t_zero = sm2::dsa::Signature::from_scalars(r, -r).unwrap();
            let s = -(r * d) * Option::<Scalar>::from((d + Scalar::ONE).invert()).unwrap();
            let infinity = sm2::dsa::Signature::from_scalars(r, s).unwrap();
            let (t, sum) = (
                r + s,
                ProjectivePoint::mul_by_generator(&s)
                    + ProjectivePoint::from(*key.as_affine()) * (r + s),
            );
            assert!(!bool::from(t.is_zero()) && bool::from(sum.is_identity()));
            for _ in 0..3 {
                for sig in [&t_zero, &infinity] {
                    assert!(!verify(&key, b"m", sig));
                    assert!(theirs.verify(b"m", sig).is_err());
                }
            }
        }
    }

    /// A key's table is built on its second verification, and used from then on.
    #[test]
    fn a_key_gets_its_table_on_second_use() {
        use sm2::elliptic_curve::Generate as _;
        // Signed without `PrivateKey::sign`, whose own check would be the first use.
        let secret = sm2::SecretKey::generate_from_rng(&mut crate::rng::system_rng());
        let public = secret.public_key();
        let signature = crate::sm2_sign::Signer::new(&secret)
            .unwrap()
            .sign(b"invoice", &[7; 32]);
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
