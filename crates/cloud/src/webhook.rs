//! Webhooks: when an invoice is issued (`invoice.issued`) or its tax status changes
//! (`invoice.tax_status`), an enterprise with a webhook URL gets a signed POST:
//!
//! - body: JSON `{id, event, number, order_id, kind, total, issued_at, tax_status, tax_reason}`
//!   (`id` is the delivery's id: the same event retried keeps it, so receivers can de-duplicate);
//! - headers `X-Fapiao-Event`, `X-Fapiao-Timestamp` and `X-Fapiao-Signature` (hex
//!   HMAC-SHA256 with the enterprise's API secret over `<timestamp>.<body>`,
//!   `fapiao_protocol::erp::sign_webhook`).
//!
//! A delivery is queued in the same transaction as the change. Any 2xx answer completes it;
//! anything else is retried with exponential backoff and jitter, up to
//! [`Options::max_attempts`](crate::Options) times, then marked failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fapiao_protocol::HttpsClient;
use fapiao_protocol::client::now;
use fapiao_protocol::erp::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook};
use fapiao_store::{Engine, Sql, StoreError, query, query_scalar};
use http::Method;
use serde_json::json;

use crate::Cloud;

/// Queues an event for the enterprise's webhook, if it has one: `$1` enterprise, `$3` now
/// (Unix seconds), `$4` JSON array of invoice numbers (one event each, in order), `$5` event.
/// A statement for the transaction of the change, sent with others (see `STORED` in
/// [`crate::erp`], whose numbering it shares).
macro_rules! enqueue_sqlite {
    () => {
        "INSERT INTO webhooks
            (enterprise, event, number, state, attempts, next_attempt_at, created_at)
        SELECT e.taxpayer_id, $5, n.value, 'pending', 0, $3, $3
        FROM jsonb_each($4) n JOIN enterprises e ON e.taxpayer_id = $1 AND e.webhook_url IS NOT NULL
        ORDER BY n.key"
    };
}

/// [`enqueue_sqlite!`] on PostgreSQL.
macro_rules! enqueue_postgres {
    () => {
        "INSERT INTO webhooks
            (enterprise, event, number, state, attempts, next_attempt_at, created_at)
        SELECT e.taxpayer_id, $5, n.value, 'pending', 0, $3, $3
        FROM jsonb_array_elements_text($4::jsonb) WITH ORDINALITY AS n(value, key)
        JOIN enterprises e ON e.taxpayer_id = $1 AND e.webhook_url IS NOT NULL
        ORDER BY n.key"
    };
}
pub(crate) use {enqueue_postgres, enqueue_sqlite};

/// The role's background worker.
pub type Workers = fapiao_service::Worker;

/// Claims due deliveries for this replica (`$1`) until `$2`: those of `$3` (ids, a JSON
/// array) still pending and not claimed by a live replica at `$4`, skipping rows another
/// replica is claiming at this moment. Returns the ids claimed.
const CLAIM: Sql = Sql::postgres_only(
    "UPDATE webhooks SET claimed_by = $1, claimed_until = $2
     WHERE id IN (
         SELECT id FROM webhooks
         WHERE id = ANY(ARRAY(SELECT (jsonb_array_elements_text($3::jsonb))::bigint))
           AND state = 'pending'
           AND (claimed_until IS NULL OR claimed_until < $4 OR claimed_by = $1)
         FOR UPDATE SKIP LOCKED)
     RETURNING id",
);

/// How long a claim on a delivery lasts (seconds): longer than a delivery takes (its
/// timeout is 10 s).
const CLAIM_LEASE: i64 = 15;

/// Per-URL HTTPS clients (connections kept alive).
#[derive(Default)]
pub(crate) struct Clients(Mutex<HashMap<String, Arc<HttpsClient>>>);

impl Cloud {
    /// Starts the webhook worker.
    #[must_use]
    pub fn spawn_workers(&self) -> Workers {
        let me = self.clone();
        // Every stored invoice wakes the worker; under load, one round per 20 ms takes them
        // together instead of one query each.
        fapiao_service::Worker::spawn_settling(
            "webhooks",
            self.inner.wake.clone(),
            self.inner.options.poll,
            std::time::Duration::from_millis(20),
            move || {
                let me = me.clone();
                async move {
                    let delivered = me.deliver_due().await?;
                    // Reconciling with platform rides the same worker (`reconcile`'s
                    // schedule); a pass that fails is tried again soon.
                    let repaired = me.reconcile_due().await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "reconciling with platform failed");
                        0
                    });
                    Ok::<usize, StoreError>(delivered + repaired)
                }
            },
        )
    }

    /// Sets or clears an enterprise's webhook URL (https).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn set_webhook(
        &self,
        enterprise: &str,
        url: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        let n = query("UPDATE enterprises SET webhook_url = $2 WHERE taxpayer_id = $1")
            .bind(enterprise)
            .bind(url)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            fapiao_store::audit::append(
                &mut tx,
                now(),
                "system",
                "webhook.changed",
                enterprise,
                &json!({"url": url}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    fn client(&self, url: &str) -> Result<Arc<HttpsClient>, String> {
        let mut map = self
            .inner
            .webhook_clients
            .0
            .lock()
            .map_err(|_| "lock".to_owned())?;
        if let Some(c) = map.get(url) {
            return Ok(c.clone());
        }
        let config = fapiao_crypto::tls::client_config(None, &self.inner.material.trust)
            .map_err(|e| e.to_string())?;
        let base = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("webhook URL {url} is not https://…"))?;
        let c = Arc::new(
            HttpsClient::new(&format!("https://{base}"), Arc::new(config))
                .map_err(|e| e.to_string())?
                .with_timeout(std::time::Duration::from_secs(10)),
        );
        map.insert(url.to_owned(), c.clone());
        Ok(c)
    }

    async fn deliver_due(&self) -> Result<usize, StoreError> {
        // In id order from the index, not every due one sorted (the unary `+` keeps SQLite
        // from ranging over the due time; migration 7).
        let t = now().unix_timestamp();
        let mut due = query(
            "SELECT w.id, w.event, w.number, w.attempts, e.webhook_url, e.secret, w.enterprise
             FROM webhooks w JOIN enterprises e ON e.taxpayer_id = w.enterprise
             WHERE w.state = 'pending' AND +w.next_attempt_at <= $1
               AND (w.claimed_until IS NULL OR w.claimed_until < $1 OR w.claimed_by = $2)
             ORDER BY w.id LIMIT 32",
        )
        .bind(t)
        .bind(&self.inner.instance)
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        if self.inner.db.engine() == Engine::Postgres && !due.is_empty() {
            // Replicas share the queue: each delivers what it claimed, and a killed
            // replica's claims run out and are taken over.
            let ids = due
                .iter()
                .map(|r| r.try_get::<i64, _>("id"))
                .collect::<Result<Vec<_>, _>>()?;
            let claimed: std::collections::HashSet<i64> = query_scalar::<i64>(CLAIM)
                .bind(&self.inner.instance)
                .bind(t + CLAIM_LEASE)
                .bind(json!(ids).to_string())
                .bind(t)
                .fetch_all(self.inner.db.pool())
                .await?
                .into_iter()
                .collect();
            due.retain(|r| {
                r.try_get::<i64, _>("id")
                    .is_ok_and(|id| claimed.contains(&id))
            });
        }
        for row in &due {
            let id: i64 = row.try_get("id")?;
            let event: String = row.try_get("event")?;
            let number: String = row.try_get("number")?;
            let attempts: i64 = row.try_get("attempts")?;
            let url: Option<String> = row.try_get("webhook_url")?;
            let secret: String = row.try_get("secret")?;
            let enterprise: String = row.try_get("enterprise")?;
            let secret = self
                .inner
                .vault
                .unseal_str(crate::SECRET, &enterprise, &secret)
                .await?;
            let result = match url {
                Some(url) => self.deliver(id, &event, &number, &url, &secret).await,
                None => Err("the webhook URL was removed".to_owned()),
            };
            self.inner.registry.inc(
                "fapiao_webhook_deliveries_total",
                "Webhook delivery attempts by outcome.",
                &[(
                    "outcome",
                    if result.is_ok() {
                        "delivered"
                    } else {
                        "failed"
                    },
                )],
            );
            let mut tx = self.inner.db.begin_write().await?;
            match result {
                Ok(()) => {
                    query("UPDATE webhooks SET state = 'done', attempts = attempts + 1, last_error = NULL WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Err(e) => {
                    let give_up = attempts + 1 >= self.inner.options.max_attempts;
                    let next = now() + self.inner.options.backoff.delay(attempts);
                    tracing::info!(id, %event, %number, error = %e, give_up, "webhook delivery failed");
                    query(
                        "UPDATE webhooks SET state = $2, attempts = attempts + 1, last_error = $3,
                             next_attempt_at = $4, claimed_by = NULL, claimed_until = NULL
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(if give_up { "failed" } else { "pending" })
                    .bind(&e)
                    .bind(next.unix_timestamp())
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(due.len())
    }

    async fn deliver(
        &self,
        id: i64,
        event: &str,
        number: &str,
        url: &str,
        secret: &str,
    ) -> Result<(), String> {
        let row = query("SELECT order_id, kind, total, issued_at, tax_status, tax_reason FROM invoices WHERE number = $1")
            .bind(number)
            .fetch_one(self.inner.db.pool())
            .await
            .map_err(|e| e.to_string())?;
        let get = |c: &str| row.try_get::<Option<String>, _>(c).ok().flatten();
        let body = json!({
            "id": id,
            "event": event,
            "number": number,
            "order_id": get("order_id"),
            "kind": get("kind"),
            "total": get("total"),
            "issued_at": get("issued_at"),
            "tax_status": get("tax_status"),
            "tax_reason": get("tax_reason"),
        })
        .to_string();
        let ts = now().unix_timestamp();
        let path = url
            .strip_prefix("https://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
            .unwrap_or_else(|| "/".to_owned());
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("x-fapiao-event", event.to_owned()),
            (TIMESTAMP_HEADER, ts.to_string()),
            (
                SIGNATURE_HEADER,
                sign_webhook(secret.as_bytes(), ts, body.as_bytes()),
            ),
        ];
        let r = self
            .client(url)?
            .request(Method::POST, &path, &headers, body.into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        if (200..300).contains(&r.status) {
            Ok(())
        } else {
            Err(format!("HTTP {}", r.status))
        }
    }
}
