//! The `baton` command line, run as a user runs it. (An integration test of the root `baton`
//! package; the `baton-tests` crate in this folder holds the engine's cross-crate tests.)

mod client;
mod dev;
mod directory;
mod run;
#[path = "../../activities/tests/support/smtp_sink.rs"]
mod smtp_sink;
mod validate;

use std::process::Command;

use serde_json::Value;

fn baton(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_baton")).args(args).output().expect("baton runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

fn bench(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = baton(args);
    assert!(ok, "baton {args:?} failed: {stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn bench_reports_every_field_and_counts_real_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite://{}", dir.path().join("bench.db").display());
    let report = bench(&["bench", "w1", "--instances", "5", "--json", "--store", &store]);
    for field in [
        "workload",
        "store",
        "worker",
        "synchronous",
        "version",
        "instances",
        "steps",
        "commits",
        "steps_per_commit",
        "steps_per_sec",
        "workflows_per_sec",
        "p50_ms",
        "p99_ms",
        "rss_mb",
        "rss_waiting_mb",
        "peak_rss_mb",
        "completions_per_sec",
        "timer_lag_p99_ms",
        "timer_lag_max_ms",
        "errors",
        "seconds",
    ] {
        assert!(report.get(field).is_some(), "field {field} missing: {report}");
    }
    assert_eq!(report["workload"], "w1");
    assert_eq!(report["steps"], 50, "5 instances x 10 activity completions");
    assert_eq!(report["errors"], 0);
    assert!(report["commits"].as_u64().expect("commits") >= 10, "a step's successor never shares its commit");

    let timers = bench(&["bench", "w3", "--instances", "20", "--due-in-secs", "1", "--json"]);
    assert_eq!(timers["errors"], 0);
    assert!(timers["timer_lag_max_ms"].as_f64().is_some(), "{timers}");

    // The bench's instances replay with this build's code.
    let ids = sqlite_ids(&dir.path().join("bench.db"));
    let (ok, stdout, stderr) = baton(&["replay", &ids[0], "--store", &store, "--json"]);
    assert!(ok, "replay failed: {stdout} {stderr}");
    let replay: Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(replay["replayed_status"], "completed");
    assert_eq!(replay["error"], Value::Null);
}

#[test]
fn the_clock_refuses_to_move_on_a_system_clock_store_and_remote_workers_say_not_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let _ = bench(&["bench", "w1", "--instances", "1", "--json", "--store", &store]);
    let (ok, _, stderr) = baton(&["admin", "clock", "advance", "PT1H", "--store", &store]);
    assert!(!ok);
    assert!(stderr.contains("--clock manual"), "{stderr}");
    let (ok, _, stderr) = baton(&["bench", "w1", "--worker", "remote"]);
    assert!(!ok);
    assert!(stderr.contains("remote"), "{stderr}");
}

fn sqlite_ids(path: &std::path::Path) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = baton_engine::store::sqlite::SqliteStore::open(&path.to_string_lossy(), Default::default())
            .await
            .expect("open");
        let rows = baton_engine::store::HistoryStore::list_instances(&store, &Default::default()).await.expect("list");
        rows.into_iter().map(|row| row.id.0).collect()
    })
}
