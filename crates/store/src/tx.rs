//! Transactions: what roles write in ([`Tx`]), how one begins on either engine, and how its
//! audit records join the chain when it commits.

use crate::engine::{Executor, Target, query, query_text};
use crate::replay::{Arrival, ArrivalState, REMEMBER_ONE};
use crate::sqlite::WriterTurn;
use crate::{Backend, Db, StoreError, audit, vault};

/// A transaction roles work in: a write transaction ([`Db::begin_write`]) holds its
/// database's in-process writer turn until it commits, rolls back or is dropped; a read
/// transaction ([`Db::begin_read`]) holds none. Dereferences to the statement target, so
/// `&mut *tx` (or `&mut **tx` through a `&mut Tx`) is what statements execute on.
///
/// On SQLite a write transaction of a file database runs on the database's own writer
/// connection, kept out of the pool: every write transaction of the process is serialized by
/// the writer turn anyway, and a pool connection costs a round trip to its thread on release
/// (and a begin or commit through the pool's transaction API two more). A write transaction
/// dropped without commit or rollback is rolled back promptly on its own task, before the
/// next one begins. On PostgreSQL it runs on a pool connection.
///
/// Audit records appended in a transaction ([`audit::append`]) join the chain when it
/// commits, all in one statement: on PostgreSQL under a lock on the chain, taken only then,
/// so that concurrent transactions of every replica chain one after the other. So
/// savepoints go through [`Tx::savepoint`], [`Tx::release`] and [`Tx::rollback_to`], never
/// as raw statements: a rollback to a savepoint also drops the records appended since.
#[derive(Debug)]
pub struct Tx {
    inner: TxInner,
    pub(crate) audit: AuditBuffer,
    /// The active data key id, once read in this transaction ([`vault::Vault::seal`]).
    pub(crate) data_key: Option<i64>,
    /// The arrivals whose ids this transaction wrote ([`Db::begin_write_for`],
    /// [`Db::remember_in`]).
    pub(crate) held: Held,
}

/// The arrivals a write transaction remembers: [`ArrivalState::Remembered`] once it commits,
/// [`ArrivalState::Pending`] again if it is rolled back or dropped.
#[derive(Debug, Default)]
pub(crate) struct Held(pub(crate) Vec<Arrival>);

impl Held {
    fn committed(&mut self) {
        for a in self.0.drain(..) {
            a.set(ArrivalState::Remembered);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for a in self.0.drain(..) {
            a.set(ArrivalState::Pending);
        }
    }
}

#[derive(Debug)]
enum TxInner {
    /// On a SQLite file's writer connection, holding the writer turn.
    Writer(WriterTurn),
    /// On a SQLite pool connection: read transactions, and write transactions of a database
    /// without a writer connection (in memory, or opened for inspection), which hold the turn.
    SqlitePooled {
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        /// Dropped after `tx` ends (fields drop in declaration order).
        _turn: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// On a PostgreSQL pool connection.
    Postgres {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        _turn: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}

/// This process's writer turn.
#[derive(Debug)]
pub(crate) enum Turn {
    Writer(WriterTurn),
    Shared(tokio::sync::OwnedSemaphorePermit),
}

/// What a write transaction does and reads with its `BEGIN` ([`Db::begin_in`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Prefetch<'a> {
    /// Nothing: before the shared tables exist (migrations), or not needed (replay guard).
    Nothing,
    /// The audit chain head and the active data key (on a SQLite writer connection).
    Keys,
    /// Remembers an arrival's id, then reads as [`Prefetch::Keys`].
    Remember(&'a Arrival),
}

/// A transaction's audit records not yet written.
#[derive(Debug, Default)]
pub(crate) struct AuditBuffer {
    /// The chain head as the transaction's `BEGIN` read it under SQLite's write lock; `None`
    /// when not read (it is read at commit).
    pub(crate) head: Option<audit::ChainHead>,
    pub(crate) pending: Vec<audit::Entry>,
    /// Open savepoints, oldest first: name and records pending when it was set.
    savepoints: Vec<(&'static str, usize)>,
}

impl Executor for Tx {
    fn target(&mut self) -> Target<'_> {
        match &mut self.inner {
            TxInner::Writer(turn) => Target::Sqlite(&mut turn.0.conn),
            TxInner::SqlitePooled { tx, .. } => Target::Sqlite(tx),
            TxInner::Postgres { tx, .. } => Target::Postgres(tx),
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = dyn Executor;
    fn deref(&self) -> &Self::Target {
        self
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self
    }
}

/// Advisory locks are keyed by a 64-bit hash of their name.
const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
const LOCK_SHARED_SQL: &str = "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))";

impl Tx {
    fn new(inner: TxInner) -> Self {
        Self {
            inner,
            audit: AuditBuffer::default(),
            data_key: None,
            held: Held::default(),
        }
    }

    /// Holds `arrival` if its id went in.
    pub(crate) fn hold(&mut self, arrival: &Arrival, went_in: bool) {
        if went_in {
            arrival.set(ArrivalState::Held);
            self.held.0.push(arrival.clone());
        }
    }

    /// Serializes this transaction with every other one, of any replica, that locks `name`
    /// (`"range:26:31"`, `"enterprise:913101…"`), until it ends: a PostgreSQL advisory lock.
    /// On SQLite nothing is done: a write transaction holds the database's write lock.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn lock(&mut self, name: &str) -> Result<(), StoreError> {
        if let TxInner::Postgres { tx, .. } = &mut self.inner {
            sqlx::query(LOCK_SQL).bind(name).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Runs `sql`, several statements without parameters (a migration).
    pub(crate) async fn raw(&mut self, sql: &'static str) -> Result<(), StoreError> {
        match self.target() {
            Target::Sqlite(c) => {
                sqlx::raw_sql(sql).execute(c).await?;
            }
            Target::Postgres(c) => {
                sqlx::raw_sql(sql).execute(c).await?;
            }
            Target::SqlitePool(_) | Target::PostgresPool(_) => {}
        }
        Ok(())
    }

    /// [`Tx::lock`] shared: transactions holding `name` shared run side by side, one holding
    /// it with [`Tx::lock`] runs alone.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn lock_shared(&mut self, name: &str) -> Result<(), StoreError> {
        if let TxInner::Postgres { tx, .. } = &mut self.inner {
            sqlx::query(LOCK_SHARED_SQL)
                .bind(name)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> crate::Engine {
        match self.inner {
            TxInner::Writer(_) | TxInner::SqlitePooled { .. } => crate::Engine::Sqlite,
            TxInner::Postgres { .. } => crate::Engine::Postgres,
        }
    }

    /// Commits (durable on return: SQLite's WAL with `synchronous=FULL`; PostgreSQL as its
    /// `synchronous_commit` says), then gives up the turn. The audit records appended join
    /// the chain now.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.audit.pending);
        let head = self.audit.head.take();
        match self.inner {
            TxInner::Writer(mut turn) => {
                let conn = &mut turn.0.conn;
                let head = match head {
                    Some(h) => h,
                    None if pending.is_empty() => audit::ChainHead::default(),
                    None => audit::head(&mut Target::Sqlite(conn)).await?,
                };
                let records = audit::chain(head, pending);
                // One round trip: the records, then the commit (not reached if they fail).
                audit::write(&mut Target::Sqlite(conn), &records, Some("COMMIT")).await?;
                turn.0.open = false;
            }
            TxInner::SqlitePooled { mut tx, _turn } => {
                if !pending.is_empty() {
                    let mut t = Target::Sqlite(&mut tx);
                    let head = match head {
                        Some(h) => h,
                        None => audit::head(&mut t).await?,
                    };
                    audit::write(&mut t, &audit::chain(head, pending), None).await?;
                }
                tx.commit().await?;
            }
            TxInner::Postgres { mut tx, _turn } => {
                if !pending.is_empty() {
                    // Every replica's transactions chain one after the other: the head's row
                    // is locked here, at the end, and held only until the commit.
                    let mut t = Target::Postgres(&mut tx);
                    let head = audit::lock_head(&mut t).await?;
                    audit::write_moving_head(&mut t, &audit::chain(head, pending)).await?;
                }
                tx.commit().await?;
            }
        }
        self.held.committed();
        Ok(())
    }

    /// Rolls back, then gives up the turn.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            TxInner::Writer(mut turn) => turn.0.settle().await,
            TxInner::SqlitePooled { tx, _turn } => Ok(tx.rollback().await?),
            TxInner::Postgres { tx, _turn } => Ok(tx.rollback().await?),
        }
    }

    /// `SAVEPOINT name`.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]; [`StoreError::Savepoint`] for a name that is not `[a-z_]+`.
    pub async fn savepoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.savepoint_statement("SAVEPOINT", name).await?;
        let a = &mut self.audit;
        a.savepoints.push((name, a.pending.len()));
        Ok(())
    }

    /// `RELEASE name`: keeps what was done since the savepoint.
    ///
    /// # Errors
    /// As [`Self::savepoint`].
    pub async fn release(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.savepoint_statement("RELEASE SAVEPOINT", name).await?;
        // The newest savepoint of that name goes, with every one set after it.
        if let Some(i) = self.audit.savepoints.iter().rposition(|s| s.0 == name) {
            self.audit.savepoints.truncate(i);
        }
        Ok(())
    }

    /// `ROLLBACK TO name`: undoes what was done since the savepoint (which stays open).
    ///
    /// # Errors
    /// As [`Self::savepoint`].
    pub async fn rollback_to(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.savepoint_statement("ROLLBACK TO SAVEPOINT", name)
            .await?;
        // Back to the newest savepoint of that name, which stays open.
        let a = &mut self.audit;
        if let Some(i) = a.savepoints.iter().rposition(|s| s.0 == name) {
            a.savepoints.truncate(i + 1);
            a.pending.truncate(a.savepoints[i].1);
        }
        Ok(())
    }

    async fn savepoint_statement(
        &mut self,
        verb: &'static str,
        name: &'static str,
    ) -> Result<(), StoreError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(StoreError::Savepoint(name));
        }
        // `name` is checked above and `'static`: never input.
        query_text(format!("{verb} {name}"))
            .execute(&mut *self)
            .await?;
        Ok(())
    }
}

impl Db {
    /// Begins a write transaction in `turn`. On a SQLite writer connection, with
    /// [`Prefetch::Keys`], what most write transactions read first comes back with the
    /// `BEGIN`, in the same round trip: the audit chain head ([`audit::append`]) and the
    /// active data key ([`vault::Vault::seal`]) — read under the write lock, so they stay
    /// current for the whole transaction. With [`Prefetch::Remember`], the arrival's id is
    /// written first, in that round trip too; the transaction holds the arrival only if the
    /// id went in (it was not on record, or had expired).
    pub(crate) async fn begin_in(
        &self,
        turn: Turn,
        prefetch: Prefetch<'_>,
    ) -> Result<Tx, StoreError> {
        let mut turn = match turn {
            Turn::Writer(turn) => turn,
            Turn::Shared(turn) => {
                let mut tx = match &self.engine {
                    Backend::Sqlite(s) => Tx::new(TxInner::SqlitePooled {
                        tx: s.pool.begin_with("BEGIN IMMEDIATE").await?,
                        _turn: Some(turn),
                    }),
                    Backend::Postgres(p) => Tx::new(TxInner::Postgres {
                        tx: p.begin().await?,
                        _turn: Some(turn),
                    }),
                };
                if let Prefetch::Remember(arrival) = prefetch {
                    let a = arrival.inner();
                    let went_in = query(REMEMBER_ONE)
                        .bind(&a.sender)
                        .bind(&a.message_id)
                        .bind(a.expires.unix_timestamp())
                        .bind(a.now.unix_timestamp())
                        .execute(&mut tx)
                        .await?
                        .rows_affected()
                        > 0;
                    tx.hold(arrival, went_in);
                }
                return Ok(tx);
            }
        };
        turn.0.settle().await?;
        // Open from before the `BEGIN` is sent: abandoned in flight, it still reaches the
        // connection and is rolled back after.
        turn.0.open = true;
        let conn = &mut turn.0.conn;
        // The audit head and the active key, as `audit` and `vault` read them, and after a
        // remembering insert, whether it changed a row.
        static KEYS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT h.seq, h.hash, ({}), changes() FROM (SELECT 1) LEFT JOIN ({}) AS h ON true",
                vault::ACTIVE_ID,
                audit::HEAD
            )
        });
        static BEGIN_WITH_KEYS: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("BEGIN IMMEDIATE; {}", KEYS.as_str()));
        static BEGIN_REMEMBERING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "BEGIN IMMEDIATE; {}; {}",
                REMEMBER_ONE.text(crate::Engine::Sqlite),
                KEYS.as_str()
            )
        });
        type Keys = (Option<i64>, Option<String>, Option<i64>, i64);
        let (head, key, went_in) = match prefetch {
            Prefetch::Nothing => {
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                (None, None, None)
            }
            Prefetch::Keys => {
                let (seq, hash, key, _): Keys =
                    sqlx::query_as(sqlx::AssertSqlSafe(BEGIN_WITH_KEYS.as_str()))
                        .fetch_one(&mut *conn)
                        .await?;
                (Some(audit::ChainHead::of(seq.zip(hash))), key, None)
            }
            Prefetch::Remember(arrival) => {
                let a = arrival.inner();
                let (seq, hash, key, changed): Keys =
                    sqlx::query_as(sqlx::AssertSqlSafe(BEGIN_REMEMBERING.as_str()))
                        .bind(&a.sender)
                        .bind(&a.message_id)
                        .bind(a.expires.unix_timestamp())
                        .bind(a.now.unix_timestamp())
                        .fetch_one(&mut *conn)
                        .await?;
                (
                    Some(audit::ChainHead::of(seq.zip(hash))),
                    key,
                    Some((arrival, changed > 0)),
                )
            }
        };
        let mut tx = Tx::new(TxInner::Writer(turn));
        tx.audit.head = head;
        tx.data_key = key;
        if let Some((arrival, went_in)) = went_in {
            tx.hold(arrival, went_in);
        }
        Ok(tx)
    }
}

/// A read transaction of `db` ([`Db::begin_read`]).
pub(crate) async fn begin_read(db: &Db) -> Result<Tx, StoreError> {
    Ok(Tx::new(match &db.engine {
        Backend::Sqlite(s) => TxInner::SqlitePooled {
            tx: s.pool.begin().await?,
            _turn: None,
        },
        Backend::Postgres(p) => TxInner::Postgres {
            tx: p
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?,
            _turn: None,
        },
    }))
}
