//! The PostgreSQL engine: a pool of connections to a role's database on a server that
//! replicas of the role share.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};

use crate::StoreError;

/// Connections a process keeps to its role's database: more than the requests in flight
/// that read at once; writes take turns per process ([`crate::Db::begin_write`]).
const POOL: u32 = 16;

fn options(url: &str) -> Result<PgConnectOptions, StoreError> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::Url(redacted(url)))?
        .application_name("fapiao")
        // A replica stopped in the middle of a transaction (a hung process, a lost network)
        // must not hold its row locks for ever.
        .options([("idle_in_transaction_session_timeout", "60s")]))
}

/// A database URL without its password, for messages and logs.
#[must_use]
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A pool for `url`.
pub(crate) async fn connect(url: &str) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(POOL)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_with(options(url)?)
        .await?)
}

/// Creates the database `url` names unless it exists (connecting to the server's
/// `postgres` database to do so). Returns whether it was created. A SQLite URL: nothing to
/// do (the file is created when opened).
///
/// # Errors
/// [`StoreError`]: the server cannot be reached, or the user may not create databases.
pub async fn create_database(url: &str) -> Result<bool, StoreError> {
    if crate::Engine::of_url(url)? == crate::Engine::Sqlite {
        return Ok(false);
    }
    let target = options(url)?;
    let name = target
        .get_database()
        .ok_or_else(|| StoreError::Url(redacted(url)))?
        .to_owned();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(StoreError::Url(format!(
            "{}: the database name must be letters, digits, `_` or `-`",
            redacted(url)
        )));
    }
    let mut admin = target.clone().database("postgres").connect().await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_some() {
        return Ok(false);
    }
    // The name is checked above: letters, digits, `_` and `-`, quoted.
    match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
    {
        Ok(_) => Ok(true),
        // Created meanwhile by another process (a replica starting at the same time).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Drops the database `url` names (a benchmark's, a test's), ending its connections.
///
/// # Errors
/// [`StoreError`].
pub async fn drop_database(url: &str) -> Result<(), StoreError> {
    if crate::Engine::of_url(url)? == crate::Engine::Sqlite {
        return Ok(());
    }
    let target = options(url)?;
    let name = target
        .get_database()
        .ok_or_else(|| StoreError::Url(redacted(url)))?
        .to_owned();
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(StoreError::Url(redacted(url)));
    }
    let mut admin = target.clone().database("postgres").connect().await?;
    // The name is checked above: letters, digits, `_` and `-`, quoted.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/fapiao_cloud"),
            "postgres://app:***@db:5432/fapiao_cloud"
        );
        assert_eq!(
            redacted("postgres://app@db/fapiao"),
            "postgres://app@db/fapiao"
        );
        assert_eq!(redacted("postgres://db/fapiao"), "postgres://db/fapiao");
    }
}
