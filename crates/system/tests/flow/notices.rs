//! Status notices from platform to cloud, sent in batches: each notice is answered on its own,
//! and one that reaches cloud before its invoice is kept and applied when the invoice is
//! stored.

use fapiao_protocol::wire::SignedReceipt;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_batch_is_answered_per_notice_and_an_early_notice_waits_for_its_invoice() {
    let mut env = Env::start().await;
    let erp = env.erp(SH);
    // Webhook events are queued (and their delivery retried; nothing listens there).
    assert!(
        env.system
            .cloud
            .set_webhook(SH, Some("https://127.0.0.1:9/hook"))
            .await
            .unwrap()
    );
    let r = post(&erp, "/v1/invoices", &order(SH, "N-1", "10")).await;
    assert_eq!(r.status, 201);
    let first = json_of(&r)["number"].as_str().unwrap().to_owned();
    settle(&env).await;
    // The next order will get the next number of the platform's range.
    let n = fapiao_model::InvoiceNumber::parse(&first).unwrap();
    let next =
        fapiao_model::InvoiceNumber::new(n.year(), n.province(), n.channel(), n.sequence() + 1)
            .unwrap()
            .as_str()
            .to_owned();
    let stored = env.system.platform.invoice(&first).await.unwrap().unwrap();
    let mut forged: SignedReceipt = stored.receipt.clone().unwrap();
    forged.receipt.reason = Some("altered on the way".into());

    let cloud = Sender::to(
        &env,
        &env.system.layout.pki_prefix("platform"),
        "cloud",
        env.system.ports.cloud,
    );
    let notices = json!({ "notices": [
        // For an invoice cloud has not stored yet.
        {"number": next, "enterprise": SH, "tax_status": "failed", "reason": "told early"},
        // A receipt that does not verify: refused, alone.
        {"number": first, "enterprise": SH, "tax_status": "failed", "reason": "forged",
         "receipt": forged},
    ]});
    let r = cloud
        .post(cloud.seal("invoice.status_batch", 1, &notices))
        .await;
    assert_eq!(r.status, 200);
    let (t, v) = cloud.open(&r);
    assert_eq!(t, "notice.results", "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    assert!(results[0].is_null(), "{v}");
    assert_eq!(results[1]["code"], "invalid_request", "{v}");
    assert!(
        results[1]["message"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{v}"
    );
    let r = get(&erp, &format!("/v1/invoices/{first}")).await;
    assert_eq!(
        json_of(&r)["tax_status"],
        "accepted",
        "the forged notice changed nothing"
    );

    // Two notices for one invoice in one batch apply in order, as if each came alone: a
    // status change each (two webhook events), the last one's status stays.
    let db = env.system.cloud.db().clone();
    let events = async |number: &str| -> Vec<String> {
        fapiao_store::query_scalar("SELECT event FROM webhook_events WHERE number = $1 ORDER BY id")
            .bind(number)
            .fetch_all(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(
        events(&first).await,
        ["invoice.issued", "invoice.tax_status_changed"]
    );
    let notices = json!({ "notices": [
        {"number": first, "enterprise": SH, "tax_status": "failed", "reason": "first of two"},
        {"number": first, "enterprise": SH, "tax_status": "accepted"},
    ]});
    let r = cloud
        .post(cloud.seal("invoice.status_batch", 1, &notices))
        .await;
    let (t, v) = cloud.open(&r);
    assert_eq!(
        (t.as_str(), &v["results"]),
        ("notice.results", &json!([null, null])),
        "{v}"
    );
    assert_eq!(
        events(&first).await,
        [
            "invoice.issued",
            "invoice.tax_status_changed",
            "invoice.tax_status_changed",
            "invoice.tax_status_changed"
        ]
    );
    let r = get(&erp, &format!("/v1/invoices/{first}")).await;
    let v = json_of(&r);
    assert_eq!(v["tax_status"], "accepted", "{v}");
    assert!(
        v["receipt"].is_object(),
        "a notice without a receipt keeps the stored one: {v}"
    );

    // With tax away, platform's own notice for the next invoice cannot come: what cloud
    // shows is the early notice, applied as the invoice is stored.
    env.system.stop("tax").await;
    let r = post(&erp, "/v1/invoices", &order(SH, "N-2", "11")).await;
    assert_eq!(r.status, 201);
    assert_eq!(json_of(&r)["number"], next.as_str());
    let r = get(&erp, &format!("/v1/invoices/{next}")).await;
    let v = json_of(&r);
    assert_eq!(
        (v["tax_status"].as_str(), v["tax_reason"].as_str()),
        (Some("failed"), Some("told early")),
        "{v}"
    );
    let left: i64 = fapiao_store::query_scalar("SELECT COUNT(*) FROM early_notices")
        .fetch_one(env.system.cloud.db().pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "applied notices are removed");
    assert_eq!(
        events(&next).await,
        ["invoice.issued", "invoice.tax_status_changed"]
    );

    // Tax back: the real upload and notice settle it.
    env.system.restart("tax").await.unwrap();
    settle(&env).await;
    let r = get(&erp, &format!("/v1/invoices/{next}")).await;
    assert_eq!(json_of(&r)["tax_status"], "accepted");
    env.system.shutdown().await;
}
