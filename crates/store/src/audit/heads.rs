//! Signed chain heads: from time to time the role signs the newest record's `seq` and `hash`
//! with its signing key. Each head names the one before it (`prev`, the SM3 of its signed
//! bytes), so the heads form a chain of their own, and each is copied to a [`Witness`] file
//! outside the database: deleting the log's tail together with its heads leaves the copies.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use fapiao_crypto::{Certificate, Purpose, TrustStore};
use time::OffsetDateTime;

use super::{GENESIS, HEAD, PRUNED, hex};
use crate::engine::{Executor, Row, query, query_as, query_scalar};
use crate::{Db, StoreError};

/// The advisory lock under which heads are signed and the chain is cut (replicas sign one
/// after the other, each chaining to the head before).
pub const HEADS_LOCK: &str = "fapiao.audit_heads";

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The record signed.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When (Unix seconds).
    pub signed_at: i64,
    /// [`Head::id`] of the head before (or [`GENESIS`] for the first, or the last pruned
    /// head's id after a retention cut); `None` for heads signed before heads were chained,
    /// which sign only `seq` and `hash`.
    pub prev: Option<String>,
    /// DER signature over [`Head::signed_bytes`].
    pub signature: Vec<u8>,
    /// The signer's certificate, DER.
    pub certificate: Vec<u8>,
}

/// Every head, oldest first, as [`Head::from_row`] reads them.
pub(super) const ALL: &str =
    "SELECT seq, hash, signed_at, prev, signature, certificate FROM audit_heads ORDER BY seq";
const NEWEST: &str = "SELECT seq, hash, signed_at, prev, signature, certificate FROM audit_heads
    ORDER BY seq DESC LIMIT 1";
const INSERT: &str = "INSERT INTO audit_heads (seq, hash, signed_at, prev, signature, certificate)
    VALUES ($1, $2, $3, $4, $5, $6)";
const LAST_CUT: &str = "SELECT detail FROM audit_log WHERE action = $1 ORDER BY seq DESC LIMIT 1";

impl Head {
    /// The bytes the signature covers:
    /// `fapiao-audit-head:2:<seq>:<hash>:<signed_at>:<prev>` (heads before chaining:
    /// `fapiao-audit-head:<seq>:<hash>`).
    #[must_use]
    pub fn signed_bytes(&self) -> Vec<u8> {
        match &self.prev {
            Some(prev) => Self::bytes(self.seq, &self.hash, self.signed_at, prev),
            None => format!("fapiao-audit-head:{}:{}", self.seq, self.hash).into_bytes(),
        }
    }

    fn bytes(seq: i64, hash: &str, signed_at: i64, prev: &str) -> Vec<u8> {
        format!("fapiao-audit-head:2:{seq}:{hash}:{signed_at}:{prev}").into_bytes()
    }

    /// The head's identity, which the next head names as `prev`: SM3 of its signed bytes, hex.
    #[must_use]
    pub fn id(&self) -> String {
        hex(&fapiao_crypto::primitives::sm3(&self.signed_bytes()))
    }

    /// Checks the signature, and the signer's certificate for signing as it stood when the
    /// head was signed (a certificate revoked later still vouches for what it signed before;
    /// see [`TrustStore::validate_at`]). Returns the signer's `role:name`.
    ///
    /// # Errors
    /// What is wrong, in words.
    pub fn check_signature(&self, trust: &TrustStore) -> Result<String, String> {
        let cert = Certificate::from_der(&self.certificate)
            .map_err(|e| format!("its certificate does not parse: {e}"))?;
        let at = OffsetDateTime::from_unix_timestamp(self.signed_at)
            .map_err(|_| format!("signed at an impossible time {}", self.signed_at))?;
        trust
            .validate_at(&cert, &[], Purpose::Signing, at)
            .map_err(|e| format!("its signer's certificate was not valid when it signed: {e}"))?;
        cert.public_key()
            .map_err(|e| e.to_string())?
            .verify(&self.signed_bytes(), &self.signature)
            .map_err(|_| "its signature does not verify".to_owned())?;
        Ok(cert.subject().map(|s| s.identity()).unwrap_or_default())
    }

    pub(crate) fn from_row(r: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            seq: r.try_get("seq")?,
            hash: r.try_get("hash")?,
            signed_at: r.try_get("signed_at")?,
            prev: r.try_get("prev")?,
            signature: r.try_get("signature")?,
            certificate: r.try_get("certificate")?,
        })
    }

    /// The head as one witness line (JSON, binary fields in hex).
    #[must_use]
    pub fn to_witness_line(&self) -> String {
        serde_json::json!({
            "seq": self.seq,
            "hash": self.hash,
            "signed_at": self.signed_at,
            "prev": self.prev,
            "signature": hex(&self.signature),
            "certificate": hex(&self.certificate),
        })
        .to_string()
    }

    /// Reads a witness line.
    ///
    /// # Errors
    /// What is missing or malformed.
    pub fn from_witness_line(line: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("`{k}` missing"))
        };
        let bytes = |k: &str| {
            fapiao_crypto::hex::decode(&text(k)?)
                .map(|b| b.to_vec())
                .ok_or_else(|| format!("`{k}` is not hex"))
        };
        Ok(Self {
            seq: v["seq"].as_i64().ok_or("`seq` missing")?,
            hash: text("hash")?,
            signed_at: v["signed_at"].as_i64().ok_or("`signed_at` missing")?,
            prev: v["prev"].as_str().map(str::to_owned),
            signature: bytes("signature")?,
            certificate: bytes("certificate")?,
        })
    }
}

/// The newest head, if any.
pub(crate) async fn newest(ex: impl Executor) -> Result<Option<Head>, StoreError> {
    query(NEWEST)
        .fetch_optional(ex)
        .await?
        .map(|r| Head::from_row(&r))
        .transpose()
}

/// What the next head chains to when there is no head: the id of the last head a retention
/// cut removed (recorded in the cut's record), or [`GENESIS`].
pub(super) async fn anchor(ex: impl Executor) -> Result<String, StoreError> {
    let detail: Option<String> = query_scalar(LAST_CUT)
        .bind(PRUNED)
        .fetch_optional(ex)
        .await?;
    Ok(detail
        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
        .and_then(|d| d["head"].as_str().map(str::to_owned))
        .unwrap_or_else(|| GENESIS.to_owned()))
}

/// Signs the current head with `sign` unless it is already signed; returns the head signed.
/// Replicas sign one after the other ([`HEADS_LOCK`]), each head naming the one before.
///
/// # Errors
/// [`StoreError`].
pub async fn sign_head(
    db: &Db,
    now: OffsetDateTime,
    certificate: &[u8],
    sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<Option<Head>, StoreError> {
    let mut tx = db.begin_write().await?;
    tx.lock(HEADS_LOCK).await?;
    let Some((seq, hash)) = query_as::<(i64, String)>(HEAD)
        .fetch_optional(&mut tx)
        .await?
    else {
        return Ok(None);
    };
    let before = newest(&mut *tx).await?;
    if before.as_ref().is_some_and(|h| h.seq >= seq) {
        return Ok(None);
    }
    let prev = match &before {
        Some(h) => h.id(),
        None => anchor(&mut *tx).await?,
    };
    let signed_at = now.unix_timestamp();
    let Some(signature) = sign(&Head::bytes(seq, &hash, signed_at, &prev)) else {
        return Ok(None);
    };
    let head = Head {
        seq,
        hash,
        signed_at,
        prev: Some(prev),
        signature,
        certificate: certificate.to_vec(),
    };
    query(INSERT)
        .bind(head.seq)
        .bind(&head.hash)
        .bind(head.signed_at)
        .bind(&head.prev)
        .bind(&head.signature)
        .bind(&head.certificate)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(head))
}

/// An append-only file of signed heads, one [`Head::to_witness_line`] per line, outside the
/// database: `fapiao audit verify --witness` finds every head in it still in the database.
/// Each line is written in one `write` to a file opened for appending and synced before
/// [`Witness::append`] returns; several processes may append to one file.
#[derive(Debug, Clone)]
pub struct Witness {
    path: PathBuf,
}

impl Witness {
    /// The witness at `path` (created, with its directory, at the first append).
    #[must_use]
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `head` and syncs.
    ///
    /// # Errors
    /// The I/O error.
    pub fn append(&self, head: &Head) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(format!("{}\n", head.to_witness_line()).as_bytes())?;
        f.sync_data()
    }

    /// Every head in the file, in file order.
    ///
    /// # Errors
    /// The file unreadable, or the first line that does not parse (with its number).
    pub fn read(&self) -> Result<Vec<Head>, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        // A last line without its newline is a write that did not finish (the head it
        // carried was signed, but its append reported failure): not a line of the file.
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                Head::from_witness_line(l)
                    .map_err(|e| format!("{} line {}: {e}", self.path.display(), i + 1))
            })
            .collect()
    }
}
