//! What the ERP API shows of an invoice.

use super::*;

/// An invoice as the ERP API shows it. As JSON the record and its signature sit side by side
/// (`invoice`, `signature`), times carry their offset, and a blue shows its reds and what
/// remains to reverse.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "ViewJson")]
pub struct InvoiceView {
    /// 20-digit number.
    pub number: String,
    /// The enterprise's order id.
    pub order_id: String,
    /// `blue` or `red`.
    pub kind: String,
    /// For a red: the blue's number.
    pub blue_number: Option<String>,
    /// For a red: its red-letter form.
    pub form: Option<FormWire>,
    /// `yyyy-MM-dd HH:mm:ss` China time.
    pub issued_at: String,
    /// 价税合计.
    pub total: String,
    /// `pending`, `accepted` or `failed`.
    pub tax_status: TaxStatus,
    /// Why tax refused it.
    pub tax_reason: Option<String>,
    /// The signed invoice.
    pub invoice: WireInvoice,
    /// tax's signed receipt, once accepted.
    pub receipt: Option<SignedReceipt>,
    /// For a blue: the red invoices issued against it, oldest first.
    pub reds: Option<Vec<RedRef>>,
}

/// A red invoice issued against a blue one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedRef {
    /// Its number.
    pub number: String,
    /// Its 价税合计 (negative).
    pub total: String,
    /// When it was issued (RFC 3339, China time).
    pub issued_at: String,
}

/// An invoice as JSON: the record and the device's signature side by side (`invoice`,
/// `signature`), times in RFC 3339 with their offset, and for a blue what remains to reverse.
#[derive(Serialize)]
struct ViewJson {
    number: String,
    order_id: String,
    kind: String,
    blue_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    form: Option<FormWire>,
    issued_at: String,
    total: String,
    tax_status: TaxStatus,
    tax_reason: Option<String>,
    /// What of the total red invoices may still reverse (a blue's total plus its reds').
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reds: Option<Vec<RedRef>>,
    /// The signed invoice record.
    invoice: Box<serde_json::value::RawValue>,
    /// The issuing device's signature over it.
    signature: fapiao_protocol::wire::WireSignature,
    receipt: Option<SignedReceipt>,
}

impl From<InvoiceView> for ViewJson {
    fn from(v: InvoiceView) -> Self {
        let remaining = v.reds.as_ref().and_then(|reds| {
            let mut left: rust_decimal::Decimal = v.total.parse().ok()?;
            for r in reds {
                left += r.total.parse::<rust_decimal::Decimal>().ok()?;
            }
            Some(left.max(rust_decimal::Decimal::ZERO).to_string())
        });
        Self {
            number: v.number,
            order_id: v.order_id,
            kind: v.kind,
            blue_number: v.blue_number,
            form: v.form,
            issued_at: crate::china_rfc3339(&v.issued_at),
            total: v.total,
            tax_status: v.tax_status,
            tax_reason: v.tax_reason,
            remaining,
            reds: v.reds,
            invoice: v.invoice.invoice,
            signature: v.invoice.signature,
            receipt: v.receipt,
        }
    }
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceSummary {
    /// Number.
    pub number: String,
    /// Order id.
    pub order_id: String,
    /// `blue` or `red`.
    pub kind: String,
    /// For a red: the blue's number.
    pub blue_number: Option<String>,
    /// Issue time (RFC 3339, China time).
    pub issued_at: String,
    /// Buyer's name (a natural person's masked: `王**`).
    pub buyer_name: String,
    /// Buyer's taxpayer id, or a natural person's identity number masked
    /// (`310115********1239`).
    pub buyer_id: Option<String>,
    /// 价税合计.
    pub total: String,
    /// Tax status.
    pub tax_status: TaxStatus,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePage {
    /// The invoices, newest first.
    pub items: Vec<InvoiceSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// What was just stored for an invoice, as a read of the row would give it.
pub(crate) fn issued_view(issued: &Issued, inv: &fapiao_model::Invoice) -> InvoiceView {
    let blue_number = red_of(inv);
    InvoiceView {
        number: inv.number().as_str().to_owned(),
        order_id: issued.order_id.clone(),
        kind: if blue_number.is_some() { "red" } else { "blue" }.to_owned(),
        form: issued.form.clone(),
        issued_at: fapiao_model::datetime::format(inv.issued_at()),
        total: inv.draft().totals().total.to_string(),
        tax_status: issued.tax_status,
        tax_reason: None,
        receipt: None,
        invoice: issued.invoice.clone(),
        // A blue just issued has no reds yet.
        reds: blue_number.is_none().then(Vec::new),
        blue_number,
    }
}

impl Cloud {
    pub(crate) async fn view(&self, r: &Row) -> Result<InvoiceView, StoreError> {
        let dec = |c: &str| StoreError::Data(format!("invoices.{c}"));
        let status: String = r.try_get("tax_status")?;
        let form: Option<String> = r.try_get("form")?;
        let receipt: Option<String> = r.try_get("receipt")?;
        let record: String = r.try_get("record")?;
        let number: String = r.try_get("number")?;
        let record = self
            .inner
            .vault
            .unseal_str(crate::RECORD, &number, &record)
            .await
            .map_err(|e| StoreError::Data(e.to_string()))?;
        Ok(InvoiceView {
            number: r.try_get("number")?,
            order_id: r.try_get("order_id")?,
            kind: r.try_get("kind")?,
            blue_number: r.try_get("blue_number")?,
            form: form
                .map(|f| serde_json::from_str(&f))
                .transpose()
                .map_err(|_| dec("form"))?,
            issued_at: r.try_get("issued_at")?,
            total: r.try_get("total")?,
            tax_status: TaxStatus::parse(&status).ok_or_else(|| dec("tax_status"))?,
            tax_reason: r.try_get("tax_reason")?,
            invoice: serde_json::from_str(&record).map_err(|_| dec("record"))?,
            receipt: receipt
                .map(|x| serde_json::from_str(&x))
                .transpose()
                .map_err(|_| dec("receipt"))?,
            reds: None,
        })
    }
}
