//! The e-commerce cloud platform (电子商务云平台).
//!
//! - The ERP API under `/v1` ([`erp`]), described by `docs/openapi.json` (served at
//!   `/v1/openapi.json`): every request signed per enterprise (`fapiao_protocol::erp`), issuing
//!   idempotent by the enterprise's `order_id` for as long as the order exists.
//! - Each order goes to the e-invoice service platform as an envelope signed by cloud and
//!   encrypted to platform; the answer is opened, the device signature on the invoice verified,
//!   and the invoice stored before the ERP hears of it. If platform cannot be reached, the ERP
//!   gets `platform_unavailable` (retryable) and nothing is stored: retrying the same order
//!   completes it (platform is idempotent by order too).
//! - Status notices from platform (`invoice.status`) update an invoice's tax status; for an
//!   invoice an enterprise's agent issued, the notice brings the invoice itself.
//! - Enterprise-hosted tenants' orders wait in a queue for their agent, which leases them
//!   (`orders.pull`) and acknowledges them once handled (`orders.ack`); see `queue.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fapiao_crypto::Role;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::{
    Ack, NoticeResults, Refusal, StatusNotice, StatusNotices, message_type,
};
use fapiao_protocol::{Code, EnvelopeClient, HttpsClient};
use fapiao_render::PdfFont;
use fapiao_service::{EnvelopeHandler, Envelopes, Incoming, Material, Outgoing};
use fapiao_store::vault::{SealedColumn, Vault};
use fapiao_store::{Db, Migration, Sql, StoreError, query, query_scalar};
use serde::{Deserialize, Serialize};

pub mod erp;
mod portal;
mod queue;
pub mod reconcile;
pub mod webhook;

pub use erp::{InvoiceSummary, InvoiceView};
pub use queue::OrderStatus;
pub use webhook::Workers;

/// The cloud role's schema.
pub const MIGRATIONS: &[Migration] = fapiao_store::migrations![
    1 "0001_cloud" "tenants, API nonces, invoices",
    2 "0002_webhooks" "webhook deliveries",
    3 "0003_sealed" "sealed values, buyer blind index",
    4 "0004_queue" "hosting mode, orders queued for agents",
    5 "0005_early_notices" "status notices that arrive before their invoice",
    6 "0006_erp_nonces" "ERP nonces in the group-committed replay guard",
    7 "0007_webhooks_order" "webhooks by state in id order (due ones without a sort)",
    8 "0008_replicas" "replicas: webhook deliveries claimed",
    9 "0009_reconcile" "how far reconciling with platform got",
    10 "0010_webhook_endpoints" "webhook endpoints, events, the attempts of deliveries; reds by blue",
    11 "0011_ofd" "the issuing device's OFD signature of an invoice",
];

/// Columns whose values are sealed (encryption at rest): the signed invoices (buyer phone,
/// address, bank account, e-mail, identity number), the ERP API secrets, and the orders queued
/// for agents.
pub const SEALED: &[SealedColumn] = &[RECORD, SECRET, QUEUED, ENDPOINT_SECRET];
pub(crate) const RECORD: SealedColumn = SealedColumn {
    table: "invoices",
    column: "record",
    key: "number",
};
pub(crate) const SECRET: SealedColumn = SealedColumn {
    table: "enterprises",
    column: "secret",
    key: "taxpayer_id",
};
pub(crate) const ENDPOINT_SECRET: SealedColumn = SealedColumn {
    table: "webhook_endpoints",
    column: "secret",
    key: "id",
};
pub(crate) const QUEUED: SealedColumn = SealedColumn {
    table: "queued_orders",
    column: "body",
    key: "enterprise || ':' || order_id",
};

/// Failed guesses at one invoice number (portal, 查验) before waits begin.
pub const GUESSES_FREE: u32 = 5;
/// The longest wait between guesses at one invoice number, seconds.
pub const GUESS_WAIT_MAX_SECONDS: u64 = 900;

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Webhook retry delays.
    pub backoff: fapiao_service::Backoff,
    /// How long a webhook delivery is retried before it is marked failed (three days).
    pub retry_for: Duration,
    /// Whether an ERP's webhook endpoints may be at loopback, private or link-local
    /// addresses (`up`'s demo on one machine); by default they must be public.
    pub webhooks_to_private: bool,
    /// How often the worker looks for due deliveries when nothing wakes it.
    pub poll: Duration,
    /// ERP requests per second per enterprise.
    pub enterprise_rate: f64,
    /// ERP requests an enterprise may burst.
    pub enterprise_burst: f64,
    /// Largest ERP request body, bytes (larger: 413).
    pub max_body_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: fapiao_service::Backoff {
                base: Duration::from_secs(2),
                max: Duration::from_secs(600),
            },
            retry_for: Duration::from_secs(3 * 24 * 3600),
            webhooks_to_private: false,
            poll: Duration::from_secs(1),
            max_body_bytes: erp::MAX_BODY,
            enterprise_rate: 200.0,
            enterprise_burst: 400.0,
        }
    }
}

/// China Standard Time, UTC+8.
const CHINA: time::UtcOffset = time::macros::offset!(+8);
use time::format_description::well_known::Rfc3339;

/// China time (UTC+8) as the API shows times: RFC 3339 with the offset,
/// `2026-12-07T17:00:00+08:00`.
#[must_use]
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.to_offset(CHINA).format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A stored China time (`YYYY-MM-DD HH:MM:SS`) as [`rfc3339`] shows it; unparsable text as
/// it is.
#[must_use]
pub fn china_rfc3339(t: &str) -> String {
    fapiao_model::datetime::parse(t)
        .ok()
        .and_then(|p| p.assume_offset(CHINA).format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_owned())
}

/// The OpenAPI document of the ERP API.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// An enterprise's ERP API credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Key id (`X-Fapiao-Key`).
    pub key_id: String,
    /// Shared secret for the HMAC.
    pub secret: String,
}

/// Why the role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The material or a peer URL.
    #[error("{0}")]
    Setup(String),
}

/// The cloud role.
#[derive(Clone, Debug)]
pub struct Cloud {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    registry: Arc<fapiao_service::Registry>,
    material: Material,
    envelopes: Arc<Envelopes>,
    platform: EnvelopeClient,
    options: Options,
    per_enterprise: fapiao_service::RateLimiter,
    /// The ERP nonces this process has seen (the persistent guard is the database's).
    nonces: fapiao_crypto::envelope::MemoryReplayGuard,
    /// This replica's name in what it claims in the database (webhook deliveries).
    instance: String,
    wake: Arc<tokio::sync::Notify>,
    webhook_clients: webhook::Clients,
    /// Single issued invoices waiting to share a write transaction (`erp`'s
    /// `Cloud::store_invoice`).
    storing: fapiao_store::Group<fapiao_store::Waiting<erp::Storing, erp::Stored>>,
    /// Orders of enterprise-hosted tenants waiting to share a write transaction
    /// (`queue`'s `Cloud::enqueue_order`).
    enqueuing: fapiao_store::Group<fapiao_store::Waiting<queue::Enqueuing, queue::Queued>>,
    /// Failed download-portal guesses per invoice number.
    portal_attempts: fapiao_service::Attempts,
    /// Stopping, database writes, the platform answering.
    health: fapiao_service::Health,
    /// When the reconciling worker last ran.
    reconcile: reconcile::Schedule,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud").finish_non_exhaustive()
    }
}

impl Cloud {
    /// Opens the role.
    ///
    /// # Errors
    /// [`CloudError`].
    pub async fn open(
        database: &str,
        material: Material,
        platform_url: &str,
        platform_identity: &str,
        options: Options,
    ) -> Result<Self, CloudError> {
        let db = Db::open(database, "cloud", MIGRATIONS).await?;
        let vault = Vault::open(&db, material.master_key.clone(), now()).await?;
        // What older builds left in the sealed columns, sealed row-bound before serving.
        vault.upgrade(SEALED).await?;
        let registry = Arc::new(fapiao_service::Registry::new());
        let envelopes = Envelopes::new(
            material.party.clone(),
            material.trust.clone(),
            db.clone(),
            registry.clone(),
        )
        .map_err(|e| CloudError::Setup(e.to_string()))?;
        let http = HttpsClient::new(
            platform_url,
            material
                .client_config()
                .map_err(|e| CloudError::Setup(e.to_string()))?,
        )
        .map_err(|e| CloudError::Setup(e.to_string()))?
        .with_timeout(Duration::from_secs(15));
        let platform = EnvelopeClient::new(
            http,
            material.party.clone(),
            material.trust.clone(),
            platform_identity,
        );
        let instance = fapiao_service::instance_id();
        let health = fapiao_service::Health::new(instance.clone());
        // Without the platform no order is issued: it counts for readiness.
        health.watch(platform.peer_identity(), true);
        Ok(Self {
            inner: Arc::new(Inner {
                health,
                reconcile: reconcile::Schedule::default(),
                portal_attempts: fapiao_service::Attempts::new(
                    GUESSES_FREE,
                    Duration::from_secs(GUESS_WAIT_MAX_SECONDS),
                ),
                db,
                vault,
                registry,
                envelopes: Arc::new(envelopes),
                material,
                platform,
                per_enterprise: fapiao_service::RateLimiter::new(
                    options.enterprise_rate,
                    options.enterprise_burst,
                ),
                options,
                nonces: fapiao_crypto::envelope::MemoryReplayGuard::new(),
                instance,
                wake: Arc::new(tokio::sync::Notify::new()),
                webhook_clients: webhook::Clients::default(),
                storing: fapiao_store::Group::default(),
                enqueuing: fapiao_store::Group::default(),
            }),
        })
    }

    /// The routes: the ERP API, the OpenAPI document, the download portal (`/portal`), and the
    /// envelope endpoint (platform's status notices, mutual TLS).
    pub fn router(&self) -> Router {
        let router = self
            .inner
            .envelopes
            .clone()
            .routes(Arc::new(self.clone()))
            .merge(erp::routes(self.clone()))
            .merge(portal::routes(self.clone()));
        fapiao_service::ops::track(router, self.inner.registry.clone())
    }

    /// The admin routes: `/healthz`, `/readyz`, `/metrics`.
    pub fn admin_router(&self) -> Router {
        fapiao_service::ops::admin_routes(
            "cloud",
            Arc::new(self.clone()),
            self.inner.registry.clone(),
        )
    }

    /// The database (for operators and tests).
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Its health (readiness, stopping, peers).
    #[must_use]
    pub fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    /// Registers a tenant with fresh credentials, or returns `None` if it exists. An
    /// enterprise-hosted tenant's orders wait for its agent.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn register_enterprise(
        &self,
        taxpayer_id: &str,
        name: &str,
        webhook_url: Option<&str>,
        enterprise_hosted: bool,
    ) -> Result<Option<Credentials>, StoreError> {
        let creds = Credentials {
            key_id: format!("ak_{}", &fapiao_protocol::client::new_id()[..16]),
            secret: format!("sk_{}", fapiao_protocol::client::new_id()),
        };
        let mut tx = self.inner.db.begin_write().await?;
        let sealed = self
            .inner
            .vault
            .seal_str(&mut tx, SECRET, taxpayer_id, &creds.secret)
            .await?;
        let n = query(
            "INSERT INTO enterprises (taxpayer_id, name, key_id, secret, webhook_url, created_at, hosting)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (taxpayer_id) DO NOTHING",
        )
        .bind(taxpayer_id)
        .bind(name)
        .bind(&creds.key_id)
        .bind(sealed)
        .bind(webhook_url)
        .bind(now().unix_timestamp())
        .bind(if enterprise_hosted {
            "enterprise"
        } else {
            "platform"
        })
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 1 {
            fapiao_store::audit::append(
                &mut tx,
                now(),
                "system",
                "tenant.registered",
                taxpayer_id,
                &serde_json::json!({"key_id": creds.key_id, "webhook": webhook_url.is_some()}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((n == 1).then_some(creds))
    }

    /// The bundled typefaces, loaded once for the process (the roles of `up` share them).
    pub(crate) fn font(&self) -> Result<&'static PdfFont, String> {
        fapiao_render::shared_font().ok_or_else(|| "the bundled font is unusable".to_owned())
    }

    async fn status_notice(
        &self,
        notice: &StatusNotice,
    ) -> Result<Result<(), Refusal>, StoreError> {
        Ok(self
            .apply_notices(std::slice::from_ref(notice))
            .await?
            .and_then(|mut results| results.pop().flatten().map_or(Ok(()), Err)))
    }

    /// Many notices, each checked and answered as if it came alone; those that check out are
    /// applied in one commit.
    async fn status_notices(
        &self,
        batch: &StatusNotices,
    ) -> Result<Result<NoticeResults, Refusal>, StoreError> {
        if batch.notices.is_empty() || batch.notices.len() > StatusNotices::MAX {
            return Ok(Err(Refusal::new(
                Code::InvalidRequest,
                format!("a notice batch holds 1 to {} notices", StatusNotices::MAX),
            )));
        }
        Ok(self
            .apply_notices(&batch.notices)
            .await?
            .map(|results| NoticeResults { results }))
    }

    /// Checks notices (tax's receipt verifies; an invoice an agent issued, which the notice
    /// brings, verifies and is the one the notice names), then in one transaction stores the
    /// invoices they bring and applies their statuses, in order: one result per notice
    /// (`None`: applied). A database failure storing the invoices refuses the whole batch
    /// (nothing is stored; platform sends it again).
    async fn apply_notices(
        &self,
        notices: &[StatusNotice],
    ) -> Result<Result<Vec<Option<Refusal>>, Refusal>, StoreError> {
        let mut results = Vec::with_capacity(notices.len());
        // (notice index, the invoice it brings, checked), by enterprise.
        let mut bring: Vec<(&str, Vec<Brought>)> = Vec::new();
        for (i, notice) in notices.iter().enumerate() {
            let checked = self.check_notice(notice);
            // A verification is CPU work: the runtime gets its thread back between them.
            tokio::task::yield_now().await;
            match checked {
                Err(r) => results.push(Some(r)),
                Ok(None) => results.push(None),
                Ok(Some((issued, signed))) => {
                    results.push(None);
                    let e = notice.enterprise.as_str();
                    let b = Brought {
                        at: i,
                        issued,
                        signed,
                    };
                    match bring.iter_mut().find(|(x, _)| *x == e) {
                        Some((_, group)) => group.push(b),
                        None => bring.push((e, vec![b])),
                    }
                }
            }
        }
        let mut tx = self.inner.db.begin_write().await?;
        lock_enterprises(&mut tx, notices.iter().map(|n| n.enterprise.as_str())).await?;
        for (enterprise, group) in bring {
            let at: Vec<usize> = group.iter().map(|b| b.at).collect();
            let (issued, signed): (Vec<erp::Issued>, Vec<_>) =
                group.into_iter().map(|b| (b.issued, b.signed)).unzip();
            let fresh = match self
                .insert_issued(&mut tx, enterprise, &issued, &signed, &["notice"])
                .await
            {
                Ok(f) => f,
                Err(e) => return Ok(Err(Refusal::new(Code::Internal, e.message))),
            };
            // One not inserted now is on record already, unless its order is on record with
            // another invoice.
            for ((i, s), f) in at.iter().zip(&signed).zip(fresh) {
                if f.is_none()
                    && query_scalar::<i64>(
                        "SELECT COUNT(*) FROM invoices WHERE enterprise = $1 AND number = $2",
                    )
                    .bind(enterprise)
                    .bind(s.invoice.number().as_str())
                    .fetch_one(&mut *tx)
                    .await?
                        == 0
                {
                    results[*i] = Some(Refusal::new(
                        Code::InvalidRequest,
                        "the notice's order is on record with another invoice",
                    ));
                }
            }
        }
        let applied: Vec<&StatusNotice> = notices
            .iter()
            .zip(&results)
            .filter_map(|(notice, refused)| refused.is_none().then_some(notice))
            .collect();
        self.apply_notices_in(&mut tx, &applied).await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(Ok(results))
    }

    /// What needs nothing on record: tax's receipt verifies, and an invoice an agent issued
    /// (new to cloud) verifies and is the one the notice names — that invoice, to be stored.
    fn check_notice(
        &self,
        notice: &StatusNotice,
    ) -> Result<Option<(erp::Issued, fapiao_issuer::SignedInvoice)>, Refusal> {
        if let Some(r) = &notice.receipt
            && r.verify(&self.inner.material.trust.current(), now())
                .is_err()
        {
            return Err(Refusal::new(
                Code::InvalidRequest,
                "the tax receipt does not verify",
            ));
        }
        let Some(issued) = &notice.issued else {
            return Ok(None);
        };
        let signed = self
            .check_issued(&notice.enterprise, &issued.invoice, "notice")
            .map_err(|e| Refusal::new(Code::parse(e.code).unwrap_or(Code::Internal), e.message))?;
        if signed.invoice.number().as_str() != notice.number {
            return Err(Refusal::new(
                Code::InvalidRequest,
                "the notice's invoice has another number",
            ));
        }
        Ok(Some((
            erp::Issued {
                order_id: issued.order_id.clone(),
                request_hash: issued.request_hash.clone(),
                invoice: issued.invoice.clone(),
                tax_status: notice.tax_status,
                form: issued.form.clone(),
            },
            signed,
        )))
    }

    /// Records checked notices' statuses in `tx`, in order, as if each were applied alone:
    /// the enterprise's webhook is queued when a status changes, and a notice for an invoice
    /// not stored here yet is kept (`early_notices`) until it is. Set-based — three
    /// statements per run of notices for distinct invoices, not three per notice — so a batch
    /// holds the write turn (which the ERP's orders wait for) briefly.
    async fn apply_notices_in(
        &self,
        tx: &mut fapiao_store::Tx,
        notices: &[&StatusNotice],
    ) -> Result<(), StoreError> {
        let mut run: Vec<serde_json::Value> = Vec::new();
        let mut keys = std::collections::HashSet::new();
        for notice in notices {
            // A second notice for the same invoice starts a new run, so that it applies after
            // the first (its status change, its webhook).
            if !keys.insert((notice.number.as_str(), notice.enterprise.as_str())) {
                apply_run(tx, std::mem::take(&mut run)).await?;
                keys.clear();
                keys.insert((notice.number.as_str(), notice.enterprise.as_str()));
            }
            run.push(serde_json::json!({
                "number": notice.number,
                "enterprise": notice.enterprise,
                "status": notice.tax_status.as_str(),
                "reason": notice.reason,
                "receipt": notice
                    .receipt
                    .as_ref()
                    .map(|r| serde_json::to_string(r).unwrap_or_default()),
            }));
        }
        apply_run(tx, run).await
    }
}

/// Serializes `tx` with every transaction, of any replica, that stores invoices, applies
/// notices or queues orders for one of `enterprises` (a PostgreSQL advisory lock per
/// enterprise, taken in one order; nothing on SQLite, whose write transactions hold the
/// database). What such a transaction checks and then writes — an order queued once, a
/// notice kept for an invoice not stored yet and taken when it is — holds while it runs.
pub(crate) async fn lock_enterprises<'a>(
    tx: &mut fapiao_store::Tx,
    enterprises: impl IntoIterator<Item = &'a str>,
) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = enterprises.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    for e in ids {
        tx.lock(&format!("cloud.enterprise:{e}")).await?;
    }
    Ok(())
}

/// An invoice a notice brings (an agent's), checked, and the notice's place in its batch.
struct Brought {
    at: usize,
    issued: erp::Issued,
    signed: fapiao_issuer::SignedInvoice,
}

/// The notices of a run (distinct invoices) as rows: `number`, `enterprise`, `status`,
/// `reason`, `receipt` from the JSON array bound as `$1`, `k` its position; a statement
/// around them for each engine.
macro_rules! notice_rows {
    ($before:literal, $after:literal) => {
        Sql::dialects(
            concat!(
                $before,
                "SELECT key AS k, json_extract(value, '$.number') AS number,
                     json_extract(value, '$.enterprise') AS enterprise,
                     json_extract(value, '$.status') AS status,
                     json_extract(value, '$.reason') AS reason,
                     json_extract(value, '$.receipt') AS receipt FROM jsonb_each($1)",
                $after
            ),
            concat!(
                $before,
                "SELECT key AS k, value->>'number' AS number,
                     value->>'enterprise' AS enterprise, value->>'status' AS status,
                     value->>'reason' AS reason, value->>'receipt' AS receipt
                 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS j(value, key)",
                $after
            ),
        )
    };
}

/// Applies a run of notices for distinct invoices (see [`Cloud::apply_notices_in`]).
async fn apply_run(
    tx: &mut fapiao_store::Tx,
    run: Vec<serde_json::Value>,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let rows = serde_json::Value::Array(run).to_string();
    let t = now().unix_timestamp();
    // Webhooks first: they compare with the status before the update.
    query(notice_rows!(
        "INSERT INTO webhook_events (enterprise, event, number, created_at)
         SELECT e.taxpayer_id, 'invoice.tax_status_changed', n.number, $2
         FROM (",
        ") n
         JOIN invoices i ON i.number = n.number AND i.enterprise = n.enterprise
         JOIN enterprises e ON e.taxpayer_id = n.enterprise
             AND (e.webhook_url IS NOT NULL OR EXISTS (SELECT 1 FROM webhook_endpoints s
                  WHERE s.enterprise = e.taxpayer_id AND s.deleted_at IS NULL))
         WHERE i.tax_status <> n.status
         ORDER BY n.k"
    ))
    .bind(&rows)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    query(notice_rows!(
        "UPDATE invoices SET tax_status = n.status, tax_reason = n.reason,
             receipt = COALESCE(n.receipt, invoices.receipt)
         FROM (",
        ") n
         WHERE invoices.number = n.number AND invoices.enterprise = n.enterprise"
    ))
    .bind(&rows)
    .execute(&mut **tx)
    .await?;
    // Not stored here yet: platform's answer to the order is still on its way (the outbox can
    // be faster), or was lost and the ERP will retry the order. Kept until the invoice is
    // stored ([`erp`]'s `insert_issued` applies it).
    let early: Vec<String> = query_scalar(notice_rows!(
        "INSERT INTO early_notices (number, enterprise, tax_status, tax_reason, receipt,
             received_at)
         SELECT n.number, n.enterprise, n.status, n.reason, n.receipt, $2
         FROM (",
        ") n
         WHERE NOT EXISTS (SELECT 1 FROM invoices i
                           WHERE i.number = n.number AND i.enterprise = n.enterprise)
         ON CONFLICT (number) DO UPDATE SET enterprise = excluded.enterprise,
             tax_status = excluded.tax_status, tax_reason = excluded.tax_reason,
             receipt = excluded.receipt, received_at = excluded.received_at
         RETURNING number"
    ))
    .bind(&rows)
    .bind(t)
    .fetch_all(&mut **tx)
    .await?;
    for number in early {
        tracing::info!(%number, "status notice ahead of its invoice, kept");
    }
    Ok(())
}

impl fapiao_service::ops::Readiness for Cloud {
    fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
    }

    async fn checks(&self) -> Vec<fapiao_service::ops::Check> {
        let h = &self.inner.health;
        h.probe_if_due(&self.inner.platform, now()).await;
        h.checks(&self.inner.db, &self.inner.material, now()).await
    }

    async fn gauges(&self) -> Vec<fapiao_service::metrics::Gauge> {
        let depth: i64 = query_scalar("SELECT COUNT(*) FROM webhooks WHERE state = 'pending'")
            .fetch_one(self.inner.db.pool())
            .await
            .unwrap_or(0);
        let mut out = vec![fapiao_service::metrics::Gauge {
            name: "fapiao_webhook_queue_depth",
            help: "Webhook deliveries waiting.",
            labels: Vec::new(),
            value: depth as f64,
        }];
        // The async flow: orders waiting for their enterprise's agent, and the oldest's
        // age, for every enterprise-hosted tenant (0 when none waits).
        let t = now().unix_timestamp();
        if let Ok(rows) = query(
            "SELECT e.taxpayer_id,
                 CAST(COUNT(q.seq) AS BIGINT) AS n,
                 CAST(COALESCE(MIN(q.created_at), 0) AS BIGINT) AS oldest
             FROM enterprises e LEFT JOIN queued_orders q
                 ON q.enterprise = e.taxpayer_id AND q.state IN ('queued', 'leased')
             WHERE e.hosting = 'enterprise'
             GROUP BY e.taxpayer_id",
        )
        .fetch_all(self.inner.db.pool())
        .await
        {
            for r in rows {
                let e: String = r.try_get("taxpayer_id").unwrap_or_default();
                let n: i64 = r.try_get("n").unwrap_or(0);
                let oldest: i64 = r.try_get("oldest").unwrap_or(0);
                out.push(fapiao_service::metrics::Gauge {
                    name: "fapiao_queued_orders",
                    help: "Orders waiting for the enterprise's agent (queued or leased).",
                    labels: vec![("enterprise", e.clone())],
                    value: n as f64,
                });
                out.push(fapiao_service::metrics::Gauge {
                    name: "fapiao_queued_oldest_seconds",
                    help: "Age of the oldest order waiting for the enterprise's agent.",
                    labels: vec![("enterprise", e)],
                    value: if n == 0 {
                        0.0
                    } else {
                        (t - oldest).max(0) as f64
                    },
                });
            }
        }
        out
    }
}

impl EnvelopeHandler for Cloud {
    async fn handle(&self, incoming: Incoming) -> Outgoing {
        if incoming.sender.role == Role::Agent {
            return self.agent_message(&incoming).await;
        }
        if incoming.sender.role != Role::Platform
            || incoming.sender.identity() != self.inner.platform.peer_identity()
        {
            return Outgoing::refusal(&Refusal::new(
                Code::EnvelopeRejected,
                "only the configured platform sends status notices",
            ));
        }
        match incoming.message.header.message_type.as_str() {
            message_type::INVOICE_STATUS => match incoming.body::<StatusNotice>() {
                Ok(n) => match self.status_notice(&n).await {
                    Ok(Ok(())) => Outgoing::json(message_type::ACK, &Ack {}),
                    Ok(Err(r)) => Outgoing::refusal(&r),
                    Err(e) => {
                        tracing::error!(error = %e, "storing a status notice failed");
                        Outgoing::refusal(&Refusal::new(Code::Internal, "internal error"))
                    }
                },
                Err(o) => o,
            },
            message_type::INVOICE_STATUS_BATCH => match incoming.body::<StatusNotices>() {
                Ok(b) => match self.status_notices(&b).await {
                    Ok(Ok(r)) => Outgoing::json(message_type::NOTICE_RESULTS, &r),
                    Ok(Err(r)) => Outgoing::refusal(&r),
                    Err(e) => {
                        tracing::error!(error = %e, "storing status notices failed");
                        Outgoing::refusal(&Refusal::new(Code::Internal, "internal error"))
                    }
                },
                Err(o) => o,
            },
            other => Outgoing::refusal(&Refusal::new(
                Code::InvalidRequest,
                format!("cloud does not take `{other}` messages"),
            )),
        }
    }
}
