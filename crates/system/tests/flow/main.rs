//! The sync flow end to end: tax, platform and cloud in one process on loopback ports, real
//! mutual TLS, envelopes, driven through the signed ERP API. On SQLite files by default; with
//! `FAPIAO_TEST_ENGINE=postgres`, every role on PostgreSQL (`helpers::engine`).
#![expect(clippy::unwrap_used, reason = "tests")]

mod admin;
mod agent;
mod agreement;
mod api;
mod batch;
mod contract;
mod groups;
mod helpers;
mod issue;
mod keys;
mod limits;
mod masking;
mod notices;
mod ofd;
mod ops;
mod outage;
mod portal;
mod refusals;
mod replicas;
mod reports;
mod revocation;
mod tax;
mod webhook;

#[expect(clippy::disallowed_methods, reason = "tests read the wall clock")]
fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
