//! The invoice download portal (`/portal`): a web page where whoever holds an invoice (the
//! buyer, the enterprise's staff) downloads its PDF and XML layout files.
//!
//! Like the national 查验 service, the portal asks for the three facts printed on every invoice
//! and carried in its QR code: 发票号码, 开票日期 and 价税合计. An invoice is shown only when
//! all three match, and a mismatch does not say which one failed, so numbers cannot be
//! enumerated. Guesses at one number are limited from every address together (5, then waits
//! doubling up to 15 minutes: `fapiao_service::Attempts`). Pages are plain HTML with no script;
//! every response carries a strict Content Security Policy, `no-store` and `no-referrer` (the
//! query holds the total). A natural-person buyer's name is masked on the page; the files of
//! an invoice to a natural person carry the buyer's identity number and phone (they are signed
//! as issued), so downloading them also takes the last four characters of either — what the
//! buyer knows and a finder of the three printed facts does not. Invoices that tax refused
//! are shown as refused, without downloads.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fapiao_protocol::wire::TaxStatus;
use fapiao_render::escape;
use fapiao_service::error::request_id;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::Cloud;
use crate::erp::{InvoiceView, Layout, internal};

pub(crate) fn routes(cloud: Cloud) -> Router {
    Router::new()
        .route("/portal", get(form))
        .route("/portal/invoice", get(show))
        .route("/portal/pdf", get(pdf))
        .route("/portal/xml", get(xml))
        .route("/portal/ofd", get(ofd))
        .route("/portal/zip", get(zip))
        .with_state(cloud)
}

/// What the visitor typed: the three facts on the invoice.
#[derive(Debug, Default, Deserialize)]
struct Lookup {
    #[serde(default)]
    number: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    total: String,
    /// The last four characters of the natural-person buyer's identity number or phone.
    #[serde(default)]
    buyer: String,
}

/// A lookup that passed the field checks.
struct Checked {
    number: String,
    date: String,
    total: Decimal,
}

impl Lookup {
    /// Checks each field's form, naming the field that is wrong.
    fn check(&self) -> Result<Checked, &'static str> {
        let number = self.number.trim();
        if number.len() != 20 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err("发票号码应为 20 位数字。");
        }
        let date = self.date.trim();
        if time::Date::parse(
            date,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .is_err()
        {
            return Err("开票日期应写作 年-月-日，例如 2026-11-20。");
        }
        let total = self
            .total
            .trim()
            .trim_start_matches(['¥', '￥'])
            .replace(',', "")
            .parse::<Decimal>()
            .map_err(|_| "价税合计应为金额，例如 1234.50（红字发票为负数）。")?;
        Ok(Checked {
            number: number.to_owned(),
            date: date.to_owned(),
            total,
        })
    }

    /// The query string that repeats this lookup (for the download links).
    fn query(&self) -> String {
        format!(
            "number={}&date={}&total={}",
            url_encode(self.number.trim()),
            url_encode(self.date.trim()),
            url_encode(self.total.trim())
        )
    }

    /// The three facts as hidden fields of a form (for the downloads that need more).
    fn hidden(&self) -> String {
        [
            ("number", &self.number),
            ("date", &self.date),
            ("total", &self.total),
        ]
        .iter()
        .map(|(n, v)| {
            format!(
                "<input type=\"hidden\" name=\"{n}\" value=\"{}\">",
                escape(v.trim())
            )
        })
        .collect()
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a lookup shows no invoice.
enum Miss {
    /// A field is malformed (400).
    Field(&'static str),
    /// No invoice matches all three facts (404).
    NotFound,
    /// It matched, but tax refused it (409, downloads only).
    Refused,
    /// Something broke (500).
    Internal,
    /// Its OFD cannot be signed here: an enterprise's own device issued it (409).
    NoOfd,
    /// Too many failed guesses at this number: wait (429).
    TooMany(std::time::Duration),
    /// The files carry a natural person's data: the buyer's four characters are needed, or
    /// were wrong (403).
    BuyerProof { wrong: bool },
}

const NOT_FOUND: &str = "没有与发票号码、开票日期和价税合计都相符的发票，请核对后再试。";

impl Cloud {
    /// The invoice the three facts identify, if all three match.
    async fn find(&self, lookup: &Lookup, rid: &str) -> Result<InvoiceView, Miss> {
        let c = lookup.check().map_err(Miss::Field)?;
        self.inner
            .portal_attempts
            .check(&c.number)
            .map_err(Miss::TooMany)?;
        let attempts = &self.inner.portal_attempts;
        let row = fapiao_store::query("SELECT * FROM invoices WHERE number = $1")
            .bind(&c.number)
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(|e| {
                internal(rid, &e);
                Miss::Internal
            })?
            .ok_or_else(|| {
                attempts.failed(&c.number);
                Miss::NotFound
            })?;
        let v = self.view(&row).await.map_err(|e| {
            internal(rid, &e);
            Miss::Internal
        })?;
        let total: Option<Decimal> = v.total.parse().ok();
        if v.issued_at.get(..10) != Some(c.date.as_str()) || total != Some(c.total) {
            attempts.failed(&c.number);
            return Err(Miss::NotFound);
        }
        Ok(v)
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:0;background:#faf7f5;color:#222}\
main{max-width:40rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;border:1px solid #800000}\
h1{color:#800000;font-size:1.4rem;border-bottom:3px double #800000;padding-bottom:.4rem}\
label{display:block;margin:.8rem 0}label span{display:inline-block;width:6rem;color:#800000}\
input{font:inherit;padding:.3rem;width:16rem}button,a.button{font:inherit;padding:.4rem 1.2rem;\
background:#800000;color:#fff;border:0;text-decoration:none;margin-right:.6rem}\
.error{color:#b00020;font-weight:bold}table{border-collapse:collapse;width:100%;margin:1rem 0}\
th{text-align:left;color:#800000;width:7rem;font-weight:normal}td,th{padding:.3rem;border-bottom:1px solid #eee}";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    );
    secured(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
    )
}

/// The headers every portal response carries.
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, http::HeaderValue::from_static(value));
    }
    r
}

fn form_body(lookup: &Lookup, error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>\n",
                escape(e)
            )
        })
        .unwrap_or_default();
    format!(
        "<h1>电子发票下载</h1>\n\
         <p>请输入发票上的发票号码、开票日期和价税合计（小写），查询并下载发票的 PDF 与 XML 文件。</p>\n\
         {error}<form method=\"get\" action=\"/portal/invoice\">\n\
         <label><span>发票号码</span><input id=\"number\" name=\"number\" value=\"{}\" \
         inputmode=\"numeric\" maxlength=\"20\" autocomplete=\"off\" required></label>\n\
         <label><span>开票日期</span><input id=\"date\" name=\"date\" value=\"{}\" \
         placeholder=\"2026-11-20\" maxlength=\"10\" required></label>\n\
         <label><span>价税合计</span><input id=\"total\" name=\"total\" value=\"{}\" \
         inputmode=\"decimal\" placeholder=\"1234.50\" maxlength=\"24\" required></label>\n\
         <button id=\"find\" type=\"submit\">查询</button>\n</form>",
        escape(lookup.number.trim()),
        escape(lookup.date.trim()),
        escape(lookup.total.trim()),
    )
}

async fn form() -> Response {
    page(
        StatusCode::OK,
        "电子发票下载",
        &form_body(&Lookup::default(), None),
    )
}

fn missed(lookup: &Lookup, miss: &Miss) -> Response {
    let (status, message) = match miss {
        Miss::Field(m) => (StatusCode::BAD_REQUEST, *m),
        Miss::NotFound => (StatusCode::NOT_FOUND, NOT_FOUND),
        Miss::Refused => (
            StatusCode::CONFLICT,
            "这张发票未通过税务受理，不是有效发票，不能下载。",
        ),
        Miss::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "查询失败，请稍后再试。"),
        Miss::NoOfd => (
            StatusCode::CONFLICT,
            "这张发票由销售方自有的开票设备开具，本平台不能为其 OFD 版式文件签名：请下载 PDF 或 XML，或向销售方索取 OFD。",
        ),
        Miss::TooMany(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = page(
                StatusCode::TOO_MANY_REQUESTS,
                "电子发票下载",
                &form_body(
                    lookup,
                    Some(&format!(
                        "这张发票的查询失败次数过多，请 {} 秒后再试。",
                        secs.max(1)
                    )),
                ),
            );
            if let Ok(v) = http::HeaderValue::from_str(&secs.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Miss::BuyerProof { wrong } => {
            let message = if *wrong {
                "购买方证件号码或手机号码后四位不符。"
            } else {
                "这张发票的购买方是个人，文件中含有个人信息：请输入购买方身份证件号码或手机号码的后四位。"
            };
            return page(
                StatusCode::FORBIDDEN,
                "电子发票下载",
                &format!(
                    "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>\n{}",
                    escape(message),
                    buyer_form(lookup)
                ),
            );
        }
    };
    page(status, "电子发票下载", &form_body(lookup, Some(message)))
}

async fn show(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Query(lookup): Query<Lookup>,
) -> Response {
    let rid = request_id(&headers);
    let v = match cloud.find(&lookup, &rid).await {
        Ok(v) => v,
        Err(m) => return missed(&lookup, &m),
    };
    let Ok(signed) = v.invoice.to_signed() else {
        return missed(&lookup, &Miss::Internal);
    };
    let d = signed.invoice.draft();
    let (status, downloads) = match v.tax_status {
        TaxStatus::Accepted => ("已受理", true),
        TaxStatus::Pending => ("受理中（可先下载，受理后版式不变）", true),
        TaxStatus::Failed => ("未通过税务受理，不是有效发票", false),
    };
    let links = if !downloads {
        String::new()
    } else if buyer_tails(d.buyer()).is_empty() {
        let q = lookup.query();
        format!(
            "<p><a class=\"button\" id=\"pdf\" href=\"/portal/pdf?{q}\">下载 PDF</a>\
             <a class=\"button\" id=\"ofd\" href=\"/portal/ofd?{q}\">下载 OFD</a>\
             <a class=\"button\" id=\"xml\" href=\"/portal/xml?{q}\">下载 XML</a>\
             <a class=\"button\" id=\"zip\" href=\"/portal/zip?{q}\">全部下载</a></p>"
        )
    } else {
        buyer_form(&lookup)
    };
    let red = v
        .blue_number
        .as_deref()
        .map(|b| format!("<tr><th>被红冲发票</th><td>{}</td></tr>", escape(b)))
        .unwrap_or_default();
    let body = format!(
        "<h1>{title}</h1>\n<table>\n\
         <tr><th>发票号码</th><td id=\"found-number\">{number}</td></tr>\n\
         <tr><th>开票日期</th><td>{date}</td></tr>\n\
         <tr><th>销售方</th><td>{seller}</td></tr>\n\
         <tr><th>购买方</th><td id=\"buyer\">{buyer}</td></tr>\n\
         <tr><th>价税合计</th><td id=\"found-total\">¥{total}</td></tr>\n{red}\
         <tr><th>税务受理</th><td id=\"status\">{status}</td></tr>\n</table>\n{links}\n\
         <p><a href=\"/portal\">查询其他发票</a></p>",
        title = escape(&d.invoice_type().title()),
        number = escape(&v.number),
        date = escape(v.issued_at.get(..10).unwrap_or("")),
        seller = escape(&d.seller().name),
        buyer = escape(&fapiao_model::mask::buyer_name(d.buyer())),
        total = escape(&v.total),
    );
    tracing::info!(request_id = %rid, number = %v.number, "portal lookup");
    page(StatusCode::OK, "电子发票下载", &body)
}

/// A download: the lookup must match, the invoice must not be refused, and for a natural
/// person's invoice the buyer's four characters must match too (a wrong one counts as a
/// failed guess at the number).
async fn downloadable(cloud: &Cloud, lookup: &Lookup, rid: &str) -> Result<InvoiceView, Miss> {
    let v = cloud.find(lookup, rid).await?;
    if v.tax_status == TaxStatus::Failed {
        return Err(Miss::Refused);
    }
    let signed = v.invoice.to_signed().map_err(|_| Miss::Internal)?;
    let tails = buyer_tails(signed.invoice.draft().buyer());
    if !tails.is_empty() {
        let given = lookup.buyer.trim().to_ascii_uppercase();
        if given.is_empty() {
            return Err(Miss::BuyerProof { wrong: false });
        }
        if !tails.contains(&given) {
            cloud.inner.portal_attempts.failed(&v.number);
            return Err(Miss::BuyerProof { wrong: true });
        }
    }
    Ok(v)
}

/// The last four characters of a natural-person buyer's identity number and phone (upper
/// case); empty when the files carry neither (an organization, or a person who gave none).
fn buyer_tails(b: &fapiao_model::Buyer) -> Vec<String> {
    if b.kind != fapiao_model::BuyerKind::NaturalPerson {
        return Vec::new();
    }
    let tail = |s: &str| {
        let chars: Vec<char> = s.chars().filter(char::is_ascii_alphanumeric).collect();
        (chars.len() >= 4).then(|| {
            chars[chars.len() - 4..]
                .iter()
                .collect::<String>()
                .to_ascii_uppercase()
        })
    };
    b.id_number
        .as_ref()
        .and_then(|i| tail(i.expose()))
        .into_iter()
        .chain(b.phone.as_deref().and_then(tail))
        .collect()
}

/// The downloads of a natural person's invoice: the three facts hidden, the buyer's four
/// characters asked for.
fn buyer_form(lookup: &Lookup) -> String {
    format!(
        "<form method=\"get\" action=\"/portal/pdf\">{hidden}\n\
         <label><span>购买方后四位</span><input id=\"buyer\" name=\"buyer\" maxlength=\"4\" \
         autocomplete=\"off\" required placeholder=\"证件号码或手机号码后四位\"></label>\n\
         <button id=\"pdf\" type=\"submit\">下载 PDF</button>\
         <button id=\"ofd\" type=\"submit\" formaction=\"/portal/ofd\">下载 OFD</button>\
         <button id=\"xml\" type=\"submit\" formaction=\"/portal/xml\">下载 XML</button>\
         <button id=\"zip\" type=\"submit\" formaction=\"/portal/zip\">全部下载</button>\n</form>",
        hidden = lookup.hidden()
    )
}

async fn pdf(state: State<Cloud>, headers: HeaderMap, lookup: Query<Lookup>) -> Response {
    download(state, headers, lookup, Layout::Pdf).await
}

async fn xml(state: State<Cloud>, headers: HeaderMap, lookup: Query<Lookup>) -> Response {
    download(state, headers, lookup, Layout::Xml).await
}

async fn ofd(state: State<Cloud>, headers: HeaderMap, lookup: Query<Lookup>) -> Response {
    download(state, headers, lookup, Layout::Ofd).await
}

async fn zip(state: State<Cloud>, headers: HeaderMap, lookup: Query<Lookup>) -> Response {
    download(state, headers, lookup, Layout::Zip).await
}

async fn download(
    State(cloud): State<Cloud>,
    headers: HeaderMap,
    Query(lookup): Query<Lookup>,
    layout: Layout,
) -> Response {
    let rid = request_id(&headers);
    let v = match downloadable(&cloud, &lookup, &rid).await {
        Ok(v) => v,
        Err(m) => return missed(&lookup, &m),
    };
    match layout.download(&cloud, &v, &rid).await {
        Ok(r) => {
            tracing::info!(request_id = %rid, number = %v.number, "portal download");
            secured(r)
        }
        Err(e) if e.code == fapiao_protocol::Code::OfdUnavailable.as_str() => {
            missed(&lookup, &Miss::NoOfd)
        }
        Err(_) => missed(&lookup, &Miss::Internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_by_name() {
        let ok = Lookup {
            number: " 26312000000000000101 ".into(),
            date: "2026-11-20".into(),
            total: "¥1,234.5".into(),
            buyer: String::new(),
        };
        let c = ok.check().map_err(|_| ()).expect("valid");
        assert_eq!(c.total, "1234.50".parse::<Decimal>().expect("decimal"));
        let mut bad = Lookup {
            number: "2631200000000000010".into(),
            ..ok
        };
        assert!(bad.check().err().is_some_and(|m| m.starts_with("发票号码")));
        bad.number = "26312000000000000101".into();
        bad.date = "2026/11/20".into();
        assert!(bad.check().err().is_some_and(|m| m.starts_with("开票日期")));
        bad.date = "2026-11-20".into();
        bad.total = "十二元".into();
        assert!(bad.check().err().is_some_and(|m| m.starts_with("价税合计")));
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(url_encode("-1.5 &x=¥"), "-1.5%20%26x%3D%C2%A5");
    }
}
