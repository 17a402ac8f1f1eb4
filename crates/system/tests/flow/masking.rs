//! Personal data never reaches the logs: the whole test binary logs at debug level as JSON into
//! one buffer; orders full of phones, bank accounts, e-mails and an identity number go through
//! issuing, refusal and download; none of the values appears — nor in the error messages,
//! nor in the listing (masked there), nor anywhere in the three roles' database files (sealed
//! at rest), where the ERP API secrets are not readable either.

use crate::helpers::*;

const SECRETS: [&str; 7] = [
    "文三路199号",
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
    // Invalid personal data is named by its field, never echoed.
    let mut bad_person = person.clone();
    bad_person["order_id"] = serde_json::json!("MASK-BAD-PERSON");
    bad_person["buyer"]["id_number"] = serde_json::json!("310115199003071238");
    bad_person["buyer"]["email"] = serde_json::json!("wangxm-at-mail.example");
    let r = post(&env.erp(SH), "/v1/invoices", &bad_person).await;
    assert_eq!(r.status, 422);
    let body = json_of(&r).to_string();
    assert!(
        body.contains("buyer.id_number") && body.contains("buyer.email"),
        "{body}"
    );
    for s in ["310115199003071238", "wangxm-at-mail.example"] {
        assert!(!body.contains(s), "{s} echoed in {body}");
    }
    // The listing masks the natural person; the full identity number still finds them.
    let page = json_of(&get(&env.erp(SH), "/v1/invoices?buyer=310115199003071239").await);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["buyer_name"], "王**");
    assert_eq!(items[0]["buyer_id"], "310115********1239");
    assert!(!page.to_string().contains("王小明"));
    let page = json_of(&get(&env.erp(SZ), "/v1/invoices").await);
    assert_eq!(page["items"][0]["buyer_id"], "91330106MA2CD0004F", "{page}");
    settle(&env).await;
    let secrets: Vec<String> = env
        .system
        .layout
        .credentials()
        .unwrap()
        .into_values()
        .map(|c| c.secret)
        .collect();
    let dir = env.system.layout.dir().to_owned();
    let urls: Vec<String> = ["tax", "platform", "cloud"]
        .iter()
        .map(|r| {
            fapiao_system::RoleConfig::load(&env.system.layout.config_path(r))
                .unwrap()
                .database
        })
        .collect();
    env.system.shutdown().await;

    // What the databases hold, as stored: SQLite's files (with their WAL), or on PostgreSQL
    // every row of every table as text.
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    if engine() == fapiao_store::Engine::Sqlite {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // A -wal or -shm file may go away as the last connection closes.
            if path.to_string_lossy().contains(".sqlite")
                && let Ok(bytes) = std::fs::read(&path)
            {
                stored.push((path.display().to_string(), bytes));
            }
        }
    } else {
        for url in &urls {
            let db = fapiao_store::Db::open_existing(url).await.unwrap();
            let tables: Vec<String> = fapiao_store::query_scalar(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = current_schema()",
            )
            .fetch_all(db.pool())
            .await
            .unwrap();
            let mut bytes = Vec::new();
            for t in tables {
                let rows: Vec<String> =
                    fapiao_store::query_text(format!("SELECT t::text FROM {t} t"))
                        .fetch_all(db.pool())
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.try_get(0).unwrap())
                        .collect();
                bytes.extend(rows.join("\n").into_bytes());
            }
            stored.push((url.clone(), bytes));
        }
    }
    let mut files = 0;
    let mut control = false;
    for (path, bytes) in &stored {
        files += 1;
        control |= bytes.windows(number.len()).any(|w| w == number.as_bytes());
        for s in SECRETS
            .iter()
            .copied()
            .chain(["王小明"])
            .chain(secrets.iter().map(String::as_str))
        {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} readable in {path}"
            );
        }
    }
    assert!(files >= 3, "the three databases were read");
    assert!(control, "what is stored in the clear (the number) is found");

    let logs = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("invoice issued") && logs.contains(&number),
        "the logs were captured"
    );
    for s in SECRETS {
        assert!(!logs.contains(s), "{s} appears in the logs");
    }
}
