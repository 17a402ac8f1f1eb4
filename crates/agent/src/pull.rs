//! Pull: orders leased from cloud, stored (sealed) before they are issued.

use super::*;

impl Agent {
    /// Leases orders from cloud and stores them; how many are new here.
    pub(crate) async fn pull(&self) -> Result<usize, AgentError> {
        let waiting: i64 = query_scalar("SELECT COUNT(*) FROM pulled")
            .fetch_one(self.inner.db.pool())
            .await?;
        if waiting >= i64::from(self.inner.options.pull_max) {
            return Ok(0);
        }
        let leased: LeasedOrders = self
            .call(
                &self.inner.cloud,
                message_type::ORDERS_PULL,
                &PullOrders {
                    max: self.inner.options.pull_max,
                    lease_seconds: self.inner.options.lease_seconds,
                    resume: !self.inner.resumed.load(Ordering::SeqCst),
                },
                message_type::ORDERS_LEASED,
            )
            .instrument(tracing::debug_span!("cloud.pull"))
            .await?;
        self.inner.resumed.store(true, Ordering::SeqCst);
        if leased.orders.is_empty() {
            return Ok(0);
        }
        let mut tx = self.inner.db.begin_write().await?;
        let mut new = 0;
        for order in &leased.orders {
            let json = Zeroizing::new(
                serde_json::to_string(order).map_err(|e| AgentError::Peer(e.to_string()))?,
            );
            let sealed = self
                .inner
                .vault
                .seal_str(&mut tx, PULLED, order.order_id(), &json)
                .await?;
            new += query(
                "INSERT INTO pulled (order_id, body, pulled_at) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order.order_id())
            .bind(sealed)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(usize::try_from(new).unwrap_or(0))
    }
}
