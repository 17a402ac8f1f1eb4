//! Starting roles: one from its config ([`start_role`], what `fapiao serve` does), or the
//! whole system in one process on loopback ([`System::up`], what `fapiao up`, the tests and
//! the benchmark do).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use fapiao_agent::Agent;
use fapiao_cloud::Cloud;
use fapiao_crypto::Suite;
use fapiao_crypto::tls::ClientAuth;
use fapiao_model::Amount;
use fapiao_platform::{DeviceKeys, Enterprise, EnterpriseStatus, Hosting, Options, Platform};
use fapiao_service::Material;
use fapiao_tax::Tax;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::bootstrap::{AGENT_ENTERPRISE, DEMO_ENTERPRISES, Layout, Ports, Storage};
use crate::config::RoleConfig;
use crate::{Result, SystemError};

/// A started role.
#[derive(Debug)]
pub struct Running {
    /// `cloud`, `platform` or `tax`.
    pub role: String,
    /// Business addresses.
    pub addrs: Vec<SocketAddr>,
    /// Admin addresses.
    pub admin_addrs: Vec<SocketAddr>,
    servers: Vec<fapiao_service::Running>,
    admin_servers: Vec<fapiao_service::Running>,
    /// How long a stop may take (`limits.shutdown_grace_seconds`).
    grace: std::time::Duration,
    workers: Option<fapiao_service::Worker>,
    signer: fapiao_service::audit_signer::AuditSigner,
    crls: fapiao_service::crl_reload::CrlReloader,
    statistics: Option<fapiao_service::statistics::StatisticsKeeper>,
    /// The role, for in-process use.
    pub handle: RoleHandle,
}

/// The role object of a [`Running`].
#[derive(Debug, Clone)]
pub enum RoleHandle {
    /// An enterprise's agent.
    Agent(Agent),
    /// Tax.
    Tax(Tax),
    /// Platform.
    Platform(Platform),
    /// Cloud.
    Cloud(Cloud),
}

impl RoleHandle {
    /// The role's health.
    #[must_use]
    pub fn health(&self) -> &fapiao_service::Health {
        match self {
            Self::Agent(a) => a.health(),
            Self::Tax(t) => t.health(),
            Self::Platform(p) => p.health(),
            Self::Cloud(c) => c.health(),
        }
    }
}

impl Running {
    /// A graceful stop, within the role's grace (`limits.shutdown_grace_seconds`): readiness
    /// turns 503 at once; the business listeners close (new clients are refused, so a load
    /// balancer sends them elsewhere) and the requests in flight finish; the workers finish
    /// their step; a platform lets the number blocks it holds go, for the other replicas; the
    /// audit head is signed over the last record; the admin port closes last. What has not
    /// finished when the grace runs out is cut (nothing acknowledged is lost: every answer
    /// follows its commit). Whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.handle.health().begin_stopping();
        let mut clean = true;
        let mut cut = Vec::new();
        for s in self.servers {
            let addr = s.local_addr();
            if !s.shutdown_by(deadline).await {
                cut.push(addr);
                clean = false;
            }
        }
        if !cut.is_empty() {
            tracing::warn!(
                ?cut,
                grace_seconds = self.grace.as_secs(),
                "the grace ran out: requests still in flight were cut"
            );
        }
        if let Some(w) = self.workers
            && !w.shutdown_by(deadline).await
        {
            tracing::warn!(
                grace_seconds = self.grace.as_secs(),
                "the grace ran out: the workers' step was cut (it is done again at the next start)"
            );
            clean = false;
        }
        if let RoleHandle::Platform(p) = &self.handle {
            match p.release_blocks().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(blocks = n, "number blocks released"),
                Err(e) => tracing::warn!(error = %e, "releasing the number blocks held"),
            }
        }
        self.signer.shutdown().await;
        self.crls.shutdown().await;
        if let Some(s) = self.statistics {
            s.shutdown().await;
        }
        for s in self.admin_servers {
            s.shutdown_by(tokio::time::Instant::now()).await;
        }
        tracing::info!(role = %self.role, clean, "stopped");
        clean
    }
}

fn e<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> SystemError {
    move |err| SystemError(format!("{what}: {err}"))
}

/// Creates a role's PostgreSQL database unless it exists (nothing for SQLite, whose file is
/// created when opened).
///
/// # Errors
/// [`SystemError`] naming the database (never its password).
pub async fn create_database(url: &str) -> Result<()> {
    match fapiao_store::create_database(url).await {
        Ok(true) => {
            tracing::info!(database = %redact(url), "database created");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(err) => Err(SystemError(format!(
            "creating database {}: {err}",
            redact(url)
        ))),
    }
}

/// A database URL without its password.
#[must_use]
pub fn redact(url: &str) -> String {
    fapiao_store::redact_url(url)
}

/// Binds every address of a list.
///
/// # Errors
/// [`SystemError`] naming the address.
pub async fn bind_all(addrs: &[String]) -> Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .map_err(|err| SystemError(format!("listening on {a}: {err}")))?,
        );
    }
    Ok(out)
}

/// [`bind_all`] for a role started again on its ports: while it was stopped, a port may have
/// served another socket as its local port (the ports were chosen from the ephemeral range),
/// which lets it go within moments; tried for up to 10 s.
async fn bind_again(addrs: &[String]) -> Result<Vec<TcpListener>> {
    let mut tries = 0;
    loop {
        match bind_all(addrs).await {
            Ok(l) => return Ok(l),
            Err(e) if tries < 100 && e.0.contains("in use") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_passphrase(cfg: &RoleConfig) -> Result<Zeroizing<String>> {
    Ok(Zeroizing::new(match &cfg.material.key_passphrase_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|err| SystemError(format!("reading {}: {err}", p.display())))?
            .trim_end()
            .to_owned(),
        None => std::env::var("FAPIAO_KEY_PASSPHRASE").map_err(|_| {
            SystemError::new("no key passphrase (key_passphrase_file or FAPIAO_KEY_PASSPHRASE)")
        })?,
    }))
}

/// The admin port's TLS: a client certificate is asked for but not required, so that load
/// balancers' and orchestrators' probes reach `/healthz`, `/livez` and `/readyz`
/// ([`admin_guard`] requires one everywhere else).
fn admin_tls(material: &Material) -> Result<std::sync::Arc<rustls::ServerConfig>> {
    material
        .server_config(ClientAuth::Optional)
        .map_err(e("admin TLS"))
}

/// An admin router with the routes every role has (`POST /admin/crls/reload`), every route
/// but the probes for the people its certificate allows (`fapiao_service::ops::require_admin`).
fn admin_guard(router: axum::Router, cfg: &RoleConfig, material: &Material) -> axum::Router {
    router
        .merge(fapiao_service::crl_reload::routes(
            cfg.material.clone(),
            material.trust.clone(),
        ))
        .layer(axum::middleware::from_fn(
            fapiao_service::ops::require_admin,
        ))
}

/// The tax classification table a config names (`catalog`), or `None` for the bundled one.
fn catalog(cfg: &RoleConfig) -> Result<Option<std::sync::Arc<fapiao_model::TaxCatalog>>> {
    let Some(path) = &cfg.catalog else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|err| SystemError(format!("catalog {}: {err}", path.display())))?;
    let version = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let c = fapiao_model::TaxCatalog::parse_csv(&text)
        .map_err(|err| SystemError(format!("catalog {}: {err}", path.display())))?
        .with_version(version);
    tracing::info!(catalog = %path.display(), codes = c.len(), "tax classification table loaded");
    Ok(Some(std::sync::Arc::new(c)))
}

/// Starts one role from its config on already bound listeners (bind them with [`bind_all`]).
///
/// # Errors
/// [`SystemError`].
pub async fn start_role(
    cfg: &RoleConfig,
    listeners: Vec<TcpListener>,
    admin: Vec<TcpListener>,
    options: Options,
) -> Result<Running> {
    cfg.check().map_err(SystemError)?;
    let material = Material::load(&cfg.material).map_err(e("material"))?;
    let mut servers = Vec::new();
    let mut admin_servers = Vec::new();
    let limits = cfg.limits;
    let per_address = std::sync::Arc::new(fapiao_service::RateLimiter::new(
        limits.address_rate,
        limits.address_burst,
    ));
    let mut serve = |ls: Vec<TcpListener>,
                     tls: std::sync::Arc<rustls::ServerConfig>,
                     router: axum::Router,
                     admin: bool|
     -> Result<Vec<SocketAddr>> {
        let router = router
            .layer(axum::middleware::from_fn_with_state(
                std::time::Duration::from_secs(limits.request_timeout_seconds.max(1)),
                fapiao_service::limits::timeout,
            ))
            .layer(axum::middleware::from_fn_with_state(
                per_address.clone(),
                fapiao_service::limits::per_address,
            ))
            // Outermost: every answer, the limits' and the router's own included, in the one
            // JSON shape with its request id.
            .layer(axum::middleware::from_fn(fapiao_service::error::one_shape));
        let mut addrs = Vec::new();
        for l in ls {
            let r = fapiao_service::serve_tls_live(
                l,
                tls.clone(),
                router.clone(),
                &limits,
                Some(material.trust.clone()),
            )
            .map_err(e("serving"))?;
            addrs.push(r.local_addr());
            if admin {
                admin_servers.push(r);
            } else {
                servers.push(r);
            }
        }
        Ok(addrs)
    };
    let (handle, addrs, admin_addrs, workers) = match cfg.role.as_str() {
        "tax" => {
            let tax = Tax::open(&cfg.database, &material)
                .await
                .map_err(e("tax"))?;
            let tls = material
                .server_config(ClientAuth::Optional)
                .map_err(e("tax TLS"))?;
            let addrs = serve(listeners, tls, tax.router(), false)?;
            let admin_addrs = serve(
                admin,
                admin_tls(&material)?,
                admin_guard(tax.admin_router(), cfg, &material),
                true,
            )?;
            (RoleHandle::Tax(tax), addrs, admin_addrs, None)
        }
        "platform" => {
            let devices = DeviceKeys {
                dir: cfg.devices_dir.clone().unwrap_or_default(),
                passphrase: read_passphrase(cfg)?,
            };
            let platform = Platform::open(
                &cfg.database,
                material.clone(),
                devices,
                cfg.peers.tax_url.as_deref().unwrap_or_default(),
                cfg.peers.tax_identity.as_deref().unwrap_or_default(),
                Options {
                    catalog: catalog(cfg)?,
                    ..options.clone()
                },
            )
            .await
            .map_err(e("platform"))?;
            let tls = material
                .server_config(ClientAuth::Required)
                .map_err(e("platform TLS"))?;
            let addrs = serve(listeners, tls, platform.router(), false)?;
            let admin_addrs = serve(
                admin,
                admin_tls(&material)?,
                admin_guard(platform.admin_router(), cfg, &material),
                true,
            )?;
            let workers = platform.spawn_workers();
            (
                RoleHandle::Platform(platform),
                addrs,
                admin_addrs,
                Some(workers),
            )
        }
        "cloud" => {
            let cloud = Cloud::open(
                &cfg.database,
                material.clone(),
                cfg.peers.platform_url.as_deref().unwrap_or_default(),
                cfg.peers.platform_identity.as_deref().unwrap_or_default(),
                fapiao_cloud::Options {
                    backoff: fapiao_service::Backoff {
                        base: options.retry_base,
                        max: options.retry_max,
                    },
                    poll: options.poll,
                    enterprise_rate: cfg.limits.enterprise_rate,
                    enterprise_burst: cfg.limits.enterprise_burst,
                    max_body_bytes: cfg.limits.max_body_bytes,
                    webhooks_to_private: cfg.webhooks_to_private,
                    ..fapiao_cloud::Options::default()
                },
            )
            .await
            .map_err(e("cloud"))?;
            let tls = material
                .server_config(ClientAuth::Optional)
                .map_err(e("cloud TLS"))?;
            let addrs = serve(listeners, tls, cloud.router(), false)?;
            let admin_addrs = serve(
                admin,
                admin_tls(&material)?,
                admin_guard(cloud.admin_router(), cfg, &material),
                true,
            )?;
            let workers = cloud.spawn_workers();
            (RoleHandle::Cloud(cloud), addrs, admin_addrs, Some(workers))
        }
        "agent" => {
            let taxpayer_id = material
                .party
                .signing_certificate()
                .subject()
                .ok()
                .and_then(|s| s.taxpayer_id)
                .ok_or_else(|| SystemError::new("agent: its certificate names no enterprise"))?;
            let device = fapiao_agent::load_device(
                &cfg.devices_dir
                    .clone()
                    .unwrap_or_default()
                    .join(format!("{taxpayer_id}.sign")),
                read_passphrase(cfg)?.as_bytes(),
            )
            .map_err(e("agent device"))?;
            let peer = |url: &Option<String>, id: &Option<String>| {
                (
                    url.clone().unwrap_or_default(),
                    id.clone().unwrap_or_default(),
                )
            };
            let p = &cfg.peers;
            let agent = Agent::open(
                &cfg.database,
                material.clone(),
                device,
                &fapiao_agent::Peers {
                    cloud: peer(&p.cloud_url, &p.cloud_identity),
                    platform: peer(&p.platform_url, &p.platform_identity),
                    tax: peer(&p.tax_url, &p.tax_identity),
                },
                fapiao_agent::Options {
                    poll: options.poll,
                    backoff: fapiao_service::Backoff {
                        base: options.retry_base,
                        max: options.retry_max,
                    },
                    max_clock_skew: std::time::Duration::from_secs(cfg.max_clock_skew_seconds),
                    catalog: catalog(cfg)?,
                    ..fapiao_agent::Options::default()
                },
            )
            .await
            .map_err(e("agent"))?;
            let admin_addrs = serve(
                admin,
                admin_tls(&material)?,
                admin_guard(agent.admin_router(), cfg, &material),
                true,
            )?;
            let workers = agent.spawn_workers();
            (
                RoleHandle::Agent(agent),
                Vec::new(),
                admin_addrs,
                Some(workers),
            )
        }
        other => return Err(SystemError(format!("role `{other}` cannot be served"))),
    };
    let db = match &handle {
        RoleHandle::Agent(a) => a.db().clone(),
        RoleHandle::Tax(t) => t.db().clone(),
        RoleHandle::Platform(p) => p.db().clone(),
        RoleHandle::Cloud(c) => c.db().clone(),
    };
    let statistics = fapiao_service::statistics::StatisticsKeeper::spawn(db.clone());
    let signer = fapiao_service::audit_signer::AuditSigner::spawn(
        db,
        &material,
        std::time::Duration::from_secs(cfg.audit_sign_seconds.max(1)),
        cfg.audit_witness_file
            .as_deref()
            .map(fapiao_store::audit::Witness::new),
    );
    let crls = fapiao_service::crl_reload::CrlReloader::spawn(
        cfg.material.clone(),
        material.trust.clone(),
    );
    tracing::info!(role = %cfg.role, ?addrs, ?admin_addrs, "role started");
    Ok(Running {
        crls,
        role: cfg.role.clone(),
        addrs,
        admin_addrs,
        servers,
        admin_servers,
        grace: std::time::Duration::from_secs(cfg.limits.shutdown_grace_seconds),
        workers,
        signer,
        statistics,
        handle,
    })
}

/// The whole system in one process.
#[derive(Debug)]
pub struct System {
    /// The data directory.
    pub layout: Layout,
    /// The ports in use.
    pub ports: Ports,
    /// Tax.
    pub tax: Tax,
    /// Platform.
    pub platform: Platform,
    /// Cloud.
    pub cloud: Cloud,
    /// The demo enterprise's agent, once started ([`System::start_agent`]).
    pub agent: Option<Agent>,
    roles: BTreeMap<String, Running>,
    options: Options,
}

fn port_of(c: &RoleConfig, admin: bool) -> u16 {
    let list = if admin { &c.admin_listen } else { &c.listen };
    list.first()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map_or(0, |a| a.port())
}

impl System {
    /// Bootstraps `dir` when needed (dev PKI, demo enterprises) and starts tax, platform and
    /// cloud on loopback. On first run the ports are `ports` (0 = any free port); later runs
    /// reuse the ports of the configs written then. The databases are as the configs say
    /// (SQLite files in `dir` for new ones).
    ///
    /// # Errors
    /// [`SystemError`].
    pub async fn up(
        dir: &Path,
        suite: Suite,
        ports: Ports,
        options: Options,
        now: OffsetDateTime,
    ) -> Result<Self> {
        Self::up_with(dir, suite, ports, options, now, None).await
    }

    /// [`System::up`] with the roles' databases in `storage` (`None`: as the configs say):
    /// PostgreSQL databases are created when missing.
    ///
    /// # Errors
    /// [`SystemError`].
    pub async fn up_with(
        dir: &Path,
        suite: Suite,
        ports: Ports,
        options: Options,
        now: OffsetDateTime,
        storage: Option<&Storage>,
    ) -> Result<Self> {
        let layout = Layout::at(dir);
        std::fs::create_dir_all(dir).map_err(e("data directory"))?;
        let first = !layout.config_path("cloud").exists();
        // Listeners in the order tax, tax admin, platform, platform admin, cloud, cloud admin.
        let (listeners, ports) = if first {
            let mut ls = Vec::new();
            for p in [
                ports.tax,
                ports.tax_admin,
                ports.platform,
                ports.platform_admin,
                ports.cloud,
                ports.cloud_admin,
            ] {
                ls.push(bind_all(&[format!("127.0.0.1:{p}")]).await?);
            }
            let port = |i: usize| {
                ls[i]
                    .first()
                    .and_then(|l| l.local_addr().ok())
                    .map_or(0, |a| a.port())
            };
            let actual = Ports {
                tax: port(0),
                tax_admin: port(1),
                platform: port(2),
                platform_admin: port(3),
                cloud: port(4),
                cloud_admin: port(5),
            };
            layout.bootstrap(suite, actual, storage, now)?;
            (ls, actual)
        } else {
            layout.bootstrap(suite, ports, storage, now)?;
            let cfg = |r: &str| RoleConfig::load(&layout.config_path(r));
            let (t, p, c) = (cfg("tax")?, cfg("platform")?, cfg("cloud")?);
            let actual = Ports {
                tax: port_of(&t, false),
                tax_admin: port_of(&t, true),
                platform: port_of(&p, false),
                platform_admin: port_of(&p, true),
                cloud: port_of(&c, false),
                cloud_admin: port_of(&c, true),
            };
            let mut ls = Vec::new();
            for c in [&t, &p, &c] {
                ls.push(bind_all(&c.listen).await?);
                ls.push(bind_all(&c.admin_listen).await?);
            }
            (ls, actual)
        };
        let cfg = |r: &str| RoleConfig::load(&layout.config_path(r));
        // The agent's too: `up` writes its config, and `serve agent` opens what is there.
        for role in ["tax", "platform", "cloud", "agent"] {
            create_database(&cfg(role)?.database).await?;
        }
        let mut it = listeners.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let (tl, ta) = (next(), next());
        let (pl, pa) = (next(), next());
        let (cl, ca) = (next(), next());
        let tax = start_role(&cfg("tax")?, tl, ta, options.clone()).await?;
        let platform = start_role(&cfg("platform")?, pl, pa, options.clone()).await?;
        let cloud = start_role(&cfg("cloud")?, cl, ca, options.clone()).await?;
        let (RoleHandle::Tax(t), RoleHandle::Platform(p), RoleHandle::Cloud(c)) = (
            tax.handle.clone(),
            platform.handle.clone(),
            cloud.handle.clone(),
        ) else {
            return Err(SystemError::new("roles started in the wrong order"));
        };
        let system = Self {
            layout,
            ports,
            tax: t,
            platform: p,
            cloud: c,
            agent: None,
            roles: [("tax", tax), ("platform", platform), ("cloud", cloud)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            options,
        };
        system.register_demo().await?;
        Ok(system)
    }

    async fn register_demo(&self) -> Result<()> {
        self.platform
            .register_cloud(
                "system",
                &fapiao_platform::Cloud {
                    identity: "cloud:cloud".into(),
                    url: format!("https://127.0.0.1:{}", self.ports.cloud),
                },
            )
            .await
            .map_err(e("registering the cloud"))?;
        let mut creds = self.layout.credentials().unwrap_or_default();
        let demo = DEMO_ENTERPRISES
            .iter()
            .map(|d| (d, Hosting::Platform))
            .chain([(&AGENT_ENTERPRISE, Hosting::Enterprise)]);
        for (d, hosting) in demo {
            self.platform
                .register_enterprise(
                    "system",
                    &Enterprise {
                        taxpayer_id: d.taxpayer_id.into(),
                        name: d.name.into(),
                        cloud: "cloud:cloud".into(),
                        status: EnterpriseStatus::Active,
                        hosting,
                        allowed_types: vec!["special".into(), "ordinary".into()],
                        invoice_limit: Amount::parse("1000000.00").map_err(e("limit"))?,
                        monthly_quota: Amount::parse("100000000.00").map_err(e("quota"))?,
                        province: None,
                        details: fapiao_platform::SellerDetails::default(),
                    },
                )
                .await
                .map_err(e("registering an enterprise"))?;
            if let Some(c) = self
                .cloud
                .register_enterprise(d.taxpayer_id, d.name, None, hosting == Hosting::Enterprise)
                .await
                .map_err(e("registering a tenant"))?
            {
                creds.insert(d.taxpayer_id.to_owned(), c);
            }
        }
        self.layout.save_credentials(&creds)
    }

    /// Starts the demo enterprise's agent (the async, enterprise-hosted flow) in this process.
    ///
    /// # Errors
    /// [`SystemError`].
    pub async fn start_agent(&mut self) -> Result<()> {
        self.restart("agent").await
    }

    /// The cloud's base URL.
    #[must_use]
    pub fn cloud_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.cloud)
    }

    /// The tax base URL (查验).
    #[must_use]
    pub fn tax_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.tax)
    }

    /// The platform admin base URL.
    #[must_use]
    pub fn admin_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.platform_admin)
    }

    /// Stops one role (its port stays configured).
    pub async fn stop(&mut self, role: &str) {
        if let Some(r) = self.roles.remove(role) {
            r.shutdown().await;
        }
    }

    /// Starts a stopped role again on its configured port.
    ///
    /// # Errors
    /// [`SystemError`].
    pub async fn restart(&mut self, role: &str) -> Result<()> {
        if self.roles.contains_key(role) {
            return Ok(());
        }
        let cfg = RoleConfig::load(&self.layout.config_path(role))?;
        create_database(&cfg.database).await?;
        let l = bind_again(&cfg.listen).await?;
        let a = bind_again(&cfg.admin_listen).await?;
        let r = start_role(&cfg, l, a, self.options.clone()).await?;
        match &r.handle {
            RoleHandle::Agent(a) => self.agent = Some(a.clone()),
            RoleHandle::Tax(t) => self.tax = t.clone(),
            RoleHandle::Platform(p) => self.platform = p.clone(),
            RoleHandle::Cloud(c) => self.cloud = c.clone(),
        }
        self.roles.insert(role.to_owned(), r);
        Ok(())
    }

    /// Stops everything.
    pub async fn shutdown(self) {
        for (_, r) in self.roles.into_iter().rev() {
            r.shutdown().await;
        }
    }
}
