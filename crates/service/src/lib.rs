//! Shared HTTP plumbing of Fapiao's roles (cloud, platform, tax, agent): a TLS accept loop that
//! hands every request the verified identity of the peer's client certificate
//! ([`PeerIdentity`], an axum extractor), bound listeners on any port (port 0 for tests), and
//! graceful shutdown that lets requests in flight finish.
//!
//! Depends on `fapiao-crypto` only for reading the peer's certificate; role crates build the
//! rustls configuration there (`fapiao_crypto::tls::server_config`) and their routers here.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use fapiao_crypto::{Certificate, Role};

pub mod audit_signer;
pub mod backoff;
pub mod crl_reload;
pub mod envelope;
pub mod error;
pub mod health;
pub mod limits;
pub mod material;
pub mod metrics;
pub mod ops;
mod serve;
pub mod statistics;
pub mod task;
pub mod worker;

pub use backoff::Backoff;
pub use envelope::{EnvelopeHandler, Envelopes, Incoming, Outgoing};
pub use error::ApiError;
pub use health::{Health, PeerState};
pub use limits::{Attempts, ClientAddr, Limits, RateLimiter};
pub use material::{Material, MaterialConfig, MaterialError};
pub use metrics::Registry;
pub use serve::{Running, ServeError, serve_tls, serve_tls_live, serve_tls_with};
pub use worker::Worker;

/// This process's name among replicas of its role, for what it holds in a shared database
/// (number blocks, outbox claims): `<host>/<pid>/<random>`, new at every start, so a
/// restarted replica never mistakes what its previous life held for its own.
#[must_use]
pub fn instance_id() -> String {
    use rand_core::Rng as _;
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let mut r = [0_u8; 4];
    fapiao_crypto::rng::system_rng().fill_bytes(&mut r);
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        u32::from_be_bytes(r)
    )
}

/// Who is on the other end of a mutually authenticated connection, from the client
/// certificate rustls verified (chain, validity, CRL) during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's role (`OU`).
    pub role: Role,
    /// The peer's name (`CN`).
    pub name: String,
    /// The enterprise's taxpayer id, for devices and agents.
    pub taxpayer_id: Option<String>,
    /// The certificate's serial number, hex.
    pub serial: String,
}

impl PeerIdentity {
    /// `role:name`, as envelopes name parties.
    #[must_use]
    pub fn identity(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }

    pub(crate) fn from_certificates(
        certs: &[rustls::pki_types::CertificateDer<'_>],
    ) -> Option<Self> {
        let cert = Certificate::from_der(certs.first()?).ok()?;
        let subject = cert.subject().ok()?;
        Some(Self {
            role: subject.role,
            name: subject.name,
            taxpayer_id: subject.taxpayer_id,
            serial: cert.serial_hex(),
        })
    }
}

/// A request without a verified client certificate (the listener did not require one, or it
/// names no Fapiao holder) is refused with 401 by handlers that take a [`PeerIdentity`].
impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or((
            StatusCode::UNAUTHORIZED,
            "a client certificate of a Fapiao role is required",
        ))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for PeerIdentity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
