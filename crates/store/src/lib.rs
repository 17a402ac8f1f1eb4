//! Database plumbing shared by Fapiao's roles. Each role owns its database and its tables
//! (its migrations live in its crate); this crate opens the database with durable settings,
//! applies migrations, starts write transactions, and keeps the persistent replay guard.
//!
//! SQLite is the embedded engine. The SQL the roles write stays portable (`$n` parameters,
//! `INTEGER`/`TEXT` columns, money as decimal TEXT converted in Rust, no SQLite-only syntax
//! beyond `BEGIN IMMEDIATE`, which this crate hides behind [`Db::begin_write`]) so that the
//! PostgreSQL engine can follow.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed transaction survives a
//! power cut; callers acknowledge only after commit.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

pub mod audit;
pub mod retention;
pub mod vault;

pub use sqlx;

/// A transaction roles work in: a write transaction ([`Db::begin_write`]) holds its
/// database's in-process writer turn until it commits, rolls back or is dropped; a read
/// transaction ([`Db::begin_read`]) holds none. Dereferences to the connection, so
/// `&mut *tx` (or `&mut **tx` through a `&mut Tx`) is what statements execute on.
///
/// A write transaction of a file database runs on the database's own writer connection, kept
/// out of the pool: every write transaction of the process is serialized by the writer turn
/// anyway, and a pool connection costs a round trip to its thread on release (and a begin or
/// commit through the pool's transaction API two more). A write transaction dropped without
/// commit or rollback is rolled back promptly on its own task, before the next one begins.
///
/// Audit records appended in a transaction ([`audit::append`]) are written when it commits,
/// all in one statement. So savepoints go through [`Tx::savepoint`], [`Tx::release`] and
/// [`Tx::rollback_to`], never as raw statements: a rollback to a savepoint also drops the
/// records appended since.
#[derive(Debug)]
pub struct Tx {
    inner: TxInner,
    pub(crate) audit: AuditBuffer,
    /// The active data key id, once read in this transaction ([`vault::Vault::seal`]).
    pub(crate) data_key: Option<i64>,
    /// The arrivals whose ids this transaction wrote ([`Db::begin_write_for`],
    /// [`Db::remember_in`]).
    held: Held,
}

/// The arrivals a write transaction remembers: [`ArrivalState::Remembered`] once it commits,
/// [`ArrivalState::Pending`] again if it is rolled back or dropped.
#[derive(Debug, Default)]
struct Held(Vec<Arrival>);

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

/// A received message — an envelope, or a signed ERP request — whose id the replay guard is
/// to remember before what it asks for is acknowledged, so a second arrival of the same id is
/// refused. A handler that writes remembers it in its own first write transaction
/// ([`Db::begin_write_for`]): the id becomes durable in the same commit as what the message
/// did, at no cost of its own, and a replay is refused under the write lock before anything
/// is written. Whoever answers then makes sure with [`Db::remember`], which costs a commit
/// of its own (grouped with others) only when no transaction remembered the id: the message
/// was refused, or asked only to read.
///
/// Clones share their state; an arrival is meant for the one request it came with.
#[derive(Debug, Clone)]
pub struct Arrival(std::sync::Arc<ArrivalInner>);

#[derive(Debug)]
struct ArrivalInner {
    sender: String,
    message_id: String,
    expires: OffsetDateTime,
    now: OffsetDateTime,
    state: std::sync::atomic::AtomicU8,
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
        Self(std::sync::Arc::new(ArrivalInner {
            sender: sender.into(),
            message_id: message_id.into(),
            expires,
            now,
            state: std::sync::atomic::AtomicU8::new(ArrivalState::Pending as u8),
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
        match self.0.state.load(std::sync::atomic::Ordering::Acquire) {
            s if s == ArrivalState::Held as u8 => ArrivalState::Held,
            s if s == ArrivalState::Remembered as u8 => ArrivalState::Remembered,
            s if s == ArrivalState::Replayed as u8 => ArrivalState::Replayed,
            _ => ArrivalState::Pending,
        }
    }

    fn set(&self, state: ArrivalState) {
        self.0
            .state
            .store(state as u8, std::sync::atomic::Ordering::Release);
    }

    fn replayed(&self) -> StoreError {
        self.set(ArrivalState::Replayed);
        StoreError::Replayed {
            sender: self.0.sender.clone(),
            message_id: self.0.message_id.clone(),
        }
    }
}

#[derive(Debug)]
enum TxInner {
    /// On the database's writer connection, holding the writer turn.
    Writer(WriterTurn),
    /// On a pool connection: read transactions, and write transactions of a database without
    /// a writer connection (in memory, or opened for inspection), which hold the turn.
    Pooled {
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        /// Dropped after `tx` ends (fields drop in declaration order).
        _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    },
}

/// The writer connection of a file database, and whether a transaction may be open on it
/// that no [`Tx`] owns any more (begun, then abandoned): the next holder rolls it back.
#[derive(Debug)]
struct Writer {
    conn: sqlx::SqliteConnection,
    open: bool,
}

impl Writer {
    /// Rolls back a transaction left open. "No transaction is active" is the answer when
    /// its `BEGIN` never ran or its `COMMIT` did: nothing to undo either way.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if !self.open {
            return Ok(());
        }
        match sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.message().contains("no transaction is active") => {}
            Err(e) => return Err(e.into()),
        }
        self.open = false;
        Ok(())
    }
}

/// What a write transaction does and reads with its `BEGIN` ([`Db::begin_in`]).
#[derive(Debug, Clone, Copy)]
enum Prefetch<'a> {
    /// Nothing: before the shared tables exist (migrations), or not needed (replay guard).
    Nothing,
    /// The audit chain head and the active data key.
    Keys,
    /// Remembers an arrival's id, then reads as [`Prefetch::Keys`].
    Remember(&'a Arrival),
}

/// This process's writer turn.
#[derive(Debug)]
enum Turn {
    Writer(WriterTurn),
    Shared(tokio::sync::OwnedMutexGuard<()>),
}

/// The writer turn of a file database: its writer connection, held until dropped. Dropped
/// with a transaction open (a [`Tx`] dropped unfinished, or a `BEGIN` abandoned mid-way), it
/// rolls that back on a task of its own, so the database's write lock is not held until the
/// next write transaction comes.
#[derive(Debug)]
struct WriterTurn(tokio::sync::OwnedMutexGuard<Writer>);

impl Drop for WriterTurn {
    fn drop(&mut self) {
        if !self.0.open {
            return;
        }
        let writer = tokio::sync::OwnedMutexGuard::mutex(&self.0).clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = writer.lock().await.settle().await {
                    tracing::warn!(error = %e, "rolling back an abandoned write transaction");
                }
            });
        }
        // Without a runtime the turn's next holder rolls it back.
    }
}

/// A transaction's audit records not yet written, and the chain head they lead to.
#[derive(Debug, Default)]
pub(crate) struct AuditBuffer {
    /// The newest record, written or pending; `None` until read.
    pub(crate) head: Option<AuditHead>,
    pub(crate) pending: Vec<audit::Record>,
    /// Open savepoints, oldest first: name, records pending and head when it was set.
    savepoints: Vec<(&'static str, usize, Option<AuditHead>)>,
}

/// `(seq, hash)` of an audit record.
pub(crate) type AuditHead = (i64, String);

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
    fn hold(&mut self, arrival: &Arrival, went_in: bool) {
        if went_in {
            arrival.set(ArrivalState::Held);
            self.held.0.push(arrival.clone());
        }
    }

    /// Commits (durable on return: WAL with `synchronous=FULL`), then gives up the turn.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.audit.pending);
        match self.inner {
            TxInner::Writer(mut turn) => {
                // One round trip: the records, then the commit (not reached if they fail).
                audit::write_pending(&mut turn.0.conn, &pending, Some("COMMIT")).await?;
                turn.0.open = false;
            }
            TxInner::Pooled { mut tx, _turn } => {
                audit::write_pending(&mut tx, &pending, None).await?;
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
            TxInner::Pooled { tx, _turn } => Ok(tx.rollback().await?),
        }
    }

    /// `SAVEPOINT name`.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]; [`StoreError::Savepoint`] for a name that is not `[a-z_]+`.
    pub async fn savepoint(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.savepoint_statement("SAVEPOINT", name).await?;
        let a = &mut self.audit;
        a.savepoints.push((name, a.pending.len(), a.head.clone()));
        Ok(())
    }

    /// `RELEASE name`: keeps what was done since the savepoint.
    ///
    /// # Errors
    /// As [`Self::savepoint`].
    pub async fn release(&mut self, name: &'static str) -> Result<(), StoreError> {
        self.savepoint_statement("RELEASE", name).await?;
        // Like SQLite: the newest savepoint of that name goes, with every one set after it.
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
        self.savepoint_statement("ROLLBACK TO", name).await?;
        // Like SQLite: back to the newest savepoint of that name, which stays open.
        let a = &mut self.audit;
        if let Some(i) = a.savepoints.iter().rposition(|s| s.0 == name) {
            a.savepoints.truncate(i + 1);
            let (_, pending, head) = &a.savepoints[i];
            a.pending.truncate(*pending);
            a.head.clone_from(head);
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
        sqlx::query(sqlx::AssertSqlSafe(format!("{verb} {name}")))
            .execute(&mut **self)
            .await?;
        Ok(())
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        match &self.inner {
            TxInner::Writer(turn) => &turn.0.conn,
            TxInner::Pooled { tx, .. } => tx,
        }
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.inner {
            TxInner::Writer(turn) => &mut turn.0.conn,
            TxInner::Pooled { tx, .. } => tx,
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not understood.
    #[error("database URL `{0}`: expected sqlite://<path> or sqlite::memory:")]
    Url(String),
    /// The database said no.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A savepoint name that is not `[a-z_]+`.
    #[error("savepoint name `{0}`: expected [a-z_]+")]
    Savepoint(&'static str),
    /// The message was received before (see [`Arrival`]); nothing was written.
    #[error("message {message_id} from {sender} was already received")]
    Replayed {
        /// Its sender.
        sender: String,
        /// Its id.
        message_id: String,
    },
    /// A write grouped with others (see [`Db::remember_message`]) failed with them.
    #[error("database: {0}")]
    Grouped(String),
    /// A migration failed.
    #[error("migration {version} of {role}: {source}")]
    Migration {
        /// The role whose migration failed.
        role: String,
        /// Its version.
        version: i64,
        /// The error.
        source: sqlx::Error,
    },
    /// A key is missing, wrong, or a sealed value does not open.
    #[error("keys: {0}")]
    Key(String),
    /// The database was migrated by a newer build.
    #[error("the {role} database is at schema version {found}, newer than this build's {known}")]
    TooNew {
        /// The role.
        role: String,
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

/// One schema migration: a version and its SQL (several statements allowed).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Increasing version.
    pub version: i64,
    /// What it does, for the migrations table.
    pub description: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// A role's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    /// The file, for a file database (`None` in memory).
    path: Option<std::path::PathBuf>,
    /// Writers of this process take turns here, first come first served, before they ask
    /// SQLite for the write lock. Without it, a writer that finds the lock taken sleeps in
    /// SQLite's busy handler (1, 2, 5, 10, … 100 ms between tries) and can wait far longer
    /// than the transaction ahead of it lasts. The busy handler still covers writers in other
    /// processes (an operator command on the same file). A file database's turn is its
    /// writer connection; without one (in memory, or opened for inspection), the turn is
    /// `writers` and write transactions take a pool connection.
    writer: Option<std::sync::Arc<tokio::sync::Mutex<Writer>>>,
    /// Read connections of a file database ([`Db::read`]).
    readers: Option<std::sync::Arc<Readers>>,
    writers: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Replay-guard entries waiting for the next group commit ([`Db::remember_message`]).
    remembering: std::sync::Arc<std::sync::Mutex<Vec<Remember>>>,
    /// When a group commit last deleted expired replay-guard entries (Unix seconds of its
    /// `now`; `i64::MIN` before the first).
    pruned_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Group commits delete expired replay-guard entries at most this often (seconds).
const PRUNE_EVERY: i64 = 60;

/// Writes one replay-guard entry (`$1` sender, `$2` message id, `$3` expiry, `$4` now): it
/// goes in unless its id is on record and not expired by `$4`. One row changed when it went in.
const REMEMBER_ONE: &str = "INSERT INTO seen_messages (sender, message_id, expires_at)
     VALUES ($1, $2, $3)
     ON CONFLICT (sender, message_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE seen_messages.expires_at <= $4";

/// [`REMEMBER_ONE`] for many entries in one statement (`$1` a JSON array of `[sender,
/// message_id, expires_at]`, `$2` now): each goes in unless its id is on record and not
/// expired by `$2`, or an earlier entry of `$1` has the same id. Returns the ids that went in.
const REMEMBER_ALL: &str = "INSERT INTO seen_messages (sender, message_id, expires_at)
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
     FROM jsonb_each($1) WHERE true
     ON CONFLICT (sender, message_id) DO UPDATE SET expires_at = excluded.expires_at
         WHERE seen_messages.expires_at <= $2
     RETURNING sender, message_id";

/// Jobs waiting to share a write transaction ([`Db::begin_group`]).
#[derive(Debug)]
pub struct Group<J>(std::sync::Mutex<Vec<J>>);

impl<J> Default for Group<J> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }
}

impl<J> Group<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<J>> {
        // A panic while pushing or taking leaves the vector whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A job of a group ([`Db::grouped`]), and where its answer goes.
#[derive(Debug)]
pub struct Waiting<J, R> {
    /// The job.
    pub job: J,
    /// Where its answer goes.
    pub answer: Answer<R>,
}

/// Where the answer to a job of a group goes ([`Waiting`]).
#[derive(Debug)]
pub struct Answer<R>(tokio::sync::oneshot::Sender<R>);

impl<R> Answer<R> {
    /// Answers the job's caller (gone already: nothing happens).
    pub fn send(self, answer: R) {
        let _ = self.0.send(answer);
    }
}

/// What [`Db::begin_group`] gives its caller.
#[derive(Debug)]
#[must_use = "the jobs of a group led are answered by its leader"]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved at once into the leader's task"
)]
pub enum Joined<J> {
    /// This caller leads a group: its write transaction, and its jobs in queue order (the
    /// caller's among them).
    Lead(Tx, Vec<J>),
    /// An earlier caller's group took the job and answers it.
    Taken,
}

/// A read connection ([`Db::read`]); dereferences to the connection.
#[derive(Debug)]
pub struct Reader(ReaderInner);

#[derive(Debug)]
enum ReaderInner {
    /// One of a file database's read connections, and its permit (dropped after it).
    Own {
        conn: tokio::sync::OwnedMappedMutexGuard<
            Option<sqlx::SqliteConnection>,
            sqlx::SqliteConnection,
        >,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    /// A pool connection.
    Pooled(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl std::ops::Deref for Reader {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        match &self.0 {
            ReaderInner::Own { conn, .. } => conn,
            ReaderInner::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match &mut self.0 {
            ReaderInner::Own { conn, .. } => conn,
            ReaderInner::Pooled(conn) => conn,
        }
    }
}

/// A file database's read connections ([`Db::read`]), opened when first needed.
#[derive(Debug)]
struct Readers {
    slots: Vec<std::sync::Arc<tokio::sync::Mutex<Option<sqlx::SqliteConnection>>>>,
    /// As many permits as slots.
    free: std::sync::Arc<tokio::sync::Semaphore>,
    options: SqliteConnectOptions,
}

/// Read connections of a file database ([`Db::read`]).
const READERS: usize = 4;

/// A replay-guard entry waiting for its group commit, and where its answer goes.
#[derive(Debug)]
struct Remember {
    sender: String,
    message_id: String,
    expires: OffsetDateTime,
    now: OffsetDateTime,
    answer: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

const BASE: &[Migration] = &[
    Migration {
        version: 1,
        description: "replay guard",
        sql: "CREATE TABLE seen_messages (
            sender TEXT NOT NULL,
            message_id TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (sender, message_id)
        );
        CREATE INDEX seen_messages_expiry ON seen_messages (expires_at);",
    },
    Migration {
        version: 2,
        description: "audit trail",
        sql: "CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE TABLE audit_heads (
            seq INTEGER PRIMARY KEY,
            hash TEXT NOT NULL,
            signed_at INTEGER NOT NULL,
            signature BLOB NOT NULL,
            certificate BLOB NOT NULL
        );",
    },
    Migration {
        version: 3,
        description: "data keys for encryption at rest",
        sql: "CREATE TABLE data_keys (
            id INTEGER PRIMARY KEY,
            algorithm TEXT NOT NULL,
            wrapped BLOB NOT NULL,
            active INTEGER NOT NULL CHECK (active IN (0, 1)),
            created_at INTEGER NOT NULL
        );
        CREATE UNIQUE INDEX data_keys_active ON data_keys (active) WHERE active = 1;",
    },
];

impl Db {
    /// Opens (creating if missing) `url` — `sqlite://<path>` or `sqlite::memory:` — and
    /// applies the shared migrations and then `migrations` of `role`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn open(url: &str, role: &str, migrations: &[Migration]) -> Result<Self, StoreError> {
        let memory = url == "sqlite::memory:";
        let options = if memory {
            SqliteConnectOptions::from_str(url).map_err(|_| StoreError::Url(url.to_owned()))?
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .ok_or_else(|| StoreError::Url(url.to_owned()))?;
            SqliteConnectOptions::new().filename(Path::new(path))
        }
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        // Statement journals (a multi-row statement inside a transaction) and sorts stay in
        // memory instead of spilling to temporary files created and deleted as they go.
        .pragma("temp_store", "memory")
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            // An embedded connection does not go stale the way a network one does; the ping
            // before every acquire would be one more round trip to the connection's thread.
            .test_before_acquire(false)
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(300))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options.clone())
            .await?;
        let (writer, readers) = if memory {
            // Another connection to `:memory:` would be another database.
            (None, None)
        } else {
            let conn = sqlx::ConnectOptions::connect(&options).await?;
            let writer = std::sync::Arc::new(tokio::sync::Mutex::new(Writer { conn, open: false }));
            let readers = Readers {
                slots: (0..READERS).map(|_| std::sync::Arc::default()).collect(),
                free: std::sync::Arc::new(tokio::sync::Semaphore::new(READERS)),
                options,
            };
            (Some(writer), Some(std::sync::Arc::new(readers)))
        };
        let db = Self {
            pool,
            writer,
            readers,
            writers: std::sync::Arc::default(),
            remembering: std::sync::Arc::default(),
            pruned_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            path: (!memory)
                .then(|| url.strip_prefix("sqlite://").map(std::path::PathBuf::from))
                .flatten(),
        };
        db.migrate("store", BASE).await?;
        db.migrate(role, migrations).await?;
        Ok(db)
    }

    /// Opens an existing database without migrating it (for inspection: `fapiao audit verify`).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .ok_or_else(|| StoreError::Url(url.to_owned()))?;
        let options = SqliteConnectOptions::new()
            .filename(Path::new(path))
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            writer: None,
            readers: None,
            path: Some(Path::new(path).to_owned()),
            writers: std::sync::Arc::default(),
            remembering: std::sync::Arc::default(),
            pruned_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        })
    }

    /// The pool, for reads and single statements.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A connection for reads on the request path, held until dropped: `&mut *db.read().await?`
    /// is what statements execute on. A file database keeps a few of these out of the pool,
    /// since a pool connection costs one more round trip to its thread each time it goes back
    /// (sqlx tests it on release). Outside a transaction, each statement reads the newest
    /// commit. (In memory, a pool connection.)
    ///
    /// # Errors
    /// A connection cannot be opened.
    pub async fn read(&self) -> Result<Reader, sqlx::Error> {
        let Some(readers) = &self.readers else {
            return Ok(Reader(ReaderInner::Pooled(self.pool.acquire().await?)));
        };
        // One permit per slot, and a slot's guard goes before its permit (see `Reader`): with
        // a permit, one slot at least is free.
        let permit = readers
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut slot = readers
            .slots
            .iter()
            .find_map(|s| s.clone().try_lock_owned().ok())
            .ok_or(sqlx::Error::PoolTimedOut)?;
        if slot.is_none() {
            *slot = Some(sqlx::ConnectOptions::connect(&readers.options).await?);
        }
        let conn = tokio::sync::OwnedMutexGuard::try_map(slot, Option::as_mut)
            .map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(Reader(ReaderInner::Own {
            conn,
            _permit: permit,
        }))
    }

    /// Starts a write transaction that holds the write lock from its first statement
    /// (`BEGIN IMMEDIATE`): check-then-write sequences in it are atomic against every other
    /// writer, in this process or another.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        let turn = self.take_turn().await;
        Self::begin_in(&self.pool, turn, Prefetch::Keys).await
    }

    /// [`Db::begin_write`] for what `arrival` asks: unless its id is remembered already, the
    /// transaction writes it first, in the same round trip as its `BEGIN`, and it is
    /// remembered when the transaction commits ([`Arrival`]). Expired ids are deleted on the
    /// way at most once every minute, as by [`Db::remember_message`].
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
            return Self::begin_in(&self.pool, turn, Prefetch::Keys).await;
        }
        let mut tx = Self::begin_in(&self.pool, turn, Prefetch::Remember(arrival)).await?;
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
            if a.state() == ArrivalState::Pending
                && !pending.iter().any(|p| std::sync::Arc::ptr_eq(&p.0, &a.0))
            {
                pending.push(a);
            }
        }
        if let Some(now) = arrivals.iter().map(|a| a.0.now).min()
            && prune_due(&self.pruned_at, now.unix_timestamp())
        {
            delete_expired(&mut **tx, now).await?;
        }
        if let Some(now) = pending.iter().map(|a| a.0.now).min() {
            let entries = serde_json::Value::Array(
                pending
                    .iter()
                    .map(|a| {
                        serde_json::json!([
                            a.0.sender,
                            a.0.message_id,
                            a.0.expires.unix_timestamp()
                        ])
                    })
                    .collect(),
            );
            let mut went_in: std::collections::HashSet<(String, String)> =
                sqlx::query_as(REMEMBER_ALL)
                    .bind(entries.to_string())
                    .bind(now.unix_timestamp())
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .collect();
            for a in pending {
                let key = (a.0.sender.clone(), a.0.message_id.clone());
                if went_in.remove(&key) {
                    tx.hold(a, true);
                } else {
                    a.set(ArrivalState::Replayed);
                }
            }
        }
        Ok(arrivals
            .iter()
            .map(|a| match a.state() {
                ArrivalState::Held => tx.held.0.iter().any(|h| std::sync::Arc::ptr_eq(&h.0, &a.0)),
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

    /// Group commit for work that would otherwise take a write transaction — and a durable
    /// commit — each: queues `job` in `group`, waits for this database's writer turn, and, if
    /// jobs are still queued then, begins one write transaction for them all and hands them
    /// over in queue order: `job` and whatever queued up while earlier transactions held the
    /// turn. The transaction has remembered each job's `arrival` already, as
    /// [`Db::remember_in`] does (a job whose arrival is then [`ArrivalState::Replayed`] is a
    /// replay). [`Joined::Taken`] when an earlier caller's group took `job`.
    ///
    /// Whoever leads does every job of the group in the transaction, commits, and answers
    /// each job after the commit — best on a task of its own, so that the group is finished
    /// even if the leading caller is abandoned. Under load a burst of requests costs one
    /// transaction and one `fsync` instead of one each; a job alone costs what
    /// [`Db::begin_write_for`] would (its arrival written with the `BEGIN`).
    ///
    /// A caller abandoned while it waits for the turn leaves its job queued: the next group
    /// does it, unanswered.
    ///
    /// # Errors
    /// The transaction cannot begin or remember the arrivals: the error, and the jobs taken
    /// to be answered with it.
    pub async fn begin_group<J>(
        &self,
        group: &Group<J>,
        job: J,
        arrival: impl Fn(&J) -> Option<&Arrival>,
    ) -> Result<Joined<J>, (StoreError, Vec<J>)> {
        group.lock().push(job);
        let turn = self.take_turn().await;
        let alone = {
            let mut queue = group.lock();
            match queue.len() {
                0 => return Ok(Joined::Taken),
                1 => queue.pop(),
                _ => None,
            }
        };
        let (mut tx, jobs) = match alone {
            Some(job) => {
                let prefetch = match arrival(&job) {
                    Some(a) if a.state() == ArrivalState::Pending => Prefetch::Remember(a),
                    _ => Prefetch::Keys,
                };
                match Self::begin_in(&self.pool, turn, prefetch).await {
                    Ok(tx) => (tx, vec![job]),
                    Err(e) => return Err((e, vec![job])),
                }
            }
            // Taken once begun: jobs queued meanwhile join this transaction too.
            None => match Self::begin_in(&self.pool, turn, Prefetch::Keys).await {
                Ok(tx) => (tx, std::mem::take(&mut *group.lock())),
                Err(e) => return Err((e, std::mem::take(&mut *group.lock()))),
            },
        };
        let arrivals: Vec<&Arrival> = jobs.iter().filter_map(&arrival).collect();
        if let Err(e) = self.remember_in(&mut tx, &arrivals).await {
            drop(tx);
            return Err((e, jobs));
        }
        Ok(Joined::Lead(tx, jobs))
    }

    /// [`Db::begin_group`] with the discipline every group follows: `job` waits in `group`
    /// with a channel for its answer; if this caller leads, `lead` gets the transaction and
    /// the jobs and runs on a task of its own (so the group is finished and answered even if
    /// this caller is abandoned meanwhile), committing before it answers each job with
    /// [`Answer::send`]; if the transaction cannot begin, each job taken is answered with
    /// `failed`. Returns this job's answer, whoever gave it; `None` if its group ended without
    /// answering it (its leader panicked).
    pub async fn grouped<J, R, L, Fut>(
        &self,
        group: &Group<Waiting<J, R>>,
        job: J,
        arrival: impl Fn(&J) -> Option<&Arrival>,
        lead: L,
        failed: impl Fn(&J, &StoreError) -> R,
    ) -> Option<R>
    where
        L: FnOnce(Tx, Vec<Waiting<J, R>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument as _;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let waiting = Waiting {
            job,
            answer: Answer(answer),
        };
        match self.begin_group(group, waiting, |w| arrival(&w.job)).await {
            Ok(Joined::Lead(tx, jobs)) => {
                tokio::spawn(lead(tx, jobs).in_current_span());
            }
            Ok(Joined::Taken) => {}
            Err((e, jobs)) => {
                for w in jobs {
                    let answer = failed(&w.job, &e);
                    w.answer.send(answer);
                }
            }
        }
        answered.await.ok()
    }

    /// Waits for this process's writer turn.
    async fn take_turn(&self) -> Turn {
        match &self.writer {
            Some(writer) => Turn::Writer(WriterTurn(writer.clone().lock_owned().await)),
            None => Turn::Shared(self.writers.clone().lock_owned().await),
        }
    }

    /// Begins a write transaction in `turn`. On the writer connection, with
    /// [`Prefetch::Keys`], what most write transactions read first comes back with the
    /// `BEGIN`, in the same round trip: the audit chain head ([`audit::append`]) and the
    /// active data key ([`vault::Vault::seal`]) — read under the write lock, so they stay
    /// current for the whole transaction. With [`Prefetch::Remember`], the arrival's id is
    /// written first, in that round trip too; the transaction holds the arrival only if the
    /// id went in (it was not on record, or had expired).
    async fn begin_in(
        pool: &SqlitePool,
        turn: Turn,
        prefetch: Prefetch<'_>,
    ) -> Result<Tx, StoreError> {
        let mut turn = match turn {
            Turn::Writer(turn) => turn,
            Turn::Shared(turn) => {
                let mut tx = Tx::new(TxInner::Pooled {
                    tx: pool.begin_with("BEGIN IMMEDIATE").await?,
                    _turn: Some(turn),
                });
                if let Prefetch::Remember(arrival) = prefetch {
                    let a = &arrival.0;
                    let went_in = sqlx::query(REMEMBER_ONE)
                        .bind(&a.sender)
                        .bind(&a.message_id)
                        .bind(a.expires.unix_timestamp())
                        .bind(a.now.unix_timestamp())
                        .execute(&mut *tx)
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
            format!("BEGIN IMMEDIATE; {REMEMBER_ONE}; {}", KEYS.as_str())
        });
        type Keys = (Option<i64>, Option<String>, Option<i64>, i64);
        let (head, key, went_in) = match prefetch {
            Prefetch::Nothing => {
                sqlx::query("BEGIN IMMEDIATE").execute(conn).await?;
                (None, None, None)
            }
            Prefetch::Keys => {
                let (seq, hash, key, _): Keys =
                    sqlx::query_as(sqlx::AssertSqlSafe(BEGIN_WITH_KEYS.as_str()))
                        .fetch_one(conn)
                        .await?;
                (Some(audit::chain_from(seq.zip(hash))), key, None)
            }
            Prefetch::Remember(arrival) => {
                let a = &arrival.0;
                let (seq, hash, key, changed): Keys =
                    sqlx::query_as(sqlx::AssertSqlSafe(BEGIN_REMEMBERING.as_str()))
                        .bind(&a.sender)
                        .bind(&a.message_id)
                        .bind(a.expires.unix_timestamp())
                        .bind(a.now.unix_timestamp())
                        .fetch_one(conn)
                        .await?;
                (
                    Some(audit::chain_from(seq.zip(hash))),
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

    /// Starts a read transaction (`BEGIN`, deferred): a consistent snapshot for several
    /// reads, never waiting for writers (WAL).
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(Tx::new(TxInner::Pooled {
            tx: self.pool.begin().await?,
            _turn: None,
        }))
    }

    /// Whether the database answers: its file is still there (open connections keep
    /// working on a deleted or moved file, so a query alone would not notice) and a query on
    /// its tables succeeds.
    pub async fn ping(&self) -> bool {
        if let Some(p) = &self.path
            && !p.exists()
        {
            return false;
        }
        sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .execute(&self.pool)
            .await
            .is_ok()
    }

    async fn migrate(&self, role: &str, migrations: &[Migration]) -> Result<(), StoreError> {
        let turn = self.take_turn().await;
        let mut tx = Self::begin_in(&self.pool, turn, Prefetch::Nothing).await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                role TEXT NOT NULL,
                version INTEGER NOT NULL,
                description TEXT NOT NULL,
                PRIMARY KEY (role, version)
            )",
        )
        .execute(&mut *tx)
        .await?;
        let applied: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations WHERE role = $1",
        )
        .bind(role)
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if applied > known {
            return Err(StoreError::TooNew {
                role: role.to_owned(),
                found: applied,
                known,
            });
        }
        for m in migrations.iter().filter(|m| m.version > applied) {
            let fail = |source| StoreError::Migration {
                role: role.to_owned(),
                version: m.version,
                source,
            };
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(fail)?;
            sqlx::query(
                "INSERT INTO schema_migrations (role, version, description) VALUES ($1, $2, $3)",
            )
            .bind(role)
            .bind(m.version)
            .bind(m.description)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The persistent replay guard: records `(sender, message_id)` until `expires`. Returns
    /// `false` if it is already recorded and not expired (a replay). Expired entries are
    /// pruned as it goes (at most once a minute). Returns once the entry is durable.
    ///
    /// Concurrent calls share commits (group commit): each call queues its entry and waits
    /// for its writer turn; whoever gets the turn writes every entry queued so far, in queue
    /// order, in one transaction, and answers each after the commit. So a burst of messages
    /// costs one fsync, not one each, and the same message twice in one group is fresh once.
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
            let tx = Self::begin_in(&self.pool, turn, Prefetch::Nothing).await?;
            let group = std::mem::take(&mut *self.queue_lock());
            // On its own task, so that the group is written and answered even if this
            // caller is abandoned meanwhile.
            tokio::spawn(Self::commit_group(tx, group, self.pruned_at.clone()));
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

    /// Writes `group` in `tx`, commits, then answers each entry.
    async fn commit_group(
        mut tx: Tx,
        group: Vec<Remember>,
        pruned_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
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
    let entries = serde_json::Value::Array(
        group
            .iter()
            .map(|r| serde_json::json!([r.sender, r.message_id, r.expires.unix_timestamp()]))
            .collect(),
    );
    let inserted: Vec<(String, String)> = sqlx::query_as(REMEMBER_ALL)
        .bind(entries.to_string())
        .bind(t)
        .fetch_all(&mut **tx)
        .await?;
    let mut inserted: std::collections::HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(group
        .iter()
        .map(|r| inserted.remove(&(r.sender.clone(), r.message_id.clone())))
        .collect())
}

/// Whether expired replay-guard entries are due for deletion at `t` (Unix seconds), the last
/// deletion being at `pruned_at`: at most once every [`PRUNE_EVERY`] seconds. If so, the
/// caller deletes them in its transaction and `pruned_at` says `t` from now on.
fn prune_due(pruned_at: &std::sync::atomic::AtomicI64, t: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = pruned_at.load(Ordering::Relaxed);
    last.saturating_add(PRUNE_EVERY) <= t
        && pruned_at
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Deletes replay-guard entries that expired before `now`; returns how many.
///
/// # Errors
/// [`StoreError::Sqlx`].
pub async fn prune_messages(db: &Db, now: OffsetDateTime) -> Result<u64, StoreError> {
    delete_expired(db.pool(), now).await
}

async fn delete_expired<'e>(
    e: impl sqlx::SqliteExecutor<'e>,
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM seen_messages WHERE expires_at <= $1")
            .bind(now.unix_timestamp())
            .execute(e)
            .await?
            .rows_affected(),
    )
}

/// Inserts `rows` into `table` in one statement, whatever their number: each row a JSON
/// array of its values in `columns` order (`INSERT … SELECT … FROM jsonb_each`). Returns how
/// many went in.
///
/// # Errors
/// [`StoreError::Sqlx`].
pub async fn insert_rows(
    conn: &mut sqlx::SqliteConnection,
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<serde_json::Value>,
) -> Result<u64, StoreError> {
    insert_rows_then(conn, table, columns, rows, None).await
}

/// [`insert_rows`], then the statement `then` in the same round trip to the connection (not
/// run if the insert fails); `then` alone when there are no rows.
pub(crate) async fn insert_rows_then(
    conn: &mut sqlx::SqliteConnection,
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<serde_json::Value>,
    then: Option<&'static str>,
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        if let Some(then) = then {
            sqlx::query(then).execute(conn).await?;
        }
        return Ok(0);
    }
    let values: Vec<String> = (0..columns.len())
        .map(|i| format!("json_extract(value, '$[{i}]')"))
        .collect();
    // `table`, `columns` and `then` are `'static` constants of this crate or the calling
    // one, never input.
    let mut sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM jsonb_each($1)",
        columns.join(", "),
        values.join(", ")
    );
    if let Some(then) = then {
        sql.push_str("; ");
        sql.push_str(then);
    }
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(conn)
        .await?
        .rows_affected())
}
