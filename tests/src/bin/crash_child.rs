//! The process the crash test kills: `baton-crash-child <db> <key-file>`.
//!
//! It opens the SQLite store, runs `Program::sequential("crash", "append", 5)` whose activity
//! appends its idempotency key to the key file (synced) and then works 10 to 199 ms, starts the
//! 200 instances `crash-{i}` with idempotency keys `crash-{i}` (a restarted child re-issues the
//! same starts and gets `created: false`), waits for them all, prints `DONE` and exits 0.
//!
//! Failpoints come from the `BATON_FAILPOINTS` environment variable, e.g.
//! `BATON_FAILPOINTS=step.before_commit=20` aborts the process at the 21st commit.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use baton_engine::program::Program;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{ActivityError, Engine, InstanceId, InstanceStatus, StartOptions, Store};
use baton_tests::{CRASH_ACTIVITY, CRASH_DEFINITION, CRASH_INSTANCES, CRASH_STEPS, crash_id};
use serde_json::json;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args_os().skip(1);
    let (Some(db), Some(keys)) = (args.next(), args.next()) else {
        bail!("usage: baton-crash-child <db> <key-file>");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(run(PathBuf::from(db), PathBuf::from(keys)))?;
    #[allow(clippy::print_stdout)]
    {
        println!("DONE");
    }
    std::io::stdout().flush().context("stdout")?;
    Ok(())
}

/// Appends `line` to the key file and syncs it: once this returns, the execution is on disk.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write of a short line to an O_APPEND file: concurrent appends never interleave.
    file.write_all(line.as_bytes())?;
    file.flush()?;
    file.sync_data()
}

/// 10 to 199 ms, fixed per key.
fn work_time(key: &str) -> Duration {
    let spread = key.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Duration::from_millis(10 + spread % 190)
}

async fn run(db: PathBuf, keys: PathBuf) -> anyhow::Result<()> {
    let db = db.to_str().context("database path is not UTF-8")?.to_owned();
    let sqlite = SqliteStore::open(&db, SqliteOptions::default()).await.context("opening the store")?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let keys = Arc::new(keys);
    let engine = Engine::builder()
        .store(store)
        .orchestration(Program::sequential(CRASH_DEFINITION, CRASH_ACTIVITY, CRASH_STEPS))
        .activity(CRASH_ACTIVITY, move |ctx, _input| {
            let keys = keys.clone();
            async move {
                let key = ctx.idempotency_key();
                let line = format!("{key}\n");
                tokio::task::spawn_blocking(move || append_line(&keys, &line))
                    .await
                    .map_err(|err| ActivityError::retryable(format!("append task: {err}")))?
                    .map_err(|err| ActivityError::retryable(format!("append: {err}")))?;
                // Some "work" after the side effect: a kill in this window loses the completion
                // but not the append, so the activity runs again after the restart. The delays
                // differ per key, which spreads completions over many commits.
                tokio::time::sleep(work_time(&key)).await;
                Ok(json!({ "key": key }))
            }
        })
        .build()
        .await
        .context("building the engine")?;
    let engine = Arc::new(engine);

    let mut runs = tokio::task::JoinSet::new();
    for i in 0..CRASH_INSTANCES {
        let engine = engine.clone();
        runs.spawn(async move {
            let id = InstanceId::new(crash_id(i));
            let options =
                StartOptions { id: Some(id.clone()), idempotency_key: Some(crash_id(i)), ..StartOptions::default() };
            let started = engine.start(CRASH_DEFINITION, json!({ "i": i }), options).await.context("start")?;
            ensure!(started.id == id, "start of {id} answered with {}", started.id);
            let outcome = engine.wait(&id).await.context("wait")?;
            ensure!(
                outcome.status == InstanceStatus::Completed,
                "{id} ended {:?}: {:?}",
                outcome.status,
                outcome.result
            );
            anyhow::Ok(started.created)
        });
    }
    let mut created = 0;
    while let Some(joined) = runs.join_next().await {
        if joined.context("instance task")?? {
            created += 1;
        }
    }
    let stats = engine.stats();
    eprintln!("crash child: all {CRASH_INSTANCES} instances completed ({created} created by this run); {stats:?}");
    engine.shutdown().await;
    sqlite.close().await;
    Ok(())
}
