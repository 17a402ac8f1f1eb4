//! The TLS accept loop: every request carries the peer's verified [`PeerIdentity`], and no
//! client holds more than its share before it has shown who it is — a cap on connections, a
//! cap per client address, and time limits on the TLS handshake and on the request headers.
//! (Bodies are read by the routes, each within its limit, and the envelope routes read none
//! before the peer's certificate is checked.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use fapiao_crypto::{Certificate, LiveTrust};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::task::Stoppable;
use crate::{ClientAddr, Limits, PeerIdentity};

/// A listener being served.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    task: Stoppable,
}

impl Running {
    /// The bound address (the real port when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets connections finish their requests in flight, and waits.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }

    /// Stops accepting at once (the listener is closed), then lets connections finish their
    /// requests in flight until `deadline`; what is still open then is cut. Whether
    /// everything finished in time.
    pub async fn shutdown_by(self, deadline: tokio::time::Instant) -> bool {
        self.task.shutdown_by(deadline).await
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
    let limits = Limits {
        max_connections,
        ..Limits::default()
    };
    serve_tls_live(listener, tls, router, &limits, None)
}

/// Open connections per client address, and the guard that counts one.
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

struct Counted {
    map: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// Counts a connection from `ip`, unless `cap` are open already.
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Counted> {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Counted {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut m = self
            .map
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` over TLS on `listener` within `limits`: at most `max_connections` open
/// (further clients wait in the backlog), at most `max_connections_per_address` from one
/// address (further ones are closed at once), the TLS handshake and each request's headers
/// within `handshake_timeout_seconds` (else the connection is closed). With `trust` (the one
/// `tls` verifies clients with), a connection established before a CRL was reloaded is
/// checked again at its next request: a peer revoked since its handshake loses its
/// [`PeerIdentity`] (its requests are refused as without a certificate) without waiting for
/// the connection to close.
///
/// # Errors
/// [`ServeError::Listener`].
pub fn serve_tls_live(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: &Limits,
    trust: Option<LiveTrust>,
) -> Result<Running, ServeError> {
    let addr = listener.local_addr()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_address = Arc::new(PerAddress::default());
    let per_address_cap = limits.max_connections_per_address.max(1);
    let handshake = Duration::from_secs(limits.handshake_timeout_seconds.max(1));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = Stoppable::spawn(|mut stopped| async move {
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
            // Over its address's share: closed before anything is read.
            let Some(counted) = per_address.admit(client.ip(), per_address_cap) else {
                tracing::debug!(%client, "connection refused: too many from this address");
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let trust = trust.clone();
            let mut conn_stop = stopped.clone();
            connections.spawn(async move {
                let _permit = permit;
                let _counted = counted;
                let Ok(Ok(tls)) = tokio::time::timeout(handshake, acceptor.accept(tcp)).await
                else {
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
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(handshake);
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
        // Closed now: a client arriving from here on is refused at once (and a load
        // balancer tries another replica) rather than waiting in the backlog.
        drop(listener);
        while connections.join_next().await.is_some() {}
    });
    Ok(Running { addr, task })
}
