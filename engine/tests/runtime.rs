//! Scenario tests of the runtime with the Rust test program: sequential and parallel
//! activities, timers, event waits (before and after the wait), retries, timeouts, incidents,
//! children, continue-as-new, restarts. Time is a frozen manual clock moved by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_engine::program::{Op, Program};
use baton_engine::store::memory::MemoryStore;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{
    ActivityError, ActivityOptions, Actor, Clock, Engine, EngineBuilder, EventKind, InstanceId, InstanceStatus,
    ManualClock, RaiseEvent, Raised, Resolution, RetryPolicy, StartOptions, Store,
};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid time")))
}

fn noop_builder(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> EngineBuilder {
    Engine::builder()
        .store(store)
        .clock(clock)
        .activity("noop", |ctx, input| async move { Ok(json!({ "seq": ctx.seq, "step": input["step"] })) })
        .activity("echo", |_, input| async move { Ok(input) })
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn wait(engine: &Engine, id: &InstanceId) -> baton_engine::Outcome {
    tokio::time::timeout(Duration::from_secs(20), engine.wait(id)).await.expect("instance ends in time").expect("wait")
}

/// Polls until `check` holds (the engine works on other tasks; this never asserts timing).
async fn eventually<F: Fn() -> bool>(what: &str, check: F) {
    for _ in 0..2_000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until the instance's open task records `attempts` failed attempts (the retry is then
/// scheduled from the clock's current time, so moving the clock afterwards is meaningful).
async fn failed_attempts(engine: &Engine, id: &InstanceId, attempts: u32) {
    for _ in 0..2_000 {
        let tasks = engine.describe(id).await.expect("describe").tasks;
        if tasks.first().is_some_and(|t| t.attempt >= attempts) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the task never recorded {attempts} failed attempts");
}

/// Waits until the instance has an open incident, and returns its open incidents.
async fn open_incidents(engine: &Engine, id: &InstanceId) -> Vec<baton_engine::store::Incident> {
    for _ in 0..2_000 {
        let incidents = engine.incidents(Some(id), true).await.expect("incidents");
        if !incidents.is_empty() {
            return incidents;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no incident was opened on {id}");
}

async fn kinds(engine: &Engine, id: &InstanceId) -> Vec<String> {
    let history = engine.history(id, 0, 10_000).await.expect("history");
    history.iter().map(|e| e.to_view()["type"].as_str().unwrap_or("?").to_owned()).collect()
}

async fn start(engine: &Engine, definition: &str, input: Value) -> InstanceId {
    engine.start(definition, input, StartOptions::default()).await.expect("start").id
}

#[tokio::test]
async fn sequential_activities_complete_in_order() {
    let program = Program::sequential("seq", "noop", 3);
    let engine = noop_builder(memory(), clock()).orchestration(program).build().await.expect("engine");
    let id = start(&engine, "seq", json!({"n": 1})).await;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    let steps: Vec<_> = outcome.result.expect("output")["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["step"].clone())
        .collect();
    assert_eq!(steps, vec![json!(0), json!(1), json!(2)]);
    assert_eq!(
        kinds(&engine, &id).await,
        [
            "InstanceStarted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "ActivityScheduled",
            "ActivityCompleted",
            "InstanceCompleted"
        ]
    );
    let description = engine.describe(&id).await.expect("describe");
    assert!(description.tasks.is_empty(), "finished tasks leave the store");
    engine.shutdown().await;
}

#[tokio::test]
async fn parallel_activities_all_complete() {
    let program = Program::new("par", vec![Op::Parallel { names: vec!["noop".into(), "echo".into(), "noop".into()] }]);
    let engine = noop_builder(memory(), clock()).orchestration(program).build().await.expect("engine");
    let id = start(&engine, "par", json!({})).await;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result.expect("output")["results"].as_array().map(Vec::len), Some(3));
    let history = kinds(&engine, &id).await;
    assert_eq!(
        &history[1..4],
        ["ActivityScheduled", "ActivityScheduled", "ActivityScheduled"],
        "all three start in one step"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn timers_fire_when_the_clock_reaches_them() {
    let clock = clock();
    let program = Program::new(
        "sleepy",
        vec![Op::Sleep { ms: 3_600_000 }, Op::Activity { name: "noop".into(), options: ActivityOptions::default() }],
    );
    let engine = noop_builder(memory(), clock.clone()).orchestration(program).build().await.expect("engine");
    let id = start(&engine, "sleepy", json!({})).await;
    let timers = engine.describe(&id).await.expect("describe").timers;
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at, clock.now() + chrono::Duration::hours(1));
    engine.advance_clock(Duration::from_secs(1_800)).await.expect("advance");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        engine.describe(&id).await.expect("describe").row.status,
        InstanceStatus::Waiting,
        "half way: still waiting"
    );
    engine.advance_clock(Duration::from_secs(1_800)).await.expect("advance");
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
    assert!(engine.describe(&id).await.expect("describe").timers.is_empty());
    engine.shutdown().await;
}

#[tokio::test]
async fn events_are_taken_whether_they_arrive_before_or_after_the_wait() {
    let program = Program::new(
        "approval",
        vec![Op::Sleep { ms: 1_000 }, Op::WaitEvent { name: "first".into() }, Op::WaitEvent { name: "second".into() }],
    );
    let clock = clock();
    let engine = noop_builder(memory(), clock.clone()).orchestration(program).build().await.expect("engine");
    let id = start(&engine, "approval", json!({})).await;
    let event = |name: &str, id: &str| RaiseEvent {
        name: name.into(),
        payload: json!({ "from": name }),
        event_id: Some(id.into()),
        actor: Actor::User { id: "alice".into() },
    };
    // "first" arrives while the instance still sleeps: it is buffered.
    assert_eq!(engine.raise_event(&id, event("first", "e1")).await.expect("raise"), Raised::Accepted);
    assert_eq!(engine.raise_event(&id, event("first", "e1")).await.expect("raise"), Raised::Duplicate, "same event id");
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(engine.raise_event(&id, event("second", "e2")).await.expect("raise"), Raised::Accepted);
    let outcome = wait(&engine, &id).await;
    let results = outcome.result.expect("output")["results"].clone();
    assert_eq!(results, json!(["timer", {"from": "first"}, {"from": "second"}]));
    let history = engine.history(&id, 0, 100).await.expect("history");
    let received: Vec<_> = history.iter().filter(|e| e.to_view()["type"] == "EventReceived").collect();
    assert_eq!(received.len(), 2, "the duplicate is not recorded");
    assert_eq!(received[0].to_view()["actor"], json!({"kind": "user", "id": "alice"}));
    engine.shutdown().await;
}

#[tokio::test]
async fn an_event_or_its_timeout_whichever_comes_first() {
    let program = Program::new("deadline", vec![Op::WaitEventOrTimeout { name: "approve".into(), ms: 60_000 }]);
    let engine = noop_builder(memory(), clock()).orchestration(program).build().await.expect("engine");
    let late = start(&engine, "deadline", json!({})).await;
    let on_time = start(&engine, "deadline", json!({})).await;
    let approve = RaiseEvent { name: "approve".into(), payload: json!("yes"), event_id: None, actor: Actor::System };
    engine.raise_event(&on_time, approve).await.expect("raise");
    assert_eq!(wait(&engine, &on_time).await.result.expect("output")["results"], json!(["yes"]));
    assert!(kinds(&engine, &on_time).await.contains(&"TimerCancelled".to_owned()));
    engine.advance_clock(Duration::from_secs(60)).await.expect("advance");
    assert_eq!(wait(&engine, &late).await.result.expect("output")["results"], json!(["timeout"]));
    engine.shutdown().await;
}

fn flaky(
    failures: u32,
    calls: Arc<AtomicU32>,
) -> impl Fn(
    baton_engine::ActivityContext,
    Value,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ActivityError>> + Send>>
+ Send
+ Sync
+ 'static {
    move |ctx, _| {
        let calls = calls.clone();
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= failures {
                Err(ActivityError::retryable(format!("failure {n}")))
            } else {
                Ok(json!({ "attempt": ctx.attempt }))
            }
        })
    }
}

fn retrying(max_attempts: u32) -> ActivityOptions {
    ActivityOptions {
        retry: RetryPolicy {
            max_attempts,
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            max_interval_ms: 10_000,
        },
        ..ActivityOptions::default()
    }
}

#[tokio::test]
async fn retries_back_off_on_the_engine_clock_then_succeed() {
    let calls = Arc::new(AtomicU32::new(0));
    let program = Program::new("retry", vec![Op::Activity { name: "flaky".into(), options: retrying(5) }]);
    let clock = clock();
    let engine = noop_builder(memory(), clock.clone())
        .activity("flaky", flaky(2, calls.clone()))
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "retry", json!({})).await;
    failed_attempts(&engine, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry before the backoff has passed");
    let task = engine.describe(&id).await.expect("describe").tasks.remove(0);
    assert_eq!((task.attempt, task.last_error.as_deref()), (1, Some("failure 1")));
    assert_eq!(task.visible_at, clock.now() + chrono::Duration::seconds(1));
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance");
    failed_attempts(&engine, &id, 2).await;
    engine.advance_clock(Duration::from_secs(2)).await.expect("advance");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result.expect("output")["results"], json!([{"attempt": 3}]));
    engine.shutdown().await;
}

#[tokio::test]
async fn an_unhandled_final_failure_becomes_a_retryable_incident() {
    let calls = Arc::new(AtomicU32::new(0));
    let program = Program::new("incident", vec![Op::Activity { name: "flaky".into(), options: retrying(2) }]);
    let clock = clock();
    let engine = noop_builder(memory(), clock.clone())
        .activity("flaky", flaky(2, calls.clone()))
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "incident", json!({})).await;
    failed_attempts(&engine, &id, 1).await;
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance");
    eventually("second attempt", || calls.load(Ordering::SeqCst) == 2).await;
    let incidents = open_incidents(&engine, &id).await;
    assert_eq!(incidents.len(), 1, "one open incident");
    assert!(incidents[0].reason.contains("failure 2"), "reason says why: {}", incidents[0].reason);
    let description = engine.describe(&id).await.expect("describe");
    assert_eq!(description.row.status, InstanceStatus::Faulted);
    assert!(description.tasks[0].parked, "the task waits for the retry");
    assert!(kinds(&engine, &id).await.contains(&"IncidentRaised".to_owned()));
    let refused = engine
        .raise_event(&id, RaiseEvent { name: "x".into(), payload: json!(null), event_id: None, actor: Actor::System })
        .await;
    assert!(matches!(refused, Err(baton_engine::EngineError::InstanceFaulted { .. })), "{refused:?}");

    let ops = Actor::User { id: "otto".into() };
    engine.retry_incident_by(incidents[0].id, "the service is back", ops.clone()).await.expect("retry");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert!(engine.incidents(Some(&id), true).await.expect("incidents").is_empty());
    let history = kinds(&engine, &id).await;
    assert_eq!(
        &history[history.len() - 4..],
        ["IncidentRaised", "IncidentResolved", "ActivityCompleted", "InstanceCompleted"]
    );
    let events = engine.history(&id, 0, 1000).await.expect("history");
    let resolved = events.iter().map(|e| e.to_view()).find(|v| v["type"] == "IncidentResolved").expect("resolved");
    assert_eq!(resolved["actor"], serde_json::to_value(&ops).expect("actor"), "who retried is recorded");
    assert!(resolved["data"]["reason"].as_str().expect("reason").ends_with("the service is back"), "{resolved}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failed_activity_is_retried_with_an_edited_input_or_completed_by_hand_with_the_actor_recorded() {
    let program = Program::new("repair", vec![Op::Activity { name: "picky".into(), options: retrying(1) }]);
    let engine = noop_builder(memory(), clock())
        .activity("picky", |_, input: Value| async move {
            match input["fixed"].as_bool() {
                Some(true) => Ok(json!({"ran with": input})),
                _ => Err(ActivityError::non_retryable("the input is not fixed")),
            }
        })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let ops = Actor::User { id: "otto".into() };

    // Retried with an edited input: the next attempt runs with it, and the edit is in history.
    let id = start(&engine, "repair", json!({})).await;
    let incident = open_incidents(&engine, &id).await[0].id;
    let edited = json!({"fixed": true});
    let retry = Resolution::Retry { input: Some(edited.clone()) };
    engine.resolve_incident(incident, retry, "typo in the address", ops.clone()).await.expect("retry");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(outcome.result.expect("output")["results"], json!([{"ran with": edited}]));
    let events = engine.history(&id, 0, 1000).await.expect("history");
    let resolved = events.iter().map(|e| e.to_view()).find(|v| v["type"] == "IncidentResolved").expect("resolved");
    assert_eq!(resolved["actor"], serde_json::to_value(&ops).expect("actor"));
    assert_eq!(resolved["data"]["input"], edited, "the edit is audited: {resolved}");
    assert!(resolved["data"]["reason"].as_str().expect("reason").contains("edited input: typo in the address"));

    // Completed by hand: the person's result is the activity's, with them as its actor.
    let id = start(&engine, "repair", json!({})).await;
    let incident = open_incidents(&engine, &id).await[0].id;
    let complete = Resolution::Complete { result: json!({"printed": "by hand"}) };
    engine.resolve_incident(incident, complete.clone(), "printed at the desk", ops.clone()).await.expect("complete");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(outcome.result.expect("output")["results"], json!([{"printed": "by hand"}]));
    let history = kinds(&engine, &id).await;
    assert_eq!(
        &history[history.len() - 4..],
        ["IncidentRaised", "IncidentResolved", "ActivityCompleted", "InstanceCompleted"]
    );
    let events = engine.history(&id, 0, 1000).await.expect("history");
    let done = events.iter().map(|e| e.to_view()).find(|v| v["type"] == "ActivityCompleted").expect("completed");
    assert_eq!(done["actor"], serde_json::to_value(&ops).expect("actor"), "who completed it is recorded");
    assert!(engine.describe(&id).await.expect("describe").tasks.is_empty(), "no task row is left");
    let again = engine.resolve_incident(incident, complete, "twice", ops).await;
    assert!(matches!(again, Err(baton_engine::EngineError::IncidentNotFound(_))), "{again:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_handled_failure_fails_the_instance_with_the_problem() {
    let mut program = Program::new("strict", vec![Op::Activity { name: "broken".into(), options: retrying(3) }]);
    program.fail_on_activity_error = true;
    let engine = noop_builder(memory(), clock())
        .activity("broken", |_, _| async { Err(ActivityError::non_retryable("bad input")) })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "strict", json!({})).await;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Faulted);
    assert_eq!(
        outcome.result.expect("failure")["type"],
        "activity.non_retryable",
        "no retry for a non-retryable error"
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried_and_its_late_completion_is_dropped() {
    let calls = Arc::new(AtomicU32::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let options = ActivityOptions { start_to_close_ms: Some(5_000), ..retrying(3) };
    let program = Program::new("slow", vec![Op::Activity { name: "slow".into(), options }]);
    let clock = clock();
    let (c, r) = (calls.clone(), release.clone());
    let engine = noop_builder(memory(), clock.clone())
        .activity("slow", move |ctx, _| {
            let (calls, release) = (c.clone(), r.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt == 1 {
                    release.notified().await;
                    return Ok(json!("late"));
                }
                Ok(json!("on time"))
            }
        })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "slow", json!({})).await;
    eventually("first attempt runs", || calls.load(Ordering::SeqCst) == 1).await;
    engine.advance_clock(Duration::from_secs(5)).await.expect("advance");
    failed_attempts(&engine, &id, 1).await;
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance past the backoff");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result.expect("output")["results"], json!(["on time"]));
    release.notify_waiters();
    let history = engine.history(&id, 0, 100).await.expect("history");
    let completed = history.iter().find(|e| e.to_view()["type"] == "ActivityCompleted").expect("completed");
    assert_eq!(completed.to_view()["data"]["attempt"], 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn heartbeats_keep_an_attempt_alive_and_silence_times_it_out() {
    let options = ActivityOptions { heartbeat_timeout_ms: Some(10_000), ..retrying(2) };
    let program = Program::new("beats", vec![Op::Activity { name: "quiet".into(), options }]);
    let clock = clock();
    let started = Arc::new(AtomicU32::new(0));
    let counter = started.clone();
    let engine = noop_builder(memory(), clock.clone())
        .activity("quiet", move |ctx, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if ctx.attempt == 1 {
                    std::future::pending::<()>().await;
                }
                Ok(json!(ctx.attempt))
            }
        })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "beats", json!({})).await;
    eventually("the first attempt runs", || started.load(Ordering::SeqCst) == 1).await;
    engine.advance_clock(Duration::from_secs(10)).await.expect("advance");
    failed_attempts(&engine, &id, 1).await;
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance past the backoff");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result.expect("output")["results"], json!([2]));
    let task_failures = engine.stats();
    assert_eq!(task_failures.activity_completions, 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn starts_are_idempotent_by_key() {
    let engine = noop_builder(memory(), clock())
        .orchestration(Program::sequential("seq", "noop", 1))
        .build()
        .await
        .expect("engine");
    let options = || StartOptions { id: None, idempotency_key: Some("order-42".into()), ..StartOptions::default() };
    let first = engine.start("seq", json!({}), options()).await.expect("start");
    let second = engine.start("seq", json!({}), options()).await.expect("start");
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(first.id, second.id);
    let duplicate_id = engine
        .start(
            "seq",
            json!({}),
            StartOptions { id: Some(first.id.clone()), idempotency_key: None, ..StartOptions::default() },
        )
        .await;
    assert!(matches!(duplicate_id, Err(baton_engine::EngineError::InstanceExists(_))));
    engine.shutdown().await;
}

#[tokio::test]
async fn a_child_runs_and_its_output_returns_to_the_parent() {
    let child = Program::sequential("child", "echo", 1);
    let parent = Program::new(
        "parent",
        vec![
            Op::Child { definition: "child".into() },
            Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
        ],
    );
    let engine =
        noop_builder(memory(), clock()).orchestration(child).orchestration(parent).build().await.expect("engine");
    let id = start(&engine, "parent", json!({"x": 1})).await;
    let outcome = wait(&engine, &id).await;
    let results = outcome.result.expect("output")["results"].clone();
    assert_eq!(results[0]["results"][0]["input"], json!({"x": 1}), "the child's output: {results}");
    let child_id = InstanceId::new(format!("{id}/1"));
    assert_eq!(engine.describe(&child_id).await.expect("child").row.parent.expect("parent").instance, id);
    engine.shutdown().await;
}

#[tokio::test]
async fn terminate_ends_an_instance_and_disarms_its_timers() {
    let engine = noop_builder(memory(), clock())
        .orchestration(Program::new("long", vec![Op::Sleep { ms: 86_400_000 }]))
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "long", json!({})).await;
    engine.terminate(&id, "no longer needed", Actor::User { id: "ops".into() }).await.expect("terminate");
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Cancelled);
    assert!(engine.describe(&id).await.expect("describe").timers.is_empty());
    assert!(engine.terminate(&id, "again", Actor::System).await.is_err(), "an ended instance takes no more input");
    engine.shutdown().await;
}

#[tokio::test]
async fn continue_as_new_keeps_state_small_and_runs_to_the_end() {
    let program = Program::new("loop", vec![Op::Loop { name: "noop".into(), times: 250, every: 100 }]);
    let engine = noop_builder(memory(), clock()).orchestration(program).build().await.expect("engine");
    let id = start(&engine, "loop", json!({})).await;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result.expect("output")["results"], json!([250]));
    let history = kinds(&engine, &id).await;
    assert_eq!(history.iter().filter(|k| *k == "ContinuedAsNew").count(), 2);
    let row = engine.describe(&id).await.expect("describe").row;
    assert!(row.run_start > 400, "the last run starts late in the history: {}", row.run_start);
    engine.shutdown().await;
}

#[tokio::test]
async fn an_instance_survives_a_restart_of_the_engine_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("baton.db");
    let clock = clock();
    let program = || {
        Program::new(
            "two-phase",
            vec![
                Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
                Op::Sleep { ms: 60_000 },
                Op::WaitEvent { name: "go".into() },
                Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
            ],
        )
    };
    let open = || async {
        Arc::new(SqliteStore::open(path.to_str().expect("utf-8 path"), SqliteOptions::default()).await.expect("open"))
            as Arc<dyn Store>
    };
    let id = {
        let engine = noop_builder(open().await, clock.clone()).orchestration(program()).build().await.expect("engine");
        let id = start(&engine, "two-phase", json!({})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        engine.shutdown().await;
        id
    };
    let engine =
        noop_builder(open().await, clock.clone()).orchestration(program()).build().await.expect("engine again");
    engine.advance_clock(Duration::from_secs(60)).await.expect("advance");
    tokio::time::sleep(Duration::from_millis(100)).await;
    engine
        .raise_event(&id, RaiseEvent { name: "go".into(), payload: json!(1), event_id: None, actor: Actor::System })
        .await
        .expect("raise");
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
    let history = engine.history(&id, 0, 100).await.expect("history");
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..history.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");
    let mut prev = baton_engine::history::GENESIS_HASH.to_owned();
    for event in &history {
        event.decode(Some(&prev)).expect("the chain holds");
        prev = event.hash.clone();
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_changed_definition_is_refused_with_an_incident() {
    let store = memory();
    let id = {
        let engine = noop_builder(store.clone(), clock())
            .orchestration(Program::new("p", vec![Op::Sleep { ms: 1_000 }]))
            .build()
            .await
            .expect("engine");
        let id = start(&engine, "p", json!({})).await;
        engine.shutdown().await;
        id
    };
    // Same name and version, different content: old instances must not run on it.
    let engine = noop_builder(store.clone(), clock())
        .orchestration(Program::new("p", vec![Op::Sleep { ms: 2_000 }]))
        .build()
        .await
        .expect("engine");
    let refused = engine
        .raise_event(&id, RaiseEvent { name: "x".into(), payload: json!(null), event_id: None, actor: Actor::System })
        .await;
    assert!(refused.is_err());
    let incidents = engine.incidents(Some(&id), true).await.expect("incidents");
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].reason.contains("changed"), "{}", incidents[0].reason);
    engine.shutdown().await;
}

#[tokio::test]
async fn history_events_record_the_definition_and_interpreter() {
    let engine = noop_builder(memory(), clock())
        .orchestration(Program::sequential("seq", "noop", 1))
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "seq", json!({"a": 1})).await;
    wait(&engine, &id).await;
    let first = engine.history(&id, 0, 1).await.expect("history").remove(0).decode(None).expect("decode");
    let EventKind::InstanceStarted(started) = first.kind else { panic!("first event is InstanceStarted") };
    assert_eq!(started.definition.name, "seq");
    assert_eq!(started.definition.content_hash.len(), 64);
    assert_eq!(started.interpreter_version, env!("CARGO_PKG_VERSION"));
    engine.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_running_activities_and_recovery_finishes_the_rest() {
    let store = memory();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let program = || Program::sequential("drain", "gated", 2);
    let g = gate.clone();
    let engine = noop_builder(store.clone(), clock())
        .activity("gated", move |_, _| {
            let gate = g.clone();
            async move {
                gate.acquire().await.map_err(|_| ActivityError::retryable("closed"))?.forget();
                Ok(json!("done"))
            }
        })
        .orchestration(program())
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "drain", json!({})).await;
    let shutdown = tokio::spawn(async move {
        engine.shutdown().await;
        engine
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the running activity");
    gate.add_permits(1);
    let engine = tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("drained").expect("joined");
    let description = engine.describe(&id).await.expect("describe");
    let history = kinds(&engine, &id).await;
    assert_eq!(history.iter().filter(|k| *k == "ActivityCompleted").count(), 1, "the drained result is recorded");
    assert_eq!(description.tasks.len(), 1, "the next activity waits in the store, not dispatched");

    // A new engine on the same store picks the open task up.
    gate.add_permits(1);
    let engine = noop_builder(store.clone(), clock())
        .activity("gated", move |_, _| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.map_err(|_| ActivityError::retryable("closed"))?.forget();
                Ok(json!("done"))
            }
        })
        .orchestration(program())
        .build()
        .await
        .expect("engine again");
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
    engine.shutdown().await;
}

#[tokio::test]
async fn the_drain_is_bounded() {
    let store = memory();
    let options = baton_engine::EngineOptions { drain_timeout: Duration::from_millis(100), ..Default::default() };
    let engine = noop_builder(store.clone(), clock())
        .options(options)
        .activity("stuck", |_, _| async { std::future::pending::<Result<Value, ActivityError>>().await })
        .orchestration(Program::sequential("stuck", "stuck", 1))
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "stuck", json!({})).await;
    tokio::time::timeout(Duration::from_secs(10), engine.shutdown())
        .await
        .expect("shutdown returns after the drain timeout");
    assert_eq!(engine.describe(&id).await.expect("describe").tasks.len(), 1, "the task stays for recovery");
    let refused = engine.start("stuck", json!({}), StartOptions::default()).await;
    assert!(matches!(refused, Err(baton_engine::EngineError::ShuttingDown)), "{refused:?}");
}

#[tokio::test]
async fn the_manual_clock_offset_survives_a_restart() {
    let store = memory();
    let options = || baton_engine::EngineOptions { clock: baton_engine::ClockMode::Manual, ..Default::default() };
    let engine = Engine::builder().store(store.clone()).options(options()).build().await.expect("engine");
    let before = engine.clock().now();
    engine.advance_clock(Duration::from_secs(86_400)).await.expect("manual clock advances");
    engine.shutdown().await;
    let engine = Engine::builder().store(store.clone()).options(options()).build().await.expect("engine again");
    let ahead = engine.clock().now() - before;
    assert!(ahead >= chrono::Duration::hours(24) && ahead < chrono::Duration::hours(25), "{ahead}");
    engine.shutdown().await;

    // The system clock refuses to be moved, and so does the store it last ran on.
    let engine = Engine::builder().store(store.clone()).build().await.expect("system clock engine");
    assert!(matches!(
        engine.advance_clock(Duration::from_secs(1)).await,
        Err(baton_engine::EngineError::ClockNotManual)
    ));
    engine.shutdown().await;
    let refused = baton_engine::runtime::advance_persisted_clock(store.as_ref(), Duration::from_secs(1)).await;
    assert!(matches!(refused, Err(baton_engine::EngineError::ClockNotManual)));
}

#[tokio::test]
async fn children_started_in_first_steps_chain_through_one_turn() {
    // The parent starts a child in its first step; that child starts a grandchild in its own
    // first step; the grandchild completes at once. Every outcome must travel back up.
    let grandchild = Program::new("grandchild", vec![Op::Emit { kind: "hello".into() }]);
    let child = Program::new("child", vec![Op::Child { definition: "grandchild".into() }]);
    let parent = Program::new(
        "parent",
        vec![Op::Child { definition: "child".into() }, Op::Child { definition: "child".into() }],
    );
    let engine = noop_builder(memory(), clock())
        .orchestration(grandchild)
        .orchestration(child)
        .orchestration(parent)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "parent", json!({})).await;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(outcome.result.expect("output")["results"].as_array().map(Vec::len), Some(2));

    // A missing child definition fails the child and the parent hears of it (an incident here).
    let orphan = Program::new("orphan", vec![Op::Child { definition: "nowhere".into() }]);
    let engine2 = noop_builder(memory(), clock()).orchestration(orphan).build().await.expect("engine");
    let id = start(&engine2, "orphan", json!({})).await;
    let incidents = open_incidents(&engine2, &id).await;
    assert_eq!(incidents.len(), 1, "the parent learns its child could not start");
    engine.shutdown().await;
    engine2.shutdown().await;
}

#[tokio::test]
async fn an_instance_stuck_in_an_incident_can_still_be_terminated() {
    let program = Program::new("doomed", vec![Op::Activity { name: "broken".into(), options: retrying(1) }]);
    let engine = noop_builder(memory(), clock())
        .activity("broken", |_, _| async { Err(ActivityError::non_retryable("always")) })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "doomed", json!({})).await;
    open_incidents(&engine, &id).await;
    engine.terminate(&id, "giving up", Actor::User { id: "ops".into() }).await.expect("terminate");
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Cancelled);
    assert!(engine.incidents(Some(&id), true).await.expect("incidents").is_empty(), "its incidents are closed");
    assert!(engine.describe(&id).await.expect("describe").tasks.is_empty(), "the parked task is gone");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_panicking_activity_fails_its_attempt_and_is_retried() {
    let program = Program::new("panicky", vec![Op::Activity { name: "panicky".into(), options: retrying(3) }]);
    let engine = noop_builder(memory(), clock())
        .activity("panicky", |ctx, _| async move {
            if ctx.attempt == 1 {
                panic!("handler bug");
            }
            Ok(json!(ctx.attempt))
        })
        .orchestration(program)
        .build()
        .await
        .expect("engine");
    let id = start(&engine, "panicky", json!({})).await;
    failed_attempts(&engine, &id, 1).await;
    let task = engine.describe(&id).await.expect("describe").tasks.remove(0);
    assert!(task.last_error.as_deref().is_some_and(|e| e.contains("handler bug")), "{:?}", task.last_error);
    engine.advance_clock(Duration::from_secs(1)).await.expect("advance");
    assert_eq!(wait(&engine, &id).await.result.expect("output")["results"], json!([2]));
    engine.shutdown().await;
}

#[tokio::test]
async fn an_unusable_snapshot_falls_back_to_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snap.db");
    let url = path.to_str().expect("utf-8 path").to_owned();
    let program = || {
        let step = Op::Activity { name: "noop".into(), options: ActivityOptions::default() };
        Program::new("snap", vec![step.clone(), step.clone(), step, Op::WaitEvent { name: "go".into() }])
    };
    let options = || baton_engine::EngineOptions { snapshot_every: 2, ..Default::default() };
    let open =
        || async { Arc::new(SqliteStore::open(&url, SqliteOptions::default()).await.expect("open")) as Arc<dyn Store> };
    let id = {
        let engine = noop_builder(open().await, clock())
            .options(options())
            .orchestration(program())
            .build()
            .await
            .expect("engine");
        let id = start(&engine, "snap", json!({})).await;
        for _ in 0..400 {
            if engine.describe(&id).await.expect("describe").row.status == InstanceStatus::Waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.shutdown().await;
        id
    };
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}")).await.expect("pool");
    let damaged =
        sqlx::query("UPDATE snapshots SET state = '{\"not\": \"a snapshot\"}'").execute(&pool).await.expect("update");
    assert_eq!(damaged.rows_affected(), 1, "the instance had a snapshot to damage");
    pool.close().await;

    let engine = noop_builder(open().await, clock())
        .options(options())
        .orchestration(program())
        .build()
        .await
        .expect("engine again");
    let go = RaiseEvent { name: "go".into(), payload: json!(1), event_id: None, actor: Actor::System };
    assert_eq!(engine.raise_event(&id, go).await.expect("raise"), Raised::Accepted);
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
    assert!(engine.incidents(Some(&id), false).await.expect("incidents").is_empty());
    engine.shutdown().await;
}

/// Waits on "yes" and on any name; the first event cancels the other wait and starts a new
/// "yes" wait, which must be the one the next "yes" event reaches.
#[derive(Debug)]
struct EitherThenYes;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct EitherState {
    waits: Vec<u64>,
    first: Option<String>,
}

impl baton_engine::Orchestration for EitherThenYes {
    type State = EitherState;

    fn definition(&self) -> baton_engine::DefinitionInfo {
        baton_engine::DefinitionInfo::new("either", "1", "h1")
    }

    fn on_trigger(
        &self,
        state: &mut EitherState,
        trigger: baton_engine::Trigger<'_>,
        ctx: &mut baton_engine::Ctx<'_>,
    ) -> Result<(), baton_engine::Fault> {
        match trigger {
            baton_engine::Trigger::Started { .. } => {
                state.waits.push(ctx.wait_event("yes"));
                state.waits.push(ctx.wait_event(baton_engine::ANY_EVENT));
            }
            baton_engine::Trigger::EventReceived { wait, name, .. } if state.first.is_none() => {
                state.first = Some(name.to_owned());
                for other in state.waits.clone().into_iter().filter(|w| *w != wait) {
                    ctx.cancel_wait(other);
                }
                state.waits = vec![ctx.wait_event("yes")];
            }
            baton_engine::Trigger::EventReceived { wait, name, .. } => {
                ctx.complete(json!({ "first": state.first, "second": name, "by_new_wait": state.waits == [wait] }));
            }
            _ => {}
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_cancelled_wait_takes_no_event_and_any_name_takes_any() {
    let engine =
        Engine::builder().store(memory()).clock(clock()).orchestration(EitherThenYes).build().await.expect("engine");
    let id = engine.start("either@1", json!({}), StartOptions::default()).await.expect("start").id;
    for name in ["no", "yes"] {
        let event = RaiseEvent { name: name.into(), payload: json!({}), event_id: None, actor: Actor::System };
        assert_eq!(engine.raise_event(&id, event).await.expect("raise"), Raised::Accepted);
    }
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.result, Some(json!({ "first": "no", "second": "yes", "by_new_wait": true })));
    let history = engine.history(&id, 0, 100).await.expect("history");
    assert!(history.iter().any(|e| e.tag == 20), "the cancel (EventWaitCancelled, tag 20) is in history");
}

mod people {
    //! Human tasks and suspension through the engine's own API, with the Rust test program.

    use baton_engine::EngineError;
    use baton_engine::directory::Person;
    use baton_engine::human::{
        HumanTaskSpec, HumanTaskStatus, InboxQuery, Principal, RoleGrant, TaskAction, TaskRefusal,
    };

    use super::*;

    fn review_program() -> Program {
        let mut spec = HumanTaskSpec::new("review", "Review");
        spec.candidates.roles = vec!["reviewer".into()];
        spec.department = Some("assembly".into());
        spec.outcomes = vec!["approve".into(), "reject".into()];
        Program::new("review", vec![Op::HumanTask { spec: Box::new(spec) }])
    }

    fn reviewer(id: &str, department: &str) -> Principal {
        Principal { roles: vec![RoleGrant::new("reviewer", Some(department))], ..Principal::user(id) }
    }

    async fn with_people(store: &Arc<dyn Store>) {
        for id in ["ana", "bob", "cy"] {
            store.put_person(&Person::new(id, id)).await.expect("person");
        }
    }

    async fn first_task(engine: &Engine, principal: &Principal) -> (InstanceId, u64) {
        for _ in 0..2_000 {
            if let Some(row) = engine.inbox(&InboxQuery::default(), principal).await.expect("inbox").first() {
                return (row.instance.clone(), row.seq);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no task appeared for {}", principal.user);
    }

    /// An engine on `store` with one review instance whose task ana (a reviewer of assembly)
    /// sees: (engine, instance, task, ana).
    async fn review_started(store: &Arc<dyn Store>) -> (Engine, InstanceId, u64, Principal) {
        with_people(store).await;
        let engine =
            noop_builder(store.clone(), clock()).orchestration(review_program()).build().await.expect("engine");
        let id = start(&engine, "review", json!({})).await;
        let ana = reviewer("ana", "assembly");
        let (_, seq) = first_task(&engine, &ana).await;
        (engine, id, seq, ana)
    }

    fn complete(outcome: &str) -> TaskAction {
        TaskAction::Complete { outcome: outcome.into(), data: Value::Null, on_behalf_of: None }
    }

    #[tokio::test]
    async fn actions_are_recorded_with_their_actor_and_replayed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("people.db");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(path.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open"));
        let (engine, id, seq, ana) = review_started(&store).await;
        engine.act_on_task(&id, seq, &ana, TaskAction::Claim).await.expect("claim");
        // Claimed: bob, a reviewer of the same department, no longer sees or takes it.
        let bob = reviewer("bob", "assembly");
        assert!(engine.inbox(&InboxQuery::default(), &bob).await.expect("inbox").is_empty());
        assert!(matches!(
            engine.act_on_task(&id, seq, &bob, complete("approve")).await,
            Err(EngineError::TaskNotFound { .. })
        ));
        engine
            .act_on_task(&id, seq, &ana, TaskAction::Reassign { to: baton_engine::human::Assignment::user("bob") })
            .await
            .expect("reassign");
        engine.act_on_task(&id, seq, &bob, complete("approve")).await.expect("complete");
        let outcome = wait(&engine, &id).await;
        assert_eq!(outcome.status, InstanceStatus::Completed);
        assert_eq!(outcome.result.expect("output")["results"][0]["completedBy"], "bob");
        // A second completion finds the task closed and records nothing.
        let refused = engine.act_on_task(&id, seq, &bob, complete("reject")).await;
        assert!(matches!(refused, Err(EngineError::TaskRefused { refusal: TaskRefusal::NotOpen("completed"), .. })));
        let history = engine.history(&id, 0, 100).await.expect("history");
        let actors: Vec<(String, Value)> = history
            .iter()
            .map(|e| e.to_view())
            .filter(|v| v["type"].as_str().is_some_and(|t| t.starts_with("HumanTask")))
            .map(|v| (v["type"].as_str().unwrap_or_default().to_owned(), v["actor"].clone()))
            .collect();
        assert_eq!(
            actors,
            [
                ("HumanTaskCreated".to_owned(), json!({"kind": "system"})),
                ("HumanTaskClaimed".to_owned(), json!({"kind": "user", "id": "ana"})),
                ("HumanTaskReassigned".to_owned(), json!({"kind": "user", "id": "ana"})),
                ("HumanTaskCompleted".to_owned(), json!({"kind": "user", "id": "bob"})),
            ]
        );
        let row = store.human_task(&id, seq).await.expect("read").expect("row");
        assert_eq!(row.task.status, HumanTaskStatus::Completed);
        engine.shutdown().await;
        let replay = baton_engine::replay::Replayer::new()
            .orchestration(review_program())
            .replay(store.as_ref(), &id)
            .await
            .expect("replay");
        assert_eq!(replay.error, None);
    }

    #[tokio::test]
    async fn a_terminated_instance_withdraws_its_tasks_from_every_inbox() {
        let store = memory();
        let (engine, id, seq, ana) = review_started(&store).await;
        assert!(
            engine.inbox(&InboxQuery::default(), &reviewer("cy", "paint")).await.expect("inbox").is_empty(),
            "another department's reviewer sees nothing"
        );
        engine.terminate(&id, "withdrawn", Actor::User { id: "ana".into() }).await.expect("terminate");
        assert!(engine.inbox(&InboxQuery::default(), &ana).await.expect("inbox").is_empty());
        let row = store.human_task(&id, seq).await.expect("read").expect("row");
        assert_eq!(row.task.status, HumanTaskStatus::Cancelled);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn a_suspended_instance_gets_what_arrived_once_resumed() {
        let program = Program::new(
            "gate",
            vec![
                Op::WaitEvent { name: "go".into() },
                Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
            ],
        );
        let engine = noop_builder(memory(), clock()).orchestration(program).build().await.expect("engine");
        let id = start(&engine, "gate", json!({})).await;
        let admin = Actor::User { id: "ops".into() };
        engine.suspend(&id, "audit", admin.clone()).await.expect("suspend");
        assert_eq!(engine.describe(&id).await.expect("describe").row.status, InstanceStatus::Suspended);
        let event =
            RaiseEvent { name: "go".into(), payload: json!({"ok": true}), event_id: None, actor: Actor::System };
        // The raise returns once its step is durable: had the event reached the program, the
        // activity it schedules would be there now.
        assert_eq!(engine.raise_event(&id, event).await.expect("raise"), Raised::Accepted);
        let description = engine.describe(&id).await.expect("describe");
        assert_eq!(description.row.status, InstanceStatus::Suspended, "recorded, not acted on");
        assert!(description.tasks.is_empty(), "no activity scheduled while suspended");
        engine.resume(&id, "audit done", admin).await.expect("resume");
        let outcome = wait(&engine, &id).await;
        assert_eq!(outcome.status, InstanceStatus::Completed);
        assert_eq!(outcome.result.expect("output")["results"][0], json!({"ok": true}));
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn timers_of_a_suspended_instance_wait_for_the_resumption() {
        let clock = clock();
        let program = Program::new("nap", vec![Op::Sleep { ms: 3_600_000 }]);
        let engine = noop_builder(memory(), clock.clone()).orchestration(program).build().await.expect("engine");
        let id = start(&engine, "nap", json!({})).await;
        let ops = Actor::User { id: "ops".into() };
        engine.suspend(&id, "audit", ops.clone()).await.expect("suspend");
        engine.advance_clock(Duration::from_secs(7_200)).await.expect("advance");
        let description = engine.describe(&id).await.expect("describe");
        assert_eq!((description.row.status, description.timers.len()), (InstanceStatus::Suspended, 1));
        engine.resume(&id, "audit done", ops).await.expect("resume");
        assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
        let names: Vec<String> = engine
            .history(&id, 0, 100)
            .await
            .expect("history")
            .iter()
            .map(|e| e.to_view()["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        let resumed = names.iter().position(|n| n == "InstanceResumed").expect("resumed");
        let fired = names.iter().position(|n| n == "TimerFired").expect("fired");
        assert!(fired > resumed, "{names:?}");
        engine.shutdown().await;
    }
}

#[tokio::test]
async fn a_backup_taken_while_instances_run_carries_on_where_they_were() {
    let dir = tempfile::tempdir().expect("temp dir");
    let live = dir.path().join("live.db");
    let copy = dir.path().join("backup.db");
    let clock = clock();
    let program = || {
        Program::new(
            "nap-then-work",
            vec![
                Op::Sleep { ms: 3_600_000 },
                Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
            ],
        )
    };
    let sqlite = SqliteStore::open(live.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open");
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let engine = noop_builder(store, clock.clone()).orchestration(program()).build().await.expect("engine");
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(start(&engine, "nap-then-work", json!({})).await);
    }
    // Taken with the engine running and the instances waiting on their timers.
    sqlite.backup(&copy).await.expect("backup");
    assert!(sqlite.backup(&copy).await.is_err(), "a backup never overwrites a file");
    engine.shutdown().await;

    let restored: Arc<dyn Store> =
        Arc::new(SqliteStore::open(copy.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open"));
    let engine = noop_builder(restored, clock.clone()).orchestration(program()).build().await.expect("engine");
    engine.advance_clock(Duration::from_secs(3_600)).await.expect("advance");
    for id in &ids {
        assert_eq!(wait(&engine, id).await.status, InstanceStatus::Completed);
    }
    engine.shutdown().await;
}
