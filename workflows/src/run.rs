//! Runs one instance of a definition to its end: what `baton run` and the conformance kit use.
//!
//! The definition runs on a real engine (a temporary SQLite store unless a file is named) with
//! simulated time: whenever the instance has nothing to do but wait for a timer, the clock
//! jumps to that timer, so timers fire in order without waiting.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_engine::directory::Organisation;
use baton_engine::history::{Actor, InstanceId};
use baton_engine::human::{HumanTaskStatus, Principal, TaskAction};
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};
use baton_engine::{
    ActivityRegistry, ClockMode, Engine, EngineOptions, InstanceStatus, ManualClock, RaiseEvent, SecretProvider,
    StartOptions, Store,
};
use serde::Serialize;
use serde_json::Value;

use crate::diagnostic::Severity;
use crate::interp::{Lifecycle, Observer, Workflow};
use crate::model::{CompileOptions, Program};

/// Where lifecycle events go as they happen.
pub type LifecycleSink = Arc<dyn Fn(&Lifecycle) + Send + Sync>;

/// What to run and with what.
#[derive(Default)]
pub struct RunOptions {
    /// The workflow's input.
    pub input: Value,
    /// CloudEvents (structured JSON) delivered in order once the instance has started; events
    /// that come before their listener wait for it.
    pub events: Vec<Value>,
    /// Activities the definition may call, by name (`http` and the other built-ins included).
    pub activities: ActivityRegistry,
    /// The SQLite file to keep; a temporary one when `None`.
    pub db: Option<PathBuf>,
    /// Real time instead of simulated time.
    pub real_clock: bool,
    /// Where `use.secrets` come from.
    pub secrets: Option<Arc<dyn SecretProvider>>,
    /// How long an event that arrives before its listener is kept (forever when `None`).
    pub event_retention: Option<Duration>,
    /// Compile `run: shell` and `run: script` tasks to the `baton.process` activity instead of
    /// refusing them; the activity must be registered in `activities`.
    pub allow_processes: bool,
    /// Called with each lifecycle event as it happens (`--trace`).
    pub on_lifecycle: Option<LifecycleSink>,
    /// Business calendars shared by definitions (a definition's own `use.calendars` win).
    pub calendars: Option<Arc<baton_sla::Calendars>>,
    /// People imported into the run's directory before the instance starts.
    pub directory: Option<Organisation>,
    /// Answers to human tasks, given in order as the tasks open (`--complete`).
    pub answers: Vec<TaskAnswer>,
    /// Registers activities that need the run's store (the directory, notifications).
    pub store_activities: Option<StoreActivities>,
    /// The longest the run may take in real time; beyond it the run stops with
    /// [`RunError::TimedOut`] (a definition that loops forever, say). No limit when `None`.
    pub time_limit: Option<Duration>,
}

/// Registers activities that work on the run's store (and may need the definition, such as
/// its notification templates); an error stops the run before it starts.
pub type StoreActivities = Arc<dyn Fn(StoreContext<'_>, &mut ActivityRegistry) -> Result<(), String> + Send + Sync>;

/// What [`StoreActivities`] gets.
pub struct StoreContext<'a> {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn baton_engine::Clock>,
    pub program: &'a Program,
    /// The definition's key, `namespace/name@version`.
    pub definition: &'a str,
}

impl std::fmt::Debug for StoreContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreContext").field("definition", &self.definition).finish_non_exhaustive()
    }
}

/// How a run answers a human task: the next open task named `task` is completed with
/// `outcome` and `data` by `by` (acting as an administrator, so any task can be answered).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskAnswer {
    pub task: String,
    pub outcome: String,
    pub data: Value,
    pub by: String,
}

impl TaskAnswer {
    /// Reads `TASK=OUTCOME` or `TASK=OUTCOME:JSON`.
    pub fn parse(text: &str, by: &str) -> Result<Self, String> {
        let (task, rest) =
            text.split_once('=').ok_or_else(|| format!("`{text}`: expected TASK=OUTCOME or TASK=OUTCOME:JSON"))?;
        let (outcome, data) = match rest.split_once(':') {
            Some((outcome, json)) => {
                (outcome, serde_json::from_str(json).map_err(|e| format!("`{text}`: the data is not JSON: {e}"))?)
            }
            None => (rest, Value::Null),
        };
        if task.trim().is_empty() || outcome.trim().is_empty() {
            return Err(format!("`{text}`: expected TASK=OUTCOME"));
        }
        Ok(Self { task: task.trim().to_owned(), outcome: outcome.trim().to_owned(), data, by: by.to_owned() })
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("input", &self.input)
            .field("events", &self.events.len())
            .field("activities", &self.activities)
            .field("db", &self.db)
            .field("real_clock", &self.real_clock)
            .finish_non_exhaustive()
    }
}

/// How the run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunOutcome {
    Completed {
        output: Value,
    },
    /// The workflow faulted: `error` is the RFC 7807 problem (type, status, title, detail, instance).
    Faulted {
        error: Value,
    },
}

/// One task lifecycle event, in the order they happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceEvent {
    /// `task.started`, `task.completed`, `task.faulted`, `task.cancelled`, `task.skipped`,
    /// `task.retried`.
    pub kind: String,
    /// The task's name (`getPet`).
    pub task: String,
    /// The task's JSON pointer in the definition (`/do/0/getPet`).
    pub reference: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    pub instance: String,
    pub outcome: RunOutcome,
    pub trace: Vec<TraceEvent>,
    /// The time the instance saw pass from its start to its end, in milliseconds: simulated
    /// time (timers that fired at once count their whole delay) unless the clock is real.
    pub elapsed_ms: i64,
    /// The timers that fired (waits, timeouts, SLA deadlines...).
    pub timers_fired: u32,
}

/// Why a run could not happen at all (the definition is invalid, the store cannot open...).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the definition is invalid:\n{0}")]
    Invalid(String),
    /// The engine refused something the run gave it: the input, an event, an answer.
    #[error("{given}: {error}")]
    Refused { given: Given, error: Box<baton_engine::EngineError> },
    #[error("{0}")]
    Engine(String),
    /// Nothing left to do but the instance has not ended: it waits for an event nobody gave.
    #[error("the instance is stuck: {0}")]
    Stuck(Stuck),
    /// The run took longer than [`RunOptions::time_limit`].
    #[error("the run took longer than {0:?}")]
    TimedOut(Duration),
}

/// What a run gave the engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Given {
    /// The workflow's input, at the start.
    Input,
    /// The event at this index of [`RunOptions::events`].
    Event(usize),
    /// An answer to a human task.
    Answer { task: String, outcome: String },
}

impl std::fmt::Display for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Input => write!(f, "the start"),
            Self::Event(index) => write!(f, "--event #{}", index + 1),
            Self::Answer { task, outcome } => write!(f, "--complete {task}={outcome}"),
        }
    }
}

/// Why an instance cannot go on.
#[derive(Clone, Debug, PartialEq)]
pub enum Stuck {
    /// Incidents were raised (`onError: incident`); their reasons.
    Incident(Vec<String>),
    /// It waits for a human task no answer was given for.
    HumanTask { name: String, title: String, outcomes: Vec<String> },
    /// It waits for an event that was not given.
    Event,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incident(reasons) => write!(f, "an incident was raised: {}", reasons.join("; ")),
            Self::HumanTask { name, title, outcomes } => write!(
                f,
                "it waits for the human task `{name}` ({title}): answer it with --complete {name}={}",
                outcomes.join("|")
            ),
            Self::Event => write!(f, "it waits for an event that was not given (--event)"),
        }
    }
}

impl From<baton_engine::EngineError> for RunError {
    fn from(error: baton_engine::EngineError) -> Self {
        Self::Engine(error.to_string())
    }
}

struct Collector {
    instance: Mutex<Option<InstanceId>>,
    events: Mutex<Vec<TraceEvent>>,
    forward: Option<LifecycleSink>,
}

impl Observer for Collector {
    fn observe(&self, instance: &InstanceId, event: &Lifecycle) {
        let main = self.instance.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if main.as_ref().is_some_and(|m| m != instance) {
            return;
        }
        if let Some(forward) = &self.forward {
            forward(event);
        }
        if event.task.is_empty() {
            return;
        }
        let kind = event.kind.trim_start_matches("io.serverlessworkflow.").trim_end_matches(".v1").to_owned();
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(TraceEvent {
            kind,
            task: event.task.clone(),
            reference: event.reference.clone(),
        });
    }
}

/// Parses, validates and compiles a definition, or gives the rendered diagnostics.
pub fn load(source: &str, file: &str) -> Result<Program, RunError> {
    load_with(source, file, &CompileOptions::default())
}

/// [`load`] with what the administrator allows.
pub fn load_with(source: &str, file: &str, options: &CompileOptions) -> Result<Program, RunError> {
    let (parsed, diagnostics) =
        crate::validate::check(file, source.as_bytes(), &crate::validate::ValidateOptions::default());
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
    if !errors.is_empty() {
        return Err(RunError::Invalid(errors.iter().map(|d| d.render(source)).collect::<Vec<_>>().join("\n")));
    }
    let parsed = parsed.ok_or_else(|| RunError::Invalid(format!("{file}: could not be read")))?;
    Program::compile_with(parsed.value, options).map_err(|e| RunError::Invalid(format!("{file}: {e}")))
}

/// A stable hash of a definition's text (FNV-1a, 64 bits): the engine refuses a different text
/// under the same version.
pub fn content_hash(source: &str) -> String {
    format!("{:016x}", crate::model::stable_hash([source.as_bytes()]))
}

/// Parses, validates and runs `source` (YAML or JSON, named `file` in diagnostics) once.
pub async fn run_definition(source: &str, file: &str, options: RunOptions) -> Result<RunReport, RunError> {
    let program = Arc::new(load_with(source, file, &CompileOptions { processes: options.allow_processes })?);
    let collector = Arc::new(Collector {
        instance: Mutex::new(None),
        events: Mutex::new(Vec::new()),
        forward: options.on_lifecycle.clone(),
    });
    let mut workflow = Workflow::new(Arc::clone(&program), content_hash(source)).with_observer(collector.clone());
    if let Some(secrets) = &options.secrets {
        workflow = workflow.with_secrets(Arc::clone(secrets));
    }
    if let Some(retention) = options.event_retention {
        workflow = workflow.with_event_retention(retention);
    }
    if let Some(calendars) = &options.calendars {
        workflow = workflow.with_calendars(Arc::clone(calendars));
    }
    let key = workflow.definition_key();

    let temp =
        tempfile::tempdir().map_err(|e| RunError::Engine(format!("cannot create a temporary directory: {e}")))?;
    let path = options.db.clone().unwrap_or_else(|| temp.path().join("run.db"));
    let path = path.to_str().ok_or_else(|| RunError::Engine("the database path is not UTF-8".into()))?.to_owned();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&path, SqliteOptions::default()).await.map_err(|e| RunError::Engine(e.to_string()))?,
    );
    if let Some(organisation) = &options.directory {
        organisation.check().map_err(|problems| RunError::Invalid(problems.join("\n")))?;
        store.import(organisation).await.map_err(|e| RunError::Engine(e.to_string()))?;
    }
    let simulated = !options.real_clock;
    let clock: Arc<dyn baton_engine::Clock> =
        if simulated { Arc::new(ManualClock::offset(0)) } else { Arc::new(baton_engine::SystemClock) };
    let mut activities = options.activities;
    if let Some(register) = &options.store_activities {
        let context =
            StoreContext { store: Arc::clone(&store), clock: Arc::clone(&clock), program: &program, definition: &key };
        register(context, &mut activities).map_err(RunError::Invalid)?;
    }
    let mut builder = Engine::builder().store(store).orchestration(workflow).activities(activities).clock(clock);
    if simulated {
        builder = builder.options(EngineOptions { clock: ClockMode::Manual, ..EngineOptions::default() });
    }
    let engine = builder.build().await?;
    let run = Run { events: options.events, answers: options.answers, simulated };
    let driven = drive(&engine, &key, options.input, run, &collector);
    let result = match options.time_limit {
        Some(limit) => tokio::time::timeout(limit, driven).await.unwrap_or(Err(RunError::TimedOut(limit))),
        None => driven.await,
    };
    let result = match result {
        Ok((instance, outcome)) => timing(&engine, &instance).await.map(|timing| (instance, outcome, timing)),
        Err(error) => Err(error),
    };
    engine.shutdown().await;
    let (instance, outcome, (elapsed_ms, timers_fired)) = result?;
    let trace = std::mem::take(&mut *collector.events.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(RunReport { instance: instance.to_string(), outcome, trace, elapsed_ms, timers_fired })
}

/// The time an ended instance spanned, from its history's first event to its last, and the
/// timers that fired in it.
async fn timing(engine: &Engine, id: &InstanceId) -> Result<(i64, u32), RunError> {
    const PAGE: u32 = 1000;
    // The persisted tag of `EventKind::TimerFired`: tags are stored, so they never change.
    const TIMER_FIRED: u16 = 6;
    let (mut first, mut last, mut fired, mut from) = (None, 0, 0, 0);
    loop {
        let events = engine.history(id, from, PAGE).await?;
        for event in &events {
            first.get_or_insert(event.at_ms);
            last = event.at_ms;
            fired += u32::from(event.tag == TIMER_FIRED);
        }
        match events.last() {
            Some(event) if events.len() == PAGE as usize => from = event.seq + 1,
            _ => return Ok((first.map_or(0, |first| last - first), fired)),
        }
    }
}

/// What a run gives the instance besides its input.
struct Run {
    events: Vec<Value>,
    answers: Vec<TaskAnswer>,
    simulated: bool,
}

async fn drive(
    engine: &Engine,
    key: &str,
    input: Value,
    run: Run,
    collector: &Collector,
) -> Result<(InstanceId, RunOutcome), RunError> {
    let Run { events, mut answers, simulated } = run;
    let id = InstanceId::new(format!("run-{}", uuid_like()));
    *collector.instance.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
    engine
        .start(key, input, StartOptions { id: Some(id.clone()), ..StartOptions::default() })
        .await
        .map_err(|error| RunError::Refused { given: Given::Input, error: Box::new(error) })?;
    for (index, event) in events.into_iter().enumerate() {
        let name = event.get("type").and_then(Value::as_str).unwrap_or(baton_engine::ANY_EVENT).to_owned();
        let event_id = event.get("id").and_then(Value::as_str).map(str::to_owned);
        engine
            .raise_event(&id, RaiseEvent { name, payload: event, event_id, actor: Actor::System })
            .await
            .map_err(|error| RunError::Refused { given: Given::Event(index), error: Box::new(error) })?;
    }
    let mut idle_rounds = 0u32;
    loop {
        let waited = tokio::time::timeout(Duration::from_millis(10), engine.wait(&id)).await;
        if let Ok(outcome) = waited {
            let outcome = outcome?;
            let result = outcome.result.unwrap_or(Value::Null);
            return Ok((
                id,
                match outcome.status {
                    InstanceStatus::Completed => RunOutcome::Completed { output: result },
                    _ => RunOutcome::Faulted { error: result.get("details").cloned().unwrap_or(result) },
                },
            ));
        }
        let description = engine.describe(&id).await?;
        if !description.incidents.is_empty() {
            let reasons: Vec<_> = description.incidents.iter().map(|i| i.reason.clone()).collect();
            return Err(RunError::Stuck(Stuck::Incident(reasons)));
        }
        if !description.tasks.is_empty() {
            idle_rounds = 0;
            continue;
        }
        // People answer before time moves on: an answered task never sees its SLA run out.
        let open: Vec<_> = engine
            .store()
            .human_tasks_of(&id)
            .await
            .map_err(|e| RunError::Engine(e.to_string()))?
            .into_iter()
            .filter(|row| row.task.status == HumanTaskStatus::Open)
            .collect();
        if let Some((row, index)) =
            open.iter().find_map(|row| answers.iter().position(|a| a.task == row.task.spec.name).map(|i| (row, i)))
        {
            let answer = answers.remove(index);
            let principal = Principal { admin: true, ..Principal::user(answer.by.clone()) };
            let given = Given::Answer { task: answer.task.clone(), outcome: answer.outcome.clone() };
            let action = TaskAction::Complete { outcome: answer.outcome, data: answer.data, on_behalf_of: None };
            engine
                .act_on_task(&id, row.seq, &principal, action)
                .await
                .map_err(|error| RunError::Refused { given, error: Box::new(error) })?;
            idle_rounds = 0;
            continue;
        }
        match description.timers.iter().map(|t| t.due_at).min() {
            Some(due) if simulated => {
                idle_rounds = 0;
                let now = engine.clock().now();
                if due > now {
                    engine.advance_clock((due - now).to_std().unwrap_or_default()).await?;
                }
            }
            Some(_) => idle_rounds = 0,
            None => {
                idle_rounds += 1;
                // Half a second with nothing running and nothing due: an event is missing.
                if idle_rounds > 50 {
                    if let Some(row) = open.first() {
                        let spec = &row.task.spec;
                        return Err(RunError::Stuck(Stuck::HumanTask {
                            name: spec.name.clone(),
                            title: spec.title.clone(),
                            outcomes: spec.allowed_outcomes(),
                        }));
                    }
                    return Err(RunError::Stuck(Stuck::Event));
                }
            }
        }
    }
}

/// An id unique enough for a run's instance (time and process based; the store is private).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}-{:x}", nanos, std::process::id())
}
