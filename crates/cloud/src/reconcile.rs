//! Reconciling with platform: cloud holds every invoice platform issued for its enterprises,
//! with platform's tax status — even one whose answer cloud could not store (a full disk, a
//! database error: the ERP was answered `outcome_unknown`). Platform lists the invoices of
//! cloud's enterprises in issue order (`invoices.list`); those cloud lacks or holds with
//! another status it fetches as notices carrying the invoice (`invoices.fetch`) and stores
//! them through the notice path, as it stores an agent's invoices.
//!
//! The worker runs a pass at start, every [`RECONCILE_EVERY`], and [`SETTLE`] after a failed
//! store (again every [`RETRY_EVERY`] while a pass does not finish). A pass covers the
//! invoices issued from a minute before where the last got (an invoice committed late with
//! an earlier time is still seen) until [`SETTLE`] ago (a younger one is on its way here by
//! the ordinary path), so its cost follows the invoices issued since the last pass, not the
//! whole day's. `fapiao reconcile --role cloud` runs one from a given time until now and
//! shows what differs, repairing it with `--repair`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use fapiao_protocol::client::{china_now, now};
use fapiao_protocol::wire::{
    InvoiceFetch, InvoiceList, InvoiceRefs, Refusal, StatusNotices, message_type,
};
use fapiao_store::{Sql, StoreError, query, query_scalar};
use serde::Serialize;

use crate::{Cloud, CloudError};

/// How often the worker reconciles when nothing asks it to: a safety net (every failure to
/// store an answer asks for a pass of its own).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// How soon a pass that did not finish is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(15);

/// How far before the last pass's end the next one starts.
const OVERLAP: time::Duration = time::Duration::minutes(1);

/// How far back the first pass of a new cloud looks.
const FIRST_LOOK_BACK: time::Duration = time::Duration::days(1);

/// How old an invoice must be for the worker to reconcile it: a younger one is likely still on
/// its way to cloud (the ERP's answer being stored, a status notice in platform's outbox),
/// and "repairing" it would race the path that brings it anyway.
pub const SETTLE: time::Duration = time::Duration::seconds(10);

/// An invoice held at both with different tax statuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusDiff {
    /// Invoice number.
    pub number: String,
    /// Cloud's status.
    pub cloud: String,
    /// Platform's status (which mirrors tax's receipts).
    pub platform: String,
}

/// What a reconciliation found, and what it repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// From when (China time).
    pub from: String,
    /// Invoices platform listed.
    pub checked: usize,
    /// Numbers platform holds that cloud does not.
    pub missing: Vec<String>,
    /// Invoices whose tax status differs.
    pub status_differs: Vec<StatusDiff>,
    /// Invoices stored or statuses applied by the repair.
    pub repaired: usize,
    /// Refusals of the repair (an invoice that does not check, an order on record with
    /// another invoice): `number: why`.
    pub refused: Vec<String>,
    /// The issue time of the last invoice listed.
    pub last: Option<String>,
}

/// The worker's schedule (Unix seconds): when it last ran, the time the newest request asks
/// for a pass at (0: none), and since when requests wait (a steady trickle of them, each
/// putting the pass off, still gets one every [`RETRY_EVERY`]).
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    last: AtomicI64,
    asked: AtomicI64,
    since: AtomicI64,
}

impl Schedule {
    /// Asks for a pass at `at`, or later if a later one was asked for (the pass must come
    /// after every request's invoice has settled).
    fn ask(&self, at: i64) {
        let before = self.asked.fetch_max(at, Ordering::SeqCst);
        if before == 0 {
            self.since.store(at, Ordering::SeqCst);
        }
    }

    /// Whether a pass is due at `t`; if so, it is taken.
    fn take(&self, t: i64) -> bool {
        let asked = self.asked.load(Ordering::SeqCst);
        let requested = asked != 0 && asked <= t;
        let overdue = asked != 0 && self.since.load(Ordering::SeqCst) + secs(RETRY_EVERY) <= t;
        let periodic = self.last.load(Ordering::SeqCst) + secs(RECONCILE_EVERY) <= t;
        if !(requested || overdue || periodic) {
            return false;
        }
        if requested {
            // A request made meanwhile stands.
            let _ = self
                .asked
                .compare_exchange(asked, 0, Ordering::SeqCst, Ordering::SeqCst);
        } else if overdue {
            self.since.store(t, Ordering::SeqCst);
        }
        self.last.store(t, Ordering::SeqCst);
        true
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

fn china(t: time::PrimitiveDateTime) -> String {
    fapiao_model::datetime::format(t)
}

impl Cloud {
    /// Compares the invoices platform issued for this cloud's enterprises at or after `from`
    /// (China time, `YYYY-MM-DD HH:MM:SS`) with those held here; with `repair`, stores what
    /// is missing and applies platform's status where it differs.
    ///
    /// # Errors
    /// [`CloudError`]: the store, or platform not answering or refusing.
    pub async fn reconcile(&self, from: &str, repair: bool) -> Result<Reconciliation, CloudError> {
        self.reconcile_until(from, None, repair).await
    }

    /// [`Self::reconcile`] of the invoices issued before `until` only (China time; `None`:
    /// every one listed). Platform lists in issue order, so the first younger one ends the
    /// pass.
    async fn reconcile_until(
        &self,
        from: &str,
        until: Option<&str>,
        repair: bool,
    ) -> Result<Reconciliation, CloudError> {
        let mut out = Reconciliation {
            from: from.to_owned(),
            ..Reconciliation::default()
        };
        let mut after = None;
        let mut to_fetch = Vec::new();
        loop {
            let page: InvoiceRefs = self
                .ask(
                    message_type::INVOICES_LIST,
                    &InvoiceList {
                        from: from.to_owned(),
                        after: after.clone(),
                    },
                    message_type::INVOICES_PAGE,
                )
                .await?;
            let listed = page.items.len();
            let mut page = page;
            if let Some(until) = until {
                page.items.retain(|r| r.issued_at.as_str() < until);
            }
            let settled = page.items.len() == listed;
            let numbers: Vec<&str> = page.items.iter().map(|r| r.number.as_str()).collect();
            let held: HashMap<String, String> = query(Sql::dialects(
                "SELECT number, tax_status FROM invoices
                 WHERE number IN (SELECT value FROM jsonb_each($1))",
                "SELECT number, tax_status FROM invoices
                 WHERE number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
            ))
            .bind(serde_json::json!(numbers).to_string())
            .fetch_all(self.inner.db.pool())
            .await?
            .iter()
            .map(|r| Ok((r.try_get("number")?, r.try_get("tax_status")?)))
            .collect::<Result<_, StoreError>>()?;
            for r in &page.items {
                match held.get(&r.number) {
                    None => {
                        out.missing.push(r.number.clone());
                        to_fetch.push(r.number.clone());
                    }
                    Some(s) if s != r.tax_status.as_str() => {
                        out.status_differs.push(StatusDiff {
                            number: r.number.clone(),
                            cloud: s.clone(),
                            platform: r.tax_status.as_str().to_owned(),
                        });
                        to_fetch.push(r.number.clone());
                    }
                    Some(_) => {}
                }
            }
            out.checked += page.items.len();
            let full = settled && listed >= InvoiceList::MAX;
            if let Some(last) = page.items.last() {
                after = Some((last.issued_at.clone(), last.number.clone()));
                out.last = Some(last.issued_at.clone());
            }
            if !full {
                break;
            }
        }
        if repair {
            for chunk in to_fetch.chunks(StatusNotices::MAX) {
                let found: StatusNotices = self
                    .ask(
                        message_type::INVOICES_FETCH,
                        &InvoiceFetch {
                            numbers: chunk.to_vec(),
                        },
                        message_type::INVOICES_FOUND,
                    )
                    .await?;
                if found.notices.is_empty() {
                    continue;
                }
                match self.apply_notices(&found.notices).await? {
                    Ok(results) => {
                        for (notice, r) in found.notices.iter().zip(results) {
                            match r {
                                None => out.repaired += 1,
                                Some(refusal) => out
                                    .refused
                                    .push(format!("{}: {}", notice.number, refusal.message)),
                            }
                        }
                    }
                    Err(r) => {
                        return Err(CloudError::Setup(format!(
                            "storing what platform sent: {}",
                            r.message
                        )));
                    }
                }
            }
            if out.repaired > 0 {
                tracing::warn!(
                    repaired = out.repaired,
                    missing = out.missing.len(),
                    status_differs = out.status_differs.len(),
                    "reconciled with platform: invoices stored or statuses applied"
                );
            }
        }
        Ok(out)
    }

    /// Asks platform `kind` and reads its answer of type `expected`.
    async fn ask<T: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        body: &T,
        expected: &str,
    ) -> Result<A, CloudError> {
        let platform = &self.inner.platform;
        let answer = platform.call(kind, body).await;
        self.inner
            .health
            .observe(platform.peer_identity(), &answer, now().unix_timestamp());
        let answer = answer.map_err(|e| CloudError::Setup(e.to_string()))?;
        let peer = platform.peer_identity();
        if answer.message_type == expected {
            return answer
                .parse(peer)
                .map_err(|e| CloudError::Setup(e.to_string()));
        }
        let why = answer.parse::<Refusal>(peer).map_or_else(
            |_| answer.message_type.clone(),
            |r| format!("{}: {}", r.code, r.message),
        );
        Err(CloudError::Setup(format!("platform refused: {why}")))
    }

    /// Asks the worker for a pass once the invoice of a failed store has settled (platform
    /// may hold an invoice cloud does not).
    pub(crate) fn reconcile_soon(&self) {
        self.inner
            .reconcile
            .ask(now().unix_timestamp() + SETTLE.whole_seconds() + 1);
        self.inner.wake.notify_one();
    }

    /// The worker's pass, when due ([`Schedule`]): how many invoices it repaired. One that
    /// does not finish is logged and asked for again in [`RETRY_EVERY`].
    pub(crate) async fn reconcile_due(&self) -> Result<usize, CloudError> {
        let t = now().unix_timestamp();
        let s = &self.inner.reconcile;
        if !s.take(t) {
            return Ok(0);
        }
        match self.reconcile_pass().await {
            Ok(repaired) => Ok(repaired),
            Err(e) => {
                tracing::info!(error = %e, "reconciling with platform did not finish");
                s.ask(t + secs(RETRY_EVERY));
                Ok(0)
            }
        }
    }

    /// One pass of the worker, from a minute before where the last got until [`SETTLE`] ago.
    async fn reconcile_pass(&self) -> Result<usize, CloudError> {
        let cursor: Option<String> =
            query_scalar("SELECT issued_at FROM reconcile_cursor WHERE id = 1")
                .fetch_optional(self.inner.db.pool())
                .await?;
        let start = match cursor
            .as_deref()
            .and_then(|c| fapiao_model::datetime::parse(c).ok())
        {
            Some(c) => c - OVERLAP,
            None => china_now() - FIRST_LOOK_BACK,
        };
        let until = china(china_now() - SETTLE);
        let done = self
            .reconcile_until(&china(start), Some(&until), true)
            .await?;
        if let Some(last) = &done.last
            && cursor.as_deref() < Some(last.as_str())
        {
            let mut tx = self.inner.db.begin_write().await?;
            query(
                "INSERT INTO reconcile_cursor (id, issued_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET issued_at = excluded.issued_at",
            )
            .bind(last)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(done.repaired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_come_at_start_every_period_and_when_asked() {
        let s = Schedule::default();
        let t = 1_000_000;
        assert!(s.take(t), "the first pass comes at once");
        assert!(!s.take(t + 1));
        // Asked for in 11 s: not before, once then.
        s.ask(t + 11);
        assert!(!s.take(t + 10));
        assert!(s.take(t + 11));
        assert!(!s.take(t + 12));
        // A later request puts the pass off until it too has settled...
        s.ask(t + 20);
        s.ask(t + 25);
        assert!(!s.take(t + 20));
        assert!(s.take(t + 25));
        assert!(!s.take(t + 26));
        // ...but a steady trickle of them does not put it off for ever.
        for i in 0..20 {
            s.ask(t + 30 + 5 * i);
        }
        assert!(!s.take(t + 30 + secs(RETRY_EVERY) - 1));
        assert!(s.take(t + 30 + secs(RETRY_EVERY)), "overdue");
        assert!(
            s.take(t + 30 + 5 * 19),
            "the newest request still gets its pass"
        );
        // Nothing asked: the period.
        let last = t + 30 + 5 * 19;
        assert!(!s.take(last + secs(RECONCILE_EVERY) - 1));
        assert!(s.take(last + secs(RECONCILE_EVERY)));
    }
}
