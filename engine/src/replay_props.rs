//! Replay property tests: random programs driven by random inputs. After every step the
//! instance rebuilt from its history alone equals the live one; an instance loaded from a
//! snapshot plus the later events equals one replayed from history.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use crate::activity::{ActivityOptions, Failure};
use crate::history::{
    ActivityCompleted, ActivityFailed, Actor, EventKind, EventReceived, InstanceId, InstanceStarted, Seq, StoredEvent,
    TimerRef,
};
use crate::instance::{Effect, INTERPRETER_VERSION, Instance};
use crate::orchestration::{DynOrchestration, Erased};
use crate::program::{Op, Program};
use crate::store::SnapshotRow;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Activity { name: "a".into(), options: ActivityOptions::default() }),
        (2usize..4).prop_map(|n| Op::Parallel { names: vec!["p".into(); n] }),
        (1u64..5_000).prop_map(|ms| Op::Sleep { ms }),
        prop_oneof![Just("x"), Just("y")].prop_map(|n| Op::WaitEvent { name: n.into() }),
        (1u64..5_000).prop_map(|ms| Op::WaitEventOrTimeout { name: "y".into(), ms }),
        Just(Op::Emit { kind: "k".into() }),
        (1u64..6, 1u64..4).prop_map(|(times, every)| Op::Loop { name: "l".into(), times, every }),
    ]
}

/// What the driver does next (indices pick among what is pending).
#[derive(Clone, Debug)]
enum Action {
    Complete(usize),
    Fail(usize),
    Fire(usize),
    Raise(bool),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => any::<usize>().prop_map(Action::Complete),
        1 => any::<usize>().prop_map(Action::Fail),
        3 => any::<usize>().prop_map(Action::Fire),
        2 => any::<bool>().prop_map(Action::Raise),
    ]
}

struct Driver {
    live: Instance,
    orchestration: Arc<dyn DynOrchestration>,
    history: Vec<StoredEvent>,
    activities: BTreeSet<Seq>,
    timers: BTreeSet<Seq>,
    now: chrono::DateTime<Utc>,
    snapshots: Vec<SnapshotRow>,
}

impl Driver {
    fn new(program: Program, input: serde_json::Value) -> Self {
        let orchestration: Arc<dyn DynOrchestration> = Arc::new(Erased(program));
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid time");
        let live = Instance::new(InstanceId::new("prop"), orchestration.clone(), None, None, now);
        let mut driver = Self {
            live,
            orchestration: orchestration.clone(),
            history: Vec::new(),
            activities: BTreeSet::new(),
            timers: BTreeSet::new(),
            now,
            snapshots: Vec::new(),
        };
        let started = EventKind::InstanceStarted(InstanceStarted {
            definition: orchestration.definition(),
            interpreter_version: INTERPRETER_VERSION.into(),
            input,
            idempotency_key: None,
            business_key: None,
            tags: Vec::new(),
        });
        driver.step(started);
        driver
    }

    fn step(&mut self, kind: EventKind) {
        self.now += Duration::milliseconds(137);
        let step = self.live.handle(kind, self.now, Actor::System).expect("the program takes every input");
        for effect in &step.effects {
            match effect {
                Effect::Dispatch(task) => {
                    self.activities.insert(task.seq);
                }
                Effect::FinishTask(seq) => {
                    self.activities.remove(seq);
                }
                Effect::ArmTimer(timer) => {
                    self.timers.insert(timer.seq);
                }
                Effect::DisarmTimer(seq) => {
                    self.timers.remove(seq);
                }
                _ => {}
            }
        }
        self.history.extend(step.events);
    }

    fn pick(set: &BTreeSet<Seq>, index: usize) -> Option<Seq> {
        (!set.is_empty()).then(|| *set.iter().nth(index % set.len()).unwrap_or(&0))
    }

    fn act(&mut self, action: &Action) {
        let kind = match action {
            Action::Complete(i) => Self::pick(&self.activities, *i).map(|activity| {
                EventKind::ActivityCompleted(ActivityCompleted {
                    activity,
                    result: json!({"done": activity}),
                    attempt: 1,
                })
            }),
            Action::Fail(i) => Self::pick(&self.activities, *i).map(|activity| {
                EventKind::ActivityFailed(ActivityFailed { activity, failure: Failure::new("boom", "no"), attempt: 3 })
            }),
            Action::Fire(i) => Self::pick(&self.timers, *i).map(|timer| EventKind::TimerFired(TimerRef { timer })),
            Action::Raise(x) => Some(EventKind::EventReceived(EventReceived {
                name: if *x { "x" } else { "y" }.into(),
                received_at_ms: None,
                event_id: None,
                payload: json!({"x": x}),
            })),
        };
        if let Some(kind) = kind {
            self.step(kind);
        }
    }

    fn check_replay(&self) {
        let row = self.live.row(self.now);
        let run: Vec<StoredEvent> = self.history.iter().filter(|e| e.seq >= row.run_start).cloned().collect();
        let replayed = Instance::replay(self.orchestration.clone(), &row, None, &run).expect("history replays");
        assert!(replayed.same_state(&self.live), "replayed {replayed:?}\nlive {:?}", self.live);
        for snapshot in &self.snapshots {
            if snapshot.seq < row.run_start {
                continue;
            }
            let later: Vec<StoredEvent> = self.history.iter().filter(|e| e.seq > snapshot.seq).cloned().collect();
            let loaded =
                Instance::replay(self.orchestration.clone(), &row, Some(snapshot), &later).expect("snapshot loads");
            assert!(
                loaded.same_state(&replayed),
                "from snapshot at {}: {loaded:?}\nreplayed {replayed:?}",
                snapshot.seq
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_live_state_after_every_step(
        ops in prop::collection::vec(op(), 1..8),
        actions in prop::collection::vec(action(), 0..40),
        input in any::<u32>(),
        snapshot_every in 1usize..6,
    ) {
        let mut program = Program::new("prop", ops);
        // A failure ends the instance; an unhandled one is the runtime's business (incidents).
        program.fail_on_activity_error = true;
        let mut driver = Driver::new(program, json!({ "n": input }));
        driver.check_replay();
        for (i, action) in actions.iter().enumerate() {
            if driver.live.status.is_final() || driver.live.status == crate::store::InstanceStatus::Faulted {
                break;
            }
            driver.act(action);
            if i % snapshot_every == 0 {
                driver.snapshots.push(driver.live.snapshot());
            }
            driver.check_replay();
        }
    }
}

#[test]
fn a_changed_program_is_reported_as_nondeterminism() {
    let program = Program::new("p", vec![Op::Activity { name: "a".into(), options: ActivityOptions::default() }]);
    let driver = Driver::new(program.clone(), json!({}));
    // Same definition identity, other behaviour: schedules activity "b" where history has "a".
    let mut changed = Program::new("p", vec![Op::Activity { name: "b".into(), options: ActivityOptions::default() }]);
    changed.version = program.version.clone();
    let orchestration: Arc<dyn DynOrchestration> = Arc::new(Erased(SameHash { inner: changed, hash: program }));
    let row = driver.live.row(driver.now);
    let err = Instance::replay(orchestration, &row, None, &driver.history).expect_err("nondeterminism");
    assert!(matches!(err, crate::instance::StepError::Nondeterminism { seq: 1, .. }), "{err}");
}

/// An orchestration that claims another's identity (a code change without a version bump).
struct SameHash {
    inner: Program,
    hash: Program,
}

impl crate::orchestration::Orchestration for SameHash {
    type State = crate::program::ProgramState;

    fn definition(&self) -> crate::history::DefinitionInfo {
        crate::orchestration::Orchestration::definition(&self.hash)
    }

    fn on_trigger(
        &self,
        state: &mut Self::State,
        trigger: crate::orchestration::Trigger<'_>,
        ctx: &mut crate::orchestration::Ctx<'_>,
    ) -> Result<(), crate::orchestration::Fault> {
        self.inner.on_trigger(state, trigger, ctx)
    }
}
