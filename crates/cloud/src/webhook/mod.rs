//! Webhooks: an ERP registers endpoints (`/v1/webhook-endpoints`, [`crate::erp`]) for the
//! events it wants ([`events::EVENTS`]); the operator may also give an enterprise one URL for
//! every event. Each event is recorded in the transaction of its change and fanned out to a
//! delivery per subscribed endpoint ([`events`]); each delivery is a signed POST:
//!
//! - body: JSON `{id, delivery, event, created_at, …}` — `id` the event's (the same for every
//!   endpoint and attempt, for de-duplication), `delivery` this delivery's; invoice events add
//!   `number, order_id, kind, blue_number, total, issued_at, tax_status, tax_reason` (the invoice
//!   as it stands when delivered), `order.refused` adds `order_id, code, message`;
//! - headers `X-Fapiao-Event`, `X-Fapiao-Delivery`, `X-Fapiao-Timestamp` and
//!   `X-Fapiao-Signature`: hex HMAC-SHA256 over `<timestamp>.<body>` keyed with the endpoint's
//!   secret (`whsec_…`, shown once when it was registered; the enterprise's API secret for its
//!   own URL), `fapiao_protocol::erp::sign_webhook`. `docs/webhooks.md` has a worked example.
//!
//! Any 2xx answer completes a delivery; anything else is retried with exponential backoff and
//! jitter until [`Options::retry_for`](crate::Options) (three days) has passed, then marked
//! failed. Every attempt is logged (`webhook_attempts`) for the endpoint's delivery log; a
//! delivery may be sent again on request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fapiao_protocol::HttpsClient;
use fapiao_protocol::client::now;
use fapiao_protocol::erp::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook};
use fapiao_store::{Engine, Sql, StoreError, query, query_scalar};
use http::Method;
use serde_json::json;

use crate::Cloud;

pub mod events;

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

    /// When a delivery made at `t` (Unix seconds) stops being retried:
    /// [`Options::retry_for`](crate::Options) later.
    pub(crate) fn give_up_at(&self, t: i64) -> i64 {
        t.saturating_add(
            i64::try_from(self.inner.options.retry_for.as_secs()).unwrap_or(i64::MAX / 2),
        )
    }

    /// The HTTPS client for `url` (connections kept alive). For an ERP's endpoint
    /// (`checked`), unless [`Options::webhooks_to_private`](crate::Options) allows it, every
    /// address the host resolves to must be public: an endpoint cannot aim cloud at its own
    /// network (loopback, private, link-local, unique-local addresses).
    async fn client(&self, url: &str, checked: bool) -> Result<Arc<HttpsClient>, String> {
        let authority = url
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("webhook URL {url} is not https://…"))?
            .to_owned();
        if checked && !self.inner.options.webhooks_to_private {
            let (host, port) = split_authority(&authority)?;
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("{host}: {e}"))?
                .collect();
            if let Some(a) = addrs.iter().find(|a| !is_public(a.ip())) {
                return Err(format!(
                    "{host} resolves to {}, not a public address",
                    a.ip()
                ));
            }
        }
        let mut map = self
            .inner
            .webhook_clients
            .0
            .lock()
            .map_err(|_| "lock".to_owned())?;
        if let Some(c) = map.get(&authority) {
            return Ok(c.clone());
        }
        let config = fapiao_crypto::tls::client_config(None, &self.inner.material.trust)
            .map_err(|e| e.to_string())?;
        let c = Arc::new(
            HttpsClient::new(&format!("https://{authority}"), Arc::new(config))
                .map_err(|e| e.to_string())?
                .with_timeout(std::time::Duration::from_secs(10)),
        );
        map.insert(authority, c.clone());
        Ok(c)
    }

    async fn deliver_due(&self) -> Result<usize, StoreError> {
        let fanned = self.fan_out().await?;
        // In id order from the index, not every due one sorted (the unary `+` keeps SQLite
        // from ranging over the due time; migration 7).
        let t = now().unix_timestamp();
        let mut due = query(
            "SELECT w.id, w.event_id, w.event, w.number, w.payload, w.attempts, w.created_at,
                 w.give_up_at, w.enterprise, w.endpoint, e.webhook_url, e.secret,
                 p.url AS endpoint_url, p.secret AS endpoint_secret,
                 p.deleted_at AS endpoint_deleted
             FROM webhooks w JOIN enterprises e ON e.taxpayer_id = w.enterprise
             LEFT JOIN webhook_endpoints p ON p.id = w.endpoint
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
            self.deliver_one(row).await?;
        }
        Ok(fanned + due.len())
    }

    /// Sends one due delivery and records the attempt: done, due again later, or failed
    /// for good (its time is up, or its endpoint was deleted).
    async fn deliver_one(&self, row: &fapiao_store::Row) -> Result<(), StoreError> {
        let id: i64 = row.try_get("id")?;
        let event: String = row.try_get("event")?;
        let attempts: i64 = row.try_get("attempts")?;
        let enterprise: String = row.try_get("enterprise")?;
        let endpoint: Option<String> = row.try_get("endpoint")?;
        let created_at: i64 = row.try_get("created_at")?;
        let give_up_at: i64 = row
            .try_get::<Option<i64>, _>("give_up_at")?
            .unwrap_or_else(|| self.give_up_at(created_at));
        let target = match &endpoint {
            Some(ep) => match (
                row.try_get::<Option<i64>, _>("endpoint_deleted")?,
                row.try_get::<Option<String>, _>("endpoint_url")?,
                row.try_get::<Option<String>, _>("endpoint_secret")?,
            ) {
                (None, Some(url), Some(sealed)) => Ok((
                    url,
                    self.inner
                        .vault
                        .unseal_str(crate::ENDPOINT_SECRET, ep, &sealed)
                        .await?,
                )),
                _ => Err("the endpoint was deleted".to_owned()),
            },
            None => match row.try_get::<Option<String>, _>("webhook_url")? {
                Some(url) => {
                    let sealed: String = row.try_get("secret")?;
                    Ok((
                        url,
                        self.inner
                            .vault
                            .unseal_str(crate::SECRET, &enterprise, &sealed)
                            .await?,
                    ))
                }
                None => Err("the webhook URL was removed".to_owned()),
            },
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "an attempt's duration, not a point in time"
        )]
        let started = std::time::Instant::now();
        // No endpoint (deleted) or URL (removed) to send to: failed for good.
        let gone = target.is_err();
        let (result, status) = match target {
            Ok((url, secret)) => match self.body(row).await {
                Ok(body) => {
                    self.deliver(id, &event, body, (&url, &secret, endpoint.is_some()))
                        .await
                }
                Err(e) => (Err(e), None),
            },
            Err(e) => (Err(e), None),
        };
        let took = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
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
        let t = now();
        let mut tx = self.inner.db.begin_write().await?;
        query(
            "INSERT INTO webhook_attempts (delivery, attempt, at, status, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery, attempt) DO NOTHING",
        )
        .bind(id)
        .bind(attempts + 1)
        .bind(t.unix_timestamp())
        .bind(status.map(i64::from))
        .bind(result.as_ref().err())
        .bind(took)
        .execute(&mut *tx)
        .await?;
        match result {
            Ok(()) => {
                query(
                    "UPDATE webhooks SET state = 'done', attempts = attempts + 1, last_error = NULL,
                         claimed_by = NULL, claimed_until = NULL
                     WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            Err(e) => {
                let next = t + self.inner.options.backoff.delay(attempts);
                let give_up = next.unix_timestamp() > give_up_at || gone;
                tracing::info!(id, %event, error = %e, give_up, "webhook delivery failed");
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
        tx.commit().await
    }

    /// The body of a delivery (see the module docs).
    async fn body(&self, row: &fapiao_store::Row) -> Result<String, String> {
        let get = |c: &str| row.try_get::<Option<String>, _>(c).ok().flatten();
        let id: i64 = row.try_get("id").map_err(|e| e.to_string())?;
        let event_id: Option<i64> = row.try_get("event_id").map_err(|e| e.to_string())?;
        let created_at: i64 = row.try_get("created_at").map_err(|e| e.to_string())?;
        let event = get("event").unwrap_or_default();
        let mut body = serde_json::Map::new();
        body.insert("id".into(), json!(event_id.unwrap_or(id)));
        body.insert("delivery".into(), json!(id));
        body.insert("event".into(), json!(event));
        body.insert("created_at".into(), json!(crate::rfc3339(created_at)));
        let number = get("number").unwrap_or_default();
        if number.is_empty() {
            let payload: serde_json::Value = get("payload")
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or_else(|| json!({}));
            if let serde_json::Value::Object(fields) = payload {
                body.extend(fields);
            }
        } else {
            let inv = query(
                "SELECT order_id, kind, blue_number, total, issued_at, tax_status, tax_reason
                 FROM invoices WHERE number = $1",
            )
            .bind(&number)
            .fetch_one(self.inner.db.pool())
            .await
            .map_err(|e| e.to_string())?;
            let field = |c: &str| inv.try_get::<Option<String>, _>(c).ok().flatten();
            body.insert("number".into(), json!(number));
            for c in [
                "order_id",
                "kind",
                "blue_number",
                "total",
                "tax_status",
                "tax_reason",
            ] {
                body.insert(c.into(), json!(field(c)));
            }
            body.insert(
                "issued_at".into(),
                json!(field("issued_at").map(|t| crate::china_rfc3339(&t))),
            );
        }
        Ok(serde_json::Value::Object(body).to_string())
    }

    /// POSTs `body` signed with `secret`: the outcome and the HTTP status, if one came.
    async fn deliver(
        &self,
        id: i64,
        event: &str,
        body: String,
        (url, secret, checked): (&str, &str, bool),
    ) -> (Result<(), String>, Option<u16>) {
        let ts = now().unix_timestamp();
        let path = url
            .strip_prefix("https://")
            .and_then(|r| r.find('/').map(|i| r[i..].to_owned()))
            .unwrap_or_else(|| "/".to_owned());
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("x-fapiao-event", event.to_owned()),
            ("x-fapiao-delivery", id.to_string()),
            (TIMESTAMP_HEADER, ts.to_string()),
            (
                SIGNATURE_HEADER,
                sign_webhook(secret.as_bytes(), ts, body.as_bytes()),
            ),
        ];
        let client = match self.client(url, checked).await {
            Ok(c) => c,
            Err(e) => return (Err(e), None),
        };
        match client
            .request(Method::POST, &path, &headers, body.into_bytes())
            .await
        {
            Ok(r) if (200..300).contains(&r.status) => (Ok(()), Some(r.status)),
            Ok(r) => (Err(format!("HTTP {}", r.status)), Some(r.status)),
            Err(e) => (Err(e.to_string()), None),
        }
    }
}

/// `host` and port of an URL's authority (`host`, `host:port`, `[v6]:port`; 443 by default).
pub(crate) fn split_authority(authority: &str) -> Result<(String, u16), String> {
    let bad = || format!("{authority}: not a host with an optional port");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 443,
            None => return Err(bad()),
        };
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad())?),
        None => (authority, 443),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918),
/// shared (100.64/10), link-local, unique-local, unspecified, multicast or documentation.
pub(crate) fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "202.96.134.133", "2400:3200::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("erp.example").unwrap(),
            ("erp.example".into(), 443)
        );
        assert_eq!(
            split_authority("erp.example:8443").unwrap(),
            ("erp.example".into(), 8443)
        );
        assert_eq!(split_authority("[::1]:9000").unwrap(), ("::1".into(), 9000));
        assert_eq!(split_authority("[::1]").unwrap(), ("::1".into(), 443));
        for bad in ["", ":443", "erp.example:x", "[::1", "[::1]x"] {
            assert!(split_authority(bad).is_err(), "{bad}");
        }
    }
}
