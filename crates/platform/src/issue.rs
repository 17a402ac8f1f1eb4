//! Orders from clouds: admission, qualification, validation, and issuing in one write
//! transaction.
//!
//! Order of checks for a blue order: the sender is a registered cloud
//! (`cloud_not_registered`); the enterprise exists (`enterprise_unknown`), belongs to that
//! cloud (`enterprise_of_another_cloud`), is active (`enterprise_suspended`) and platform-hosted;
//! the order_id was not used with another body (`order_conflict`; the same body returns the
//! original invoice); the order is valid (`invalid_order`, every finding); the type is allowed
//! (`invoice_type_not_allowed`); the total is within the per-invoice limit
//! (`over_invoice_limit`); the month stays within the quota (`over_quota`). The protocol
//! version is checked before any of this by the envelope endpoint.
//!
//! Then, in one `BEGIN IMMEDIATE` transaction: admission and idempotency again (they may have
//! changed), quota, a number from the enterprise's block (carved from a range granted by tax,
//! asked for when none is left), the device signature, and the invoice, order, quota, block
//! and outbox rows. Two orders racing for the last of a quota are serialized by the write lock.

use fapiao_crypto::Role;
use fapiao_model::red::{RedLetterForm, RedLetterFormNumber, RedReason, RedScope, plan_red};
use fapiao_model::{
    Amount, Finding, FindingCode, Invoice, InvoiceDraft, InvoiceKind, InvoiceType, Order, OrderId,
    ValidationErrors,
};
use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    BatchAnswer, FormWire, InvoiceFetch, InvoiceList, IssueBatch, IssueOrder, OfdSign, OrderAnswer,
    RedOrder, Refusal, SignedReceipt, TaxStatus, WireInvoice, message_type,
};
use fapiao_service::{EnvelopeHandler, Incoming, Outgoing};
use fapiao_store::{Arrival, Executor, StoreError, Tx, Waiting, query, query_scalar};
use serde::Serialize;
use time::PrimitiveDateTime;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::issuing::{Earlier, Issuing, Known, Staged};
use crate::registry::{
    Enterprise, EnterpriseStatus, Hosting, lock_enterprises, unknown_enterprise,
};
use crate::step::{Step, audit, refused};
use crate::{Platform, RECORD};

/// An invoice as the platform holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredInvoice {
    /// Number.
    pub number: String,
    /// Seller's taxpayer id.
    pub enterprise: String,
    /// The order it was issued for.
    pub order_id: String,
    /// `blue` or `red`.
    pub kind: String,
    /// Tax status.
    pub tax_status: TaxStatus,
    /// Why tax refused it.
    pub tax_reason: Option<String>,
    /// The signed invoice.
    pub invoice: WireInvoice,
    /// tax's receipt.
    pub receipt: Option<SignedReceipt>,
    /// The red's form.
    pub form: Option<FormWire>,
}

pub(crate) use fapiao_protocol::client::china_now;

fn one_finding(path: &str, code: FindingCode, message: String) -> Refusal {
    ValidationErrors::from_findings(vec![Finding::new(path, code, message)]).map_or_else(
        || Refusal::new(Code::InvalidOrder, "invalid order"),
        |e| Refusal::invalid(&e),
    )
}

/// A red request's findings: `red_invalid`, not the blue order's `invalid_order`.
fn red_refusal(mut r: Refusal) -> Refusal {
    if r.code == Code::InvalidOrder.as_str() {
        r.code = Code::RedInvalid.as_str().to_owned();
        r.message = r.message.replace("the order has", "the red request has");
    }
    r
}

fn type_name(t: InvoiceType) -> &'static str {
    match t {
        InvoiceType::Special => "special",
        InvoiceType::Ordinary => "ordinary",
    }
}

impl EnvelopeHandler for Platform {
    /// Orders: the message id is remembered in the transaction that issues.
    fn remembers_in_transaction(&self, message_type: &str) -> bool {
        [
            message_type::ORDER_ISSUE,
            message_type::ORDER_BATCH,
            message_type::ORDER_RED,
        ]
        .contains(&message_type)
    }

    async fn handle(&self, incoming: Incoming) -> Outgoing {
        let rid = incoming.request_id.clone();
        if crate::agents::is_agent(incoming.sender.role) {
            return self.agent_message(incoming).await;
        }
        if incoming.sender.role != Role::Cloud {
            return Outgoing::refusal(&Refusal::new(
                Code::CloudNotRegistered,
                "only cloud platforms send orders",
            ));
        }
        let cloud = incoming.sender.identity();
        // A cloud reconciling: its enterprises' invoices, and their notices.
        match incoming.message.header.message_type.as_str() {
            message_type::INVOICES_LIST => {
                return match incoming.body::<InvoiceList>() {
                    Ok(q) => match self.list_for_cloud(&cloud, &q).await {
                        Ok(Ok(page)) => Outgoing::json(message_type::INVOICES_PAGE, &page),
                        Ok(Err(r)) => Outgoing::refusal(&r),
                        Err(e) => Outgoing::refusal(&reconcile_failed(&rid, &e)),
                    },
                    Err(out) => out,
                };
            }
            message_type::INVOICES_FETCH => {
                return match incoming.body::<InvoiceFetch>() {
                    Ok(q) => match self.fetch_for_cloud(&cloud, &q).await {
                        Ok(Ok(found)) => Outgoing::json(message_type::INVOICES_FOUND, &found),
                        Ok(Err(r)) => Outgoing::refusal(&r),
                        Err(e) => Outgoing::refusal(&reconcile_failed(&rid, &e)),
                    },
                    Err(out) => out,
                };
            }
            message_type::OFD_SIGN => {
                return match incoming.body::<OfdSign>() {
                    Ok(q) => match self.sign_ofd_for_cloud(&cloud, &q).await {
                        Ok(Ok(signature)) => {
                            Outgoing::json(message_type::OFD_SIGNATURE, &signature)
                        }
                        Ok(Err(r)) => Outgoing::refusal(&r),
                        Err(e) => Outgoing::refusal(&reconcile_failed(&rid, &e)),
                    },
                    Err(out) => out,
                };
            }
            _ => {}
        }
        let result = match incoming.message.header.message_type.as_str() {
            message_type::ORDER_ISSUE => match incoming.body::<IssueOrder>() {
                Ok(o) => self.issue_blue(&cloud, &o, &incoming.arrival, &rid).await,
                Err(out) => return out,
            },
            message_type::ORDER_BATCH => match incoming.body::<IssueBatch>() {
                Ok(b) if b.orders.is_empty() || b.orders.len() > IssueBatch::MAX => {
                    return Outgoing::refusal(&Refusal::new(
                        Code::InvalidRequest,
                        format!("a batch holds 1 to {} orders", IssueBatch::MAX),
                    ));
                }
                Ok(b) => {
                    let answers = self
                        .issue_batch(&cloud, &b.orders, &incoming.arrival, &rid)
                        .await
                        .into_iter()
                        .map(|r| answer_of(r, &cloud, &rid))
                        .collect();
                    return Outgoing::json(
                        message_type::ORDER_BATCH_ANSWER,
                        &BatchAnswer { answers },
                    );
                }
                Err(out) => return out,
            },
            message_type::ORDER_RED => match incoming.body::<RedOrder>() {
                Ok(o) => self.issue_red(&cloud, &o, &incoming.arrival, &rid).await,
                Err(out) => return out,
            },
            other => {
                return Outgoing::refusal(&Refusal::new(
                    Code::InvalidRequest,
                    format!("platform does not take `{other}` messages"),
                ));
            }
        };
        Outgoing::json(message_type::ORDER_ANSWER, &answer_of(result, &cloud, &rid))
    }
}

/// The answer to an order from the outcome of its steps.
fn answer_of(result: Result<OrderAnswer, Step>, cloud: &str, rid: &str) -> OrderAnswer {
    match result {
        Ok(a) => a,
        Err(Step::Refused(r)) => {
            tracing::info!(request_id = %rid, %cloud, code = %r.code, "order refused");
            OrderAnswer::Refused(r)
        }
        Err(Step::NeedNumbers { year, province }) => {
            tracing::warn!(request_id = %rid, year, province, "no invoice numbers available");
            OrderAnswer::Refused(Refusal::new(
                Code::NumbersExhausted,
                "no invoice number is available; retry shortly",
            ))
        }
        Err(Step::Failed(e) | Step::Voided(e)) => {
            tracing::error!(request_id = %rid, error = %e, "order failed");
            OrderAnswer::Refused(Refusal::new(Code::Internal, "internal error"))
        }
    }
}

impl Platform {
    /// Admits an order of `enterprise` sent by `cloud` (both registered, the enterprise
    /// active, hosted here and of that cloud) and finds the earlier answer to the same order:
    /// `Some` when `order_id` was issued before with this request, a conflict when with
    /// another, `None` when it is new. Reads the admission unless `known` has it (one query).
    async fn admit(
        &self,
        conn: &mut dyn Executor,
        known: &mut Known,
        cloud: &str,
        enterprise: &str,
        order_id: &str,
        request_hash: &str,
    ) -> Result<(Enterprise, Option<OrderAnswer>), Step> {
        known
            .read_admissions(conn, cloud, &[(enterprise, order_id)])
            .await?;
        let a = known
            .admission(cloud, enterprise, order_id)
            .ok_or_else(|| Step::Failed(format!("no admission read for order {order_id}")))?;
        if !a.cloud_known {
            return Err(refused(
                Code::CloudNotRegistered,
                format!("{cloud} is not registered with this platform"),
            ));
        }
        let Some(e) = &a.enterprise else {
            return Err(unknown_enterprise(enterprise));
        };
        if e.cloud != cloud {
            return Err(refused(
                Code::EnterpriseOfAnotherCloud,
                format!("enterprise {enterprise} is not registered under {cloud}"),
            ));
        }
        if e.status == EnterpriseStatus::Suspended {
            return Err(refused(
                Code::EnterpriseSuspended,
                format!("enterprise {enterprise} is suspended"),
            ));
        }
        if e.hosting != Hosting::Platform {
            return Err(refused(
                Code::InvalidRequest,
                format!("enterprise {enterprise} issues on its own premises (hosting: enterprise)"),
            ));
        }
        let e = e.clone();
        let Some(earlier) = a.earlier.clone() else {
            return Ok((e, None));
        };
        if earlier.hash() != request_hash {
            return Err(refused(
                Code::OrderConflict,
                format!("order_id {order_id} was already used with a different request"),
            ));
        }
        let answer = match earlier {
            Earlier::Here { answer, .. } => *answer,
            Earlier::Stored { number, .. } => {
                let stored = self.invoice_in(conn, &number).await?.ok_or_else(|| {
                    Step::Failed(format!("order {order_id} names missing invoice {number}"))
                })?;
                OrderAnswer::Issued {
                    order_id: order_id.to_owned(),
                    invoice: stored.invoice,
                    tax_status: stored.tax_status,
                    form: stored.form,
                }
            }
        };
        Ok((e, Some(answer)))
    }

    async fn read_tx(&self) -> Result<Tx, Step> {
        Ok(self.inner.db.begin_read().await?)
    }

    /// One blue order (`order.issue`). Orders that come while other transactions hold the
    /// writer turn share one transaction and its commit ([`fapiao_store::Db::grouped`]);
    /// each is issued exactly as alone, and answered after that commit. Validation is done
    /// before the order queues, outside the turn.
    async fn issue_blue(
        &self,
        cloud: &str,
        o: &IssueOrder,
        arrival: &Arrival,
        rid: &str,
    ) -> Result<OrderAnswer, Step> {
        let queued = Queued {
            cloud: cloud.to_owned(),
            draft: prepare_blue(&self.inner.catalog, o),
            order: o.clone(),
            arrival: arrival.clone(),
            rid: rid.to_owned(),
        };
        let platform = self.clone();
        self.inner
            .db
            .grouped(
                &self.inner.singles,
                queued,
                |q| Some(&q.arrival),
                move |tx, group| async move { platform.issue_group(tx, group).await },
                |_, e| Err(Step::Failed(e.to_string())),
            )
            .await
            .unwrap_or_else(|| Err(Step::Failed("the order's group ended unanswered".into())))
    }

    /// Issues a group of single orders in `tx` (and after it, as [`Self::issue_jobs`] goes
    /// on) and answers each.
    async fn issue_group(&self, tx: Tx, group: Vec<Waiting<Queued, Answer>>) {
        let jobs: Vec<Job<'_>> = group.iter().map(|w| w.job.job()).collect();
        let results = self.issue_jobs(&jobs, Some(tx)).await;
        for (w, r) in group.into_iter().zip(results) {
            w.answer.send(r);
        }
    }

    /// Many blue orders of one message ([`Self::issue_jobs`]).
    pub(crate) async fn issue_batch(
        &self,
        cloud: &str,
        orders: &[IssueOrder],
        arrival: &Arrival,
        rid: &str,
    ) -> Vec<Result<OrderAnswer, Step>> {
        let drafts: Vec<Result<InvoiceDraft, Refusal>> = orders
            .iter()
            .map(|o| prepare_blue(&self.inner.catalog, o))
            .collect();
        let jobs: Vec<Job<'_>> = orders
            .iter()
            .zip(&drafts)
            .map(|(order, draft)| Job {
                cloud,
                order,
                draft,
                arrival,
                rid,
            })
            .collect();
        self.issue_jobs(&jobs, None).await
    }

    /// Blue orders, each issued exactly as alone (admission, idempotency, validation,
    /// qualification, quota, number, signature), in one write transaction ([`Issuing`]) —
    /// `tx` if given (its jobs' arrivals remembered, as by
    /// [`fapiao_store::Db::begin_group`]): the admission of every order is read in one query
    /// per cloud, and the invoices are written together just before the one durable commit,
    /// made before anything is answered. A refused order has written nothing; an order whose
    /// message is a replay is refused. When numbers run out, what was issued so far is
    /// committed, a range is asked of tax (once per year and province), and the orders go on
    /// in a new transaction. An order that fails (the database or the device, not the order)
    /// fails the transaction it is in: nothing issued in it is kept and each of its orders is
    /// answered with the failure, so the ERP retries them; the rest go on in a new
    /// transaction.
    async fn issue_jobs(
        &self,
        jobs: &[Job<'_>],
        mut tx: Option<Tx>,
    ) -> Vec<Result<OrderAnswer, Step>> {
        let mut results: Vec<Result<OrderAnswer, Step>> = Vec::with_capacity(jobs.len());
        // The `(year, province)`s a range was asked for: once each.
        let mut ranged: Vec<(u8, u8)> = Vec::new();
        while results.len() < jobs.len() {
            let from = results.len();
            let (mut run, fresh) = match self.begin_issuing(tx.take(), &jobs[from..]).await {
                Ok(begun) => begun,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let mut issued = 0usize;
            let mut need = None;
            let mut failed = None;
            for (job, fresh) in jobs[from..].iter().zip(fresh) {
                if !fresh {
                    // The envelope layer refuses the message itself; this answer is not sent.
                    results.push(Err(refused(
                        Code::RequestReplayed,
                        "the message was received before",
                    )));
                    continue;
                }
                match self.issue_blue_in(&mut run, job).await {
                    Ok((answer, new)) => {
                        issued += usize::from(new);
                        results.push(Ok(answer));
                    }
                    Err(Step::NeedNumbers { year, province })
                        if !ranged.contains(&(year, province)) =>
                    {
                        need = Some((year, province));
                        break;
                    }
                    Err(Step::Voided(m)) => results.push(Err(Step::Failed(m))),
                    Err(Step::Failed(m)) => {
                        failed = Some(m);
                        break;
                    }
                    Err(refusal) => results.push(Err(refusal)),
                }
            }
            let failing = failed.is_some();
            let kept = match failed {
                Some(m) => {
                    drop(run); // rolled back
                    Err(m)
                }
                None => run
                    .commit(&self.inner.instance)
                    .instrument(tracing::debug_span!("db.commit"))
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(m) = kept {
                for r in &mut results[from..] {
                    *r = Err(Step::Failed(m.clone()));
                }
                if failing {
                    results.push(Err(Step::Failed(m)));
                }
                issued = 0;
            }
            if issued > 0 {
                self.inner.wake.notify_one();
                for _ in 0..issued {
                    self.count_issued("blue");
                }
            }
            if let Some((year, province)) = need {
                ranged.push((year, province));
                if let Err(e) = self.ensure_range(year, province).await {
                    results.push(Err(e));
                }
            }
        }
        results
    }

    /// Begins a write transaction for `jobs` — `tx` if given — remembering their arrivals,
    /// and reads their admissions (one query per cloud); per job, whether its arrival may
    /// go on ([`fapiao_store::Db::remember_in`]). The jobs of one message alone write its id
    /// with the `BEGIN`.
    async fn begin_issuing(
        &self,
        tx: Option<Tx>,
        jobs: &[Job<'_>],
    ) -> Result<(Issuing, Vec<bool>), Step> {
        let db = &self.inner.db;
        let one_message = jobs
            .first()
            .map(|j| j.arrival)
            .filter(|a| jobs.iter().all(|j| std::ptr::eq(j.arrival, *a)));
        let mut tx = match (tx, one_message) {
            (Some(tx), _) => tx,
            (None, Some(arrival)) => db.begin_write_for(arrival).await?,
            (None, None) => db.begin_write().await?,
        };
        let arrivals: Vec<&Arrival> = jobs.iter().map(|j| j.arrival).collect();
        let fresh = db.remember_in(&mut tx, &arrivals).await?;
        // Before anything of theirs is read: another replica issuing for one of them waits
        // for this commit, and then reads what it wrote.
        let enterprises: Vec<&str> = jobs
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|(j, _)| j.order.enterprise.as_str())
            .collect();
        lock_enterprises(&mut tx, &enterprises).await?;
        let mut run = Issuing::new(tx);
        let mut clouds: Vec<&str> = jobs.iter().map(|j| j.cloud).collect();
        clouds.sort_unstable();
        clouds.dedup();
        for cloud in clouds {
            let asked: Vec<(&str, &str)> = jobs
                .iter()
                .zip(&fresh)
                .filter(|(j, fresh)| **fresh && j.cloud == cloud)
                .map(|(j, _)| (j.order.enterprise.as_str(), j.order.order_id.as_str()))
                .collect();
            run.known
                .read_admissions(&mut run.tx, cloud, &asked)
                .await?;
        }
        Ok((run, fresh))
    }

    /// One blue order inside the caller's write transaction: the answer, and whether a new
    /// invoice was issued (not the earlier answer to the same order).
    async fn issue_blue_in(
        &self,
        run: &mut Issuing,
        job: &Job<'_>,
    ) -> Result<(OrderAnswer, bool), Step> {
        let Job {
            cloud,
            order: o,
            draft,
            rid,
            ..
        } = *job;
        let (e, earlier) = self
            .admit(
                &mut run.tx,
                &mut run.known,
                cloud,
                &o.enterprise,
                &o.order_id,
                &o.request_hash,
            )
            .await?;
        if let Some(a) = earlier {
            return Ok((a, false));
        }
        let draft = draft.clone().map_err(Step::Refused)?;
        // The seller is the enterprise as registered: its name is the registry's, not what
        // the order says.
        if draft.seller().name != e.name {
            return Err(Step::Refused(one_finding(
                "seller.name",
                FindingCode::InvalidText,
                format!(
                    "the seller is registered as {}; an invoice carries that name",
                    e.name
                ),
            )));
        }
        // So are its registered particulars: an order stating others is refused, one leaving
        // them out gets them.
        let seller = draft.seller();
        let stated = [
            seller.address.as_deref(),
            seller.phone.as_deref(),
            seller.bank_name.as_deref(),
            seller.bank_account.as_deref(),
        ];
        for ((path, registered), stated) in e.details.fields().into_iter().zip(stated) {
            if let (Some(r), Some(s)) = (registered, stated)
                && r != s
            {
                return Err(Step::Refused(one_finding(
                    path,
                    FindingCode::InvalidText,
                    format!("the seller registered {r}; an invoice carries that"),
                )));
            }
        }
        let registered = e.details.fields().map(|(_, v)| v);
        let draft = draft.with_seller_particulars(registered);
        // What the layout cannot draw is refused now, before a number is used on it (else
        // the invoice would exist and its PDF fail for good).
        if let Some(e) = fapiao_render::undrawable(&draft) {
            return Err(Step::Refused(Refusal::invalid(&e)));
        }
        let t = type_name(draft.invoice_type());
        if !e.allowed_types.iter().any(|a| a == t) {
            return Err(refused(
                Code::InvoiceTypeNotAllowed,
                format!("enterprise {} may not issue {t} invoices", e.taxpayer_id),
            ));
        }
        let total = draft.totals().total;
        if total > e.invoice_limit {
            return Err(refused(
                Code::OverInvoiceLimit,
                format!(
                    "价税合计 {total} exceeds the per-invoice limit {}",
                    e.invoice_limit
                ),
            ));
        }
        let issued_at = china_now();
        let quota = self.check_quota(run, &e, issued_at, total).await?;
        let signed = self.number_and_sign(run, &e, draft, issued_at).await?;
        let wire = WireInvoice::from_signed(&signed).map_err(|e| Step::Failed(e.to_string()))?;
        self.stage_issued(
            run,
            &e,
            &o.order_id,
            &o.request_hash,
            &signed,
            &wire,
            quota,
            None,
        )
        .await?;
        audit(
            &mut run.tx,
            cloud,
            "invoice.issued",
            signed.invoice.number().as_str(),
            &serde_json::json!({"enterprise": e.taxpayer_id, "order_id": o.order_id, "total": total.to_string(), "request_id": rid}),
        )
        .await?;
        let answer = OrderAnswer::Issued {
            order_id: o.order_id.clone(),
            invoice: wire,
            tax_status: TaxStatus::Pending,
            form: None,
        };
        run.known
            .issued(cloud, &e, &o.order_id, &o.request_hash, &answer);
        Ok((answer, true))
    }

    async fn issue_red(
        &self,
        cloud: &str,
        o: &RedOrder,
        arrival: &Arrival,
        rid: &str,
    ) -> Result<OrderAnswer, Step> {
        {
            let mut tx = self.read_tx().await?;
            let (_, earlier) = self
                .admit(
                    &mut tx,
                    &mut Known::default(),
                    cloud,
                    &o.enterprise,
                    &o.order_id,
                    &o.request_hash,
                )
                .await?;
            if let Some(a) = earlier {
                return Ok(a);
            }
        }
        let order_id = OrderId::parse(&o.order_id).map_err(|_| {
            Step::Refused(red_refusal(one_finding(
                "order_id",
                FindingCode::InvalidText,
                "not a valid order id".into(),
            )))
        })?;
        let reason = RedReason::parse(&o.reason).map_err(|e| {
            Step::Refused(red_refusal(one_finding(
                "reason",
                FindingCode::InvalidChoice,
                e.to_string(),
            )))
        })?;
        let scope = o
            .scope
            .to_scope()
            .map_err(|e| Step::Refused(red_refusal(Refusal::invalid(&e))))?;
        for attempt in 0..2 {
            match self
                .issue_red_tx(cloud, o, &order_id, reason, scope.clone(), arrival, rid)
                .await
            {
                Err(Step::NeedNumbers { year, province }) if attempt == 0 => {
                    self.ensure_range(year, province).await?;
                }
                other => return other,
            }
        }
        Err(refused(
            Code::NumbersExhausted,
            "no invoice number is available",
        ))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a red order with its parsed parts and its message"
    )]
    async fn issue_red_tx(
        &self,
        cloud: &str,
        o: &RedOrder,
        order_id: &OrderId,
        reason: RedReason,
        scope: RedScope,
        arrival: &Arrival,
        rid: &str,
    ) -> Result<OrderAnswer, Step> {
        let mut tx = self.inner.db.begin_write_for(arrival).await?;
        lock_enterprises(&mut tx, &[o.enterprise.as_str()]).await?;
        let mut run = Issuing::new(tx);
        let (e, earlier) = self
            .admit(
                &mut run.tx,
                &mut run.known,
                cloud,
                &o.enterprise,
                &o.order_id,
                &o.request_hash,
            )
            .await?;
        if let Some(a) = earlier {
            return Ok(a);
        }
        let blue = self
            .invoice_in(&mut run.tx, &o.blue_number)
            .await?
            .filter(|b| b.enterprise == o.enterprise)
            .ok_or_else(|| {
                refused(
                    Code::InvoiceNotFound,
                    format!("no invoice {} of this enterprise", o.blue_number),
                )
            })?;
        let blue_invoice = blue
            .invoice
            .to_signed()
            .map_err(|e| Step::Failed(e.to_string()))?
            .invoice;
        let prior: Vec<(String, String)> = fapiao_store::query_as(
            "SELECT number, record FROM invoices WHERE blue_number = $1 ORDER BY issued_at, number",
        )
        .bind(&o.blue_number)
        .fetch_all(&mut *run.tx)
        .await?;
        let mut prior_invoices = Vec::with_capacity(prior.len());
        for (n, r) in &prior {
            prior_invoices.push(self.read_record(n, r).await?);
        }
        let prior = prior_invoices;
        let issued_at = china_now();
        let form_number = self.next_form_number(&mut run.tx, &e, issued_at).await?;
        let red_err = |err: fapiao_model::red::RedError| refused(Code::RedInvalid, err.to_string());
        let form = RedLetterForm::open_by_seller(
            form_number,
            blue_invoice.number().clone(),
            reason,
            scope,
            o.buyer_confirmation.is_some(),
        )
        .map_err(red_err)?;
        let draft = plan_red(
            &blue_invoice,
            &prior,
            &form,
            Some(order_id.clone()),
            o.drawer.clone(),
        )
        .map_err(red_err)?;
        if let Some(e) = fapiao_render::undrawable(&draft) {
            return Err(Step::Refused(Refusal::invalid(&e)));
        }
        let total = draft.totals().total;
        let quota = self.check_quota(&mut run, &e, issued_at, total).await?;
        let signed = match self.number_and_sign(&mut run, &e, draft, issued_at).await {
            Ok(x) => x,
            Err(Step::Voided(m)) => {
                run.commit(&self.inner.instance).await?;
                return Err(Step::Failed(m));
            }
            Err(other) => return Err(other),
        };
        let form_wire = FormWire::from(&form);
        query(
            "INSERT INTO red_forms (number, blue_number, enterprise, reason, status, scope, buyer_confirmation, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&form_wire.number)
        .bind(&o.blue_number)
        .bind(&e.taxpayer_id)
        .bind(&form_wire.reason)
        .bind(&form_wire.status)
        .bind(serde_json::to_string(form.scope()).unwrap_or_default())
        .bind(&o.buyer_confirmation)
        .bind(now().unix_timestamp())
        .execute(&mut *run.tx)
        .await?;
        let wire = WireInvoice::from_signed(&signed).map_err(|e| Step::Failed(e.to_string()))?;
        self.stage_issued(
            &mut run,
            &e,
            &o.order_id,
            &o.request_hash,
            &signed,
            &wire,
            quota,
            Some(&form_wire.number),
        )
        .await?;
        audit(
            &mut run.tx,
            cloud,
            "red.issued",
            signed.invoice.number().as_str(),
            &serde_json::json!({
                "enterprise": e.taxpayer_id, "order_id": o.order_id, "blue_number": o.blue_number,
                "form": form_wire.number, "form_status": form_wire.status, "reason": form_wire.reason,
                "total": total.to_string(), "request_id": rid,
            }),
        )
        .await?;
        run.commit(&self.inner.instance).await?;
        self.inner.wake.notify_one();
        self.count_issued("red");
        Ok(OrderAnswer::Issued {
            order_id: o.order_id.clone(),
            invoice: wire,
            tax_status: TaxStatus::Pending,
            form: Some(form_wire),
        })
    }

    fn count_issued(&self, kind: &str) {
        self.inner.registry.inc(
            "fapiao_invoices_issued_total",
            "Invoices issued, by kind and hosting mode.",
            &[("kind", kind), ("mode", "platform")],
        );
    }

    async fn next_form_number(
        &self,
        tx: &mut Tx,
        e: &Enterprise,
        at: PrimitiveDateTime,
    ) -> Result<RedLetterFormNumber, Step> {
        let prefix = RedLetterFormNumber::day_prefix(&e.taxpayer_id, at.date());
        let count: i64 =
            query_scalar("SELECT COUNT(*) FROM red_forms WHERE substr(number, 1, 12) = $1")
                .bind(&prefix)
                .fetch_one(&mut **tx)
                .await?;
        RedLetterFormNumber::in_day(&prefix, count + 1).map_err(|e| Step::Failed(e.to_string()))
    }

    /// Checks the month's quota and returns `(month, used after this invoice)`; writes nothing.
    /// The quota used is read once per transaction; what it issues is counted in `run`.
    async fn check_quota(
        &self,
        run: &mut Issuing,
        e: &Enterprise,
        at: PrimitiveDateTime,
        total: Amount,
    ) -> Result<(String, Amount), Step> {
        let month = format!("{:04}-{:02}", at.year(), u8::from(at.month()));
        let key = (e.taxpayer_id.clone(), month);
        let used = match run.known.quotas.get(&key) {
            Some(used) => *used,
            None => {
                let used: Option<String> = query_scalar(
                    "SELECT used FROM quota_usage WHERE enterprise = $1 AND month = $2",
                )
                .bind(&key.0)
                .bind(&key.1)
                .fetch_optional(&mut *run.tx)
                .await?;
                let used = used
                    .map(|u| Amount::parse(&u))
                    .transpose()
                    .map_err(|err| Step::Failed(err.to_string()))?
                    .unwrap_or_default();
                run.known.quotas.insert(key.clone(), used);
                used
            }
        };
        let month = key.1;
        let after = used + total;
        if !total.is_negative() && after > e.monthly_quota {
            return Err(refused(
                Code::OverQuota,
                format!(
                    "{month}: {used} issued of a {} quota; {total} more would exceed it",
                    e.monthly_quota
                ),
            ));
        }
        Ok((month, after))
    }

    pub(crate) async fn write_quota(
        &self,
        tx: &mut Tx,
        e: &Enterprise,
        (month, after): (String, Amount),
    ) -> Result<(), Step> {
        query(
            "INSERT INTO quota_usage (enterprise, month, used) VALUES ($1, $2, $3)
             ON CONFLICT (enterprise, month) DO UPDATE SET used = excluded.used",
        )
        .bind(&e.taxpayer_id)
        .bind(&month)
        .bind(after.to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Keeps everything an issued invoice writes (its record sealed, its order, its upload,
    /// the month's quota) to be written as `run` commits.
    #[expect(
        clippy::too_many_arguments,
        reason = "one write of everything an issue changes"
    )]
    async fn stage_issued(
        &self,
        run: &mut Issuing,
        e: &Enterprise,
        order_id: &str,
        request_hash: &str,
        signed: &fapiao_issuer::SignedInvoice,
        wire: &WireInvoice,
        quota: (String, Amount),
        form_number: Option<&str>,
    ) -> Result<(), Step> {
        let invoice = &signed.invoice;
        let blue_number = match invoice.draft().kind() {
            InvoiceKind::Red(r) => Some(r.blue_number.as_str()),
            InvoiceKind::Blue => None,
        };
        let json =
            Zeroizing::new(serde_json::to_string(wire).map_err(|e| Step::Failed(e.to_string()))?);
        let record = self
            .inner
            .vault
            .seal_str(&mut run.tx, RECORD, invoice.number().as_str(), &json)
            .await?;
        run.stage(Staged {
            number: invoice.number().as_str(),
            enterprise: &e.taxpayer_id,
            order_id,
            request_hash,
            blue_number,
            form_number,
            issued_at: fapiao_model::datetime::format(invoice.issued_at()),
            total: invoice.draft().totals().total,
            record,
            quota,
            catalog_version: self.inner.catalog.version(),
        });
        Ok(())
    }

    /// One invoice with its status.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn invoice(&self, number: &str) -> Result<Option<StoredInvoice>, StoreError> {
        let mut conn = self.inner.db.read().await?;
        self.invoice_in(&mut conn, number)
            .await
            .map_err(|e| match e {
                Step::Failed(m) | Step::Voided(m) | Step::Refused(Refusal { message: m, .. }) => {
                    StoreError::Data(m)
                }
                Step::NeedNumbers { .. } => StoreError::Data("numbers".into()),
            })
    }

    pub(crate) async fn invoice_in(
        &self,
        conn: &mut dyn Executor,
        number: &str,
    ) -> Result<Option<StoredInvoice>, Step> {
        let row = query(
            "SELECT i.*, f.status AS form_status, f.reason AS form_reason
             FROM invoices i LEFT JOIN red_forms f ON f.number = i.form_number WHERE i.number = $1",
        )
        .bind(number)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let number: String = r.try_get("number")?;
        let record: String = r.try_get("record")?;
        let receipt: Option<String> = r.try_get("receipt")?;
        let status: String = r.try_get("tax_status")?;
        let form_number: Option<String> = r.try_get("form_number")?;
        let form = match form_number {
            Some(n) => Some(FormWire {
                number: n,
                status: r.try_get("form_status")?,
                reason: r.try_get("form_reason")?,
            }),
            None => None,
        };
        Ok(Some(StoredInvoice {
            enterprise: r.try_get("enterprise")?,
            order_id: r.try_get("order_id")?,
            kind: r.try_get("kind")?,
            tax_status: TaxStatus::parse(&status)
                .ok_or_else(|| Step::Failed("tax_status".into()))?,
            tax_reason: r.try_get("tax_reason")?,
            invoice: serde_json::from_str(
                &self
                    .inner
                    .vault
                    .unseal_str(RECORD, &number, &record)
                    .await?,
            )
            .map_err(|e| Step::Failed(e.to_string()))?,
            number,
            receipt: receipt
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| Step::Failed(e.to_string()))?,
            form,
        }))
    }
}

impl Platform {
    pub(crate) async fn read_record(&self, number: &str, sealed: &str) -> Result<Invoice, Step> {
        let json = self.inner.vault.unseal_str(RECORD, number, sealed).await?;
        let wire: WireInvoice =
            serde_json::from_str(&json).map_err(|e| Step::Failed(e.to_string()))?;
        Ok(wire
            .to_signed()
            .map_err(|e| Step::Failed(e.to_string()))?
            .invoice)
    }
}

/// A blue order as the transaction that issues it takes it: the order, who sent it and in
/// which message.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    cloud: &'a str,
    order: &'a IssueOrder,
    /// The order validated and priced, or why not ([`prepare_blue`]).
    draft: &'a Result<InvoiceDraft, Refusal>,
    arrival: &'a Arrival,
    rid: &'a str,
}

/// What an order is answered with: the answer, or the step that stopped it.
pub(crate) type Answer = Result<OrderAnswer, Step>;

/// A single blue order waiting for its group's transaction ([`Platform::issue_blue`]).
pub(crate) struct Queued {
    cloud: String,
    order: IssueOrder,
    draft: Result<InvoiceDraft, Refusal>,
    arrival: Arrival,
    rid: String,
}

impl Queued {
    fn job(&self) -> Job<'_> {
        Job {
            cloud: &self.cloud,
            order: &self.order,
            draft: &self.draft,
            arrival: &self.arrival,
            rid: &self.rid,
        }
    }
}

/// Parses and validates a blue order; checks it names its own order_id and the enterprise as
/// seller.
fn prepare_blue(
    catalog: &fapiao_model::TaxCatalog,
    o: &IssueOrder,
) -> Result<InvoiceDraft, Refusal> {
    let order = Order::from_json(&o.order.to_string()).map_err(|e| Refusal::invalid(&e))?;
    let draft = tracing::debug_span!("order.validate")
        .in_scope(|| order.validate(catalog))
        .map_err(|e| Refusal::invalid(&e))?;
    if draft.order_id().map(OrderId::as_str) != Some(o.order_id.as_str()) {
        return Err(one_finding(
            "order_id",
            FindingCode::InvalidText,
            format!("the order's order_id must be {}", o.order_id),
        ));
    }
    if draft.seller().taxpayer_id.as_str() != o.enterprise {
        return Err(one_finding(
            "seller.taxpayer_id",
            FindingCode::InvalidText,
            format!("the seller must be the enterprise {}", o.enterprise),
        ));
    }
    Ok(draft)
}

/// The refusal a database failure answering a reconciling cloud gets (the failure is logged).
fn reconcile_failed(rid: &str, e: &StoreError) -> Refusal {
    tracing::error!(request_id = %rid, error = %e, "answering a cloud's question failed");
    Refusal::new(Code::Internal, "internal error")
}
