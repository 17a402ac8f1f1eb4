//! The operations side every role serves on its admin port — `/healthz` (the process is up),
//! `/readyz` (not stopping, the database takes a write, certificates valid for more than
//! [`CERTIFICATE_MARGIN_DAYS`], peers answering — see [`crate::Health`] — and the role's own
//! checks such as an outbox that is not stuck), `/livez` (the process),
//! `/metrics` (Prometheus text) — and the request-duration middleware for every router.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fapiao_crypto::Role;
use serde::Serialize;
use time::OffsetDateTime;

use crate::Material;
use crate::metrics::{Gauge, Registry};

/// Certificates expiring sooner than this make a role not ready.
pub const CERTIFICATE_MARGIN_DAYS: i64 = 14;

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Whether it counts for readiness (a peer the role can work without is reported,
    /// not counted).
    pub required: bool,
    /// The figure or the problem.
    pub detail: String,
}

impl Check {
    /// A required check.
    #[must_use]
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok,
            required: true,
            detail: detail.into(),
        }
    }
}

/// What a role reports to `/readyz` and `/metrics` beyond its counters.
pub trait Readiness: Send + Sync + 'static {
    /// The role's checks ([`crate::Health::checks`] and its own, such as an outbox that is
    /// not stuck).
    fn checks(&self) -> impl Future<Output = Vec<Check>> + Send;
    /// Gauges computed from stored state.
    fn gauges(&self) -> impl Future<Output = Vec<Gauge>> + Send;
    /// The role's health (its peers' gauges are exported with the role's).
    fn health(&self) -> &crate::Health;
}

/// Every certificate of the role's material is valid for more than
/// [`CERTIFICATE_MARGIN_DAYS`] from `now`.
#[must_use]
pub fn certificate_check(material: &Material, now: OffsetDateTime) -> Check {
    let soonest = [
        material.party.signing_certificate(),
        material.party.encryption_certificate(),
        material.tls_server.leaf(),
        material.tls_client.leaf(),
    ]
    .iter()
    .map(|c| c.not_after())
    .min();
    match soonest {
        Some(t) => {
            let days = (t - now).whole_days();
            Check::new(
                "certificates",
                days > CERTIFICATE_MARGIN_DAYS,
                format!("the first expires in {days} days"),
            )
        }
        None => Check::new("certificates", false, "no certificate"),
    }
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    role: &'static str,
    checks: Vec<Check>,
}

/// The routes an admin port answers without a client certificate: liveness and readiness,
/// for load balancers' and orchestrators' probes (they say whether the role can serve, and
/// why not; nothing of its data).
pub const PROBES: &[&str] = &["/healthz", "/livez", "/readyz"];

/// What a person's certificate allows at an admin port: an [`Role::Operator`] everything,
/// an [`Role::Auditor`] what reads (`GET`, `HEAD`), a [`Role::Monitor`] `GET /metrics`; the
/// roles' service certificates (cloud, platform, tax, agents, devices) nothing.
#[must_use]
pub fn admin_allows(role: Role, method: &axum::http::Method, path: &str) -> bool {
    let reads = *method == axum::http::Method::GET || *method == axum::http::Method::HEAD;
    match role {
        Role::Operator => true,
        Role::Auditor => reads,
        Role::Monitor => reads && path == "/metrics",
        _ => false,
    }
}

/// Middleware of an admin port whose TLS asks for a client certificate without requiring one:
/// [`PROBES`] answer anyone; everything else needs the certificate of a person the route
/// allows ([`admin_allows`]): none is 401 `peer_certificate_required`, any other 403
/// `forbidden`.
pub async fn require_admin(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if PROBES.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let rid = crate::error::request_id(req.headers());
    let Some(peer) = req.extensions().get::<crate::PeerIdentity>() else {
        return crate::ApiError::new(
            fapiao_protocol::Code::PeerCertificateRequired,
            "an operator's, auditor's or monitor's client certificate is required on the admin \
             port (only /healthz, /livez and /readyz answer without one)",
            &rid,
        )
        .into_response();
    };
    if !admin_allows(peer.role, req.method(), &path) {
        tracing::warn!(request_id = %rid, peer = %peer.identity(), method = %req.method(), path,
            "admin request refused");
        let why = if peer.role.is_person() {
            format!("{} may not {} {path}", peer.identity(), req.method())
        } else {
            format!(
                "{} is a service certificate: admin ports answer operators, auditors and monitors",
                peer.identity()
            )
        };
        return crate::ApiError::new(fapiao_protocol::Code::Forbidden, why, &rid).into_response();
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        tracing::info!(request_id = %rid, operator = %peer.identity(), method = %req.method(),
            path, "admin action");
    }
    next.run(req).await
}

/// `/healthz` (`/livez`), `/readyz` and `/metrics` for a role.
pub fn admin_routes<R: Readiness>(
    role: &'static str,
    readiness: Arc<R>,
    registry: Arc<Registry>,
) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(move || async move { axum::Json(serde_json::json!({ "status": "up", "role": role })) }),
        )
        .route(
            "/livez",
            get(move || async move { axum::Json(serde_json::json!({ "status": "up", "role": role })) }),
        )
        .route(
            "/readyz",
            get(move |State((r, _)): State<(Arc<R>, Arc<Registry>)>| async move {
                let checks = r.checks().await;
                let ok = ready(&checks);
                let body = Ready {
                    status: if ok { "ready" } else { "not_ready" },
                    role,
                    checks,
                };
                let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, axum::Json(body)).into_response()
            }),
        )
        .route(
            "/metrics",
            get(|State((r, reg)): State<(Arc<R>, Arc<Registry>)>| async move {
                let mut gauges = r.gauges().await;
                gauges.extend(check_gauges(&r.checks().await));
                gauges.extend(r.health().gauges());
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    reg.render(&gauges),
                )
            }),
        )
        .with_state((readiness, registry))
}

/// Whether every required check passed.
#[must_use]
pub fn ready(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok || !c.required)
}

/// `fapiao_ready` (what `/readyz` answers, 1 or 0) and `fapiao_check_ok{check}` per check,
/// so that alerts need no probe of their own.
fn check_gauges(checks: &[Check]) -> Vec<Gauge> {
    let mut out = vec![Gauge {
        name: "fapiao_ready",
        help: "Whether /readyz answers ready (1) or not (0).",
        labels: Vec::new(),
        value: if ready(checks) { 1.0 } else { 0.0 },
    }];
    out.extend(checks.iter().map(|c| Gauge {
        name: "fapiao_check_ok",
        help: "Each readiness check: passed (1) or not (0).",
        labels: vec![("check", c.name.clone())],
        value: if c.ok { 1.0 } else { 0.0 },
    }));
    out
}

/// Records `fapiao_http_request_duration_seconds{route, method, status}` for every request of
/// `router` (route = the matched pattern, so numbers in paths do not explode the series).
pub fn track(router: Router, registry: Arc<Registry>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(registry, record))
}

async fn record(State(registry): State<Arc<Registry>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    #[expect(
        clippy::disallowed_methods,
        reason = "a request's duration, not a point in time"
    )]
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    registry.observe(
        "fapiao_http_request_duration_seconds",
        "HTTP request duration by route, method and status.",
        &[("route", &route), ("method", &method), ("status", &status)],
        start.elapsed(),
    );
    response
}
