//! Scheduled starts on a real engine (SQLite, simulated time): a weekly 09:00 Europe/Brussels
//! schedule starts exactly one instance a week across the change to summer time; missed fire
//! times are caught up after a stop; the state survives a new scheduler; a crash between a
//! start and the state's write starts nothing twice; overlapping runs are skipped.

use std::sync::Arc;
use std::time::Duration;

use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::store::{InstanceFilter, SettingsStore};
use baton_engine::{Engine, InstanceId, ManualClock};
use baton_workflows::interp::Workflow;
use baton_workflows::run::{content_hash, load};
use baton_workflows::schedule::Scheduler;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

fn definition(name: &str, schedule: &str, options: &str, body: &str) -> String {
    format!(
        "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: {name}\n  version: '1.0.0'\n  metadata:\n    baton:\n      schedule: {options}\nschedule:\n  {schedule}\ndo:\n{body}"
    )
}

const QUICK: &str = "  - note:\n      set:\n        at: ${ .scheduledAt }\n";
const SLOW: &str = "  - wait:\n      wait: PT3H\n";

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    engine: Arc<Engine>,
    programs: Vec<Arc<baton_workflows::model::Program>>,
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
}

impl Harness {
    async fn new(sources: &[String], start: DateTime<Utc>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("schedule.db");
        let store =
            Arc::new(SqliteStore::open(path.to_str().expect("utf-8"), SqliteOptions::default()).await.expect("store"));
        let mut builder = Engine::builder().store(store.clone()).clock(Arc::new(ManualClock::frozen(start)));
        let mut programs = Vec::new();
        for source in sources {
            let program = Arc::new(load(source, "test.yaml").expect("loads"));
            builder = builder.orchestration(Workflow::new(program.clone(), content_hash(source)));
            programs.push(program);
        }
        let engine = Arc::new(builder.build().await.expect("engine"));
        Self { _dir: dir, store, engine, programs }
    }

    async fn scheduler(&self) -> Scheduler {
        let scheduler = Scheduler::new(self.engine.clone());
        for program in &self.programs {
            scheduler.register(program).await.expect("registered");
        }
        scheduler
    }

    async fn advance_to(&self, at: DateTime<Utc>) {
        let by = (at - self.engine.clock().now()).to_std().unwrap_or(Duration::ZERO);
        self.engine.advance_clock(by).await.expect("advance");
    }

    async fn scheduled_at(&self, ids: &[InstanceId]) -> Vec<String> {
        let mut times = Vec::new();
        for id in ids {
            let history =
                baton_engine::store::HistoryStore::history(self.store.as_ref(), id, 0, 1).await.expect("history");
            let started: Value = serde_json::from_str(&history[0].payload).expect("json");
            times.push(started["input"]["scheduledAt"].as_str().expect("the fire time").to_owned());
        }
        times
    }

    async fn instances(&self) -> usize {
        let filter = InstanceFilter { limit: 1000, ..InstanceFilter::default() };
        baton_engine::store::HistoryStore::list_instances(self.store.as_ref(), &filter).await.expect("list").len()
    }
}

#[tokio::test]
async fn a_weekly_09_00_brussels_schedule_starts_one_instance_a_week_across_the_change_to_summer_time() {
    let weekly = definition("weekly", "cron: '0 9 * * MON'", "{ timezone: Europe/Brussels }", QUICK);
    let h = Harness::new(&[weekly], utc(2026, 3, 20, 12, 0)).await;
    let scheduler = h.scheduler().await;
    let mut started = Vec::new();
    // The scheduler wakes every 10 minutes for three weeks.
    let mut now = utc(2026, 3, 20, 12, 0);
    while now < utc(2026, 4, 10, 0, 0) {
        now += chrono::Duration::minutes(10);
        h.advance_to(now).await;
        started.extend(scheduler.tick().await.expect("tick"));
    }
    assert_eq!(
        h.scheduled_at(&started).await,
        ["2026-03-23T08:00:00.000Z", "2026-03-30T07:00:00.000Z", "2026-04-06T07:00:00.000Z"],
        "09:00 in Brussels, winter then summer time"
    );
    let state = scheduler.state("test/weekly").await.expect("state").expect("stored");
    assert_eq!((state.fired, state.skipped), (3, 0));
    assert_eq!(state.next_at, Some(utc(2026, 4, 13, 7, 0)));
}

#[tokio::test]
async fn missed_fire_times_are_caught_up_once_and_a_crash_before_the_state_is_written_starts_nothing_twice() {
    let hourly = definition("hourly", "every: PT1H", "{ misfire: catchUp, overlap: allow }", QUICK);
    let h = Harness::new(&[hourly], utc(2026, 11, 23, 9, 0)).await;
    let scheduler = h.scheduler().await;
    assert!(scheduler.tick().await.expect("tick").is_empty(), "nothing is due at the start");

    // Stopped for three hours and a bit: the three missed fire times start on the next tick.
    h.advance_to(utc(2026, 11, 23, 12, 5)).await;
    let before = h.store.setting("schedule:test/hourly").await.expect("state").expect("stored");
    let first = scheduler.tick().await.expect("tick");
    assert_eq!(
        h.scheduled_at(&first).await,
        ["2026-11-23T10:00:00.000Z", "2026-11-23T11:00:00.000Z", "2026-11-23T12:00:00.000Z"]
    );

    // A crash after the starts, before the state was written: the same starts, no new instance.
    h.store.set_setting("schedule:test/hourly", &before).await.expect("state put back");
    let again = h.scheduler().await.tick().await.expect("tick after the restart");
    assert_eq!(again, first, "the idempotency keys bring back the same instances");
    assert_eq!(h.instances().await, 3);

    // A new scheduler (a restarted server) goes on from the stored state.
    let restarted = h.scheduler().await;
    assert!(restarted.tick().await.expect("tick").is_empty());
    h.advance_to(utc(2026, 11, 23, 13, 0)).await;
    assert_eq!(restarted.tick().await.expect("tick").len(), 1);
    assert_eq!(restarted.state("test/hourly").await.expect("state").expect("stored").fired, 4);
}

#[tokio::test]
async fn a_run_still_going_is_not_overlapped_and_a_missed_time_is_skipped_by_default() {
    let slow = definition("slow", "every: PT1H", "{ overlap: skip }", SLOW);
    let h = Harness::new(&[slow], utc(2026, 11, 23, 9, 0)).await;
    let scheduler = h.scheduler().await;
    h.advance_to(utc(2026, 11, 23, 10, 0)).await;
    let first = scheduler.tick().await.expect("tick");
    assert_eq!(first.len(), 1, "10:00 starts a three-hour run");
    h.advance_to(utc(2026, 11, 23, 11, 0)).await;
    assert!(scheduler.tick().await.expect("tick").is_empty(), "11:00: the 10:00 run still waits");
    // Stopped until 15:30: 12:00 to 15:00 were missed, and skip drops them.
    h.advance_to(utc(2026, 11, 23, 15, 30)).await;
    let ended = tokio::time::timeout(Duration::from_secs(20), h.engine.wait(&first[0])).await.expect("in time");
    assert!(ended.is_ok(), "the 10:00 run ended at 13:00");
    assert!(scheduler.tick().await.expect("tick").is_empty());
    h.advance_to(utc(2026, 11, 23, 16, 0)).await;
    assert_eq!(scheduler.tick().await.expect("tick").len(), 1, "16:00 is on time and the 10:00 run has ended");
    let state = scheduler.state("test/slow").await.expect("state").expect("stored");
    assert_eq!((state.fired, state.skipped), (2, 5));
}

/// `schedule.on`: an event that matches starts one instance of the definition with `[event]`
/// as input; the same event again starts nothing new; other events start nothing; `any`
/// matches by any of its filters (a regular expression among them); `all` is refused.
#[tokio::test]
async fn an_event_that_matches_schedule_on_starts_one_instance() {
    let welcome = "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: welcome\n  version: '1.0.0'\nschedule:\n  on:\n    one:\n      with:\n        type: user.created\n        source: https://hr.example\ndo:\n  - greet:\n      set:\n        user: ${ .[0].data.id }\n";
    let changed = "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: changed\n  version: '1.0.0'\nschedule:\n  on:\n    any:\n      - with: { type: user.created, data: '${ .role == \"operator\" }' }\n      - with: { type: 'user\\.role\\..*' }\ndo:\n  - note:\n      set:\n        kind: ${ .[0].type }\n";
    let sources = [welcome.to_owned(), changed.to_owned()];
    let h = Harness::new(&sources, utc(2026, 11, 2, 8, 0)).await;
    let scheduler = h.scheduler().await;
    let actor = baton_engine::Actor::Worker { id: "hr-feed".into() };
    let event = |id: &str, kind: &str, source: &str, role: &str| serde_json::json!({"specversion": "1.0", "id": id, "type": kind, "source": source, "data": {"id": "olga", "role": role}});

    let created = event("e-1", "user.created", "https://hr.example", "operator");
    let started = scheduler.on_event(&created, actor.clone()).await.expect("started");
    let definitions: Vec<&str> = started.iter().map(|s| s.definition.as_str()).collect();
    assert_eq!(definitions, ["test/changed", "test/welcome"], "both match: one by its type and source, one by data");
    let welcome_id = &started[1].instance;
    let outcome = h.engine.wait(welcome_id).await.expect("ends");
    assert_eq!(outcome.result, Some(serde_json::json!({"user": "olga"})), "the input is [event]");
    let again = scheduler.on_event(&created, actor.clone()).await.expect("again");
    assert_eq!(again, started, "the same event starts nothing new");
    assert_eq!(h.instances().await, 2);

    let manager = event("e-2", "user.created", "https://hr.example", "manager");
    let started = scheduler.on_event(&manager, actor.clone()).await.expect("started");
    assert_eq!(started.iter().map(|s| s.definition.as_str()).collect::<Vec<_>>(), ["test/welcome"], "data false");
    let elsewhere = event("e-3", "user.created", "https://crm.example", "manager");
    assert!(scheduler.on_event(&elsewhere, actor.clone()).await.expect("none").is_empty(), "another source");
    let promoted = event("e-4", "user.role.changed", "https://hr.example", "team_leader");
    let started = scheduler.on_event(&promoted, actor.clone()).await.expect("started");
    assert_eq!(started.len(), 1, "by the regular expression");
    let outcome = h.engine.wait(&started[0].instance).await.expect("ends");
    assert_eq!(outcome.result, Some(serde_json::json!({"kind": "user.role.changed"})));
    assert!(
        scheduler
            .on_event(&event("e-5", "order.placed", "https://hr.example", "x"), actor)
            .await
            .expect("none")
            .is_empty()
    );

    let all = "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: both\n  version: '1.0.0'\nschedule:\n  on:\n    all:\n      - with: { type: a }\n      - with: { type: b }\ndo:\n  - note:\n      set: { ok: true }\n";
    let refused = load(all, "all.yaml").expect_err("`all` is refused when the definition compiles");
    let refused = refused.to_string();
    assert!(refused.contains("`all`") && refused.contains("all.yaml"), "{refused}");
}

/// A schedule that does not parse is refused when the definition compiles, at the field that is
/// wrong, so that a deploy stores nothing a restart could not take back.
#[test]
fn a_schedule_that_does_not_parse_is_refused_at_its_field() {
    let cases = [
        // The schedule's line (10), or the options' line (8) for the time zone.
        ("cron: '0 9 * * NOPE'", "{}", "broken.yaml:10:", "not a cron expression"),
        ("cron: '0 9 * * MON'", "{ timezone: Europe/Atlantis }", "broken.yaml:8:", "time zone"),
        ("every: PT0S", "{}", "broken.yaml:10:", "longer than zero"),
    ];
    for (schedule, options, position, expected) in cases {
        let source = definition("broken", schedule, options, QUICK);
        let refused = load(&source, "broken.yaml").expect_err("refused").to_string();
        assert!(refused.contains(expected) && refused.contains(position), "{schedule}: {refused}");
    }
}
