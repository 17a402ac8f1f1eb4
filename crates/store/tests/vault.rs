//! Encryption at rest on a real SQLite file and a real PostgreSQL database: values sealed
//! under data keys wrapped by a master key and bound to their column and row, rotation while
//! another writer keeps sealing, nothing readable in the SQLite file, and a sealed column
//! refusing what a database write put there around Fapiao.
#![expect(clippy::unwrap_used, reason = "tests")]

use fapiao_crypto::aead::AeadAlgorithm;
use fapiao_store::testing::TestDb;
use fapiao_store::vault::{MasterKey, SealedColumn, Vault};
use fapiao_store::{Db, Engine, Migration, Sql, StoreError, engines, query, query_as};
use time::OffsetDateTime;

const M: &[Migration] = &[Migration {
    version: 1,
    description: "people",
    sql: Sql::portable("CREATE TABLE people (id BIGINT PRIMARY KEY, phone TEXT NOT NULL);"),
}];
const PHONE: SealedColumn = SealedColumn {
    table: "people",
    column: "phone",
    key: "id",
};
const EMAIL: SealedColumn = SealedColumn {
    table: "people",
    column: "email",
    key: "id",
};

engines!(
    sealed_values_open_only_in_their_column_and_unaltered,
    the_wrong_master_key_is_named_not_guessed,
    rotation_while_writing_loses_nothing,
    rotation_seals_values_written_before_encryption,
    a_plain_value_written_into_a_sealed_column_is_refused,
    sealed_values_swapped_between_rows_do_not_open,
    what_older_builds_left_is_sealed_row_bound_once_at_start,
);

async fn fresh(engine: Engine) -> TestDb {
    TestDb::on(engine, "vault").await.unwrap()
}

fn master(algorithm: AeadAlgorithm, byte: u8) -> MasterKey {
    MasterKey::from_hex(
        algorithm,
        &format!("{byte:02x}").repeat(algorithm.key_len()),
    )
    .unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap()
}

fn phone(i: usize) -> String {
    format!("1381234{i:04}")
}

async fn insert(db: &Db, vault: &Vault, i: usize) {
    let mut tx = db.begin_write().await.unwrap();
    let v = vault
        .seal_str(&mut tx, PHONE, &i.to_string(), &phone(i))
        .await
        .unwrap();
    query("INSERT INTO people (id, phone) VALUES ($1, $2)")
        .bind(i64::try_from(i).unwrap())
        .bind(v)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn all_open(db: &Db, vault: &Vault) -> usize {
    let rows: Vec<(i64, String)> = query_as("SELECT id, phone FROM people ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    for (id, v) in &rows {
        assert!(v.starts_with("enc2:k"), "{v}");
        let plain = vault.unseal_str(PHONE, &id.to_string(), v).await.unwrap();
        assert_eq!(*plain, phone(usize::try_from(*id).unwrap()));
    }
    rows.len()
}

fn file_bytes(t: &TestDb) -> Vec<u8> {
    let mut all = Vec::new();
    let file = std::path::PathBuf::from(t.url.strip_prefix("sqlite://").unwrap());
    for e in std::fs::read_dir(file.parent().unwrap()).unwrap() {
        all.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn sealed_values_open_only_in_their_column_and_unaltered(engine: Engine) {
    for algorithm in [AeadAlgorithm::Sm4Gcm, AeadAlgorithm::Aes256Gcm] {
        let t = fresh(engine).await;
        let db = Db::open(&t.url, "t", M).await.unwrap();
        let vault = Vault::open(&db, master(algorithm, 7), now()).await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        let a = vault
            .seal_str(&mut tx, PHONE, "1", "13812341234")
            .await
            .unwrap();
        let b = vault
            .seal_str(&mut tx, PHONE, "1", "13812341234")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(a.starts_with("enc2:k1:"), "{a}");
        assert_ne!(a, b, "fresh nonce per value");
        assert!(!a.contains("1381234"));
        assert_eq!(
            *vault.unseal_str(PHONE, "1", &a).await.unwrap(),
            "13812341234"
        );
        // Moved to another column: refused.
        let err = vault.unseal(EMAIL, "1", &a).await.unwrap_err();
        assert!(err.to_string().contains("people.email"), "{err}");
        // One character changed: refused.
        let mut altered = a.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(vault.unseal(PHONE, "1", &altered).await.is_err());
        // Relabelled with another key id: refused (the id is authenticated).
        assert!(
            vault
                .unseal(PHONE, "1", &a.replacen("enc2:k1:", "enc2:k2:", 1))
                .await
                .is_err()
        );

        // The blind index is stable and keyed.
        assert_eq!(
            vault.blind_index("people.phone", "x"),
            vault.blind_index("people.phone", "x")
        );
        assert_ne!(
            vault.blind_index("people.phone", "x"),
            vault.blind_index("people.email", "x")
        );
        let other = fresh(engine).await;
        let db2 = Db::open(&other.url, "t", M).await.unwrap();
        let v2 = Vault::open(&db2, master(algorithm, 8), now())
            .await
            .unwrap();
        assert_ne!(
            vault.blind_index("people.phone", "x"),
            v2.blind_index("people.phone", "x")
        );
    }
}

async fn the_wrong_master_key_is_named_not_guessed(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    let vault = Vault::open(&db, master(AeadAlgorithm::Sm4Gcm, 1), now())
        .await
        .unwrap();
    insert(&db, &vault, 1).await;
    let err = Vault::open(&db, master(AeadAlgorithm::Sm4Gcm, 2), now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Key(m) if m.contains("not the master key this database was created with")),
        "{err}"
    );
    let err = Vault::open(&db, master(AeadAlgorithm::Aes256Gcm, 1), now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sm4-gcm"), "{err}");
    let err = MasterKey::from_hex(AeadAlgorithm::Sm4Gcm, "abcd").unwrap_err();
    assert!(err.to_string().contains("32 hex digits"), "{err}");
    assert!(MasterKey::from_hex(AeadAlgorithm::Sm4Gcm, &"zz".repeat(16)).is_err());
}

#[tokio::test]
async fn generated_master_keys_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("role.master.key");
    MasterKey::generate(AeadAlgorithm::Aes256Gcm, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(MasterKey::generate(AeadAlgorithm::Aes256Gcm, &path).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    MasterKey::load(AeadAlgorithm::Aes256Gcm, &path).unwrap();
}

/// Rotation runs from a second handle on the same file (as `fapiao keys rotate` does from
/// another process) while the first keeps inserting sealed rows: afterwards every row is
/// under the new key and opens to what was written, from both handles.
async fn rotation_while_writing_loses_nothing(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    let vault = Vault::open(&db, master(AeadAlgorithm::Sm4Gcm, 9), now())
        .await
        .unwrap();
    for i in 0..300 {
        insert(&db, &vault, i).await;
    }
    let writer = {
        let (db, vault) = (db.clone(), vault.clone());
        tokio::spawn(async move {
            for i in 300..700 {
                insert(&db, &vault, i).await;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let other = Db::open(&t.url, "t", M).await.unwrap();
    let rotator = Vault::open(&other, master(AeadAlgorithm::Sm4Gcm, 9), now())
        .await
        .unwrap();
    let mut batches = 0;
    let rotation = rotator
        .rotate(&[PHONE], 25, now(), |field, _| {
            assert_eq!(field, "people.phone");
            batches += 1;
        })
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(rotation.key, "k2");
    assert!(
        batches >= 12,
        "{batches} batches of 25 for at least 300 rows"
    );
    assert_eq!(
        vault.census(PHONE).await.unwrap(),
        vec![("k2".to_owned(), 700)],
        "rows written during the rotation were sealed with the new key"
    );
    assert_eq!(all_open(&db, &vault).await, 700);
    assert_eq!(all_open(&other, &rotator).await, 700);
    // Old values sealed under k1 elsewhere (a backup) still open: k1 is kept.
    let mut tx = db.begin_write().await.unwrap();
    let new = vault.seal_str(&mut tx, PHONE, "9999", "x").await.unwrap();
    tx.commit().await.unwrap();
    assert!(new.starts_with("enc2:k2:"), "{new}");
    drop((db, other));
    if engine == Engine::Sqlite {
        let bytes = file_bytes(&t);
        for i in [0, 299, 300, 699] {
            assert!(!contains(&bytes, &phone(i)), "{} in the files", phone(i));
        }
    }
}

async fn rotation_seals_values_written_before_encryption(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    for i in 0..5 {
        query("INSERT INTO people (id, phone) VALUES ($1, $2)")
            .bind(i64::from(i))
            .bind(phone(usize::try_from(i).unwrap()))
            .execute(db.pool())
            .await
            .unwrap();
    }
    let vault = Vault::open(&db, master(AeadAlgorithm::Aes256Gcm, 3), now())
        .await
        .unwrap();
    assert_eq!(
        vault.census(PHONE).await.unwrap(),
        vec![("plain".to_owned(), 5)]
    );
    let r = vault.rotate(&[PHONE], 2, now(), |_, _| {}).await.unwrap();
    assert_eq!(r.resealed, vec![("people.phone".to_owned(), 5)]);
    assert_eq!(all_open(&db, &vault).await, 5);
}

/// One database write replaces a sealed value with plain text of the attacker's choosing (an
/// ERP secret they then sign requests with): reading it is refused.
async fn a_plain_value_written_into_a_sealed_column_is_refused(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    let vault = Vault::open(&db, master(AeadAlgorithm::Sm4Gcm, 5), now())
        .await
        .unwrap();
    insert(&db, &vault, 1).await;
    query("UPDATE people SET phone = 'sk_attacker' WHERE id = 1")
        .execute(db.pool())
        .await
        .unwrap();
    let v: String = fapiao_store::query_scalar("SELECT phone FROM people WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let err = vault.unseal_str(PHONE, "1", &v).await.unwrap_err();
    assert!(err.to_string().contains("not a sealed value"), "{err}");
    // Nor an `enc1:` value (bound to the column only) written in by hand.
    let err = vault
        .unseal_str(PHONE, "1", "enc1:k1:AAAA")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a sealed value"), "{err}");
}

/// Row 2's sealed value copied over row 1's (say, another enterprise's secret, or an invoice
/// over another invoice): it does not open as row 1's.
async fn sealed_values_swapped_between_rows_do_not_open(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    let vault = Vault::open(&db, master(AeadAlgorithm::Aes256Gcm, 6), now())
        .await
        .unwrap();
    insert(&db, &vault, 1).await;
    insert(&db, &vault, 2).await;
    query("UPDATE people SET phone = (SELECT phone FROM people WHERE id = 2) WHERE id = 1")
        .execute(db.pool())
        .await
        .unwrap();
    let v: String = fapiao_store::query_scalar("SELECT phone FROM people WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let err = vault.unseal_str(PHONE, "1", &v).await.unwrap_err();
    assert!(err.to_string().contains("does not open"), "{err}");
    assert_eq!(*vault.unseal_str(PHONE, "2", &v).await.unwrap(), phone(2));
}

/// A database from before rows were bound: plain values and `enc1:` values (sealed with the
/// column and key only). The role's start re-seals them row-bound, once; afterwards every
/// value opens in its row and only there.
async fn what_older_builds_left_is_sealed_row_bound_once_at_start(engine: Engine) {
    let t = fresh(engine).await;
    let db = Db::open(&t.url, "t", M).await.unwrap();
    let vault = Vault::open(&db, master(AeadAlgorithm::Sm4Gcm, 4), now())
        .await
        .unwrap();
    let legacy = vault.seal_legacy(PHONE, phone(1).as_bytes()).await.unwrap();
    assert!(legacy.starts_with("enc1:k1:"), "{legacy}");
    // Read as it is, it is refused like any value not sealed row-bound.
    assert!(vault.unseal(PHONE, "1", &legacy).await.is_err());
    for (id, v) in [(1_i64, legacy), (2, phone(2)), (3, phone(3))] {
        query("INSERT INTO people (id, phone) VALUES ($1, $2)")
            .bind(id)
            .bind(v)
            .execute(db.pool())
            .await
            .unwrap();
    }
    let census = vault.census(PHONE).await.unwrap();
    assert_eq!(
        census,
        vec![("enc1".to_owned(), 1), ("plain".to_owned(), 2)]
    );
    assert_eq!(
        vault.upgrade(&[PHONE]).await.unwrap(),
        vec![("people.phone".to_owned(), 3)]
    );
    assert_eq!(all_open(&db, &vault).await, 3);
    assert_eq!(
        vault.census(PHONE).await.unwrap(),
        vec![("k1".to_owned(), 3)]
    );
    // Done once: a plain value written afterwards stays refused, not sealed at the next start.
    query("INSERT INTO people (id, phone) VALUES (4, 'written around')")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(vault.upgrade(&[PHONE]).await.unwrap().is_empty());
    assert!(vault.unseal(PHONE, "4", "written around").await.is_err());
}
