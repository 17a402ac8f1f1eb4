//! Schema migrations: each role lists its migrations once, a file per engine and version
//! (`migrations/{sqlite,postgres}/NNNN_name.sql`, [`crate::migrations!`]); a database records
//! what it has in `schema_migrations`.

use crate::engine::{Sql, query, query_scalar};
use crate::tx::{Prefetch, Tx};
use crate::{Db, Engine, StoreError};

/// One schema migration: a version and its SQL for each engine (several statements allowed,
/// no parameters).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Increasing version.
    pub version: i64,
    /// What it does, for the migrations table.
    pub description: &'static str,
    /// The SQL.
    pub sql: Sql,
}

/// A role's migrations from its `migrations/sqlite/` and `migrations/postgres/` files:
/// `migrations![1 "0001_cloud" "tenants, invoices", 2 "0002_webhooks" "webhooks"]`. The two
/// files of a version make the same schema, each in its engine's types.
#[macro_export]
macro_rules! migrations {
    ($($version:literal $file:literal $description:literal),* $(,)?) => {
        &[$($crate::Migration {
            version: $version,
            description: $description,
            sql: $crate::Sql::dialects(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $file, ".sql")),
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $file, ".sql")),
            ),
        }),*]
    };
}

/// The tables every role has: the replay guard, the audit trail and its signed heads, the
/// data keys of encryption at rest.
pub(crate) const BASE: &[Migration] = &[
    Migration {
        version: 1,
        description: "replay guard",
        sql: Sql::dialects(
            "CREATE TABLE seen_messages (
            sender TEXT NOT NULL,
            message_id TEXT NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (sender, message_id)
        );
        CREATE INDEX seen_messages_expiry ON seen_messages (expires_at);",
            "CREATE TABLE seen_messages (
                sender TEXT NOT NULL,
                message_id TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (sender, message_id)
            );
            CREATE INDEX seen_messages_expiry ON seen_messages (expires_at);",
        ),
    },
    Migration {
        version: 2,
        description: "audit trail",
        sql: Sql::dialects(
            "CREATE TABLE audit_log (
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
            "CREATE TABLE audit_log (
                seq BIGINT PRIMARY KEY,
                at BIGINT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                subject TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            );
            CREATE TABLE audit_heads (
                seq BIGINT PRIMARY KEY,
                hash TEXT NOT NULL,
                signed_at BIGINT NOT NULL,
                signature BYTEA NOT NULL,
                certificate BYTEA NOT NULL
            );",
        ),
    },
    Migration {
        version: 3,
        description: "data keys for encryption at rest",
        sql: Sql::dialects(
            "CREATE TABLE data_keys (
                id INTEGER PRIMARY KEY,
                algorithm TEXT NOT NULL,
                wrapped BLOB NOT NULL,
                active INTEGER NOT NULL CHECK (active IN (0, 1)),
                created_at INTEGER NOT NULL
            );
            CREATE UNIQUE INDEX data_keys_active ON data_keys (active) WHERE active = 1;",
            "CREATE TABLE data_keys (
                id BIGINT PRIMARY KEY,
                algorithm TEXT NOT NULL,
                wrapped BYTEA NOT NULL,
                active BIGINT NOT NULL CHECK (active IN (0, 1)),
                created_at BIGINT NOT NULL
            );
            CREATE UNIQUE INDEX data_keys_active ON data_keys (active) WHERE active = 1;",
        ),
    },
    Migration {
        version: 4,
        description: "audit chain head (PostgreSQL: transactions append one after the other)",
        sql: Sql::dialects(
            // SQLite reads the head from the log under its write lock.
            "SELECT 1;",
            "CREATE TABLE audit_head (
                id BIGINT PRIMARY KEY CHECK (id = 1),
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL
            );
            INSERT INTO audit_head (id, seq, hash)
            SELECT 1, COALESCE(MAX(seq), 0),
                COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1),
                    '0000000000000000000000000000000000000000000000000000000000000000')
            FROM audit_log;",
        ),
    },
    Migration {
        version: 5,
        description: "signed audit heads chained to each other",
        // Heads signed before have none and sign only their record.
        sql: Sql::portable("ALTER TABLE audit_heads ADD COLUMN prev TEXT;"),
    },
    Migration {
        version: 6,
        description: "sealed columns re-sealed in the row-bound format",
        // `Vault::upgrade` re-seals a column once (with the master key, which migrations do
        // not have) and records it here.
        sql: Sql::portable(
            "CREATE TABLE sealed_columns (field TEXT PRIMARY KEY, format BIGINT NOT NULL);",
        ),
    },
    Migration {
        version: 7,
        description: "readiness write probe: a row per running process",
        // `Db::write_check` writes its process's row; readiness is whether that commits.
        sql: Sql::portable(
            "CREATE TABLE write_probe (instance TEXT PRIMARY KEY, at BIGINT NOT NULL);",
        ),
    },
];

const CREATE_MIGRATIONS: Sql = Sql::portable(
    "CREATE TABLE IF NOT EXISTS schema_migrations (
        role TEXT NOT NULL,
        version BIGINT NOT NULL,
        description TEXT NOT NULL,
        PRIMARY KEY (role, version)
    )",
);

const APPLIED: &str =
    "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations WHERE role = $1";

/// The version `role`'s schema is at in `db` (0 before the first migration).
///
/// # Errors
/// [`StoreError::Sqlx`].
pub async fn schema_version(db: &Db, role: &str) -> Result<i64, StoreError> {
    let exists: bool = match db.engine() {
        Engine::Sqlite => query_scalar::<i64>(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        )
        .fetch_one(db.pool())
        .await?
            > 0,
        Engine::Postgres => {
            query_scalar::<Option<String>>("SELECT to_regclass('schema_migrations')::text")
                .fetch_one(db.pool())
                .await?
                .is_some()
        }
    };
    if !exists {
        return Ok(0);
    }
    query_scalar(APPLIED).bind(role).fetch_one(db.pool()).await
}

/// Applies what `db` lacks of `migrations` (see [`Db::migrate`]); returns how many.
pub(crate) async fn run(db: &Db, role: &str, migrations: &[Migration]) -> Result<u64, StoreError> {
    let turn = db.take_turn().await;
    let mut tx: Tx = db.begin_in(turn, Prefetch::Nothing).await?;
    // Replicas starting together: one migrates, the others wait and find it done.
    tx.lock("fapiao.migrations").await?;
    query(CREATE_MIGRATIONS).execute(&mut tx).await?;
    let applied: i64 = query_scalar(APPLIED).bind(role).fetch_one(&mut tx).await?;
    let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if applied > known {
        return Err(StoreError::TooNew {
            role: role.to_owned(),
            found: applied,
            known,
        });
    }
    let engine = tx.engine();
    let mut done = 0;
    for m in migrations.iter().filter(|m| m.version > applied) {
        let fail = |e: StoreError| match e {
            StoreError::Sqlx(source) => StoreError::Migration {
                role: role.to_owned(),
                version: m.version,
                source,
            },
            e => e,
        };
        tx.raw(m.sql.text(engine)).await.map_err(fail)?;
        query("INSERT INTO schema_migrations (role, version, description) VALUES ($1, $2, $3)")
            .bind(role)
            .bind(m.version)
            .bind(m.description)
            .execute(&mut tx)
            .await
            .map_err(fail)?;
        done += 1;
    }
    tx.commit().await?;
    Ok(done)
}
