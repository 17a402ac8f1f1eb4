//! Integration tests of the crypto crate, checked against OpenSSL and gmssl where they can.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected errors"
)]

mod certs;
mod envelope;
mod envelope_interop;
mod helpers;
mod path;
mod tls;
mod vectors;
