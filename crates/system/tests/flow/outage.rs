//! Outages: tax down (invoices still issued, pending, then drained exactly once) and platform
//! down (the ERP gets a retryable error; nothing half-done; the same order completes later);
//! reds queued during an outage reach tax in issue order.

use fapiao_system::RoleConfig;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tax_down_invoices_stay_pending_and_drain_exactly_once() {
    let mut env = Env::start().await;
    // Numbers are granted while tax is up (the first issue per province asks for a range).
    for ent in [SH, SZ] {
        let r = post(&env.erp(ent), "/v1/invoices", &order(ent, "UP-0", "10")).await;
        assert_eq!(r.status, 201);
    }
    settle(&env).await;
    env.system.stop("tax").await;
    let mut numbers = Vec::new();
    for i in 0..12 {
        let ent = if i % 2 == 0 { SH } else { SZ };
        let r = post(
            &env.erp(ent),
            "/v1/invoices",
            &order(ent, &format!("DOWN-{i}"), "20"),
        )
        .await;
        let v = json_of(&r);
        assert_eq!(
            (r.status, v["tax_status"].as_str().unwrap()),
            (201, "pending"),
            "{v}"
        );
        numbers.push((v["number"].as_str().unwrap().to_owned(), ent));
    }
    // The outbox keeps retrying with backoff.
    let p = env.system.platform.clone();
    wait_for("retries while tax is down", || {
        let p = p.clone();
        async move {
            p.outbox("pending")
                .await
                .unwrap()
                .iter()
                .any(|e| e.attempts >= 2)
        }
    })
    .await;
    for (n, ent) in &numbers {
        assert_eq!(
            json_of(&get(&env.erp(ent), &format!("/v1/invoices/{n}")).await)["tax_status"],
            "pending"
        );
    }
    env.system.restart("tax").await.unwrap();
    settle(&env).await;
    let accepted = env.system.tax.accepted().await.unwrap();
    assert_eq!(accepted.len(), 14);
    assert!(
        accepted
            .iter()
            .all(|a| a.acceptances == 1 && a.duplicates == 0),
        "{accepted:?}"
    );
    for (n, ent) in &numbers {
        assert_eq!(
            json_of(&get(&env.erp(ent), &format!("/v1/invoices/{n}")).await)["tax_status"],
            "accepted",
            "{n}"
        );
    }
    assert!(
        env.system
            .platform
            .outbox("failed")
            .await
            .unwrap()
            .is_empty()
    );
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_platform_down_the_erp_retries_the_same_order() {
    let mut env = Env::start().await;
    env.system.stop("platform").await;
    let body = order(SH, "RETRY-1", "30");
    let r = post(&env.erp(SH), "/v1/invoices", &body).await;
    let v = json_of(&r);
    assert_eq!(
        (
            r.status,
            v["code"].as_str().unwrap(),
            v["retryable"].as_bool()
        ),
        (503, "platform_unavailable", Some(true)),
        "{v}"
    );
    assert!(r.headers.get("retry-after").is_some());
    assert_eq!(
        snapshot(&env.system).await.cloud_invoices,
        0,
        "nothing stored at cloud"
    );
    env.system.restart("platform").await.unwrap();
    let r = post(&env.erp(SH), "/v1/invoices", &body).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    let again = post(&env.erp(SH), "/v1/invoices", &body).await;
    assert_eq!(
        (again.status, json_of(&again)["number"].as_str().unwrap()),
        (200, number.as_str())
    );
    settle(&env).await;
    let s = snapshot(&env.system).await;
    assert_eq!((s.platform[0], s.cloud_invoices, s.tax_invoices), (1, 1, 1));
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_lost_between_platform_and_cloud_is_recovered_by_the_retry() {
    let env = Env::start().await;
    // The platform issues, but cloud never stores it (as if the answer were lost): send the
    // order to platform directly as cloud.
    let cloud = Sender::new(&env, &env.system.layout.pki_prefix("cloud"));
    let body = order(SH, "LOST-1", "40");
    let hash = fapiao_protocol::erp::hex(&<sha2_digest::Sha256 as sha2_digest::Digest>::digest(
        body.to_string().as_bytes(),
    ));
    let msg = serde_json::json!({"enterprise": SH, "order_id": "LOST-1", "order": body, "request_hash": hash});
    let (_, v) = cloud.open(&cloud.post(cloud.seal("order.issue", 1, &msg)).await);
    let number = v["invoice"]["invoice"]["number"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(snapshot(&env.system).await.cloud_invoices, 0);
    // The ERP retries the same order through cloud: the same invoice, stored once.
    let r = post(&env.erp(SH), "/v1/invoices", &body).await;
    assert_eq!(
        (r.status, json_of(&r)["number"].as_str().unwrap()),
        (201, number.as_str())
    );
    let s = snapshot(&env.system).await;
    assert_eq!((s.platform[0], s.cloud_invoices), (1, 1));
    env.system.shutdown().await;
}

mod sha2_digest {
    pub(crate) use sha2::{Digest, Sha256};
}

/// A partial red and then a reason-01 red ("reverse the rest") of one blue, both queued while
/// tax is down. The second is made due first; tax would refuse it checked alone (it does not
/// reverse everything), so the outbox must hold it back until the partial red is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reds_queued_during_an_outage_reach_tax_in_issue_order() {
    let mut env = Env::start().await;
    let erp = env.erp(SH);
    let r = post(&erp, "/v1/invoices", &order(SH, "CHAIN-0", "10")).await;
    assert_eq!(r.status, 201);
    let blue = json_of(&r)["number"].as_str().unwrap().to_owned();
    settle(&env).await;
    env.system.stop("tax").await;
    let mut reds = Vec::new();
    for body in [
        json!({"order_id": "CHAIN-P", "reason": "04", "buyer_confirmation": "buyer:confirm:chain",
               "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "30.00"}]}}),
        json!({"order_id": "CHAIN-R", "reason": "01"}),
    ] {
        let r = post(&erp, &format!("/v1/invoices/{blue}/red"), &body).await;
        let v = json_of(&r);
        assert_eq!(
            (r.status, v["tax_status"].as_str()),
            (201, Some("pending")),
            "{v}"
        );
        reds.push(v["number"].as_str().unwrap().to_owned());
    }
    // From a second handle on platform's database (as an operator's tool would): park both
    // uploads an hour ahead, and keep them parked until no attempt in flight undoes it.
    let cfg = RoleConfig::load(&env.system.layout.dir().join("platform.toml")).unwrap();
    let db = fapiao_store::Db::open_existing(&cfg.database)
        .await
        .unwrap();
    let due = |number: &str, at: i64| {
        let db = db.clone();
        let number = number.to_owned();
        async move {
            fapiao_store::query(
                "UPDATE outbox SET next_attempt_at = $2 WHERE kind = 'upload' AND number = $1",
            )
            .bind(number)
            .bind(at)
            .execute(db.pool())
            .await
            .unwrap();
        }
    };
    let later = crate::now().unix_timestamp() + 3600;
    wait_for("both red uploads parked", || {
        let (db, reds, due) = (db.clone(), reds.clone(), &due);
        async move {
            for n in &reds {
                due(n, later).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let parked: i64 = fapiao_store::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'upload' AND state = 'pending'
                 AND next_attempt_at = $1",
            )
            .bind(later)
            .fetch_one(db.pool())
            .await
            .unwrap();
            parked == 2
        }
    })
    .await;
    env.system.restart("tax").await.unwrap();
    // "Reverse the rest" due now, the partial red it follows a moment later.
    due(&reds[1], 0).await;
    due(&reds[0], crate::now().unix_timestamp() + 2).await;
    settle(&env).await;
    let accepted = env.system.tax.accepted().await.unwrap();
    for n in &reds {
        assert!(
            accepted
                .iter()
                .any(|a| &a.number == n && a.acceptances == 1),
            "{n} accepted by tax: {accepted:?}"
        );
        assert_eq!(
            json_of(&get(&erp, &format!("/v1/invoices/{n}")).await)["tax_status"],
            "accepted",
            "{n}"
        );
    }
    assert!(
        env.system
            .platform
            .outbox("failed")
            .await
            .unwrap()
            .is_empty()
    );
    env.system.shutdown().await;
}
