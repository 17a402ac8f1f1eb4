//! The store on a real SQLite file and a real PostgreSQL database: each test runs once per
//! engine (`name::sqlite`, `name::postgres`, see `fapiao_store::engines!`) unless its doc
//! says why it is for one engine only.
#![expect(clippy::unwrap_used, reason = "tests")]

use fapiao_store::testing::TestDb;
use fapiao_store::{
    Arrival, ArrivalState, Db, Engine, Group, Joined, Migration, Sql, StoreError, Waiting, engines,
    query, query_as, query_scalar, query_text,
};
use time::{Duration, OffsetDateTime};

pub(crate) const M: &[Migration] = &[
    Migration {
        version: 1,
        description: "t",
        sql: Sql::portable("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL);"),
    },
    Migration {
        version: 2,
        description: "u",
        sql: Sql::portable("ALTER TABLE t ADD COLUMN w TEXT;"),
    },
];

/// A fresh database of `engine` for the calling test.
pub(crate) async fn fresh(engine: Engine) -> TestDb {
    TestDb::on(engine, "store").await.unwrap()
}

engines!(
    migrations_apply_once_and_refuse_a_newer_schema,
    replay_guard_survives_reopening_and_forgets_expired_ids,
    an_expired_id_is_fresh_again_between_prunings,
    an_arrival_is_remembered_by_the_transaction_that_acts_on_it,
    check_then_write_under_a_lock_is_atomic_across_handles,
    concurrent_replay_checks_share_commits_and_answer_each_call,
    a_transaction_remembers_many_arrivals_at_once,
    concurrent_jobs_share_group_transactions,
    a_job_alone_is_a_group_of_one,
    a_rolled_back_write_transaction_leaves_nothing,
    readers_take_turns_and_see_every_commit,
    one_message_id_at_two_handles_at_once_goes_on_once,
    the_write_check_commits_a_write,
);

/// The readiness write check commits a one-row write, once per process however often asked.
async fn the_write_check_commits_a_write(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    db.write_check("host/1/a", 100).await.unwrap();
    db.write_check("host/1/a", 200).await.unwrap();
    db.write_check("host/2/b", 90_000).await.unwrap();
    // A process gone for a day is forgotten.
    let rows: Vec<(String, i64)> =
        query_as("SELECT instance, at FROM write_probe ORDER BY instance")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(rows, vec![("host/2/b".to_owned(), 90_000)]);
}

/// A SQLite file whose permissions turned read-only is not writable for the write check,
/// even for root (whom the bits do not stop, and whose writes would land in the WAL until a
/// checkpoint failed); writable again, it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_read_only_database_file_fails_the_write_check() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = TestDb::sqlite();
    let db = Db::open(&t.url, "r", M).await.unwrap();
    db.write_check("i", 1).await.unwrap();
    let path = db.path().unwrap().clone();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let e = db.write_check("i", 2).await.unwrap_err();
    assert!(e.contains("is read-only"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    db.write_check("i", 3).await.unwrap();
}

async fn migrations_apply_once_and_refuse_a_newer_schema(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    query("INSERT INTO t (k, v, w) VALUES ('a', 1, 'x')")
        .execute(db.pool())
        .await
        .unwrap();
    drop(db);
    let db = Db::open(&t.url, "r", M).await.unwrap();
    assert_eq!(fapiao_store::schema_version(&db, "r").await.unwrap(), 2);
    let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let err = Db::open(&t.url, "r", &M[..1]).await.unwrap_err();
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
    if engine == Engine::Sqlite {
        let mode: String = query_scalar("PRAGMA journal_mode")
            .fetch_one(Db::open(&t.url, "r", M).await.unwrap().pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

async fn replay_guard_survives_reopening_and_forgets_expired_ids(engine: Engine) {
    let t = fresh(engine).await;
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let db = Db::open(&t.url, "r", M).await.unwrap();
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
    let db = Db::open(&t.url, "r", M).await.unwrap();
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
    // That write also pruned every entry expired by then (cloud:b's m1 with cloud:a's).
    let left: Vec<(String, String)> = query_as("SELECT sender, message_id FROM seen_messages")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, [("cloud:a".to_owned(), "m1".to_owned())]);
    let much_later = later + Duration::minutes(11);
    assert_eq!(
        fapiao_store::prune_messages(&db, much_later).await.unwrap(),
        1
    );
}

/// An id whose entry expired is fresh again even before the next pruning (which comes at most
/// once a minute): its row is taken over, and then guards the id again.
async fn an_expired_id_is_fresh_again_between_prunings(engine: Engine) {
    let t = fresh(engine).await;
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let remember = |at: OffsetDateTime, ttl: i64| {
        let db = db.clone();
        async move {
            db.remember_message("cloud:a", "m1", at + Duration::seconds(ttl), at)
                .await
                .unwrap()
        }
    };
    assert!(remember(now, 20).await);
    assert!(!remember(now + Duration::seconds(10), 20).await);
    // Expired 20 s after `now`; the last pruning was at `now`.
    let later = now + Duration::seconds(30);
    assert!(remember(later, 20).await);
    assert!(!remember(later, 20).await);
    assert!(!remember(later + Duration::seconds(15), 20).await);
    let rows: Vec<i64> = query_scalar("SELECT expires_at FROM seen_messages")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, [(later + Duration::seconds(20)).unix_timestamp()]);
}

/// An arrival remembered by the write transaction that acts on it: durable with that
/// transaction's commit, refused under the write lock when it comes again, pending again when
/// its transaction is rolled back or dropped, and then remembered on its own. On SQLite, on a
/// file database (the writer connection) and in memory (a pool connection).
async fn an_arrival_is_remembered_by_the_transaction_that_acts_on_it(engine: Engine) {
    let t = fresh(engine).await;
    let mut dbs = vec![Db::open(&t.url, "r", M).await.unwrap()];
    if engine == Engine::Sqlite {
        dbs.push(Db::open("sqlite::memory:", "r", M).await.unwrap());
    }
    for db in dbs {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let arrival = |id: &str, at: OffsetDateTime| {
            Arrival::new("cloud:a", id, at + Duration::minutes(10), at)
        };
        let seen = |id: &'static str| {
            let db = db.clone();
            async move {
                query_scalar::<i64>(
                    "SELECT COUNT(*) FROM seen_messages WHERE sender = 'cloud:a' AND message_id = $1",
                )
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap()
            }
        };

        // First arrival: held while the transaction is open, remembered with its commit,
        // together with what it wrote.
        let first = arrival("m1", now);
        let mut tx = db.begin_write_for(&first).await.unwrap();
        assert_eq!(first.state(), ArrivalState::Held);
        query("INSERT INTO t (k, v) VALUES ('m1', 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(first.state(), ArrivalState::Remembered);
        assert_eq!(seen("m1").await, 1);
        // Remembered: no more to do, and a later transaction of the same arrival is plain.
        assert!(db.remember(&first).await.unwrap());
        db.begin_write_for(&first)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();

        // The same id again: refused before anything is written, in a transaction or alone.
        let again = arrival("m1", now + Duration::seconds(5));
        let err = db.begin_write_for(&again).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Replayed { sender, message_id } if sender == "cloud:a" && message_id == "m1"),
            "{err}"
        );
        assert_eq!(again.state(), ArrivalState::Replayed);
        assert!(!db.remember(&again).await.unwrap());
        assert!(!db.remember(&arrival("m1", now)).await.unwrap());
        // The refusal left the writer free.
        db.begin_write().await.unwrap().commit().await.unwrap();

        // Rolled back, then dropped: pending again each time, and nothing on record.
        let second = arrival("m2", now);
        db.begin_write_for(&second)
            .await
            .unwrap()
            .rollback()
            .await
            .unwrap();
        assert_eq!(second.state(), ArrivalState::Pending);
        drop(db.begin_write_for(&second).await.unwrap());
        assert_eq!(second.state(), ArrivalState::Pending);
        assert_eq!(seen("m2").await, 0);
        // A message that wrote nothing is remembered on its own.
        assert!(db.remember(&second).await.unwrap());
        assert_eq!(second.state(), ArrivalState::Remembered);
        assert_eq!(seen("m2").await, 1);
        assert!(matches!(
            db.begin_write_for(&arrival("m2", now)).await,
            Err(StoreError::Replayed { .. })
        ));

        // Once expired, an id is fresh again and its row is taken over.
        let later = now + Duration::minutes(11);
        let third = arrival("m1", later);
        db.begin_write_for(&third)
            .await
            .unwrap()
            .commit()
            .await
            .unwrap();
        assert_eq!(third.state(), ArrivalState::Remembered);
        let expiry: i64 =
            query_scalar("SELECT expires_at FROM seen_messages WHERE message_id = 'm1'")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(expiry, (later + Duration::minutes(10)).unix_timestamp());
        let rows: i64 = query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
}

/// A check-then-write sequence under a lock (`Tx::lock`) is atomic across handles of the
/// database (replicas): 20 transactions of two handles racing for the last of a quota of 5
/// take exactly 5.
async fn check_then_write_under_a_lock_is_atomic_across_handles(engine: Engine) {
    let t = fresh(engine).await;
    let a = Db::open(&t.url, "r", M).await.unwrap();
    let b = Db::open(&t.url, "r", M).await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('quota', 0)")
        .execute(a.pool())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_write().await.unwrap();
            tx.lock("quota").await.unwrap();
            let v: i64 = query_scalar("SELECT v FROM t WHERE k = 'quota'")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tokio::task::yield_now().await;
            if v < 5 {
                query("UPDATE t SET v = $1 WHERE k = 'quota'")
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

/// The same message id arriving at two handles (two replicas) at the same instant: each
/// begins its transaction for it, and exactly one goes on; the other is a replay, whether it
/// came first or waited for the first to commit.
async fn one_message_id_at_two_handles_at_once_goes_on_once(engine: Engine) {
    let t = fresh(engine).await;
    let a = Db::open(&t.url, "r", M).await.unwrap();
    let b = Db::open(&t.url, "r", M).await.unwrap();
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut tasks = Vec::new();
    for i in 0..40 {
        for db in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                let arrival =
                    Arrival::new("cloud:a", format!("m{i}"), now + Duration::minutes(10), now);
                match db.begin_write_for(&arrival).await {
                    Ok(mut tx) => {
                        query("INSERT INTO t (k, v) VALUES ($1, 1)")
                            .bind(format!("m{i}"))
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                        (i, 1)
                    }
                    Err(StoreError::Replayed { .. }) => (i, 0),
                    Err(e) => panic!("{e}"),
                }
            }));
        }
    }
    let mut went_on = vec![0; 40];
    for t in tasks {
        let (i, n) = t.await.unwrap();
        went_on[i] += n;
    }
    assert!(went_on.iter().all(|&n| n == 1), "{went_on:?}");
    let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(n, 40);
}

/// Concurrent calls share group commits: every answer belongs to its own call (each id sent
/// twice at once is fresh exactly once), and every id is durable once answered.
async fn concurrent_replay_checks_share_commits_and_answer_each_call(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut tasks = Vec::new();
    for i in 0..300 {
        for _ in 0..2 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("m{i}");
                let fresh = db
                    .remember_message("platform:p", &id, now + Duration::minutes(10), now)
                    .await
                    .unwrap();
                (i, fresh)
            }));
        }
    }
    let mut fresh = vec![0; 300];
    for t in tasks {
        let (i, f) = t.await.unwrap();
        fresh[i] += usize::from(f);
    }
    assert!(fresh.iter().all(|&n| n == 1), "{fresh:?}");
    drop(db);
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let n: i64 = query_scalar("SELECT COUNT(*) FROM seen_messages")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 300);
}

/// One transaction remembers many arrivals in one statement: a fresh id goes in and is held
/// until the commit, the same arrival listed twice goes on twice, a second message with an id
/// already in the list or on record is a replay, one remembered before goes on without a
/// write; a rollback makes them pending again.
async fn a_transaction_remembers_many_arrivals_at_once(engine: Engine) {
    let t = fresh(engine).await;
    let mut dbs = vec![Db::open(&t.url, "r", M).await.unwrap()];
    if engine == Engine::Sqlite {
        dbs.push(Db::open("sqlite::memory:", "r", M).await.unwrap());
    }
    for db in dbs {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let arrival = |id: &str| Arrival::new("cloud:a", id, now + Duration::minutes(10), now);
        let before = arrival("old");
        assert!(db.remember(&before).await.unwrap());
        let (a, b, b_again, old_again) = (arrival("a"), arrival("b"), arrival("b"), arrival("old"));

        let mut tx = db.begin_write().await.unwrap();
        let fresh = db
            .remember_in(&mut tx, &[&a, &b, &a, &b_again, &old_again, &before])
            .await
            .unwrap();
        assert_eq!(fresh, [true, true, true, false, false, true]);
        assert_eq!(a.state(), ArrivalState::Held);
        assert_eq!(b_again.state(), ArrivalState::Replayed);
        assert_eq!(old_again.state(), ArrivalState::Replayed);
        assert_eq!(before.state(), ArrivalState::Remembered);
        // Asked again in the same transaction: the same answers, nothing written twice.
        let again = db.remember_in(&mut tx, &[&b, &a]).await.unwrap();
        assert_eq!(again, [true, true]);
        tx.rollback().await.unwrap();
        assert_eq!(a.state(), ArrivalState::Pending);
        assert_eq!(b.state(), ArrivalState::Pending);

        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(
            db.remember_in(&mut tx, &[&b, &a]).await.unwrap(),
            [true, true]
        );
        tx.commit().await.unwrap();
        assert_eq!(a.state(), ArrivalState::Remembered);
        assert_eq!(b.state(), ArrivalState::Remembered);
        let ids: Vec<String> =
            query_scalar("SELECT message_id FROM seen_messages ORDER BY message_id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(ids, ["a", "b", "old"]);
        // An arrival of another transaction, held and not committed, does not go on here.
        let c = arrival("c");
        let mut holder = db.begin_write_for(&c).await.unwrap();
        assert_eq!(db.remember_in(&mut holder, &[&c]).await.unwrap(), [true]);
        holder.commit().await.unwrap();
        assert!(!db.remember(&arrival("c")).await.unwrap());
    }
}

/// Concurrent jobs share group transactions: every job is done once and answered after its
/// group's commit, an id sent twice at once goes on exactly once, each group remembers its
/// jobs' ids with what they wrote, and far fewer transactions than jobs are begun.
async fn concurrent_jobs_share_group_transactions(engine: Engine) {
    struct Job {
        id: usize,
        arrival: Arrival,
    }
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let group = std::sync::Arc::new(Group::<Waiting<Job, bool>>::default());
    let groups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut tasks = Vec::new();
    for i in 0..200 {
        for _ in 0..2 {
            let (db, group, groups) = (db.clone(), group.clone(), groups.clone());
            tasks.push(tokio::spawn(async move {
                let job = Job {
                    id: i,
                    arrival: Arrival::new(
                        "cloud:a",
                        format!("m{i}"),
                        now + Duration::minutes(10),
                        now,
                    ),
                };
                let lead = move |mut tx: fapiao_store::Tx, jobs: Vec<Waiting<Job, bool>>| async move {
                    groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut done = Vec::new();
                    for w in jobs {
                        let fresh = w.job.arrival.state() == ArrivalState::Held;
                        if fresh {
                            query("INSERT INTO t (k, v) VALUES ($1, 1)")
                                .bind(format!("m{}", w.job.id))
                                .execute(&mut *tx)
                                .await
                                .unwrap();
                        }
                        done.push((w, fresh));
                    }
                    tx.commit().await.unwrap();
                    for (w, fresh) in done {
                        assert_eq!(w.job.arrival.state() == ArrivalState::Remembered, fresh);
                        w.answer.send(fresh);
                    }
                };
                let fresh = db
                    .grouped(&group, job, |j| Some(&j.arrival), lead, |_, e| panic!("{e}"))
                    .await
                    .unwrap();
                (i, fresh)
            }));
        }
    }
    let mut fresh = vec![0; 200];
    for t in tasks {
        let (i, f) = t.await.unwrap();
        fresh[i] += usize::from(f);
    }
    assert!(fresh.iter().all(|&n| n == 1), "{fresh:?}");
    let groups = groups.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=100).contains(&groups), "{groups} groups for 400 jobs");
    drop(db);
    let db = Db::open(&t.url, "r", M).await.unwrap();
    for table in ["t", "seen_messages"] {
        let n: i64 = query_text(format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(db.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(n, 200, "{table}");
    }
}

/// A job alone writes its arrival's id with the `BEGIN`; one whose id is on record leads a
/// group all the same, its arrival a replay, and nothing of it is written.
async fn a_job_alone_is_a_group_of_one(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let group = Group::<Arrival>::default();
    let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let arrival = || Arrival::new("cloud:a", "m1", now + Duration::minutes(10), now);
    let first = arrival();
    let Ok(Joined::Lead(tx, jobs)) = db.begin_group(&group, first.clone(), |a| Some(a)).await
    else {
        panic!("a job alone leads");
    };
    assert_eq!(jobs.len(), 1);
    assert_eq!(first.state(), ArrivalState::Held);
    tx.commit().await.unwrap();
    assert_eq!(first.state(), ArrivalState::Remembered);
    let again = arrival();
    let Ok(Joined::Lead(tx, _)) = db.begin_group(&group, again.clone(), |a| Some(a)).await else {
        panic!("a job alone leads");
    };
    assert_eq!(again.state(), ArrivalState::Replayed);
    tx.commit().await.unwrap();
    let n: i64 = query_scalar("SELECT COUNT(*) FROM seen_messages")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Writers of another handle on the same file (another process) wait for the write lock in
/// SQLite's busy handler, and get it once the holder commits. SQLite only: PostgreSQL has no
/// database-wide write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_second_handle_waits_for_the_first_handles_writer() {
    let t = TestDb::sqlite();
    let a = Db::open(&t.url, "r", M).await.unwrap();
    let b = Db::open(&t.url, "r", M).await.unwrap();
    let mut held = a.begin_write().await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('a', 1)")
        .execute(&mut *held)
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let mut tx = b.begin_write().await.unwrap();
        let v: i64 = query_scalar("SELECT v FROM t WHERE k = 'a'")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        query("INSERT INTO t (k, v) VALUES ('b', $1)")
            .bind(v + 1)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished());
    held.commit().await.unwrap();
    waiting.await.unwrap();
    let v: i64 = query_scalar("SELECT v FROM t WHERE k = 'b'")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(v, 2);
}

/// A write transaction dropped unfinished (an error path's `?`) is rolled back at once, not
/// when this handle next writes: another handle on the file (another process) gets the write
/// lock well within its busy timeout (30 s), and nothing of the dropped transaction remains.
/// SQLite only: the writer connection's own rollback (sqlx rolls back PostgreSQL's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_abandoned_write_transaction_is_rolled_back_at_once() {
    let t = TestDb::sqlite();
    let a = Db::open(&t.url, "r", M).await.unwrap();
    let b = Db::open(&t.url, "r", M).await.unwrap();
    let mut tx = a.begin_write().await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('dropped', 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    let other = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut tx = b.begin_write().await.unwrap();
        query("INSERT INTO t (k, v) VALUES ('other', 2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    })
    .await;
    assert!(
        other.is_ok(),
        "the dropped transaction still holds the write lock"
    );
    // This handle writes on afterwards, and only what was committed is there.
    let mut tx = a.begin_write().await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('after', 3)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let keys: Vec<String> = query_scalar("SELECT k FROM t ORDER BY k")
        .fetch_all(b.pool())
        .await
        .unwrap();
    assert_eq!(keys, ["after", "other"]);
}

/// An explicit rollback undoes, and the next write transaction starts clean.
async fn a_rolled_back_write_transaction_leaves_nothing(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('undone', 1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.begin_write().await.unwrap();
    query("INSERT INTO t (k, v) VALUES ('kept', 2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(db);
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let keys: Vec<String> = query_scalar("SELECT k FROM t")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(keys, ["kept"]);
}

/// Read connections: more readers than connections wait their turn (none is lost or
/// deadlocked), and each statement sees the newest commit of the writer connection, also on a
/// connection that read before it.
async fn readers_take_turns_and_see_every_commit(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "r", M).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..24_i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = db.read().await.unwrap();
            let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            // Held across a pause, so that the 24 overlap.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(conn);
            let mut tx = db.begin_write().await.unwrap();
            query("INSERT INTO t (k, v) VALUES ($1, $2)")
                .bind(format!("k{i}"))
                .bind(i)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let seen: i64 = query_scalar("SELECT COUNT(*) FROM t WHERE k = $1")
                .bind(format!("k{i}"))
                .fetch_one(&mut *db.read().await.unwrap())
                .await
                .unwrap();
            (n, seen)
        }));
    }
    for t in tasks {
        let (n, seen) = tokio::time::timeout(std::time::Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert!(n < 24);
        assert_eq!(seen, 1, "a reader missed a commit");
    }
    let n: i64 = query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&mut *db.read().await.unwrap())
        .await
        .unwrap();
    assert_eq!(n, 24);
}
