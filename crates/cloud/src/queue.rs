//! Orders of enterprise-hosted tenants (the async flow): queued here until the enterprise's
//! agent leases them, issues them on the enterprise's premises and acknowledges them.
//!
//! - `POST /v1/invoices` and `POST /v1/invoices/{number}/red` for such a tenant store the order
//!   (sealed) and answer `202` with the order's status; the same order again answers the same,
//!   another body under the order id is `order_conflict`.
//! - `orders.pull` (agent → cloud, envelope over mutual TLS; the agent's certificate carries
//!   the tenant's taxpayer id) leases the oldest queued orders, and those whose lease ran out,
//!   to the agent for `lease_seconds`; with `resume` (the agent's first pull after a start)
//!   also those still leased to that agent.
//! - `orders.ack` records what the agent did: `issued` (stored on the premises; the invoice
//!   itself arrives through platform) or `refused` with the reason. An acknowledgement for an
//!   order already issued or acknowledged changes nothing.
//! - `GET /v1/orders/{order_id}` shows an order's status to the ERP: `queued`, `leased`,
//!   `handled`, `issued` (with the number) or `refused` (with the code and message); for a
//!   platform-hosted tenant `issued` once the invoice exists.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    Ack, LeasedOrders, OrderAcks, OrderOutcome, PullOrders, QueuedOrder, Refusal, message_type,
};
use fapiao_service::error::request_id;
use fapiao_service::{ApiError, Incoming, Outgoing};
use fapiao_store::{Arrival, ArrivalState, StoreError, Waiting, query, query_scalar};
use serde::{Deserialize, Serialize};

use crate::Cloud;
use crate::erp::{internal, not_begun, replayed};

/// An order waiting for its group's transaction to queue it ([`Cloud::enqueue_order`]).
pub(crate) struct Enqueuing {
    enterprise: String,
    order: QueuedOrder,
    nonce: Arrival,
    rid: String,
}

/// What queueing an order answers: whether it was queued now (`false`: queued before with
/// the same request), or its refusal.
pub(crate) type Queued = Result<bool, ApiError>;

/// An order's status as the ERP API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatus {
    /// The enterprise's order id.
    pub order_id: String,
    /// `queued`, `leased`, `handled`, `issued` or `refused`.
    pub status: String,
    /// The invoice's number, once known.
    pub number: Option<String>,
    /// Why the agent refused it.
    pub error: Option<Refusal>,
}

impl Cloud {
    /// Whether the tenant issues on its own premises (its orders wait for its agent).
    pub(crate) async fn enterprise_hosted(&self, enterprise: &str) -> Result<bool, StoreError> {
        let hosting: Option<String> =
            query_scalar("SELECT hosting FROM enterprises WHERE taxpayer_id = $1")
                .bind(enterprise)
                .fetch_optional(self.inner.db.pool())
                .await?;
        Ok(hosting.as_deref() == Some("enterprise"))
    }

    /// Queues an order for the enterprise's agent; `202` with its status. Orders that come
    /// while another transaction holds the writer turn are queued in one shared transaction
    /// (group commit, [`fapiao_store::Db::grouped`]), each exactly as alone and answered
    /// after that commit.
    pub(crate) async fn enqueue_order(
        &self,
        enterprise: &str,
        order: QueuedOrder,
        nonce: &Arrival,
        rid: &str,
    ) -> Result<(StatusCode, crate::erp::Json), ApiError> {
        let order_id = order.order_id().to_owned();
        let queued = Enqueuing {
            enterprise: enterprise.to_owned(),
            order,
            nonce: nonce.clone(),
            rid: rid.to_owned(),
        };
        let cloud = self.clone();
        let new = self
            .inner
            .db
            .grouped(
                &self.inner.enqueuing,
                queued,
                |q| Some(&q.nonce),
                move |tx, group| async move { cloud.enqueue_group(tx, group).await },
                |q, e| Err(not_begun(&q.rid, e)),
            )
            .await
            .unwrap_or_else(|| Err(internal(rid, &"the order's group ended unanswered")))?;
        let status = if new {
            // What was just written: nothing has leased it yet.
            OrderStatus {
                order_id,
                status: "queued".into(),
                number: None,
                error: None,
            }
        } else {
            self.order_status(enterprise, &order_id)
                .await
                .map_err(|e| internal(rid, &e))?
                .ok_or_else(|| internal(rid, &"queued order vanished"))?
        };
        Ok((StatusCode::ACCEPTED, crate::erp::to_json(&status, rid)?))
    }

    /// Queues a group of orders in `tx`, commits, and answers each: whether it was queued now
    /// (`false`: queued before with the same request), or its refusal. A replayed request's
    /// order (its nonce found on record as the group began) is not queued; a database failure
    /// fails the whole group.
    async fn enqueue_group(
        &self,
        mut tx: fapiao_store::Tx,
        group: Vec<Waiting<Enqueuing, Queued>>,
    ) {
        // The group's transaction remembered every nonce it could (`Db::grouped`).
        let fresh: Vec<bool> = group
            .iter()
            .map(|w| w.job.nonce.state() != ArrivalState::Replayed)
            .collect();
        // The outcome of each order that is not a replay, in order.
        let mut outcomes: Vec<Result<bool, ApiError>> = Vec::with_capacity(group.len());
        let mut failed = crate::lock_enterprises(
            &mut tx,
            group
                .iter()
                .zip(&fresh)
                .filter(|(_, fresh)| **fresh)
                .map(|(w, _)| w.job.enterprise.as_str()),
        )
        .await
        .err()
        .map(|e| e.to_string());
        for (w, fresh) in group.iter().zip(&fresh).filter(|_| failed.is_none()) {
            if !fresh {
                continue;
            }
            match self.enqueue_in(&mut tx, &w.job).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let failed = match failed {
            Some(e) => Some(e),
            None => tx.commit().await.err().map(|e| e.to_string()),
        };
        let mut outcomes = outcomes.into_iter();
        for (Waiting { job: q, answer }, fresh) in group.into_iter().zip(fresh) {
            let outcome = match (fresh, &failed) {
                (false, _) => Err(replayed(&q.rid)),
                (true, Some(e)) => Err(internal(&q.rid, e)),
                (true, None) => outcomes
                    .next()
                    .unwrap_or_else(|| Err(internal(&q.rid, &"order left unqueued"))),
            };
            if let Ok(true) = outcome {
                tracing::info!(request_id = %q.rid, order_id = %q.order.order_id(), "order queued for the enterprise's agent");
            }
            answer.send(outcome);
        }
    }

    /// One order of a group in its transaction: `Ok(true)` queued now, `Ok(false)` queued
    /// before with the same request, or `order_conflict`; the outer error is the database's.
    async fn enqueue_in(
        &self,
        tx: &mut fapiao_store::Tx,
        q: &Enqueuing,
    ) -> Result<Result<bool, ApiError>, String> {
        let (enterprise, order, rid) = (q.enterprise.as_str(), &q.order, q.rid.as_str());
        let order_id = order.order_id();
        let existing: Option<String> = query_scalar(
            "SELECT request_hash FROM queued_orders WHERE enterprise = $1 AND order_id = $2",
        )
        .bind(enterprise)
        .bind(order_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| e.to_string())?;
        match existing {
            Some(h) if h != order.request_hash() => {
                return Ok(Err(ApiError::new(
                    Code::OrderConflict,
                    format!("order_id {order_id} was already used with a different request"),
                    rid,
                )));
            }
            Some(_) => return Ok(Ok(false)),
            None => {}
        }
        let json =
            zeroize::Zeroizing::new(serde_json::to_string(order).map_err(|e| e.to_string())?);
        let body = self
            .inner
            .vault
            .seal_str(
                tx,
                crate::QUEUED,
                &format!("{enterprise}:{order_id}"),
                &json,
            )
            .await
            .map_err(|e| e.to_string())?;
        let t = now().unix_timestamp();
        query(
            "INSERT INTO queued_orders (enterprise, order_id, kind, request_hash, body, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6)",
        )
        .bind(enterprise)
        .bind(order_id)
        .bind(match order {
            QueuedOrder::Blue(_) => "blue",
            QueuedOrder::Red(_) => "red",
        })
        .bind(order.request_hash())
        .bind(body)
        .bind(t)
        .execute(&mut **tx)
        .await
        .map_err(|e| e.to_string())?;
        fapiao_store::audit::append(
            tx,
            now(),
            &format!("erp:{enterprise}"),
            "order.queued",
            order_id,
            &serde_json::json!({"request_id": rid}),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Ok(true))
    }

    /// An order's status, if the order is known.
    ///
    /// # Errors
    /// Database errors.
    pub async fn order_status(
        &self,
        enterprise: &str,
        order_id: &str,
    ) -> Result<Option<OrderStatus>, StoreError> {
        let issued: Option<String> =
            query_scalar("SELECT number FROM invoices WHERE enterprise = $1 AND order_id = $2")
                .bind(enterprise)
                .bind(order_id)
                .fetch_optional(self.inner.db.pool())
                .await?;
        if let Some(number) = issued {
            return Ok(Some(OrderStatus {
                order_id: order_id.to_owned(),
                status: "issued".into(),
                number: Some(number),
                error: None,
            }));
        }
        let row = query(
            "SELECT state, lease_until, number, refusal FROM queued_orders
             WHERE enterprise = $1 AND order_id = $2",
        )
        .bind(enterprise)
        .bind(order_id)
        .fetch_optional(self.inner.db.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let mut state: String = r.try_get("state")?;
        let lease_until: Option<i64> = r.try_get("lease_until")?;
        if state == "leased" && lease_until.is_some_and(|t| t <= now().unix_timestamp()) {
            state = "queued".into();
        }
        let refusal: Option<String> = r.try_get("refusal")?;
        Ok(Some(OrderStatus {
            order_id: order_id.to_owned(),
            status: state,
            number: r.try_get("number")?,
            error: refusal.and_then(|t| serde_json::from_str(&t).ok()),
        }))
    }

    /// Envelopes from an enterprise's agent.
    pub(crate) async fn agent_message(&self, incoming: &Incoming) -> Outgoing {
        let agent = incoming.sender.identity();
        let Some(enterprise) = incoming.sender.taxpayer_id.clone() else {
            return Outgoing::refusal(&Refusal::new(
                Code::EnvelopeRejected,
                "an agent certificate carries its enterprise's taxpayer id",
            ));
        };
        match self.enterprise_hosted(&enterprise).await {
            Ok(true) => {}
            Ok(false) => {
                return Outgoing::refusal(&Refusal::new(
                    Code::EnterpriseUnknown,
                    format!("{enterprise} is no enterprise-hosted tenant of this cloud"),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a tenant failed");
                return Outgoing::refusal(&Refusal::new(Code::Internal, "internal error"));
            }
        }
        let result = match incoming.message.header.message_type.as_str() {
            message_type::ORDERS_PULL => match incoming.body::<PullOrders>() {
                Ok(p) => self
                    .lease(&agent, &enterprise, p)
                    .await
                    .map(|l| l.map(|l| Outgoing::json(message_type::ORDERS_LEASED, &l))),
                Err(o) => return o,
            },
            message_type::ORDERS_ACK => match incoming.body::<OrderAcks>() {
                Ok(a) => self
                    .acknowledge(&agent, &enterprise, &a)
                    .await
                    .map(|r| r.map(|()| Outgoing::json(message_type::ACK, &Ack {}))),
                Err(o) => return o,
            },
            other => Ok(Err(Refusal::new(
                Code::InvalidRequest,
                format!("cloud does not take `{other}` messages from agents"),
            ))),
        };
        match result {
            Ok(Ok(out)) => out,
            Ok(Err(r)) => Outgoing::refusal(&r),
            Err(e) => {
                tracing::error!(error = %e, %agent, "agent request failed");
                Outgoing::refusal(&Refusal::new(Code::Internal, "internal error"))
            }
        }
    }

    async fn lease(
        &self,
        agent: &str,
        enterprise: &str,
        p: PullOrders,
    ) -> Result<Result<LeasedOrders, Refusal>, StoreError> {
        if !(1..=100).contains(&p.max) || !(5..=3600).contains(&p.lease_seconds) {
            return Ok(Err(Refusal::new(
                Code::InvalidRequest,
                "max: 1..=100, lease_seconds: 5..=3600",
            )));
        }
        let t = now().unix_timestamp();
        let mut tx = self.inner.db.begin_write().await?;
        // Pulls of one agent reaching two replicas lease distinct orders.
        crate::lock_enterprises(&mut tx, [enterprise]).await?;
        let rows = query(
            "SELECT seq, order_id, body FROM queued_orders
             WHERE enterprise = $1 AND (state = 'queued' OR (state = 'leased'
                 AND (lease_until <= $2 OR ($4 AND leased_to = $5))))
             ORDER BY seq LIMIT $3",
        )
        .bind(enterprise)
        .bind(t)
        .bind(i64::from(p.max))
        .bind(p.resume)
        .bind(agent)
        .fetch_all(&mut *tx)
        .await?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let seq: i64 = r.try_get("seq")?;
            let body: String = r.try_get("body")?;
            let order_id: String = r.try_get("order_id")?;
            let json = self
                .inner
                .vault
                .unseal_str(crate::QUEUED, &format!("{enterprise}:{order_id}"), &body)
                .await?;
            let order: QueuedOrder =
                serde_json::from_str(&json).map_err(|e| StoreError::Data(e.to_string()))?;
            query(
                "UPDATE queued_orders SET state = 'leased', leased_to = $2, lease_until = $3,
                     leases = leases + 1, updated_at = $4 WHERE seq = $1",
            )
            .bind(seq)
            .bind(agent)
            .bind(t + i64::from(p.lease_seconds))
            .bind(t)
            .execute(&mut *tx)
            .await?;
            orders.push(order);
        }
        tx.commit().await?;
        if !orders.is_empty() {
            tracing::info!(%agent, count = orders.len(), "orders leased");
        }
        Ok(Ok(LeasedOrders { orders }))
    }

    async fn acknowledge(
        &self,
        agent: &str,
        enterprise: &str,
        acks: &OrderAcks,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let t = now().unix_timestamp();
        let mut tx = self.inner.db.begin_write().await?;
        for a in &acks.acks {
            let (state, number, refusal) = match &a.outcome {
                OrderOutcome::Issued { number } => ("handled", Some(number.clone()), None),
                OrderOutcome::Refused(r) => (
                    "refused",
                    None,
                    Some(serde_json::to_string(r).unwrap_or_default()),
                ),
            };
            let n = query(
                "UPDATE queued_orders SET state = $3, number = COALESCE($4, number), refusal = $5,
                     leased_to = $6, updated_at = $7
                 WHERE enterprise = $1 AND order_id = $2 AND state IN ('queued', 'leased')",
            )
            .bind(enterprise)
            .bind(&a.order_id)
            .bind(state)
            .bind(&number)
            .bind(&refusal)
            .bind(agent)
            .bind(t)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                if let OrderOutcome::Refused(r) = &a.outcome {
                    crate::webhook::events::record(
                        &mut tx,
                        enterprise,
                        crate::webhook::events::ORDER_REFUSED,
                        &serde_json::json!({"order_id": a.order_id, "code": r.code, "message": r.message}),
                    )
                    .await?;
                }
                fapiao_store::audit::append(
                    &mut tx,
                    now(),
                    agent,
                    if refusal.is_some() {
                        "order.refused"
                    } else {
                        "order.handled"
                    },
                    &a.order_id,
                    &serde_json::json!({"number": number}),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}

/// `GET /v1/orders/{order_id}`.
pub(crate) async fn order_status(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        cloud
            .order_status(&enterprise, &order_id)
            .await
            .map_err(|e| internal(&rid, &e))?
            .ok_or_else(|| ApiError::new(Code::NotFound, format!("no order {order_id}"), &rid))
    }
    .await;
    match result {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => e.into_response(),
    }
}
