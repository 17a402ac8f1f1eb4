//! JSON error responses with a stable code, a message, the request id and, for validation,
//! every finding.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fapiao_protocol::Code;
use fapiao_protocol::wire::{FindingWire, Refusal};
use serde::Serialize;

/// Header carrying the request id across roles.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An error answer.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    /// Stable code.
    pub code: &'static str,
    /// Human-readable message (no personal data).
    pub message: String,
    /// The request id.
    pub request_id: String,
    /// Whether retrying the same request later may succeed.
    pub retryable: bool,
    /// Validation findings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingWire>,
    #[serde(skip)]
    status: u16,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code`'s HTTP status.
    #[must_use]
    pub fn new(code: Code, message: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            code: code.as_str(),
            message: message.into(),
            request_id: request_id.into(),
            retryable: code.retryable(),
            findings: Vec::new(),
            status: code.http_status(),
            retry_after: code.retryable().then_some(1),
        }
    }

    /// From a refusal received from another role (unknown codes become `internal`).
    #[must_use]
    pub fn from_refusal(refusal: Refusal, request_id: impl Into<String>) -> Self {
        let code = refusal.code().unwrap_or(Code::Internal);
        Self {
            findings: refusal.findings,
            ..Self::new(code, refusal.message, request_id)
        }
    }

    /// Sets `Retry-After` (seconds).
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID_HEADER, v);
        }
        if let Some(s) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        (status, headers, axum::Json(self)).into_response()
    }
}

/// Middleware every listener of every role runs: one request id per request (the client's
/// `x-request-id` when well-formed, else a fresh one, put back into the request so every
/// handler logs the same), `x-request-id` on every response, and every non-2xx answer in the
/// one documented shape — the JSON error with a stable code and the request id — including
/// what the router and extractors answer on their own (an unknown path 404 `not_found`, a
/// method the path lacks 405 `method_not_allowed`, a body over the limit 413
/// `request_too_large`, a body that does not parse 400 `invalid_request` with the reason).
pub async fn one_shape(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let rid = request_id(req.headers());
    if let Ok(v) = HeaderValue::from_str(&rid) {
        req.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let res = next.run(req).await;
    let status = res.status();
    // A JSON error or an HTML page (the portal's, for people) stays as it is; an empty or
    // plain-text answer (the router's, an extractor's) becomes the JSON error.
    let bare = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| c.starts_with("text/plain"));
    let mut res = if (status.is_client_error() || status.is_server_error()) && bare {
        let allow = res.headers().get(axum::http::header::ALLOW).cloned();
        let (parts, body) = res.into_parts();
        let said = axum::body::to_bytes(body, 4096)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let (code, message) = match parts.status.as_u16() {
            404 => (Code::NotFound, format!("no such resource: {method} {path}")),
            405 => (
                Code::MethodNotAllowed,
                format!("{method} is not allowed on {path}"),
            ),
            413 => (
                Code::RequestTooLarge,
                "the request body is over the limit".to_owned(),
            ),
            401 => (Code::PeerCertificateRequired, said),
            403 => (Code::Forbidden, said),
            429 => (Code::RateLimited, said),
            s if s >= 500 => (Code::Internal, "internal error".to_owned()),
            _ if said.is_empty() => (
                Code::InvalidRequest,
                "the request is not acceptable".to_owned(),
            ),
            _ => (Code::InvalidRequest, said),
        };
        let mut e = ApiError::new(code, message, &rid);
        e.status = parts.status.as_u16();
        let mut out = e.into_response();
        if let Some(a) = allow {
            out.headers_mut().insert(axum::http::header::ALLOW, a);
        }
        out
    } else {
        res
    };
    if !res.headers().contains_key(REQUEST_ID_HEADER)
        && let Ok(v) = HeaderValue::from_str(&rid)
    {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    // A body over the limit was not read to its end: the connection cannot carry another
    // request, and the client is told so rather than finding out on its next one.
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        res.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    res
}

/// The request id of a request: its `x-request-id` header when well-formed (1–64 of
/// `[A-Za-z0-9_-]`), else a fresh one.
#[must_use]
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(fapiao_protocol::client::new_id, str::to_owned)
}
