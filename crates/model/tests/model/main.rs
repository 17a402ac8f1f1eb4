//! Integration tests of the invoice domain: published vectors, the example orders, validation
//! findings, red-invoice rules and property tests.

mod helpers;
mod orders;
mod properties;
mod red;
mod vectors;
