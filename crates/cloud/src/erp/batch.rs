//! `POST /v1/invoices/batch`: up to 100 orders in one request, each answered as if alone.

use super::*;

/// The body of `POST /v1/invoices/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    pub(crate) orders: Vec<serde_json::Value>,
}

pub(crate) async fn batch(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let outcome = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, nonce| issue_batch(&cloud, enterprise, nonce, &body, &rid).await,
        )
        .await;
    answer(outcome.map(|v| (StatusCode::OK, v)), rid)
}

/// One order's result in a batch answer: its HTTP status as if sent alone, and the invoice
/// (201 issued, 200 issued before), the queued order (202) or the error.
#[derive(Serialize)]
pub(crate) struct BatchItem {
    pub(crate) order_id: Option<String>,
    pub(crate) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) invoice: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) order: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ApiError>,
}

/// The answer to a batch: one result per order, in order.
#[derive(Serialize)]
pub(crate) struct BatchResults {
    pub(crate) results: Vec<Option<BatchItem>>,
}

pub(crate) fn batch_item(
    order_id: Option<&str>,
    outcome: Result<(StatusCode, Json), ApiError>,
) -> BatchItem {
    let mut item = BatchItem {
        order_id: order_id.map(str::to_owned),
        status: 0,
        invoice: None,
        order: None,
        error: None,
    };
    match outcome {
        Ok((status, v)) => {
            item.status = status.as_u16();
            if status == StatusCode::ACCEPTED {
                item.order = Some(v);
            } else {
                item.invoice = Some(v);
            }
        }
        Err(e) => {
            item.status = e.status();
            item.error = Some(e);
        }
    }
    item
}

/// Many blue orders in one signed request (at most [`IssueBatch::MAX`]). Every order is
/// treated as if it came alone — its own idempotency by `order_id`, validation, number,
/// device signature and upload to tax — but the batch travels to platform in one envelope and
/// is committed once on each side. The answer is `200` with one result per order, in order:
/// each order stored before, queued, or issued.
pub(crate) async fn issue_batch(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    body: &[u8],
    rid: &str,
) -> Result<Json, ApiError> {
    if let Some(path) = fapiao_protocol::strict::duplicate_key(body) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("{path}: appears twice in its object; give each key once"),
            rid,
        ));
    }
    let batch: BatchBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("body: not a batch ({{\"orders\": [...]}}): {e}"),
            rid,
        )
    })?;
    if let Some(k) = batch.orders.iter().position(|o| !o.is_object()) {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("orders[{k}]: an order is a JSON object"),
            rid,
        ));
    }
    if batch.orders.is_empty() || batch.orders.len() > IssueBatch::MAX {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "orders: a batch holds 1 to {} orders, not {}",
                IssueBatch::MAX,
                batch.orders.len()
            ),
            rid,
        ));
    }
    let order_ids: Vec<&str> = batch
        .orders
        .iter()
        .filter_map(|o| o.get("order_id").and_then(|o| o.as_str()))
        .collect();
    let (hosted, stored) = cloud
        .stored(enterprise, &order_ids)
        .await
        .map_err(|e| internal(rid, &e))?;
    let mut results: Vec<Option<BatchItem>> = (0..batch.orders.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, IssueOrder)> = Vec::new();
    for (i, order) in batch.orders.into_iter().enumerate() {
        let Some(order_id) = order
            .get("order_id")
            .and_then(|o| o.as_str())
            .map(str::to_owned)
        else {
            let mut e = ApiError::new(Code::InvalidOrder, "the order has 1 problem(s)", rid);
            e.findings.push(fapiao_protocol::wire::FindingWire {
                path: format!("orders[{i}].order_id"),
                code: "required".into(),
                message: "order_id is required: it identifies the order for retries".into(),
            });
            results[i] = Some(batch_item(None, Err(e)));
            continue;
        };
        let hash = order_hash(&order, rid)?;
        if let Some((h, v)) = stored.get(&order_id) {
            let outcome = if *h == hash {
                to_json(&v, rid).map(|v| (StatusCode::OK, v))
            } else {
                Err(ApiError::new(
                    Code::OrderConflict,
                    format!(
                        "order_id {order_id} was already used with a different request; invoice {} stands",
                        v.number
                    ),
                    rid,
                ))
            };
            results[i] = Some(batch_item(Some(&order_id), outcome));
            continue;
        }
        let req = IssueOrder {
            enterprise: enterprise.to_owned(),
            order_id: order_id.clone(),
            order,
            request_hash: hash,
        };
        if hosted {
            let outcome = cloud
                .enqueue_order(enterprise, QueuedOrder::Blue(req), nonce, rid)
                .await;
            results[i] = Some(batch_item(Some(&order_id), outcome));
            continue;
        }
        pending.push((i, req));
    }
    if !pending.is_empty() {
        let (slots, orders): (Vec<usize>, Vec<IssueOrder>) = pending.into_iter().unzip();
        let outcomes = cloud.forward_batch(enterprise, orders, nonce, rid).await?;
        let issued = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        for (slot, (order_id, outcome)) in slots.into_iter().zip(outcomes) {
            let outcome = outcome.and_then(|v| to_json(&v, rid).map(|v| (StatusCode::CREATED, v)));
            results[slot] = Some(batch_item(Some(&order_id), outcome));
        }
        tracing::info!(request_id = %rid, issued, "batch issued");
    }
    to_json(&BatchResults { results }, rid)
}

impl Cloud {
    /// Sends orders to platform in one envelope and stores every issued invoice in one
    /// transaction; per order its id and its stored view or error. A platform that does not
    /// answer fails the whole batch (retry it: every order is idempotent).
    pub(crate) async fn forward_batch(
        &self,
        enterprise: &str,
        orders: Vec<IssueOrder>,
        nonce: &Arrival,
        rid: &str,
    ) -> Result<Vec<(String, Result<InvoiceView, ApiError>)>, ApiError> {
        let batch = IssueBatch { orders };
        let answers = self
            .ask_platform::<_, BatchAnswer>(
                message_type::ORDER_BATCH,
                &batch,
                message_type::ORDER_BATCH_ANSWER,
                rid,
            )
            .await?
            .answers;
        if answers.len() != batch.orders.len() {
            return Err(unusable(
                rid,
                &format!("{} answers to {} orders", answers.len(), batch.orders.len()),
            ));
        }
        let mut out: Vec<(String, Result<InvoiceView, ApiError>)> = Vec::new();
        let mut issued: Vec<(usize, Issued)> = Vec::new();
        for (o, a) in batch.orders.into_iter().zip(answers) {
            match a {
                OrderAnswer::Refused(r) => {
                    out.push((o.order_id, Err(ApiError::from_refusal(r, rid))))
                }
                OrderAnswer::Issued {
                    order_id,
                    invoice,
                    tax_status,
                    form,
                } => {
                    if order_id != o.order_id {
                        return Err(unusable(
                            rid,
                            &format!("answer for order {order_id} in place of {}", o.order_id),
                        ));
                    }
                    issued.push((
                        out.len(),
                        Issued {
                            order_id: o.order_id.clone(),
                            request_hash: o.request_hash,
                            invoice,
                            tax_status,
                            form,
                        },
                    ));
                    // Filled in once stored, below.
                    out.push((
                        o.order_id,
                        Err(ApiError::new(Code::Internal, "internal error", rid)),
                    ));
                }
            }
        }
        let (slots, issued): (Vec<usize>, Vec<Issued>) = issued.into_iter().unzip();
        let views = self
            .store_invoices(enterprise, issued, Some(nonce), rid)
            .await
            .map_err(|e| self.unknown_outcome(e, "(a batch)", rid))?;
        for (slot, view) in slots.into_iter().zip(views) {
            out[slot].1 = Ok(view);
        }
        Ok(out)
    }
}
