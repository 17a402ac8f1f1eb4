//! Retention: rows older than their class's retention are exported, then deleted — never
//! deleted before the export is on disk (written, `fsync`ed) — in batches, each deletion its
//! own write transaction so the role keeps running.
//!
//! Classes: **logs** (delivery and upload logs; default 180 days) and **invoices** (invoices
//! and the audit records of the same period; default 10 years). Exports are JSON lines, one
//! object per row with its columns (BLOBs in upper-case hex), appended to
//! `<dir>/<role>.<table>.jsonl`; a run interrupted between export and delete exports those rows
//! again on the next run (same key: deduplicate by it).
//!
//! The audit chain is cut only at a signed head, and the cut is itself recorded in the chain
//! (`audit.pruned` with the last pruned record's seq and hash), so [`crate::audit::verify`]
//! can tell a retention cut from deleted records.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use time::{Duration, OffsetDateTime, UtcOffset};

// Table and column names in dynamic SQL come from `Rule`s, `'static` constants of the role
// crates, and from the database's own catalogue; never input.
use crate::engine::{Engine, Value, query, query_as, query_scalar, query_text};
use crate::{Db, StoreError};

/// A retention class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Delivery, upload and replay logs.
    Logs,
    /// Invoices and their audit records.
    Invoices,
}

/// How a rule's time column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    /// Unix seconds.
    Unix,
    /// `yyyy-MM-dd HH:mm:ss`, China time.
    ChinaText,
}

/// Rows of `table` whose `column` is older than the class's retention (and that match
/// `filter`, an SQL condition or empty) expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The class.
    pub class: Class,
    /// Table.
    pub table: &'static str,
    /// Its key column (rows are exported and deleted by it).
    pub key: &'static str,
    /// Time column.
    pub column: &'static str,
    /// How it is written.
    pub age: Age,
    /// Extra condition (`state = 'done'`), or empty.
    pub filter: &'static str,
}

/// Retention periods, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Logs (default 180).
    #[serde(default = "default_logs")]
    pub logs_days: u32,
    /// Invoices and their audit records (default 3653, ten years).
    #[serde(default = "default_invoices")]
    pub invoice_days: u32,
}

fn default_logs() -> u32 {
    180
}
fn default_invoices() -> u32 {
    3653
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            logs_days: default_logs(),
            invoice_days: default_invoices(),
        }
    }
}

/// What one table gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Table.
    pub table: String,
    /// Rows exported and deleted.
    pub rows: u64,
    /// The export file (absent when nothing expired).
    pub export: Option<PathBuf>,
}

const BATCH: i64 = 1000;

impl Retention {
    fn cutoff(&self, class: Class, now: OffsetDateTime) -> OffsetDateTime {
        let days = match class {
            Class::Logs => self.logs_days,
            Class::Invoices => self.invoice_days,
        };
        now - Duration::days(i64::from(days))
    }

    /// Exports then deletes what expired under `rules` in `db` of `role`, then cuts the audit
    /// chain (invoice class) at the newest signed head older than the cutoff.
    ///
    /// # Errors
    /// [`StoreError`]; what was exported and deleted before the error stays so.
    pub async fn apply(
        &self,
        db: &Db,
        role: &str,
        rules: &[Rule],
        now: OffsetDateTime,
        dir: &Path,
    ) -> Result<Vec<Pruned>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
        let mut out = Vec::new();
        for rule in rules {
            let cutoff = self.cutoff(rule.class, now);
            let bound = match rule.age {
                Age::Unix => Value::from(cutoff.unix_timestamp()),
                Age::ChinaText => {
                    let c =
                        cutoff.to_offset(UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC));
                    Value::from(format!(
                        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                        c.year(),
                        u8::from(c.month()),
                        c.day(),
                        c.hour(),
                        c.minute(),
                        c.second()
                    ))
                }
            };
            let condition = format!(
                "{col} < $1{and}{filter}",
                col = rule.column,
                and = if rule.filter.is_empty() { "" } else { " AND " },
                filter = rule.filter
            );
            let (rows, export) = export_and_delete(db, role, rule, &condition, &bound, dir).await?;
            out.push(Pruned {
                table: rule.table.to_owned(),
                rows,
                export,
            });
        }
        out.push(self.cut_audit(db, role, now, dir).await?);
        Ok(out)
    }

    async fn cut_audit(
        &self,
        db: &Db,
        role: &str,
        now: OffsetDateTime,
        dir: &Path,
    ) -> Result<Pruned, StoreError> {
        let cutoff = self.cutoff(Class::Invoices, now).unix_timestamp();
        let head = query(
            "SELECT h.seq, h.hash, h.signed_at, h.prev, h.signature, h.certificate
             FROM audit_heads h JOIN audit_log l ON l.seq = h.seq
             WHERE l.at < $1 ORDER BY h.seq DESC LIMIT 1",
        )
        .bind(cutoff)
        .fetch_optional(db.pool())
        .await?
        .map(|r| crate::audit::Head::from_row(&r))
        .transpose()?;
        let Some(head) = head else {
            return Ok(Pruned {
                table: "audit_log".into(),
                rows: 0,
                export: None,
            });
        };
        let (through, hash, head_id) = (head.seq, head.hash.clone(), head.id());
        let bound = Value::from(through);
        let (_, heads_file) =
            export_rows(db, role, "audit_heads", "seq <= $1", &bound, dir).await?;
        let (rows, export) = export_rows(db, role, "audit_log", "seq <= $1", &bound, dir).await?;
        let mut tx = db.begin_write().await?;
        // Not while a replica signs a head: the next head chains to the one cut here.
        tx.lock(crate::audit::HEADS_LOCK).await?;
        query("DELETE FROM audit_heads WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await?;
        // The head read with the `BEGIN` may be among the records just deleted: the commit
        // reads it again.
        tx.audit.head = None;
        crate::audit::append(
            &mut tx,
            now,
            "system",
            crate::audit::PRUNED,
            &format!("{through}"),
            &serde_json::json!({
                "through": through,
                "hash": hash,
                "head": head_id,
                "export": export.as_ref().or(heads_file.as_ref()).map(|p| p.display().to_string()),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(Pruned {
            table: "audit_log".into(),
            rows,
            export,
        })
    }
}

fn io(path: &Path, e: &std::io::Error) -> StoreError {
    StoreError::Key(format!("retention export {}: {e}", path.display()))
}

/// The JSON object of a row of `table`: every column by name, BLOBs in upper-case hex.
async fn json_of_row(db: &Db, table: &str) -> Result<String, StoreError> {
    Ok(match db.engine() {
        Engine::Sqlite => {
            let cols: Vec<String> = query_scalar("SELECT name FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(db.pool())
                .await?;
            let parts: Vec<String> = cols
                .iter()
                .map(|name| {
                    format!(
                        "'{name}', CASE WHEN typeof({name}) = 'blob' THEN hex({name}) ELSE {name} END"
                    )
                })
                .collect();
            format!("json_object({})", parts.join(", "))
        }
        Engine::Postgres => {
            let cols: Vec<(String, String)> = query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(db.pool())
            .await?;
            let parts: Vec<String> = cols
                .iter()
                .map(|(name, kind)| {
                    if kind == "bytea" {
                        format!("'{name}', upper(encode({name}, 'hex'))")
                    } else {
                        format!("'{name}', {name}")
                    }
                })
                .collect();
            format!("json_build_object({})::text", parts.join(", "))
        }
    })
}

/// Appends every row of `table` (an audit table, keyed by `seq`) matching `condition`
/// (bound `$1`) to the export file and syncs it; returns how many and the file.
async fn export_rows(
    db: &Db,
    role: &str,
    table: &str,
    condition: &str,
    bound: &Value,
    dir: &Path,
) -> Result<(u64, Option<PathBuf>), StoreError> {
    let json = json_of_row(db, table).await?;
    let rows: Vec<String> = query_text(format!(
        "SELECT {json} FROM {table} WHERE {condition} ORDER BY seq"
    ))
    .bind(bound.clone())
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok((0, None));
    }
    let path = dir.join(format!("{role}.{table}.jsonl"));
    append_synced(&path, &rows)?;
    Ok((rows.len() as u64, Some(path)))
}

fn append_synced(path: &Path, lines: &[String]) -> Result<(), StoreError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(path, &e))?;
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io(path, &e))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

async fn export_and_delete(
    db: &Db,
    role: &str,
    rule: &Rule,
    condition: &str,
    bound: &Value,
    dir: &Path,
) -> Result<(u64, Option<PathBuf>), StoreError> {
    let (table, key) = (rule.table, rule.key);
    let json = json_of_row(db, table).await?;
    let path = dir.join(format!("{role}.{table}.jsonl"));
    let mut total = 0_u64;
    loop {
        let rows = query_text(format!(
            "SELECT {key} AS k, {json} AS j FROM {table} WHERE {condition} ORDER BY {key} LIMIT {BATCH}"
        ))
        .bind(bound.clone())
        .fetch_all(db.pool())
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut keys = Vec::with_capacity(rows.len());
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            keys.push(r.value("k")?);
            lines.push(r.try_get::<String, _>("j")?);
        }
        // The export is durable before anything is deleted.
        append_synced(&path, &lines)?;
        let mut tx = db.begin_write().await?;
        let list = (2..keys.len() + 2)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut delete = query_text(format!(
            "DELETE FROM {table} WHERE {key} IN ({list}) AND {condition}"
        ))
        .bind(bound.clone());
        for k in keys.iter().cloned() {
            delete = delete.bind(k);
        }
        delete.execute(&mut *tx).await?;
        tx.commit().await?;
        total += keys.len() as u64;
    }
    Ok((total, (total > 0).then_some(path)))
}
