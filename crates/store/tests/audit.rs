//! The audit chain on a real SQLite file and a real PostgreSQL database (each test once per
//! engine): records, signed heads chained to each other and checked one by one, the records
//! no head covers, and witness copies of heads kept outside the database. The attacks are an
//! operator's with write access to the database but not the role's signing key.
#![expect(clippy::unwrap_used, reason = "tests")]

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, Certificate, CertificateRequest, PrivateKey, Profile, Revocation, Role, Subject, Suite,
    TrustStore,
};
use fapiao_store::audit::{Checks, Head, Verdict, Witness, append, record_hash, sign_head, verify};
use fapiao_store::testing::TestDb;
use fapiao_store::{Db, Engine, Migration, Sql, engines, query, query_as};
use serde_json::json;
use time::{Duration, OffsetDateTime};

const M: &[Migration] = &[Migration {
    version: 1,
    description: "t",
    sql: Sql::portable("CREATE TABLE t (k TEXT PRIMARY KEY, v BIGINT NOT NULL);"),
}];

async fn fresh(engine: Engine) -> TestDb {
    TestDb::on(engine, "audit").await.unwrap()
}

engines!(
    an_untouched_chain_verifies,
    appends_in_one_transaction_and_around_a_savepoint_rollback_chain,
    an_edited_record_is_found,
    a_deleted_record_is_found,
    reordered_records_are_found,
    a_chain_cut_after_a_signed_head_is_found,
    concurrent_transactions_of_two_handles_chain_one_after_the_other,
);

async fn chain(engine: Engine, n: i64) -> (TestDb, Db) {
    let test_db = fresh(engine).await;
    let db = Db::open(&test_db.url, "r", M).await.unwrap();
    let t = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    for i in 1..=n {
        let mut tx = db.begin_write().await.unwrap();
        append(
            &mut tx,
            t,
            "cloud:cloud",
            "invoice.issued",
            &format!("N{i}"),
            &json!({"i": i}),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    (test_db, db)
}

fn broken_at(v: &Verdict) -> (i64, String) {
    match v {
        Verdict::Broken { seq, reason } => (*seq, reason.clone()),
        Verdict::Intact { .. } => panic!("expected a broken chain"),
    }
}

async fn exec(db: &Db, sql: &'static str) {
    query(sql).execute(db.pool()).await.unwrap();
}

async fn an_untouched_chain_verifies(engine: Engine) {
    let (_d, db) = chain(engine, 10).await;
    assert_eq!(
        verify(&db, &Checks::default()).await.unwrap(),
        Verdict::Intact {
            records: 10,
            heads: 0,
            head: None,
            witnessed: 0,
        }
    );
}

/// Appends in one transaction chain to each other (the head is read once), and one
/// undone by a rollback to a savepoint leaves no gap: the next append chains to the
/// record before it.
async fn appends_in_one_transaction_and_around_a_savepoint_rollback_chain(engine: Engine) {
    let (_d, db) = chain(engine, 2).await;
    let t = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut tx = db.begin_write().await.unwrap();
    let add = async |tx: &mut fapiao_store::Tx, subject: &str| {
        append(tx, t, "system", "test", subject, &json!({}))
            .await
            .unwrap();
    };
    add(&mut tx, "a").await;
    add(&mut tx, "b").await;
    tx.savepoint("one_order").await.unwrap();
    add(&mut tx, "undone").await;
    tx.rollback_to("one_order").await.unwrap();
    tx.release("one_order").await.unwrap();
    add(&mut tx, "c").await;
    assert!(matches!(
        tx.savepoint("x; DROP TABLE audit_log").await,
        Err(fapiao_store::StoreError::Savepoint(_))
    ));
    tx.commit().await.unwrap();
    let subjects: Vec<(i64, String)> = query_as("SELECT seq, subject FROM audit_log ORDER BY seq")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let subjects: Vec<(i64, &str)> = subjects.iter().map(|(n, s)| (*n, s.as_str())).collect();
    assert_eq!(
        subjects,
        [(1, "N1"), (2, "N2"), (3, "a"), (4, "b"), (5, "c")]
    );
    assert_eq!(
        verify(&db, &Checks::default()).await.unwrap(),
        Verdict::Intact {
            records: 5,
            heads: 0,
            head: None,
            witnessed: 0,
        }
    );
}

async fn an_edited_record_is_found(engine: Engine) {
    let (_d, db) = chain(engine, 10).await;
    exec(
        &db,
        "UPDATE audit_log SET detail = '{\"i\":50}' WHERE seq = 5",
    )
    .await;
    let (seq, why) = broken_at(&verify(&db, &Checks::default()).await.unwrap());
    assert_eq!(seq, 5);
    assert!(why.contains("edited"), "{why}");
}

async fn a_deleted_record_is_found(engine: Engine) {
    let (_d, db) = chain(engine, 10).await;
    exec(&db, "DELETE FROM audit_log WHERE seq = 7").await;
    let (seq, why) = broken_at(&verify(&db, &Checks::default()).await.unwrap());
    assert_eq!(seq, 7);
    assert!(why.contains("deleted"), "{why}");
}

async fn reordered_records_are_found(engine: Engine) {
    let (_d, db) = chain(engine, 10).await;
    // Swap records 3 and 4 wholesale, renumbered to keep seq continuous.
    exec(&db, "UPDATE audit_log SET seq = -3 WHERE seq = 3").await;
    exec(&db, "UPDATE audit_log SET seq = 3 WHERE seq = 4").await;
    exec(&db, "UPDATE audit_log SET seq = 4 WHERE seq = -3").await;
    let (seq, why) = broken_at(&verify(&db, &Checks::default()).await.unwrap());
    assert_eq!(seq, 3);
    assert!(why.contains("predecessor"), "{why}");
}

async fn a_chain_cut_after_a_signed_head_is_found(engine: Engine) {
    let (_d, db) = chain(engine, 5).await;
    let t = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let head = sign_head(&db, t, b"cert", |bytes| Some(bytes.to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.seq, 5);
    assert!(
        sign_head(&db, t, b"cert", |b| Some(b.to_vec()))
            .await
            .unwrap()
            .is_none(),
        "unchanged head"
    );
    match verify(&db, &Checks::default()).await.unwrap() {
        Verdict::Intact {
            records: 5,
            head: Some(h),
            ..
        } => assert_eq!(h.seq, 5),
        other => panic!("{other:?}"),
    }
    exec(&db, "DELETE FROM audit_log WHERE seq = 5").await;
    let (seq, why) = broken_at(&verify(&db, &Checks::default()).await.unwrap());
    assert_eq!(seq, 5);
    assert!(why.contains("cut off"), "{why}");
}

/// Transactions of two handles (replicas) appending at once: every record joins the one
/// chain, in commit order, and the chain verifies.
async fn concurrent_transactions_of_two_handles_chain_one_after_the_other(engine: Engine) {
    let (t, a) = chain(engine, 1).await;
    let b = Db::open(&t.url, "r", M).await.unwrap();
    let at = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin_write().await.unwrap();
            for j in 0..3 {
                append(
                    &mut tx,
                    at,
                    "system",
                    "test",
                    &format!("{i}.{j}"),
                    &json!({}),
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        verify(&a, &Checks::default()).await.unwrap(),
        Verdict::Intact {
            records: 181,
            heads: 0,
            head: None,
            witnessed: 0,
        }
    );
}

engines!(
    every_signed_head_is_checked_and_a_bad_old_head_is_found,
    a_rewritten_chain_with_its_heads_deleted_is_found,
    deleting_every_head_is_found,
    a_tail_cut_with_its_heads_is_found_by_the_witness,
    a_deleted_middle_head_breaks_the_chain_of_heads,
    heads_outlive_later_crls_and_the_signer_s_later_revocation,
    records_a_killed_role_left_unsigned_are_no_alarm,
    heads_signed_before_chaining_still_verify_and_the_next_chains_on,
    replicas_signing_at_once_chain_their_heads,
);

/// The time the chains below start.
const T: OffsetDateTime = OffsetDateTime::UNIX_EPOCH.saturating_add(Duration::days(20_000));

/// A role's signing key under a CA, the trust that checks it, and the CA for later CRLs.
struct Signer {
    ca: Ca,
    key: PrivateKey,
    cert: Certificate,
    trust: TrustStore,
}

impl Signer {
    fn new() -> Self {
        let rng = &mut system_rng();
        let ca = Ca::create_root(
            &Subject {
                role: Role::Ca,
                name: "Audit Test Root".into(),
                taxpayer_id: None,
            },
            PrivateKey::generate(Suite::Gm.key_algorithm(), rng),
            T - Duration::days(30),
            T + Duration::days(3650),
            rng,
        )
        .unwrap();
        let key = PrivateKey::generate(Suite::Gm.key_algorithm(), rng);
        let cert = ca
            .issue(
                &CertificateRequest {
                    subject: Subject {
                        role: Role::Platform,
                        name: "platform".into(),
                        taxpayer_id: None,
                    },
                    profile: Profile::Signing,
                    public_key: key.public_key(),
                    not_before: T - Duration::days(1),
                    not_after: T + Duration::days(365),
                },
                rng,
            )
            .unwrap();
        let mut trust = TrustStore::new(vec![ca.certificate().clone()]).unwrap();
        trust.add_crl(
            ca.crl(&[], 1, T - Duration::hours(1), T + Duration::days(7))
                .unwrap(),
        );
        Self {
            ca,
            key,
            cert,
            trust,
        }
    }

    async fn sign(&self, db: &Db, at: OffsetDateTime) -> Option<Head> {
        sign_head(db, at, self.cert.der(), |b| self.key.sign(b).ok())
            .await
            .unwrap()
    }

    /// What `fapiao audit verify` checks, with a 3-minute signing span and `witness`.
    fn checks<'a>(&'a self, witness: &'a [Head]) -> Checks<'a> {
        Checks {
            trust: Some(&self.trust),
            unsigned_span: Some(180),
            witness,
        }
    }
}

async fn add(db: &Db, i: i64, at: OffsetDateTime) {
    let mut tx = db.begin_write().await.unwrap();
    append(
        &mut tx,
        at,
        "platform:platform",
        "invoice.issued",
        &format!("N{i}"),
        &json!({"i": i}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Records 1..=`n` a minute apart, a head signed after every third; the heads (the witness
/// file's lines).
async fn signed_chain(engine: Engine, n: i64) -> (TestDb, Db, Signer, Vec<Head>) {
    let test_db = fresh(engine).await;
    let db = Db::open(&test_db.url, "platform", M).await.unwrap();
    let signer = Signer::new();
    let mut heads = Vec::new();
    for i in 1..=n {
        let at = T + Duration::minutes(i);
        add(&db, i, at).await;
        if i % 3 == 0 {
            heads.push(signer.sign(&db, at + Duration::seconds(1)).await.unwrap());
        }
    }
    (test_db, db, signer, heads)
}

async fn run(db: &Db, sql: String) {
    fapiao_store::query_text(sql)
        .execute(db.pool())
        .await
        .unwrap();
}

async fn every_signed_head_is_checked_and_a_bad_old_head_is_found(engine: Engine) {
    let (_d, db, signer, heads) = signed_chain(engine, 12).await;
    match verify(&db, &signer.checks(&heads)).await.unwrap() {
        Verdict::Intact {
            records: 12,
            heads: 4,
            head: Some(h),
            witnessed: 4,
        } => assert_eq!(h.seq, 12),
        v => panic!("{v:?}"),
    }
    // The oldest head's signature replaced by a valid signature over something else.
    let other = signer.key.sign(b"something else").unwrap();
    query("UPDATE audit_heads SET signature = $1 WHERE seq = 3")
        .bind(other)
        .execute(db.pool())
        .await
        .unwrap();
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&[])).await.unwrap());
    assert_eq!(seq, 3);
    assert!(why.contains("does not verify"), "{why}");
}

/// Record 5 edited, every hash after it recomputed, the heads from there deleted: the chain
/// of records is consistent again, but records 4.. have gone longer than a signing interval
/// without a head, and the witness still has the deleted heads.
async fn a_rewritten_chain_with_its_heads_deleted_is_found(engine: Engine) {
    let (_d, db, signer, heads) = signed_chain(engine, 12).await;
    let rows: Vec<(i64, i64, String, String, String, String)> =
        query_as("SELECT seq, at, actor, action, subject, detail FROM audit_log ORDER BY seq")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let mut prev: String = query_as::<(String,)>("SELECT hash FROM audit_log WHERE seq = 4")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .0;
    for (seq, at, actor, action, subject, mut detail) in rows.into_iter().skip(4) {
        if seq == 5 {
            detail = json!({"i": 500}).to_string();
        }
        let hash = record_hash(seq, at, &actor, &action, &subject, &detail, &prev);
        query("UPDATE audit_log SET detail = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
            .bind(&detail)
            .bind(&prev)
            .bind(&hash)
            .bind(seq)
            .execute(db.pool())
            .await
            .unwrap();
        prev = hash;
    }
    query("DELETE FROM audit_heads WHERE seq >= 5")
        .execute(db.pool())
        .await
        .unwrap();
    // Without the new checks this verified as intact.
    let blind = Checks {
        trust: Some(&signer.trust),
        unsigned_span: None,
        witness: &[],
    };
    assert!(matches!(
        verify(&db, &blind).await.unwrap(),
        Verdict::Intact { .. }
    ));
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&[])).await.unwrap());
    assert_eq!(seq, 4, "{why}");
    assert!(why.contains("no signed head covers them"), "{why}");
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&heads)).await.unwrap());
    assert_eq!(seq, 6, "{why}");
    assert!(
        why.contains("in the witness but not in the database"),
        "{why}"
    );
}

async fn deleting_every_head_is_found(engine: Engine) {
    let (_d, db, signer, _) = signed_chain(engine, 12).await;
    query("DELETE FROM audit_heads")
        .execute(db.pool())
        .await
        .unwrap();
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&[])).await.unwrap());
    assert_eq!(seq, 1, "{why}");
    assert!(why.contains("no signed head covers them"), "{why}");
}

/// The newest records and the heads covering them deleted together: what is left is a
/// consistent, signed chain — only the witness knows there was more.
async fn a_tail_cut_with_its_heads_is_found_by_the_witness(engine: Engine) {
    let (_d, db, signer, heads) = signed_chain(engine, 12).await;
    run(&db, "DELETE FROM audit_log WHERE seq > 6".into()).await;
    run(&db, "DELETE FROM audit_heads WHERE seq > 6".into()).await;
    assert!(matches!(
        verify(&db, &signer.checks(&[])).await.unwrap(),
        Verdict::Intact { records: 6, .. }
    ));
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&heads)).await.unwrap());
    assert_eq!(seq, 9, "{why}");
    assert!(why.contains("with the records they covered"), "{why}");
}

async fn a_deleted_middle_head_breaks_the_chain_of_heads(engine: Engine) {
    let (_d, db, signer, _) = signed_chain(engine, 12).await;
    run(&db, "DELETE FROM audit_heads WHERE seq = 6".into()).await;
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&[])).await.unwrap());
    assert_eq!(seq, 9, "{why}");
    assert!(why.contains("does not name the head before it"), "{why}");
}

/// Heads are checked as their signer's certificate stood when they were signed: a CRL of
/// months later raises no alarm, nor does the signer's revocation after it signed; a head
/// signed after the revocation fails.
async fn heads_outlive_later_crls_and_the_signer_s_later_revocation(engine: Engine) {
    let (_d, db, mut signer, heads) = signed_chain(engine, 6).await;
    let revoked_at = T + Duration::days(50);
    signer.trust.add_crl(
        signer
            .ca
            .crl(
                &[Revocation {
                    serial: signer.cert.serial().to_vec(),
                    revoked_at,
                }],
                2,
                T + Duration::days(100),
                T + Duration::days(107),
            )
            .unwrap(),
    );
    assert!(matches!(
        verify(&db, &signer.checks(&heads)).await.unwrap(),
        Verdict::Intact { heads: 2, .. }
    ));
    add(&db, 7, T + Duration::days(60)).await;
    signer.sign(&db, T + Duration::days(60)).await.unwrap();
    let (seq, why) = broken_at(&verify(&db, &signer.checks(&heads)).await.unwrap());
    assert_eq!(seq, 7, "{why}");
    assert!(why.contains("revoked"), "{why}");
}

/// A role killed between two signings leaves its newest records without a head; they span
/// less than the signing interval, which is no alarm (it signs them when it starts).
async fn records_a_killed_role_left_unsigned_are_no_alarm(engine: Engine) {
    let (_d, db, signer, heads) = signed_chain(engine, 12).await;
    add(&db, 13, T + Duration::minutes(13)).await;
    add(&db, 14, T + Duration::minutes(15)).await;
    assert!(matches!(
        verify(&db, &signer.checks(&heads)).await.unwrap(),
        Verdict::Intact { records: 14, .. }
    ));
    // A third, much later, with no head between: the signer did not run for that long.
    add(&db, 15, T + Duration::minutes(30)).await;
    let (seq, _) = broken_at(&verify(&db, &signer.checks(&heads)).await.unwrap());
    assert_eq!(seq, 13);
}

/// A head from before heads were chained (it signs only its record) is checked by what it
/// signed, and the next head names it.
async fn heads_signed_before_chaining_still_verify_and_the_next_chains_on(engine: Engine) {
    let test_db = fresh(engine).await;
    let db = Db::open(&test_db.url, "platform", M).await.unwrap();
    let signer = Signer::new();
    for i in 1..=3 {
        add(&db, i, T + Duration::minutes(i)).await;
    }
    let hash: String = query_as::<(String,)>("SELECT hash FROM audit_log WHERE seq = 3")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .0;
    let legacy = signer
        .key
        .sign(format!("fapiao-audit-head:3:{hash}").as_bytes())
        .unwrap();
    query(
        "INSERT INTO audit_heads (seq, hash, signed_at, signature, certificate)
         VALUES (3, $1, $2, $3, $4)",
    )
    .bind(&hash)
    .bind((T + Duration::minutes(3)).unix_timestamp())
    .bind(legacy)
    .bind(signer.cert.der().to_vec())
    .execute(db.pool())
    .await
    .unwrap();
    add(&db, 4, T + Duration::minutes(4)).await;
    let next = signer.sign(&db, T + Duration::minutes(4)).await.unwrap();
    match verify(&db, &signer.checks(&[])).await.unwrap() {
        Verdict::Intact {
            heads: 2,
            head: Some(h),
            ..
        } => {
            assert_eq!(h, next);
            assert!(h.prev.is_some());
        }
        v => panic!("{v:?}"),
    }
}

/// Two handles (replicas) appending and signing at once: every head chains to the one
/// before it, whichever replica signed it.
async fn replicas_signing_at_once_chain_their_heads(engine: Engine) {
    let test_db = fresh(engine).await;
    let a = Db::open(&test_db.url, "platform", M).await.unwrap();
    let b = Db::open(&test_db.url, "platform", M).await.unwrap();
    let signer = std::sync::Arc::new(Signer::new());
    let mut tasks = Vec::new();
    for i in 1..=40 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            add(&db, i, T + Duration::seconds(i)).await;
            signer.sign(&db, T + Duration::seconds(i)).await
        }));
    }
    let mut signed = Vec::new();
    for t in tasks {
        signed.extend(t.await.unwrap());
    }
    signed.sort_by_key(|h| h.seq);
    match verify(&a, &signer.checks(&signed)).await.unwrap() {
        Verdict::Intact {
            records: 40,
            heads,
            witnessed,
            ..
        } => assert_eq!((heads, witnessed), (signed.len(), signed.len())),
        v => panic!("{v:?}"),
    }
}

#[test]
fn witness_files_round_trip_skip_a_torn_last_line_and_their_copies_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let w = Witness::new(&dir.path().join("audit/platform.witness.jsonl"));
    let signer = Signer::new();
    let head = |seq: i64| {
        let mut h = Head {
            seq,
            hash: format!("{seq:064x}"),
            signed_at: (T + Duration::minutes(seq)).unix_timestamp(),
            prev: Some(fapiao_store::audit::GENESIS.to_owned()),
            signature: Vec::new(),
            certificate: signer.cert.der().to_vec(),
        };
        h.signature = signer.key.sign(&h.signed_bytes()).unwrap();
        h
    };
    // Signatures are hedged (a fresh nonce each time): the heads written are kept to compare.
    let (h3, h6) = (head(3), head(6));
    w.append(&h3).unwrap();
    w.append(&h6).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(w.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A write cut short by a full disk: not a line.
    let mut text = std::fs::read_to_string(w.path()).unwrap();
    text.push_str("{\"seq\":9,\"ha");
    std::fs::write(w.path(), &text).unwrap();
    assert_eq!(w.read().unwrap(), vec![h3, h6.clone()]);
    h6.check_signature(&signer.trust).unwrap();
    let mut forged = h6;
    forged.signed_at += 1;
    assert!(forged.check_signature(&signer.trust).is_err());
    // A line in the middle that does not parse is an error naming it.
    std::fs::write(w.path(), "{}\n").unwrap();
    assert!(w.read().unwrap_err().contains("line 1"));
}
