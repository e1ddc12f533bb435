//! Corrupt histories: three instances' stored histories are tampered with behind the engine's
//! back (an unknown tag, an undecodable payload, a payload that no longer matches its hash).
//! After a restart each of them is faulted with one `corrupt_history` incident naming the
//! problem, inputs to them are refused, and the engine and the untouched instance carry on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_engine::program::{Op, Program};
use baton_engine::store::IncidentKind;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{
    ActivityOptions, Actor, Engine, EngineError, InstanceId, InstanceStatus, ManualClock, RaiseEvent, Raised,
    StartOptions, Store, StoredEvent,
};
use baton_tests::{history_of, open_db, overwrite_event};
use chrono::{TimeZone, Utc};
use serde_json::json;
use sqlx::SqlitePool;

const CLEAN: &str = "clean";
const BAD_TAG: &str = "bad-tag";
const BAD_PAYLOAD: &str = "bad-payload";
const BROKEN_CHAIN: &str = "broken-chain";

/// EventWaitStarted, the last event of an instance waiting for "go".
const TAG_EVENT_WAIT_STARTED: u16 = 8;

fn program() -> Program {
    Program::new(
        "gate",
        vec![
            Op::WaitEvent { name: "go".into() },
            Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
        ],
    )
}

async fn start_engine(path: &Path, clock: Arc<ManualClock>, program: Program) -> (Engine, SqliteStore) {
    let sqlite =
        SqliteStore::open(path.to_str().expect("utf-8 path"), SqliteOptions::default()).await.expect("open store");
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let engine = Engine::builder()
        .store(store)
        .clock(clock)
        .orchestration(program)
        .activity("noop", |ctx, _| async move { Ok(json!({ "seq": ctx.seq })) })
        .build()
        .await
        .expect("engine");
    (engine, sqlite)
}

async fn stop(engine: Engine, sqlite: SqliteStore) {
    engine.shutdown().await;
    drop(engine);
    sqlite.close().await;
}

fn go() -> RaiseEvent {
    RaiseEvent { name: "go".into(), payload: json!("go!"), event_id: None, actor: Actor::User { id: "tester".into() } }
}

async fn last_event(pool: &SqlitePool, id: &str) -> StoredEvent {
    let mut history = history_of(pool, id).await.expect("history");
    assert_eq!(history.len(), 2, "{id}: InstanceStarted, EventWaitStarted, and nothing after");
    history.pop().expect("two events")
}

/// The last event of an untouched waiting instance: its EventWaitStarted.
async fn wait_event(pool: &SqlitePool, id: &str) -> StoredEvent {
    let event = last_event(pool, id).await;
    assert_eq!(event.tag, TAG_EVENT_WAIT_STARTED, "{id}: the last event is the wait");
    assert_eq!(event.payload, r#"{"name":"go"}"#);
    event
}

/// Writes a tampered event back; when `resealed`, also moves the instance row's chain head, so
/// the only thing wrong is the content itself.
async fn write_back(pool: &SqlitePool, event: &StoredEvent, resealed: bool) {
    overwrite_event(pool, event).await.expect("tamper");
    if resealed {
        sqlx::query("UPDATE instances SET last_hash = ?2 WHERE id = ?1")
            .bind(event.instance.as_str())
            .bind(&event.hash)
            .execute(pool)
            .await
            .expect("move the chain head");
    }
}

fn assert_faulted(result: Result<Raised, EngineError>, id: &InstanceId) {
    match result {
        Err(EngineError::InstanceFaulted { id: faulted, .. }) => assert_eq!(&faulted, id),
        other => panic!("raising to {id} should fail with InstanceFaulted, got {other:?}"),
    }
}

/// Each tampered instance has exactly one incident, open, of kind corrupt_history, with the
/// reason naming what is wrong, and is faulted; the clean one has none.
async fn check(engine: &Engine, round: &str) {
    let expected = [
        (BAD_TAG, "corrupt history: unknown history event tag 999"),
        (BAD_PAYLOAD, "corrupt history: undecodable payload for history event tag 8"),
        (BROKEN_CHAIN, "corrupt history: hash chain broken at seq 1"),
    ];
    for (id, reason) in expected {
        let id = InstanceId::new(id);
        let all = engine.incidents(Some(&id), false).await.expect("incidents");
        assert_eq!(all.len(), 1, "{round}: {id} has exactly one incident: {all:?}");
        let open = engine.incidents(Some(&id), true).await.expect("open incidents");
        assert_eq!(open.len(), 1, "{round}: {id}'s incident is open");
        let incident = &open[0];
        assert_eq!(incident.kind, IncidentKind::CorruptHistory, "{round}: {id}");
        assert!(
            incident.reason.contains(reason),
            "{round}: {id}: reason {:?} should contain {reason:?}",
            incident.reason
        );
        assert!(incident.task_seq.is_none() && incident.pending_input.is_none(), "{round}: {id}: {incident:?}");
        let description = engine.describe(&id).await.expect("describe");
        assert_eq!(description.row.status, InstanceStatus::Faulted, "{round}: {id}");
        assert_eq!(description.incidents.len(), 1, "{round}: {id}");
    }
    let clean = engine.incidents(Some(&InstanceId::new(CLEAN)), false).await.expect("incidents");
    assert!(clean.is_empty(), "{round}: the clean instance has no incident: {clean:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_histories_fault_their_instances_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.db");
    let clock = Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid time")));
    let ids: Vec<InstanceId> = [CLEAN, BAD_TAG, BAD_PAYLOAD, BROKEN_CHAIN].into_iter().map(InstanceId::new).collect();

    let (first, sqlite) = start_engine(&path, clock.clone(), program()).await;
    for id in &ids {
        let options = StartOptions { id: Some(id.clone()), idempotency_key: None, ..StartOptions::default() };
        assert!(first.start("gate", json!({}), options).await.expect("start").created);
        assert_eq!(first.describe(id).await.expect("describe").row.status, InstanceStatus::Waiting);
    }
    stop(first, sqlite).await;

    // Tamper with the last event of three histories (so no successor's prev_hash is involved).
    let pool = open_db(&path).await.expect("open the database");
    let mut event = wait_event(&pool, BAD_TAG).await;
    event.tag = 999;
    event.reseal();
    write_back(&pool, &event, true).await;

    let mut event = wait_event(&pool, BAD_PAYLOAD).await;
    event.payload = "{not json".into();
    event.reseal();
    write_back(&pool, &event, true).await;

    let mut event = wait_event(&pool, BROKEN_CHAIN).await;
    event.payload = r#"{"name":"gone"}"#.into();
    write_back(&pool, &event, false).await;
    let edited_seq = event.seq;
    let tampered = [
        (BAD_TAG, last_event(&pool, BAD_TAG).await),
        (BAD_PAYLOAD, last_event(&pool, BAD_PAYLOAD).await),
        (BROKEN_CHAIN, last_event(&pool, BROKEN_CHAIN).await),
    ];
    pool.close().await;

    // `baton admin verify` names the edited row; the untouched instance passes.
    let checked = SqliteStore::open(path.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open");
    let verified = baton_engine::replay::verify(&checked, &InstanceId::new(BROKEN_CHAIN)).await.expect("verify");
    let broken = verified.broken.expect("the edit is found");
    assert_eq!(broken.seq, edited_seq);
    assert!(broken.detail.contains("does not match its hash"), "{broken:?}");
    let clean = baton_engine::replay::verify(&checked, &InstanceId::new(CLEAN)).await.expect("verify");
    assert_eq!((clean.broken, clean.events > 0), (None, true));
    checked.close().await;

    let (engine, sqlite) = start_engine(&path, clock.clone(), program()).await;
    let clean = &ids[0];
    // All four in one go, so they can share a turn (and its bulk load).
    let (r0, r1, r2, r3) = tokio::join!(
        engine.raise_event(&ids[0], go()),
        engine.raise_event(&ids[1], go()),
        engine.raise_event(&ids[2], go()),
        engine.raise_event(&ids[3], go()),
    );
    assert_eq!(r0.expect("the clean instance takes the event"), Raised::Accepted);
    assert_faulted(r1, &ids[1]);
    assert_faulted(r2, &ids[2]);
    assert_faulted(r3, &ids[3]);

    let outcome =
        tokio::time::timeout(Duration::from_secs(20), engine.wait(clean)).await.expect("ends in time").expect("wait");
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(outcome.result, Some(json!({ "results": ["go!", { "seq": 3 }] })));

    check(&engine, "after the first raise").await;

    // Raising again is refused the same way and opens no second incident.
    for id in &ids[1..] {
        assert_faulted(engine.raise_event(id, go()).await, id);
    }
    check(&engine, "after raising again").await;
    assert_eq!(engine.incidents(None, true).await.expect("incidents").len(), 3, "no other incident anywhere");

    // The engine carries on: a new instance runs start to end.
    let fresh = InstanceId::new("fresh");
    engine
        .start(
            "gate",
            json!({}),
            StartOptions { id: Some(fresh.clone()), idempotency_key: None, ..StartOptions::default() },
        )
        .await
        .expect("start");
    assert_eq!(engine.raise_event(&fresh, go()).await.expect("raise"), Raised::Accepted);
    let outcome =
        tokio::time::timeout(Duration::from_secs(20), engine.wait(&fresh)).await.expect("ends in time").expect("wait");
    assert_eq!(outcome.status, InstanceStatus::Completed);
    stop(engine, sqlite).await;

    // Another restart: still refused, still one incident each.
    let (engine, sqlite) = start_engine(&path, clock, program()).await;
    for id in &ids[1..] {
        assert_faulted(engine.raise_event(id, go()).await, id);
    }
    check(&engine, "after a second restart").await;
    stop(engine, sqlite).await;

    // The engine never wrote to the corrupt histories: they are exactly as tampered.
    let pool = open_db(&path).await.expect("open the database");
    for (id, event) in tampered {
        assert_eq!(last_event(&pool, id).await, event, "{id}: history untouched");
    }
    pool.close().await;
}

/// A history rewritten and resealed end to end (here: a forged activity result) is internally
/// consistent; only the instance row's chain head (`last_hash`) still tells the truth. The
/// engine should compare the two when it loads the instance and refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resealed_history_that_disagrees_with_the_row_chain_head_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forged.db");
    let clock = Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid time")));
    let forged = InstanceId::new("forged");
    let program = || {
        Program::new(
            "work-then-wait",
            vec![
                Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
                Op::WaitEvent { name: "go".into() },
            ],
        )
    };
    let open = || start_engine(&path, clock.clone(), program());

    let (engine, sqlite) = open().await;
    let options = StartOptions { id: Some(forged.clone()), idempotency_key: None, ..StartOptions::default() };
    engine.start("work-then-wait", json!({}), options).await.expect("start");
    // Started, ActivityScheduled, ActivityCompleted, EventWaitStarted.
    let mut waiting = false;
    for _ in 0..2_000 {
        if engine.history(&forged, 0, 100).await.expect("history").len() == 4 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(waiting, "the activity completed and the instance waits for go");
    stop(engine, sqlite).await;

    // Forge the activity's result and reseal the chain from there to the end; the row is untouched.
    let pool = open_db(&path).await.expect("open the database");
    let mut history = history_of(&pool, forged.as_str()).await.expect("history");
    assert_eq!(history[2].payload, r#"{"activity":1,"result":{"seq":1},"attempt":1}"#);
    history[2].payload = r#"{"activity":1,"result":{"seq":999},"attempt":1}"#.into();
    history[2].reseal();
    history[3].prev_hash = history[2].hash.clone();
    history[3].reseal();
    overwrite_event(&pool, &history[2]).await.expect("forge");
    sqlx::query("UPDATE history SET prev_hash = ?2, hash = ?3 WHERE instance_id = ?1 AND seq = 3")
        .bind(forged.as_str())
        .bind(&history[3].prev_hash)
        .bind(&history[3].hash)
        .execute(&pool)
        .await
        .expect("reseal the successor");
    let head: String = sqlx::query_scalar("SELECT last_hash FROM instances WHERE id = ?1")
        .bind(forged.as_str())
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_ne!(head, history[3].hash, "the row's chain head no longer matches the history");
    pool.close().await;

    // `baton admin verify` names the instance and the event: a resealed forgery still disagrees
    // with the head the instance row records.
    let sqlite_check =
        SqliteStore::open(path.to_str().expect("utf-8 path"), SqliteOptions::default()).await.expect("open store");
    let verified = baton_engine::replay::verify(&sqlite_check, &forged).await.expect("verify");
    let broken = verified.broken.expect("the forgery is found");
    assert_eq!(broken.seq, 3, "{broken:?}");
    assert!(broken.detail.contains("the instance row records"), "{broken:?}");
    sqlite_check.close().await;

    let (engine, sqlite) = open().await;
    assert_faulted(engine.raise_event(&forged, go()).await, &forged);
    let incidents = engine.incidents(Some(&forged), true).await.expect("incidents");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].kind, IncidentKind::CorruptHistory);
    stop(engine, sqlite).await;
}
