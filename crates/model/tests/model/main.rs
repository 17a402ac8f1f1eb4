//! Integration tests of the invoice domain: published vectors, the example orders, validation
//! findings, red-invoice rules and property tests.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail loudly on unexpected errors"
)]

mod helpers;
mod orders;
mod properties;
mod red;
mod vectors;
