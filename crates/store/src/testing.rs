//! Databases for tests, on either engine: a SQLite file in a temporary directory, or a fresh
//! database on the PostgreSQL server named by `FAPIAO_TEST_POSTGRES`
//! (`postgres://user@host:port`, no database). Without that variable the PostgreSQL half of
//! a test is skipped with a line on stderr, unless `FAPIAO_TEST_REQUIRE_POSTGRES` is set (the
//! test script sets both), in which case it fails.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::Engine;

/// The server for PostgreSQL tests, if any.
///
/// # Panics
/// When `FAPIAO_TEST_REQUIRE_POSTGRES` is set without `FAPIAO_TEST_POSTGRES`.
#[must_use]
pub fn postgres_server() -> Option<String> {
    match std::env::var("FAPIAO_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            assert!(
                std::env::var_os("FAPIAO_TEST_REQUIRE_POSTGRES").is_none(),
                "FAPIAO_TEST_REQUIRE_POSTGRES is set but FAPIAO_TEST_POSTGRES is not"
            );
            None
        }
    }
}

/// A database for one test.
#[derive(Debug)]
pub struct TestDb {
    /// The engine.
    pub engine: Engine,
    /// Its URL (open it as often as the test likes).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A SQLite file in a new temporary directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    #[must_use]
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            engine: Engine::Sqlite,
            url: format!("sqlite://{}", dir.path().join("db.sqlite").display()),
            _dir: Some(dir),
        }
    }

    /// A new, empty PostgreSQL database named after `test`; `None` (the test is skipped)
    /// without a server.
    ///
    /// # Panics
    /// When the server cannot create it.
    pub async fn postgres(test: &str) -> Option<Self> {
        let Some(server) = postgres_server() else {
            eprintln!("skipped on PostgreSQL (FAPIAO_TEST_POSTGRES is not set): {test}");
            return None;
        };
        let url = format!("{server}/{}", database_name(test));
        crate::create_database(&url)
            .await
            .unwrap_or_else(|e| panic!("creating a test database on {server}: {e}"));
        Some(Self {
            engine: Engine::Postgres,
            url,
            _dir: None,
        })
    }

    /// A database on `engine` (`None`: PostgreSQL is not available, the test is skipped).
    pub async fn on(engine: Engine, test: &str) -> Option<Self> {
        match engine {
            Engine::Sqlite => Some(Self::sqlite()),
            Engine::Postgres => Self::postgres(test).await,
        }
    }
}

/// A database name unique to this process and call: `t_<test>_<pid>_<n>`, at most 63 bytes.
#[must_use]
pub fn database_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(36)
        .collect();
    format!("t_{clean}_{}_{n}", std::process::id())
}

/// Runs an `async fn(Engine)` test once per engine: `engines!(name)` makes `name::sqlite`
/// and `name::postgres`.
#[macro_export]
macro_rules! engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Engine::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::testing::postgres_server().is_some() {
                    super::$name($crate::Engine::Postgres).await;
                } else {
                    eprintln!("skipped on PostgreSQL (FAPIAO_TEST_POSTGRES is not set)");
                }
            }
        }
    )*};
}
