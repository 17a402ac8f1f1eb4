//! The ERP API (`/v1`), see `docs/openapi.json`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use endpoints::{
    create_endpoint, delete_endpoint, get_endpoint, list_deliveries, list_endpoints, ping_endpoint,
    resend_delivery,
};
use fapiao_crypto::envelope::ReplayGuard as _;
use fapiao_issuer::verify;
use fapiao_model::InvoiceKind;
use fapiao_protocol::Code;
use fapiao_protocol::client::{CallError, now};
use fapiao_protocol::erp::{self, hex};
use fapiao_protocol::wire::{
    BatchAnswer, FormWire, IssueBatch, IssueOrder, OrderAnswer, QueuedOrder, RedOrder,
    RedScopeWire, Refusal, SignedReceipt, StatusNotice, TaxStatus, WireInvoice, message_type,
};
use fapiao_service::ApiError;
use fapiao_service::error::request_id;
use fapiao_store::{
    Answer, Arrival, ArrivalState, Row, Sql, StoreError, Waiting, query, query_scalar,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::Cloud;

mod batch;
mod endpoints;
mod error;
mod files;
mod invoices;
mod issue;
mod read;
mod red;
mod signed;
mod view;

pub(crate) use batch::*;
pub use endpoints::MAX_ENDPOINTS;
pub(crate) use error::*;
pub(crate) use files::*;
pub(crate) use invoices::*;
pub(crate) use issue::*;
pub(crate) use read::*;
pub(crate) use red::*;
pub(crate) use view::*;
pub use view::{InvoicePage, InvoiceSummary, InvoiceView, RedRef};

/// Largest ERP request body by default (`[limits] max_body_bytes`).
pub const MAX_BODY: usize = 256 * 1024;

pub(crate) fn routes(cloud: Cloud) -> Router {
    let max_body = cloud.inner.options.max_body_bytes;
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tax-codes", get(tax_codes))
        .route("/v1/invoices", post(issue).get(list))
        .route("/v1/invoices/batch", post(batch))
        .route("/v1/invoices/{number}", get(get_one))
        .route("/v1/invoices/{number}/red", post(red))
        .route("/v1/invoices/{number}/xml", get(xml))
        .route("/v1/invoices/{number}/pdf", get(pdf))
        .route("/v1/invoices/{number}/ofd", get(ofd))
        .route("/v1/invoices/{number}/zip", get(zip))
        .route("/v1/orders/{order_id}", get(crate::queue::order_status))
        .route(
            "/v1/webhook-endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(get_endpoint).delete(delete_endpoint),
        )
        .route("/v1/webhook-endpoints/{id}/ping", post(ping_endpoint))
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries/{delivery}/resend",
            post(resend_delivery),
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(cloud)
}

/// The official tax classification table, for an ERP choosing its items' codes.
static CATALOG: std::sync::LazyLock<fapiao_model::TaxCatalog> =
    std::sync::LazyLock::new(fapiao_model::TaxCatalog::builtin);

#[derive(Deserialize)]
struct TaxCodeQuery {
    q: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/tax-codes?q=…&limit=…`: codes of the official table by code prefix, or by words of
/// their name, 简称 or keywords — leaves (what an invoice may use) first. Public: the table is.
async fn tax_codes(headers: HeaderMap, Query(q): Query<TaxCodeQuery>) -> Response {
    let rid = request_id(&headers);
    let Some(text) = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) else {
        return ApiError::new(
            Code::InvalidRequest,
            "q: a code prefix or words of a name (e.g. q=苹果)",
            rid,
        )
        .into_response();
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return ApiError::new(Code::InvalidRequest, "limit: 1 to 200", rid).into_response();
    }
    let items: Vec<serde_json::Value> = CATALOG
        .search(text, limit)
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "code": e.code.as_str(),
                "name": e.name,
                "short_name": e.short_name,
                "rates": e.rates.iter().map(|r| r.code()).collect::<Vec<_>>(),
                "default_rate": e.default_rate.map(fapiao_model::TaxRate::code),
                "leaf": !e.group,
                "description": e.description,
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "catalog_version": CATALOG.version(),
        "items": items,
    }))
    .into_response()
}

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI,
    )
        .into_response()
}

/// `code` (422) with one finding.
fn one_problem(code: Code, rid: &str, path: String, finding: &str, message: String) -> ApiError {
    let mut e = ApiError::new(code, "the request has 1 problem(s)", rid);
    e.findings.push(fapiao_protocol::wire::FindingWire {
        path,
        code: finding.into(),
        message,
    });
    e
}

/// Refuses a body whose objects repeat a key: `code` with a finding at the repeated key's
/// path (a lenient read would keep the last copy silently).
pub(crate) fn no_repeated_keys(body: &[u8], code: Code, rid: &str) -> Result<(), ApiError> {
    match fapiao_protocol::strict::duplicate_key(body) {
        Some(path) => Err(one_problem(
            code,
            rid,
            path,
            "malformed_document",
            "appears twice in its object; give each key once".into(),
        )),
        None => Ok(()),
    }
}

/// A body's JSON read strictly into `T`: an object repeating a key, a missing field or a value
/// of the wrong kind is `code` (`invalid_order`, `red_invalid`, … — 422) with one finding at
/// its path, in the document's words (not the server's type names).
pub(crate) fn strict_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    code: Code,
    rid: &str,
) -> Result<T, ApiError> {
    let refuse = |path: String, finding: &str, message: String| {
        one_problem(code, rid, path, finding, message)
    };
    no_repeated_keys(body, code, rid)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = fapiao_model::json::path(e.path());
        let inner = e.into_inner();
        let message = fapiao_model::json::plain_message(&inner.to_string());
        // `missing field `x``: the path is the field's, not its object's.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            let path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            return refuse(path, "required", "is required".into());
        }
        if inner.is_syntax() || inner.is_eof() {
            return refuse(
                String::new(),
                "malformed_document",
                format!("not JSON: {message}"),
            );
        }
        let finding = if message.starts_with("unknown field") {
            "unknown_field"
        } else {
            "malformed_document"
        };
        refuse(path, finding, message)
    })
}

/// A JSON answer with its status and the request id, or the error.
fn answer(outcome: Result<(StatusCode, Json), ApiError>, rid: String) -> Response {
    match outcome {
        Ok((status, v)) => (
            status,
            [(fapiao_service::error::REQUEST_ID_HEADER, rid)],
            axum::Json(v),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T, rid: &str) -> Result<Json, ApiError> {
    serde_json::value::to_raw_value(v).map_err(|e| internal(rid, &e))
}

/// A JSON answer body, serialized once (not a `serde_json::Value` tree).
pub(crate) type Json = Box<serde_json::value::RawValue>;
