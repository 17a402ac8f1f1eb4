//! Report: invoices and tax's receipts to platform, in order, in batches.

use super::*;

impl Agent {
    /// Reports invoices and tax's receipts to platform in queue order, a run of due entries
    /// ([`Self::due_run`]) at a time in one `invoice.report_batch`; platform answers each
    /// item, and the answers are recorded in one transaction: recorded → done, a refusal
    /// that is final → failed (counted in `agent status`), any other → retried with backoff.
    /// A batch refused as a whole with a final code (a platform that does not take report
    /// batches) is sent again item by item.
    pub(crate) async fn report_due(&self) -> Result<usize, AgentError> {
        let run = self.due_run(true, ReportBatch::MAX).await?;
        let Some(head) = run.first() else {
            return Ok(0);
        };
        let rows = self.invoice_rows(&run).await?;
        let mut entries = Vec::with_capacity(run.len());
        let mut items = Vec::with_capacity(run.len());
        let mut bytes = 0;
        for entry in &run {
            let (item, size) = self.report_item(entry, rows.of(entry)?).await?;
            bytes += size;
            if bytes > BATCH_BYTES && !items.is_empty() {
                break;
            }
            items.push(item);
            entries.push(entry);
        }
        let batch = ReportBatch {
            enterprise: self.inner.enterprise.clone(),
            items,
        };
        let answer = self
            .inner
            .platform
            .call(message_type::INVOICE_REPORT_BATCH, &batch)
            .instrument(tracing::debug_span!("platform.report"))
            .await;
        let waiting = self.observe(&self.inner.platform, &answer);
        let results = match answer {
            Ok(a) if a.message_type == message_type::REPORT_RESULTS => one_each(
                &a,
                self.inner.platform.peer_identity(),
                entries.len(),
                |r: ReportResults| r.results,
            ),
            Ok(a) if refusal_code(&a).is_some_and(|c| !c.retryable()) => {
                tracing::warn!(answer = %String::from_utf8_lossy(&a.payload), "agent: platform refused a report batch; reporting item by item");
                return self.report_each(&entries, batch.items).await;
            }
            Ok(a) => Err(format!(
                "platform answered {}: {}",
                a.message_type,
                String::from_utf8_lossy(&a.payload)
            )),
            Err(e) => Err(e.to_string()),
        };
        let results = match results {
            Ok(r) => r,
            Err(why) => {
                self.retry_later(head, &why, waiting.as_deref()).await?;
                return Ok(0);
            }
        };
        let mut tx = self.inner.db.begin_write().await?;
        let mut handled = 0;
        for (entry, result) in entries.iter().zip(results) {
            handled += self.record_report(&mut tx, entry, result).await?;
        }
        tx.commit().await?;
        Ok(handled)
    }

    /// A report batch's item for a queue entry (an invoice with its order, or tax's receipt
    /// for it), and the bytes of invoice record it carries.
    pub(crate) async fn report_item(
        &self,
        entry: &Entry,
        row: &Row,
    ) -> Result<(ReportItem, usize), AgentError> {
        if entry.kind == "report" {
            let record: String = row.try_get("record")?;
            let form: Option<String> = row.try_get("form")?;
            let item = ReportItem::Invoice(Issued {
                order_id: row.try_get("order_id")?,
                request_hash: row.try_get("request_hash")?,
                invoice: self.read_wire(&entry.subject, &record).await?,
                form: form.and_then(|f| serde_json::from_str(&f).ok()),
            });
            return Ok((item, record.len()));
        }
        let upload: String = row.try_get("upload")?;
        let receipt: Option<String> = row.try_get("receipt")?;
        let size = receipt.as_ref().map_or(0, String::len);
        let item = ReportItem::Status(Box::new(StatusNotice {
            number: entry.subject.clone(),
            enterprise: self.inner.enterprise.clone(),
            tax_status: if upload == "failed" {
                TaxStatus::Failed
            } else {
                TaxStatus::Accepted
            },
            reason: row.try_get("upload_reason")?,
            receipt: receipt.and_then(|r| serde_json::from_str(&r).ok()),
            issued: None,
        }));
        Ok((item, size))
    }

    /// Records platform's answer to one reported entry in `tx` (`None`: recorded); 1 when
    /// the entry is settled, 0 when it is retried.
    pub(crate) async fn record_report(
        &self,
        tx: &mut Tx,
        entry: &Entry,
        result: Option<Refusal>,
    ) -> Result<usize, AgentError> {
        let Some(refusal) = result else {
            finish(tx, entry.id).await?;
            return Ok(1);
        };
        let text = serde_json::to_string(&refusal).unwrap_or_default();
        if refusal.code().is_some_and(Code::retryable) || refusal.code().is_none() {
            self.retry_in(tx, entry, &format!("platform answered {text}"), None)
                .await?;
            return Ok(0);
        }
        tracing::error!(number = %entry.subject, kind = %entry.kind, answer = %text, "agent: platform refused a report");
        query(
            "UPDATE queue SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE id = $1",
        )
        .bind(entry.id)
        .bind(&text)
        .execute(&mut **tx)
        .await?;
        audit(
            tx,
            self.inner.platform.peer_identity(),
            "report.refused",
            &entry.subject,
            &serde_json::json!({"kind": entry.kind, "answer": text}),
        )
        .await?;
        Ok(1)
    }

    /// Reports entries one message each (`invoice.report`, `invoice.status`), in order,
    /// until one must be retried.
    pub(crate) async fn report_each(
        &self,
        entries: &[&Entry],
        items: Vec<ReportItem>,
    ) -> Result<usize, AgentError> {
        let mut handled = 0;
        for (entry, item) in entries.iter().zip(items) {
            let answer = match item {
                ReportItem::Invoice(issued) => {
                    let report = Report {
                        enterprise: self.inner.enterprise.clone(),
                        issued,
                    };
                    self.inner
                        .platform
                        .call(message_type::INVOICE_REPORT, &report)
                        .instrument(tracing::debug_span!("platform.report"))
                        .await
                }
                ReportItem::Status(notice) => {
                    self.inner
                        .platform
                        .call(message_type::INVOICE_STATUS, &*notice)
                        .instrument(tracing::debug_span!("platform.report"))
                        .await
                }
            };
            let waiting = self.observe(&self.inner.platform, &answer);
            let result = match answer {
                Ok(a) if a.message_type == message_type::ACK => None,
                Ok(a) if a.message_type == message_type::REFUSAL => {
                    serde_json::from_slice::<Refusal>(&a.payload).ok()
                }
                Ok(a) => Some(Refusal::new(
                    Code::Internal,
                    format!("platform answered {}", a.message_type),
                )),
                Err(e) => {
                    self.retry_later(entry, &e.to_string(), waiting.as_deref())
                        .await?;
                    break;
                }
            };
            let mut tx = self.inner.db.begin_write().await?;
            let settled = self.record_report(&mut tx, entry, result).await?;
            tx.commit().await?;
            if settled == 0 {
                break;
            }
            handled += 1;
        }
        Ok(handled)
    }
}
