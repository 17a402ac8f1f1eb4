//! The ERP API (`/v1`), see `docs/openapi.json`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

/// Largest ERP request body by default (`[limits] max_body_bytes`).
pub const MAX_BODY: usize = 256 * 1024;

pub(crate) fn routes(cloud: Cloud) -> Router {
    let max_body = cloud.inner.options.max_body_bytes;
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/invoices", post(issue).get(list))
        .route("/v1/invoices/batch", post(batch))
        .route("/v1/invoices/{number}", get(get_one))
        .route("/v1/invoices/{number}/red", post(red))
        .route("/v1/invoices/{number}/xml", get(xml))
        .route("/v1/invoices/{number}/pdf", get(pdf))
        .route("/v1/orders/{order_id}", get(crate::queue::order_status))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(cloud)
}

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI,
    )
        .into_response()
}

/// An invoice as the ERP API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceView {
    /// 20-digit number.
    pub number: String,
    /// The enterprise's order id.
    pub order_id: String,
    /// `blue` or `red`.
    pub kind: String,
    /// For a red: the blue's number.
    pub blue_number: Option<String>,
    /// For a red: its red-letter form.
    pub form: Option<FormWire>,
    /// `yyyy-MM-dd HH:mm:ss` China time.
    pub issued_at: String,
    /// 价税合计.
    pub total: String,
    /// `pending`, `accepted` or `failed`.
    pub tax_status: TaxStatus,
    /// Why tax refused it.
    pub tax_reason: Option<String>,
    /// The signed invoice.
    pub invoice: WireInvoice,
    /// tax's signed receipt, once accepted.
    pub receipt: Option<SignedReceipt>,
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSummary {
    /// Number.
    pub number: String,
    /// Order id.
    pub order_id: String,
    /// `blue` or `red`.
    pub kind: String,
    /// Issue time.
    pub issued_at: String,
    /// Buyer's name (a natural person's masked: `王**`).
    pub buyer_name: String,
    /// Buyer's taxpayer id, or a natural person's identity number masked
    /// (`310115********1239`).
    pub buyer_id: Option<String>,
    /// 价税合计.
    pub total: String,
    /// Tax status.
    pub tax_status: TaxStatus,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePage {
    /// The invoices, newest first.
    pub items: Vec<InvoiceSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The blind-index label of buyer identifiers.
const BUYER_INDEX: &str = "invoices.buyer_index";

/// An answer from platform that cannot be used (logged; the ERP may retry).
fn unusable(rid: &str, m: &dyn std::fmt::Display) -> ApiError {
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

impl Cloud {
    /// Checks the ERP request signature and spends its nonce; returns the enterprise.
    pub(crate) async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        rid: &str,
    ) -> Result<String, ApiError> {
        let (enterprise, nonce) = self.signed(method, uri, headers, body, rid).await?;
        self.spend(&nonce, rid).await?;
        Ok(enterprise)
    }

    /// Checks the ERP request signature, its timestamp and the enterprise's rate, and that
    /// this process has not seen its nonce; returns the enterprise and the nonce, to be spent
    /// durably before the request is answered: by the write transaction that acts on the
    /// request ([`fapiao_store::Db::begin_write_for`]), or by [`Self::spend`].
    pub(crate) async fn signed(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        rid: &str,
    ) -> Result<(String, Arrival), ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let unauth = |m: &str| ApiError::new(Code::Unauthenticated, m, rid);
        let (Some(key), Some(ts), Some(nonce), Some(sig)) = (
            header(erp::KEY_HEADER),
            header(erp::TIMESTAMP_HEADER),
            header(erp::NONCE_HEADER),
            header(erp::SIGNATURE_HEADER),
        ) else {
            return Err(unauth(
                "sign the request: X-Fapiao-Key, X-Fapiao-Timestamp, X-Fapiao-Nonce, X-Fapiao-Signature",
            ));
        };
        let ts: i64 = ts
            .parse()
            .map_err(|_| unauth("X-Fapiao-Timestamp: Unix seconds"))?;
        if !erp::nonce_is_valid(nonce) {
            return Err(unauth("X-Fapiao-Nonce: 16 to 64 of [A-Za-z0-9_-]"));
        }
        let row = query("SELECT taxpayer_id, secret FROM enterprises WHERE key_id = $1")
            .bind(key)
            .fetch_optional(&mut *self.inner.db.read().await.map_err(|e| internal(rid, &e))?)
            .await
            .map_err(|e| internal(rid, &e))?;
        let Some(row) = row else {
            return Err(unauth("unknown key or bad signature"));
        };
        let enterprise: String = row.try_get("taxpayer_id").map_err(|e| internal(rid, &e))?;
        let secret: String = row.try_get("secret").map_err(|e| internal(rid, &e))?;
        let secret = self
            .inner
            .vault
            .unseal_str(&crate::SECRET.field(), &secret)
            .await
            .map_err(|e| internal(rid, &e))?;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        if !erp::verify(
            secret.as_bytes(),
            method.as_str(),
            path,
            ts,
            nonce,
            body,
            sig,
        ) {
            return Err(unauth("unknown key or bad signature"));
        }
        // Only a correctly signed request counts against the enterprise's rate: knowing a key
        // id is not enough to starve an enterprise.
        if let Err(wait) = self.inner.per_enterprise.check(&enterprise) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::new(
                Code::RateLimited,
                format!("too many requests for this enterprise; retry in {secs} s"),
                rid,
            )
            .with_retry_after(secs.max(1)));
        }
        let t = now();
        if (t.unix_timestamp() - ts).abs() > erp::WINDOW_SECONDS {
            return Err(ApiError::new(
                Code::RequestStale,
                format!(
                    "the timestamp is more than {} s from the server's clock",
                    erp::WINDOW_SECONDS
                ),
                rid,
            ));
        }
        let expires = time::OffsetDateTime::from_unix_timestamp(ts + 2 * erp::WINDOW_SECONDS)
            .map_err(|e| internal(rid, &e))?;
        let nonce = Arrival::new(format!("erp:{key}"), nonce, expires, t);
        let fresh = self
            .inner
            .nonces
            .check_and_remember(nonce.sender(), nonce.message_id(), expires, t)
            .map_err(|e| internal(rid, &e))?;
        if !fresh {
            return Err(replayed(rid));
        }
        Ok((enterprise, nonce))
    }

    /// Checks a request that may write ([`Self::signed`]), runs `act` on its enterprise and
    /// nonce, and answers once the nonce is durably spent ([`Self::spend`]) — by `act`'s write
    /// transaction, or after it.
    pub(crate) async fn signed_then<T>(
        &self,
        request: (&Method, &Uri, &HeaderMap, &[u8]),
        rid: &str,
        act: impl AsyncFnOnce(&str, &Arrival) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (method, uri, headers, body) = request;
        let (enterprise, nonce) = self.signed(method, uri, headers, body, rid).await?;
        let outcome = act(&enterprise, &nonce).await;
        self.spend(&nonce, rid).await?;
        outcome
    }

    /// Makes sure a request's nonce is durably spent before it is answered: at once when
    /// the request's write transaction spent it, else in a commit of its own (shared with
    /// concurrent requests). A nonce spent before is a replay.
    pub(crate) async fn spend(&self, nonce: &Arrival, rid: &str) -> Result<(), ApiError> {
        match self.inner.db.remember(nonce).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(replayed(rid)),
            Err(e) => Err(internal(rid, &e)),
        }
    }

    /// Whether the enterprise issues on its own premises (its orders wait for its agent),
    /// and the invoices stored for `order_ids`, by order id with their request hash: one
    /// query.
    async fn stored(
        &self,
        enterprise: &str,
        order_ids: &[&str],
    ) -> Result<(bool, HashMap<String, (String, InvoiceView)>), StoreError> {
        let rows = query(Sql::dialects(
            "SELECT e.hosting AS enterprise_hosting, i.*
             FROM enterprises e
             LEFT JOIN invoices i ON i.enterprise = e.taxpayer_id
                 AND i.order_id IN (SELECT value FROM jsonb_each($2))
             WHERE e.taxpayer_id = $1",
            "SELECT e.hosting AS enterprise_hosting, i.*
             FROM enterprises e
             LEFT JOIN invoices i ON i.enterprise = e.taxpayer_id
                 AND i.order_id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))
             WHERE e.taxpayer_id = $1",
        ))
        .bind(enterprise)
        .bind(serde_json::Value::from(order_ids).to_string())
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        let mut hosted = false;
        let mut stored = HashMap::new();
        for r in rows {
            hosted = r.try_get::<String, _>("enterprise_hosting")? == "enterprise";
            if r.try_get::<Option<String>, _>("number")?.is_some() {
                stored.insert(
                    r.try_get("order_id")?,
                    (r.try_get("request_hash")?, self.view(&r).await?),
                );
            }
        }
        Ok((hosted, stored))
    }

    /// One invoice of an enterprise.
    ///
    /// # Errors
    /// Database errors.
    pub async fn invoice(
        &self,
        enterprise: &str,
        number: &str,
    ) -> Result<Option<InvoiceView>, StoreError> {
        let row = query("SELECT * FROM invoices WHERE enterprise = $1 AND number = $2")
            .bind(enterprise)
            .bind(number)
            .fetch_optional(&mut *self.inner.db.read().await?)
            .await?;
        match row {
            Some(r) => Ok(Some(self.view(&r).await?)),
            None => Ok(None),
        }
    }

    /// Sends an order to platform and stores the issued invoice, spending the request's
    /// nonce in that transaction; the ERP's answer.
    #[expect(
        clippy::too_many_arguments,
        reason = "an order with its request's identity"
    )]
    async fn forward<T: Serialize>(
        &self,
        enterprise: &str,
        order_id: &str,
        request_hash: &str,
        kind: &str,
        body: &T,
        nonce: &Arrival,
        rid: &str,
    ) -> Result<InvoiceView, ApiError> {
        let answer: OrderAnswer = self
            .ask_platform(kind, body, message_type::ORDER_ANSWER, rid)
            .await?;
        let (invoice, tax_status, form) = match answer {
            OrderAnswer::Refused(r) => return Err(ApiError::from_refusal(r, rid)),
            OrderAnswer::Issued {
                order_id: o,
                invoice,
                tax_status,
                form,
            } => {
                if o != order_id {
                    return Err(unusable(rid, &format!("answer for order {o}")));
                }
                (invoice, tax_status, form)
            }
        };
        self.store_invoice(
            enterprise,
            order_id,
            request_hash,
            &invoice,
            tax_status,
            form,
            Some(nonce),
            rid,
        )
        .await
    }

    /// Sends a message to platform and reads its answer of type `expected`: a refusal becomes
    /// the ERP's error, no answer or an unusable one `platform_unavailable` (retryable: every
    /// order is idempotent).
    async fn ask_platform<T: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        body: &T,
        expected: &str,
        rid: &str,
    ) -> Result<A, ApiError> {
        let answer = self.inner.platform.call_as(kind, body, Some(rid)).await.map_err(|e| {
            tracing::warn!(request_id = %rid, error = %e, "platform call failed");
            match e {
                CallError::Local(_) => internal(rid, &e),
                _ => ApiError::new(
                    Code::PlatformUnavailable,
                    "the e-invoice service platform did not answer; retry with the same order_id",
                    rid,
                ),
            }
        })?;
        let peer = self.inner.platform.peer_identity().to_owned();
        match answer.message_type.as_str() {
            t if t == expected => answer.parse(&peer).map_err(|e| unusable(rid, &e)),
            message_type::REFUSAL => {
                let r: Refusal = answer.parse(&peer).map_err(|e| unusable(rid, &e))?;
                Err(ApiError::from_refusal(r, rid))
            }
            other => Err(unusable(rid, &format!("answer type {other}"))),
        }
    }

    /// Verifies an issued invoice (device signature and certificate path, seller) and stores
    /// it with its order (spending `nonce`, the ERP request's, in that transaction); the
    /// stored view. Storing the same invoice again changes nothing.
    #[expect(
        clippy::too_many_arguments,
        reason = "an invoice with its order and status"
    )]
    pub(crate) async fn store_invoice(
        &self,
        enterprise: &str,
        order_id: &str,
        request_hash: &str,
        invoice: &WireInvoice,
        tax_status: TaxStatus,
        form: Option<FormWire>,
        nonce: Option<&Arrival>,
        rid: &str,
    ) -> Result<InvoiceView, ApiError> {
        let issued = Issued {
            order_id: order_id.to_owned(),
            request_hash: request_hash.to_owned(),
            invoice: invoice.clone(),
            tax_status,
            form,
        };
        let signed = self.check_issued(enterprise, &issued.invoice, rid)?;
        let number = signed.invoice.number().as_str().to_owned();
        let storing = Storing {
            enterprise: enterprise.to_owned(),
            issued,
            signed,
            nonce: nonce.cloned(),
            rid: rid.to_owned(),
        };
        let cloud = self.clone();
        let stored = self
            .inner
            .db
            .grouped(
                &self.inner.storing,
                storing,
                |s| s.nonce.as_ref(),
                move |tx, group| async move { cloud.store_group(tx, group).await },
                |s, e| Err(not_begun(&s.rid, e)),
            )
            .await
            .unwrap_or_else(|| Err(internal(rid, &"the invoice's group ended unanswered")))?;
        match stored {
            Some(view) => Ok(view),
            None => self
                .invoice(enterprise, &number)
                .await
                .map_err(|e| internal(rid, &e))?
                .ok_or_else(|| internal(rid, &"stored invoice vanished")),
        }
    }

    /// Stores a group of single invoices in `tx` ([`Self::insert_issued`], per enterprise),
    /// commits, and answers each: the view of what was stored, `None` to read it back, or
    /// the error. A replayed request's invoice (its nonce found on record as the group began)
    /// is not stored.
    async fn store_group(&self, mut tx: fapiao_store::Tx, group: Vec<Waiting<Storing, Stored>>) {
        // Per invoice: where its answer goes, its request id, whether its request is a replay.
        let mut answers: Vec<(Answer<Stored>, String, bool)> = Vec::with_capacity(group.len());
        // Per enterprise, in order of first appearance: where its invoices' answers go.
        let mut by_enterprise: Vec<(String, Vec<usize>, Vec<Issued>, Vec<_>)> = Vec::new();
        for Waiting { job: s, answer } in group {
            let at = answers.len();
            // The group's transaction remembered every nonce it could (`Db::grouped`).
            let replay = s
                .nonce
                .as_ref()
                .is_some_and(|n| n.state() == ArrivalState::Replayed);
            answers.push((answer, s.rid, replay));
            if replay {
                continue;
            }
            match by_enterprise.iter_mut().find(|(e, ..)| *e == s.enterprise) {
                Some((_, ats, issued, signed)) => {
                    ats.push(at);
                    issued.push(s.issued);
                    signed.push(s.signed);
                }
                None => {
                    by_enterprise.push((s.enterprise, vec![at], vec![s.issued], vec![s.signed]))
                }
            }
        }
        let mut views: Vec<Option<InvoiceView>> = (0..answers.len()).map(|_| None).collect();
        let mut failed =
            crate::lock_enterprises(&mut tx, by_enterprise.iter().map(|(e, ..)| e.as_str()))
                .await
                .err()
                .map(|e| e.to_string());
        for (enterprise, ats, issued, signed) in by_enterprise.iter().filter(|_| failed.is_none()) {
            let rids: Vec<&str> = ats.iter().map(|at| answers[*at].1.as_str()).collect();
            match self
                .insert_issued(&mut tx, enterprise, issued, signed, &rids)
                .await
            {
                Ok(fresh) => {
                    for (at, view) in ats.iter().zip(fresh) {
                        views[*at] = view;
                    }
                }
                Err(e) => {
                    failed = Some(e.message);
                    break;
                }
            }
        }
        let failed = match failed {
            Some(m) => Some(m),
            None => tx
                .commit()
                .instrument(tracing::debug_span!("db.commit"))
                .await
                .err()
                .map(|e| e.to_string()),
        };
        if failed.is_none() {
            self.inner.wake.notify_one();
        }
        for ((answer, rid, replay), view) in answers.into_iter().zip(views) {
            let outcome = match (replay, &failed) {
                (true, _) => Err(replayed(&rid)),
                (false, Some(m)) => Err(internal(&rid, m)),
                (false, None) => Ok(view),
            };
            answer.send(outcome);
        }
    }

    /// Verifies issued invoices (device signature and certificate path, seller) and stores
    /// them with their orders in one transaction, which spends `nonce` (the ERP request's);
    /// their stored views, in order. Storing the same invoice again changes nothing.
    pub(crate) async fn store_invoices(
        &self,
        enterprise: &str,
        issued: Vec<Issued>,
        nonce: Option<&Arrival>,
        rid: &str,
    ) -> Result<Vec<InvoiceView>, ApiError> {
        let mut signed = Vec::with_capacity(issued.len());
        for i in &issued {
            signed.push(self.check_issued(enterprise, &i.invoice, rid)?);
        }
        let db = &self.inner.db;
        let mut tx = match nonce {
            Some(n) => db.begin_write_for(n).await,
            None => db.begin_write().await,
        }
        .map_err(|e| not_begun(rid, &e))?;
        crate::lock_enterprises(&mut tx, [enterprise])
            .await
            .map_err(|e| internal(rid, &e))?;
        let fresh = self
            .insert_issued(&mut tx, enterprise, &issued, &signed, &[rid])
            .await?;
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await
            .map_err(|e| internal(rid, &e))?;
        self.inner.wake.notify_one();
        // A new invoice's view is what was stored; one stored before, or that an early
        // notice changed, is read back.
        let mut views = Vec::with_capacity(signed.len());
        for (s, view) in signed.iter().zip(fresh) {
            let view = match view {
                Some(v) => v,
                None => self
                    .invoice(enterprise, s.invoice.number().as_str())
                    .await
                    .map_err(|e| internal(rid, &e))?
                    .ok_or_else(|| internal(rid, &"stored invoice vanished"))?,
            };
            views.push(view);
        }
        Ok(views)
    }

    /// An issued invoice checked: it parses, its device signature and certificate path
    /// verify, and its seller is the enterprise.
    pub(crate) fn check_issued(
        &self,
        enterprise: &str,
        invoice: &WireInvoice,
        rid: &str,
    ) -> Result<fapiao_issuer::SignedInvoice, ApiError> {
        let bad = |m: String| unusable(rid, &format!("issued invoice: {m}"));
        let signed = invoice.to_signed().map_err(|e| bad(e.to_string()))?;
        tracing::debug_span!("invoice.verify")
            .in_scope(|| verify(&signed, &self.inner.material.trust, now()))
            .map_err(|e| bad(e.to_string()))?;
        if signed.invoice.draft().seller().taxpayer_id.as_str() != enterprise {
            return Err(bad("invoice of another seller".into()));
        }
        Ok(signed)
    }

    /// Inserts checked invoices with their orders in the caller's transaction, in two round
    /// trips whatever their number: the invoices not stored before, then their orders queued
    /// for the agent marked issued, their webhooks queued, their audit entries, and the
    /// status notices that came before them taken. Per invoice, the view of what was just
    /// stored; `None` for one stored before (or repeated) or that an early notice changed.
    pub(crate) async fn insert_issued(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        issued: &[Issued],
        signed: &[fapiao_issuer::SignedInvoice],
        rids: &[&str],
    ) -> Result<Vec<Option<InvoiceView>>, ApiError> {
        // Each invoice's request id, or one for all; errors name the first.
        let rid_of = |k: usize| rids.get(k).or(rids.first()).copied().unwrap_or_default();
        let rid = rid_of(0);
        let mut rows = Vec::with_capacity(issued.len());
        for (i, s) in issued.iter().zip(signed) {
            rows.push(self.invoice_row(tx, enterprise, i, &s.invoice, rid).await?);
        }
        let inserted: std::collections::HashSet<String> = query_scalar(INSERT_ISSUED)
            .bind(serde_json::Value::Array(rows).to_string())
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| internal(rid, &e))?
            .into_iter()
            .collect();
        let mut fresh: Vec<Option<InvoiceView>> = Vec::with_capacity(issued.len());
        let mut new_numbers = Vec::new();
        let mut orders = Vec::with_capacity(issued.len());
        for (k, (i, s)) in issued.iter().zip(signed).enumerate() {
            let inv = &s.invoice;
            let number = inv.number().as_str();
            orders.push(serde_json::json!([i.order_id, number]));
            // The first of an invoice repeated in one batch is the one inserted.
            if !inserted.contains(number) || new_numbers.contains(&number) {
                fresh.push(None);
                continue;
            }
            new_numbers.push(number);
            let view = issued_view(i, inv);
            fapiao_store::audit::append(
                tx,
                now(),
                &format!("erp:{enterprise}"),
                "invoice.stored",
                number,
                &serde_json::json!({"order_id": i.order_id, "kind": view.kind, "request_id": rid_of(k)}),
            )
            .await
            .map_err(|e| internal(rid, &e))?;
            fresh.push(Some(view));
        }
        let early = query(STORED)
            .bind(enterprise)
            .bind(serde_json::Value::Array(orders).to_string())
            .bind(now().unix_timestamp())
            .bind(serde_json::json!(new_numbers).to_string())
            .bind("invoice.issued")
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| internal(rid, &e))?;
        for row in &early {
            let number: String = row.try_get("number").map_err(|e| internal(rid, &e))?;
            self.apply_early_notice(tx, enterprise, &number, row)
                .await
                .map_err(|e| internal(rid, &e))?;
            // Changed by the notice: read back.
            for (s, view) in signed.iter().zip(fresh.iter_mut()) {
                if s.invoice.number().as_str() == number {
                    *view = None;
                }
            }
        }
        Ok(fresh)
    }

    /// An invoice as a row of [`INSERT_ISSUED`], its record sealed.
    async fn invoice_row(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        issued: &Issued,
        inv: &fapiao_model::Invoice,
        rid: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let d = inv.draft();
        let json = zeroize::Zeroizing::new(
            serde_json::to_string(&issued.invoice).map_err(|e| internal(rid, &e))?,
        );
        let record = self
            .inner
            .vault
            .seal_str(tx, &crate::RECORD.field(), &json)
            .await
            .map_err(|e| internal(rid, &e))?;
        let buyer = d.buyer();
        let buyer_index = buyer
            .taxpayer_id
            .as_ref()
            .map(|t| t.as_str())
            .or_else(|| buyer.id_number.as_ref().map(|i| i.expose()))
            .map(|id| self.inner.vault.blind_index(BUYER_INDEX, id));
        let blue_number = red_of(inv);
        Ok(serde_json::json!([
            inv.number().as_str(),
            enterprise,
            issued.order_id,
            issued.request_hash,
            if blue_number.is_some() { "red" } else { "blue" },
            blue_number,
            issued
                .form
                .as_ref()
                .map(|f| serde_json::to_string(f).unwrap_or_default()),
            fapiao_model::datetime::format(inv.issued_at()),
            fapiao_model::mask::buyer_name(buyer),
            fapiao_model::mask::buyer_id(buyer),
            d.totals().total.to_string(),
            issued.tax_status.as_str(),
            record,
            buyer_index,
        ]))
    }

    /// A status notice that came before the invoice (kept by the notice handler, taken as
    /// the invoice is stored) applies to it now, exactly as it would have had it come after.
    async fn apply_early_notice(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        number: &str,
        early: &Row,
    ) -> Result<(), StoreError> {
        let unreadable = |c: &str| StoreError::Data(format!("early_notices.{c}"));
        let status: String = early.try_get("tax_status")?;
        let receipt: Option<String> = early.try_get("receipt")?;
        let notice = StatusNotice {
            number: number.to_owned(),
            enterprise: enterprise.to_owned(),
            tax_status: TaxStatus::parse(&status).ok_or_else(|| unreadable("tax_status"))?,
            reason: early.try_get("tax_reason")?,
            receipt: receipt
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|_| unreadable("receipt"))?,
            issued: None,
        };
        self.apply_notices_in(tx, &[&notice]).await
    }
}

/// Inserts invoices not stored before, from the JSON array `$1` of rows `[number,
/// enterprise, order_id, request_hash, kind, blue_number, form, issued_at, buyer_name,
/// buyer_id, total, tax_status, record, buyer_index]`; the numbers inserted.
const INSERT_ISSUED: Sql = Sql::dialects(
    "INSERT INTO invoices (number, enterprise, order_id, request_hash,
        kind, blue_number, form, issued_at, buyer_name, buyer_id, total, tax_status, record,
        buyer_index)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
        json_extract(value, '$[9]'), json_extract(value, '$[10]'), json_extract(value, '$[11]'),
        json_extract(value, '$[12]'), json_extract(value, '$[13]')
    FROM jsonb_each($1) WHERE true ORDER BY key
    ON CONFLICT (number) DO NOTHING
    RETURNING number",
    "INSERT INTO invoices (number, enterprise, order_id, request_hash,
        kind, blue_number, form, issued_at, buyer_name, buyer_id, total, tax_status, record,
        buyer_index)
    SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, v->>7, v->>8, v->>9, v->>10,
        v->>11, v->>12, v->>13
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(v, key) ORDER BY key
    ON CONFLICT (number) DO NOTHING
    RETURNING number",
);

/// After [`INSERT_ISSUED`], one round trip: the orders queued for the agent (`$2`, a JSON
/// array of `[order_id, number]` for every invoice, `$1` the enterprise, `$3` now) marked
/// issued, the new invoices' (`$4`) webhooks queued (`$5` the event, as
/// `crate::webhook::enqueue_sqlite!`), and status notices that came before them (kept by the notice
/// handler) taken, returned. On SQLite three statements; on PostgreSQL, which takes
/// parameters only in single statements, one of data-modifying `WITH` clauses.
const STORED: Sql = Sql::dialects(
    concat!(
        "UPDATE queued_orders SET state = 'issued',
            number = json_extract(q.value, '$[1]'), updated_at = $3
        FROM jsonb_each($2) q
        WHERE queued_orders.enterprise = $1 AND queued_orders.order_id = json_extract(q.value, '$[0]');",
        crate::webhook::enqueue_sqlite!(),
        "; DELETE FROM early_notices
         WHERE enterprise = $1 AND number IN (SELECT value FROM jsonb_each($4))
         RETURNING number, tax_status, tax_reason, receipt"
    ),
    concat!(
        "WITH issued_queued AS (
            UPDATE queued_orders SET state = 'issued', number = q.value->>1, updated_at = $3
            FROM jsonb_array_elements($2::jsonb) q
            WHERE queued_orders.enterprise = $1 AND queued_orders.order_id = q.value->>0
        ), webhooks_queued AS (",
        crate::webhook::enqueue_postgres!(),
        ") DELETE FROM early_notices
         WHERE enterprise = $1 AND number = ANY(ARRAY(SELECT jsonb_array_elements_text($4::jsonb)))
         RETURNING number, tax_status, tax_reason, receipt"
    ),
);

/// The invoices of enterprise `$1`, newest first, filtered by what is given (`NULL`: any):
/// issued from `$2` to `$3`, the buyer's blind index `$4` or a part `$5` of the buyer's
/// name, kind `$6`, tax status `$7`, older than the cursor `$8`; `$9` rows at most.
const LIST: Sql = Sql::dialects(
    "SELECT * FROM invoices WHERE enterprise = $1
        AND ($2 IS NULL OR issued_at >= $2) AND ($3 IS NULL OR issued_at <= $3)
        AND ($4 IS NULL OR buyer_index = $4 OR instr(buyer_name, $5) > 0)
        AND ($6 IS NULL OR kind = $6) AND ($7 IS NULL OR tax_status = $7)
        AND ($8 IS NULL OR seq < $8)
    ORDER BY seq DESC LIMIT $9",
    "SELECT * FROM invoices WHERE enterprise = $1
        AND ($2::text IS NULL OR issued_at >= $2) AND ($3::text IS NULL OR issued_at <= $3)
        AND ($4::text IS NULL OR buyer_index = $4 OR strpos(buyer_name, $5) > 0)
        AND ($6::text IS NULL OR kind = $6) AND ($7::text IS NULL OR tax_status = $7)
        AND ($8::bigint IS NULL OR seq < $8)
    ORDER BY seq DESC LIMIT $9",
);

/// The blue number a red invoice reverses.
fn red_of(inv: &fapiao_model::Invoice) -> Option<String> {
    match inv.draft().kind() {
        InvoiceKind::Red(r) => Some(r.blue_number.as_str().to_owned()),
        InvoiceKind::Blue => None,
    }
}

/// What was just stored for an invoice, as a read of the row would give it.
fn issued_view(issued: &Issued, inv: &fapiao_model::Invoice) -> InvoiceView {
    let blue_number = red_of(inv);
    InvoiceView {
        number: inv.number().as_str().to_owned(),
        order_id: issued.order_id.clone(),
        kind: if blue_number.is_some() { "red" } else { "blue" }.to_owned(),
        blue_number,
        form: issued.form.clone(),
        issued_at: fapiao_model::datetime::format(inv.issued_at()),
        total: inv.draft().totals().total.to_string(),
        tax_status: issued.tax_status,
        tax_reason: None,
        invoice: issued.invoice.clone(),
        receipt: None,
    }
}

/// A single issued invoice waiting for its group's transaction ([`Cloud::store_invoice`]),
/// checked.
pub(crate) struct Storing {
    enterprise: String,
    issued: Issued,
    signed: fapiao_issuer::SignedInvoice,
    nonce: Option<Arrival>,
    rid: String,
}

/// What storing an invoice answers: the stored view, `None` to read it back, or the error.
pub(crate) type Stored = Result<Option<InvoiceView>, ApiError>;

/// An invoice platform issued for an order, as cloud stores it.
pub(crate) struct Issued {
    pub(crate) order_id: String,
    pub(crate) request_hash: String,
    pub(crate) invoice: WireInvoice,
    pub(crate) tax_status: TaxStatus,
    pub(crate) form: Option<FormWire>,
}

impl Cloud {
    pub(crate) async fn view(&self, r: &Row) -> Result<InvoiceView, StoreError> {
        let dec = |c: &str| StoreError::Data(format!("invoices.{c}"));
        let status: String = r.try_get("tax_status")?;
        let form: Option<String> = r.try_get("form")?;
        let receipt: Option<String> = r.try_get("receipt")?;
        let record: String = r.try_get("record")?;
        let record = self
            .inner
            .vault
            .unseal_str(&crate::RECORD.field(), &record)
            .await
            .map_err(|e| StoreError::Data(e.to_string()))?;
        Ok(InvoiceView {
            number: r.try_get("number")?,
            order_id: r.try_get("order_id")?,
            kind: r.try_get("kind")?,
            blue_number: r.try_get("blue_number")?,
            form: form
                .map(|f| serde_json::from_str(&f))
                .transpose()
                .map_err(|_| dec("form"))?,
            issued_at: r.try_get("issued_at")?,
            total: r.try_get("total")?,
            tax_status: TaxStatus::parse(&status).ok_or_else(|| dec("tax_status"))?,
            tax_reason: r.try_get("tax_reason")?,
            invoice: serde_json::from_str(&record).map_err(|_| dec("record"))?,
            receipt: receipt
                .map(|x| serde_json::from_str(&x))
                .transpose()
                .map_err(|_| dec("receipt"))?,
        })
    }
}

fn body_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

async fn issue(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let outcome = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, nonce| issue_order(&cloud, enterprise, nonce, &body, &rid).await,
        )
        .await;
    answer(outcome, rid)
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

/// An authenticated order: stored before, queued for the enterprise's agent, or issued by
/// platform and stored.
async fn issue_order(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    body: &[u8],
    rid: &str,
) -> Result<(StatusCode, Json), ApiError> {
    let order: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("body is not JSON: {e}"), rid))?;
    let Some(order_id) = order
        .get("order_id")
        .and_then(|o| o.as_str())
        .map(str::to_owned)
    else {
        let mut e = ApiError::new(Code::InvalidOrder, "the order has 1 problem(s)", rid);
        e.findings.push(fapiao_protocol::wire::FindingWire {
            path: "order_id".into(),
            code: "required".into(),
            message: "order_id is required: it identifies the order for retries".into(),
        });
        return Err(e);
    };
    let hash = order_hash(&order, rid)?;
    let (hosted, mut stored) = cloud
        .stored(enterprise, &[&order_id])
        .await
        .map_err(|e| internal(rid, &e))?;
    if let Some((h, v)) = stored.remove(&order_id) {
        // Orders stored before the canonical hash carry the hash of the raw body.
        return if h == hash || h == body_hash(body) {
            Ok((StatusCode::OK, to_json(&v, rid)?))
        } else {
            Err(ApiError::new(
                Code::OrderConflict,
                format!(
                    "order_id {order_id} was already used with a different request; invoice {} stands",
                    v.number
                ),
                rid,
            ))
        };
    }
    let req = IssueOrder {
        enterprise: enterprise.to_owned(),
        order_id: order_id.clone(),
        order,
        request_hash: hash.clone(),
    };
    if hosted {
        return cloud
            .enqueue_order(enterprise, QueuedOrder::Blue(req), nonce, rid)
            .await;
    }
    let v = cloud
        .forward(
            enterprise,
            &order_id,
            &hash,
            message_type::ORDER_ISSUE,
            &req,
            nonce,
            rid,
        )
        .await?;
    tracing::info!(request_id = %rid, number = %v.number, "invoice issued");
    Ok((StatusCode::CREATED, to_json(&v, rid)?))
}

/// The idempotency hash of an order: hex SHA-256 of its canonical JSON (keys sorted, no
/// whitespace), so the same order sent alone or in a batch, re-indented or with its keys
/// reordered, is the same request.
fn order_hash(order: &serde_json::Value, rid: &str) -> Result<String, ApiError> {
    Ok(body_hash(
        &serde_json::to_vec(order).map_err(|e| internal(rid, &e))?,
    ))
}

/// The body of `POST /v1/invoices/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    orders: Vec<serde_json::Value>,
}

async fn batch(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let outcome = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, nonce| issue_batch(&cloud, enterprise, nonce, &body, &rid).await,
        )
        .await;
    answer(outcome.map(|v| (StatusCode::OK, v)), rid)
}

/// One order's result in a batch answer: its HTTP status as if sent alone, and the invoice
/// (201 issued, 200 issued before), the queued order (202) or the error.
#[derive(Serialize)]
struct BatchItem {
    order_id: Option<String>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    invoice: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ApiError>,
}

/// The answer to a batch: one result per order, in order.
#[derive(Serialize)]
struct BatchResults {
    results: Vec<Option<BatchItem>>,
}

fn batch_item(order_id: Option<&str>, outcome: Result<(StatusCode, Json), ApiError>) -> BatchItem {
    let mut item = BatchItem {
        order_id: order_id.map(str::to_owned),
        status: 0,
        invoice: None,
        order: None,
        error: None,
    };
    match outcome {
        Ok((status, v)) => {
            item.status = status.as_u16();
            if status == StatusCode::ACCEPTED {
                item.order = Some(v);
            } else {
                item.invoice = Some(v);
            }
        }
        Err(e) => {
            item.status = e.status();
            item.error = Some(e);
        }
    }
    item
}

/// Many blue orders in one signed request (at most [`IssueBatch::MAX`]). Every order is
/// treated as if it came alone — its own idempotency by `order_id`, validation, number,
/// device signature and upload to tax — but the batch travels to platform in one envelope and
/// is committed once on each side. The answer is `200` with one result per order, in order:
/// each order stored before, queued, or issued.
async fn issue_batch(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    body: &[u8],
    rid: &str,
) -> Result<Json, ApiError> {
    let batch: BatchBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("body: not a batch ({{\"orders\": [...]}}): {e}"),
            rid,
        )
    })?;
    if batch.orders.is_empty() || batch.orders.len() > IssueBatch::MAX {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "orders: a batch holds 1 to {} orders, not {}",
                IssueBatch::MAX,
                batch.orders.len()
            ),
            rid,
        ));
    }
    let order_ids: Vec<&str> = batch
        .orders
        .iter()
        .filter_map(|o| o.get("order_id").and_then(|o| o.as_str()))
        .collect();
    let (hosted, stored) = cloud
        .stored(enterprise, &order_ids)
        .await
        .map_err(|e| internal(rid, &e))?;
    let mut results: Vec<Option<BatchItem>> = (0..batch.orders.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, IssueOrder)> = Vec::new();
    for (i, order) in batch.orders.into_iter().enumerate() {
        let Some(order_id) = order
            .get("order_id")
            .and_then(|o| o.as_str())
            .map(str::to_owned)
        else {
            let mut e = ApiError::new(Code::InvalidOrder, "the order has 1 problem(s)", rid);
            e.findings.push(fapiao_protocol::wire::FindingWire {
                path: format!("orders[{i}].order_id"),
                code: "required".into(),
                message: "order_id is required: it identifies the order for retries".into(),
            });
            results[i] = Some(batch_item(None, Err(e)));
            continue;
        };
        let hash = order_hash(&order, rid)?;
        if let Some((h, v)) = stored.get(&order_id) {
            let outcome = if *h == hash {
                to_json(&v, rid).map(|v| (StatusCode::OK, v))
            } else {
                Err(ApiError::new(
                    Code::OrderConflict,
                    format!(
                        "order_id {order_id} was already used with a different request; invoice {} stands",
                        v.number
                    ),
                    rid,
                ))
            };
            results[i] = Some(batch_item(Some(&order_id), outcome));
            continue;
        }
        let req = IssueOrder {
            enterprise: enterprise.to_owned(),
            order_id: order_id.clone(),
            order,
            request_hash: hash,
        };
        if hosted {
            let outcome = cloud
                .enqueue_order(enterprise, QueuedOrder::Blue(req), nonce, rid)
                .await;
            results[i] = Some(batch_item(Some(&order_id), outcome));
            continue;
        }
        pending.push((i, req));
    }
    if !pending.is_empty() {
        let (slots, orders): (Vec<usize>, Vec<IssueOrder>) = pending.into_iter().unzip();
        let outcomes = cloud.forward_batch(enterprise, orders, nonce, rid).await?;
        let issued = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        for (slot, (order_id, outcome)) in slots.into_iter().zip(outcomes) {
            let outcome = outcome.and_then(|v| to_json(&v, rid).map(|v| (StatusCode::CREATED, v)));
            results[slot] = Some(batch_item(Some(&order_id), outcome));
        }
        tracing::info!(request_id = %rid, issued, "batch issued");
    }
    to_json(&BatchResults { results }, rid)
}

impl Cloud {
    /// Sends orders to platform in one envelope and stores every issued invoice in one
    /// transaction; per order its id and its stored view or error. A platform that does not
    /// answer fails the whole batch (retry it: every order is idempotent).
    async fn forward_batch(
        &self,
        enterprise: &str,
        orders: Vec<IssueOrder>,
        nonce: &Arrival,
        rid: &str,
    ) -> Result<Vec<(String, Result<InvoiceView, ApiError>)>, ApiError> {
        let batch = IssueBatch { orders };
        let answers = self
            .ask_platform::<_, BatchAnswer>(
                message_type::ORDER_BATCH,
                &batch,
                message_type::ORDER_BATCH_ANSWER,
                rid,
            )
            .await?
            .answers;
        if answers.len() != batch.orders.len() {
            return Err(unusable(
                rid,
                &format!("{} answers to {} orders", answers.len(), batch.orders.len()),
            ));
        }
        let mut out: Vec<(String, Result<InvoiceView, ApiError>)> = Vec::new();
        let mut issued: Vec<(usize, Issued)> = Vec::new();
        for (o, a) in batch.orders.into_iter().zip(answers) {
            match a {
                OrderAnswer::Refused(r) => {
                    out.push((o.order_id, Err(ApiError::from_refusal(r, rid))))
                }
                OrderAnswer::Issued {
                    order_id,
                    invoice,
                    tax_status,
                    form,
                } => {
                    if order_id != o.order_id {
                        return Err(unusable(
                            rid,
                            &format!("answer for order {order_id} in place of {}", o.order_id),
                        ));
                    }
                    issued.push((
                        out.len(),
                        Issued {
                            order_id: o.order_id.clone(),
                            request_hash: o.request_hash,
                            invoice,
                            tax_status,
                            form,
                        },
                    ));
                    // Filled in once stored, below.
                    out.push((
                        o.order_id,
                        Err(ApiError::new(Code::Internal, "internal error", rid)),
                    ));
                }
            }
        }
        let (slots, issued): (Vec<usize>, Vec<Issued>) = issued.into_iter().unzip();
        let views = self
            .store_invoices(enterprise, issued, Some(nonce), rid)
            .await?;
        for (slot, view) in slots.into_iter().zip(views) {
            out[slot].1 = Ok(view);
        }
        Ok(out)
    }
}

pub(crate) fn to_json<T: Serialize>(v: &T, rid: &str) -> Result<Json, ApiError> {
    serde_json::value::to_raw_value(v).map_err(|e| internal(rid, &e))
}

/// A JSON answer body, serialized once (not a `serde_json::Value` tree).
pub(crate) type Json = Box<serde_json::value::RawValue>;

/// The body of a red request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedBody {
    order_id: String,
    reason: String,
    #[serde(default = "full")]
    scope: RedScopeWire,
    #[serde(default)]
    buyer_confirmation: Option<String>,
    #[serde(default)]
    drawer: Option<String>,
}

fn full() -> RedScopeWire {
    RedScopeWire::Full
}

async fn red(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, nonce| {
                issue_red(&cloud, enterprise, nonce, number, &body, &rid).await
            },
        )
        .await;
    match result {
        Ok((s, v)) => (s, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An authenticated red order: stored before, queued for the enterprise's agent, or issued
/// by platform and stored.
async fn issue_red(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    number: String,
    body: &[u8],
    rid: &str,
) -> Result<(StatusCode, Json), ApiError> {
    let b: RedBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("body: {e}"), rid))?;
    let hash = body_hash(body);
    let (hosted, mut stored) = cloud
        .stored(enterprise, &[&b.order_id])
        .await
        .map_err(|e| internal(rid, &e))?;
    if let Some((h, v)) = stored.remove(&b.order_id) {
        return if h == hash {
            Ok((StatusCode::OK, to_json(&v, rid)?))
        } else {
            Err(ApiError::new(
                Code::OrderConflict,
                format!(
                    "order_id {} was already used with a different request",
                    b.order_id
                ),
                rid,
            ))
        };
    }
    let req = RedOrder {
        enterprise: enterprise.to_owned(),
        order_id: b.order_id.clone(),
        blue_number: number,
        reason: b.reason,
        scope: b.scope,
        buyer_confirmation: b.buyer_confirmation,
        drawer: b.drawer,
        request_hash: hash.clone(),
    };
    if hosted {
        let blue = cloud
            .invoice(enterprise, &req.blue_number)
            .await
            .map_err(|e| internal(rid, &e))?;
        if blue.is_none() {
            return Err(ApiError::new(
                Code::InvoiceNotFound,
                format!("no invoice {} of this enterprise", req.blue_number),
                rid,
            ));
        }
        return cloud
            .enqueue_order(enterprise, QueuedOrder::Red(req), nonce, rid)
            .await;
    }
    let v = cloud
        .forward(
            enterprise,
            &b.order_id,
            &hash,
            message_type::ORDER_RED,
            &req,
            nonce,
            rid,
        )
        .await?;
    tracing::info!(request_id = %rid, number = %v.number, "red invoice issued");
    Ok((StatusCode::CREATED, to_json(&v, rid)?))
}

async fn authed_invoice(
    cloud: &Cloud,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    number: &str,
    rid: &str,
) -> Result<InvoiceView, ApiError> {
    let enterprise = cloud.authenticate(method, uri, headers, b"", rid).await?;
    cloud
        .invoice(&enterprise, number)
        .await
        .map_err(|e| internal(rid, &e))?
        .ok_or_else(|| ApiError::new(Code::InvoiceNotFound, format!("no invoice {number}"), rid))
}

async fn get_one(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    match authed_invoice(&cloud, &method, &uri, &headers, &number, &rid).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The invoice's XML layout file (with the issuing device's signature).
pub(crate) fn xml_of(v: &InvoiceView, rid: &str) -> Result<String, ApiError> {
    let signed = v.invoice.to_signed().map_err(|e| internal(rid, &e))?;
    Ok(fapiao_render::render_xml(
        &signed.invoice,
        Some(&signed.signature),
    ))
}

/// The invoice's PDF layout file (rendered off the async threads).
pub(crate) async fn pdf_of(cloud: &Cloud, v: &InvoiceView, rid: &str) -> Result<Vec<u8>, ApiError> {
    let signed = v.invoice.to_signed().map_err(|e| internal(rid, &e))?;
    let c = cloud.clone();
    let rid2 = rid.to_owned();
    tokio::task::spawn_blocking(move || {
        let xml = fapiao_render::render_xml(&signed.invoice, Some(&signed.signature));
        let font = c.font().map_err(|e| internal(&rid2, &e))?;
        fapiao_render::render_pdf(&signed.invoice, &xml, font).map_err(|e| internal(&rid2, &e))
    })
    .await
    .map_err(|e| internal(rid, &e))?
}

/// A layout file as a download: `dzfp_<number>.<extension>`.
pub(crate) fn attachment(
    content_type: &'static str,
    number: &str,
    extension: &str,
    body: impl IntoResponse,
) -> Response {
    (
        [
            (http::header::CONTENT_TYPE, content_type.to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"dzfp_{number}.{extension}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The XML media type of layout downloads.
pub(crate) const XML_TYPE: &str = "application/xml; charset=utf-8";

async fn xml(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let v = authed_invoice(&cloud, &method, &uri, &headers, &number, &rid).await?;
        xml_of(&v, &rid)
    }
    .await;
    match result {
        Ok(x) => attachment(XML_TYPE, &number, "xml", x),
        Err(e) => e.into_response(),
    }
}

async fn pdf(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let v = authed_invoice(&cloud, &method, &uri, &headers, &number, &rid).await?;
        pdf_of(&cloud, &v, &rid).await
    }
    .await;
    match result {
        Ok(bytes) => attachment("application/pdf", &number, "pdf", bytes),
        Err(e) => e.into_response(),
    }
}

/// Listing filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Issued on or after (`YYYY-MM-DD`).
    from: Option<String>,
    /// Issued on or before (`YYYY-MM-DD`).
    to: Option<String>,
    /// Buyer taxpayer id (exact) or part of the name.
    buyer: Option<String>,
    /// `blue` or `red`.
    kind: Option<String>,
    /// `pending`, `accepted`, `failed`.
    status: Option<String>,
    /// 1..=100, default 50.
    limit: Option<i64>,
    /// From `next_cursor`.
    cursor: Option<String>,
}

fn is_date(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

async fn list(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        let Query(q) =
            query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text(), &rid))?;
        let bad = |m: &str| ApiError::new(Code::InvalidRequest, m, &rid);
        let limit = q.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(bad("limit: 1 to 100"));
        }
        for (name, date) in [("from", &q.from), ("to", &q.to)] {
            if date.as_deref().is_some_and(|d| !is_date(d)) {
                return Err(bad(&format!("{name}: YYYY-MM-DD")));
            }
        }
        if q.kind.as_deref().is_some_and(|k| k != "blue" && k != "red") {
            return Err(bad("kind: blue or red"));
        }
        if q.status
            .as_deref()
            .is_some_and(|s| TaxStatus::parse(s).is_none())
        {
            return Err(bad("status: pending, accepted or failed"));
        }
        let cursor = q
            .cursor
            .as_deref()
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|_| bad("cursor: as returned in next_cursor"))?;
        let rows = fapiao_store::query(LIST)
            .bind(enterprise)
            .bind(q.from.as_ref().map(|f| format!("{f} 00:00:00")))
            .bind(q.to.as_ref().map(|t| format!("{t} 23:59:59")))
            .bind(
                q.buyer
                    .as_ref()
                    .map(|b| cloud.inner.vault.blind_index(BUYER_INDEX, b)),
            )
            .bind(q.buyer.clone())
            .bind(q.kind.clone())
            .bind(q.status.clone())
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(cloud.inner.db.pool())
            .await
            .map_err(|e| internal(&rid, &e))?;
        let more = i64::try_from(rows.len()).unwrap_or(0) > limit;
        let mut items = Vec::new();
        let mut last_seq = None;
        for r in rows.iter().take(usize::try_from(limit).unwrap_or(50)) {
            let status: String = r.try_get("tax_status").map_err(|e| internal(&rid, &e))?;
            last_seq = Some(r.try_get::<i64, _>("seq").map_err(|e| internal(&rid, &e))?);
            items.push(InvoiceSummary {
                number: r.try_get("number").map_err(|e| internal(&rid, &e))?,
                order_id: r.try_get("order_id").map_err(|e| internal(&rid, &e))?,
                kind: r.try_get("kind").map_err(|e| internal(&rid, &e))?,
                issued_at: r.try_get("issued_at").map_err(|e| internal(&rid, &e))?,
                buyer_name: r.try_get("buyer_name").map_err(|e| internal(&rid, &e))?,
                buyer_id: r.try_get("buyer_id").map_err(|e| internal(&rid, &e))?,
                total: r.try_get("total").map_err(|e| internal(&rid, &e))?,
                tax_status: TaxStatus::parse(&status).unwrap_or(TaxStatus::Pending),
            });
        }
        Ok(InvoicePage {
            items,
            next_cursor: if more {
                last_seq.map(|s| s.to_string())
            } else {
                None
            },
        })
    }
    .await;
    match result {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}
