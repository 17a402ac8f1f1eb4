//! The messages Fapiao's roles exchange, and how they travel.
//!
//! - [`wire`]: versioned serde payloads (orders, answers, uploads, receipts, number ranges,
//!   status notices) carried inside envelopes (`fapiao_crypto::envelope`), and the JSON form of
//!   a signed invoice.
//! - [`codes`]: the registry of stable error codes every role answers with
//!   (`docs/ERROR-CODES.md` is generated from it and checked by a test).
//! - [`erp`]: the HMAC request signature of the ERP API.
//! - [`client`]: an HTTPS/1.1 client over rustls that keeps connections open, and the envelope
//!   exchange on top of it (seal → POST → open the answer, bound to the request).

pub mod client;
pub mod codes;
pub mod erp;
pub mod strict;
pub mod wire;

pub use client::{CallError, EnvelopeClient, HttpsClient, Response};
pub use codes::Code;
pub use wire::PROTOCOL_VERSION;
