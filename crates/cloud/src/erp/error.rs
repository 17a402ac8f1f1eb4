//! The ERP API's error answers the handlers share.

use super::*;

/// An answer from platform that cannot be used (logged; the ERP may retry).
pub(crate) fn unusable(rid: &str, m: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(request_id = %rid, m = %m, "platform answer unusable");
    ApiError::new(
        Code::PlatformUnavailable,
        "the platform's answer was unusable; retry",
        rid,
    )
}

pub(crate) fn replayed(rid: &str) -> ApiError {
    ApiError::new(Code::RequestReplayed, "this nonce was already used", rid)
}

/// A write transaction that could not begin for an ERP request: its nonce spent before
/// (`request_replayed`), or an internal error.
pub(crate) fn not_begun(rid: &str, e: &StoreError) -> ApiError {
    match e {
        StoreError::Replayed { .. } => replayed(rid),
        e => internal(rid, e),
    }
}

pub(crate) fn internal(rid: &str, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(request_id = %rid, error = %e, "request failed");
    ApiError::new(Code::Internal, "internal error", rid)
}
