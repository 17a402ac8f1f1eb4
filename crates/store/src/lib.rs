//! Database plumbing shared by Fapiao's roles. Each role owns its database and its tables
//! (its migrations live in its crate, one set per engine); this crate opens the database with
//! durable settings, applies migrations, starts write transactions, and keeps the persistent
//! replay guard, the audit chain and the vault of data keys.
//!
//! Two engines behind one API ([`engine`]): **SQLite**, embedded, one file per role, the
//! default of `fapiao up`; and **PostgreSQL**, for deployments that run replicas of a role
//! side by side. The URL picks the engine (`sqlite://<path>`, `postgres://…`). Roles write one
//! body of logic: statements are [`Sql`] constants, portable or with a text per engine where
//! the dialects differ, run with [`query`] on a [`Tx`], a [`Reader`] or [`Db::pool`].
//!
//! Words used throughout:
//! - **turn**: this process's writers wait for one another before they begin a write
//!   transaction. On SQLite the turn is the one writer connection, and holding it is what
//!   makes check-then-write sequences atomic. On PostgreSQL it is only where concurrent work
//!   of one process meets to share a commit ([`Db::grouped`]); what must be atomic across
//!   replicas holds a row lock or an advisory lock ([`Tx::lock`]) or is one conditional
//!   statement.
//! - **arrival**: a received message whose id the replay guard remembers ([`Arrival`]).
//! - **held**: an arrival whose id a write transaction wrote and has not committed yet.
//! - **prefetch**: what a SQLite write transaction reads with its `BEGIN`, in the same round
//!   trip (the audit chain head, the active data key).
//!
//! Durability: SQLite runs WAL with `synchronous = FULL`; PostgreSQL commits as configured
//! (`synchronous_commit = on` for production). Callers acknowledge only after commit.

use std::path::PathBuf;
use std::sync::Arc;

pub mod audit;
mod batch;
pub mod engine;
mod group;
mod migrate;
mod postgres;
mod replay;
pub mod retention;
mod sqlite;
pub mod statistics;
#[doc(hidden)]
pub mod testing;
mod tx;
pub mod vault;

pub use batch::insert_rows;
pub use engine::{
    Decode, Done, Engine, Executor, FromRow, Query, QueryAs, QueryScalar, Row, Sql, Value, query,
    query_as, query_scalar, query_text,
};
pub use group::{Answer, Group, Joined, Waiting};
pub use migrate::{Migration, schema_version};
pub use postgres::{create_database, drop_database, redacted as redact_url};
pub use replay::{Arrival, ArrivalState, prune_messages};
pub use tx::Tx;

use sqlite::SqliteDb;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not understood.
    #[error(
        "database URL `{0}`: expected sqlite://<path>, sqlite::memory: or postgres://[user[:password]@]host[:port]/database"
    )]
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
    /// A stored value is not what it must be (a sequence out of range, a status unknown).
    #[error("stored data: {0}")]
    Data(String),
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

impl StoreError {
    /// Whether the transaction lost a race with another one and may simply be run again:
    /// PostgreSQL's serialization failure (`40001`), deadlock (`40P01`) or a unique key
    /// another transaction committed first (`23505`). What it wrote was rolled back.
    #[must_use]
    pub fn is_race(&self) -> bool {
        let code = match self {
            Self::Sqlx(sqlx::Error::Database(e))
            | Self::Migration {
                source: sqlx::Error::Database(e),
                ..
            } => e.code(),
            _ => None,
        };
        matches!(code.as_deref(), Some("40001" | "40P01" | "23505"))
    }
}

/// Write transactions a process runs at once on PostgreSQL. Each waits for its database
/// round trips and its commit most of the time; a few side by side keep the CPU busy, and
/// work arriving meanwhile still shares their commits ([`Db::grouped`]).
pub const POSTGRES_TURNS: usize = 1;

/// Free space a SQLite database's file system must have for [`Db::write_check`] to pass.
pub const MIN_FREE_BYTES: u64 = 32 << 20;

/// A role's database.
#[derive(Debug, Clone)]
pub struct Db {
    engine: Backend,
    /// The turns of a database without a writer connection (PostgreSQL; SQLite in memory or
    /// opened for inspection): writers of this process wait here, first come first served,
    /// and concurrent work meets here to share a transaction ([`Db::grouped`]). SQLite has
    /// one turn; PostgreSQL [`POSTGRES_TURNS`], whose transactions run side by side and
    /// serialize in the database only where they lock the same rows.
    writers: Arc<tokio::sync::Semaphore>,
    /// Replay-guard entries waiting for the next group commit ([`Db::remember_message`]).
    remembering: Arc<std::sync::Mutex<Vec<replay::Remember>>>,
    /// When a group commit last deleted expired replay-guard entries (Unix seconds of its
    /// `now`; `i64::MIN` before the first).
    pruned_at: Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqliteDb),
    Postgres(sqlx::PgPool),
}

/// The pool of a [`Db`]: each statement run on it takes a connection of its own, outside
/// any transaction ([`Db::pool`]).
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a>(&'a Db);

impl Executor for Pool<'_> {
    fn target(&mut self) -> engine::Target<'_> {
        match &self.0.engine {
            Backend::Sqlite(s) => engine::Target::SqlitePool(&s.pool),
            Backend::Postgres(p) => engine::Target::PostgresPool(p),
        }
    }
}

/// A read connection ([`Db::read`]), held until dropped; dereferences to the statement
/// target (`&mut *reader`).
#[derive(Debug)]
pub struct Reader(ReaderInner);

#[derive(Debug)]
enum ReaderInner {
    Sqlite(sqlite::SqliteReader),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Executor for Reader {
    fn target(&mut self) -> engine::Target<'_> {
        match &mut self.0 {
            ReaderInner::Sqlite(r) => r.target(),
            ReaderInner::Postgres(c) => engine::Target::Postgres(c),
        }
    }
}

impl std::ops::Deref for Reader {
    type Target = dyn Executor;
    fn deref(&self) -> &Self::Target {
        self
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self
    }
}

impl Db {
    /// Opens (creating a SQLite file if missing) `url` — `sqlite://<path>`,
    /// `sqlite::memory:` or `postgres://…` (the database must exist: [`create_database`]) —
    /// and applies the shared migrations and then `migrations` of `role`.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn open(url: &str, role: &str, migrations: &[Migration]) -> Result<Self, StoreError> {
        let db = Self::connect(url).await?;
        db.migrate("store", migrate::BASE).await?;
        db.migrate(role, migrations).await?;
        Ok(db)
    }

    /// Opens `url` without migrating it: for inspection (`fapiao audit verify`) and for
    /// `fapiao db migrate`, which migrates explicitly ([`Db::migrate`]). A SQLite file must
    /// exist.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        let backend = match Engine::of_url(url)? {
            Engine::Sqlite => Backend::Sqlite(SqliteDb::open_existing(url).await?),
            Engine::Postgres => Backend::Postgres(postgres::connect(url).await?),
        };
        Ok(Self::with(backend))
    }

    async fn connect(url: &str) -> Result<Self, StoreError> {
        let backend = match Engine::of_url(url)? {
            Engine::Sqlite => Backend::Sqlite(SqliteDb::open(url).await?),
            Engine::Postgres => Backend::Postgres(postgres::connect(url).await?),
        };
        Ok(Self::with(backend))
    }

    fn with(engine: Backend) -> Self {
        let turns = match engine {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => POSTGRES_TURNS,
        };
        Self {
            engine,
            writers: Arc::new(tokio::sync::Semaphore::new(turns)),
            remembering: Arc::default(),
            pruned_at: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        }
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> Engine {
        match self.engine {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }

    /// The pool, for reads and single statements outside a transaction.
    #[must_use]
    pub fn pool(&self) -> Pool<'_> {
        Pool(self)
    }

    /// A connection for reads on the request path, held until dropped: `&mut *db.read().await?`
    /// is what statements execute on. Outside a transaction, each statement reads the newest
    /// commit. A SQLite file keeps a few of these out of the pool, since a pool connection
    /// costs one more round trip to its thread each time it goes back.
    ///
    /// # Errors
    /// A connection cannot be opened.
    pub async fn read(&self) -> Result<Reader, StoreError> {
        Ok(Reader(match &self.engine {
            Backend::Sqlite(s) => ReaderInner::Sqlite(s.read().await?),
            Backend::Postgres(p) => ReaderInner::Postgres(p.acquire().await?),
        }))
    }

    /// Starts a write transaction. On SQLite it holds the database's write lock from its
    /// first statement (`BEGIN IMMEDIATE`), so check-then-write sequences in it are atomic
    /// against every other writer. On PostgreSQL it reads committed data and locks what it
    /// changes: a check-then-write sequence takes its lock first ([`Tx::lock`], or a
    /// `SELECT … FOR UPDATE` of its own).
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        let turn = self.take_turn().await;
        self.begin_in(turn, tx::Prefetch::Keys).await
    }

    /// Starts a read transaction: a consistent snapshot for several reads, never waiting
    /// for writers (SQLite's WAL; PostgreSQL's `REPEATABLE READ READ ONLY`).
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        tx::begin_read(self).await
    }

    /// Whether the database answers: for SQLite, its file is still there (open connections
    /// keep working on a deleted or moved file, so a query alone would not notice); a query
    /// on its tables succeeds.
    pub async fn ping(&self) -> bool {
        if let Backend::Sqlite(s) = &self.engine
            && !s.file_exists()
        {
            return false;
        }
        query("SELECT COUNT(*) FROM schema_migrations")
            .execute(self.pool())
            .await
            .is_ok()
    }

    /// Whether the database takes a write, and why not: a one-row write transaction (this
    /// process's row of `write_probe`, stamped `t`; rows of processes gone for a day are
    /// removed) must commit. For a SQLite file also: the file is there, its permissions let
    /// it be written (a main file turned read-only keeps taking small writes in its WAL
    /// until a checkpoint fails, so the write alone would not notice), and its file system
    /// has [`MIN_FREE_BYTES`] free (a small write reuses WAL space a full disk would refuse
    /// to a large one).
    ///
    /// # Errors
    /// What failed, for readiness and the log.
    pub async fn write_check(&self, instance: &str, t: i64) -> Result<(), String> {
        if let Some(path) = self.path() {
            sqlite::writable(path)?;
        }
        let write = async {
            let mut tx = self.begin_write().await?;
            query(
                "INSERT INTO write_probe (instance, at) VALUES ($1, $2)
                 ON CONFLICT (instance) DO UPDATE SET at = excluded.at",
            )
            .bind(instance)
            .bind(t)
            .execute(&mut *tx)
            .await?;
            query("DELETE FROM write_probe WHERE at < $1")
                .bind(t - 86_400)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        write
            .await
            .map_err(|e: StoreError| format!("a write transaction failed: {e}"))
    }

    /// Applies `migrations` of `role` that the database does not have yet, in one
    /// transaction (on PostgreSQL under a lock, so replicas starting together migrate once).
    ///
    /// # Errors
    /// [`StoreError::TooNew`] when the database is at a newer version than `migrations`
    /// know; [`StoreError::Migration`].
    pub async fn migrate(&self, role: &str, migrations: &[Migration]) -> Result<u64, StoreError> {
        migrate::run(self, role, migrations).await
    }

    /// Waits for this process's writer turn.
    async fn take_turn(&self) -> tx::Turn {
        match &self.engine {
            Backend::Sqlite(s) => match s.take_writer().await {
                Some(w) => tx::Turn::Writer(w),
                None => tx::Turn::Shared(self.shared_turn().await),
            },
            Backend::Postgres(_) => tx::Turn::Shared(self.shared_turn().await),
        }
    }

    async fn shared_turn(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.writers
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the turns' semaphore is never closed"))
    }

    /// The SQLite file, for a file database.
    #[must_use]
    pub fn path(&self) -> Option<&PathBuf> {
        match &self.engine {
            Backend::Sqlite(s) => s.path.as_ref(),
            Backend::Postgres(_) => None,
        }
    }
}

/// When a group commit last pruned, and whether one is due at `t`.
pub(crate) fn prune_due(pruned_at: &std::sync::atomic::AtomicI64, t: i64) -> bool {
    use std::sync::atomic::Ordering;
    let last = pruned_at.load(Ordering::Relaxed);
    last.saturating_add(replay::PRUNE_EVERY) <= t
        && pruned_at
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
