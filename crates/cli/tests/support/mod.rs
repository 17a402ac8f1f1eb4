//! What the tests that run `fapiao` processes share: a role's process (started from its
//! config, killed, restarted), the data directory `fapiao up` sets up, a replayable random
//! schedule, the trust store and the roles' databases.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fapiao_store::Db;
use fapiao_system::{Layout, RoleConfig};

/// One role's process, restartable; its stderr appended to `<data>/<name>.log`.
pub(crate) struct Role {
    /// The role (`cloud`, …): its config is `<data>/<role>.toml`.
    pub(crate) role: &'static str,
    /// This process's name among the role's replicas (its log's name).
    pub(crate) name: String,
    pub(crate) data: PathBuf,
    /// Environment overrides (`FAPIAO_LISTEN`, …).
    pub(crate) env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
}

impl Role {
    /// The role's one process.
    pub(crate) fn new(role: &'static str, data: &Path) -> Self {
        Self::replica(role, role.to_owned(), data, Vec::new())
    }

    /// A replica of the role, named `name`, with `env` overriding its config.
    pub(crate) fn replica(
        role: &'static str,
        name: String,
        data: &Path,
        env: Vec<(String, String)>,
    ) -> Self {
        Self {
            role,
            name,
            data: data.to_owned(),
            env,
            child: None,
            starts: 0,
        }
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.data.join(format!("{}.log", self.name))
    }

    /// Starts it, returning once it serves.
    pub(crate) fn start(&mut self) {
        self.start_within(50);
    }

    /// [`Self::start`], trying again (up to `tries` times) while its port is in use.
    fn start_within(&mut self, tries: u32) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let cfg = self.data.join(format!("{}.toml", self.role));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fapiao"));
        cmd.args(["serve", self.role, "--config", cfg.to_str().unwrap()])
            .env("FAPIAO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        self.starts += 1;
        // Started once the log says so for the `starts`-th time.
        let refusals = |t: &str| t.matches("Address already in use").count();
        let refused_before = refusals(&std::fs::read_to_string(self.log()).unwrap_or_default());
        for _ in 0..600 {
            let text = std::fs::read_to_string(self.log()).unwrap_or_default();
            if text.matches("serving on").count() >= self.starts {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                // Its port served another socket as its local port while it was down (the
                // ports come from the ephemeral range): that lets go within moments.
                if refusals(&text) > refused_before && tries > 0 {
                    self.starts -= 1;
                    self.child = None;
                    std::thread::sleep(Duration::from_millis(200));
                    return self.start_within(tries - 1);
                }
                panic!("{} exited: {status}\n{text}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not start", self.name);
    }

    /// SIGKILL.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// SIGTERM (what systemd and Kubernetes send); its exit status and how long it took.
    pub(crate) fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("running");
        #[expect(
            clippy::disallowed_methods,
            reason = "a stop's duration, not a point in time"
        )]
        let started = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let status = c.wait().unwrap();
        (status, started.elapsed())
    }

    /// SIGINT, and it exits 0.
    pub(crate) fn interrupt(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let status = c.wait().unwrap();
            assert!(status.success(), "{} stops cleanly: {status}", self.name);
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small linear congruential generator: a schedule only needs to be varied and replayable.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// A seed from `var` if set, else a fresh one; printed, so a run can be replayed.
pub(crate) fn seed(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from(std::process::id())
                ^ u64::from(std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos())
        });
    eprintln!("schedule seed: {seed} ({var}={seed} replays it)");
    seed
}

/// Runs `fapiao up` once in `data` (the development PKI, configs on free ports, the demo
/// registrations), with `extra` arguments, and stops it.
pub(crate) fn up_once(data: &Path, extra: &[String]) {
    let d = data.to_str().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .arg("up")
        .args(extra)
        .args([
            "--data",
            d,
            "--cloud-port",
            "0",
            "--cloud-admin-port",
            "0",
            "--platform-port",
            "0",
            "--admin-port",
            "0",
            "--tax-port",
            "0",
            "--tax-admin-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(up.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "up ended early"
        );
        if line.contains("Ctrl-C stops.") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status();
    let status = up.wait().unwrap();
    assert!(status.success(), "up stopped with {status}");
}

/// The `up` arguments that put the roles' databases on PostgreSQL when the suite runs there
/// (`FAPIAO_TEST_ENGINE=postgres`), in databases named after `test`.
pub(crate) fn engine_args(test: &str) -> Vec<String> {
    if std::env::var("FAPIAO_TEST_ENGINE").as_deref() != Ok("postgres") {
        return Vec::new();
    }
    let server = fapiao_store::testing::postgres_server()
        .expect("FAPIAO_TEST_ENGINE=postgres needs FAPIAO_TEST_POSTGRES");
    vec![
        "--postgres".into(),
        format!("{server}/{}", fapiao_store::testing::database_name(test)),
    ]
}

/// The trust store of the data directory's CAs and CRLs.
pub(crate) fn trust(data: &Path) -> fapiao_crypto::TrustStore {
    let layout = Layout::at(data);
    let mut roots = Vec::new();
    for p in layout.trust_files() {
        roots.extend(
            fapiao_crypto::Certificate::from_pem_chain(&std::fs::read_to_string(p).unwrap())
                .unwrap(),
        );
    }
    let mut t = fapiao_crypto::TrustStore::new(roots).unwrap();
    for p in layout.crl_files() {
        t.add_crl(fapiao_crypto::Crl::from_pem(&std::fs::read_to_string(p).unwrap()).unwrap());
    }
    t
}

/// A role's database, as its config names it.
pub(crate) async fn db(data: &Path, role: &str) -> Db {
    let cfg = RoleConfig::load(&data.join(format!("{role}.toml"))).unwrap();
    Db::open_existing(&cfg.database).await.unwrap()
}

/// A count.
pub(crate) async fn count(db: &Db, sql: &'static str) -> i64 {
    fapiao_store::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// A free port on loopback.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The agent's admin address for a test: a port free now. (The one `up` writes is the next
/// after tax's admin port, which nothing reserves while the agent is not running: another
/// test's role may listen there.)
pub(crate) fn agent_admin() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A role's admin base URL (`https://…`) from its config.
pub(crate) fn admin_url(data: &Path, role: &str) -> String {
    let cfg = RoleConfig::load(&data.join(format!("{role}.toml"))).unwrap();
    format!("https://{}", cfg.admin_listen[0])
}

/// `GET <admin>/readyz`, as a load balancer's probe asks it (no client certificate): the
/// status (0 when nothing answered) and the body.
pub(crate) async fn readyz(data: &Path, role: &str) -> (u16, String) {
    readyz_at(data, &admin_url(data, role)).await
}

/// [`readyz`] at an admin base URL.
pub(crate) async fn readyz_at(data: &Path, url: &str) -> (u16, String) {
    let config = fapiao_crypto::tls::client_config(None, trust(data)).unwrap();
    let c = fapiao_protocol::HttpsClient::new(url, std::sync::Arc::new(config))
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    match c
        .request(http::Method::GET, "/readyz", &[], Vec::new())
        .await
    {
        Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Err(e) => (0, e.to_string()),
    }
}
