//! Cross-crate test support: reading (and, for corruption tests, rewriting) the SQLite files the
//! engine writes, directly with sqlx, behind the engine's back.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use baton_engine::history::GENESIS_HASH;
use baton_engine::{HistoryEvent, InstanceId, StoredEvent};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

/// Instances the crash child starts (`crash-0` .. `crash-199`).
pub const CRASH_INSTANCES: usize = 200;
/// Sequential activity calls of each crash instance.
pub const CRASH_STEPS: usize = 5;
/// The definition the crash child registers.
pub const CRASH_DEFINITION: &str = "crash";
/// The activity the crash child registers: appends its idempotency key to the key file.
pub const CRASH_ACTIVITY: &str = "append";

/// History tags the tests look for (see `EventKind`; tags are pinned).
pub const TAG_INSTANCE_STARTED: u16 = 1;
pub const TAG_ACTIVITY_SCHEDULED: u16 = 2;
pub const TAG_ACTIVITY_COMPLETED: u16 = 3;
pub const TAG_INSTANCE_COMPLETED: u16 = 14;

/// The id and idempotency key of crash instance `i`.
pub fn crash_id(i: usize) -> String {
    format!("crash-{i}")
}

/// Opens an existing database file written by the engine (one connection, no schema changes).
pub async fn open_db(path: &Path) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(false).foreign_keys(false);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .with_context(|| format!("opening {}", path.display()))
}

/// `SELECT COUNT(*) ...` or any query giving one integer.
pub async fn scalar(pool: &SqlitePool, sql: &'static str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.with_context(|| sql.to_owned())
}

fn stored_event(row: &SqliteRow) -> anyhow::Result<StoredEvent> {
    let seq: i64 = row.try_get("seq")?;
    let tag: i64 = row.try_get("tag")?;
    let schema: i64 = row.try_get("schema")?;
    Ok(StoredEvent {
        instance: InstanceId::new(row.try_get::<String, _>("instance_id")?),
        seq: u64::try_from(seq).context("negative seq")?,
        tag: u16::try_from(tag).context("tag out of range")?,
        schema: u16::try_from(schema).context("schema out of range")?,
        at_ms: row.try_get("at_ms")?,
        actor: row.try_get("actor")?,
        payload: row.try_get("payload")?,
        salt: row.try_get("salt")?,
        erased: row.try_get("erased")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

const ALL_HISTORIES: &str = "
    SELECT instance_id, seq, tag, schema, at_ms, actor, payload, salt, erased, prev_hash, hash
    FROM history ORDER BY instance_id, seq";

const HISTORY_OF: &str = "
    SELECT instance_id, seq, tag, schema, at_ms, actor, payload, salt, erased, prev_hash, hash
    FROM history WHERE instance_id = ?1 ORDER BY seq";

/// Every stored event, by instance, in seq order.
pub async fn all_histories(pool: &SqlitePool) -> anyhow::Result<BTreeMap<String, Vec<StoredEvent>>> {
    let rows = sqlx::query(ALL_HISTORIES).fetch_all(pool).await.context("reading history")?;
    let mut histories: BTreeMap<String, Vec<StoredEvent>> = BTreeMap::new();
    for row in &rows {
        let event = stored_event(row)?;
        histories.entry(event.instance.as_str().to_owned()).or_default().push(event);
    }
    Ok(histories)
}

/// One instance's stored history, in seq order.
pub async fn history_of(pool: &SqlitePool, id: &str) -> anyhow::Result<Vec<StoredEvent>> {
    let rows = sqlx::query(HISTORY_OF).bind(id).fetch_all(pool).await.context("reading history")?;
    rows.iter().map(stored_event).collect()
}

/// Overwrites a stored event's tag, payload and hash in place (corruption tests).
pub async fn overwrite_event(pool: &SqlitePool, event: &StoredEvent) -> anyhow::Result<()> {
    let seq = i64::try_from(event.seq).context("seq out of range")?;
    let done = sqlx::query("UPDATE history SET tag = ?3, payload = ?4, hash = ?5 WHERE instance_id = ?1 AND seq = ?2")
        .bind(event.instance.as_str())
        .bind(seq)
        .bind(i64::from(event.tag))
        .bind(&event.payload)
        .bind(&event.hash)
        .execute(pool)
        .await
        .context("rewriting a history row")?;
    ensure!(done.rows_affected() == 1, "no history row {}:{}", event.instance, event.seq);
    Ok(())
}

/// Checks a whole history (a run that never continued as new): seqs are exactly 0..n, every
/// event chains to its predecessor from the genesis hash, its hash matches its content, and it
/// decodes. Returns the decoded events.
pub fn verify_history(events: &[StoredEvent]) -> anyhow::Result<Vec<HistoryEvent>> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut decoded = Vec::with_capacity(events.len());
    for (expected_seq, event) in (0u64..).zip(events) {
        if event.seq != expected_seq {
            bail!("{}: expected seq {expected_seq}, found {} (gap or duplicate)", event.instance, event.seq);
        }
        let ok = event
            .decode(Some(&prev))
            .with_context(|| format!("{}: event {} does not verify", event.instance, event.seq))?;
        prev = event.hash.clone();
        decoded.push(ok);
    }
    Ok(decoded)
}

/// The idempotency key (`instance:seq`) of an `ActivityScheduled` event.
pub fn activity_key(event: &StoredEvent) -> String {
    format!("{}:{}", event.instance, event.seq)
}

/// Lines of the key file, counted (a missing file counts as empty).
pub fn key_counts(path: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Lines in the key file so far (cheap enough to poll: the file stays small).
pub fn line_count(path: &Path) -> usize {
    std::fs::read(path).map(|bytes| bytes.iter().filter(|b| **b == b'\n').count()).unwrap_or(0)
}
