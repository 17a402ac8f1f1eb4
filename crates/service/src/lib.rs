//! Shared HTTP plumbing of Fapiao's roles (cloud, platform, tax, agent): a TLS accept loop that
//! hands every request the verified identity of the peer's client certificate
//! ([`PeerIdentity`], an axum extractor), bound listeners on any port (port 0 for tests), and
//! graceful shutdown that lets requests in flight finish.
//!
//! Depends on `fapiao-crypto` only for reading the peer's certificate; role crates build the
//! rustls configuration there (`fapiao_crypto::tls::server_config`) and their routers here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use fapiao_crypto::{Certificate, LiveTrust, Role};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub mod audit_signer;
pub mod backoff;
pub mod crl_reload;
pub mod envelope;
pub mod error;
pub mod limits;
pub mod material;
pub mod metrics;
pub mod ops;
pub mod worker;

pub use backoff::Backoff;
pub use envelope::{EnvelopeHandler, Envelopes, Incoming, Outgoing};
pub use error::ApiError;
pub use limits::{ClientAddr, Limits, RateLimiter};
pub use material::{Material, MaterialConfig, MaterialError};
pub use metrics::Registry;
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

    fn from_certificates(certs: &[rustls::pki_types::CertificateDer<'_>]) -> Option<Self> {
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

/// A listener being served.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// The bound address (the real port when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets connections finish their requests in flight, and waits.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// Serves `router` over TLS on `listener`. Each request carries the peer's [`PeerIdentity`] in
/// its extensions when the client presented a certificate. Failed handshakes close the
/// connection (rustls has already refused the peer); they never reach the router.
///
/// # Errors
/// [`ServeError::Listener`].
pub fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) -> Result<Running, ServeError> {
    serve_tls_with(listener, tls, router, Limits::default().max_connections)
}

/// [`serve_tls`] with at most `max_connections` open at once: when that many are open, the
/// next client waits in the listen backlog until one closes.
///
/// # Errors
/// [`ServeError::Listener`].
pub fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    max_connections: usize,
) -> Result<Running, ServeError> {
    serve_tls_live(listener, tls, router, max_connections, None)
}

/// [`serve_tls_with`], and with `trust` (the one `tls` verifies clients with) a connection
/// established before a CRL was reloaded is checked again at its next request: a peer
/// revoked since its handshake loses its [`PeerIdentity`] (its requests are refused as
/// without a certificate) without waiting for the connection to close.
///
/// # Errors
/// [`ServeError::Listener`].
pub fn serve_tls_live(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    max_connections: usize,
    trust: Option<LiveTrust>,
) -> Result<Running, ServeError> {
    let addr = listener.local_addr()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let (stop, mut stopped) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                _ = stopped.changed() => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stopped.changed() => break,
            };
            let Ok((tcp, client)) = accepted else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let trust = trust.clone();
            let mut conn_stop = stopped.clone();
            connections.spawn(async move {
                let _permit = permit;
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let certs = tls.get_ref().1.peer_certificates();
                let peer = certs.and_then(PeerIdentity::from_certificates);
                let still_valid = trust.zip(
                    certs
                        .and_then(|c| c.first())
                        .and_then(|c| Certificate::from_der(c).ok()),
                );
                let handshake_generation = still_valid.as_ref().map_or(0, |(t, _)| t.generation());
                let service = router.map_request(
                    move |mut req: axum::http::Request<hyper::body::Incoming>| {
                        let revoked = still_valid.as_ref().is_some_and(|(trust, leaf)| {
                            trust.generation() != handshake_generation
                                && trust
                                    .current()
                                    .check_revocation_now(leaf, fapiao_protocol::client::now())
                                    .is_err()
                        });
                        if let Some(p) = &peer
                            && !revoked
                        {
                            req.extensions_mut().insert(p.clone());
                        }
                        req.extensions_mut().insert(ClientAddr(client));
                        req
                    },
                );
                let service = TowerToHyperService::new(service.map_err(|e: Infallible| match e {}));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = conn_stop.changed() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        while connections.join_next().await.is_some() {}
    });
    Ok(Running { addr, stop, task })
}
