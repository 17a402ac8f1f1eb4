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
