//! Operating under faults, for real: cloud, platform and tax as `fapiao serve` processes.
//!
//! - SIGTERM during a batch of orders: the role finishes what is in flight and exits 0; every
//!   order was answered or is safely retried (the same `order_id` gets the same invoice);
//!   every invoice cloud stored was answered; the audit head signed at the stop covers the
//!   last record.
//! - Tax away for two minutes (`FAPIAO_OUTAGE_SECONDS` changes it): platform issues on; once
//!   tax is back its backlog is accepted within seconds, not when each upload's backoff (up to
//!   five minutes) runs out. The figure is printed.
//! - Cloud's disk full (SQLite on a small file system mounted for the test; needs root):
//!   readiness turns 503 within 5 s, naming the database check, and 200 again once space
//!   returns.
//! - Cloud's disk full while orders come (SQLite; root): the ERP is answered
//!   `outcome_unknown` (retryable), never "nothing was changed"; once space returns cloud
//!   holds every invoice platform issued without the ERP sending anything again, and
//!   `fapiao reconcile --role cloud` finds none missing.
//! - The agent's clock ten minutes ahead (libfaketime, Debian's faketime package, under the
//!   real `fapiao serve agent`): not ready, the reason in `fapiao agent status`, nothing
//!   pulled or issued; clock fixed, everything issued within seconds.
//!
//! On SQLite files, or with `FAPIAO_TEST_ENGINE=postgres` every role's database on PostgreSQL
//! (the disk test is SQLite's).
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fapiao_system::bootstrap::{AGENT_ENTERPRISE, DEMO_ENTERPRISES};
use fapiao_system::{ErpClient, Layout, RoleConfig};
use http::Method;

mod support;
use support::{Role, count, db, readyz, readyz_at};

const SH: &str = DEMO_ENTERPRISES[0].taxpayer_id;

fn order(prefix: &str, i: usize) -> Vec<u8> {
    serde_json::json!({
        "order_id": format!("{prefix}-{i:04}"),
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": SH, "name": DEMO_ENTERPRISES[0].name },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "系统运维服务", "tax_code": "3040201030000000000", "unit": "月",
              "quantity": 1 + i % 5, "unit_price": format!("{}.{:02}", 100 + i, i % 100),
              "tax_rate": "6%" }
        ],
        "drawer": "李静"
    })
    .to_string()
    .into_bytes()
}

/// A data directory set up by `up`, and the three roles started from it.
struct Deployment {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    roles: std::cell::RefCell<BTreeMap<&'static str, Role>>,
    rt: tokio::runtime::Runtime,
}

impl Deployment {
    fn start(test: &str, cloud_env: Vec<(String, String)>, before: impl FnOnce(&Path)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        support::up_once(&data, &support::engine_args(test));
        before(&data);
        let mut roles = BTreeMap::new();
        for name in ["tax", "platform", "cloud"] {
            let env = if name == "cloud" {
                cloud_env.clone()
            } else {
                Vec::new()
            };
            let mut r = Role::replica(name, name.to_owned(), &data, env);
            r.start();
            roles.insert(name, r);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Self {
            _tmp: tmp,
            data,
            roles: std::cell::RefCell::new(roles),
            rt,
        }
    }

    fn erp(&self) -> Arc<ErpClient> {
        let cfg = RoleConfig::load(&self.data.join("cloud.toml")).unwrap();
        let creds = Layout::at(&self.data)
            .credentials()
            .unwrap()
            .remove(SH)
            .unwrap();
        Arc::new(
            ErpClient::new(
                &format!("https://{}", cfg.listen[0]),
                &support::trust(&self.data),
                creds,
            )
            .unwrap(),
        )
    }

    fn role(&self, name: &str) -> std::cell::RefMut<'_, Role> {
        std::cell::RefMut::map(self.roles.borrow_mut(), |r| r.get_mut(name).unwrap())
    }

    /// Waits (up to `limit`) until `ok` holds; how long it took.
    fn until(&self, limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
        #[expect(
            clippy::disallowed_methods,
            reason = "a wait's duration, not a point in time"
        )]
        let start = Instant::now();
        while start.elapsed() < limit {
            if ok() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// What became of one order sent.
enum Sent {
    /// Answered with an invoice (201, or 200 for an order issued before).
    Invoice(String),
    /// Not answered, or answered with a code that says to send it again.
    Retry(String),
}

async fn send(erp: &ErpClient, body: &[u8]) -> Sent {
    match erp.send(Method::POST, "/v1/invoices", body).await {
        Ok(r) if r.status == 201 || r.status == 200 => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            Sent::Invoice(v["number"].as_str().unwrap().to_owned())
        }
        Ok(r) if r.status == 429 || r.status >= 500 => Sent::Retry(format!(
            "HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        Ok(r) => panic!("HTTP {} {}", r.status, String::from_utf8_lossy(&r.body)),
        // Refused or cut before an answer: the ERP sends it again.
        Err(e) => Sent::Retry(e.to_string()),
    }
}

#[test]
fn sigterm_during_a_batch_answers_every_order_or_leaves_it_retryable() {
    const ORDERS: usize = 100;
    let d = Deployment::start("faults_term", Vec::new(), |_| {});
    let erp = d.erp();
    let cloud_db = d.rt.block_on(db(&d.data, "cloud"));
    let stored = || {
        d.rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
        ))
    };

    // Eight at a time, as an ERP's connection pool sends them; SIGTERM once cloud has
    // stored a few, so that some are in flight and the rest come after.
    let pool = Arc::new(tokio::sync::Semaphore::new(8));
    let tasks: Vec<_> = (0..ORDERS)
        .map(|i| {
            let (erp, pool) = (erp.clone(), pool.clone());
            d.rt.spawn(async move {
                let _turn = pool.acquire().await.unwrap();
                send(&erp, &order("TERM", i)).await
            })
        })
        .collect();
    d.until(Duration::from_secs(60), || stored() >= 10)
        .expect("cloud stores invoices");
    let at_term = stored();
    let (status, took) = d.role("cloud").terminate();
    assert!(status.success(), "cloud stops cleanly on SIGTERM: {status}");
    assert!(took < Duration::from_secs(20), "within the grace: {took:?}");
    let outcomes: Vec<Sent> = tasks
        .into_iter()
        .map(|t| d.rt.block_on(t).unwrap())
        .collect();
    let answered: BTreeMap<usize, String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Sent::Invoice(n) => Some((i, n.clone())),
            Sent::Retry(_) => None,
        })
        .collect();
    let retry: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Sent::Retry(why) => Some(why),
            Sent::Invoice(_) => None,
        })
        .collect();
    eprintln!(
        "SIGTERM after {at_term} stored: {} answered, {} to send again (e.g. {:?}); stopped in {took:?}",
        answered.len(),
        retry.len(),
        retry.first()
    );
    // Nothing cloud stored went unanswered: requests in flight finished before the exit.
    assert_eq!(
        stored(),
        i64::try_from(answered.len()).unwrap(),
        "every invoice cloud stored was answered"
    );
    assert!(
        !retry.is_empty(),
        "the stop came in the middle of the batch"
    );

    // The head signed at the stop covers the last record.
    let witness = std::fs::read_to_string(d.data.join("audit/cloud.witness.jsonl")).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(witness.lines().last().expect("a head at the stop")).unwrap();
    let newest = d.rt.block_on(count(
        &cloud_db,
        "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM audit_log",
    ));
    assert_eq!(last["seq"].as_i64().unwrap(), newest, "{witness}");

    // Sent again: the same invoice for the orders answered, one invoice for each of the
    // others, nothing twice anywhere.
    d.role("cloud").start();
    let again: Vec<Sent> = (0..ORDERS)
        .map(|i| {
            let erp = erp.clone();
            d.rt.block_on(async move { send(&erp, &order("TERM", i)).await })
        })
        .collect();
    let mut numbers = std::collections::BTreeSet::new();
    for (i, o) in again.iter().enumerate() {
        let Sent::Invoice(n) = o else {
            panic!("order {i} not answered after the restart");
        };
        if let Some(first) = answered.get(&i) {
            assert_eq!(first, n, "order {i}: the same invoice");
        }
        numbers.insert(n.clone());
    }
    assert_eq!(numbers.len(), ORDERS);
    assert_eq!(stored(), i64::try_from(ORDERS).unwrap());
    let platform_db = d.rt.block_on(db(&d.data, "platform"));
    assert_eq!(
        d.rt.block_on(count(
            &platform_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
        )),
        i64::try_from(ORDERS).unwrap(),
        "platform issued each order once"
    );
    for name in ["cloud", "platform", "tax"] {
        let (status, _) = d.role(name).terminate();
        assert!(status.success(), "{name}: {status}");
    }
}

#[test]
fn tax_back_after_an_outage_gets_its_backlog_within_seconds() {
    const ORDERS: usize = 40;
    let outage: u64 = std::env::var("FAPIAO_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let d = Deployment::start("faults_outage", Vec::new(), |_| {});
    let erp = d.erp();
    let cloud_db = d.rt.block_on(db(&d.data, "cloud"));
    let accepted = || {
        d.rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices
             WHERE enterprise = '91310115MA1FP0001X' AND tax_status = 'accepted'",
        ))
    };
    assert!(matches!(
        d.rt.block_on(send(&erp, &order("OUT", 0))),
        Sent::Invoice(_)
    ));
    d.until(Duration::from_secs(30), || accepted() == 1)
        .expect("the first invoice accepted");

    let (status, _) = d.role("tax").terminate();
    assert!(status.success());
    // Platform issues on while tax is away; the uploads wait in its outbox.
    for i in 1..=ORDERS {
        let erp = erp.clone();
        let sent =
            d.rt.block_on(async move { send(&erp, &order("OUT", i)).await });
        assert!(matches!(sent, Sent::Invoice(_)), "order {i}");
    }
    // Platform reports tax by name while it is away, and stays ready (issuing goes on).
    d.until(Duration::from_secs(10), || {
        let (s, body) = d.rt.block_on(readyz(&d.data, "platform"));
        s == 200 && body.contains("\"name\":\"peer:tax:tax\",\"ok\":false")
    })
    .expect("platform names tax as not answering");
    eprintln!("tax away for {outage} s");
    std::thread::sleep(Duration::from_secs(outage));
    assert_eq!(accepted(), 1);

    d.role("tax").start();
    let took = d
        .until(Duration::from_secs(120), || {
            accepted() == i64::try_from(ORDERS).unwrap() + 1
        })
        .unwrap_or_else(|| {
            panic!(
                "only {} accepted two minutes after tax returned",
                accepted()
            )
        });
    eprintln!(
        "tax back after {outage} s away: its {ORDERS} invoices accepted (and cloud told) {:.1} s after its return",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(15),
        "backlog drained within 10 s of tax's return plus the upload: {took:?}"
    );
    for name in ["cloud", "platform", "tax"] {
        let (status, _) = d.role(name).terminate();
        assert!(status.success(), "{name}: {status}");
    }
}

/// A small file system mounted for a test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

/// A deployment whose cloud database lives on a small file system of its own, and that file
/// system; `None` (the test is skipped, saying why) on PostgreSQL or without root.
fn on_a_small_disk(
    test: &str,
) -> Option<(tempfile::TempDir, Deployment, Mount, std::path::PathBuf)> {
    if std::env::var("FAPIAO_TEST_ENGINE").as_deref() == Ok("postgres") {
        eprintln!("a SQLite test: skipped on PostgreSQL");
        return None;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("skipped: mounting a small file system needs root (CI runs as root)");
        return None;
    }
    let outer = tempfile::tempdir().unwrap();
    let disk = outer.path().join("disk");
    let mount = Mount::tmpfs(&disk, "64m").expect("mount a tmpfs (as root)");
    let url = format!("sqlite://{}", disk.join("cloud.sqlite").display());
    let d = Deployment::start(test, vec![("FAPIAO_DATABASE_URL".into(), url)], |data| {
        // Cloud's database moves onto the small disk.
        for suffix in ["", "-wal", "-shm"] {
            let from = data.join(format!("cloud.sqlite{suffix}"));
            if from.exists() {
                std::fs::copy(&from, disk.join(format!("cloud.sqlite{suffix}"))).unwrap();
            }
        }
    });
    d.until(Duration::from_secs(30), || {
        d.rt.block_on(readyz(&d.data, "cloud")).0 == 200
    })
    .expect("cloud ready");
    Some((outer, d, mount, disk))
}

/// Fills the file system of `disk` to the last byte; the filler, to remove.
fn fill(disk: &Path) -> std::path::PathBuf {
    use std::io::Write as _;
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0_u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let mut byte = [0_u8; 1];
    while f.write_all(&byte).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    let _ = f.sync_all();
    filler
}

#[test]
fn a_cloud_that_cannot_store_gets_every_invoice_platform_issued() {
    const ORDERS: usize = 20;
    let Some((_outer, d, mount, disk)) = on_a_small_disk("faults_orphans") else {
        return;
    };
    let erp = d.erp();
    for i in 0..3 {
        assert!(matches!(
            d.rt.block_on(send(&erp, &order("ORPH", i))),
            Sent::Invoice(_)
        ));
    }
    // The WAL emptied into the database file, so that the next commit needs new space, and
    // the disk filled.
    let cloud_db =
        d.rt.block_on(fapiao_store::Db::open_existing(&format!(
            "sqlite://{}",
            disk.join("cloud.sqlite").display()
        )))
        .unwrap();
    d.rt.block_on(fapiao_store::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(cloud_db.pool()))
        .unwrap();
    let filler = fill(&disk);

    let mut unknown = Vec::new();
    for i in 3..3 + ORDERS {
        let r =
            d.rt.block_on(erp.send(Method::POST, "/v1/invoices", &order("ORPH", i)))
                .unwrap();
        let body = String::from_utf8_lossy(&r.body).into_owned();
        match r.status {
            201 => {}
            503 if body.contains("\"code\":\"outcome_unknown\"") => unknown.push(i),
            s => panic!("order {i}: HTTP {s} {body}"),
        }
    }
    eprintln!(
        "disk full: {} of {ORDERS} orders answered outcome_unknown",
        unknown.len()
    );
    assert!(!unknown.is_empty(), "the full disk kept cloud from storing");

    // Space back: every invoice platform issued reaches cloud, with no order sent again.
    std::fs::remove_file(&filler).unwrap();
    let platform_db = d.rt.block_on(db(&d.data, "platform"));
    let issued_at_platform = d.rt.block_on(count(
        &platform_db,
        "SELECT COUNT(*) FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
    ));
    assert_eq!(issued_at_platform, i64::try_from(3 + ORDERS).unwrap());
    let held = || {
        d.rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
        ))
    };
    let took = d
        .until(Duration::from_secs(60), || held() == issued_at_platform)
        .unwrap_or_else(|| panic!("cloud holds {} of {issued_at_platform}", held()));
    eprintln!("space back: cloud holds all {issued_at_platform} invoices {took:?} later");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args([
            "reconcile",
            "--role",
            "cloud",
            "--data",
            d.data.to_str().unwrap(),
        ])
        .env(
            "FAPIAO_DATABASE_URL",
            format!("sqlite://{}", disk.join("cloud.sqlite").display()),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success()
            && text.contains(&format!(
                "{issued_at_platform} invoices at platform, 0 missing at cloud"
            )),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The ERP asking now gets the invoice it was not told about.
    let again = d.rt.block_on(send(&erp, &order("ORPH", unknown[0])));
    assert!(matches!(again, Sent::Invoice(_)));
    for name in ["cloud", "platform", "tax"] {
        let (status, _) = d.role(name).terminate();
        assert!(status.success(), "{name}: {status}");
    }
    drop(mount);
}

#[test]
fn readiness_follows_a_full_disk_and_back() {
    let Some((_outer, d, mount, disk)) = on_a_small_disk("faults_disk") else {
        return;
    };
    let filler = fill(&disk);
    let took = d
        .until(Duration::from_secs(15), || {
            d.rt.block_on(readyz(&d.data, "cloud")).0 == 503
        })
        .expect("not ready on a full disk");
    let (_, body) = d.rt.block_on(readyz(&d.data, "cloud"));
    eprintln!("full disk: not ready after {took:?}: {body}");
    assert!(took <= Duration::from_secs(5), "{took:?}");
    assert!(
        body.contains("{\"name\":\"database\",\"ok\":false"),
        "{body}"
    );
    // Health is the process: still up.
    std::fs::remove_file(&filler).unwrap();
    let took = d
        .until(Duration::from_secs(15), || {
            d.rt.block_on(readyz(&d.data, "cloud")).0 == 200
        })
        .expect("ready again once space returns");
    eprintln!("space back: ready after {took:?}");
    assert!(took <= Duration::from_secs(5), "{took:?}");
    for name in ["cloud", "platform", "tax"] {
        let (status, _) = d.role(name).terminate();
        assert!(status.success(), "{name}: {status}");
    }
    drop(mount);
}

/// libfaketime for multithreaded programs (Debian's faketime package).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[test]
fn an_agent_whose_clock_is_ahead_issues_nothing_until_it_agrees() {
    const ORDERS: i64 = 5;
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: install Debian's faketime package (./test.sh does)"
    );
    let d = Deployment::start("faults_clock", Vec::new(), |_| {});
    // The agent's clock: ten minutes ahead, from a file libfaketime reads every second.
    let offset = d.data.join("agent-clock-offset");
    std::fs::write(&offset, "+600\n").unwrap();
    let admin = support::agent_admin();
    let env = [
        ("FAPIAO_ADMIN_LISTEN", admin.clone()),
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_CACHE_DURATION", "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let mut agent = Role::replica("agent", "agent".into(), &d.data, env.to_vec());
    agent.start();

    let cfg = RoleConfig::load(&d.data.join("cloud.toml")).unwrap();
    let creds = Layout::at(&d.data)
        .credentials()
        .unwrap()
        .remove(AGENT_ENTERPRISE.taxpayer_id)
        .unwrap();
    let erp = ErpClient::new(
        &format!("https://{}", cfg.listen[0]),
        &support::trust(&d.data),
        creds,
    )
    .unwrap();
    for i in 0..ORDERS {
        let body = serde_json::json!({
            "order_id": format!("CLOCK-{i}"),
            "invoice_type": "ordinary",
            "price_mode": "tax_exclusive",
            "seller": { "taxpayer_id": AGENT_ENTERPRISE.taxpayer_id, "name": AGENT_ENTERPRISE.name },
            "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
            "items": [{ "name": "有机酱油", "tax_code": "1030206020000000000", "unit": "箱",
                        "quantity": 1, "unit_price": "12.50", "tax_rate": "13%" }],
            "drawer": "陈晓"
        });
        let r =
            d.rt.block_on(erp.send(Method::POST, "/v1/invoices", body.to_string().as_bytes()))
                .unwrap();
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }

    // Not ready, and why.
    let took = d
        .until(Duration::from_secs(30), || {
            let (s, body) =
                d.rt.block_on(readyz_at(&d.data, &format!("https://{admin}")));
            s == 503 && body.contains("{\"name\":\"clock\",\"ok\":false")
        })
        .expect("the agent not ready for its clock");
    let (_, body) =
        d.rt.block_on(readyz_at(&d.data, &format!("https://{admin}")));
    eprintln!("agent not ready after {took:?}: {body}");
    assert!(body.contains("600 s ahead of tax:tax"), "{body}");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_fapiao"))
        .args(["agent", "status", "--data", d.data.to_str().unwrap()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("blocked: clock — our clock is 600 s ahead of tax:tax"),
        "{status}"
    );
    let log = std::fs::read_to_string(agent.log()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("agent: blocked"),
        "a warning in the agent's log:\n{log}"
    );
    // Nothing issued: the orders wait at cloud.
    std::thread::sleep(Duration::from_secs(3));
    let cloud_db = d.rt.block_on(db(&d.data, "cloud"));
    let issued = || {
        d.rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91330106MA2H00003L'",
        ))
    };
    assert_eq!(issued(), 0);
    assert_eq!(
        d.rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM queued_orders WHERE state = 'queued'"
        )),
        ORDERS
    );

    // The clock fixed: everything issued within seconds.
    std::fs::write(&offset, "+0\n").unwrap();
    let took = d
        .until(Duration::from_secs(60), || issued() == ORDERS)
        .unwrap_or_else(|| {
            panic!(
                "{} of {ORDERS} issued a minute after the clock was fixed",
                issued()
            )
        });
    eprintln!(
        "clock fixed: {ORDERS} orders issued {:.1} s later",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    d.until(Duration::from_secs(10), || {
        d.rt.block_on(readyz_at(&d.data, &format!("https://{admin}")))
            .0
            == 200
    })
    .expect("ready again");
    let (status, _) = agent.terminate();
    assert!(status.success());
    for name in ["cloud", "platform", "tax"] {
        let (status, _) = d.role(name).terminate();
        assert!(status.success(), "{name}: {status}");
    }
}
