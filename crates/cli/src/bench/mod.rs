//! `fapiao bench`: the whole system in this process, exactly as `up` starts it (real mutual TLS
//! between roles, real envelopes, durable SQLite), driven through the ERP API by concurrent
//! clients sending real signed requests; and, in the same run, the crypto bound of one invoice.
//!
//! What it measures:
//! - **closed loop**: `count` invoices from `concurrency` clients as fast as they are answered —
//!   the maximum throughput, the process CPU time per invoice (`/proc/self/stat`);
//! - **open loop** at 25 %, 50 % and 75 % of that maximum (or at `--rate`): orders sent on a
//!   fixed schedule whatever the answers do, latency measured from the scheduled send time (so
//!   a stall is not hidden by clients waiting for it), p50/p95/p99/max;
//! - **stages** from `tracing` spans the roles open around each stage (`envelope.seal`,
//!   `envelope.open`, `order.validate`, `invoice.sign`, `invoice.verify`, `db.commit` on the
//!   issuing path, and the round trips `tax.upload`, `cloud.notify`, and in async mode the
//!   agent's `cloud.pull`, `platform.report`, `cloud.ack`): count and wall time per invoice;
//! - **crypto bound**: the signatures, verifications, key wraps/unwraps and content
//!   encryptions one invoice needs in the current design of its flow, back to back in one
//!   thread, for both suites ([`crypto_bound`]); the exchanges batches share are counted as
//!   the closed loop made them (orders per ERP request; invoices per exchange of each kind,
//!   from the round trips' spans);
//! - resident memory at the start, the end, and its peak.
//!
//! The rate limits of the roles' `[limits]` and the demo enterprises' monthly quota are lifted
//! (everything comes from one loopback address and two demo enterprises); every other setting
//! is `up`'s.

mod crypto;
mod report;

pub(crate) use crypto::crypto_bound;
use report::render;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fapiao_crypto::aead::{AeadAlgorithm, AeadKey, NONCE_LEN};
use fapiao_crypto::envelope::{Header, LocalParty, MemoryReplayGuard, Message, Opener, seal};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, CertificateRequest, KeyAlgorithm, PrivateKey, Profile, Purpose, Revocation, Role, Subject,
    Suite, TrustStore,
};
use http::Method;
use rand_core::Rng;
use serde::Serialize;
use time::OffsetDateTime;
use tracing::span;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use fapiao_system::bootstrap::{AGENT_ENTERPRISE, DEMO_ENTERPRISES, DemoEnterprise};
use fapiao_system::{ErpClient, Layout, Ports, RoleConfig, System};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    /// Invoices in the closed-loop run.
    pub(crate) count: usize,
    /// Concurrent ERP clients in the closed-loop run.
    pub(crate) concurrency: usize,
    /// Open-loop rate (invoices/s); `None`: 25 %, 50 % and 75 % of the closed-loop maximum.
    pub(crate) rate: Option<f64>,
    /// Length of each open-loop phase.
    pub(crate) phase: Duration,
    /// Message suite of the system.
    pub(crate) suite: Suite,
    /// The async flow: the enterprise-hosted demo enterprise's orders, issued by its agent.
    pub(crate) enterprise_hosted: bool,
    /// Orders per ERP request: 1 sends each alone (`POST /v1/invoices`), more send them
    /// through `POST /v1/invoices/batch`.
    pub(crate) batch: usize,
    /// Every role's database on this PostgreSQL server (new databases for the run, dropped
    /// after it) instead of SQLite files.
    pub(crate) postgres: Option<String>,
    /// Cloud and platform as this many processes each behind nginx (1: in this process).
    pub(crate) replicas: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            count: 2000,
            concurrency: 16,
            rate: None,
            phase: Duration::from_secs(5),
            suite: Suite::Gm,
            enterprise_hosted: false,
            batch: 1,
            postgres: None,
            replicas: 1,
        }
    }
}

/// The closed-loop run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClosedLoop {
    /// Invoices issued.
    pub(crate) invoices: usize,
    /// Failed requests.
    pub(crate) errors: usize,
    /// Wall time until the last invoice was accepted by tax, seconds.
    pub(crate) seconds: f64,
    /// Invoices per second until the last was accepted by tax and cloud knew it.
    pub(crate) per_second: f64,
    /// Invoices per second until the last ERP answer (uploads still behind).
    pub(crate) answered_per_second: f64,
    /// Process CPU (user + system) per invoice, milliseconds.
    pub(crate) cpu_ms_per_invoice: f64,
    /// The whole machine's CPU (every process: with PostgreSQL, its server too) per invoice,
    /// milliseconds.
    pub(crate) machine_cpu_ms_per_invoice: f64,
    /// Latency of the requests, milliseconds.
    pub(crate) latency: Latency,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub(crate) max: f64,
}

impl Latency {
    fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a rank within the sample count"
            )]
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One open-loop phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpenLoop {
    /// Scheduled rate, invoices/s.
    pub(crate) target_per_second: f64,
    /// Answered per second over the phase.
    pub(crate) achieved_per_second: f64,
    /// Invoices sent.
    pub(crate) sent: usize,
    /// Failed requests.
    pub(crate) errors: usize,
    /// The commonest failure and how often it occurred, when some failed.
    pub(crate) commonest_error: Option<(String, usize)>,
    /// Latency from the scheduled send time, milliseconds.
    pub(crate) latency: Latency,
    /// Resident memory (KiB) once a minute into the phase, and at its end.
    pub(crate) rss_kib: Vec<u64>,
}

/// One stage's spans over the closed-loop run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stage {
    /// Span name.
    pub(crate) name: String,
    /// Spans per invoice.
    pub(crate) per_invoice: f64,
    /// Wall time per invoice, milliseconds (all spans of the stage for one invoice).
    pub(crate) ms_per_invoice: f64,
}

/// How invoices are issued, as the bench drives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Flow {
    /// Platform-hosted: cloud asks platform, whose device issues.
    Sync,
    /// Enterprise-hosted: cloud queues, the enterprise's agent issues.
    Async,
}

/// The envelope exchanges (a request and its answer) one invoice pays for: a batch of `k`
/// invoices shares one exchange, so each pays `1/k`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Exchanges {
    /// The flow the exchanges belong to.
    pub(crate) flow: Flow,
    /// ERP requests (each opens the ERP key's stored secret).
    pub(crate) erp: f64,
    /// cloud → platform orders (sync).
    pub(crate) order: f64,
    /// agent → cloud pulls of queued orders (async).
    pub(crate) pull: f64,
    /// Uploads to tax: platform's (sync), the agent's (async).
    pub(crate) upload: f64,
    /// agent → platform reports of invoices and receipts (async).
    pub(crate) report: f64,
    /// platform → cloud status notices (async: carrying the agent's invoice).
    pub(crate) notice: f64,
    /// agent → cloud acknowledgements of handled orders (async).
    pub(crate) ack: f64,
}

impl Exchanges {
    /// The exchanges an invoice's flow makes: share per invoice, then the bytes per invoice
    /// of the request and of the answer. A signed invoice record is about 3 KB of JSON, a
    /// signed receipt about 700 B, an order about 1 KB; an acknowledgement is nearly empty.
    fn kinds(&self) -> Vec<(f64, f64, f64)> {
        if self.flow == Flow::Async {
            vec![
                (self.pull, 50.0, 1000.0),
                (self.upload, 3000.0, 700.0),
                (self.report, 3700.0, 50.0),
                (self.notice, 3700.0, 50.0),
                (self.ack, 100.0, 50.0),
            ]
        } else {
            vec![
                (self.order, 1000.0, 3000.0),
                (self.upload, 3000.0, 700.0),
                (self.notice, 700.0, 50.0),
            ]
        }
    }

    /// Verifications of each signature (the device's on the invoice, tax's on the receipt)
    /// with the signer's path: sync, cloud and tax check the invoice, platform and cloud the
    /// receipt; async, tax, platform and cloud check the invoice, the agent, platform and
    /// cloud the receipt.
    fn checks(&self) -> u32 {
        if self.flow == Flow::Async { 3 } else { 2 }
    }

    /// Values sealed at rest per invoice: their bytes and how often each is opened again.
    /// Sync: the signed invoice at platform (opened to upload it), cloud and tax. Async: the
    /// order queued at cloud (opened to lease it) and pulled by the agent (opened to issue
    /// it); the signed invoice at the agent (opened to upload it and to report it), platform
    /// (opened for the notice that carries it to cloud), tax and cloud.
    fn at_rest(&self) -> Vec<(usize, u32)> {
        if self.flow == Flow::Async {
            vec![
                (1000, 1),
                (1000, 1),
                (3000, 2),
                (3000, 1),
                (3000, 0),
                (3000, 0),
            ]
        } else {
            vec![(3000, 1), (3000, 0), (3000, 0)]
        }
    }
}

/// The crypto bound of one suite.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CryptoBound {
    /// Suite.
    pub(crate) suite: String,
    /// The exchanges per invoice it counts.
    pub(crate) exchanges: Exchanges,
    /// CPU per invoice, milliseconds.
    pub(crate) ms_per_invoice: f64,
    /// The ceiling it implies on this machine's cores, invoices/s.
    pub(crate) ceiling_per_second: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BenchReport {
    /// With PostgreSQL: the server's version and durability settings.
    pub(crate) postgres: Option<String>,
    /// Suite of the system.
    pub(crate) suite: String,
    /// Orders per ERP request.
    pub(crate) batch: usize,
    /// CPU cores available.
    pub(crate) cores: usize,
    /// Closed loop.
    pub(crate) closed: ClosedLoop,
    /// Open-loop phases.
    pub(crate) open: Vec<OpenLoop>,
    /// Per-stage breakdown of the closed loop.
    pub(crate) stages: Vec<Stage>,
    /// Crypto bound, both suites (the system's first).
    pub(crate) crypto_bound: Vec<CryptoBound>,
    /// Pipeline CPU per invoice / crypto-bound CPU per invoice (system's suite).
    pub(crate) ratio_to_crypto_bound: f64,
    /// Resident memory at start, end, peak (KiB).
    pub(crate) rss_kib: [u64; 3],
}

/// Collects the wall time of the stage spans, by span name.
#[derive(Clone, Default)]
pub(crate) struct StageTimer {
    totals: Arc<Mutex<BTreeMap<&'static str, (u64, Duration)>>>,
    /// Stage spans opened and not yet closed: an exchange in flight has sealed (and its peer
    /// opened and sealed) while its `tax.upload` / `cloud.notify` span is still open.
    open: Arc<AtomicUsize>,
}

/// The spans [`StageTimer`] counts.
pub(crate) const STAGES: [&str; 11] = [
    "envelope.seal",
    "envelope.open",
    "order.validate",
    "invoice.sign",
    "invoice.verify",
    "db.commit",
    "cloud.pull",
    "tax.upload",
    "platform.report",
    "cloud.notify",
    "cloud.ack",
];

struct Opened(Instant);

impl StageTimer {
    fn snapshot(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The totals once no stage span is open (at most `patience` later), so that every exchange
    /// counted is counted whole: cloud stores a status notice (the run's end condition) before it
    /// seals the answer, and platform opens the answer and closes `cloud.notify` after that.
    async fn settled(&self, patience: Duration) -> BTreeMap<&'static str, (u64, Duration)> {
        let t0 = instant_now();
        while self.open.load(Ordering::Acquire) > 0 && t0.elapsed() < patience {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.snapshot()
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StageTimer {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        if STAGES.contains(&attrs.metadata().name())
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Opened(instant_now()));
            self.open.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions().get::<Opened>().map(|o| o.0) else {
            return;
        };
        if let Ok(mut t) = self.totals.lock() {
            let e = t.entry(span.name()).or_default();
            e.0 += 1;
            e.1 += opened.elapsed();
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[expect(clippy::disallowed_methods, reason = "the benchmark's own clock")]
fn instant_now() -> Instant {
    Instant::now()
}

/// Process CPU time (user + system, all threads) from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let ticks_per_second = 100.0; // USER_HZ, 100 on every Linux architecture Fapiao runs on
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Duration::from_secs_f64((ticks(11) + ticks(12)) / ticks_per_second)
}

/// The whole machine's busy CPU time (every process, every core: user, nice, system, irq,
/// softirq, steal) from `/proc/stat`.
fn machine_cpu_time() -> Duration {
    let ticks_per_second = 100.0; // USER_HZ
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: f64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: all but idle and iowait.
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(busy / ticks_per_second)
}

/// Resident memory now and at its peak (KiB), from `/proc/self/status`.
#[must_use]
pub(crate) fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The seller of client `i`: a platform-hosted demo enterprise, or in async mode the
/// enterprise-hosted one.
fn seller(enterprise_hosted: bool, i: usize) -> &'static DemoEnterprise {
    if enterprise_hosted {
        &AGENT_ENTERPRISE
    } else {
        &DEMO_ENTERPRISES[i % DEMO_ENTERPRISES.len()]
    }
}

/// A benchmark order for a demo enterprise (`examples/orders/basic.json`, one of them).
fn order(e: &DemoEnterprise, id: &str) -> Vec<u8> {
    // The example order, parsed once; each order is it with its id and seller.
    static EXAMPLE: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::from_str(include_str!("../../../../examples/orders/basic.json"))
            .unwrap_or_default()
    });
    let mut o = EXAMPLE.clone();
    o["order_id"] = id.into();
    o["seller"]["taxpayer_id"] = e.taxpayer_id.into();
    o["seller"]["name"] = e.name.into();
    o.to_string().into_bytes()
}

/// What the bench reads of a batch answer: each result's status (the rest is skipped).
#[derive(serde::Deserialize)]
struct BatchReply {
    results: Vec<BatchResult>,
}

#[derive(serde::Deserialize)]
struct BatchResult {
    status: u16,
}

/// Starts the system in `dir` as `up` would (`up --enterprise-hosted` in async mode), with the
/// rate limits lifted.
async fn start(
    dir: &Path,
    suite: Suite,
    enterprise_hosted: bool,
    storage: Option<&fapiao_system::Storage>,
    now: OffsetDateTime,
) -> Result<System> {
    // First run: every listener is bound on a free port before the configs are written, so no
    // other process can take a port in between; then each role restarts with the rate limits
    // lifted in its config.
    let zero = Ports {
        cloud: 0,
        cloud_admin: 0,
        platform: 0,
        platform_admin: 0,
        tax: 0,
        tax_admin: 0,
    };
    let mut system = System::up_with(
        dir,
        suite,
        zero,
        fapiao_platform::Options::default(),
        now,
        storage,
    )
    .await?;
    let layout = Layout::at(dir);
    for role in ["tax", "platform", "cloud"] {
        let path = layout.config_path(role);
        let mut c = RoleConfig::load(&path)?;
        c.limits.enterprise_rate = 1e9;
        c.limits.enterprise_burst = 1e9;
        c.limits.address_rate = 1e9;
        c.limits.address_burst = 1e9;
        std::fs::write(&path, toml::to_string(&c)?)
            .with_context(|| format!("writing {}", path.display()))?;
        system.stop(role).await;
        system.restart(role).await?;
    }
    // The demo enterprises' monthly quota (100 million) would stop a long run after about
    // 12,000 example invoices; like the rate limits, it is not what is measured.
    let patch = fapiao_platform::EnterprisePatch {
        monthly_quota: Some(fapiao_model::Amount::parse("9000000000000.00")?),
        ..fapiao_platform::EnterprisePatch::default()
    };
    for e in DEMO_ENTERPRISES.iter().chain([&AGENT_ENTERPRISE]) {
        system
            .platform
            .update_enterprise("bench", e.taxpayer_id, &patch)
            .await?
            .context("demo enterprise")?;
    }
    if enterprise_hosted {
        system.start_agent().await?;
    }
    Ok(system)
}

/// Where the run's databases are: SQLite files, or new databases on the PostgreSQL server.
fn bench_storage(opts: &BenchOptions) -> Option<fapiao_system::Storage> {
    let url = opts.postgres.as_deref()?;
    let fapiao_system::Storage::Postgres { server, .. } = fapiao_system::Storage::postgres(url)
    else {
        return None;
    };
    Some(fapiao_system::Storage::Postgres {
        server,
        prefix: format!("fapiao_bench_{}", &fapiao_protocol::client::new_id()[..8]),
    })
}

/// The PostgreSQL server's version and the settings durability rests on.
async fn postgres_settings(system: &System) -> Result<String> {
    let pool = system.platform.db().pool();
    let show = |name: &'static str| async move {
        fapiao_store::query_scalar::<String>(fapiao_store::Sql::portable(name))
            .fetch_one(pool)
            .await
            .with_context(|| format!("reading the server's {name}"))
    };
    let version = show("SHOW server_version").await?;
    let fsync = show("SHOW fsync").await?;
    let commit = show("SHOW synchronous_commit").await?;
    let pages = show("SHOW full_page_writes").await?;
    if fsync != "on" || commit == "off" {
        tracing::warn!(%fsync, synchronous_commit = %commit, "PostgreSQL is not durable: the figures are not production figures");
    }
    Ok(format!(
        "PostgreSQL {version}, fsync = {fsync}, synchronous_commit = {commit}, full_page_writes = {pages}"
    ))
}

/// One issuing request (in async mode: queueing it) for the orders `ids`: alone when there is
/// one, else as a batch; its latency.
async fn issue(client: &ErpClient, e: &DemoEnterprise, ids: &[String]) -> Result<Duration> {
    let started = instant_now();
    if let [id] = ids {
        let r = client
            .send(Method::POST, "/v1/invoices", &order(e, id))
            .await?;
        if r.status != 201 && r.status != 202 {
            bail!(
                "order {id}: HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        return Ok(started.elapsed());
    }
    let mut body = b"{\"orders\":[".to_vec();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&order(e, id));
    }
    body.extend_from_slice(b"]}");
    let r = client
        .send(Method::POST, "/v1/invoices/batch", &body)
        .await?;
    let ok = r.status == 200
        && serde_json::from_slice::<BatchReply>(&r.body).is_ok_and(|v| {
            v.results.len() == ids.len() && v.results.iter().all(|x| matches!(x.status, 201 | 202))
        });
    if !ok {
        bail!(
            "batch {}…: HTTP {}: {}",
            ids[0],
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    Ok(started.elapsed())
}

/// Runs the benchmark in `dir` (empty or absent; it is filled with a fresh system), reporting
/// progress through `progress(done, total, phase)`.
///
/// # Errors
/// The system does not start, or most requests fail.
pub(crate) async fn run(
    dir: &Path,
    opts: &BenchOptions,
    now: OffsetDateTime,
    timer: &StageTimer,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> Result<BenchReport> {
    let (rss_start, _) = rss_kib();
    let batch = opts.batch.clamp(1, 100);
    progress(0, 1, "starting the system (development PKI, three roles)");
    let storage = bench_storage(opts);
    let system = start(
        dir,
        opts.suite,
        opts.enterprise_hosted,
        storage.as_ref(),
        now,
    )
    .await
    .context("starting the system")?;
    let postgres = match &storage {
        Some(_) => Some(postgres_settings(&system).await?),
        None => None,
    };
    // Replicas: cloud and platform leave this process for processes of their own behind
    // nginx, on the ports the configs name (this process keeps tax and its handles on the
    // databases).
    let mut system = system;
    let _replicas = if opts.replicas > 1 {
        if storage.is_none() || opts.enterprise_hosted {
            bail!("--replicas needs --postgres and the sync mode");
        }
        system.stop("cloud").await;
        system.stop("platform").await;
        Some(crate::replicas::Replicas::start(dir, opts.replicas)?)
    } else {
        None
    };
    let system = system;
    let trust = crate::services::load_trust(&system.layout)?;
    let creds = system.layout.credentials()?;
    let clients: Vec<(&'static DemoEnterprise, Arc<ErpClient>)> = (0..opts.concurrency.max(1))
        .map(|i| {
            let e = seller(opts.enterprise_hosted, i);
            let c = creds
                .get(e.taxpayer_id)
                .cloned()
                .context("demo credentials")?;
            Ok((e, Arc::new(ErpClient::new(&system.cloud_url(), &trust, c)?)))
        })
        .collect::<Result<_>>()?;
    // Not done until cloud has every invoice accepted by tax (and, async, every order issued).
    let pending = || async {
        fapiao_store::query_scalar::<i64>(
            "SELECT (SELECT count(*) FROM invoices WHERE tax_status = 'pending')
                  + (SELECT count(*) FROM queued_orders WHERE state <> 'issued')",
        )
        .fetch_one(system.cloud.db().pool())
        .await
        .context("counting cloud's pending invoices")
    };
    // What platform's outbox still has to upload or tell cloud, from an index: polled while
    // uploads catch up, where `pending` reads every row of cloud's invoices (a scan that, every
    // 100 ms over tens of thousands of invoices, costs more CPU than the uploads themselves).
    // `pending` has the last word.
    let outbox = || async {
        fapiao_store::query_scalar::<i64>("SELECT count(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(system.platform.db().pool())
            .await
            .context("counting platform's outbox")
    };
    // Warm up: connections, certificate fetches, number blocks (and the agent's quota).
    for (i, (e, c)) in clients.iter().enumerate() {
        issue(c, e, &[format!("WARM-{i}")]).await?;
    }
    for _ in 0..600 {
        if pending().await? == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Closed loop.
    let before = timer.settled(Duration::from_secs(10)).await;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_time();
    let machine0 = machine_cpu_time();
    let t0 = instant_now();
    let mut tasks = Vec::new();
    for (e, c) in clients.iter().cloned() {
        let (next, done, count) = (next.clone(), done.clone(), opts.count);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut issued = 0;
            loop {
                let i = next.fetch_add(batch, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let ids: Vec<String> = (i..(i + batch).min(count))
                    .map(|k| format!("BENCH-C-{k}"))
                    .collect();
                match issue(&c, e, &ids).await {
                    Ok(d) => {
                        lat.push(d);
                        issued += ids.len();
                    }
                    Err(err) => {
                        errors += ids.len();
                        tracing::warn!(error = %err, "bench request failed");
                    }
                }
                done.fetch_add(ids.len(), Ordering::Relaxed);
            }
            (lat, issued, errors)
        }));
    }
    let ticker = {
        let done = done.clone();
        let count = opts.count;
        async move {
            loop {
                progress(done.load(Ordering::Relaxed), count, "closed loop");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let joined = async {
        let mut lat = Vec::new();
        let (mut issued, mut errors) = (0, 0);
        for t in tasks {
            let (l, i, e) = t.await?;
            lat.extend(l);
            issued += i;
            errors += e;
        }
        Ok::<_, anyhow::Error>((lat, issued, errors))
    };
    let (mut lat, invoices, errors) = tokio::select! {
        r = joined => r?,
        () = ticker => unreachable!("the ticker never ends"),
    };
    let answered = t0.elapsed().as_secs_f64();
    // The run ends when tax has every invoice on record and cloud knows it (the upload and the
    // status notice run behind the answers, from platform's outbox; async: the agent's work).
    let backlog = pending().await?;
    let mut left = backlog;
    let mut confirmed = instant_now();
    let mut drained = false;
    loop {
        let queued = outbox().await?;
        if queued < left {
            left = queued;
        }
        // Cloud's count as the outbox empties, and once a second (async orders reach the
        // outbox only when the agent reports them).
        let emptied = queued == 0 && !drained;
        drained = queued == 0;
        if emptied || confirmed.elapsed() >= Duration::from_secs(1) {
            left = pending().await?;
            confirmed = instant_now();
            if left == 0 {
                break;
            }
        }
        // Uploads may trail the answers, but not forever: as long again as the answers took,
        // and at least two minutes.
        let drain = t0.elapsed().as_secs_f64() - answered;
        if drain > answered.max(120.0) {
            bail!("{left} invoices still not accepted by tax {drain:.0} s after the last answer");
        }
        progress(
            usize::try_from(backlog - left).unwrap_or(0),
            usize::try_from(backlog).unwrap_or(0),
            "uploads to tax catching up",
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = timer.settled(Duration::from_secs(10)).await;
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let machine_cpu = (machine_cpu_time() - machine0).as_secs_f64();
    if invoices == 0 || errors > invoices {
        bail!("{errors} of {} requests failed", opts.count);
    }
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let n = invoices as f64;
    let closed = ClosedLoop {
        invoices,
        errors,
        seconds,
        answered_per_second: n / answered,
        per_second: n / seconds,
        cpu_ms_per_invoice: cpu * 1e3 / n,
        machine_cpu_ms_per_invoice: machine_cpu * 1e3 / n,
        latency: Latency::of(&mut lat),
    };
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let stages = STAGES
        .iter()
        .map(|name| {
            let (c1, d1) = after.get(name).copied().unwrap_or_default();
            let (c0, d0) = before.get(name).copied().unwrap_or_default();
            Stage {
                name: (*name).to_owned(),
                per_invoice: (c1 - c0) as f64 / n,
                ms_per_invoice: (d1 - d0).as_secs_f64() * 1e3 / n,
            }
        })
        .collect::<Vec<Stage>>();

    // The crypto bound, with the system idle, off the async threads: the exchanges as the
    // closed loop batched them.
    progress(0, 1, "crypto bound");
    let per_invoice = |name: &str| {
        // With replicas only tax runs here: its envelopes opened are the upload batches, and
        // platform's notices to cloud are taken as batched alike.
        let name = match name {
            "tax.upload" | "cloud.notify" if opts.replicas > 1 => "envelope.open",
            n => n,
        };
        stages
            .iter()
            .find(|s| s.name == name)
            .map_or(1.0, |s| s.per_invoice.min(1.0))
    };
    #[expect(clippy::cast_precision_loss, reason = "at most 100")]
    let erp = 1.0 / batch as f64;
    let exchanges = if opts.enterprise_hosted {
        Exchanges {
            flow: Flow::Async,
            erp,
            order: 0.0,
            pull: per_invoice("cloud.pull"),
            upload: per_invoice("tax.upload"),
            report: per_invoice("platform.report"),
            notice: per_invoice("cloud.notify"),
            ack: per_invoice("cloud.ack"),
        }
    } else {
        Exchanges {
            flow: Flow::Sync,
            erp,
            order: erp,
            pull: 0.0,
            upload: per_invoice("tax.upload"),
            report: 0.0,
            notice: per_invoice("cloud.notify"),
            ack: 0.0,
        }
    };
    let suite = opts.suite;
    let crypto = tokio::task::spawn_blocking(move || -> Result<Vec<CryptoBound>> {
        let mut v = vec![crypto_bound(suite, 200, exchanges)?];
        for s in Suite::ALL {
            if s != suite {
                v.push(crypto_bound(s, 200, exchanges)?);
            }
        }
        Ok(v)
    })
    .await??;

    // Open loop (sync only: in async mode the ERP's answer is the queueing, not the issue).
    let rates = match opts.rate {
        _ if opts.enterprise_hosted => Vec::new(),
        Some(r) => vec![r],
        None => [0.25, 0.5, 0.75]
            .iter()
            .map(|f| f * closed.per_second)
            .collect(),
    };
    let mut open = Vec::new();
    for (phase, rate) in rates.into_iter().enumerate() {
        open.push(open_loop(&clients, rate, batch, opts.phase, phase, progress).await);
    }

    // With PostgreSQL the databases' work is the server's: the whole machine's CPU counts it.
    let pipeline = if postgres.is_some() {
        closed.machine_cpu_ms_per_invoice
    } else {
        closed.cpu_ms_per_invoice
    };
    let ratio = pipeline / crypto[0].ms_per_invoice;
    let (rss_end, rss_peak) = rss_kib();
    progress(1, 1, "done");
    drop(clients);
    let urls: Vec<String> = ["tax", "platform", "cloud", "agent"]
        .iter()
        .filter_map(|r| RoleConfig::load(&system.layout.config_path(r)).ok())
        .map(|c| c.database)
        .collect();
    system.shutdown().await;
    if storage.is_some() {
        for url in urls {
            if let Err(e) = fapiao_store::drop_database(&url).await {
                tracing::warn!(error = %e, "dropping a bench database");
            }
        }
    }
    Ok(BenchReport {
        postgres,
        suite: opts.suite.to_string(),
        batch,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        closed,
        open,
        stages,
        crypto_bound: crypto,
        ratio_to_crypto_bound: ratio,
        rss_kib: [rss_start, rss_end, rss_peak],
    })
}

/// Sends orders at `rate` per second for `length`, each on its own task, whatever the answers
/// do; latency from each order's scheduled time.
async fn open_loop(
    clients: &[(&'static DemoEnterprise, Arc<ErpClient>)],
    rate: f64,
    batch: usize,
    length: Duration,
    phase: usize,
    progress: &(dyn Fn(usize, usize, &str) + Sync),
) -> OpenLoop {
    // One request every `batch / rate` seconds, each of `batch` orders.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a positive count of a few thousand"
    )]
    let total = (rate * length.as_secs_f64() / batch as f64).max(1.0) as usize;
    #[expect(clippy::cast_precision_loss, reason = "a batch of at most 100")]
    let interval = Duration::from_secs_f64(batch as f64 / rate.max(0.001));
    let label = format!("open loop at {rate:.0}/s");
    let start = tokio::time::Instant::now();
    // Finished requests are collected as the phase goes (a task's memory is freed only once
    // its result is taken), so a long phase measures the system, not its own bookkeeping.
    let mut tasks = tokio::task::JoinSet::new();
    let mut lat = Vec::with_capacity(total);
    let mut failures: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut collect = |r: Result<Result<Duration>, tokio::task::JoinError>| match r {
        Ok(Ok(d)) => lat.push(d),
        Ok(Err(e)) => *failures.entry(format!("{e:#}")).or_default() += 1,
        Err(e) => *failures.entry(e.to_string()).or_default() += 1,
    };
    let mut rss = Vec::new();
    let mut next_sample = start + RSS_SAMPLE;
    for i in 0..total {
        #[expect(clippy::cast_possible_truncation, reason = "i < total, a small count")]
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        if due >= next_sample {
            rss.push(rss_kib().0);
            next_sample += RSS_SAMPLE;
        }
        let (e, c) = clients[i % clients.len()].clone();
        while let Some(r) = tasks.try_join_next() {
            collect(r);
        }
        tasks.spawn(async move {
            let ids: Vec<String> = (0..batch)
                .map(|k| format!("BENCH-O{phase}-{i}-{k}"))
                .collect();
            let r = issue(&c, e, &ids).await;
            r.map(|_| due.elapsed())
        });
        if i % 50 == 0 {
            progress(i, total, &label);
        }
    }
    while let Some(r) = tasks.join_next().await {
        collect(r);
    }
    let secs = start.elapsed().as_secs_f64();
    rss.push(rss_kib().0);
    let errors = failures.values().sum();
    let commonest_error = failures.into_iter().max_by_key(|(_, n)| *n);
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let achieved = (lat.len() * batch) as f64 / secs;
    OpenLoop {
        target_per_second: rate,
        achieved_per_second: achieved,
        sent: total,
        errors,
        commonest_error,
        latency: Latency::of(&mut lat),
        rss_kib: rss,
    }
}

/// How often an open-loop phase samples resident memory.
const RSS_SAMPLE: Duration = Duration::from_secs(60);

/// `fapiao bench`: runs [`run`] in a fresh temporary directory with the stage timer installed,
/// prints the report, and writes it as JSON when asked.
///
/// # Errors
/// The run fails, or the JSON file cannot be written.
pub(crate) fn main(opts: &BenchOptions, json: Option<&Path>, now: OffsetDateTime) -> Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, filter_fn};
    use tracing_subscriber::prelude::*;

    let timer = StageTimer::default();
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter(LevelFilter::WARN),
        )
        .with(
            timer
                .clone()
                .with_filter(filter_fn(|m| m.is_span() && STAGES.contains(&m.name()))),
        )
        .try_init();
    let dir = std::env::temp_dir().join(format!(
        "fapiao-bench-{}",
        fapiao_protocol::client::new_id()
    ));
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new(String::new());
    let progress = |done: usize, total: usize, phase: &str| {
        let Ok(mut last) = last.lock() else { return };
        if tty {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
            eprint!(
                "\r\x1b[2K{phase:<34} [{}{}] {done}/{total}",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
        } else if *last != phase {
            eprintln!("{phase} …");
        }
        phase.clone_into(&mut last);
    };
    let runtime = crate::services::runtime()?;
    let result = runtime.block_on(run(&dir, opts, now, &timer, &progress));
    if tty {
        eprintln!();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    print!("{}", render(&report, opts));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
