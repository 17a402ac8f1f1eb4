//! Encryption at rest of sensitive values (buyer phone, address, bank account, e-mail and
//! identity number inside stored invoices; ERP API secrets).
//!
//! Envelope encryption: values are sealed with a **data key** (SM4-GCM in the GM suite,
//! AES-256-GCM in the INTL suite); data keys live in the role's own database, each wrapped
//! (AEAD-encrypted) under the **master key**, which never touches the database: it comes from
//! a key file (`<prefix>.master.key`, hex, mode 0600) or `FAPIAO_MASTER_KEY`.
//!
//! A sealed value is the text `enc2:k<id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id
//! travels with the value, so rotation ([`Vault::rotate`]) creates a new data key, makes it
//! the one new values are sealed with, and re-seals old values in small batches while the
//! role keeps running. The associated data binds each value to its column, its key id and
//! its row (`invoices.record|k2|26312000000000000001`, the row named by
//! [`SealedColumn::key`]): a value moved to another column or another row, or relabelled,
//! does not open.
//!
//! Why rotation needs no pause: [`Vault::seal`] reads the active key id inside the caller's
//! write transaction, and activating a new key is itself a write transaction. Writes are
//! serialized, so every value sealed after the switch uses the new key, and one pass over the
//! rows committed before it re-seals the rest.
//!
//! A sealed column never accepts what is not sealed this way: a plain value written into it
//! around Fapiao (or an `enc1:` value of the format before rows were bound) is refused when
//! read. What older builds left — plain values from before encryption at rest, `enc1:`
//! values — is re-sealed once when a role opens its vault ([`Vault::open`] with the role's
//! columns), before it serves.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64ct::{Base64, Encoding};
use fapiao_crypto::aead::{AeadAlgorithm, AeadKey, NONCE_LEN};
use fapiao_crypto::rng::system_rng;
use hmac::{KeyInit, Mac};
use rand_core::Rng;
use time::OffsetDateTime;
use zeroize::Zeroizing;

// Table and column names in dynamic SQL (`query_text`) come from `SealedColumn`s, which are
// `'static` constants of the role crates, never input.
use crate::engine::{Engine, Executor, Sql, query, query_scalar, query_text};
use crate::{Db, StoreError, Tx};

/// The environment variable that overrides the master key file (hex).
pub const MASTER_KEY_ENV: &str = "FAPIAO_MASTER_KEY";

const PREFIX: &str = "enc2:";
/// Values of the format before rows were bound (read only to re-seal them).
const LEGACY_PREFIX: &str = "enc1:";

fn key_error(m: impl Into<String>) -> StoreError {
    StoreError::Key(m.into())
}

/// The key that wraps data keys. Kept outside the database.
#[derive(Clone)]
pub struct MasterKey(AeadKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.0.algorithm().name())
    }
}

impl MasterKey {
    /// From hex text (whitespace ignored).
    ///
    /// # Errors
    /// [`StoreError::Key`] naming what is wrong (never the key).
    pub fn from_hex(algorithm: AeadAlgorithm, text: &str) -> Result<Self, StoreError> {
        let bytes =
            fapiao_crypto::hex::decode(text).ok_or_else(|| key_error("master key: not hex"))?;
        AeadKey::new(algorithm, &bytes).map(Self).map_err(|_| {
            key_error(format!(
                "master key: {} needs {} bytes ({} hex digits), found {}",
                algorithm.name(),
                algorithm.key_len(),
                algorithm.key_len() * 2,
                bytes.len()
            ))
        })
    }

    /// `FAPIAO_MASTER_KEY` when set, else the file.
    ///
    /// # Errors
    /// [`StoreError::Key`] naming the file or variable.
    pub fn load(algorithm: AeadAlgorithm, file: &Path) -> Result<Self, StoreError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            let text = Zeroizing::new(text);
            return Self::from_hex(algorithm, &text)
                .map_err(|e| key_error(format!("{MASTER_KEY_ENV}: {e}")));
        }
        let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
            key_error(format!(
                "master key {}: {e} (or set {MASTER_KEY_ENV})",
                file.display()
            ))
        })?);
        Self::from_hex(algorithm, &text).map_err(|e| key_error(format!("{}: {e}", file.display())))
    }

    /// Writes a fresh random key to `file` (mode 0600, refusing to overwrite one).
    ///
    /// # Errors
    /// [`StoreError::Key`].
    pub fn generate(algorithm: AeadAlgorithm, file: &Path) -> Result<Self, StoreError> {
        let mut raw = Zeroizing::new(vec![0_u8; algorithm.key_len()]);
        system_rng().fill_bytes(&mut raw);
        let mut text = Zeroizing::new(String::new());
        for b in raw.iter() {
            let _ = write!(text, "{b:02x}");
        }
        text.push('\n');
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(file)
            .map_err(|e| key_error(format!("master key {}: {e}", file.display())))?;
        std::io::Write::write_all(&mut f, text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| key_error(format!("master key {}: {e}", file.display())))?;
        Self::from_hex(algorithm, &text)
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> AeadAlgorithm {
        self.0.algorithm()
    }
}

/// A column holding sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    /// Table.
    pub table: &'static str,
    /// Column.
    pub column: &'static str,
    /// What identifies a row: its key column, or an expression of its key columns
    /// (`enterprise || ':' || order_id`).
    pub key: &'static str,
}

impl SealedColumn {
    /// The label bound into each value: `table.column`.
    #[must_use]
    pub fn field(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new active key id (`k<n>`).
    pub key: String,
    /// Values re-sealed, per `table.column`.
    pub resealed: Vec<(String, u64)>,
}

/// A role's data keys, unwrapped in memory.
#[derive(Clone)]
pub struct Vault {
    db: Db,
    master: MasterKey,
    keys: Arc<RwLock<HashMap<i64, AeadKey>>>,
    index_key: Arc<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({})", self.master.algorithm().name())
    }
}

/// What transactions creating a data key lock, so that replicas starting together create one.
const KEYS_LOCK: &str = "fapiao.data_keys";

/// The id of the data key new values are sealed with (no row before the first key).
pub(crate) const ACTIVE_ID: &str = "SELECT id FROM data_keys WHERE active = 1";

/// [`ACTIVE_ID`] for a transaction about to seal: on PostgreSQL with the keys' lock held
/// shared until it ends (`$1` the lock's name), so that a rotation's barrier
/// ([`Vault::rotate`]) waits for it. (The statement's snapshot may predate a switch it waited
/// for: the barrier covers that too.)
const ACTIVE_ID_SHARED: Sql = Sql::dialects(
    "SELECT id FROM data_keys WHERE active = 1 AND $1 IS NOT NULL",
    "SELECT (SELECT id FROM data_keys WHERE active = 1)
     FROM (SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))) AS shared",
);

/// The id of the data key new values are sealed with.
async fn active_id(e: impl Executor) -> Result<Option<i64>, StoreError> {
    query_scalar(ACTIVE_ID).fetch_optional(e).await
}

fn wrap_aad(id: i64) -> Vec<u8> {
    format!("fapiao data key k{id}").into_bytes()
}

fn value_aad(field: &str, id: i64, row: &str) -> Vec<u8> {
    format!("{field}|k{id}|{row}").into_bytes()
}

fn legacy_aad(field: &str, id: i64) -> Vec<u8> {
    format!("{field}|k{id}").into_bytes()
}

/// A sealed value's key id and `nonce ‖ ciphertext ‖ tag`, after the prefix.
fn parse_sealed(rest: &str) -> Option<(i64, Vec<u8>)> {
    let (kid, body) = rest.split_once(':')?;
    let id = kid.strip_prefix('k')?.parse().ok()?;
    Some((id, Base64::decode_vec(body).ok()?))
}

impl Vault {
    /// Loads the data keys of `db`, creating the first one if there is none.
    ///
    /// # Errors
    /// [`StoreError::Key`] when the master key does not open the stored keys (a different
    /// master key than the one the database was created with) or is of the other suite.
    pub async fn open(db: &Db, master: MasterKey, now: OffsetDateTime) -> Result<Self, StoreError> {
        let index_key = {
            let mut mac = <hmac::Hmac<sm3::Sm3> as KeyInit>::new_from_slice(master.0.expose())
                .map_err(|_| key_error("master key length"))?;
            mac.update(b"fapiao blind index key");
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        };
        let vault = Self {
            db: db.clone(),
            master,
            keys: Arc::new(RwLock::new(HashMap::new())),
            index_key: Arc::new(index_key),
        };
        let mut tx = db.begin_write().await?;
        // Replicas starting together: one creates the first key, the others find it.
        tx.lock(KEYS_LOCK).await?;
        if active_id(&mut *tx).await?.is_none() {
            vault.create_key(&mut tx, now).await?;
        }
        tx.commit().await?;
        let ids: Vec<i64> = query_scalar("SELECT id FROM data_keys ORDER BY id")
            .fetch_all(db.pool())
            .await?;
        for id in ids {
            vault.key(id).await?;
        }
        Ok(vault)
    }

    /// Creates a data key and makes it the active one (in `tx`, which holds
    /// [`KEYS_LOCK`]).
    async fn create_key(&self, tx: &mut Tx, now: OffsetDateTime) -> Result<i64, StoreError> {
        let algorithm = self.master.algorithm();
        let mut raw = Zeroizing::new(vec![0_u8; algorithm.key_len()]);
        system_rng().fill_bytes(&mut raw);
        let key = AeadKey::new(algorithm, &raw).map_err(|_| key_error("data key length"))?;
        let id: i64 =
            query_scalar("SELECT CAST(COALESCE(MAX(id), 0) + 1 AS BIGINT) FROM data_keys")
                .fetch_one(&mut **tx)
                .await?;
        let mut nonce = [0_u8; NONCE_LEN];
        system_rng().fill_bytes(&mut nonce);
        let mut wrapped = nonce.to_vec();
        wrapped.extend(self.master.0.seal(&nonce, &wrap_aad(id), &raw));
        query("UPDATE data_keys SET active = 0 WHERE active = 1")
            .execute(&mut **tx)
            .await?;
        query(
            "INSERT INTO data_keys (id, algorithm, wrapped, active, created_at)
             VALUES ($1, $2, $3, 1, $4)",
        )
        .bind(id)
        .bind(algorithm.name())
        .bind(wrapped)
        .bind(now.unix_timestamp())
        .execute(&mut **tx)
        .await?;
        self.keys
            .write()
            .map_err(|_| key_error("key cache poisoned"))?
            .insert(id, key);
        Ok(id)
    }

    /// The data key `id`, unwrapping it from the database the first time.
    async fn key(&self, id: i64) -> Result<AeadKey, StoreError> {
        if let Some(k) = self
            .keys
            .read()
            .map_err(|_| key_error("key cache poisoned"))?
            .get(&id)
        {
            return Ok(k.clone());
        }
        let row = query("SELECT algorithm, wrapped FROM data_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| key_error(format!("data key k{id} is not in this database")))?;
        let algorithm: String = row.try_get("algorithm")?;
        let wrapped: Vec<u8> = row.try_get("wrapped")?;
        let algorithm = AeadAlgorithm::parse(&algorithm)
            .ok_or_else(|| key_error(format!("data key k{id}: unknown algorithm {algorithm}")))?;
        if algorithm != self.master.algorithm() {
            return Err(key_error(format!(
                "data key k{id} is {}, the master key is {}",
                algorithm.name(),
                self.master.algorithm().name()
            )));
        }
        let (nonce, sealed) = wrapped
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(|| key_error(format!("data key k{id}: truncated")))?;
        let raw = self.master.0.open(nonce, &wrap_aad(id), sealed).map_err(|_| {
            key_error(format!(
                "the master key does not open data key k{id}: not the master key this database was created with"
            ))
        })?;
        let key = AeadKey::new(algorithm, &raw).map_err(|_| key_error("data key length"))?;
        self.keys
            .write()
            .map_err(|_| key_error("key cache poisoned"))?
            .insert(id, key.clone());
        Ok(key)
    }

    async fn seal_with(
        &self,
        id: i64,
        field: &str,
        row: &str,
        plaintext: &[u8],
    ) -> Result<String, StoreError> {
        let key = self.key(id).await?;
        let mut nonce = [0_u8; NONCE_LEN];
        system_rng().fill_bytes(&mut nonce);
        let mut bytes = nonce.to_vec();
        bytes.extend(key.seal(&nonce, &value_aad(field, id, row), plaintext));
        Ok(format!("{PREFIX}k{id}:{}", Base64::encode_string(&bytes)))
    }

    /// Seals `plaintext` for `column` of the row whose [`SealedColumn::key`] is `row`, with
    /// the active data key, read in the caller's write transaction `tx` (see the module docs
    /// for why).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn seal(
        &self,
        tx: &mut Tx,
        column: SealedColumn,
        row: &str,
        plaintext: &[u8],
    ) -> Result<String, StoreError> {
        // Read once per transaction. Activating another key is a write transaction, which
        // cannot happen while this one holds SQLite's write lock; on PostgreSQL this one holds
        // the keys' lock shared, and a rotation's barrier after its switch waits for every
        // transaction that may have sealed under the old key, so its passes over the rows
        // find what they sealed.
        let id = match tx.data_key {
            Some(id) => id,
            None => {
                let id = query_scalar::<Option<i64>>(ACTIVE_ID_SHARED)
                    .bind(KEYS_LOCK)
                    .fetch_optional(&mut **tx)
                    .await?
                    .flatten()
                    .ok_or_else(|| key_error("no active data key"))?;
                tx.data_key = Some(id);
                id
            }
        };
        self.seal_with(id, &column.field(), row, plaintext).await
    }

    /// [`Self::seal`] of text.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn seal_str(
        &self,
        tx: &mut Tx,
        column: SealedColumn,
        row: &str,
        plaintext: &str,
    ) -> Result<String, StoreError> {
        self.seal(tx, column, row, plaintext.as_bytes()).await
    }

    /// Opens the value of `column` in the row whose key is `row`.
    ///
    /// # Errors
    /// [`StoreError::Key`] when it is not a sealed value (written around Fapiao) or does not
    /// open (altered, moved from another column or row, or sealed under a key this database
    /// does not have).
    pub async fn unseal(
        &self,
        column: SealedColumn,
        row: &str,
        value: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let field = column.field();
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Err(key_error(format!(
                "{field} of {row}: not a sealed value (refused: sealed columns hold nothing else)"
            )));
        };
        let bad = || key_error(format!("{field} of {row}: sealed value does not open"));
        let (id, bytes) = parse_sealed(rest).ok_or_else(bad)?;
        let (nonce, sealed) = bytes.split_first_chunk::<NONCE_LEN>().ok_or_else(bad)?;
        self.key(id)
            .await?
            .open(nonce, &value_aad(&field, id, row), sealed)
            .map_err(|_| bad())
    }

    /// [`Self::unseal`] of text.
    ///
    /// # Errors
    /// [`StoreError::Key`], also for a value that is not UTF-8.
    pub async fn unseal_str(
        &self,
        column: SealedColumn,
        row: &str,
        value: &str,
    ) -> Result<Zeroizing<String>, StoreError> {
        let bytes = self.unseal(column, row, value).await?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| key_error(format!("{} of {row}: not text", column.field())))
    }

    /// A value in the format before rows were bound (`enc1:`, bound to column and key id
    /// only), as older builds wrote it: for tests of [`Self::upgrade`].
    ///
    /// # Errors
    /// [`StoreError`].
    #[doc(hidden)]
    pub async fn seal_legacy(
        &self,
        column: SealedColumn,
        plaintext: &[u8],
    ) -> Result<String, StoreError> {
        let id = active_id(self.db.pool())
            .await?
            .ok_or_else(|| key_error("no active data key"))?;
        let key = self.key(id).await?;
        let mut nonce = [0_u8; NONCE_LEN];
        system_rng().fill_bytes(&mut nonce);
        let mut bytes = nonce.to_vec();
        bytes.extend(key.seal(&nonce, &legacy_aad(&column.field(), id), plaintext));
        Ok(format!(
            "{LEGACY_PREFIX}k{id}:{}",
            Base64::encode_string(&bytes)
        ))
    }

    /// What older builds left, opened to be re-sealed: a current value, an `enc1:` value
    /// (bound to its column and key only) or a plain one.
    async fn unseal_any(
        &self,
        column: SealedColumn,
        row: &str,
        value: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if value.starts_with(PREFIX) {
            return self.unseal(column, row, value).await;
        }
        let Some(rest) = value.strip_prefix(LEGACY_PREFIX) else {
            return Ok(Zeroizing::new(value.as_bytes().to_vec()));
        };
        let field = column.field();
        let bad = || key_error(format!("{field} of {row}: sealed value does not open"));
        let (id, bytes) = parse_sealed(rest).ok_or_else(bad)?;
        let (nonce, sealed) = bytes.split_first_chunk::<NONCE_LEN>().ok_or_else(bad)?;
        self.key(id)
            .await?
            .open(nonce, &legacy_aad(&field, id), sealed)
            .map_err(|_| bad())
    }

    /// A keyed digest of `value` for equality search over a column whose values are sealed
    /// (a blind index): HMAC-SM3 under a key derived from the master key, hex. It does not
    /// change when data keys rotate.
    #[must_use]
    pub fn blind_index(&self, field: &str, value: &str) -> String {
        let Ok(mut mac) = <hmac::Hmac<sm3::Sm3> as KeyInit>::new_from_slice(&self.index_key) else {
            return String::new();
        };
        mac.update(field.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        let mut out = String::with_capacity(64);
        for b in mac.finalize().into_bytes() {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The id (`k<n>`) values are sealed with now.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn active_key(&self) -> Result<String, StoreError> {
        active_id(self.db.pool())
            .await?
            .map(|i| format!("k{i}"))
            .ok_or_else(|| key_error("no active data key"))
    }

    /// How many values of `column` are sealed under each key id; `enc1` counts values of the
    /// format before rows were bound, `plain` values that are not sealed (both re-sealed at
    /// the role's next start).
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn census(&self, column: SealedColumn) -> Result<Vec<(String, u64)>, StoreError> {
        let key_id = match self.db.engine() {
            Engine::Sqlite => "substr({c}, {p}, instr(substr({c}, {p}), ':') - 1)",
            Engine::Postgres => "split_part(substr({c}, {p}), ':', 1)",
        }
        .replace("{c}", column.column)
        .replace("{p}", &(PREFIX.len() + 1).to_string());
        let sql = format!(
            "SELECT CASE WHEN {c} LIKE '{PREFIX}%' THEN {key_id}
                    WHEN {c} LIKE '{LEGACY_PREFIX}%' THEN 'enc1' ELSE 'plain' END AS k,
                 CAST(COUNT(*) AS BIGINT) AS n
             FROM {t} WHERE {c} IS NOT NULL GROUP BY 1 ORDER BY 1",
            c = column.column,
            t = column.table,
        );
        let rows = query_text(sql).fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("k")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Makes a new data key active, then re-seals every value of `columns` that is not
    /// under it, `batch` rows per write transaction, so issuing goes on between batches.
    /// `progress(field, done)` is called after each batch. Safe to interrupt and run again.
    ///
    /// # Errors
    /// [`StoreError`]; batches committed before the error stay committed (and correct).
    pub async fn rotate(
        &self,
        columns: &[SealedColumn],
        batch: u32,
        now: OffsetDateTime,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.db.begin_write().await?;
        tx.lock(KEYS_LOCK).await?;
        let id = self.create_key(&mut tx, now).await?;
        tx.commit().await?;
        // The barrier: every transaction that read the old key (it holds the keys' lock
        // shared) has ended, so the passes below find what it sealed.
        let mut barrier = self.db.begin_write().await?;
        barrier.lock(KEYS_LOCK).await?;
        barrier.commit().await?;
        let current = format!("{PREFIX}k{id}:%");
        let mut resealed = Vec::new();
        for column in columns {
            let done = self
                .reseal(*column, id, &current, batch, &mut progress)
                .await?;
            resealed.push((column.field(), done));
        }
        Ok(Rotation {
            key: format!("k{id}"),
            resealed,
        })
    }

    /// Re-seals under key `id` every value of `column` not matching `keep` (a `LIKE`
    /// pattern), `batch` rows per write transaction; how many.
    async fn reseal(
        &self,
        column: SealedColumn,
        id: i64,
        keep: &str,
        batch: u32,
        progress: &mut impl FnMut(&str, u64),
    ) -> Result<u64, StoreError> {
        let field = column.field();
        let mut done = 0_u64;
        loop {
            let mut tx = self.db.begin_write().await?;
            let rows = query_text(format!(
                "SELECT CAST(({k}) AS TEXT) AS r, {c} AS v FROM {t}
                 WHERE {c} IS NOT NULL AND {c} NOT LIKE $1 LIMIT $2",
                c = column.column,
                t = column.table,
                k = column.key,
            ))
            .bind(keep)
            .bind(i64::from(batch.max(1)))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                tx.commit().await?;
                return Ok(done);
            }
            for r in &rows {
                let row: String = r.try_get("r")?;
                let value: String = r.try_get("v")?;
                let plain = self.unseal_any(column, &row, &value).await?;
                let sealed = self.seal_with(id, &field, &row, &plain).await?;
                // Unchanged since read: a value written meanwhile under the new key stays as
                // it is.
                query_text(format!(
                    "UPDATE {t} SET {c} = $1 WHERE CAST(({k}) AS TEXT) = $2 AND {c} = $3",
                    c = column.column,
                    t = column.table,
                    k = column.key,
                ))
                .bind(sealed)
                .bind(row)
                .bind(value)
                .execute(&mut tx)
                .await?;
            }
            tx.commit().await?;
            done += rows.len() as u64;
            progress(&field, done);
        }
    }

    /// Re-seals, under the active key, what older builds left in `columns`: plain values and
    /// `enc1:` values (not bound to their rows). Once per column and database: a column done
    /// is recorded (`sealed_columns`), so later starts only read that record. Returns the
    /// values re-sealed per column.
    ///
    /// # Errors
    /// [`StoreError`], also for an `enc1:` value that does not open (the role then refuses
    /// to start rather than serve a column it cannot read).
    pub async fn upgrade(
        &self,
        columns: &[SealedColumn],
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for column in columns {
            let field = column.field();
            let done: Option<i64> =
                query_scalar("SELECT format FROM sealed_columns WHERE field = $1")
                    .bind(&field)
                    .fetch_optional(self.db.pool())
                    .await?;
            if done == Some(2) {
                continue;
            }
            let id = active_id(self.db.pool())
                .await?
                .ok_or_else(|| key_error("no active data key"))?;
            let n = self
                .reseal(*column, id, &format!("{PREFIX}%"), 500, &mut |_, _| {})
                .await?;
            let mut tx = self.db.begin_write().await?;
            query(
                "INSERT INTO sealed_columns (field, format) VALUES ($1, 2)
                 ON CONFLICT (field) DO UPDATE SET format = 2",
            )
            .bind(&field)
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            if n > 0 {
                tracing::info!(field, resealed = n, "values of an older format re-sealed");
            }
            out.push((field, n));
        }
        Ok(out)
    }
}
