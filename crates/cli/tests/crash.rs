//! Crash safety, for real: cloud, platform, tax (and the agent) run as `fapiao serve`
//! processes and are killed with SIGKILL at random moments and restarted each time.
//!
//! - Async, enterprise-hosted flow: 500 orders submitted while the agent, cloud, platform and
//!   tax are killed. Afterwards: exactly 500 invoices, 500 distinct numbers inside the blocks
//!   platform granted the agent, each accepted by tax exactly once, each known once to
//!   platform and to cloud, no order left pending, and the agent's quota used equal to the sum
//!   of the totals.
//! - Sync flow: 300 orders sent eight at a time by an ERP that sends each again until it is
//!   answered, while cloud, platform and tax are killed. Afterwards: one invoice per order at
//!   cloud, platform and tax, each accepted once, and every answer an order got names the
//!   invoice cloud holds for it.
//!
//! The kill schedule is random; the seed is printed and `FAPIAO_CRASH_SEED` replays it. On
//! SQLite files, or with `FAPIAO_TEST_ENGINE=postgres` every role's database on PostgreSQL.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fapiao_model::Amount;
use fapiao_store::Db;
use fapiao_system::{AGENT_ENTERPRISE, ErpClient, Layout, RoleConfig};
use http::Method;

mod support;
use support::{Lcg, Role, count, db};

const ORDERS: usize = 500;
/// Orders submitted only after the fifth kill.
const HELD_BACK: usize = 25;
/// [`ORDERS`] as SQLite counts it.
const ORDERS_I64: i64 = 500;
const HZ: &str = AGENT_ENTERPRISE.taxpayer_id;

fn order(i: usize) -> Vec<u8> {
    serde_json::json!({
        "order_id": format!("CRASH-{i:04}"),
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": HZ, "name": AGENT_ENTERPRISE.name },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "有机酱油", "tax_code": "1030206020000000000", "unit": "箱",
              "quantity": 1 + i % 7, "unit_price": format!("{}.{:02}", 10 + i % 90, i % 100),
              "tax_rate": "13%" }
        ],
        "drawer": "陈晓"
    })
    .to_string()
    .into_bytes()
}

#[test]
fn killing_agent_cloud_platform_and_tax_at_random_loses_and_duplicates_nothing() {
    let seed = support::seed("FAPIAO_CRASH_SEED");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();

    // `up` once: the development PKI, configs on free ports, the registrations; the roles'
    // databases on PostgreSQL with `FAPIAO_TEST_ENGINE=postgres`.
    support::up_once(&data, &support::engine_args("crash"));

    let mut roles: BTreeMap<&str, Role> = ["tax", "platform", "cloud"]
        .into_iter()
        .map(|name| (name, Role::new(name, &data)))
        .collect();
    let admin = vec![("FAPIAO_ADMIN_LISTEN".to_owned(), support::agent_admin())];
    roles.insert(
        "agent",
        Role::replica("agent", "agent".into(), &data, admin),
    );
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
    let trust = support::trust(&data);
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
        "agent", "cloud", "platform", "agent", "tax", "agent", "cloud", "platform", "agent", "tax",
        "agent",
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
                                   GROUP BY number HAVING COUNT(*) <> 1) AS twice",
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

const SYNC_ORDERS: usize = 300;
const SH: &str = "91310115MA1FP0001X";

fn sync_order(i: usize) -> Vec<u8> {
    serde_json::json!({
        "order_id": format!("SYNC-{i:04}"),
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": SH, "name": "上海云帆信息科技有限公司" },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "系统运维服务", "tax_code": "3040201030000000000", "unit": "月",
              "quantity": 1 + i % 3, "unit_price": format!("{}.{:02}", 50 + i % 50, i % 100),
              "tax_rate": "6%" }
        ],
        "drawer": "李静"
    })
    .to_string()
    .into_bytes()
}

#[test]
fn killing_cloud_platform_and_tax_in_the_sync_flow_loses_and_duplicates_nothing() {
    let seed = support::seed("FAPIAO_CRASH_SEED");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::up_once(&data, &support::engine_args("crash_sync"));
    let mut roles: BTreeMap<&str, Role> = ["tax", "platform", "cloud"]
        .into_iter()
        .map(|name| (name, Role::new(name, &data)))
        .collect();
    for name in ["tax", "platform", "cloud"] {
        roles.get_mut(name).unwrap().start();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cloud_cfg = RoleConfig::load(&data.join("cloud.toml")).unwrap();
    let creds = Layout::at(&data).credentials().unwrap().remove(SH).unwrap();
    let erp = Arc::new(
        ErpClient::new(
            &format!("https://{}", cloud_cfg.listen[0]),
            &support::trust(&data),
            creds,
        )
        .unwrap(),
    );

    // Eight senders; each order sent until it is answered with an invoice (what an ERP does
    // with `platform_unavailable`, `outcome_unknown`, a refused connection or a cut one).
    let answered = Arc::new(std::sync::Mutex::new(BTreeMap::<usize, String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (erp, answered, next) = (erp.clone(), answered.clone(), next.clone());
            rt.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= SYNC_ORDERS {
                        break;
                    }
                    loop {
                        match erp.send(Method::POST, "/v1/invoices", &sync_order(i)).await {
                            Ok(r) if r.status == 201 || r.status == 200 => {
                                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                                let n = v["number"].as_str().unwrap().to_owned();
                                answered.lock().unwrap().insert(i, n);
                                break;
                            }
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
                }
            })
        })
        .collect();

    let mut rng = Lcg(seed);
    let victims = [
        "cloud", "platform", "tax", "cloud", "platform", "cloud", "tax", "platform",
    ];
    let mut mid_work = 0;
    for victim in victims {
        std::thread::sleep(Duration::from_millis(200 + rng.next(1200)));
        let done = answered.lock().unwrap().len();
        if done < SYNC_ORDERS {
            mid_work += 1;
        }
        eprintln!("SIGKILL {victim} (answered {done} of {SYNC_ORDERS})");
        let role = roles.get_mut(victim).unwrap();
        role.kill9();
        std::thread::sleep(Duration::from_millis(rng.next(800)));
        role.start();
    }
    assert!(
        mid_work >= 4,
        "the kills came while orders were sent ({mid_work})"
    );
    for s in senders {
        rt.block_on(s).unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), SYNC_ORDERS);

    // Everything reaches tax and cloud hears of it.
    let cloud_db = rt.block_on(db(&data, "cloud"));
    let mut drained = false;
    for _ in 0..1200 {
        let accepted = rt.block_on(count(
            &cloud_db,
            "SELECT COUNT(*) FROM invoices WHERE enterprise = '91310115MA1FP0001X' AND tax_status = 'accepted'",
        ));
        if accepted == i64::try_from(SYNC_ORDERS).unwrap() {
            drained = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(drained, "not drained in 5 minutes");
    for name in ["cloud", "platform", "tax"] {
        roles.get_mut(name).unwrap().interrupt();
    }
    rt.block_on(async {
        let (platform, tax) = (db(&data, "platform").await, db(&data, "tax").await);
        let rows = |db: Db, sql: &'static str| async move {
            let rows: Vec<(String, String)> = fapiao_store::query_as(sql)
                .fetch_all(db.pool())
                .await
                .unwrap();
            rows
        };
        let at_cloud: BTreeMap<String, String> = rows(
            cloud_db.clone(),
            "SELECT order_id, number FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
        )
        .await
        .into_iter()
        .collect();
        assert_eq!(
            at_cloud.len(),
            SYNC_ORDERS,
            "one invoice per order at cloud"
        );
        for (i, n) in &answered {
            assert_eq!(
                at_cloud.get(&format!("SYNC-{i:04}")),
                Some(n),
                "order {i}: the answer names cloud's invoice"
            );
        }
        let at_platform: BTreeSet<String> = rows(
            platform,
            "SELECT order_id, number FROM invoices WHERE enterprise = '91310115MA1FP0001X'",
        )
        .await
        .into_iter()
        .map(|(_, n)| n)
        .collect();
        let numbers: BTreeSet<String> = at_cloud.values().cloned().collect();
        assert_eq!(at_platform, numbers, "platform issued each order once");
        assert_eq!(
            count(
                &tax,
                "SELECT COUNT(*) FROM (SELECT number FROM upload_log WHERE status = 'accepted'
                                       GROUP BY number HAVING COUNT(*) <> 1) AS twice",
            )
            .await,
            0
        );
        let at_tax: Vec<String> = fapiao_store::query_scalar("SELECT number FROM invoices")
            .fetch_all(tax.pool())
            .await
            .unwrap();
        let at_tax: BTreeSet<String> = at_tax.into_iter().collect();
        assert_eq!(at_tax, numbers, "tax accepted each invoice");
    });
}
