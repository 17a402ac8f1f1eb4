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

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tracing::Instrument;

use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    Issued, NoticeResults, Receipts, SignedReceipt, StatusNotice, StatusNotices, TaxStatus,
    UploadBatch, WireInvoice, message_type,
};
use fapiao_store::{Engine, Row, Sql, StoreError, Tx, query, query_as, query_scalar};
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

/// Queues a `kind` entry (`upload` or `notify`) for invoice `number`, due at once.
pub(crate) async fn enqueue(tx: &mut Tx, kind: &str, number: &str) -> Result<(), StoreError> {
    let row = queued(kind, number, now().unix_timestamp());
    fapiao_store::insert_rows(tx, "outbox", QUEUED, vec![row]).await?;
    Ok(())
}

/// The columns of a newly queued outbox entry, in [`queued`]'s order.
const QUEUED: &[&str] = &[
    "kind",
    "number",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
];

/// A newly queued outbox entry (due at once), as a row for `fapiao_store::insert_rows`.
fn queued(kind: &str, number: &str, t: i64) -> serde_json::Value {
    serde_json::json!([kind, number, "pending", 0, t, t])
}

/// The usual outcomes of a batch, set-based: entries notified (`[id]`), receipts (invoices:
/// `[number, status, reason, receipt]`; their entries: `[id, state, reason]`) and the notices
/// they queue (outbox rows).
async fn record_usual(
    tx: &mut Tx,
    t: i64,
    notified: Vec<serde_json::Value>,
    receipts: Vec<serde_json::Value>,
    uploaded: Vec<serde_json::Value>,
    to_notify: Vec<serde_json::Value>,
) -> Result<(), StoreError> {
    if !notified.is_empty() {
        query(Sql::dialects(
            "UPDATE outbox SET state = 'done', attempts = attempts + 1, done_at = $2
             WHERE id IN (SELECT value FROM jsonb_each($1))",
            "UPDATE outbox SET state = 'done', attempts = attempts + 1, done_at = $2
             WHERE id = ANY(ARRAY(SELECT (jsonb_array_elements_text($1::jsonb))::bigint))",
        ))
        .bind(serde_json::Value::Array(notified).to_string())
        .bind(t)
        .execute(&mut **tx)
        .await?;
    }
    if !receipts.is_empty() {
        query(Sql::dialects(
            "UPDATE invoices SET tax_status = r.status, tax_reason = r.reason, receipt = r.receipt
             FROM (SELECT json_extract(value, '$[0]') AS number,
                          json_extract(value, '$[1]') AS status,
                          json_extract(value, '$[2]') AS reason,
                          json_extract(value, '$[3]') AS receipt
                   FROM jsonb_each($1)) AS r
             WHERE invoices.number = r.number",
            "UPDATE invoices SET tax_status = r.value->>1, tax_reason = r.value->>2,
                 receipt = r.value->>3
             FROM jsonb_array_elements($1::jsonb) AS r
             WHERE invoices.number = r.value->>0",
        ))
        .bind(serde_json::Value::Array(receipts).to_string())
        .execute(&mut **tx)
        .await?;
        query(Sql::dialects(
            "UPDATE outbox SET state = u.state, last_error = u.reason,
                 attempts = attempts + 1, done_at = $2
             FROM (SELECT json_extract(value, '$[0]') AS id,
                          json_extract(value, '$[1]') AS state,
                          json_extract(value, '$[2]') AS reason
                   FROM jsonb_each($1)) AS u
             WHERE outbox.id = u.id",
            "UPDATE outbox SET state = u.value->>1, last_error = u.value->>2,
                 attempts = attempts + 1, done_at = $2
             FROM jsonb_array_elements($1::jsonb) AS u
             WHERE outbox.id = (u.value->>0)::bigint",
        ))
        .bind(serde_json::Value::Array(uploaded).to_string())
        .bind(t)
        .execute(&mut **tx)
        .await?;
        fapiao_store::insert_rows(tx, "outbox", QUEUED, to_notify).await?;
    }
    Ok(())
}

/// The role's background worker.
pub type Workers = fapiao_service::Worker;

/// Claims due entries for this replica (`$1`) until `$2`: those of `$3` (ids, a JSON array)
/// still pending and not claimed by a live replica at `$4`, skipping rows another replica is
/// claiming at this moment. Returns the ids claimed.
const CLAIM: Sql = Sql::postgres_only(
    "UPDATE outbox SET claimed_by = $1, claimed_until = $2
     WHERE id IN (
         SELECT id FROM outbox
         WHERE id = ANY(ARRAY(SELECT (jsonb_array_elements_text($3::jsonb))::bigint))
           AND state = 'pending'
           AND (claimed_until IS NULL OR claimed_until < $4 OR claimed_by = $1)
         FOR UPDATE SKIP LOCKED)
     RETURNING id",
);

/// The outbox entries that wait for a peer (tax, or a cloud).
const WAITING: fapiao_service::health::WaitingQueue = fapiao_service::health::WaitingQueue {
    waiting: "SELECT DISTINCT waiting_for FROM outbox
              WHERE state = 'pending' AND waiting_for IS NOT NULL AND next_attempt_at > $1",
    release: "UPDATE outbox SET next_attempt_at = $1, waiting_for = NULL
              WHERE state = 'pending' AND waiting_for = $2 AND next_attempt_at > $1",
};

/// How long a claim on an outbox entry lasts (seconds): longer than any exchange with tax or
/// a cloud takes.
const CLAIM_LEASE: i64 = 15;

/// Batches in flight at once.
const OUTBOX_PARALLEL: usize = 8;

/// Due entries one look at the outbox takes on.
const ROUND: usize = 256;

/// A round stops taking more entries after this many…
const ROUND_MOST: usize = 4096;

/// …or after this long.
const ROUND_LONGEST: Duration = Duration::from_secs(2);

/// How long a round waits before it looks at what is due: the uploads and notices of the
/// orders issued meanwhile join the same exchanges. Below full batches every exchange costs
/// two seals and two opens (~2.3 ms of CPU) for the few entries it carries; at half the
/// closed-loop rate that made an invoice cost almost twice the CPU it costs at full speed
/// (`docs/performance.md`). Only tax's acceptance waits for it, never an ERP's answer.
pub const LINGER: Duration = Duration::from_millis(50);

/// Most bytes of invoice records in one upload batch (the envelope limit is 4 MiB).
const UPLOAD_BATCH_BYTES: usize = 1024 * 1024;

/// Every entry of `batch` waits for `peer`, which did not answer.
fn unreachable(
    batch: Vec<Entry>,
    peer: &str,
    e: &fapiao_protocol::client::CallError,
) -> Vec<(Entry, Outcome)> {
    batch
        .into_iter()
        .map(|entry| {
            let outcome = Outcome::Unreachable {
                peer: peer.to_owned(),
                why: e.to_string(),
            };
            (entry, outcome)
        })
        .collect()
}

/// `entries` in runs of at most `size`.
fn chunks(mut entries: Vec<Entry>, size: usize) -> Vec<Vec<Entry>> {
    let mut out = Vec::new();
    while !entries.is_empty() {
        let rest = entries.split_off(entries.len().min(size));
        out.push(std::mem::replace(&mut entries, rest));
    }
    out
}

/// A due outbox entry.
struct Entry {
    id: i64,
    kind: String,
    number: String,
    attempts: i64,
}

/// The entries' invoice numbers as a JSON array, for `jsonb_each`.
fn numbers_json(entries: &[Entry]) -> String {
    serde_json::Value::from(
        entries
            .iter()
            .map(|e| e.number.as_str())
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// What became of an entry.
enum Outcome {
    /// Cloud stored the notice.
    Notified,
    /// tax answered the upload with a status (`reason` when it refused the invoice).
    Receipt {
        receipt: Box<SignedReceipt>,
        status: TaxStatus,
        reason: Option<String>,
    },
    /// Definitely not deliverable; listed for operators.
    Failed(String),
    /// Try again after a backoff.
    Retry(String),
    /// The peer did not answer (unreachable, timeout, 5xx): try again after a backoff, or
    /// as soon as the peer answers a probe.
    Unreachable {
        /// The peer's identity.
        peer: String,
        /// What happened.
        why: String,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Notified | Self::Receipt { reason: None, .. } => "done",
            Self::Receipt { .. } | Self::Failed(_) => "failed",
            Self::Retry(_) | Self::Unreachable { .. } => "retry",
        }
    }
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

    /// Works off the due entries: uploads go to tax in batches of up to
    /// [`UploadBatch::MAX`], notices to their cloud in batches of up to
    /// [`StatusNotices::MAX`]; each batch is one exchange and one commit. Up to
    /// `OUTBOX_PARALLEL` batches are in flight at once, and each one that finishes makes room
    /// for the entries that fell due meanwhile (so a busy outbox sends bigger batches). A
    /// round ends when nothing is due and nothing is in flight, or after a few thousand
    /// entries or two seconds (then it stops taking more and finishes what it has, so a
    /// shutdown never waits long). It begins [`LINGER`] after it is called. Returns how many
    /// entries it handled.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn work_once(&self) -> Result<usize, StoreError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "a round's length, not a point in time"
        )]
        let started = std::time::Instant::now();
        let mut in_flight: HashSet<i64> = HashSet::new();
        // Batches in flight: uploads, notices.
        let mut kinds = [0_usize; 2];
        let mut running: tokio::task::JoinSet<(bool, Vec<i64>, Result<(), StoreError>)> =
            tokio::task::JoinSet::new();
        let mut handled = 0;
        let mut taking = true;
        tokio::time::sleep(LINGER).await;
        self.revive().await?;
        loop {
            if taking && running.len() < OUTBOX_PARALLEL {
                for (upload, entries) in self
                    .due_batches(&in_flight, kinds, OUTBOX_PARALLEL - running.len())
                    .await?
                {
                    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
                    in_flight.extend(&ids);
                    handled += ids.len();
                    kinds[usize::from(!upload)] += 1;
                    let me = self.clone();
                    running.spawn(async move {
                        let r = if upload {
                            me.upload(entries).await
                        } else {
                            me.notify(entries).await
                        };
                        (upload, ids, r)
                    });
                }
                taking = handled < ROUND_MOST && started.elapsed() < ROUND_LONGEST;
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok((upload, ids, r)) => {
                    kinds[usize::from(!upload)] -= 1;
                    for id in ids {
                        in_flight.remove(&id);
                    }
                    r?;
                }
                // A panic in a batch goes on unwinding here, as it would have inline.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(StoreError::Data(e.to_string())),
            }
        }
        Ok(handled)
    }

    /// Entries waiting for a peer that did not answer are due at once when it answers now:
    /// known to answer (another call got through), or answering a probe (at most every
    /// `fapiao_service::health::PROBE_DOWN_EVERY` per peer). So a peer back after an outage
    /// of any length gets its backlog within seconds, not when each entry's backoff (up to
    /// `retry_max`) runs out; entries the peer itself put off keep their backoff.
    async fn revive(&self) -> Result<(), StoreError> {
        let t = now();
        let (db, health) = (&self.inner.db, &self.inner.health);
        for peer in health
            .peers_waiting(db, WAITING, t.unix_timestamp())
            .await?
        {
            let answers = if peer == self.inner.tax.peer_identity() {
                health.answers_now(&self.inner.tax, t).await
            } else {
                let url: Option<String> =
                    query_scalar("SELECT url FROM clouds WHERE identity = $1")
                        .bind(&peer)
                        .fetch_optional(&mut *db.read().await?)
                        .await?;
                match url.and_then(|u| self.cloud_client(&peer, &u).ok()) {
                    Some(client) => health.answers_now(&client, t).await,
                    None => false,
                }
            };
            if answers {
                health
                    .release_waiting(db, WAITING, &peer, t.unix_timestamp())
                    .await?;
            }
        }
        Ok(())
    }

    /// Up to `slots` batches of due entries not already in flight, uploads and notices
    /// taking turns. A batch that is not full waits while a batch of its kind is in flight
    /// (`busy`: uploads, notices), as Nagle's algorithm holds a small segment back while
    /// data is unacknowledged: an idle outbox sends an entry at once, a busy one gathers what
    /// falls due during an exchange into the next batch instead of paying an exchange (two
    /// seals, two opens) for every few entries.
    async fn due_batches(
        &self,
        in_flight: &HashSet<i64>,
        busy: [usize; 2],
        slots: usize,
    ) -> Result<Vec<(bool, Vec<Entry>)>, StoreError> {
        // A red's upload is held back while an earlier upload of its chain (the blue, or
        // another red of the same blue) is pending — in flight counts as pending: tax checks
        // each red against the blue and the reds it already holds, so a chain reaches tax in
        // issue order even with batches in flight side by side. Blues and notices are never
        // held back. (The unary `+` keeps SQLite from ranging over the due time: it walks the
        // pending entries in id order and stops at the limit; see migration 4.)
        let t = now().unix_timestamp();
        let due = query(
            "SELECT o.id, o.kind, o.number, o.attempts FROM outbox o
             WHERE o.state = 'pending' AND +o.next_attempt_at <= $1
               AND (o.claimed_until IS NULL OR o.claimed_until < $1 OR o.claimed_by = $3)
               AND NOT (o.kind = 'upload' AND EXISTS (
                   SELECT 1 FROM invoices r JOIN outbox p ON p.kind = 'upload'
                       AND p.state = 'pending' AND p.id < o.id
                       AND (p.number = r.blue_number OR p.number IN
                            (SELECT number FROM invoices WHERE blue_number = r.blue_number))
                   WHERE r.number = o.number AND r.blue_number IS NOT NULL))
             ORDER BY o.id LIMIT $2",
        )
        .bind(t)
        .bind(i64::try_from(ROUND + in_flight.len()).unwrap_or(i64::MAX))
        .bind(&self.inner.instance)
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        let mut due = due
            .iter()
            .map(|row| {
                Ok(Entry {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    number: row.try_get("number")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .filter(|e| !matches!(e, Ok(e) if in_flight.contains(&e.id)))
            .collect::<Result<Vec<Entry>, StoreError>>()?;
        if self.inner.db.engine() == Engine::Postgres && !due.is_empty() {
            // Replicas share the outbox: each sends what it claimed, and a killed replica's
            // claims run out and are taken over.
            let ids: Vec<i64> = due.iter().map(|e| e.id).collect();
            let claimed: HashSet<i64> = query_scalar::<i64>(CLAIM)
                .bind(&self.inner.instance)
                .bind(t + CLAIM_LEASE)
                .bind(serde_json::json!(ids).to_string())
                .bind(t)
                .fetch_all(self.inner.db.pool())
                .await?
                .into_iter()
                .collect();
            due.retain(|e| claimed.contains(&e.id));
        }
        let (mut uploads, mut notices) = (Vec::new(), Vec::new());
        for entry in due {
            if entry.kind == "upload" {
                uploads.push(entry);
            } else {
                notices.push(entry);
            }
        }
        let ready = |mut batches: Vec<Vec<Entry>>, max: usize, busy: usize| {
            if busy > 0 && batches.last().is_some_and(|b| b.len() < max) {
                batches.pop();
            }
            batches.into_iter()
        };
        let mut uploads = ready(chunks(uploads, UploadBatch::MAX), UploadBatch::MAX, busy[0]);
        let mut notices = ready(
            chunks(notices, StatusNotices::MAX),
            StatusNotices::MAX,
            busy[1],
        );
        let mut batches = Vec::new();
        while batches.len() < slots {
            let (u, n) = (uploads.next(), notices.next());
            if u.is_none() && n.is_none() {
                break;
            }
            batches.extend(u.map(|b| (true, b)));
            batches.extend(n.map(|b| (false, b)));
        }
        batches.truncate(slots);
        Ok(batches)
    }

    /// Records what became of a batch's entries, in one commit.
    async fn record(&self, outcomes: Vec<(Entry, Outcome)>) -> Result<(), StoreError> {
        let t = now().unix_timestamp();
        let mut tx = self.inner.db.begin_write().await?;
        let mut refused = Vec::new();
        // The usual outcomes are written set-based after the loop, a few statements per
        // batch whatever its size; the rare ones (failed, retried) one by one in it. Audit
        // records go in entry order either way.
        let mut notified = Vec::new();
        let mut receipts = Vec::new();
        let mut uploaded = Vec::new();
        let mut to_notify = Vec::new();
        for (entry, outcome) in outcomes {
            let Entry {
                id,
                kind,
                number,
                attempts,
            } = entry;
            match outcome {
                Outcome::Notified => {
                    notified.push(serde_json::json!(id));
                    crate::step::audit(
                        &mut tx,
                        "system",
                        "cloud.notified",
                        &number,
                        &serde_json::json!({}),
                    )
                    .await?;
                }
                Outcome::Receipt {
                    receipt,
                    status,
                    reason,
                } => {
                    receipts.push(serde_json::json!([
                        number,
                        status.as_str(),
                        reason,
                        serde_json::to_string(&receipt).unwrap_or_default(),
                    ]));
                    uploaded.push(serde_json::json!([
                        id,
                        if reason.is_some() { "failed" } else { "done" },
                        reason,
                    ]));
                    to_notify.push(queued("notify", &number, t));
                    crate::step::audit(
                        &mut tx,
                        self.inner.tax.peer_identity(),
                        if reason.is_some() {
                            "upload.refused"
                        } else {
                            "upload.accepted"
                        },
                        &number,
                        &serde_json::json!({
                            "receipt_id": receipt.receipt.receipt_id,
                            "status": status.as_str(),
                            "reason": reason,
                        }),
                    )
                    .await?;
                    if let Some(r) = reason {
                        refused.push((number, r));
                    }
                }
                Outcome::Failed(reason) => {
                    tracing::warn!(id, %number, %reason, "outbox entry failed definitely");
                    query(
                        "UPDATE outbox SET state = 'failed', attempts = attempts + 1,
                             last_error = $2, claimed_by = NULL, claimed_until = NULL
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                    crate::step::audit(
                        &mut tx,
                        "system",
                        &format!("{kind}.failed"),
                        &number,
                        &serde_json::json!({"reason": reason}),
                    )
                    .await?;
                }
                Outcome::Retry(_) | Outcome::Unreachable { .. } => {
                    // Each entry is due on its own schedule: later entries are not held back
                    // by this one's backoff. A red whose blue is still pending is answered
                    // `processing` by tax and retried the same way. An entry whose peer did
                    // not answer waits for it too: it is due again as soon as the peer
                    // answers a probe (`revive`).
                    let (reason, waiting_for) = match outcome {
                        Outcome::Unreachable { peer, why } => (why, Some(peer)),
                        Outcome::Retry(why) => (why, None),
                        _ => unreachable!("matched above"),
                    };
                    let delay = self.backoff(attempts);
                    tracing::info!(id, %kind, %number, %reason, delay_ms = delay.as_millis(), "outbox entry will be retried");
                    query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                             next_attempt_at = $3, claimed_by = NULL, claimed_until = NULL,
                             waiting_for = $4
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(&reason)
                    .bind((now() + delay).unix_timestamp())
                    .bind(waiting_for)
                    .execute(&mut *tx)
                    .await?;
                    crate::step::audit(
                        &mut tx,
                        "system",
                        &format!("{kind}.attempted"),
                        &number,
                        &serde_json::json!({"attempt": attempts + 1, "error": reason}),
                    )
                    .await?;
                }
            }
        }
        record_usual(&mut tx, t, notified, receipts, uploaded, to_notify).await?;
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await?;
        self.inner.wake.notify_one();
        for (number, reason) in refused {
            tracing::warn!(%number, %reason, "tax refused an invoice");
        }
        Ok(())
    }

    /// Counts one outbox exchange (a batch of entries sent).
    fn exchanged(&self, kind: &'static str) {
        self.inner.registry.inc(
            "fapiao_outbox_exchanges_total",
            "Outbox batches sent (each one exchange carrying one or more entries), by kind.",
            &[("kind", kind)],
        );
    }

    fn backoff(&self, attempts: i64) -> Duration {
        fapiao_service::Backoff {
            base: self.inner.options.retry_base,
            max: self.inner.options.retry_max,
        }
        .delay(attempts)
    }

    /// Uploads a batch of invoices to tax and records what tax answered.
    async fn upload(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        #[expect(
            clippy::disallowed_methods,
            reason = "an upload's duration, not a point in time"
        )]
        let start = std::time::Instant::now();
        // Each stored record, unsealed and read; one that cannot be is failed on its own.
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut ready: Vec<(Entry, WireInvoice, usize)> = Vec::with_capacity(entries.len());
        // Two entries may name one invoice: each reads its record.
        let records = self.stored_records(&entries).await?;
        for entry in entries {
            let record = records.get(&entry.number).map(String::as_str);
            match self.stored_record(&entry.number, record).await? {
                Ok((wire, bytes)) => ready.push((entry, wire, bytes)),
                Err(reason) => outcomes.push((entry, Outcome::Failed(reason))),
            }
        }
        while !ready.is_empty() {
            let mut bytes = 0;
            let take = ready
                .iter()
                .take_while(|(_, _, b)| {
                    bytes += b;
                    bytes <= UPLOAD_BATCH_BYTES
                })
                .count()
                .max(1);
            let rest = ready.split_off(take);
            let batch = std::mem::replace(&mut ready, rest);
            outcomes.extend(self.upload_batch(batch).await);
        }
        for (_, outcome) in &outcomes {
            let label = [("outcome", outcome.label())];
            self.inner.registry.inc(
                "fapiao_tax_uploads_total",
                "Uploads to tax by outcome.",
                &label,
            );
            self.inner.registry.observe(
                "fapiao_tax_upload_duration_seconds",
                "Upload to tax, request to recorded receipt, by outcome.",
                &label,
                start.elapsed(),
            );
        }
        self.record(outcomes).await
    }

    /// The stored (sealed) records of the entries' invoices, by number: one query.
    async fn stored_records(
        &self,
        entries: &[Entry],
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> = query_as(Sql::dialects(
            "SELECT number, record FROM invoices
             WHERE number IN (SELECT value FROM jsonb_each($1))",
            "SELECT number, record FROM invoices
             WHERE number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(numbers_json(entries))
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// An invoice's stored record (as [`Self::stored_records`] read it) unsealed, and its
    /// size, or why it cannot be uploaded.
    async fn stored_record(
        &self,
        number: &str,
        record: Option<&str>,
    ) -> Result<Result<(WireInvoice, usize), String>, StoreError> {
        let Some(record) = record else {
            return Ok(Err(format!("invoice {number} is missing")));
        };
        let record = self
            .inner
            .vault
            .unseal_str(crate::RECORD, number, record)
            .await?;
        Ok(serde_json::from_str(&record)
            .map(|w| (w, record.len()))
            .map_err(|e| format!("stored record unreadable: {e}")))
    }

    /// One `invoice.upload_batch` exchange: each receipt is checked (tax's signature, the
    /// content hash of our invoice) before it counts.
    async fn upload_batch(&self, batch: Vec<(Entry, WireInvoice, usize)>) -> Vec<(Entry, Outcome)> {
        let (batch, invoices): (Vec<Entry>, Vec<WireInvoice>) =
            batch.into_iter().map(|(e, w, _)| (e, w)).unzip();
        let upload = UploadBatch { invoices };
        let all = |batch: Vec<Entry>, why: String| {
            batch
                .into_iter()
                .map(|e| (e, Outcome::Retry(why.clone())))
                .collect()
        };
        self.exchanged("upload");
        let answer = self
            .inner
            .tax
            .call(message_type::INVOICE_UPLOAD_BATCH, &upload)
            .instrument(tracing::debug_span!("tax.upload"))
            .await;
        let tax = self.inner.tax.peer_identity();
        self.inner
            .health
            .observe(tax, &answer, now().unix_timestamp());
        let answer = match answer {
            Ok(a) => a,
            Err(e) if e.is_transient() => return unreachable(batch, tax, &e),
            Err(e) => return all(batch, e.to_string()),
        };
        if answer.message_type != message_type::UPLOAD_RECEIPTS {
            let text = String::from_utf8_lossy(&answer.payload).into_owned();
            return all(
                batch,
                format!("tax answered {}: {text}", answer.message_type),
            );
        }
        let receipts: Receipts = match answer.parse(self.inner.tax.peer_identity()) {
            Ok(r) => r,
            Err(e) => return all(batch, e.to_string()),
        };
        if receipts.receipts.len() != batch.len() {
            let why = format!(
                "tax answered {} receipts for {} invoices",
                receipts.receipts.len(),
                batch.len()
            );
            return all(batch, why);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for ((entry, wire), receipt) in batch
            .into_iter()
            .zip(&upload.invoices)
            .zip(receipts.receipts)
        {
            outcomes.push((entry, self.receipt_outcome(wire, receipt)));
            // Each check is a signature verification: the runtime gets its thread back
            // between them.
            tokio::task::yield_now().await;
        }
        outcomes
    }

    /// What a receipt for `wire` means.
    fn receipt_outcome(&self, wire: &WireInvoice, receipt: SignedReceipt) -> Outcome {
        let signed = match wire.to_signed() {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let Err(e) = receipt.verify_for(&signed, &self.inner.material.trust.current(), now()) {
            return Outcome::Retry(format!("receipt: {e}"));
        }
        match receipt.receipt.tax_status() {
            Some((status, reason)) => Outcome::Receipt {
                receipt: Box::new(receipt),
                status,
                reason,
            },
            None => Outcome::Retry(format!(
                "tax is processing: {}",
                receipt.receipt.reason.unwrap_or_default()
            )),
        }
    }

    /// Tells each cloud concerned of a batch of status changes (one exchange per cloud) and
    /// records what they answered.
    async fn notify(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut outcomes = Vec::with_capacity(entries.len());
        // (cloud identity, its URL) → its notices.
        type Group = ((String, String), Vec<(Entry, StatusNotice)>);
        let mut by_cloud: Vec<Group> = Vec::new();
        // Two entries may name one invoice: each reads its row.
        let numbers: Vec<String> = entries.iter().map(|e| e.number.clone()).collect();
        let rows = self.notice_rows_of(&numbers).await?;
        for entry in entries {
            match self
                .notice_of(&entry.number, rows.get(&entry.number), false)
                .await?
            {
                Ok((identity, url, notice)) => {
                    let cloud = (identity, url);
                    match by_cloud.iter_mut().find(|(c, _)| *c == cloud) {
                        Some((_, group)) => group.push((entry, notice)),
                        None => by_cloud.push((cloud, vec![(entry, notice)])),
                    }
                }
                Err(reason) => outcomes.push((entry, Outcome::Failed(reason))),
            }
        }
        for ((identity, url), group) in by_cloud {
            let (entries, notices): (Vec<Entry>, Vec<StatusNotice>) = group.into_iter().unzip();
            let answers = self.send_notices(&identity, &url, notices).await;
            outcomes.extend(entries.into_iter().zip(answers));
        }
        self.record(outcomes).await
    }

    /// What the notices of these invoices are made of, by number: one query.
    pub(crate) async fn notice_rows_of(
        &self,
        numbers: &[String],
    ) -> Result<HashMap<String, Row>, StoreError> {
        let rows = query(Sql::dialects(
            "SELECT i.number, i.enterprise, i.tax_status, i.tax_reason, i.receipt,
                 i.issued_by IS NOT NULL AS by_agent, c.identity, c.url
             FROM invoices i JOIN enterprises e ON e.taxpayer_id = i.enterprise
                 LEFT JOIN clouds c ON c.identity = e.cloud
             WHERE i.number IN (SELECT value FROM jsonb_each($1))",
            "SELECT i.number, i.enterprise, i.tax_status, i.tax_reason, i.receipt,
                 i.issued_by IS NOT NULL AS by_agent, c.identity, c.url
             FROM invoices i JOIN enterprises e ON e.taxpayer_id = i.enterprise
                 LEFT JOIN clouds c ON c.identity = e.cloud
             WHERE i.number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(serde_json::json!(numbers).to_string())
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get("number")?, r)))
            .collect()
    }

    /// The notice for an invoice (its row as [`Self::notice_rows_of`] read it) and the cloud
    /// it goes to, or why there is none. It carries the invoice itself when an agent issued
    /// it (new to cloud) or `with_invoice` (a cloud reconciling asks for it).
    pub(crate) async fn notice_of(
        &self,
        number: &str,
        row: Option<&Row>,
        with_invoice: bool,
    ) -> Result<Result<(String, String, StatusNotice), String>, StoreError> {
        let Some(row) = row else {
            return Ok(Err(format!("invoice {number} is missing")));
        };
        let (Some(identity), Some(url)) = (
            row.try_get::<Option<String>, _>("identity")?,
            row.try_get::<Option<String>, _>("url")?,
        ) else {
            return Ok(Err("the enterprise's cloud is not registered".into()));
        };
        let status: String = row.try_get("tax_status")?;
        let Some(tax_status) = TaxStatus::parse(&status) else {
            return Ok(Err(format!("unknown tax status `{status}`")));
        };
        let receipt: Option<String> = row.try_get("receipt")?;
        let receipt = match receipt.map(|r| serde_json::from_str::<SignedReceipt>(&r)) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => return Ok(Err(format!("stored receipt unreadable: {e}"))),
            None => None,
        };
        // An invoice an agent issued is new to cloud: the notice carries it.
        let issued = if with_invoice || row.try_get::<bool, _>("by_agent")? {
            let Some(inv) = self.invoice(number).await? else {
                return Ok(Err(format!("invoice {number} is missing")));
            };
            let request_hash: Option<String> = query_scalar(
                "SELECT request_hash FROM orders WHERE enterprise = $1 AND order_id = $2",
            )
            .bind(&inv.enterprise)
            .bind(&inv.order_id)
            .fetch_optional(&mut *self.inner.db.read().await?)
            .await?;
            let Some(request_hash) = request_hash else {
                return Ok(Err(format!("the order of invoice {number} is missing")));
            };
            Some(Issued {
                order_id: inv.order_id,
                request_hash,
                invoice: inv.invoice,
                form: inv.form,
            })
        } else {
            None
        };
        Ok(Ok((
            identity,
            url,
            StatusNotice {
                number: number.to_owned(),
                enterprise: row.try_get("enterprise")?,
                tax_status,
                reason: row.try_get("tax_reason")?,
                receipt,
                issued,
            },
        )))
    }

    /// One `invoice.status_batch` exchange; an outcome per notice.
    async fn send_notices(
        &self,
        identity: &str,
        url: &str,
        notices: Vec<StatusNotice>,
    ) -> Vec<Outcome> {
        let n = notices.len();
        let all = |why: String| (0..n).map(|_| Outcome::Retry(why.clone())).collect();
        let client = match self.cloud_client(identity, url) {
            Ok(c) => c,
            Err(e) => return all(e),
        };
        self.exchanged("notify");
        let answer = client
            .call(
                message_type::INVOICE_STATUS_BATCH,
                &StatusNotices { notices },
            )
            .instrument(tracing::debug_span!("cloud.notify"))
            .await;
        self.inner
            .health
            .observe(identity, &answer, now().unix_timestamp());
        let answer = match answer {
            Ok(a) => a,
            Err(e) if e.is_transient() => {
                return (0..n)
                    .map(|_| Outcome::Unreachable {
                        peer: identity.to_owned(),
                        why: e.to_string(),
                    })
                    .collect();
            }
            Err(e) => return all(e.to_string()),
        };
        if answer.message_type != message_type::NOTICE_RESULTS {
            return all(format!(
                "cloud answered {}: {}",
                answer.message_type,
                String::from_utf8_lossy(&answer.payload)
            ));
        }
        match answer.parse::<NoticeResults>(identity) {
            Ok(r) if r.results.len() == n => r
                .results
                .into_iter()
                .map(|r| match r {
                    None => Outcome::Notified,
                    Some(refusal) => Outcome::Retry(format!(
                        "cloud refused the notice: {}: {}",
                        refusal.code, refusal.message
                    )),
                })
                .collect(),
            Ok(r) => all(format!(
                "cloud answered {} results for {n} notices",
                r.results.len()
            )),
            Err(e) => all(e.to_string()),
        }
    }

    /// Outbox entries in a state, oldest first (at most 1000).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn outbox(&self, state: &str) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = query(
            "SELECT id, kind, number, state, attempts, last_error, next_attempt_at FROM outbox
             WHERE state = $1 ORDER BY id LIMIT 1000",
        )
        .bind(state)
        .fetch_all(self.inner.db.pool())
        .await?;
        rows.iter()
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
            .collect::<Result<_, StoreError>>()
    }

    /// Puts a failed entry back in the queue, due now; `false` if there is no such failed
    /// entry.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn retry_outbox(&self, actor: &str, id: i64) -> Result<bool, StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        let n = query(
            "UPDATE outbox SET state = 'pending', next_attempt_at = $2 WHERE id = $1 AND state = 'failed'",
        )
        .bind(id)
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            crate::step::audit(
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
    fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        let oldest = self.oldest_pending_age().await;
        let h = &self.inner.health;
        h.probe_if_due(&self.inner.tax, now()).await;
        let mut checks = h.checks(&self.inner.db, &self.inner.material, now()).await;
        checks.push(match oldest {
            Ok(age) => fapiao_service::ops::Check::new(
                "outbox",
                age < i64::try_from(self.inner.options.outbox_stuck_after.as_secs())
                    .unwrap_or(i64::MAX),
                format!("oldest pending entry {age} s old"),
            ),
            Err(e) => fapiao_service::ops::Check::new("outbox", false, e.to_string()),
        });
        checks
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        use fapiao_service::metrics::Gauge;
        let mut out = Vec::new();
        let pool = self.inner.db.pool();
        if let Ok(rows) =
            query("SELECT kind, COUNT(*) AS n FROM outbox WHERE state = 'pending' GROUP BY kind")
                .fetch_all(pool)
                .await
        {
            // Every kind, 0 when none is pending (a series that disappears cannot alert).
            let mut depth: std::collections::BTreeMap<String, i64> =
                [("notify".to_owned(), 0), ("upload".to_owned(), 0)].into();
            for r in rows {
                let kind: String = r.try_get("kind").unwrap_or_default();
                depth.insert(kind, r.try_get("n").unwrap_or(0));
            }
            for (kind, n) in depth {
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
            let t = crate::step::china_now();
            format!("{:04}-{:02}", t.year(), u8::from(t.month()))
        };
        // What an agent issued this month, as it reported it (its enterprise's quota use is
        // what it issued; what platform granted it is a reservation, shown apart).
        let issued_by_agents: HashMap<String, f64> = query(Sql::dialects(
            "SELECT enterprise, CAST(SUM(CAST(total AS REAL)) AS REAL) AS issued FROM invoices
             WHERE issued_by IS NOT NULL AND issued_at >= $1 AND issued_at < $2
             GROUP BY enterprise",
            "SELECT enterprise, CAST(SUM(CAST(total AS NUMERIC)) AS DOUBLE PRECISION) AS issued
             FROM invoices
             WHERE issued_by IS NOT NULL AND issued_at >= $1 AND issued_at < $2
             GROUP BY enterprise",
        ))
        .bind(format!("{month}-01"))
        .bind(format!("{month}-99"))
        .fetch_all(pool)
        .await
        .map(|rows| {
            rows.iter()
                .filter_map(|r| Some((r.try_get("enterprise").ok()?, r.try_get("issued").ok()?)))
                .collect()
        })
        .unwrap_or_default();
        if let Ok(rows) = query(
            "SELECT e.taxpayer_id, e.hosting, e.monthly_quota, COALESCE(q.used, '0') AS used
             FROM enterprises e
             LEFT JOIN quota_usage q ON q.enterprise = e.taxpayer_id AND q.month = $1",
        )
        .bind(&month)
        .fetch_all(pool)
        .await
        {
            for r in rows {
                let e: String = r.try_get("taxpayer_id").unwrap_or_default();
                let hosting: String = r.try_get("hosting").unwrap_or_default();
                let used: String = r.try_get("used").unwrap_or_default();
                let quota: String = r.try_get("monthly_quota").unwrap_or_default();
                let (Ok(used), Ok(quota)) = (used.parse::<f64>(), quota.parse::<f64>()) else {
                    continue;
                };
                let label = || vec![("enterprise", e.clone())];
                if hosting == "enterprise" {
                    out.push(Gauge {
                        name: "fapiao_quota_granted",
                        help: "Quota granted to the enterprise's agent this month (a reservation), yuan.",
                        labels: label(),
                        value: used,
                    });
                    out.push(Gauge {
                        name: "fapiao_quota_used",
                        help: "Issued total this month (blue minus red), yuan.",
                        labels: label(),
                        value: issued_by_agents.get(&e).copied().unwrap_or(0.0),
                    });
                } else {
                    out.push(Gauge {
                        name: "fapiao_quota_used",
                        help: "Issued total this month (blue minus red), yuan.",
                        labels: label(),
                        value: used,
                    });
                }
                out.push(Gauge {
                    name: "fapiao_quota_limit",
                    help: "Monthly credit quota, yuan.",
                    labels: label(),
                    value: quota,
                });
            }
        }
        out
    }
}

impl Platform {
    /// Seconds since the oldest pending outbox entry was written (0 when none).
    async fn oldest_pending_age(&self) -> Result<i64, StoreError> {
        let oldest: Option<i64> =
            query_scalar("SELECT MIN(created_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(self.inner.db.pool())
                .await?;
        Ok(oldest.map_or(0, |t| (now().unix_timestamp() - t).max(0)))
    }
}
