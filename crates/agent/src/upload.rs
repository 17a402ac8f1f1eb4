//! Upload: issued invoices to tax, in batches, until tax answers with a receipt.

use super::*;

impl Agent {
    /// Uploads to tax in issue order, a run of due uploads ([`Self::due_run`]) at a time in
    /// one `invoice.upload_batch` (tax checks each invoice after the ones before it, so a
    /// red after its blue in the same batch finds it). Each receipt is verified; the outcomes
    /// are recorded in one transaction. An upload that must wait (transport errors,
    /// `processing`, `upload_number_not_granted` the first few times) is retried with backoff
    /// and, at the head of the queue, holds back the uploads behind it.
    pub(crate) async fn upload_due(&self) -> Result<usize, AgentError> {
        let run = self.due_run(false, UploadBatch::MAX).await?;
        let Some(head) = run.first() else {
            return Ok(0);
        };
        let rows = self.invoice_rows(&run).await?;
        let mut entries = Vec::with_capacity(run.len());
        let mut invoices = Vec::with_capacity(run.len());
        let mut bytes = 0;
        for entry in &run {
            let record: String = rows.of(entry)?.try_get("record")?;
            bytes += record.len();
            if bytes > BATCH_BYTES && !invoices.is_empty() {
                break;
            }
            invoices.push(self.read_wire(&entry.subject, &record).await?);
            entries.push(entry);
        }
        let upload = UploadBatch { invoices };
        let answer = self
            .inner
            .tax
            .call(message_type::INVOICE_UPLOAD_BATCH, &upload)
            .instrument(tracing::debug_span!("tax.upload"))
            .await;
        let waiting = self.observe(&self.inner.tax, &answer);
        let receipts = match answer {
            Ok(a) if a.message_type == message_type::UPLOAD_RECEIPTS => one_each(
                &a,
                self.inner.tax.peer_identity(),
                entries.len(),
                |r: Receipts| r.receipts,
            ),
            Ok(a) => Err(format!(
                "tax answered {}: {}",
                a.message_type,
                String::from_utf8_lossy(&a.payload)
            )),
            Err(e) => Err(e.to_string()),
        };
        let receipts = match receipts {
            Ok(r) => r,
            Err(why) => {
                self.retry_later(head, &why, waiting.as_deref()).await?;
                return Ok(0);
            }
        };
        let mut outcomes = Vec::with_capacity(receipts.len());
        for ((entry, wire), receipt) in entries.iter().zip(&upload.invoices).zip(receipts) {
            outcomes.push(self.upload_outcome(entry, wire, receipt));
            // Each check is a signature verification: the runtime gets its thread back
            // between them.
            tokio::task::yield_now().await;
        }
        let mut tx = self.inner.db.begin_write().await?;
        let mut handled = 0;
        for (entry, outcome) in entries.iter().zip(outcomes) {
            let (receipt, state, reason) = match outcome {
                Ok(o) => o,
                Err(why) => {
                    self.retry_in(&mut tx, entry, &why, None).await?;
                    continue;
                }
            };
            let number = &entry.subject;
            query(
                "UPDATE invoices SET upload = $2, upload_reason = $3, receipt = $4 WHERE number = $1",
            )
            .bind(number)
            .bind(state)
            .bind(&reason)
            .bind(serde_json::to_string(&receipt).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            finish(&mut tx, entry.id).await?;
            enqueue(&mut tx, "status", number).await?;
            audit(
                &mut tx,
                self.inner.tax.peer_identity(),
                if reason.is_some() {
                    "upload.refused"
                } else {
                    "upload.accepted"
                },
                number,
                &serde_json::json!({"receipt_id": receipt.receipt.receipt_id, "reason": reason}),
            )
            .await?;
            if let Some(r) = &reason {
                tracing::warn!(%number, reason = %r, "agent: tax refused an invoice");
            }
            handled += 1;
        }
        tx.commit().await?;
        Ok(handled)
    }

    /// What tax's receipt for an upload settles: the verified receipt, the upload state
    /// (`accepted` or `failed`) and tax's reason; or why the upload must be tried again.
    pub(crate) fn upload_outcome(
        &self,
        entry: &Entry,
        wire: &WireInvoice,
        receipt: SignedReceipt,
    ) -> Result<(SignedReceipt, &'static str, Option<String>), String> {
        let signed = wire.to_signed().map_err(|e| e.to_string())?;
        receipt
            .verify_for(&signed, &self.inner.material.trust.current(), now())
            .map_err(|e| format!("receipt: {e}"))?;
        // Tax may not have recorded the block platform assigned yet: a few more tries
        // before that refusal is taken as final.
        let not_granted =
            receipt.receipt.code.as_deref() == Some(Code::UploadNumberNotGranted.as_str());
        match receipt.receipt.tax_status() {
            None => Err(format!(
                "tax is processing: {}",
                receipt.receipt.reason.unwrap_or_default()
            )),
            Some((TaxStatus::Failed, _)) if not_granted && entry.attempts < 5 => {
                Err(Code::UploadNumberNotGranted.as_str().to_owned())
            }
            Some((status, reason)) => Ok((receipt, status.as_str(), reason)),
        }
    }
}
