//! What the ERP API shows of an invoice.

use super::*;

/// An invoice as the ERP API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Issue time.
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
        blue_number,
        form: issued.form.clone(),
        issued_at: fapiao_model::datetime::format(inv.issued_at()),
        total: inv.draft().totals().total.to_string(),
        tax_status: issued.tax_status,
        tax_reason: None,
        invoice: issued.invoice.clone(),
        receipt: None,
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
        })
    }
}
