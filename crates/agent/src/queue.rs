//! The agent's work queue: uploads, reports, status reports and acknowledgements, each an
//! entry written in the transaction that made the work, worked off in id order.

use super::*;

/// Most bytes of invoice records in one upload or report batch (an envelope holds at most
/// 4 MiB).
pub(crate) const BATCH_BYTES: usize = 1024 * 1024;

/// The work queue's entries that wait for a peer.
const WAITING: fapiao_service::health::WaitingQueue = fapiao_service::health::WaitingQueue {
    waiting: "SELECT DISTINCT waiting_for FROM queue
              WHERE state = 'pending' AND waiting_for IS NOT NULL AND next_attempt_at > $1",
    release: "UPDATE queue SET next_attempt_at = $1, waiting_for = NULL
              WHERE state = 'pending' AND waiting_for = $2 AND next_attempt_at > $1",
};

/// An entry of the work queue.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: i64,
    pub(crate) kind: String,
    /// The invoice number (an order id for `ack`).
    pub(crate) subject: String,
    pub(crate) attempts: i64,
}

/// Invoice rows by number ([`Agent::invoice_rows`]).
pub(crate) struct InvoiceRows(std::collections::HashMap<String, Row>);

impl InvoiceRows {
    /// The row of the invoice `entry` names.
    pub(crate) fn of(&self, entry: &Entry) -> Result<&Row, AgentError> {
        self.0.get(&entry.subject).ok_or_else(|| {
            AgentError::Setup(format!("queued invoice {} is missing", entry.subject))
        })
    }
}

pub(crate) async fn enqueue(tx: &mut Tx, kind: &str, subject: &str) -> Result<(), StoreError> {
    let t = now().unix_timestamp();
    query(
        "INSERT INTO queue (kind, subject, state, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, 'pending', 0, $3, $3)",
    )
    .bind(kind)
    .bind(subject)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) async fn enqueue_once(tx: &mut Tx, kind: &str, subject: &str) -> Result<(), StoreError> {
    let pending: i64 = query_scalar(
        "SELECT COUNT(*) FROM queue WHERE kind = $1 AND subject = $2 AND state = 'pending'",
    )
    .bind(kind)
    .bind(subject)
    .fetch_one(&mut **tx)
    .await?;
    if pending == 0 {
        enqueue(tx, kind, subject).await?;
    }
    Ok(())
}

pub(crate) async fn finish(tx: &mut Tx, id: i64) -> Result<(), StoreError> {
    query("UPDATE queue SET state = 'done', attempts = attempts + 1, done_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now().unix_timestamp())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn forget_pulled(tx: &mut Tx, order_id: &str) -> Result<(), StoreError> {
    query("DELETE FROM pulled WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Agent {
    /// The run of due entries at the head of a queue (uploads; or, when `reports`, reports
    /// and status reports), in id order, at most `max`: it starts at the first pending entry,
    /// only when that one is due, and ends before the first that is not — an entry that must
    /// wait holds back every one behind it.
    pub(crate) async fn due_run(
        &self,
        reports: bool,
        max: usize,
    ) -> Result<Vec<Entry>, AgentError> {
        let rows = query(if reports {
            "SELECT id, kind, subject, attempts, next_attempt_at FROM queue
             WHERE state = 'pending' AND kind IN ('report', 'status') ORDER BY id LIMIT $1"
        } else {
            "SELECT id, kind, subject, attempts, next_attempt_at FROM queue
             WHERE state = 'pending' AND kind = 'upload' ORDER BY id LIMIT $1"
        })
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(self.inner.db.pool())
        .await?;
        let t = now().unix_timestamp();
        let mut run = Vec::with_capacity(rows.len());
        for r in &rows {
            if r.try_get::<i64, _>("next_attempt_at")? > t {
                break;
            }
            run.push(Entry {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                subject: r.try_get("subject")?,
                attempts: r.try_get("attempts")?,
            });
        }
        Ok(run)
    }

    /// Puts an entry off with backoff, in `tx`; the delay. `waiting_for`: the peer that did
    /// not answer, whose return makes the entry due at once ([`Self::revive`]).
    pub(crate) async fn retry_in(
        &self,
        tx: &mut Tx,
        entry: &Entry,
        why: &str,
        waiting_for: Option<&str>,
    ) -> Result<Duration, AgentError> {
        let delay = self.inner.options.backoff.delay(entry.attempts);
        query(
            "UPDATE queue SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3,
                 waiting_for = $4
             WHERE id = $1",
        )
        .bind(entry.id)
        .bind(why)
        .bind((now() + delay).unix_timestamp())
        .bind(waiting_for)
        .execute(&mut **tx)
        .await?;
        tracing::info!(id = entry.id, kind = %entry.kind, error = %why, delay_ms = delay.as_millis(), "agent: will retry");
        Ok(delay)
    }

    /// Puts an entry off with backoff, in a transaction of its own.
    pub(crate) async fn retry_later(
        &self,
        entry: &Entry,
        why: &str,
        waiting_for: Option<&str>,
    ) -> Result<(), AgentError> {
        let mut tx = self.inner.db.begin_write().await?;
        self.retry_in(&mut tx, entry, why, waiting_for).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what a call to `peer` came to in the agent's health; the peer's identity
    /// when it did not answer (unreachable, timeout, 5xx), for [`Self::retry_in`].
    pub(crate) fn observe<T>(
        &self,
        peer: &EnvelopeClient,
        answer: &Result<T, CallError>,
    ) -> Option<String> {
        self.inner
            .health
            .observe(peer.peer_identity(), answer, now().unix_timestamp());
        match answer {
            Err(e) if e.is_transient() => Some(peer.peer_identity().to_owned()),
            _ => None,
        }
    }

    /// Entries waiting for a peer that did not answer are due at once when it answers now
    /// (known to, or answering a probe, at most every
    /// `fapiao_service::health::PROBE_DOWN_EVERY`): a peer back after any outage gets the
    /// queue behind its first entry within seconds. Entries the peer itself put off keep
    /// their backoff.
    pub(crate) async fn revive(&self) -> Result<(), AgentError> {
        let t = now();
        let (db, health) = (&self.inner.db, &self.inner.health);
        for peer in health
            .peers_waiting(db, WAITING, t.unix_timestamp())
            .await?
        {
            let Some(client) = [&self.inner.cloud, &self.inner.platform, &self.inner.tax]
                .into_iter()
                .find(|c| c.peer_identity() == peer)
            else {
                continue;
            };
            if health.answers_now(client, t).await {
                health
                    .release_waiting(db, WAITING, &peer, t.unix_timestamp())
                    .await?;
            }
        }
        Ok(())
    }

    /// The rows of the entries' invoices: one query.
    pub(crate) async fn invoice_rows(&self, entries: &[Entry]) -> Result<InvoiceRows, AgentError> {
        let numbers = serde_json::to_string(
            &entries
                .iter()
                .map(|e| e.subject.as_str())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| AgentError::Setup(e.to_string()))?;
        let rows = query(Sql::dialects(
            "SELECT * FROM invoices WHERE number IN (SELECT value FROM jsonb_each($1))",
            "SELECT * FROM invoices WHERE number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(numbers)
        .fetch_all(self.inner.db.pool())
        .await?;
        let mut by_number = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            by_number.insert(r.try_get::<String, _>("number")?, r);
        }
        Ok(InvoiceRows(by_number))
    }
}
