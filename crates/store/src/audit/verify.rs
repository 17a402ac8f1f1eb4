//! Walking the chain: every record, every signed head (its record, signature and place in the
//! chain of heads), the copies of heads kept outside the database, and how long records have
//! gone without a head.

use std::collections::HashMap;

use fapiao_crypto::TrustStore;

use super::heads::{ALL, Head};
use super::{GENESIS, PRUNED, record_hash};
use crate::engine::query;
use crate::{Db, StoreError};

/// What [`verify`] checks beyond the records' own chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks<'a> {
    /// Roots and CRLs to check every head's signature and signer with (as the certificate
    /// stood when it signed). `None` checks the heads' structure only — for tests that sign
    /// with made-up keys; `fapiao audit verify` always gives the role's trust.
    pub trust: Option<&'a TrustStore>,
    /// The longest time, in seconds, a running role's records go without a signed head: the
    /// span from the oldest record no head covers to the newest record. Longer means heads
    /// were deleted (or the role's signer is not running). `None`: not checked.
    pub unsigned_span: Option<i64>,
    /// Heads copied out of the database ([`super::Witness`]): each must still be in it,
    /// unchanged (unless a retention cut removed it).
    pub witness: &'a [Head],
}

/// The outcome of walking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record links and hashes; every head matches its record, verifies and chains;
    /// every witness copy is in the database.
    Intact {
        /// Records walked.
        records: i64,
        /// Signed heads checked.
        heads: usize,
        /// The newest signed head, if any.
        head: Option<Head>,
        /// Witness copies found in the database.
        witnessed: usize,
    },
    /// The first problem.
    Broken {
        /// The record where the chain breaks.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

fn broken(seq: i64, reason: impl Into<String>) -> Verdict {
    Verdict::Broken {
        seq,
        reason: reason.into(),
    }
}

/// What the records' walk found.
struct Walk {
    first_seq: i64,
    /// `(hash, at)` by `seq`.
    records: HashMap<i64, (String, i64)>,
    newest: Option<(i64, i64)>,
    /// After a retention cut: the last record cut and the id of the last head cut with it
    /// (`None` for cuts recorded before heads were chained).
    cut: Option<(i64, Option<String>)>,
}

/// Walks the chain from the first record, then checks the heads, the witness copies and the
/// records no head covers yet ([`Checks`]).
///
/// # Errors
/// [`StoreError`].
pub async fn verify(db: &Db, checks: &Checks<'_>) -> Result<Verdict, StoreError> {
    let walk = match walk_records(db).await? {
        Ok(w) => w,
        Err(v) => return Ok(v),
    };
    let heads: Vec<Head> = query(ALL)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(Head::from_row)
        .collect::<Result<_, _>>()?;
    if let Some(v) = check_heads(&walk, &heads, checks.trust) {
        return Ok(v);
    }
    let witnessed = match check_witness(&walk, &heads, checks) {
        Ok(n) => n,
        Err((seq, reason)) => return Ok(Verdict::Broken { seq, reason }),
    };
    if let (Some(span), Some((newest_seq, newest_at))) = (checks.unsigned_span, walk.newest) {
        let covered = heads.last().map_or(walk.first_seq - 1, |h| h.seq);
        if let Some((_, first_at)) = walk.records.get(&(covered + 1))
            && newest_at - first_at > span
        {
            return Ok(broken(
                covered + 1,
                format!(
                    "records {} to {newest_seq} span {} s and no signed head covers them, longer \
                     than a running role goes without signing ({span} s): signed heads were \
                     deleted, or the role's head signer is not running",
                    covered + 1,
                    newest_at - first_at
                ),
            ));
        }
    }
    Ok(Verdict::Intact {
        records: i64::try_from(walk.records.len()).unwrap_or(i64::MAX),
        heads: heads.len(),
        head: heads.last().cloned(),
        witnessed,
    })
}

async fn walk_records(db: &Db) -> Result<Result<Walk, Verdict>, StoreError> {
    let rows = query(
        "SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch_all(db.pool())
    .await?;
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1;
    // A chain cut by retention starts after record `through`, attested later in the chain.
    let mut cut: Option<(i64, String)> = None;
    if let Some(first) = rows.first() {
        let seq: i64 = first.try_get("seq")?;
        if seq > 1 {
            prev = first.try_get("prev_hash")?;
            expected_seq = seq;
            cut = Some((seq - 1, prev.clone()));
        }
    }
    let first_seq = expected_seq;
    let mut attested: Option<Option<String>> = None;
    let mut records = HashMap::with_capacity(rows.len());
    let mut newest = None;
    for r in &rows {
        let seq: i64 = r.try_get("seq")?;
        let at: i64 = r.try_get("at")?;
        let actor: String = r.try_get("actor")?;
        let action: String = r.try_get("action")?;
        let subject: String = r.try_get("subject")?;
        let detail: String = r.try_get("detail")?;
        let prev_hash: String = r.try_get("prev_hash")?;
        let hash: String = r.try_get("hash")?;
        if seq != expected_seq {
            return Ok(Err(broken(
                expected_seq,
                format!("record {expected_seq} is missing (deleted); the next is {seq}"),
            )));
        }
        if prev_hash != prev {
            return Ok(Err(broken(
                seq,
                "does not follow its predecessor (deleted, inserted or reordered records)",
            )));
        }
        let h = record_hash(seq, at, &actor, &action, &subject, &detail, &prev_hash);
        if h != hash {
            return Ok(Err(broken(
                seq,
                "its content does not match its hash (edited)",
            )));
        }
        if let Some((through, cut_hash)) = &cut
            && attested.is_none()
            && action == PRUNED
            && let Ok(d) = serde_json::from_str::<serde_json::Value>(&detail)
            && d["through"].as_i64() == Some(*through)
            && d["hash"].as_str() == Some(cut_hash.as_str())
        {
            attested = Some(d["head"].as_str().map(str::to_owned));
        }
        records.insert(seq, (hash.clone(), at));
        newest = Some((seq, at));
        prev = hash;
        expected_seq += 1;
    }
    let cut = match (cut, attested) {
        (None, _) => None,
        (Some((through, _)), Some(head)) => Some((through, head)),
        (Some(_), None) => {
            return Ok(Err(broken(
                1,
                format!(
                    "records 1 to {} are missing and no retention cut records their removal \
                     (deleted)",
                    first_seq - 1
                ),
            )));
        }
    };
    Ok(Ok(Walk {
        first_seq,
        records,
        newest,
        cut,
    }))
}

/// Each head: its record's hash, its signature and signer, its link to the head before.
fn check_heads(walk: &Walk, heads: &[Head], trust: Option<&TrustStore>) -> Option<Verdict> {
    // What the first head names as `prev`; `None`: anything (a cut recorded before heads
    // were chained).
    let mut expected: Option<String> = match &walk.cut {
        None => Some(GENESIS.to_owned()),
        Some((_, head)) => head.clone(),
    };
    let mut chained = false;
    for head in heads {
        match walk.records.get(&head.seq) {
            Some((hash, _)) if *hash == head.hash => {}
            Some(_) => {
                return Some(broken(
                    head.seq,
                    "differs from the head signed at this point (the chain was rewritten)",
                ));
            }
            None => {
                return Some(broken(
                    head.seq,
                    "was signed as a head but no longer exists (records cut off the end)",
                ));
            }
        }
        if let Some(trust) = trust
            && let Err(e) = head.check_signature(trust)
        {
            return Some(broken(
                head.seq,
                format!("the head signed at this record does not check out: {e}"),
            ));
        }
        match &head.prev {
            // Signed before heads were chained: only before the first chained head.
            None if chained => {
                return Some(broken(
                    head.seq,
                    "an unchained head among chained ones (inserted)",
                ));
            }
            None => {}
            Some(prev) => {
                if expected.as_ref().is_some_and(|e| e != prev) {
                    return Some(broken(
                        head.seq,
                        "its head does not name the head before it (a signed head was deleted \
                         or replaced)",
                    ));
                }
                chained = true;
            }
        }
        expected = Some(head.id());
    }
    None
}

/// Every witness copy is in the database, unchanged, unless a retention cut removed it.
fn check_witness(walk: &Walk, heads: &[Head], checks: &Checks<'_>) -> Result<usize, (i64, String)> {
    let by_seq: HashMap<i64, &Head> = heads.iter().map(|h| (h.seq, h)).collect();
    let through = walk.cut.as_ref().map_or(0, |(t, _)| *t);
    let mut found = 0;
    for w in checks.witness {
        if let Some(trust) = checks.trust
            && let Err(e) = w.check_signature(trust)
        {
            return Err((
                w.seq,
                format!("the witness copy of the head at this record does not check out: {e}"),
            ));
        }
        if w.seq <= through {
            continue;
        }
        match by_seq.get(&w.seq) {
            Some(h) if *h == w => found += 1,
            Some(_) => {
                return Err((
                    w.seq,
                    "the head signed at this record differs from its witness copy (the head \
                     was replaced)"
                        .to_owned(),
                ));
            }
            None => {
                return Err((
                    w.seq,
                    format!(
                        "a head signed at this record (at {}) is in the witness but not in the \
                         database: heads were deleted{}",
                        w.signed_at,
                        if walk.records.contains_key(&w.seq) {
                            ""
                        } else {
                            ", with the records they covered"
                        }
                    ),
                ));
            }
        }
    }
    Ok(found)
}
