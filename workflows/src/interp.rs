//! The interpreter: runs a compiled [`Program`] as an [`Orchestration`].
//!
//! The running instance is a tree of frames (the workflow, sequences of tasks, tasks) kept in
//! the serializable [`State`]. Work moves through a queue of signals (start a frame, a child
//! finished, a wait ended) that is itself part of the state, so a long synchronous stretch (a
//! `for` over many items, a loop of `then:` jumps) can yield after a fixed number of tasks: the
//! interpreter starts a zero-length durable timer and takes up the queue when it fires. Every
//! choice depends only on the definition, the history's triggers and the history's time, so
//! replay gives the same commands.

// Errors here are problem details (a few strings and a map) travelling on the cold path of a
// fault; boxing each one would only add noise to every expression evaluation.
#![allow(clippy::result_large_err)]

mod migrate;
mod people;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use baton_engine::history::{DefinitionInfo, InstanceId, Seq};
use baton_engine::{ANY_EVENT, Ctx, Failure, Fault, Migrated, Orchestration, SecretProvider, TaskMapping, Trigger};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::expr::{Expr, ExprError, ExprErrorKind, Limits, Template, Vars};
use crate::model::{
    AttributeMatch, Call, Filter, Kind, ListId, Node, NodeId, OnError, Program, Raise, Read, Run, Schema, Strategy,
    Then, Transform, Until, WaitFor,
};
use crate::problem::{Problem, Standard, same_type};

/// Tasks run in one trigger before the interpreter yields through a zero-length timer.
pub const TASKS_PER_STEP: u32 = 1_000;

/// Where the task lifecycle goes: `--trace`, the conformance kit, lifecycle CloudEvents.
///
/// Called while the interpreter runs, so it is told again when an instance is replayed after a
/// restart: at-least-once, in order.
pub trait Observer: Send + Sync {
    fn observe(&self, instance: &InstanceId, event: &Lifecycle);
}

/// One lifecycle change of a task or of the workflow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lifecycle {
    /// The CloudEvent type: `io.serverlessworkflow.task.started.v1`...
    #[serde(rename = "type")]
    pub kind: String,
    /// The task's name (empty for the workflow).
    pub task: String,
    /// The task's JSON pointer (empty for the workflow).
    pub reference: String,
    pub time: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

/// A definition's program as an orchestration.
pub struct Workflow {
    program: Arc<Program>,
    info: DefinitionInfo,
    secrets: Option<Arc<dyn SecretProvider>>,
    observer: Option<Arc<dyn Observer>>,
    limits: Limits,
    event_retention: Option<std::time::Duration>,
    /// Business calendars shared by every definition (a definition's own `use.calendars` come
    /// first).
    calendars: Arc<baton_sla::Calendars>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow").field("definition", &self.info).finish_non_exhaustive()
    }
}

impl Workflow {
    /// `content_hash` identifies the definition's text (a different text under the same version
    /// is refused by the engine).
    pub fn new(program: Arc<Program>, content_hash: impl Into<String>) -> Self {
        let d = &program.document;
        let info = DefinitionInfo::new(d.qualified_name(), d.version.clone(), content_hash)
            .with_namespace(d.namespace.clone());
        Self {
            program,
            info,
            secrets: None,
            observer: None,
            limits: Limits::default(),
            event_retention: None,
            calendars: Arc::default(),
        }
    }

    /// The engine's shared business calendars. Like the definition itself, a calendar's
    /// working hours decide recorded SLA times: change a calendar running SLAs use by adding
    /// one under a new name, or a replay reports nondeterminism.
    pub fn with_calendars(mut self, calendars: Arc<baton_sla::Calendars>) -> Self {
        self.calendars = calendars;
        self
    }

    pub fn with_secrets(mut self, secrets: Arc<dyn SecretProvider>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// How long an event that arrives before its listener is kept for it. Without one, it is
    /// kept until a listener takes it. Each wait records its retention in history; like the
    /// expression limits, it belongs to the deployed definition version: a replay with another
    /// retention reports nondeterminism.
    pub fn with_event_retention(mut self, retention: std::time::Duration) -> Self {
        self.event_retention = Some(retention);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// The key instances are started under: `namespace/name@version`.
    pub fn definition_key(&self) -> String {
        self.info.key()
    }
}

type FrameId = u32;

/// The interpreter's durable state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    frames: BTreeMap<FrameId, Frame>,
    next_frame: FrameId,
    /// What each outstanding activity, timer, event wait or child instance belongs to.
    waits: BTreeMap<Seq, FrameId>,
    queue: VecDeque<(FrameId, Signal)>,
    /// The zero-length timer the interpreter yielded on, if any.
    yielded: Option<Seq>,
    context: Value,
    raw_input: Value,
    started_at: Option<DateTime<Utc>>,
    emitted: u64,
    ended: bool,
    /// The person who started the instance (the request's initiator), if a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Frame {
    parent: Option<FrameId>,
    /// Variables in scope: `for`'s item and index, `catch`'s error...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    vars: BTreeMap<String, Value>,
    kind: FrameKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum FrameKind {
    Workflow {
        timer: Option<Seq>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sla: Option<Box<people::SlaRun>>,
    },
    Sequence {
        list: ListId,
        index: usize,
    },
    Task(Box<TaskFrame>),
    /// The tasks of an escalation rung, running beside `owner` (the task or workflow whose SLA
    /// they escalate) without interrupting it: their end is not reported to anyone.
    Escalation {
        owner: FrameId,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TaskFrame {
    node: NodeId,
    raw_input: Value,
    input: Value,
    started_at: DateTime<Utc>,
    timer: Option<Seq>,
    body: Body,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sla: Option<Box<people::SlaRun>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Body {
    Ready,
    Activity(Seq),
    Timer(Seq),
    Child(Seq),
    Sub,
    For {
        items: Vec<Value>,
        index: usize,
        current: Value,
    },
    Fork {
        branches: Vec<Option<FrameId>>,
        results: Vec<Option<Value>>,
    },
    Try {
        attempt: u32,
        first_at: DateTime<Utc>,
        phase: TryPhase,
    },
    Listen(Box<ListenState>),
    /// Waiting for people to complete human tasks.
    Human(Box<people::HumanWait>),
    /// Looking up a manager in the directory before creating human tasks.
    Resolving {
        activity: Seq,
        request: Box<people::HumanRequest>,
    },
    /// A `notify` activity.
    Notify(Seq),
    /// Looking up a manager in the directory before reassigning human tasks.
    Reassign {
        activity: Seq,
        targets: Vec<(FrameId, Seq)>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum TryPhase {
    Body,
    Delay(Seq),
    Handler,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ListenState {
    /// Outstanding waits: seq -> (filter index, whether it belongs to `until`).
    waits: BTreeMap<Seq, (usize, bool)>,
    /// For `all`: the event each filter matched, in filter order.
    matched: Vec<Option<Value>>,
    /// Events consumed, in order (as read).
    consumed: Vec<Value>,
    /// Correlation values fixed by the first event that had them.
    correlation: BTreeMap<String, Value>,
    /// `foreach`: events waiting for their turn, the running one's index, outputs so far.
    queue: VecDeque<Value>,
    running: bool,
    processed: usize,
    outputs: Vec<Value>,
    /// The strategy is satisfied; the task completes once `foreach` has caught up.
    satisfied: bool,
    /// For `until` events with `all`: which of its filters have matched.
    #[serde(default)]
    until_matched: Vec<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Signal {
    Start,
    /// A child frame finished: its output and whether the workflow must end.
    Done {
        child: FrameId,
        output: Value,
        then: Then,
    },
    Failed {
        child: FrameId,
        error: Problem,
    },
    Activity(Result<Value, Failure>),
    Timer(Seq),
    Event {
        wait: Seq,
        payload: Value,
    },
    Child(Result<Value, Failure>),
    /// A person completed a human task.
    Human {
        task: Seq,
        completion: Value,
    },
}

impl Orchestration for Workflow {
    type State = State;

    fn definition(&self) -> DefinitionInfo {
        self.info.clone()
    }

    fn migrate(&self, from: &Self, state: &State, mapping: &TaskMapping) -> Result<Migrated<State>, String> {
        self.migrate_state(from, state, mapping)
    }

    fn on_trigger(&self, state: &mut State, trigger: Trigger<'_>, ctx: &mut Ctx<'_>) -> Result<(), Fault> {
        if state.ended {
            return Ok(());
        }
        let mut machine = Machine { wf: self, state, ctx, secrets: None, budget: TASKS_PER_STEP, incident: None };
        match trigger {
            Trigger::Started { input, started_by } => {
                machine.state.started_by = started_by.map(str::to_owned);
                machine.start(input)
            }
            Trigger::ActivityCompleted { activity, result } => {
                machine.wake(activity, Signal::Activity(Ok(result.clone())))
            }
            Trigger::ActivityFailed { activity, failure } => {
                machine.wake(activity, Signal::Activity(Err(failure.clone())))
            }
            Trigger::TimerFired { timer } => {
                if machine.state.yielded == Some(timer) {
                    machine.state.yielded = None;
                } else {
                    machine.wake(timer, Signal::Timer(timer));
                }
            }
            Trigger::EventReceived { wait, payload, .. } => {
                machine.wake(wait, Signal::Event { wait, payload: payload.clone() })
            }
            Trigger::ChildCompleted { child, output } => machine.wake(child, Signal::Child(Ok(output.clone()))),
            Trigger::ChildFailed { child, failure } => machine.wake(child, Signal::Child(Err(failure.clone()))),
            Trigger::HumanTaskCompleted { task, completion } => {
                machine.wake(task, Signal::Human { task, completion: completion.to_output() })
            }
            Trigger::HumanTaskUpdated { task, human } => machine.human_updated(task, human),
            Trigger::Suspended => {
                // Only the clocks pause; the queue waits for the resumption.
                machine.suspended(true);
                return Ok(());
            }
            Trigger::Resumed => machine.suspended(false),
        }
        machine.run();
        match machine.incident {
            // Nothing of this step is kept: the instance stays as it was before the trigger.
            Some(problem) => {
                let at = problem.instance.as_deref().map(|task| format!(" at {task}")).unwrap_or_default();
                Err(Fault::unhandled(format!("uncaught error{at}: {}", problem.summary())))
            }
            None => Ok(()),
        }
    }
}

struct Machine<'a, 'c> {
    wf: &'a Workflow,
    state: &'a mut State,
    ctx: &'a mut Ctx<'c>,
    secrets: Option<Value>,
    budget: u32,
    /// An uncaught error under `onError: incident`: the step is abandoned and the engine opens
    /// an incident instead.
    incident: Option<Problem>,
}

/// What an expression evaluates in: its `.`, the task (if any) and the scope's variables.
struct Scope<'s> {
    frame: Option<FrameId>,
    input: &'s Value,
    output: Option<&'s Value>,
    extra: &'s [(&'s str, Value)],
}

fn iso(at: DateTime<Utc>) -> Value {
    json!({
        "iso8601": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "epoch": { "seconds": at.timestamp(), "milliseconds": at.timestamp_millis() },
    })
}

impl Machine<'_, '_> {
    fn now(&self) -> DateTime<Utc> {
        self.ctx.now()
    }

    // ---- lifecycle -------------------------------------------------------------------------

    fn observe(&self, kind: &str, node: Option<&Node>, error: Option<&Problem>) {
        let Some(observer) = &self.wf.observer else { return };
        let event = Lifecycle {
            kind: format!("io.serverlessworkflow.{kind}.v1"),
            task: node.map(|n| n.name.clone()).unwrap_or_default(),
            reference: node.map(|n| n.reference.clone()).unwrap_or_default(),
            time: self.now(),
            error: error.map(Problem::to_value),
        };
        observer.observe(self.ctx.instance_id(), &event);
    }

    // ---- frames ----------------------------------------------------------------------------

    fn push_frame(&mut self, parent: Option<FrameId>, vars: BTreeMap<String, Value>, kind: FrameKind) -> FrameId {
        let id = self.state.next_frame;
        self.state.next_frame += 1;
        self.state.frames.insert(id, Frame { parent, vars, kind });
        id
    }

    fn vars_of(&self, frame: FrameId) -> BTreeMap<String, Value> {
        self.state.frames.get(&frame).map(|f| f.vars.clone()).unwrap_or_default()
    }

    fn task_frame(&mut self, id: FrameId) -> Option<&mut TaskFrame> {
        match &mut self.state.frames.get_mut(&id)?.kind {
            FrameKind::Task(task) => Some(task),
            _ => None,
        }
    }

    fn start_task(
        &mut self,
        parent: FrameId,
        node: NodeId,
        raw_input: Value,
        vars: BTreeMap<String, Value>,
    ) -> FrameId {
        let task = TaskFrame {
            node,
            raw_input: raw_input.clone(),
            input: raw_input,
            started_at: self.now(),
            timer: None,
            body: Body::Ready,
            sla: None,
        };
        let id = self.push_frame(Some(parent), vars, FrameKind::Task(Box::new(task)));
        self.state.queue.push_back((id, Signal::Start));
        id
    }

    fn start_sequence(&mut self, parent: FrameId, list: ListId, input: Value, vars: BTreeMap<String, Value>) {
        let id = self.push_frame(Some(parent), vars, FrameKind::Sequence { list, index: 0 });
        self.sequence_at(id, 0, input);
    }

    /// Removes a frame and everything under it, cancelling what they wait on.
    fn cancel(&mut self, id: FrameId) {
        let children: Vec<FrameId> =
            self.state.frames.iter().filter(|(_, f)| f.parent == Some(id)).map(|(&c, _)| c).collect();
        for child in children {
            self.cancel(child);
        }
        let Some(frame) = self.state.frames.remove(&id) else { return };
        self.state.queue.retain(|(f, _)| *f != id);
        let owned: Vec<Seq> = self.state.waits.iter().filter(|(_, f)| **f == id).map(|(&s, _)| s).collect();
        let mut timers = Vec::new();
        if let FrameKind::Task(task) = &frame.kind {
            timers.extend(task.timer);
            match &task.body {
                Body::Timer(seq) => timers.push(*seq),
                Body::Try { phase: TryPhase::Delay(seq), .. } => timers.push(*seq),
                Body::Listen(listen) => listen.waits.keys().for_each(|&seq| self.ctx.cancel_wait(seq)),
                Body::Human(wait) => self.withdraw_human_tasks(wait, false),
                _ => {}
            }
            if let Some(sla) = &task.sla {
                self.stop_sla(sla);
            }
            let node = self.wf.program.node(task.node);
            self.observe("task.cancelled", Some(node), None);
        }
        if let FrameKind::Workflow { timer, sla } = &frame.kind {
            timers.extend(*timer);
            if let Some(sla) = sla {
                self.stop_sla(sla);
            }
        }
        for seq in owned {
            self.state.waits.remove(&seq);
        }
        for seq in timers {
            self.ctx.cancel_timer(seq);
        }
    }

    /// Passes a frame's result to its parent.
    fn finish(&mut self, id: FrameId, result: Result<(Value, Then), Problem>) {
        let Some(frame) = self.state.frames.get(&id) else { return };
        let parent = frame.parent;
        let mut timers = Vec::new();
        if let FrameKind::Task(task) = &frame.kind {
            timers.extend(task.timer);
        }
        // The frame's SLA clock stops with it: the covered work is over.
        match self.state.frames.remove(&id).map(|f| f.kind) {
            Some(FrameKind::Task(task)) => {
                if let Some(sla) = &task.sla {
                    self.stop_sla(sla);
                }
            }
            Some(FrameKind::Workflow { sla: Some(sla), .. }) => self.stop_sla(&sla),
            _ => {}
        }
        for seq in timers {
            self.state.waits.remove(&seq);
            self.ctx.cancel_timer(seq);
        }
        match parent {
            Some(parent) => {
                let signal = match result {
                    Ok((output, then)) => Signal::Done { child: id, output, then },
                    Err(error) => Signal::Failed { child: id, error },
                };
                self.state.queue.push_back((parent, signal));
            }
            None => self.end_workflow(result.map(|(output, _)| output)),
        }
    }

    // ---- the loop --------------------------------------------------------------------------

    fn wake(&mut self, seq: Seq, signal: Signal) {
        if let Some(frame) = self.state.waits.remove(&seq) {
            self.state.queue.push_back((frame, signal));
        }
    }

    fn run(&mut self) {
        while let Some((frame, signal)) = self.state.queue.pop_front() {
            if self.incident.is_some() {
                return;
            }
            if self.state.ended {
                self.state.queue.clear();
                return;
            }
            if matches!(signal, Signal::Start) && self.is_task(frame) {
                if self.budget == 0 {
                    // Take a breath: let the engine commit, then go on from here.
                    self.state.queue.push_front((frame, signal));
                    let seq = self.ctx.start_timer(self.now());
                    self.state.yielded = Some(seq);
                    return;
                }
                self.budget -= 1;
            }
            self.handle(frame, signal);
        }
    }

    fn is_task(&self, frame: FrameId) -> bool {
        matches!(self.state.frames.get(&frame).map(|f| &f.kind), Some(FrameKind::Task(_)))
    }

    fn handle(&mut self, id: FrameId, signal: Signal) {
        let Some(frame) = self.state.frames.get(&id) else { return };
        match &frame.kind {
            FrameKind::Workflow { .. } => self.on_workflow(id, signal),
            FrameKind::Sequence { list, index } => {
                let (list, index) = (*list, *index);
                self.on_sequence(id, list, index, signal)
            }
            FrameKind::Task(_) => self.on_task(id, signal),
            FrameKind::Escalation { .. } => self.on_escalation(id, signal),
        }
    }

    // ---- the workflow ----------------------------------------------------------------------

    fn start(&mut self, raw: &Value) {
        let now = self.now();
        self.state.started_at = Some(now);
        self.state.raw_input = raw.clone();
        self.state.context = Value::Object(Map::new());
        self.observe("workflow.started", None, None);
        let id = self.push_frame(None, BTreeMap::new(), FrameKind::Workflow { timer: None, sla: None });
        let program = Arc::clone(&self.wf.program);
        if let Some(schema) = &program.input_schema
            && let Err(message) = schema.check(raw)
        {
            return self.finish(id, Err(validation("The workflow input is invalid", message, "/input/schema")));
        }
        let input = match &program.input_from {
            None => raw.clone(),
            Some(transform) => {
                match self.transform(transform, &Scope { frame: None, input: raw, output: None, extra: &[] }) {
                    Ok(v) => v,
                    Err(e) => return self.finish(id, Err(e.with_instance("/input/from"))),
                }
            }
        };
        if let Some(timeout) = program.timeout {
            let seq = self.ctx.start_timer(later(now, timeout));
            self.state.waits.insert(seq, id);
            if let Some(Frame { kind: FrameKind::Workflow { timer, .. }, .. }) = self.state.frames.get_mut(&id) {
                *timer = Some(seq);
            }
        }
        self.start_sequence(id, program.root, input.clone(), BTreeMap::new());
        if let Some(spec) = &program.sla
            && let Err(problem) = self.begin_sla(id, spec, "workflow", &input, None, None)
        {
            self.finish(id, Err(problem.with_instance("/sla")));
        }
    }

    fn on_workflow(&mut self, id: FrameId, signal: Signal) {
        if let Signal::Timer(seq) = &signal
            && self.sla_timer(id, *seq)
        {
            return;
        }
        match signal {
            Signal::Done { output, .. } => self.finish(id, Ok((output, Then::End))),
            Signal::Failed { error, .. } => self.finish(id, Err(error)),
            Signal::Timer(_) => {
                let children: Vec<FrameId> =
                    self.state.frames.iter().filter(|(_, f)| f.parent == Some(id)).map(|(&c, _)| c).collect();
                for child in children {
                    self.cancel(child);
                }
                if let Some(Frame { kind: FrameKind::Workflow { timer, .. }, .. }) = self.state.frames.get_mut(&id) {
                    *timer = None;
                }
                let error =
                    Problem::standard(Standard::Timeout, "Workflow timed out", "the workflow ran past its `timeout`");
                self.finish(id, Err(error.with_instance("/timeout")));
            }
            _ => {}
        }
    }

    fn end_workflow(&mut self, result: Result<Value, Problem>) {
        let program = Arc::clone(&self.wf.program);
        let result = result.and_then(|output| {
            let output = match &program.output_as {
                None => output,
                Some(t) => self
                    .transform(t, &Scope { frame: None, input: &output, output: None, extra: &[] })
                    .map_err(|e| e.with_instance("/output/as"))?,
            };
            if let Some(schema) = &program.output_schema {
                schema.check(&output).map_err(|m| validation("The workflow output is invalid", m, "/output/schema"))?;
            }
            Ok(output)
        });
        if program.on_error == OnError::Incident
            && let Err(problem) = result
        {
            self.incident = Some(problem);
            return;
        }
        // What is still outstanding ends with the instance: the engine disarms its timers,
        // abandons its activities and withdraws its human tasks. SLA clocks stop with a record
        // of the business time they counted.
        self.stop_every_sla();
        self.state.frames.clear();
        self.state.waits.clear();
        self.state.queue.clear();
        self.state.ended = true;
        match result {
            Ok(output) => {
                self.observe("workflow.completed", None, None);
                let output = self.mask(output);
                self.ctx.complete(output);
            }
            Err(problem) => {
                self.observe("workflow.faulted", None, Some(&problem));
                let details = self.mask(problem.to_value());
                self.ctx.fail(Failure {
                    kind: problem.kind.clone(),
                    message: problem.summary(),
                    details: Some(details),
                });
            }
        }
    }

    // ---- sequences -------------------------------------------------------------------------

    fn sequence_at(&mut self, id: FrameId, index: usize, input: Value) {
        let program = Arc::clone(&self.wf.program);
        let list = match self.state.frames.get_mut(&id) {
            Some(Frame { kind: FrameKind::Sequence { list, index: at }, .. }) => {
                *at = index;
                *list
            }
            _ => return,
        };
        match program.list(list).entries.get(index) {
            None => self.finish(id, Ok((input, Then::Continue))),
            Some(&node) => {
                let vars = self.vars_of(id);
                self.start_task(id, node, input, vars);
            }
        }
    }

    fn on_sequence(&mut self, id: FrameId, list: ListId, index: usize, signal: Signal) {
        match signal {
            Signal::Done { output, then, .. } => match then {
                Then::Continue => self.sequence_at(id, index + 1, output),
                Then::Exit => self.finish(id, Ok((output, Then::Continue))),
                Then::End => self.finish(id, Ok((output, Then::End))),
                Then::Goto(name) => match self.wf.program.list(list).position(&name) {
                    Some(target) => self.sequence_at(id, target, output),
                    None => {
                        let error = Problem::standard(
                            Standard::Configuration,
                            "Unknown flow target",
                            format!("no task named `{name}` in this scope"),
                        );
                        self.finish(id, Err(error))
                    }
                },
            },
            Signal::Failed { error, .. } => self.finish(id, Err(error)),
            _ => {}
        }
    }

    // ---- tasks -----------------------------------------------------------------------------

    fn on_task(&mut self, id: FrameId, signal: Signal) {
        // Only what this signal needs leaves the frame: a `for` over many items must not copy
        // its list on every iteration.
        let Some(task) = self.task_frame(id) else { return };
        let (node_id, timer) = (task.node, task.timer);
        let program = Arc::clone(&self.wf.program);
        let node = program.node(node_id);
        if let Signal::Timer(seq) = &signal {
            if timer == Some(*seq) {
                return self.time_out(id, node);
            }
            if self.sla_timer(id, *seq) {
                return;
            }
        }
        let Some(task) = self.task_frame(id) else { return };
        let result = match signal {
            Signal::Start => {
                let raw = task.raw_input.clone();
                self.begin_task(id, node, raw)
            }
            signal => {
                let body = std::mem::replace(&mut task.body, Body::Ready);
                self.continue_task(id, node, body, signal)
            }
        };
        match result {
            Step::Pending => {}
            Step::Done(output) => self.complete_task(id, node, output, None),
            Step::DoneThen(output, then) => self.complete_task(id, node, output, Some(then)),
            Step::Fail(error) => self.fail_task(id, node, error),
        }
    }

    fn time_out(&mut self, id: FrameId, node: &Node) {
        let children: Vec<FrameId> =
            self.state.frames.iter().filter(|(_, f)| f.parent == Some(id)).map(|(&c, _)| c).collect();
        for child in children {
            self.cancel(child);
        }
        let mut seqs = Vec::new();
        if let Some(task) = self.task_frame(id) {
            task.timer = None;
            match std::mem::replace(&mut task.body, Body::Ready) {
                Body::Timer(seq) | Body::Try { phase: TryPhase::Delay(seq), .. } => seqs.push((seq, true)),
                Body::Activity(seq) | Body::Child(seq) => seqs.push((seq, false)),
                Body::Listen(listen) => {
                    for &seq in listen.waits.keys() {
                        seqs.push((seq, false));
                        self.ctx.cancel_wait(seq);
                    }
                }
                Body::Human(wait) => {
                    seqs.extend(wait.open_tasks().map(|seq| (seq, false)));
                    self.withdraw_human_tasks(&wait, true);
                }
                Body::Resolving { activity, .. } | Body::Notify(activity) | Body::Reassign { activity, .. } => {
                    seqs.push((activity, false))
                }
                _ => {}
            }
        }
        for (seq, timer) in seqs {
            self.state.waits.remove(&seq);
            if timer {
                self.ctx.cancel_timer(seq);
            }
        }
        let error =
            Problem::standard(Standard::Timeout, "Task timed out", format!("`{}` ran past its `timeout`", node.name));
        self.fail_task(id, node, error);
    }

    fn begin_task(&mut self, id: FrameId, node: &Node, raw: Value) -> Step {
        let raw = &raw;
        let scope = Scope { frame: Some(id), input: raw, output: None, extra: &[] };
        if let Some(condition) = &node.if_ {
            match self.eval_bool(condition, &scope) {
                Ok(true) => {}
                Ok(false) => {
                    self.observe("task.skipped", Some(node), None);
                    let raw = raw.clone();
                    self.finish(id, Ok((raw, Then::Continue)));
                    return Step::Pending;
                }
                Err(e) => return Step::Fail(e),
            }
        }
        self.observe("task.started", Some(node), None);
        if let Some(schema) = &node.input_schema
            && let Err(message) = schema.check(raw)
        {
            return Step::Fail(validation(
                "The task input is invalid",
                message,
                &format!("{}/input/schema", node.reference),
            ));
        }
        let input = match &node.input_from {
            None => raw.clone(),
            Some(t) => match self.transform(t, &scope) {
                Ok(v) => v,
                Err(e) => return Step::Fail(e),
            },
        };
        let now = self.now();
        let timer = node.timeout.map(|d| self.ctx.start_timer(later(now, d)));
        if let Some(seq) = timer {
            self.state.waits.insert(seq, id);
        }
        if let Some(frame) = self.task_frame(id) {
            frame.input = input.clone();
            frame.timer = timer;
            frame.started_at = now;
        }
        let step = self.run_kind(id, node, input.clone());
        // An SLA covers work that waits; a task that ends at once has met it.
        match (&node.sla, step) {
            (Some(spec), Step::Pending) if self.state.frames.contains_key(&id) => {
                let human = self.human_task_of(id);
                match self.begin_sla(id, spec, &node.name, &input, human, Some(node)) {
                    Ok(()) => Step::Pending,
                    Err(problem) => {
                        // The task cannot keep its promise: what it started is withdrawn.
                        if let Some(task) = self.task_frame(id)
                            && let Body::Human(wait) = std::mem::replace(&mut task.body, Body::Ready)
                        {
                            self.withdraw_human_tasks(&wait, false);
                        }
                        Step::Fail(problem.with_instance(&format!("{}/sla", node.reference)))
                    }
                }
            }
            (_, step) => step,
        }
    }

    /// Waits for an event; with an event retention, one that came earlier counts only if it is
    /// recent enough.
    fn wait_event(&mut self, name: String) -> Seq {
        match self.wf.event_retention {
            Some(retention) => self.ctx.wait_event_within(name, retention),
            None => self.ctx.wait_event(name),
        }
    }

    fn set_body(&mut self, id: FrameId, body: Body) {
        if let Some(task) = self.task_frame(id) {
            task.body = body;
        }
    }

    fn wait_on(&mut self, id: FrameId, seq: Seq) {
        self.state.waits.insert(seq, id);
    }

    fn run_kind(&mut self, id: FrameId, node: &Node, input: Value) -> Step {
        let vars = self.vars_of(id);
        let scope = Scope { frame: Some(id), input: &input, output: None, extra: &[] };
        match &node.kind {
            Kind::Set(template) => self.eval_template(template, &scope).map_or_else(Step::Fail, Step::Done),
            Kind::Switch(cases) => {
                for case in cases {
                    let matched = match &case.when {
                        None => true,
                        Some(when) => match self.eval_bool(when, &scope) {
                            Ok(b) => b,
                            Err(e) => return Step::Fail(e),
                        },
                    };
                    if matched {
                        return Step::DoneThen(input.clone(), case.then.clone());
                    }
                }
                Step::Done(input.clone())
            }
            Kind::Raise(Raise::Inline(template)) => match self.eval_template(template, &scope) {
                Ok(error) => Step::Fail(Problem::from_value(&error, Standard::Runtime)),
                Err(e) => Step::Fail(e),
            },
            Kind::Emit { event } => match self.eval_template(event, &scope) {
                Ok(event) => Step::Done(self.emit(event)),
                Err(e) => Step::Fail(e),
            },
            Kind::Wait(wait) => {
                let duration = match wait {
                    WaitFor::Fixed(d) => *d,
                    WaitFor::Expr(expr) => match self.eval(expr, &scope) {
                        Ok(v) => match crate::duration::parse(&v) {
                            Some(d) => d,
                            None => {
                                return Step::Fail(expression_error(format!(
                                    "`wait` evaluated to {v}, not a duration"
                                )));
                            }
                        },
                        Err(e) => return Step::Fail(e),
                    },
                };
                let at = later(self.now(), duration);
                let seq = self.ctx.start_timer(at);
                self.wait_on(id, seq);
                self.set_body(id, Body::Timer(seq));
                Step::Pending
            }
            Kind::Do(list) => {
                self.set_body(id, Body::Sub);
                self.start_sequence(id, *list, input.clone(), vars);
                Step::Pending
            }
            Kind::Call(call) => self.call(id, node, call, &input, vars),
            Kind::Run(run) => match run {
                Run::Refused(message) => {
                    Step::Fail(Problem::standard(Standard::Configuration, "Refused by policy", message.clone()))
                }
                Run::Workflow { definition, input: template, await_ } => match self.eval_template(template, &scope) {
                    Ok(child_input) => {
                        let child_input = self.mask(child_input);
                        let seq = self.ctx.start_child(definition.clone(), child_input);
                        if *await_ {
                            self.wait_on(id, seq);
                            self.set_body(id, Body::Child(seq));
                            Step::Pending
                        } else {
                            Step::Done(input.clone())
                        }
                    }
                    Err(e) => Step::Fail(e),
                },
            },
            Kind::For(for_) => {
                let items = match self.eval(&for_.in_, &scope) {
                    Ok(Value::Array(items)) => items,
                    Ok(Value::Null) => Vec::new(),
                    Ok(Value::Object(map)) => map.into_iter().map(|(_, v)| v).collect(),
                    Ok(other) => {
                        return Step::Fail(expression_error(format!("`for.in` must give a list, not {other}")));
                    }
                    Err(e) => return Step::Fail(e),
                };
                self.next_iteration(id, node, items, 0, input.clone())
            }
            Kind::Fork { branches, compete: _ } => {
                let entries = self.wf.program.list(*branches).entries.clone();
                if entries.is_empty() {
                    return Step::Done(Value::Array(vec![]));
                }
                let frames: Vec<Option<FrameId>> =
                    entries.iter().map(|&n| Some(self.start_task(id, n, input.clone(), vars.clone()))).collect();
                let results = vec![None; frames.len()];
                self.set_body(id, Body::Fork { branches: frames, results });
                Step::Pending
            }
            Kind::Try(try_) => {
                let now = self.now();
                self.set_body(id, Body::Try { attempt: 0, first_at: now, phase: TryPhase::Body });
                self.start_sequence(id, try_.body, input.clone(), vars);
                Step::Pending
            }
            Kind::Listen(listen) => {
                let mut state = ListenState::default();
                let (filters, until) = match &listen.strategy {
                    Strategy::One(f) => (std::slice::from_ref(f), None),
                    Strategy::All(fs) => {
                        state.matched = vec![None; fs.len()];
                        (fs.as_slice(), None)
                    }
                    Strategy::Any { filters, until } => (filters.as_slice(), until.as_ref()),
                };
                if filters.is_empty() {
                    let seq = self.wait_event(ANY_EVENT.into());
                    self.wait_on(id, seq);
                    state.waits.insert(seq, (usize::MAX, false));
                }
                for (i, filter) in filters.iter().enumerate() {
                    let seq = self.wait_event(filter.event_type.clone().unwrap_or_else(|| ANY_EVENT.into()));
                    self.wait_on(id, seq);
                    state.waits.insert(seq, (i, false));
                }
                if let Some(Until::Events(strategy)) = until {
                    for (i, filter) in strategy_filters(strategy).iter().enumerate() {
                        let seq = self.wait_event(filter.event_type.clone().unwrap_or_else(|| ANY_EVENT.into()));
                        self.wait_on(id, seq);
                        state.waits.insert(seq, (i, true));
                    }
                }
                self.set_body(id, Body::Listen(Box::new(state)));
                Step::Pending
            }
        }
    }

    fn call(&mut self, id: FrameId, node: &Node, call: &Call, input: &Value, vars: BTreeMap<String, Value>) -> Step {
        let scope = Scope { frame: Some(id), input, output: None, extra: &[] };
        match call {
            Call::Refused(message) => {
                Step::Fail(Problem::standard(Standard::Configuration, "Unsupported call", message.clone()))
            }
            Call::Function { node: function, with } => match self.eval_template(with, &scope) {
                Ok(arguments) => {
                    self.set_body(id, Body::Sub);
                    self.start_task(id, *function, arguments, vars);
                    Step::Pending
                }
                Err(e) => Step::Fail(e),
            },
            Call::Activity { name, with, passthrough, protocol } => {
                let mut arguments = match self.eval_template(with, &scope) {
                    Ok(v) => self.mask(v),
                    Err(e) => return Step::Fail(e),
                };
                for policy in passthrough {
                    let mut value = policy.value.clone();
                    for (path, expr) in &policy.exprs {
                        match self.eval(expr, &scope) {
                            Ok(v) => put(&mut value, path, v),
                            Err(e) => return Step::Fail(e),
                        }
                    }
                    put(&mut arguments, &policy.path, value);
                }
                if *protocol && let Value::Object(fields) = &mut arguments {
                    fields.insert("arguments".into(), self.mask(input.clone()));
                    if !self.wf.program.authentications.is_null() {
                        fields.insert("authentications".into(), self.wf.program.authentications.clone());
                    }
                }
                let _ = node;
                let seq = self.ctx.schedule_activity(name.clone(), arguments);
                self.wait_on(id, seq);
                self.set_body(id, Body::Activity(seq));
                Step::Pending
            }
            Call::HumanTask { with } => match self.eval_template(with, &scope) {
                Ok(arguments) => self.human_task(id, &node.name, arguments),
                Err(e) => Step::Fail(e),
            },
            Call::Notify { with } => match self.eval_template(with, &scope) {
                Ok(arguments) => self.notify(id, arguments),
                Err(e) => Step::Fail(e),
            },
            Call::ReassignTask { with } => match self.eval_template(with, &scope) {
                Ok(arguments) => self.reassign(id, arguments),
                Err(e) => Step::Fail(e),
            },
        }
    }

    /// Starts iteration `index` of a `for` on `current` (the previous iteration's output), or
    /// ends the task.
    fn next_iteration(&mut self, id: FrameId, node: &Node, items: Vec<Value>, index: usize, current: Value) -> Step {
        let Kind::For(for_) = &node.kind else { return Step::Pending };
        let Some(item) = items.get(index) else { return Step::Done(current) };
        let mut vars = self.vars_of(id);
        vars.insert(for_.each.clone(), item.clone());
        vars.insert(for_.at.clone(), Value::from(index));
        if let Some(condition) = &for_.while_ {
            let extra: Vec<(&str, Value)> =
                vec![(for_.each.as_str(), item.clone()), (for_.at.as_str(), Value::from(index))];
            let scope = Scope { frame: Some(id), input: &current, output: None, extra: &extra };
            match self.eval_bool(condition, &scope) {
                Ok(true) => {}
                Ok(false) => return Step::Done(current),
                Err(e) => return Step::Fail(e),
            }
        }
        // The iteration's output comes back with its end; only the list and position stay.
        self.set_body(id, Body::For { items, index, current: Value::Null });
        self.start_sequence(id, for_.body, current, vars);
        Step::Pending
    }

    /// Cancels the event waits a listening task still has (it ended, or it faulted), so none of
    /// them takes an event meant for a later listener.
    fn stop_listening(&mut self, id: FrameId) {
        let timer = self.task_frame(id).and_then(|t| t.timer);
        let waits: Vec<Seq> =
            self.state.waits.iter().filter(|&(&seq, &f)| f == id && Some(seq) != timer).map(|(&s, _)| s).collect();
        for seq in waits {
            self.state.waits.remove(&seq);
            self.ctx.cancel_wait(seq);
        }
    }

    fn task_input(&mut self, id: FrameId) -> Value {
        self.task_frame(id).map(|t| t.input.clone()).unwrap_or_default()
    }

    /// Takes a signal for a task whose body was taken out of its frame: each arm puts back the
    /// body it still needs.
    fn continue_task(&mut self, id: FrameId, node: &Node, body: Body, signal: Signal) -> Step {
        match (body, signal) {
            (Body::Activity(_), Signal::Activity(Ok(output))) | (Body::Child(_), Signal::Child(Ok(output))) => {
                Step::Done(output)
            }
            (Body::Activity(_), Signal::Activity(Err(failure))) | (Body::Child(_), Signal::Child(Err(failure))) => {
                Step::Fail(problem_of(&failure))
            }
            (Body::Timer(_), Signal::Timer(_)) => Step::Done(self.task_input(id)),
            (Body::Sub, Signal::Done { output, then, .. }) => match then {
                Then::End => Step::DoneThen(output, Then::End),
                _ => Step::Done(output),
            },
            (Body::Sub, Signal::Failed { error, .. }) => Step::Fail(error),
            (Body::For { items, index, .. }, Signal::Done { output, then, .. }) => {
                if then == Then::End {
                    return Step::DoneThen(output, Then::End);
                }
                self.next_iteration(id, node, items, index + 1, output)
            }
            (Body::For { .. }, Signal::Failed { error, .. }) => Step::Fail(error),
            (Body::Fork { branches, mut results }, Signal::Done { child, output, then }) => {
                let Kind::Fork { compete, .. } = &node.kind else { return Step::Pending };
                let Some(slot) = branches.iter().position(|b| *b == Some(child)) else {
                    self.set_body(id, Body::Fork { branches, results });
                    return Step::Pending;
                };
                if *compete || then == Then::End {
                    for other in branches.iter().flatten().filter(|b| **b != child) {
                        self.cancel(*other);
                    }
                    return if then == Then::End { Step::DoneThen(output, Then::End) } else { Step::Done(output) };
                }
                results[slot] = Some(output);
                let mut branches = branches;
                branches[slot] = None;
                if branches.iter().all(Option::is_none) {
                    return Step::Done(Value::Array(results.into_iter().map(Option::unwrap_or_default).collect()));
                }
                self.set_body(id, Body::Fork { branches, results });
                Step::Pending
            }
            (Body::Fork { branches, .. }, Signal::Failed { child, error }) => {
                for other in branches.iter().flatten().filter(|b| **b != child) {
                    self.cancel(*other);
                }
                Step::Fail(error)
            }
            (Body::Try { attempt, first_at, phase: TryPhase::Body }, Signal::Done { output, then, .. }) => {
                let _ = (attempt, first_at);
                if then == Then::End { Step::DoneThen(output, Then::End) } else { Step::Done(output) }
            }
            (Body::Try { attempt, first_at, phase: TryPhase::Body }, Signal::Failed { error, .. }) => {
                let input = self.task_input(id);
                self.catch(id, node, &input, attempt, first_at, error)
            }
            (Body::Try { attempt, first_at, phase: TryPhase::Delay(_) }, Signal::Timer(_)) => {
                let Kind::Try(try_) = &node.kind else { return Step::Pending };
                self.set_body(id, Body::Try { attempt, first_at, phase: TryPhase::Body });
                self.observe("task.retried", Some(node), None);
                let vars = self.vars_of(id);
                let input = self.task_input(id);
                self.start_sequence(id, try_.body, input, vars);
                Step::Pending
            }
            (Body::Try { phase: TryPhase::Handler, .. }, Signal::Done { output, then, .. }) => {
                if then == Then::End {
                    Step::DoneThen(output, Then::End)
                } else {
                    Step::Done(output)
                }
            }
            (Body::Try { phase: TryPhase::Handler, .. }, Signal::Failed { error, .. }) => Step::Fail(error),
            (Body::Human(wait), Signal::Human { task, completion }) => {
                self.human_completed(id, *wait, task, completion)
            }
            (Body::Resolving { request, .. }, Signal::Activity(Ok(manager))) => {
                self.resolved_manager(id, *request, manager)
            }
            (Body::Notify(_), Signal::Activity(Ok(output))) => self.notified(output),
            (Body::Reassign { targets, .. }, Signal::Activity(Ok(manager))) => {
                self.reassign_to_manager(targets, manager)
            }
            (Body::Resolving { .. } | Body::Notify(_) | Body::Reassign { .. }, Signal::Activity(Err(failure))) => {
                Step::Fail(problem_of(&failure))
            }
            (Body::Listen(listen), signal) => {
                let input = self.task_input(id);
                let step = self.listen_signal(id, node, &input, *listen, signal);
                if !matches!(step, Step::Pending) {
                    self.stop_listening(id);
                }
                step
            }
            (body, _) => {
                self.set_body(id, body);
                Step::Pending
            }
        }
    }

    fn catch(
        &mut self,
        id: FrameId,
        node: &Node,
        input: &Value,
        attempt: u32,
        first_at: DateTime<Utc>,
        error: Problem,
    ) -> Step {
        let Kind::Try(try_) = &node.kind else { return Step::Fail(error) };
        let error_value = error.to_value();
        let extra = [(try_.as_.as_str(), error_value.clone())];
        let scope = Scope { frame: Some(id), input, output: None, extra: &extra };
        if let Some(filter) = &try_.filter {
            match self.eval_template(filter, &scope) {
                Ok(expected) => {
                    if !error_matches(&error, &expected) {
                        return Step::Fail(error);
                    }
                }
                Err(e) => return Step::Fail(e),
            }
        }
        for (condition, wanted) in [(&try_.when, true), (&try_.except_when, false)] {
            if let Some(condition) = condition {
                match self.eval_bool(condition, &scope) {
                    Ok(b) if b != wanted => return Step::Fail(error),
                    Ok(_) => {}
                    Err(e) => return Step::Fail(e),
                }
            }
        }
        if let Some(retry) = &try_.retry {
            let mut retry_ok = true;
            for (condition, wanted) in [(&retry.when, true), (&retry.except_when, false)] {
                if let Some(condition) = condition {
                    match self.eval_bool(condition, &scope) {
                        Ok(b) => retry_ok &= b == wanted,
                        Err(e) => return Step::Fail(e),
                    }
                }
            }
            let next = attempt + 1;
            retry_ok &= retry.max_attempts.is_none_or(|max| next <= max);
            let mut delay = retry.delay_for(next);
            if let Some((from, to)) = retry.jitter {
                delay += jitter(self.ctx.instance_id(), &node.reference, next, from, to);
            }
            let at = later(self.now(), delay);
            if let Some(limit) = retry.max_duration {
                retry_ok &= at <= later(first_at, limit);
            }
            if retry_ok {
                let seq = self.ctx.start_timer(at);
                self.wait_on(id, seq);
                self.set_body(id, Body::Try { attempt: next, first_at, phase: TryPhase::Delay(seq) });
                return Step::Pending;
            }
            if try_.handler.is_none() {
                return Step::Fail(error);
            }
        }
        match try_.handler {
            None => Step::Done(input.clone()),
            Some(handler) => {
                let mut vars = self.vars_of(id);
                vars.insert(try_.as_.clone(), error_value);
                self.set_body(id, Body::Try { attempt, first_at, phase: TryPhase::Handler });
                self.start_sequence(id, handler, input.clone(), vars);
                Step::Pending
            }
        }
    }

    fn complete_task(&mut self, id: FrameId, node: &Node, raw_output: Value, then: Option<Then>) {
        let result = (|| {
            let scope = Scope { frame: Some(id), input: &raw_output, output: None, extra: &[] };
            let output = match &node.output_as {
                None => raw_output.clone(),
                Some(t) => self.transform(t, &scope)?,
            };
            if let Some(schema) = &node.output_schema {
                check(schema, &output, "The task output is invalid", &format!("{}/output/schema", node.reference))?;
            }
            if let Some(t) = &node.export_as {
                let scope = Scope { frame: Some(id), input: &output, output: Some(&output), extra: &[] };
                let context = self.transform(t, &scope)?;
                if let Some(schema) = &node.export_schema {
                    check(
                        schema,
                        &context,
                        "The exported context is invalid",
                        &format!("{}/export/schema", node.reference),
                    )?;
                }
                self.state.context = self.mask(context);
            }
            Ok(output)
        })();
        match result {
            Ok(output) => {
                self.observe("task.completed", Some(node), None);
                let then = then.unwrap_or_else(|| node.then.clone());
                self.finish(id, Ok((output, then)));
            }
            Err(error) => self.fail_task(id, node, error),
        }
    }

    fn fail_task(&mut self, id: FrameId, node: &Node, error: Problem) {
        let error = self.mask_problem(error.with_instance(&node.reference));
        self.observe("task.faulted", Some(node), Some(&error));
        let children: Vec<FrameId> =
            self.state.frames.iter().filter(|(_, f)| f.parent == Some(id)).map(|(&c, _)| c).collect();
        for child in children {
            self.cancel(child);
        }
        self.finish(id, Err(error));
    }

    // ---- events ----------------------------------------------------------------------------

    fn emit(&mut self, event: Value) -> Value {
        let mut event = match event {
            Value::Object(fields) => fields,
            other => {
                let mut fields = Map::new();
                fields.insert("data".into(), other);
                fields
            }
        };
        self.state.emitted += 1;
        let id = format!("{}-{}", self.ctx.instance_id(), self.state.emitted);
        event.entry("id").or_insert(Value::String(id));
        event.entry("specversion").or_insert(Value::String("1.0".into()));
        event.entry("time").or_insert(Value::String(self.now().to_rfc3339_opts(SecondsFormat::Millis, true)));
        event.entry("datacontenttype").or_insert(Value::String("application/json".into()));
        let event = self.mask(Value::Object(event));
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("cloudevent").to_owned();
        self.ctx.emit(kind, event.clone());
        event
    }

    fn listen_signal(
        &mut self,
        id: FrameId,
        node: &Node,
        input: &Value,
        mut listen: ListenState,
        signal: Signal,
    ) -> Step {
        let Kind::Listen(spec) = &node.kind else { return Step::Pending };
        match signal {
            Signal::Event { wait, payload } => {
                let Some((index, until)) = listen.waits.remove(&wait) else {
                    self.set_body(id, Body::Listen(Box::new(listen)));
                    return Step::Pending;
                };
                let filters: &[Filter] = match (&spec.strategy, until) {
                    (Strategy::Any { until: Some(Until::Events(s)), .. }, true) => strategy_filters(s),
                    (Strategy::One(f), false) => std::slice::from_ref(f),
                    (Strategy::All(fs), false) | (Strategy::Any { filters: fs, .. }, false) => fs,
                    _ => &[],
                };
                let matched = match filters.get(index) {
                    None => true,
                    Some(filter) => match self.filter_matches(id, filter, &payload, input, &mut listen.correlation) {
                        Ok(m) => m,
                        Err(e) => return Step::Fail(e),
                    },
                };
                let name = filters.get(index).and_then(|f| f.event_type.clone()).unwrap_or_else(|| ANY_EVENT.into());
                let rewait = |m: &mut Self, listen: &mut ListenState| {
                    let seq = m.wait_event(name.clone());
                    m.wait_on(id, seq);
                    listen.waits.insert(seq, (index, until));
                };
                if !matched {
                    rewait(self, &mut listen);
                    self.set_body(id, Body::Listen(Box::new(listen)));
                    return Step::Pending;
                }
                if until {
                    listen.satisfied = match &spec.strategy {
                        Strategy::Any { until: Some(Until::Events(strategy)), .. } => match strategy.as_ref() {
                            Strategy::All(all) => {
                                listen.until_matched.resize(all.len(), false);
                                if let Some(slot) = listen.until_matched.get_mut(index) {
                                    *slot = true;
                                }
                                listen.until_matched.iter().all(|m| *m)
                            }
                            Strategy::One(_) | Strategy::Any { .. } => true,
                        },
                        _ => true,
                    };
                } else {
                    let read = read_event(&payload, spec.read);
                    listen.consumed.push(read.clone());
                    match &spec.strategy {
                        Strategy::One(_) => listen.satisfied = true,
                        Strategy::All(_) => {
                            if let Some(slot) = listen.matched.get_mut(index) {
                                *slot = Some(read.clone());
                            }
                            listen.satisfied = listen.matched.iter().all(Option::is_some);
                        }
                        Strategy::Any { until: None, .. } => listen.satisfied = true,
                        Strategy::Any { until: Some(Until::Expr(condition)), .. } => {
                            let consumed = Value::Array(listen.consumed.clone());
                            let scope = Scope { frame: Some(id), input: &consumed, output: None, extra: &[] };
                            match self.eval_bool(condition, &scope) {
                                Ok(done) => listen.satisfied = done,
                                Err(e) => return Step::Fail(e),
                            }
                            if !listen.satisfied {
                                rewait(self, &mut listen);
                            }
                        }
                        Strategy::Any { until: Some(Until::Events(_)), .. } => rewait(self, &mut listen),
                    }
                    if spec.foreach.is_some() {
                        listen.queue.push_back(read);
                    }
                }
                if listen.satisfied {
                    // Done listening, even while `foreach` catches up: no wait stays to take an
                    // event meant for a later listener.
                    for seq in std::mem::take(&mut listen.waits).into_keys() {
                        self.state.waits.remove(&seq);
                        self.ctx.cancel_wait(seq);
                    }
                }
                self.listen_progress(id, node, listen)
            }
            Signal::Done { output, then, .. } => {
                if then == Then::End {
                    return Step::DoneThen(output, Then::End);
                }
                listen.running = false;
                let output = match spec.foreach.as_ref().and_then(|f| f.output_as.as_ref()) {
                    None => output,
                    Some(t) => {
                        match self.transform(t, &Scope { frame: Some(id), input: &output, output: None, extra: &[] }) {
                            Ok(v) => v,
                            Err(e) => return Step::Fail(e),
                        }
                    }
                };
                listen.outputs.push(output);
                listen.processed += 1;
                self.listen_progress(id, node, listen)
            }
            Signal::Failed { error, .. } => Step::Fail(error),
            _ => {
                self.set_body(id, Body::Listen(Box::new(listen)));
                Step::Pending
            }
        }
    }

    fn listen_progress(&mut self, id: FrameId, node: &Node, mut listen: ListenState) -> Step {
        let Kind::Listen(spec) = &node.kind else { return Step::Pending };
        if let Some(foreach) = &spec.foreach
            && !listen.running
            && let Some(event) = listen.queue.pop_front()
        {
            match foreach.body {
                Some(body) => {
                    let mut vars = self.vars_of(id);
                    vars.insert(foreach.item.clone(), event.clone());
                    vars.insert(foreach.at.clone(), Value::from(listen.processed));
                    listen.running = true;
                    self.set_body(id, Body::Listen(Box::new(listen)));
                    self.start_sequence(id, body, event, vars);
                    return Step::Pending;
                }
                None => {
                    listen.outputs.push(event);
                    listen.processed += 1;
                    return self.listen_progress(id, node, listen);
                }
            }
        }
        if listen.satisfied && !listen.running && listen.queue.is_empty() {
            for seq in listen.waits.keys() {
                self.state.waits.remove(seq);
                self.ctx.cancel_wait(*seq);
            }
            let output = if spec.foreach.is_some() { listen.outputs } else { listen.consumed };
            return Step::Done(Value::Array(output));
        }
        self.set_body(id, Body::Listen(Box::new(listen)));
        Step::Pending
    }

    fn filter_matches(
        &mut self,
        id: FrameId,
        filter: &Filter,
        event: &Value,
        input: &Value,
        correlation: &mut BTreeMap<String, Value>,
    ) -> Result<bool, Problem> {
        for (attribute, matcher) in &filter.attributes {
            let actual = event.get(attribute).cloned().unwrap_or(Value::Null);
            let ok = match matcher {
                AttributeMatch::Exact(wanted) => crate::model::attribute_matches(wanted, &actual),
                AttributeMatch::Expr(expr) => {
                    self.eval_bool(expr, &Scope { frame: Some(id), input: &actual, output: None, extra: &[] })?
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        // First values are fixed only by an event that matches as a whole.
        let mut first_seen = Vec::new();
        for c in &filter.correlate {
            let value = self.eval(&c.from, &Scope { frame: Some(id), input: event, output: None, extra: &[] })?;
            let expected = match &c.expect {
                Some(t) => Some(self.eval_template(t, &Scope { frame: Some(id), input, output: None, extra: &[] })?),
                None => correlation.get(&c.key).cloned(),
            };
            match expected {
                Some(expected) if expected != value => return Ok(false),
                Some(_) => {}
                None => first_seen.push((c.key.clone(), value)),
            }
        }
        correlation.extend(first_seen);
        Ok(true)
    }

    // ---- expressions -----------------------------------------------------------------------

    fn secrets(&mut self) -> Value {
        if let Some(secrets) = &self.secrets {
            return secrets.clone();
        }
        let program = &self.wf.program;
        let mut map = Map::new();
        if let Some(provider) = &self.wf.secrets {
            for name in &program.secrets {
                if let Some(value) = provider.get(name) {
                    map.insert(name.clone(), value);
                }
            }
        }
        let secrets = Value::Object(map);
        self.secrets = Some(secrets.clone());
        secrets
    }

    /// An error's text can quote a value an expression saw; it goes to observers, `catch`
    /// variables and history, so it is masked too.
    fn mask_problem(&mut self, problem: Problem) -> Problem {
        if !self.wf.program.uses_secrets {
            return problem;
        }
        let masked = self.mask(problem.to_value());
        serde_json::from_value(masked).unwrap_or(problem)
    }

    /// Replaces secret values in anything bound for history.
    fn mask(&mut self, value: Value) -> Value {
        if !self.wf.program.uses_secrets {
            return value;
        }
        let secrets = self.secrets();
        crate::expr::mask(&value, &secrets)
    }

    fn vars(&mut self, scope: &Scope<'_>, uses: &dyn Fn(&str) -> bool) -> Vars {
        let mut vars = Vars::new().with("context", self.state.context.clone());
        let program = Arc::clone(&self.wf.program);
        if let Some(frame) = scope.frame.and_then(|f| self.state.frames.get(&f)) {
            for (name, value) in &frame.vars {
                vars.set(name, value.clone());
            }
            if let FrameKind::Task(task) = &frame.kind {
                vars.set("input", task.input.clone());
                if uses("task") {
                    let node = program.node(task.node);
                    vars.set(
                        "task",
                        json!({
                            "name": node.name,
                            "reference": node.reference,
                            "definition": node.definition,
                            "input": task.raw_input,
                            "startedAt": iso(task.started_at),
                        }),
                    );
                }
            }
        }
        if let Some(output) = scope.output {
            vars.set("output", output.clone());
        }
        for (name, value) in scope.extra {
            vars.set(name, value.clone());
        }
        if uses("workflow") {
            vars.set(
                "workflow",
                json!({
                    "id": self.ctx.instance_id().to_string(),
                    "definition": *program.definition,
                    "input": self.state.raw_input,
                    "startedAt": iso(self.state.started_at.unwrap_or_else(|| self.now())),
                }),
            );
        }
        if uses("runtime") {
            vars.set("runtime", json!({"name": "baton", "version": env!("CARGO_PKG_VERSION"), "metadata": {}}));
        }
        if uses("secrets") {
            let secrets = self.secrets();
            vars.set("secrets", secrets);
        }
        vars
    }

    fn eval(&mut self, expr: &Expr, scope: &Scope<'_>) -> Result<Value, Problem> {
        let vars = self.vars(scope, &|name| expr.uses(name));
        let value = expr.eval(scope.input, &vars, &self.wf.limits).map_err(expr_problem)?;
        Ok(self.mask(value))
    }

    fn eval_bool(&mut self, expr: &Expr, scope: &Scope<'_>) -> Result<bool, Problem> {
        let vars = self.vars(scope, &|name| expr.uses(name));
        expr.eval_bool(scope.input, &vars, &self.wf.limits).map_err(expr_problem)
    }

    fn eval_template(&mut self, template: &Template, scope: &Scope<'_>) -> Result<Value, Problem> {
        if template.is_constant() {
            return template.eval(scope.input, &Vars::new(), &self.wf.limits).map_err(expr_problem);
        }
        let vars = self.vars(scope, &|name| template.uses(name));
        let value = template.eval(scope.input, &vars, &self.wf.limits).map_err(expr_problem)?;
        Ok(self.mask(value))
    }

    fn transform(&mut self, transform: &Transform, scope: &Scope<'_>) -> Result<Value, Problem> {
        match transform {
            Transform::Template(t) => self.eval_template(t, scope),
            Transform::Expr(e) => self.eval(e, scope),
        }
    }
}

enum Step {
    Pending,
    Done(Value),
    DoneThen(Value, Then),
    Fail(Problem),
}

fn strategy_filters(strategy: &Strategy) -> &[Filter] {
    match strategy {
        Strategy::One(f) => std::slice::from_ref(f),
        Strategy::All(fs) | Strategy::Any { filters: fs, .. } => fs,
    }
}

fn read_event(event: &Value, read: Read) -> Value {
    match read {
        Read::Envelope => event.clone(),
        Read::Data | Read::Raw => event.get("data").cloned().unwrap_or(Value::Null),
    }
}

fn put(target: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = target;
    for key in parents {
        if !at.is_object() {
            return;
        }
        at = at
            .as_object_mut()
            .map(|o| o.entry(key.clone()).or_insert_with(|| Value::Object(Map::new())))
            .unwrap_or_else(|| unreachable!());
    }
    // A string endpoint (`endpoint: https://...`) has no room for a policy: it stays as written.
    if let Value::Object(fields) = at {
        fields.insert(last.clone(), value);
    }
}

/// `at + duration`, or the end of time when that is past it (a `wait` of a hundred million days
/// must not overflow).
fn later(at: DateTime<Utc>, duration: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration).ok().and_then(|d| at.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn check(schema: &Schema, value: &Value, title: &str, pointer: &str) -> Result<(), Problem> {
    schema.check(value).map_err(|m| validation(title, m, pointer))
}

fn validation(title: &str, message: String, pointer: &str) -> Problem {
    Problem::standard(Standard::Validation, title, message).with_instance(pointer)
}

fn expression_error(detail: String) -> Problem {
    Problem::standard(Standard::Expression, "Runtime expression failed", detail)
}

fn expr_problem(error: ExprError) -> Problem {
    let title = match error.kind {
        ExprErrorKind::Budget => "Runtime expression ran past its budget",
        ExprErrorKind::Limit => "Runtime expression produced too much",
        _ => "Runtime expression failed",
    };
    Problem::standard(Standard::Expression, title, error.message)
}

/// An activity's or child's failure as a problem: its details when they are one, else its
/// kind and message.
fn problem_of(failure: &Failure) -> Problem {
    if let Some(details) = &failure.details
        && details.get("type").is_some()
    {
        return Problem::from_value(details, Standard::Runtime);
    }
    let mut problem = Problem::standard(Standard::Runtime, failure.message.clone(), "");
    if failure.kind.contains("://") {
        problem.kind = failure.kind.clone();
    } else {
        problem.extra.insert("reason".into(), Value::String(failure.kind.clone()));
    }
    problem
}

/// Whether an error matches a catch filter's `errors.with` (every field given must match).
fn error_matches(error: &Problem, expected: &Value) -> bool {
    let Some(fields) = expected.as_object() else { return true };
    let actual = error.to_value();
    fields.iter().all(|(key, wanted)| match key.as_str() {
        "type" => wanted.as_str().is_some_and(|w| same_type(w, &error.kind)),
        "status" => {
            let wanted = wanted.as_i64().or_else(|| wanted.as_str().and_then(|s| s.parse().ok()));
            wanted.is_some() && wanted == error.status_code()
        }
        _ => actual.get(key) == Some(wanted),
    })
}

/// A jitter drawn from the instance, the task and the attempt: the same on every replay.
fn jitter(
    instance: &InstanceId,
    reference: &str,
    attempt: u32,
    from: std::time::Duration,
    to: std::time::Duration,
) -> std::time::Duration {
    if to <= from {
        return from;
    }
    let hash = crate::model::stable_hash([instance.0.as_bytes(), reference.as_bytes(), &attempt.to_le_bytes()]);
    let span = (to - from).as_millis().max(1) as u64;
    from + std::time::Duration::from_millis(hash % span)
}
