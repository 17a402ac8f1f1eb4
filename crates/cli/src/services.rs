//! `fapiao up`, `fapiao serve`, and the commands that talk to running roles: `issue`, `red`,
//! `invoice` (the ERP side) and `platform` (the operator side, through the admin API).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use fapiao_crypto::{Certificate, Crl, Suite, TrustStore};
use fapiao_model::datetime;
use fapiao_platform::Options;
use fapiao_protocol::HttpsClient;
use fapiao_system::{ErpClient, Layout, Ports, RoleConfig, System};
use http::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::text::render_with_note;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Logs to stderr at `FAPIAO_LOG` (error, warn, info, debug, trace; default `default`), as
/// JSON lines when `FAPIAO_LOG_FORMAT=json` (production), readable text otherwise.
pub(crate) fn init_logging(default: tracing::Level) {
    let level = std::env::var("FAPIAO_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(default);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if std::env::var("FAPIAO_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `fapiao up`.
pub(crate) fn up(
    data: &Path,
    suite: Suite,
    ports: Ports,
    enterprise_hosted: bool,
    postgres: Option<&str>,
    now: OffsetDateTime,
) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    let storage = postgres.map(fapiao_system::Storage::postgres);
    runtime()?.block_on(async {
        let first = !Layout::at(data).exists();
        let mut system =
            System::up_with(data, suite, ports, Options::default(), now, storage.as_ref()).await?;
        let stores = match &storage {
            Some(fapiao_system::Storage::Postgres { server, prefix }) => format!(
                "database on {} ({prefix}_cloud, {prefix}_platform, {prefix}_tax)",
                fapiao_store::redact_url(server),
            ),
            _ => "SQLite file".to_owned(),
        };
        let agent = fapiao_system::AGENT_ENTERPRISE;
        if enterprise_hosted {
            system.start_agent().await?;
        }
        let stop = StopSignal::listen()?;
        let d = data.display();
        println!(
            "Fapiao is running{} — data in {d}, message suite {suite}.\n\
             \n  cloud     {}   ERP API /v1 (OpenAPI: /v1/openapi.json), download portal: /portal\
             \n  platform  https://127.0.0.1:{}   admin API https://127.0.0.1:{}\
             \n  tax       {}   查验: /v1/verify?number=…&date=YYYYMMDD&total=…\
             \n  health and metrics (mutual TLS): /healthz /readyz /metrics on the admin ports {}, {}, {}\
             \n\nEvery role has its own TLS port and {stores}; certificates come from the development CA in {d}/ca.\
             \nDemo enterprises {} and {} are registered; their ERP credentials are in {d}/erp-credentials.json.\
             \n\nIn another terminal, issue an invoice as the ERP would, then reverse it:\
             \n  cargo run --release -- issue examples/orders/basic.json\
             \n  cargo run --release -- red <number> --reason 01\
             \n\nCtrl-C stops.",
            if first { " (first run: development PKI and demo data created)" } else { "" },
            system.cloud_url(),
            system.ports.platform,
            system.ports.platform_admin,
            system.tax_url(),
            system.ports.cloud_admin,
            system.ports.platform_admin,
            system.ports.tax_admin,
            fapiao_system::bootstrap::DEMO_ENTERPRISES[0].taxpayer_id,
            fapiao_system::bootstrap::DEMO_ENTERPRISES[1].taxpayer_id,
        );
        if enterprise_hosted {
            println!(
                "\nEnterprise-hosted (async) flow: {} {} issues on its own premises; its agent runs here                 \n(store {d}/agent.sqlite, device key in {d}/agent-devices). Its orders wait at cloud until the agent                 \npulls, issues, uploads to tax and reports them to platform:                 \n  cargo run --release -- issue examples/orders/agent.json                 \n  cargo run --release -- agent status",
                agent.taxpayer_id, agent.name
            );
        } else {
            println!(
                "\n{} ({}) is registered as enterprise-hosted: run `up --enterprise-hosted` to start its agent.",
                agent.name, agent.taxpayer_id
            );
        }
        // `up` is the development CA: its CRLs (30 days) are published again every day
        // while it runs, keeping every revocation in ca/revoked.tsv.
        let layout = system.layout.clone();
        let crls = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
                if let Err(e) = layout.write_crls(crate::clock::now()) {
                    tracing::error!(error = %e, "publishing the development CRLs");
                }
            }
        });
        let signal = stop.recv().await;
        eprintln!("stopping ({signal})…");
        crls.abort();
        system.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Loads `config`, which must configure `role`.
fn role_config(role: &str, config: &Path) -> anyhow::Result<RoleConfig> {
    let cfg = RoleConfig::load(config)?;
    if cfg.role != role {
        bail!(
            "{} configures the {} role, not {role}",
            config.display(),
            cfg.role
        );
    }
    Ok(cfg)
}

/// SIGINT (Ctrl-C) and SIGTERM (what systemd and Kubernetes send), listened for from the moment
/// this is made: made before a role announces it is running, so that a signal sent as soon as
/// the announcement is read stops it cleanly instead of killing it.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Waits for the first of them; its name.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// `fapiao serve <role> --config <file>`.
pub(crate) fn serve(role: &str, config: &Path) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::INFO);
    let cfg = role_config(role, config)?;
    runtime()?.block_on(async {
        let l = fapiao_system::run::bind_all(&cfg.listen).await?;
        let a = fapiao_system::run::bind_all(&cfg.admin_listen).await?;
        let running = fapiao_system::run::start_role(&cfg, l, a, Options::default()).await?;
        let stop = StopSignal::listen()?;
        eprintln!(
            "{role} serving on {:?}{}",
            running.addrs,
            if running.admin_addrs.is_empty() {
                String::new()
            } else {
                format!(", admin on {:?}", running.admin_addrs)
            }
        );
        let signal = stop.recv().await;
        tracing::info!(
            signal,
            "stopping: draining requests, signing the audit head"
        );
        running.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub(crate) fn load_trust(layout: &Layout) -> anyhow::Result<TrustStore> {
    trust_from(&layout.trust_files(), &layout.crl_files())
}

fn trust_from(roots: &[PathBuf], crls: &[PathBuf]) -> anyhow::Result<TrustStore> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let mut certs = Vec::new();
    for p in roots {
        certs.extend(Certificate::from_pem_chain(&read(p)?)?);
    }
    let mut t = TrustStore::new(certs)?;
    for p in crls {
        t.add_crl(Crl::from_pem(&read(p)?)?);
    }
    Ok(t)
}

fn cloud_url(layout: &Layout) -> anyhow::Result<String> {
    let cfg = RoleConfig::load(&layout.config_path("cloud"))
        .context("no running system here: start one with `fapiao up` (or pass --data)")?;
    let addr: std::net::SocketAddr = cfg
        .listen
        .first()
        .context("cloud.toml: no listen address")?
        .parse()?;
    Ok(format!("https://{addr}"))
}

struct Erp {
    clients: BTreeMap<String, ErpClient>,
}

impl Erp {
    fn open(data: &Path) -> anyhow::Result<Self> {
        let layout = Layout::at(data);
        let creds = layout.credentials().context(
            "no ERP credentials: start the system with `fapiao up` first (or pass --data)",
        )?;
        let trust = load_trust(&layout)?;
        let url = cloud_url(&layout)?;
        let clients = creds
            .into_iter()
            .map(|(k, c)| Ok((k, ErpClient::new(&url, &trust, c)?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { clients })
    }

    fn client(&self, enterprise: &str) -> anyhow::Result<&ErpClient> {
        self.clients.get(enterprise).with_context(|| {
            format!(
                "no ERP credentials for {enterprise} (known: {})",
                self.clients.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The enterprise owning `number`, trying each known one.
    async fn owner(&self, number: &str) -> anyhow::Result<&str> {
        for (k, c) in &self.clients {
            if c.send(Method::GET, &format!("/v1/invoices/{number}"), b"")
                .await?
                .status
                == 200
            {
                return Ok(k);
            }
        }
        bail!("no enterprise with credentials here has invoice {number}")
    }
}

fn show(v: &Value, json_out: bool, note: &str) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let wire: fapiao_protocol::wire::WireInvoice = serde_json::from_value(
        serde_json::json!({"invoice": v["invoice"], "signature": v["signature"]}),
    )?;
    let signed = wire.to_signed()?;
    let inv = &signed.invoice;
    let status = v["tax_status"].as_str().unwrap_or("?");
    print!(
        "{}",
        render_with_note(
            inv.draft(),
            Some((inv.number(), inv.issued_at())),
            &format!(
                "（SM2 已签名 {}）",
                datetime::format(signed.signature.signed_at)
            )
        )
    );
    println!("税务状态：{status}{note}");
    if let Some(f) = v.get("form").filter(|f| !f.is_null()) {
        println!(
            "红字发票信息确认单：{} 状态 {}",
            f["number"].as_str().unwrap_or(""),
            f["status"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn api_error(r: &fapiao_protocol::Response) -> anyhow::Error {
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| json!({"message": String::from_utf8_lossy(&r.body)}));
    let mut msg = format!(
        "HTTP {}: {} — {}",
        r.status,
        v["code"].as_str().unwrap_or("?"),
        v["message"].as_str().unwrap_or("")
    );
    if let Some(fs) = v["findings"].as_array() {
        for f in fs {
            msg.push_str(&format!(
                "\n  {}: {} ({})",
                f["path"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or(""),
                f["code"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(id) = v["request_id"].as_str() {
        msg.push_str(&format!("\n  request id {id}"));
    }
    anyhow::anyhow!(msg)
}

/// `fapiao issue ORDER.json`.
pub(crate) fn issue(
    data: &Path,
    order: &Path,
    enterprise: Option<String>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    let body = std::fs::read(order).with_context(|| format!("reading {}", order.display()))?;
    let parsed: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{} is not JSON", order.display()))?;
    let enterprise = match enterprise {
        Some(e) => e,
        None => parsed["seller"]["taxpayer_id"]
            .as_str()
            .context("the order names no seller.taxpayer_id; pass --enterprise")?
            .to_owned(),
    };
    runtime()?.block_on(async {
        let erp = Erp::open(data)?;
        let r = erp
            .client(&enterprise)?
            .send(Method::POST, "/v1/invoices", &body)
            .await?;
        let r = if r.status == 202 {
            wait_issued(erp.client(&enterprise)?, &r, json_out).await?
        } else {
            r
        };
        match r.status {
            200 | 201 => {
                let v: Value = serde_json::from_slice(&r.body)?;
                let note = if r.status == 200 {
                    "（此 order_id 已开具，返回原发票）"
                } else {
                    ""
                };
                show(&v, json_out, note)?;
                if !json_out {
                    println!(
                        "\nReverse it: cargo run --release -- red {} --reason 01",
                        v["number"].as_str().unwrap_or("")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            _ => Err(api_error(&r)),
        }
    })
}

/// An order queued for the enterprise's agent (202): waits up to 60 s for the agent to
/// issue it, then answers as the invoice's `GET` does.
async fn wait_issued(
    erp: &ErpClient,
    queued: &fapiao_protocol::Response,
    json_out: bool,
) -> anyhow::Result<fapiao_protocol::Response> {
    let v: Value = serde_json::from_slice(&queued.body)?;
    let order_id = v["order_id"].as_str().unwrap_or_default().to_owned();
    if !json_out {
        eprintln!(
            "order {order_id} queued for the enterprise's agent; waiting for it to be issued…"
        );
    }
    for _ in 0..120 {
        let s = erp
            .send(Method::GET, &format!("/v1/orders/{order_id}"), b"")
            .await?;
        let st: Value = serde_json::from_slice(&s.body)?;
        match st["status"].as_str() {
            Some("issued") => {
                let number = st["number"].as_str().unwrap_or_default();
                let mut r = erp
                    .send(Method::GET, &format!("/v1/invoices/{number}"), b"")
                    .await?;
                if r.status == 200 {
                    r.status = 201;
                }
                return Ok(r);
            }
            Some("refused") => bail!(
                "the agent refused order {order_id}: {} ({})",
                st["error"]["message"].as_str().unwrap_or_default(),
                st["error"]["code"].as_str().unwrap_or_default()
            ),
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
    bail!(
        "order {order_id} is still waiting for the enterprise's agent after 60 s \
         (is it running? `fapiao up --enterprise-hosted`; `fapiao agent status`)"
    )
}

/// `fapiao agent status`.
pub(crate) fn agent_status(config: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    let cfg = role_config("agent", config)?;
    runtime()?.block_on(async {
        let db = fapiao_store::Db::open_existing(&cfg.database)
            .await
            .with_context(|| format!("opening {}", cfg.database))?;
        let s = fapiao_agent::status(&db).await?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!(
                "to issue      {}\nto upload     {}\nto report     {}\nto acknowledge {}\n                 oldest pending {} s\nreports refused {}\nissued        {}\nrefused       {}\n                 numbers left  {}\nquota {}     granted {}, used {}",
                s.to_issue,
                s.to_upload,
                s.to_report,
                s.to_ack,
                s.oldest_pending_seconds,
                s.failed_reports,
                s.issued,
                s.refused,
                s.numbers_left,
                s.month,
                s.quota_granted,
                s.quota_used
            );
            for b in &s.blocked {
                let since = OffsetDateTime::from_unix_timestamp(b.since)
                    .map_or_else(|_| b.since.to_string(), |t| t.to_string());
                println!("blocked: {} — {} (since {since})", b.what, b.problem);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What `fapiao red` may say of the red beyond its scope.
pub(crate) struct RedOptions {
    pub(crate) buyer_confirmation: Option<String>,
    pub(crate) order_id: Option<String>,
    pub(crate) drawer: Option<String>,
}

/// `fapiao red NUMBER`.
pub(crate) fn red(
    data: &Path,
    number: &str,
    reason: &str,
    lines: &[String],
    options: RedOptions,
    enterprise: Option<String>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let RedOptions {
        buyer_confirmation,
        order_id,
        drawer,
    } = options;
    init_logging(tracing::Level::WARN);
    let mut parts = Vec::new();
    for l in lines {
        let (n, what) = l
            .split_once(':')
            .with_context(|| format!("--line {l}: expected N:amount=X or N:quantity=Q"))?;
        let line: u32 = n
            .parse()
            .with_context(|| format!("--line {l}: line number"))?;
        let (k, v) = what
            .split_once('=')
            .with_context(|| format!("--line {l}: expected amount=X or quantity=Q"))?;
        match k {
            "amount" => parts.push(json!({"line": line, "amount": v})),
            "quantity" => parts.push(json!({"line": line, "quantity": v})),
            _ => bail!("--line {l}: amount or quantity"),
        }
    }
    let scope = if parts.is_empty() {
        json!({"scope": "full"})
    } else {
        json!({"scope": "partial", "lines": parts})
    };
    let order_id = order_id
        .unwrap_or_else(|| format!("RED-{number}-{}", &fapiao_protocol::client::new_id()[..8]));
    let mut body = json!({"order_id": order_id, "reason": reason, "scope": scope});
    if let Some(b) = buyer_confirmation {
        body["buyer_confirmation"] = json!(b);
    }
    if let Some(d) = drawer {
        body["drawer"] = json!(d);
    }
    runtime()?.block_on(async {
        let erp = Erp::open(data)?;
        let owner = match &enterprise {
            Some(e) => e.clone(),
            None => erp.owner(number).await?.to_owned(),
        };
        let r = erp
            .client(&owner)?
            .send(
                Method::POST,
                &format!("/v1/invoices/{number}/red"),
                body.to_string().as_bytes(),
            )
            .await?;
        match r.status {
            200 | 201 => {
                show(&serde_json::from_slice(&r.body)?, json_out, "")?;
                Ok(ExitCode::SUCCESS)
            }
            _ => Err(api_error(&r)),
        }
    })
}

/// Where `fapiao render NUMBER` writes which file: the ERP API's layout files, the OFD signed
/// at platform by the device that issued the invoice, the zip named as the national platform
/// names it.
pub(crate) struct Downloads<'a> {
    pub(crate) pdf: Option<&'a PathBuf>,
    pub(crate) xml: Option<&'a PathBuf>,
    pub(crate) ofd: Option<&'a PathBuf>,
    pub(crate) zip: Option<&'a PathBuf>,
}

pub(crate) fn download(data: &Path, number: &str, to: Downloads<'_>) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    runtime()?.block_on(async {
        let erp = Erp::open(data)?;
        let owner = erp.owner(number).await?.to_owned();
        let c = erp.client(&owner)?;
        let get = async |path: &str| {
            let r = c.send(Method::GET, path, b"").await?;
            if r.status != 200 {
                return Err(api_error(&r));
            }
            Ok(r.body)
        };
        let write = |path: &Path, body: &[u8], what: &str| -> anyhow::Result<()> {
            std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({} bytes{what})", path.display(), body.len());
            Ok(())
        };
        for (kind, path, what) in [
            ("pdf", to.pdf, ""),
            ("xml", to.xml, ""),
            ("ofd", to.ofd, ", OFD signed by the issuing device"),
        ] {
            if let Some(path) = path {
                let body = get(&format!("/v1/invoices/{number}/{kind}")).await?;
                write(path, &body, what)?;
            }
        }
        if let Some(dir) = to.zip {
            let view: Value =
                serde_json::from_slice(&get(&format!("/v1/invoices/{number}")).await?)?;
            let invoice = fapiao_model::Invoice::from_json(&view["invoice"].to_string())
                .map_err(|e| anyhow::anyhow!("the invoice as the API gives it: {e}"))?;
            let body = get(&format!("/v1/invoices/{number}/zip")).await?;
            let held = fapiao_render::ofd::parts(&body).map_or(0, |p| p.len());
            write(
                &dir.join(format!("{}.zip", fapiao_render::file_stem(&invoice))),
                &body,
                if held == 3 {
                    ": PDF, OFD and XML"
                } else {
                    ": PDF and XML (its OFD is signed where the enterprise's own device is)"
                },
            )?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// An admin API client acting as the platform's operator.
pub(crate) struct Admin {
    http: HttpsClient,
}

impl Admin {
    pub(crate) fn open(data: &Path) -> anyhow::Result<Self> {
        let layout = Layout::at(data);
        let cfg = RoleConfig::load(&layout.config_path("platform"))
            .context("no platform here: start the system with `fapiao up` (or pass --data)")?;
        let addr: std::net::SocketAddr = cfg
            .admin_listen
            .first()
            .context("platform.toml: no admin_listen")?
            .parse()?;
        // As the data directory's operator: admin ports answer people, not services.
        let tls = layout.person_tls_config(fapiao_crypto::Role::Operator)?;
        let http = HttpsClient::new(&format!("https://{addr}"), std::sync::Arc::new(tls))?;
        Ok(Self { http })
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (bytes, headers) = match body {
            Some(b) => (
                b.to_string().into_bytes(),
                vec![("content-type", "application/json".to_owned())],
            ),
            None => (Vec::new(), Vec::new()),
        };
        let r = self.http.request(method, path, &headers, bytes).await?;
        if !(200..300).contains(&r.status) {
            return Err(api_error(&r));
        }
        Ok(if r.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&r.body)?
        })
    }
}

pub(crate) fn admin(
    data: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    runtime()?.block_on(async {
        let v = Admin::open(data)?.call(method, path, body.as_ref()).await?;
        if !v.is_null() {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fapiao audit verify`.
pub(crate) fn audit_verify(
    role: &str,
    config: &Path,
    witness_files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    use fapiao_store::audit::{Checks, Verdict, Witness};
    init_logging(tracing::Level::WARN);
    let cfg = role_config(role, config)?;
    let trust = trust_from(&cfg.material.trust, &cfg.material.crls)?;
    let files: Vec<PathBuf> = if witness_files.is_empty() {
        cfg.audit_witness_file
            .iter()
            .filter(|p| p.exists())
            .cloned()
            .collect()
    } else {
        witness_files.to_vec()
    };
    let mut witness = Vec::new();
    for f in &files {
        let heads = Witness::new(f).read().map_err(|e| anyhow::anyhow!(e))?;
        println!("{role}: witness {}: {} heads", f.display(), heads.len());
        witness.extend(heads);
    }
    if files.is_empty() {
        println!("{role}: no witness file (heads deleted with the records they cover go unseen)");
    }
    // A running role signs every `audit_sign_seconds`; twice that and a minute of clock
    // difference between replicas is the most its records go without a head.
    let every = i64::try_from(cfg.audit_sign_seconds.max(1)).unwrap_or(i64::MAX / 4);
    let checks = Checks {
        trust: Some(&trust),
        unsigned_span: Some(every.saturating_mul(2).saturating_add(60)),
        witness: &witness,
    };
    runtime()?.block_on(async {
        let db = fapiao_store::Db::open_existing(&cfg.database).await?;
        match fapiao_store::audit::verify(&db, &checks).await? {
            Verdict::Broken { seq, reason } => {
                println!("{role}: audit chain BROKEN at record {seq}: {reason}");
                Ok(ExitCode::from(1))
            }
            Verdict::Intact {
                records,
                heads,
                head,
                witnessed,
            } => {
                println!("{role}: audit chain of {records} records intact");
                match head {
                    None => println!("{role}: no signed head yet"),
                    Some(h) => {
                        let who = Certificate::from_der(&h.certificate)
                            .ok()
                            .and_then(|c| c.subject().ok())
                            .map(|s| s.identity())
                            .unwrap_or_default();
                        let at = OffsetDateTime::from_unix_timestamp(h.signed_at)?;
                        println!(
                            "{role}: {heads} signed heads, each valid and naming the one before; \
                             newest at record {} signed by {who} at {at}",
                            h.seq
                        );
                    }
                }
                if !witness.is_empty() {
                    println!(
                        "{role}: {witnessed} of {} witnessed heads in the database (the rest \
                         removed by retention)",
                        witness.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// `fapiao keys rotate` (with a batch size) and `fapiao keys status` (without).
pub(crate) fn keys(role: &str, config: &Path, rotate: Option<u32>) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    init_logging(tracing::Level::WARN);
    let cfg = role_config(role, config)?;
    let columns = fapiao_system::sealed_columns(role)
        .with_context(|| format!("role `{role}` seals nothing (cloud, platform or tax)"))?;
    let master = cfg.material.master_key()?;
    runtime()?.block_on(async {
        let db = fapiao_store::Db::open_existing(&cfg.database)
            .await
            .with_context(|| format!("{role} database {}", cfg.database))?;
        let vault = fapiao_store::vault::Vault::open(&db, master, crate::clock::now())
            .await
            .context("start the role once so that its database has data keys")?;
        if let Some(batch) = rotate {
            let mut err = std::io::stderr();
            let rotation = vault
                .rotate(columns, batch, crate::clock::now(), |field, done| {
                    let _ = write!(err, "\r{role}: {field}: {done} re-sealed");
                    let _ = err.flush();
                })
                .await?;
            let _ = writeln!(err);
            let mut tx = db.begin_write().await?;
            let detail: serde_json::Map<String, Value> = rotation
                .resealed
                .iter()
                .map(|(f, n)| (f.clone(), json!(n)))
                .collect();
            fapiao_store::audit::append(
                &mut tx,
                crate::clock::now(),
                "operator:cli",
                "keys.rotated",
                &rotation.key,
                &Value::Object(detail),
            )
            .await?;
            tx.commit().await?;
            println!("{role}: data key {} active", rotation.key);
            for (field, n) in &rotation.resealed {
                println!("{role}: {field}: {n} values re-sealed");
            }
        } else {
            println!("{role}: data key {} active", vault.active_key().await?);
        }
        for c in columns {
            let census = vault.census(*c).await?;
            let text: Vec<String> = census.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "{role}: {}: {}",
                c.field(),
                if text.is_empty() {
                    "empty".to_owned()
                } else {
                    text.join(", ")
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fapiao db migrate`.
pub(crate) fn db_migrate(role: &str, config: &Path) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    let cfg = role_config(role, config)?;
    let migrations = fapiao_system::migrations(role)
        .with_context(|| format!("role `{role}`: cloud, platform, tax or agent"))?;
    let url = fapiao_store::redact_url(&cfg.database);
    runtime()?.block_on(async {
        fapiao_system::run::create_database(&cfg.database).await?;
        let before = match fapiao_store::Db::open_existing(&cfg.database).await {
            Ok(db) => fapiao_store::schema_version(&db, role).await?,
            Err(_) => 0,
        };
        let db = fapiao_store::Db::open(&cfg.database, role, migrations)
            .await
            .with_context(|| format!("migrating {role} database {url}"))?;
        let after = fapiao_store::schema_version(&db, role).await?;
        if after == before {
            println!("{role}: {url} is at schema version {after}, nothing to apply");
        } else {
            println!("{role}: {url} migrated from schema version {before} to {after}");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fapiao retention run`.
pub(crate) fn retention(role: &str, config: &Path, export: &Path) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    let cfg = role_config(role, config)?;
    let rules = fapiao_system::retention_rules(role).with_context(|| {
        format!("role `{role}` has no retention rules (cloud, platform or tax)")
    })?;
    runtime()?.block_on(async {
        let db = fapiao_store::Db::open_existing(&cfg.database)
            .await
            .with_context(|| format!("{role} database {}", cfg.database))?;
        println!(
            "{role}: logs kept {} days, invoices and audit records {} days",
            cfg.retention.logs_days, cfg.retention.invoice_days
        );
        let pruned = cfg
            .retention
            .apply(&db, role, rules, crate::clock::now(), export)
            .await?;
        for p in pruned {
            match p.export {
                Some(f) => println!(
                    "{role}: {}: {} rows exported to {} and deleted",
                    p.table,
                    p.rows,
                    f.display()
                ),
                None => println!("{role}: {}: nothing expired", p.table),
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `fapiao reconcile --role cloud`.
pub(crate) fn reconcile(
    role: &str,
    config: &Path,
    from: Option<String>,
    days: u32,
    repair: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    init_logging(tracing::Level::WARN);
    if role != "cloud" {
        bail!("reconcile: --role cloud (platform and tax reconcile through their outboxes)");
    }
    let cfg = role_config(role, config)?;
    let from = match from {
        Some(f) => {
            datetime::parse(&f).with_context(|| format!("--from `{f}`: YYYY-MM-DD HH:MM:SS"))?;
            f
        }
        None => datetime::format(
            fapiao_protocol::client::china_now() - time::Duration::days(i64::from(days)),
        ),
    };
    runtime()?.block_on(async {
        let material = fapiao_service::Material::load(&cfg.material)?;
        let cloud = fapiao_cloud::Cloud::open(
            &cfg.database,
            material,
            cfg.peers.platform_url.as_deref().unwrap_or_default(),
            cfg.peers.platform_identity.as_deref().unwrap_or_default(),
            fapiao_cloud::Options::default(),
        )
        .await?;
        let r = cloud.reconcile(&from, repair).await?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "from {}: {} invoices at platform, {} missing at cloud, {} with another tax status",
                r.from,
                r.checked,
                r.missing.len(),
                r.status_differs.len()
            );
            for n in &r.missing {
                println!("missing  {n}");
            }
            for d in &r.status_differs {
                println!(
                    "status   {}  cloud {}  platform {}",
                    d.number, d.cloud, d.platform
                );
            }
            if repair {
                println!("repaired {}", r.repaired);
            }
            for why in &r.refused {
                println!("refused  {why}");
            }
        }
        let clean = if repair {
            r.refused.is_empty()
        } else {
            r.missing.is_empty() && r.status_differs.is_empty()
        };
        Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
