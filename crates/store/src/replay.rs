//! The persistent replay guard: every received message's `(sender, message_id)` is a row
//! with a unique key until it expires, so a second arrival of the same id — at this replica
//! or another — is refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use time::OffsetDateTime;

use crate::engine::{Sql, query, query_as};
use crate::tx::{Prefetch, Tx};
use crate::{Db, Executor, StoreError, prune_due};

/// Group commits delete expired replay-guard entries at most this often (seconds).
pub(crate) const PRUNE_EVERY: i64 = 60;

/// Writes one replay-guard entry (`$1` sender, `$2` message id, `$3` expiry, `$4` now): it
/// goes in unless its id is on record and not expired by `$4`. One row changed when it went
/// in. A concurrent transaction writing the same id (another replica) waits for this one,
/// then finds it on record.
pub(crate) const REMEMBER_ONE: Sql = Sql::portable(
    "INSERT INTO seen_messages (sender, message_id, expires_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (sender, message_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE seen_messages.expires_at <= $4",
);

/// [`REMEMBER_ONE`] for many entries in one statement (`$1` a JSON array of `[sender,
/// message_id, expires_at]`, no id twice, `$2` now): each goes in unless its id is on record
/// and not expired by `$2`. Returns the ids that went in.
const REMEMBER_ALL: Sql = Sql::dialects(
    "INSERT INTO seen_messages (sender, message_id, expires_at)
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
     FROM jsonb_each($1) WHERE true
     ON CONFLICT (sender, message_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE seen_messages.expires_at <= $2
     RETURNING sender, message_id",
    "INSERT INTO seen_messages (sender, message_id, expires_at)
     SELECT value->>0, value->>1, (value->>2)::bigint FROM jsonb_array_elements($1::jsonb)
     ON CONFLICT (sender, message_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE seen_messages.expires_at <= $2
     RETURNING sender, message_id",
);

/// A received message — an envelope, or a signed ERP request — whose id the replay guard is
/// to remember before what it asks for is acknowledged, so a second arrival of the same id is
/// refused. A handler that writes remembers it in its own first write transaction
/// ([`Db::begin_write_for`]): the id becomes durable in the same commit as what the message
/// did, at no cost of its own, and a replay is refused before anything is written. Whoever
/// answers then makes sure with [`Db::remember`], which costs a commit of its own (grouped
/// with others) only when no transaction remembered the id: the message was refused, or
/// asked only to read.
///
/// Clones share their state; an arrival is meant for the one request it came with.
#[derive(Debug, Clone)]
pub struct Arrival(Arc<ArrivalInner>);

#[derive(Debug)]
pub(crate) struct ArrivalInner {
    pub(crate) sender: String,
    pub(crate) message_id: String,
    pub(crate) expires: OffsetDateTime,
    pub(crate) now: OffsetDateTime,
    state: AtomicU8,
}

/// Where an [`Arrival`]'s id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[repr(u8)]
pub enum ArrivalState {
    /// Not on record (yet, or its transaction did not commit).
    Pending,
    /// Written in a write transaction that has not committed yet.
    Held,
    /// Durably on record, first: this arrival is the message's first.
    Remembered,
    /// Already on record and not expired: a replay.
    Replayed,
}

impl Arrival {
    /// `(sender, message_id)` received at `now`, to be remembered until `expires`.
    #[must_use]
    pub fn new(
        sender: impl Into<String>,
        message_id: impl Into<String>,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        Self(Arc::new(ArrivalInner {
            sender: sender.into(),
            message_id: message_id.into(),
            expires,
            now,
            state: AtomicU8::new(ArrivalState::Pending as u8),
        }))
    }

    /// The sender.
    #[must_use]
    pub fn sender(&self) -> &str {
        &self.0.sender
    }

    /// The message id.
    #[must_use]
    pub fn message_id(&self) -> &str {
        &self.0.message_id
    }

    /// Where its id stands.
    #[must_use]
    pub fn state(&self) -> ArrivalState {
        match self.0.state.load(Ordering::Acquire) {
            s if s == ArrivalState::Held as u8 => ArrivalState::Held,
            s if s == ArrivalState::Remembered as u8 => ArrivalState::Remembered,
            s if s == ArrivalState::Replayed as u8 => ArrivalState::Replayed,
            _ => ArrivalState::Pending,
        }
    }

    pub(crate) fn inner(&self) -> &ArrivalInner {
        &self.0
    }

    pub(crate) fn set(&self, state: ArrivalState) {
        self.0.state.store(state as u8, Ordering::Release);
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn key(&self) -> (String, String) {
        (self.0.sender.clone(), self.0.message_id.clone())
    }

    pub(crate) fn replayed(&self) -> StoreError {
        self.set(ArrivalState::Replayed);
        StoreError::Replayed {
            sender: self.0.sender.clone(),
            message_id: self.0.message_id.clone(),
        }
    }
}

/// A replay-guard entry waiting for its group commit, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Remember {
    sender: String,
    message_id: String,
    expires: OffsetDateTime,
    now: OffsetDateTime,
    answer: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

impl Db {
    /// [`Db::begin_write`] for what `arrival` asks: unless its id is remembered already, the
    /// transaction writes it first (on SQLite in the same round trip as its `BEGIN`), and it
    /// is remembered when the transaction commits ([`Arrival`]). Expired ids are deleted on
    /// the way at most once every minute, as by [`Db::remember_message`].
    ///
    /// # Errors
    /// [`StoreError::Replayed`] when the id is on record and not expired (the transaction is
    /// rolled back and the arrival is [`ArrivalState::Replayed`]); [`StoreError::Sqlx`].
    pub async fn begin_write_for(&self, arrival: &Arrival) -> Result<Tx, StoreError> {
        if arrival.state() == ArrivalState::Replayed {
            return Err(arrival.replayed());
        }
        let turn = self.take_turn().await;
        // Read in the turn: a transaction that held the arrival has ended by now.
        if arrival.state() == ArrivalState::Remembered {
            return self.begin_in(turn, Prefetch::Keys).await;
        }
        let mut tx = self.begin_in(turn, Prefetch::Remember(arrival)).await?;
        if tx.held.0.is_empty() {
            let _ = tx.rollback().await;
            return Err(arrival.replayed());
        }
        let t = arrival.0.now.unix_timestamp();
        if prune_due(&self.pruned_at, t) {
            delete_expired(&mut *tx, arrival.0.now).await?;
        }
        Ok(tx)
    }

    /// Remembers the ids of `arrivals` in the write transaction `tx`, in one statement however
    /// many they are, as [`Db::begin_write_for`] does for one: per arrival, in order, whether
    /// what it asks for may go on — its id went in now (it is remembered when this transaction
    /// commits), is held by this transaction already, or was remembered by an earlier commit —
    /// or not: its id is on record and not expired, or an earlier arrival of `arrivals` has the
    /// same sender and id. Those are [`ArrivalState::Replayed`]. An arrival listed twice (the
    /// same [`Arrival`], one message asking for several things) may go on both times.
    ///
    /// Expired ids are deleted on the way at most once every minute, as by
    /// [`Db::remember_message`].
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]; the transaction should then be dropped.
    pub async fn remember_in(
        &self,
        tx: &mut Tx,
        arrivals: &[&Arrival],
    ) -> Result<Vec<bool>, StoreError> {
        let mut pending: Vec<&Arrival> = Vec::new();
        for a in arrivals {
            if a.state() == ArrivalState::Pending && !pending.iter().any(|p| p.same(a)) {
                pending.push(a);
            }
        }
        if let Some(now) = arrivals.iter().map(|a| a.0.now).min()
            && prune_due(&self.pruned_at, now.unix_timestamp())
        {
            delete_expired(&mut **tx, now).await?;
        }
        if let Some(now) = pending.iter().map(|a| a.0.now).min() {
            // One entry per id: the first arrival of an id may go in, the others not.
            let mut keys = HashSet::new();
            let entries = serde_json::Value::Array(
                pending
                    .iter()
                    .filter(|a| keys.insert(a.key()))
                    .map(|a| {
                        serde_json::json!([
                            a.0.sender,
                            a.0.message_id,
                            a.0.expires.unix_timestamp()
                        ])
                    })
                    .collect(),
            );
            let mut went_in: HashSet<(String, String)> = query_as(REMEMBER_ALL)
                .bind(entries.to_string())
                .bind(now.unix_timestamp())
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
            for a in pending {
                if went_in.remove(&a.key()) {
                    tx.hold(a, true);
                } else {
                    a.set(ArrivalState::Replayed);
                }
            }
        }
        Ok(arrivals
            .iter()
            .map(|a| match a.state() {
                ArrivalState::Held => tx.held.0.iter().any(|h| h.same(a)),
                ArrivalState::Remembered => true,
                ArrivalState::Pending | ArrivalState::Replayed => false,
            })
            .collect())
    }

    /// Makes sure `arrival`'s id is remembered: at once when a committed write transaction
    /// wrote it ([`Db::begin_write_for`]), else with [`Db::remember_message`] (a group
    /// commit). Whether it was the first arrival of its id.
    ///
    /// # Errors
    /// As [`Db::remember_message`].
    pub async fn remember(&self, arrival: &Arrival) -> Result<bool, StoreError> {
        match arrival.state() {
            ArrivalState::Remembered => return Ok(true),
            ArrivalState::Replayed => return Ok(false),
            ArrivalState::Pending | ArrivalState::Held => {}
        }
        let a = &arrival.0;
        let fresh = self
            .remember_message(&a.sender, &a.message_id, a.expires, a.now)
            .await?;
        arrival.set(if fresh {
            ArrivalState::Remembered
        } else {
            ArrivalState::Replayed
        });
        Ok(fresh)
    }

    /// The persistent replay guard: records `(sender, message_id)` until `expires`. Returns
    /// `false` if it is already recorded and not expired (a replay). Expired entries are
    /// pruned as it goes (at most once a minute). Returns once the entry is durable.
    ///
    /// Concurrent calls share commits (group commit): each call queues its entry and waits
    /// for its writer turn; whoever gets the turn writes every entry queued so far, in queue
    /// order, in one transaction, and answers each after the commit. So a burst of messages
    /// costs one commit, not one each, and the same message twice in one group is fresh once.
    /// A call abandoned while it waits, or whose turn cannot begin (its error is returned),
    /// leaves its entry to the next group: the id is still consumed, never processed — the
    /// safe side for a replay guard. Needs a Tokio runtime.
    ///
    /// # Errors
    /// [`StoreError`]; [`StoreError::Grouped`] when the group's transaction failed.
    pub async fn remember_message(
        &self,
        sender: &str,
        message_id: &str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue_lock().push(Remember {
            sender: sender.to_owned(),
            message_id: message_id.to_owned(),
            expires,
            now,
            answer,
        });
        let turn = self.take_turn().await;
        // Otherwise an earlier group took this entry; it answers after its commit.
        if !self.queue_lock().is_empty() {
            let tx = self.begin_in(turn, Prefetch::Nothing).await?;
            let group = std::mem::take(&mut *self.queue_lock());
            // On its own task, so that the group is written and answered even if this
            // caller is abandoned meanwhile.
            tokio::spawn(commit_group(tx, group, self.pruned_at.clone()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err("the replay guard's group commit ended unanswered".into()))
            .map_err(StoreError::Grouped)
    }

    fn queue_lock(&self) -> std::sync::MutexGuard<'_, Vec<Remember>> {
        // A panic while pushing or taking leaves the vector whole.
        self.remembering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes `group` in `tx`, commits, then answers each entry.
async fn commit_group(
    mut tx: Tx,
    group: Vec<Remember>,
    pruned_at: Arc<std::sync::atomic::AtomicI64>,
) {
    let durable = match write_group(&mut tx, &group, &pruned_at).await {
        Ok(fresh) => tx.commit().await.map(|()| fresh).map_err(|e| e.to_string()),
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e.to_string())
        }
    };
    // A caller may have gone; its entry is recorded all the same.
    match durable {
        Ok(fresh) => {
            for (r, f) in group.into_iter().zip(fresh) {
                let _ = r.answer.send(Ok(f));
            }
        }
        Err(e) => {
            for r in group {
                let _ = r.answer.send(Err(e.clone()));
            }
        }
    }
}

/// A group of replay-guard entries in one statement, whatever its size: the group's entries
/// go in at once, an entry whose id is on record but expired by the group's earliest `now`
/// taking its row over. Whether each is fresh, in group order: an entry is fresh when its row
/// went in (or was taken over) and no earlier entry of the group had the same id. Once every
/// [`PRUNE_EVERY`] seconds, a group first deletes every entry expired by then, so the table
/// does not grow.
async fn write_group(
    tx: &mut Tx,
    group: &[Remember],
    pruned_at: &std::sync::atomic::AtomicI64,
) -> Result<Vec<bool>, StoreError> {
    let Some(now) = group.iter().map(|r| r.now).min() else {
        return Ok(Vec::new());
    };
    let t = now.unix_timestamp();
    if prune_due(pruned_at, t) {
        delete_expired(&mut **tx, now).await?;
    }
    let mut keys = HashSet::new();
    let entries = serde_json::Value::Array(
        group
            .iter()
            .filter(|r| keys.insert((r.sender.as_str(), r.message_id.as_str())))
            .map(|r| serde_json::json!([r.sender, r.message_id, r.expires.unix_timestamp()]))
            .collect(),
    );
    let inserted: Vec<(String, String)> = query_as(REMEMBER_ALL)
        .bind(entries.to_string())
        .bind(t)
        .fetch_all(&mut **tx)
        .await?;
    let mut inserted: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(group
        .iter()
        .map(|r| inserted.remove(&(r.sender.clone(), r.message_id.clone())))
        .collect())
}

/// Deletes replay-guard entries that expired before `now`; returns how many.
///
/// # Errors
/// [`StoreError::Sqlx`].
pub async fn prune_messages(db: &Db, now: OffsetDateTime) -> Result<u64, StoreError> {
    delete_expired(db.pool(), now).await
}

async fn delete_expired(e: impl Executor, now: OffsetDateTime) -> Result<u64, StoreError> {
    Ok(query("DELETE FROM seen_messages WHERE expires_at <= $1")
        .bind(now.unix_timestamp())
        .execute(e)
        .await?
        .rows_affected())
}
