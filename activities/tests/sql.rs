//! `baton.sql` against real databases: a SQLite file always, and the local PostgreSQL
//! (BATON_TEST_POSTGRES_URL, default `postgres://postgres@127.0.0.1:5432/test`), skipped with a
//! note when it does not answer unless `BATON_REQUIRE_SERVICES=1`.
//!
//! What a task passes is bound, never spliced; answers are typed rows, capped at the query's
//! `max_rows`; a statement's changed rows are counted; the idempotency key makes a retried
//! insert a no-op; errors say whether a retry may help.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_activities::{SQL_ACTIVITY, SqlActivity, SqlConfig, SqlQuery};
use baton_engine::{ActivityContext, ActivityError, Clock, InstanceId, SystemClock};
use serde_json::{Value, json};
use sqlx::Connection;

fn ctx(seq: u64, attempt: u32) -> ActivityContext {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    ActivityContext::new(InstanceId::new("sql-test"), seq, attempt, SQL_ACTIVITY, clock)
}

fn query(database: &str, sql: &str) -> SqlQuery {
    SqlQuery::new(database, sql)
}

fn write(database: &str, sql: &str) -> SqlQuery {
    SqlQuery { writes: true, ..SqlQuery::new(database, sql) }
}

fn activity(database: &str, url: &str, queries: Vec<(&str, SqlQuery)>) -> SqlActivity {
    let config = SqlConfig {
        databases: BTreeMap::from([(database.to_owned(), url.to_owned())]),
        queries: queries.into_iter().map(|(name, q)| (name.to_owned(), q)).collect(),
    };
    SqlActivity::new(config).expect("a valid configuration")
}

async fn run(activity: &SqlActivity, seq: u64, input: Value) -> Result<Value, ActivityError> {
    activity.run(&ctx(seq, 1), input).await
}

#[tokio::test]
async fn sqlite_queries_bind_values_type_rows_and_count_changes() {
    let dir = tempfile::tempdir().expect("a folder");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("training.db").display());
    let mut setup = sqlx::SqliteConnection::connect(&url).await.expect("the file");
    sqlx::raw_sql(
        "CREATE TABLE certification (operator TEXT PRIMARY KEY, skill TEXT NOT NULL, score REAL, level INTEGER, badge BLOB);
         INSERT INTO certification VALUES ('op-1', 'forklift', 91.5, 3, x'BA70'), ('op-2', 'forklift', NULL, 1, NULL),
                                          ('op-3', 'welding', 77.0, 2, NULL);
         CREATE TABLE done (key TEXT PRIMARY KEY, operator TEXT NOT NULL);",
    )
    .execute(&mut setup)
    .await
    .expect("the schema");

    let mut capped = query("training", "SELECT operator FROM certification ORDER BY operator");
    capped.max_rows = 2;
    let mut once = write("training", "INSERT INTO done (operator, key) VALUES (?, ?) ON CONFLICT DO NOTHING");
    once.bind_idempotency_key = true;
    let sql = activity(
        "training",
        &url,
        vec![
            (
                "bySkill",
                query(
                    "training",
                    "SELECT operator, score, level, badge FROM certification WHERE skill = ? ORDER BY operator",
                ),
            ),
            ("all", capped),
            ("promote", write("training", "UPDATE certification SET level = level + ? WHERE skill = ?")),
            ("record", once),
            ("add", write("training", "INSERT INTO certification (operator, skill) VALUES (?, ?)")),
        ],
    );

    let rows = run(&sql, 1, json!({ "query": "bySkill", "params": ["forklift"] })).await.expect("rows");
    assert_eq!(
        rows,
        json!({
            "rows": [
                { "operator": "op-1", "score": 91.5, "level": 3, "badge": "unA=" },
                { "operator": "op-2", "score": null, "level": 1, "badge": null },
            ],
            "rowsAffected": null,
            "truncated": false,
        })
    );

    let first_two = run(&sql, 2, json!({ "query": "all" })).await.expect("rows");
    assert_eq!(first_two["rows"], json!([{ "operator": "op-1" }, { "operator": "op-2" }]));
    assert_eq!(first_two["truncated"], json!(true));

    let promoted = run(&sql, 3, json!({ "query": "promote", "params": [1, "forklift"] })).await.expect("updated");
    assert_eq!(promoted, json!({ "rows": [], "rowsAffected": 2, "truncated": false }));

    // A value that looks like SQL is a value.
    let hostile = "op-4'); DROP TABLE certification; --";
    run(&sql, 4, json!({ "query": "add", "params": [hostile, "welding"] })).await.expect("inserted");
    let welding = run(&sql, 5, json!({ "query": "bySkill", "params": ["welding"] })).await.expect("rows");
    let operators: Vec<&str> =
        welding["rows"].as_array().expect("rows").iter().map(|r| r["operator"].as_str().expect("text")).collect();
    assert_eq!(operators, ["op-3", hostile]);

    // A read after a write says nothing of changed rows (SQLite would report the last write's).
    let after_write = run(&sql, 10, json!({ "query": "bySkill", "params": ["nothing"] })).await.expect("no rows");
    assert_eq!(after_write, json!({ "rows": [], "rowsAffected": null, "truncated": false }));

    // The same activity (instance and seq) run twice records once: the key is its idempotency key.
    let recorded = run(&sql, 6, json!({ "query": "record", "params": ["op-1"] })).await.expect("recorded");
    assert_eq!(recorded["rowsAffected"], json!(1));
    let retried = sql.run(&ctx(6, 2), json!({ "query": "record", "params": ["op-1"] })).await.expect("a no-op");
    assert_eq!(retried["rowsAffected"], json!(0));
    let keys: Vec<(String,)> = sqlx::query_as("SELECT key FROM done").fetch_all(&mut setup).await.expect("keys");
    assert_eq!(keys, [("sql-test:6".to_owned(),)]);

    // A broken constraint will break again: not retried.
    let duplicate = run(&sql, 7, json!({ "query": "add", "params": ["op-1", "forklift"] })).await.expect_err("refused");
    assert!(matches!(&duplicate, ActivityError::NonRetryable(m) if m.contains("UNIQUE")), "{duplicate:?}");

    let unknown = run(&sql, 8, json!({ "query": "dropEverything" })).await.expect_err("refused");
    assert!(
        matches!(&unknown, ActivityError::NonRetryable(m) if m.contains("no query `dropEverything`") && m.contains("bySkill")),
        "{unknown:?}"
    );
    let raw_sql = run(&sql, 9, json!({ "sql": "DELETE FROM certification" })).await.expect_err("refused");
    assert!(matches!(raw_sql, ActivityError::NonRetryable(_)), "{raw_sql:?}");
    let count: (i64,) =
        sqlx::query_as("SELECT count(*) FROM certification").fetch_one(&mut setup).await.expect("count");
    assert_eq!(count.0, 4);
}

#[tokio::test]
async fn a_query_on_an_undeclared_database_is_refused_at_start() {
    let config = SqlConfig {
        databases: BTreeMap::from([("training".to_owned(), "sqlite::memory:".to_owned())]),
        queries: BTreeMap::from([("q".to_owned(), query("reporting", "SELECT 1"))]),
    };
    let error = SqlActivity::new(config).expect_err("refused");
    assert!(error.contains("database `reporting`, which is not configured"), "{error}");

    let config = SqlConfig {
        databases: BTreeMap::from([("legacy".to_owned(), "oracle://db.example/hr".to_owned())]),
        queries: BTreeMap::new(),
    };
    let error = SqlActivity::new(config).expect_err("refused");
    assert!(error.contains("sql database `legacy`"), "{error}");

    let mut empty = query("training", "SELECT 1");
    empty.max_rows = 0;
    let config = SqlConfig {
        databases: BTreeMap::from([("training".to_owned(), "sqlite::memory:".to_owned())]),
        queries: BTreeMap::from([("q".to_owned(), empty)]),
    };
    assert!(SqlActivity::new(config).expect_err("refused").contains("max_rows is at least 1"));
}

fn postgres_url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn postgres() -> Option<sqlx::PgConnection> {
    match sqlx::PgConnection::connect(&postgres_url()).await {
        Ok(connection) => Some(connection),
        Err(err) if std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("PostgreSQL is required (BATON_REQUIRE_SERVICES=1) but does not answer at {}: {err}", postgres_url())
        }
        Err(err) => {
            eprintln!(
                "skipped: no PostgreSQL at {} ({err}); set BATON_REQUIRE_SERVICES=1 to fail instead",
                postgres_url()
            );
            None
        }
    }
}

#[tokio::test]
async fn postgres_queries_bind_values_and_say_which_errors_may_pass() {
    let Some(mut setup) = postgres().await else { return };
    let table = format!("baton_sql_test_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (operator text PRIMARY KEY, skill text NOT NULL, score double precision,
                               level integer, certified boolean, until date);
         INSERT INTO {table} VALUES ('op-1', 'forklift', 91.5, 3, true, '2027-03-01'), ('op-2', 'forklift', NULL, 1, false, NULL);"
    )))
    .execute(&mut setup)
    .await
    .expect("the schema");

    let sql = activity(
        "reporting",
        &postgres_url(),
        vec![
            (
                "bySkill",
                query(
                    "reporting",
                    &format!(
                        "SELECT operator, score, level, certified, until::text AS until FROM {table} \
                         WHERE skill = $1 AND level >= $2 ORDER BY operator"
                    ),
                ),
            ),
            ("promote", write("reporting", &format!("UPDATE {table} SET level = level + 1 WHERE skill = $1"))),
            (
                "certify",
                write(
                    "reporting",
                    &format!("UPDATE {table} SET level = $1::int, until = $2::date WHERE operator = $3"),
                ),
            ),
            ("add", write("reporting", &format!("INSERT INTO {table} (operator, skill) VALUES ($1, $2)"))),
            (
                "conflict",
                query("reporting", "DO $$ BEGIN RAISE EXCEPTION 'concurrent update' USING ERRCODE = '40001'; END $$"),
            ),
        ],
    );

    let rows = run(&sql, 1, json!({ "query": "bySkill", "params": ["forklift", 1] })).await.expect("rows");
    assert_eq!(
        rows["rows"],
        json!([
            { "operator": "op-1", "score": 91.5, "level": 3, "certified": true, "until": "2027-03-01" },
            { "operator": "op-2", "score": null, "level": 1, "certified": false, "until": null },
        ])
    );
    assert_eq!(rows["rowsAffected"], Value::Null, "a read counts no change");
    let promoted = run(&sql, 2, json!({ "query": "promote", "params": ["forklift"] })).await.expect("updated");
    assert_eq!(promoted["rowsAffected"], json!(2));
    // Parameters cast to their columns' types, null included.
    let certified =
        run(&sql, 5, json!({ "query": "certify", "params": [5, "2028-01-31", "op-1"] })).await.expect("updated");
    assert_eq!(certified["rowsAffected"], json!(1));
    run(&sql, 6, json!({ "query": "certify", "params": [4, null, "op-2"] })).await.expect("updated");
    let rows = run(&sql, 7, json!({ "query": "bySkill", "params": ["forklift", 0] })).await.expect("rows");
    let levels: Vec<(Value, Value)> =
        rows["rows"].as_array().expect("rows").iter().map(|r| (r["level"].clone(), r["until"].clone())).collect();
    assert_eq!(levels, [(json!(5), json!("2028-01-31")), (json!(4), Value::Null)]);

    let duplicate = run(&sql, 3, json!({ "query": "add", "params": ["op-1", "forklift"] })).await.expect_err("refused");
    assert!(matches!(&duplicate, ActivityError::NonRetryable(m) if m.contains("duplicate key")), "{duplicate:?}");
    let conflict = run(&sql, 8, json!({ "query": "conflict" })).await.expect_err("refused");
    assert!(matches!(&conflict, ActivityError::Retryable(m) if m.contains("concurrent update")), "{conflict:?}");

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}"))).execute(&mut setup).await.expect("dropped");
}
