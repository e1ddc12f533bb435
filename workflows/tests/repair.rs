//! Repairing a DSL instance that failed, on a real engine (SQLite, simulated time): under
//! `onError: incident` an uncaught error stops the instance at its failed task with an
//! incident instead of ending it; operators retry the task with an edited input, complete it by
//! hand, or move the instance to a corrected version and retry. Every repair lands in history
//! with its actor and reason, and every instance replays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_engine::replay::Replayer;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::store::{HistoryStore, IncidentKind};
use baton_engine::{
    ActivityError, Actor, Engine, InstanceId, InstanceStatus, ManualClock, Migrate, Resolution, StartOptions,
};
use baton_workflows::interp::Workflow;
use baton_workflows::run::{content_hash, load};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

/// Prints on the printer its input names; printer `A` is out of order until repaired.
const PRINT: &str = r#"document:
  dsl: '1.0.3'
  namespace: test
  name: print
  version: '1.0.0'
  metadata:
    baton:
      onError: incident
do:
  - print:
      call: print
      with:
        printer: ${ .printer }
        copies: 2
  - done:
      set:
        printed: ${ .printed }
        on: ${ $workflow.input.printer }
"#;

/// Reads the print job's answer with a typo in its expression (`.pages` is a number).
fn typo(version: &str, expression: &str) -> String {
    format!(
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: typo\n  version: '{version}'\n  metadata:\n    baton:\n      onError: incident\ndo:\n  - print:\n      call: print\n      with:\n        printer: B\n  - count:\n      set:\n        pages: {expression}\n"
    )
}

fn workflow(source: &str) -> Workflow {
    Workflow::new(Arc::new(load(source, "test.yaml").expect("loads")), content_hash(source))
}

struct Harness {
    _dir: tempfile::TempDir,
    db: String,
    store: Arc<SqliteStore>,
    engine: Engine,
    sources: Vec<String>,
    /// The inputs the print activity got.
    jobs: Arc<Mutex<Vec<Value>>>,
    repaired: Arc<AtomicBool>,
}

impl Harness {
    async fn new(sources: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("repair.db").to_str().expect("utf-8").to_owned();
        let store = Arc::new(SqliteStore::open(&db, SqliteOptions::default()).await.expect("store"));
        let clock = Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("time")));
        let jobs: Arc<Mutex<Vec<Value>>> = Arc::default();
        let repaired = Arc::new(AtomicBool::new(false));
        let mut builder = Engine::builder().store(store.clone()).clock(clock);
        for source in &sources {
            builder = builder.orchestration(workflow(source));
        }
        let (seen, fixed) = (jobs.clone(), repaired.clone());
        let engine = builder
            .activity("print", move |_, input: Value| {
                let (seen, fixed) = (seen.clone(), fixed.clone());
                async move {
                    seen.lock().expect("lock").push(input.clone());
                    if input["printer"] == "A" && !fixed.load(Ordering::SeqCst) {
                        return Err(ActivityError::non_retryable("printer A is out of paper"));
                    }
                    Ok(json!({ "printed": true, "pages": 3 }))
                }
            })
            .build()
            .await
            .expect("engine");
        Self { _dir: dir, db, store, engine, sources, jobs, repaired }
    }

    async fn start(&self, key: &str, input: Value) -> InstanceId {
        self.engine.start(key, input, StartOptions::default()).await.expect("start").id
    }

    /// The instance's open incident, once it has one.
    async fn incident(&self, id: &InstanceId) -> baton_engine::store::Incident {
        for _ in 0..2_000 {
            if let Some(incident) = self.engine.incidents(Some(id), true).await.expect("incidents").into_iter().next() {
                return incident;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{id} never got an incident");
    }

    async fn outcome(&self, id: &InstanceId) -> baton_engine::Outcome {
        tokio::time::timeout(Duration::from_secs(20), self.engine.wait(id)).await.expect("ends in time").expect("wait")
    }

    async fn history(&self, id: &InstanceId) -> Vec<Value> {
        self.store.history(id, 0, u32::MAX).await.expect("history").iter().map(|e| e.to_view()).collect()
    }

    async fn replay_all(self, ids: &[InstanceId]) {
        self.engine.shutdown().await;
        let store = SqliteStore::open(&self.db, SqliteOptions::default()).await.expect("store");
        let mut replayer = Replayer::new();
        for source in &self.sources {
            replayer = replayer.orchestration(workflow(source));
        }
        for id in ids {
            let report = replayer.replay(&store, id).await.expect("replay");
            assert_eq!(report.error, None, "replay of {id}");
        }
    }
}

fn ops() -> Actor {
    Actor::User { id: "ops".into() }
}

#[tokio::test]
async fn a_failed_call_waits_at_its_task_and_is_retried_with_an_edited_input_or_completed_by_hand() {
    let h = Harness::new(vec![PRINT.to_owned()]).await;
    let id = h.start("test/print@1.0.0", json!({ "printer": "A" })).await;
    let incident = h.incident(&id).await;
    assert_eq!(incident.kind, IncidentKind::ActivityFailed);
    assert!(incident.reason.contains("/do/0/print") && incident.reason.contains("out of paper"), "{}", incident.reason);
    let row = h.engine.describe(&id).await.expect("describe").row;
    assert_eq!((row.status, &row.result), (InstanceStatus::Faulted, &None), "stopped at the task, not ended");

    // Printer B works: the task runs again with the edited input.
    let edited = json!({ "printer": "B", "copies": 2 });
    let retry = Resolution::Retry { input: Some(edited.clone()) };
    h.engine.resolve_incident(incident.id, retry, "printer A is out of paper", ops()).await.expect("retried");
    let outcome = h.outcome(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed, "{outcome:?}");
    assert_eq!(outcome.result, Some(json!({ "printed": true, "on": "A" })), "the call's output flows on");
    assert_eq!(h.jobs.lock().expect("lock").last(), Some(&edited));
    let history = h.history(&id).await;
    let resolved = history.iter().find(|e| e["type"] == "IncidentResolved").expect("the repair is in history");
    assert_eq!(resolved["actor"], json!({ "kind": "user", "id": "ops" }));
    assert!(
        resolved["data"]["reason"].as_str().is_some_and(|r| r.ends_with("printer A is out of paper")),
        "{resolved}"
    );
    assert_eq!(resolved["data"]["input"], edited);

    // Another one, printed at the front desk: completed by hand with the result it would give.
    let second = h.start("test/print@1.0.0", json!({ "printer": "A" })).await;
    let incident = h.incident(&second).await;
    let by_hand = Resolution::Complete { result: json!({ "printed": "by hand" }) };
    h.engine.resolve_incident(incident.id, by_hand, "printed at the front desk", ops()).await.expect("completed");
    assert_eq!(h.outcome(&second).await.result, Some(json!({ "printed": "by hand", "on": "A" })));

    // Without a repair, a plain retry runs the same call again and succeeds once the printer does.
    let third = h.start("test/print@1.0.0", json!({ "printer": "A" })).await;
    let incident = h.incident(&third).await;
    h.repaired.store(true, Ordering::SeqCst);
    h.engine
        .resolve_incident(incident.id, Resolution::Retry { input: None }, "paper added", ops())
        .await
        .expect("retried");
    assert_eq!(h.outcome(&third).await.result, Some(json!({ "printed": true, "on": "A" })));
    h.replay_all(&[id, second, third]).await;
}

#[tokio::test]
async fn an_error_in_the_definition_is_fixed_by_moving_the_instance_to_a_corrected_version_and_retrying() {
    let broken = typo("1.0.0", "${ .pages | ascii_downcase }");
    let fixed = typo("2.0.0", "${ .pages }");
    let h = Harness::new(vec![broken, fixed]).await;
    let id = h.start("test/typo@1.0.0", json!({})).await;
    let incident = h.incident(&id).await;
    assert_eq!(incident.kind, IncidentKind::OrchestrationFault);
    assert!(incident.reason.contains("/do/1/count"), "{}", incident.reason);
    // Retrying on the same version fails the same way: the expression is wrong.
    h.engine.resolve_incident(incident.id, Resolution::Retry { input: None }, "", ops()).await.expect("retried");
    let again = h.incident(&id).await;
    assert_ne!(again.id, incident.id, "a new incident");

    let request = Migrate { to: "2.0.0".into(), reason: "the page count is a number".into(), ..Migrate::default() };
    let moved = h.engine.migrate(&id, request, ops()).await.expect("a faulted instance moves");
    assert_eq!(moved.moved.len(), 1, "{moved:?}");
    h.engine
        .resolve_incident(again.id, Resolution::Retry { input: None }, "fixed in 2.0.0", ops())
        .await
        .expect("retry");
    let outcome = h.outcome(&id).await;
    assert_eq!(outcome.result, Some(json!({ "pages": 3 })), "{outcome:?}");
    assert_eq!(h.jobs.lock().expect("lock").len(), 1, "the print job ran once: its result was delivered again");
    h.replay_all(&[id]).await;
}
