//! Planner statistics of young tables ([`Db::refresh_statistics`]): PostgreSQL only, since
//! only PostgreSQL keeps a connection's plans across statements; on SQLite the call does
//! nothing.
#![expect(clippy::unwrap_used, reason = "tests")]

use fapiao_store::testing::TestDb;
use fapiao_store::{Db, Engine, Migration, Sql, query, query_scalar};

/// Invoices as cloud keeps them, in brief: one unique key for idempotency, and another index
/// on `enterprise` (cloud's listing by buyer).
const M: &[Migration] = &[Migration {
    version: 1,
    description: "invoices",
    sql: Sql::portable(
        "CREATE TABLE invoices (
             enterprise TEXT NOT NULL, order_id TEXT NOT NULL, buyer TEXT,
             record TEXT NOT NULL,
             UNIQUE (enterprise, order_id));
         CREATE INDEX invoices_buyer ON invoices (enterprise, buyer);",
    ),
}];

/// The plan `conn` has for `EXECUTE lookup(…)`: its lines.
async fn plan(conn: &mut fapiao_store::Reader) -> String {
    query_scalar::<String>(Sql::postgres_only(
        "EXPLAIN EXECUTE lookup('91310115MA1FP0001X', 'ORDER-2026-12-07-000000000007')",
    ))
    .fetch_all(&mut **conn)
    .await
    .unwrap()
    .join("\n")
}

/// `n` invoices from number `from`, half for each of two enterprises.
async fn insert(db: &Db, from: i64, n: i64) {
    query(Sql::postgres_only(
        "INSERT INTO invoices (enterprise, order_id, buyer, record)
         SELECT CASE WHEN g % 2 = 0 THEN '91310115MA1FP0001X' ELSE '91440300MA5GK00036' END,
             'ORDER-2026-12-07-' || lpad(g::text, 12, '0'), NULL, repeat('x', 3000)
         FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) g",
    ))
    .bind(from)
    .bind(n)
    .execute(db.pool())
    .await
    .unwrap();
}

/// A lookup by the unique key, planned after the table was analyzed small (as autovacuum
/// does at some 50 rows) and kept by its connection (as sqlx keeps its prepared statements),
/// scans the table however large it grows — until it is analyzed again.
/// `refresh_statistics` analyzes the tables that doubled (and only those), after which the
/// lookup is planned on the unique key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_plan_made_on_a_small_table_is_replaced_once_the_table_grew() {
    let Some(test_db) = TestDb::on(Engine::Postgres, "statistics").await else {
        eprintln!("skipped on PostgreSQL (FAPIAO_TEST_POSTGRES is not set)");
        return;
    };
    let db = Db::open(&test_db.url, "r", M).await.unwrap();
    insert(&db, 1, 60).await;
    query(Sql::postgres_only("ANALYZE invoices"))
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.read().await.unwrap();
    for sql in [
        "SET plan_cache_mode = force_generic_plan",
        "PREPARE lookup(text, text) AS
             SELECT record FROM invoices WHERE enterprise = $1 AND order_id = $2",
    ] {
        query(Sql::postgres_only(sql))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let small = plan(&mut conn).await;
    assert!(small.contains("Seq Scan"), "{small}");
    // Not grown enough to be analyzed again.
    assert!(db.refresh_statistics().await.unwrap().is_empty());

    insert(&db, 61, 5000).await;
    assert!(plan(&mut conn).await.contains("Seq Scan"));
    // The cumulative statistics reach the catalog views within a second or so.
    let mut analyzed = Vec::new();
    for _ in 0..50 {
        analyzed = db.refresh_statistics().await.unwrap();
        if !analyzed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(analyzed, ["invoices"]);
    let grown = plan(&mut conn).await;
    assert!(
        grown.contains("invoices_enterprise_order_id_key") && !grown.contains("Filter"),
        "{grown}"
    );
    // Analyzed at its size: not again until it doubles.
    assert!(db.refresh_statistics().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_nothing_to_refresh() {
    let test_db = TestDb::sqlite();
    let db = Db::open(&test_db.url, "r", M).await.unwrap();
    assert!(db.refresh_statistics().await.unwrap().is_empty());
}
