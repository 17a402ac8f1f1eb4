//! ERP request signing (the ERP API's per-request authentication).
//!
//! Each enterprise holds API credentials: a key id and a secret. Every request carries
//! four headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Fapiao-Key` | the key id |
//! | `X-Fapiao-Timestamp` | Unix seconds when signed |
//! | `X-Fapiao-Nonce` | 16–64 characters `[A-Za-z0-9_-]`, never reused |
//! | `X-Fapiao-Signature` | lowercase hex HMAC-SHA256 with the secret over the string below |
//!
//! The signed string is these lines joined by `\n`: `FAPIAO-HMAC-SHA256`, the method in upper
//! case, the path with its query string exactly as sent, the timestamp, the nonce, and the
//! lowercase hex SHA-256 of the body (of the empty string for no body). The server refuses a
//! timestamp more than [`WINDOW_SECONDS`] from its clock and a nonce it has seen within the
//! window.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Key id header.
pub const KEY_HEADER: &str = "x-fapiao-key";
/// Timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-fapiao-timestamp";
/// Nonce header.
pub const NONCE_HEADER: &str = "x-fapiao-nonce";
/// Signature header.
pub const SIGNATURE_HEADER: &str = "x-fapiao-signature";
/// Accepted clock difference, each side.
pub const WINDOW_SECONDS: i64 = 300;

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The string an ERP request signature covers.
#[must_use]
pub fn string_to_sign(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "FAPIAO-HMAC-SHA256\n{}\n{path_and_query}\n{timestamp}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        hex(&Sha256::digest(body))
    )
}

/// The signature header value.
#[must_use]
pub fn sign(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    hex(&mac(
        secret,
        string_to_sign(method, path_and_query, timestamp, nonce, body).as_bytes(),
    ))
}

fn mac(secret: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Checks a signature header value in constant time.
#[must_use]
pub fn verify(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    let expected = sign(secret, method, path_and_query, timestamp, nonce, body);
    expected.len() == signature_hex.len()
        && bool::from(expected.as_bytes().ct_eq(signature_hex.as_bytes()))
}

/// Webhook signature header (`X-Fapiao-Signature` on webhook POSTs): lowercase hex
/// HMAC-SHA256 keyed with the endpoint's secret (the enterprise's API secret for its own URL)
/// over `<timestamp>.<body>`, the timestamp in `X-Fapiao-Timestamp` (`docs/webhooks.md`).
#[must_use]
pub fn sign_webhook(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut data = format!("{timestamp}.").into_bytes();
    data.extend_from_slice(body);
    hex(&mac(secret, &data))
}

/// Whether a nonce has the accepted shape.
#[must_use]
pub fn nonce_is_valid(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_every_part() {
        let s = sign(
            b"secret",
            "POST",
            "/v1/invoices",
            1_700_000_000,
            "n0nce-0123456789",
            b"{}",
        );
        assert!(verify(
            b"secret",
            "post",
            "/v1/invoices",
            1_700_000_000,
            "n0nce-0123456789",
            b"{}",
            &s
        ));
        for (secret, path, ts, nonce, body) in [
            (
                &b"secreT"[..],
                "/v1/invoices",
                1_700_000_000,
                "n0nce-0123456789",
                &b"{}"[..],
            ),
            (
                b"secret",
                "/v1/invoiceS",
                1_700_000_000,
                "n0nce-0123456789",
                b"{}",
            ),
            (
                b"secret",
                "/v1/invoices",
                1_700_000_001,
                "n0nce-0123456789",
                b"{}",
            ),
            (
                b"secret",
                "/v1/invoices",
                1_700_000_000,
                "n0nce-0123456788",
                b"{}",
            ),
            (
                b"secret",
                "/v1/invoices",
                1_700_000_000,
                "n0nce-0123456789",
                b"{ }",
            ),
        ] {
            assert!(!verify(secret, "POST", path, ts, nonce, body, &s));
        }
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        assert_eq!(
            hex(&mac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
