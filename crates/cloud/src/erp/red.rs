//! `POST /v1/invoices/{number}/red`: a red invoice reversing a blue one.

use super::*;

/// The body of a red request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedBody {
    pub(crate) order_id: String,
    pub(crate) reason: String,
    #[serde(default = "full")]
    pub(crate) scope: RedScopeWire,
    #[serde(default)]
    pub(crate) buyer_confirmation: Option<String>,
    #[serde(default)]
    pub(crate) drawer: Option<String>,
}

pub(crate) fn full() -> RedScopeWire {
    RedScopeWire::Full
}

pub(crate) async fn red(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, nonce| {
                issue_red(&cloud, enterprise, nonce, number, &body, &rid).await
            },
        )
        .await;
    match result {
        Ok((s, v)) => (s, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An authenticated red order: stored before, queued for the enterprise's agent, or issued
/// by platform and stored.
pub(crate) async fn issue_red(
    cloud: &Cloud,
    enterprise: &str,
    nonce: &Arrival,
    number: String,
    body: &[u8],
    rid: &str,
) -> Result<(StatusCode, Json), ApiError> {
    let b: RedBody = strict_body(body, Code::RedInvalid, rid)?;
    let hash = body_hash(body);
    let (hosted, mut stored) = cloud
        .stored(enterprise, &[&b.order_id])
        .await
        .map_err(|e| internal(rid, &e))?;
    if let Some((h, v)) = stored.remove(&b.order_id) {
        return if h == hash {
            Ok((StatusCode::OK, to_json(&v, rid)?))
        } else {
            Err(ApiError::new(
                Code::OrderConflict,
                format!(
                    "order_id {} was already used with a different request",
                    b.order_id
                ),
                rid,
            ))
        };
    }
    let req = RedOrder {
        enterprise: enterprise.to_owned(),
        order_id: b.order_id.clone(),
        blue_number: number,
        reason: b.reason,
        scope: b.scope,
        buyer_confirmation: b.buyer_confirmation,
        drawer: b.drawer,
        request_hash: hash.clone(),
    };
    if hosted {
        let blue = cloud
            .invoice(enterprise, &req.blue_number)
            .await
            .map_err(|e| internal(rid, &e))?;
        if blue.is_none() {
            return Err(ApiError::new(
                Code::InvoiceNotFound,
                format!("no invoice {} of this enterprise", req.blue_number),
                rid,
            ));
        }
        return cloud
            .enqueue_order(enterprise, QueuedOrder::Red(req), nonce, rid)
            .await;
    }
    let v = cloud
        .forward(
            enterprise,
            &b.order_id,
            &hash,
            message_type::ORDER_RED,
            &req,
            nonce,
            rid,
        )
        .await?;
    tracing::info!(request_id = %rid, number = %v.number, "red invoice issued");
    Ok((StatusCode::CREATED, to_json(&v, rid)?))
}
