//! SQLite store: one database file, one writer connection, a few reader connections.
//!
//! SQLite allows one writer at a time, so every write goes through a pool of exactly one
//! connection and starts with `BEGIN IMMEDIATE` (taking the write lock up front instead of
//! failing with `SQLITE_BUSY` when a read transaction tries to upgrade). Readers use their own
//! pool and, thanks to WAL, never wait for the writer.
//!
//! A group commit can carry hundreds of instances' steps. Instead of one statement per row,
//! each table's rows travel as one JSON array bound to a single parameter and are unpacked by
//! SQLite's `json_each`, so a commit costs a handful of statements whatever its size. All SQL
//! is `&'static str`, so sqlx prepares each statement once per connection and reuses it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr, SqlitePool, SqliteTransaction};

use super::{
    HistoryStore, Incident, IncidentKind, IncidentStore, InstanceFilter, InstanceRow, InstanceStatus, InstanceWrite,
    LoadedInstance, NewIncident, OutboxRow, OutboxStore, ParentRef, SettingsStore, SnapshotRow, StepStore, Store,
    StoreError, StoreResult, TaskRow, TaskStore, TimerRow, TimerStore,
};
use crate::history::{InstanceId, Seq, StoredEvent, time_from_ms};

/// How long a connection waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's primary result codes for "the database is locked" (the extended codes keep these in
/// their low byte).
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// How hard SQLite syncs to disk on commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is durable once it returns.
    #[default]
    Full,
    /// With WAL, a power loss may lose the last commits but never corrupts the database;
    /// commits are much cheaper.
    Normal,
}

#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Connections of the read pool (at least one is opened).
    pub read_connections: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { synchronous: Synchronous::Full, read_connections: 4 }
    }
}

#[derive(Clone, Debug)]
pub struct SqliteStore {
    path: PathBuf,
    /// Exactly one connection: SQLite has one writer, and queueing here is cheaper than
    /// retrying on `SQLITE_BUSY`.
    write: SqlitePool,
    read: SqlitePool,
}

/// The migrations, embedded so the binary needs no files next to it. `include_str!` makes
/// cargo rebuild when a migration changes.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "initial".into(),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_initial.sql").into_sql_str(),
        false,
    )])
}

/// Accepts `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite:rel.db` or a plain path.
fn database_path(path_or_url: &str) -> StoreResult<PathBuf> {
    let url = path_or_url.strip_prefix("sqlite://").or_else(|| path_or_url.strip_prefix("sqlite:"));
    let path = match url {
        Some(rest) if rest.contains('?') => {
            return Err(StoreError::Other(format!(
                "{path_or_url}: URL parameters are not supported; use SqliteOptions"
            )));
        }
        Some(rest) => rest,
        None => path_or_url,
    };
    if path.is_empty() || path == ":memory:" {
        // The reader and writer pools would each get their own empty in-memory database.
        return Err(StoreError::Other(format!("{path_or_url}: the SQLite store needs a database file")));
    }
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(path_or_url: &str, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = database_path(path_or_url)?;
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|err| StoreError::Unavailable(format!("creating {}: {err}", parent.display())))?;
        }
        let synchronous = match options.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);
        // Connections are kept for the store's lifetime so their prepared statements stay
        // cached; a local file connection does not go stale, so it is not pinged either.
        let pool = |connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
        };
        let context = format!("opening {}", path.display());
        let write = pool(1).connect_with(connect.clone()).await.map_err(|err| db_error(&context, err))?;
        migrator()
            .run(&write)
            .await
            .map_err(|err| StoreError::Other(format!("migrating {}: {err}", path.display())))?;
        let read = pool(options.read_connections.max(1))
            .connect_with(connect.create_if_missing(false))
            .await
            .map_err(|err| db_error(&context, err))?;
        Ok(Self { path, write, read })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes both pools, waiting for connections in use to come back; the last connection to
    /// close checkpoints the WAL into the database file.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn begin_write(&self) -> StoreResult<SqliteTransaction<'static>> {
        self.write.begin_with("BEGIN IMMEDIATE").await.map_err(|err| db_error("begin", err))
    }

    /// A read transaction, so the several queries of one load see the same snapshot.
    async fn begin_read(&self) -> StoreResult<SqliteTransaction<'static>> {
        self.read.begin().await.map_err(|err| db_error("begin", err))
    }
}

/// Maps driver errors to kinds by code, never by message text.
fn db_error(context: &str, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => {
            if db.kind() == ErrorKind::UniqueViolation {
                return StoreError::Conflict(format!("{context}: {}", db.message()));
            }
            let primary = db.code().and_then(|code| code.parse::<i32>().ok()).map(|code| code & 0xff);
            if matches!(primary, Some(SQLITE_BUSY | SQLITE_LOCKED)) {
                StoreError::Unavailable(format!("{context}: {}", db.message()))
            } else {
                StoreError::Other(format!("{context}: {}", db.message()))
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::BeginFailed => StoreError::Unavailable(format!("{context}: {err}")),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(format!("{context}: {err}")),
        other => StoreError::Other(format!("{context}: {other}")),
    }
}

fn to_sql(n: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::Other(format!("{what} {n} is out of SQLite's integer range")))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|err| StoreError::Other(format!("encoding JSON: {err}")))
}

/// The instance row a write's bare sequence numbers and ids belong to.
fn owner<'a>(write: &'a InstanceWrite, what: &str) -> StoreResult<&'a InstanceRow> {
    write.instance.as_ref().ok_or_else(|| StoreError::Other(format!("a write with {what} must carry its instance row")))
}

// ---------------------------------------------------------------------------------------------
// Decoding rows. Anything that does not fit the row types is `Corrupt`.

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|err| StoreError::Corrupt(format!("column {column}: {err}")))
}

fn get_seq(row: &SqliteRow, column: &str) -> StoreResult<Seq> {
    let value: i64 = get(row, column)?;
    Seq::try_from(value).map_err(|_| StoreError::Corrupt(format!("column {column}: negative sequence number {value}")))
}

fn get_small<T: TryFrom<i64>>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let value: i64 = get(row, column)?;
    T::try_from(value).map_err(|_| StoreError::Corrupt(format!("column {column}: {value} is out of range")))
}

fn get_json(row: &SqliteRow, column: &str) -> StoreResult<Value> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text).map_err(|err| StoreError::Corrupt(format!("column {column}: {err}")))
}

fn get_optional_json(row: &SqliteRow, column: &str) -> StoreResult<Option<Value>> {
    let text: Option<String> = get(row, column)?;
    text.map(|text| serde_json::from_str(&text).map_err(|err| StoreError::Corrupt(format!("column {column}: {err}"))))
        .transpose()
}

fn get_time(row: &SqliteRow, column: &str) -> StoreResult<DateTime<Utc>> {
    Ok(time_from_ms(get(row, column)?))
}

fn decode_instance(row: &SqliteRow) -> StoreResult<InstanceRow> {
    let status: String = get(row, "status")?;
    let parent_id: Option<String> = get(row, "parent_id")?;
    let parent = match parent_id {
        Some(parent_id) => Some(ParentRef { instance: InstanceId(parent_id), seq: get_seq(row, "parent_seq")? }),
        None => None,
    };
    Ok(InstanceRow {
        id: InstanceId(get(row, "id")?),
        orchestration: get(row, "orchestration")?,
        version: get(row, "version")?,
        status: InstanceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown instance status {status:?}")))?,
        next_seq: get_seq(row, "next_seq")?,
        last_hash: get(row, "last_hash")?,
        run_start: get_seq(row, "run_start")?,
        idempotency_key: get(row, "idempotency_key")?,
        parent,
        created_at: get_time(row, "created_ms")?,
        updated_at: get_time(row, "updated_ms")?,
        result: get_optional_json(row, "result")?,
    })
}

fn decode_event(row: &SqliteRow) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        instance: InstanceId(get(row, "instance_id")?),
        seq: get_seq(row, "seq")?,
        tag: get_small(row, "tag")?,
        schema: get_small(row, "schema")?,
        at_ms: get(row, "at_ms")?,
        actor: get(row, "actor")?,
        payload: get(row, "payload")?,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

fn decode_snapshot(row: &SqliteRow) -> StoreResult<SnapshotRow> {
    Ok(SnapshotRow {
        instance: InstanceId(get(row, "instance_id")?),
        seq: get_seq(row, "seq")?,
        state: get_json(row, "state")?,
    })
}

fn decode_task(row: &SqliteRow) -> StoreResult<TaskRow> {
    Ok(TaskRow {
        instance: InstanceId(get(row, "instance_id")?),
        seq: get_seq(row, "seq")?,
        name: get(row, "name")?,
        input: get_json(row, "input")?,
        options: get_json(row, "options")?,
        attempt: get_small(row, "attempt")?,
        visible_at: get_time(row, "visible_ms")?,
        parked: get::<i64>(row, "parked")? != 0,
        last_error: get(row, "last_error")?,
    })
}

fn decode_timer(row: &SqliteRow) -> StoreResult<TimerRow> {
    Ok(TimerRow {
        instance: InstanceId(get(row, "instance_id")?),
        seq: get_seq(row, "seq")?,
        due_at: get_time(row, "due_ms")?,
    })
}

fn decode_outbox(row: &SqliteRow) -> StoreResult<(i64, OutboxRow)> {
    let message = OutboxRow {
        instance: InstanceId(get(row, "instance_id")?),
        seq: get_seq(row, "seq")?,
        kind: get(row, "kind")?,
        payload: get_json(row, "payload")?,
        created_at: get_time(row, "created_ms")?,
    };
    Ok((get(row, "id")?, message))
}

fn decode_incident(row: &SqliteRow) -> StoreResult<Incident> {
    let kind: String = get(row, "kind")?;
    let task_seq: Option<i64> = get(row, "task_seq")?;
    let resolved_ms: Option<i64> = get(row, "resolved_ms")?;
    Ok(Incident {
        id: get(row, "id")?,
        instance: InstanceId(get(row, "instance_id")?),
        kind: IncidentKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown incident kind {kind:?}")))?,
        reason: get(row, "reason")?,
        task_seq: task_seq
            .map(|seq| Seq::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative task_seq {seq}"))))
            .transpose()?,
        pending_input: get_optional_json(row, "pending_input")?,
        created_at: get_time(row, "created_ms")?,
        resolved_at: resolved_ms.map(time_from_ms),
    })
}

fn decode_all<T>(rows: &[SqliteRow], decode: fn(&SqliteRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(decode).collect()
}

// ---------------------------------------------------------------------------------------------
// The group commit. Each statement takes one JSON array (`?1`) of rows, each row a JSON array
// whose positions are listed in the statement. JSON values (inputs, payloads, state) are
// carried as already-encoded strings, so they reach their TEXT column byte for byte.

const UPSERT_INSTANCES: &str = "
    INSERT INTO instances (id, orchestration, version, status, next_seq, last_hash, run_start,
                           idempotency_key, parent_id, parent_seq, created_ms, updated_ms, result)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
           json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
           json_extract(value, '$[9]'), json_extract(value, '$[10]'), json_extract(value, '$[11]'),
           json_extract(value, '$[12]')
    FROM json_each(?1) WHERE true ORDER BY key
    ON CONFLICT (id) DO UPDATE SET
        orchestration = excluded.orchestration, version = excluded.version, status = excluded.status,
        next_seq = excluded.next_seq, last_hash = excluded.last_hash, run_start = excluded.run_start,
        idempotency_key = excluded.idempotency_key, parent_id = excluded.parent_id,
        parent_seq = excluded.parent_seq, created_ms = excluded.created_ms,
        updated_ms = excluded.updated_ms, result = excluded.result";

const INSERT_HISTORY: &str = "
    INSERT INTO history (instance_id, seq, tag, schema, at_ms, actor, payload, prev_hash, hash)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
           json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]')
    FROM json_each(?1)";

/// A snapshot never replaces a newer one.
const UPSERT_SNAPSHOTS: &str = "
    INSERT INTO snapshots (instance_id, seq, state)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
    FROM json_each(?1) WHERE true ORDER BY key
    ON CONFLICT (instance_id) DO UPDATE SET seq = excluded.seq, state = excluded.state
        WHERE excluded.seq >= snapshots.seq";

const INSERT_TASKS: &str = "
    INSERT INTO tasks (instance_id, seq, name, input, options, attempt, visible_ms, parked, last_error)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
           json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]')
    FROM json_each(?1)";

/// Only rows that still exist are changed: a task finished meanwhile stays finished.
const UPDATE_TASKS: &str = "
    UPDATE tasks SET name = u.name, input = u.input, options = u.options, attempt = u.attempt,
                     visible_ms = u.visible_ms, parked = u.parked, last_error = u.last_error
    FROM (SELECT json_extract(value, '$[0]') AS instance_id, json_extract(value, '$[1]') AS seq,
                 json_extract(value, '$[2]') AS name, json_extract(value, '$[3]') AS input,
                 json_extract(value, '$[4]') AS options, json_extract(value, '$[5]') AS attempt,
                 json_extract(value, '$[6]') AS visible_ms, json_extract(value, '$[7]') AS parked,
                 json_extract(value, '$[8]') AS last_error
          FROM json_each(?1)) AS u
    WHERE tasks.instance_id = u.instance_id AND tasks.seq = u.seq";

const DELETE_TASKS: &str = "
    DELETE FROM tasks WHERE (instance_id, seq) IN
        (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))";

const INSERT_TIMERS: &str = "
    INSERT INTO timers (instance_id, seq, due_ms)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
    FROM json_each(?1)";

const DELETE_TIMERS: &str = "
    DELETE FROM timers WHERE (instance_id, seq) IN
        (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))";

/// In array order, so outbox ids follow the order of the writes.
const INSERT_OUTBOX: &str = "
    INSERT INTO outbox (instance_id, seq, kind, payload, created_ms)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]')
    FROM json_each(?1) ORDER BY key";

const INSERT_INCIDENTS: &str = "
    INSERT INTO incidents (instance_id, kind, reason, task_seq, pending_input, created_ms)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
    FROM json_each(?1) ORDER BY key";

/// An incident keeps the time it was first resolved.
const RESOLVE_INCIDENTS: &str = "
    UPDATE incidents SET resolved_ms = u.resolved_ms
    FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS resolved_ms
          FROM json_each(?1)) AS u
    WHERE incidents.id = u.id AND incidents.resolved_ms IS NULL";

const INSERT_RECEIVED_EVENTS: &str = "
    INSERT INTO received_events (instance_id, event_id)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)";

type InstanceJson<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    i64,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    i64,
    i64,
    Option<String>,
);
type EventJson<'a> = (&'a str, i64, u16, u16, i64, &'a str, &'a str, &'a str, &'a str);
type TaskJson<'a> = (&'a str, i64, &'a str, String, String, u32, i64, bool, Option<&'a str>);
type KeyJson<'a> = (&'a str, i64);
type TimerJson<'a> = (&'a str, i64, i64);
type OutboxJson<'a> = (&'a str, i64, &'a str, String, i64);
type IncidentJson<'a> = (&'a str, &'static str, &'a str, Option<i64>, Option<String>, i64);

/// One statement of a commit and its JSON argument.
struct Statement {
    sql: &'static str,
    table: &'static str,
    rows: String,
}

fn push_statement<T: Serialize>(
    statements: &mut Vec<Statement>,
    sql: &'static str,
    table: &'static str,
    rows: &[T],
) -> StoreResult<()> {
    if !rows.is_empty() {
        statements.push(Statement { sql, table, rows: to_json(rows)? });
    }
    Ok(())
}

fn task_json(task: &TaskRow) -> StoreResult<TaskJson<'_>> {
    Ok((
        task.instance.as_str(),
        to_sql(task.seq, "task seq")?,
        &task.name,
        to_json(&task.input)?,
        to_json(&task.options)?,
        task.attempt,
        task.visible_at.timestamp_millis(),
        task.parked,
        task.last_error.as_deref(),
    ))
}

/// Turns a batch into its statements, in the order they run (the memory store applies its
/// tables in the same order).
fn encode_batch(writes: &[InstanceWrite]) -> StoreResult<Vec<Statement>> {
    let mut instances: Vec<InstanceJson> = Vec::new();
    let mut events: Vec<EventJson> = Vec::new();
    let mut snapshots: Vec<(&str, i64, String)> = Vec::new();
    let mut tasks_added: Vec<TaskJson> = Vec::new();
    // Several updates of one task in a batch: the last wins, as if applied in order.
    let mut tasks_updated: Vec<TaskJson> = Vec::new();
    let mut task_update_index: HashMap<(&str, Seq), usize> = HashMap::new();
    let mut tasks_removed: Vec<KeyJson> = Vec::new();
    let mut timers_added: Vec<TimerJson> = Vec::new();
    let mut timers_removed: Vec<KeyJson> = Vec::new();
    let mut outbox: Vec<OutboxJson> = Vec::new();
    let mut incidents: Vec<IncidentJson> = Vec::new();
    // Several resolutions of one incident: the first wins, as if applied in order.
    let mut resolved: Vec<(i64, i64)> = Vec::new();
    let mut resolved_ids: HashSet<i64> = HashSet::new();
    let mut received: Vec<(&str, &str)> = Vec::new();

    for write in writes {
        if let Some(row) = &write.instance {
            instances.push((
                row.id.as_str(),
                &row.orchestration,
                &row.version,
                row.status.as_str(),
                to_sql(row.next_seq, "next_seq")?,
                &row.last_hash,
                to_sql(row.run_start, "run_start")?,
                row.idempotency_key.as_deref(),
                row.parent.as_ref().map(|parent| parent.instance.as_str()),
                row.parent.as_ref().map(|parent| to_sql(parent.seq, "parent seq")).transpose()?,
                row.created_at.timestamp_millis(),
                row.updated_at.timestamp_millis(),
                row.result.as_ref().map(to_json).transpose()?,
            ));
        }
        for event in &write.events {
            events.push((
                event.instance.as_str(),
                to_sql(event.seq, "history seq")?,
                event.tag,
                event.schema,
                event.at_ms,
                &event.actor,
                &event.payload,
                &event.prev_hash,
                &event.hash,
            ));
        }
        if let Some(snapshot) = &write.snapshot {
            snapshots.push((
                snapshot.instance.as_str(),
                to_sql(snapshot.seq, "snapshot seq")?,
                to_json(&snapshot.state)?,
            ));
        }
        for task in &write.tasks_added {
            tasks_added.push(task_json(task)?);
        }
        for task in &write.tasks_updated {
            let encoded = task_json(task)?;
            match task_update_index.get(&(task.instance.as_str(), task.seq)) {
                Some(&index) => tasks_updated[index] = encoded,
                None => {
                    task_update_index.insert((task.instance.as_str(), task.seq), tasks_updated.len());
                    tasks_updated.push(encoded);
                }
            }
        }
        if !write.tasks_removed.is_empty() {
            let row = owner(write, "removed tasks")?;
            for seq in &write.tasks_removed {
                tasks_removed.push((row.id.as_str(), to_sql(*seq, "task seq")?));
            }
        }
        for timer in &write.timers_added {
            timers_added.push((
                timer.instance.as_str(),
                to_sql(timer.seq, "timer seq")?,
                timer.due_at.timestamp_millis(),
            ));
        }
        if !write.timers_removed.is_empty() {
            let row = owner(write, "removed timers")?;
            for seq in &write.timers_removed {
                timers_removed.push((row.id.as_str(), to_sql(*seq, "timer seq")?));
            }
        }
        for message in &write.outbox {
            outbox.push((
                message.instance.as_str(),
                to_sql(message.seq, "outbox seq")?,
                &message.kind,
                to_json(&message.payload)?,
                message.created_at.timestamp_millis(),
            ));
        }
        if let Some(incident) = &write.incident {
            let row = owner(write, "an incident")?;
            incidents.push((
                row.id.as_str(),
                incident.kind.as_str(),
                &incident.reason,
                incident.task_seq.map(|seq| to_sql(seq, "incident task seq")).transpose()?,
                incident.pending_input.as_ref().map(to_json).transpose()?,
                incident.created_at.timestamp_millis(),
            ));
        }
        if !write.incidents_resolved.is_empty() {
            let row = owner(write, "resolved incidents")?;
            for id in &write.incidents_resolved {
                if resolved_ids.insert(*id) {
                    resolved.push((*id, row.updated_at.timestamp_millis()));
                }
            }
        }
        if !write.received_event_ids.is_empty() {
            let row = owner(write, "received event ids")?;
            for event_id in &write.received_event_ids {
                received.push((row.id.as_str(), event_id));
            }
        }
    }

    let mut statements = Vec::new();
    push_statement(&mut statements, UPSERT_INSTANCES, "instances", &instances)?;
    push_statement(&mut statements, INSERT_HISTORY, "history", &events)?;
    push_statement(&mut statements, UPSERT_SNAPSHOTS, "snapshots", &snapshots)?;
    push_statement(&mut statements, INSERT_TASKS, "tasks", &tasks_added)?;
    push_statement(&mut statements, UPDATE_TASKS, "tasks", &tasks_updated)?;
    push_statement(&mut statements, DELETE_TASKS, "tasks", &tasks_removed)?;
    push_statement(&mut statements, INSERT_TIMERS, "timers", &timers_added)?;
    push_statement(&mut statements, DELETE_TIMERS, "timers", &timers_removed)?;
    push_statement(&mut statements, INSERT_OUTBOX, "outbox", &outbox)?;
    push_statement(&mut statements, INSERT_INCIDENTS, "incidents", &incidents)?;
    push_statement(&mut statements, RESOLVE_INCIDENTS, "incidents", &resolved)?;
    push_statement(&mut statements, INSERT_RECEIVED_EVENTS, "received_events", &received)?;
    Ok(statements)
}

#[async_trait]
impl StepStore for SqliteStore {
    async fn commit(&self, writes: &[InstanceWrite]) -> StoreResult<()> {
        let statements = encode_batch(writes)?;
        if statements.is_empty() {
            return Ok(());
        }
        // The whole transaction (BEGIN IMMEDIATE, every table's statement, COMMIT) goes to
        // SQLite's thread as one multi-statement query: one hand-off instead of one per
        // statement (a hand-off costs tens of microseconds, as much as the work). Each
        // statement's `?1` becomes an anonymous `?`, which sqlx binds in order across the
        // statements (numbered parameters past the first statement are bound wrongly by
        // sqlx-sqlite 0.9). The text comes only from the constants above; the few table
        // combinations each get a cached prepared statement.
        let tables: Vec<&str> = statements.iter().map(|statement| statement.table).collect();
        let mut sql = String::from("BEGIN IMMEDIATE;\n");
        for statement in &statements {
            sql.push_str(&statement.sql.replace("?1", "?"));
            sql.push_str(";\n");
        }
        sql.push_str("COMMIT;\n");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for statement in statements {
            query = query.bind(statement.rows);
        }
        let mut conn = self.write.acquire().await.map_err(|err| db_error("begin", err))?;
        if let Err(err) = query.execute(&mut *conn).await {
            // A statement or the COMMIT failed: nothing of the batch may stay. The ROLLBACK's own
            // error (no transaction left open) changes nothing.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(db_error(&tables.join(", "), err));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Reads.

const SELECT_INSTANCE: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE id = ?1";

const LOAD_INSTANCES: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE id IN (SELECT value FROM json_each(?1))";

/// A snapshot taken before the current run began (continue-as-new) belongs to the old run.
const LOAD_SNAPSHOTS: &str = "
    SELECT s.instance_id, s.seq, s.state
    FROM snapshots AS s JOIN instances AS i ON i.id = s.instance_id
    WHERE s.instance_id IN (SELECT value FROM json_each(?1)) AND s.seq >= i.run_start";

const LOAD_EVENTS: &str = "
    SELECT h.instance_id, h.seq, h.tag, h.schema, h.at_ms, h.actor, h.payload, h.prev_hash, h.hash
    FROM instances AS i
    LEFT JOIN snapshots AS s ON s.instance_id = i.id AND s.seq >= i.run_start
    JOIN history AS h ON h.instance_id = i.id AND h.seq >= COALESCE(s.seq + 1, i.run_start)
    WHERE i.id IN (SELECT value FROM json_each(?1))
    ORDER BY h.instance_id, h.seq";

const SELECT_HISTORY: &str = "
    SELECT instance_id, seq, tag, schema, at_ms, actor, payload, prev_hash, hash
    FROM history WHERE instance_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3";

const FIND_BY_IDEMPOTENCY_KEY: &str = "SELECT id FROM instances WHERE idempotency_key = ?1";

const EVENT_SEEN: &str = "SELECT 1 FROM received_events WHERE instance_id = ?1 AND event_id = ?2";

// One statement per filter combination, so each can use its index. ?1 = after, ?2 = limit.
const LIST_INSTANCES: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE id > ?1 ORDER BY id LIMIT ?2";

const LIST_INSTANCES_BY_STATUS: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE status = ?3 AND id > ?1 ORDER BY id LIMIT ?2";

const LIST_INSTANCES_BY_ORCHESTRATION: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE orchestration = ?3 AND id > ?1 ORDER BY id LIMIT ?2";

const LIST_INSTANCES_BY_STATUS_AND_ORCHESTRATION: &str = "
    SELECT id, orchestration, version, status, next_seq, last_hash, run_start, idempotency_key,
           parent_id, parent_seq, created_ms, updated_ms, result
    FROM instances WHERE status = ?3 AND orchestration = ?4 AND id > ?1 ORDER BY id LIMIT ?2";

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn instance(&self, id: &InstanceId) -> StoreResult<Option<InstanceRow>> {
        let row = sqlx::query(SELECT_INSTANCE)
            .bind(id.as_str())
            .fetch_optional(&self.read)
            .await
            .map_err(|err| db_error("instances", err))?;
        row.as_ref().map(decode_instance).transpose()
    }

    async fn load(&self, id: &InstanceId) -> StoreResult<Option<LoadedInstance>> {
        Ok(self.load_many(std::slice::from_ref(id)).await?.pop())
    }

    async fn load_many(&self, ids: &[InstanceId]) -> StoreResult<Vec<LoadedInstance>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids_json = to_json(ids)?;
        let mut tx = self.begin_read().await?;
        let rows = sqlx::query(LOAD_INSTANCES)
            .bind(&ids_json)
            .fetch_all(&mut *tx)
            .await
            .map_err(|err| db_error("instances", err))?;
        let snapshots = sqlx::query(LOAD_SNAPSHOTS)
            .bind(&ids_json)
            .fetch_all(&mut *tx)
            .await
            .map_err(|err| db_error("snapshots", err))?;
        let events = sqlx::query(LOAD_EVENTS)
            .bind(&ids_json)
            .fetch_all(&mut *tx)
            .await
            .map_err(|err| db_error("history", err))?;
        tx.commit().await.map_err(|err| db_error("commit", err))?;

        let mut loaded: HashMap<InstanceId, LoadedInstance> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let row = decode_instance(row)?;
            loaded.insert(row.id.clone(), LoadedInstance { row, snapshot: None, events: Vec::new() });
        }
        for snapshot in &snapshots {
            let snapshot = decode_snapshot(snapshot)?;
            if let Some(instance) = loaded.get_mut(&snapshot.instance) {
                instance.snapshot = Some(snapshot);
            }
        }
        for event in &events {
            let event = decode_event(event)?;
            if let Some(instance) = loaded.get_mut(&event.instance) {
                instance.events.push(event);
            }
        }
        // In the order asked for; `remove` also drops repeated ids.
        Ok(ids.iter().filter_map(|id| loaded.remove(id)).collect())
    }

    async fn history(&self, id: &InstanceId, from: Seq, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(SELECT_HISTORY)
            .bind(id.as_str())
            .bind(to_sql(from, "history seq")?)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("history", err))?;
        decode_all(&rows, decode_event)
    }

    async fn find_by_idempotency_key(&self, key: &str) -> StoreResult<Option<InstanceId>> {
        let id: Option<String> = sqlx::query_scalar(FIND_BY_IDEMPOTENCY_KEY)
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(|err| db_error("instances", err))?;
        Ok(id.map(InstanceId))
    }

    async fn event_seen(&self, id: &InstanceId, event_id: &str) -> StoreResult<bool> {
        let seen = sqlx::query(EVENT_SEEN)
            .bind(id.as_str())
            .bind(event_id)
            .fetch_optional(&self.read)
            .await
            .map_err(|err| db_error("received_events", err))?;
        Ok(seen.is_some())
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<InstanceRow>> {
        let sql = match (filter.status.is_some(), filter.orchestration.is_some()) {
            (false, false) => LIST_INSTANCES,
            (true, false) => LIST_INSTANCES_BY_STATUS,
            (false, true) => LIST_INSTANCES_BY_ORCHESTRATION,
            (true, true) => LIST_INSTANCES_BY_STATUS_AND_ORCHESTRATION,
        };
        let after = filter.after.as_ref().map_or("", InstanceId::as_str);
        let mut query = sqlx::query(sql).bind(after).bind(i64::from(filter.effective_limit()));
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(orchestration) = &filter.orchestration {
            query = query.bind(orchestration.as_str());
        }
        let rows = query.fetch_all(&self.read).await.map_err(|err| db_error("instances", err))?;
        decode_all(&rows, decode_instance)
    }
}

const OPEN_TASKS: &str = "
    SELECT instance_id, seq, name, input, options, attempt, visible_ms, parked, last_error
    FROM tasks WHERE parked = 0 ORDER BY visible_ms, instance_id, seq LIMIT ?1";

const TASKS_OF: &str = "
    SELECT instance_id, seq, name, input, options, attempt, visible_ms, parked, last_error
    FROM tasks WHERE instance_id = ?1 ORDER BY seq";

#[async_trait]
impl TaskStore for SqliteStore {
    async fn open_tasks(&self, limit: u32) -> StoreResult<Vec<TaskRow>> {
        let rows = sqlx::query(OPEN_TASKS)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("tasks", err))?;
        decode_all(&rows, decode_task)
    }

    async fn tasks_of(&self, id: &InstanceId) -> StoreResult<Vec<TaskRow>> {
        let rows = sqlx::query(TASKS_OF)
            .bind(id.as_str())
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("tasks", err))?;
        decode_all(&rows, decode_task)
    }
}

const TIMERS_DUE_BEFORE: &str = "
    SELECT instance_id, seq, due_ms FROM timers WHERE due_ms < ?1
    ORDER BY due_ms, instance_id, seq LIMIT ?2";

const TIMERS_OF: &str = "SELECT instance_id, seq, due_ms FROM timers WHERE instance_id = ?1 ORDER BY seq";

#[async_trait]
impl TimerStore for SqliteStore {
    async fn timers_due_before(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<TimerRow>> {
        let rows = sqlx::query(TIMERS_DUE_BEFORE)
            .bind(before.timestamp_millis())
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("timers", err))?;
        decode_all(&rows, decode_timer)
    }

    async fn timers_of(&self, id: &InstanceId) -> StoreResult<Vec<TimerRow>> {
        let rows = sqlx::query(TIMERS_OF)
            .bind(id.as_str())
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("timers", err))?;
        decode_all(&rows, decode_timer)
    }
}

const INSERT_INCIDENT: &str = "
    INSERT INTO incidents (instance_id, kind, reason, task_seq, pending_input, created_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id";

const SET_INSTANCE_STATUS: &str = "UPDATE instances SET status = ?2, updated_ms = ?3 WHERE id = ?1";

const INCIDENTS_OF: &str = "
    SELECT id, instance_id, kind, reason, task_seq, pending_input, created_ms, resolved_ms
    FROM incidents WHERE instance_id = ?1 AND (?2 = 0 OR resolved_ms IS NULL) ORDER BY id";

const ALL_INCIDENTS: &str = "
    SELECT id, instance_id, kind, reason, task_seq, pending_input, created_ms, resolved_ms
    FROM incidents WHERE (?1 = 0 OR resolved_ms IS NULL) ORDER BY id";

const SELECT_INCIDENT: &str = "
    SELECT id, instance_id, kind, reason, task_seq, pending_input, created_ms, resolved_ms
    FROM incidents WHERE id = ?1";

const RESOLVE_INCIDENT: &str = "UPDATE incidents SET resolved_ms = ?2 WHERE id = ?1";

#[async_trait]
impl IncidentStore for SqliteStore {
    async fn raise_incident(&self, id: &InstanceId, incident: &NewIncident) -> StoreResult<i64> {
        let pending_input = incident.pending_input.as_ref().map(to_json).transpose()?;
        let task_seq = incident.task_seq.map(|seq| to_sql(seq, "incident task seq")).transpose()?;
        let created_ms = incident.created_at.timestamp_millis();
        let mut tx = self.begin_write().await?;
        let incident_id: i64 = sqlx::query_scalar(INSERT_INCIDENT)
            .bind(id.as_str())
            .bind(incident.kind.as_str())
            .bind(&incident.reason)
            .bind(task_seq)
            .bind(pending_input)
            .bind(created_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(|err| db_error("incidents", err))?;
        sqlx::query(SET_INSTANCE_STATUS)
            .bind(id.as_str())
            .bind(InstanceStatus::Faulted.as_str())
            .bind(created_ms)
            .execute(&mut *tx)
            .await
            .map_err(|err| db_error("instances", err))?;
        tx.commit().await.map_err(|err| db_error("commit", err))?;
        Ok(incident_id)
    }

    async fn incidents(&self, id: Option<&InstanceId>, open_only: bool) -> StoreResult<Vec<Incident>> {
        let query = match id {
            Some(id) => sqlx::query(INCIDENTS_OF).bind(id.as_str()).bind(open_only),
            None => sqlx::query(ALL_INCIDENTS).bind(open_only),
        };
        let rows = query.fetch_all(&self.read).await.map_err(|err| db_error("incidents", err))?;
        decode_all(&rows, decode_incident)
    }

    async fn incident(&self, incident_id: i64) -> StoreResult<Option<Incident>> {
        let row = sqlx::query(SELECT_INCIDENT)
            .bind(incident_id)
            .fetch_optional(&self.read)
            .await
            .map_err(|err| db_error("incidents", err))?;
        row.as_ref().map(decode_incident).transpose()
    }

    async fn resolve_incident(&self, incident_id: i64, at: DateTime<Utc>, status: InstanceStatus) -> StoreResult<()> {
        let at_ms = at.timestamp_millis();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(SELECT_INCIDENT)
            .bind(incident_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|err| db_error("incidents", err))?;
        let Some(incident) = row.as_ref().map(decode_incident).transpose()? else {
            return Err(StoreError::Other(format!("incident {incident_id} does not exist")));
        };
        if incident.resolved_at.is_some() {
            return Ok(());
        }
        sqlx::query(RESOLVE_INCIDENT)
            .bind(incident_id)
            .bind(at_ms)
            .execute(&mut *tx)
            .await
            .map_err(|err| db_error("incidents", err))?;
        sqlx::query(SET_INSTANCE_STATUS)
            .bind(incident.instance.as_str())
            .bind(status.as_str())
            .bind(at_ms)
            .execute(&mut *tx)
            .await
            .map_err(|err| db_error("instances", err))?;
        tx.commit().await.map_err(|err| db_error("commit", err))
    }
}

const OUTBOX_PENDING: &str = "
    SELECT id, instance_id, seq, kind, payload, created_ms FROM outbox ORDER BY id LIMIT ?1";

const OUTBOX_ACK: &str = "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))";

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>> {
        let rows = sqlx::query(OUTBOX_PENDING)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(|err| db_error("outbox", err))?;
        decode_all(&rows, decode_outbox)
    }

    async fn outbox_ack(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = to_json(ids)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(OUTBOX_ACK).bind(ids).execute(&mut *tx).await.map_err(|err| db_error("outbox", err))?;
        tx.commit().await.map_err(|err| db_error("commit", err))
    }
}

const SELECT_SETTING: &str = "SELECT value FROM settings WHERE key = ?1";

const UPSERT_SETTING: &str = "
    INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";

#[async_trait]
impl SettingsStore for SqliteStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar(SELECT_SETTING)
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(|err| db_error("settings", err))
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(UPSERT_SETTING)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(|err| db_error("settings", err))?;
        tx.commit().await.map_err(|err| db_error("commit", err))
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_path_accepts_urls_and_plain_paths() {
        let path = |s: &str| database_path(s).expect("valid location");
        assert_eq!(path("sqlite:///abs/baton.db"), PathBuf::from("/abs/baton.db"));
        assert_eq!(path("sqlite://rel.db"), PathBuf::from("rel.db"));
        assert_eq!(path("sqlite:rel.db"), PathBuf::from("rel.db"));
        assert_eq!(path("data/baton.db"), PathBuf::from("data/baton.db"));
        assert!(database_path("sqlite://rel.db?mode=ro").is_err());
        assert!(database_path("sqlite::memory:").is_err());
        assert!(database_path("").is_err());
    }
}
