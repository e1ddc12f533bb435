//! A definition compiled for running: every task gets a [`NodeId`] in one arena, in document
//! order, with its expressions compiled once. The arena is a pure function of the definition's
//! text, so node ids in a stored instance's state stay valid across restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::duration;
use crate::expr::{Expr, ExprError, Mode, Template};

/// The arguments every runtime expression may name (without `$`).
pub const ARGUMENTS: &[&str] =
    &["context", "input", "output", "secrets", "task", "workflow", "runtime", "authorization"];

/// The variable an escalation rung's tasks see: the SLA they escalate (`$sla`).
pub const SLA_VARIABLE: &str = "sla";

pub type NodeId = u32;
pub type ListId = u32;

/// Why a definition could not be compiled.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct CompileError {
    pub pointer: String,
    pub message: String,
}

impl CompileError {
    fn new(pointer: &str, message: impl Into<String>) -> Self {
        Self { pointer: pointer.to_owned(), message: message.into() }
    }

    fn expr(pointer: &str, error: ExprError) -> Self {
        Self::new(pointer, format!("runtime expression: {}", error.message))
    }
}

/// `document:` of the definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub dsl: String,
    pub namespace: String,
    pub name: String,
    pub version: String,
}

impl Document {
    /// The key the engine registers the definition under: `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A JSON Schema compiled once.
#[derive(Clone)]
pub struct Schema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// The first violation, if any, as `pointer: message`.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self.0.iter_errors(value).next() {
            None => Ok(()),
            Some(error) => {
                let at = error.instance_path().to_string();
                Err(if at.is_empty() { error.to_string() } else { format!("{at}: {error}") })
            }
        }
    }
}

/// An `input.from`, `output.as` or `export.as`: a template (object or `${}` string), or in loose
/// mode a bare expression.
#[derive(Clone, Debug)]
pub enum Transform {
    Template(Template),
    Expr(Expr),
}

/// A flow directive.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Then {
    Continue,
    Exit,
    End,
    Goto(String),
}

impl Then {
    fn parse(text: &str) -> Self {
        match text {
            "continue" => Self::Continue,
            "exit" => Self::Exit,
            "end" => Self::End,
            name => Self::Goto(name.to_owned()),
        }
    }
}

/// One task, with what every task kind shares.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// The task's JSON pointer in the definition (`/do/0/getPet`): errors' `instance`.
    pub reference: String,
    /// The task's definition as written, for `$task.definition`.
    pub definition: Value,
    pub if_: Option<Expr>,
    pub input_schema: Option<Schema>,
    pub input_from: Option<Transform>,
    pub output_as: Option<Transform>,
    pub output_schema: Option<Schema>,
    pub export_as: Option<Transform>,
    pub export_schema: Option<Schema>,
    pub then: Then,
    pub timeout: Option<Duration>,
    /// `sla:`: a target with an escalation ladder, which never interrupts the task.
    pub sla: Option<Sla>,
    pub kind: Kind,
}

/// An `sla:` block, on a task or on the whole workflow.
#[derive(Debug)]
pub struct Sla {
    /// Business time allowed (under `calendar`, when one is named).
    pub within: WaitFor,
    pub calendar: Option<String>,
    /// When the SLA counts as at risk (default 80%).
    pub at_risk: baton_sla::Threshold,
    /// What pauses the clock.
    pub pause: SlaPause,
    /// The department dashboards file the SLA under (default: the human task's).
    pub department: Option<Expr>,
    pub escalate: Vec<Rung>,
}

/// When an SLA clock stops counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlaPause {
    /// While the instance is suspended (default: yes).
    pub suspended: bool,
    /// While a human task it covers waits on the request's initiator (default: no).
    pub initiator: bool,
}

/// One rung of an escalation ladder: its tasks run once the threshold is reached.
#[derive(Debug)]
pub struct Rung {
    pub after: baton_sla::Threshold,
    pub body: ListId,
}

/// What a task does.
#[derive(Debug)]
pub enum Kind {
    Call(Call),
    Do(ListId),
    Emit { event: Template },
    For(For),
    Fork { branches: ListId, compete: bool },
    Listen(Listen),
    Raise(Raise),
    Run(Run),
    Set(Template),
    Switch(Vec<Case>),
    Try(Try),
    Wait(WaitFor),
}

#[derive(Debug)]
pub enum Call {
    /// A built-in activity (`http`, `openapi`) or one registered by name: the activity gets the
    /// evaluated `with`. `passthrough` is spliced in as written (authentication policies, whose
    /// secret references only the activity resolves), with its other expressions evaluated.
    Activity { name: String, with: Template, passthrough: Vec<Passthrough>, protocol: bool },
    /// A `use.functions` entry: a task run with the evaluated `with` as its input.
    Function { node: NodeId, with: Template },
    /// A protocol or form Baton does not run; faults with this message when reached.
    Refused(String),
    /// `call: humanTask`: creates human tasks and waits for people to complete them.
    HumanTask { with: Template },
    /// `call: notify`: the `baton.notify` activity, with `assignee`/`initiator` resolved.
    Notify { with: Template },
    /// `call: reassignTask`: moves the open human tasks of an SLA's task to other people.
    ReassignTask { with: Template },
}

/// The built-in functions of Baton's people-and-deadlines extensions.
pub const HUMAN_TASK: &str = "humanTask";
pub const NOTIFY: &str = "notify";
pub const REASSIGN_TASK: &str = "reassignTask";
/// The activity `call: notify` schedules.
pub const NOTIFY_ACTIVITY: &str = "baton.notify";
/// The activity that finds a person's manager in the directory.
pub const MANAGER_OF_ACTIVITY: &str = "baton.directory.managerOf";

/// An authentication policy given to an activity as written: `$secrets` references stay for the
/// activity to resolve at call time; every other expression in it is evaluated first.
#[derive(Debug)]
pub struct Passthrough {
    /// Where it goes in the activity's input (`endpoint.authentication`).
    pub path: Vec<String>,
    pub value: Value,
    /// The expressions inside it that do not read secrets, by their path inside `value`.
    pub exprs: Vec<(Vec<String>, Expr)>,
}

#[derive(Debug)]
pub struct For {
    pub each: String,
    pub at: String,
    pub in_: Expr,
    pub while_: Option<Expr>,
    pub body: ListId,
}

#[derive(Debug)]
pub struct Listen {
    pub strategy: Strategy,
    pub read: Read,
    pub foreach: Option<Foreach>,
}

#[derive(Debug)]
pub enum Strategy {
    One(Filter),
    All(Vec<Filter>),
    Any { filters: Vec<Filter>, until: Option<Until> },
}

#[derive(Debug)]
pub enum Until {
    Expr(Expr),
    Events(Box<Strategy>),
}

/// An event filter: attributes that must match, and correlations.
#[derive(Debug)]
pub struct Filter {
    /// The CloudEvent type waited for, when the filter names one as a constant; the engine
    /// routes events to waits by type.
    pub event_type: Option<String>,
    pub attributes: Vec<(String, AttributeMatch)>,
    pub correlate: Vec<Correlation>,
}

#[derive(Debug)]
pub enum AttributeMatch {
    /// Equal, or matched as a regular expression when it is not a plain string.
    Exact(Value),
    /// A runtime expression evaluated against the attribute (`data: ${ .temperature > 38 }`).
    Expr(Expr),
}

#[derive(Debug)]
pub struct Correlation {
    pub key: String,
    pub from: Expr,
    pub expect: Option<Template>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Data,
    Envelope,
    Raw,
}

#[derive(Debug)]
pub struct Foreach {
    pub item: String,
    pub at: String,
    pub body: Option<ListId>,
    pub output_as: Option<Transform>,
}

#[derive(Debug)]
pub enum Raise {
    Inline(Template),
}

#[derive(Debug)]
pub enum Run {
    Workflow { definition: String, input: Template, await_: bool },
    Refused(String),
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub when: Option<Expr>,
    pub then: Then,
}

#[derive(Debug)]
pub struct Try {
    pub body: ListId,
    pub filter: Option<Template>,
    pub as_: String,
    pub when: Option<Expr>,
    pub except_when: Option<Expr>,
    pub retry: Option<Retry>,
    pub handler: Option<ListId>,
}

#[derive(Debug)]
pub struct Retry {
    pub when: Option<Expr>,
    pub except_when: Option<Expr>,
    pub delay: Duration,
    pub backoff: Backoff,
    pub max_attempts: Option<u32>,
    pub max_duration: Option<Duration>,
    pub jitter: Option<(Duration, Duration)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    Constant,
    Linear,
    Exponential,
}

impl Retry {
    /// The delay before retry number `attempt` (1 for the first retry), before jitter.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        match self.backoff {
            Backoff::Constant => self.delay,
            Backoff::Linear => self.delay.saturating_mul(attempt),
            Backoff::Exponential => self.delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30))),
        }
    }
}

#[derive(Debug)]
pub enum WaitFor {
    Fixed(Duration),
    Expr(Expr),
}

/// The tasks of one `do` (or `try`, `fork.branches`, `for.do`...) scope, in order.
#[derive(Debug, Default)]
pub struct TaskList {
    pub entries: Vec<NodeId>,
    index: HashMap<String, usize>,
}

impl TaskList {
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// A definition ready to run.
#[derive(Debug)]
pub struct Program {
    pub document: Document,
    /// The definition as parsed, for `$workflow.definition`.
    pub definition: Arc<Value>,
    pub mode: Mode,
    pub nodes: Vec<Node>,
    pub lists: Vec<TaskList>,
    pub root: ListId,
    pub input_schema: Option<Schema>,
    pub input_from: Option<Transform>,
    pub output_as: Option<Transform>,
    pub output_schema: Option<Schema>,
    pub timeout: Option<Duration>,
    /// `use.authentications`, as written.
    pub authentications: Value,
    /// `use.secrets`: the secrets `$secrets` may hold.
    pub secrets: Vec<String>,
    /// Whether any expression names `$secrets` (so they are loaded only when needed).
    pub uses_secrets: bool,
    /// The workflow-level `sla:`.
    pub sla: Option<Sla>,
    /// `use.calendars`: business calendars declared by the definition.
    pub calendars: baton_sla::Calendars,
    /// `use.templates`: notification templates declared by the definition, as written.
    pub templates: Value,
    /// What an error no task catches does (`document.metadata.baton.onError`).
    pub on_error: OnError,
    /// `schedule.on`: the events that start an instance.
    pub starts_on: Option<Arc<Strategy>>,
}

/// What an error no task catches does to an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// The workflow ends faulted, with the error as its result (the specification's rule).
    #[default]
    Fault,
    /// The instance stops where it is with an incident, which operators retry (a failed call
    /// runs again, with an edited input if they give one), complete by hand, or fix by moving
    /// the instance to a corrected version first.
    Incident,
}

impl Program {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn list(&self, id: ListId) -> &TaskList {
        &self.lists[id as usize]
    }

    /// Compiles a parsed (and validated) definition with the default options.
    pub fn compile(definition: Value) -> Result<Self, CompileError> {
        Self::compile_with(definition, &CompileOptions::default())
    }

    /// Compiles a parsed (and validated) definition with what the administrator allows.
    pub fn compile_with(definition: Value, options: &CompileOptions) -> Result<Self, CompileError> {
        Compiler { processes: options.processes, ..Compiler::default() }.program(definition)
    }
}

/// What an administrator allows definitions to do, decided when they are compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Whether `run: shell` and `run: script` tasks run, as the `baton.process` activity (whose
    /// own policy decides which kinds, with what timeout and environment). When false, the
    /// default, they fault with a configuration error when reached.
    pub processes: bool,
}

/// The activity that runs `run: shell` and `run: script` tasks when processes are allowed.
pub const PROCESS_ACTIVITY: &str = "baton.process";

const PROTOCOLS_RUN: &[&str] = &["http", "openapi"];
const PROTOCOLS_REFUSED: &[&str] = &["grpc", "asyncapi", "a2a", "mcp"];

#[derive(Default)]
struct Compiler {
    mode: Option<Mode>,
    nodes: Vec<Option<Node>>,
    lists: Vec<TaskList>,
    /// Extra variable names in scope (for's `each`/`at`, catch's `as`...).
    scope: Vec<String>,
    use_: Value,
    functions: BTreeMap<String, NodeId>,
    uses_secrets: bool,
    /// [`CompileOptions::processes`].
    processes: bool,
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|o| o.get(key))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

impl Compiler {
    fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Strict)
    }

    fn names(&self) -> Vec<&str> {
        ARGUMENTS.iter().copied().chain(self.scope.iter().map(String::as_str)).collect()
    }

    fn note_source(&mut self, source: &str) {
        self.uses_secrets |= source.contains("$secrets");
    }

    /// A field that holds only a runtime expression (`if`, `when`, `for.in`...): `${ }` is
    /// optional there, in both modes, as the conformance kit writes them.
    fn expr_field(&mut self, value: &Value, pointer: &str) -> Result<Expr, CompileError> {
        let Some(text) = value.as_str() else {
            return Err(CompileError::new(pointer, "expected a runtime expression (a string)"));
        };
        let source = crate::expr::strip(text).unwrap_or(text);
        self.note_source(source);
        Expr::compile(source, &self.names()).map_err(|e| CompileError::expr(pointer, e))
    }

    fn template(&mut self, value: &Value, pointer: &str) -> Result<Template, CompileError> {
        self.note_value(value);
        Template::compile(value, self.mode(), &self.names()).map_err(|e| {
            CompileError::new(&format!("{pointer}{}", e.pointer), format!("runtime expression: {}", e.error.message))
        })
    }

    fn note_value(&mut self, value: &Value) {
        match value {
            Value::String(s) => self.note_source(s),
            Value::Array(items) => items.iter().for_each(|v| self.note_value(v)),
            Value::Object(fields) => fields.values().for_each(|v| self.note_value(v)),
            _ => {}
        }
    }

    /// `input.from`, `output.as`, `export.as`.
    fn transform(&mut self, value: &Value, pointer: &str) -> Result<Transform, CompileError> {
        match value {
            Value::String(text) if crate::expr::strip(text).is_none() && self.mode() == Mode::Loose => {
                Ok(Transform::Expr(self.expr_field(value, pointer)?))
            }
            Value::String(text) if crate::expr::strip(text).is_none() => {
                // Strict mode: a bare string is still an expression field; read it as jq.
                Ok(Transform::Expr(self.expr_field(&Value::String(text.clone()), pointer)?))
            }
            _ => Ok(Transform::Template(self.template(value, pointer)?)),
        }
    }

    fn schema(&self, value: Option<&Value>, pointer: &str) -> Result<Option<Schema>, CompileError> {
        let Some(value) = value else { return Ok(None) };
        let document = match get(value, "document") {
            Some(document) => document,
            None if get(value, "resource").is_some() => {
                return Err(CompileError::new(
                    pointer,
                    "external schema resources are not fetched; inline the schema under `document`",
                ));
            }
            None => return Ok(None),
        };
        if let Some(format) = get(value, "format").and_then(Value::as_str)
            && !format.starts_with("json")
        {
            return Err(CompileError::new(pointer, format!("schema format `{format}` is not supported (json is)")));
        }
        jsonschema::validator_for(document)
            .map(|v| Some(Schema(Arc::new(v))))
            .map_err(|e| CompileError::new(&format!("{pointer}/document"), format!("invalid JSON Schema: {e}")))
    }

    fn duration(&self, value: &Value, pointer: &str) -> Result<Duration, CompileError> {
        duration::parse(value).ok_or_else(|| {
            CompileError::new(
                pointer,
                "expected an ISO 8601 duration (PT30S) or {days, hours, minutes, seconds, milliseconds}",
            )
        })
    }

    fn timeout(&self, value: Option<&Value>, pointer: &str) -> Result<Option<Duration>, CompileError> {
        let Some(value) = value else { return Ok(None) };
        let (value, pointer) = match value.as_str() {
            Some(name) => {
                let reusable = get(&self.use_, "timeouts").and_then(|t| get(t, name));
                match reusable {
                    Some(v) => (v.clone(), format!("/use/timeouts/{}", escape(name))),
                    None => {
                        return Err(CompileError::new(pointer, format!("no timeout named `{name}` in use.timeouts")));
                    }
                }
            }
            None => (value.clone(), pointer.to_owned()),
        };
        let after = get(&value, "after").ok_or_else(|| CompileError::new(&pointer, "a timeout needs `after`"))?;
        Ok(Some(self.duration(after, &format!("{pointer}/after"))?))
    }

    fn program(mut self, definition: Value) -> Result<Program, CompileError> {
        let doc = get(&definition, "document").ok_or_else(|| CompileError::new("", "missing `document`"))?;
        let text = |key: &str| get(doc, key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let document =
            Document { dsl: text("dsl"), namespace: text("namespace"), name: text("name"), version: text("version") };
        self.mode = Some(match get(&definition, "evaluate").and_then(|e| get(e, "mode")).and_then(Value::as_str) {
            Some("loose") => Mode::Loose,
            _ => Mode::Strict,
        });
        if let Some(language) = get(&definition, "evaluate").and_then(|e| get(e, "language")).and_then(Value::as_str)
            && language != "jq"
        {
            return Err(CompileError::new(
                "/evaluate/language",
                format!("expression language `{language}` is not supported (jq is)"),
            ));
        }
        self.use_ = get(&definition, "use").cloned().unwrap_or(Value::Null);

        // Reusable functions are tasks of their own; compile them first so calls can refer to them.
        if let Some(functions) = get(&self.use_, "functions").and_then(Value::as_object).cloned() {
            for (name, task) in functions {
                let pointer = format!("/use/functions/{}", escape(&name));
                let id = self.task(&name, &task, &pointer)?;
                self.functions.insert(name, id);
            }
        }
        let tasks = get(&definition, "do").ok_or_else(|| CompileError::new("", "missing `do`"))?;
        let root = self.list(tasks, "/do")?;
        let sla = self.sla(get(&definition, "sla"), "/sla")?;
        let starts_on = match definition.pointer("/schedule/on") {
            Some(on) => Some(Arc::new(self.strategy(on, "/schedule/on")?)),
            None => None,
        };
        if let Some(Strategy::All(_)) = starts_on.as_deref() {
            return Err(CompileError::new(
                "/schedule/on/all",
                "`schedule.on` with `all` (an instance from a set of correlated events) is not supported; use `one` or `any`",
            ));
        }
        if let Err(error) = crate::schedule::schedule_in(&definition) {
            let pointer = match definition.get("schedule") {
                _ if matches!(error, baton_sla::schedule::ScheduleError::Zone(_)) => {
                    "/document/metadata/baton/schedule/timezone"
                }
                Some(schedule) if schedule.get("cron").is_some() => "/schedule/cron",
                Some(schedule) if schedule.get("every").is_some() => "/schedule/every",
                _ => "/schedule",
            };
            return Err(CompileError::new(pointer, error.to_string()));
        }
        let calendars = match get(&self.use_, "calendars") {
            Some(value) => baton_sla::Calendars::from_value(value).map_err(|e| {
                CompileError::new(&format!("/use/calendars/{}", e.calendar().unwrap_or_default()), e.to_string())
            })?,
            None => baton_sla::Calendars::new(),
        };

        let on_error = match definition.pointer("/document/metadata/baton/onError") {
            None => OnError::Fault,
            Some(Value::String(text)) if text == "fault" => OnError::Fault,
            Some(Value::String(text)) if text == "incident" => OnError::Incident,
            Some(other) => {
                return Err(CompileError::new(
                    "/document/metadata/baton/onError",
                    format!("`onError` is `fault` (the default) or `incident`, not {other}"),
                ));
            }
        };
        let input = get(&definition, "input");
        let output = get(&definition, "output");
        let input_schema = self.schema(input.and_then(|i| get(i, "schema")), "/input/schema")?;
        let input_from = match input.and_then(|i| get(i, "from")) {
            Some(from) => Some(self.transform(from, "/input/from")?),
            None => None,
        };
        let output_as = match output.and_then(|o| get(o, "as")) {
            Some(as_) => Some(self.transform(as_, "/output/as")?),
            None => None,
        };
        let output_schema = self.schema(output.and_then(|o| get(o, "schema")), "/output/schema")?;
        let timeout = self.timeout(get(&definition, "timeout"), "/timeout")?;
        let secrets = get(&self.use_, "secrets")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let nodes =
            self.nodes.into_iter().map(|n| n.unwrap_or_else(|| unreachable!("every node slot is filled"))).collect();
        Ok(Program {
            document,
            definition: Arc::new(definition.clone()),
            mode: self.mode.unwrap_or(Mode::Strict),
            nodes,
            lists: self.lists,
            root,
            input_schema,
            input_from,
            output_as,
            output_schema,
            timeout,
            authentications: get(&self.use_, "authentications").cloned().unwrap_or(Value::Null),
            secrets,
            uses_secrets: self.uses_secrets,
            sla,
            calendars,
            templates: get(&self.use_, "templates").cloned().unwrap_or(Value::Null),
            on_error,
            starts_on,
        })
    }

    /// An `sla:` block.
    fn sla(&mut self, value: Option<&Value>, pointer: &str) -> Result<Option<Sla>, CompileError> {
        let Some(value) = value else { return Ok(None) };
        let within_value = get(value, "within").ok_or_else(|| CompileError::new(pointer, "an `sla` needs `within`"))?;
        let at = format!("{pointer}/within");
        let within = match within_value.as_str().and_then(crate::expr::strip) {
            Some(_) => WaitFor::Expr(self.expr_field(within_value, &at)?),
            None => WaitFor::Fixed(self.duration(within_value, &at)?),
        };
        let calendar = get(value, "calendar").and_then(Value::as_str).map(str::to_owned);
        let at_risk = match get(value, "atRisk") {
            Some(v) => self.threshold(v, &format!("{pointer}/atRisk"))?,
            None => baton_sla::Threshold::Percent(80),
        };
        let mut pause = SlaPause { suspended: true, initiator: false };
        if let Some(reasons) = get(value, "pause") {
            let reasons = reasons.as_array().ok_or_else(|| {
                CompileError::new(&format!("{pointer}/pause"), "expected a list: [suspended, initiator]")
            })?;
            pause.suspended = false;
            for (i, reason) in reasons.iter().enumerate() {
                match reason.as_str() {
                    Some("suspended") => pause.suspended = true,
                    Some("initiator") => pause.initiator = true,
                    _ => {
                        return Err(CompileError::new(
                            &format!("{pointer}/pause/{i}"),
                            "expected `suspended` or `initiator`",
                        ));
                    }
                }
            }
        }
        let department = match get(value, "department") {
            Some(v) => Some(self.expr_field(v, &format!("{pointer}/department"))?),
            None => None,
        };
        let mut escalate = Vec::new();
        if let Some(rungs) = get(value, "escalate") {
            let rungs = rungs
                .as_array()
                .ok_or_else(|| CompileError::new(&format!("{pointer}/escalate"), "expected a list of rungs"))?;
            for (i, rung) in rungs.iter().enumerate() {
                let at = format!("{pointer}/escalate/{i}");
                let after = get(rung, "after").ok_or_else(|| CompileError::new(&at, "a rung needs `after`"))?;
                let after = self.threshold(after, &format!("{at}/after"))?;
                let body = get(rung, "do").ok_or_else(|| CompileError::new(&at, "a rung needs `do`"))?;
                self.scope.push(SLA_VARIABLE.to_owned());
                let body = self.list(body, &format!("{at}/do"));
                self.scope.pop();
                escalate.push(Rung { after, body: body? });
            }
        }
        Ok(Some(Sla { within, calendar, at_risk, pause, department, escalate }))
    }

    /// `80%`, or a duration of business time.
    fn threshold(&self, value: &Value, pointer: &str) -> Result<baton_sla::Threshold, CompileError> {
        if let Some(percent) = value.as_str().and_then(baton_sla::Threshold::parse_percent) {
            return Ok(baton_sla::Threshold::Percent(percent));
        }
        duration::parse(value).map(baton_sla::Threshold::After).ok_or_else(|| {
            CompileError::new(pointer, "expected a percentage of the SLA (`80%`) or a duration (`PT4H`)")
        })
    }

    /// A task list: `[{name: task}, ...]`.
    fn list(&mut self, tasks: &Value, pointer: &str) -> Result<ListId, CompileError> {
        let entries = tasks.as_array().ok_or_else(|| CompileError::new(pointer, "expected a list of tasks"))?;
        let id = self.lists.len() as ListId;
        self.lists.push(TaskList::default());
        let mut list = TaskList::default();
        for (i, entry) in entries.iter().enumerate() {
            let item = entry.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
                CompileError::new(&format!("{pointer}/{i}"), "expected one task: a name mapped to its definition")
            })?;
            let (name, task) = item.iter().next().unwrap_or_else(|| unreachable!("one entry"));
            let task_pointer = format!("{pointer}/{i}/{}", escape(name));
            if list.index.insert(name.clone(), i).is_some() {
                return Err(CompileError::new(&task_pointer, format!("duplicate task name `{name}` in this scope")));
            }
            list.entries.push(self.task(name, task, &task_pointer)?);
        }
        self.lists[id as usize] = list;
        Ok(id)
    }

    fn task(&mut self, name: &str, task: &Value, pointer: &str) -> Result<NodeId, CompileError> {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(None);
        let field = |key: &str| get(task, key);
        let if_ = match field("if") {
            Some(v) => Some(self.expr_field(v, &format!("{pointer}/if"))?),
            None => None,
        };
        let input = field("input");
        let output = field("output");
        let export = field("export");
        let input_schema = self.schema(input.and_then(|i| get(i, "schema")), &format!("{pointer}/input/schema"))?;
        let input_from = match input.and_then(|i| get(i, "from")) {
            Some(v) => Some(self.transform(v, &format!("{pointer}/input/from"))?),
            None => None,
        };
        let output_schema = self.schema(output.and_then(|o| get(o, "schema")), &format!("{pointer}/output/schema"))?;
        let export_schema = self.schema(export.and_then(|o| get(o, "schema")), &format!("{pointer}/export/schema"))?;
        let then = field("then").and_then(Value::as_str).map(Then::parse).unwrap_or(Then::Continue);
        let timeout = self.timeout(field("timeout"), &format!("{pointer}/timeout"))?;
        let sla = self.sla(field("sla"), &format!("{pointer}/sla"))?;
        let kind = self.kind(task, pointer)?;
        // `output.as` and `export.as` see the loop and catch variables of the task's scope too.
        let output_as = match output.and_then(|o| get(o, "as")) {
            Some(v) => Some(self.transform(v, &format!("{pointer}/output/as"))?),
            None => None,
        };
        let export_as = match export.and_then(|o| get(o, "as")) {
            Some(v) => Some(self.transform(v, &format!("{pointer}/export/as"))?),
            None => None,
        };
        self.nodes[id as usize] = Some(Node {
            name: name.to_owned(),
            reference: pointer.to_owned(),
            definition: task.clone(),
            if_,
            input_schema,
            input_from,
            output_as,
            output_schema,
            export_as,
            export_schema,
            then,
            timeout,
            sla,
            kind,
        });
        Ok(id)
    }

    fn kind(&mut self, task: &Value, pointer: &str) -> Result<Kind, CompileError> {
        let field = |key: &str| get(task, key);
        if let Some(call) = field("call") {
            return Ok(Kind::Call(self.call(call, field("with"), pointer)?));
        }
        if let Some(emit) = field("emit") {
            let with =
                get(emit, "event").and_then(|e| get(e, "with")).cloned().unwrap_or(Value::Object(Default::default()));
            return Ok(Kind::Emit { event: self.template(&with, &format!("{pointer}/emit/event/with"))? });
        }
        if let Some(for_) = field("for") {
            let each = get(for_, "each").and_then(Value::as_str).unwrap_or("item").to_owned();
            let at = get(for_, "at").and_then(Value::as_str).unwrap_or("index").to_owned();
            let in_ =
                get(for_, "in").ok_or_else(|| CompileError::new(&format!("{pointer}/for"), "`for` needs `in`"))?;
            let in_ = self.expr_field(in_, &format!("{pointer}/for/in"))?;
            self.scope.push(each.clone());
            self.scope.push(at.clone());
            let while_ = field("while").map(|v| self.expr_field(v, &format!("{pointer}/while")));
            let body = field("do").map(|d| self.list(d, &format!("{pointer}/do")));
            self.scope.truncate(self.scope.len() - 2);
            let body = body.ok_or_else(|| CompileError::new(pointer, "`for` needs `do`"))??;
            return Ok(Kind::For(For { each, at, in_, while_: while_.transpose()?, body }));
        }
        if let Some(fork) = field("fork") {
            let branches = get(fork, "branches").cloned().unwrap_or(Value::Array(vec![]));
            let compete = get(fork, "compete").and_then(Value::as_bool).unwrap_or(false);
            return Ok(Kind::Fork { branches: self.list(&branches, &format!("{pointer}/fork/branches"))?, compete });
        }
        if let Some(listen) = field("listen") {
            return Ok(Kind::Listen(self.listen(listen, field("foreach"), pointer)?));
        }
        if let Some(raise) = field("raise") {
            let error = get(raise, "error")
                .ok_or_else(|| CompileError::new(&format!("{pointer}/raise"), "`raise` needs `error`"))?;
            let (error, at) = match error.as_str() {
                Some(name) => match get(&self.use_, "errors").and_then(|e| get(e, name)) {
                    Some(reusable) => (reusable.clone(), format!("/use/errors/{}", escape(name))),
                    None => {
                        return Err(CompileError::new(
                            &format!("{pointer}/raise/error"),
                            format!("no error named `{name}` in use.errors"),
                        ));
                    }
                },
                None => (error.clone(), format!("{pointer}/raise/error")),
            };
            return Ok(Kind::Raise(Raise::Inline(self.template(&error, &at)?)));
        }
        if let Some(run) = field("run") {
            return self.run(run, pointer);
        }
        if let Some(set) = field("set") {
            return Ok(Kind::Set(self.template(set, &format!("{pointer}/set"))?));
        }
        if let Some(switch) = field("switch") {
            let cases = switch
                .as_array()
                .ok_or_else(|| CompileError::new(&format!("{pointer}/switch"), "expected a list of cases"))?;
            let mut compiled = Vec::with_capacity(cases.len());
            for (i, case) in cases.iter().enumerate() {
                let Some((name, body)) = case.as_object().and_then(|o| o.iter().next()) else {
                    return Err(CompileError::new(&format!("{pointer}/switch/{i}"), "expected a named case"));
                };
                let at = format!("{pointer}/switch/{i}/{}", escape(name));
                let when = match get(body, "when") {
                    Some(v) => Some(self.expr_field(v, &format!("{at}/when"))?),
                    None => None,
                };
                let then = get(body, "then").and_then(Value::as_str).map(Then::parse).unwrap_or(Then::Continue);
                compiled.push(Case { name: name.clone(), when, then });
            }
            return Ok(Kind::Switch(compiled));
        }
        if let Some(try_) = field("try") {
            return Ok(Kind::Try(self.try_(try_, field("catch"), pointer)?));
        }
        if let Some(wait) = field("wait") {
            let at = format!("{pointer}/wait");
            return Ok(Kind::Wait(match wait.as_str().and_then(crate::expr::strip) {
                Some(_) => WaitFor::Expr(self.expr_field(wait, &at)?),
                None => WaitFor::Fixed(self.duration(wait, &at)?),
            }));
        }
        if let Some(body) = field("do") {
            return Ok(Kind::Do(self.list(body, &format!("{pointer}/do"))?));
        }
        Err(CompileError::new(
            pointer,
            "unknown task kind: expected one of call, do, emit, for, fork, listen, raise, run, set, switch, try, wait",
        ))
    }

    fn call(&mut self, call: &Value, with: Option<&Value>, pointer: &str) -> Result<Call, CompileError> {
        let name =
            call.as_str().ok_or_else(|| CompileError::new(&format!("{pointer}/call"), "expected a function name"))?;
        let with_pointer = format!("{pointer}/with");
        let mut with = with.cloned().unwrap_or(Value::Object(Default::default()));
        if PROTOCOLS_REFUSED.contains(&name) {
            return Ok(Call::Refused(format!(
                "`call: {name}` is not supported by this Baton version; call the service through an activity registered by name, or over http"
            )));
        }
        if PROTOCOLS_RUN.contains(&name) {
            // Authentication policies carry `$secrets` references that only the activity resolves,
            // at call time, so no secret is ever written into history.
            let mut passthrough = Vec::new();
            for path in
                [&["endpoint", "authentication"][..], &["document", "endpoint", "authentication"], &["authentication"]]
            {
                if let Some(policy) = take(&mut with, path) {
                    let mut exprs = Vec::new();
                    self.policy_exprs(
                        &policy,
                        &mut Vec::new(),
                        &mut exprs,
                        &format!("{with_pointer}/{}", path.join("/")),
                    )?;
                    passthrough.push(Passthrough {
                        path: path.iter().map(|s| (*s).to_owned()).collect(),
                        value: policy,
                        exprs,
                    });
                }
            }
            let with = self.template(&with, &with_pointer)?;
            return Ok(Call::Activity { name: name.to_owned(), with, passthrough, protocol: true });
        }
        if let Some(&node) = self.functions.get(name) {
            return Ok(Call::Function { node, with: self.template(&with, &with_pointer)? });
        }
        match name {
            HUMAN_TASK => return Ok(Call::HumanTask { with: self.template(&with, &with_pointer)? }),
            NOTIFY => return Ok(Call::Notify { with: self.template(&with, &with_pointer)? }),
            REASSIGN_TASK => return Ok(Call::ReassignTask { with: self.template(&with, &with_pointer)? }),
            _ => {}
        }
        if name.contains('@') {
            return Ok(Call::Refused(format!(
                "`call: {name}` names a catalog function; catalogs are not fetched by this Baton version"
            )));
        }
        Ok(Call::Activity {
            name: name.to_owned(),
            with: self.template(&with, &with_pointer)?,
            passthrough: vec![],
            protocol: false,
        })
    }

    fn policy_exprs(
        &mut self,
        value: &Value,
        path: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, Expr)>,
        pointer: &str,
    ) -> Result<(), CompileError> {
        match value {
            Value::String(text) => {
                if let Some(source) = crate::expr::strip(text)
                    && !source.contains("$secrets")
                {
                    let at = format!("{pointer}/{}", path.join("/"));
                    out.push((path.clone(), self.expr_field(value, &at)?));
                }
            }
            Value::Object(fields) => {
                for (key, field) in fields {
                    path.push(key.clone());
                    self.policy_exprs(field, path, out, pointer)?;
                    path.pop();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn run(&mut self, run: &Value, pointer: &str) -> Result<Kind, CompileError> {
        let await_ = get(run, "await").and_then(Value::as_bool).unwrap_or(true);
        if let Some(workflow) = get(run, "workflow") {
            let text = |key: &str| get(workflow, key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let namespace = text("namespace");
            let name = text("name");
            let version = match text("version") {
                v if v.is_empty() => "latest".to_owned(),
                v => v,
            };
            let input = get(workflow, "input").cloned().unwrap_or(Value::Null);
            let input = if input.is_null() {
                self.template(&Value::String("${ . }".into()), &format!("{pointer}/run/workflow/input"))?
            } else {
                self.template(&input, &format!("{pointer}/run/workflow/input"))?
            };
            return Ok(Kind::Run(Run::Workflow { definition: format!("{namespace}/{name}@{version}"), input, await_ }));
        }
        let kind = ["shell", "script", "container"].into_iter().find(|k| get(run, k).is_some()).unwrap_or("process");
        if kind == "container" && self.processes {
            return Ok(Kind::Run(Run::Refused(
                "`run: container` is refused: no container runtime is configured".to_owned(),
            )));
        }
        if let (true, Some(spec)) = (self.processes, get(run, kind)) {
            // The whole task goes to the activity, its `${ }` expressions (command, arguments,
            // environment) evaluated here, so history records what was run.
            let returns = get(run, "return").cloned().unwrap_or_else(|| Value::String("stdout".into()));
            let mut with = serde_json::Map::new();
            with.insert(kind.to_owned(), spec.clone());
            with.insert("return".to_owned(), returns);
            let with = self.template(&Value::Object(with), &format!("{pointer}/run"))?;
            return Ok(Kind::Call(Call::Activity {
                name: PROCESS_ACTIVITY.to_owned(),
                with,
                passthrough: vec![],
                protocol: false,
            }));
        }
        Ok(Kind::Run(Run::Refused(format!(
            "`run: {kind}` is refused: running processes is disabled by the administrator's policy (see docs/language.md)"
        ))))
    }

    fn listen(&mut self, listen: &Value, foreach: Option<&Value>, pointer: &str) -> Result<Listen, CompileError> {
        let to =
            get(listen, "to").ok_or_else(|| CompileError::new(&format!("{pointer}/listen"), "`listen` needs `to`"))?;
        let strategy = self.strategy(to, &format!("{pointer}/listen/to"))?;
        let read = match get(listen, "read").and_then(Value::as_str) {
            Some("envelope") => Read::Envelope,
            Some("raw") => Read::Raw,
            _ => Read::Data,
        };
        let foreach = match foreach {
            None => None,
            Some(foreach) => {
                let at = format!("{pointer}/foreach");
                let item = get(foreach, "item").and_then(Value::as_str).unwrap_or("item").to_owned();
                let index = get(foreach, "at").and_then(Value::as_str).unwrap_or("index").to_owned();
                self.scope.push(item.clone());
                self.scope.push(index.clone());
                let body = get(foreach, "do").map(|d| self.list(d, &format!("{at}/do"))).transpose();
                let output_as = get(foreach, "output")
                    .and_then(|o| get(o, "as"))
                    .map(|v| self.transform(v, &format!("{at}/output/as")))
                    .transpose();
                self.scope.truncate(self.scope.len() - 2);
                Some(Foreach { item, at: index, body: body?, output_as: output_as? })
            }
        };
        Ok(Listen { strategy, read, foreach })
    }

    fn strategy(&mut self, to: &Value, pointer: &str) -> Result<Strategy, CompileError> {
        if let Some(one) = get(to, "one") {
            return Ok(Strategy::One(self.filter(one, &format!("{pointer}/one"))?));
        }
        if let Some(all) = get(to, "all") {
            let filters = self.filters(all, &format!("{pointer}/all"))?;
            return Ok(Strategy::All(filters));
        }
        if let Some(any) = get(to, "any") {
            let filters = self.filters(any, &format!("{pointer}/any"))?;
            let until = match get(to, "until") {
                None => None,
                Some(v @ Value::String(_)) => Some(Until::Expr(self.expr_field(v, &format!("{pointer}/until"))?)),
                Some(v) => Some(Until::Events(Box::new(self.strategy(v, &format!("{pointer}/until"))?))),
            };
            return Ok(Strategy::Any { filters, until });
        }
        Err(CompileError::new(pointer, "expected `one`, `all` or `any`"))
    }

    fn filters(&mut self, list: &Value, pointer: &str) -> Result<Vec<Filter>, CompileError> {
        let items = list.as_array().ok_or_else(|| CompileError::new(pointer, "expected a list of event filters"))?;
        items.iter().enumerate().map(|(i, f)| self.filter(f, &format!("{pointer}/{i}"))).collect()
    }

    fn filter(&mut self, filter: &Value, pointer: &str) -> Result<Filter, CompileError> {
        let with = get(filter, "with").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut attributes = Vec::new();
        let mut event_type = None;
        for (key, value) in &with {
            let at = format!("{pointer}/with/{}", escape(key));
            let matcher = match value.as_str().and_then(crate::expr::strip) {
                Some(_) => AttributeMatch::Expr(self.expr_field(value, &at)?),
                None => AttributeMatch::Exact(value.clone()),
            };
            if key == "type"
                && let AttributeMatch::Exact(Value::String(t)) = &matcher
                && !looks_like_regex(t)
            {
                event_type = Some(t.clone());
            }
            attributes.push((key.clone(), matcher));
        }
        let mut correlate = Vec::new();
        if let Some(correlations) = get(filter, "correlate").and_then(Value::as_object) {
            for (key, c) in correlations {
                let at = format!("{pointer}/correlate/{}", escape(key));
                let from = get(c, "from").ok_or_else(|| CompileError::new(&at, "a correlation needs `from`"))?;
                let from = self.expr_field(from, &format!("{at}/from"))?;
                let expect = get(c, "expect").map(|e| self.template(e, &format!("{at}/expect"))).transpose()?;
                correlate.push(Correlation { key: key.clone(), from, expect });
            }
        }
        Ok(Filter { event_type, attributes, correlate })
    }

    fn try_(&mut self, body: &Value, catch: Option<&Value>, pointer: &str) -> Result<Try, CompileError> {
        let body = self.list(body, &format!("{pointer}/try"))?;
        let empty = Value::Object(Default::default());
        let catch = catch.unwrap_or(&empty);
        let at = format!("{pointer}/catch");
        let as_ = get(catch, "as").and_then(Value::as_str).unwrap_or("error").to_owned();
        let filter = match get(catch, "errors").and_then(|e| get(e, "with")) {
            Some(with) => Some(self.template(with, &format!("{at}/errors/with"))?),
            None => None,
        };
        self.scope.push(as_.clone());
        let when = get(catch, "when").map(|v| self.expr_field(v, &format!("{at}/when"))).transpose();
        let except_when = get(catch, "exceptWhen").map(|v| self.expr_field(v, &format!("{at}/exceptWhen"))).transpose();
        let retry = match get(catch, "retry") {
            None => Ok(None),
            Some(Value::String(name)) => match get(&self.use_, "retries").and_then(|r| get(r, name)).cloned() {
                Some(policy) => self.retry(&policy, &format!("/use/retries/{}", escape(name))).map(Some),
                None => Err(CompileError::new(
                    &format!("{at}/retry"),
                    format!("no retry policy named `{name}` in use.retries"),
                )),
            },
            Some(policy) => self.retry(policy, &format!("{at}/retry")).map(Some),
        };
        let handler = get(catch, "do").map(|d| self.list(d, &format!("{at}/do"))).transpose();
        self.scope.pop();
        Ok(Try { body, filter, as_, when: when?, except_when: except_when?, retry: retry?, handler: handler? })
    }

    fn retry(&mut self, policy: &Value, pointer: &str) -> Result<Retry, CompileError> {
        let when = get(policy, "when").map(|v| self.expr_field(v, &format!("{pointer}/when"))).transpose()?;
        let except_when =
            get(policy, "exceptWhen").map(|v| self.expr_field(v, &format!("{pointer}/exceptWhen"))).transpose()?;
        let delay = match get(policy, "delay") {
            Some(d) => self.duration(d, &format!("{pointer}/delay"))?,
            None => Duration::ZERO,
        };
        let backoff = match get(policy, "backoff") {
            Some(b) if get(b, "exponential").is_some() => Backoff::Exponential,
            Some(b) if get(b, "linear").is_some() => Backoff::Linear,
            _ => Backoff::Constant,
        };
        let limit = get(policy, "limit");
        let max_attempts = limit
            .and_then(|l| get(l, "attempt"))
            .and_then(|a| get(a, "count"))
            .and_then(Value::as_u64)
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        let max_duration = match limit.and_then(|l| get(l, "duration")) {
            Some(d) => Some(self.duration(d, &format!("{pointer}/limit/duration"))?),
            None => None,
        };
        let jitter = match get(policy, "jitter") {
            Some(j) => {
                let from = get(j, "from").map(|v| self.duration(v, &format!("{pointer}/jitter/from"))).transpose()?;
                let to = get(j, "to").map(|v| self.duration(v, &format!("{pointer}/jitter/to"))).transpose()?;
                Some((from.unwrap_or_default(), to.unwrap_or_default()))
            }
            None => None,
        };
        Ok(Retry { when, except_when, delay, backoff, max_attempts, max_duration, jitter })
    }
}

/// FNV-1a over some byte strings: small, and stable across platforms and releases (std's
/// hasher promises neither), for content hashes and replay-stable jitter.
pub fn stable_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.into_iter().flatten() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Removes the value at `path` inside `value`, returning it.
fn take(value: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut at = value;
    for key in parents {
        at = at.as_object_mut()?.get_mut(*key)?;
    }
    at.as_object_mut()?.remove(*last)
}

/// Whether an event attribute matches a constant of a filter: equal, or, for a text that looks
/// like a regular expression, matched by it as a whole.
pub fn attribute_matches(wanted: &Value, actual: &Value) -> bool {
    if let Value::String(pattern) = wanted
        && looks_like_regex(pattern)
        && let (Ok(re), Some(text)) = (regex::Regex::new(&format!("^(?:{pattern})$")), actual.as_str())
    {
        return re.is_match(text);
    }
    actual == wanted
}

/// Whether a filter's attribute value is meant as a regular expression rather than a literal.
pub fn looks_like_regex(text: &str) -> bool {
    text.chars().any(|c| matches!(c, '^' | '$' | '*' | '+' | '?' | '[' | ']' | '(' | ')' | '|' | '\\'))
}
