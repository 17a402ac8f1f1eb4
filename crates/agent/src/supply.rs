//! Supply: the number blocks and the month's quota the agent asks platform for before it
//! runs out.

use super::*;

pub(crate) fn month_of(at: PrimitiveDateTime) -> String {
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

pub(crate) fn amount(text: &str) -> Result<Amount, AgentError> {
    Amount::parse(text).map_err(|e| AgentError::Setup(format!("stored amount `{text}`: {e}")))
}

/// `(granted, used, requests)` of a month, read on `conn` (a transaction's, to count on it).
pub(crate) async fn quota_in(
    conn: &mut dyn Executor,
    month: &str,
) -> Result<(Amount, Amount, i64), AgentError> {
    let row = query("SELECT granted, used, requests FROM quota WHERE month = $1")
        .bind(month)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(r) => Ok((
            amount(&r.try_get::<String, _>("granted")?)?,
            amount(&r.try_get::<String, _>("used")?)?,
            r.try_get("requests")?,
        )),
        None => Ok((Amount::default(), Amount::default(), 0)),
    }
}

/// Sets the quota used in `month` (a row for the month if there is none yet).
pub(crate) async fn set_quota_used(
    tx: &mut Tx,
    month: &str,
    used: Amount,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO quota (month, granted, used, requests) VALUES ($1, '0.00', $2, 0)
         ON CONFLICT (month) DO UPDATE SET used = $2",
    )
    .bind(month)
    .bind(used.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Agent {
    pub(crate) fn year_province(&self, at: PrimitiveDateTime) -> (u8, u8) {
        let province = self
            .inner
            .enterprise
            .get(2..4)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        (u8::try_from(at.year() % 100).unwrap_or(0), province)
    }

    /// Numbers left in blocks for the current year and province.
    pub(crate) async fn numbers_left(&self) -> Result<u64, AgentError> {
        let (year, province) = self.year_province(china_now());
        let left: Option<i64> = query_scalar(
            "SELECT CAST(SUM(last - next + 1) AS BIGINT) FROM blocks
             WHERE year = $1 AND province = $2 AND next <= last",
        )
        .bind(i64::from(year))
        .bind(i64::from(province))
        .fetch_one(self.inner.db.pool())
        .await?;
        Ok(u64::try_from(left.unwrap_or(0)).unwrap_or(0))
    }

    /// `(granted, used)` of a month.
    pub(crate) async fn quota(&self, month: &str) -> Result<(Amount, Amount, i64), AgentError> {
        quota_in(&mut *self.inner.db.read().await?, month).await
    }

    /// Asks for what `count` invoices of `total` together need beyond the numbers and the
    /// month's quota in hand.
    pub(crate) async fn supply_for(
        &self,
        count: u64,
        total: Amount,
        month: &str,
    ) -> Result<(), AgentError> {
        let (granted, used, _) = self.quota(month).await?;
        if used + total > granted {
            let short = used + total - granted;
            let step = self.inner.options.quota_step;
            self.request_quota(month, if short > step { short } else { step })
                .await?;
        }
        if self.numbers_left().await? < count {
            self.request_block().await?;
        }
        Ok(())
    }

    /// Keeps numbers and quota in hand before they run out.
    pub(crate) async fn supply(&self) -> Result<(), AgentError> {
        // Another block when a quarter of the last one (at most `numbers_low`) is left.
        let last_size: Option<i64> =
            query_scalar("SELECT last - first + 1 FROM blocks ORDER BY id DESC LIMIT 1")
                .fetch_optional(self.inner.db.pool())
                .await?;
        let low = last_size.map_or(1, |s| {
            (u64::try_from(s).unwrap_or(0) / 4).clamp(1, self.inner.options.numbers_low)
        });
        if self.numbers_left().await? < low {
            self.request_block().await?;
        }
        let month = month_of(china_now());
        let (granted, used, _) = self.quota(&month).await?;
        let step = self.inner.options.quota_step;
        let quarter = Amount::from_rounded(step.value() / rust_decimal::Decimal::from(4));
        if granted - used < quarter {
            self.request_quota(&month, step).await?;
        }
        Ok(())
    }

    pub(crate) async fn request_block(&self) -> Result<(), AgentError> {
        let count: i64 = query_scalar("SELECT COUNT(*) FROM blocks")
            .fetch_one(self.inner.db.pool())
            .await?;
        let (year, province) = self.year_province(china_now());
        let req = BlockRequest {
            key: format!("block:{}", count + 1),
            year,
            province,
        };
        let g: RangeGrant = self
            .call(
                &self.inner.platform,
                message_type::BLOCK_REQUEST,
                &req,
                message_type::BLOCK_GRANT,
            )
            .await?;
        if g.year != year || g.province != province || g.first > g.last {
            return Err(AgentError::Peer(format!(
                "platform granted another block than asked: {g:?}"
            )));
        }
        let mut tx = self.inner.db.begin_write().await?;
        query(
            "INSERT INTO blocks (key, year, province, channel, first, last, next)
             VALUES ($1, $2, $3, $4, $5, $6, $5) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&req.key)
        .bind(i64::from(g.year))
        .bind(i64::from(g.province))
        .bind(i64::from(g.channel))
        .bind(i64::try_from(g.first).unwrap_or(i64::MAX))
        .bind(i64::try_from(g.last).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            self.inner.platform.peer_identity(),
            "block.granted",
            &req.key,
            &serde_json::json!({"year": g.year, "province": g.province, "channel": g.channel, "first": g.first, "last": g.last}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            first = g.first,
            last = g.last,
            "agent: number block granted"
        );
        Ok(())
    }

    /// Asks for `amount` more of `month`'s quota; what was granted.
    pub(crate) async fn request_quota(
        &self,
        month: &str,
        asked: Amount,
    ) -> Result<Amount, AgentError> {
        let (_, _, requests) = self.quota(month).await?;
        let req = QuotaRequest {
            key: format!("quota:{month}:{}", requests + 1),
            month: month.to_owned(),
            amount: asked.to_string(),
        };
        let g: QuotaGrant = self
            .call(
                &self.inner.platform,
                message_type::QUOTA_REQUEST,
                &req,
                message_type::QUOTA_GRANT,
            )
            .await?;
        let granted = Amount::parse(&g.amount)
            .map_err(|e| AgentError::Peer(format!("quota grant amount: {e}")))?;
        if g.month != month || granted.is_negative() || granted > asked {
            return Err(AgentError::Peer(format!(
                "platform granted another quota than asked: {g:?}"
            )));
        }
        let mut tx = self.inner.db.begin_write().await?;
        let row = query("SELECT granted, requests FROM quota WHERE month = $1")
            .bind(month)
            .fetch_optional(&mut *tx)
            .await?;
        let (before, n) = match row {
            Some(r) => (
                amount(&r.try_get::<String, _>("granted")?)?,
                r.try_get::<i64, _>("requests")?,
            ),
            None => (Amount::default(), 0),
        };
        if n == requests {
            query(
                "INSERT INTO quota (month, granted, used, requests) VALUES ($1, $2, '0.00', 1)
                 ON CONFLICT (month) DO UPDATE SET granted = $2, requests = quota.requests + 1",
            )
            .bind(month)
            .bind((before + granted).to_string())
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                self.inner.platform.peer_identity(),
                "quota.granted",
                month,
                &serde_json::json!({"key": req.key, "granted": granted.to_string()}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(granted)
    }
}
