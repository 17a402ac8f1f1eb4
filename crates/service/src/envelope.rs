//! The envelope endpoint every role serves: `POST /v1/envelope` takes a sealed request,
//! opens and checks it, hands the verified message to the role's [`EnvelopeHandler`], and
//! answers with the handler's answer sealed to the sender. `GET /v1/envelope/certificate`
//! publishes the role's encryption certificate.
//!
//! Checks, in order, before the handler runs: the envelope opens (`fapiao_crypto` Opener: the
//! ten checks of `docs/security.md`, the replay check against the ids this process has seen);
//! the message id was not seen before, persistently (the role's store); the TLS client
//! certificate names the same holder as the envelope's signer; the reply certificate is valid
//! for encryption and names the signer. A failure there is an HTTP error with the envelope's
//! peer code (there is no one to seal to). An unsupported protocol version, and every refusal
//! by the handler, is a sealed, signed answer.
//!
//! A handler may take the persistent replay check upon its own first write transaction
//! ([`EnvelopeHandler::remembers_in_transaction`]): the id is then remembered in the commit
//! that records what the message did, or, when nothing was written, in a commit of its own
//! before the answer is sealed. A replay is refused either way.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fapiao_crypto::envelope::{LocalParty, MemoryReplayGuard, Message, OpenError, Opener, seal};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{Certificate, LiveTrust, Subject};
use fapiao_protocol::Code;
use fapiao_protocol::client::{
    ENCRYPTION_CERTIFICATE_PATH, ENVELOPE_CONTENT_TYPE, ENVELOPE_PATH, answer_header, now,
};
use fapiao_protocol::wire::{PROTOCOL_VERSION, Refusal, Request, message_type};
use fapiao_store::{Arrival, Db};
use serde::Serialize;

use crate::PeerIdentity;
use crate::error::{ApiError, request_id};

/// Largest envelope accepted.
pub const MAX_ENVELOPE: usize = 4 * 1024 * 1024;

/// A verified request.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The verified message (header and raw payload).
    pub message: Message,
    /// The sender's signing certificate.
    pub signer: Certificate,
    /// The sender.
    pub sender: Subject,
    /// The request body (the `body` of the [`Request`] payload), as the JSON text it came
    /// in: read once, into the type the handler asks for ([`Incoming::body`]).
    pub body: Box<serde_json::value::RawValue>,
    /// The request id.
    pub request_id: String,
    /// The message as the replay guard remembers it. When the handler takes it upon itself
    /// ([`EnvelopeHandler::remembers_in_transaction`]), its first write transaction for the
    /// message is begun with [`Db::begin_write_for`] on it.
    pub arrival: Arrival,
}

impl Incoming {
    /// The body as `T`, or an `invalid_request` refusal.
    ///
    /// # Errors
    /// The refusal to answer with.
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, Outgoing> {
        serde_json::from_str(self.body.get()).map_err(|e| {
            Outgoing::refusal(&Refusal::new(
                Code::InvalidRequest,
                format!("{} body: {e}", self.message.header.message_type),
            ))
        })
    }
}

/// An answer to seal.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its message type.
    pub message_type: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Outgoing {
    /// An answer of `message_type` with `body` as JSON.
    #[must_use]
    pub fn json<T: Serialize>(message_type: &str, body: &T) -> Self {
        Self {
            message_type: message_type.to_owned(),
            payload: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A refusal.
    #[must_use]
    pub fn refusal(refusal: &Refusal) -> Self {
        Self::json(message_type::REFUSAL, refusal)
    }
}

/// What a role does with a verified request.
pub trait EnvelopeHandler: Send + Sync + 'static {
    /// Handles it and returns the answer.
    fn handle(&self, incoming: Incoming) -> impl Future<Output = Outgoing> + Send;

    /// Whether the handler remembers messages of `message_type` in its own first write
    /// transaction for them ([`Db::begin_write_for`] with [`Incoming::arrival`]), so that the
    /// id becomes durable in the same commit as what the message did. Otherwise (the
    /// default) the id is remembered before the handler runs, in a commit of its own. Either
    /// way a message is answered only once its id is durably remembered — after the handler,
    /// in a commit of its own, when no transaction of the handler remembered it — and a
    /// replay is refused.
    fn remembers_in_transaction(&self, message_type: &str) -> bool {
        let _ = message_type;
        false
    }
}

/// A sender whose envelope's time is further than this from ours is logged (WARN).
const CLOCK_WARN_SECONDS: i64 = 30;

/// A role's envelope material and persistent replay guard.
pub struct Envelopes {
    registry: Arc<crate::metrics::Registry>,
    me: Arc<LocalParty>,
    trust: LiveTrust,
    db: Db,
    memory: MemoryReplayGuard,
    encryption_pem: String,
}

impl std::fmt::Debug for Envelopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelopes")
            .field("me", &self.me.identity())
            .finish_non_exhaustive()
    }
}

impl Envelopes {
    /// The endpoint's state.
    ///
    /// # Errors
    /// A PEM encoding failure of the encryption certificate.
    pub fn new(
        me: Arc<LocalParty>,
        trust: LiveTrust,
        db: Db,
        registry: Arc<crate::metrics::Registry>,
    ) -> Result<Self, fapiao_crypto::CertError> {
        let encryption_pem = me.encryption_certificate().to_pem()?;
        Ok(Self {
            registry,
            me,
            trust,
            db,
            memory: MemoryReplayGuard::new(),
            encryption_pem,
        })
    }

    /// The routes, with `handler` behind them.
    pub fn routes<H: EnvelopeHandler>(self: Arc<Self>, handler: Arc<H>) -> Router {
        Router::new()
            .route(
                ENVELOPE_PATH,
                post(
                    |State((env, handler)): State<(Arc<Self>, Arc<H>)>,
                     peer: Option<PeerIdentity>,
                     headers: HeaderMap,
                     body: axum::body::Body| async move {
                        // Who is calling before a byte of the body is read: a client
                        // without a certificate costs no more than its headers.
                        let rid = request_id(&headers);
                        let Some(peer) = peer else {
                            return ApiError::new(
                                Code::PeerCertificateRequired,
                                "a client certificate of a Fapiao role is required",
                                rid,
                            )
                            .into_response();
                        };
                        let Ok(body) = axum::body::to_bytes(body, MAX_ENVELOPE).await else {
                            return ApiError::new(
                                Code::EnvelopeMalformed,
                                format!("an envelope is at most {MAX_ENVELOPE} bytes"),
                                rid,
                            )
                            .into_response();
                        };
                        env.receive(&*handler, peer, &headers, &body).await
                    },
                ),
            )
            .route(
                ENCRYPTION_CERTIFICATE_PATH,
                get(|State((env, _)): State<(Arc<Self>, Arc<H>)>| async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
                        env.encryption_pem.clone(),
                    )
                }),
            )
            .with_state((self, handler))
    }

    async fn receive<H: EnvelopeHandler>(
        &self,
        handler: &H,
        peer: PeerIdentity,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let rid = request_id(headers);
        let now = now();
        // The signer must be the TLS peer, checked before any id is remembered (in memory or
        // in the database): a peer presenting someone else's captured envelope must not use up
        // its id and so block the real sender's delivery.
        let presenter = peer.identity();
        // The trust now: a CRL reloaded since the last envelope is in force for this one.
        let trust = self.trust.current();
        let opener = Opener::new(&self.me, &trust, &self.memory)
            .versions(0..=u16::MAX)
            .presented_by(&presenter);
        let opened = match tracing::debug_span!("envelope.open").in_scope(|| opener.open(body, now))
        {
            Ok(o) => o,
            Err(e) => return self.refuse_unopened(&e, &peer, &rid),
        };
        let header = &opened.message.header;
        // The sender's clock as its signed header shows it (plus the transit time): every
        // role sees its callers' clocks too, not only those it calls.
        let offset = header.created_at - now;
        self.registry.observe(
            "fapiao_envelope_sender_clock_offset_seconds",
            "How far senders' clocks are from ours (absolute; envelope time minus arrival).",
            &[],
            offset.unsigned_abs(),
        );
        if offset.whole_seconds().abs() > CLOCK_WARN_SECONDS {
            tracing::warn!(request_id = %rid, sender = %header.sender,
                offset_seconds = offset.whole_seconds(), "a sender's clock is off from ours");
        }
        let expires = header.created_at + Opener::DEFAULT_FRESHNESS + Opener::DEFAULT_FRESHNESS;
        let arrival = Arrival::new(&header.sender, &header.message_id, expires, now);
        let in_transaction = handler.remembers_in_transaction(&header.message_type);
        if !in_transaction && let Err(refused) = self.remember(&arrival, &peer, &rid).await {
            return refused;
        }
        let request: Request<Box<serde_json::value::RawValue>> =
            match serde_json::from_slice(&opened.message.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(request_id = %rid, error = %e, "request payload unreadable");
                    self.failure("payload");
                    return ApiError::new(Code::EnvelopeRejected, "envelope rejected", rid)
                        .into_response();
                }
            };
        let reply_to = match request.reply_to(&opened.signer, &trust, now) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "reply certificate refused");
                self.failure("reply_certificate");
                return ApiError::new(Code::EnvelopeRejected, "envelope rejected", rid)
                    .into_response();
            }
        };
        let answer = if header.protocol_version == PROTOCOL_VERSION {
            handler
                .handle(Incoming {
                    signer: opened.signer.clone(),
                    sender: opened.signer_subject.clone(),
                    body: request.body,
                    request_id: rid.clone(),
                    message: opened.message.clone(),
                    arrival: arrival.clone(),
                })
                .await
        } else {
            self.failure("unsupported_version");
            Outgoing::refusal(&Refusal::new(
                Code::ProtocolVersionUnsupported,
                format!(
                    "protocol version {} is not supported (supported: {PROTOCOL_VERSION})",
                    header.protocol_version
                ),
            ))
        };
        if in_transaction && let Err(refused) = self.remember(&arrival, &peer, &rid).await {
            return refused;
        }
        let message = Message {
            header: answer_header(&self.me, header, &answer.message_type),
            payload: answer.payload,
        };
        let sealed = tracing::debug_span!("envelope.seal")
            .in_scope(|| seal(&self.me, &reply_to, &message, &mut system_rng()));
        match sealed {
            Ok(sealed) => (
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, ENVELOPE_CONTENT_TYPE)],
                sealed,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "sealing the answer failed");
                ApiError::new(Code::Internal, "internal error", rid).into_response()
            }
        }
    }

    /// Makes sure `arrival` is remembered ([`Db::remember`]); the refusal to answer with
    /// when it is a replay or the guard cannot be consulted.
    async fn remember(
        &self,
        arrival: &Arrival,
        peer: &PeerIdentity,
        rid: &str,
    ) -> Result<(), Response> {
        match self.db.remember(arrival).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let e = OpenError::Replayed {
                    sender: arrival.sender().to_owned(),
                    message_id: arrival.message_id().to_owned(),
                };
                Err(self.refuse_unopened(&e, peer, rid))
            }
            Err(e) => {
                tracing::error!(request_id = %rid, error = %e, "replay guard unavailable");
                Err(ApiError::new(Code::EnvelopeUnavailable, "try again", rid).into_response())
            }
        }
    }

    fn failure(&self, reason: &str) {
        self.registry.inc(
            "fapiao_envelope_failures_total",
            "Envelopes refused before their handler ran, by reason.",
            &[("reason", reason)],
        );
    }

    fn refuse_unopened(&self, e: &OpenError, peer: &PeerIdentity, rid: &str) -> Response {
        tracing::warn!(request_id = %rid, peer = %peer.identity(), error = %e, "envelope refused");
        // One label for every failure from key transport on (`OpenError::reason`): the
        // metrics tell nobody which check a crafted envelope failed. The log has the detail.
        self.failure(e.reason());
        let code = Code::parse(e.peer_code()).unwrap_or(Code::EnvelopeRejected);
        ApiError::new(code, code.description(), rid).into_response()
    }
}
