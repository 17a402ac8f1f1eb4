//! Replicas racing on one PostgreSQL database, in this process: a second cloud and a second
//! platform started from the same configs on ports of their own, cloud B sending to platform B.
//! Each test makes the two replicas of a role want the same thing at the same instant: the
//! last of a quota, the last number of a block, the same outbox entries, the same ERP nonce.
//!
//! PostgreSQL only (`FAPIAO_TEST_ENGINE=postgres`): replicas share one database, which
//! SQLite's one-writer file cannot be; on SQLite each test says so and passes without running.

use std::collections::{BTreeMap, BTreeSet};

use fapiao_protocol::erp::{KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use fapiao_store::Engine;
use fapiao_system::run::{Running, bind_all, start_role};

use fapiao_system::{ErpClient, RoleConfig};
use http::Method;
use serde_json::json;

use crate::helpers::*;

/// A second cloud (its platform: the second platform) and a second platform, beside `env`'s.
struct Second {
    cloud: Running,
    platform: Running,
    cloud_url: String,
}

impl Second {
    async fn start(env: &Env) -> Self {
        let layout = &env.system.layout;
        let listen = |c: &mut RoleConfig| {
            c.listen = vec!["127.0.0.1:0".into()];
            c.admin_listen = vec!["127.0.0.1:0".into()];
        };
        let mut p = RoleConfig::load(&layout.config_path("platform")).unwrap();
        listen(&mut p);
        let platform = start_role(
            &p,
            bind_all(&p.listen).await.unwrap(),
            bind_all(&p.admin_listen).await.unwrap(),
            fast(),
        )
        .await
        .unwrap();
        let mut c = RoleConfig::load(&layout.config_path("cloud")).unwrap();
        listen(&mut c);
        c.peers.platform_url = Some(format!("https://{}", platform.addrs[0]));
        let cloud = start_role(
            &c,
            bind_all(&c.listen).await.unwrap(),
            bind_all(&c.admin_listen).await.unwrap(),
            fast(),
        )
        .await
        .unwrap();
        let cloud_url = format!("https://{}", cloud.addrs[0]);
        Self {
            cloud,
            platform,
            cloud_url,
        }
    }

    /// An ERP client of the second cloud.
    fn erp(&self, env: &Env, enterprise: &str) -> ErpClient {
        let creds = env
            .system
            .layout
            .credentials()
            .unwrap()
            .remove(enterprise)
            .unwrap();
        ErpClient::new(&self.cloud_url, &env.trust(), creds).unwrap()
    }

    async fn stop(self) {
        self.cloud.shutdown().await;
        self.platform.shutdown().await;
    }
}

fn on_postgres(test: &str) -> bool {
    if engine() == Engine::Postgres {
        return true;
    }
    eprintln!("{test}: replicas share a PostgreSQL database; on SQLite there is nothing to race");
    false
}

/// Ten rounds of two orders at once, one at each replica, with room in the month's quota for
/// exactly one: one issued, one refused `over_quota`, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_the_last_of_a_quota_issue_once() {
    if !on_postgres("quota race") {
        return;
    }
    let env = Env::start().await;
    let second = Second::start(&env).await;
    let (a, b) = (env.erp(SH), second.erp(&env, SH));
    // Each order is 2 × 60 + 100 at 6 %: 233.20.
    let mut issued = 0;
    for round in 0..10 {
        let used = snapshot(&env.system)
            .await
            .quota
            .iter()
            .find(|q| q.0 == SH)
            .map_or_else(|| "0.00".to_owned(), |q| q.2.clone());
        let room = fapiao_model::Amount::parse(&used).unwrap()
            + fapiao_model::Amount::parse("300.00").unwrap();
        admin_patch(&env, SH, json!({"monthly_quota": room.to_string()})).await;
        let (oa, ob) = (
            order(SH, &format!("QR-{round}-A"), "60"),
            order(SH, &format!("QR-{round}-B"), "60"),
        );
        let (ra, rb) = tokio::join!(post(&a, "/v1/invoices", &oa), post(&b, "/v1/invoices", &ob));
        let mut outcome = [
            (
                ra.status,
                json_of(&ra)["code"].as_str().unwrap_or("").to_owned(),
            ),
            (
                rb.status,
                json_of(&rb)["code"].as_str().unwrap_or("").to_owned(),
            ),
        ];
        outcome.sort();
        assert_eq!(
            outcome,
            [(201, String::new()), (422, "over_quota".to_owned())],
            "round {round}"
        );
        issued += 1;
    }
    settle(&env).await;
    let after = snapshot(&env.system).await;
    let sh_used = after.quota.iter().find(|q| q.0 == SH).unwrap().2.clone();
    assert_eq!(
        sh_used,
        (0..issued)
            .fold(fapiao_model::Amount::default(), |s, _| {
                s + fapiao_model::Amount::parse("233.20").unwrap()
            })
            .to_string(),
        "quota used = Σ totals"
    );
    second.stop().await;
    env.system.shutdown().await;
}

/// Two replicas issuing for one enterprise at once, across the end of blocks: every number
/// once, each replica numbering from blocks it holds (a new one carved when its own is
/// spent), every number of a block's used part issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_numbering_across_blocks_use_no_number_twice() {
    if !on_postgres("block race") {
        return;
    }
    let env = Env::start().await;
    let second = Second::start(&env).await;
    let (a, b) = (
        std::sync::Arc::new(env.erp(SH)),
        std::sync::Arc::new(second.erp(&env, SH)),
    );
    let mut tasks = Vec::new();
    // Blocks of 50 (`fast()`): 160 invoices end several blocks while both replicas issue.
    for i in 0..80 {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let (oa, ob) = (
                order(SH, &format!("BR-{i}-A"), "10"),
                order(SH, &format!("BR-{i}-B"), "10"),
            );
            let (ra, rb) =
                tokio::join!(post(&a, "/v1/invoices", &oa), post(&b, "/v1/invoices", &ob));
            [ra, rb].map(|r| {
                assert_eq!(r.status, 201, "{}", json_of(&r));
                json_of(&r)["number"].as_str().unwrap().to_owned()
            })
        }));
    }
    let mut numbers = BTreeSet::new();
    for t in tasks {
        for n in t.await.unwrap() {
            assert!(numbers.insert(n.clone()), "{n} issued twice");
        }
    }
    let p = env.system.platform.db().pool();
    let blocks: Vec<(i64, i64, i64, i64, i64, Option<String>)> = fapiao_store::query_as(
        "SELECT year, province, channel, first, next, holder FROM blocks WHERE enterprise = $1 ORDER BY first",
    )
    .bind(SH)
    .fetch_all(p)
    .await
    .unwrap();
    let holders: BTreeSet<Option<String>> = blocks.iter().map(|b| b.5.clone()).collect();
    assert!(
        holders.len() >= 2,
        "each replica numbered from blocks of its own: {holders:?}"
    );
    let mut used = BTreeSet::new();
    for (y, p, c, first, next, _) in &blocks {
        for seq in *first..*next {
            used.insert(format!("{y:02}{p:02}{c}{seq:015}"));
        }
    }
    // The warm-up order of `Env` is not among those sent here.
    let issued: BTreeSet<String> =
        fapiao_store::query_scalar("SELECT number FROM invoices WHERE enterprise = $1")
            .bind(SH)
            .fetch_all(env.system.platform.db().pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(numbers.is_subset(&issued));
    assert_eq!(used, issued, "every number the blocks gave out was issued");
    // A replica stopping lets its blocks go: only the first replica holds any now.
    second.stop().await;
    let holders: BTreeSet<String> =
        fapiao_store::query_scalar("SELECT holder FROM blocks WHERE holder IS NOT NULL")
            .fetch_all(env.system.platform.db().pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    env.system.shutdown().await;
}

/// Invoices queued for upload while tax is away, then both replicas' outbox workers at the
/// same entries when it is back: each invoice reaches tax once (no duplicate upload at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_draining_one_outbox_upload_each_invoice_once() {
    if !on_postgres("outbox race") {
        return;
    }
    let mut env = Env::start().await;
    let second = Second::start(&env).await;
    let (a, b) = (env.erp(SH), second.erp(&env, SZ));
    // Numbers for both enterprises' provinces first: tax grants ranges.
    for (erp, e) in [(&a, SH), (&b, SZ)] {
        let r = post(erp, "/v1/invoices", &order(e, "OR-WARM", "10")).await;
        assert_eq!(r.status, 201, "{}", json_of(&r));
    }
    settle(&env).await;
    env.system.stop("tax").await;
    for i in 0..60 {
        let (oa, ob) = (
            order(SH, &format!("OR-{i}"), "10"),
            order(SZ, &format!("OR-{i}"), "10"),
        );
        let (ra, rb) = tokio::join!(post(&a, "/v1/invoices", &oa), post(&b, "/v1/invoices", &ob));
        assert_eq!((ra.status, rb.status), (201, 201));
    }
    env.system.restart("tax").await.unwrap();
    settle(&env).await;
    let uploads: BTreeMap<String, i64> =
        fapiao_store::query_as("SELECT number, COUNT(*) FROM upload_log GROUP BY number")
            .fetch_all(env.system.tax.db().pool())
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert!(uploads.len() >= 120, "{} uploads", uploads.len());
    let twice: Vec<_> = uploads.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "uploaded more than once: {twice:?}");
    second.stop().await;
    env.system.shutdown().await;
}

/// One signed ERP request — the same nonce, the same bytes — at both cloud replicas at the
/// same instant, fifty times: one answered, the other refused as a replay, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_erp_nonce_at_two_replicas_is_accepted_once() {
    if !on_postgres("nonce race") {
        return;
    }
    let env = Env::start().await;
    let second = Second::start(&env).await;
    let (a, b) = (env.erp(SH), second.erp(&env, SH));
    let creds = a.credentials().clone();
    for i in 0..50 {
        let body = order(SH, &format!("NR-{i}"), "10").to_string().into_bytes();
        let ts = crate::now().unix_timestamp();
        let nonce = format!("nonce-race-{i:08}");
        let signature = sign(
            creds.secret.as_bytes(),
            "POST",
            "/v1/invoices",
            ts,
            &nonce,
            &body,
        );
        let headers = [
            (KEY_HEADER, creds.key_id.clone()),
            (TIMESTAMP_HEADER, ts.to_string()),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, signature),
            ("content-type", "application/json".to_owned()),
        ];
        let (ra, rb) = tokio::join!(
            a.send_raw(Method::POST, "/v1/invoices", &headers, &body),
            b.send_raw(Method::POST, "/v1/invoices", &headers, &body)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let mut outcome = [
            (
                ra.status,
                json_of(&ra)["code"].as_str().unwrap_or("").to_owned(),
            ),
            (
                rb.status,
                json_of(&rb)["code"].as_str().unwrap_or("").to_owned(),
            ),
        ];
        outcome.sort();
        assert_eq!(
            outcome,
            [(201, String::new()), (401, "request_replayed".to_owned())],
            "round {i}"
        );
    }
    second.stop().await;
    env.system.shutdown().await;
}
