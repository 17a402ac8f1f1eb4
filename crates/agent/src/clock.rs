//! Clock discipline and what keeps the agent from its work.
//!
//! The agent dates the invoices it issues with its own clock, so it checks that clock
//! against its peers' (each probe or call reads the peer's `date` header, to the second):
//! tax's first, else platform's, else cloud's. While the difference is over
//! [`Options::max_clock_skew`](crate::Options) (60 s by default) it neither pulls nor issues
//! — the orders wait at cloud — and says so: a WARN in its log, `clock` in `/readyz` (not
//! ready), `fapiao_agent_blocked{reason="clock"}` and `fapiao agent status`. Once the clock
//! agrees again (checked every 2 s while it is off) it goes on at once. Work already issued
//! (uploads, reports, acknowledgements) goes on meanwhile.
//!
//! What blocks the agent is kept in `notes` (written when it changes), so `fapiao agent
//! status` shows it from another process.

use super::*;

/// How often the peers' clocks are read while ours is off.
const CLOCK_RECHECK: Duration = Duration::from_secs(2);

/// A note the agent keeps on what blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// `clock` or `pull`.
    pub what: String,
    /// Why.
    pub problem: String,
    /// Since when (Unix seconds).
    pub since: i64,
}

impl Agent {
    /// Why the agent must not issue now (its clock is off), or `None`. Reads the peers'
    /// clocks first when due (every 2 s while off, else on the health's schedule).
    pub(crate) async fn clock_problem(&self) -> Option<String> {
        let t = now();
        let off = self.blocked_by("clock");
        let health = &self.inner.health;
        let peers = [&self.inner.tax, &self.inner.platform, &self.inner.cloud];
        for c in peers {
            let every = if off {
                CLOCK_RECHECK
            } else {
                fapiao_service::health::PROBE_UP_EVERY
            };
            if health.probe_due_within(c.peer_identity(), every) {
                health.probe(c, t).await;
            }
        }
        let known = health.peers();
        let reference = peers.iter().find_map(|c| {
            known.iter().find(|p| {
                p.peer == c.peer_identity() && p.answering == Some(true) && p.skew_seconds.is_some()
            })
        })?;
        let skew = reference.skew_seconds.unwrap_or(0);
        let bound = i64::try_from(self.inner.options.max_clock_skew.as_secs()).unwrap_or(60);
        (skew.abs() > bound).then(|| {
            format!(
                "our clock is {} s {} {}'s (bound {bound} s): not pulling or issuing until it \
                 agrees",
                skew.abs(),
                if skew < 0 { "ahead of" } else { "behind" },
                reference.peer
            )
        })
    }

    /// Whether `what` blocks the agent now (as last noted).
    pub(crate) fn blocked_by(&self, what: &str) -> bool {
        self.inner
            .notes
            .lock()
            .ok()
            .and_then(|n| n.get(what).cloned())
            .flatten()
            .is_some()
    }

    /// The problem `what` has now (`None`: it cleared), written when it changed: a WARN when
    /// a problem starts or changes, an INFO when it clears.
    pub(crate) async fn note(&self, what: &'static str, problem: Option<String>) {
        let changed = self.inner.notes.lock().is_ok_and(|mut n| {
            let before = n.insert(what, problem.clone());
            before.flatten() != problem
        });
        if !changed {
            return;
        }
        match &problem {
            Some(p) => tracing::warn!(what, problem = %p, "agent: blocked"),
            None => tracing::info!(what, "agent: no longer blocked"),
        }
        let write = async {
            let mut tx = self.inner.db.begin_write().await?;
            query(
                "INSERT INTO notes (name, problem, since) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET problem = excluded.problem,
                     since = excluded.since",
            )
            .bind(what)
            .bind(&problem)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        if let Err(e) = write.await {
            tracing::warn!(error = %e, "agent: recording what blocks it failed");
        }
    }
}

/// What blocks the agent whose database is `db`, as it last noted.
pub(crate) async fn blocked(db: &Db) -> Result<Vec<Blocked>, AgentError> {
    let rows =
        query("SELECT name, problem, since FROM notes WHERE problem IS NOT NULL ORDER BY name")
            .fetch_all(db.pool())
            .await?;
    rows.iter()
        .map(|r| {
            Ok(Blocked {
                what: r.try_get("name")?,
                problem: r.try_get("problem")?,
                since: r.try_get("since")?,
            })
        })
        .collect()
}
