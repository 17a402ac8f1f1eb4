//! Many rows in one statement, whatever their number: the rows travel as one JSON parameter.

use crate::StoreError;
use crate::engine::{Engine, Executor, query_text};

/// Inserts `rows` into `table` in one statement, whatever their number: each row a JSON
/// array of its values in `columns` order. Returns how many went in. On SQLite the rows are
/// read with `jsonb_each`; on PostgreSQL with `jsonb_populate_recordset`, which gives each
/// value its column's type.
///
/// # Errors
/// [`StoreError::Sqlx`].
pub async fn insert_rows(
    ex: &mut dyn Executor,
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<serde_json::Value>,
) -> Result<u64, StoreError> {
    insert_rows_then(ex, table, columns, rows, None).await
}

/// [`insert_rows`], then on SQLite the statement `then` in the same round trip to the
/// connection (not run if the insert fails); `then` alone when there are no rows. On
/// PostgreSQL, which takes parameters only in single statements, `then` is left to the
/// caller.
pub(crate) async fn insert_rows_then(
    ex: &mut dyn Executor,
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<serde_json::Value>,
    then: Option<&'static str>,
) -> Result<u64, StoreError> {
    let engine = ex.engine();
    if rows.is_empty() {
        if let (Some(then), Engine::Sqlite) = (then, engine) {
            query_text(then.to_owned()).execute(&mut *ex).await?;
        }
        return Ok(0);
    }
    // `table`, `columns` and `then` are `'static` constants of this crate or the calling
    // one, never input.
    let (sql, rows) = match engine {
        Engine::Sqlite => {
            let values: Vec<String> = (0..columns.len())
                .map(|i| format!("json_extract(value, '$[{i}]')"))
                .collect();
            let mut sql = format!(
                "INSERT INTO {table} ({}) SELECT {} FROM jsonb_each($1)",
                columns.join(", "),
                values.join(", ")
            );
            if let Some(then) = then {
                sql.push_str("; ");
                sql.push_str(then);
            }
            (sql, rows)
        }
        Engine::Postgres => {
            let objects = rows
                .into_iter()
                .map(|row| match row {
                    serde_json::Value::Array(values) => serde_json::Value::Object(
                        columns
                            .iter()
                            .map(|c| (*c).to_owned())
                            .zip(values)
                            .collect(),
                    ),
                    other => other,
                })
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({cols}) SELECT {cols}
                 FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) WITH ORDINALITY AS r
                 ORDER BY r.ordinality",
                cols = columns.join(", ")
            );
            (sql, objects)
        }
    };
    Ok(query_text(sql)
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *ex)
        .await?
        .rows_affected())
}
