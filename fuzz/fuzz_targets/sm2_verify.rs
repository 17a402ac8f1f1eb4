//! Differential fuzzing of SM2 signature verification: Fapiao's own verifier (Jacobian
//! coordinates, fixed-base tables, `crates/crypto/src/sm2_verify.rs`, behind
//! `PublicKey::verify`) against the `sm2` crate's, on the same key, message and signature.
//! Any disagreement panics.
//!
//! Inputs are read as: one mode byte, then
//! - mode even: a key chosen from a few fixed ones, a message, and a signature of it made by
//!   that key, then changed by the input's next bytes (XOR into `r ‖ s`, or `r`/`s` set to
//!   an edge value such as `n − r`), so most inputs sit near valid signatures;
//! - mode odd: a public key from 64 input bytes (refused alike if not on the curve), 64
//!   bytes of `r ‖ s`, and the message.
//!
//! Seeds: the OpenSSL-made vectors of `crates/crypto/tests/data/sm2-openssl.txt` are written
//! to the corpus by `.ci/run` (mode-odd encoding). Run:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run sm2_verify` from this directory.
#![no_main]

use std::sync::OnceLock;

use fapiao_crypto::{KeyAlgorithm, PrivateKey, PublicKey, SM2_DISTID};
use libfuzzer_sys::fuzz_target;
use sm2::dsa::signature::Verifier as _;
use sm2::elliptic_curve::ff::PrimeField as _;

fn keys() -> &'static [PrivateKey] {
    static KEYS: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (1..=4_u8)
            .map(|i| {
                let secret = sm2::SecretKey::from_slice(&[i; 32]).unwrap();
                let der = sm2::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret).unwrap();
                PrivateKey::from_pkcs8_der(der.as_bytes()).unwrap()
            })
            .collect()
    })
}

/// Both verifiers on `point` (SEC1), `message` and `r ‖ s`; they must agree.
fn compare(point: &[u8], message: &[u8], rs: &[u8; 64]) {
    let Ok(key) = sm2::PublicKey::from_sec1_bytes(point) else {
        return;
    };
    let r = sm2::Scalar::from_repr(<[u8; 32]>::try_from(&rs[..32]).unwrap().into());
    let s = sm2::Scalar::from_repr(<[u8; 32]>::try_from(&rs[32..]).unwrap().into());
    let (Some(r), Some(s)) = (Option::<sm2::Scalar>::from(r), Option::<sm2::Scalar>::from(s)) else {
        return;
    };
    // Zero `r` or `s` is no signature for either (the type refuses it).
    let Ok(signature) = sm2::dsa::Signature::from_scalars(r, s) else {
        return;
    };
    let theirs = sm2::dsa::VerifyingKey::new(SM2_DISTID, key)
        .unwrap()
        .verify(message, &signature)
        .is_ok();
    let der = signature.to_der().to_vec();
    let ours = PublicKey::Sm2(key);
    // Three times: the key's table is built on its second verification.
    for _ in 0..3 {
        assert_eq!(
            ours.verify(message, &der).is_ok(),
            theirs,
            "verifiers disagree: key {point:02x?}, message {message:02x?}, r‖s {rs:02x?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        if rest.len() < 128 {
            return;
        }
        let mut point = vec![0x04];
        point.extend_from_slice(&rest[..64]);
        let rs: [u8; 64] = rest[64..128].try_into().unwrap();
        compare(&point, &rest[128..], &rs);
        return;
    }
    let Some((&which, rest)) = rest.split_first() else {
        return;
    };
    let (change, message) = rest.split_at(rest.len().min(8));
    let key = &keys()[usize::from(which) % 4];
    let PublicKey::Sm2(public) = key.public_key() else {
        return;
    };
    debug_assert_eq!(key.algorithm(), KeyAlgorithm::Sm2);
    let der = key.sign(message).unwrap();
    let signature = sm2::dsa::Signature::from_der(&der).unwrap();
    let mut rs = [0_u8; 64];
    rs[..32].copy_from_slice(&signature.r().to_repr());
    rs[32..].copy_from_slice(&signature.s().to_repr());
    match change.first().map(|c| c % 4) {
        // XOR the change into a byte of `r ‖ s`.
        Some(0) if change.len() >= 3 => rs[usize::from(change[1]) % 64] ^= change[2],
        // `s = n − r`: `t = 0`.
        Some(1) => rs[32..].copy_from_slice(&(-*signature.r()).to_repr()),
        // `r` and `s` swapped.
        Some(2) => rs.rotate_left(32),
        // Unchanged: both must accept.
        _ => {}
    }
    let point = sm2::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&public, false);
    compare(point.as_bytes(), message, &rs);
});
