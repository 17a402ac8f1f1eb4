//! The durable outbox: rows written in the same transaction as the invoice (`upload`) or the
//! status change (`notify`), worked off in id order by one worker per process.
//!
//! - `upload`: sends the signed invoice to tax. `accepted`/`duplicate` receipts (verified:
//!   tax's signature, the content hash of our invoice) mark the invoice accepted; `failed`
//!   marks it failed with tax's reason and stops (a definite refusal, listed for operators);
//!   `processing`, an unreachable tax, a timeout or a 5xx retries with exponential backoff and
//!   ±25 % jitter. Each outcome that changes the tax status queues a `notify`.
//! - `notify`: tells the owning cloud (`invoice.status`), retried the same way until it
//!   acknowledges.

use std::time::Duration;
use tracing::Instrument;

use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    Ack, Issued, SignedReceipt, StatusNotice, Upload, WireInvoice, message_type,
};
use fapiao_store::sqlx::{self, Row};
use fapiao_store::{StoreError, Tx};
use serde::Serialize;

use crate::Platform;

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// Row id.
    pub id: i64,
    /// `upload` or `notify`.
    pub kind: String,
    /// Invoice number.
    pub number: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Last error or refusal.
    pub last_error: Option<String>,
    /// When it is next due (Unix seconds).
    pub next_attempt_at: i64,
}

pub(crate) async fn enqueue(tx: &mut Tx, kind: &str, number: &str) -> Result<(), StoreError> {
    let t = now().unix_timestamp();
    sqlx::query(
        "INSERT INTO outbox (kind, number, state, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, 'pending', 0, $3, $3)",
    )
    .bind(kind)
    .bind(number)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The role's background worker.
pub type Workers = fapiao_service::Worker;

/// Outbox entries in flight at once.
const OUTBOX_PARALLEL: usize = 16;

/// An entry's result; a panic in its task goes on unwinding here, as it would have inline.
fn joined(r: Result<Result<(), StoreError>, tokio::task::JoinError>) -> Result<(), StoreError> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Sqlx(sqlx::Error::Io(std::io::Error::other(e)))),
    }
}

/// A due outbox entry.
struct Entry {
    id: i64,
    kind: String,
    number: String,
    attempts: i64,
}

enum Outcome {
    Done,
    Failed(String),
    Retry(String),
}

impl Platform {
    /// Starts the outbox worker.
    #[must_use]
    pub fn spawn_workers(&self) -> Workers {
        let me = self.clone();
        fapiao_service::Worker::spawn(
            "outbox",
            self.inner.wake.clone(),
            self.inner.options.poll,
            move || {
                let me = me.clone();
                async move { me.work_once().await }
            },
        )
    }

    /// Works off the due entries (at most 64); returns how many it handled.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn work_once(&self) -> Result<usize, StoreError> {
        // A red's upload is held back while an earlier upload of its chain (the blue, or
        // another red of the same blue) is pending: tax checks each red against the blue and
        // the reds it already holds, so a chain reaches tax in issue order even with entries
        // in flight side by side. Blues and notices are never held back.
        let due = sqlx::query(
            "SELECT o.id, o.kind, o.number, o.attempts FROM outbox o
             WHERE o.state = 'pending' AND o.next_attempt_at <= $1
               AND NOT (o.kind = 'upload' AND EXISTS (
                   SELECT 1 FROM invoices r JOIN outbox p ON p.kind = 'upload'
                       AND p.state = 'pending' AND p.id < o.id
                       AND (p.number = r.blue_number OR p.number IN
                            (SELECT number FROM invoices WHERE blue_number = r.blue_number))
                   WHERE r.number = o.number AND r.blue_number IS NOT NULL))
             ORDER BY o.id LIMIT 64",
        )
        .bind(now().unix_timestamp())
        .fetch_all(self.inner.db.pool())
        .await?;
        let mut entries = Vec::with_capacity(due.len());
        for row in &due {
            entries.push(Entry {
                id: row.try_get("id")?,
                kind: row.try_get("kind")?,
                number: row.try_get("number")?,
                attempts: row.try_get("attempts")?,
            });
        }
        // The entries chosen are independent (each its own transactions, no two of one red
        // chain), so up to OUTBOX_PARALLEL of them are in flight at once: a round trip to tax
        // is mostly waiting.
        let handled = entries.len();
        let mut running = tokio::task::JoinSet::new();
        for entry in entries {
            if running.len() >= OUTBOX_PARALLEL
                && let Some(done) = running.join_next().await
            {
                joined(done)?;
            }
            let me = self.clone();
            running.spawn(async move { me.handle(entry).await });
        }
        while let Some(done) = running.join_next().await {
            joined(done)?;
        }
        Ok(handled)
    }

    /// Sends one entry and records its outcome.
    async fn handle(&self, entry: Entry) -> Result<(), StoreError> {
        let Entry {
            id,
            kind,
            number,
            attempts,
        } = entry;
        let outcome = match kind.as_str() {
            "upload" => self.upload(id, &number).await?,
            _ => self.notify(&number).await?,
        };
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(reason) => {
                tracing::warn!(id, %number, %reason, "outbox entry failed definitely");
                let mut tx = self.inner.db.begin_write().await?;
                sqlx::query("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1")
                    .bind(id)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                crate::issue::audit(
                    &mut tx,
                    "system",
                    &format!("{kind}.failed"),
                    &number,
                    &serde_json::json!({"reason": reason}),
                )
                .await?;
                tx.commit().await?;
            }
            Outcome::Retry(reason) => {
                let delay = self.backoff(attempts);
                tracing::info!(id, %kind, %number, %reason, delay_ms = delay.as_millis(), "outbox entry will be retried");
                let due = now() + delay;
                let mut tx = self.inner.db.begin_write().await?;
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1")
                    .bind(id)
                    .bind(&reason)
                    .bind(due.unix_timestamp())
                    .execute(&mut *tx)
                    .await?;
                crate::issue::audit(
                    &mut tx,
                    "system",
                    &format!("{kind}.attempted"),
                    &number,
                    &serde_json::json!({"attempt": attempts + 1, "error": reason}),
                )
                .await?;
                tx.commit().await?;
                // Later entries are not held back by this one's backoff: each is due on
                // its own schedule. A red whose blue is still pending is answered
                // `processing` by tax and retried the same way.
            }
        }
        Ok(())
    }

    fn backoff(&self, attempts: i64) -> Duration {
        fapiao_service::Backoff {
            base: self.inner.options.retry_base,
            max: self.inner.options.retry_max,
        }
        .delay(attempts)
    }

    async fn upload(&self, id: i64, number: &str) -> Result<Outcome, StoreError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "an upload's duration, not a point in time"
        )]
        let start = std::time::Instant::now();
        let outcome = self.upload_inner(id, number).await?;
        let label = match &outcome {
            Outcome::Done => "done",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(_) => "retry",
        };
        self.inner.registry.inc(
            "fapiao_tax_uploads_total",
            "Uploads to tax by outcome.",
            &[("outcome", label)],
        );
        self.inner.registry.observe(
            "fapiao_tax_upload_duration_seconds",
            "Upload to tax, request to recorded receipt, by outcome.",
            &[("outcome", label)],
            start.elapsed(),
        );
        Ok(outcome)
    }

    async fn upload_inner(&self, id: i64, number: &str) -> Result<Outcome, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM invoices WHERE number = $1")
                .bind(number)
                .fetch_optional(self.inner.db.pool())
                .await?;
        let Some(record) = record else {
            return Ok(Outcome::Failed(format!("invoice {number} is missing")));
        };
        let record = self
            .inner
            .vault
            .unseal_str(&crate::RECORD.field(), &record)
            .await?;
        let wire: WireInvoice = match serde_json::from_str(&record) {
            Ok(w) => w,
            Err(e) => return Ok(Outcome::Failed(format!("stored record unreadable: {e}"))),
        };
        let answer = match self
            .inner
            .tax
            .call(
                message_type::INVOICE_UPLOAD,
                &Upload {
                    invoice: wire.clone(),
                },
            )
            .instrument(tracing::debug_span!("tax.upload"))
            .await
        {
            Ok(a) => a,
            Err(e) => return Ok(Outcome::Retry(e.to_string())),
        };
        if answer.message_type != message_type::UPLOAD_RECEIPT {
            let text = String::from_utf8_lossy(&answer.payload).into_owned();
            return Ok(Outcome::Retry(format!(
                "tax answered {}: {text}",
                answer.message_type
            )));
        }
        let receipt: SignedReceipt = match answer.parse(self.inner.tax.peer_identity()) {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Retry(e.to_string())),
        };
        let signed = match wire.to_signed() {
            Ok(s) => s,
            Err(e) => return Ok(Outcome::Failed(e.to_string())),
        };
        if let Err(e) = receipt.verify_for(&signed, &self.inner.material.trust, now()) {
            return Ok(Outcome::Retry(format!("receipt: {e}")));
        }
        let Some((status, reason)) = receipt.receipt.tax_status() else {
            return Ok(Outcome::Retry(format!(
                "tax is processing: {}",
                receipt.receipt.reason.clone().unwrap_or_default()
            )));
        };
        let mut tx = self.inner.db.begin_write().await?;
        sqlx::query(
            "UPDATE invoices SET tax_status = $2, tax_reason = $3, receipt = $4 WHERE number = $1",
        )
        .bind(number)
        .bind(status.as_str())
        .bind(&reason)
        .bind(serde_json::to_string(&receipt).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
        let (state, err) = match &reason {
            Some(r) => ("failed", Some(r.clone())),
            None => ("done", None),
        };
        sqlx::query("UPDATE outbox SET state = $2, last_error = $3, attempts = attempts + 1, done_at = $4 WHERE id = $1")
            .bind(id)
            .bind(state)
            .bind(&err)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?;
        enqueue(&mut tx, "notify", number).await?;
        crate::issue::audit(
            &mut tx,
            self.inner.tax.peer_identity(),
            if reason.is_some() {
                "upload.refused"
            } else {
                "upload.accepted"
            },
            number,
            &serde_json::json!({
                "receipt_id": receipt.receipt.receipt_id,
                "status": status.as_str(),
                "reason": reason,
            }),
        )
        .await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        if let Some(r) = reason {
            tracing::warn!(%number, reason = %r, "tax refused an invoice");
        }
        Ok(Outcome::Done)
    }

    async fn notify(&self, number: &str) -> Result<Outcome, StoreError> {
        let Some(inv) = self.invoice(number).await? else {
            return Ok(Outcome::Failed(format!("invoice {number} is missing")));
        };
        let url: Option<(String, String)> = sqlx::query(
            "SELECT c.identity, c.url FROM enterprises e JOIN clouds c ON c.identity = e.cloud
             WHERE e.taxpayer_id = $1",
        )
        .bind(&inv.enterprise)
        .fetch_optional(self.inner.db.pool())
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get("identity")?, r.try_get("url")?)))
        .transpose()?;
        let Some((identity, url)) = url else {
            return Ok(Outcome::Failed(
                "the enterprise's cloud is not registered".into(),
            ));
        };
        let client = match self.cloud_client(&identity, &url) {
            Ok(c) => c,
            Err(e) => return Ok(Outcome::Retry(e)),
        };
        // An invoice an agent issued is new to cloud: the notice carries it.
        let by_agent: Option<String> = sqlx::query_scalar(
            "SELECT o.request_hash FROM invoices i JOIN orders o
                 ON o.enterprise = i.enterprise AND o.order_id = i.order_id
             WHERE i.number = $1 AND i.issued_by IS NOT NULL",
        )
        .bind(number)
        .fetch_optional(self.inner.db.pool())
        .await?;
        let notice = StatusNotice {
            number: number.to_owned(),
            enterprise: inv.enterprise.clone(),
            tax_status: inv.tax_status,
            reason: inv.tax_reason.clone(),
            receipt: inv.receipt.clone(),
            issued: by_agent.map(|request_hash| Issued {
                order_id: inv.order_id.clone(),
                request_hash,
                invoice: inv.invoice.clone(),
                form: inv.form.clone(),
            }),
        };
        match client.call(message_type::INVOICE_STATUS, &notice).await {
            Ok(a) if a.message_type == message_type::ACK && a.parse::<Ack>(&identity).is_ok() => {
                self.finish_notify(number).await?;
                Ok(Outcome::Done)
            }
            Ok(a) => Ok(Outcome::Retry(format!(
                "cloud answered {}: {}",
                a.message_type,
                String::from_utf8_lossy(&a.payload)
            ))),
            Err(e) => Ok(Outcome::Retry(e.to_string())),
        }
    }

    async fn finish_notify(&self, number: &str) -> Result<(), StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        sqlx::query(
            "UPDATE outbox SET state = 'done', attempts = attempts + 1, done_at = $2
             WHERE id = (SELECT id FROM outbox WHERE kind = 'notify' AND number = $1 AND state = 'pending' ORDER BY id LIMIT 1)",
        )
        .bind(number)
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?;
        crate::issue::audit(
            &mut tx,
            "system",
            "cloud.notified",
            number,
            &serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Outbox entries in a state, oldest first (at most 1000).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn outbox(&self, state: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, number, state, attempts, last_error, next_attempt_at FROM outbox
             WHERE state = $1 ORDER BY id LIMIT 1000",
        )
        .bind(state)
        .fetch_all(self.inner.db.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                Ok(OutboxEntry {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    number: r.try_get("number")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    last_error: r.try_get("last_error")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Puts a failed entry back in the queue, due now; `false` if there is no such failed
    /// entry.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn retry_outbox(&self, actor: &str, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        let n = sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $2 WHERE id = $1 AND state = 'failed'",
        )
        .bind(id)
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            crate::issue::audit(
                &mut tx,
                actor,
                "outbox.retried",
                &id.to_string(),
                &serde_json::json!({}),
            )
            .await?;
        }
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(n == 1)
    }
}

impl fapiao_service::ops::Readiness for Platform {
    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        let oldest = self.oldest_pending_age().await;
        let mut checks =
            fapiao_service::ops::basic_checks(&self.inner.db, &self.inner.material, now()).await;
        checks.push(match oldest {
            Ok(age) => fapiao_service::ops::Check {
                name: "outbox",
                ok: age
                    < i64::try_from(self.inner.options.outbox_stuck_after.as_secs())
                        .unwrap_or(i64::MAX),
                detail: format!("oldest pending entry {age} s old"),
            },
            Err(e) => fapiao_service::ops::Check {
                name: "outbox",
                ok: false,
                detail: e.to_string(),
            },
        });
        checks
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        use fapiao_service::metrics::Gauge;
        let mut out = Vec::new();
        let pool = self.inner.db.pool();
        if let Ok(rows) = sqlx::query(
            "SELECT kind, COUNT(*) AS n FROM outbox WHERE state = 'pending' GROUP BY kind",
        )
        .fetch_all(pool)
        .await
        {
            for r in rows {
                let kind: String = r.try_get("kind").unwrap_or_default();
                let n: i64 = r.try_get("n").unwrap_or(0);
                out.push(Gauge {
                    name: "fapiao_outbox_depth",
                    help: "Pending outbox entries by kind.",
                    labels: vec![("kind", kind)],
                    value: n as f64,
                });
            }
        }
        if let Ok(age) = self.oldest_pending_age().await {
            out.push(Gauge {
                name: "fapiao_outbox_oldest_pending_seconds",
                help: "Age of the oldest pending outbox entry.",
                labels: Vec::new(),
                value: age as f64,
            });
        }
        let month = {
            let t = crate::issue::china_now();
            format!("{:04}-{:02}", t.year(), u8::from(t.month()))
        };
        if let Ok(rows) = sqlx::query(
            "SELECT e.taxpayer_id, e.monthly_quota, COALESCE(q.used, '0') AS used FROM enterprises e
             LEFT JOIN quota_usage q ON q.enterprise = e.taxpayer_id AND q.month = $1",
        )
        .bind(&month)
        .fetch_all(pool)
        .await
        {
            for r in rows {
                let e: String = r.try_get("taxpayer_id").unwrap_or_default();
                let used: String = r.try_get("used").unwrap_or_default();
                let quota: String = r.try_get("monthly_quota").unwrap_or_default();
                let (Ok(used), Ok(quota)) = (used.parse::<f64>(), quota.parse::<f64>()) else { continue };
                out.push(Gauge { name: "fapiao_quota_used", help: "Issued total this month (blue minus red), yuan.", labels: vec![("enterprise", e.clone())], value: used });
                out.push(Gauge { name: "fapiao_quota_limit", help: "Monthly credit quota, yuan.", labels: vec![("enterprise", e)], value: quota });
            }
        }
        out
    }
}

impl Platform {
    /// Seconds since the oldest pending outbox entry was written (0 when none).
    async fn oldest_pending_age(&self) -> Result<i64, StoreError> {
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(self.inner.db.pool())
                .await?;
        Ok(oldest.map_or(0, |t| (now().unix_timestamp() - t).max(0)))
    }
}
