//! Single orders sent together share write transactions at platform and cloud (group
//! commit), and each is still answered exactly as if it came alone: its own number, its own
//! refusal, the same invoice for the same order, a conflict for another body under its
//! order_id — across two enterprises whose first orders each need a number range.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_orders_sent_together_are_each_answered_as_alone() {
    let env = Env::start().await;
    // (enterprise, body) of every request, all sent at once.
    let mut requests: Vec<(&str, Value)> = Vec::new();
    for i in 0..30 {
        for ent in [SH, SZ] {
            let id = format!("G-{}-{i:02}", &ent[..4]);
            requests.push((ent, order(ent, &id, &format!("{}.25", 10 + i))));
        }
    }
    // One order three times.
    let same = order(SH, "G-SAME", "66.00");
    for _ in 0..3 {
        requests.push((SH, same.clone()));
    }
    // One order_id, two bodies: one is issued, the other is a conflict.
    requests.push((SZ, order(SZ, "G-TWICE", "10.00")));
    requests.push((SZ, order(SZ, "G-TWICE", "20.00")));
    // Invalid orders: refused, nothing issued.
    for (k, ent) in [SH, SZ].into_iter().enumerate() {
        let mut bad = order(ent, &format!("G-BAD-{k}"), "10.00");
        bad["items"][0]["tax_rate"] = json!("7%");
        requests.push((ent, bad));
    }
    let before = snapshot(&env.system).await;

    let mut tasks = Vec::new();
    for (ent, body) in requests {
        let erp = env.erp(ent);
        tasks.push(tokio::spawn(async move {
            let r = post(&erp, "/v1/invoices", &body).await;
            (body, r)
        }));
    }
    let mut numbers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut same_numbers, mut twice) = (BTreeSet::new(), Vec::new());
    for t in tasks {
        let (body, r) = t.await.unwrap();
        let v = json_of(&r);
        let id = body["order_id"].as_str().unwrap().to_owned();
        match id.as_str() {
            "G-BAD-0" | "G-BAD-1" => {
                assert_eq!(
                    (r.status, v["code"].as_str()),
                    (422, Some("invalid_order")),
                    "{v}"
                );
                continue;
            }
            "G-TWICE" => {
                twice.push((r.status, v["code"].clone()));
                if r.status != 201 {
                    continue;
                }
            }
            "G-SAME" => {
                assert!(matches!(r.status, 200 | 201), "{v}");
                same_numbers.insert(v["number"].as_str().unwrap().to_owned());
            }
            _ => assert_eq!(r.status, 201, "{id}: {v}"),
        }
        // The answer is this order's invoice.
        assert_eq!(v["order_id"].as_str(), Some(id.as_str()), "{v}");
        let record = &v["invoice"];
        assert_eq!(record["order_id"].as_str(), Some(id.as_str()), "{v}");
        assert_eq!(
            record["seller"]["taxpayer_id"],
            body["seller"]["taxpayer_id"]
        );
        // The record writes a price without trailing zeros.
        let price = body["items"][0]["unit_price"].as_str().unwrap();
        let price = price.trim_end_matches('0').trim_end_matches('.');
        assert_eq!(
            record["lines"][0]["unit_price"].as_str(),
            Some(price),
            "{v}"
        );
        numbers
            .entry(id)
            .or_default()
            .insert(v["number"].as_str().unwrap().to_owned());
    }
    twice.sort_by_key(|(status, _)| *status);
    assert_eq!(
        twice,
        [(201, Value::Null), (409, json!("order_conflict"))],
        "one body issued, the other refused"
    );
    assert_eq!(same_numbers.len(), 1, "the same order, one invoice");
    assert!(numbers.values().all(|n| n.len() == 1));
    let all: BTreeSet<&String> = numbers.values().flatten().collect();
    assert_eq!(
        all.len(),
        62,
        "60 orders, the same order once, one of the twice"
    );

    // Exactly those invoices and orders were written; everything reaches tax.
    settle(&env).await;
    let after = snapshot(&env.system).await;
    assert_eq!(
        after.platform[0] - before.platform[0],
        62,
        "platform invoices"
    );
    assert_eq!(
        after.platform[1] - before.platform[1],
        62,
        "platform orders"
    );
    assert_eq!(after.cloud_invoices - before.cloud_invoices, 62);
    assert_eq!(after.tax_invoices - before.tax_invoices, 62);
}

/// An enterprise-hosted tenant's single orders sent together are queued for its agent in
/// shared transactions, each answered as if alone: queued once per order, the same order
/// again answered with the same status, another body under an order_id a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_orders_sent_together_are_each_answered_as_alone() {
    let env = Env::start().await;
    let mut requests: Vec<Value> = (0..20)
        .map(|i| order(HZ, &format!("GQ-{i:02}"), &format!("{}.00", 10 + i)))
        .collect();
    for _ in 0..3 {
        requests.push(order(HZ, "GQ-SAME", "66.00"));
    }
    requests.push(order(HZ, "GQ-TWICE", "10.00"));
    requests.push(order(HZ, "GQ-TWICE", "20.00"));
    let mut tasks = Vec::new();
    for body in requests {
        let erp = env.erp(HZ);
        tasks.push(tokio::spawn(async move {
            let r = post(&erp, "/v1/invoices", &body).await;
            (body, r)
        }));
    }
    let mut twice = Vec::new();
    for t in tasks {
        let (body, r) = t.await.unwrap();
        let v = json_of(&r);
        let id = body["order_id"].as_str().unwrap();
        if id == "GQ-TWICE" {
            twice.push(r.status);
            if r.status != 202 {
                assert_eq!(v["code"], "order_conflict", "{v}");
                continue;
            }
        }
        assert_eq!(r.status, 202, "{id}: {v}");
        assert_eq!(
            (v["order_id"].as_str(), v["status"].as_str()),
            (Some(id), Some("queued")),
            "{v}"
        );
    }
    twice.sort_unstable();
    assert_eq!(twice, [202, 409]);
    let cloud = env.system.cloud.db().pool();
    let queued: Vec<(String, String)> =
        fapiao_store::query_as("SELECT order_id, state FROM queued_orders ORDER BY order_id")
            .fetch_all(cloud)
            .await
            .unwrap();
    assert_eq!(queued.len(), 22, "{queued:?}");
    assert!(queued.iter().all(|(_, state)| state == "queued"));
    let audited: i64 =
        fapiao_store::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'order.queued'")
            .fetch_one(cloud)
            .await
            .unwrap();
    assert_eq!(audited, 22, "one audit record per order queued");
    env.system.shutdown().await;
}
