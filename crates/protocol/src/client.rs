//! HTTPS/1.1 over rustls with kept-alive connections ([`HttpsClient`]), and the envelope
//! exchange between roles on top of it ([`EnvelopeClient`]).
//!
//! A full TLS handshake costs about a millisecond of CPU, so connections are reused: each
//! client keeps its idle connections and takes one (or opens one) per request.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fapiao_crypto::envelope::{Header, LocalParty, MemoryReplayGuard, Message, Opener, seal};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{Certificate, LiveTrust, Purpose};
use http::{HeaderMap, Method, Request as HttpRequest, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand_core::Rng;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::codes::Code;
use crate::wire::{PROTOCOL_VERSION, Request, b64, message_type};

/// The current time (the protocol's one clock).
#[must_use]
#[expect(
    clippy::disallowed_methods,
    reason = "the protocol layer stamps and checks envelopes with the wall clock"
)]
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Now in China Standard Time (UTC+8), whole seconds: when an invoice is issued.
#[must_use]
pub fn china_now() -> time::PrimitiveDateTime {
    let t = now().to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
    let t = t.replace_nanosecond(0).unwrap_or(t);
    time::PrimitiveDateTime::new(t.date(), t.time())
}

/// A fresh random id: 32 lowercase hex digits.
#[must_use]
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    system_rng().fill_bytes(&mut bytes);
    crate::erp::hex(&bytes)
}

/// Content type of envelope bodies.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/fapiao-envelope";
/// Path every role receives envelopes on.
pub const ENVELOPE_PATH: &str = "/v1/envelope";
/// Path every role publishes its encryption certificate on (PEM).
pub const ENCRYPTION_CERTIFICATE_PATH: &str = "/v1/envelope/certificate";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The base URL is not `https://host[:port]`.
    #[error("`{0}` is not an https://host[:port] URL")]
    Url(String),
    /// Could not connect, TLS failed, or the connection broke: the peer is unreachable.
    #[error("{peer} unreachable: {reason}")]
    Unreachable {
        /// The base URL.
        peer: String,
        /// What happened.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// The peer answered with an HTTP error and a code.
    #[error("{peer} answered HTTP {status}: {code}")]
    Status {
        /// The base URL.
        peer: String,
        /// HTTP status.
        status: u16,
        /// The `code` of the JSON error body, or the raw body.
        code: String,
    },
    /// The peer's answer or certificate is not acceptable.
    #[error("{peer} answered with something unacceptable: {reason}")]
    BadAnswer {
        /// The base URL.
        peer: String,
        /// What is wrong.
        reason: String,
    },
    /// Our own message could not be made.
    #[error("could not make the request: {0}")]
    Local(String),
}

impl CallError {
    /// Whether trying again later may succeed (unreachable, timeout, 5xx).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout(_) => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// An HTTP response, body collected.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// An HTTPS/1.1 client for one peer that keeps connections alive for reuse.
pub struct HttpsClient {
    base: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    /// Idle connections and when each became idle.
    idle: Mutex<Vec<(SendRequest<Full<Bytes>>, tokio::time::Instant)>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

const MAX_IDLE: usize = 64;
/// Longest a connection waits in the pool to be used again (below half the servers' header
/// timeout, `handshake_timeout_seconds`, 10 s by default).
const MAX_IDLE_TIME: Duration = Duration::from_secs(4);

impl HttpsClient {
    /// A client for `base_url` (`https://host[:port]`, IPv6 in brackets) using `config`.
    ///
    /// # Errors
    /// [`CallError::Url`].
    pub fn new(base_url: &str, config: Arc<ClientConfig>) -> Result<Self, CallError> {
        let bad = || CallError::Url(base_url.to_owned());
        let uri: Uri = base_url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = match bare.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(bare.clone()).map_err(|_| bad())?,
        };
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            host: bare,
            port: uri.port_u16().unwrap_or(443),
            server_name,
            connector: TlsConnector::from(config),
            idle: Mutex::new(Vec::new()),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sets the per-request timeout (default 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `host:port` for the Host header, IPv6 addresses in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, reason: impl ToString) -> CallError {
        CallError::Unreachable {
            peer: self.base.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| self.unreachable(format!("TLS: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        loop {
            let next = self.idle.lock().ok().and_then(|mut v| v.pop());
            let Some((mut sender, since)) = next else {
                return self.connect().await;
            };
            // Servers close connections idle longer than their header timeout (10 s by
            // default); one idle for less than half of that is never closed under a request.
            if since.elapsed() < MAX_IDLE_TIME
                && !sender.is_closed()
                && sender.ready().await.is_ok()
            {
                return Ok(sender);
            }
        }
    }

    /// Sends one request and collects the answer.
    ///
    /// # Errors
    /// [`CallError::Unreachable`] or [`CallError::Timeout`].
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, CallError> {
        tokio::time::timeout(
            self.timeout,
            self.request_inner(method, path_and_query, headers, body),
        )
        .await
        .map_err(|_| CallError::Timeout(self.base.clone()))?
    }

    async fn request_inner(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, CallError> {
        let mut builder = HttpRequest::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, self.authority());
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Local(e.to_string()))?;
        let mut sender = self.sender().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        if !sender.is_closed()
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((sender, tokio::time::Instant::now()));
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// An opened answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its message type.
    pub message_type: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Answer {
    /// The payload as `T`.
    ///
    /// # Errors
    /// [`CallError::BadAnswer`].
    pub fn parse<T: DeserializeOwned>(&self, peer: &str) -> Result<T, CallError> {
        serde_json::from_slice(&self.payload).map_err(|e| CallError::BadAnswer {
            peer: peer.to_owned(),
            reason: format!("{} payload: {e}", self.message_type),
        })
    }
}

/// Sends envelopes to one peer role over mutual TLS and opens its answers.
pub struct EnvelopeClient {
    http: HttpsClient,
    me: Arc<LocalParty>,
    trust: LiveTrust,
    peer_identity: String,
    peer_certificate: Mutex<Option<Certificate>>,
    replay: MemoryReplayGuard,
}

impl std::fmt::Debug for EnvelopeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeClient")
            .field("peer", &self.peer_identity)
            .field("base", &self.http.base)
            .finish_non_exhaustive()
    }
}

impl EnvelopeClient {
    /// A client sending as `me` to the role `peer_identity` (`role:name`) at `http`'s URL.
    #[must_use]
    pub fn new(
        http: HttpsClient,
        me: Arc<LocalParty>,
        trust: LiveTrust,
        peer_identity: impl Into<String>,
    ) -> Self {
        Self {
            http,
            me,
            trust,
            peer_identity: peer_identity.into(),
            peer_certificate: Mutex::new(None),
            replay: MemoryReplayGuard::new(),
        }
    }

    /// The peer's `role:name`.
    #[must_use]
    pub fn peer_identity(&self) -> &str {
        &self.peer_identity
    }

    fn bad(&self, reason: impl Into<String>) -> CallError {
        CallError::BadAnswer {
            peer: self.http.base.clone(),
            reason: reason.into(),
        }
    }

    /// The peer's encryption certificate: fetched once from
    /// [`ENCRYPTION_CERTIFICATE_PATH`], path-validated for encryption and checked to name the
    /// expected peer.
    async fn peer_certificate(&self, now: OffsetDateTime) -> Result<Certificate, CallError> {
        if let Some(c) = self.peer_certificate.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let r = self
            .http
            .request(Method::GET, ENCRYPTION_CERTIFICATE_PATH, &[], Vec::new())
            .await?;
        if r.status != 200 {
            return Err(status_error(&self.http.base, &r));
        }
        let pem = std::str::from_utf8(&r.body).map_err(|_| self.bad("certificate not PEM"))?;
        let cert = Certificate::from_pem(pem).map_err(|e| self.bad(e.to_string()))?;
        self.trust
            .current()
            .validate(&cert, &[], Purpose::Encryption, now)
            .map_err(|e| self.bad(format!("encryption certificate: {e}")))?;
        let identity = cert
            .subject()
            .map_err(|e| self.bad(e.to_string()))?
            .identity();
        if identity != self.peer_identity {
            return Err(self.bad(format!(
                "encryption certificate names `{identity}`, expected `{}`",
                self.peer_identity
            )));
        }
        if let Ok(mut slot) = self.peer_certificate.lock() {
            *slot = Some(cert.clone());
        }
        Ok(cert)
    }

    /// Asks the peer for its encryption certificate page (the cheapest request its business
    /// port answers over mutual TLS): whether it answers, and its clock as its `date` header
    /// gives it (to the second), when it sends one.
    ///
    /// # Errors
    /// [`CallError`] as for a call.
    pub async fn probe(&self) -> Result<Option<OffsetDateTime>, CallError> {
        let r = self
            .http
            .request(Method::GET, ENCRYPTION_CERTIFICATE_PATH, &[], Vec::new())
            .await?;
        if r.status != 200 {
            return Err(status_error(&self.http.base, &r));
        }
        Ok(r.headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date))
    }

    /// Seals `body` as `message_type`, posts it, and opens the answer: signed by the peer,
    /// addressed to us, fresh, and carrying the message id `re:<our id>`.
    ///
    /// # Errors
    /// [`CallError`]; [`CallError::is_transient`] tells whether to retry.
    pub async fn call<T: Serialize>(
        &self,
        message_type: &str,
        body: &T,
    ) -> Result<Answer, CallError> {
        self.call_as(message_type, body, None).await
    }

    /// [`EnvelopeClient::call`] carrying the request id of the work it belongs to in
    /// `x-request-id`, so that one id follows a request across roles (logs, audit records).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn call_as<T: Serialize>(
        &self,
        message_type: &str,
        body: &T,
        request_id: Option<&str>,
    ) -> Result<Answer, CallError> {
        let now = now();
        let recipient = self.peer_certificate(now).await?;
        let payload = serde_json::to_vec(&Request {
            reply_certificate: b64(self.me.encryption_certificate().der()),
            body,
        })
        .map_err(|e| CallError::Local(e.to_string()))?;
        let id = new_id();
        let message = Message {
            header: Header {
                protocol_version: PROTOCOL_VERSION,
                sender: self.me.identity().to_owned(),
                recipient: self.peer_identity.clone(),
                message_type: message_type.to_owned(),
                message_id: id.clone(),
                created_at: now.replace_nanosecond(0).unwrap_or(now),
            },
            payload,
        };
        let sealed = tracing::debug_span!("envelope.seal")
            .in_scope(|| seal(&self.me, &recipient, &message, &mut system_rng()))
            .map_err(|e| CallError::Local(e.to_string()))?;
        let mut headers = vec![("content-type", ENVELOPE_CONTENT_TYPE.to_owned())];
        if let Some(id) = request_id {
            headers.push(("x-request-id", id.to_owned()));
        }
        let r = self
            .http
            .request(Method::POST, ENVELOPE_PATH, &headers, sealed)
            .await?;
        if r.status != 200 {
            return Err(status_error(&self.http.base, &r));
        }
        let opened = tracing::debug_span!("envelope.open")
            .in_scope(|| {
                Opener::new(&self.me, &self.trust.current(), &self.replay)
                    .open(&r.body, crate::client::now())
            })
            .map_err(|e| self.bad(format!("answer envelope: {e}")))?;
        let h = &opened.message.header;
        if h.sender != self.peer_identity {
            return Err(self.bad(format!("answer signed by `{}`", h.sender)));
        }
        if h.message_id != format!("re:{id}") {
            return Err(self.bad("answer is not for this request"));
        }
        Ok(Answer {
            message_type: h.message_type.clone(),
            payload: opened.message.payload,
        })
    }
}

fn status_error(peer: &str, r: &Response) -> CallError {
    let code = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).chars().take(200).collect());
    CallError::Status {
        peer: peer.to_owned(),
        status: r.status,
        code,
    }
}

/// The answer header for a request: from `me` to the request's sender, message id
/// `re:<request id>`.
#[must_use]
pub fn answer_header(me: &LocalParty, request: &Header, message_type: &str) -> Header {
    let now = now();
    Header {
        protocol_version: PROTOCOL_VERSION,
        sender: me.identity().to_owned(),
        recipient: request.sender.clone(),
        message_type: message_type.to_owned(),
        message_id: format!("re:{}", request.message_id),
        created_at: now.replace_nanosecond(0).unwrap_or(now),
    }
}

/// Whether an answer is a refusal, and which.
#[must_use]
pub fn refusal_code(answer: &Answer) -> Option<Code> {
    if answer.message_type != message_type::REFUSAL {
        return None;
    }
    serde_json::from_slice::<crate::wire::Refusal>(&answer.payload)
        .ok()
        .and_then(|r| r.code())
}

/// An HTTP `date` header (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
#[must_use]
pub fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn http_dates_parse_and_others_do_not() {
        let t = super::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap_or_else(|| {
            panic!("IMF-fixdate");
        });
        assert_eq!(t.unix_timestamp(), 784_111_777);
        assert!(super::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
        assert!(super::parse_http_date("1994-11-06T08:49:37Z").is_none());
    }
}
