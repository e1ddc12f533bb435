//! The orchestration trait any workflow language implements.
//!
//! An orchestration is a deterministic function: given its state and a [`Trigger`] (the
//! instance started, an activity finished, a timer fired, an awaited event arrived...), it
//! changes its state and issues [`Command`]s through a [`Ctx`]. It reads no clock (`ctx.now()`
//! is the time recorded in history), draws no random numbers and does no I/O. The engine records
//! each command as a history event; on replay it runs the orchestration again over the recorded
//! triggers and checks that the same commands come out, or reports
//! [`crate::Nondeterminism`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::activity::{ActivityOptions, Failure};
use crate::history::{DefinitionInfo, InstanceId, Seq, SlaStarted};
use crate::human::{Assignment, Completion, HumanTask, HumanTaskSpec};

/// The wait name that takes an event of any name.
pub const ANY_EVENT: &str = "*";

/// What the orchestration is told about.
#[derive(Clone, Debug, PartialEq)]
pub enum Trigger<'a> {
    /// The instance (or a new run after continue-as-new) starts with this input.
    Started {
        input: &'a Value,
        /// The person who started the instance, when a person did (the request's initiator).
        started_by: Option<&'a str>,
    },
    ActivityCompleted {
        activity: Seq,
        result: &'a Value,
    },
    /// The activity failed for good (retries exhausted or a non-retryable error). Returning
    /// [`Fault::unhandled`] opens an incident instead and parks the activity.
    ActivityFailed {
        activity: Seq,
        failure: &'a Failure,
    },
    TimerFired {
        timer: Seq,
    },
    /// An event the orchestration waited for (by `ctx.wait_event`) arrived.
    EventReceived {
        wait: Seq,
        name: &'a str,
        payload: &'a Value,
    },
    ChildCompleted {
        child: Seq,
        output: &'a Value,
    },
    ChildFailed {
        child: Seq,
        failure: &'a Failure,
    },
    /// A person completed a human task; it is finished.
    HumanTaskCompleted {
        task: Seq,
        completion: &'a Completion,
    },
    /// A person changed a human task (claimed, gave back, delegated, reassigned, commented);
    /// it is still open.
    HumanTaskUpdated {
        task: Seq,
        human: &'a HumanTask,
    },
    /// The instance was suspended: nothing reaches the orchestration until it is resumed
    /// (inputs that arrive meanwhile are recorded and delivered after [`Trigger::Resumed`]).
    Suspended,
    Resumed,
}

/// A decision of the orchestration. Each becomes exactly one history event.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ScheduleActivity { name: String, input: Value, options: ActivityOptions },
    StartTimer { fire_at: DateTime<Utc> },
    CancelTimer { timer: Seq },
    WaitEvent { name: String, max_age_ms: Option<u64> },
    CancelWait { wait: Seq },
    StartChild { definition: String, instance: InstanceId, input: Value },
    Emit { kind: String, payload: Value },
    Complete { output: Value },
    Fail { failure: Failure },
    ContinueAsNew { input: Value },
    CreateHumanTask { spec: Box<HumanTaskSpec> },
    CancelHumanTask { task: Seq, reason: String },
    ExpireHumanTask { task: Seq },
    ReassignHumanTask { task: Seq, to: Assignment },
    StartSla { sla: SlaStarted },
    PauseSla { sla: Seq, elapsed_ms: u64 },
    ResumeSla { sla: Seq, target_at: DateTime<Utc>, at_risk_at: DateTime<Utc> },
    EscalateSla { sla: Seq, rung: u32 },
    BreachSla { sla: Seq, elapsed_ms: u64 },
    StopSla { sla: Seq, elapsed_ms: u64 },
}

impl Command {
    fn is_terminal(&self) -> bool {
        matches!(self, Self::Complete { .. } | Self::Fail { .. } | Self::ContinueAsNew { .. })
    }
}

/// Why an orchestration could not take a trigger.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An activity or child failure the orchestration does not handle.
    Unhandled,
    /// The orchestration hit a bug or an impossible state.
    Internal,
}

impl Fault {
    pub fn unhandled(message: impl Into<String>) -> Self {
        Self { kind: FaultKind::Unhandled, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self { kind: FaultKind::Internal, message: message.into() }
    }
}

/// The orchestration's window on the engine during one trigger: time from history, and the
/// commands it issues. The ids the `schedule`/`start`/`wait` calls return are the sequence
/// numbers the commands' events will get, so completions refer back to them.
#[derive(Debug)]
pub struct Ctx<'a> {
    instance: &'a InstanceId,
    now: DateTime<Utc>,
    next_seq: Seq,
    commands: Vec<Command>,
    ended: bool,
}

impl<'a> Ctx<'a> {
    /// A context for driving an orchestration outside the engine (tests, benchmarks,
    /// simulators): `next_seq` is the sequence number the first command gets.
    pub fn new(instance: &'a InstanceId, now: DateTime<Utc>, next_seq: Seq) -> Self {
        Self { instance, now, next_seq, commands: Vec::new(), ended: false }
    }

    /// The commands issued so far, in order.
    pub fn into_commands(self) -> Vec<Command> {
        self.commands
    }

    /// The time of the trigger, as recorded in history.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn instance_id(&self) -> &InstanceId {
        self.instance
    }

    fn push(&mut self, command: Command) -> Seq {
        debug_assert!(!self.ended, "command after the instance ended: {command:?}");
        self.ended |= command.is_terminal();
        let seq = self.next_seq + self.commands.len() as Seq;
        self.commands.push(command);
        seq
    }

    /// Schedules an activity with the default options; returns its id.
    pub fn schedule_activity(&mut self, name: impl Into<String>, input: Value) -> Seq {
        self.schedule_activity_with(name, input, ActivityOptions::default())
    }

    pub fn schedule_activity_with(&mut self, name: impl Into<String>, input: Value, options: ActivityOptions) -> Seq {
        self.push(Command::ScheduleActivity { name: name.into(), input, options })
    }

    /// Starts a durable timer firing at `fire_at`; returns its id.
    pub fn start_timer(&mut self, fire_at: DateTime<Utc>) -> Seq {
        self.push(Command::StartTimer { fire_at: crate::history::history_time(fire_at) })
    }

    /// Starts a durable timer firing `after` from now.
    pub fn sleep(&mut self, after: std::time::Duration) -> Seq {
        let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        self.start_timer(self.now.checked_add_signed(after).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    pub fn cancel_timer(&mut self, timer: Seq) {
        self.push(Command::CancelTimer { timer });
    }

    /// Waits for the next event named `name` (one that already arrived counts); returns the
    /// wait's id, which [`Trigger::EventReceived`] carries. The name [`ANY_EVENT`] takes an
    /// event of any name.
    pub fn wait_event(&mut self, name: impl Into<String>) -> Seq {
        self.push(Command::WaitEvent { name: name.into(), max_age_ms: None })
    }

    /// Like [`Ctx::wait_event`], but an event that arrived before the wait counts only if it
    /// arrived at most `max_age` before it: events kept for a limited time.
    pub fn wait_event_within(&mut self, name: impl Into<String>, max_age: std::time::Duration) -> Seq {
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        self.push(Command::WaitEvent { name: name.into(), max_age_ms: Some(max_age_ms) })
    }

    /// Stops waiting: the wait takes no event any more (events that arrive stay buffered for
    /// the next wait of their name).
    pub fn cancel_wait(&mut self, wait: Seq) {
        self.push(Command::CancelWait { wait });
    }

    /// Starts a child instance of the definition registered as `definition` (`name@version`);
    /// its id is derived from this instance's id and the returned seq.
    pub fn start_child(&mut self, definition: impl Into<String>, input: Value) -> Seq {
        let seq = self.next_seq + self.commands.len() as Seq;
        let instance = InstanceId(format!("{}/{}", self.instance, seq));
        self.push(Command::StartChild { definition: definition.into(), instance, input })
    }

    /// Emits a message through the outbox, committed with this step.
    pub fn emit(&mut self, kind: impl Into<String>, payload: Value) {
        self.push(Command::Emit { kind: kind.into(), payload });
    }

    pub fn complete(&mut self, output: Value) {
        self.push(Command::Complete { output });
    }

    pub fn fail(&mut self, failure: Failure) {
        self.push(Command::Fail { failure });
    }

    /// Ends this run and starts a fresh one with `input`, so history per run stays bounded.
    pub fn continue_as_new(&mut self, input: Value) {
        self.push(Command::ContinueAsNew { input });
    }

    /// Creates a human task; returns its id, which [`Trigger::HumanTaskCompleted`] carries.
    pub fn create_human_task(&mut self, mut spec: HumanTaskSpec) -> Seq {
        spec.due_at = spec.due_at.map(crate::history::history_time);
        self.push(Command::CreateHumanTask { spec: Box::new(spec) })
    }

    /// Withdraws an open task (its branch was cancelled, a quorum was reached...).
    pub fn cancel_human_task(&mut self, task: Seq, reason: impl Into<String>) {
        self.push(Command::CancelHumanTask { task, reason: reason.into() });
    }

    /// Ends an open task because its time ran out.
    pub fn expire_human_task(&mut self, task: Seq) {
        self.push(Command::ExpireHumanTask { task });
    }

    /// Moves an open task to other people (an escalation).
    pub fn reassign_human_task(&mut self, task: Seq, to: Assignment) {
        self.push(Command::ReassignHumanTask { task, to });
    }

    /// Starts an SLA clock; returns its id.
    pub fn start_sla(&mut self, mut sla: SlaStarted) -> Seq {
        sla.target_at = crate::history::history_time(sla.target_at);
        sla.at_risk_at = crate::history::history_time(sla.at_risk_at);
        self.push(Command::StartSla { sla })
    }

    pub fn pause_sla(&mut self, sla: Seq, elapsed_ms: u64) {
        self.push(Command::PauseSla { sla, elapsed_ms });
    }

    pub fn resume_sla(&mut self, sla: Seq, target_at: DateTime<Utc>, at_risk_at: DateTime<Utc>) {
        let target_at = crate::history::history_time(target_at);
        let at_risk_at = crate::history::history_time(at_risk_at);
        self.push(Command::ResumeSla { sla, target_at, at_risk_at });
    }

    /// Records that a rung of the SLA's escalation ladder was reached.
    pub fn escalate_sla(&mut self, sla: Seq, rung: u32) {
        self.push(Command::EscalateSla { sla, rung });
    }

    /// Records the breach: the engine emits an `SLABreached` event with it.
    pub fn breach_sla(&mut self, sla: Seq, elapsed_ms: u64) {
        self.push(Command::BreachSla { sla, elapsed_ms });
    }

    /// Stops the clock: the covered work is done (or abandoned).
    pub fn stop_sla(&mut self, sla: Seq, elapsed_ms: u64) {
        self.push(Command::StopSla { sla, elapsed_ms });
    }
}

/// A workflow language's program for one definition version.
pub trait Orchestration: Send + Sync + 'static {
    /// The orchestration's own state; serialized into snapshots.
    type State: Clone + fmt::Debug + PartialEq + Default + Serialize + DeserializeOwned + Send + Sync + 'static;

    fn definition(&self) -> DefinitionInfo;

    /// Takes one trigger. Must be deterministic.
    fn on_trigger(&self, state: &mut Self::State, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault>;

    /// Moves `state`, made by `from` (another version of this definition), to this version:
    /// what runs, waits and is in flight keeps running at its counterpart here, as `mapping`
    /// (old task -> new task) and the orchestration's own rules decide. Refuses, with the
    /// reason, where the move is unsafe. Must be deterministic; it issues no commands. By
    /// default an orchestration cannot be migrated.
    fn migrate(
        &self,
        from: &Self,
        state: &Self::State,
        mapping: &TaskMapping,
    ) -> Result<Migrated<Self::State>, String> {
        let _ = (from, state, mapping);
        Err(format!("{} does not support migration between versions", self.definition().name))
    }
}

/// Old task -> new task, for [`Orchestration::migrate`]: names or references, as the
/// orchestration's language has them.
pub type TaskMapping = std::collections::BTreeMap<String, String>;

/// A state moved to another version, and where each running task went.
#[derive(Clone, Debug, PartialEq)]
pub struct Migrated<S> {
    pub state: S,
    /// Old task -> new task, for each task that was running (references, as the language has
    /// them).
    pub moved: Vec<(String, String)>,
}

/// Type-erased orchestration state, so instances of different orchestrations share one cache.
/// Every clonable, comparable, serializable state has it.
pub trait AnyState: Any + Send + Sync + fmt::Debug {
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn AnyState>;
    /// The state as JSON (what snapshots keep).
    fn to_json(&self) -> Value;
    /// Equal to `other`, which must be of the same type to be equal.
    fn eq_dyn(&self, other: &dyn AnyState) -> bool;
    /// For downcasting to the concrete state.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting to the concrete state.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<S> AnyState for S
where
    S: Clone + fmt::Debug + PartialEq + Serialize + Send + Sync + 'static,
{
    fn clone_box(&self) -> Box<dyn AnyState> {
        Box::new(self.clone())
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn eq_dyn(&self, other: &dyn AnyState) -> bool {
        other.as_any().downcast_ref::<S>() == Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Clone for Box<dyn AnyState> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// The object-safe face of [`Orchestration`] the engine holds. Every orchestration has one
/// ([`into_dyn`]): registries that hold orchestrations of several types keep them as
/// `Arc<dyn DynOrchestration>` and register them with [`crate::Engine::register_dyn`].
pub trait DynOrchestration: Send + Sync {
    /// See [`Orchestration::definition`].
    fn definition(&self) -> DefinitionInfo;
    /// The state of a new instance (or a new run).
    fn new_state(&self) -> Box<dyn AnyState>;
    /// The state a snapshot kept, or why it does not decode.
    fn state_from_json(&self, value: Value) -> Result<Box<dyn AnyState>, String>;
    /// See [`Orchestration::on_trigger`]; `state` comes from this orchestration.
    fn on_trigger(&self, state: &mut dyn AnyState, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault>;
    /// See [`Orchestration::migrate`]; `state` comes from `from`, the result is this
    /// orchestration's state as JSON (what `InstanceMigrated` records).
    fn migrate_from(
        &self,
        from: &dyn DynOrchestration,
        state: &dyn AnyState,
        mapping: &TaskMapping,
    ) -> Result<Migrated<Value>, String>;
    /// For downcasting to the concrete orchestration.
    fn as_any(&self) -> &dyn Any;
}

/// An orchestration behind its object-safe face.
pub fn into_dyn<O: Orchestration>(orchestration: O) -> Arc<dyn DynOrchestration> {
    Arc::new(Erased(orchestration))
}

pub(crate) struct Erased<O>(pub O);

impl<O: Orchestration> DynOrchestration for Erased<O> {
    fn definition(&self) -> DefinitionInfo {
        self.0.definition()
    }

    fn new_state(&self) -> Box<dyn AnyState> {
        Box::new(O::State::default())
    }

    fn state_from_json(&self, value: Value) -> Result<Box<dyn AnyState>, String> {
        serde_json::from_value::<O::State>(value).map(|s| Box::new(s) as Box<dyn AnyState>).map_err(|e| e.to_string())
    }

    fn on_trigger(&self, state: &mut dyn AnyState, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault> {
        let state = state
            .as_any_mut()
            .downcast_mut::<O::State>()
            .ok_or_else(|| Fault::internal("state belongs to another orchestration"))?;
        self.0.on_trigger(state, trigger, ctx)
    }

    fn migrate_from(
        &self,
        from: &dyn DynOrchestration,
        state: &dyn AnyState,
        mapping: &TaskMapping,
    ) -> Result<Migrated<Value>, String> {
        let other = || format!("{} is another kind of orchestration", from.definition().key());
        let from = from.as_any().downcast_ref::<Erased<O>>().ok_or_else(other)?;
        let state = state.as_any().downcast_ref::<O::State>().ok_or_else(other)?;
        let migrated = self.0.migrate(&from.0, state, mapping)?;
        let state = serde_json::to_value(&migrated.state).map_err(|err| format!("the migrated state: {err}"))?;
        Ok(Migrated { state, moved: migrated.moved })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
