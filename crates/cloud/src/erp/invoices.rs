//! Storing the invoices platform issued (and agents reported), checked first, grouped with
//! other requests' into one transaction.

use super::*;

/// The blind-index label of buyer identifiers.
pub(crate) const BUYER_INDEX: &str = "invoices.buyer_index";

/// Inserts invoices not stored before, from the JSON array `$1` of rows `[number,
/// enterprise, order_id, request_hash, kind, blue_number, form, issued_at, buyer_name,
/// buyer_id, total, tax_status, record, buyer_index]`; the numbers inserted.
pub(crate) const INSERT_ISSUED: Sql = Sql::dialects(
    "INSERT INTO invoices (number, enterprise, order_id, request_hash,
        kind, blue_number, form, issued_at, buyer_name, buyer_id, total, tax_status, record,
        buyer_index)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
        json_extract(value, '$[9]'), json_extract(value, '$[10]'), json_extract(value, '$[11]'),
        json_extract(value, '$[12]'), json_extract(value, '$[13]')
    FROM jsonb_each($1) WHERE true ORDER BY key
    ON CONFLICT (number) DO NOTHING
    RETURNING number",
    "INSERT INTO invoices (number, enterprise, order_id, request_hash,
        kind, blue_number, form, issued_at, buyer_name, buyer_id, total, tax_status, record,
        buyer_index)
    SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, v->>6, v->>7, v->>8, v->>9, v->>10,
        v->>11, v->>12, v->>13
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(v, key) ORDER BY key
    ON CONFLICT (number) DO NOTHING
    RETURNING number",
);

/// After [`INSERT_ISSUED`], one round trip: the orders queued for the agent (`$2`, a JSON
/// array of `[order_id, number]` for every invoice, `$1` the enterprise, `$3` now) marked
/// issued, the new invoices' (`$4`) webhook events recorded (`$5`, as
/// `crate::webhook::events::enqueue_sqlite!`), and status notices that came before them (kept by the notice
/// handler) taken, returned. On SQLite three statements; on PostgreSQL, which takes
/// parameters only in single statements, one of data-modifying `WITH` clauses.
pub(crate) const STORED: Sql = Sql::dialects(
    concat!(
        "UPDATE queued_orders SET state = 'issued',
            number = json_extract(q.value, '$[1]'), updated_at = $3
        FROM jsonb_each($2) q
        WHERE queued_orders.enterprise = $1 AND queued_orders.order_id = json_extract(q.value, '$[0]');",
        crate::webhook::events::enqueue_sqlite!(),
        "; DELETE FROM early_notices
         WHERE enterprise = $1 AND number IN (SELECT value FROM jsonb_each($4))
         RETURNING number, tax_status, tax_reason, receipt"
    ),
    concat!(
        "WITH issued_queued AS (
            UPDATE queued_orders SET state = 'issued', number = q.value->>1, updated_at = $3
            FROM jsonb_array_elements($2::jsonb) q
            WHERE queued_orders.enterprise = $1 AND queued_orders.order_id = q.value->>0
        ), webhooks_queued AS (",
        crate::webhook::events::enqueue_postgres!(),
        ") DELETE FROM early_notices
         WHERE enterprise = $1 AND number = ANY(ARRAY(SELECT jsonb_array_elements_text($4::jsonb)))
         RETURNING number, tax_status, tax_reason, receipt"
    ),
);

/// The blue number a red invoice reverses.
pub(crate) fn red_of(inv: &fapiao_model::Invoice) -> Option<String> {
    match inv.draft().kind() {
        InvoiceKind::Red(r) => Some(r.blue_number.as_str().to_owned()),
        InvoiceKind::Blue => None,
    }
}

/// A single issued invoice waiting for its group's transaction ([`Cloud::store_invoice`]),
/// checked.
pub(crate) struct Storing {
    enterprise: String,
    issued: Issued,
    signed: fapiao_issuer::SignedInvoice,
    nonce: Option<Arrival>,
    rid: String,
}

/// What storing an invoice answers: the stored view, `None` to read it back, or the error.
pub(crate) type Stored = Result<Option<InvoiceView>, ApiError>;

/// An invoice platform issued for an order, as cloud stores it.
pub(crate) struct Issued {
    pub(crate) order_id: String,
    pub(crate) request_hash: String,
    pub(crate) invoice: WireInvoice,
    pub(crate) tax_status: TaxStatus,
    pub(crate) form: Option<FormWire>,
}

impl Cloud {
    /// Whether the enterprise issues on its own premises (its orders wait for its agent),
    /// and the invoices stored for `order_ids`, by order id with their request hash: one
    /// query.
    pub(crate) async fn stored(
        &self,
        enterprise: &str,
        order_ids: &[&str],
    ) -> Result<(bool, HashMap<String, (String, InvoiceView)>), StoreError> {
        // One order (the common case) is matched by equality on the unique key: PostgreSQL's
        // cached plan for `= ANY(…)` weighs an array of unknown length and may prefer another
        // index on `enterprise` and a filter, which reads every invoice of the enterprise.
        let rows = if let [order_id] = order_ids {
            query(Sql::portable(
                "SELECT e.hosting AS enterprise_hosting, i.*
                 FROM enterprises e
                 LEFT JOIN invoices i ON i.enterprise = e.taxpayer_id AND i.order_id = $2
                 WHERE e.taxpayer_id = $1",
            ))
            .bind(enterprise)
            .bind(*order_id)
        } else {
            query(Sql::dialects(
                "SELECT e.hosting AS enterprise_hosting, i.*
                 FROM enterprises e
                 LEFT JOIN invoices i ON i.enterprise = e.taxpayer_id
                     AND i.order_id IN (SELECT value FROM jsonb_each($2))
                 WHERE e.taxpayer_id = $1",
                "SELECT e.hosting AS enterprise_hosting, i.*
                 FROM enterprises e
                 LEFT JOIN invoices i ON i.enterprise = e.taxpayer_id
                     AND i.order_id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))
                 WHERE e.taxpayer_id = $1",
            ))
            .bind(enterprise)
            .bind(serde_json::Value::from(order_ids).to_string())
        }
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        let mut hosted = false;
        let mut stored = HashMap::new();
        for r in rows {
            hosted = r.try_get::<String, _>("enterprise_hosting")? == "enterprise";
            if r.try_get::<Option<String>, _>("number")?.is_some() {
                let mut v = self.view(&r).await?;
                self.with_reds(enterprise, &mut v).await?;
                stored.insert(r.try_get("order_id")?, (r.try_get("request_hash")?, v));
            }
        }
        Ok((hosted, stored))
    }

    /// One invoice of an enterprise.
    ///
    /// # Errors
    /// Database errors.
    pub async fn invoice(
        &self,
        enterprise: &str,
        number: &str,
    ) -> Result<Option<InvoiceView>, StoreError> {
        let row = query("SELECT * FROM invoices WHERE enterprise = $1 AND number = $2")
            .bind(enterprise)
            .bind(number)
            .fetch_optional(&mut *self.inner.db.read().await?)
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let mut v = self.view(&r).await?;
        self.with_reds(enterprise, &mut v).await?;
        Ok(Some(v))
    }

    /// A blue invoice's reds, oldest first, into its view.
    pub(crate) async fn with_reds(
        &self,
        enterprise: &str,
        v: &mut InvoiceView,
    ) -> Result<(), StoreError> {
        if v.kind != "blue" {
            return Ok(());
        }
        let reds = query(
            "SELECT number, total, issued_at FROM invoices
             WHERE blue_number = $2 AND enterprise = $1 ORDER BY seq",
        )
        .bind(enterprise)
        .bind(&v.number)
        .fetch_all(&mut *self.inner.db.read().await?)
        .await?;
        v.reds = Some(
            reds.iter()
                .map(|r| {
                    Ok(RedRef {
                        number: r.try_get("number")?,
                        total: r.try_get("total")?,
                        issued_at: crate::china_rfc3339(&r.try_get::<String, _>("issued_at")?),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
        );
        Ok(())
    }

    /// Verifies an issued invoice (device signature and certificate path, seller) and stores
    /// it with its order (spending `nonce`, the ERP request's, in that transaction); the
    /// stored view. Storing the same invoice again changes nothing.
    #[expect(
        clippy::too_many_arguments,
        reason = "an invoice with its order and status"
    )]
    pub(crate) async fn store_invoice(
        &self,
        enterprise: &str,
        order_id: &str,
        request_hash: &str,
        invoice: &WireInvoice,
        tax_status: TaxStatus,
        form: Option<FormWire>,
        nonce: Option<&Arrival>,
        rid: &str,
    ) -> Result<InvoiceView, ApiError> {
        let issued = Issued {
            order_id: order_id.to_owned(),
            request_hash: request_hash.to_owned(),
            invoice: invoice.clone(),
            tax_status,
            form,
        };
        let signed = self.check_issued(enterprise, &issued.invoice, rid)?;
        let number = signed.invoice.number().as_str().to_owned();
        let storing = Storing {
            enterprise: enterprise.to_owned(),
            issued,
            signed,
            nonce: nonce.cloned(),
            rid: rid.to_owned(),
        };
        let cloud = self.clone();
        let stored = self
            .inner
            .db
            .grouped(
                &self.inner.storing,
                storing,
                |s| s.nonce.as_ref(),
                move |tx, group| async move { cloud.store_group(tx, group).await },
                |s, e| Err(not_begun(&s.rid, e)),
            )
            .await
            .unwrap_or_else(|| Err(internal(rid, &"the invoice's group ended unanswered")))?;
        match stored {
            Some(view) => Ok(view),
            None => self
                .invoice(enterprise, &number)
                .await
                .map_err(|e| internal(rid, &e))?
                .ok_or_else(|| internal(rid, &"stored invoice vanished")),
        }
    }

    /// Stores a group of single invoices in `tx` ([`Self::insert_issued`], per enterprise),
    /// commits, and answers each: the view of what was stored, `None` to read it back, or
    /// the error. A replayed request's invoice (its nonce found on record as the group began)
    /// is not stored.
    pub(crate) async fn store_group(
        &self,
        mut tx: fapiao_store::Tx,
        group: Vec<Waiting<Storing, Stored>>,
    ) {
        // Per invoice: where its answer goes, its request id, whether its request is a replay.
        let mut answers: Vec<(Answer<Stored>, String, bool)> = Vec::with_capacity(group.len());
        // Per enterprise, in order of first appearance: where its invoices' answers go.
        let mut by_enterprise: Vec<(String, Vec<usize>, Vec<Issued>, Vec<_>)> = Vec::new();
        for Waiting { job: s, answer } in group {
            let at = answers.len();
            // The group's transaction remembered every nonce it could (`Db::grouped`).
            let replay = s
                .nonce
                .as_ref()
                .is_some_and(|n| n.state() == ArrivalState::Replayed);
            answers.push((answer, s.rid, replay));
            if replay {
                continue;
            }
            match by_enterprise.iter_mut().find(|(e, ..)| *e == s.enterprise) {
                Some((_, ats, issued, signed)) => {
                    ats.push(at);
                    issued.push(s.issued);
                    signed.push(s.signed);
                }
                None => {
                    by_enterprise.push((s.enterprise, vec![at], vec![s.issued], vec![s.signed]))
                }
            }
        }
        let mut views: Vec<Option<InvoiceView>> = (0..answers.len()).map(|_| None).collect();
        let mut failed =
            crate::lock_enterprises(&mut tx, by_enterprise.iter().map(|(e, ..)| e.as_str()))
                .await
                .err()
                .map(|e| e.to_string());
        for (enterprise, ats, issued, signed) in by_enterprise.iter().filter(|_| failed.is_none()) {
            let rids: Vec<&str> = ats.iter().map(|at| answers[*at].1.as_str()).collect();
            match self
                .insert_issued(&mut tx, enterprise, issued, signed, &rids)
                .await
            {
                Ok(fresh) => {
                    for (at, view) in ats.iter().zip(fresh) {
                        views[*at] = view;
                    }
                }
                Err(e) => {
                    failed = Some(e.message);
                    break;
                }
            }
        }
        let failed = match failed {
            Some(m) => Some(m),
            None => tx
                .commit()
                .instrument(tracing::debug_span!("db.commit"))
                .await
                .err()
                .map(|e| e.to_string()),
        };
        if failed.is_none() {
            self.inner.wake.notify_one();
        }
        for ((answer, rid, replay), view) in answers.into_iter().zip(views) {
            let outcome = match (replay, &failed) {
                (true, _) => Err(replayed(&rid)),
                (false, Some(m)) => Err(internal(&rid, m)),
                (false, None) => Ok(view),
            };
            answer.send(outcome);
        }
    }

    /// Verifies issued invoices (device signature and certificate path, seller) and stores
    /// them with their orders in one transaction, which spends `nonce` (the ERP request's);
    /// their stored views, in order. Storing the same invoice again changes nothing.
    pub(crate) async fn store_invoices(
        &self,
        enterprise: &str,
        issued: Vec<Issued>,
        nonce: Option<&Arrival>,
        rid: &str,
    ) -> Result<Vec<InvoiceView>, ApiError> {
        let mut signed = Vec::with_capacity(issued.len());
        for i in &issued {
            signed.push(self.check_issued(enterprise, &i.invoice, rid)?);
        }
        let db = &self.inner.db;
        let mut tx = match nonce {
            Some(n) => db.begin_write_for(n).await,
            None => db.begin_write().await,
        }
        .map_err(|e| not_begun(rid, &e))?;
        crate::lock_enterprises(&mut tx, [enterprise])
            .await
            .map_err(|e| internal(rid, &e))?;
        let fresh = self
            .insert_issued(&mut tx, enterprise, &issued, &signed, &[rid])
            .await?;
        tx.commit()
            .instrument(tracing::debug_span!("db.commit"))
            .await
            .map_err(|e| internal(rid, &e))?;
        self.inner.wake.notify_one();
        // A new invoice's view is what was stored; one stored before, or that an early
        // notice changed, is read back.
        let mut views = Vec::with_capacity(signed.len());
        for (s, view) in signed.iter().zip(fresh) {
            let view = match view {
                Some(v) => v,
                None => self
                    .invoice(enterprise, s.invoice.number().as_str())
                    .await
                    .map_err(|e| internal(rid, &e))?
                    .ok_or_else(|| internal(rid, &"stored invoice vanished"))?,
            };
            views.push(view);
        }
        Ok(views)
    }

    /// An issued invoice checked: it parses, its device signature and certificate path
    /// verify, and its seller is the enterprise.
    pub(crate) fn check_issued(
        &self,
        enterprise: &str,
        invoice: &WireInvoice,
        rid: &str,
    ) -> Result<fapiao_issuer::SignedInvoice, ApiError> {
        let bad = |m: String| unusable(rid, &format!("issued invoice: {m}"));
        let signed = invoice.to_signed().map_err(|e| bad(e.to_string()))?;
        tracing::debug_span!("invoice.verify")
            .in_scope(|| verify(&signed, &self.inner.material.trust.current(), now()))
            .map_err(|e| bad(e.to_string()))?;
        if signed.invoice.draft().seller().taxpayer_id.as_str() != enterprise {
            return Err(bad("invoice of another seller".into()));
        }
        Ok(signed)
    }

    /// Inserts checked invoices with their orders in the caller's transaction, in two round
    /// trips whatever their number: the invoices not stored before, then their orders queued
    /// for the agent marked issued, their webhooks queued, their audit entries, and the
    /// status notices that came before them taken. Per invoice, the view of what was just
    /// stored; `None` for one stored before (or repeated) or that an early notice changed.
    pub(crate) async fn insert_issued(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        issued: &[Issued],
        signed: &[fapiao_issuer::SignedInvoice],
        rids: &[&str],
    ) -> Result<Vec<Option<InvoiceView>>, ApiError> {
        // Each invoice's request id, or one for all; errors name the first.
        let rid_of = |k: usize| rids.get(k).or(rids.first()).copied().unwrap_or_default();
        let rid = rid_of(0);
        let mut rows = Vec::with_capacity(issued.len());
        for (i, s) in issued.iter().zip(signed) {
            rows.push(self.invoice_row(tx, enterprise, i, &s.invoice, rid).await?);
        }
        let inserted: std::collections::HashSet<String> = query_scalar(INSERT_ISSUED)
            .bind(serde_json::Value::Array(rows).to_string())
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| internal(rid, &e))?
            .into_iter()
            .collect();
        let mut fresh: Vec<Option<InvoiceView>> = Vec::with_capacity(issued.len());
        let mut new_numbers = Vec::new();
        let mut events = Vec::new();
        let mut orders = Vec::with_capacity(issued.len());
        for (k, (i, s)) in issued.iter().zip(signed).enumerate() {
            let inv = &s.invoice;
            let number = inv.number().as_str();
            orders.push(serde_json::json!([i.order_id, number]));
            // The first of an invoice repeated in one batch is the one inserted.
            if !inserted.contains(number) || new_numbers.contains(&number) {
                fresh.push(None);
                continue;
            }
            new_numbers.push(number);
            let view = issued_view(i, inv);
            events.extend(crate::webhook::events::of_stored(
                number,
                view.kind == "red",
            ));
            fapiao_store::audit::append(
                tx,
                now(),
                &format!("erp:{enterprise}"),
                "invoice.stored",
                number,
                &serde_json::json!({"order_id": i.order_id, "kind": view.kind, "request_id": rid_of(k)}),
            )
            .await
            .map_err(|e| internal(rid, &e))?;
            fresh.push(Some(view));
        }
        let early = query(STORED)
            .bind(enterprise)
            .bind(serde_json::Value::Array(orders).to_string())
            .bind(now().unix_timestamp())
            .bind(serde_json::json!(new_numbers).to_string())
            .bind(serde_json::Value::Array(events).to_string())
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| internal(rid, &e))?;
        for row in &early {
            let number: String = row.try_get("number").map_err(|e| internal(rid, &e))?;
            self.apply_early_notice(tx, enterprise, &number, row)
                .await
                .map_err(|e| internal(rid, &e))?;
            // Changed by the notice: read back.
            for (s, view) in signed.iter().zip(fresh.iter_mut()) {
                if s.invoice.number().as_str() == number {
                    *view = None;
                }
            }
        }
        Ok(fresh)
    }

    /// An invoice as a row of [`INSERT_ISSUED`], its record sealed.
    pub(crate) async fn invoice_row(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        issued: &Issued,
        inv: &fapiao_model::Invoice,
        rid: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let d = inv.draft();
        let json = zeroize::Zeroizing::new(
            serde_json::to_string(&issued.invoice).map_err(|e| internal(rid, &e))?,
        );
        let record = self
            .inner
            .vault
            .seal_str(tx, crate::RECORD, inv.number().as_str(), &json)
            .await
            .map_err(|e| internal(rid, &e))?;
        let buyer = d.buyer();
        let buyer_index = buyer
            .taxpayer_id
            .as_ref()
            .map(|t| t.as_str())
            .or_else(|| buyer.id_number.as_ref().map(|i| i.expose()))
            .map(|id| self.inner.vault.blind_index(BUYER_INDEX, id));
        let blue_number = red_of(inv);
        Ok(serde_json::json!([
            inv.number().as_str(),
            enterprise,
            issued.order_id,
            issued.request_hash,
            if blue_number.is_some() { "red" } else { "blue" },
            blue_number,
            issued
                .form
                .as_ref()
                .map(|f| serde_json::to_string(f).unwrap_or_default()),
            fapiao_model::datetime::format(inv.issued_at()),
            fapiao_model::mask::buyer_name(buyer),
            fapiao_model::mask::buyer_id(buyer),
            d.totals().total.to_string(),
            issued.tax_status.as_str(),
            record,
            buyer_index,
        ]))
    }

    /// A status notice that came before the invoice (kept by the notice handler, taken as
    /// the invoice is stored) applies to it now, exactly as it would have had it come after.
    pub(crate) async fn apply_early_notice(
        &self,
        tx: &mut fapiao_store::Tx,
        enterprise: &str,
        number: &str,
        early: &Row,
    ) -> Result<(), StoreError> {
        let unreadable = |c: &str| StoreError::Data(format!("early_notices.{c}"));
        let status: String = early.try_get("tax_status")?;
        let receipt: Option<String> = early.try_get("receipt")?;
        let notice = StatusNotice {
            number: number.to_owned(),
            enterprise: enterprise.to_owned(),
            tax_status: TaxStatus::parse(&status).ok_or_else(|| unreadable("tax_status"))?,
            reason: early.try_get("tax_reason")?,
            receipt: receipt
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|_| unreadable("receipt"))?,
            issued: None,
        };
        self.apply_notices_in(tx, &[&notice]).await
    }
}
