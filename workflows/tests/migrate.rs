//! Moving running instances to a new version of their definition, on a real engine (SQLite,
//! simulated time): a dry run first, the move with its audit in history, replay across the
//! versions after a restart, the new version's tasks running after the move, and refusals that
//! name their reason.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_engine::human::{InboxQuery, Principal, TaskAction};
use baton_engine::replay::Replayer;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::store::{HistoryStore, TaskStore, TimerStore};
use baton_engine::{
    Actor, Clock, Engine, EngineError, InstanceId, InstanceStatus, ManualClock, Migrate, MovedTask, StartOptions,
};
use baton_workflows::interp::Workflow;
use baton_workflows::run::{content_hash, load};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

fn definition(version: &str, body: &str) -> String {
    format!("document:\n  dsl: '1.0.3'\n  namespace: test\n  name: leave\n  version: '{version}'\n{body}")
}

/// Version 1: a review by a person, then the answer.
fn v1() -> String {
    definition(
        "1.0.0",
        r#"do:
  - review:
      call: humanTask
      with:
        title: Review the request
        assign: { user: olga }
        outcomes: [approve, reject]
  - answer:
      set:
        outcome: ${ .outcome }
        version: 1
"#,
    )
}

/// Version 2: a new first step (which moved instances are past), the same review, a new audit
/// step after it (which they run), and another answer.
fn v2() -> String {
    definition(
        "2.0.0",
        r#"do:
  - prepare:
      set:
        prepared: true
  - review:
      call: humanTask
      with:
        title: Review the request
        assign: { user: olga }
        outcomes: [approve, reject]
  - audit:
      set:
        outcome: ${ .outcome }
        audited: true
  - answer:
      set:
        outcome: ${ .outcome }
        audited: ${ .audited }
        version: 2
"#,
    )
}

/// Version 3: the review is renamed, and a task named like it is of another kind.
fn v3() -> String {
    definition(
        "3.0.0",
        r#"do:
  - approve:
      call: humanTask
      with:
        title: Approve the request
        assign: { user: olga }
        outcomes: [approve, reject]
  - note:
      set:
        outcome: ${ .outcome }
        version: 3
"#,
    )
}

/// A timer version 1 waits on, and its version 2 with one more step after the wait.
fn timed(version: &str, extra: &str) -> String {
    format!(
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: cooling\n  version: '{version}'\ndo:\n  - cool:\n      wait: PT1H\n{extra}  - done:\n      set:\n        cooled: true\n        extra: ${{ .extra // false }}\n"
    )
}

fn workflow(source: &str) -> Workflow {
    Workflow::new(Arc::new(load(source, "test.yaml").expect("loads")), content_hash(source))
}

struct Harness {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    engine: Engine,
    sources: Vec<String>,
}

async fn open(db: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(db.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open store"))
}

async fn engine(store: Arc<SqliteStore>, clock: Arc<ManualClock>, sources: &[String]) -> Engine {
    let mut builder = Engine::builder().store(store).clock(clock);
    for source in sources {
        builder = builder.orchestration(workflow(source));
    }
    builder.build().await.expect("engine")
}

impl Harness {
    async fn new(sources: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("migrate.db");
        let store = open(&db).await;
        let clock = Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("time")));
        let engine = engine(store.clone(), clock.clone(), &sources).await;
        Self { _dir: dir, db, store, clock, engine, sources }
    }

    /// Stops the engine and starts a new one on the same file: instances load cold.
    async fn restart(&mut self) {
        self.engine.shutdown().await;
        let now = self.clock.now();
        self.store = open(&self.db).await;
        self.clock = Arc::new(ManualClock::frozen(now));
        self.engine = engine(self.store.clone(), self.clock.clone(), &self.sources).await;
    }

    async fn start(&self, key: &str) -> InstanceId {
        self.engine.start(key, json!({}), StartOptions::default()).await.expect("start").id
    }

    /// The open task of `id` in olga's inbox, once the instance has created it.
    async fn review_task(&self, id: &InstanceId) -> u64 {
        for _ in 0..2_000 {
            let inbox = self.engine.inbox(&InboxQuery::default(), &Principal::user("olga")).await.expect("inbox");
            if let Some(task) = inbox.iter().find(|t| &t.instance == id) {
                return task.seq;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the review of {id} never reached the inbox");
    }

    async fn migrate(
        &self,
        id: &InstanceId,
        to: &str,
        mapping: &[(&str, &str)],
        dry_run: bool,
    ) -> Result<baton_engine::Migration, EngineError> {
        let request = Migrate {
            to: to.into(),
            mapping: mapping.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
            reason: "the review moved after an audit was added".into(),
            dry_run,
        };
        self.engine.migrate(id, request, Actor::User { id: "ops".into() }).await
    }

    async fn version(&self, id: &InstanceId) -> String {
        self.store.instance(id).await.expect("row").expect("exists").version
    }

    async fn output(&self, id: &InstanceId) -> Value {
        let outcome = tokio::time::timeout(Duration::from_secs(20), self.engine.wait(id))
            .await
            .expect("ends in time")
            .expect("wait");
        assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
        outcome.result.expect("an output")
    }

    /// Every instance replays from its stored history with the versions it ran, and the
    /// newest snapshot gives the same state.
    async fn replay_all(self, ids: &[InstanceId]) {
        self.engine.shutdown().await;
        let store = open(&self.db).await;
        let mut replayer = Replayer::new();
        for source in &self.sources {
            replayer = replayer.orchestration(workflow(source));
        }
        for id in ids {
            let report = replayer.replay(store.as_ref(), id).await.expect("replay");
            assert_eq!(report.error, None, "replay of {id}");
            assert_ne!(report.snapshot_matches, Some(false), "the snapshot of {id}");
        }
    }
}

fn refusal(result: Result<baton_engine::Migration, EngineError>) -> String {
    match result {
        Err(EngineError::MigrationRefused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_waiting_instance_moves_to_the_new_version_survives_a_restart_and_runs_its_new_steps() {
    let mut h = Harness::new(vec![v1(), v2()]).await;
    let id = h.start("test/leave@1.0.0").await;
    let task = h.review_task(&id).await;

    let dry = h.migrate(&id, "2.0.0", &[], true).await.expect("the dry run passes");
    assert!(!dry.applied);
    assert_eq!((dry.from.as_str(), dry.to.as_str()), ("test/leave@1.0.0", "test/leave@2.0.0"));
    assert_eq!(dry.moved, vec![MovedTask { from: "/do/0/review".into(), to: "/do/1/review".into() }]);
    assert_eq!(h.version(&id).await, "1.0.0", "a dry run changes nothing");
    assert!(!h.store.history(&id, 0, u32::MAX).await.expect("history").iter().any(|e| e.tag == 38));

    let moved = h.migrate(&id, "2.0.0", &[], false).await.expect("moves");
    assert!(moved.applied);
    assert_eq!(h.version(&id).await, "2.0.0");
    let history = h.store.history(&id, 0, u32::MAX).await.expect("history");
    let migrated = history.iter().map(|e| e.to_view()).find(|e| e["type"] == "InstanceMigrated").expect("recorded");
    assert_eq!(migrated["actor"], json!({ "kind": "user", "id": "ops" }), "{migrated}");
    assert_eq!(migrated["data"]["reason"], "the review moved after an audit was added");
    assert_eq!(migrated["data"]["to"]["version"], "2.0.0");

    // Cold load after a restart: the history before the move replays on version 1, the rest on 2.
    h.restart().await;
    assert_eq!(h.review_task(&id).await, task, "the open task is the same one");
    let action = TaskAction::Complete { outcome: "approve".into(), data: json!({}), on_behalf_of: None };
    h.engine.act_on_task(&id, task, &Principal::user("olga"), action).await.expect("olga completes");
    let output = h.output(&id).await;
    assert_eq!(output, json!({ "outcome": "approve", "audited": true, "version": 2 }), "version 2's steps ran");

    // A later instance starts on version 2 and runs its first step too.
    let fresh = h.start("test/leave@2.0.0").await;
    h.review_task(&fresh).await;
    h.replay_all(&[id, fresh]).await;
}

#[tokio::test]
async fn a_move_is_refused_with_its_reason_until_a_mapping_makes_it_safe() {
    let h = Harness::new(vec![v1(), v2(), v3()]).await;
    let id = h.start("test/leave@1.0.0").await;
    h.review_task(&id).await;

    let reason = refusal(h.migrate(&id, "3.0.0", &[], true).await);
    assert!(reason.contains("`review` (/do/0/review) is running") && reason.contains("map it"), "{reason}");
    let reason = refusal(h.migrate(&id, "3.0.0", &[("review", "note")], false).await);
    assert!(reason.contains("is a `set` task, not a `call: humanTask` task"), "{reason}");
    let reason = refusal(h.migrate(&id, "3.0.0", &[("reviewing", "approve")], true).await);
    assert!(reason.contains("`reviewing`: no task has that name in version 1.0.0"), "{reason}");
    let reason = refusal(h.migrate(&id, "1.0.0", &[], true).await);
    assert!(reason.contains("already runs"), "{reason}");
    assert!(matches!(h.migrate(&id, "9.0.0", &[], true).await, Err(EngineError::DefinitionNotFound(_))));
    assert_eq!(h.version(&id).await, "1.0.0", "refusals change nothing");

    let moved = h.migrate(&id, "3.0.0", &[("/do/0/review", "approve")], false).await.expect("mapped, it moves");
    assert_eq!(moved.moved, vec![MovedTask { from: "/do/0/review".into(), to: "/do/0/approve".into() }]);
    let task = h.review_task(&id).await;
    let action = TaskAction::Complete { outcome: "reject".into(), data: json!({}), on_behalf_of: None };
    h.engine.act_on_task(&id, task, &Principal::user("olga"), action).await.expect("olga completes");
    assert_eq!(h.output(&id).await, json!({ "outcome": "reject", "version": 3 }));

    let reason = refusal(h.migrate(&id, "2.0.0", &[], true).await);
    assert!(reason.contains("has ended"), "{reason}");
    h.replay_all(&[id]).await;
}

#[tokio::test]
async fn a_timer_in_flight_keeps_its_due_time_across_the_move() {
    let extra = "  - flag:\n      set:\n        extra: true\n";
    let h = Harness::new(vec![timed("1.0.0", ""), timed("2.0.0", extra)]).await;
    let id = h.start("test/cooling@1.0.0").await;
    for _ in 0..2_000 {
        if !h.store.timers_of(&id).await.expect("timers").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let due = h.store.timers_of(&id).await.expect("timers")[0].due_at;
    h.migrate(&id, "2.0.0", &[], false).await.expect("moves");
    assert_eq!(h.store.timers_of(&id).await.expect("timers")[0].due_at, due, "the timer is the same");
    assert!(h.store.open_tasks(10).await.expect("tasks").is_empty());
    h.engine.advance_clock(Duration::from_secs(3600)).await.expect("advance");
    assert_eq!(h.output(&id).await, json!({ "cooled": true, "extra": true }));
    h.replay_all(&[id]).await;
}
