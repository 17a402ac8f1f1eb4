//! Acknowledge: cloud learns which leased orders were issued or refused.

use super::*;

impl Agent {
    /// Acknowledges handled orders to cloud, up to 100 at once.
    pub(crate) async fn ack_due(&self) -> Result<usize, AgentError> {
        let rows = query(
            "SELECT q.id, q.attempts, q.next_attempt_at, o.order_id, o.outcome, o.number, o.refusal
             FROM queue q JOIN orders o ON o.order_id = q.subject
             WHERE q.state = 'pending' AND q.kind = 'ack' ORDER BY q.id LIMIT 100",
        )
        .fetch_all(self.inner.db.pool())
        .await?;
        let t = now().unix_timestamp();
        let mut entries = Vec::new();
        let mut acks = Vec::new();
        for r in &rows {
            if r.try_get::<i64, _>("next_attempt_at")? > t {
                continue;
            }
            let outcome: String = r.try_get("outcome")?;
            let refusal: Option<String> = r.try_get("refusal")?;
            entries.push(Entry {
                id: r.try_get("id")?,
                kind: "ack".to_owned(),
                subject: r.try_get("order_id")?,
                attempts: r.try_get("attempts")?,
            });
            acks.push(OrderAck {
                order_id: r.try_get("order_id")?,
                outcome: if outcome == "issued" {
                    OrderOutcome::Issued {
                        number: r
                            .try_get::<Option<String>, _>("number")?
                            .unwrap_or_default(),
                    }
                } else {
                    OrderOutcome::Refused(
                        refusal
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_else(|| Refusal::new(Code::Internal, "refused")),
                    )
                },
            });
        }
        if acks.is_empty() {
            return Ok(0);
        }
        let answer = self
            .inner
            .cloud
            .call(message_type::ORDERS_ACK, &OrderAcks { acks })
            .instrument(tracing::debug_span!("cloud.ack"))
            .await;
        let waiting = self.observe(&self.inner.cloud, &answer);
        match answer {
            Ok(a) if a.message_type == message_type::ACK => {
                let mut tx = self.inner.db.begin_write().await?;
                for e in &entries {
                    finish(&mut tx, e.id).await?;
                }
                tx.commit().await?;
                Ok(entries.len())
            }
            other => {
                let why = match other {
                    Ok(a) => String::from_utf8_lossy(&a.payload).into_owned(),
                    Err(e) => e.to_string(),
                };
                let mut tx = self.inner.db.begin_write().await?;
                for e in &entries {
                    self.retry_in(&mut tx, e, &why, waiting.as_deref()).await?;
                }
                tx.commit().await?;
                Ok(0)
            }
        }
    }
}
