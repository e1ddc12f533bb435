//! The pure step: an instance's state, how one input event moves it, and replay.
//!
//! [`Instance::handle`] takes one input event (started, an activity finished, a timer fired, an
//! event arrived...), applies it, runs the orchestration on each trigger it yields, turns the
//! commands into events, applies those too, and returns the new stored events with the
//! [`Effect`]s they imply. Nothing here is async or does I/O, so live execution and replay run
//! the same code: replay feeds each recorded input event to `handle` and checks that the
//! command events it generates are the ones recorded after it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::activity::Failure;
use crate::history::{
    ActivityScheduled, Actor, ChildStarted, ContinuedAsNew, DecodeError, DefinitionInfo, Emitted, EventKind,
    EventReceived, EventWaitStarted, HistoryEvent, HumanTaskCancelled, HumanTaskCreated, HumanTaskReassigned,
    HumanTaskRef, InstanceCompleted, InstanceFailed, InstanceId, InstanceMigrated, Seq, SlaElapsed, SlaEscalated,
    SlaResumed, SlaStarted, StoredEvent, TimerRef, TimerStarted, WaitRef, time_from_ms,
};
use crate::human::{Assignment, Comment, Completion, HumanTask, HumanTaskRow, HumanTaskStatus};
use crate::machines::{
    ActivityEvent, ActivityState, ChildEvent, ChildState, Next, TimerEvent, TimerState, Unexpected, WaitEvent,
    WaitState,
};
use crate::orchestration::{ANY_EVENT, AnyState, Command, Ctx, DynOrchestration, Fault, TaskMapping, Trigger};
use crate::store::{InstanceRow, InstanceStatus, OutboxRow, ParentRef, SlaRow, SnapshotRow, TaskRow, TimerRow};

/// The outbox kind of the event the engine emits when an SLA is breached.
pub const SLA_BREACHED: &str = "SLABreached";

/// The version of this interpreter of histories, recorded in every started event.
pub const INTERPRETER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Post-commit work and the rows it needs, produced by applying events.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// A new activity task: its row is written with the step, then it is dispatched.
    Dispatch(TaskRow),
    /// The activity task is finished: its row is deleted with the step.
    FinishTask(Seq),
    ArmTimer(TimerRow),
    DisarmTimer(Seq),
    /// A child instance starts in the same commit, on behalf of whoever started its parent
    /// (the request's initiator stays the initiator inside sub-workflows).
    StartChild {
        instance: InstanceId,
        definition: String,
        input: Value,
        parent: ParentRef,
        started_by: Option<String>,
    },
    /// The parent learns the outcome in the same commit.
    NotifyParent {
        parent: ParentRef,
        outcome: Result<Value, Failure>,
    },
    Outbox(OutboxRow),
    /// A human task was created or changed: its inbox row is written with the step.
    HumanTask(Box<HumanTaskRow>),
    /// An SLA clock started or changed: its dashboard row is written with the step.
    Sla(Box<SlaRow>),
    /// The instance ended (completed, failed, terminated): waiters are told after commit.
    Ended,
}

/// Why an instance cannot go on.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error("nondeterminism at seq {seq}: history has {recorded}, the orchestration gives {generated}")]
    Nondeterminism { seq: Seq, recorded: String, generated: String },
    #[error("corrupt history: {0}")]
    Corrupt(String),
    #[error("orchestration fault: {0}")]
    Fault(Fault),
    #[error(transparent)]
    Unexpected(#[from] Unexpected),
    #[error(
        "definition {key} changed: history was recorded with content hash {recorded}, the registered one has {registered}"
    )]
    DefinitionChanged { key: String, recorded: String, registered: String },
    #[error("definition {0} is not registered, and the instance's history needs it")]
    VersionMissing(String),
}

impl From<DecodeError> for StepError {
    fn from(err: DecodeError) -> Self {
        Self::Corrupt(err.to_string())
    }
}

/// A trigger with owned data, queued while a step runs (and kept in the state while the
/// instance is suspended).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum OwnedTrigger {
    Started(Value, Option<String>),
    ActivityCompleted(Seq, Value),
    ActivityFailed(Seq, Failure),
    TimerFired(Seq),
    EventReceived(Seq, String, Value),
    ChildCompleted(Seq, Value),
    ChildFailed(Seq, Failure),
    HumanTaskCompleted(Seq, Completion),
    HumanTaskUpdated(Seq, Box<HumanTask>),
    Suspended,
    Resumed,
}

impl OwnedTrigger {
    fn borrow(&self) -> Trigger<'_> {
        match self {
            Self::Started(input, by) => Trigger::Started { input, started_by: by.as_deref() },
            Self::ActivityCompleted(activity, result) => Trigger::ActivityCompleted { activity: *activity, result },
            Self::ActivityFailed(activity, failure) => Trigger::ActivityFailed { activity: *activity, failure },
            Self::TimerFired(timer) => Trigger::TimerFired { timer: *timer },
            Self::EventReceived(wait, name, payload) => Trigger::EventReceived { wait: *wait, name, payload },
            Self::ChildCompleted(child, output) => Trigger::ChildCompleted { child: *child, output },
            Self::ChildFailed(child, failure) => Trigger::ChildFailed { child: *child, failure },
            Self::HumanTaskCompleted(task, completion) => Trigger::HumanTaskCompleted { task: *task, completion },
            Self::HumanTaskUpdated(task, human) => Trigger::HumanTaskUpdated { task: *task, human },
            Self::Suspended => Trigger::Suspended,
            Self::Resumed => Trigger::Resumed,
        }
    }
}

/// An SLA clock as the instance keeps it, until it stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SlaClockState {
    started: SlaStarted,
    started_at_ms: i64,
    /// None while paused.
    target_at_ms: Option<i64>,
    at_risk_at_ms: Option<i64>,
    elapsed_ms: u64,
    running_since_ms: Option<i64>,
    escalations: u32,
    breached_at_ms: Option<i64>,
}

impl SlaClockState {
    fn row(&self, instance: &InstanceId, seq: Seq, definition: &str, stopped_at: Option<DateTime<Utc>>) -> SlaRow {
        SlaRow {
            instance: instance.clone(),
            seq,
            definition: definition.to_owned(),
            name: self.started.name.clone(),
            human_task: self.started.human_task,
            department: self.started.department.clone(),
            calendar: self.started.calendar.clone(),
            within_ms: self.started.within_ms,
            started_at: time_from_ms(self.started_at_ms),
            target_at: self.target_at_ms.map(time_from_ms),
            at_risk_at: self.at_risk_at_ms.map(time_from_ms),
            elapsed_ms: self.elapsed_ms,
            running_since: self.running_since_ms.map(time_from_ms),
            escalations: self.escalations,
            breached_at: self.breached_at_ms.map(time_from_ms),
            stopped_at,
        }
    }
}

/// The engine's part of an instance's state, serialized into snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Primitives {
    activities: BTreeMap<Seq, ActivityState>,
    timers: BTreeMap<Seq, TimerState>,
    waits: BTreeMap<Seq, WaitState>,
    children: BTreeMap<Seq, ChildState>,
    buffered: VecDeque<EventReceived>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    // Boxed: a map's node reserves room for eleven values, and these are large.
    human_tasks: BTreeMap<Seq, Box<HumanTask>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    slas: BTreeMap<Seq, Box<SlaClockState>>,
    /// Triggers that came while the instance was suspended, delivered when it resumes.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    deferred: VecDeque<OwnedTrigger>,
    /// The person who started the instance, if a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_by: Option<String>,
    /// Suspended by hand: kept apart from the status, which an incident may change meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    suspended: bool,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    definition_hash: String,
    /// Hash of the last event the snapshot includes: the events after it must chain to it.
    last_hash: String,
    primitives: Primitives,
    status: InstanceStatus,
    result: Option<Value>,
    user: Value,
}

/// An instance's live state.
#[derive(Clone)]
pub struct Instance {
    pub id: InstanceId,
    pub definition: DefinitionInfo,
    pub status: InstanceStatus,
    pub next_seq: Seq,
    pub last_hash: String,
    pub run_start: Seq,
    pub idempotency_key: Option<String>,
    pub parent: Option<ParentRef>,
    pub created_at: DateTime<Utc>,
    pub result: Option<Value>,
    /// The business key the instance was started with (from `InstanceStarted`, or the row
    /// once that event is behind a snapshot or an earlier run).
    pub business_key: Option<String>,
    /// The tags the instance was started with (likewise).
    pub tags: Vec<String>,
    primitives: Primitives,
    user: Box<dyn AnyState>,
    orchestration: Arc<dyn DynOrchestration>,
    /// The version the next `InstanceMigrated` moves the instance to ([`Instance::expect_migration`]).
    migration_target: Option<Arc<dyn DynOrchestration>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("definition", &self.definition.key())
            .field("status", &self.status)
            .field("next_seq", &self.next_seq)
            .field("primitives", &self.primitives)
            .field("user", &self.user)
            .finish()
    }
}

/// The output of one handled input.
#[derive(Debug, Default)]
pub struct Step {
    pub events: Vec<StoredEvent>,
    pub effects: Vec<Effect>,
}

impl Instance {
    /// A new, empty instance; its first input must be `InstanceStarted`.
    pub(crate) fn new(
        id: InstanceId,
        orchestration: Arc<dyn DynOrchestration>,
        idempotency_key: Option<String>,
        parent: Option<ParentRef>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            definition: orchestration.definition(),
            status: InstanceStatus::Running,
            next_seq: 0,
            last_hash: crate::history::GENESIS_HASH.to_owned(),
            run_start: 0,
            idempotency_key,
            parent,
            created_at,
            result: None,
            business_key: None,
            tags: Vec::new(),
            primitives: Primitives {
                activities: BTreeMap::new(),
                timers: BTreeMap::new(),
                waits: BTreeMap::new(),
                children: BTreeMap::new(),
                buffered: VecDeque::new(),
                human_tasks: BTreeMap::new(),
                slas: BTreeMap::new(),
                deferred: VecDeque::new(),
                started_by: None,
                suspended: false,
            },
            user: orchestration.new_state(),
            orchestration,
            migration_target: None,
        }
    }

    /// The `InstanceMigrated` event that moves this instance to `to` (another version of its
    /// definition) with `mapping`, or why it cannot move. Changes nothing: recording the event
    /// (after [`Instance::expect_migration`]) does.
    pub fn migration(
        &self,
        to: &Arc<dyn DynOrchestration>,
        mapping: &TaskMapping,
        reason: &str,
    ) -> Result<InstanceMigrated, String> {
        let target = to.definition();
        if self.has_ended() {
            return Err(format!("the instance has ended ({:?}): only running instances move", self.status));
        }
        if target.name != self.definition.name {
            return Err(format!("{} is another definition than {}", target.key(), self.definition.key()));
        }
        if target.content_hash == self.definition.content_hash {
            return Err(format!("the instance already runs {}", self.definition.key()));
        }
        let migrated = to.migrate_from(self.orchestration.as_ref(), self.user.as_ref(), mapping)?;
        let mut from = self.definition.clone();
        from.namespace = None;
        let mut to_info = target;
        to_info.namespace = None;
        Ok(InstanceMigrated {
            from,
            to: to_info,
            mapping: mapping.clone(),
            moved: migrated.moved,
            state: migrated.state,
            reason: reason.to_owned(),
        })
    }

    /// The orchestration the next `InstanceMigrated` event moves the instance to.
    pub fn expect_migration(&mut self, to: Arc<dyn DynOrchestration>) {
        self.migration_target = Some(to);
    }

    /// True if this live state equals `other` (orchestration state included).
    pub fn same_state(&self, other: &Instance) -> bool {
        self.id == other.id
            && self.status == other.status
            && self.next_seq == other.next_seq
            && self.last_hash == other.last_hash
            && self.run_start == other.run_start
            && self.result == other.result
            && self.primitives == other.primitives
            && self.user.eq_dyn(other.user.as_ref())
    }

    /// The orchestration's own state as JSON (for describe and tests).
    pub fn user_state(&self) -> Value {
        self.user.to_json()
    }

    pub fn pending_activities(&self) -> usize {
        self.primitives.activities.len()
    }

    pub fn has_timer(&self, timer: Seq) -> bool {
        self.primitives.timers.contains_key(&timer)
    }

    /// Suspended by hand (whatever an incident did to the status meanwhile).
    pub fn is_suspended(&self) -> bool {
        self.primitives.suspended
    }

    /// Completed, failed or terminated: no further input changes it.
    pub fn has_ended(&self) -> bool {
        self.result.is_some()
    }

    pub fn has_child(&self, child: Seq) -> bool {
        self.primitives.children.contains_key(&child)
    }

    pub fn has_activity(&self, activity: Seq) -> bool {
        self.primitives.activities.contains_key(&activity)
    }

    /// An open human task of this instance.
    pub fn human_task(&self, task: Seq) -> Option<&HumanTask> {
        self.primitives.human_tasks.get(&task).map(|t| &**t)
    }

    /// The open human tasks, by id.
    pub fn human_tasks(&self) -> impl Iterator<Item = (Seq, &HumanTask)> {
        self.primitives.human_tasks.iter().map(|(seq, task)| (*seq, &**task))
    }

    pub fn human_task_row(&self, seq: Seq, task: &HumanTask, now: DateTime<Utc>) -> HumanTaskRow {
        HumanTaskRow {
            instance: self.id.clone(),
            seq,
            definition: self.definition.name.clone(),
            task: task.clone(),
            updated_at: now,
        }
    }

    /// The SLA clocks still running or paused, as dashboard rows.
    pub fn sla_rows(&self) -> Vec<SlaRow> {
        let p = &self.primitives;
        p.slas.iter().map(|(seq, sla)| sla.row(&self.id, *seq, &self.definition.name, None)).collect()
    }

    /// The summary row for this state.
    pub fn row(&self, now: DateTime<Utc>) -> InstanceRow {
        InstanceRow {
            id: self.id.clone(),
            orchestration: self.definition.name.clone(),
            version: self.definition.version.clone(),
            status: self.status,
            next_seq: self.next_seq,
            last_hash: self.last_hash.clone(),
            run_start: self.run_start,
            idempotency_key: self.idempotency_key.clone(),
            parent: self.parent.clone(),
            created_at: self.created_at,
            updated_at: now,
            result: self.result.clone(),
            business_key: self.business_key.clone(),
            tags: self.tags.clone(),
            namespace: self.definition.namespace.clone(),
            initiator: self.primitives.started_by.clone(),
        }
    }

    pub fn snapshot(&self) -> SnapshotRow {
        let body = SnapshotBody {
            definition_hash: self.definition.content_hash.clone(),
            last_hash: self.last_hash.clone(),
            primitives: self.primitives.clone(),
            status: self.status,
            result: self.result.clone(),
            user: self.user.to_json(),
        };
        SnapshotRow {
            instance: self.id.clone(),
            seq: self.next_seq.saturating_sub(1),
            state: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    /// Handles one input event live: records it and everything the orchestration decides.
    pub fn handle(&mut self, kind: EventKind, at: DateTime<Utc>, actor: Actor) -> Result<Step, StepError> {
        let mut step = Step::default();
        let input = HistoryEvent { seq: self.next_seq, at: crate::history::history_time(at), actor, kind };
        let generated = self.run(input, &mut step.effects)?;
        for event in &generated {
            let stored = event.encode(&self.id, &self.last_hash);
            self.last_hash = stored.hash.clone();
            step.events.push(stored);
        }
        Ok(step)
    }

    /// Applies `input` and runs the orchestration to quiescence; returns the input and the
    /// command events, in order.
    fn run(&mut self, input: HistoryEvent, effects: &mut Vec<Effect>) -> Result<Vec<HistoryEvent>, StepError> {
        let at = input.at;
        let mut triggers = VecDeque::new();
        self.apply(&input, &mut triggers, effects)?;
        let mut events = vec![input];
        while let Some(trigger) = triggers.pop_front() {
            if self.status.is_final() || self.status == InstanceStatus::Faulted {
                break;
            }
            if self.primitives.suspended && trigger != OwnedTrigger::Suspended {
                self.primitives.deferred.push_back(trigger);
                continue;
            }
            let id = self.id.clone();
            let mut ctx = Ctx::new(&id, at, self.next_seq);
            // A panicking orchestration faults this instance only (an incident), never the engine.
            let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.orchestration.on_trigger(self.user.as_mut(), trigger.borrow(), &mut ctx)
            }))
            .unwrap_or_else(|panic| {
                Err(Fault::internal(format!("the orchestration panicked: {}", panic_message(&panic))))
            });
            decided.map_err(StepError::Fault)?;
            for command in ctx.into_commands() {
                let kind = match command_event(command) {
                    EventKind::ContinuedAsNew(mut next) => {
                        next.carried_events = self.primitives.buffered.iter().cloned().collect();
                        next.started_by = self.primitives.started_by.clone();
                        EventKind::ContinuedAsNew(next)
                    }
                    other => other,
                };
                let event = HistoryEvent { seq: self.next_seq, at, actor: Actor::System, kind };
                self.apply(&event, &mut triggers, effects)?;
                events.push(event);
            }
        }
        self.refresh_status();
        Ok(events)
    }

    fn refresh_status(&mut self) {
        if self.status.is_final() || self.status == InstanceStatus::Faulted {
            return;
        }
        if self.primitives.suspended {
            self.status = InstanceStatus::Suspended;
            return;
        }
        self.status = if self.primitives.activities.is_empty() && self.primitives.children.is_empty() {
            InstanceStatus::Waiting
        } else {
            InstanceStatus::Running
        };
    }

    fn apply(
        &mut self,
        event: &HistoryEvent,
        triggers: &mut VecDeque<OwnedTrigger>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), StepError> {
        if event.seq != self.next_seq {
            return Err(StepError::Corrupt(format!("expected seq {}, found {}", self.next_seq, event.seq)));
        }
        self.next_seq += 1;
        let seq = event.seq;
        let p = &mut self.primitives;
        match &event.kind {
            EventKind::InstanceStarted(started) => {
                if seq != 0 && seq != self.run_start {
                    return Err(StepError::Corrupt(format!("InstanceStarted at seq {seq}")));
                }
                self.check_definition(&started.definition.content_hash)?;
                self.business_key = started.business_key.clone();
                self.tags = started.tags.clone();
                self.status = InstanceStatus::Running;
                let started_by = match &event.actor {
                    Actor::User { id } => Some(id.clone()),
                    _ => None,
                };
                self.primitives.started_by = started_by.clone();
                triggers.push_back(OwnedTrigger::Started(started.input.clone(), started_by));
            }
            EventKind::ContinuedAsNew(next) => {
                for (activity, _) in std::mem::take(&mut p.activities) {
                    effects.push(Effect::FinishTask(activity));
                }
                for (timer, _) in std::mem::take(&mut p.timers) {
                    effects.push(Effect::DisarmTimer(timer));
                }
                p.waits.clear();
                p.children.clear();
                p.deferred.clear();
                p.buffered = next.carried_events.iter().cloned().collect();
                let started_by = next.started_by.clone().or_else(|| p.started_by.clone());
                p.started_by = started_by.clone();
                self.close_people_and_clocks(event.at, effects);
                self.user = self.orchestration.new_state();
                self.run_start = seq;
                triggers.clear();
                triggers.push_back(OwnedTrigger::Started(next.input.clone(), started_by));
            }
            EventKind::ActivityScheduled(scheduled) => {
                p.activities.insert(seq, ActivityState::Scheduled { name: scheduled.name.clone() });
                effects.push(Effect::Dispatch(TaskRow {
                    instance: self.id.clone(),
                    seq,
                    name: scheduled.name.clone(),
                    input: scheduled.input.clone(),
                    options: serde_json::to_value(&scheduled.options).unwrap_or(Value::Null),
                    attempt: 0,
                    visible_at: event.at,
                    parked: false,
                    last_error: None,
                }));
            }
            EventKind::ActivityCompleted(done) => {
                finish(&mut p.activities, done.activity, |s| {
                    ActivityState::on(s, done.activity, ActivityEvent::Completed)
                })?;
                effects.push(Effect::FinishTask(done.activity));
                triggers.push_back(OwnedTrigger::ActivityCompleted(done.activity, done.result.clone()));
            }
            EventKind::ActivityFailed(failed) => {
                finish(&mut p.activities, failed.activity, |s| {
                    ActivityState::on(s, failed.activity, ActivityEvent::Failed)
                })?;
                effects.push(Effect::FinishTask(failed.activity));
                triggers.push_back(OwnedTrigger::ActivityFailed(failed.activity, failed.failure.clone()));
            }
            EventKind::TimerStarted(timer) => {
                p.timers.insert(seq, TimerState::Pending { fire_at_ms: timer.fire_at.timestamp_millis() });
                effects.push(Effect::ArmTimer(TimerRow { instance: self.id.clone(), seq, due_at: timer.fire_at }));
            }
            EventKind::TimerFired(TimerRef { timer }) => {
                finish(&mut p.timers, *timer, |s| TimerState::on(s, *timer, TimerEvent::Fired))?;
                effects.push(Effect::DisarmTimer(*timer));
                triggers.push_back(OwnedTrigger::TimerFired(*timer));
            }
            EventKind::TimerCancelled(TimerRef { timer }) => {
                finish(&mut p.timers, *timer, |s| TimerState::on(s, *timer, TimerEvent::Cancelled))?;
                effects.push(Effect::DisarmTimer(*timer));
            }
            EventKind::EventWaitStarted(wait) => {
                let any = wait.name == ANY_EVENT;
                let now_ms = event.at.timestamp_millis();
                let fresh = |e: &EventReceived| match (wait.max_age_ms, e.received_at_ms) {
                    (Some(max_age), Some(received)) => {
                        now_ms.saturating_sub(received) <= i64::try_from(max_age).unwrap_or(i64::MAX)
                    }
                    _ => true,
                };
                if let Some(index) = p.buffered.iter().position(|e| (any || e.name == wait.name) && fresh(e)) {
                    let received = p.buffered.remove(index).unwrap_or_else(|| unreachable!("index from position"));
                    triggers.push_back(OwnedTrigger::EventReceived(seq, received.name, received.payload));
                } else {
                    p.waits.insert(seq, WaitState::Waiting { name: wait.name.clone() });
                }
            }
            EventKind::EventReceived(received) => {
                let waiting =
                    p.waits.iter().find(|(_, WaitState::Waiting { name })| *name == received.name || name == ANY_EVENT);
                if let Some((&wait, _)) = waiting {
                    finish(&mut p.waits, wait, |s| WaitState::on(s, wait, WaitEvent::Received))?;
                    triggers.push_back(OwnedTrigger::EventReceived(
                        wait,
                        received.name.clone(),
                        received.payload.clone(),
                    ));
                } else {
                    let mut kept = received.clone();
                    kept.received_at_ms = Some(event.at.timestamp_millis());
                    p.buffered.push_back(kept);
                }
            }
            EventKind::EventWaitCancelled(WaitRef { wait }) => {
                // A wait whose event already came (and was delivered) has nothing to cancel.
                if p.waits.contains_key(wait) {
                    finish(&mut p.waits, *wait, |s| WaitState::on(s, *wait, WaitEvent::Cancelled))?;
                }
            }
            EventKind::ChildStarted(child) => {
                p.children.insert(seq, ChildState::Running { instance: child.instance.0.clone() });
                effects.push(Effect::StartChild {
                    instance: child.instance.clone(),
                    definition: child.definition.clone(),
                    input: child.input.clone(),
                    parent: ParentRef { instance: self.id.clone(), seq },
                    started_by: p.started_by.clone(),
                });
            }
            EventKind::ChildCompleted(done) => {
                finish(&mut p.children, done.child, |s| ChildState::on(s, done.child, ChildEvent::Completed))?;
                triggers.push_back(OwnedTrigger::ChildCompleted(done.child, done.output.clone()));
            }
            EventKind::ChildFailed(failed) => {
                finish(&mut p.children, failed.child, |s| ChildState::on(s, failed.child, ChildEvent::Failed))?;
                triggers.push_back(OwnedTrigger::ChildFailed(failed.child, failed.failure.clone()));
            }
            EventKind::Emitted(emitted) => {
                effects.push(Effect::Outbox(OutboxRow {
                    instance: self.id.clone(),
                    seq,
                    kind: emitted.kind.clone(),
                    payload: emitted.payload.clone(),
                    created_at: event.at,
                }));
            }
            EventKind::InstanceCompleted(done) => {
                self.end(event.at, InstanceStatus::Completed, Ok(done.output.clone()), triggers, effects);
            }
            EventKind::InstanceFailed(failed) => {
                self.end(event.at, InstanceStatus::Faulted, Err(failed.failure.clone()), triggers, effects);
            }
            EventKind::InstanceTerminated(terminated) => {
                let failure = Failure::new("terminated", terminated.reason.clone());
                self.end(event.at, InstanceStatus::Cancelled, Err(failure), triggers, effects);
            }
            EventKind::HumanTaskCreated(HumanTaskCreated { spec }) => {
                let task = HumanTask::new(spec.as_ref().clone(), event.at);
                effects.push(Effect::HumanTask(Box::new(self.human_task_row(seq, &task, event.at))));
                self.primitives.human_tasks.insert(seq, Box::new(task));
            }
            EventKind::HumanTaskClaimed(HumanTaskRef { task }) => {
                let me = person(&event.actor, *task, "HumanTaskClaimed")?;
                self.change_task(*task, event, effects, Some(triggers), |t| t.assignee = Some(me))?;
            }
            EventKind::HumanTaskUnclaimed(HumanTaskRef { task }) => {
                self.change_task(*task, event, effects, Some(triggers), |t| {
                    t.assignee = None;
                    t.delegate = None;
                })?;
            }
            EventKind::HumanTaskDelegated(delegated) => {
                let to = delegated.to.clone();
                self.change_task(delegated.task, event, effects, Some(triggers), |t| t.delegate = Some(to))?;
            }
            EventKind::HumanTaskReassigned(HumanTaskReassigned { task, to, by_workflow }) => {
                let to = to.clone();
                let tell = !*by_workflow;
                self.change_task(*task, event, effects, if tell { Some(triggers) } else { None }, |t| reassign(t, to))?;
            }
            EventKind::HumanTaskCommented(commented) => {
                let by = person(&event.actor, commented.task, "HumanTaskCommented")?;
                let comment = Comment { by, at: event.at, text: commented.text.clone(), erased: false };
                self.change_task(commented.task, event, effects, Some(triggers), |t| t.comments.push(comment))?;
            }
            EventKind::HumanTaskCompleted(done) => {
                let completed_by = person(&event.actor, done.task, "HumanTaskCompleted")?;
                let completion = Completion {
                    outcome: done.outcome.clone(),
                    data: done.data.clone(),
                    completed_by,
                    completed_at: event.at,
                    on_behalf_of: done.on_behalf_of.clone(),
                    erased: false,
                };
                let finished = completion.clone();
                self.finish_task(done.task, event, HumanTaskStatus::Completed, effects, |t| {
                    t.completion = Some(finished)
                })?;
                triggers.push_back(OwnedTrigger::HumanTaskCompleted(done.task, completion));
            }
            EventKind::HumanTaskCancelled(HumanTaskCancelled { task, .. }) => {
                self.finish_task(*task, event, HumanTaskStatus::Cancelled, effects, |_| {})?;
            }
            EventKind::HumanTaskExpired(HumanTaskRef { task }) => {
                self.finish_task(*task, event, HumanTaskStatus::Expired, effects, |_| {})?;
            }
            EventKind::SlaStarted(started) => {
                let at = event.at.timestamp_millis();
                let clock = SlaClockState {
                    started: started.clone(),
                    started_at_ms: at,
                    target_at_ms: Some(started.target_at.timestamp_millis()),
                    at_risk_at_ms: Some(started.at_risk_at.timestamp_millis()),
                    elapsed_ms: 0,
                    running_since_ms: Some(at),
                    escalations: 0,
                    breached_at_ms: None,
                };
                effects.push(Effect::Sla(Box::new(clock.row(&self.id, seq, &self.definition.name, None))));
                self.primitives.slas.insert(seq, Box::new(clock));
            }
            EventKind::SlaPaused(SlaElapsed { sla, elapsed_ms }) => {
                self.change_sla(*sla, "SlaPaused", effects, |c| {
                    c.elapsed_ms = *elapsed_ms;
                    c.running_since_ms = None;
                    c.target_at_ms = None;
                    c.at_risk_at_ms = None;
                })?;
            }
            EventKind::SlaResumed(SlaResumed { sla, target_at, at_risk_at }) => {
                let at = event.at.timestamp_millis();
                self.change_sla(*sla, "SlaResumed", effects, |c| {
                    c.running_since_ms = Some(at);
                    c.target_at_ms = Some(target_at.timestamp_millis());
                    c.at_risk_at_ms = Some(at_risk_at.timestamp_millis());
                })?;
            }
            EventKind::SlaEscalated(SlaEscalated { sla, .. }) => {
                self.change_sla(*sla, "SlaEscalated", effects, |c| c.escalations = c.escalations.saturating_add(1))?;
            }
            EventKind::SlaBreached(SlaElapsed { sla, elapsed_ms }) => {
                let at = event.at.timestamp_millis();
                self.change_sla(*sla, "SlaBreached", effects, |c| c.breached_at_ms = Some(at))?;
                let clock = &self.primitives.slas[sla];
                let payload = serde_json::json!({
                    "instance": self.id,
                    "definition": self.definition.key(),
                    "sla": sla,
                    "name": clock.started.name,
                    "humanTask": clock.started.human_task,
                    "department": clock.started.department,
                    "within": clock.started.within_ms,
                    "elapsed": elapsed_ms,
                    "target": clock.target_at_ms.map(time_from_ms),
                });
                effects.push(Effect::Outbox(OutboxRow {
                    instance: self.id.clone(),
                    seq,
                    kind: SLA_BREACHED.into(),
                    payload,
                    created_at: event.at,
                }));
            }
            EventKind::SlaStopped(SlaElapsed { sla, elapsed_ms }) => {
                let stopped = self.primitives.slas.remove(sla).ok_or(Unexpected {
                    primitive: "sla",
                    id: *sla,
                    event: "SlaStopped",
                    state: "absent",
                })?;
                let mut last = *stopped;
                last.elapsed_ms = *elapsed_ms;
                last.running_since_ms = None;
                effects.push(Effect::Sla(Box::new(last.row(&self.id, *sla, &self.definition.name, Some(event.at)))));
            }
            EventKind::InstanceSuspended(_) => {
                if p.suspended {
                    return Err(StepError::Corrupt("InstanceSuspended while suspended".into()));
                }
                p.suspended = true;
                if self.status != InstanceStatus::Faulted {
                    self.status = InstanceStatus::Suspended;
                }
                triggers.push_back(OwnedTrigger::Suspended);
            }
            EventKind::InstanceResumed(_) => {
                if !p.suspended {
                    return Err(StepError::Corrupt("InstanceResumed while not suspended".into()));
                }
                p.suspended = false;
                if self.status == InstanceStatus::Suspended {
                    self.status = InstanceStatus::Running;
                }
                triggers.push_back(OwnedTrigger::Resumed);
                triggers.extend(std::mem::take(&mut p.deferred));
            }
            // An instance that has ended stays as it ended.
            EventKind::IncidentRaised(_) if self.has_ended() => {}
            EventKind::IncidentRaised(_) => self.status = InstanceStatus::Faulted,
            EventKind::IncidentResolved(_) => {
                self.status = InstanceStatus::Running;
                self.refresh_status();
            }
            EventKind::InstanceMigrated(migrated) => self.migrate_to(seq, migrated)?,
        }
        Ok(())
    }

    /// Applies `InstanceMigrated`: the orchestration and its state become the new version's.
    fn migrate_to(&mut self, seq: Seq, migrated: &InstanceMigrated) -> Result<(), StepError> {
        if migrated.from.content_hash != self.definition.content_hash {
            return Err(StepError::Corrupt(format!(
                "InstanceMigrated at seq {seq} moves from {}, but the instance runs {}",
                migrated.from.key(),
                self.definition.key()
            )));
        }
        let target = self.migration_target.take().ok_or_else(|| StepError::VersionMissing(migrated.to.key()))?;
        let registered = target.definition();
        if registered.content_hash != migrated.to.content_hash {
            return Err(StepError::DefinitionChanged {
                key: migrated.to.key(),
                recorded: migrated.to.content_hash.clone(),
                registered: registered.content_hash,
            });
        }
        self.user = target
            .state_from_json(migrated.state.clone())
            .map_err(|err| StepError::Corrupt(format!("the state InstanceMigrated at seq {seq} records: {err}")))?;
        let namespace = self.definition.namespace.take();
        self.definition = registered;
        self.definition.namespace = self.definition.namespace.take().or(namespace);
        self.orchestration = target;
        Ok(())
    }

    fn end(
        &mut self,
        at: DateTime<Utc>,
        status: InstanceStatus,
        outcome: Result<Value, Failure>,
        triggers: &mut VecDeque<OwnedTrigger>,
        effects: &mut Vec<Effect>,
    ) {
        let p = &mut self.primitives;
        for (activity, _) in std::mem::take(&mut p.activities) {
            effects.push(Effect::FinishTask(activity));
        }
        for (timer, _) in std::mem::take(&mut p.timers) {
            effects.push(Effect::DisarmTimer(timer));
        }
        p.waits.clear();
        p.children.clear();
        p.deferred.clear();
        triggers.clear();
        self.close_people_and_clocks(at, effects);
        self.status = status;
        self.result = Some(match &outcome {
            Ok(output) => output.clone(),
            Err(failure) => serde_json::to_value(failure).unwrap_or(Value::Null),
        });
        if let Some(parent) = &self.parent {
            effects.push(Effect::NotifyParent { parent: parent.clone(), outcome });
        }
        effects.push(Effect::Ended);
    }

    /// A run ended: its open human tasks leave every inbox (cancelled) and its SLA clocks
    /// stop where they are. History has the end itself; these are the read models' rows.
    fn close_people_and_clocks(&mut self, at: DateTime<Utc>, effects: &mut Vec<Effect>) {
        for (seq, mut task) in std::mem::take(&mut self.primitives.human_tasks) {
            task.status = HumanTaskStatus::Cancelled;
            effects.push(Effect::HumanTask(Box::new(self.human_task_row(seq, &task, at))));
        }
        for (seq, mut clock) in std::mem::take(&mut self.primitives.slas) {
            clock.running_since_ms = None;
            effects.push(Effect::Sla(Box::new(clock.row(&self.id, seq, &self.definition.name, Some(at)))));
        }
    }

    /// Applies a person's change to an open task, writes its row, and tells the orchestration
    /// when `triggers` is given.
    fn change_task(
        &mut self,
        seq: Seq,
        event: &HistoryEvent,
        effects: &mut Vec<Effect>,
        triggers: Option<&mut VecDeque<OwnedTrigger>>,
        change: impl FnOnce(&mut HumanTask),
    ) -> Result<(), StepError> {
        let task = open_task(&mut self.primitives.human_tasks, seq, event.kind.name())?;
        change(task);
        let task = task.clone();
        effects.push(Effect::HumanTask(Box::new(self.human_task_row(seq, &task, event.at))));
        if let Some(triggers) = triggers {
            triggers.push_back(OwnedTrigger::HumanTaskUpdated(seq, Box::new(task)));
        }
        Ok(())
    }

    /// Ends an open task with `status`: it leaves the instance state, its row stays.
    fn finish_task(
        &mut self,
        seq: Seq,
        event: &HistoryEvent,
        status: HumanTaskStatus,
        effects: &mut Vec<Effect>,
        change: impl FnOnce(&mut HumanTask),
    ) -> Result<(), StepError> {
        open_task(&mut self.primitives.human_tasks, seq, event.kind.name())?;
        let Some(mut task) = self.primitives.human_tasks.remove(&seq) else { unreachable!("checked just above") };
        task.status = status;
        change(&mut task);
        effects.push(Effect::HumanTask(Box::new(self.human_task_row(seq, &task, event.at))));
        Ok(())
    }

    fn change_sla(
        &mut self,
        seq: Seq,
        name: &'static str,
        effects: &mut Vec<Effect>,
        change: impl FnOnce(&mut SlaClockState),
    ) -> Result<(), StepError> {
        let clock = self.primitives.slas.get_mut(&seq).ok_or(Unexpected {
            primitive: "sla",
            id: seq,
            event: name,
            state: "absent",
        })?;
        change(clock);
        effects.push(Effect::Sla(Box::new(clock.row(&self.id, seq, &self.definition.name, None))));
        Ok(())
    }

    /// Rebuilds an instance from its snapshot (if any) and the history after it, checking the
    /// hash chain and that the orchestration still makes the recorded decisions.
    /// An instance that never moved between versions has one: `orchestration`.
    #[cfg(test)]
    pub(crate) fn replay(
        orchestration: Arc<dyn DynOrchestration>,
        row: &InstanceRow,
        snapshot: Option<&SnapshotRow>,
        events: &[StoredEvent],
    ) -> Result<Instance, StepError> {
        let key = orchestration.definition().key();
        Self::replay_collecting(&|wanted| (wanted == key).then(|| orchestration.clone()), row, snapshot, events, None)
    }

    /// [`Instance::replay`] for an instance that may have moved between versions: `versions`
    /// gives the orchestration registered as a key (`name@version`). The replay starts with the
    /// version the first `InstanceMigrated` of `events` moved from, or else the row's, and
    /// changes version at each `InstanceMigrated`. Every effect the replayed events lead to
    /// goes to `sink`, in order: the read models' rows, as the runtime wrote them.
    pub(crate) fn replay_collecting(
        versions: &dyn Fn(&str) -> Option<Arc<dyn DynOrchestration>>,
        row: &InstanceRow,
        snapshot: Option<&SnapshotRow>,
        events: &[StoredEvent],
        mut sink: Option<&mut Vec<Effect>>,
    ) -> Result<Instance, StepError> {
        let first_migration = events.iter().find_map(StoredEvent::migration).transpose()?;
        let key = match first_migration {
            Some(migrated) => migrated.from.key(),
            None => format!("{}@{}", row.orchestration, row.version),
        };
        let orchestration = versions(&key).ok_or(StepError::VersionMissing(key))?;
        let mut instance = Instance::new(
            row.id.clone(),
            orchestration.clone(),
            row.idempotency_key.clone(),
            row.parent.clone(),
            row.created_at,
        );
        // What the instance was started with, in case its InstanceStarted is not replayed.
        instance.business_key = row.business_key.clone();
        instance.tags = row.tags.clone();
        if row.namespace.is_some() {
            instance.definition.namespace = row.namespace.clone();
        }
        // The hash the first loaded event must chain to: the snapshot's head, the genesis hash
        // for a history loaded from its start, or (the first event of a later run) its own claim,
        // which the check against the row's chain head below covers.
        let start_hash = if let Some(snapshot) = snapshot {
            let body: SnapshotBody = serde_json::from_value(snapshot.state.clone())
                .map_err(|err| StepError::Corrupt(format!("snapshot at seq {}: {err}", snapshot.seq)))?;
            instance.check_definition(&body.definition_hash)?;
            instance.primitives = body.primitives;
            instance.status = body.status;
            instance.result = body.result;
            instance.user = orchestration
                .state_from_json(body.user)
                .map_err(|err| StepError::Corrupt(format!("snapshot state at seq {}: {err}", snapshot.seq)))?;
            instance.next_seq = snapshot.seq + 1;
            instance.run_start = row.run_start;
            body.last_hash
        } else {
            let first = events.first().ok_or_else(|| StepError::Corrupt("the instance has no history".into()))?;
            instance.next_seq = first.seq;
            instance.run_start = first.seq;
            if first.seq == 0 { crate::history::GENESIS_HASH.to_owned() } else { first.prev_hash.clone() }
        };

        let mut decoded = Vec::with_capacity(events.len());
        let mut head = start_hash.clone();
        for stored in events {
            decoded.push(stored.decode(Some(&head))?);
            head = stored.hash.clone();
        }
        if head != row.last_hash {
            return Err(StepError::Corrupt(format!(
                "hash chain broken: the history ends with {head}, the instance row says {}",
                row.last_hash
            )));
        }
        instance.last_hash = start_hash;

        let mut index = 0;
        let mut effects = Vec::new();
        while index < decoded.len() {
            let event = &decoded[index];
            let run_start = index == 0 && snapshot.is_none() && matches!(event.kind, EventKind::ContinuedAsNew(_));
            if event.kind.is_command() && !run_start {
                return Err(StepError::Nondeterminism {
                    seq: event.seq,
                    recorded: describe(&event.kind),
                    generated: "no command".into(),
                });
            }
            effects.clear();
            if let EventKind::InstanceMigrated(migrated) = &event.kind {
                let key = migrated.to.key();
                instance.migration_target = Some(versions(&key).ok_or(StepError::VersionMissing(key))?);
            }
            let generated = instance.run(event.clone(), &mut effects).map_err(|err| match err {
                StepError::Unexpected(unexpected) => StepError::Nondeterminism {
                    seq: event.seq,
                    recorded: event.kind.name().into(),
                    generated: unexpected.to_string(),
                },
                other => other,
            })?;
            for (offset, generated_event) in generated.iter().enumerate().skip(1) {
                let recorded = decoded.get(index + offset);
                if recorded.map(|r| &r.kind) != Some(&generated_event.kind) {
                    return Err(StepError::Nondeterminism {
                        seq: generated_event.seq,
                        recorded: recorded.map(|r| describe(&r.kind)).unwrap_or_else(|| "nothing".into()),
                        generated: describe(&generated_event.kind),
                    });
                }
            }
            index += generated.len();
            instance.last_hash = events[index - 1].hash.clone();
            if let Some(sink) = sink.as_deref_mut() {
                sink.append(&mut effects);
            }
        }
        if instance.next_seq != row.next_seq {
            return Err(StepError::Corrupt(format!(
                "history ends at seq {} but the instance row says {}",
                instance.next_seq, row.next_seq
            )));
        }
        // Faulted by an open incident stays faulted; the row is the authority on that.
        if row.status == InstanceStatus::Faulted && !instance.status.is_final() {
            instance.status = InstanceStatus::Faulted;
        }
        Ok(instance)
    }

    fn check_definition(&self, recorded_hash: &str) -> Result<(), StepError> {
        if recorded_hash == self.definition.content_hash {
            return Ok(());
        }
        Err(StepError::DefinitionChanged {
            key: self.definition.key(),
            recorded: recorded_hash.to_owned(),
            registered: self.definition.content_hash.clone(),
        })
    }

    /// Leaves the faulted state after an incident raised outside history was retried.
    pub(crate) fn clear_fault(&mut self) {
        if self.status == InstanceStatus::Faulted && self.result.is_none() {
            self.status = InstanceStatus::Running;
            self.refresh_status();
        }
    }

    /// The time a pending timer fires, if it is pending.
    pub fn timer_due(&self, timer: Seq) -> Option<DateTime<Utc>> {
        self.primitives.timers.get(&timer).map(|TimerState::Pending { fire_at_ms }| time_from_ms(*fire_at_ms))
    }

    /// Events buffered for a wait that has not started yet.
    pub fn buffered_events(&self) -> Vec<EventReceived> {
        self.primitives.buffered.iter().cloned().collect()
    }
}

fn open_task<'a>(
    tasks: &'a mut BTreeMap<Seq, Box<HumanTask>>,
    seq: Seq,
    event: &'static str,
) -> Result<&'a mut HumanTask, Unexpected> {
    tasks.get_mut(&seq).map(|t| &mut **t).ok_or(Unexpected { primitive: "human task", id: seq, event, state: "absent" })
}

/// The person behind an event on a task; a person's action recorded without one is corrupt.
fn person(actor: &Actor, task: Seq, event: &'static str) -> Result<String, Unexpected> {
    match actor {
        Actor::User { id } => Ok(id.clone()),
        _ => Err(Unexpected { primitive: "human task", id: task, event, state: "acted on by no person" }),
    }
}

/// A reassignment to exactly one user makes them the owner; anything else offers the task to
/// new candidates. Either way a delegation ends.
fn reassign(task: &mut HumanTask, to: Assignment) {
    task.delegate = None;
    if let Some(user) = to.single_user() {
        task.assignee = Some(user.to_owned());
    } else {
        task.assignee = None;
        task.candidates = to;
    }
}

fn finish<S: Clone>(
    map: &mut BTreeMap<Seq, S>,
    id: Seq,
    transition: impl FnOnce(Option<&S>) -> Result<Next<S>, Unexpected>,
) -> Result<(), Unexpected> {
    match transition(map.get(&id))? {
        Next::Stay(state) => {
            map.insert(id, state);
        }
        Next::Done => {
            map.remove(&id);
        }
    }
    Ok(())
}

/// The message of a caught panic, when it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

fn describe(kind: &EventKind) -> String {
    format!("{} {}", kind.name(), kind.encode_payload())
}

fn command_event(command: Command) -> EventKind {
    match command {
        Command::ScheduleActivity { name, input, options } => {
            EventKind::ActivityScheduled(ActivityScheduled { name, input, options })
        }
        Command::StartTimer { fire_at } => EventKind::TimerStarted(TimerStarted { fire_at }),
        Command::CancelTimer { timer } => EventKind::TimerCancelled(TimerRef { timer }),
        Command::WaitEvent { name, max_age_ms } => EventKind::EventWaitStarted(EventWaitStarted { name, max_age_ms }),
        Command::CancelWait { wait } => EventKind::EventWaitCancelled(WaitRef { wait }),
        Command::StartChild { definition, instance, input } => {
            EventKind::ChildStarted(ChildStarted { instance, definition, input })
        }
        Command::Emit { kind, payload } => EventKind::Emitted(Emitted { kind, payload }),
        Command::Complete { output } => EventKind::InstanceCompleted(InstanceCompleted { output }),
        Command::Fail { failure } => EventKind::InstanceFailed(InstanceFailed { failure }),
        Command::ContinueAsNew { input } => {
            EventKind::ContinuedAsNew(ContinuedAsNew { input, carried_events: Vec::new(), started_by: None })
        }
        Command::CreateHumanTask { spec } => EventKind::HumanTaskCreated(HumanTaskCreated { spec }),
        Command::CancelHumanTask { task, reason } => EventKind::HumanTaskCancelled(HumanTaskCancelled { task, reason }),
        Command::ExpireHumanTask { task } => EventKind::HumanTaskExpired(HumanTaskRef { task }),
        Command::ReassignHumanTask { task, to } => {
            EventKind::HumanTaskReassigned(HumanTaskReassigned { task, to, by_workflow: true })
        }
        Command::StartSla { sla } => EventKind::SlaStarted(sla),
        Command::PauseSla { sla, elapsed_ms } => EventKind::SlaPaused(SlaElapsed { sla, elapsed_ms }),
        Command::ResumeSla { sla, target_at, at_risk_at } => {
            EventKind::SlaResumed(SlaResumed { sla, target_at, at_risk_at })
        }
        Command::EscalateSla { sla, rung } => EventKind::SlaEscalated(SlaEscalated { sla, rung }),
        Command::BreachSla { sla, elapsed_ms } => EventKind::SlaBreached(SlaElapsed { sla, elapsed_ms }),
        Command::StopSla { sla, elapsed_ms } => EventKind::SlaStopped(SlaElapsed { sla, elapsed_ms }),
    }
}
