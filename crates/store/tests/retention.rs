//! Retention on a real SQLite file and a real PostgreSQL database: expired rows are exported
//! (durably) before they are deleted, younger ones stay, and the audit chain cut at a signed
//! head still verifies while a prefix deleted by hand does not.
#![expect(clippy::unwrap_used, reason = "tests")]

use fapiao_store::audit::{self, Verdict};
use fapiao_store::retention::{Age, Class, Retention, Rule};
use fapiao_store::testing::TestDb;
use fapiao_store::{Db, Engine, Migration, Sql, engines, query, query_text};
use time::{Duration, OffsetDateTime};

const M: &[Migration] = &[Migration {
    version: 1,
    description: "log",
    sql: Sql::dialects(
        "CREATE TABLE upload_log (id INTEGER PRIMARY KEY, number TEXT NOT NULL, at INTEGER NOT NULL, raw BLOB);
          CREATE TABLE invoices (number TEXT PRIMARY KEY, issued_at TEXT NOT NULL);",
        "CREATE TABLE upload_log (id BIGINT PRIMARY KEY, number TEXT NOT NULL, at BIGINT NOT NULL, raw BYTEA);
          CREATE TABLE invoices (number TEXT PRIMARY KEY, issued_at TEXT NOT NULL);",
    ),
}];

engines!(expired_rows_are_exported_then_deleted_and_the_audit_cut_verifies);

const RULES: &[Rule] = &[
    Rule {
        class: Class::Logs,
        table: "upload_log",
        key: "id",
        column: "at",
        age: Age::Unix,
        filter: "",
    },
    Rule {
        class: Class::Invoices,
        table: "invoices",
        key: "number",
        column: "issued_at",
        age: Age::ChinaText,
        filter: "",
    },
];

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
}

async fn count(db: &Db, table: &str) -> i64 {
    query_text(format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn expired_rows_are_exported_then_deleted_and_the_audit_cut_verifies(engine: Engine) {
    let t = TestDb::on(engine, "retention").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&t.url, "r", M).await.unwrap();
    // 200 days old, 10 days old; invoices 11 years and 1 year old.
    for (i, age) in [(1, 200), (2, 200), (3, 10)] {
        query("INSERT INTO upload_log (id, number, at, raw) VALUES ($1, $2, $3, $4)")
            .bind(i64::from(i))
            .bind(format!("N{i}"))
            .bind((now() - Duration::days(age)).unix_timestamp())
            .bind(vec![0_u8, 0xff])
            .execute(db.pool())
            .await
            .unwrap();
    }
    for (n, at) in [
        ("OLD", "2015-01-01 10:00:00"),
        ("NEW", "2026-01-01 10:00:00"),
    ] {
        query("INSERT INTO invoices (number, issued_at) VALUES ($1, $2)")
            .bind(n)
            .bind(at)
            .execute(db.pool())
            .await
            .unwrap();
    }
    // An audit chain: 3 records 11 years ago with a head on the 2nd, then 2 recent ones and
    // a head on the 5th (made-up signatures: `verify` checks structure here).
    let sign = async |db: &Db| {
        audit::sign_head(db, now(), b"cert", |b| Some(b.to_vec()))
            .await
            .unwrap()
            .unwrap()
    };
    for (i, age) in [(1, 4100), (2, 4100), (3, 4100), (4, 1), (5, 1)] {
        let mut tx = db.begin_write().await.unwrap();
        audit::append(
            &mut tx,
            now() - Duration::days(age),
            "system",
            "invoice.issued",
            &format!("N{i}"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        if i == 2 || i == 5 {
            sign(&db).await;
        }
    }

    let export = dir.path().join("export");
    let pruned = Retention::default()
        .apply(&db, "tax", RULES, now(), &export)
        .await
        .unwrap();
    let rows: Vec<(String, u64)> = pruned.iter().map(|p| (p.table.clone(), p.rows)).collect();
    assert_eq!(
        rows,
        vec![
            ("upload_log".into(), 2),
            ("invoices".into(), 1),
            ("audit_log".into(), 2)
        ]
    );
    assert_eq!(count(&db, "upload_log").await, 1);
    assert_eq!(count(&db, "invoices").await, 1);
    let log = std::fs::read_to_string(export.join("tax.upload_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["number"], "N1");
    assert_eq!(lines[0]["raw"], "00FF");
    assert_eq!(lines[1]["id"], 2);
    let inv = std::fs::read_to_string(export.join("tax.invoices.jsonl")).unwrap();
    assert!(inv.contains("\"OLD\"") && !inv.contains("\"NEW\""), "{inv}");
    let aud = std::fs::read_to_string(export.join("tax.audit_log.jsonl")).unwrap();
    assert_eq!(aud.lines().count(), 2);
    // Records 3.. remain plus the cut's own record; the chain verifies, the head at 5
    // naming the cut head the cut's record names, and the next head chains on.
    let checks = audit::Checks::default();
    match audit::verify(&db, &checks).await.unwrap() {
        Verdict::Intact { records, heads, .. } => assert_eq!((records, heads), (4, 1)),
        v => panic!("{v:?}"),
    }
    assert_eq!(sign(&db).await.seq, 6);
    match audit::verify(&db, &checks).await.unwrap() {
        Verdict::Intact { records, heads, .. } => assert_eq!((records, heads), (4, 2)),
        v => panic!("{v:?}"),
    }
    // Running again finds nothing more and changes nothing.
    let again = Retention::default()
        .apply(&db, "tax", RULES, now(), &export)
        .await
        .unwrap();
    assert!(again.iter().all(|p| p.rows == 0), "{again:?}");
    // Deleting the next record by hand is not a retention cut.
    query("DELETE FROM audit_log WHERE seq = 3")
        .execute(db.pool())
        .await
        .unwrap();
    match audit::verify(&db, &checks).await.unwrap() {
        Verdict::Broken { reason, .. } => assert!(reason.contains("no retention cut"), "{reason}"),
        v => panic!("{v:?}"),
    }
}
