//! Keeps the planner statistics of a role's young tables fresh on PostgreSQL
//! ([`fapiao_store::Db::refresh_statistics`], whose documentation says why), every
//! [`EVERY`]. Harmless beside replicas doing the same: a table one of them is analyzing is
//! skipped by the others.

use std::time::Duration;

use fapiao_store::Db;

/// How often the tables are looked at.
pub const EVERY: Duration = Duration::from_secs(5);

/// A running keeper.
#[derive(Debug)]
pub struct StatisticsKeeper {
    task: crate::task::Stoppable,
}

impl StatisticsKeeper {
    /// Starts keeping `db`'s statistics; nothing to do on SQLite (no task is started).
    #[must_use]
    pub fn spawn(db: Db) -> Option<Self> {
        if db.engine() != fapiao_store::Engine::Postgres {
            return None;
        }
        let task = crate::task::Stoppable::spawn(|mut stopped| async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    _ = stopped.changed() => break,
                }
                match db.refresh_statistics().await {
                    Ok(tables) => {
                        failing = false;
                        if !tables.is_empty() {
                            tracing::debug!(?tables, "planner statistics refreshed");
                        }
                    }
                    // Said once per spell of failures: the database may be down, which
                    // readiness reports already.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "planner statistics not refreshed");
                    }
                    Err(_) => {}
                }
            }
        });
        Some(Self { task })
    }

    /// Stops.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}
