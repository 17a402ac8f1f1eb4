//! The seam between the roles and the two database engines: statements ([`Sql`], one text
//! for both engines or one per engine), their parameters ([`Value`]), rows ([`Row`]) and
//! what statements run on ([`Executor`]: a [`crate::Tx`], a [`crate::Reader`] or the pool).
//!
//! Roles name none of sqlx's types; they write
//! `query(STATEMENT).bind(a).bind(b).fetch_one(&mut *tx)` and read columns with
//! [`Row::try_get`], whatever the engine. Each engine decodes with its own sqlx driver, so a
//! column is read as the engine stores it: on PostgreSQL every integer column is `BIGINT`
//! (an `i64`), on SQLite every integer is one.

use std::marker::PhantomData;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use crate::StoreError;

/// The engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite: one file per role, one writer at a time.
    Sqlite,
    /// PostgreSQL: a server, replicas of a role side by side.
    Postgres,
}

impl Engine {
    /// The engine a database URL names: `sqlite:…` or `postgres://…` (`postgresql://…`).
    ///
    /// # Errors
    /// [`StoreError::Url`] for any other scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Url(url.to_owned()))
        }
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A statement: the same text on both engines ([`Sql::portable`], most of them: `$n`
/// parameters, `ON CONFLICT`, `RETURNING` and `UPDATE … FROM` mean the same on both), or one
/// text per engine where the dialects differ ([`Sql::dialects`]: JSON parameters, row locks).
/// A text may be empty on one engine: nothing is run there ([`Sql::postgres_only`], for a row
/// lock SQLite's whole-database write lock makes unneeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sql {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Sql {
    /// One text for both engines.
    #[must_use]
    pub const fn portable(text: &'static str) -> Self {
        Self {
            sqlite: text,
            postgres: text,
        }
    }

    /// One text per engine.
    #[must_use]
    pub const fn dialects(sqlite: &'static str, postgres: &'static str) -> Self {
        Self { sqlite, postgres }
    }

    /// A statement only PostgreSQL runs (a row lock): on SQLite, a write transaction holds
    /// the whole database's write lock from its `BEGIN` already.
    #[must_use]
    pub const fn postgres_only(postgres: &'static str) -> Self {
        Self {
            sqlite: "",
            postgres,
        }
    }

    /// The text for `engine`.
    #[must_use]
    pub const fn text(&self, engine: Engine) -> &'static str {
        match engine {
            Engine::Sqlite => self.sqlite,
            Engine::Postgres => self.postgres,
        }
    }
}

impl From<&'static str> for Sql {
    fn from(text: &'static str) -> Self {
        Self::portable(text)
    }
}

/// A statement parameter. A `NULL` keeps its type (PostgreSQL checks it against the column).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (`INTEGER` on SQLite, `BIGINT` on PostgreSQL).
    Int(Option<i64>),
    /// Text.
    Text(Option<String>),
    /// Bytes (`BLOB`, `BYTEA`).
    Bytes(Option<Vec<u8>>),
    /// A truth value (`INTEGER` 0/1 on SQLite, `BOOLEAN` on PostgreSQL).
    Bool(Option<bool>),
}

macro_rules! value_from {
    ($variant:ident: $($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from($v: $t) -> Self {
                Self::$variant($e)
            }
        }
    )*};
}

value_from!(Int:
    i64 => |v| Some(v),
    &i64 => |v| Some(*v),
    i32 => |v| Some(i64::from(v)),
    u32 => |v| Some(i64::from(v)),
    u8 => |v| Some(i64::from(v)),
    Option<i64> => |v| v,
    &Option<i64> => |v| *v,
);
value_from!(Text:
    &str => |v| Some(v.to_owned()),
    &&str => |v| Some((*v).to_owned()),
    String => |v| Some(v),
    &String => |v| Some(v.clone()),
    Option<String> => |v| v,
    &Option<String> => |v| v.clone(),
    Option<&str> => |v| v.map(str::to_owned),
    Option<&String> => |v| v.cloned(),
);
value_from!(Bytes:
    Vec<u8> => |v| Some(v),
    &Vec<u8> => |v| Some(v.clone()),
    &[u8] => |v| Some(v.to_vec()),
    Option<Vec<u8>> => |v| v,
    &Option<Vec<u8>> => |v| v.clone(),
);
value_from!(Bool:
    bool => |v| Some(v),
    Option<bool> => |v| v,
);

/// Where a statement runs: a connection (in a transaction or not) or a pool of either
/// engine. What [`Executor`]s hand to the statements of this module.
#[doc(hidden)]
#[derive(Debug)]
pub enum Target<'a> {
    /// A SQLite connection.
    Sqlite(&'a mut SqliteConnection),
    /// A PostgreSQL connection.
    Postgres(&'a mut PgConnection),
    /// A SQLite pool (each statement on a connection of its own).
    SqlitePool(&'a SqlitePool),
    /// A PostgreSQL pool.
    PostgresPool(&'a PgPool),
}

impl Target<'_> {
    /// The target's engine.
    #[must_use]
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) | Self::SqlitePool(_) => Engine::Sqlite,
            Self::Postgres(_) | Self::PostgresPool(_) => Engine::Postgres,
        }
    }
}

/// What statements run on: a transaction ([`crate::Tx`]), a read connection
/// ([`crate::Reader`]) or the pool ([`crate::Db::pool`]). A transaction and a read
/// connection dereference to `dyn Executor`, so `&mut *tx` is what a statement runs on and
/// what a function taking `&mut dyn Executor` is given.
pub trait Executor: Send {
    /// The connection or pool to run on.
    #[doc(hidden)]
    fn target(&mut self) -> Target<'_>;

    /// The engine.
    fn engine(&mut self) -> Engine {
        self.target().engine()
    }
}

impl Executor for Target<'_> {
    fn target(&mut self) -> Target<'_> {
        match self {
            Self::Sqlite(c) => Target::Sqlite(c),
            Self::Postgres(c) => Target::Postgres(c),
            Self::SqlitePool(p) => Target::SqlitePool(p),
            Self::PostgresPool(p) => Target::PostgresPool(p),
        }
    }
}

impl<E: Executor + ?Sized> Executor for &mut E {
    fn target(&mut self) -> Target<'_> {
        (**self).target()
    }
}

/// A statement with its parameters ([`query`]).
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until it is executed or fetched"]
pub struct Query {
    sql: Text,
    args: Vec<Value>,
}

#[derive(Debug, Clone)]
enum Text {
    Static(Sql),
    /// Made for the engine at hand ([`query_text`]).
    Owned(String),
}

/// A statement to run.
pub fn query(sql: impl Into<Sql>) -> Query {
    Query {
        sql: Text::Static(sql.into()),
        args: Vec::new(),
    }
}

/// A statement whose text was put together at run time, for the engine it will run on:
/// table and column names of this crate's callers' `'static` constants, never input.
pub fn query_text(text: String) -> Query {
    Query {
        sql: Text::Owned(text),
        args: Vec::new(),
    }
}

/// What an executed statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done(u64);

impl Done {
    /// Rows inserted, updated or deleted.
    #[must_use]
    pub fn rows_affected(&self) -> u64 {
        self.0
    }
}

fn sqlite_args(args: Vec<Value>) -> Result<SqliteArguments, StoreError> {
    use sqlx::Arguments as _;
    let mut a = SqliteArguments::default();
    for v in args {
        let r = match v {
            Value::Int(v) => a.add(v),
            Value::Text(v) => a.add(v),
            Value::Bytes(v) => a.add(v),
            Value::Bool(v) => a.add(v),
        };
        r.map_err(|e| StoreError::Data(format!("binding a parameter: {e}")))?;
    }
    Ok(a)
}

fn postgres_args(args: Vec<Value>) -> Result<PgArguments, StoreError> {
    use sqlx::Arguments as _;
    let mut a = PgArguments::default();
    for v in args {
        let r = match v {
            Value::Int(v) => a.add(v),
            Value::Text(v) => a.add(v),
            Value::Bytes(v) => a.add(v),
            Value::Bool(v) => a.add(v),
        };
        r.map_err(|e| StoreError::Data(format!("binding a parameter: {e}")))?;
    }
    Ok(a)
}

/// How a statement is fetched.
enum Fetch {
    Execute,
    All,
    Optional,
}

/// A statement's outcome, per [`Fetch`].
enum Fetched {
    Done(u64),
    Rows(Vec<Row>),
    Row(Option<Row>),
}

impl Query {
    /// Adds the next parameter (`$1`, `$2`, … in order).
    pub fn bind(mut self, value: impl Into<Value>) -> Self {
        self.args.push(value.into());
        self
    }

    async fn run(self, mut ex: impl Executor, fetch: Fetch) -> Result<Fetched, StoreError> {
        let target = ex.target();
        let engine = target.engine();
        let text = match &self.sql {
            Text::Static(sql) => sql.text(engine),
            Text::Owned(s) => s.as_str(),
        };
        if text.is_empty() {
            // Not run on this engine (`Sql::postgres_only`).
            return Ok(match fetch {
                Fetch::Execute => Fetched::Done(0),
                Fetch::All => Fetched::Rows(Vec::new()),
                Fetch::Optional => Fetched::Row(None),
            });
        }
        macro_rules! go {
            ($q:expr, $ex:expr, $variant:ident) => {{
                let q = $q;
                match fetch {
                    Fetch::Execute => Fetched::Done(q.execute($ex).await?.rows_affected()),
                    Fetch::All => Fetched::Rows(
                        q.fetch_all($ex)
                            .await?
                            .into_iter()
                            .map(|r| Row(RowInner::$variant(r)))
                            .collect(),
                    ),
                    Fetch::Optional => Fetched::Row(
                        q.fetch_optional($ex)
                            .await?
                            .map(|r| Row(RowInner::$variant(r))),
                    ),
                }
            }};
        }
        // The text is a `'static` constant or was made from callers' constants
        // (`query_text`): never input.
        let text = AssertSqlSafe(text.to_owned());
        Ok(match target {
            Target::Sqlite(c) => go!(
                sqlx::query_with::<Sqlite, _>(text, sqlite_args(self.args)?),
                &mut *c,
                Sqlite
            ),
            Target::SqlitePool(p) => go!(
                sqlx::query_with::<Sqlite, _>(text, sqlite_args(self.args)?),
                p,
                Sqlite
            ),
            Target::Postgres(c) => go!(
                sqlx::query_with::<Postgres, _>(text, postgres_args(self.args)?),
                &mut *c,
                Postgres
            ),
            Target::PostgresPool(p) => go!(
                sqlx::query_with::<Postgres, _>(text, postgres_args(self.args)?),
                p,
                Postgres
            ),
        })
    }

    /// Runs the statement.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn execute(self, ex: impl Executor) -> Result<Done, StoreError> {
        match self.run(ex, Fetch::Execute).await? {
            Fetched::Done(n) => Ok(Done(n)),
            _ => Ok(Done(0)),
        }
    }

    /// Every row.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn fetch_all(self, ex: impl Executor) -> Result<Vec<Row>, StoreError> {
        match self.run(ex, Fetch::All).await? {
            Fetched::Rows(r) => Ok(r),
            _ => Ok(Vec::new()),
        }
    }

    /// The first row, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`].
    pub async fn fetch_optional(self, ex: impl Executor) -> Result<Option<Row>, StoreError> {
        match self.run(ex, Fetch::Optional).await? {
            Fetched::Row(r) => Ok(r),
            _ => Ok(None),
        }
    }

    /// The first row.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]; `RowNotFound` when there is none.
    pub async fn fetch_one(self, ex: impl Executor) -> Result<Row, StoreError> {
        self.fetch_optional(ex)
            .await?
            .ok_or(StoreError::Sqlx(sqlx::Error::RowNotFound))
    }
}

/// A statement whose rows are read as `T` ([`query_as`]).
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until it is fetched"]
pub struct QueryAs<T>(Query, PhantomData<fn() -> T>);

/// A statement whose rows are read as `T`, a tuple of its columns in order.
pub fn query_as<T: FromRow>(sql: impl Into<Sql>) -> QueryAs<T> {
    QueryAs(query(sql), PhantomData)
}

impl<T: FromRow> QueryAs<T> {
    /// Adds the next parameter.
    pub fn bind(self, value: impl Into<Value>) -> Self {
        Self(self.0.bind(value), PhantomData)
    }

    /// Every row.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn fetch_all(self, ex: impl Executor) -> Result<Vec<T>, StoreError> {
        self.0
            .fetch_all(ex)
            .await?
            .iter()
            .map(T::from_row)
            .collect()
    }

    /// The first row, if any.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn fetch_optional(self, ex: impl Executor) -> Result<Option<T>, StoreError> {
        self.0
            .fetch_optional(ex)
            .await?
            .as_ref()
            .map(T::from_row)
            .transpose()
    }

    /// The first row.
    ///
    /// # Errors
    /// [`StoreError`]; `RowNotFound` when there is none.
    pub async fn fetch_one(self, ex: impl Executor) -> Result<T, StoreError> {
        T::from_row(&self.0.fetch_one(ex).await?)
    }
}

/// A statement whose rows are read as their first column ([`query_scalar`]).
#[derive(Debug, Clone)]
#[must_use = "a statement does nothing until it is fetched"]
pub struct QueryScalar<T>(Query, PhantomData<fn() -> T>);

/// A statement whose rows are read as their first column, a `T`.
pub fn query_scalar<T: Decode>(sql: impl Into<Sql>) -> QueryScalar<T> {
    QueryScalar(query(sql), PhantomData)
}

impl<T: Decode> QueryScalar<T> {
    /// Adds the next parameter.
    pub fn bind(self, value: impl Into<Value>) -> Self {
        Self(self.0.bind(value), PhantomData)
    }

    /// Every row's first column.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn fetch_all(self, ex: impl Executor) -> Result<Vec<T>, StoreError> {
        self.0
            .fetch_all(ex)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect()
    }

    /// The first row's first column, if there is a row.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn fetch_optional(self, ex: impl Executor) -> Result<Option<T>, StoreError> {
        self.0
            .fetch_optional(ex)
            .await?
            .map(|r| r.try_get(0))
            .transpose()
    }

    /// The first row's first column.
    ///
    /// # Errors
    /// [`StoreError`]; `RowNotFound` when there is no row.
    pub async fn fetch_one(self, ex: impl Executor) -> Result<T, StoreError> {
        self.0.fetch_one(ex).await?.try_get(0)
    }
}

/// A row of either engine.
#[derive(Debug)]
pub struct Row(RowInner);

#[derive(Debug)]
enum RowInner {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A column: its name (`"number"`) or its position from 0.
pub trait ColumnIndex:
    sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug
{
}
impl<I: sqlx::ColumnIndex<SqliteRow> + sqlx::ColumnIndex<PgRow> + std::fmt::Debug> ColumnIndex
    for I
{
}

/// A type a column reads as on both engines: `i64`, `String`, `Vec<u8>`, `bool`, and
/// `Option`s of them (`NULL` as `None`).
pub trait Decode: Sized {
    #[doc(hidden)]
    fn from_sqlite(row: &SqliteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error>;
    #[doc(hidden)]
    fn from_postgres(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error>;
}

impl<T> Decode for T
where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>,
{
    fn from_sqlite(row: &SqliteRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
        sqlx::Row::try_get(row, index)
    }
    fn from_postgres(row: &PgRow, index: impl ColumnIndex) -> Result<Self, sqlx::Error> {
        sqlx::Row::try_get(row, index)
    }
}

impl Row {
    /// The column `index` (a name or a position) as a `T`.
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]: no such column, or it does not read as a `T`.
    pub fn try_get<T: Decode, I: ColumnIndex>(&self, index: I) -> Result<T, StoreError> {
        Ok(match &self.0 {
            RowInner::Sqlite(r) => T::from_sqlite(r, index)?,
            RowInner::Postgres(r) => T::from_postgres(r, index)?,
        })
    }

    /// The column `index` as whichever [`Value`] it holds: an integer, text or bytes
    /// (`NULL` as text).
    ///
    /// # Errors
    /// [`StoreError::Sqlx`]: no such column, or a truth value.
    pub fn value<I: ColumnIndex + Copy>(&self, index: I) -> Result<Value, StoreError> {
        if let Ok(v) = self.try_get::<Option<i64>, _>(index) {
            return Ok(Value::Int(v));
        }
        if let Ok(v) = self.try_get::<Option<String>, _>(index) {
            return Ok(Value::Text(v));
        }
        Ok(Value::Bytes(self.try_get::<Option<Vec<u8>>, _>(index)?))
    }

    /// Whether the row has a column of that name.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        match &self.0 {
            RowInner::Sqlite(r) => sqlx::Row::try_column(r, name).is_ok(),
            RowInner::Postgres(r) => sqlx::Row::try_column(r, name).is_ok(),
        }
    }
}

/// A row read as a tuple of its columns, in order ([`query_as`]).
pub trait FromRow: Sized {
    /// Reads the row.
    ///
    /// # Errors
    /// [`StoreError`].
    fn from_row(row: &Row) -> Result<Self, StoreError>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Decode),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self, StoreError> {
                Ok(($(row.try_get::<$t, _>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
