//! The store on a real SQLite file.

use fapiao_store::{Db, Migration, StoreError};
use time::{Duration, OffsetDateTime};

const M: &[Migration] = &[
    Migration {
        version: 1,
        description: "t",
        sql: "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    },
    Migration {
        version: 2,
        description: "u",
        sql: "ALTER TABLE t ADD COLUMN w TEXT;",
    },
];

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("db.sqlite").display())
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&url(&dir), "r", M).await.unwrap();
    sqlx::query("INSERT INTO t (k, v, w) VALUES ('a', 1, 'x')")
        .execute(db.pool())
        .await
        .unwrap();
    drop(db);
    let db = Db::open(&url(&dir), "r", M).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let err = Db::open(&url(&dir), "r", &M[..1]).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooNew {
                found: 2,
                known: 1,
                ..
            }
        ),
        "{err}"
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(Db::open(&url(&dir), "r", M).await.unwrap().pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn replay_guard_survives_reopening_and_forgets_expired_ids() {
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let db = Db::open(&url(&dir), "r", M).await.unwrap();
    assert!(
        db.remember_message("cloud:a", "m1", now + Duration::minutes(10), now)
            .await
            .unwrap()
    );
    assert!(
        !db.remember_message("cloud:a", "m1", now + Duration::minutes(10), now)
            .await
            .unwrap()
    );
    assert!(
        db.remember_message("cloud:b", "m1", now + Duration::minutes(10), now)
            .await
            .unwrap()
    );
    drop(db);
    let db = Db::open(&url(&dir), "r", M).await.unwrap();
    assert!(
        !db.remember_message("cloud:a", "m1", now + Duration::minutes(10), now)
            .await
            .unwrap()
    );
    let later = now + Duration::minutes(11);
    assert!(
        db.remember_message("cloud:a", "m1", later + Duration::minutes(10), later)
            .await
            .unwrap()
    );
    assert_eq!(fapiao_store::prune_messages(&db, later).await.unwrap(), 1);
}

#[tokio::test]
async fn write_transactions_serialize_check_then_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&url(&dir), "r", M).await.unwrap();
    sqlx::query("INSERT INTO t (k, v) VALUES ('quota', 0)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_write().await.unwrap();
            let v: i64 = sqlx::query_scalar("SELECT v FROM t WHERE k = 'quota'")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tokio::task::yield_now().await;
            if v < 5 {
                sqlx::query("UPDATE t SET v = $1 WHERE k = 'quota'")
                    .bind(v + 1)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                true
            } else {
                false
            }
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    assert_eq!(granted, 5);
}
