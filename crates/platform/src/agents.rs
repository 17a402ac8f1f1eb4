//! Enterprises' agents (开票前置服务装置, the async enterprise-hosted flow).
//!
//! An agent speaks to platform over mutual TLS with envelopes, as an `agent` certificate
//! carrying its enterprise's taxpayer id; the enterprise must be registered with hosting
//! `enterprise`. Messages:
//!
//! - `block.request` → `block.grant`: a block of `block_size` numbers carved from a range tax
//!   granted this platform, then assigned to the agent at tax (`range.assign`) so that tax
//!   accepts the agent's uploads in it. Idempotent by the agent's key: the same key is the
//!   same block (a lost answer never costs numbers).
//! - `quota.request` → `quota.grant`: a share of the current month's credit quota, at most
//!   what remains of it; counted as used here. Idempotent by key.
//! - `invoice.report` → `ack`: an invoice the agent issued with its order. Checked before it
//!   is recorded: the device signature and certificate path, the device belongs to the
//!   enterprise, the arithmetic, the number lies in a block granted to this agent, a red
//!   keeps the red rules against its blue and earlier reds (which the agent reported first).
//!   Recorded with the order and passed on to the enterprise's cloud (outbox `notify`, with the
//!   invoice). The same report again is acknowledged again.
//! - `invoice.status` → `ack`: tax's signed receipt for an agent's upload (verified, and for
//!   this very invoice); the new status goes on to cloud.
//! - `invoice.report_batch` → `report.results`: up to 128 of the two above, in the agent's
//!   queue order, each checked and answered as if it came alone after the ones before it (a
//!   red after its blue, a receipt after its invoice), all recorded in one commit; an invoice
//!   changed by several items gets one notice to cloud. The single messages are batches of
//!   one.

use std::collections::HashSet;

use fapiao_crypto::Role;
use fapiao_issuer::SignedInvoice;
use fapiao_model::red::check_red;
use fapiao_model::{Amount, InvoiceKind};
use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    Ack, BlockRequest, Issued, QuotaGrant, QuotaRequest, RangeAssign, RangeGrant, Refusal, Report,
    ReportBatch, ReportItem, ReportResults, SignedReceipt, StatusNotice, TaxStatus, WireInvoice,
    content_hash, message_type,
};
use fapiao_service::{Incoming, Outgoing};
use fapiao_store::{StoreError, Tx, query, query_scalar};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::numbers::{Carved, carve};
use crate::registry::{Enterprise, Hosting, lock_enterprises, registered};
use crate::step::{Step, audit, china_now, refused};
use crate::{Platform, RECORD};

fn rejected(message: impl Into<String>) -> Step {
    refused(Code::ReportRejected, message)
}

/// A report that names another enterprise than the agent's.
fn reports_for_another(enterprise: &str) -> Step {
    rejected(format!(
        "an agent of {enterprise} reports for {enterprise} only"
    ))
}

/// An item of a report batch after the checks that need nothing on record.
enum Checked<'a> {
    /// An invoice whose device signature and arithmetic checked out.
    Invoice(&'a Issued, Box<SignedInvoice>),
    /// A receipt that checked out.
    Status(Box<CheckedReceipt<'a>>),
    /// Nothing to record (a receipt of an upload tax is still processing).
    Nothing,
    /// Refused already.
    Refused(Refusal),
}

/// A receipt verified against the invoice it names: as on record, or (`from_batch`) as an
/// earlier item of the same batch reported it.
struct CheckedReceipt<'a> {
    notice: &'a StatusNotice,
    receipt: &'a SignedReceipt,
    status: TaxStatus,
    reason: Option<String>,
    from_batch: bool,
}

/// What a report batch's transaction wrote so far.
#[derive(Default)]
struct Written {
    /// Invoices recorded in it.
    recorded: HashSet<String>,
    /// Invoices whose notice to cloud it queued: one notice carries an invoice and its
    /// latest status, however many of the batch's items changed it.
    notified: HashSet<String>,
    /// The kind of each invoice recorded, for the metrics.
    kinds: Vec<&'static str>,
}

impl Written {
    /// Queues the invoice's notice to cloud, once per transaction.
    async fn notify(&mut self, tx: &mut Tx, number: &str) -> Result<(), Step> {
        if self.notified.insert(number.to_owned()) {
            crate::outbox::enqueue(tx, "notify", number).await?;
        }
        Ok(())
    }
}

impl Platform {
    /// Handles an envelope from an agent.
    pub(crate) async fn agent_message(&self, incoming: Incoming) -> Outgoing {
        let agent = incoming.sender.identity();
        let Some(enterprise) = incoming.sender.taxpayer_id.clone() else {
            return Outgoing::refusal(&Refusal::new(
                Code::EnvelopeRejected,
                "an agent certificate carries its enterprise's taxpayer id",
            ));
        };
        let rid = incoming.request_id.clone();
        let result = match incoming.message.header.message_type.as_str() {
            message_type::BLOCK_REQUEST => match incoming.body::<BlockRequest>() {
                Ok(r) => self
                    .grant_block(&agent, &enterprise, &r)
                    .await
                    .map(|g| Outgoing::json(message_type::BLOCK_GRANT, &g)),
                Err(o) => return o,
            },
            message_type::QUOTA_REQUEST => match incoming.body::<QuotaRequest>() {
                Ok(r) => self
                    .grant_quota(&agent, &enterprise, &r)
                    .await
                    .map(|g| Outgoing::json(message_type::QUOTA_GRANT, &g)),
                Err(o) => return o,
            },
            message_type::INVOICE_REPORT => match incoming.body::<Report>() {
                Ok(r) if r.enterprise != enterprise => Err(reports_for_another(&enterprise)),
                Ok(r) => {
                    self.record_one(&agent, &enterprise, ReportItem::Invoice(r.issued), &rid)
                        .await
                }
                Err(o) => return o,
            },
            message_type::INVOICE_STATUS => match incoming.body::<StatusNotice>() {
                Ok(n) => {
                    self.record_one(&agent, &enterprise, ReportItem::Status(Box::new(n)), &rid)
                        .await
                }
                Err(o) => return o,
            },
            message_type::INVOICE_REPORT_BATCH => match incoming.body::<ReportBatch>() {
                Ok(b) if b.enterprise != enterprise => Err(reports_for_another(&enterprise)),
                Ok(b) => self
                    .record_items(&agent, &enterprise, &b.items, &rid)
                    .await
                    .map(|results| {
                        Outgoing::json(message_type::REPORT_RESULTS, &ReportResults { results })
                    }),
                Err(o) => return o,
            },
            other => {
                return Outgoing::refusal(&Refusal::new(
                    Code::InvalidRequest,
                    format!("platform does not take `{other}` messages from agents"),
                ));
            }
        };
        match result {
            Ok(out) => out,
            Err(Step::Refused(r)) => {
                tracing::warn!(request_id = %rid, %agent, code = %r.code, message = %r.message, "agent request refused");
                Outgoing::refusal(&r)
            }
            Err(Step::NeedNumbers { .. }) => Outgoing::refusal(&Refusal::new(
                Code::NumbersExhausted,
                "no invoice number is available; retry shortly",
            )),
            Err(Step::Failed(e) | Step::Voided(e)) => {
                tracing::error!(request_id = %rid, error = %e, "agent request failed");
                Outgoing::refusal(&Refusal::new(Code::Internal, "internal error"))
            }
        }
    }

    /// A report batch of one item (`invoice.report`, `invoice.status`), answered `ack` or
    /// with its refusal.
    async fn record_one(
        &self,
        agent: &str,
        enterprise: &str,
        item: ReportItem,
        rid: &str,
    ) -> Result<Outgoing, Step> {
        let mut results = self
            .record_items(agent, enterprise, std::slice::from_ref(&item), rid)
            .await?;
        match results.pop().flatten() {
            None => Ok(Outgoing::json(message_type::ACK, &Ack {})),
            Some(r) => Ok(Outgoing::refusal(&r)),
        }
    }

    /// The agent's enterprise: registered and enterprise-hosted (and active, to be granted
    /// anything new).
    async fn agent_enterprise(
        &self,
        tx: &mut Tx,
        enterprise: &str,
        to_grant: bool,
    ) -> Result<Enterprise, Step> {
        let e = registered(tx, enterprise).await?;
        if e.hosting != Hosting::Enterprise {
            return Err(refused(
                Code::InvalidRequest,
                format!("enterprise {enterprise} is platform-hosted; it has no agent"),
            ));
        }
        if to_grant && e.status == crate::EnterpriseStatus::Suspended {
            return Err(refused(
                Code::EnterpriseSuspended,
                format!("enterprise {enterprise} is suspended"),
            ));
        }
        Ok(e)
    }

    async fn grant_block(
        &self,
        agent: &str,
        enterprise: &str,
        req: &BlockRequest,
    ) -> Result<RangeGrant, Step> {
        if req.key.is_empty() || req.key.len() > 100 {
            return Err(refused(Code::InvalidRequest, "key: 1 to 100 characters"));
        }
        let mut granted = None;
        for attempt in 0..2 {
            let mut tx = self.inner.db.begin_write().await?;
            if let Some(g) = block_grant_of(&mut tx, agent, &req.key).await? {
                granted = Some(g);
                break;
            }
            let e = self.agent_enterprise(&mut tx, enterprise, true).await?;
            let this_year = u8::try_from(china_now().year() % 100).unwrap_or(0);
            if req.province != e.province_code() || req.year != this_year {
                return Err(refused(
                    Code::InvalidRequest,
                    format!(
                        "blocks of {enterprise} are for year {this_year:02}, province {:02}",
                        e.province_code()
                    ),
                ));
            }
            let size = i64::try_from(self.inner.options.block_size).unwrap_or(1000);
            let Some(Carved {
                channel,
                first,
                last,
            }) = carve(&mut tx, req.year, req.province, size).await?
            else {
                drop(tx);
                if attempt == 0 {
                    self.ensure_range(req.year, req.province).await?;
                }
                continue;
            };
            query(
                "INSERT INTO agent_grants (agent, key, kind, enterprise, year, province, channel, first, last, at)
                 VALUES ($1, $2, 'block', $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(agent)
            .bind(&req.key)
            .bind(enterprise)
            .bind(i64::from(req.year))
            .bind(i64::from(req.province))
            .bind(channel)
            .bind(first)
            .bind(last)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                agent,
                "block.granted",
                enterprise,
                &serde_json::json!({"key": req.key, "year": req.year, "province": req.province,
                                    "channel": channel, "first": first, "last": last}),
            )
            .await?;
            tx.commit().await?;
            let g = RangeGrant {
                year: req.year,
                province: req.province,
                channel: u8::try_from(channel).map_err(|_| Step::Failed("channel".into()))?,
                first: u64::try_from(first).map_err(|_| Step::Failed("first".into()))?,
                last: u64::try_from(last).map_err(|_| Step::Failed("last".into()))?,
            };
            granted = Some((g, false));
            break;
        }
        let Some((grant, assigned)) = granted else {
            return Err(refused(
                Code::NumbersExhausted,
                "no invoice number is available; retry shortly",
            ));
        };
        if !assigned {
            // Tax must know the block is the agent's before the agent uploads from it; until
            // it does, the agent is told to retry with the same key.
            let answer = self
                .inner
                .tax
                .call(
                    message_type::RANGE_ASSIGN,
                    &RangeAssign {
                        uploader: agent.to_owned(),
                        range: grant,
                    },
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "assigning a block at tax failed");
                    refused(
                        Code::TaxUnavailable,
                        "tax could not be reached to record the block; retry with the same key",
                    )
                })?;
            let echoed: Option<RangeGrant> = (answer.message_type == message_type::RANGE_GRANT)
                .then(|| answer.parse(self.inner.tax.peer_identity()).ok())
                .flatten();
            if echoed != Some(grant) {
                return Err(Step::Failed(format!(
                    "tax answered {} to a range assignment: {}",
                    answer.message_type,
                    String::from_utf8_lossy(&answer.payload)
                )));
            }
            let mut tx = self.inner.db.begin_write().await?;
            query("UPDATE agent_grants SET assigned = 1 WHERE agent = $1 AND key = $2")
                .bind(agent)
                .bind(&req.key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(grant)
    }

    async fn grant_quota(
        &self,
        agent: &str,
        enterprise: &str,
        req: &QuotaRequest,
    ) -> Result<QuotaGrant, Step> {
        if req.key.is_empty() || req.key.len() > 100 {
            return Err(refused(Code::InvalidRequest, "key: 1 to 100 characters"));
        }
        let asked = Amount::parse(&req.amount)
            .ok()
            .filter(|a| !a.is_negative() && !a.is_zero())
            .ok_or_else(|| refused(Code::InvalidRequest, "amount: a positive decimal"))?;
        let mut tx = self.inner.db.begin_write().await?;
        // The month's quota is read, then written.
        lock_enterprises(&mut tx, &[enterprise]).await?;
        let existing: Option<(String, String)> = query(
            "SELECT month, amount FROM agent_grants WHERE agent = $1 AND key = $2 AND kind = 'quota'",
        )
        .bind(agent)
        .bind(&req.key)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, StoreError>((r.try_get("month")?, r.try_get("amount")?)))
        .transpose()?;
        if let Some((month, amount)) = existing {
            return Ok(QuotaGrant { month, amount });
        }
        let e = self.agent_enterprise(&mut tx, enterprise, true).await?;
        let at = china_now();
        let month = format!("{:04}-{:02}", at.year(), u8::from(at.month()));
        if req.month != month {
            return Err(refused(
                Code::InvalidRequest,
                format!("quota is granted for the current month ({month}) only"),
            ));
        }
        let used: Option<String> =
            query_scalar("SELECT used FROM quota_usage WHERE enterprise = $1 AND month = $2")
                .bind(enterprise)
                .bind(&month)
                .fetch_optional(&mut *tx)
                .await?;
        let used = used
            .map(|u| Amount::parse(&u))
            .transpose()
            .map_err(|err| Step::Failed(err.to_string()))?
            .unwrap_or_default();
        let left = e.monthly_quota - used;
        let grant = if left.is_negative() {
            Amount::default()
        } else if asked > left {
            left
        } else {
            asked
        };
        self.write_quota(&mut tx, &e, (month.clone(), used + grant))
            .await?;
        query(
            "INSERT INTO agent_grants (agent, key, kind, enterprise, month, amount, at)
             VALUES ($1, $2, 'quota', $3, $4, $5, $6)",
        )
        .bind(agent)
        .bind(&req.key)
        .bind(enterprise)
        .bind(&month)
        .bind(grant.to_string())
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            agent,
            "quota.granted",
            enterprise,
            &serde_json::json!({"key": req.key, "month": month, "asked": asked.to_string(), "granted": grant.to_string()}),
        )
        .await?;
        tx.commit().await?;
        Ok(QuotaGrant {
            month,
            amount: grant.to_string(),
        })
    }

    /// Checks and records a report batch's items in order, in one write transaction; one
    /// result per item (`None`: recorded, or on record already). The checks that need nothing
    /// on record (signatures, certificate paths, arithmetic) run first, outside the write
    /// turn. A refused item writes nothing; a failure fails the whole batch (nothing is
    /// recorded, and the agent sends it again).
    async fn record_items(
        &self,
        agent: &str,
        enterprise: &str,
        items: &[ReportItem],
        rid: &str,
    ) -> Result<Vec<Option<Refusal>>, Step> {
        if items.is_empty() || items.len() > ReportBatch::MAX {
            return Err(refused(
                Code::InvalidRequest,
                format!("a report batch holds 1 to {} items", ReportBatch::MAX),
            ));
        }
        let mut checked = Vec::with_capacity(items.len());
        for item in items {
            let c = match item {
                ReportItem::Invoice(issued) => match self.check_invoice(enterprise, issued) {
                    Ok(signed) => Checked::Invoice(issued, Box::new(signed)),
                    Err(r) => Checked::Refused(r),
                },
                ReportItem::Status(notice) => {
                    self.check_receipt(enterprise, notice, &checked).await?
                }
            };
            checked.push(c);
            // A verification is a fraction of a millisecond: the runtime gets its thread back
            // between them.
            tokio::task::yield_now().await;
        }
        let mut tx = self.inner.db.begin_write().await?;
        // What is on record of the enterprise is read, then written: reports of its agent
        // reaching two replicas are recorded one after the other.
        lock_enterprises(&mut tx, &[enterprise]).await?;
        let e = self.agent_enterprise(&mut tx, enterprise, false).await?;
        let mut written = Written::default();
        let mut results = Vec::with_capacity(checked.len());
        for c in checked {
            let result = match c {
                Checked::Invoice(issued, signed) => {
                    self.record_invoice(&mut tx, agent, &e, issued, &signed, rid, &mut written)
                        .await
                }
                Checked::Status(receipt) => {
                    self.record_receipt(&mut tx, agent, enterprise, &receipt, &mut written)
                        .await
                }
                Checked::Nothing => Ok(()),
                Checked::Refused(r) => Err(Step::Refused(r)),
            };
            results.push(match result {
                Ok(()) => None,
                Err(Step::Refused(r)) => {
                    tracing::warn!(request_id = %rid, %agent, code = %r.code, message = %r.message, "agent report refused");
                    Some(r)
                }
                Err(other) => return Err(other),
            });
        }
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await?;
        if !written.notified.is_empty() {
            self.inner.wake.notify_one();
        }
        for kind in written.kinds {
            self.inner.registry.inc(
                "fapiao_invoices_issued_total",
                "Invoices issued, by kind and hosting mode.",
                &[("kind", kind), ("mode", "enterprise")],
            );
        }
        Ok(results)
    }

    /// An agent's invoice, checked against nothing on record: the device signature and
    /// certificate path, the arithmetic (the record re-read with every derived value
    /// recomputed), the seller and the order.
    fn check_invoice(&self, enterprise: &str, issued: &Issued) -> Result<SignedInvoice, Refusal> {
        let rejected = |m: String| Refusal::new(Code::ReportRejected, m);
        let signed = issued
            .invoice
            .to_signed()
            .map_err(|e| rejected(e.to_string()))?;
        tracing::debug_span!("invoice.verify")
            .in_scope(|| {
                fapiao_issuer::verify(&signed, &self.inner.material.trust.current(), now())
            })
            .map_err(|e| rejected(e.to_string()))?;
        let d = signed.invoice.draft();
        if d.seller().taxpayer_id.as_str() != enterprise {
            return Err(rejected("the seller is not the agent's enterprise".into()));
        }
        if d.order_id().map(fapiao_model::OrderId::as_str) != Some(issued.order_id.as_str()) {
            return Err(rejected("the invoice names another order".into()));
        }
        Ok(signed)
    }

    /// Tax's receipt for an agent's upload, verified (tax's signature, this number, this
    /// content hash) against the invoice as it is on record, or else as an earlier item of
    /// the batch reported it.
    async fn check_receipt<'a>(
        &self,
        enterprise: &str,
        notice: &'a StatusNotice,
        before: &[Checked<'_>],
    ) -> Result<Checked<'a>, Step> {
        let refuse = |code: Code, m: String| Ok(Checked::Refused(Refusal::new(code, m)));
        let Some(receipt) = &notice.receipt else {
            return refuse(
                Code::ReportRejected,
                "a status report carries tax's receipt".into(),
            );
        };
        if receipt.receipt.number != notice.number || notice.enterprise != enterprise {
            return refuse(
                Code::ReportRejected,
                "the receipt is for another invoice".into(),
            );
        }
        let Some((status, reason)) = receipt.receipt.tax_status() else {
            return Ok(Checked::Nothing);
        };
        let stored = {
            let mut reader = self.inner.db.read().await?;
            self.invoice_in(&mut reader, &notice.number).await?
        }
        .filter(|s| s.enterprise == enterprise);
        let (signed, from_batch) = match stored {
            Some(s) => (
                std::borrow::Cow::Owned(
                    s.invoice
                        .to_signed()
                        .map_err(|e| Step::Failed(e.to_string()))?,
                ),
                false,
            ),
            None => {
                let earlier = before.iter().rev().find_map(|c| match c {
                    Checked::Invoice(_, signed)
                        if signed.invoice.number().as_str() == notice.number =>
                    {
                        Some(&**signed)
                    }
                    _ => None,
                });
                let Some(signed) = earlier else {
                    return refuse(
                        Code::ReportOutOfOrder,
                        format!("invoice {} has not been reported", notice.number),
                    );
                };
                (std::borrow::Cow::Borrowed(signed), true)
            }
        };
        if let Err(e) = receipt.verify_for(&signed, &self.inner.material.trust.current(), now()) {
            return refuse(Code::ReportRejected, format!("receipt: {e}"));
        }
        Ok(Checked::Status(Box::new(CheckedReceipt {
            notice,
            receipt,
            status,
            reason,
            from_batch,
        })))
    }

    /// Records a checked invoice of the agent's: the number lies in a block granted to this
    /// agent, neither the number nor the order is on record with another invoice, a red keeps
    /// the red rules against its blue and the reds before it (those of this transaction
    /// included). The same report again is recorded already.
    #[expect(clippy::too_many_arguments, reason = "one report and where it goes")]
    async fn record_invoice(
        &self,
        tx: &mut Tx,
        agent: &str,
        e: &Enterprise,
        issued: &Issued,
        signed: &SignedInvoice,
        rid: &str,
        written: &mut Written,
    ) -> Result<(), Step> {
        let enterprise = e.taxpayer_id.as_str();
        let invoice = &signed.invoice;
        let d = invoice.draft();
        let number = invoice.number();
        let in_block: i64 = query_scalar(
            "SELECT COUNT(*) FROM agent_grants WHERE agent = $1 AND kind = 'block' AND year = $2
             AND province = $3 AND channel = $4 AND first <= $5 AND last >= $5",
        )
        .bind(agent)
        .bind(i64::from(number.year()))
        .bind(i64::from(number.province().code()))
        .bind(i64::from(number.channel()))
        .bind(i64::try_from(number.sequence()).unwrap_or(-1))
        .fetch_one(&mut **tx)
        .await?;
        if in_block == 0 {
            return Err(rejected(format!(
                "number {number} lies in no block granted to {agent}"
            )));
        }
        if let Some(known) = self.invoice_in(tx, number.as_str()).await? {
            // The same report again (its acknowledgement was lost): the same signed content.
            let known = known
                .invoice
                .to_signed()
                .map_err(|e| Step::Failed(e.to_string()))?;
            if content_hash(&known) == content_hash(signed) && known.signature == signed.signature {
                return Ok(());
            }
            return Err(rejected(format!(
                "another invoice was reported under number {number}"
            )));
        }
        let prior_order: Option<String> =
            query_scalar("SELECT number FROM orders WHERE enterprise = $1 AND order_id = $2")
                .bind(enterprise)
                .bind(&issued.order_id)
                .fetch_optional(&mut **tx)
                .await?;
        if prior_order.is_some() {
            return Err(rejected(format!(
                "order {} was reported with another invoice",
                issued.order_id
            )));
        }
        let blue_number = match d.kind() {
            InvoiceKind::Red(r) => Some(r.blue_number.as_str().to_owned()),
            InvoiceKind::Blue => None,
        };
        if let Some(blue) = &blue_number {
            let Some(blue_stored) = self
                .invoice_in(tx, blue)
                .await?
                .filter(|b| b.enterprise == enterprise)
            else {
                return Err(refused(
                    Code::ReportOutOfOrder,
                    format!("blue invoice {blue} has not been reported"),
                ));
            };
            let blue_invoice = blue_stored
                .invoice
                .to_signed()
                .map_err(|err| Step::Failed(err.to_string()))?
                .invoice;
            let prior: Vec<(String, String)> = fapiao_store::query_as(
                "SELECT number, record FROM invoices WHERE blue_number = $1 ORDER BY issued_at, number",
            )
            .bind(blue)
            .fetch_all(&mut **tx)
            .await?;
            let mut prior_invoices = Vec::with_capacity(prior.len());
            for (n, r) in &prior {
                prior_invoices.push(self.read_record(n, r).await?);
            }
            check_red(d, &blue_invoice, &prior_invoices)
                .map_err(|err| rejected(err.to_string()))?;
            let form = issued
                .form
                .as_ref()
                .ok_or_else(|| rejected("a red names its red-letter form"))?;
            // A form number on record already is refused, and nothing is written (a failed
            // statement would end a PostgreSQL transaction).
            let added = query(
                "INSERT INTO red_forms (number, blue_number, enterprise, reason, status, scope, buyer_confirmation, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, $7) ON CONFLICT (number) DO NOTHING",
            )
            .bind(&form.number)
            .bind(blue)
            .bind(enterprise)
            .bind(&form.reason)
            .bind(&form.status)
            .bind(serde_json::json!({"opened_by": agent}).to_string())
            .bind(now().unix_timestamp())
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if added == 0 {
                return Err(rejected(format!(
                    "red-letter form {} is on record already",
                    form.number
                )));
            }
        }
        let json = Zeroizing::new(
            serde_json::to_string(
                &WireInvoice::from_signed(signed).map_err(|err| Step::Failed(err.to_string()))?,
            )
            .map_err(|err| Step::Failed(err.to_string()))?,
        );
        let record = self
            .inner
            .vault
            .seal_str(tx, RECORD, signed.invoice.number().as_str(), &json)
            .await?;
        let total = d.totals().total;
        let kind = if blue_number.is_some() { "red" } else { "blue" };
        query(
            "INSERT INTO invoices (number, enterprise, order_id, kind, blue_number, form_number, issued_at, total, record, tax_status, issued_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10)",
        )
        .bind(number.as_str())
        .bind(enterprise)
        .bind(&issued.order_id)
        .bind(kind)
        .bind(&blue_number)
        .bind(issued.form.as_ref().map(|f| f.number.clone()))
        .bind(fapiao_model::datetime::format(invoice.issued_at()))
        .bind(total.to_string())
        .bind(record)
        .bind(agent)
        .execute(&mut **tx)
        .await?;
        query(
            "INSERT INTO orders (enterprise, order_id, request_hash, number) VALUES ($1, $2, $3, $4)",
        )
        .bind(enterprise)
        .bind(&issued.order_id)
        .bind(&issued.request_hash)
        .bind(number.as_str())
        .execute(&mut **tx)
        .await?;
        written.notify(tx, number.as_str()).await?;
        written.recorded.insert(number.as_str().to_owned());
        written.kinds.push(kind);
        audit(
            tx,
            agent,
            if blue_number.is_some() {
                "red.reported"
            } else {
                "invoice.reported"
            },
            number.as_str(),
            &serde_json::json!({"enterprise": enterprise, "order_id": issued.order_id,
                                "total": total.to_string(), "request_id": rid}),
        )
        .await?;
        Ok(())
    }

    /// Records a verified receipt of the agent's upload: the invoice is on record, issued by
    /// this agent; its new status goes on to cloud.
    async fn record_receipt(
        &self,
        tx: &mut Tx,
        agent: &str,
        enterprise: &str,
        checked: &CheckedReceipt<'_>,
        written: &mut Written,
    ) -> Result<(), Step> {
        let number = checked.notice.number.as_str();
        let row = query(
            "SELECT issued_by, tax_status FROM invoices WHERE number = $1 AND enterprise = $2",
        )
        .bind(number)
        .bind(enterprise)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(row) = row else {
            return Err(refused(
                Code::ReportOutOfOrder,
                format!("invoice {number} has not been reported"),
            ));
        };
        // Checked against this batch's invoice: it must be the one recorded just now (one
        // on record since the check was not what the receipt was checked against).
        if checked.from_batch && !written.recorded.contains(number) {
            return Err(refused(
                Code::ReportOutOfOrder,
                format!("invoice {number} was reported meanwhile; send its receipt again"),
            ));
        }
        let by: Option<String> = row.try_get("issued_by")?;
        if by.as_deref() != Some(agent) {
            return Err(rejected(format!(
                "invoice {number} was not issued by {agent}"
            )));
        }
        let current: String = row.try_get("tax_status")?;
        if current == checked.status.as_str() {
            return Ok(());
        }
        let receipt = checked.receipt;
        query(
            "UPDATE invoices SET tax_status = $2, tax_reason = $3, receipt = $4 WHERE number = $1",
        )
        .bind(number)
        .bind(checked.status.as_str())
        .bind(&checked.reason)
        .bind(serde_json::to_string(receipt).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
        written.notify(tx, number).await?;
        audit(
            tx,
            agent,
            "upload.reported",
            number,
            &serde_json::json!({"receipt_id": receipt.receipt.receipt_id, "status": checked.status.as_str(), "reason": checked.reason}),
        )
        .await?;
        Ok(())
    }
}

/// A block already granted under `key`, and whether tax knows it is the agent's.
async fn block_grant_of(
    tx: &mut Tx,
    agent: &str,
    key: &str,
) -> Result<Option<(RangeGrant, bool)>, Step> {
    let row = query(
        "SELECT year, province, channel, first, last, assigned FROM agent_grants
         WHERE agent = $1 AND key = $2 AND kind = 'block'",
    )
    .bind(agent)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let small = |c: &str| -> Result<u8, Step> {
        u8::try_from(r.try_get::<i64, _>(c)?).map_err(|_| Step::Failed(c.to_owned()))
    };
    let big = |c: &str| -> Result<u64, Step> {
        u64::try_from(r.try_get::<i64, _>(c)?).map_err(|_| Step::Failed(c.to_owned()))
    };
    Ok(Some((
        RangeGrant {
            year: small("year")?,
            province: small("province")?,
            channel: small("channel")?,
            first: big("first")?,
            last: big("last")?,
        },
        r.try_get::<i64, _>("assigned")? == 1,
    )))
}

/// Whether a sender may use the agent API.
pub(crate) fn is_agent(role: Role) -> bool {
    role == Role::Agent
}
