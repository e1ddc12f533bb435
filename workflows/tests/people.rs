//! People and deadlines, end to end on a real engine (SQLite, simulated time): the seeds'
//! approvals, four-eyes, N-of-M, department scoping, on-behalf completion, forms, SLAs on a
//! business calendar with an escalation ladder across engine restarts, and suspension pausing
//! an SLA. Every instance is replayed from its stored history at the end.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_engine::directory::{Department, Directory, Organisation, Person};
use baton_engine::human::{HumanTaskStatus, InboxQuery, Principal, RoleGrant, TaskAction, TaskRefusal};
use baton_engine::replay::Replayer;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::store::{HistoryStore, OutboxStore, SlaQuery, SlaStateName, TaskStore, TimerStore};
use baton_engine::{
    ActivityError, Actor, Clock, Engine, EngineError, InstanceId, InstanceStatus, ManualClock, RaiseEvent, StartOptions,
};
use baton_workflows::interp::Workflow;
use baton_workflows::run::{content_hash, load};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

/// Friday 20 November 2026, 16:00 in Brussels (15:00 UTC).
fn friday_16h() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 15, 0, 0).single().expect("valid time")
}

const OFFICE: &str = r#"
    office:
      timezone: Europe/Brussels
      hours: { mon-fri: ['09:00-17:00'] }
"#;

fn definition(name: &str, uses: &str, body: &str) -> String {
    format!(
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: {name}\n  version: '1.0.0'\nuse:\n  calendars:{OFFICE}{uses}{body}"
    )
}

fn grant(role: &str, department: Option<&str>) -> RoleGrant {
    RoleGrant::new(role, department)
}

fn person(id: &str, department: &str, roles: Vec<RoleGrant>, manager: Option<&str>) -> Person {
    let mut p = Person::new(id, id.to_uppercase());
    p.department = Some(department.into());
    p.roles = roles;
    p.manager = manager.map(str::to_owned);
    p.email = Some(format!("{id}@example.test"));
    p
}

/// A small organisation: two departments with a team leader each, their manager, HR, IT, an
/// administrator and two super administrators.
fn organisation() -> Organisation {
    Organisation {
        departments: vec![
            Department { id: "assembly".into(), name: "Assembly".into(), parent: None, head: Some("maria".into()) },
            Department { id: "paint".into(), name: "Paint".into(), parent: None, head: Some("maria".into()) },
        ],
        groups: vec![],
        people: vec![
            person("maria", "assembly", vec![grant("manager", None)], None),
            person("tom", "assembly", vec![grant("team_leader", Some("assembly"))], Some("maria")),
            person("tina", "paint", vec![grant("team_leader", Some("paint"))], Some("maria")),
            person("olga", "assembly", vec![grant("operator", Some("assembly"))], Some("tom")),
            person("adam", "assembly", vec![grant("admin", None), grant("super_admin", None)], Some("maria")),
            person("sara", "assembly", vec![grant("super_admin", None)], Some("maria")),
            person("hugo", "assembly", vec![grant("hr", None)], Some("maria")),
            person("ivan", "assembly", vec![grant("it", None)], Some("maria")),
        ],
    }
}

/// The notifications the stand-in `baton.notify` activity was asked to send.
type Sent = Arc<Mutex<Vec<Value>>>;

struct Harness {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    engine: Engine,
    workflows: Vec<Workflow>,
    sources: Vec<String>,
    sent: Sent,
}

async fn open(db: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(db.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("open store"))
}

fn workflow(source: &str) -> Workflow {
    Workflow::new(Arc::new(load(source, "test.yaml").expect("loads")), content_hash(source))
}

async fn engine(store: Arc<SqliteStore>, clock: Arc<ManualClock>, sources: &[String], sent: Sent) -> Engine {
    let mut builder = Engine::builder().store(store.clone()).clock(clock);
    for source in sources {
        builder = builder.orchestration(workflow(source));
    }
    let directory = store.clone();
    builder
        .activity("baton.notify", move |_, input| {
            let sent = sent.clone();
            async move {
                sent.lock().expect("lock").push(input);
                Ok(json!({ "deliveries": [], "sent": 1 }))
            }
        })
        .activity("baton.directory.managerOf", move |_, input| {
            let directory = directory.clone();
            async move {
                let user = input["user"].as_str().unwrap_or_default().to_owned();
                let manager = directory.manager_of(&user).await.map_err(|e| ActivityError::retryable(e.to_string()))?;
                Ok(serde_json::to_value(manager).unwrap_or(Value::Null))
            }
        })
        .build()
        .await
        .expect("engine")
}

impl Harness {
    async fn new(sources: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("people.db");
        let store = open(&db).await;
        store.import(&organisation()).await.expect("import the organisation");
        let clock = Arc::new(ManualClock::frozen(friday_16h()));
        let sent: Sent = Arc::default();
        let engine = engine(store.clone(), clock.clone(), sources, sent.clone()).await;
        let workflows = sources.iter().map(|s| workflow(s)).collect();
        Self { _dir: dir, db, store, clock, engine, workflows, sources: sources.to_vec(), sent }
    }

    /// Stops the engine and starts a new one on the same file, at the same simulated time.
    async fn restart(&mut self) {
        self.engine.shutdown().await;
        let now = self.clock.now();
        self.store = open(&self.db).await;
        self.clock = Arc::new(ManualClock::frozen(now));
        self.engine = engine(self.store.clone(), self.clock.clone(), &self.sources, self.sent.clone()).await;
    }

    async fn start(&self, name: &str, input: Value, by: &str) -> InstanceId {
        let options = StartOptions { actor: Some(Actor::User { id: by.into() }), ..StartOptions::default() };
        self.engine.start(&format!("test/{name}@1.0.0"), input, options).await.expect("start").id
    }

    async fn principal(&self, user: &str) -> Principal {
        self.store.principal(user).await.expect("directory").expect("known person")
    }

    /// The open tasks `user` sees, after the instance has created them.
    async fn inbox(&self, user: &str) -> Vec<baton_engine::human::HumanTaskRow> {
        let principal = self.principal(user).await;
        self.engine.inbox(&InboxQuery::default(), &principal).await.expect("inbox")
    }

    /// Waits until `user` sees `count` open tasks of `id`.
    async fn tasks_of(&self, id: &InstanceId, user: &str, count: usize) -> Vec<baton_engine::human::HumanTaskRow> {
        for _ in 0..2_000 {
            let tasks: Vec<_> = self.inbox(user).await.into_iter().filter(|t| &t.instance == id).collect();
            if tasks.len() >= count {
                return tasks;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{user} never saw {count} tasks of {id}");
    }

    async fn act(&self, id: &InstanceId, seq: u64, user: &str, action: TaskAction) -> Result<(), EngineError> {
        let principal = self.principal(user).await;
        self.engine.act_on_task(id, seq, &principal, action).await.map(drop)
    }

    async fn complete(&self, id: &InstanceId, seq: u64, user: &str, outcome: &str, data: Value) {
        let action = TaskAction::Complete { outcome: outcome.into(), data, on_behalf_of: None };
        self.act(id, seq, user, action).await.expect("completes");
    }

    async fn finished(&self, id: &InstanceId) -> baton_engine::Outcome {
        tokio::time::timeout(Duration::from_secs(20), self.engine.wait(id)).await.expect("ends in time").expect("wait")
    }

    /// Moves simulated time, then waits until every timer due by then has fired and every
    /// activity it started (notifications, lookups) has finished.
    async fn advance_to(&self, at: DateTime<Utc>) {
        let by = (at - self.clock.now()).to_std().expect("forward");
        self.engine.advance_clock(by).await.expect("advance");
        let now = self.clock.now() + chrono::Duration::milliseconds(1);
        for _ in 0..4_000 {
            let due = self.store.timers_due_before(now, 1).await.expect("timers");
            let running = self.store.open_tasks(1).await.expect("tasks");
            if due.is_empty() && running.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timers due by {at} never all fired");
    }

    async fn history_names(&self, id: &InstanceId) -> Vec<String> {
        let events = self.store.history(id, 0, u32::MAX).await.expect("history");
        events.iter().map(|e| e.to_view()["type"].as_str().unwrap_or_default().to_owned()).collect()
    }

    async fn history(&self, id: &InstanceId) -> Vec<Value> {
        self.store.history(id, 0, u32::MAX).await.expect("history").iter().map(|e| e.to_view()).collect()
    }

    /// Replays every instance from its stored history: no nondeterminism anywhere.
    async fn replay_all(self) {
        self.engine.shutdown().await;
        let store = open(&self.db).await;
        let mut replayer = Replayer::new();
        for workflow in self.workflows {
            replayer = replayer.orchestration(workflow);
        }
        let instances = store
            .list_instances(&baton_engine::store::InstanceFilter { limit: 1000, ..Default::default() })
            .await
            .expect("instances");
        assert!(!instances.is_empty());
        for row in instances {
            let report = replayer.replay(store.as_ref(), &row.id).await.expect("replay");
            assert_eq!(report.error, None, "replay of {}", row.id);
        }
    }
}

fn brussels(day: u32, hour: u32) -> DateTime<Utc> {
    // November and December 2026: Brussels is UTC+1.
    let (month, day) = if day > 30 { (12, day - 30) } else { (11, day) };
    Utc.with_ymd_and_hms(2026, month, day, hour - 1, 0, 0).single().expect("valid time")
}

const PUBLICATION: &str = r#"do:
  - review:
      call: humanTask
      with:
        title: ${ "Publish the training \(.title)?" }
        assign: { role: super_admin }
        outcomes: [approve, reject]
        form:
          type: object
          required: [comment]
          properties: { comment: { type: string, minLength: 3 } }
        data: ${ . }
  - decide:
      switch:
        - approved: { when: '.outcome == "approve"', then: publish }
        - default: { then: end }
  - publish:
      emit:
        event:
          with: { type: TrainingPublished, source: 'https://baton.test/training', data: { by: '${ .completedBy }' } }
"#;

#[tokio::test]
async fn training_publication_is_reviewed_by_another_super_admin() {
    let source = definition("publication", "", PUBLICATION);
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("publication", json!({"title": "Forklift safety"}), "adam").await;
    let tasks = h.tasks_of(&id, "sara", 1).await;
    let seq = tasks[0].seq;
    assert_eq!(tasks[0].task.spec.title, "Publish the training Forklift safety?");
    assert!(h.inbox("tom").await.iter().all(|t| t.instance != id), "a team leader does not see it");

    // Four-eyes: adam, who asked for the publication, holds super_admin but may not approve it.
    let approve = |data: Value| TaskAction::Complete { outcome: "approve".into(), data, on_behalf_of: None };
    match h.act(&id, seq, "adam", approve(json!({"comment": "mine, fine"}))).await {
        Err(EngineError::TaskRefused { refusal: TaskRefusal::FourEyes { user }, .. }) => assert_eq!(user, "adam"),
        other => panic!("four-eyes must refuse adam: {other:?}"),
    }
    // The form is checked before anything is recorded.
    match h.act(&id, seq, "sara", approve(json!({"comment": "no"}))).await {
        Err(EngineError::TaskRefused { refusal: TaskRefusal::InvalidData(problems), .. }) => {
            assert!(problems[0].contains("/comment"), "{problems:?}")
        }
        other => panic!("a too-short comment must be refused: {other:?}"),
    }
    h.act(&id, seq, "sara", TaskAction::Comment { text: "Looks good".into() }).await.expect("comment");
    h.complete(&id, seq, "sara", "approve", json!({"comment": "ready to go"})).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.status, InstanceStatus::Completed);
    let names = h.history_names(&id).await;
    for expected in ["HumanTaskCreated", "HumanTaskCommented", "HumanTaskCompleted", "Emitted"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    let history = h.history(&id).await;
    let completed = history.iter().find(|e| e["type"] == "HumanTaskCompleted").expect("completion");
    assert_eq!(completed["actor"], json!({"kind": "user", "id": "sara"}));
    let outbox = h.store.outbox_pending(100).await.expect("outbox");
    let published = outbox.iter().find(|(_, r)| r.kind == "TrainingPublished").expect("published event");
    assert_eq!(published.1.payload["data"]["by"], "sara");
    let row = h.engine.human_task(&id, seq, &h.principal("sara").await).await.expect("task");
    assert_eq!(row.task.status, HumanTaskStatus::Completed);
    assert_eq!(row.task.comments[0].by, "sara");
    h.replay_all().await;
}

const PROMOTION: &str = r#"do:
  - hr:
      call: humanTask
      with:
        title: '${ "Promote \(.user) to administrator (HR)" }'
        assign: { role: hr }
        outcomes: [approve, reject]
  - stopIfRejected:
      switch:
        - rejected: { when: '.outcome != "approve"', then: end }
        - default: { then: continue }
  - it:
      call: humanTask
      with:
        title: Grant the administrator rights
        assign: { role: it }
        outcomes: [approve, reject]
      output:
        as: '${ { hr: "approve", it: .outcome, by: .completedBy } }'
"#;

#[tokio::test]
async fn admin_promotion_goes_to_hr_then_it() {
    let source = definition("promotion", "", PROMOTION);
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("promotion", json!({"user": "olga"}), "sara").await;
    let hr = h.tasks_of(&id, "hugo", 1).await;
    assert!(h.inbox("ivan").await.iter().all(|t| t.instance != id), "IT sees nothing before HR approved");
    h.complete(&id, hr[0].seq, "hugo", "approve", Value::Null).await;
    let it = h.tasks_of(&id, "ivan", 1).await;
    h.complete(&id, it[0].seq, "ivan", "approve", Value::Null).await;
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.result, Some(json!({"hr": "approve", "it": "approve", "by": "ivan"})));
    h.replay_all().await;
}

#[tokio::test]
async fn n_of_m_completes_at_the_nth_approval_and_cancels_the_rest() {
    let source = definition(
        "committee",
        "",
        r#"do:
  - vote:
      call: humanTask
      with:
        title: Approve the budget
        assign: { users: [maria, tom, tina] }
        outcomes: [approve, reject]
        quorum: 2
"#,
    );
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("committee", json!({}), "tom").await;
    let maria = h.tasks_of(&id, "maria", 1).await;
    let tina = h.tasks_of(&id, "tina", 1).await;
    let tom = h.tasks_of(&id, "tom", 1).await;
    // Tom asked: four-eyes keeps him from voting on his own request.
    let vote = TaskAction::Complete { outcome: "approve".into(), data: Value::Null, on_behalf_of: None };
    assert!(matches!(
        h.act(&id, tom[0].seq, "tom", vote).await,
        Err(EngineError::TaskRefused { refusal: TaskRefusal::FourEyes { .. }, .. })
    ));
    h.complete(&id, maria[0].seq, "maria", "approve", Value::Null).await;
    assert_eq!(h.engine.describe(&id).await.expect("describe").row.status, InstanceStatus::Waiting);
    h.complete(&id, tina[0].seq, "tina", "approve", Value::Null).await;
    let outcome = h.finished(&id).await;
    let result = outcome.result.expect("output");
    assert_eq!(result["outcome"], "approve");
    assert_eq!(result["approvals"].as_array().map(Vec::len), Some(2));
    let cancelled = h.history(&id).await.into_iter().filter(|e| e["type"] == "HumanTaskCancelled").count();
    assert_eq!(cancelled, 1, "tom's task is withdrawn");
    let principal = h.principal("tom").await;
    let row = h.engine.human_task(&id, tom[0].seq, &principal).await.expect("still visible to its owner");
    assert_eq!(row.task.status, HumanTaskStatus::Cancelled);

    // One person is one vote: maria delegates her task to tina, who then completes both.
    let second = h.start("committee", json!({}), "tom").await;
    let maria = h.tasks_of(&second, "maria", 1).await[0].seq;
    let tina = h.tasks_of(&second, "tina", 1).await[0].seq;
    h.act(&second, maria, "maria", TaskAction::Delegate { to: "tina".into() }).await.expect("delegate");
    h.complete(&second, maria, "tina", "approve", Value::Null).await;
    h.complete(&second, tina, "tina", "approve", Value::Null).await;
    let description = h.engine.describe(&second).await.expect("describe");
    assert_eq!(description.row.status, InstanceStatus::Waiting, "two completions by tina are one approval");
    h.replay_all().await;
}

#[tokio::test]
async fn a_team_leader_of_another_department_can_neither_see_nor_complete() {
    let source = definition(
        "leave",
        "",
        r#"do:
  - approve:
      call: humanTask
      with:
        title: ${ "Leave request of \(.operator)" }
        assign: { role: team_leader, department: '${ .department }' }
        outcomes: [approve, reject]
"#,
    );
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("leave", json!({"operator": "olga", "department": "assembly"}), "olga").await;
    let seq = h.tasks_of(&id, "tom", 1).await[0].seq;
    assert!(h.inbox("tina").await.is_empty(), "paint's team leader sees nothing of assembly");
    let tina = h.principal("tina").await;
    assert!(matches!(h.engine.human_task(&id, seq, &tina).await, Err(EngineError::TaskNotFound { .. })));
    let approve = TaskAction::Complete { outcome: "approve".into(), data: Value::Null, on_behalf_of: None };
    assert!(matches!(h.act(&id, seq, "tina", approve.clone()).await, Err(EngineError::TaskNotFound { .. })));
    // Claiming takes it out of the other candidates' inboxes; delegation keeps the owner.
    h.act(&id, seq, "tom", TaskAction::Claim).await.expect("claim");
    h.act(&id, seq, "tom", TaskAction::Delegate { to: "maria".into() }).await.expect("delegate");
    let row = h.engine.human_task(&id, seq, &h.principal("maria").await).await.expect("the delegate sees it");
    assert_eq!(row.task.assignee.as_deref(), Some("tom"), "the owner stays accountable");
    h.act(&id, seq, "maria", approve).await.expect("the delegate completes");
    let outcome = h.finished(&id).await;
    assert_eq!(outcome.result.expect("output")["completedBy"], "maria");
    let actors: Vec<Value> = h
        .history(&id)
        .await
        .into_iter()
        .filter(|e| e["actor"]["kind"] == "user")
        .map(|e| e["actor"]["id"].clone())
        .collect();
    assert_eq!(actors, [json!("olga"), json!("tom"), json!("tom"), json!("maria")]);
    h.replay_all().await;
}

#[tokio::test]
async fn a_team_leader_completes_on_behalf_of_an_operator_where_allowed() {
    let source = definition(
        "request",
        "",
        r#"do:
  - confirm:
      call: humanTask
      with:
        title: Confirm the test date
        assignee: ${ .operator }
        assign: { department: assembly }
        onBehalf: { roles: [team_leader] }
        # The operator's own confirmation, not an approval: four-eyes does not apply.
        allowSelfApproval: true
"#,
    );
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("request", json!({"operator": "olga"}), "tom").await;
    let seq = h.tasks_of(&id, "olga", 1).await[0].seq;
    let for_olga =
        TaskAction::Complete { outcome: "done".into(), data: Value::Null, on_behalf_of: Some("olga".into()) };
    assert!(h.act(&id, seq, "tina", for_olga.clone()).await.is_err(), "paint's team leader may not");
    h.act(&id, seq, "tom", for_olga).await.expect("assembly's team leader may");
    let result = h.finished(&id).await.result.expect("output");
    assert_eq!((result["completedBy"].clone(), result["onBehalfOf"].clone()), (json!("tom"), json!("olga")));
    h.replay_all().await;
}

fn sla_definition(name: &str, holidays: &str) -> String {
    format!(
        r#"document:
  dsl: '1.0.3'
  namespace: test
  name: {name}
  version: '1.0.0'
use:
  calendars:
    office:
      timezone: Europe/Brussels
      hours: {{ mon-fri: ['09:00-17:00'] }}
      holidays: [{holidays}]
do:
  - review:
      call: humanTask
      with:
        title: Review the certificate
        assignee: tom
        assign: {{ role: team_leader, department: assembly }}
      sla:
        within: PT8H
        calendar: office
        escalate:
          - after: 80%
            do:
              - remind: {{ call: notify, with: {{ to: assignee, template: task-due-soon }} }}
          - after: 100%
            do:
              - tellManager: {{ call: notify, with: {{ to: {{ managerOf: assignee }}, template: sla-breached }} }}
          - after: 200%
            do:
              - handOver: {{ call: reassignTask, with: {{ to: {{ managerOf: assignee }} }} }}
"#
    )
}

fn templates(sent: &Sent) -> Vec<(String, Value)> {
    sent.lock()
        .expect("lock")
        .iter()
        .map(|n| (n["template"].as_str().unwrap_or_default().to_owned(), n["to"].clone()))
        .collect()
}

#[tokio::test]
async fn an_8_hour_sla_from_friday_16h_breaches_monday_16h_and_climbs_its_ladder_once_per_rung() {
    let source = sla_definition("ladder", "");
    let mut h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("ladder", json!({}), "olga").await;
    h.tasks_of(&id, "tom", 1).await;
    let slas = h.engine.slas(&SlaQuery { instance: Some(id.clone()), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(slas.len(), 1);
    assert_eq!(slas[0].target_at, Some(brussels(23, 16)), "Friday 16:00 + 8 working hours = Monday 16:00");
    assert_eq!(slas[0].at_risk_at, Some(brussels(23, 14) + chrono::Duration::minutes(24)));
    assert_eq!(slas[0].department.as_deref(), Some("assembly"));

    // The weekend counts for nothing.
    h.advance_to(brussels(23, 9)).await;
    assert!(templates(&h.sent).is_empty());
    h.restart().await;
    // 80% of 8 h = 6 h 24 min of work: Monday 14:24.
    h.advance_to(brussels(23, 15)).await;
    let at_risk =
        h.engine.slas(&SlaQuery { state: Some(SlaStateName::AtRisk), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(at_risk.len(), 1);
    h.restart().await;
    // Not a minute early, on the weekend or otherwise.
    h.advance_to(brussels(23, 16) - chrono::Duration::minutes(1)).await;
    assert!(h.history_names(&id).await.iter().all(|n| n != "SlaBreached"));
    h.advance_to(brussels(23, 16)).await;
    h.restart().await;
    // 200% = 16 working hours: Friday 1 h, Monday 8 h, Tuesday 7 h: Tuesday 16:00.
    h.advance_to(brussels(24, 16)).await;
    h.restart().await;
    h.advance_to(brussels(27, 17)).await;
    assert_eq!(
        templates(&h.sent),
        [
            ("task-due-soon".to_owned(), json!([{"user": "tom"}])),
            ("sla-breached".to_owned(), json!([{"managerOf": "tom"}])),
        ],
        "each notifying rung fired once, restarts and all"
    );
    let history = h.history(&id).await;
    let count = |name: &str| history.iter().filter(|e| e["type"] == name).count();
    assert_eq!(count("SlaEscalated"), 3);
    assert_eq!(count("SlaBreached"), 1);
    let breach = history.iter().find(|e| e["type"] == "SlaBreached").expect("breach");
    assert_eq!(breach["at"], "2026-11-23T15:00:00.000Z", "breached Monday 16:00 Brussels time");
    let reassigned = history.iter().find(|e| e["type"] == "HumanTaskReassigned").expect("reassigned");
    assert_eq!(reassigned["data"]["to"], json!({"users": ["maria"]}));
    assert_eq!(reassigned["at"], "2026-11-24T15:00:00.000Z", "200% = 16 working hours: Tuesday 16:00");
    // The manager now owns the task; the breached SLA is on the dashboard and in the outbox.
    let seq = h.tasks_of(&id, "maria", 1).await[0].seq;
    let breached =
        h.engine.slas(&SlaQuery { state: Some(SlaStateName::Breached), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(breached.len(), 1);
    assert!(h.store.outbox_pending(100).await.expect("outbox").iter().any(|(_, r)| r.kind == "SLABreached"));
    h.complete(&id, seq, "maria", "done", Value::Null).await;
    h.finished(&id).await;
    let stopped = h.engine.slas(&SlaQuery { instance: Some(id.clone()), ..SlaQuery::default() }).await.expect("slas");
    assert!(stopped[0].stopped_at.is_some());
    assert_eq!(stopped[0].state(h.clock.now()), SlaStateName::Breached);
    h.replay_all().await;
}

#[tokio::test]
async fn a_holiday_moves_the_deadline() {
    let source = sla_definition("holiday", "2026-11-23");
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("holiday", json!({}), "olga").await;
    h.tasks_of(&id, "tom", 1).await;
    let slas = h.engine.slas(&SlaQuery { instance: Some(id), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(slas[0].target_at, Some(brussels(24, 16)), "Monday is a holiday: Tuesday 16:00");
}

#[tokio::test]
async fn suspension_pauses_the_sla_clock() {
    let source = sla_definition("suspended", "");
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("suspended", json!({}), "olga").await;
    h.tasks_of(&id, "tom", 1).await;
    // Suspended from Monday 9:00 (1 working hour used) to Tuesday 9:00: a working day is not counted.
    h.advance_to(brussels(23, 9)).await;
    h.engine.suspend(&id, "waiting for the auditor", Actor::User { id: "adam".into() }).await.expect("suspend");
    let paused = h.engine.slas(&SlaQuery { instance: Some(id.clone()), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!((paused[0].target_at, paused[0].elapsed_ms), (None, 3_600_000));
    // The dashboard counts business time on the SLA's calendar: a paused clock stands still.
    let calendars = load(&source, "test.yaml").expect("loads").calendars;
    let later = brussels(23, 15);
    let view = baton_workflows::dashboard::sla_view(paused[0].clone(), &calendars, later);
    assert_eq!((view.elapsed_business_ms, view.state), (3_600_000, SlaStateName::OnTrack));
    // Acting on a suspended instance's task is refused.
    let principal = h.principal("tom").await;
    let seq = h.tasks_of(&id, "tom", 1).await[0].seq;
    assert!(matches!(
        h.engine.act_on_task(&id, seq, &principal, TaskAction::Claim).await,
        Err(EngineError::InstanceSuspended(_))
    ));
    h.advance_to(brussels(24, 9)).await;
    h.engine.resume(&id, "auditor done", Actor::User { id: "adam".into() }).await.expect("resume");
    let resumed = h.engine.slas(&SlaQuery { instance: Some(id.clone()), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(resumed[0].target_at, Some(brussels(24, 16)), "7 hours left from Tuesday 9:00");
    let view = baton_workflows::dashboard::sla_view(resumed[0].clone(), &calendars, brussels(24, 12));
    assert_eq!(view.elapsed_business_ms, 4 * 3_600_000, "1 hour before the pause, 3 since Tuesday 9:00");
    h.advance_to(brussels(23, 17) + chrono::Duration::days(1) - chrono::Duration::hours(2)).await;
    assert!(h.history_names(&id).await.iter().all(|n| n != "SlaBreached"));
    h.replay_all().await;
}

#[tokio::test]
async fn a_workflow_sla_pauses_while_the_request_waits_on_its_initiator() {
    let source = definition(
        "onboarding",
        "",
        r#"sla:
  within: PT2H
  pause: [initiator]
  escalate:
    - after: 100%
      do:
        - alert: { call: notify, with: { to: { role: hr }, template: onboarding-late, data: '${ $sla }' } }
do:
  - details:
      call: humanTask
      with:
        title: Tell us your shoe size
        assignee: initiator-placeholder
        initiator: '${ .requestedBy }'
        allowSelfApproval: true
  - prepare:
      call: humanTask
      with:
        title: Prepare the safety shoes
        assign: { role: hr }
"#
        .replace("initiator-placeholder", "olga")
        .as_str(),
    );
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("onboarding", json!({"requestedBy": "olga"}), "olga").await;
    let details = h.tasks_of(&id, "olga", 1).await;
    // Three hours with the request on the initiator's desk do not count.
    h.advance_to(friday_16h() + chrono::Duration::hours(3)).await;
    h.complete(&id, details[0].seq, "olga", "done", Value::Null).await;
    let prepare = h.tasks_of(&id, "hugo", 1).await;
    let clock = h.engine.slas(&SlaQuery { instance: Some(id.clone()), ..SlaQuery::default() }).await.expect("slas");
    assert_eq!(clock[0].name, "workflow");
    assert_eq!(clock[0].target_at, Some(friday_16h() + chrono::Duration::hours(5)), "2 h from 19:00");
    h.advance_to(friday_16h() + chrono::Duration::hours(5)).await;
    assert_eq!(templates(&h.sent), [("onboarding-late".to_owned(), json!([{"role": "hr"}]))]);
    assert_eq!(h.sent.lock().expect("lock")[0]["data"]["elapsedMs"], 7_200_000);
    h.complete(&id, prepare[0].seq, "hugo", "done", Value::Null).await;
    h.finished(&id).await;
    let history = h.history(&id).await;
    let names: Vec<&str> = history.iter().filter_map(|e| e["type"].as_str()).filter(|t| t.starts_with("Sla")).collect();
    assert_eq!(names, ["SlaStarted", "SlaPaused", "SlaResumed", "SlaBreached", "SlaEscalated", "SlaStopped"]);
    let stopped = history.iter().find(|e| e["type"] == "SlaStopped").expect("stopped");
    assert_eq!(stopped["data"]["elapsed_ms"], 7_200_000);
    h.replay_all().await;
}

#[tokio::test]
async fn a_breach_is_recorded_counted_and_emitted_without_a_ladder_and_a_timeout_expires_the_task() {
    let source = definition(
        "plain",
        "",
        r#"do:
  - attempt:
      try:
        - sign:
            call: humanTask
            with: { title: Sign the attendance sheet, assignee: tom }
            sla: { within: PT1H }
            timeout: { after: PT3H }
      catch:
        errors: { with: { type: https://serverlessworkflow.io/spec/1.0.0/errors/timeout } }
        do:
          - giveUp: { set: { signed: false } }
"#,
    );
    let h = Harness::new(std::slice::from_ref(&source)).await;
    let id = h.start("plain", json!({}), "olga").await;
    let seq = h.tasks_of(&id, "tom", 1).await[0].seq;
    h.advance_to(friday_16h() + chrono::Duration::hours(1)).await;
    assert_eq!(h.engine.stats().sla_breaches, 1);
    let outbox = h.store.outbox_pending(100).await.expect("outbox");
    let breach = outbox.iter().find(|(_, r)| r.kind == "SLABreached").expect("emitted");
    assert_eq!((breach.1.payload["name"].clone(), breach.1.payload["humanTask"].clone()), (json!("sign"), json!(seq)));
    h.advance_to(friday_16h() + chrono::Duration::hours(3)).await;
    assert_eq!(h.finished(&id).await.result, Some(json!({"signed": false})));
    let principal = h.principal("tom").await;
    let row = h.engine.human_task(&id, seq, &principal).await.expect("task");
    assert_eq!(row.task.status, HumanTaskStatus::Expired);
    assert!(h.inbox("tom").await.is_empty());
    h.replay_all().await;
}

#[tokio::test]
async fn a_notification_is_sent_once_though_its_activity_is_retried_and_the_instance_replayed() {
    use baton_activities::notify::{NotifyConfig, notify};
    use baton_engine::store::{DeliveryQuery, NotificationStore};
    use std::sync::atomic::{AtomicU32, Ordering};

    let source = definition(
        "welcome",
        "  templates:\n    welcome:\n      channels: [inApp]\n      en: { subject: 'Welcome {{name}}', text: 'Your training starts soon.' }\n",
        "do:\n  - greet: { call: notify, with: { to: olga, template: welcome, data: { name: Olga } } }\n",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notify.db");
    let store = open(&db).await;
    store.import(&organisation()).await.expect("import");
    let clock = Arc::new(ManualClock::frozen(friday_16h()));
    let workflow = workflow(&source);
    let config = NotifyConfig::new(store.clone(), clock.clone());
    config.add_definition_templates(&workflow.definition_key(), &workflow.program().templates).expect("templates");
    let config = Arc::new(config);
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = attempts.clone();
    let engine = Engine::builder()
        .store(store.clone())
        .clock(clock.clone())
        .orchestration(workflow)
        .activity("baton.notify", move |ctx, input| {
            let (config, attempts) = (config.clone(), counted.clone());
            async move {
                let result = notify(&config, &ctx, &input).await?;
                // The first attempt sends, then "crashes" before reporting: the engine retries.
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(ActivityError::retryable("lost the answer"));
                }
                Ok(result)
            }
        })
        .build()
        .await
        .expect("engine");
    let id = engine.start("test/welcome@1.0.0", json!({}), StartOptions::default()).await.expect("start").id;
    // The retry waits out its backoff on the simulated clock.
    for _ in 0..200 {
        if attempts.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    engine.advance_clock(Duration::from_secs(60)).await.expect("advance");
    let outcome = tokio::time::timeout(Duration::from_secs(20), engine.wait(&id)).await.expect("ends").expect("wait");
    assert_eq!(outcome.status, InstanceStatus::Completed);
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "the activity ran twice");
    let inbox = store.in_app("olga", false, None, 10).await.expect("in-app");
    assert_eq!(inbox.len(), 1, "and olga got one notification: {inbox:?}");
    assert_eq!(inbox[0].subject, "Welcome Olga");
    let log =
        store.deliveries(&DeliveryQuery { instance: Some(id.clone()), ..DeliveryQuery::default() }).await.expect("log");
    assert_eq!(log.len(), 1);
    let outbox = store.outbox_pending(100).await.expect("outbox");
    assert_eq!(outbox.iter().filter(|(_, r)| r.kind == "NotificationSent").count(), 1);
    engine.shutdown().await;
    // A replay reads the recorded result; it never sends.
    let store = open(&db).await;
    let report =
        Replayer::new().orchestration(self::workflow(&source)).replay(store.as_ref(), &id).await.expect("replay");
    assert_eq!(report.error, None);
    assert_eq!(store.in_app("olga", false, None, 10).await.expect("in-app").len(), 1);
}

/// Erasing a person (GDPR): refused while a running instance holds their words; once it has
/// ended, the form data of the task completed on their behalf and their comments are gone from
/// history, the task read model, the database file and its log, with their directory entry and
/// notifications, and every hash chain still verifies.
#[tokio::test]
async fn erasing_a_person_keeps_the_chain_and_waits_for_running_instances() {
    use baton_engine::erasure::{ERASED_TEXT, Erasure};
    use baton_engine::store::{HumanTaskStore, InAppNotification, NotificationStore, RetentionStore};

    let source = definition(
        "confirm",
        "",
        r#"do:
  - confirm:
      call: humanTask
      with:
        title: Confirm the test date
        assignee: ${ .operator }
        assign: { department: assembly }
        onBehalf: { roles: [team_leader] }
        allowSelfApproval: true
        form: { type: object, properties: { phone: { type: string } } }
  - done:
      set: { confirmed: true }
"#,
    );
    let mut h = Harness::new(std::slice::from_ref(&source)).await;
    let comment = |text: &str| TaskAction::Comment { text: text.into() };
    let ended = h.start("confirm", json!({"operator": "olga"}), "tom").await;
    let seq = h.tasks_of(&ended, "olga", 1).await[0].seq;
    h.act(&ended, seq, "olga", comment("call me on 0470-555-123")).await.expect("olga comments");
    h.act(&ended, seq, "tom", comment("will do")).await.expect("tom comments");
    let for_olga = TaskAction::Complete {
        outcome: "done".into(),
        data: json!({"phone": "0470-555-123"}),
        on_behalf_of: Some("olga".into()),
    };
    h.act(&ended, seq, "tom", for_olga).await.expect("tom completes for olga");
    h.finished(&ended).await;
    let running = h.start("confirm", json!({"operator": "olga"}), "tom").await;
    let running_seq = h.tasks_of(&running, "olga", 1).await[0].seq;
    h.act(&running, running_seq, "olga", comment("away until 0470-555-123 works")).await.expect("comment");
    let note = InAppNotification {
        id: 0,
        user: "olga".into(),
        delivery: 9_999,
        subject: "Test date".into(),
        body: "Olga, please confirm".into(),
        link: None,
        created_at: h.clock.now(),
        read_at: None,
    };
    h.store.put_in_app(&note).await.expect("a notification");

    let erasure = Erasure {
        person: "olga".into(),
        by: Actor::User { id: "adam".into() },
        reason: Some("request 2026-114".into()),
        at: h.clock.now(),
        dry_run: true,
    };
    let dry = h.engine.erase_person(&erasure).await.expect("a dry run reports");
    assert_eq!((dry.blocking.clone(), dry.instances.clone()), (vec![running.clone()], vec![ended.clone()]));
    assert_eq!((dry.events, dry.kept_events, dry.notifications, dry.directory, dry.applied), (2, 0, 1, true, false));
    let refused = h.engine.erase_person(&Erasure { dry_run: false, ..erasure.clone() }).await;
    match refused {
        Err(EngineError::ErasureRefused { person, instances }) => {
            assert_eq!((person.as_str(), instances), ("olga", vec![running.clone()]));
        }
        other => panic!("a running instance holds olga's comment: {other:?}"),
    }
    assert_eq!(h.store.in_app("olga", false, None, 10).await.expect("in-app").len(), 1, "nothing erased yet");

    h.engine.terminate(&running, "GDPR erasure request", Actor::User { id: "adam".into() }).await.expect("terminate");
    let report = h.engine.erase_person(&Erasure { dry_run: false, ..erasure.clone() }).await.expect("erases");
    let mut both = vec![ended.clone(), running.clone()];
    both.sort();
    assert_eq!((report.instances.clone(), report.blocking.len(), report.applied), (both.clone(), 0, true));
    assert_eq!((report.events, report.tasks, report.notifications, report.directory), (3, 2, 1, true));

    // History: the events stay, with their actor, but without the payload; chains verify.
    let history = h.history(&ended).await;
    let completed = history.iter().find(|e| e["type"] == "HumanTaskCompleted").expect("the completion stays");
    assert_eq!(
        (completed["actor"]["id"].clone(), completed["data"].clone(), completed["erased"].clone()),
        (json!("tom"), Value::Null, json!(true))
    );
    let words: Vec<&Value> = history.iter().filter(|e| e["type"] == "HumanTaskCommented").collect();
    assert_eq!(
        words.iter().map(|e| e["erased"].clone()).collect::<Vec<_>>(),
        [json!(true), json!(false)],
        "tom's words stay"
    );
    assert_eq!(words[1]["data"]["text"], "will do");
    for id in &both {
        let verified = baton_engine::replay::verify(h.store.as_ref(), id).await.expect("verify");
        assert_eq!(verified.broken, None, "{id} still verifies");
        assert!(verified.erased >= 1);
        let text = serde_json::to_string(&h.history(id).await).expect("json");
        assert!(!text.contains("0470-555-123"), "nothing of olga's number in {id}'s history");
    }
    // The read model, the directory, the notifications, the audit trail.
    let task = h.store.human_task(&ended, seq).await.expect("task").expect("row").task;
    let done = task.completion.expect("completion");
    assert_eq!((done.data, done.erased, done.completed_by.as_str()), (Value::Null, true, "tom"));
    assert_eq!(task.comments.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), [ERASED_TEXT, "will do"]);
    let olga = h.store.person("olga").await.expect("directory").expect("the id stays");
    assert_eq!((olga.name.as_str(), olga.email.clone(), olga.active, olga.roles.len()), ("", None, false, 0));
    assert!(h.store.in_app("olga", false, None, 10).await.expect("in-app").is_empty());
    let audit = h.store.erasures(Some("olga")).await.expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].by.clone(), audit[0].reason.as_deref(), audit[0].report.events),
        (Actor::User { id: "adam".into() }, Some("request 2026-114"), 3)
    );
    // Nothing left on disk: not in the database's free space, not in its write-ahead log.
    for file in [h.db.clone(), h.db.with_extension("db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        let found = bytes.windows(12).any(|w| w == b"0470-555-123");
        assert!(!found, "{} still holds olga's number", file.display());
    }
    // An erased instance no longer replays, and needs not: input to it is refused as to any
    // ended instance, with no incident (after a restart, when nothing of it is in memory).
    h.restart().await;
    let late = h.engine.terminate(&ended, "late", Actor::User { id: "adam".into() }).await;
    assert!(matches!(late, Err(EngineError::InstanceEnded { .. })), "{late:?}");
    let raise = RaiseEvent { name: "ping".into(), payload: json!({}), event_id: None, actor: Actor::System };
    assert!(matches!(h.engine.raise_event(&ended, raise).await, Err(EngineError::InstanceEnded { .. })));
    assert!(
        h.engine.incidents(Some(&ended), false).await.expect("incidents").is_empty(),
        "no corrupt-history incident"
    );
    // Erasing again finds nothing more.
    let again = h.engine.erase_person(&Erasure { dry_run: false, ..erasure }).await.expect("again");
    assert_eq!((again.events, again.tasks, again.instances.len()), (0, 0, 0));
}
