//! The e-invoice service platform (电子发票服务平台).
//!
//! - [`registry`]: connected clouds and enterprises with their qualification, managed through
//!   the admin API on a separate port ([`Platform::admin_router`]) and the `fapiao platform`
//!   commands.
//! - [`issue`]: for each order from a cloud — sender registered, enterprise of that cloud and
//!   active, invoice type allowed, total within the per-invoice limit, the month within the
//!   credit quota (reds give quota back), the order valid — then the hosted issuing device
//!   numbers and signs it, all in one write transaction with the quota, the number block, the
//!   invoice, the idempotency record and the outbox row. A refusal leaves nothing behind.
//! - [`agents`]: enterprises' agents (async flow) get number blocks and quota shares here and
//!   report what they issued; each report is checked before it is recorded and passed on to
//!   the enterprise's cloud.
//! - [`outbox`]: the durable outbox worker: uploads to tax with exponential backoff and jitter,
//!   records receipts, stops on a definite refusal, and tells the cloud about status changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use fapiao_crypto::{Certificate, PrivateKey};
use fapiao_issuer::IssuingDevice;
use fapiao_model::TaxCatalog;
use fapiao_protocol::client::now;
use fapiao_protocol::{EnvelopeClient, HttpsClient};
use fapiao_service::{Envelopes, Material};
use fapiao_store::vault::{SealedColumn, Vault};
use fapiao_store::{Db, Migration, StoreError};
use zeroize::Zeroizing;

pub mod agents;
pub mod issue;
mod issuing;
mod layout;
mod numbers;
pub mod outbox;
mod reconcile;
pub mod registry;
mod step;

pub use outbox::{OutboxEntry, Workers};
pub use registry::{Cloud, Enterprise, EnterprisePatch, EnterpriseStatus, Hosting, SellerDetails};

/// The platform role's schema.
pub const MIGRATIONS: &[Migration] = fapiao_store::migrations![
    1 "0001_platform" "registries, numbers, invoices, red forms, outbox",
    2 "0002_outbox_chain" "outbox entries by number (red uploads in chain order)",
    3 "0003_agents" "agents: number blocks, quota shares, reported invoices",
    4 "0004_outbox_order" "outbox entries by state in id order (due entries without a sort)",
    5 "0005_replicas" "replicas: blocks held by a replica's device, outbox entries claimed",
    6 "0006_waiting_for" "outbox entries waiting for a peer that did not answer",
    7 "0007_invoices_issued" "invoices in issue order (clouds reconciling)",
    8 "0008_catalog_version" "the tax code catalog version of each invoice",
    9 "0009_seller_details" "the seller particulars an enterprise registered",
];

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// First retry delay of the outbox (doubles per attempt, ±25 % jitter).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How often the outbox worker looks for due work when nothing wakes it.
    pub poll: Duration,
    /// Numbers per block handed to a hosted device.
    pub block_size: u64,
    /// Numbers per range asked of tax.
    pub range_size: u64,
    /// An outbox entry pending longer than this makes `/readyz` fail.
    pub outbox_stuck_after: Duration,
    /// The tax classification table orders are validated against (`None`: the bundled
    /// official one).
    pub catalog: Option<Arc<TaxCatalog>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            block_size: 1_000,
            range_size: 100_000,
            outbox_stuck_after: Duration::from_secs(900),
            catalog: None,
        }
    }
}

/// Where the hosted issuing devices' keys are: `<dir>/<taxpayer id>.sign.{crt,key}.pem`,
/// keys encrypted with `passphrase`.
#[derive(Clone)]
pub struct DeviceKeys {
    /// Directory.
    pub dir: PathBuf,
    /// Key passphrase.
    pub passphrase: Zeroizing<String>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why the role could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The material or a peer URL.
    #[error("{0}")]
    Setup(String),
}

/// Columns whose values are sealed (encryption at rest): the signed invoice records, which
/// carry the buyer's phone, address, bank account, e-mail and identity number.
pub const SEALED: &[SealedColumn] = &[RECORD];
pub(crate) const RECORD: SealedColumn = SealedColumn {
    table: "invoices",
    column: "record",
    key: "number",
};

/// The platform role.
#[derive(Clone, Debug)]
pub struct Platform {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    registry: Arc<fapiao_service::Registry>,
    material: Material,
    envelopes: Arc<Envelopes>,
    catalog: TaxCatalog,
    devices: DeviceKeys,
    device_cache: Mutex<HashMap<String, Arc<IssuingDevice>>>,
    tax: EnvelopeClient,
    clouds: Mutex<HashMap<String, Arc<EnvelopeClient>>>,
    wake: Arc<tokio::sync::Notify>,
    range_lock: tokio::sync::Mutex<()>,
    /// Single blue orders waiting to share a write transaction (`issue::Platform::issue_blue`).
    singles: fapiao_store::Group<fapiao_store::Waiting<issue::Queued, issue::Answer>>,
    /// This replica's name in what it holds in the database: the number blocks its hosted
    /// devices number from, the outbox entries it is sending.
    instance: String,
    /// Stopping, database writes, tax and the clouds answering.
    health: fapiao_service::Health,
    options: Options,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}

impl Platform {
    /// Opens the role.
    ///
    /// # Errors
    /// [`PlatformError`].
    pub async fn open(
        database: &str,
        material: Material,
        devices: DeviceKeys,
        tax_url: &str,
        tax_identity: &str,
        options: Options,
    ) -> Result<Self, PlatformError> {
        let db = Db::open(database, "platform", MIGRATIONS).await?;
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
        .map_err(|e| PlatformError::Setup(e.to_string()))?;
        let client_config = material
            .client_config()
            .map_err(|e| PlatformError::Setup(e.to_string()))?;
        let http = HttpsClient::new(tax_url, client_config)
            .map_err(|e| PlatformError::Setup(e.to_string()))?
            .with_timeout(Duration::from_secs(10));
        let tax = EnvelopeClient::new(
            http,
            material.party.clone(),
            material.trust.clone(),
            tax_identity,
        );
        let instance = fapiao_service::instance_id();
        let health = fapiao_service::Health::new(instance.clone());
        // Issuing goes on while tax is away (the outbox keeps the uploads): reported, not
        // counted.
        health.watch(tax.peer_identity(), false);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                vault,
                registry,
                envelopes: Arc::new(envelopes),
                material,
                catalog: options
                    .catalog
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(TaxCatalog::builtin),
                devices,
                device_cache: Mutex::new(HashMap::new()),
                tax,
                clouds: Mutex::new(HashMap::new()),
                wake: Arc::new(tokio::sync::Notify::new()),
                range_lock: tokio::sync::Mutex::new(()),
                singles: fapiao_store::Group::default(),
                health,
                instance,
                options,
            }),
        })
    }

    /// The business routes: envelopes from clouds (mutual TLS).
    pub fn router(&self) -> Router {
        self.inner.envelopes.clone().routes(Arc::new(self.clone()))
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

    /// The hosted issuing device of an enterprise, loaded once from its key files.
    pub(crate) fn device(&self, taxpayer_id: &str) -> Result<Arc<IssuingDevice>, String> {
        if let Some(d) = self
            .inner
            .device_cache
            .lock()
            .ok()
            .and_then(|c| c.get(taxpayer_id).cloned())
        {
            return Ok(d);
        }
        if !taxpayer_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("no hosted device for `{taxpayer_id}`"));
        }
        let base = self.inner.devices.dir.join(format!("{taxpayer_id}.sign"));
        let read = |ext: &str| {
            let p = PathBuf::from(format!("{}{ext}", base.display()));
            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let cert = Certificate::from_pem(&read(".crt.pem")?).map_err(|e| e.to_string())?;
        let pem = Zeroizing::new(read(".key.pem")?);
        let key = PrivateKey::from_encrypted_pem(&pem, self.inner.devices.passphrase.as_bytes())
            .map_err(|e| format!("device key of {taxpayer_id}: {e}"))?;
        let device = Arc::new(IssuingDevice::new(key, cert).map_err(|e| e.to_string())?);
        if let Ok(mut c) = self.inner.device_cache.lock() {
            c.insert(taxpayer_id.to_owned(), device.clone());
        }
        Ok(device)
    }

    /// The envelope client for a cloud (cached per identity and URL).
    pub(crate) fn cloud_client(
        &self,
        identity: &str,
        url: &str,
    ) -> Result<Arc<EnvelopeClient>, String> {
        let key = format!("{identity} {url}");
        if let Some(c) = self
            .inner
            .clouds
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(c);
        }
        let config = self
            .inner
            .material
            .client_config()
            .map_err(|e| e.to_string())?;
        let http = HttpsClient::new(url, config)
            .map_err(|e| e.to_string())?
            .with_timeout(Duration::from_secs(10));
        let client = Arc::new(EnvelopeClient::new(
            http,
            self.inner.material.party.clone(),
            self.inner.material.trust.clone(),
            identity,
        ));
        if let Ok(mut m) = self.inner.clouds.lock() {
            m.insert(key, client.clone());
        }
        Ok(client)
    }
}
