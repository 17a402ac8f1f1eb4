//! `/v1/webhook-endpoints`: an enterprise's webhook endpoints — registered (the secret shown
//! once), listed, deleted, pinged — and each one's delivery log, from which a delivery may be
//! sent again. A deleted endpoint is gone from the API with its log (the rows stay, for the
//! operator). See `crate::webhook` for what a delivery is.

use super::*;
use crate::webhook::events::{EVENTS, PING};

/// Endpoints an enterprise may have (deleted ones not counted).
pub const MAX_ENDPOINTS: i64 = 16;

/// Longest endpoint URL.
const MAX_URL: usize = 2048;

/// Longest description.
const MAX_DESCRIPTION: usize = 200;

/// The body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize)]
struct EndpointView {
    id: String,
    url: String,
    events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    created_at: String,
    /// Only in the answer to its registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn invalid(rid: &str, m: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRequest, m, rid)
}

fn no_endpoint(rid: &str, id: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no webhook endpoint {id}"), rid)
}

/// Checks a new endpoint's fields; its events (all of them by default), in the canonical
/// order.
fn check(b: &NewEndpoint, to_private: bool, rid: &str) -> Result<Vec<String>, ApiError> {
    if b.url.len() > MAX_URL {
        return Err(invalid(rid, format!("url: longer than {MAX_URL} bytes")));
    }
    let Some(rest) = b.url.strip_prefix("https://") else {
        return Err(invalid(rid, "url: must start with https://"));
    };
    if b.url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(rid, "url: contains spaces or control characters"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(rid, "url: user information is not allowed"));
    }
    let (host, port) = crate::webhook::split_authority(authority)
        .map_err(|e| invalid(rid, format!("url: {e}")))?;
    if port == 0 {
        return Err(invalid(rid, "url: port 0"));
    }
    if rest.contains('#') {
        return Err(invalid(rid, "url: a fragment is not sent; leave it out"));
    }
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    if authority.starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_err()
        || !is_ip && !is_host_name(&host)
    {
        return Err(invalid(
            rid,
            format!("url: {host} is not a host name or an IP address"),
        ));
    }
    if !to_private {
        let literal = host.parse::<std::net::IpAddr>().ok();
        if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
            || literal.is_some_and(|ip| !crate::webhook::is_public(ip))
        {
            return Err(invalid(rid, format!("url: {host} is not a public address")));
        }
    }
    if b.description
        .as_deref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(invalid(
            rid,
            format!("description: longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    let Some(asked) = &b.events else {
        return Ok(EVENTS.iter().map(|e| (*e).to_owned()).collect());
    };
    if asked.is_empty() {
        return Err(invalid(
            rid,
            "events: at least one event (or leave it out for all)",
        ));
    }
    if let Some((k, e)) = asked
        .iter()
        .enumerate()
        .find(|(_, e)| !EVENTS.contains(&e.as_str()))
    {
        return Err(invalid(
            rid,
            format!("events[{k}]: {e:?} is not one of {}", EVENTS.join(", ")),
        ));
    }
    if let Some((k, e)) = asked
        .iter()
        .enumerate()
        .find(|(k, e)| asked[..*k].contains(e))
    {
        return Err(invalid(rid, format!("events[{k}]: {e:?} is listed twice")));
    }
    Ok(EVENTS
        .iter()
        .filter(|e| asked.iter().any(|a| a == *e))
        .map(|e| (*e).to_owned())
        .collect())
}

/// A DNS host name: dot-separated labels of letters, digits and `-` (not at either end), 1–63
/// characters each, 253 in all.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn view_of(r: &Row) -> Result<EndpointView, StoreError> {
    let events: String = r.try_get("events")?;
    Ok(EndpointView {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.try_get("description")?,
        created_at: crate::rfc3339(r.try_get("created_at")?),
        secret: None,
    })
}

impl Cloud {
    /// Registers an endpoint for `enterprise`: its view with the secret (shown this once).
    async fn create_endpoint(
        &self,
        enterprise: &str,
        b: &NewEndpoint,
        events: &[String],
        rid: &str,
    ) -> Result<EndpointView, ApiError> {
        let id = format!("we_{}", &fapiao_protocol::client::new_id()[..24]);
        let secret = format!(
            "whsec_{}{}",
            fapiao_protocol::client::new_id(),
            fapiao_protocol::client::new_id()
        );
        let t = now().unix_timestamp();
        let events_json = serde_json::json!(events).to_string();
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(|e| internal(rid, &e))?;
        crate::lock_enterprises(&mut tx, [enterprise])
            .await
            .map_err(|e| internal(rid, &e))?;
        let count: i64 = query_scalar(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE enterprise = $1 AND deleted_at IS NULL",
        )
        .bind(enterprise)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| internal(rid, &e))?;
        if count >= MAX_ENDPOINTS {
            return Err(ApiError::new(
                Code::LimitReached,
                format!(
                    "an enterprise has at most {MAX_ENDPOINTS} webhook endpoints; delete one first"
                ),
                rid,
            ));
        }
        let sealed = self
            .inner
            .vault
            .seal_str(&mut tx, crate::ENDPOINT_SECRET, &id, &secret)
            .await
            .map_err(|e| internal(rid, &e))?;
        query(
            "INSERT INTO webhook_endpoints
                (id, enterprise, url, events, description, secret, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(enterprise)
        .bind(&b.url)
        .bind(&events_json)
        .bind(&b.description)
        .bind(sealed)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(|e| internal(rid, &e))?;
        fapiao_store::audit::append(
            &mut tx,
            now(),
            &format!("erp:{enterprise}"),
            "webhook.endpoint.created",
            &id,
            &serde_json::json!({"url": b.url, "events": events, "request_id": rid}),
        )
        .await
        .map_err(|e| internal(rid, &e))?;
        tx.commit().await.map_err(|e| internal(rid, &e))?;
        Ok(EndpointView {
            id,
            url: b.url.clone(),
            events: events.to_vec(),
            description: b.description.clone(),
            created_at: crate::rfc3339(t),
            secret: Some(secret),
        })
    }

    /// The enterprise's endpoint `id` (not deleted: a deleted endpoint is gone from the API,
    /// its delivery log with it); `not_found` otherwise.
    async fn endpoint(
        &self,
        enterprise: &str,
        id: &str,
        rid: &str,
    ) -> Result<EndpointView, ApiError> {
        let row = query(
            "SELECT id, url, events, description, created_at FROM webhook_endpoints
             WHERE id = $1 AND enterprise = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(enterprise)
        .fetch_optional(self.inner.db.pool())
        .await
        .map_err(|e| internal(rid, &e))?
        .ok_or_else(|| no_endpoint(rid, id))?;
        view_of(&row).map_err(|e| internal(rid, &e))
    }

    /// Deletes an endpoint: nothing more is fanned out to it, and its pending deliveries
    /// fail.
    async fn delete_endpoint(&self, enterprise: &str, id: &str, rid: &str) -> Result<(), ApiError> {
        let t = now().unix_timestamp();
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(|e| internal(rid, &e))?;
        let n = query(
            "UPDATE webhook_endpoints SET deleted_at = $3
             WHERE id = $1 AND enterprise = $2 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(enterprise)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(|e| internal(rid, &e))?
        .rows_affected();
        if n == 0 {
            return Err(no_endpoint(rid, id));
        }
        query(
            "UPDATE webhooks SET state = 'failed', last_error = 'the endpoint was deleted'
             WHERE endpoint = $1 AND state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| internal(rid, &e))?;
        fapiao_store::audit::append(
            &mut tx,
            now(),
            &format!("erp:{enterprise}"),
            "webhook.endpoint.deleted",
            id,
            &serde_json::json!({"request_id": rid}),
        )
        .await
        .map_err(|e| internal(rid, &e))?;
        tx.commit().await.map_err(|e| internal(rid, &e))
    }

    /// An endpoint's deliveries, newest first, before delivery `before` if given, each with
    /// its attempts.
    async fn deliveries(
        &self,
        endpoint: &str,
        before: Option<i64>,
        limit: i64,
        rid: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let rows = query(Sql::dialects(
            "SELECT id, event_id, event, number, payload, state, attempts, next_attempt_at,
                 created_at, last_error FROM webhooks
             WHERE endpoint = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            "SELECT id, event_id, event, number, payload, state, attempts, next_attempt_at,
                 created_at, last_error FROM webhooks
             WHERE endpoint = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        ))
        .bind(endpoint)
        .bind(before)
        .bind(limit)
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(|e| internal(rid, &e))?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()
            .map_err(|e| internal(rid, &e))?;
        let mut log: HashMap<i64, Vec<serde_json::Value>> = HashMap::new();
        for a in query(Sql::dialects(
            "SELECT delivery, attempt, at, status, error, duration_ms FROM webhook_attempts
             WHERE delivery IN (SELECT value FROM jsonb_each($1)) ORDER BY delivery, attempt",
            "SELECT delivery, attempt, at, status, error, duration_ms FROM webhook_attempts
             WHERE delivery = ANY(ARRAY(SELECT (jsonb_array_elements_text($1::jsonb))::bigint))
             ORDER BY delivery, attempt",
        ))
        .bind(serde_json::json!(ids).to_string())
        .fetch_all(self.inner.db.pool())
        .await
        .map_err(|e| internal(rid, &e))?
        {
            let get = || -> Result<(i64, serde_json::Value), StoreError> {
                Ok((
                    a.try_get("delivery")?,
                    serde_json::json!({
                        "attempt": a.try_get::<i64, _>("attempt")?,
                        "at": crate::rfc3339(a.try_get("at")?),
                        "status": a.try_get::<Option<i64>, _>("status")?,
                        "error": a.try_get::<Option<String>, _>("error")?,
                        "duration_ms": a.try_get::<i64, _>("duration_ms")?,
                    }),
                ))
            };
            let (d, v) = get().map_err(|e| internal(rid, &e))?;
            log.entry(d).or_default().push(v);
        }
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut get = || -> Result<serde_json::Value, StoreError> {
                let id: i64 = r.try_get("id")?;
                let state: String = r.try_get("state")?;
                let number: String = r.try_get("number")?;
                Ok(serde_json::json!({
                    "id": id,
                    "event_id": r.try_get::<Option<i64>, _>("event_id")?,
                    "event": r.try_get::<String, _>("event")?,
                    "number": (!number.is_empty()).then_some(number),
                    "state": state,
                    "attempt_count": r.try_get::<i64, _>("attempts")?,
                    "created_at": crate::rfc3339(r.try_get("created_at")?),
                    "next_attempt_at": (state == "pending")
                        .then(|| r.try_get::<i64, _>("next_attempt_at").map(crate::rfc3339))
                        .transpose()?,
                    "last_error": r.try_get::<Option<String>, _>("last_error")?,
                    "attempts": log.remove(&id).unwrap_or_default(),
                }))
            };
            items.push(get().map_err(|e| internal(rid, &e))?);
        }
        let next = (i64::try_from(rows.len()).unwrap_or(0) == limit)
            .then(|| {
                ids.last().map(|id| {
                    format!("/v1/webhook-endpoints/{endpoint}/deliveries?before={id}&limit={limit}")
                })
            })
            .flatten();
        Ok(serde_json::json!({ "items": items, "next": next }))
    }

    /// Sends delivery `delivery` of `endpoint` again (whatever its state): due now, with
    /// another retry period.
    async fn resend(&self, endpoint: &str, delivery: i64, rid: &str) -> Result<(), ApiError> {
        let t = now().unix_timestamp();
        let give_up_at = self.give_up_at(t);
        let mut tx = self
            .inner
            .db
            .begin_write()
            .await
            .map_err(|e| internal(rid, &e))?;
        let n = query(
            "UPDATE webhooks SET state = 'pending', next_attempt_at = $3, give_up_at = $4,
                 claimed_by = NULL, claimed_until = NULL
             WHERE id = $2 AND endpoint = $1",
        )
        .bind(endpoint)
        .bind(delivery)
        .bind(t)
        .bind(give_up_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| internal(rid, &e))?
        .rows_affected();
        if n == 0 {
            return Err(ApiError::new(
                Code::NotFound,
                format!("no delivery {delivery} of webhook endpoint {endpoint}"),
                rid,
            ));
        }
        tx.commit().await.map_err(|e| internal(rid, &e))?;
        self.inner.wake.notify_one();
        Ok(())
    }
}

/// `POST /v1/webhook-endpoints`.
pub(crate) async fn create_endpoint(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, _| {
                let b: NewEndpoint = parse_body(&body, &rid)?;
                let events = check(&b, cloud.inner.options.webhooks_to_private, &rid)?;
                let v = cloud.create_endpoint(enterprise, &b, &events, &rid).await?;
                Ok((StatusCode::CREATED, to_json(&v, &rid)?))
            },
        )
        .await;
    answer(result, rid)
}

/// `GET /v1/webhook-endpoints`.
pub(crate) async fn list_endpoints(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        let rows = query(
            "SELECT id, url, events, description, created_at FROM webhook_endpoints
             WHERE enterprise = $1 AND deleted_at IS NULL ORDER BY created_at, id",
        )
        .bind(&enterprise)
        .fetch_all(cloud.inner.db.pool())
        .await
        .map_err(|e| internal(&rid, &e))?;
        let items = rows
            .iter()
            .map(view_of)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| internal(&rid, &e))?;
        Ok((
            StatusCode::OK,
            to_json(&serde_json::json!({ "items": items }), &rid)?,
        ))
    }
    .await;
    answer(result, rid)
}

/// `GET /v1/webhook-endpoints/{id}`.
pub(crate) async fn get_endpoint(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        let v = cloud.endpoint(&enterprise, &id, &rid).await?;
        Ok((StatusCode::OK, to_json(&v, &rid)?))
    }
    .await;
    answer(result, rid)
}

/// `DELETE /v1/webhook-endpoints/{id}`.
pub(crate) async fn delete_endpoint(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, b""),
            &rid,
            async |enterprise, _| cloud.delete_endpoint(enterprise, &id, &rid).await,
        )
        .await;
    match result {
        Ok(()) => (
            StatusCode::NO_CONTENT,
            [(fapiao_service::error::REQUEST_ID_HEADER, rid)],
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/webhook-endpoints/{id}/ping`: a `ping` delivery, due now.
pub(crate) async fn ping_endpoint(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, _| {
                cloud.endpoint(enterprise, &id, &rid).await?;
                let delivery = cloud
                    .ping(enterprise, &id)
                    .await
                    .map_err(|e| internal(&rid, &e))?;
                Ok((
                    StatusCode::ACCEPTED,
                    to_json(
                        &serde_json::json!({"delivery": delivery, "event": PING}),
                        &rid,
                    )?,
                ))
            },
        )
        .await;
    answer(result, rid)
}

#[derive(Deserialize)]
pub(crate) struct DeliveriesQuery {
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /v1/webhook-endpoints/{id}/deliveries?before=&limit=`.
pub(crate) async fn list_deliveries(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let Query(q) = query.map_err(|e| invalid(&rid, format!("query: {}", e.body_text())))?;
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        cloud.endpoint(&enterprise, &id, &rid).await?;
        let limit = q.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(invalid(&rid, "limit: 1 to 100"));
        }
        if q.before.is_some_and(|b| b < 1) {
            return Err(invalid(&rid, "before: a delivery id, from `next`"));
        }
        let v = cloud.deliveries(&id, q.before, limit, &rid).await?;
        Ok((StatusCode::OK, to_json(&v, &rid)?))
    }
    .await;
    answer(result, rid)
}

/// `POST /v1/webhook-endpoints/{id}/deliveries/{delivery}/resend`.
pub(crate) async fn resend_delivery(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((id, delivery)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    let result = cloud
        .signed_then(
            (&method, &uri, &headers, &body),
            &rid,
            async |enterprise, _| {
                let delivery: i64 = delivery
                    .parse()
                    .map_err(|_| invalid(&rid, "delivery: a delivery id (an integer)"))?;
                cloud.endpoint(enterprise, &id, &rid).await?;
                cloud.resend(&id, delivery, &rid).await?;
                Ok((
                    StatusCode::ACCEPTED,
                    to_json(
                        &serde_json::json!({"delivery": delivery, "state": "pending"}),
                        &rid,
                    )?,
                ))
            },
        )
        .await;
    answer(result, rid)
}

/// A JSON body, or `invalid_request` naming where it fails (in the message, as the other
/// endpoint errors do).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8], rid: &str) -> Result<T, ApiError> {
    strict_body(body, Code::InvalidRequest, rid).map_err(|mut e| {
        if let Some(f) = e.findings.pop() {
            e.message = if f.path.is_empty() {
                f.message
            } else {
                format!("{}: {}", f.path, f.message)
            };
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> NewEndpoint {
        NewEndpoint {
            url: url.into(),
            events: None,
            description: None,
        }
    }

    #[test]
    fn an_endpoint_must_be_public_https_unless_private_ones_are_allowed() {
        for url in [
            "https://127.0.0.1/hooks",
            "https://localhost:8443/hooks",
            "https://api.localhost/hooks",
            "https://10.0.0.8/hooks",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]:9444/admin",
            "https://[fd00::2]/hooks",
        ] {
            let e = check(&new(url), false, "r").unwrap_err();
            assert!(
                e.message.contains("not a public address"),
                "{url}: {}",
                e.message
            );
            assert!(
                check(&new(url), true, "r").is_ok(),
                "{url} allowed when private ones are"
            );
        }
        for (url, why) in [
            ("http://erp.example/hooks", "https://"),
            ("https://user:pw@erp.example/hooks", "user information"),
            ("https://erp.example/ho oks", "spaces"),
            ("https://:443/hooks", "not a host"),
            (
                "https://[:47A:2C82Be]/hooks",
                "not a host name or an IP address",
            ),
            (
                "https://erp_hooks.example/x",
                "not a host name or an IP address",
            ),
            ("https://-erp.example/x", "not a host name or an IP address"),
            ("https://erp.example:0/x", "port 0"),
            ("https://erp.example/x#frag", "fragment"),
        ] {
            let e = check(&new(url), true, "r").unwrap_err();
            assert!(
                e.message.starts_with("url: ") && e.message.contains(why),
                "{url}: {}",
                e.message
            );
        }
        assert_eq!(
            check(
                &new("https://erp.example.com:8443/fapiao/hooks"),
                false,
                "r"
            )
            .unwrap(),
            EVENTS
        );
    }

    #[test]
    fn events_are_checked_and_put_in_order() {
        let mut b = new("https://erp.example/hooks");
        b.events = Some(vec!["order.refused".into(), "invoice.issued".into()]);
        assert_eq!(
            check(&b, false, "r").unwrap(),
            ["invoice.issued", "order.refused"]
        );
        b.events = Some(vec!["invoice.issued".into(), "ping".into()]);
        assert!(
            check(&b, false, "r")
                .unwrap_err()
                .message
                .starts_with("events[1]: ")
        );
        b.events = Some(vec![]);
        assert!(
            check(&b, false, "r")
                .unwrap_err()
                .message
                .starts_with("events: ")
        );
        b.events = None;
        b.description = Some("描".repeat(MAX_DESCRIPTION + 1));
        assert!(
            check(&b, false, "r")
                .unwrap_err()
                .message
                .starts_with("description: ")
        );
    }
}
