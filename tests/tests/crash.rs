//! Crash and restart: a child process runs 200 five-step instances on SQLite and is killed
//! (SIGKILL) five times mid-run, then aborted by the `step.before_commit` and
//! `step.after_commit` failpoints, then run to completion. Afterwards every instance completed
//! exactly once, every history is gapless and its hash chain verifies, every scheduled activity
//! ran at least once (and some more than once: at-least-once really re-executed), and nothing
//! is left open.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use baton_tests::{
    CRASH_INSTANCES, CRASH_STEPS, TAG_ACTIVITY_COMPLETED, TAG_ACTIVITY_SCHEDULED, TAG_INSTANCE_COMPLETED,
    TAG_INSTANCE_STARTED, activity_key, all_histories, crash_id, key_counts, line_count, open_db, scalar,
    verify_history,
};
use tokio::process::{Child, Command};

const SIGKILL: i32 = 9;
const SIGABRT: i32 = 6;

/// How long any one child run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Per kill: activity completions to wait for in this run, then a pause before the kill.
const KILLS: [(i64, u64); 5] = [(30, 0), (90, 7), (15, 3), (60, 15), (45, 1)];

struct Files {
    db: PathBuf,
    keys: PathBuf,
    log: PathBuf,
}

impl Files {
    /// The tail of the children's stderr, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn spawn_child(files: &Files, failpoints: Option<&str>, stdout: Stdio) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&files.log).expect("child log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton-crash-child"));
    command.arg(&files.db).arg(&files.keys).stdin(Stdio::null()).stdout(stdout).stderr(log).kill_on_drop(true);
    match failpoints {
        Some(failpoints) => command.env("BATON_FAILPOINTS", failpoints),
        None => command.env_remove("BATON_FAILPOINTS"),
    };
    command.spawn().expect("spawn the crash child")
}

const COMPLETIONS: &str = "SELECT COUNT(*) FROM history WHERE tag = 3";

/// Activity completions recorded so far, or `None` while the database is not readable yet.
async fn completions(db: &Path) -> Option<i64> {
    let pool = open_db(db).await.ok()?;
    let count = scalar(&pool, COMPLETIONS).await.ok();
    pool.close().await;
    count
}

/// (instances started, instances started but not completed), read after a child died.
async fn in_flight(db: &Path) -> (i64, i64) {
    let pool = open_db(db).await.expect("open the database after a crash");
    let started = scalar(&pool, "SELECT COUNT(*) FROM instances").await.expect("count instances");
    let open = scalar(&pool, "SELECT COUNT(*) FROM instances WHERE status <> 'completed'").await.expect("count open");
    pool.close().await;
    (started, open)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => format!("{status:?}"),
    }
}

/// Runs the child until it has made `progress` more activity completions, waits `pause`, and
/// SIGKILLs it. Panics if the child ends by itself first: the kill must land mid-run.
async fn run_and_kill(files: &Files, progress: i64, pause: Duration) {
    let lines_before = line_count(&files.keys);
    let completed_before = completions(&files.db).await.unwrap_or(0);
    let mut child = spawn_child(files, None, Stdio::null());
    let deadline = Instant::now() + RUN_LIMIT;
    let mut phase = "waiting for the child to execute activities";
    let mut pool = None;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!(
                "the child ended by itself ({}) while {phase}: the kill would not land mid-run\n{}",
                describe(status),
                files.log_tail()
            );
        }
        assert!(Instant::now() < deadline, "no progress within {RUN_LIMIT:?} while {phase}\n{}", files.log_tail());
        // Key file first: once the child appends, its engine is up and the database is in WAL
        // mode, so polling it cannot get in the way of the child's setup.
        if pool.is_none() && line_count(&files.keys) > lines_before {
            phase = "waiting for activity completions";
            pool = Some(open_db(&files.db).await.expect("open the database"));
        }
        if let Some(pool) = &pool
            && scalar(pool, COMPLETIONS).await.is_ok_and(|done| done >= completed_before + progress)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(pool) = pool {
        pool.close().await;
    }
    tokio::time::sleep(pause).await;
    child.start_kill().expect("send SIGKILL");
    let status = child.wait().await.expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "the child died by the kill, not {}\n{}",
        describe(status),
        files.log_tail()
    );
}

/// Runs the child with `failpoints` set and expects it to abort (SIGABRT), never to finish.
async fn run_until_failpoint(files: &Files, failpoints: &str) {
    let mut child = spawn_child(files, Some(failpoints), Stdio::null());
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!("BATON_FAILPOINTS={failpoints}: the child neither aborted nor finished\n{}", files.log_tail())
        })
        .expect("reap the child");
    assert!(!status.success(), "BATON_FAILPOINTS={failpoints}: the child ran to completion; the failpoint never fired");
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "BATON_FAILPOINTS={failpoints}: the child should abort at the failpoint, not end with {}\n{}",
        describe(status),
        files.log_tail()
    );
}

/// Runs the child to the end: it must print DONE and exit 0.
async fn run_to_completion(files: &Files) {
    let child = spawn_child(files, None, Stdio::piped());
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the final run did not finish within {RUN_LIMIT:?}\n{}", files.log_tail()))
        .expect("reap the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.lines().any(|line| line == "DONE"),
        "the final run ended with {} and printed {stdout:?}\n{}",
        describe(output.status),
        files.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_aborted_runs_lose_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files =
        Files { db: dir.path().join("crash.db"), keys: dir.path().join("keys.txt"), log: dir.path().join("child.log") };

    let mut kill_figures = Vec::new();
    for (progress, pause_ms) in KILLS {
        run_and_kill(&files, progress, Duration::from_millis(pause_ms)).await;
        let (started, open) = in_flight(&files.db).await;
        let done = completions(&files.db).await.expect("completions after a kill");
        eprintln!(
            "kill {}: {started} instances started, {open} in flight (started, not completed); {done} activity completions; {} executions so far",
            kill_figures.len() + 1,
            line_count(&files.keys)
        );
        assert!(open > 0, "kill {} landed after every instance had completed", kill_figures.len() + 1);
        kill_figures.push(open);
    }

    let mut failpoint_figures = Vec::new();
    for failpoints in ["step.before_commit=20", "step.after_commit=20"] {
        run_until_failpoint(&files, failpoints).await;
        let (started, open) = in_flight(&files.db).await;
        eprintln!("abort at BATON_FAILPOINTS={failpoints}: {started} instances started, {open} in flight");
        assert!(open > 0, "BATON_FAILPOINTS={failpoints} fired after every instance had completed");
        failpoint_figures.push(open);
    }

    run_to_completion(&files).await;

    // Everything below reads the database file directly, not through the engine.
    let pool = open_db(&files.db).await.expect("open the database");
    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT id, status, next_seq, last_hash FROM instances ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("read instances");
    let expected_ids: BTreeSet<String> = (0..CRASH_INSTANCES).map(crash_id).collect();
    let ids: BTreeSet<String> = rows.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(ids, expected_ids, "exactly the 200 instances exist");
    let histories = all_histories(&pool).await.expect("read histories");
    let mut expected_tags = vec![TAG_INSTANCE_STARTED];
    for _ in 0..CRASH_STEPS {
        expected_tags.extend([TAG_ACTIVITY_SCHEDULED, TAG_ACTIVITY_COMPLETED]);
    }
    expected_tags.push(TAG_INSTANCE_COMPLETED);

    let mut scheduled = BTreeSet::new();
    for (id, status, next_seq, last_hash) in &rows {
        assert_eq!(status, "completed", "{id} is {status}");
        let history = histories.get(id).unwrap_or_else(|| panic!("{id} has no history"));
        if let Err(err) = verify_history(history) {
            panic!("the history of {id} does not verify: {err:#}");
        }
        let tags: Vec<u16> = history.iter().map(|e| e.tag).collect();
        assert_eq!(tags.iter().filter(|t| **t == TAG_INSTANCE_COMPLETED).count(), 1, "{id}: one InstanceCompleted");
        assert_eq!(tags, expected_tags, "{id}: started, five scheduled/completed pairs, completed; nothing twice");
        assert_eq!(
            *next_seq,
            i64::try_from(history.len()).expect("small"),
            "{id}: the row's next_seq follows the history"
        );
        assert_eq!(Some(last_hash), history.last().map(|e| &e.hash), "{id}: the row's last_hash is the chain head");
        scheduled.extend(history.iter().filter(|e| e.tag == TAG_ACTIVITY_SCHEDULED).map(activity_key));
    }
    assert_eq!(histories.len(), CRASH_INSTANCES, "no history of an unknown instance");
    assert_eq!(scheduled.len(), CRASH_INSTANCES * CRASH_STEPS);

    let counts: BTreeMap<String, u32> = key_counts(&files.keys).expect("read the key file");
    let missing: Vec<&String> = scheduled.iter().filter(|key| !counts.contains_key(*key)).collect();
    assert!(
        missing.is_empty(),
        "{} scheduled activities never ran, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let unknown: Vec<&String> = counts.keys().filter(|key| !scheduled.contains(*key)).collect();
    assert!(unknown.is_empty(), "the key file holds keys no history scheduled: {unknown:?}");
    let executions: u32 = counts.values().sum();
    let reexecuted = counts.values().filter(|n| **n > 1).count();
    let most = counts.values().copied().max().unwrap_or(0);
    assert!(reexecuted > 0, "no activity ran twice: the crashes never landed between an activity and its commit");

    for (table, sql) in [
        ("tasks", "SELECT COUNT(*) FROM tasks"),
        ("timers", "SELECT COUNT(*) FROM timers"),
        ("incidents", "SELECT COUNT(*) FROM incidents"),
    ] {
        assert_eq!(scalar(&pool, sql).await.expect("count"), 0, "nothing is left in {table}");
    }
    pool.close().await;

    eprintln!(
        "crash summary: kills={} in_flight_at_kills={kill_figures:?} in_flight_at_failpoint_aborts={failpoint_figures:?} \
         executions={executions} unique_keys={} re_executed_keys={reexecuted} max_runs_of_one_key={most}",
        KILLS.len(),
        counts.len()
    );
}
