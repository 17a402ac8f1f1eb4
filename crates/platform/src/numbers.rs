//! Invoice numbers for the hosted devices: ranges asked of tax, blocks carved from them and
//! held by one replica's devices, a number taken and signed, a block let go at a graceful
//! stop.

use fapiao_issuer::NumberBlock;
use fapiao_model::{InvoiceDraft, ProvinceCode};
use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::{RangeGrant, RangeRequest, message_type};
use fapiao_store::{Sql, StoreError, Tx, query, query_scalar};
use time::PrimitiveDateTime;

use crate::Platform;
use crate::issuing::Issuing;
use crate::registry::Enterprise;
use crate::step::{Step, audit, refused};

/// A block with numbers left for `$1` (enterprise), `$2` (year), `$3` (province) that this
/// replica (`$4`) may number from at `$5` (now): its own first, else one no live replica
/// holds. On PostgreSQL its row is locked until the commit.
pub(crate) const HELD_BLOCK: Sql = Sql::dialects(
    "SELECT id, channel, first, last, next FROM blocks
     WHERE enterprise = $1 AND year = $2 AND province = $3 AND next <= last
       AND (holder IS NULL OR holder = $4 OR held_until < $5)
     ORDER BY COALESCE(holder = $4, false) DESC, id LIMIT 1",
    "SELECT id, channel, first, last, next FROM blocks
     WHERE enterprise = $1 AND year = $2 AND province = $3 AND next <= last
       AND (holder IS NULL OR holder = $4 OR held_until < $5)
     ORDER BY COALESCE(holder = $4, false) DESC, id LIMIT 1 FOR UPDATE",
);

/// The first range with numbers left for `(year, province)`, its row locked on PostgreSQL.
pub(crate) const OPEN_RANGE: Sql = Sql::dialects(
    "SELECT id, channel, next, last FROM ranges
     WHERE year = $1 AND province = $2 AND next <= last ORDER BY id LIMIT 1",
    "SELECT id, channel, next, last FROM ranges
     WHERE year = $1 AND province = $2 AND next <= last ORDER BY id LIMIT 1 FOR UPDATE",
);

/// Numbers carved from a range: `first..=last` of `channel`.
pub(crate) struct Carved {
    pub(crate) channel: i64,
    pub(crate) first: i64,
    pub(crate) last: i64,
}

/// Carves up to `size` numbers for `(year, province)` from this platform's first range with
/// numbers left (its row locked until the commit, so no two transactions of any replica
/// carve the same numbers); `None` when no range has any.
pub(crate) async fn carve(
    tx: &mut Tx,
    year: u8,
    province: u8,
    size: i64,
) -> Result<Option<Carved>, Step> {
    let range = query(OPEN_RANGE)
        .bind(i64::from(year))
        .bind(i64::from(province))
        .fetch_optional(&mut **tx)
        .await?;
    let Some(range) = range else { return Ok(None) };
    let id: i64 = range.try_get("id")?;
    let channel: i64 = range.try_get("channel")?;
    let first: i64 = range.try_get("next")?;
    let last = (first + size - 1).min(range.try_get("last")?);
    query("UPDATE ranges SET next = $2 WHERE id = $1")
        .bind(id)
        .bind(last + 1)
        .execute(&mut **tx)
        .await?;
    Ok(Some(Carved {
        channel,
        first,
        last,
    }))
}

impl Platform {
    /// Takes the next number of the enterprise's block (carving a block from a range when
    /// needed) and has the device sign. A number consumed by a failed signature is recorded
    /// void (committed by the caller) and the order refused.
    pub(crate) async fn number_and_sign(
        &self,
        run: &mut Issuing,
        e: &Enterprise,
        draft: InvoiceDraft,
        issued_at: PrimitiveDateTime,
    ) -> Result<fapiao_issuer::SignedInvoice, Step> {
        let device = self.device(&e.taxpayer_id).map_err(Step::Failed)?;
        let year = u8::try_from(issued_at.year() % 100).unwrap_or(0);
        let province = e.province_code();
        let key = (e.taxpayer_id.clone(), year, province);
        let (block_id, mut block) = match run.known.blocks.remove(&key) {
            Some(b) => b,
            None => self
                .block(&mut run.tx, &e.taxpayer_id, year, province)
                .await?
                .ok_or(Step::NeedNumbers { year, province })?,
        };
        let issued = tracing::debug_span!("invoice.sign")
            .in_scope(|| device.issue_or_void(draft, &mut block, issued_at));
        if block.remaining() > 0 {
            run.known.blocks.insert(key, (block_id, block));
        } else {
            // Written now: the next block is looked for in the database.
            run.block_spent(block_id, &block).await?;
        }
        match issued {
            Ok(signed) => Ok(signed),
            Err((err, void)) => {
                if let Some(v) = void {
                    query("INSERT INTO void_numbers (number, enterprise, reason, at) VALUES ($1, $2, $3, $4)")
                        .bind(v.number.as_str())
                        .bind(&e.taxpayer_id)
                        .bind(&v.reason)
                        .bind(now().unix_timestamp())
                        .execute(&mut *run.tx)
                        .await?;
                    audit(
                        &mut run.tx,
                        "system",
                        "number.voided",
                        v.number.as_str(),
                        &serde_json::json!({"enterprise": e.taxpayer_id, "reason": v.reason}),
                    )
                    .await?;
                    return Err(Step::Voided(format!(
                        "issuing failed, number {} voided: {err}",
                        v.number
                    )));
                }
                Err(Step::Failed(format!("issuing failed: {err}")))
            }
        }
    }

    /// The block `enterprise`'s device numbers from for `(year, province)` in this
    /// replica: one it holds, else one no replica holds (free, or its holder's lease ran
    /// out: taken over from its next number), else a new one carved from a range (`None`
    /// when no range has numbers left). The block's row stays locked until the commit, which
    /// writes how far it was used and renews this replica's hold.
    pub(crate) async fn block(
        &self,
        tx: &mut Tx,
        enterprise: &str,
        year: u8,
        province: u8,
    ) -> Result<Option<(i64, NumberBlock)>, Step> {
        let pc = ProvinceCode::parse(&format!("{province:02}"))
            .map_err(|e| Step::Failed(e.to_string()))?;
        let row = query(HELD_BLOCK)
            .bind(enterprise)
            .bind(i64::from(year))
            .bind(i64::from(province))
            .bind(&self.inner.instance)
            .bind(now().unix_timestamp())
            .fetch_optional(&mut **tx)
            .await?;
        let (id, channel, first, last, next) = if let Some(r) = row {
            (
                r.try_get::<i64, _>("id")?,
                r.try_get::<i64, _>("channel")?,
                r.try_get::<i64, _>("first")?,
                r.try_get::<i64, _>("last")?,
                r.try_get::<i64, _>("next")?,
            )
        } else {
            let size = i64::try_from(self.inner.options.block_size).unwrap_or(1000);
            let Some(carved) = carve(tx, year, province, size).await? else {
                return Ok(None);
            };
            let id: i64 = query_scalar(
                "INSERT INTO blocks (enterprise, year, province, channel, first, last, next, holder, held_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8) RETURNING id",
            )
            .bind(enterprise)
            .bind(i64::from(year))
            .bind(i64::from(province))
            .bind(carved.channel)
            .bind(carved.first)
            .bind(carved.last)
            .bind(&self.inner.instance)
            .bind(now().unix_timestamp() + crate::issuing::BLOCK_LEASE)
            .fetch_one(&mut **tx)
            .await?;
            (id, carved.channel, carved.first, carved.last, carved.first)
        };
        let u = |v: i64| u64::try_from(v).map_err(|_| Step::Failed("negative sequence".into()));
        let block = NumberBlock::resume(
            year,
            pc,
            u8::try_from(channel).map_err(|_| Step::Failed("channel".into()))?,
            u(first)?,
            u(last)?,
            u(next)?,
        )
        .map_err(|e| Step::Failed(e.to_string()))?;
        Ok(Some((id, block)))
    }

    /// Asks tax for a range for `(year, province)` unless one with numbers left exists.
    pub(crate) async fn ensure_range(&self, year: u8, province: u8) -> Result<(), Step> {
        let _guard = self.inner.range_lock.lock().await;
        let left: i64 = query_scalar(
            "SELECT COUNT(*) FROM ranges WHERE year = $1 AND province = $2 AND next <= last",
        )
        .bind(i64::from(year))
        .bind(i64::from(province))
        .fetch_one(self.inner.db.pool())
        .await?;
        if left > 0 {
            return Ok(());
        }
        let req = RangeRequest {
            year,
            province,
            count: self.inner.options.range_size,
        };
        let answer = self
            .inner
            .tax
            .call(message_type::RANGE_REQUEST, &req)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "asking tax for numbers failed");
                refused(
                    Code::NumbersExhausted,
                    "no invoice number is available; tax is unreachable",
                )
            })?;
        if answer.message_type != message_type::RANGE_GRANT {
            return Err(Step::Failed(format!(
                "tax answered {} to a range request",
                answer.message_type
            )));
        }
        let g: RangeGrant = answer
            .parse(self.inner.tax.peer_identity())
            .map_err(|e| Step::Failed(e.to_string()))?;
        if g.year != year || g.province != province || g.first > g.last {
            return Err(Step::Failed("tax granted another range than asked".into()));
        }
        let mut tx = self.inner.db.begin_write().await?;
        query(
            "INSERT INTO ranges (year, province, channel, first, last, next, granted_at)
             VALUES ($1, $2, $3, $4, $5, $4, $6)",
        )
        .bind(i64::from(g.year))
        .bind(i64::from(g.province))
        .bind(i64::from(g.channel))
        .bind(i64::try_from(g.first).map_err(|e| Step::Failed(e.to_string()))?)
        .bind(i64::try_from(g.last).map_err(|e| Step::Failed(e.to_string()))?)
        .bind(now().unix_timestamp())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            self.inner.tax.peer_identity(),
            "range.granted",
            &format!("{:02}{:02}{}", g.year, g.province, g.channel),
            &serde_json::json!({"first": g.first, "last": g.last}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            year,
            province,
            first = g.first,
            last = g.last,
            "tax granted a number range"
        );
        Ok(())
    }

    /// Lets the number blocks this replica holds go (at a graceful stop): another replica
    /// takes them over from their next number at once instead of after the lease. Returns
    /// how many.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn release_blocks(&self) -> Result<u64, StoreError> {
        let mut tx = self.inner.db.begin_write().await?;
        let n = query("UPDATE blocks SET holder = NULL, held_until = NULL WHERE holder = $1")
            .bind(&self.inner.instance)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
