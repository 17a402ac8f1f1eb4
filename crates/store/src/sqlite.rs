//! The SQLite engine: a file (or `:memory:`) with durable settings, its one writer
//! connection and a few read connections kept out of the pool.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use crate::StoreError;
use crate::engine::Target;

/// A SQLite database: its pool, and for a file its writer connection and read connections.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDb {
    pub(crate) pool: SqlitePool,
    /// The file, for a file database (`None` in memory).
    pub(crate) path: Option<PathBuf>,
    /// Writers of this process take turns here, first come first served, before they ask
    /// SQLite for the write lock. Without it, a writer that finds the lock taken sleeps in
    /// SQLite's busy handler (1, 2, 5, 10, … 100 ms between tries) and can wait far longer
    /// than the transaction ahead of it lasts. The busy handler still covers writers in other
    /// processes (an operator command on the same file). Without one (in memory, or opened
    /// for inspection), the turn is [`crate::Db`]'s shared one and write transactions take a
    /// pool connection.
    writer: Option<Arc<tokio::sync::Mutex<Writer>>>,
    /// Read connections of a file database ([`crate::Db::read`]).
    readers: Option<Arc<Readers>>,
}

/// The writer connection of a file database, and whether a transaction may be open on it
/// that no [`crate::Tx`] owns any more (begun, then abandoned): the next holder rolls it back.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    pub(crate) open: bool,
}

impl Writer {
    /// Rolls back a transaction left open. "No transaction is active" is the answer when
    /// its `BEGIN` never ran or its `COMMIT` did: nothing to undo either way.
    pub(crate) async fn settle(&mut self) -> Result<(), StoreError> {
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

/// The writer turn of a file database: its writer connection, held until dropped. Dropped
/// with a transaction open (a [`crate::Tx`] dropped unfinished, or a `BEGIN` abandoned
/// mid-way), it rolls that back on a task of its own, so the database's write lock is not
/// held until the next write transaction comes.
#[derive(Debug)]
pub(crate) struct WriterTurn(pub(crate) tokio::sync::OwnedMutexGuard<Writer>);

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

/// A file database's read connections ([`crate::Db::read`]), opened when first needed.
#[derive(Debug)]
struct Readers {
    slots: Vec<Arc<tokio::sync::Mutex<Option<SqliteConnection>>>>,
    /// As many permits as slots.
    free: Arc<tokio::sync::Semaphore>,
    options: SqliteConnectOptions,
}

/// Read connections of a file database.
const READERS: usize = 4;

/// A SQLite read connection.
#[derive(Debug)]
pub(crate) enum SqliteReader {
    /// One of a file database's read connections, and its permit (dropped after it).
    Own {
        conn: tokio::sync::OwnedMappedMutexGuard<Option<SqliteConnection>, SqliteConnection>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    /// A pool connection.
    Pooled(sqlx::pool::PoolConnection<sqlx::Sqlite>),
}

impl SqliteReader {
    pub(crate) fn target(&mut self) -> Target<'_> {
        match self {
            Self::Own { conn, .. } => Target::Sqlite(conn),
            Self::Pooled(conn) => Target::Sqlite(conn),
        }
    }
}

fn path_of(url: &str) -> Result<&Path, StoreError> {
    url.strip_prefix("sqlite://")
        .map(Path::new)
        .ok_or_else(|| StoreError::Url(url.to_owned()))
}

impl SqliteDb {
    /// Opens (creating if missing) `sqlite://<path>` or `sqlite::memory:`.
    pub(crate) async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url == "sqlite::memory:";
        let options = if memory {
            SqliteConnectOptions::from_str(url).map_err(|_| StoreError::Url(url.to_owned()))?
        } else {
            let path = path_of(url)?;
            private_parent(path);
            create_private(path);
            SqliteConnectOptions::new().filename(path)
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
        if memory {
            // Another connection to `:memory:` would be another database.
            return Ok(Self {
                pool,
                path: None,
                writer: None,
                readers: None,
            });
        }
        let path = path_of(url)?.to_owned();
        private_file(&path);
        let conn = sqlx::ConnectOptions::connect(&options).await?;
        let writer = Arc::new(tokio::sync::Mutex::new(Writer { conn, open: false }));
        let readers = Readers {
            slots: (0..READERS).map(|_| Arc::default()).collect(),
            free: Arc::new(tokio::sync::Semaphore::new(READERS)),
            options,
        };
        Ok(Self {
            pool,
            path: Some(path),
            writer: Some(writer),
            readers: Some(Arc::new(readers)),
        })
    }

    /// Opens an existing file without a writer connection (for inspection).
    pub(crate) async fn open_existing(url: &str) -> Result<Self, StoreError> {
        let path = path_of(url)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            path: Some(path.to_owned()),
            writer: None,
            readers: None,
        })
    }

    /// Whether the file is still there (in memory: always).
    pub(crate) fn file_exists(&self) -> bool {
        self.path.as_ref().is_none_or(|p| p.exists())
    }

    /// The writer turn of a file database; `None` without a writer connection.
    pub(crate) async fn take_writer(&self) -> Option<WriterTurn> {
        let w = self.writer.as_ref()?;
        Some(WriterTurn(w.clone().lock_owned().await))
    }

    /// A read connection.
    pub(crate) async fn read(&self) -> Result<SqliteReader, StoreError> {
        let Some(readers) = &self.readers else {
            return Ok(SqliteReader::Pooled(self.pool.acquire().await?));
        };
        // One permit per slot, and a slot's guard goes before its permit (see
        // `SqliteReader`): with a permit, one slot at least is free.
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
        Ok(SqliteReader::Own {
            conn,
            _permit: permit,
        })
    }
}

/// A database's directory is created private (0700) if missing: the file holds sealed
/// secrets and the audit trail.
fn private_parent(path: &Path) {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        let _ = b.create(dir);
    }
}

/// A database file that does not exist yet is created empty with mode 0600 before SQLite
/// opens it: SQLite gives its WAL and shared-memory files the database file's mode.
fn create_private(path: &Path) {
    if path.exists() {
        return;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let _ = o.open(path);
}

/// The database file and its WAL companions are readable by the owner only (0600).
fn private_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if let Ok(meta) = std::fs::metadata(&p)
                && meta.permissions().mode() & 0o077 != 0
            {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

/// Whether a SQLite database file can take writes: it exists, its permission bits allow
/// writing (checked on the bits, so that it holds for root too), and its file system has
/// [`crate::MIN_FREE_BYTES`] free.
pub(crate) fn writable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("database file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o222 == 0 {
        return Err(format!(
            "database file {} is read-only (writes land in its WAL until a checkpoint fails)",
            path.display()
        ));
    }
    let stat =
        rustix::fs::statvfs(path).map_err(|e| format!("file system of {}: {e}", path.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < crate::MIN_FREE_BYTES {
        return Err(format!(
            "the file system of {} has {} KiB free (less than {} MiB)",
            path.display(),
            free / 1024,
            crate::MIN_FREE_BYTES >> 20
        ));
    }
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(format!(
            "the file system of {} is mounted read-only",
            path.display()
        ));
    }
    Ok(())
}
