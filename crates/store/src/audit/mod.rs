//! The audit trail: an append-only, SM3 hash-chained log of every state change, written in the
//! same transaction as the change, with the chain head signed from time to time by the role's
//! signing key.
//!
//! Record `n` stores `prev_hash` (the hash of record `n - 1`, 64 zeros for the first) and
//! `hash = SM3(seq ‖ at ‖ actor ‖ action ‖ subject ‖ detail ‖ prev_hash)`, each field as a
//! 4-byte big-endian length and its UTF-8 bytes (`seq` and `at` in decimal). [`verify`] walks
//! the chain and reports the first record that was edited (its hash does not match), deleted or
//! reordered (a gap in `seq`, or a `prev_hash` that is not its predecessor's hash); signed
//! heads ([`sign_head`], chained to each other and copied to a witness file outside the
//! database) catch a chain rewritten, or cut short with its heads, after the fact.

mod heads;
mod verify;

pub use heads::{HEADS_LOCK, Head, Witness, sign_head};
pub use verify::{Checks, Verdict, verify};

use time::OffsetDateTime;

use crate::engine::{Target, query, query_as};
use crate::{StoreError, Tx};

/// The action of the record a retention cut appends (detail: `through`, `hash`, `export`).
pub const PRUNED: &str = "audit.pruned";

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who: `role:name` of a peer, `erp:<key id>`, `operator:<identity>`, or `system`.
    pub actor: String,
    /// What, e.g. `invoice.issued`.
    pub action: String,
    /// On what, e.g. an invoice number.
    pub subject: String,
    /// Details, JSON, personal data masked.
    pub detail: String,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The hash of a record's fields.
#[must_use]
pub fn record_hash(
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
    prev: &str,
) -> String {
    let mut buf = Vec::new();
    for f in [
        &seq.to_string(),
        &at.to_string(),
        actor,
        action,
        subject,
        detail,
        prev,
    ] {
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(f.as_bytes());
    }
    hex(&fapiao_crypto::primitives::sm3(&buf))
}

/// A record appended in a transaction, before it joins the chain at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    at: i64,
    actor: String,
    action: String,
    subject: String,
    detail: String,
}

/// Appends a record in the caller's (write) transaction: it joins the chain when the
/// transaction commits, with every other record appended in it, in one statement (and not at
/// all if the transaction is rolled back, or rolled back to a savepoint set before the
/// append).
///
/// # Errors
/// [`StoreError`].
pub async fn append(
    tx: &mut Tx,
    at: OffsetDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    tx.audit.pending.push(Entry {
        at: at.unix_timestamp(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail: detail.to_string(),
    });
    Ok(())
}

/// The newest record's `seq` and `hash`, as written (no row before the first record).
pub(crate) const HEAD: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";

/// PostgreSQL: locks the chain's head (`audit_head`, one row) until the transaction ends and
/// reads it as last committed — a transaction that appended meanwhile is waited for, and its
/// head read. Transactions of every replica append one after the other.
pub(crate) async fn lock_head(t: &mut Target<'_>) -> Result<ChainHead, StoreError> {
    Ok(ChainHead::of(
        query_as("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_optional(t)
            .await?,
    ))
}

/// PostgreSQL: writes chained records and moves the head (locked by [`lock_head`]) to the
/// last of them, in one statement.
pub(crate) async fn write_moving_head(
    t: &mut Target<'_>,
    records: &[Record],
) -> Result<(), StoreError> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "seq": r.seq, "at": r.at, "actor": r.actor, "action": r.action,
                "subject": r.subject, "detail": r.detail, "prev_hash": r.prev_hash, "hash": r.hash,
            })
        })
        .collect();
    query(
        "WITH added AS (
            INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash)
            SELECT seq, at, actor, action, subject, detail, prev_hash, hash
            FROM jsonb_populate_recordset(NULL::audit_log, $1::jsonb)
        )
        UPDATE audit_head SET seq = $2, hash = $3 WHERE id = 1",
    )
    .bind(serde_json::Value::Array(rows).to_string())
    .bind(last.seq)
    .bind(&last.hash)
    .execute(t)
    .await?;
    Ok(())
}

/// What the next record chains to: the newest record's `seq` and `hash`, or the genesis
/// before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead {
    seq: i64,
    hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

impl ChainHead {
    /// From the newest record's `(seq, hash)`, if any.
    pub(crate) fn of(head: Option<(i64, String)>) -> Self {
        head.map_or_else(Self::default, |(seq, hash)| Self { seq, hash })
    }
}

/// The newest record as written (read under the write lock, or the chain's lock).
pub(crate) async fn head(t: &mut Target<'_>) -> Result<ChainHead, StoreError> {
    Ok(ChainHead::of(query_as(HEAD).fetch_optional(t).await?))
}

/// Chains `entries` after `head`.
pub(crate) fn chain(head: ChainHead, entries: Vec<Entry>) -> Vec<Record> {
    let ChainHead {
        seq: mut last,
        hash: mut prev_hash,
    } = head;
    entries
        .into_iter()
        .map(|e| {
            last += 1;
            let hash = record_hash(
                last, e.at, &e.actor, &e.action, &e.subject, &e.detail, &prev_hash,
            );
            Record {
                seq: last,
                at: e.at,
                actor: e.actor,
                action: e.action,
                subject: e.subject,
                detail: e.detail,
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// Writes chained records in one statement, followed on SQLite by `then` in the same round
/// trip to the connection.
pub(crate) async fn write(
    t: &mut Target<'_>,
    records: &[Record],
    then: Option<&'static str>,
) -> Result<(), StoreError> {
    let rows = records
        .iter()
        .map(|r| {
            serde_json::json!([
                r.seq,
                r.at,
                r.actor,
                r.action,
                r.subject,
                r.detail,
                r.prev_hash,
                r.hash
            ])
        })
        .collect();
    crate::batch::insert_rows_then(
        t,
        "audit_log",
        &[
            "seq",
            "at",
            "actor",
            "action",
            "subject",
            "detail",
            "prev_hash",
            "hash",
        ],
        rows,
        then,
    )
    .await?;
    Ok(())
}
