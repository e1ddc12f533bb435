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
    EventReceived, EventWaitStarted, HistoryEvent, InstanceCompleted, InstanceFailed, InstanceId, Seq, StoredEvent,
    TimerRef, TimerStarted, WaitRef, time_from_ms,
};
use crate::machines::{
    ActivityEvent, ActivityState, ChildEvent, ChildState, Next, TimerEvent, TimerState, Unexpected, WaitEvent,
    WaitState,
};
use crate::orchestration::{ANY_EVENT, AnyState, Command, Ctx, DynOrchestration, Fault, Trigger};
use crate::store::{InstanceRow, InstanceStatus, OutboxRow, ParentRef, SnapshotRow, TaskRow, TimerRow};

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
    /// A child instance starts in the same commit.
    StartChild {
        instance: InstanceId,
        definition: String,
        input: Value,
        parent: ParentRef,
    },
    /// The parent learns the outcome in the same commit.
    NotifyParent {
        parent: ParentRef,
        outcome: Result<Value, Failure>,
    },
    Outbox(OutboxRow),
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
}

impl From<DecodeError> for StepError {
    fn from(err: DecodeError) -> Self {
        Self::Corrupt(err.to_string())
    }
}

/// A trigger with owned data, queued while a step runs.
#[derive(Clone, Debug)]
enum OwnedTrigger {
    Started(Value),
    ActivityCompleted(Seq, Value),
    ActivityFailed(Seq, Failure),
    TimerFired(Seq),
    EventReceived(Seq, String, Value),
    ChildCompleted(Seq, Value),
    ChildFailed(Seq, Failure),
}

impl OwnedTrigger {
    fn borrow(&self) -> Trigger<'_> {
        match self {
            Self::Started(input) => Trigger::Started { input },
            Self::ActivityCompleted(activity, result) => Trigger::ActivityCompleted { activity: *activity, result },
            Self::ActivityFailed(activity, failure) => Trigger::ActivityFailed { activity: *activity, failure },
            Self::TimerFired(timer) => Trigger::TimerFired { timer: *timer },
            Self::EventReceived(wait, name, payload) => Trigger::EventReceived { wait: *wait, name, payload },
            Self::ChildCompleted(child, output) => Trigger::ChildCompleted { child: *child, output },
            Self::ChildFailed(child, failure) => Trigger::ChildFailed { child: *child, failure },
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
    primitives: Primitives,
    user: Box<dyn AnyState>,
    orchestration: Arc<dyn DynOrchestration>,
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
            primitives: Primitives {
                activities: BTreeMap::new(),
                timers: BTreeMap::new(),
                waits: BTreeMap::new(),
                children: BTreeMap::new(),
                buffered: VecDeque::new(),
            },
            user: orchestration.new_state(),
            orchestration,
        }
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
                self.status = InstanceStatus::Running;
                triggers.push_back(OwnedTrigger::Started(started.input.clone()));
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
                p.buffered = next.carried_events.iter().cloned().collect();
                self.user = self.orchestration.new_state();
                self.run_start = seq;
                triggers.clear();
                triggers.push_back(OwnedTrigger::Started(next.input.clone()));
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
                self.end(InstanceStatus::Completed, Ok(done.output.clone()), triggers, effects);
            }
            EventKind::InstanceFailed(failed) => {
                self.end(InstanceStatus::Faulted, Err(failed.failure.clone()), triggers, effects);
            }
            EventKind::InstanceTerminated(terminated) => {
                let failure = Failure::new("terminated", terminated.reason.clone());
                self.end(InstanceStatus::Cancelled, Err(failure), triggers, effects);
            }
            // An instance that has ended stays as it ended.
            EventKind::IncidentRaised(_) if self.has_ended() => {}
            EventKind::IncidentRaised(_) => self.status = InstanceStatus::Faulted,
            EventKind::IncidentResolved(_) => {
                self.status = InstanceStatus::Running;
                self.refresh_status();
            }
        }
        Ok(())
    }

    fn end(
        &mut self,
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
        triggers.clear();
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

    /// Rebuilds an instance from its snapshot (if any) and the history after it, checking the
    /// hash chain and that the orchestration still makes the recorded decisions.
    pub(crate) fn replay(
        orchestration: Arc<dyn DynOrchestration>,
        row: &InstanceRow,
        snapshot: Option<&SnapshotRow>,
        events: &[StoredEvent],
    ) -> Result<Instance, StepError> {
        let mut instance = Instance::new(
            row.id.clone(),
            orchestration.clone(),
            row.idempotency_key.clone(),
            row.parent.clone(),
            row.created_at,
        );
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
            EventKind::ContinuedAsNew(ContinuedAsNew { input, carried_events: Vec::new() })
        }
    }
}
