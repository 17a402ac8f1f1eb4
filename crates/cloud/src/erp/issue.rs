//! `POST /v1/invoices`: one order, forwarded to platform (or queued for the enterprise's
//! agent) and its invoice stored.

use super::*;

pub(crate) fn body_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

pub(crate) async fn issue(
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
            async |enterprise, nonce| issue_order(&cloud, enterprise, nonce, &body, &rid).await,
        )
        .await;
    answer(outcome, rid)
}

/// An authenticated order: stored before, queued for the enterprise's agent, or issued by
/// platform and stored.
pub(crate) async fn issue_order(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    body: &[u8],
    rid: &str,
) -> Result<(StatusCode, Json), ApiError> {
    let order: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("body is not JSON: {e}"), rid))?;
    // The order's own findings are platform's (all of them at once); a repeated key is what
    // the lenient read above would hide.
    no_repeated_keys(body, Code::InvalidOrder, rid)?;
    let Some(order_id) = order
        .get("order_id")
        .and_then(|o| o.as_str())
        .map(str::to_owned)
    else {
        let mut e = ApiError::new(Code::InvalidOrder, "the order has 1 problem(s)", rid);
        e.findings.push(fapiao_protocol::wire::FindingWire {
            path: "order_id".into(),
            code: "required".into(),
            message: "order_id is required: it identifies the order for retries".into(),
        });
        return Err(e);
    };
    let hash = order_hash(&order, rid)?;
    let (hosted, mut stored) = cloud
        .stored(enterprise, &[&order_id])
        .await
        .map_err(|e| internal(rid, &e))?;
    if let Some((h, v)) = stored.remove(&order_id) {
        // Orders stored before the canonical hash carry the hash of the raw body.
        return if h == hash || h == body_hash(body) {
            Ok((StatusCode::OK, to_json(&v, rid)?))
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
    }
    let req = IssueOrder {
        enterprise: enterprise.to_owned(),
        order_id: order_id.clone(),
        order,
        request_hash: hash.clone(),
    };
    if hosted {
        return cloud
            .enqueue_order(enterprise, QueuedOrder::Blue(req), nonce, rid)
            .await;
    }
    let v = cloud
        .forward(
            enterprise,
            &order_id,
            &hash,
            message_type::ORDER_ISSUE,
            &req,
            nonce,
            rid,
        )
        .await?;
    tracing::info!(request_id = %rid, number = %v.number, "invoice issued");
    Ok((StatusCode::CREATED, to_json(&v, rid)?))
}

/// The idempotency hash of an order: hex SHA-256 of its canonical JSON (keys sorted, no
/// whitespace), so the same order sent alone or in a batch, re-indented or with its keys
/// reordered, is the same request.
pub(crate) fn order_hash(order: &serde_json::Value, rid: &str) -> Result<String, ApiError> {
    Ok(body_hash(
        &serde_json::to_vec(order).map_err(|e| internal(rid, &e))?,
    ))
}

impl Cloud {
    /// Sends an order to platform and stores the issued invoice, spending the request's
    /// nonce in that transaction; the ERP's answer.
    #[expect(
        clippy::too_many_arguments,
        reason = "an order with its request's identity"
    )]
    pub(crate) async fn forward<T: Serialize>(
        &self,
        enterprise: &str,
        order_id: &str,
        request_hash: &str,
        kind: &str,
        body: &T,
        nonce: &Arrival,
        rid: &str,
    ) -> Result<InvoiceView, ApiError> {
        let answer: OrderAnswer = self
            .ask_platform(kind, body, message_type::ORDER_ANSWER, rid)
            .await?;
        let (invoice, tax_status, form) = match answer {
            OrderAnswer::Refused(r) => return Err(ApiError::from_refusal(r, rid)),
            OrderAnswer::Issued {
                order_id: o,
                invoice,
                tax_status,
                form,
            } => {
                if o != order_id {
                    return Err(unusable(rid, &format!("answer for order {o}")));
                }
                (invoice, tax_status, form)
            }
        };
        self.store_invoice(
            enterprise,
            order_id,
            request_hash,
            &invoice,
            tax_status,
            form,
            Some(nonce),
            rid,
        )
        .await
        .map_err(|e| self.unknown_outcome(e, order_id, rid))
    }

    /// Platform issued, but storing here failed: the ERP must not read "nothing was
    /// changed". It gets `outcome_unknown` (retryable: the same order returns the invoice),
    /// and the reconciling worker fetches the invoice from platform at once.
    pub(crate) fn unknown_outcome(&self, e: ApiError, order_id: &str, rid: &str) -> ApiError {
        if e.code != Code::Internal.as_str() {
            return e;
        }
        self.reconcile_soon();
        tracing::error!(request_id = %rid, order_id, "platform issued, cloud could not store: fetched from platform");
        ApiError::new(
            Code::OutcomeUnknown,
            "the platform issued this order's invoice but cloud could not store it yet; send \
             the same order (same order_id and body) again to get it",
            rid,
        )
    }

    /// Sends a message to platform and reads its answer of type `expected`: a refusal becomes
    /// the ERP's error, no answer or an unusable one `platform_unavailable` (retryable: every
    /// order is idempotent).
    pub(crate) async fn ask_platform<T: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        body: &T,
        expected: &str,
        rid: &str,
    ) -> Result<A, ApiError> {
        let answer = self.inner.platform.call_as(kind, body, Some(rid)).await.map_err(|e| {
            tracing::warn!(request_id = %rid, error = %e, "platform call failed");
            match e {
                CallError::Local(_) => internal(rid, &e),
                _ => ApiError::new(
                    Code::PlatformUnavailable,
                    "the e-invoice service platform did not answer; retry with the same order_id",
                    rid,
                ),
            }
        })?;
        let peer = self.inner.platform.peer_identity().to_owned();
        match answer.message_type.as_str() {
            t if t == expected => answer.parse(&peer).map_err(|e| unusable(rid, &e)),
            message_type::REFUSAL => {
                let r: Refusal = answer.parse(&peer).map_err(|e| unusable(rid, &e))?;
                Err(ApiError::from_refusal(r, rid))
            }
            other => Err(unusable(rid, &format!("answer type {other}"))),
        }
    }
}
