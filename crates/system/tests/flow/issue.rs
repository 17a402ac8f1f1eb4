use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_blue_invoice_is_issued_accepted_and_readable() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    let r = post(&erp, "/v1/invoices", &order(SH, "A-1", "500")).await;
    let v = json_of(&r);
    assert_eq!(r.status, 201, "{v}");
    let number = v["number"].as_str().unwrap().to_owned();
    assert_eq!(v["tax_status"], "pending");
    assert_eq!(v["total"], "1166.00");
    // The answer is the invoice as stored (built from what was written, not read back): a
    // read of it gives the same, but for the tax status, which may have moved on since.
    let mut stored = json_of(&get(&erp, &format!("/v1/invoices/{number}")).await);
    let mut answered = v.clone();
    for x in [&mut stored, &mut answered] {
        let o = x.as_object_mut().unwrap();
        for k in ["tax_status", "tax_reason", "receipt"] {
            o.remove(k);
        }
    }
    assert_eq!(answered, stored);
    assert!(answered["signature"]["value"].is_string(), "{answered}");
    // One request id follows the order across roles: it is in both roles' audit records.
    let rid = r.headers["x-request-id"].to_str().unwrap().to_owned();
    for (role, db, action) in [
        ("cloud", env.system.cloud.db(), "invoice.stored"),
        ("platform", env.system.platform.db(), "invoice.issued"),
    ] {
        let detail: String = fapiao_store::query_scalar(
            "SELECT detail FROM audit_log WHERE action = $1 AND subject = $2",
        )
        .bind(action)
        .bind(&number)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(detail.contains(&rid), "{role}: {detail} lacks {rid}");
    }
    wait_for("tax acceptance at cloud", || {
        let erp = &erp;
        let number = number.clone();
        async move {
            json_of(&get(erp, &format!("/v1/invoices/{number}")).await)["tax_status"] == "accepted"
        }
    })
    .await;
    env.system.shutdown().await;
}
