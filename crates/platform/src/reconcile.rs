//! What a cloud asks to reconcile with platform: the invoices of its enterprises, a page at a
//! time in issue order (`invoices.list`), and, for those it lacks or holds with another tax
//! status, their notices with the invoice itself (`invoices.fetch`) — the notice path that
//! brings an agent's invoices to cloud, here for any invoice. So an invoice platform issued
//! whose answer cloud could not store (a full disk, a database error) reaches cloud without
//! the ERP sending the order again.

use fapiao_protocol::Code;
use fapiao_protocol::wire::{
    InvoiceFetch, InvoiceList, InvoiceRef, InvoiceRefs, Refusal, StatusNotices, TaxStatus,
};
use fapiao_store::{StoreError, query};

use crate::Platform;

impl Platform {
    /// A page of the invoices of `cloud`'s enterprises ([`InvoiceList`]).
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) async fn list_for_cloud(
        &self,
        cloud: &str,
        q: &InvoiceList,
    ) -> Result<Result<InvoiceRefs, Refusal>, StoreError> {
        if q.from.len() != 19 {
            return Ok(Err(Refusal::new(
                Code::InvalidRequest,
                "from: China time as YYYY-MM-DD HH:MM:SS",
            )));
        }
        let (at, number) = q.after.clone().unwrap_or_default();
        let rows = query(
            "SELECT i.number, i.enterprise, i.order_id, i.issued_at, i.tax_status
             FROM invoices i JOIN enterprises e ON e.taxpayer_id = i.enterprise
             WHERE e.cloud = $1 AND i.issued_at >= $2
               AND (i.issued_at > $3 OR (i.issued_at = $3 AND i.number > $4))
             ORDER BY i.issued_at, i.number LIMIT $5",
        )
        .bind(cloud)
        .bind(&q.from)
        .bind(&at)
        .bind(&number)
        .bind(i64::try_from(InvoiceList::MAX).unwrap_or(500))
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let status: String = r.try_get("tax_status")?;
            items.push(InvoiceRef {
                number: r.try_get("number")?,
                enterprise: r.try_get("enterprise")?,
                order_id: r.try_get("order_id")?,
                issued_at: r.try_get("issued_at")?,
                tax_status: TaxStatus::parse(&status)
                    .ok_or_else(|| StoreError::Data(format!("tax status `{status}`")))?,
            });
        }
        Ok(Ok(InvoiceRefs { items }))
    }

    /// The notices, invoice included, of the fetched invoices that belong to `cloud`'s
    /// enterprises (others are left out).
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) async fn fetch_for_cloud(
        &self,
        cloud: &str,
        q: &InvoiceFetch,
    ) -> Result<Result<StatusNotices, Refusal>, StoreError> {
        if q.numbers.is_empty() || q.numbers.len() > StatusNotices::MAX {
            return Ok(Err(Refusal::new(
                Code::InvalidRequest,
                format!("numbers: 1 to {}", StatusNotices::MAX),
            )));
        }
        let rows = self.notice_rows_of(&q.numbers).await?;
        let mut notices = Vec::with_capacity(q.numbers.len());
        for number in &q.numbers {
            let Some(row) = rows.get(number) else {
                continue;
            };
            if let Ok((identity, _, notice)) = self.notice_of(number, Some(row), true).await?
                && identity == cloud
            {
                notices.push(notice);
            }
        }
        Ok(Ok(StatusNotices { notices }))
    }
}
