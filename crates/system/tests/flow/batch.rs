//! `POST /v1/invoices/batch`: many orders in one signed request, each issued exactly as if it
//! came alone (own number, device signature, idempotency, refusal, upload to tax).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

fn results(v: &Value) -> &Vec<Value> {
    v["results"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_issues_every_order_as_if_it_came_alone() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    // The very first orders of a fresh system: the platform has no number range yet, so the
    // batch asks tax for one part-way and goes on.
    let mut orders: Vec<Value> = (1..=20)
        .map(|i| order(SH, &format!("B-{i}"), &format!("{}.50", 10 * i)))
        .collect();
    let mut invalid = order(SH, "B-BAD", "10");
    invalid["items"][0]["tax_rate"] = json!("7%");
    orders.push(invalid);
    let mut anonymous = order(SH, "B-X", "10");
    anonymous.as_object_mut().unwrap().remove("order_id");
    orders.push(anonymous);
    orders.push(order(SH, "B-1", "10.50")); // the same order twice in one batch
    let mut other_seller = order(SZ, "B-SZ", "10");
    other_seller["order_id"] = json!("B-SZ");
    orders.push(other_seller);
    let batch = json!({ "orders": orders });

    let r = post(&erp, "/v1/invoices/batch", &batch).await;
    let v = json_of(&r);
    assert_eq!(r.status, 200, "{v}");
    let res = results(&v);
    assert_eq!(res.len(), 24);
    let mut numbers = BTreeSet::new();
    for (i, x) in res.iter().take(20).enumerate() {
        assert_eq!(
            (x["status"].as_u64(), x["order_id"].as_str()),
            (Some(201), Some(format!("B-{}", i + 1).as_str())),
            "{x}"
        );
        assert_eq!(x["invoice"]["tax_status"], "pending");
        assert_eq!(x["invoice"]["order_id"], x["order_id"]);
        numbers.insert(x["invoice"]["number"].as_str().unwrap().to_owned());
    }
    assert_eq!(numbers.len(), 20, "20 distinct numbers");
    assert_eq!(res[20]["status"], 422, "{}", res[20]);
    assert_eq!(res[20]["error"]["code"], "invalid_order");
    assert!(
        res[20]["error"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "items[0].tax_rate"),
        "{}",
        res[20]
    );
    assert_eq!(
        (
            res[21]["status"].as_u64(),
            res[21]["error"]["findings"][0]["path"].as_str()
        ),
        (Some(422), Some("orders[21].order_id")),
        "{}",
        res[21]
    );
    assert_eq!(res[22]["invoice"]["number"], res[0]["invoice"]["number"]);
    assert_eq!(res[23]["status"], 422, "another seller: {}", res[23]);

    // Each is stored, signed and readable as if issued alone.
    for x in res.iter().take(20) {
        let n = x["invoice"]["number"].as_str().unwrap();
        let one = json_of(&get(&erp, &format!("/v1/invoices/{n}")).await);
        // The outbox may already have brought tax's acceptance (status and receipt): the
        // only fields that move after the answer.
        let settled = |v: &Value| {
            let mut v = v.clone();
            let o = v.as_object_mut().unwrap();
            let status = o.remove("tax_status").unwrap();
            o.remove("receipt");
            (v, status)
        };
        let ((one_now, status), (answered, _)) = (settled(&one), settled(&x["invoice"]));
        assert_eq!(one_now, answered, "{n}");
        assert!(status == "pending" || status == "accepted", "{n}: {status}");
        let signed = serde_json::from_value::<fapiao_protocol::wire::WireInvoice>(
            serde_json::json!({"invoice": one["invoice"], "signature": one["signature"]}),
        )
        .unwrap()
        .to_signed()
        .unwrap();
        fapiao_issuer::verify(&signed, &env.trust(), crate::now()).unwrap();
    }
    let s = snapshot(&env.system).await;
    assert_eq!((s.platform[0], s.cloud_invoices), (20, 20));

    // The whole batch again: nothing new, the same invoices (200: issued before).
    let r = post(&erp, "/v1/invoices/batch", &batch).await;
    let again = json_of(&r);
    for (a, b) in results(&again).iter().zip(res).take(20) {
        assert_eq!(a["status"], 200, "{a}");
        assert_eq!(a["invoice"]["number"], b["invoice"]["number"]);
    }
    // One of them alone, its keys in another order: the same request, the same invoice.
    let mut alone = serde_json::Map::new();
    for (k, val) in order(SH, "B-5", "50.50").as_object().unwrap().iter().rev() {
        alone.insert(k.clone(), val.clone());
    }
    let r = env
        .erp(SH)
        .send(
            http::Method::POST,
            "/v1/invoices",
            serde_json::to_string_pretty(&Value::Object(alone))
                .unwrap()
                .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, &json_of(&r)["number"]),
        (200, &res[4]["invoice"]["number"])
    );
    // The same order_id with another body is a conflict, inside a batch as alone.
    let r = post(
        &erp,
        "/v1/invoices/batch",
        &json!({"orders": [order(SH, "B-2", "99")]}),
    )
    .await;
    assert_eq!(
        (r.status, &results(&json_of(&r))[0]["error"]["code"]),
        (200, &json!("order_conflict"))
    );

    // Every invoice reaches tax once, and the quota counts each once.
    settle(&env).await;
    let s = snapshot(&env.system).await;
    assert_eq!(
        (s.platform[0], s.cloud_invoices, s.tax_invoices),
        (20, 20, 20)
    );
    let sum: fapiao_model::Amount = res
        .iter()
        .take(20)
        .map(|x| fapiao_model::Amount::parse(x["invoice"]["total"].as_str().unwrap()).unwrap())
        .sum();
    let used: Vec<&(String, String, String)> = s.quota.iter().filter(|(e, _, _)| e == SH).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(fapiao_model::Amount::parse(&used[0].2).unwrap(), sum);

    // The outbox carried them in batches: the 20 uploads, committed together, go to tax in
    // one or two exchanges (two if a round was under way when they were committed), and so
    // do their status notices to cloud.
    let admin = operator(&env, env.system.ports.platform_admin);
    let r = admin
        .request(http::Method::GET, "/metrics", &[], Vec::new())
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{metrics}"))
    };
    assert_eq!(value("fapiao_tax_uploads_total{outcome=\"done\"}"), 20);
    let uploads = value("fapiao_outbox_exchanges_total{kind=\"upload\"}");
    let notices = value("fapiao_outbox_exchanges_total{kind=\"notify\"}");
    assert!((1..=2).contains(&uploads), "{uploads} upload exchanges");
    assert!((1..=2).contains(&notices), "{notices} notice exchanges");
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_limits_and_the_enterprise_hosted_queue() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    for (body, needle) in [
        (json!({"orders": []}), "orders: a batch holds 1 to 100"),
        (
            json!({"orders": (0..101).map(|i| order(SH, &format!("L-{i}"), "1")).collect::<Vec<_>>()}),
            "not 101",
        ),
        (json!([order(SH, "L-0", "1")]), "body: not a batch"),
        (json!({"orders": [], "extra": 1}), "body: not a batch"),
    ] {
        let r = post(&erp, "/v1/invoices/batch", &body).await;
        let v = json_of(&r);
        assert_eq!(
            (r.status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    assert_eq!(snapshot(&env.system).await.platform[0], 0);

    // An enterprise-hosted tenant's batch queues each order for its agent.
    let hz = env.erp(HZ);
    let r = post(
        &hz,
        "/v1/invoices/batch",
        &json!({"orders": [order(HZ, "Q-1", "10"), order(HZ, "Q-2", "20")]}),
    )
    .await;
    let v = json_of(&r);
    assert_eq!(r.status, 200, "{v}");
    for (x, id) in results(&v).iter().zip(["Q-1", "Q-2"]) {
        assert_eq!(
            (x["status"].as_u64(), x["order"]["status"].as_str()),
            (Some(202), Some("queued")),
            "{x}"
        );
        assert_eq!(x["order_id"], id);
        let st = json_of(&get(&hz, &format!("/v1/orders/{id}")).await);
        assert_eq!(st["status"], "queued", "{st}");
    }
    env.system.shutdown().await;
}

/// A batch counts the month's quota order by order (a refused order takes none, a later
/// smaller one may still fit) and goes from one number block to the next mid-batch; what it
/// wrote is where the next order finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_counts_quota_order_by_order_and_crosses_number_blocks() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    let r = post(&erp, "/v1/invoices", &order(SH, "Q-0", "10")).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    // 127.20 per order ("10": 2 × 10 + 100 at 6 %), 107.06 for "0.50"; room for 60 more
    // 127.20 orders and then 110.00.
    admin_patch(&env, SH, json!({"monthly_quota": "7869.20"})).await;
    let mut orders: Vec<Value> = (1..=60)
        .map(|i| order(SH, &format!("Q-{i}"), "10"))
        .collect();
    orders.push(order(SH, "Q-61", "10"));
    orders.push(order(SH, "Q-62", "0.50"));
    orders.push(order(SH, "Q-63", "10"));
    let r = post(&erp, "/v1/invoices/batch", &json!({ "orders": orders })).await;
    let v = json_of(&r);
    assert_eq!(r.status, 200, "{v}");
    let res = results(&v);
    let codes: Vec<(u64, &str)> = res
        .iter()
        .map(|x| {
            (
                x["status"].as_u64().unwrap(),
                x["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut expected = vec![(201, ""); 60];
    expected.extend([(422, "over_quota"), (201, ""), (422, "over_quota")]);
    assert_eq!(codes, expected);
    let mut numbers: Vec<String> = res
        .iter()
        .filter_map(|x| x["invoice"]["number"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(numbers.len(), 61);
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), 61, "61 distinct numbers");

    // The next order takes the number after the batch's last, from the second block.
    admin_patch(&env, SH, json!({"monthly_quota": "100000.00"})).await;
    let r = post(&erp, "/v1/invoices", &order(SH, "Q-64", "10")).await;
    let after = json_of(&r)["number"].as_str().unwrap().to_owned();
    assert_eq!(r.status, 201);
    assert!(
        numbers.iter().all(|n| *n < after),
        "{after} after {numbers:?}"
    );
    let p = env.system.platform.db().pool();
    let blocks: Vec<(i64, i64, i64)> =
        fapiao_store::query_as("SELECT first, last, next FROM blocks ORDER BY id")
            .fetch_all(p)
            .await
            .unwrap();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(
        blocks[0].2,
        blocks[0].1 + 1,
        "the first block spent: {blocks:?}"
    );
    let taken: i64 = blocks.iter().map(|(first, _, next)| next - first).sum();
    assert_eq!(taken, 63, "Q-0, 61 of the batch and Q-64: {blocks:?}");
    let s = snapshot(&env.system).await;
    assert_eq!(s.platform[..3], [63, 63, 0]);
    let used = s.quota.iter().find(|(e, _, _)| e == SH).unwrap();
    assert_eq!(
        used.2, "7993.46",
        "Q-0, 60 of the batch and Q-64 at 127.20, Q-62 at 107.06"
    );
    settle(&env).await;
    assert_eq!(snapshot(&env.system).await.tax_invoices, 63);
    env.system.shutdown().await;
}
