//! The `baton.sql` activity: runs one of the queries an operator configured, with the task's
//! values bound as parameters. A definition names a query; it never carries SQL, so what a
//! workflow can do to a database is what the operator wrote down, and no value a workflow passes
//! is ever spliced into a statement.
//!
//! ```yaml
//! - expiring:
//!     call: baton.sql
//!     with:
//!       query: expiringCertifications
//!       params: [ ${ .department }, 30 ]
//! ```
//!
//! The answer is `{rows: [{column: value}], rowsAffected, truncated}`: at most the query's
//! `max_rows` rows (`truncated` says whether more were left), and for a query configured with
//! `writes`, how many rows it changed (`null` otherwise: the drivers report a stale count for a
//! read, SQLite the connection's last write and PostgreSQL the rows a SELECT found). Databases go through sqlx's `Any` driver (SQLite, PostgreSQL), whose values
//! are booleans, integers, floats, text and bytes (as base64): a query casts other types
//! (dates, numerics, JSON) to text. Placeholders are the database's own (`?` for SQLite, `$1`
//! for PostgreSQL, where a parameter bound to a column that is not text or a big integer is
//! cast: `$1::date`, `$2::int`).
//!
//! Activities run at least once: a statement that changes rows should be idempotent (an upsert,
//! a natural key). With `bind_idempotency_key`, the activity's idempotency key (`instance:seq`,
//! the same on every attempt) is bound after the task's parameters, for a table that records
//! what was done.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use baton_engine::{ActivityContext, ActivityError, ActivityRegistry};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow, AnyTypeInfoKind};
use sqlx::{Any, Pool};
use sqlx::{Arguments, Column, Either, Executor, Row, ValueRef};

/// The activity's name: `call: baton.sql`.
pub const SQL_ACTIVITY: &str = "baton.sql";

/// The rows a query answers with when its configuration does not say.
pub const DEFAULT_MAX_ROWS: usize = 1000;

/// The URL schemes of the databases `baton.sql` connects to.
const SCHEMES: &[&str] = &["sqlite", "postgres", "postgresql"];

/// The databases and the named queries `baton.sql` may run (the server's `[sql]` section).
#[derive(Clone, Default)]
pub struct SqlConfig {
    /// Database name → connection URL (`sqlite://…`, `postgres://…`).
    pub databases: BTreeMap<String, String>,
    pub queries: BTreeMap<String, SqlQuery>,
}

impl std::fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may hold passwords.
        f.debug_struct("SqlConfig")
            .field("databases", &self.databases.keys().collect::<Vec<_>>())
            .field("queries", &self.queries)
            .finish()
    }
}

/// One query a definition may name.
#[derive(Clone, Debug)]
pub struct SqlQuery {
    /// The database it runs against, a key of [`SqlConfig::databases`].
    pub database: String,
    /// One statement, with placeholders for the parameters.
    pub sql: String,
    pub max_rows: usize,
    /// Bind the activity's idempotency key after the task's parameters.
    pub bind_idempotency_key: bool,
    /// The statement changes rows: the answer counts them in `rowsAffected`.
    pub writes: bool,
}

impl SqlQuery {
    pub fn new(database: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            sql: sql.into(),
            max_rows: DEFAULT_MAX_ROWS,
            bind_idempotency_key: false,
            writes: false,
        }
    }
}

/// What a task asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    query: String,
    #[serde(default)]
    params: Vec<Value>,
}

/// Runs the configured queries; each database's pool connects on first use.
pub struct SqlActivity {
    queries: BTreeMap<String, SqlQuery>,
    pools: BTreeMap<String, Pool<Any>>,
}

impl std::fmt::Debug for SqlActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlActivity").field("queries", &self.queries.keys().collect::<Vec<_>>()).finish()
    }
}

impl SqlActivity {
    /// Checks the configuration (every query's database is declared, every URL is one a driver
    /// takes) without connecting. Call it within a Tokio runtime: the pools start there.
    pub fn new(config: SqlConfig) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        let mut pools = BTreeMap::new();
        for (name, url) in &config.databases {
            let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
            if !SCHEMES.contains(&scheme) {
                return Err(format!(
                    "sql database `{name}`: `{scheme}` is not a database Baton connects to (it takes {})",
                    SCHEMES.join(", ")
                ));
            }
            let pool = AnyPoolOptions::new()
                .max_connections(4)
                .connect_lazy(url)
                .map_err(|err| format!("sql database `{name}`: {err}"))?;
            pools.insert(name.clone(), pool);
        }
        for (name, query) in &config.queries {
            if !pools.contains_key(&query.database) {
                return Err(format!(
                    "sql query `{name}` runs against database `{}`, which is not configured",
                    query.database
                ));
            }
            if query.sql.trim().is_empty() {
                return Err(format!("sql query `{name}` has no SQL"));
            }
            if query.max_rows == 0 {
                return Err(format!("sql query `{name}`: max_rows is at least 1"));
            }
        }
        Ok(Self { queries: config.queries, pools })
    }

    /// Runs the query `input` names with its parameters.
    pub async fn run(&self, ctx: &ActivityContext, input: Value) -> Result<Value, ActivityError> {
        let call: Call = serde_json::from_value(input)
            .map_err(|err| ActivityError::non_retryable(format!("{SQL_ACTIVITY}: {err}")))?;
        let query = self.queries.get(&call.query).ok_or_else(|| {
            ActivityError::non_retryable(format!(
                "{SQL_ACTIVITY}: no query `{}` is configured (there are: {})",
                call.query,
                self.queries.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let pool = &self.pools[&query.database];
        let mut arguments = AnyArguments::default();
        for (index, param) in call.params.iter().enumerate() {
            bind(&mut arguments, param).map_err(|err| {
                ActivityError::non_retryable(format!("{SQL_ACTIVITY}: parameter {}: {err}", index + 1))
            })?;
        }
        if query.bind_idempotency_key {
            bind(&mut arguments, &Value::String(ctx.idempotency_key()))
                .map_err(|err| ActivityError::non_retryable(format!("{SQL_ACTIVITY}: {err}")))?;
        }

        let failed = |err: sqlx::Error| failure(&call.query, err);
        let statement = sqlx::query_with(sqlx::AssertSqlSafe(query.sql.clone()), arguments);
        let mut results = pool.fetch_many(statement);
        let (mut rows, mut affected, mut truncated) = (Vec::new(), 0_u64, false);
        while let Some(step) = results.try_next().await.map_err(failed)? {
            match step {
                Either::Left(done) => affected += done.rows_affected(),
                Either::Right(_) if rows.len() == query.max_rows => truncated = true,
                Either::Right(row) => rows.push(row_json(&row).map_err(failed)?),
            }
        }
        let affected = if query.writes { Value::from(affected) } else { Value::Null };
        Ok(json!({ "rows": rows, "rowsAffected": affected, "truncated": truncated }))
    }
}

/// Binds a JSON value as the closest type the `Any` driver has; arrays and objects go as their
/// JSON text.
fn bind(arguments: &mut AnyArguments, value: &Value) -> Result<(), sqlx::error::BoxDynError> {
    match value {
        Value::Null => arguments.add(None::<String>),
        Value::Bool(b) => arguments.add(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => arguments.add(i),
            None => arguments.add(n.as_f64().ok_or("a number out of range")?),
        },
        Value::String(s) => arguments.add(s.clone()),
        other => arguments.add(other.to_string()),
    }
}

/// A row as a JSON object, by column name.
fn row_json(row: &AnyRow) -> Result<Value, sqlx::Error> {
    let mut object = Map::new();
    for column in row.columns() {
        let index = column.ordinal();
        let raw = row.try_get_raw(index)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().kind() {
                AnyTypeInfoKind::Null => Value::Null,
                AnyTypeInfoKind::Bool => Value::Bool(row.try_get(index)?),
                AnyTypeInfoKind::SmallInt => json!(row.try_get::<i16, _>(index)?),
                AnyTypeInfoKind::Integer => json!(row.try_get::<i32, _>(index)?),
                AnyTypeInfoKind::BigInt => json!(row.try_get::<i64, _>(index)?),
                AnyTypeInfoKind::Real => float(f64::from(row.try_get::<f32, _>(index)?)),
                AnyTypeInfoKind::Double => float(row.try_get::<f64, _>(index)?),
                AnyTypeInfoKind::Text => Value::String(row.try_get(index)?),
                AnyTypeInfoKind::Blob => {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(row.try_get::<Vec<u8>, _>(index)?))
                }
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

/// A float as JSON; NaN and the infinities, which JSON lacks, as null.
fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Whether trying again may help: a lost or exhausted connection, a deadlock, a serialization
/// failure or a busy SQLite file may pass; an error in the statement or the data will not.
fn failure(query: &str, err: sqlx::Error) -> ActivityError {
    let retryable = match &err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // PostgreSQL: serialization_failure, deadlock_detected, too_many_connections, a
            // server shutting down or not yet up, and the connection exceptions. SQLite: BUSY,
            // LOCKED (and their extended codes).
            let code = db.code().unwrap_or_default();
            // SQLite's codes are numbers of at most four digits; SQLSTATEs have five characters.
            match code.len() {
                5 => {
                    matches!(code.as_ref(), "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03")
                        || code.starts_with("08")
                }
                _ => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
            }
        }
        _ => false,
    };
    let message = format!("{SQL_ACTIVITY} `{query}`: {err}");
    if retryable { ActivityError::retryable(message) } else { ActivityError::non_retryable(message) }
}

/// Registers `baton.sql` for the queries `config` names; fails on a configuration that could
/// never run (see [`SqlActivity::new`]).
pub fn register_sql(registry: &mut ActivityRegistry, config: SqlConfig) -> Result<(), String> {
    let activity = Arc::new(SqlActivity::new(config)?);
    registry.register(SQL_ACTIVITY, move |ctx, input| {
        let activity = Arc::clone(&activity);
        async move { activity.run(&ctx, input).await }
    });
    Ok(())
}
