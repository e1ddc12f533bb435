//! A harness for the shipped definitions (the repository's `definitions/` folder): every one
//! loaded and registered on a real engine (SQLite, a manual clock from Monday 7 December 2026,
//! 09:00 Brussels), a small organisation, Baton's directory activities, a recorder standing in
//! for `notify`, and the host's activities (`training.*`, `users.*`, `baton.document.*`)
//! answered by closures the tests set. Each test ends by replaying every instance from its
//! stored history.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_engine::directory::{Department, Directory, Organisation, Person};
use baton_engine::human::{HumanTaskRow, InboxQuery, RoleGrant, TaskAction};
use baton_engine::projection::{Projector, rebuild};
use baton_engine::replay::Replayer;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::store::{HistoryStore, InstanceFilter, OutboxStore, TaskStore, TimerStore};
use baton_engine::{
    ActivityError, ActivityRegistry, Actor, Clock, Engine, InstanceId, InstanceStatus, ManualClock, Outcome,
    RaiseEvent, StartOptions, Store,
};
use baton_workflows::interp::Workflow;
use baton_workflows::model::Program;
use baton_workflows::run::{content_hash, load};
use baton_workflows::schedule::Scheduler;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// The host's answer to an activity call.
pub type Answer = Arc<dyn Fn(&Value) -> Result<Value, ActivityError> + Send + Sync>;

/// Monday 7 December 2026, 09:00 in Brussels (08:00 UTC).
pub fn monday_9h() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).single().expect("valid time")
}

pub fn definitions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../definitions")
}

/// Every shipped definition: (file name, source).
pub fn sources() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(definitions_dir())
        .expect("the definitions folder")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("readable"))
        })
        .collect()
}

fn person(id: &str, department: &str, roles: &[(&str, Option<&str>)], manager: Option<&str>) -> Person {
    let mut p = Person::new(id, id[..1].to_uppercase() + &id[1..]);
    p.department = Some(department.into());
    p.roles = roles.iter().map(|(role, dept)| RoleGrant::new(*role, *dept)).collect();
    p.manager = manager.map(str::to_owned);
    p.email = Some(format!("{id}@example.test"));
    p
}

/// Assembly and paint, each with a team leader under Maria; operators; HR, IT, super
/// administrators, a trainer and a document clerk.
pub fn organisation() -> Organisation {
    let dept =
        |id: &str| Department { id: id.into(), name: id.to_uppercase(), parent: None, head: Some("maria".into()) };
    Organisation {
        departments: vec![dept("assembly"), dept("paint")],
        groups: vec![],
        people: vec![
            person("maria", "assembly", &[("manager", None)], Some("victor")),
            person("victor", "assembly", &[("manager", None)], None),
            person("tom", "assembly", &[("team_leader", Some("assembly"))], Some("maria")),
            person("tina", "paint", &[("team_leader", Some("paint"))], Some("maria")),
            person("olga", "assembly", &[("operator", Some("assembly"))], Some("tom")),
            person("omar", "assembly", &[("operator", Some("assembly"))], Some("tom")),
            person("adam", "assembly", &[("admin", None), ("super_admin", None)], Some("maria")),
            person("sara", "assembly", &[("super_admin", None)], Some("maria")),
            person("hugo", "assembly", &[("hr", None)], Some("maria")),
            person("ivan", "assembly", &[("it", None)], Some("maria")),
            person("trish", "assembly", &[("trainer", None)], Some("maria")),
            person("dora", "assembly", &[("document_clerk", None)], Some("maria")),
        ],
    }
}

pub struct Shipped {
    _dir: tempfile::TempDir,
    db: PathBuf,
    pub store: Arc<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub engine: Arc<Engine>,
    pub scheduler: Scheduler,
    programs: Vec<Arc<Program>>,
    /// Every call of a host activity and of `notify`: (name, input).
    pub calls: Arc<Mutex<Vec<(String, Value)>>>,
}

/// The host activities the definitions call.
pub const HOST_ACTIVITIES: &[&str] = &[
    "training.publish",
    "users.assignRole",
    "training.checkCapacity",
    "training.reserveTrainer",
    "training.expiringCertifications",
    "training.markRecertificationStarted",
    "training.mandatoryFor",
    "baton.document.render",
    "baton.document.store",
    "baton.document.sign",
    "baton.document.archive",
];

impl Shipped {
    /// The engine, with `answers` for the host activities (an activity without one answers
    /// `{}`).
    pub async fn new(answers: Vec<(&str, Answer)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("shipped.db");
        let store =
            Arc::new(SqliteStore::open(db.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("store"));
        store.import(&organisation()).await.expect("the organisation");
        let clock = Arc::new(ManualClock::frozen(monday_9h()));
        let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let mut registry = ActivityRegistry::new();
        baton_activities::register_directory(&mut registry, store.clone() as Arc<dyn Store>);
        let answers: HashMap<String, Answer> = answers.into_iter().map(|(n, a)| (n.to_owned(), a)).collect();
        for name in HOST_ACTIVITIES.iter().copied().chain(["baton.notify"]) {
            let calls = calls.clone();
            let answer = answers.get(name).cloned();
            registry.register(name, move |_ctx, input: Value| {
                calls.lock().unwrap_or_else(PoisonError::into_inner).push((name.to_owned(), input.clone()));
                let answer = answer.clone();
                async move {
                    match (&answer, name) {
                        (Some(answer), _) => answer(&input),
                        (None, "baton.notify") => Ok(json!({"deliveries": [], "sent": 1})),
                        (None, _) => Ok(json!({})),
                    }
                }
            });
        }
        let mut builder = Engine::builder().store(store.clone()).clock(clock.clone()).activities(registry);
        let mut programs = Vec::new();
        for (file, source) in sources() {
            let program = Arc::new(load(&source, &file).unwrap_or_else(|e| panic!("{file} loads: {e:?}")));
            builder = builder.orchestration(Workflow::new(program.clone(), content_hash(&source)));
            programs.push(program);
        }
        let engine = Arc::new(builder.build().await.expect("engine"));
        let scheduler = Scheduler::new(engine.clone());
        for program in &programs {
            scheduler.register(program).await.expect("its schedule registers");
        }
        Self { _dir: dir, db, store, clock, engine, scheduler, programs, calls }
    }

    pub async fn start(&self, name: &str, input: Value, by: &str) -> InstanceId {
        let options = StartOptions { actor: Some(Actor::User { id: by.into() }), ..StartOptions::default() };
        self.engine.start(&format!("training/{name}"), input, options).await.expect("starts").id
    }

    /// The open tasks `user` sees of `id` once there are `count` of them.
    pub async fn tasks(&self, id: &InstanceId, user: &str, count: usize) -> Vec<HumanTaskRow> {
        let principal = self.store.principal(user).await.expect("directory").expect("a known person");
        for _ in 0..2_000 {
            let tasks: Vec<HumanTaskRow> = self
                .engine
                .inbox(&InboxQuery::default(), &principal)
                .await
                .expect("inbox")
                .into_iter()
                .filter(|t| &t.instance == id)
                .collect();
            if tasks.len() >= count {
                return tasks;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let state = self.engine.describe(id).await.map(|d| format!("{:?}", d.row.status)).unwrap_or_default();
        panic!("{user} never saw {count} task(s) of {id} ({state}); calls: {:?}", self.call_names());
    }

    /// Completes the first open task `user` sees of `id` named `name`.
    pub async fn complete(&self, id: &InstanceId, name: &str, user: &str, outcome: &str, data: Value) {
        let principal = self.store.principal(user).await.expect("directory").expect("a known person");
        for _ in 0..2_000 {
            let tasks = self.engine.inbox(&InboxQuery::default(), &principal).await.expect("inbox");
            if let Some(task) = tasks.iter().find(|t| &t.instance == id && t.task.spec.name == name) {
                let action = TaskAction::Complete { outcome: outcome.into(), data, on_behalf_of: None };
                self.engine.act_on_task(id, task.seq, &principal, action).await.expect("completes");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{user} never saw a task {name} of {id}; calls: {:?}", self.call_names());
    }

    /// Sends an event to an instance.
    pub async fn raise(&self, id: &InstanceId, event: Value) {
        let raise = RaiseEvent {
            name: event["type"].as_str().expect("a type").to_owned(),
            event_id: event["id"].as_str().map(str::to_owned),
            payload: event,
            actor: Actor::Worker { id: "feed".into() },
        };
        self.engine.raise_event(id, raise).await.expect("raised");
    }

    /// Moves simulated time, then waits until every timer due by then has fired and every
    /// activity it started has finished.
    pub async fn advance(&self, by: chrono::Duration) {
        self.engine.advance_clock(by.to_std().expect("forward")).await.expect("advance");
        let now = self.clock.now() + chrono::Duration::milliseconds(1);
        for _ in 0..4_000 {
            let due = self.store.timers_due_before(now, 1).await.expect("timers");
            let running = self.store.open_tasks(1).await.expect("tasks");
            if due.is_empty() && running.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timers due by {now} never all fired");
    }

    pub async fn finished(&self, id: &InstanceId) -> Outcome {
        match tokio::time::timeout(Duration::from_secs(20), self.engine.wait(id)).await {
            Ok(outcome) => outcome.expect("wait"),
            Err(_) => panic!("{id} did not end; calls: {:?}", self.call_names()),
        }
    }

    pub fn call_names(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(n, _)| n.clone()).collect()
    }

    /// The inputs of every call of `name` so far.
    pub fn calls_of(&self, name: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.iter().filter(|(n, _)| n == name).map(|(_, input)| input.clone()).collect()
    }

    /// The CloudEvent types `id` emitted, in order.
    pub async fn emitted(&self, id: &InstanceId) -> Vec<String> {
        let history = self.store.history(id, 0, u32::MAX).await.expect("history");
        history
            .iter()
            .map(|e| e.to_view())
            .filter(|v| v["type"] == "Emitted")
            .map(|v| v["data"]["payload"]["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The instances of a definition (`training/<name>`).
    pub async fn instances_of(&self, name: &str) -> Vec<(InstanceId, InstanceStatus)> {
        let filter = InstanceFilter { limit: 1000, ..InstanceFilter::default() };
        let rows = self.store.list_instances(&filter).await.expect("instances");
        let wanted = format!("training/{name}");
        rows.into_iter().filter(|r| r.orchestration == wanted).map(|r| (r.id, r.status)).collect()
    }

    /// Replays every instance from its stored history: no nondeterminism anywhere.
    /// The rows of a training read model (`documents`, `training-progress`, `certifications`)
    /// once the projector has taken every emitted event; a rebuild of every read model from the
    /// histories gives the same rows.
    pub async fn read_model(&self, name: &str) -> Vec<Value> {
        let store: Arc<dyn Store> = self.store.clone();
        let projections = baton_activities::read_models::training_projections();
        let projector = Projector::new(Arc::clone(&store), self.clock.clone(), projections.clone());
        projector.catch_up().await.expect("the events are projected");
        let filter = InstanceFilter { limit: 1000, ..InstanceFilter::default() };
        let ids: Vec<InstanceId> =
            store.list_instances(&filter).await.expect("instances").into_iter().map(|row| row.id).collect();
        for model in rebuild(store.as_ref(), self.clock.as_ref(), &projections, &ids, false).await.expect("rebuilt") {
            assert!(model.is_equal() && model.kept.is_empty(), "rebuilt from history: {model:?}");
        }
        store.all_projection_rows(name).await.expect("rows").into_iter().map(|(_, row)| row).collect()
    }

    pub async fn replay_all(self) {
        self.engine.shutdown().await;
        let store =
            SqliteStore::open(self.db.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("reopen");
        let mut replayer = Replayer::new();
        for (file, source) in sources() {
            let program = Arc::new(load(&source, &file).expect("loads"));
            replayer = replayer.orchestration(Workflow::new(program, content_hash(&source)));
        }
        let filter = InstanceFilter { limit: 1000, ..InstanceFilter::default() };
        let instances = store.list_instances(&filter).await.expect("instances");
        assert!(!instances.is_empty());
        for row in instances {
            let report = replayer.replay(&store, &row.id).await.expect("replay");
            assert_eq!(report.error, None, "replay of {} ({})", row.id, row.orchestration);
        }
        let _ = store.outbox_pending(1).await;
    }
}
