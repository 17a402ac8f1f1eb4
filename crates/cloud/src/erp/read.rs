//! Reading invoices: one, its XML and PDF, and the listing.

use super::*;

/// The invoices of enterprise `$1`, newest first, filtered by what is given (`NULL`: any):
/// issued from `$2` to `$3`, the buyer's blind index `$4` or a part `$5` of the buyer's
/// name, kind `$6`, tax status `$7`, older than the cursor `$8`; `$9` rows at most.
pub(crate) const LIST: Sql = Sql::dialects(
    "SELECT * FROM invoices WHERE enterprise = $1
        AND ($2 IS NULL OR issued_at >= $2) AND ($3 IS NULL OR issued_at <= $3)
        AND ($4 IS NULL OR buyer_index = $4 OR instr(buyer_name, $5) > 0)
        AND ($6 IS NULL OR kind = $6) AND ($7 IS NULL OR tax_status = $7)
        AND ($8 IS NULL OR seq < $8)
    ORDER BY seq DESC LIMIT $9",
    "SELECT * FROM invoices WHERE enterprise = $1
        AND ($2::text IS NULL OR issued_at >= $2) AND ($3::text IS NULL OR issued_at <= $3)
        AND ($4::text IS NULL OR buyer_index = $4 OR strpos(buyer_name, $5) > 0)
        AND ($6::text IS NULL OR kind = $6) AND ($7::text IS NULL OR tax_status = $7)
        AND ($8::bigint IS NULL OR seq < $8)
    ORDER BY seq DESC LIMIT $9",
);

pub(crate) async fn authed_invoice(
    cloud: &Cloud,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    number: &str,
    rid: &str,
) -> Result<InvoiceView, ApiError> {
    let enterprise = cloud.authenticate(method, uri, headers, b"", rid).await?;
    cloud
        .invoice(&enterprise, number)
        .await
        .map_err(|e| internal(rid, &e))?
        .ok_or_else(|| ApiError::new(Code::InvoiceNotFound, format!("no invoice {number}"), rid))
}

pub(crate) async fn get_one(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let rid = request_id(&headers);
    match authed_invoice(&cloud, &method, &uri, &headers, &number, &rid).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The invoice's XML layout file (with the issuing device's signature).
pub(crate) fn xml_of(v: &InvoiceView, rid: &str) -> Result<String, ApiError> {
    let signed = v.invoice.to_signed().map_err(|e| internal(rid, &e))?;
    Ok(fapiao_render::render_xml(
        &signed.invoice,
        Some(&signed.signature),
    ))
}

/// The invoice's PDF layout file (rendered off the async threads).
pub(crate) async fn pdf_of(cloud: &Cloud, v: &InvoiceView, rid: &str) -> Result<Vec<u8>, ApiError> {
    let signed = v.invoice.to_signed().map_err(|e| internal(rid, &e))?;
    let c = cloud.clone();
    let rid2 = rid.to_owned();
    tokio::task::spawn_blocking(move || {
        let xml = fapiao_render::render_xml(&signed.invoice, Some(&signed.signature));
        let font = c.font().map_err(|e| internal(&rid2, &e))?;
        fapiao_render::render_pdf(&signed.invoice, &xml, font).map_err(|e| internal(&rid2, &e))
    })
    .await
    .map_err(|e| internal(rid, &e))?
}

/// A layout file as a download, named as the national platform names it:
/// `dzfp_<number>_<buyer>_<yyyyMMddHHmmss>.<extension>` (`filename*`, UTF-8), with
/// `dzfp_<number>.<extension>` for clients that read only the ASCII `filename`.
pub(crate) fn attachment(
    content_type: &'static str,
    v: &InvoiceView,
    extension: &str,
    body: impl IntoResponse,
) -> Response {
    let number = &v.number;
    (
        [
            (http::header::CONTENT_TYPE, content_type.to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"dzfp_{number}.{extension}\"; \
                     filename*=UTF-8''{}.{extension}",
                    percent_encoded(&file_stem(v))
                ),
            ),
        ],
        body,
    )
        .into_response()
}

/// `dzfp_<number>_<buyer>_<yyyyMMddHHmmss>` ([`fapiao_render::file_stem`]).
pub(crate) fn file_stem(v: &InvoiceView) -> String {
    v.invoice.to_signed().map_or_else(
        |_| format!("dzfp_{}", v.number),
        |s| fapiao_render::file_stem(&s.invoice),
    )
}

/// RFC 8187 `value-chars`: every byte but the unreserved ones as `%XX`.
fn percent_encoded(s: &str) -> String {
    use std::fmt::Write as _;
    s.bytes()
        .fold(String::with_capacity(s.len() * 3), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
            out
        })
}

/// The XML media type of layout downloads.
pub(crate) const XML_TYPE: &str = "application/xml; charset=utf-8";

/// Listing filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Issued on or after (`YYYY-MM-DD`).
    pub(crate) from: Option<String>,
    /// Issued on or before (`YYYY-MM-DD`).
    pub(crate) to: Option<String>,
    /// Buyer taxpayer id (exact) or part of the name.
    pub(crate) buyer: Option<String>,
    /// `blue` or `red`.
    pub(crate) kind: Option<String>,
    /// `pending`, `accepted`, `failed`.
    pub(crate) status: Option<String>,
    /// 1..=100, default 50.
    pub(crate) limit: Option<i64>,
    /// From `next_cursor`.
    pub(crate) cursor: Option<String>,
}

pub(crate) fn is_date(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

pub(crate) async fn list(
    State(cloud): State<Cloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let enterprise = cloud
            .authenticate(&method, &uri, &headers, b"", &rid)
            .await?;
        let Query(q) =
            query.map_err(|e| ApiError::new(Code::InvalidRequest, e.body_text(), &rid))?;
        let bad = |m: &str| ApiError::new(Code::InvalidRequest, m, &rid);
        let limit = q.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(bad("limit: 1 to 100"));
        }
        for (name, date) in [("from", &q.from), ("to", &q.to)] {
            if date.as_deref().is_some_and(|d| !is_date(d)) {
                return Err(bad(&format!("{name}: YYYY-MM-DD")));
            }
        }
        if q.kind.as_deref().is_some_and(|k| k != "blue" && k != "red") {
            return Err(bad("kind: blue or red"));
        }
        if q.status
            .as_deref()
            .is_some_and(|s| TaxStatus::parse(s).is_none())
        {
            return Err(bad("status: pending, accepted or failed"));
        }
        let cursor = q
            .cursor
            .as_deref()
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|_| bad("cursor: as returned in next_cursor"))?;
        let rows = fapiao_store::query(LIST)
            .bind(enterprise)
            .bind(q.from.as_ref().map(|f| format!("{f} 00:00:00")))
            .bind(q.to.as_ref().map(|t| format!("{t} 23:59:59")))
            .bind(
                q.buyer
                    .as_ref()
                    .map(|b| cloud.inner.vault.blind_index(BUYER_INDEX, b)),
            )
            .bind(q.buyer.clone())
            .bind(q.kind.clone())
            .bind(q.status.clone())
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(cloud.inner.db.pool())
            .await
            .map_err(|e| internal(&rid, &e))?;
        let more = i64::try_from(rows.len()).unwrap_or(0) > limit;
        let mut items = Vec::new();
        let mut last_seq = None;
        for r in rows.iter().take(usize::try_from(limit).unwrap_or(50)) {
            let status: String = r.try_get("tax_status").map_err(|e| internal(&rid, &e))?;
            last_seq = Some(r.try_get::<i64, _>("seq").map_err(|e| internal(&rid, &e))?);
            items.push(InvoiceSummary {
                number: r.try_get("number").map_err(|e| internal(&rid, &e))?,
                order_id: r.try_get("order_id").map_err(|e| internal(&rid, &e))?,
                kind: r.try_get("kind").map_err(|e| internal(&rid, &e))?,
                blue_number: r.try_get("blue_number").map_err(|e| internal(&rid, &e))?,
                issued_at: crate::china_rfc3339(
                    &r.try_get::<String, _>("issued_at")
                        .map_err(|e| internal(&rid, &e))?,
                ),
                buyer_name: r.try_get("buyer_name").map_err(|e| internal(&rid, &e))?,
                buyer_id: r.try_get("buyer_id").map_err(|e| internal(&rid, &e))?,
                total: r.try_get("total").map_err(|e| internal(&rid, &e))?,
                tax_status: TaxStatus::parse(&status).unwrap_or(TaxStatus::Pending),
            });
        }
        Ok(InvoicePage {
            items,
            next_cursor: if more {
                last_seq.map(|s| s.to_string())
            } else {
                None
            },
        })
    }
    .await;
    match result {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}
