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

mod ack;
mod call;
mod clock;
mod issue;
mod pull;
mod queue;
mod records;
mod report;
mod status;
mod supply;
mod upload;

pub use clock::Blocked;
pub use status::{Status, status};

use call::one_each;
use queue::{BATCH_BYTES, Entry, enqueue, enqueue_once, finish, forget_pulled};
use supply::{month_of, quota_in, set_quota_used};

/// The agent's schema.
pub const MIGRATIONS: &[Migration] = fapiao_store::migrations![
    1 "0001_agent" "orders, invoices, blocks, quota, red forms, work queue",
    2 "0002_waiting_for" "queue entries waiting for a peer that did not answer",
    3 "0003_notes" "what keeps the agent from its work (clock, pull)",
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
    /// Largest difference between the agent's clock and its peers' at which it issues.
    pub max_clock_skew: Duration,
    /// The tax classification table orders are validated against (`None`: the bundled
    /// official one).
    pub catalog: Option<Arc<TaxCatalog>>,
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
            max_clock_skew: Duration::from_secs(60),
            catalog: None,
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
    /// Stopping, database writes, cloud, platform and tax answering.
    health: fapiao_service::Health,
    /// What blocks it (`clock`, `pull`), as last noted.
    notes: std::sync::Mutex<std::collections::HashMap<&'static str, Option<String>>>,
    options: Options,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("enterprise", &self.enterprise)
            .finish_non_exhaustive()
    }
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
        // What older builds left in the sealed columns, sealed row-bound before serving.
        vault.upgrade(SEALED).await?;
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
        let health = fapiao_service::Health::new(fapiao_service::instance_id());
        for c in [&cloud, &platform, &tax] {
            // The agent's work waits in its queue while a peer is away: reported, not
            // counted.
            health.watch(c.peer_identity(), false);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                health,
                notes: std::sync::Mutex::default(),
                db,
                vault,
                registry: Arc::new(fapiao_service::Registry::new()),
                material,
                device,
                enterprise,
                catalog: options
                    .catalog
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(TaxCatalog::builtin),
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

    /// Its health (readiness, stopping, peers).
    #[must_use]
    pub fn health(&self) -> &fapiao_service::Health {
        &self.inner.health
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
        if let Err(e) = self.revive().await {
            tracing::warn!(error = %e, "agent: looking for work waiting on peers failed");
        }
        if let Err(e) = self.supply().await {
            tracing::info!(error = %e, "agent: topping up numbers or quota failed; retried");
        }
        // A clock off from the peers' dates invoices wrong: nothing is pulled or issued
        // until it agrees (what is issued already goes on).
        let clock = self.clock_problem().await;
        let paused = clock.is_some();
        self.note("clock", clock).await;
        let pulled = if paused { Ok(0) } else { self.pull().await };
        self.note("pull", pulled.as_ref().err().map(ToString::to_string))
            .await;
        let issued = if paused {
            Ok(0)
        } else {
            self.issue_pulled().await
        };
        for (name, result) in [
            ("pull", pulled),
            ("issue", issued),
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

    // ---- pull -------------------------------------------------------------------------

    // ---- issue ------------------------------------------------------------------------

    // ---- queues -----------------------------------------------------------------------
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
