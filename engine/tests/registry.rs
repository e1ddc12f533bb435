//! Definitions registered while the engine runs, and what instances are found by: business
//! key, tags, namespace, creation time. Time is a frozen manual clock moved by the test.

use std::sync::Arc;
use std::time::Duration;

use baton_engine::orchestration::into_dyn;
use baton_engine::program::{Op, Program, ProgramState};
use baton_engine::store::InstanceFilter;
use baton_engine::store::memory::MemoryStore;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{
    ActivityOptions, Actor, Ctx, DefinitionInfo, Engine, EngineBuilder, EngineError, EventKind, Fault, InstanceId,
    InstanceStatus, ManualClock, Orchestration, RaiseEvent, StartOptions, Store, Trigger,
};
use chrono::{TimeZone, Utc};
use serde_json::json;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::frozen(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("valid time")))
}

/// An engine with the test activities and no orchestration at all.
fn bare(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> EngineBuilder {
    Engine::builder()
        .store(store)
        .clock(clock)
        .activity("noop", |ctx, input| async move { Ok(json!({ "seq": ctx.seq, "step": input["step"] })) })
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn wait(engine: &Engine, id: &InstanceId) -> baton_engine::Outcome {
    tokio::time::timeout(Duration::from_secs(20), engine.wait(id)).await.expect("instance ends in time").expect("wait")
}

fn go() -> RaiseEvent {
    RaiseEvent { name: "go".into(), payload: json!(1), event_id: None, actor: Actor::System }
}

/// Waits for the event `go`, then calls `noop`.
fn waits_then_works(name: &str) -> Program {
    Program::new(
        name,
        vec![
            Op::WaitEvent { name: "go".into() },
            Op::Activity { name: "noop".into(), options: ActivityOptions::default() },
        ],
    )
}

/// A program in a namespace: the content (and its hash) is the program's, the namespace only
/// labels it, as a deployed definition's namespace does.
struct InNamespace {
    program: Program,
    namespace: Option<&'static str>,
}

impl Orchestration for InNamespace {
    type State = ProgramState;

    fn definition(&self) -> DefinitionInfo {
        let info = self.program.definition();
        match self.namespace {
            Some(namespace) => info.with_namespace(namespace),
            None => info,
        }
    }

    fn on_trigger(&self, state: &mut ProgramState, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault> {
        self.program.on_trigger(state, trigger, ctx)
    }
}

#[tokio::test]
async fn a_definition_registered_while_running_starts_and_completes() {
    let engine = bare(memory(), clock()).build().await.expect("engine");
    assert!(engine.definition_keys().is_empty());
    let refused = engine.start("seq", json!({}), StartOptions::default()).await;
    assert!(matches!(refused, Err(EngineError::DefinitionNotFound(_))), "{refused:?}");

    assert!(engine.register(Program::sequential("seq", "noop", 2)).expect("registers"));
    assert_eq!(engine.definition_keys(), ["seq@1"]);
    assert_eq!(engine.latest_key("seq").as_deref(), Some("seq@1"));
    assert_eq!(engine.latest_key("other"), None);
    let id = engine.start("seq", json!({}), StartOptions::default()).await.expect("starts").id;
    let outcome = wait(&engine, &id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(outcome.result.expect("output")["results"].as_array().map(Vec::len), Some(2));

    // The same content again changes nothing; other content under the same version is refused.
    assert!(!engine.register(Program::sequential("seq", "noop", 2)).expect("the same content again"));
    let conflict = engine.register(Program::sequential("seq", "noop", 3)).expect_err("other content, same version");
    assert!(matches!(conflict, EngineError::DefinitionConflict(_)), "{conflict:?}");
    assert_eq!(conflict.code(), "BATON-E015");
    assert!(conflict.to_string().contains("seq@1"), "the conflict names the key: {conflict}");
    assert_eq!(engine.definition_keys(), ["seq@1"]);
    let again = engine.start("seq@1", json!({}), StartOptions::default()).await.expect("starts").id;
    let outcome = wait(&engine, &again).await;
    assert_eq!(outcome.result.expect("output")["results"].as_array().map(Vec::len), Some(2), "the first one runs");

    // A second version, behind its object-safe face.
    let mut v2 = Program::sequential("seq", "noop", 1);
    v2.version = "2".into();
    assert!(engine.register_dyn(into_dyn(v2)).expect("registers v2"));
    assert_eq!(engine.definition_keys(), ["seq@1", "seq@2"]);
    assert_eq!(engine.latest_key("seq").as_deref(), Some("seq@2"));
    engine.shutdown().await;
}

#[tokio::test]
async fn the_latest_version_follows_version_order_not_registration_order() {
    let engine = bare(memory(), clock()).build().await.expect("engine");
    let version = |version: &str, steps: usize| {
        let mut program = Program::sequential("ordered", "noop", steps);
        program.version = version.into();
        program
    };
    engine.register(version("1.10.0", 2)).expect("1.10.0");
    engine.register(version("1.9.0", 1)).expect("1.9.0");
    assert_eq!(engine.latest_key("ordered").as_deref(), Some("ordered@1.10.0"));
    let id = engine.start("ordered", json!({}), StartOptions::default()).await.expect("starts").id;
    wait(&engine, &id).await;
    assert_eq!(engine.describe(&id).await.expect("describe").row.version, "1.10.0");
    let older = engine.start("ordered@1.9.0", json!({}), StartOptions::default()).await.expect("starts").id;
    wait(&engine, &older).await;
    assert_eq!(engine.describe(&older).await.expect("describe").row.version, "1.9.0");
    engine.shutdown().await;
}

#[tokio::test]
async fn instances_of_a_definition_registered_later_recover() {
    let store = memory();
    let clock = clock();
    // Recorded before namespaces: the definition has none, so InstanceStarted carries none.
    let (waiting, stranded) = {
        let engine =
            bare(store.clone(), clock.clone()).orchestration(waits_then_works("late")).build().await.expect("engine");
        let waiting = engine.start("late", json!({}), StartOptions::default()).await.expect("starts").id;
        let stranded = engine.start("late", json!({}), StartOptions::default()).await.expect("starts").id;
        engine.shutdown().await;
        (waiting, stranded)
    };

    let engine = bare(store.clone(), clock.clone()).build().await.expect("an engine that knows no definition");
    // Reached before its definition is registered: it cannot load, and says so in an incident.
    assert!(engine.raise_event(&stranded, go()).await.is_err());
    let incidents = engine.incidents(Some(&stranded), true).await.expect("incidents");
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].reason.contains("late@1"), "{}", incidents[0].reason);

    // The same content, now in a namespace: the old histories replay against it.
    let registered = InNamespace { program: waits_then_works("late"), namespace: Some("ops") };
    assert!(engine.register(registered).expect("registers"));
    engine.raise_event(&waiting, go()).await.expect("the waiting instance loads and takes the event");
    assert_eq!(wait(&engine, &waiting).await.status, InstanceStatus::Completed);

    engine.retry_incident(incidents[0].id).await.expect("retry once the definition is there");
    engine.raise_event(&stranded, go()).await.expect("the stranded instance takes the event now");
    assert_eq!(wait(&engine, &stranded).await.status, InstanceStatus::Completed);
    // A row keeps what it was created with: no namespace for these.
    assert_eq!(engine.describe(&waiting).await.expect("describe").row.namespace, None);

    // New instances get the namespace, and so does their history.
    let fresh = engine.start("late", json!({}), StartOptions::default()).await.expect("starts").id;
    assert_eq!(engine.describe(&fresh).await.expect("describe").row.namespace.as_deref(), Some("ops"));
    let first = engine.history(&fresh, 0, 1).await.expect("history").remove(0).decode(None).expect("decodes");
    let EventKind::InstanceStarted(started) = first.kind else { panic!("first event is InstanceStarted") };
    assert_eq!(started.definition.namespace.as_deref(), Some("ops"));
    engine.shutdown().await;
}

/// Starts `definition` with a business key and tags.
async fn start_with(engine: &Engine, definition: &str, business_key: Option<&str>, tags: &[&str]) -> InstanceId {
    let options = StartOptions {
        business_key: business_key.map(str::to_owned),
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        ..StartOptions::default()
    };
    engine.start(definition, json!({}), options).await.expect("starts").id
}

async fn listed(engine: &Engine, filter: InstanceFilter) -> Vec<InstanceId> {
    let filter = InstanceFilter { limit: InstanceFilter::MAX_LIMIT, ..filter };
    engine.store().list_instances(&filter).await.expect("lists").into_iter().map(|row| row.id).collect()
}

async fn business_keys_and_tags(store: Arc<dyn Store>) {
    let clock = clock();
    let engine = bare(store, clock.clone()).build().await.expect("engine");
    engine.register(InNamespace { program: waits_then_works("order"), namespace: Some("sales") }).expect("order");
    let child = Program::sequential("check", "noop", 1);
    let parent = Program::new("case", vec![Op::Child { definition: "check".into() }]);
    engine.register(InNamespace { program: child, namespace: Some("checks") }).expect("check");
    engine.register(InNamespace { program: parent, namespace: Some("hr") }).expect("case");

    let first = start_with(&engine, "order", Some("po-42"), &["vip", "eu", "vip"]).await;
    clock.advance(Duration::from_secs(60));
    let second = start_with(&engine, "order", Some("po-43"), &["eu"]).await;
    clock.advance(Duration::from_secs(60));
    let case = start_with(&engine, "case", Some("po-42"), &["vip"]).await;
    assert_eq!(wait(&engine, &case).await.status, InstanceStatus::Completed);

    let row = engine.describe(&first).await.expect("describe").row;
    assert_eq!(row.business_key.as_deref(), Some("po-42"));
    assert_eq!(row.tags, ["eu", "vip"], "sorted, each once");
    assert_eq!(row.namespace.as_deref(), Some("sales"), "the definition's namespace");
    let started = engine.history(&first, 0, 1).await.expect("history").remove(0).decode(None).expect("decodes");
    let EventKind::InstanceStarted(started) = started.kind else { panic!("first event is InstanceStarted") };
    assert_eq!((started.business_key.as_deref(), started.tags.clone()), (Some("po-42"), row.tags.clone()));

    // A child has its own definition's namespace, and no business key or tags of its own.
    let child = InstanceId::new(format!("{case}/1"));
    let child_row = engine.describe(&child).await.expect("describe the child").row;
    assert_eq!((child_row.business_key, child_row.tags.len()), (None, 0));
    assert_eq!(child_row.namespace.as_deref(), Some("checks"));

    let by_key = InstanceFilter { business_key: Some("po-42".into()), ..InstanceFilter::default() };
    let mut expected = vec![first.clone(), case.clone()];
    expected.sort();
    assert_eq!(listed(&engine, by_key).await, expected);
    let eu = InstanceFilter { tag: Some("eu".into()), ..InstanceFilter::default() };
    assert_eq!(listed(&engine, eu).await, [first.clone(), second.clone()]);
    let sales = InstanceFilter { namespaces: Some(vec!["sales".into()]), ..InstanceFilter::default() };
    assert_eq!(listed(&engine, sales).await, [first.clone(), second.clone()]);
    let not_sales =
        InstanceFilter { namespaces: Some(vec!["hr".into(), "checks".into()]), ..InstanceFilter::default() };
    let mut expected = vec![case.clone(), child.clone()];
    expected.sort();
    assert_eq!(listed(&engine, not_sales).await, expected);
    let later = InstanceFilter {
        created_after: Some(row.created_at + chrono::Duration::seconds(1)),
        ..InstanceFilter::default()
    };
    let mut expected = vec![second.clone(), case.clone(), child.clone()];
    expected.sort();
    assert_eq!(listed(&engine, later).await, expected);
    let vip_in_sales_early = InstanceFilter {
        tag: Some("vip".into()),
        namespaces: Some(vec!["sales".into(), "hr".into()]),
        created_before: Some(row.created_at + chrono::Duration::seconds(1)),
        ..InstanceFilter::default()
    };
    assert_eq!(listed(&engine, vip_in_sales_early).await, std::slice::from_ref(&first));

    // They stay with the instance to its end.
    engine.raise_event(&first, go()).await.expect("raise");
    assert_eq!(wait(&engine, &first).await.status, InstanceStatus::Completed);
    let row = engine.describe(&first).await.expect("describe").row;
    assert_eq!((row.business_key.as_deref(), row.tags.len()), (Some("po-42"), 2));
    engine.shutdown().await;
}

#[tokio::test]
async fn business_keys_and_tags_find_instances_in_memory() {
    business_keys_and_tags(memory()).await;
}

#[tokio::test]
async fn business_keys_and_tags_find_instances_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("baton.db");
    let store = SqliteStore::open(path.to_str().expect("utf-8 path"), SqliteOptions::default()).await.expect("open");
    business_keys_and_tags(Arc::new(store)).await;
}

#[tokio::test]
async fn a_business_key_and_tags_survive_continue_as_new_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("baton.db");
    let open = || async {
        Arc::new(SqliteStore::open(path.to_str().expect("utf-8 path"), SqliteOptions::default()).await.expect("open"))
            as Arc<dyn Store>
    };
    let looping = || {
        Program::new(
            "loop",
            vec![Op::Loop { name: "noop".into(), times: 30, every: 10 }, Op::WaitEvent { name: "go".into() }],
        )
    };
    let clock = clock();
    let id = {
        let engine = bare(open().await, clock.clone()).build().await.expect("engine");
        engine.register(looping()).expect("registers");
        let id = start_with(&engine, "loop", Some("batch-7"), &["nightly"]).await;
        // Let the loop run through its continues-as-new to the wait.
        for _ in 0..400 {
            if engine.describe(&id).await.expect("describe").row.status == InstanceStatus::Waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        engine.shutdown().await;
        id
    };
    let engine = bare(open().await, clock).build().await.expect("engine again");
    engine.register(looping()).expect("registers again");
    let row = engine.describe(&id).await.expect("describe").row;
    assert!(row.run_start > 0, "the instance continued as new");
    engine.raise_event(&id, go()).await.expect("raise");
    assert_eq!(wait(&engine, &id).await.status, InstanceStatus::Completed);
    let row = engine.describe(&id).await.expect("describe").row;
    assert_eq!((row.business_key.as_deref(), row.tags), (Some("batch-7"), vec!["nightly".to_owned()]));
    let filter = InstanceFilter {
        business_key: Some("batch-7".into()),
        tag: Some("nightly".into()),
        ..InstanceFilter::default()
    };
    assert_eq!(listed(&engine, filter).await, [id]);
    engine.shutdown().await;
}
