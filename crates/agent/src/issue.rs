//! Issue: the pulled orders numbered and signed by the enterprise's device, in runs, each
//! with its order, its queued work and the quota it used in one transaction.

use super::*;

/// What an order came to, before it is stored.
pub(crate) enum Handled {
    Issued,
    Refused(Refusal),
}

impl Agent {
    /// Issues the stored orders, oldest first: runs of them together where it can
    /// ([`Self::issue_run`]), the others one by one; stops at the first that must wait
    /// (numbers or quota not to be had now).
    pub(crate) async fn issue_pulled(&self) -> Result<usize, AgentError> {
        let rows = query("SELECT order_id, body FROM pulled ORDER BY seq LIMIT 100")
            .fetch_all(self.inner.db.pool())
            .await?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let order_id: String = r.try_get("order_id")?;
            let body: String = r.try_get("body")?;
            let json = self
                .inner
                .vault
                .unseal_str(PULLED, &order_id, &body)
                .await?;
            let order: QueuedOrder = serde_json::from_str(&json)
                .map_err(|e| AgentError::Setup(format!("stored order {order_id}: {e}")))?;
            orders.push(order);
        }
        let mut handled = 0;
        while handled < orders.len() {
            let rest = &orders[handled..];
            handled += match self.issue_run(rest).await? {
                0 => {
                    self.handle_order(&rest[0]).await?;
                    1
                }
                n => n,
            };
        }
        if handled > 0 {
            self.inner.wake.notify_one();
        }
        Ok(handled)
    }

    /// Handles the longest run at the head of `orders` that needs nothing from a peer, in one
    /// write transaction: blue orders the numbers and quota in hand cover (each numbered and
    /// signed on its own, in order, all at one issue time; the blocks' next numbers and the
    /// month's quota written once), orders handled before (acknowledged again) and invalid
    /// ones (refused). It ends before a red order (which reads the invoices before it) and
    /// before a blue one that needs more numbers or quota. How many it handled (0: the first
    /// order must be handled alone).
    pub(crate) async fn issue_run(&self, orders: &[QueuedOrder]) -> Result<usize, AgentError> {
        let mut run = Vec::with_capacity(orders.len());
        for order in orders {
            match order {
                QueuedOrder::Blue(o) => run.push((order, o, self.blue_draft(o))),
                QueuedOrder::Red(_) => break,
            }
        }
        if run.is_empty() {
            return Ok(0);
        }
        let ids =
            serde_json::to_string(&run.iter().map(|(o, _, _)| o.order_id()).collect::<Vec<_>>())
                .map_err(|e| AgentError::Setup(e.to_string()))?;
        let issued_at = china_now();
        let month = month_of(issued_at);
        let (year, province) = self.year_province(issued_at);
        // Numbers and quota for the whole run asked for before its transaction (as a single
        // order asks for its own); without them the run ends where what is in hand does.
        let (count, total) = run
            .iter()
            .filter_map(|(_, _, d)| d.as_ref().ok())
            .fold((0_u64, Amount::default()), |(n, t), d| {
                (n + 1, t + d.totals().total)
            });
        if count > 0
            && let Err(e) = self.supply_for(count, total, &month).await
        {
            tracing::info!(error = %e, "agent: topping up numbers or quota for a run failed");
        }
        let mut tx = self.inner.db.begin_write().await?;
        let known: std::collections::HashSet<String> = query_scalar(Sql::dialects(
            "SELECT order_id FROM orders WHERE order_id IN (SELECT value FROM jsonb_each($1))",
            "SELECT order_id FROM orders
             WHERE order_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut blocks = self.blocks_in_hand(&mut tx, year, province).await?;
        let (granted, mut used, _) = quota_in(&mut tx, &month).await?;
        let mut done = 0;
        let mut issued = Vec::new();
        let mut refused = Vec::new();
        for (order, o, draft) in run {
            let order_id = order.order_id();
            if known.contains(order_id) {
                // Pulled again (a lease ran out before cloud heard of it): acknowledge again.
                enqueue_once(&mut tx, "ack", order_id).await?;
                forget_pulled(&mut tx, order_id).await?;
                done += 1;
                continue;
            }
            let draft = match draft {
                Ok(d) => d,
                Err(r) => {
                    self.write_refused(&mut tx, order, &r).await?;
                    refused.push((order_id, r));
                    done += 1;
                    continue;
                }
            };
            let total = draft.totals().total;
            let Some(block) = blocks.iter_mut().find(|(_, b)| b.remaining() > 0) else {
                break;
            };
            if used + total > granted {
                break;
            }
            let signed = tracing::debug_span!("invoice.sign")
                .in_scope(|| self.inner.device.issue(draft, &mut block.1, issued_at))
                .map_err(|e| AgentError::Setup(format!("issuing failed: {e}")))?;
            used = used + total;
            let number = self
                .write_issued(&mut tx, order_id, &o.request_hash, &signed, None)
                .await?;
            issued.push((number, order_id));
            done += 1;
        }
        if done == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        for (id, block) in &blocks {
            query("UPDATE blocks SET next = $2 WHERE id = $1 AND next <> $2")
                .bind(id)
                .bind(i64::try_from(block.next_sequence()).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
        }
        if !issued.is_empty() {
            set_quota_used(&mut tx, &month, used).await?;
        }
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await?;
        for (number, order_id) in &issued {
            self.issued_now(number, order_id, "blue");
        }
        for (order_id, r) in &refused {
            tracing::info!(%order_id, code = %r.code, "agent: order refused");
        }
        Ok(done)
    }

    /// The usable blocks of `(year, province)` in `tx`, oldest first, with their ids.
    pub(crate) async fn blocks_in_hand(
        &self,
        tx: &mut Tx,
        year: u8,
        province: u8,
    ) -> Result<Vec<(i64, NumberBlock)>, AgentError> {
        let rows = query(
            "SELECT id, channel, first, last, next FROM blocks
             WHERE year = $1 AND province = $2 AND next <= last ORDER BY id",
        )
        .bind(i64::from(year))
        .bind(i64::from(province))
        .fetch_all(&mut **tx)
        .await?;
        let pc = fapiao_model::ProvinceCode::parse(&format!("{province:02}"))
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        let mut blocks = Vec::with_capacity(rows.len());
        for row in &rows {
            let get = |c: &str| -> Result<u64, AgentError> {
                u64::try_from(row.try_get::<i64, _>(c)?)
                    .map_err(|_| AgentError::Setup(format!("blocks.{c}")))
            };
            let block = NumberBlock::resume(
                year,
                pc,
                u8::try_from(get("channel")?).map_err(|_| AgentError::Setup("channel".into()))?,
                get("first")?,
                get("last")?,
                get("next")?,
            )
            .map_err(|e| AgentError::Setup(e.to_string()))?;
            blocks.push((row.try_get("id")?, block));
        }
        Ok(blocks)
    }

    pub(crate) async fn handle_order(&self, order: &QueuedOrder) -> Result<(), AgentError> {
        let order_id = order.order_id();
        let known: Option<String> = query_scalar("SELECT outcome FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(self.inner.db.pool())
            .await?;
        if known.is_some() {
            // Pulled again (a lease ran out before cloud heard of it): acknowledge again.
            let mut tx = self.inner.db.begin_write().await?;
            enqueue_once(&mut tx, "ack", order_id).await?;
            forget_pulled(&mut tx, order_id).await?;
            tx.commit().await?;
            return Ok(());
        }
        let outcome = match order {
            QueuedOrder::Blue(o) => self.issue_blue(o).await?,
            QueuedOrder::Red(o) => self.issue_red(o).await?,
        };
        if let Handled::Refused(r) = outcome {
            self.refuse(order, &r).await?;
        }
        Ok(())
    }

    pub(crate) async fn issue_blue(&self, o: &IssueOrder) -> Result<Handled, AgentError> {
        match self.blue_draft(o) {
            Ok(draft) => {
                self.issue_draft(&o.order_id, &o.request_hash, draft, None)
                    .await
            }
            Err(r) => Ok(Handled::Refused(r)),
        }
    }

    /// A blue order validated into a draft, or why it cannot be issued.
    pub(crate) fn blue_draft(&self, o: &IssueOrder) -> Result<InvoiceDraft, Refusal> {
        if o.enterprise != self.inner.enterprise {
            return Err(Refusal::new(
                Code::EnterpriseOfAnotherCloud,
                "the order is for another enterprise",
            ));
        }
        let order = Order::from_json(&o.order.to_string()).map_err(|e| Refusal::invalid(&e))?;
        let draft = tracing::debug_span!("order.validate")
            .in_scope(|| order.validate(&self.inner.catalog))
            .map_err(|e| Refusal::invalid(&e))?;
        if draft.order_id().map(OrderId::as_str) != Some(o.order_id.as_str())
            || draft.seller().taxpayer_id.as_str() != self.inner.enterprise
        {
            return Err(Refusal::new(
                Code::InvalidOrder,
                "the order's order_id and seller must be this order's and this enterprise's",
            ));
        }
        // What the layout cannot draw is refused before a number is used on it.
        if let Some(e) = fapiao_render::undrawable(&draft) {
            return Err(Refusal::invalid(&e));
        }
        Ok(draft)
    }

    pub(crate) async fn issue_red(&self, o: &RedOrder) -> Result<Handled, AgentError> {
        let refuse = |code: Code, m: String| Ok(Handled::Refused(Refusal::new(code, m)));
        let Some(blue) = self.local_invoice(&o.blue_number).await? else {
            return refuse(
                Code::InvoiceNotFound,
                format!("no invoice {} issued here", o.blue_number),
            );
        };
        let order_id = match OrderId::parse(&o.order_id) {
            Ok(id) => id,
            Err(e) => return refuse(Code::InvalidOrder, format!("order_id: {e}")),
        };
        let reason = match RedReason::parse(&o.reason) {
            Ok(r) => r,
            Err(e) => return refuse(Code::InvalidOrder, format!("reason: {e}")),
        };
        let scope = match o.scope.to_scope() {
            Ok(s) => s,
            Err(e) => return Ok(Handled::Refused(Refusal::invalid(&e))),
        };
        let prior: Vec<(String, String)> = fapiao_store::query_as(
            "SELECT number, record FROM invoices WHERE blue_number = $1 ORDER BY seq",
        )
        .bind(&o.blue_number)
        .fetch_all(self.inner.db.pool())
        .await?;
        let mut prior_invoices = Vec::with_capacity(prior.len());
        for (n, r) in &prior {
            prior_invoices.push(self.read_record(n, r).await?.invoice);
        }
        let prefix = RedLetterFormNumber::day_prefix(&self.inner.enterprise, china_now().date());
        // The forms table counts per day (`YYMMDD`, the prefix's last six digits).
        let day = prefix[6..].to_owned();
        let seq = self.next_form(&day).await?;
        let form_number = RedLetterFormNumber::in_day(&prefix, seq)
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        let planned = RedLetterForm::open_by_seller(
            form_number,
            blue.number().clone(),
            reason,
            scope,
            o.buyer_confirmation.is_some(),
        )
        .and_then(|form| {
            plan_red(
                &blue,
                &prior_invoices,
                &form,
                Some(order_id.clone()),
                o.drawer.clone(),
            )
            .map(|d| (form, d))
        });
        let (form, draft) = match planned {
            Ok(x) => x,
            Err(e) => return refuse(Code::RedInvalid, e.to_string()),
        };
        if let Some(e) = fapiao_render::undrawable(&draft) {
            return Ok(Handled::Refused(Refusal::invalid(&e)));
        }
        let form = FormWire::from(&form);
        self.issue_draft(&o.order_id, &o.request_hash, draft, Some((form, day, seq)))
            .await
    }

    /// The next red-letter form sequence of the day (`YYMMDD`): from 90000001, apart from
    /// the platform's.
    pub(crate) async fn next_form(&self, day: &str) -> Result<i64, AgentError> {
        let next: Option<i64> = query_scalar("SELECT next FROM forms WHERE day = $1")
            .bind(day)
            .fetch_optional(self.inner.db.pool())
            .await?;
        Ok(next.unwrap_or(90_000_001))
    }

    /// Quota, number, signature, and every row of the issue in one transaction.
    pub(crate) async fn issue_draft(
        &self,
        order_id: &str,
        request_hash: &str,
        draft: InvoiceDraft,
        form: Option<(FormWire, String, i64)>,
    ) -> Result<Handled, AgentError> {
        let total = draft.totals().total;
        let issued_at = china_now();
        let month = month_of(issued_at);
        let (granted, used, _) = self.quota(&month).await?;
        if !total.is_negative() && used + total > granted {
            let short = used + total - granted;
            let step = self.inner.options.quota_step;
            let got = self
                .request_quota(&month, if short > step { short } else { step })
                .await?;
            if got < short {
                return Ok(Handled::Refused(Refusal::new(
                    Code::OverQuota,
                    format!("{month}: the credit quota does not cover {total} more"),
                )));
            }
        }
        let (year, province) = self.year_province(issued_at);
        if self.numbers_left().await? == 0 {
            self.request_block().await?;
        }
        let mut tx = self.inner.db.begin_write().await?;
        let (block_id, mut block) = self
            .blocks_in_hand(&mut tx, year, province)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| AgentError::Peer("no invoice number in hand".into()))?;
        let signed = tracing::debug_span!("invoice.sign")
            .in_scope(|| self.inner.device.issue(draft, &mut block, issued_at))
            .map_err(|e| AgentError::Setup(format!("issuing failed: {e}")))?;
        query("UPDATE blocks SET next = $2 WHERE id = $1")
            .bind(block_id)
            .bind(i64::try_from(block.next_sequence()).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        let number = self
            .write_issued(
                &mut tx,
                order_id,
                request_hash,
                &signed,
                form.as_ref().map(|(f, _, _)| f),
            )
            .await?;
        let (_, used, _) = quota_in(&mut tx, &month).await?;
        set_quota_used(&mut tx, &month, used + total).await?;
        if let Some((_, day, seq)) = &form {
            query(
                "INSERT INTO forms (day, next) VALUES ($1, $2)
                 ON CONFLICT (day) DO UPDATE SET next = $2",
            )
            .bind(day)
            .bind(seq + 1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await?;
        self.issued_now(
            &number,
            order_id,
            if form.is_some() { "red" } else { "blue" },
        );
        Ok(Handled::Issued)
    }

    /// Writes a signed invoice and what goes with it in `tx`: the invoice (sealed), the
    /// order's outcome, the queue entries `upload`, `report` and `ack`, the `pulled` row gone,
    /// an audit record. Its number.
    pub(crate) async fn write_issued(
        &self,
        tx: &mut Tx,
        order_id: &str,
        request_hash: &str,
        signed: &fapiao_issuer::SignedInvoice,
        form: Option<&FormWire>,
    ) -> Result<String, AgentError> {
        let wire =
            WireInvoice::from_signed(signed).map_err(|e| AgentError::Setup(e.to_string()))?;
        let json = Zeroizing::new(
            serde_json::to_string(&wire).map_err(|e| AgentError::Setup(e.to_string()))?,
        );
        let record = self
            .inner
            .vault
            .seal_str(tx, RECORD, signed.invoice.number().as_str(), &json)
            .await?;
        let inv = &signed.invoice;
        let total = inv.draft().totals().total;
        let number = inv.number().as_str().to_owned();
        let blue_number = match inv.draft().kind() {
            InvoiceKind::Red(r) => Some(r.blue_number.as_str().to_owned()),
            InvoiceKind::Blue => None,
        };
        let kind = if blue_number.is_some() { "red" } else { "blue" };
        query(
            "INSERT INTO invoices (number, order_id, request_hash, kind, blue_number, form, issued_at, total, record, upload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending')",
        )
        .bind(&number)
        .bind(order_id)
        .bind(request_hash)
        .bind(kind)
        .bind(&blue_number)
        .bind(form.map(|f| serde_json::to_string(f).unwrap_or_default()))
        .bind(fapiao_model::datetime::format(inv.issued_at()))
        .bind(total.to_string())
        .bind(record)
        .execute(&mut **tx)
        .await?;
        query(
            "INSERT INTO orders (order_id, kind, request_hash, outcome, number, handled_at)
             VALUES ($1, $2, $3, 'issued', $4, $5)",
        )
        .bind(order_id)
        .bind(kind)
        .bind(request_hash)
        .bind(&number)
        .bind(now().unix_timestamp())
        .execute(&mut **tx)
        .await?;
        for k in ["upload", "report", "ack"] {
            enqueue(tx, k, if k == "ack" { order_id } else { &number }).await?;
        }
        forget_pulled(tx, order_id).await?;
        audit(
            tx,
            &self.inner.enterprise,
            if blue_number.is_some() {
                "red.issued"
            } else {
                "invoice.issued"
            },
            &number,
            &serde_json::json!({"order_id": order_id, "total": total.to_string()}),
        )
        .await?;
        Ok(number)
    }

    /// Counts and logs an invoice once its transaction committed.
    pub(crate) fn issued_now(&self, number: &str, order_id: &str, kind: &'static str) {
        self.inner.registry.inc(
            "fapiao_agent_invoices_issued_total",
            "Invoices issued on the enterprise's premises, by kind.",
            &[("kind", kind)],
        );
        tracing::info!(%number, %order_id, "agent: invoice issued");
    }

    pub(crate) async fn refuse(&self, order: &QueuedOrder, r: &Refusal) -> Result<(), AgentError> {
        let mut tx = self.inner.db.begin_write().await?;
        self.write_refused(&mut tx, order, r).await?;
        tx.commit().await?;
        tracing::info!(order_id = %order.order_id(), code = %r.code, "agent: order refused");
        Ok(())
    }

    /// Records an order refused with why, in `tx`: its outcome, its `ack`, the `pulled` row
    /// gone, an audit record.
    pub(crate) async fn write_refused(
        &self,
        tx: &mut Tx,
        order: &QueuedOrder,
        r: &Refusal,
    ) -> Result<(), AgentError> {
        let order_id = order.order_id();
        query(
            "INSERT INTO orders (order_id, kind, request_hash, outcome, refusal, handled_at)
             VALUES ($1, $2, $3, 'refused', $4, $5) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(match order {
            QueuedOrder::Blue(_) => "blue",
            QueuedOrder::Red(_) => "red",
        })
        .bind(order.request_hash())
        .bind(serde_json::to_string(r).unwrap_or_default())
        .bind(now().unix_timestamp())
        .execute(&mut **tx)
        .await?;
        enqueue(tx, "ack", order_id).await?;
        forget_pulled(tx, order_id).await?;
        audit(
            tx,
            &self.inner.enterprise,
            "order.refused",
            order_id,
            &serde_json::json!({"code": r.code, "message": r.message}),
        )
        .await?;
        Ok(())
    }
}
