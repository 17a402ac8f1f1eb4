//! Personal data never reaches the logs: the whole test binary logs at debug level as JSON into
//! one buffer; orders full of phones, bank accounts, e-mails and an identity number go through
//! issuing, refusal and download; none of the values appears.

use crate::helpers::*;

const SECRETS: [&str; 6] = [
    "0571-88000004",
    "1202000000000000004",
    "13812341234",
    "wangxm@mail.example",
    "310115199003071239",
    "745800000000003",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_the_logs() {
    let env = Env::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders");
    let special: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("special.json")).unwrap()).unwrap();
    let person: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("natural-person.json")).unwrap())
            .unwrap();
    let r = post(&env.erp(SZ), "/v1/invoices", &special).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    let r = post(&env.erp(SH), "/v1/invoices", &person).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    // Refusals with the same data: invalid, conflict.
    let mut bad = special.clone();
    bad["items"][0]["tax_rate"] = serde_json::json!("7%");
    bad["order_id"] = serde_json::json!("MASK-BAD");
    assert_eq!(post(&env.erp(SZ), "/v1/invoices", &bad).await.status, 422);
    let mut conflict = special.clone();
    conflict["remarks"] = serde_json::json!("changed");
    assert_eq!(
        post(&env.erp(SZ), "/v1/invoices", &conflict).await.status,
        409
    );
    assert_eq!(
        get(&env.erp(SZ), &format!("/v1/invoices/{number}/pdf"))
            .await
            .status,
        200
    );
    settle(&env).await;
    env.system.shutdown().await;

    let logs = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("invoice issued") && logs.contains(&number),
        "the logs were captured"
    );
    for s in SECRETS {
        assert!(!logs.contains(s), "{s} appears in the logs");
    }
}
