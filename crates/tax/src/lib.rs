//! The tax authority acceptance reference (税务机关受理平台): a faithful stand-in for the
//! authority's side, to test against and to demo.
//!
//! - **Number ranges**: grants platforms ranges of 20-digit numbers (`range.request`), never
//!   overlapping, recorded per platform.
//! - **Assignments** (`range.assign`): a platform hands part of one of its ranges to an
//!   enterprise's agent, whose uploads in it are then accepted (never overlapping another
//!   assignment).
//! - **Uploads** (`invoice.upload`, sealed to tax by the uploader): re-checks the invoice's
//!   arithmetic, verifies the issuing device's SM2 signature and that the device belongs to
//!   the seller, checks the number lies in a range granted to that uploader, and for a red that
//!   its blue is on record and the red rules hold. De-duplicates by number: the same invoice
//!   again gets the original receipt (`duplicate`); a different invoice under a used number is
//!   refused and flagged (`upload_conflict`). A red whose blue has not arrived yet is answered
//!   `processing` (upload again later). Every receipt is signed by tax.
//! - **Public verification** (查验, `GET /v1/verify`): by number + issue date + 价税合计 (the
//!   fields of the QR code), or by the QR text itself → `valid`, `red_reversed` (full or
//!   partial) or `unknown`. Any field that does not match exactly answers `unknown`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fapiao_crypto::{Certificate, PrivateKey, Role};
use fapiao_model::{Amount, Invoice, InvoiceKind, InvoiceNumber};
use fapiao_protocol::Code;
use fapiao_protocol::client::{new_id, now};
use fapiao_protocol::wire::{
    RangeAssign, RangeGrant, RangeRequest, Receipt, Receipts, Refusal, SignedReceipt, Upload,
    UploadBatch, UploadStatus, message_type,
};
use fapiao_service::error::request_id;
use fapiao_service::{ApiError, EnvelopeHandler, Envelopes, Incoming, Material, Outgoing};
use fapiao_store::vault::{SealedColumn, Vault};
use fapiao_store::{Db, Migration, Sql, StoreError, query, query_as, query_scalar};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// The tax role's schema.
pub const MIGRATIONS: &[Migration] = fapiao_store::migrations![
    1 "0001_tax" "ranges, accepted invoices, upload log",
];

/// Largest range one request may ask for.
pub const MAX_RANGE: u64 = 1_000_000;

/// The tax role.
#[derive(Clone, Debug)]
pub struct Tax {
    inner: Arc<Inner>,
}

/// Columns whose values are sealed (encryption at rest): the uploaded signed invoices.
pub const SEALED: &[SealedColumn] = &[RECORD];
const RECORD: SealedColumn = SealedColumn {
    table: "invoices",
    column: "record",
    key: "number",
};

struct Inner {
    db: Db,
    vault: Vault,
    material: Material,
    registry: Arc<fapiao_service::Registry>,
    signing_key: PrivateKey,
    signing_cert: Certificate,
    trust: fapiao_crypto::LiveTrust,
    envelopes: Arc<Envelopes>,
    channel: u8,
    /// Failed 查验 guesses per invoice number (as the portal's: 5 free, then waits doubling
    /// up to 15 minutes).
    verify_attempts: fapiao_service::Attempts,
    /// Stopping, database writes.
    health: fapiao_service::Health,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tax").finish_non_exhaustive()
    }
}

/// Why the role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaxError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The material.
    #[error("material: {0}")]
    Material(String),
}

/// One accepted invoice as tax holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// Number.
    pub number: String,
    /// Uploader (`role:name`).
    pub uploader: String,
    /// Hex SM3 of the signed content.
    pub content_hash: String,
    /// How many uploads of it were accepted (always 1; duplicates are logged separately).
    pub acceptances: i64,
    /// How many uploads were answered `duplicate`.
    pub duplicates: i64,
}

impl Tax {
    /// Opens the role on `database` with its material.
    ///
    /// # Errors
    /// [`TaxError`].
    pub async fn open(database: &str, material: &Material) -> Result<Self, TaxError> {
        let db = Db::open(database, "tax", MIGRATIONS).await?;
        let vault = Vault::open(&db, material.master_key.clone(), now()).await?;
        // What older builds left in the sealed columns, sealed row-bound before serving.
        vault.upgrade(SEALED).await?;
        let registry = Arc::new(fapiao_service::Registry::new());
        let envelopes = Envelopes::new(
            material.party.clone(),
            material.trust.clone(),
            db.clone(),
            registry.clone(),
        )
        .map_err(|e| TaxError::Material(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                health: fapiao_service::Health::new(fapiao_service::instance_id()),
                verify_attempts: fapiao_service::Attempts::new(
                    5,
                    std::time::Duration::from_secs(900),
                ),
                db,
                vault,
                material: material.clone(),
                registry,
                signing_key: material.signing_key.clone(),
                signing_cert: material.party.signing_certificate().clone(),
                trust: material.trust.clone(),
                envelopes: Arc::new(envelopes),
                channel: 0,
            }),
        })
    }

    /// Its health (readiness, stopping).
    #[must_use]
    pub fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    /// The routes: envelopes (roles, mutual TLS) and `GET /v1/verify` (public).
    pub fn router(&self) -> Router {
        let handler = Arc::new(self.clone());
        let router = self.inner.envelopes.clone().routes(handler).merge(
            Router::new()
                .route("/v1/verify", get(verify))
                .with_state(self.clone()),
        );
        fapiao_service::ops::track(router, self.inner.registry.clone())
    }

    /// The admin routes: `/healthz`, `/readyz`, `/metrics`.
    pub fn admin_router(&self) -> Router {
        fapiao_service::ops::admin_routes(
            "tax",
            Arc::new(self.clone()),
            self.inner.registry.clone(),
        )
    }

    /// The database (for operators and tests).
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Every accepted invoice with its upload counts, by number.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn accepted(&self) -> Result<Vec<Accepted>, StoreError> {
        let rows = query(
            "SELECT i.number, i.uploader, i.content_hash,
                (SELECT COUNT(*) FROM upload_log l WHERE l.number = i.number AND l.status = 'accepted') AS acc,
                (SELECT COUNT(*) FROM upload_log l WHERE l.number = i.number AND l.status = 'duplicate') AS dup
             FROM invoices i ORDER BY i.number",
        )
        .fetch_all(self.inner.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Accepted {
                    number: r.try_get("number")?,
                    uploader: r.try_get("uploader")?,
                    content_hash: r.try_get("content_hash")?,
                    acceptances: r.try_get("acc")?,
                    duplicates: r.try_get("dup")?,
                })
            })
            .collect()
    }

    /// Uploads refused as a conflict (a different invoice under a used number).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn flagged(&self) -> Result<Vec<String>, StoreError> {
        query_scalar("SELECT number FROM upload_log WHERE code = 'upload_conflict' ORDER BY id")
            .fetch_all(self.inner.db.pool())
            .await
    }

    async fn grant(&self, uploader: &str, req: RangeRequest) -> Result<RangeGrant, Refusal> {
        if req.count == 0 || req.count > MAX_RANGE {
            return Err(Refusal::new(
                Code::InvalidRequest,
                format!("count must be 1..={MAX_RANGE}"),
            ));
        }
        if fapiao_model::ProvinceCode::parse(&format!("{:02}", req.province)).is_err() {
            return Err(Refusal::new(
                Code::InvalidRequest,
                format!("province {:02} is not a province code", req.province),
            ));
        }
        let result: Result<RangeGrant, StoreError> = async {
            let mut tx = self.inner.db.begin_write().await?;
            let count = i64::try_from(req.count).unwrap_or(0);
            // One statement takes the numbers: the sequence's row stays locked until the
            // commit, so concurrent grants (any replica) follow one another.
            let next: i64 = query_scalar(
                "INSERT INTO sequences (year, province, channel, next) VALUES ($1, $2, $3, 1 + $4)
                 ON CONFLICT (year, province, channel) DO UPDATE SET next = sequences.next + $4
                 RETURNING next",
            )
            .bind(i64::from(req.year))
            .bind(i64::from(req.province))
            .bind(i64::from(self.inner.channel))
            .bind(count)
            .fetch_one(&mut *tx)
            .await?;
            let (first, last) = (next - count, next - 1);
            query(
                "INSERT INTO ranges (uploader, year, province, channel, first, last, granted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(uploader)
            .bind(i64::from(req.year))
            .bind(i64::from(req.province))
            .bind(i64::from(self.inner.channel))
            .bind(first)
            .bind(last)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?;
            fapiao_store::audit::append(
                &mut tx,
                now(),
                uploader,
                "range.granted",
                &format!("{:02}{:02}{}", req.year, req.province, self.inner.channel),
                &serde_json::json!({"first": first, "last": last}),
            )
            .await?;
            tx.commit().await?;
            Ok(RangeGrant {
                year: req.year,
                province: req.province,
                channel: self.inner.channel,
                first: u64::try_from(first).unwrap_or(0),
                last: u64::try_from(last).unwrap_or(0),
            })
        }
        .await;
        result.map_err(|e| {
            tracing::error!(error = %e, "granting a range failed");
            Refusal::new(Code::Internal, "internal error")
        })
    }

    /// A platform hands part of a range tax granted it to an agent: inside one of the
    /// platform's ranges, overlapping no other assignment; the same assignment again is
    /// answered the same.
    async fn assign(&self, platform: &str, a: &RangeAssign) -> Result<RangeGrant, Refusal> {
        let g = a.range;
        let is_agent = a.uploader.starts_with("agent:");
        if !is_agent || g.first > g.last {
            return Err(Refusal::new(
                Code::InvalidRequest,
                "uploader must be an agent and first <= last",
            ));
        }
        let (first, last) = (
            i64::try_from(g.first).unwrap_or(-1),
            i64::try_from(g.last).unwrap_or(-1),
        );
        let result: Result<Result<RangeGrant, Refusal>, StoreError> = async {
            let mut tx = self.inner.db.begin_write().await?;
            let key = (
                i64::from(g.year),
                i64::from(g.province),
                i64::from(g.channel),
            );
            // Checked for overlap, then written: one assignment of a series at a time.
            tx.lock(&format!("tax.ranges:{}:{}:{}", key.0, key.1, key.2))
                .await?;
            let same: i64 = query_scalar(
                "SELECT COUNT(*) FROM ranges WHERE uploader = $1 AND year = $2 AND province = $3
                 AND channel = $4 AND first = $5 AND last = $6",
            )
            .bind(&a.uploader)
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(first)
            .bind(last)
            .fetch_one(&mut *tx)
            .await?;
            if same > 0 {
                return Ok(Ok(g));
            }
            let inside: i64 = query_scalar(
                "SELECT COUNT(*) FROM ranges WHERE uploader = $1 AND year = $2 AND province = $3
                 AND channel = $4 AND first <= $5 AND last >= $6",
            )
            .bind(platform)
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(first)
            .bind(last)
            .fetch_one(&mut *tx)
            .await?;
            let overlapping: i64 = query_scalar(
                "SELECT COUNT(*) FROM ranges WHERE uploader LIKE 'agent:%' AND year = $1
                 AND province = $2 AND channel = $3 AND first <= $5 AND last >= $4",
            )
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(first)
            .bind(last)
            .fetch_one(&mut *tx)
            .await?;
            if inside == 0 || overlapping > 0 {
                return Ok(Err(Refusal::new(
                    Code::InvalidRequest,
                    "the numbers are not within a range granted to this platform, or already assigned",
                )));
            }
            query(
                "INSERT INTO ranges (uploader, year, province, channel, first, last, granted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&a.uploader)
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(first)
            .bind(last)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?;
            fapiao_store::audit::append(
                &mut tx,
                now(),
                platform,
                "range.assigned",
                &a.uploader,
                &serde_json::json!({"year": g.year, "province": g.province, "channel": g.channel,
                                    "first": g.first, "last": g.last}),
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(g))
        }
        .await;
        result.unwrap_or_else(|e| {
            tracing::error!(error = %e, "assigning a range failed");
            Err(Refusal::new(Code::Internal, "internal error"))
        })
    }

    async fn upload(&self, uploader: &str, upload: Upload) -> Result<SignedReceipt, Refusal> {
        let received = now();
        let checked = vec![self.check_upload(&upload, received)];
        let result = async {
            let mut tx = self.inner.db.begin_write().await?;
            let mut receipts = self
                .record_all(
                    &mut tx,
                    uploader,
                    std::slice::from_ref(&upload),
                    checked,
                    received,
                )
                .await?;
            tx.commit()
                .instrument(tracing::debug_span!("db.commit"))
                .await?;
            receipts.pop().ok_or_else(|| "no receipt".into())
        }
        .await;
        result.map_err(|e: Failure| upload_failed(&*e))
    }

    /// Many uploads, each checked and answered as if it came alone, recorded in one commit:
    /// the signature checks run first, outside the write transaction; an internal error
    /// fails the whole batch (nothing recorded; each upload is idempotent, so the sender
    /// resends it as is).
    async fn upload_batch(&self, uploader: &str, batch: UploadBatch) -> Result<Receipts, Refusal> {
        if batch.invoices.is_empty() || batch.invoices.len() > UploadBatch::MAX {
            return Err(Refusal::new(
                Code::InvalidRequest,
                format!("an upload batch holds 1 to {} invoices", UploadBatch::MAX),
            ));
        }
        let received = now();
        let uploads: Vec<Upload> = batch
            .invoices
            .into_iter()
            .map(|invoice| Upload { invoice })
            .collect();
        // A verification is a fraction of a millisecond of CPU: the runtime gets its thread
        // back between them, so a big batch does not stall the requests beside it.
        let mut checked = Vec::with_capacity(uploads.len());
        for u in &uploads {
            checked.push(self.check_upload(u, received));
            tokio::task::yield_now().await;
        }
        let result = async {
            let mut tx = self.inner.db.begin_write().await?;
            let receipts = self
                .record_all(&mut tx, uploader, &uploads, checked, received)
                .await?;
            tx.commit()
                .instrument(tracing::debug_span!("db.commit"))
                .await?;
            Ok::<_, Failure>(Receipts { receipts })
        }
        .await;
        result.map_err(|e| upload_failed(&*e))
    }

    /// Records uploads in `tx`, each answered as if it came alone and after the ones before
    /// it ([`Self::record_in`]), in a few statements whatever their number: what is on record
    /// under their numbers and which numbers were granted are read at once, and the rows
    /// they add are written at once (before a red invoice's check reads them, and at the end).
    async fn record_all(
        &self,
        tx: &mut fapiao_store::Tx,
        uploader: &str,
        uploads: &[Upload],
        checked: Vec<Checked>,
        received: OffsetDateTime,
    ) -> Result<Vec<SignedReceipt>, Failure> {
        let mut batch = Batch::read(tx, uploader, &checked).await?;
        let mut receipts = Vec::with_capacity(uploads.len());
        for (i, (upload, checked)) in uploads.iter().zip(checked).enumerate() {
            receipts.push(
                self.record_in(tx, &mut batch, i, uploader, upload, checked, received)
                    .await?,
            );
            tokio::task::yield_now().await;
        }
        batch.write(tx).await?;
        Ok(receipts)
    }

    /// Records upload `i` of `batch` and answers it: a refusal (`checked` failed, a
    /// conflicting or ungranted number, an invalid red), `processing` (a red whose blue is
    /// not here yet), `duplicate` (this very invoice is on record) or `accepted` (now on
    /// record). Every answer is logged.
    #[expect(clippy::too_many_arguments, reason = "one upload and where it goes")]
    async fn record_in(
        &self,
        tx: &mut fapiao_store::Tx,
        batch: &mut Batch,
        i: usize,
        uploader: &str,
        upload: &Upload,
        checked: Checked,
        received: OffsetDateTime,
    ) -> Result<SignedReceipt, Failure> {
        let (signed, content_hash) = match checked {
            Ok(ok) => ok,
            Err((code, reason, hash)) => {
                let number = upload.invoice.number().unwrap_or_default();
                return self
                    .refuse(tx, batch, uploader, &number, code, &reason, &hash, received)
                    .await;
            }
        };
        let invoice = &signed.invoice;
        let number = invoice.number().as_str().to_owned();
        if let Some((hash, original)) = batch.on_record.get(&number) {
            if *hash == content_hash {
                let original: SignedReceipt = serde_json::from_str(original)?;
                let receipt = Receipt {
                    status: UploadStatus::Duplicate,
                    ..original.receipt
                };
                batch
                    .log(
                        tx,
                        uploader,
                        &number,
                        "duplicate",
                        None,
                        &content_hash,
                        received,
                    )
                    .await?;
                return Ok(self.sign(receipt)?);
            }
            return self
                .refuse(
                    tx,
                    batch,
                    uploader,
                    &number,
                    Code::UploadConflict,
                    "a different invoice was already accepted under this number",
                    &content_hash,
                    received,
                )
                .await;
        }
        if !batch.granted.contains(&i) {
            return self
                .refuse(
                    tx,
                    batch,
                    uploader,
                    &number,
                    Code::UploadNumberNotGranted,
                    "the number lies in no range granted to the uploader",
                    &content_hash,
                    received,
                )
                .await;
        }
        let blue_number = match invoice.draft().kind() {
            InvoiceKind::Red(r) => Some(r.blue_number.as_str().to_owned()),
            InvoiceKind::Blue => None,
        };
        if let Some(blue) = &blue_number {
            // The check reads invoices on record, those of this batch included.
            batch.write(tx).await?;
            match self.red_check(tx, invoice, blue).await? {
                RedCheck::Ok => {}
                RedCheck::BlueMissing => {
                    batch
                        .log(
                            tx,
                            uploader,
                            &number,
                            "processing",
                            None,
                            &content_hash,
                            received,
                        )
                        .await?;
                    return Ok(self.sign(Receipt {
                        number,
                        status: UploadStatus::Processing,
                        code: None,
                        reason: Some(format!("blue invoice {blue} is not on record yet")),
                        content_hash,
                        accepted_at: None,
                        receipt_id: new_id(),
                    })?);
                }
                RedCheck::Invalid(reason) => {
                    return self
                        .refuse(
                            tx,
                            batch,
                            uploader,
                            &number,
                            Code::RedInvalid,
                            &reason,
                            &content_hash,
                            received,
                        )
                        .await;
                }
            }
        }
        let accepted_at = received.format(&Rfc3339)?;
        let receipt = self.sign(Receipt {
            number: number.clone(),
            status: UploadStatus::Accepted,
            code: None,
            reason: None,
            content_hash: content_hash.clone(),
            accepted_at: Some(accepted_at),
            receipt_id: new_id(),
        })?;
        let date = invoice.issued_at().date();
        let json = Zeroizing::new(serde_json::to_string(&upload.invoice)?);
        let record = self
            .inner
            .vault
            .seal_str(tx, RECORD, &number, &json)
            .await?;
        let receipt_json = serde_json::to_string(&receipt)?;
        batch.invoices.push(serde_json::json!([
            number,
            uploader,
            invoice.draft().seller().taxpayer_id.as_str(),
            if blue_number.is_some() { "red" } else { "blue" },
            blue_number,
            format!(
                "{:04}{:02}{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            invoice.draft().totals().total.to_string(),
            content_hash,
            record,
            receipt_json,
            received.unix_timestamp(),
        ]));
        batch
            .on_record
            .insert(number.clone(), (content_hash.clone(), receipt_json));
        batch
            .log(
                tx,
                uploader,
                &number,
                "accepted",
                None,
                &content_hash,
                received,
            )
            .await?;
        Ok(receipt)
    }

    /// Arithmetic (the record re-reads with every derived value recomputed), the device
    /// signature and certificate. On failure: code, reason, and the content hash if known.
    fn check_upload(
        &self,
        upload: &Upload,
        now: OffsetDateTime,
    ) -> Result<(fapiao_issuer::SignedInvoice, String), (Code, String, String)> {
        let signed = upload
            .invoice
            .to_signed()
            .map_err(|e| (Code::UploadArithmetic, e.to_string(), String::new()))?;
        let hash = fapiao_protocol::wire::content_hash(&signed);
        tracing::debug_span!("invoice.verify")
            .in_scope(|| fapiao_issuer::verify(&signed, &self.inner.trust.current(), now))
            .map_err(|e| (Code::UploadSignatureInvalid, e.to_string(), hash.clone()))?;
        // An issuer whose clock runs ahead dates its invoices in the future: refused, so
        // that no invoice carries a time that has not come (China time, UTC+8).
        let china = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
        let issued = signed.invoice.issued_at().assume_offset(china);
        let ahead = (issued - now).whole_seconds();
        if ahead > FUTURE_TOLERANCE_SECONDS {
            return Err((
                Code::UploadIssuedInFuture,
                format!(
                    "issued at {} China time, {ahead} s after tax's clock (tolerance \
                     {FUTURE_TOLERANCE_SECONDS} s): the issuer's clock is ahead",
                    signed.invoice.issued_at()
                ),
                hash,
            ));
        }
        Ok((signed, hash))
    }

    async fn red_check(
        &self,
        tx: &mut fapiao_store::Tx,
        red: &Invoice,
        blue: &str,
    ) -> Result<RedCheck, Box<dyn std::error::Error + Send + Sync>> {
        let blue_record: Option<String> =
            query_scalar("SELECT record FROM invoices WHERE number = $1")
                .bind(blue)
                .fetch_optional(&mut **tx)
                .await?;
        let Some(blue_record) = blue_record else {
            return Ok(RedCheck::BlueMissing);
        };
        let blue = self.read_record(blue, &blue_record).await?;
        let prior: Vec<(String, String)> = query_as(
            "SELECT number, record FROM invoices WHERE blue_number = $1 ORDER BY accepted_at, number",
        )
        .bind(blue.number().as_str())
        .fetch_all(&mut **tx)
        .await?;
        let mut prior_invoices = Vec::with_capacity(prior.len());
        for (n, r) in &prior {
            prior_invoices.push(self.read_record(n, r).await?);
        }
        let prior = prior_invoices;
        Ok(
            match fapiao_model::red::check_red(red.draft(), &blue, &prior) {
                Ok(()) => RedCheck::Ok,
                Err(e) => RedCheck::Invalid(e.to_string()),
            },
        )
    }

    fn sign(&self, receipt: Receipt) -> Result<SignedReceipt, fapiao_protocol::wire::WireError> {
        SignedReceipt::sign(receipt, &self.inner.signing_key, &self.inner.signing_cert)
    }

    #[expect(clippy::too_many_arguments, reason = "one refusal's facts")]
    async fn refuse(
        &self,
        tx: &mut fapiao_store::Tx,
        batch: &mut Batch,
        uploader: &str,
        number: &str,
        code: Code,
        reason: &str,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<SignedReceipt, Failure> {
        tracing::warn!(number, uploader, code = %code, reason, "upload refused");
        batch
            .log(
                tx,
                uploader,
                number,
                "failed",
                Some(code.as_str()),
                hash,
                at,
            )
            .await?;
        Ok(self.sign(Receipt {
            number: number.to_owned(),
            status: UploadStatus::Failed,
            code: Some(code.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            content_hash: hash.to_owned(),
            accepted_at: None,
            receipt_id: new_id(),
        })?)
    }
}

/// How far after tax's clock an invoice may be dated (the issuer's clock may be this far
/// ahead; agents stop issuing at 60 s off by default).
pub const FUTURE_TOLERANCE_SECONDS: i64 = 120;

/// An internal failure while recording an upload.
type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The refusal an internal failure answers with (the failure itself is logged, not sent).
fn upload_failed(e: &(dyn std::error::Error + Send + Sync)) -> Refusal {
    tracing::error!(error = %e, "upload failed");
    Refusal::new(Code::Internal, "internal error")
}

enum RedCheck {
    Ok,
    BlueMissing,
    Invalid(String),
}

impl Tax {
    async fn read_record(
        &self,
        number: &str,
        sealed: &str,
    ) -> Result<Invoice, Box<dyn std::error::Error + Send + Sync>> {
        let json = self.inner.vault.unseal_str(RECORD, number, sealed).await?;
        let wire: fapiao_protocol::wire::WireInvoice = serde_json::from_str(&json)?;
        Ok(wire.to_signed()?.invoice)
    }
}

impl fapiao_service::ops::Readiness for Tax {
    fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        self.inner
            .health
            .checks(&self.inner.db, &self.inner.material, now())
            .await
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        let accepted: i64 = query_scalar("SELECT COUNT(*) FROM invoices")
            .fetch_one(self.inner.db.pool())
            .await
            .unwrap_or(0);
        vec![fapiao_service::metrics::Gauge {
            name: "fapiao_tax_invoices_on_record",
            help: "Invoices tax holds.",
            labels: Vec::new(),
            value: accepted as f64,
        }]
    }
}

/// What a check of an upload found: the invoice and its content hash, or code, reason and
/// the content hash if known.
type Checked = Result<(fapiao_issuer::SignedInvoice, String), (Code, String, String)>;

/// A batch of uploads being recorded: what was on record under their numbers (and what the
/// batch put there since), which of them lie in a range granted to the uploader, and the rows
/// the batch adds, not yet written.
#[derive(Default)]
struct Batch {
    /// Number → content hash and signed receipt (JSON).
    on_record: HashMap<String, (String, String)>,
    /// Positions (in the batch) of the uploads whose number was granted to the uploader.
    granted: HashSet<usize>,
    /// Rows for `invoices`, as JSON arrays in column order.
    invoices: Vec<serde_json::Value>,
    /// Rows for `upload_log`, as JSON arrays in column order.
    log: Vec<serde_json::Value>,
}

impl Batch {
    /// Reads, in two statements, what the batch's checked uploads need to know.
    async fn read(
        tx: &mut fapiao_store::Tx,
        uploader: &str,
        checked: &[Checked],
    ) -> Result<Self, StoreError> {
        let mut numbers = Vec::new();
        let mut places = Vec::new();
        for (i, c) in checked.iter().enumerate() {
            if let Ok((signed, _)) = c {
                let n = signed.invoice.number();
                numbers.push(serde_json::Value::from(n.as_str()));
                places.push(serde_json::json!([
                    i,
                    n.year(),
                    n.province().code(),
                    n.channel(),
                    i64::try_from(n.sequence()).unwrap_or(-1)
                ]));
            }
        }
        let mut batch = Self::default();
        if numbers.is_empty() {
            return Ok(batch);
        }
        let rows: Vec<(String, String, String)> = query_as(Sql::dialects(
            "SELECT number, content_hash, receipt FROM invoices
             WHERE number IN (SELECT value FROM jsonb_each($1))",
            "SELECT number, content_hash, receipt FROM invoices
             WHERE number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(serde_json::Value::Array(numbers).to_string())
        .fetch_all(&mut **tx)
        .await?;
        batch.on_record = rows.into_iter().map(|(n, h, r)| (n, (h, r))).collect();
        let granted: Vec<i64> = query_scalar(Sql::dialects(
            "SELECT json_extract(p.value, '$[0]') FROM jsonb_each($2) p
             WHERE EXISTS (SELECT 1 FROM ranges r WHERE r.uploader = $1
                AND r.year = json_extract(p.value, '$[1]')
                AND r.province = json_extract(p.value, '$[2]')
                AND r.channel = json_extract(p.value, '$[3]')
                AND r.first <= json_extract(p.value, '$[4]')
                AND r.last >= json_extract(p.value, '$[4]'))",
            "SELECT (p.value->>0)::bigint FROM jsonb_array_elements($2::jsonb) p
             WHERE EXISTS (SELECT 1 FROM ranges r WHERE r.uploader = $1
                AND r.year = (p.value->>1)::bigint
                AND r.province = (p.value->>2)::bigint
                AND r.channel = (p.value->>3)::bigint
                AND r.first <= (p.value->>4)::bigint
                AND r.last >= (p.value->>4)::bigint)",
        ))
        .bind(uploader)
        .bind(serde_json::Value::Array(places).to_string())
        .fetch_all(&mut **tx)
        .await?;
        batch.granted = granted
            .into_iter()
            .filter_map(|i| usize::try_from(i).ok())
            .collect();
        Ok(batch)
    }

    /// Logs an answer: a row for `upload_log` (written with the batch) and an audit record.
    #[expect(clippy::too_many_arguments, reason = "one answer's facts")]
    async fn log(
        &mut self,
        tx: &mut fapiao_store::Tx,
        uploader: &str,
        number: &str,
        status: &str,
        code: Option<&str>,
        hash: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.log.push(serde_json::json!([
            number,
            uploader,
            status,
            code,
            hash,
            at.unix_timestamp()
        ]));
        fapiao_store::audit::append(
            tx,
            at,
            uploader,
            &format!("upload.{status}"),
            number,
            &serde_json::json!({"code": code, "content_hash": hash}),
        )
        .await
    }

    /// Writes the rows added so far, one statement per table.
    async fn write(&mut self, tx: &mut fapiao_store::Tx) -> Result<(), StoreError> {
        fapiao_store::insert_rows(
            tx,
            "invoices",
            &[
                "number",
                "uploader",
                "seller",
                "kind",
                "blue_number",
                "issued_on",
                "total",
                "content_hash",
                "record",
                "receipt",
                "accepted_at",
            ],
            std::mem::take(&mut self.invoices),
        )
        .await?;
        fapiao_store::insert_rows(
            tx,
            "upload_log",
            &["number", "uploader", "status", "code", "content_hash", "at"],
            std::mem::take(&mut self.log),
        )
        .await?;
        Ok(())
    }
}

impl Tax {
    /// Counts an answered upload by its status.
    fn count(&self, r: &SignedReceipt) {
        let status = match r.receipt.status {
            UploadStatus::Accepted => "accepted",
            UploadStatus::Processing => "processing",
            UploadStatus::Failed => "failed",
            UploadStatus::Duplicate => "duplicate",
        };
        self.inner.registry.inc(
            "fapiao_tax_uploads_received_total",
            "Uploads tax answered, by upload status.",
            &[("status", status)],
        );
    }
}

impl EnvelopeHandler for Tax {
    async fn handle(&self, incoming: Incoming) -> Outgoing {
        let uploader = incoming.sender.identity();
        if !matches!(incoming.sender.role, Role::Platform | Role::Agent) {
            return Outgoing::refusal(&Refusal::new(
                Code::EnvelopeRejected,
                "only platforms and agents talk to tax",
            ));
        }
        match incoming.message.header.message_type.as_str() {
            message_type::RANGE_REQUEST => match incoming.body::<RangeRequest>() {
                Ok(req) => match self.grant(&uploader, req).await {
                    Ok(g) => Outgoing::json(message_type::RANGE_GRANT, &g),
                    Err(r) => Outgoing::refusal(&r),
                },
                Err(o) => o,
            },
            message_type::RANGE_ASSIGN if incoming.sender.role == Role::Platform => {
                match incoming.body::<RangeAssign>() {
                    Ok(a) => match self.assign(&uploader, &a).await {
                        Ok(g) => Outgoing::json(message_type::RANGE_GRANT, &g),
                        Err(r) => Outgoing::refusal(&r),
                    },
                    Err(o) => o,
                }
            }
            message_type::INVOICE_UPLOAD => match incoming.body::<Upload>() {
                Ok(up) => match self.upload(&uploader, up).await {
                    Ok(r) => {
                        self.count(&r);
                        Outgoing::json(message_type::UPLOAD_RECEIPT, &r)
                    }
                    Err(r) => Outgoing::refusal(&r),
                },
                Err(o) => o,
            },
            message_type::INVOICE_UPLOAD_BATCH => match incoming.body::<UploadBatch>() {
                Ok(batch) => match self.upload_batch(&uploader, batch).await {
                    Ok(r) => {
                        r.receipts.iter().for_each(|r| self.count(r));
                        Outgoing::json(message_type::UPLOAD_RECEIPTS, &r)
                    }
                    Err(r) => Outgoing::refusal(&r),
                },
                Err(o) => o,
            },
            other => Outgoing::refusal(&Refusal::new(
                Code::InvalidRequest,
                format!("tax does not take `{other}` messages"),
            )),
        }
    }
}

/// 查验 query: either `qr`, or `number` + `date` + `total`.
#[derive(Debug, Deserialize)]
struct VerifyQuery {
    qr: Option<String>,
    number: Option<String>,
    /// `YYYYMMDD` or `YYYY-MM-DD`.
    date: Option<String>,
    /// 价税合计, e.g. `1130.00`.
    total: Option<String>,
}

/// 查验 answer.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    /// `valid`, `red_reversed` or `unknown`.
    pub result: String,
    /// For `red_reversed`: `full` or `partial`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversal: Option<String>,
    /// The number asked about.
    pub number: String,
}

async fn verify(
    State(tax): State<Tax>,
    headers: HeaderMap,
    Query(q): Query<VerifyQuery>,
) -> Response {
    let rid = request_id(&headers);
    let (number, date, total) = match (&q.qr, &q.number, &q.date, &q.total) {
        (Some(qr), None, None, None) => {
            let f: Vec<&str> = qr.split(',').collect();
            if f.len() != 8 || f[0] != "01" {
                return ApiError::new(Code::InvalidRequest, "qr: not 数电票 QR content", rid)
                    .into_response();
            }
            (f[3].to_owned(), f[5].to_owned(), f[4].to_owned())
        }
        (None, Some(n), Some(d), Some(t)) => (n.clone(), d.replace('-', ""), t.clone()),
        _ => {
            return ApiError::new(
                Code::InvalidRequest,
                "give either qr, or number, date and total",
                rid,
            )
            .into_response();
        }
    };
    if InvoiceNumber::parse(&number).is_err() {
        return ApiError::new(
            Code::InvalidRequest,
            "number: not a 20-digit invoice number",
            rid,
        )
        .into_response();
    }
    let Ok(total) = Amount::parse(&total) else {
        return ApiError::new(Code::InvalidRequest, "total: not an amount", rid).into_response();
    };
    // Guesses at one number are limited, from every address together: the date and the
    // total are what is guessed.
    if let Err(wait) = tax.inner.verify_attempts.check(&number) {
        return fapiao_service::limits::limited(wait, &rid);
    }
    match tax.verification(&number, &date, total).await {
        Ok(v) => {
            if v.result == "unknown" {
                tax.inner.verify_attempts.failed(&number);
            }
            axum::Json(v).into_response()
        }
        Err(e) => {
            tracing::error!(request_id = %rid, error = %e, "verification failed");
            ApiError::new(Code::Internal, "internal error", rid).into_response()
        }
    }
}

impl Tax {
    /// 查验: `valid`, `red_reversed` (full/partial) or `unknown` for exactly this number,
    /// date (`YYYYMMDD`) and 价税合计.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn verification(
        &self,
        number: &str,
        date: &str,
        total: Amount,
    ) -> Result<Verification, StoreError> {
        let unknown = Verification {
            result: "unknown".into(),
            reversal: None,
            number: number.to_owned(),
        };
        let row = query("SELECT issued_on, total, kind FROM invoices WHERE number = $1")
            .bind(number)
            .fetch_optional(self.inner.db.pool())
            .await?;
        let Some(row) = row else { return Ok(unknown) };
        let issued_on: String = row.try_get("issued_on")?;
        let stored: String = row.try_get("total")?;
        if issued_on != date || Amount::parse(&stored).ok() != Some(total) {
            return Ok(unknown);
        }
        let kind: String = row.try_get("kind")?;
        if kind == "red" {
            return Ok(Verification {
                result: "valid".into(),
                ..unknown
            });
        }
        let reds: Vec<String> = query_scalar("SELECT total FROM invoices WHERE blue_number = $1")
            .bind(number)
            .fetch_all(self.inner.db.pool())
            .await?;
        if reds.is_empty() {
            return Ok(Verification {
                result: "valid".into(),
                ..unknown
            });
        }
        let reversed: Amount = reds.iter().filter_map(|t| Amount::parse(t).ok()).sum();
        let full = (total + reversed).is_zero();
        Ok(Verification {
            result: "red_reversed".into(),
            reversal: Some(if full { "full" } else { "partial" }.into()),
            number: number.to_owned(),
        })
    }
}
