//! Webhook events: what an ERP may subscribe to, how an event is recorded in the
//! transaction of its change, and how the worker fans it out to the deliveries of the
//! endpoints subscribed to it.
//!
//! An event is recorded only for an enterprise with a subscriber then (its own URL, or an
//! endpoint not deleted), so that an enterprise without webhooks costs nothing. Fanning out
//! happens later, in the worker's transaction: the endpoints subscribed when it runs get a
//! delivery each (an endpoint registered a moment after an event may get it; one deleted
//! before does not).

use fapiao_protocol::client::now;
use fapiao_store::{Sql, StoreError, query};
use serde_json::json;

use crate::Cloud;

/// An invoice was issued and stored (blue or red).
pub const INVOICE_ISSUED: &str = "invoice.issued";
/// Tax's status of an invoice changed (`accepted`, `rejected`, `failed`).
pub const INVOICE_TAX_STATUS_CHANGED: &str = "invoice.tax_status_changed";
/// A red invoice was issued against a blue one (the event's invoice is the red; its
/// `blue_number` names the blue).
pub const INVOICE_REVERSED: &str = "invoice.reversed";
/// The enterprise's agent refused a queued order (enterprise-hosted issuing).
pub const ORDER_REFUSED: &str = "order.refused";
/// A test delivery asked for through the API (`POST …/ping`); never subscribed to.
pub const PING: &str = "ping";

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 4] = [
    INVOICE_ISSUED,
    INVOICE_TAX_STATUS_CHANGED,
    INVOICE_REVERSED,
    ORDER_REFUSED,
];

/// Whether enterprise `$e` (an SQL expression) has a subscriber: its own URL, or an endpoint
/// not deleted. Same text on both engines.
macro_rules! subscribed {
    ($e:literal) => {
        concat!(
            "(",
            $e,
            ".webhook_url IS NOT NULL OR EXISTS (SELECT 1 FROM webhook_endpoints s
             WHERE s.enterprise = ",
            $e,
            ".taxpayer_id AND s.deleted_at IS NULL))"
        )
    };
}
pub(crate) use subscribed;

/// Records events for the invoices of enterprise `$1` just stored: `$5` a JSON array of
/// `[number, event]`, `$3` now (Unix seconds). A statement for the transaction of the change,
/// sent with others (see `STORED` in [`crate::erp`], whose numbering it shares).
macro_rules! enqueue_sqlite {
    () => {
        concat!(
            "INSERT INTO webhook_events (enterprise, event, number, created_at)
            SELECT e.taxpayer_id, json_extract(n.value, '$[1]'), json_extract(n.value, '$[0]'), $3
            FROM jsonb_each($5) n JOIN enterprises e ON e.taxpayer_id = $1 AND ",
            $crate::webhook::events::subscribed!("e"),
            " ORDER BY n.key"
        )
    };
}

/// [`enqueue_sqlite!`] on PostgreSQL.
macro_rules! enqueue_postgres {
    () => {
        concat!(
            "INSERT INTO webhook_events (enterprise, event, number, created_at)
            SELECT e.taxpayer_id, n.value->>1, n.value->>0, $3
            FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS n(value, key)
            JOIN enterprises e ON e.taxpayer_id = $1 AND ",
            $crate::webhook::events::subscribed!("e"),
            " ORDER BY n.key"
        )
    };
}
pub(crate) use {enqueue_postgres, enqueue_sqlite};

/// The events of a stored invoice: `invoice.issued`, and for a red also `invoice.reversed`.
pub(crate) fn of_stored(number: &str, red: bool) -> Vec<serde_json::Value> {
    let mut events = vec![json!([number, INVOICE_ISSUED])];
    if red {
        events.push(json!([number, INVOICE_REVERSED]));
    }
    events
}

/// Records an event without an invoice (`payload` its data) for `enterprise`, if it has a
/// subscriber, in the caller's transaction.
pub(crate) async fn record(
    tx: &mut fapiao_store::Tx,
    enterprise: &str,
    event: &str,
    payload: &serde_json::Value,
) -> Result<(), StoreError> {
    query(concat!(
        "INSERT INTO webhook_events (enterprise, event, payload, created_at)
         SELECT e.taxpayer_id, $2, $3, $4 FROM enterprises e WHERE e.taxpayer_id = $1 AND ",
        subscribed!("e")
    ))
    .bind(enterprise)
    .bind(event)
    .bind(payload.to_string())
    .bind(now().unix_timestamp())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Events read for fanning out, oldest first; on PostgreSQL locked, skipping those another
/// replica is fanning out.
const UNFANNED: Sql = Sql::dialects(
    "SELECT id, enterprise, event, number, payload FROM webhook_events
     WHERE fanned = 0 ORDER BY id LIMIT 256",
    "SELECT id, enterprise, event, number, payload FROM webhook_events
     WHERE fanned = 0 ORDER BY id LIMIT 256 FOR UPDATE SKIP LOCKED",
);

/// An enterprise's subscriber: an endpoint and the events it wants, or (`None`) the
/// enterprise's own URL, which gets every event.
type Subscriber = (Option<String>, Vec<String>);

/// A delivery of an event to an endpoint (`$2`; `NULL`: the enterprise's own URL).
const DELIVERY: &str = "INSERT INTO webhooks
        (enterprise, endpoint, event_id, event, number, payload, state, attempts,
         next_attempt_at, created_at, give_up_at)
    VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $8)";

impl Cloud {
    /// Fans recorded events out to deliveries, one transaction per 256 events; how many
    /// events it fanned out.
    pub(crate) async fn fan_out(&self) -> Result<usize, StoreError> {
        let db = &self.inner.db;
        let any: Option<i64> =
            fapiao_store::query_scalar("SELECT id FROM webhook_events WHERE fanned = 0 LIMIT 1")
                .fetch_optional(db.pool())
                .await?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = db.begin_write().await?;
        let events = query(UNFANNED).fetch_all(&mut *tx).await?;
        let t = now().unix_timestamp();
        let give_up_at = self.give_up_at(t);
        // Each enterprise's subscribers, read once: `(endpoint id, its events)`, `None` for
        // the enterprise's own URL (every event).
        let mut subscribers: std::collections::HashMap<String, Vec<Subscriber>> =
            std::collections::HashMap::new();
        for ev in &events {
            let id: i64 = ev.try_get("id")?;
            let enterprise: String = ev.try_get("enterprise")?;
            let event: String = ev.try_get("event")?;
            if !subscribers.contains_key(&enterprise) {
                let mut subs = Vec::new();
                let own: Option<String> = fapiao_store::query_scalar(
                    "SELECT webhook_url FROM enterprises WHERE taxpayer_id = $1",
                )
                .bind(&enterprise)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
                if own.is_some() {
                    subs.push((None, Vec::new()));
                }
                for r in query(
                    "SELECT id, events FROM webhook_endpoints
                     WHERE enterprise = $1 AND deleted_at IS NULL ORDER BY created_at, id",
                )
                .bind(&enterprise)
                .fetch_all(&mut *tx)
                .await?
                {
                    let events: String = r.try_get("events")?;
                    subs.push((
                        Some(r.try_get("id")?),
                        serde_json::from_str(&events).unwrap_or_default(),
                    ));
                }
                subscribers.insert(enterprise.clone(), subs);
            }
            for (endpoint, wanted) in subscribers.get(&enterprise).into_iter().flatten() {
                if endpoint.is_some() && !wanted.contains(&event) {
                    continue;
                }
                query(DELIVERY)
                    .bind(&enterprise)
                    .bind(endpoint)
                    .bind(id)
                    .bind(&event)
                    .bind(
                        ev.try_get::<Option<String>, _>("number")?
                            .unwrap_or_default(),
                    )
                    .bind(ev.try_get::<Option<String>, _>("payload")?)
                    .bind(t)
                    .bind(give_up_at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let ids: Vec<i64> = events
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
        query(Sql::dialects(
            "UPDATE webhook_events SET fanned = 1 WHERE id IN (SELECT value FROM jsonb_each($1))",
            "UPDATE webhook_events SET fanned = 1
             WHERE id = ANY(ARRAY(SELECT (jsonb_array_elements_text($1::jsonb))::bigint))",
        ))
        .bind(json!(ids).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::debug!(events = events.len(), "webhook events fanned out");
        Ok(events.len())
    }

    /// Queues a `ping` delivery to one endpoint of `enterprise`, due now; its id.
    pub(crate) async fn ping(&self, enterprise: &str, endpoint: &str) -> Result<i64, StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        let t = now().unix_timestamp();
        let id: i64 = fapiao_store::query_scalar(
            "INSERT INTO webhooks
                (enterprise, endpoint, event_id, event, number, payload, state, attempts,
                 next_attempt_at, created_at, give_up_at)
             VALUES ($1, $2, NULL, 'ping', '', $3, 'pending', 0, $4, $4, $5)
             RETURNING id",
        )
        .bind(enterprise)
        .bind(endpoint)
        .bind(json!({"endpoint": endpoint}).to_string())
        .bind(t)
        .bind(t + 3600)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(id)
    }
}
