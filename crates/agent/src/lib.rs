//! The enterprise's front-end agent (电子发票开票前置服务装置): the async, enterprise-hosted
//! flow of the patent (paragraphs 0014 and 0021–0025).
//!
//! It runs on the enterprise's premises with its own SQLite store, its own certificates
//! (`agent` role: message signing and encryption, TLS client and server, all carrying the
//! enterprise's taxpayer id) and its own issuing device (an SM2 `device` signing certificate of
//! the enterprise). One worker repeats, in this order:
//!
//! 1. **supply** — keeps a number block and a share of the month's credit quota in hand,
//!    asking platform for more before they run out (`block.request`, `quota.request`, each
//!    idempotent by a key derived from what is already stored, so a lost answer is asked
//!    again under the same key and returns the same grant);
//! 2. **pull** — leases pending orders of its enterprise from cloud (`orders.pull`; the first
//!    pull after a start also takes back what was still leased to it) and stores them (sealed)
//!    before anything else;
//! 3. **issue** — each stored order, oldest first, in one write transaction: the number from
//!    the block, the device signature (the shared `fapiao_issuer`, the same rules and
//!    signature format as platform's hosted devices), the invoice, the order's outcome, the
//!    quota used, and the queue entries `upload`, `report` and `ack`. An order already handled
//!    (pulled again after a crash or an expired lease) is only acknowledged again. An order
//!    that cannot be issued (invalid, over quota, a red breaking the red rules) is recorded
//!    as refused with the reason;
//! 4. **upload** — sends the invoices to tax in issue order (a red never before its blue),
//!    retrying with exponential backoff and jitter while tax is unreachable or answers
//!    `processing`, re-uploading `upload_number_not_granted` a few times (tax may not have
//!    recorded the block yet); the receipt, verified, queues a `status` report;
//! 5. **report** — sends each invoice with its order (`invoice.report`), then tax's receipts
//!    (`invoice.status`), to platform, in id order, retrying likewise;
//! 6. **ack** — tells cloud which orders were handled (`orders.ack`), so their leases end.
//!
//! Every step is a durable state transition and idempotent on retry: a crash at any point
//! resumes without losing or duplicating an invoice. While cloud, platform or tax is
//! unreachable the other steps go on; the queues drain, in order, when it is back.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use fapiao_crypto::{Certificate, PrivateKey};
use fapiao_issuer::{IssuingDevice, NumberBlock};
use fapiao_model::red::{RedLetterForm, RedLetterFormNumber, RedReason, plan_red};
use fapiao_model::{Amount, Invoice, InvoiceDraft, InvoiceKind, Order, OrderId, TaxCatalog};
use fapiao_protocol::client::{CallError, china_now, now, refusal_code};
use fapiao_protocol::wire::{
    BlockRequest, FormWire, IssueOrder, Issued, LeasedOrders, OrderAck, OrderAcks, OrderOutcome,
    PullOrders, QueuedOrder, QuotaGrant, QuotaRequest, RangeGrant, Receipts, RedOrder, Refusal,
    Report, ReportBatch, ReportItem, ReportResults, SignedReceipt, StatusNotice, TaxStatus,
    UploadBatch, WireInvoice, message_type,
};
use fapiao_protocol::{Code, EnvelopeClient, HttpsClient};
use fapiao_service::Material;
use fapiao_store::vault::{SealedColumn, Vault};
use fapiao_store::{Db, Executor, Migration, Row, Sql, StoreError, Tx, query, query_scalar};
use serde::{Deserialize, Serialize};
use time::PrimitiveDateTime;
use tracing::Instrument;
use zeroize::Zeroizing;

/// The agent's schema.
pub const MIGRATIONS: &[Migration] = fapiao_store::migrations![
    1 "0001_agent" "orders, invoices, blocks, quota, red forms, work queue",
];

/// Columns whose values are sealed (encryption at rest): the signed invoices and the orders
/// waiting to be issued (buyer data).
pub const SEALED: &[SealedColumn] = &[RECORD, PULLED];
const RECORD: SealedColumn = SealedColumn {
    table: "invoices",
    column: "record",
    key: "number",
};
const PULLED: SealedColumn = SealedColumn {
    table: "pulled",
    column: "body",
    key: "order_id",
};

/// Where the agent finds its peers: `(base URL, identity)` of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// The enterprise's cloud.
    pub cloud: (String, String),
    /// The e-invoice service platform.
    pub platform: (String, String),
    /// Tax.
    pub tax: (String, String),
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the worker looks for work when nothing happened.
    pub poll: Duration,
    /// Orders leased per pull.
    pub pull_max: u32,
    /// Lease length asked of cloud.
    pub lease_seconds: u32,
    /// Retry delays of uploads, reports and acknowledgements.
    pub backoff: fapiao_service::Backoff,
    /// Quota asked of platform at a time.
    pub quota_step: Amount,
    /// Ask for another block when fewer numbers than this are left.
    pub numbers_low: u64,
    /// Timeout of one call to a peer.
    pub call_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            pull_max: 64,
            lease_seconds: 60,
            backoff: fapiao_service::Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            quota_step: Amount::parse("1000000.00").unwrap_or_default(),
            numbers_low: 100,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the agent could not start or a step could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Material, device or peer configuration.
    #[error("{0}")]
    Setup(String),
    /// A peer could not be reached or answered unusably; the step is retried.
    #[error("{0}")]
    Peer(String),
}

/// The issuing device on the enterprise's premises, from `<prefix>.crt.pem` and
/// `<prefix>.key.pem` (key encrypted with `passphrase`).
///
/// # Errors
/// [`AgentError::Setup`] naming the file.
pub fn load_device(prefix: &Path, passphrase: &[u8]) -> Result<IssuingDevice, AgentError> {
    let read = |ext: &str| {
        let p = format!("{}{ext}", prefix.display());
        std::fs::read_to_string(&p).map_err(|e| AgentError::Setup(format!("{p}: {e}")))
    };
    let cert = Certificate::from_pem(&read(".crt.pem")?)
        .map_err(|e| AgentError::Setup(format!("device certificate: {e}")))?;
    let pem = Zeroizing::new(read(".key.pem")?);
    let key = PrivateKey::from_encrypted_pem(&pem, passphrase)
        .map_err(|e| AgentError::Setup(format!("device key: {e}")))?;
    IssuingDevice::new(key, cert).map_err(|e| AgentError::Setup(e.to_string()))
}

/// The agent.
#[derive(Clone, Debug)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    registry: Arc<fapiao_service::Registry>,
    material: Material,
    device: IssuingDevice,
    enterprise: String,
    catalog: TaxCatalog,
    cloud: EnvelopeClient,
    platform: EnvelopeClient,
    tax: EnvelopeClient,
    wake: Arc<tokio::sync::Notify>,
    /// Whether a pull has taken back what was leased to this agent before it started.
    resumed: AtomicBool,
    options: Options,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("enterprise", &self.enterprise)
            .finish_non_exhaustive()
    }
}

fn month_of(at: PrimitiveDateTime) -> String {
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

fn amount(text: &str) -> Result<Amount, AgentError> {
    Amount::parse(text).map_err(|e| AgentError::Setup(format!("stored amount `{text}`: {e}")))
}

/// Most bytes of invoice records in one upload or report batch (an envelope holds at most
/// 4 MiB).
const BATCH_BYTES: usize = 1024 * 1024;

/// An entry of the work queue.
#[derive(Debug)]
struct Entry {
    id: i64,
    kind: String,
    /// The invoice number (an order id for `ack`).
    subject: String,
    attempts: i64,
}

/// Invoice rows by number ([`Agent::invoice_rows`]).
struct InvoiceRows(std::collections::HashMap<String, Row>);

impl InvoiceRows {
    /// The row of the invoice `entry` names.
    fn of(&self, entry: &Entry) -> Result<&Row, AgentError> {
        self.0.get(&entry.subject).ok_or_else(|| {
            AgentError::Setup(format!("queued invoice {} is missing", entry.subject))
        })
    }
}

/// What an order came to, before it is stored.
enum Handled {
    Issued,
    Refused(Refusal),
}

impl Agent {
    /// Opens the agent: its store, and clients for cloud, platform and tax. The enterprise is
    /// the one named by the agent's certificate; the device must be that enterprise's.
    ///
    /// # Errors
    /// [`AgentError`].
    pub async fn open(
        database: &str,
        material: Material,
        device: IssuingDevice,
        peers: &Peers,
        options: Options,
    ) -> Result<Self, AgentError> {
        let subject = material
            .party
            .signing_certificate()
            .subject()
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        let Some(enterprise) = subject.taxpayer_id.clone() else {
            return Err(AgentError::Setup(
                "the agent's certificate names no enterprise (taxpayer id)".into(),
            ));
        };
        if device.taxpayer_id() != Some(enterprise.as_str()) {
            return Err(AgentError::Setup(format!(
                "the device belongs to {:?}, the agent to {enterprise}",
                device.taxpayer_id()
            )));
        }
        let db = Db::open(database, "agent", MIGRATIONS).await?;
        let vault = Vault::open(&db, material.master_key.clone(), now()).await?;
        let client = |(url, identity): &(String, String)| -> Result<EnvelopeClient, AgentError> {
            let config = material
                .client_config()
                .map_err(|e| AgentError::Setup(e.to_string()))?;
            let http = HttpsClient::new(url, config)
                .map_err(|e| AgentError::Setup(format!("{url}: {e}")))?
                .with_timeout(options.call_timeout);
            Ok(EnvelopeClient::new(
                http,
                material.party.clone(),
                material.trust.clone(),
                identity,
            ))
        };
        let (cloud, platform, tax) = (
            client(&peers.cloud)?,
            client(&peers.platform)?,
            client(&peers.tax)?,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                vault,
                registry: Arc::new(fapiao_service::Registry::new()),
                material,
                device,
                enterprise,
                catalog: TaxCatalog::builtin(),
                cloud,
                platform,
                tax,
                wake: Arc::new(tokio::sync::Notify::new()),
                resumed: AtomicBool::new(false),
                options,
            }),
        })
    }

    /// The database (for operators and tests).
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The enterprise this agent issues for.
    #[must_use]
    pub fn enterprise(&self) -> &str {
        &self.inner.enterprise
    }

    /// The admin routes: `/healthz`, `/readyz`, `/metrics`.
    pub fn admin_router(&self) -> Router {
        fapiao_service::ops::admin_routes(
            "agent",
            Arc::new(self.clone()),
            self.inner.registry.clone(),
        )
    }

    /// Starts the worker.
    #[must_use]
    pub fn spawn_workers(&self) -> fapiao_service::Worker {
        let me = self.clone();
        fapiao_service::Worker::spawn(
            "agent",
            self.inner.wake.clone(),
            self.inner.options.poll,
            move || {
                let me = me.clone();
                async move { me.work_once().await }
            },
        )
    }

    /// One round of every step; how many items were handled (0: nothing to do).
    ///
    /// # Errors
    /// None: each step's failure is logged and the step retried next round.
    pub async fn work_once(&self) -> Result<usize, AgentError> {
        let mut handled = 0;
        if let Err(e) = self.supply().await {
            tracing::info!(error = %e, "agent: topping up numbers or quota failed; retried");
        }
        for (name, result) in [
            ("pull", self.pull().await),
            ("issue", self.issue_pulled().await),
            ("upload", self.upload_due().await),
            ("report", self.report_due().await),
            ("ack", self.ack_due().await),
        ] {
            match result {
                Ok(n) => handled += n,
                Err(e) => {
                    tracing::info!(step = name, error = %e, "agent step did not finish; retried")
                }
            }
        }
        Ok(handled)
    }

    // ---- supply -----------------------------------------------------------------------

    fn year_province(&self, at: PrimitiveDateTime) -> (u8, u8) {
        let province = self
            .inner
            .enterprise
            .get(2..4)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        (u8::try_from(at.year() % 100).unwrap_or(0), province)
    }

    /// Numbers left in blocks for the current year and province.
    async fn numbers_left(&self) -> Result<u64, AgentError> {
        let (year, province) = self.year_province(china_now());
        let left: Option<i64> = query_scalar(
            "SELECT CAST(SUM(last - next + 1) AS BIGINT) FROM blocks
             WHERE year = $1 AND province = $2 AND next <= last",
        )
        .bind(i64::from(year))
        .bind(i64::from(province))
        .fetch_one(self.inner.db.pool())
        .await?;
        Ok(u64::try_from(left.unwrap_or(0)).unwrap_or(0))
    }

    /// `(granted, used)` of a month.
    async fn quota(&self, month: &str) -> Result<(Amount, Amount, i64), AgentError> {
        quota_in(&mut *self.inner.db.read().await?, month).await
    }

    /// Asks for what `count` invoices of `total` together need beyond the numbers and the
    /// month's quota in hand.
    async fn supply_for(&self, count: u64, total: Amount, month: &str) -> Result<(), AgentError> {
        let (granted, used, _) = self.quota(month).await?;
        if used + total > granted {
            let short = used + total - granted;
            let step = self.inner.options.quota_step;
            self.request_quota(month, if short > step { short } else { step })
                .await?;
        }
        if self.numbers_left().await? < count {
            self.request_block().await?;
        }
        Ok(())
    }

    /// Keeps numbers and quota in hand before they run out.
    async fn supply(&self) -> Result<(), AgentError> {
        // Another block when a quarter of the last one (at most `numbers_low`) is left.
        let last_size: Option<i64> =
            query_scalar("SELECT last - first + 1 FROM blocks ORDER BY id DESC LIMIT 1")
                .fetch_optional(self.inner.db.pool())
                .await?;
        let low = last_size.map_or(1, |s| {
            (u64::try_from(s).unwrap_or(0) / 4).clamp(1, self.inner.options.numbers_low)
        });
        if self.numbers_left().await? < low {
            self.request_block().await?;
        }
        let month = month_of(china_now());
        let (granted, used, _) = self.quota(&month).await?;
        let step = self.inner.options.quota_step;
        let quarter = Amount::from_rounded(step.value() / rust_decimal::Decimal::from(4));
        if granted - used < quarter {
            self.request_quota(&month, step).await?;
        }
        Ok(())
    }

    async fn request_block(&self) -> Result<(), AgentError> {
        let count: i64 = query_scalar("SELECT COUNT(*) FROM blocks")
            .fetch_one(self.inner.db.pool())
            .await?;
        let (year, province) = self.year_province(china_now());
        let req = BlockRequest {
            key: format!("block:{}", count + 1),
            year,
            province,
        };
        let g: RangeGrant = self
            .call(
                &self.inner.platform,
                message_type::BLOCK_REQUEST,
                &req,
                message_type::BLOCK_GRANT,
            )
            .await?;
        if g.year != year || g.province != province || g.first > g.last {
            return Err(AgentError::Peer(format!(
                "platform granted another block than asked: {g:?}"
            )));
        }
        let mut tx = self.inner.db.begin_write().await?;
        query(
            "INSERT INTO blocks (key, year, province, channel, first, last, next)
             VALUES ($1, $2, $3, $4, $5, $6, $5) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&req.key)
        .bind(i64::from(g.year))
        .bind(i64::from(g.province))
        .bind(i64::from(g.channel))
        .bind(i64::try_from(g.first).unwrap_or(i64::MAX))
        .bind(i64::try_from(g.last).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            self.inner.platform.peer_identity(),
            "block.granted",
            &req.key,
            &serde_json::json!({"year": g.year, "province": g.province, "channel": g.channel, "first": g.first, "last": g.last}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            first = g.first,
            last = g.last,
            "agent: number block granted"
        );
        Ok(())
    }

    /// Asks for `amount` more of `month`'s quota; what was granted.
    async fn request_quota(&self, month: &str, asked: Amount) -> Result<Amount, AgentError> {
        let (_, _, requests) = self.quota(month).await?;
        let req = QuotaRequest {
            key: format!("quota:{month}:{}", requests + 1),
            month: month.to_owned(),
            amount: asked.to_string(),
        };
        let g: QuotaGrant = self
            .call(
                &self.inner.platform,
                message_type::QUOTA_REQUEST,
                &req,
                message_type::QUOTA_GRANT,
            )
            .await?;
        let granted = Amount::parse(&g.amount)
            .map_err(|e| AgentError::Peer(format!("quota grant amount: {e}")))?;
        if g.month != month || granted.is_negative() || granted > asked {
            return Err(AgentError::Peer(format!(
                "platform granted another quota than asked: {g:?}"
            )));
        }
        let mut tx = self.inner.db.begin_write().await?;
        let row = query("SELECT granted, requests FROM quota WHERE month = $1")
            .bind(month)
            .fetch_optional(&mut *tx)
            .await?;
        let (before, n) = match row {
            Some(r) => (
                amount(&r.try_get::<String, _>("granted")?)?,
                r.try_get::<i64, _>("requests")?,
            ),
            None => (Amount::default(), 0),
        };
        if n == requests {
            query(
                "INSERT INTO quota (month, granted, used, requests) VALUES ($1, $2, '0.00', 1)
                 ON CONFLICT (month) DO UPDATE SET granted = $2, requests = quota.requests + 1",
            )
            .bind(month)
            .bind((before + granted).to_string())
            .execute(&mut *tx)
            .await?;
            audit(
                &mut tx,
                self.inner.platform.peer_identity(),
                "quota.granted",
                month,
                &serde_json::json!({"key": req.key, "granted": granted.to_string()}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(granted)
    }

    // ---- pull -------------------------------------------------------------------------

    /// Leases orders from cloud and stores them; how many are new here.
    async fn pull(&self) -> Result<usize, AgentError> {
        let waiting: i64 = query_scalar("SELECT COUNT(*) FROM pulled")
            .fetch_one(self.inner.db.pool())
            .await?;
        if waiting >= i64::from(self.inner.options.pull_max) {
            return Ok(0);
        }
        let leased: LeasedOrders = self
            .call(
                &self.inner.cloud,
                message_type::ORDERS_PULL,
                &PullOrders {
                    max: self.inner.options.pull_max,
                    lease_seconds: self.inner.options.lease_seconds,
                    resume: !self.inner.resumed.load(Ordering::SeqCst),
                },
                message_type::ORDERS_LEASED,
            )
            .instrument(tracing::debug_span!("cloud.pull"))
            .await?;
        self.inner.resumed.store(true, Ordering::SeqCst);
        if leased.orders.is_empty() {
            return Ok(0);
        }
        let mut tx = self.inner.db.begin_write().await?;
        let mut new = 0;
        for order in &leased.orders {
            let json = Zeroizing::new(
                serde_json::to_string(order).map_err(|e| AgentError::Peer(e.to_string()))?,
            );
            let sealed = self
                .inner
                .vault
                .seal_str(&mut tx, &PULLED.field(), &json)
                .await?;
            new += query(
                "INSERT INTO pulled (order_id, body, pulled_at) VALUES ($1, $2, $3)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order.order_id())
            .bind(sealed)
            .bind(now().unix_timestamp())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(usize::try_from(new).unwrap_or(0))
    }

    // ---- issue ------------------------------------------------------------------------

    /// Issues the stored orders, oldest first: runs of them together where it can
    /// ([`Self::issue_run`]), the others one by one; stops at the first that must wait
    /// (numbers or quota not to be had now).
    async fn issue_pulled(&self) -> Result<usize, AgentError> {
        let rows = query("SELECT order_id, body FROM pulled ORDER BY seq LIMIT 100")
            .fetch_all(self.inner.db.pool())
            .await?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            let order_id: String = r.try_get("order_id")?;
            let body: String = r.try_get("body")?;
            let json = self.inner.vault.unseal_str(&PULLED.field(), &body).await?;
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
    async fn issue_run(&self, orders: &[QueuedOrder]) -> Result<usize, AgentError> {
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
    async fn blocks_in_hand(
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

    async fn handle_order(&self, order: &QueuedOrder) -> Result<(), AgentError> {
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

    async fn issue_blue(&self, o: &IssueOrder) -> Result<Handled, AgentError> {
        match self.blue_draft(o) {
            Ok(draft) => {
                self.issue_draft(&o.order_id, &o.request_hash, draft, None)
                    .await
            }
            Err(r) => Ok(Handled::Refused(r)),
        }
    }

    /// A blue order validated into a draft, or why it cannot be issued.
    fn blue_draft(&self, o: &IssueOrder) -> Result<InvoiceDraft, Refusal> {
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
        Ok(draft)
    }

    async fn issue_red(&self, o: &RedOrder) -> Result<Handled, AgentError> {
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
        let prior: Vec<String> =
            query_scalar("SELECT record FROM invoices WHERE blue_number = $1 ORDER BY seq")
                .bind(&o.blue_number)
                .fetch_all(self.inner.db.pool())
                .await?;
        let mut prior_invoices = Vec::with_capacity(prior.len());
        for r in &prior {
            prior_invoices.push(self.read_record(r).await?.invoice);
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
        let form = FormWire::from(&form);
        self.issue_draft(&o.order_id, &o.request_hash, draft, Some((form, day, seq)))
            .await
    }

    /// The next red-letter form sequence of the day (`YYMMDD`): from 90000001, apart from
    /// the platform's.
    async fn next_form(&self, day: &str) -> Result<i64, AgentError> {
        let next: Option<i64> = query_scalar("SELECT next FROM forms WHERE day = $1")
            .bind(day)
            .fetch_optional(self.inner.db.pool())
            .await?;
        Ok(next.unwrap_or(90_000_001))
    }

    /// Quota, number, signature, and every row of the issue in one transaction.
    async fn issue_draft(
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
    async fn write_issued(
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
            .seal_str(tx, &RECORD.field(), &json)
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
    fn issued_now(&self, number: &str, order_id: &str, kind: &'static str) {
        self.inner.registry.inc(
            "fapiao_agent_invoices_issued_total",
            "Invoices issued on the enterprise's premises, by kind.",
            &[("kind", kind)],
        );
        tracing::info!(%number, %order_id, "agent: invoice issued");
    }

    async fn refuse(&self, order: &QueuedOrder, r: &Refusal) -> Result<(), AgentError> {
        let mut tx = self.inner.db.begin_write().await?;
        self.write_refused(&mut tx, order, r).await?;
        tx.commit().await?;
        tracing::info!(order_id = %order.order_id(), code = %r.code, "agent: order refused");
        Ok(())
    }

    /// Records an order refused with why, in `tx`: its outcome, its `ack`, the `pulled` row
    /// gone, an audit record.
    async fn write_refused(
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

    async fn local_invoice(&self, number: &str) -> Result<Option<Invoice>, AgentError> {
        let record: Option<String> = query_scalar("SELECT record FROM invoices WHERE number = $1")
            .bind(number)
            .fetch_optional(self.inner.db.pool())
            .await?;
        match record {
            Some(r) => Ok(Some(self.read_record(&r).await?.invoice)),
            None => Ok(None),
        }
    }

    async fn read_wire(&self, sealed: &str) -> Result<WireInvoice, AgentError> {
        let json = self.inner.vault.unseal_str(&RECORD.field(), sealed).await?;
        serde_json::from_str(&json).map_err(|e| AgentError::Setup(format!("stored invoice: {e}")))
    }

    async fn read_record(&self, sealed: &str) -> Result<fapiao_issuer::SignedInvoice, AgentError> {
        self.read_wire(sealed)
            .await?
            .to_signed()
            .map_err(|e| AgentError::Setup(format!("stored invoice: {e}")))
    }

    // ---- queues -----------------------------------------------------------------------

    /// The run of due entries at the head of a queue (uploads; or, when `reports`, reports
    /// and status reports), in id order, at most `max`: it starts at the first pending entry,
    /// only when that one is due, and ends before the first that is not — an entry that must
    /// wait holds back every one behind it.
    async fn due_run(&self, reports: bool, max: usize) -> Result<Vec<Entry>, AgentError> {
        let rows = query(if reports {
            "SELECT id, kind, subject, attempts, next_attempt_at FROM queue
             WHERE state = 'pending' AND kind IN ('report', 'status') ORDER BY id LIMIT $1"
        } else {
            "SELECT id, kind, subject, attempts, next_attempt_at FROM queue
             WHERE state = 'pending' AND kind = 'upload' ORDER BY id LIMIT $1"
        })
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(self.inner.db.pool())
        .await?;
        let t = now().unix_timestamp();
        let mut run = Vec::with_capacity(rows.len());
        for r in &rows {
            if r.try_get::<i64, _>("next_attempt_at")? > t {
                break;
            }
            run.push(Entry {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                subject: r.try_get("subject")?,
                attempts: r.try_get("attempts")?,
            });
        }
        Ok(run)
    }

    /// Puts an entry off with backoff, in `tx`; the delay.
    async fn retry_in(
        &self,
        tx: &mut Tx,
        entry: &Entry,
        why: &str,
    ) -> Result<Duration, AgentError> {
        let delay = self.inner.options.backoff.delay(entry.attempts);
        query(
            "UPDATE queue SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
        )
        .bind(entry.id)
        .bind(why)
        .bind((now() + delay).unix_timestamp())
        .execute(&mut **tx)
        .await?;
        tracing::info!(id = entry.id, kind = %entry.kind, error = %why, delay_ms = delay.as_millis(), "agent: will retry");
        Ok(delay)
    }

    /// Puts an entry off with backoff, in a transaction of its own.
    async fn retry_later(&self, entry: &Entry, why: &str) -> Result<(), AgentError> {
        let mut tx = self.inner.db.begin_write().await?;
        self.retry_in(&mut tx, entry, why).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The rows of the entries' invoices: one query.
    async fn invoice_rows(&self, entries: &[Entry]) -> Result<InvoiceRows, AgentError> {
        let numbers = serde_json::to_string(
            &entries
                .iter()
                .map(|e| e.subject.as_str())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| AgentError::Setup(e.to_string()))?;
        let rows = query(Sql::dialects(
            "SELECT * FROM invoices WHERE number IN (SELECT value FROM jsonb_each($1))",
            "SELECT * FROM invoices WHERE number = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
        ))
        .bind(numbers)
        .fetch_all(self.inner.db.pool())
        .await?;
        let mut by_number = std::collections::HashMap::with_capacity(rows.len());
        for r in rows {
            by_number.insert(r.try_get::<String, _>("number")?, r);
        }
        Ok(InvoiceRows(by_number))
    }

    /// Uploads to tax in issue order, a run of due uploads ([`Self::due_run`]) at a time in
    /// one `invoice.upload_batch` (tax checks each invoice after the ones before it, so a
    /// red after its blue in the same batch finds it). Each receipt is verified; the outcomes
    /// are recorded in one transaction. An upload that must wait (transport errors,
    /// `processing`, `upload_number_not_granted` the first few times) is retried with backoff
    /// and, at the head of the queue, holds back the uploads behind it.
    async fn upload_due(&self) -> Result<usize, AgentError> {
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
            invoices.push(self.read_wire(&record).await?);
            entries.push(entry);
        }
        let upload = UploadBatch { invoices };
        let answer = self
            .inner
            .tax
            .call(message_type::INVOICE_UPLOAD_BATCH, &upload)
            .instrument(tracing::debug_span!("tax.upload"))
            .await;
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
                self.retry_later(head, &why).await?;
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
                    self.retry_in(&mut tx, entry, &why).await?;
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
    fn upload_outcome(
        &self,
        entry: &Entry,
        wire: &WireInvoice,
        receipt: SignedReceipt,
    ) -> Result<(SignedReceipt, &'static str, Option<String>), String> {
        let signed = wire.to_signed().map_err(|e| e.to_string())?;
        receipt
            .verify_for(&signed, &self.inner.material.trust, now())
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

    /// Reports invoices and tax's receipts to platform in queue order, a run of due entries
    /// ([`Self::due_run`]) at a time in one `invoice.report_batch`; platform answers each
    /// item, and the answers are recorded in one transaction: recorded → done, a refusal
    /// that is final → failed (counted in `agent status`), any other → retried with backoff.
    /// A batch refused as a whole with a final code (a platform that does not take report
    /// batches) is sent again item by item.
    async fn report_due(&self) -> Result<usize, AgentError> {
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
                self.retry_later(head, &why).await?;
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
    async fn report_item(
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
                invoice: self.read_wire(&record).await?,
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
    async fn record_report(
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
            self.retry_in(tx, entry, &format!("platform answered {text}"))
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
    async fn report_each(
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
                    self.retry_later(entry, &e.to_string()).await?;
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

    /// Acknowledges handled orders to cloud, up to 100 at once.
    async fn ack_due(&self) -> Result<usize, AgentError> {
        let rows = query(
            "SELECT q.id, q.attempts, q.next_attempt_at, o.order_id, o.outcome, o.number, o.refusal
             FROM queue q JOIN orders o ON o.order_id = q.subject
             WHERE q.state = 'pending' AND q.kind = 'ack' ORDER BY q.id LIMIT 100",
        )
        .fetch_all(self.inner.db.pool())
        .await?;
        let t = now().unix_timestamp();
        let mut entries = Vec::new();
        let mut acks = Vec::new();
        for r in &rows {
            if r.try_get::<i64, _>("next_attempt_at")? > t {
                continue;
            }
            let outcome: String = r.try_get("outcome")?;
            let refusal: Option<String> = r.try_get("refusal")?;
            entries.push(Entry {
                id: r.try_get("id")?,
                kind: "ack".to_owned(),
                subject: r.try_get("order_id")?,
                attempts: r.try_get("attempts")?,
            });
            acks.push(OrderAck {
                order_id: r.try_get("order_id")?,
                outcome: if outcome == "issued" {
                    OrderOutcome::Issued {
                        number: r
                            .try_get::<Option<String>, _>("number")?
                            .unwrap_or_default(),
                    }
                } else {
                    OrderOutcome::Refused(
                        refusal
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_else(|| Refusal::new(Code::Internal, "refused")),
                    )
                },
            });
        }
        if acks.is_empty() {
            return Ok(0);
        }
        let answer = self
            .inner
            .cloud
            .call(message_type::ORDERS_ACK, &OrderAcks { acks })
            .instrument(tracing::debug_span!("cloud.ack"))
            .await;
        match answer {
            Ok(a) if a.message_type == message_type::ACK => {
                let mut tx = self.inner.db.begin_write().await?;
                for e in &entries {
                    finish(&mut tx, e.id).await?;
                }
                tx.commit().await?;
                Ok(entries.len())
            }
            other => {
                let why = match other {
                    Ok(a) => String::from_utf8_lossy(&a.payload).into_owned(),
                    Err(e) => e.to_string(),
                };
                let mut tx = self.inner.db.begin_write().await?;
                for e in &entries {
                    self.retry_in(&mut tx, e, &why).await?;
                }
                tx.commit().await?;
                Ok(0)
            }
        }
    }

    /// Calls a peer and reads an answer of type `expect` (a refusal is an error naming it).
    async fn call<Q: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        peer: &EnvelopeClient,
        message: &str,
        body: &Q,
        expect: &str,
    ) -> Result<A, AgentError> {
        let answer = peer.call(message, body).await.map_err(|e: CallError| {
            AgentError::Peer(format!("{} unreachable: {e}", peer.peer_identity()))
        })?;
        if answer.message_type != expect {
            return Err(AgentError::Peer(format!(
                "{} answered {}: {}",
                peer.peer_identity(),
                answer.message_type,
                String::from_utf8_lossy(&answer.payload)
            )));
        }
        answer
            .parse(peer.peer_identity())
            .map_err(|e| AgentError::Peer(e.to_string()))
    }

    /// Queue depths, ages, numbers and quota left.
    ///
    /// # Errors
    /// [`AgentError`].
    pub async fn status(&self) -> Result<Status, AgentError> {
        status(&self.inner.db).await
    }
}

/// What `fapiao agent status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Orders pulled, not yet issued.
    pub to_issue: i64,
    /// Invoices not yet answered by tax.
    pub to_upload: i64,
    /// Invoices and receipts not yet reported to platform.
    pub to_report: i64,
    /// Orders not yet acknowledged to cloud.
    pub to_ack: i64,
    /// Seconds since the oldest pending work was queued (0 when none).
    pub oldest_pending_seconds: i64,
    /// Reports platform refused (need an operator).
    pub failed_reports: i64,
    /// Invoices issued here.
    pub issued: i64,
    /// Orders refused here.
    pub refused: i64,
    /// Numbers left in the blocks in hand.
    pub numbers_left: i64,
    /// The current month (`YYYY-MM`).
    pub month: String,
    /// Quota granted for the month.
    pub quota_granted: String,
    /// Quota used this month (价税合计 of blues minus reds).
    pub quota_used: String,
}

/// The status of the agent whose database is `db` (also from another process: `fapiao agent
/// status` opens the file read-side while the agent runs).
///
/// # Errors
/// [`AgentError`].
pub async fn status(db: &Db) -> Result<Status, AgentError> {
    let pool = db.pool();
    let count = |sql: &'static str| async move {
        query_scalar::<i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(AgentError::from)
    };
    let month = month_of(china_now());
    let quota = query("SELECT granted, used FROM quota WHERE month = $1")
        .bind(&month)
        .fetch_optional(pool)
        .await?;
    let (granted, used) = match quota {
        Some(r) => (r.try_get("granted")?, r.try_get("used")?),
        None => ("0.00".to_owned(), "0.00".to_owned()),
    };
    let oldest: Option<i64> = query_scalar(
        "SELECT MIN(t) FROM (SELECT MIN(created_at) AS t FROM queue WHERE state = 'pending'
                             UNION ALL SELECT MIN(pulled_at) FROM pulled) AS o",
    )
    .fetch_one(pool)
    .await?;
    Ok(Status {
        to_issue: count("SELECT COUNT(*) FROM pulled").await?,
        to_upload: count("SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind = 'upload'")
            .await?,
        to_report: count(
            "SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind IN ('report', 'status')",
        )
        .await?,
        to_ack: count("SELECT COUNT(*) FROM queue WHERE state = 'pending' AND kind = 'ack'")
            .await?,
        oldest_pending_seconds: oldest.map_or(0, |t| (now().unix_timestamp() - t).max(0)),
        failed_reports: count("SELECT COUNT(*) FROM queue WHERE state = 'failed'").await?,
        issued: count("SELECT COUNT(*) FROM orders WHERE outcome = 'issued'").await?,
        refused: count("SELECT COUNT(*) FROM orders WHERE outcome = 'refused'").await?,
        numbers_left: count(
            "SELECT CAST(COALESCE(SUM(last - next + 1), 0) AS BIGINT) FROM blocks WHERE next <= last",
        )
        .await?,
        month,
        quota_granted: granted,
        quota_used: used,
    })
}

impl fapiao_service::ops::Readiness for Agent {
    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        fapiao_service::ops::basic_checks(&self.inner.db, &self.inner.material, now()).await
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        let Ok(s) = self.status().await else {
            return Vec::new();
        };
        let gauge = |queue: &'static str, value: i64| fapiao_service::metrics::Gauge {
            name: "fapiao_agent_queue_depth",
            help: "Agent work waiting, by queue.",
            labels: vec![("queue", queue.to_owned())],
            value: value as f64,
        };
        vec![
            gauge("issue", s.to_issue),
            gauge("upload", s.to_upload),
            gauge("report", s.to_report),
            gauge("ack", s.to_ack),
            fapiao_service::metrics::Gauge {
                name: "fapiao_agent_oldest_pending_seconds",
                help: "Age of the agent's oldest pending work.",
                labels: Vec::new(),
                value: s.oldest_pending_seconds as f64,
            },
            fapiao_service::metrics::Gauge {
                name: "fapiao_agent_numbers_left",
                help: "Invoice numbers left in the blocks in hand.",
                labels: Vec::new(),
                value: s.numbers_left as f64,
            },
        ]
    }
}

/// A batch's answer read as `A`, whose items (`items` of it) answer the `sent` items of the
/// batch one to one; otherwise why not.
fn one_each<A: serde::de::DeserializeOwned, T>(
    answer: &fapiao_protocol::client::Answer,
    peer: &str,
    sent: usize,
    items: impl FnOnce(A) -> Vec<T>,
) -> Result<Vec<T>, String> {
    let got = items(answer.parse::<A>(peer).map_err(|e| e.to_string())?);
    if got.len() == sent {
        Ok(got)
    } else {
        Err(format!(
            "{peer} answered {} {} for {sent} items",
            got.len(),
            answer.message_type
        ))
    }
}

/// `(granted, used, requests)` of a month, read on `conn` (a transaction's, to count on it).
async fn quota_in(
    conn: &mut dyn Executor,
    month: &str,
) -> Result<(Amount, Amount, i64), AgentError> {
    let row = query("SELECT granted, used, requests FROM quota WHERE month = $1")
        .bind(month)
        .fetch_optional(conn)
        .await?;
    match row {
        Some(r) => Ok((
            amount(&r.try_get::<String, _>("granted")?)?,
            amount(&r.try_get::<String, _>("used")?)?,
            r.try_get("requests")?,
        )),
        None => Ok((Amount::default(), Amount::default(), 0)),
    }
}

/// Sets the quota used in `month` (a row for the month if there is none yet).
async fn set_quota_used(tx: &mut Tx, month: &str, used: Amount) -> Result<(), StoreError> {
    query(
        "INSERT INTO quota (month, granted, used, requests) VALUES ($1, '0.00', $2, 0)
         ON CONFLICT (month) DO UPDATE SET used = $2",
    )
    .bind(month)
    .bind(used.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn enqueue(tx: &mut Tx, kind: &str, subject: &str) -> Result<(), StoreError> {
    let t = now().unix_timestamp();
    query(
        "INSERT INTO queue (kind, subject, state, attempts, next_attempt_at, created_at)
         VALUES ($1, $2, 'pending', 0, $3, $3)",
    )
    .bind(kind)
    .bind(subject)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn enqueue_once(tx: &mut Tx, kind: &str, subject: &str) -> Result<(), StoreError> {
    let pending: i64 = query_scalar(
        "SELECT COUNT(*) FROM queue WHERE kind = $1 AND subject = $2 AND state = 'pending'",
    )
    .bind(kind)
    .bind(subject)
    .fetch_one(&mut **tx)
    .await?;
    if pending == 0 {
        enqueue(tx, kind, subject).await?;
    }
    Ok(())
}

async fn finish(tx: &mut Tx, id: i64) -> Result<(), StoreError> {
    query("UPDATE queue SET state = 'done', attempts = attempts + 1, done_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now().unix_timestamp())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn forget_pulled(tx: &mut Tx, order_id: &str) -> Result<(), StoreError> {
    query("DELETE FROM pulled WHERE order_id = $1")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn audit(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    fapiao_store::audit::append(tx, now(), actor, action, subject, detail).await
}
