//! Status: queue depths, the oldest pending work, numbers and quota left — for `fapiao agent
//! status`, `/readyz` and `/metrics`.

use super::*;
use crate::Blocked;

/// What `fapiao agent status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Orders pulled, not yet issued.
    pub to_issue: i64,
    /// Invoices not yet answered by tax.
    pub to_upload: i64,
    /// Invoices and receipts not yet reported to platform.
    pub to_report: i64,
    /// Orders not yet acknowledged to cloud.
    pub to_ack: i64,
    /// Seconds since the oldest pending work was queued (0 when none).
    pub oldest_pending_seconds: i64,
    /// Reports platform refused (need an operator).
    pub failed_reports: i64,
    /// Invoices issued here.
    pub issued: i64,
    /// Orders refused here.
    pub refused: i64,
    /// Numbers left in the blocks in hand.
    pub numbers_left: i64,
    /// The current month (`YYYY-MM`).
    pub month: String,
    /// Quota granted for the month.
    pub quota_granted: String,
    /// Quota used this month (价税合计 of blues minus reds).
    pub quota_used: String,
    /// What keeps the agent from its work (its clock off, cloud refusing pulls), as it last
    /// noted.
    #[serde(default)]
    pub blocked: Vec<Blocked>,
}

/// The status of the agent whose database is `db` (also from another process: `fapiao agent
/// status` opens the file read-side while the agent runs).
///
/// # Errors
/// [`AgentError`].
pub async fn status(db: &Db) -> Result<Status, AgentError> {
    let pool = db.pool();
    let count = |sql: &'static str| async move {
        query_scalar::<i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(AgentError::from)
    };
    let month = month_of(china_now());
    let quota = query("SELECT granted, used FROM quota WHERE month = $1")
        .bind(&month)
        .fetch_optional(pool)
        .await?;
    let (granted, used) = match quota {
        Some(r) => (r.try_get("granted")?, r.try_get("used")?),
        None => ("0.00".to_owned(), "0.00".to_owned()),
    };
    let oldest: Option<i64> = query_scalar(
        "SELECT MIN(t) FROM (SELECT MIN(created_at) AS t FROM queue WHERE state = 'pending'
                             UNION ALL SELECT MIN(pulled_at) FROM pulled) AS o",
    )
    .fetch_one(pool)
    .await?;
    Ok(Status {
        to_issue: count("SELECT COUNT(*) FROM pulled").await?,
        to_upload: count("SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind = 'upload'")
            .await?,
        to_report: count(
            "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind IN ('report', 'status')",
        )
        .await?,
        to_ack: count("SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind = 'ack'")
            .await?,
        oldest_pending_seconds: oldest.map_or(0, |t| (now().unix_timestamp() - t).max(0)),
        failed_reports: count("SELECT COUNT(*) FROM queue WHERE state = 'failed'").await?,
        issued: count("SELECT COUNT(*) FROM orders WHERE outcome = 'issued'").await?,
        refused: count("SELECT COUNT(*) FROM orders WHERE outcome = 'refused'").await?,
        numbers_left: count(
            "SELECT CAST(COALESCE(SUM(last - next + 1), 0) AS BIGINT) FROM blocks WHERE next <= last",
        )
        .await?,
        month,
        quota_granted: granted,
        quota_used: used,
        blocked: clock::blocked(db).await?,
    })
}

impl fapiao_service::ops::Readiness for Agent {
    fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        let h = &self.inner.health;
        for c in [&self.inner.cloud, &self.inner.platform, &self.inner.tax] {
            h.probe_if_due(c, now()).await;
        }
        let mut checks = h.checks(&self.inner.db, &self.inner.material, now()).await;
        let clock = self
            .inner
            .notes
            .lock()
            .ok()
            .and_then(|n| n.get("clock").cloned())
            .flatten();
        checks.push(fapiao_service::ops::Check::new(
            "clock",
            clock.is_none(),
            clock.unwrap_or_else(|| "agrees with the peers'".to_owned()),
        ));
        checks
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        let Ok(s) = self.status().await else {
            return Vec::new();
        };
        let gauge = |queue: &'static str, value: i64| fapiao_service::metrics::Gauge {
            name: "fapiao_agent_queue_depth",
            help: "Agent work waiting, by queue.",
            labels: vec![("queue", queue.to_owned())],
            value: value as f64,
        };
        vec![
            gauge("issue", s.to_issue),
            gauge("upload", s.to_upload),
            gauge("report", s.to_report),
            gauge("ack", s.to_ack),
            fapiao_service::metrics::Gauge {
                name: "fapiao_agent_oldest_pending_seconds",
                help: "Age of the agent's oldest pending work.",
                labels: Vec::new(),
                value: s.oldest_pending_seconds as f64,
            },
            fapiao_service::metrics::Gauge {
                name: "fapiao_agent_numbers_left",
                help: "Invoice numbers left in the blocks in hand.",
                labels: Vec::new(),
                value: s.numbers_left as f64,
            },
        ]
        .into_iter()
        .chain(["clock", "pull"].map(|what| fapiao_service::metrics::Gauge {
            name: "fapiao_agent_blocked",
            help: "Whether the agent is kept from its work, by reason (its clock off: not issuing; cloud refusing or away: orders wait there).",
            labels: vec![("reason", what.to_owned())],
            value: if s.blocked.iter().any(|b| b.what == what) {
                1.0
            } else {
                0.0
            },
        }))
        .collect()
    }
}

impl Agent {
    /// Queue depths, ages, numbers and quota left.
    ///
    /// # Errors
    /// [`AgentError`].
    pub async fn status(&self) -> Result<Status, AgentError> {
        status(&self.inner.db).await
    }
}
