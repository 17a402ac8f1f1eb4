//! Replicas behind a real load balancer, for real: two cloud and two platform processes
//! (`fapiao serve`) on one PostgreSQL, one tax, nginx in stream mode in front of each pair
//! (the shipped `deploy/nginx/nginx.conf`, its upstream lists kept by the shipped
//! `health-check.sh`). 1,000 orders of two enterprises come from 16 concurrent ERP clients,
//! each order sent twice at the same instant, to the two cloud replicas; meanwhile one cloud
//! replica and one platform replica are SIGKILLed and restarted. Then 1,000 more with tax
//! unreachable for 30 s in the middle.
//!
//! Afterwards, from the databases: one invoice per order and both answers to an order the
//! same invoice; no number used twice; every number of every block issued, voided or not yet
//! used (none missing, none outside a block); every invoice accepted by tax exactly once;
//! quota used = Σ totals; the outbox empty.
//!
//! PostgreSQL only: replicas share one database, which SQLite's one-writer file cannot be.
//! Needs `FAPIAO_TEST_POSTGRES` (skipped without it, unless `FAPIAO_TEST_REQUIRE_POSTGRES`)
//! and Debian's nginx with its stream module. The kill schedule is random;
//! `FAPIAO_REPLICA_SEED` replays it.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fapiao_model::Amount;
use fapiao_system::bootstrap::DEMO_ENTERPRISES;
use fapiao_system::{ErpClient, Layout, RoleConfig};
use http::Method;

mod support;
use support::{Lcg, Role, count, db, free_port};

/// Orders per phase, half each of the two demo enterprises.
const ORDERS: usize = 1000;
/// Concurrent ERP clients.
const CLIENTS: usize = 16;

fn order(enterprise: usize, id: &str, i: usize) -> Vec<u8> {
    let e = DEMO_ENTERPRISES[enterprise];
    serde_json::json!({
        "order_id": id,
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": e.taxpayer_id, "name": e.name },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "系统运维服务", "tax_code": "3040201030000000000", "unit": "月",
              "quantity": 1 + i % 5, "unit_price": format!("{}.{:02}", 100 + i % 900, i % 100),
              "tax_rate": "6%" }
        ],
        "drawer": "李静"
    })
    .to_string()
    .into_bytes()
}

/// nginx in stream mode, from the shipped config with this test's addresses and paths.
struct Nginx {
    child: Option<Child>,
    conf: PathBuf,
    checker: Option<Child>,
}

impl Nginx {
    fn start(dir: &Path, listen: &[(&str, u16)], replicas: &str, data: &Path) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx");
        let upstreams = dir.join("upstreams");
        std::fs::create_dir_all(&upstreams).unwrap();
        let list = dir.join("replicas.txt");
        std::fs::write(&list, replicas).unwrap();
        let mut conf = std::fs::read_to_string(root.join("nginx.conf")).unwrap();
        for (from, to) in [
            (
                "/etc/fapiao/nginx".to_owned(),
                upstreams.display().to_string(),
            ),
            (
                "/run/fapiao-nginx.pid".to_owned(),
                dir.join("nginx.pid").display().to_string(),
            ),
            (
                "/var/log/nginx/fapiao-error.log".to_owned(),
                dir.join("error.log").display().to_string(),
            ),
            (
                "/var/log/nginx/fapiao-access.log".to_owned(),
                dir.join("access.log").display().to_string(),
            ),
        ] {
            assert!(conf.contains(&from), "the shipped nginx.conf names {from}");
            conf = conf.replace(&from, &to);
        }
        for (port, to) in listen {
            let from = format!("listen {port};");
            assert!(conf.contains(&from), "the shipped nginx.conf has `{from}`");
            conf = conf.replace(&from, &format!("listen 127.0.0.1:{to};"));
        }
        // Unprivileged paths of nginx's own.
        conf = conf.replace(
            "events {",
            &format!("lock_file {};\nevents {{", dir.join("nginx.lock").display()),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, &conf).unwrap();
        let checker_env = |c: &mut Command| {
            let pki = data.join("pki");
            c.env("FAPIAO_LB_CERT", pki.join("cloud.tls-client.crt.pem"))
                .env("FAPIAO_LB_KEY", dir.join("lb.key.pem"))
                .env("FAPIAO_LB_CA", data.join("ca/intl/ca.crt.pem"))
                .env("FAPIAO_LB_INTERVAL", "1")
                .env(
                    "FAPIAO_LB_RELOAD",
                    format!("nginx -c {} -s reload", path.display()),
                );
        };
        // curl takes a key without a passphrase: the load balancer's copy.
        let key = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(data.join("pki/cloud.tls-client.key.pem"))
            .arg("-passin")
            .arg(format!(
                "file:{}",
                data.join("secrets/key-passphrase").display()
            ))
            .arg("-out")
            .arg(dir.join("lb.key.pem"))
            .status()
            .unwrap();
        assert!(key.success());
        let mut once = Command::new(root.join("health-check.sh"));
        once.arg(&list).arg(&upstreams).arg("--once");
        checker_env(&mut once);
        assert!(once.status().unwrap().success());
        let nginx = Command::new("nginx")
            .args(["-c", path.to_str().unwrap(), "-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian: apt-get install nginx libnginx-mod-stream)");
        let mut checker = Command::new(root.join("health-check.sh"));
        checker
            .arg(&list)
            .arg(&upstreams)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        checker_env(&mut checker);
        let mut n = Self {
            child: Some(nginx),
            conf: path,
            checker: None,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", listen[0].1)).is_ok() {
                n.checker = Some(checker.spawn().unwrap());
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        n.stop();
        panic!("nginx did not start: {conf}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.checker.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut c) = self.child.take() {
            // `stop`, not `quit`: a graceful quit waits for every proxied connection to end,
            // and the roles' keep-alive connections last `proxy_timeout`.
            let _ = Command::new("nginx")
                .args(["-c", self.conf.to_str().unwrap(), "-s", "stop"])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one copy of an order to `first`, falling back to the balancer while `first` cannot
/// be reached (killed); retries what is retryable. The invoice number and the answer's
/// invoice JSON.
async fn send(first: &ErpClient, balancer: &ErpClient, body: &[u8]) -> (String, String) {
    let mut via = first;
    for attempt in 0..600 {
        match via.send(Method::POST, "/v1/invoices", body).await {
            Ok(r) if r.status == 200 || r.status == 201 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let number = v["number"].as_str().unwrap().to_owned();
                return (number, v["invoice"].to_string());
            }
            Ok(r) if r.status == 429 || r.status >= 500 => {}
            Ok(r) => panic!("HTTP {} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(_) => via = balancer,
        }
        tokio::time::sleep(Duration::from_millis(if attempt < 10 { 100 } else { 300 })).await;
    }
    panic!("an order was not answered in 3 minutes");
}

/// What must hold of the databases once everything drained (see the module).
async fn check_databases(data: &Path, answers: &HashMap<String, String>) {
    let (cloud, platform, tax) = (
        db(data, "cloud").await,
        db(data, "platform").await,
        db(data, "tax").await,
    );
    let rows = |db: &fapiao_store::Db, sql: &'static str| {
        let db = db.clone();
        async move {
            fapiao_store::query_as::<(String, String)>(sql)
                .fetch_all(db.pool())
                .await
                .unwrap()
        }
    };
    // One invoice per order, the one both answers named.
    let at_cloud = rows(&cloud, "SELECT order_id, number FROM invoices").await;
    assert_eq!(
        at_cloud.len(),
        answers.len(),
        "one invoice per order at cloud"
    );
    for (order_id, number) in &at_cloud {
        assert_eq!(answers.get(order_id), Some(number), "{order_id}");
    }
    let at_platform = rows(&platform, "SELECT order_id, number FROM invoices").await;
    assert_eq!(
        at_platform.iter().cloned().collect::<BTreeSet<_>>(),
        at_cloud.iter().cloned().collect::<BTreeSet<_>>(),
        "platform issued exactly the invoices cloud holds"
    );
    assert_eq!(
        count(&platform, "SELECT COUNT(*) FROM orders").await,
        i64::try_from(answers.len()).unwrap()
    );
    // No number twice: invoices and void numbers are disjoint (each is a primary key).
    let numbers: BTreeSet<String> = at_platform.iter().map(|(_, n)| n.clone()).collect();
    let voided: BTreeSet<String> = fapiao_store::query_scalar("SELECT number FROM void_numbers")
        .fetch_all(platform.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(numbers.is_disjoint(&voided), "a voided number was issued");
    // Every number of a block's used part is issued or voided; every issued number lies in
    // one; blocks do not overlap; a block's unused numbers are released to whoever takes the
    // block next.
    let blocks: Vec<(i64, i64, i64, i64, i64)> = fapiao_store::query_as(
        "SELECT year, province, channel, first, last FROM blocks ORDER BY year, province, channel, first",
    )
    .fetch_all(platform.pool())
    .await
    .unwrap();
    let nexts: Vec<i64> = fapiao_store::query_scalar(
        "SELECT next FROM blocks ORDER BY year, province, channel, first",
    )
    .fetch_all(platform.pool())
    .await
    .unwrap();
    let mut used = BTreeSet::new();
    for (i, ((y, p, c, first, last), next)) in blocks.iter().zip(&nexts).enumerate() {
        assert!(first <= next && *next <= last + 1, "block {i}");
        if let Some((y2, p2, c2, first2, _)) = blocks.get(i + 1) {
            assert!(
                (y, p, c) != (y2, p2, c2) || last < first2,
                "blocks {i} and {} overlap",
                i + 1
            );
        }
        for seq in *first..*next {
            used.insert(format!("{y:02}{p:02}{c}{seq:015}"));
        }
    }
    let accounted: BTreeSet<String> = numbers.union(&voided).cloned().collect();
    assert_eq!(
        used, accounted,
        "the numbers blocks gave out are exactly those issued or voided"
    );
    // Every invoice accepted by tax exactly once.
    let at_tax: BTreeSet<String> = fapiao_store::query_scalar("SELECT number FROM invoices")
        .fetch_all(tax.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(at_tax, numbers, "tax holds every invoice");
    assert_eq!(
        count(
            &tax,
            "SELECT COUNT(*) FROM (SELECT number FROM upload_log WHERE status = 'accepted'
                                   GROUP BY number HAVING COUNT(*) <> 1) AS twice"
        )
        .await,
        0,
        "accepted exactly once"
    );
    assert_eq!(
        count(
            &cloud,
            "SELECT COUNT(*) FROM invoices WHERE tax_status <> 'accepted'"
        )
        .await,
        0
    );
    // Quota used = Σ totals, per enterprise and month.
    let totals = rows(
        &platform,
        "SELECT enterprise || ' ' || substr(issued_at, 1, 7), total FROM invoices",
    )
    .await;
    let mut sums: BTreeMap<String, Amount> = BTreeMap::new();
    for (key, total) in totals {
        let sum = sums.entry(key).or_default();
        *sum = *sum + Amount::parse(&total).unwrap();
    }
    let quota = rows(
        &platform,
        "SELECT enterprise || ' ' || month, used FROM quota_usage",
    )
    .await;
    let quota: BTreeMap<String, Amount> = quota
        .into_iter()
        .map(|(k, u)| (k, Amount::parse(&u).unwrap()))
        .filter(|(_, u)| !u.is_zero())
        .collect();
    assert_eq!(quota, sums, "quota used = Σ totals");
    // The outbox is empty.
    assert_eq!(
        count(
            &platform,
            "SELECT COUNT(*) FROM outbox WHERE state <> 'done'"
        )
        .await,
        0
    );
}

#[test]
fn replicas_behind_nginx_issue_each_order_once_through_kills_and_a_tax_outage() {
    if fapiao_store::testing::postgres_server().is_none() {
        eprintln!(
            "skipped: replicas share a PostgreSQL database (FAPIAO_TEST_POSTGRES is not set)"
        );
        return;
    }
    let seed = support::seed("FAPIAO_REPLICA_SEED");
    let mut rng = Lcg(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = fapiao_store::testing::postgres_server().unwrap();
    support::up_once(
        &data,
        &[
            "--postgres".into(),
            format!(
                "{server}/{}",
                fapiao_store::testing::database_name("replicas")
            ),
        ],
    );
    let cfg = |r: &str| RoleConfig::load(&data.join(format!("{r}.toml"))).unwrap();
    let port = |a: &str| a.rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
    // The balancer takes the ports the configs name (peers reach each other through it);
    // the replicas listen on ports of their own.
    let (cloud_port, platform_port) = (
        port(&cfg("cloud").listen[0]),
        port(&cfg("platform").listen[0]),
    );
    let mut replicas: BTreeMap<String, Role> = BTreeMap::new();
    let mut lines = String::new();
    let mut direct = Vec::new();
    for (role, n) in [("cloud", 1), ("cloud", 2), ("platform", 1), ("platform", 2)] {
        let (p, a) = (free_port(), free_port());
        let name = format!("{role}-{n}");
        lines.push_str(&format!("{role} 127.0.0.1:{p} 127.0.0.1:{a}\n"));
        if role == "cloud" {
            direct.push(format!("https://127.0.0.1:{p}"));
        }
        replicas.insert(
            name.clone(),
            Role::replica(
                if role == "cloud" { "cloud" } else { "platform" },
                name,
                &data,
                vec![
                    ("FAPIAO_LISTEN".into(), format!("127.0.0.1:{p}")),
                    ("FAPIAO_ADMIN_LISTEN".into(), format!("127.0.0.1:{a}")),
                ],
            ),
        );
    }
    let mut tax = Role::new("tax", &data);
    tax.start();
    for r in replicas.values_mut() {
        r.start();
    }
    let lb_dir = tmp.path().join("lb");
    std::fs::create_dir_all(&lb_dir).unwrap();
    let mut nginx = Nginx::start(
        &lb_dir,
        &[("8443", cloud_port), ("8444", platform_port)],
        &lines,
        &data,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let trust = support::trust(&data);
    let creds = Layout::at(&data).credentials().unwrap();
    // Per enterprise: a client of the balancer and one of each cloud replica.
    let clients: Arc<Vec<(ErpClient, Vec<ErpClient>)>> = Arc::new(
        DEMO_ENTERPRISES
            .iter()
            .map(|e| {
                let c = creds.get(e.taxpayer_id).unwrap().clone();
                (
                    ErpClient::new(
                        &format!("https://127.0.0.1:{cloud_port}"),
                        &trust,
                        c.clone(),
                    )
                    .unwrap(),
                    direct
                        .iter()
                        .map(|u| ErpClient::new(u, &trust, c.clone()).unwrap())
                        .collect(),
                )
            })
            .collect(),
    );
    let mut answers: HashMap<String, String> = HashMap::new();
    #[expect(clippy::disallowed_methods, reason = "progress figures")]
    let started = std::time::Instant::now();
    for phase in 0..2 {
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (next, done, clients) = (next.clone(), done.clone(), clients.clone());
            tasks.push(rt.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= ORDERS {
                        return mine;
                    }
                    let e = i % 2;
                    let id = format!("R{phase}-{i:04}");
                    let body = order(e, &id, i);
                    let (lb, replicas) = &clients[e];
                    // The same order at both replicas at once.
                    let (a, b) = tokio::join!(
                        send(&replicas[i % 2], lb, &body),
                        send(&replicas[(i + 1) % 2], lb, &body)
                    );
                    assert_eq!(a, b, "both answers to order {id} are the same invoice");
                    mine.push((id, a.0));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let at = |share: u64| {
            let done = done.clone();
            move || done.load(Ordering::SeqCst) >= ORDERS * usize::try_from(share).unwrap() / 100
        };
        let wait_until = |cond: &dyn Fn() -> bool| {
            for _ in 0..6000 {
                if cond() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("the orders stopped moving");
        };
        // A cloud replica and a platform replica killed and restarted while orders flow; in
        // the second phase tax is unreachable for 30 s in the middle.
        let victims: [&str; 2] = if phase == 0 {
            ["cloud-1", "platform-2"]
        } else {
            ["platform-1", "cloud-2"]
        };
        wait_until(&at(10 + rng.next(20)));
        if phase == 1 {
            eprintln!("tax unreachable for 30 s");
            tax.kill9();
        }
        for (k, victim) in victims.iter().enumerate() {
            wait_until(&at(30 + 30 * k as u64 + rng.next(15)));
            eprintln!(
                "phase {phase}: SIGKILL {victim} at {} of {ORDERS} answered",
                done.load(Ordering::SeqCst)
            );
            let r = replicas.get_mut(*victim).unwrap();
            r.kill9();
            std::thread::sleep(Duration::from_millis(200 + rng.next(1500)));
            r.start();
        }
        if phase == 1 {
            // 30 s after it went away.
            std::thread::sleep(Duration::from_secs(30).saturating_sub(Duration::from_secs(3)));
            tax.start();
        }
        for t in tasks {
            for (id, number) in rt.block_on(t).unwrap() {
                assert!(answers.insert(id, number).is_none());
            }
        }
        eprintln!(
            "phase {phase}: {ORDERS} orders answered twice at {:.0?}",
            started.elapsed()
        );
        // Everything drains: every invoice accepted by tax as cloud holds it, and platform's
        // outbox done — a killed platform replica's claims (a notice it delivered, say, but did
        // not mark done) are taken over once their lease runs out, up to 15 s later.
        let cloud_db = rt.block_on(db(&data, "cloud"));
        let platform_db = rt.block_on(db(&data, "platform"));
        let mut drained = false;
        for _ in 0..1200 {
            let left = rt.block_on(count(
                &cloud_db,
                "SELECT COUNT(*) FROM invoices WHERE tax_status <> 'accepted'",
            )) + rt.block_on(count(
                &platform_db,
                "SELECT COUNT(*) FROM outbox WHERE state <> 'done'",
            ));
            if left == 0 {
                drained = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(drained, "phase {phase}: not drained in 5 minutes");
        eprintln!("phase {phase}: drained at {:.0?}", started.elapsed());
        rt.block_on(check_databases(&data, &answers));
    }
    nginx.stop();
    for r in replicas.values_mut() {
        r.interrupt();
    }
    tax.interrupt();
}
