//! The async, enterprise-hosted flow in one process: orders of the enterprise-hosted tenant
//! wait at cloud; the agent pulls, issues with its own device, uploads to tax and reports to
//! platform; cloud then shows the invoices as in sync mode. Outages of tax, platform and cloud
//! end with everything drained and consistent.

use std::collections::BTreeMap;
use std::sync::Arc;

use fapiao_model::Amount;
use fapiao_protocol::wire::WireInvoice;
use serde_json::{Value, json};

use crate::helpers::*;

async fn start() -> Env {
    let mut env = Env::start().await;
    env.system.start_agent().await.unwrap();
    env
}

/// Waits until every order is issued at cloud; their numbers.
async fn issued(env: &Env, orders: &[String]) -> Vec<String> {
    let erp = Arc::new(env.erp(HZ));
    let mut numbers = Vec::new();
    for id in orders {
        let erp = erp.clone();
        let path = format!("/v1/orders/{id}");
        wait_for(&format!("order {id} issued"), || {
            let (erp, path) = (erp.clone(), path.clone());
            async move { json_of(&get(&erp, &path).await)["status"] == "issued" }
        })
        .await;
        let v = json_of(&get(&erp, &format!("/v1/orders/{id}")).await);
        numbers.push(v["number"].as_str().unwrap().to_owned());
    }
    numbers
}

/// Waits until every invoice is accepted at cloud.
async fn accepted(env: &Env, numbers: &[String]) {
    let erp = Arc::new(env.erp(HZ));
    for n in numbers {
        let path = format!("/v1/invoices/{n}");
        wait_for(&format!("{n} accepted at cloud"), || {
            let (erp, path) = (erp.clone(), path.clone());
            async move { json_of(&get(&erp, &path).await)["tax_status"] == "accepted" }
        })
        .await;
    }
}

async fn post_orders(env: &Env, prefix: &str, count: usize) -> Vec<String> {
    let erp = env.erp(HZ);
    let mut ids = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}-{i:03}");
        let r = post(
            &erp,
            "/v1/invoices",
            &order(HZ, &id, &format!("{}.{:02}", 20 + i, i % 100)),
        )
        .await;
        let v = json_of(&r);
        assert_eq!(r.status, 202, "{v}");
        assert_eq!(v["order_id"], json!(id));
        ids.push(id);
    }
    ids
}

/// Cloud, platform and tax hold the same signed invoice for every number, tax accepted each
/// once, the agent's queues are empty and its quota used is the sum of the totals.
async fn agree(env: &Env, numbers: &[String]) {
    let trust = env.trust();
    let erp = env.erp(HZ);
    let tax: BTreeMap<String, fapiao_tax::Accepted> = env
        .system
        .tax
        .accepted()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.number.clone(), a))
        .collect();
    let mut sum = Amount::default();
    for n in numbers {
        let c = json_of(&get(&erp, &format!("/v1/invoices/{n}")).await);
        assert_eq!(c["tax_status"], "accepted", "{n}: {c}");
        let p = env.system.platform.invoice(n).await.unwrap().unwrap();
        let cw: WireInvoice = serde_json::from_value(
            serde_json::json!({"invoice": c["invoice"], "signature": c["signature"]}),
        )
        .unwrap();
        assert_eq!(
            cw, p.invoice,
            "{n}: cloud and platform hold the same invoice"
        );
        let signed = cw.to_signed().unwrap();
        fapiao_issuer::verify(&signed, &trust, crate::now()).unwrap();
        let receipt: fapiao_protocol::wire::SignedReceipt =
            serde_json::from_value(c["receipt"].clone()).unwrap();
        receipt.verify(&trust, crate::now()).unwrap();
        assert_eq!(Some(&receipt), p.receipt.as_ref());
        let a = &tax[n];
        assert_eq!((a.acceptances, a.duplicates), (1, 0), "{n}");
        assert!(
            a.uploader.starts_with("agent:"),
            "{n} uploaded by {}",
            a.uploader
        );
        sum = sum + signed.invoice.draft().totals().total;
    }
    let agent = env.system.agent.as_ref().unwrap();
    wait_for("the agent's queues to drain", || async {
        let s = agent.status().await.unwrap();
        s.to_issue + s.to_upload + s.to_report + s.to_ack == 0
    })
    .await;
    let s = agent.status().await.unwrap();
    assert_eq!(s.failed_reports, 0);
    assert_eq!(
        Amount::parse(&s.quota_used).unwrap(),
        sum,
        "quota used = Σ totals"
    );
    // Platform's metric: what the agent issued, not what it was granted (shown apart).
    let admin = operator(env, env.system.ports.platform_admin);
    let r = admin
        .request(http::Method::GET, "/metrics", &[], Vec::new())
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name}{{enterprise=\"{HZ}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in {metrics}"))
            .parse()
            .unwrap()
    };
    let issued: f64 = sum.to_string().parse().unwrap();
    assert!(
        (gauge("fapiao_quota_used") - issued).abs() < 0.005,
        "{metrics}"
    );
    assert!(gauge("fapiao_quota_granted") >= issued, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_issues_queued_orders_like_the_hosted_issuer() {
    let env = start().await;
    let erp = env.erp(HZ);
    let ids = post_orders(&env, "HZ", 12).await;
    // The same order again: the same status; another body under the id: a conflict.
    let again = post(&erp, "/v1/invoices", &order(HZ, "HZ-000", "20.00")).await;
    assert_eq!(again.status, 202, "{}", json_of(&again));
    let other = post(&erp, "/v1/invoices", &order(HZ, "HZ-000", "99.00")).await;
    assert_eq!(json_of(&other)["code"], "order_conflict");
    // An order the agent cannot issue is refused with the reason.
    let mut bad = order(HZ, "HZ-BAD", "10");
    bad["items"][0]["tax_rate"] = json!("7%");
    assert_eq!(post(&erp, "/v1/invoices", &bad).await.status, 202);
    let mut numbers = issued(&env, &ids).await;
    wait_for("the bad order refused", || async {
        json_of(&get(&erp, "/v1/orders/HZ-BAD").await)["status"] == "refused"
    })
    .await;
    let refused = json_of(&get(&erp, "/v1/orders/HZ-BAD").await);
    assert_eq!(refused["error"]["code"], "invalid_order", "{refused}");
    // Same order again after issue: the invoice (200), as in sync mode.
    let again = post(&erp, "/v1/invoices", &order(HZ, "HZ-001", "21.01")).await;
    assert_eq!(
        (again.status, json_of(&again)["number"].clone()),
        (200, json!(numbers[1]))
    );
    accepted(&env, &numbers).await;

    // Reds: a partial red, then the rest in full (tax checks them in that order).
    let blue = numbers[0].clone();
    for (id, body) in [
        (
            "HZ-RP",
            json!({"order_id": "HZ-RP", "reason": "04", "buyer_confirmation": "buyer:confirm",
                   "scope": {"scope": "partial", "lines": [{"line": 2, "amount": "30.00"}]}}),
        ),
        ("HZ-RF", json!({"order_id": "HZ-RF", "reason": "01"})),
    ] {
        let r = post(&erp, &format!("/v1/invoices/{blue}/red"), &body).await;
        assert_eq!(r.status, 202, "{}", json_of(&r));
        numbers.extend(issued(&env, &[id.to_owned()]).await);
    }
    // Nothing is left of the blue: a third red is refused by the agent.
    let r = post(
        &erp,
        &format!("/v1/invoices/{blue}/red"),
        &json!({"order_id": "HZ-R3", "reason": "01"}),
    )
    .await;
    assert_eq!(r.status, 202);
    wait_for("the third red refused", || async {
        json_of(&get(&erp, "/v1/orders/HZ-R3").await)["status"] == "refused"
    })
    .await;
    assert_eq!(
        json_of(&get(&erp, "/v1/orders/HZ-R3").await)["error"]["code"],
        "red_invalid"
    );
    accepted(&env, &numbers).await;
    agree(&env, &numbers).await;
    let red = json_of(&get(&erp, &format!("/v1/invoices/{}", numbers[13])).await);
    assert_eq!(red["kind"], "red");
    assert_eq!(red["blue_number"], json!(blue));
    assert!(red["form"]["number"].as_str().unwrap().len() == 20, "{red}");

    // Its OFD: the agent's device holds the key, platform none — refused as such; the zip
    // holds the PDF and the XML.
    let r = get(&erp, &format!("/v1/invoices/{blue}/ofd")).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].clone()),
        (409, json!("ofd_unavailable")),
        "{}",
        json_of(&r)
    );
    let zip = get(&erp, &format!("/v1/invoices/{blue}/zip")).await;
    assert_eq!(zip.status, 200);
    let names: Vec<String> = fapiao_render::ofd::parts(&zip.body)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.len() == 2 && names[0].ends_with(".pdf") && names[1].ends_with(".xml"),
        "{names:?}"
    );

    // A hosted invoice verifies the same way at cloud and tax.
    let hosted = json_of(&post(&env.erp(SH), "/v1/invoices", &order(SH, "SH-1", "10")).await);
    let hw: WireInvoice = serde_json::from_value(
        serde_json::json!({"invoice": hosted["invoice"], "signature": hosted["signature"]}),
    )
    .unwrap();
    fapiao_issuer::verify(&hw.to_signed().unwrap(), &env.trust(), crate::now()).unwrap();
    settle(&env).await;
    let at_tax = env.system.tax.accepted().await.unwrap();
    assert!(at_tax.iter().any(
        |a| a.number == hosted["number"].as_str().unwrap() && a.uploader == "platform:platform"
    ));
    // Webhook-free ERP listing shows the agent's invoices like any other.
    let page: Value = json_of(&get(&erp, "/v1/invoices?limit=100").await);
    assert_eq!(page["items"].as_array().unwrap().len(), numbers.len());

    // A report and a status report sent again (as after a crash before their answers were
    // recorded) are acknowledged again and change nothing.
    let agent = env.system.agent.clone().unwrap();
    let again = fapiao_store::query(
        "UPDATE queue SET state = 'pending', next_attempt_at = 0
         WHERE kind IN ('report', 'status', 'upload') AND subject IN ($1, $2)",
    )
    .bind(&numbers[0])
    .bind(&numbers[13])
    .execute(agent.db().pool())
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(again, 6);
    wait_for("the resent reports acknowledged", || async {
        let s = agent.status().await.unwrap();
        s.to_upload + s.to_report == 0
    })
    .await;
    assert_eq!(agent.status().await.unwrap().failed_reports, 0);
    // Tax answered the second uploads `duplicate` with the original receipt.
    for n in [&numbers[0], &numbers[13]] {
        let a = env
            .system
            .tax
            .accepted()
            .await
            .unwrap()
            .into_iter()
            .find(|a| &a.number == n)
            .unwrap();
        assert_eq!((a.acceptances, a.duplicates), (1, 1), "{n}");
        let c = json_of(&get(&erp, &format!("/v1/invoices/{n}")).await);
        assert_eq!(c["tax_status"], "accepted");
        let p = env.system.platform.invoice(n).await.unwrap().unwrap();
        assert_eq!(p.tax_status, fapiao_protocol::wire::TaxStatus::Accepted);
    }
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_through_tax_platform_and_cloud_outages() {
    let mut env = start().await;
    let mut all = Vec::new();
    let warm = post_orders(&env, "WARM", 3).await;
    all.extend(issued(&env, &warm).await);
    accepted(&env, &all).await;

    // Tax down: issued and reported (cloud shows them pending), uploads queue up.
    env.system.stop("tax").await;
    let ids = post_orders(&env, "TAXDOWN", 5).await;
    let numbers = issued(&env, &ids).await;
    let agent = env.system.agent.clone().unwrap();
    let s = agent.status().await.unwrap();
    assert_eq!(s.to_upload, 5, "{s:?}");
    for n in &numbers {
        let v = json_of(&get(&env.erp(HZ), &format!("/v1/invoices/{n}")).await);
        assert_eq!(v["tax_status"], "pending");
    }
    env.system.restart("tax").await.unwrap();
    accepted(&env, &numbers).await;
    all.extend(numbers);

    // Platform down: the agent issues from the block and quota in hand; reports queue up.
    env.system.stop("platform").await;
    let ids = post_orders(&env, "PLATDOWN", 5).await;
    let erp = Arc::new(env.erp(HZ));
    for id in &ids {
        let path = format!("/v1/orders/{id}");
        wait_for("handled by the agent while platform is down", || {
            let (erp, path) = (erp.clone(), path.clone());
            async move { json_of(&get(&erp, &path).await)["status"] == "handled" }
        })
        .await;
    }
    assert!(agent.status().await.unwrap().to_report >= 5);
    env.system.restart("platform").await.unwrap();
    let numbers = issued(&env, &ids).await;
    accepted(&env, &numbers).await;
    all.extend(numbers);

    // Cloud down (with tax down first, so the invoices are issued but not yet uploaded):
    // uploads, receipts and reports go on; platform's notices and the acks wait for cloud.
    env.system.stop("tax").await;
    let ids = post_orders(&env, "CLOUDDOWN", 5).await;
    wait_for("issued on the premises", || async {
        agent.status().await.unwrap().to_upload == 5
    })
    .await;
    env.system.stop("cloud").await;
    env.system.restart("tax").await.unwrap();
    wait_for("uploaded and reported while cloud is down", || async {
        let s = agent.status().await.unwrap();
        s.to_upload == 0 && s.to_report == 0
    })
    .await;
    env.system.restart("cloud").await.unwrap();
    let numbers = issued(&env, &ids).await;
    accepted(&env, &numbers).await;
    all.extend(numbers);
    settle(&env).await;
    agree(&env, &all).await;
    let mut distinct = all.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 18);
    env.system.shutdown().await;
}

/// Orders that wait while the agent is stopped are pulled many at a time and issued together
/// in runs: a run goes on from one number block into the next (blocks of 50 here) and refuses
/// the invalid order among them in its own transaction; every invoice is numbered once, in
/// the order the orders came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_orders_are_issued_in_runs_across_number_blocks() {
    let mut env = Env::start().await;
    let erp = env.erp(HZ);
    let mut ids = post_orders(&env, "RUN-A", 30).await;
    let mut bad = order(HZ, "RUN-BAD", "10");
    bad["items"][0]["tax_rate"] = json!("7%");
    assert_eq!(post(&erp, "/v1/invoices", &bad).await.status, 202);
    ids.extend(post_orders(&env, "RUN-B", 40).await);
    env.system.start_agent().await.unwrap();
    let numbers = issued(&env, &ids).await;
    wait_for("the bad order refused", || async {
        json_of(&get(&erp, "/v1/orders/RUN-BAD").await)["status"] == "refused"
    })
    .await;
    assert_eq!(
        json_of(&get(&erp, "/v1/orders/RUN-BAD").await)["error"]["code"],
        "invalid_order"
    );
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "numbered in order: {numbers:?}"
    );
    accepted(&env, &numbers).await;
    agree(&env, &numbers).await;
    let agent = env.system.agent.clone().unwrap();
    let used: Vec<(i64, i64, i64)> =
        fapiao_store::query_as("SELECT first, last, next FROM blocks ORDER BY id")
            .fetch_all(agent.db().pool())
            .await
            .unwrap();
    assert!(
        used.iter().filter(|(first, _, next)| next > first).count() >= 2,
        "70 invoices from blocks of 50: {used:?}"
    );
    let issued_in_blocks: i64 = used.iter().map(|(first, _, next)| next - first).sum();
    assert_eq!(issued_in_blocks, 70, "{used:?}");
    env.system.shutdown().await;
}
