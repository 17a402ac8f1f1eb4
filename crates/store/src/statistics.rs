//! Planner statistics for young tables on PostgreSQL.
//!
//! A connection keeps the plan of each of its prepared statements until the tables they read
//! are analyzed again. A plan made while a table was small stays as the table grows: after
//! autovacuum's first analysis of cloud's invoices (at some 60 rows, a sequential scan is the
//! cheapest plan) the idempotency lookup by `(enterprise, order_id)` kept scanning — later
//! through another index on `enterprise` — every invoice of the enterprise for each order,
//! hundreds of pages and a millisecond and more after a few thousand invoices. Autovacuum
//! analyzes a table again once a tenth of it changed, but visits a database once a minute
//! (`autovacuum_naptime`), which leaves a new deployment's first minutes — at a few hundred
//! invoices a second, tens of thousands of rows — on the plans of small tables.
//! [`Db::refresh_statistics`] closes that gap: it analyzes the tables that doubled since they
//! were last analyzed (or never were), which is rare once a table is large, and leaves the
//! rest — queues whose rows come and go, tables that grow slowly — to autovacuum.

use crate::{Db, Engine, StoreError, query_scalar, query_text};

/// Rows a table must have changed before [`Db::refresh_statistics`] analyzes it.
pub const MIN_CHANGED_ROWS: i64 = 100;

impl Db {
    /// Analyzes the tables of this database (PostgreSQL) that have twice the rows they had
    /// when last analyzed, by anyone (or were never analyzed), and changed by at least
    /// [`MIN_CHANGED_ROWS`] rows since: young tables, whose statistics autovacuum is slowest
    /// to give. Tables another session is analyzing or vacuuming are skipped, never waited
    /// for. Returns the tables analyzed; SQLite: none (no plans are kept across statements
    /// there for statistics to go stale under).
    ///
    /// # Errors
    /// The catalog cannot be read, or the statement fails (the role's user must own the
    /// tables, as the one that migrates them does).
    pub async fn refresh_statistics(&self) -> Result<Vec<String>, StoreError> {
        if self.engine() != Engine::Postgres {
            return Ok(Vec::new());
        }
        let tables: Vec<String> = query_scalar(crate::Sql::postgres_only(
            "SELECT quote_ident(s.relname)
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
             WHERE s.schemaname = current_schema()
               AND s.n_mod_since_analyze >= $1
               AND s.n_live_tup >= 2 * GREATEST(c.reltuples, $1 / 2)
             ORDER BY s.relname",
        ))
        .bind(MIN_CHANGED_ROWS)
        .fetch_all(self.pool())
        .await?;
        if !tables.is_empty() {
            query_text(format!("ANALYZE (SKIP_LOCKED) {}", tables.join(", ")))
                .execute(self.pool())
                .await?;
        }
        Ok(tables)
    }
}
