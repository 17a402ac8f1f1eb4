//! Crash safety of the async, enterprise-hosted flow, for real: cloud, platform, tax and the
//! agent run as four `fapiao serve` processes; 500 orders are submitted while the agent (and
//! separately platform and tax) is killed with SIGKILL at random moments and restarted each
//! time. Afterwards: exactly 500 invoices, 500 distinct numbers inside the blocks platform
//! granted the agent, each accepted by tax exactly once, each known once to platform and to
//! cloud, no order left pending, and the agent's quota used equal to the sum of the totals.
//!
//! The kill schedule is random; the seed is printed and `FAPIAO_CRASH_SEED` replays it.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fapiao_model::Amount;
use fapiao_store::Db;
use fapiao_system::{AGENT_ENTERPRISE, ErpClient, Layout, RoleConfig};
use http::Method;

const ORDERS: usize = 500;
/// Orders submitted only after the fifth kill.
const HELD_BACK: usize = 25;
/// [`ORDERS`] as SQLite counts it.
const ORDERS_I64: i64 = 500;
const HZ: &str = AGENT_ENTERPRISE.taxpayer_id;

/// One role's process, restartable; its stderr appended to `<data>/<role>.log`.
struct Role {
    name: &'static str,
    data: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl Role {
    fn log(&self) -> PathBuf {
        self.data.join(format!("{}.log", self.name))
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let cfg = self.data.join(format!("{}.toml", self.name));
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_fapiao"))
                .args(["serve", self.name, "--config", cfg.to_str().unwrap()])
                .env("FAPIAO_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        self.starts += 1;
        // Started once the log says so for the `starts`-th time.
        for _ in 0..600 {
            let text = std::fs::read_to_string(self.log()).unwrap_or_default();
            if text.matches("serving on").count() >= self.starts {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("{} exited: {status}\n{text}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not start", self.name);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    fn interrupt(&mut self) {
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

/// A small linear congruential generator: the schedule only needs to be varied and
/// replayable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

fn order(i: usize) -> Vec<u8> {
    serde_json::json!({
        "order_id": format!("CRASH-{i:04}"),
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": HZ, "name": AGENT_ENTERPRISE.name },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "有机酱油", "tax_code": "1030206000000000000", "unit": "箱",
              "quantity": 1 + i % 7, "unit_price": format!("{}.{:02}", 10 + i % 90, i % 100),
              "tax_rate": "13%" }
        ],
        "drawer": "陈晓"
    })
    .to_string()
    .into_bytes()
}

async fn db(data: &Path, role: &str) -> Db {
    let cfg = RoleConfig::load(&data.join(format!("{role}.toml"))).unwrap();
    Db::open_existing(&cfg.database).await.unwrap()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    fapiao_store::query_scalar(sql)
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[test]
fn killing_agent_platform_and_tax_at_random_loses_and_duplicates_nothing() {
    let seed = std::env::var("FAPIAO_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::from(std::process::id())
                ^ u64::from(std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos())
        });
    eprintln!("kill schedule seed: {seed} (FAPIAO_CRASH_SEED={seed} replays it)");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // `up` once: the development PKI, configs on free ports, the registrations.
    let mut up = Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args([
            "up",
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
    assert!(up.wait().unwrap().success());

    let mut roles: BTreeMap<&str, Role> = ["tax", "platform", "cloud", "agent"]
        .into_iter()
        .map(|name| {
            (
                name,
                Role {
                    name,
                    data: data.clone(),
                    child: None,
                    starts: 0,
                },
            )
        })
        .collect();
    for name in ["tax", "platform", "cloud", "agent"] {
        roles.get_mut(name).unwrap().start();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let layout = Layout::at(&data);
    let cloud_cfg = RoleConfig::load(&data.join("cloud.toml")).unwrap();
    let cloud_url = format!("https://{}", cloud_cfg.listen[0]);
    let trust = {
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
    };
    let creds = layout.credentials().unwrap().remove(HZ).unwrap();
    let erp = Arc::new(ErpClient::new(&cloud_url, &trust, creds).unwrap());

    // Submit the orders in the background, a few at a time (cloud stays up: the ERP's side).
    // The last of them wait for the fifth kill, so that at least five kills come while the
    // agent has work left, however fast the system runs through the rest.
    let submitted = Arc::new(AtomicUsize::new(0));
    let kills = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (submitted, kills) = (submitted.clone(), kills.clone());
        rt.spawn(async move {
            for i in 0..ORDERS {
                while i >= ORDERS - HELD_BACK && kills.load(Ordering::SeqCst) < 5 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                loop {
                    match erp.send(Method::POST, "/v1/invoices", &order(i)).await {
                        Ok(r) if r.status == 202 || r.status == 200 => break,
                        Ok(r) if r.status == 429 || r.status >= 500 => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(r) => panic!(
                            "order {i}: HTTP {} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                submitted.fetch_add(1, Ordering::SeqCst);
                if i % 25 == 24 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
        })
    };

    // Kill at random moments while the agent works: mostly the agent, and platform and tax.
    let cloud_db = rt.block_on(db(&data, "cloud"));
    let issued_at_cloud = || {
        rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91330106MA2H00003L'",
        ))
    };
    let mut rng = Lcg(seed);
    let victims = [
        "agent", "agent", "platform", "agent", "tax", "agent", "platform", "agent", "tax", "agent",
    ];
    let mut mid_work = 0;
    for victim in victims {
        std::thread::sleep(Duration::from_millis(300 + rng.next(1700)));
        let issued = issued_at_cloud();
        if issued < ORDERS_I64 {
            mid_work += 1;
        }
        eprintln!(
            "SIGKILL {victim} (submitted {}, issued at cloud {issued})",
            submitted.load(Ordering::SeqCst)
        );
        let role = roles.get_mut(victim).unwrap();
        role.kill9();
        std::thread::sleep(Duration::from_millis(rng.next(800)));
        role.start();
        kills.fetch_add(1, Ordering::SeqCst);
    }
    assert!(
        mid_work >= 5,
        "the kills came while the agent was working ({mid_work} of {})",
        victims.len()
    );
    rt.block_on(submitter).unwrap();

    // Everything drains.
    let done = AtomicBool::new(false);
    for _ in 0..1200 {
        let (accepted, open) = rt.block_on(async {
            (
                count(
                    &cloud_db,
                    "SELECT COUNT(*) FROM invoices WHERE enterprise = '91330106MA2H00003L' AND tax_status = 'accepted'",
                )
                .await,
                count(&cloud_db, "SELECT COUNT(*) FROM queued_orders WHERE state <> 'issued'").await,
            )
        });
        if accepted == ORDERS_I64 && open == 0 {
            done.store(true, Ordering::SeqCst);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let agent_status = Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args(["agent", "status", "--data", d])
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&agent_status.stdout).into_owned();
    assert!(
        done.load(Ordering::SeqCst),
        "not drained in 5 minutes; agent status:\n{status_text}"
    );
    assert!(status_text.contains("to upload     0"), "{status_text}");
    for name in ["agent", "cloud", "platform", "tax"] {
        roles.get_mut(name).unwrap().interrupt();
    }

    rt.block_on(async {
        let (cloud, platform, tax, agent) = (
            db(&data, "cloud").await,
            db(&data, "platform").await,
            db(&data, "tax").await,
            db(&data, "agent").await,
        );
        let set = |db: &Db, sql: &'static str| {
            let db = db.clone();
            async move {
                let rows: Vec<String> = fapiao_store::query_scalar(sql).fetch_all(db.pool()).await.unwrap();
                let n = rows.len();
                let s: BTreeSet<String> = rows.into_iter().collect();
                assert_eq!(s.len(), n, "no number twice: {sql}");
                s
            }
        };
        let at_cloud = set(
            &cloud,
            "SELECT number FROM invoices WHERE enterprise = '91330106MA2H00003L'",
        )
        .await;
        let at_platform =
            set(&platform, "SELECT number FROM invoices WHERE issued_by IS NOT NULL").await;
        let at_tax = set(&tax, "SELECT number FROM invoices WHERE uploader LIKE 'agent:%'").await;
        let at_agent = set(&agent, "SELECT number FROM invoices").await;
        assert_eq!(at_cloud.len(), ORDERS, "exactly {ORDERS} invoices at cloud");
        assert_eq!(at_platform, at_cloud, "platform knows the same invoices");
        assert_eq!(at_tax, at_cloud, "tax accepted the same invoices");
        assert_eq!(at_agent, at_cloud, "the agent issued the same invoices");
        // Each accepted by tax exactly once (duplicates answered with the original receipt).
        let accepted_twice = count(
            &tax,
            "SELECT COUNT(*) FROM (SELECT number FROM upload_log WHERE status = 'accepted'
                                   GROUP BY number HAVING COUNT(*) <> 1)",
        )
        .await;
        assert_eq!(accepted_twice, 0);
        assert_eq!(
            count(&tax, "SELECT COUNT(*) FROM upload_log WHERE status = 'accepted'").await,
            ORDERS_I64
        );
        // Every order once, none pending, none refused.
        let orders: BTreeSet<String> =
            set(&cloud, "SELECT order_id FROM queued_orders WHERE state = 'issued'").await;
        assert_eq!(orders.len(), ORDERS);
        assert_eq!(
            count(&agent, "SELECT COUNT(*) FROM orders WHERE outcome = 'issued'").await,
            ORDERS_I64
        );
        assert_eq!(count(&agent, "SELECT COUNT(*) FROM pulled").await, 0);
        assert_eq!(
            count(&agent, "SELECT COUNT(*) FROM queue WHERE state <> 'done'").await,
            0
        );
        // Numbers inside the blocks platform granted this agent.
        let blocks: Vec<(i64, i64)> = fapiao_store::query(
            "SELECT first, last FROM agent_grants WHERE kind = 'block' AND enterprise = '91330106MA2H00003L'",
        )
        .fetch_all(platform.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.try_get("first").unwrap(), r.try_get("last").unwrap()))
        .collect();
        for n in &at_cloud {
            let seq: i64 = n[5..].parse().unwrap();
            assert!(
                blocks.iter().any(|(f, l)| *f <= seq && seq <= *l),
                "{n} lies in a granted block {blocks:?}"
            );
        }
        // Quota consumed = Σ totals.
        let totals: Vec<String> = fapiao_store::query_scalar(
            "SELECT total FROM invoices WHERE enterprise = '91330106MA2H00003L'",
        )
        .fetch_all(cloud.pool())
        .await
        .unwrap();
        let sum: Amount = totals.iter().map(|t| Amount::parse(t).unwrap()).sum();
        let used: Vec<String> = fapiao_store::query_scalar("SELECT used FROM quota")
            .fetch_all(agent.pool())
            .await
            .unwrap();
        let used: Amount = used.iter().map(|t| Amount::parse(t).unwrap()).sum();
        assert_eq!(used, sum, "quota used = Σ totals");
    });
}
