//! People and deadlines in the interpreter: `call: humanTask`, `call: notify`,
//! `call: reassignTask`, and `sla:` clocks with their escalation ladders.
//!
//! A human task is an engine primitive: the interpreter creates it and waits, like an activity,
//! until a person completes it. N-of-M approvals are M tasks (one per approver) whose Nth
//! approving completion ends the call and cancels the rest. An SLA is a pausable business-time
//! clock ([`baton_sla::SlaClock`]) with durable timers for each rung of its ladder and for its
//! breach; the engine records it (SlaStarted... SlaStopped) and keeps the dashboard row. A rung's
//! tasks run in an [`FrameKind::Escalation`] frame beside the task: they never interrupt it,
//! and their failure is reported as an event, not raised.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use baton_engine::history::{Seq, SlaStarted};
use baton_engine::human::{Assignment, HumanTaskSpec, OnBehalfRule};
use baton_sla::{Calendar, SlaClock, Threshold};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Body, Frame, FrameId, FrameKind, Machine, Scope, Signal, Step, expression_error, later};
use crate::model::{MANAGER_OF_ACTIVITY, NOTIFY_ACTIVITY, Node, SLA_VARIABLE, Sla, WaitFor};
use crate::problem::{Problem, Standard};

/// The CloudEvent type of the event a `notify` call emits with its deliveries.
pub const NOTIFICATION_SENT: &str = "NotificationSent";
/// The CloudEvent type of the event emitted when an escalation rung's tasks fail.
pub const ESCALATION_FAILED: &str = "io.baton.sla.escalation.faulted.v1";

/// The calendar of SLAs that name none: every hour counts.
static ALWAYS: LazyLock<Calendar> = LazyLock::new(Calendar::always);

/// A `humanTask` call waiting for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct HumanWait {
    /// The open tasks, with the person who owns each now.
    open: BTreeMap<Seq, Option<String>>,
    /// The candidates the tasks were offered to (`to: assignee` falls back on them).
    candidates: Assignment,
    department: Option<String>,
    /// Approving completions needed (0: the first completion ends the call).
    quorum: u32,
    /// The outcome that counts towards the quorum.
    approve: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    approvals: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    others: Vec<Value>,
    initiator: Option<String>,
}

impl HumanWait {
    pub(super) fn open_tasks(&self) -> impl Iterator<Item = Seq> + '_ {
        self.open.keys().copied()
    }

    fn waits_on(&self, person: &str) -> bool {
        self.open.values().any(|owner| owner.as_deref() == Some(person))
    }
}

/// A `humanTask` call's arguments, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct HumanRequest {
    spec: HumanTaskSpec,
    quorum: u32,
    approve: Option<String>,
    /// Assign to this person's manager (looked up in the directory first).
    manager_of: Option<String>,
}

/// Why an SLA clock is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Pause {
    Suspended,
    Initiator,
}

/// What an SLA timer stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mark {
    Rung(u32),
    Breach,
}

/// A running SLA clock of a task or of the workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct SlaRun {
    /// The SlaStarted event's seq.
    sla: Seq,
    name: String,
    within_ms: u64,
    calendar: Option<String>,
    clock: SlaClock,
    /// Pending timers and what each stands for.
    timers: BTreeMap<Seq, Mark>,
    /// Rungs already reached, by index.
    fired: BTreeSet<u32>,
    breached: bool,
    paused: BTreeSet<Pause>,
}

impl SlaRun {
    fn within(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.within_ms)
    }
}

fn configuration(title: &str, detail: impl Into<String>) -> Problem {
    Problem::standard(Standard::Configuration, title, detail)
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A string, or a list of strings, as a list.
fn strings(value: Option<&Value>, what: &str) -> Result<Vec<String>, Problem> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| bad_argument(what, "a list of strings", v)))
            .collect(),
        Some(other) => Err(bad_argument(what, "a string or a list of strings", other)),
    }
}

fn bad_argument(what: &str, expected: &str, found: &Value) -> Problem {
    configuration("Invalid argument", format!("`{what}` must be {expected}, not {found}"))
}

fn text(args: &Map<String, Value>, key: &str) -> Result<Option<String>, Problem> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad_argument(key, "a string", other)),
    }
}

/// `{user|users, role|roles, group|groups, department|departments}`. A `department` next to
/// roles scopes them; alone it offers the task to the department's members.
fn assignment(value: &Value, what: &str) -> Result<(Assignment, Option<String>), Problem> {
    let Some(fields) = value.as_object() else {
        return Err(bad_argument(what, "an object (user, role, group, department...)", value));
    };
    const KNOWN: &[&str] =
        &["user", "users", "role", "roles", "group", "groups", "department", "departments", "managerOf"];
    if let Some(unknown) = fields.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(configuration(
            "Invalid argument",
            format!("`{what}.{unknown}` is not known; expected one of {}", KNOWN.join(", ")),
        ));
    }
    let get = |a: &str, b: &str| -> Result<Vec<String>, Problem> {
        let mut all = strings(fields.get(a), &format!("{what}.{a}"))?;
        all.extend(strings(fields.get(b), &format!("{what}.{b}"))?);
        Ok(all)
    };
    let mut assignment = Assignment {
        users: get("user", "users")?,
        roles: get("role", "roles")?,
        groups: get("group", "groups")?,
        departments: strings(fields.get("departments"), &format!("{what}.departments"))?,
        department: None,
    };
    let department = strings(fields.get("department"), &format!("{what}.department"))?.into_iter().next();
    match &department {
        Some(d) if assignment.roles.is_empty() => assignment.departments.push(d.clone()),
        Some(d) => assignment.department = Some(d.clone()),
        None => {}
    }
    Ok((assignment, department))
}

impl HumanRequest {
    /// Reads a `humanTask` call's evaluated `with`.
    fn parse(name: &str, args: Value, now: DateTime<Utc>, started_by: Option<&str>) -> Result<Self, Problem> {
        let Value::Object(args) = args else {
            return Err(bad_argument("with", "an object", &args));
        };
        const KNOWN: &[&str] = &[
            "title",
            "description",
            "assignee",
            "assign",
            "form",
            "outcomes",
            "priority",
            "due",
            "dueAt",
            "initiator",
            "allowSelfApproval",
            "onBehalf",
            "supervisors",
            "quorum",
            "approve",
            "data",
        ];
        if let Some(unknown) = args.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(configuration(
                "Invalid argument",
                format!("`{unknown}` is not an argument of humanTask; expected one of {}", KNOWN.join(", ")),
            ));
        }
        let title =
            text(&args, "title")?.ok_or_else(|| configuration("Invalid argument", "humanTask needs a `title`"))?;
        let mut spec = HumanTaskSpec::new(name, title);
        spec.description = text(&args, "description")?;
        spec.assignee = text(&args, "assignee")?;
        let mut manager_of = None;
        if let Some(assign) = args.get("assign") {
            let (mut candidates, department) = assignment(assign, "assign")?;
            // The task's own department scopes its roles (and files it on dashboards).
            candidates.department = None;
            spec.candidates = candidates;
            spec.department = department;
            manager_of = text(assign.as_object().unwrap_or(&Map::new()), "managerOf")?;
        }
        if spec.assignee.is_none() && spec.candidates.is_empty() && manager_of.is_none() {
            return Err(configuration(
                "Invalid argument",
                "humanTask needs `assignee` or `assign` (users, roles, groups, departments or managerOf)",
            ));
        }
        if let Some(form) = args.get("form").filter(|f| !f.is_null()) {
            jsonschema::validator_for(form)
                .map_err(|e| configuration("Invalid argument", format!("`form` is not a valid JSON Schema: {e}")))?;
            spec.form = Some(form.clone());
        }
        spec.outcomes = strings(args.get("outcomes"), "outcomes")?;
        spec.priority = match args.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| bad_argument("priority", "an integer", v))?,
        };
        spec.due_at = match (args.get("due"), text(&args, "dueAt")?) {
            (Some(due), _) => Some(later(
                now,
                crate::duration::parse(due).ok_or_else(|| bad_argument("due", "a duration (P2D)", due))?,
            )),
            (None, Some(at)) => Some(
                DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| bad_argument("dueAt", "an RFC 3339 time", &Value::String(at.clone())))?
                    .with_timezone(&Utc),
            ),
            (None, None) => None,
        };
        spec.initiator = text(&args, "initiator")?.or_else(|| started_by.map(str::to_owned));
        spec.allow_self_approval = match args.get("allowSelfApproval") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad_argument("allowSelfApproval", "true or false", other)),
        };
        if let Some(rule) = args.get("onBehalf").filter(|v| !v.is_null()) {
            let roles = rule.get("roles").or_else(|| rule.get("role"));
            spec.on_behalf = OnBehalfRule { roles: strings(roles, "onBehalf.roles")? };
        }
        if let Some(supervisors) = args.get("supervisors").filter(|v| !v.is_null()) {
            spec.supervisors = assignment(supervisors, "supervisors")?.0;
        }
        spec.data = args.get("data").cloned().unwrap_or(Value::Null);
        let quorum = match args.get("quorum") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|q| u32::try_from(q).ok())
                .filter(|q| *q >= 1)
                .ok_or_else(|| bad_argument("quorum", "a positive integer", v))?,
        };
        let approve = text(&args, "approve")?;
        if quorum > 0 {
            let approvers = spec.candidates.users.len();
            if approvers < quorum as usize || spec.assignee.is_some() {
                return Err(configuration(
                    "Invalid argument",
                    format!(
                        "a quorum of {quorum} needs at least {quorum} approvers listed in `assign.users` (found {approvers})"
                    ),
                ));
            }
        }
        let allowed = spec.allowed_outcomes();
        if let Some(approve) = &approve
            && !allowed.contains(approve)
        {
            return Err(configuration(
                "Invalid argument",
                format!("`approve: {approve}` is not one of the outcomes {allowed:?}"),
            ));
        }
        let approve = approve.or_else(|| (quorum > 0).then(|| allowed[0].clone()));
        Ok(Self { spec, quorum, approve, manager_of })
    }
}

/// A `reassignTask` or `notify` subject: `assignee`, `initiator`, or a person's id.
enum Subject {
    Assignee,
    Initiator,
    Person(String),
}

impl Subject {
    fn of(text: &str) -> Self {
        match text {
            "assignee" => Self::Assignee,
            "initiator" => Self::Initiator,
            other => Self::Person(other.to_owned()),
        }
    }
}

impl<'a> Machine<'a, '_> {
    // ---- human tasks -----------------------------------------------------------------------

    pub(super) fn human_task(&mut self, id: FrameId, name: &str, arguments: Value) -> Step {
        let request = match HumanRequest::parse(name, arguments, self.now(), self.state.started_by.as_deref()) {
            Ok(request) => request,
            Err(problem) => return Step::Fail(problem),
        };
        if let Some(subject) = request.manager_of.clone() {
            let person = match self.person(id, &subject) {
                Ok(person) => person,
                Err(problem) => return Step::Fail(problem),
            };
            let activity = self.ctx.schedule_activity(MANAGER_OF_ACTIVITY, json!({ "user": person }));
            self.wait_on(id, activity);
            self.set_body(id, Body::Resolving { activity, request: Box::new(request) });
            return Step::Pending;
        }
        self.create_human_tasks(id, request)
    }

    pub(super) fn resolved_manager(&mut self, id: FrameId, mut request: HumanRequest, manager: Value) -> Step {
        let subject = request.manager_of.take().unwrap_or_default();
        match manager.get("id").and_then(Value::as_str) {
            Some(person) => {
                request.spec.assignee = Some(person.to_owned());
                self.create_human_tasks(id, request)
            }
            None => Step::Fail(configuration(
                "No manager",
                format!("the directory knows no manager of `{subject}` (no manager, no department head)"),
            )),
        }
    }

    fn create_human_tasks(&mut self, id: FrameId, request: HumanRequest) -> Step {
        let HumanRequest { spec, quorum, approve, .. } = request;
        let mut wait = HumanWait {
            open: BTreeMap::new(),
            candidates: spec.candidates.clone(),
            department: spec.department.clone(),
            quorum,
            approve,
            approvals: Vec::new(),
            others: Vec::new(),
            initiator: spec.initiator.clone(),
        };
        if quorum > 0 {
            // One task per approver: each sees only their own, and the rest are withdrawn once
            // the quorum is reached.
            for approver in &spec.candidates.users {
                let mut own = spec.clone();
                own.assignee = Some(approver.clone());
                own.candidates = Assignment::default();
                let seq = self.ctx.create_human_task(own);
                self.wait_on(id, seq);
                wait.open.insert(seq, Some(approver.clone()));
            }
        } else {
            let owner = spec.assignee.clone();
            let seq = self.ctx.create_human_task(spec);
            self.wait_on(id, seq);
            wait.open.insert(seq, owner);
        }
        self.set_body(id, Body::Human(Box::new(wait)));
        self.refresh_initiator_pauses();
        Step::Pending
    }

    pub(super) fn human_completed(&mut self, id: FrameId, mut wait: HumanWait, task: Seq, completion: Value) -> Step {
        wait.open.remove(&task);
        let step = if wait.quorum == 0 {
            Step::Done(completion)
        } else {
            let outcome = completion.get("outcome").and_then(Value::as_str).map(str::to_owned);
            // A person counts once, however many of the tasks came to them (by delegation,
            // reassignment or acting on someone's behalf).
            let voter = |c: &Value| c.get("onBehalfOf").filter(|v| !v.is_null()).or(c.get("completedBy")).cloned();
            let already = wait.approvals.iter().any(|a| voter(a) == voter(&completion));
            let approving = outcome.is_some() && outcome == wait.approve && !already;
            if approving {
                wait.approvals.push(completion.clone());
            } else {
                wait.others.push(completion.clone());
            }
            let reached = wait.approvals.len() >= wait.quorum as usize;
            let out_of_reach = wait.approvals.len() + wait.open.len() < wait.quorum as usize;
            if reached || out_of_reach {
                let reason = if reached { "the quorum was reached" } else { "the quorum can no longer be reached" };
                for seq in std::mem::take(&mut wait.open).into_keys() {
                    self.state.waits.remove(&seq);
                    self.ctx.cancel_human_task(seq, reason);
                }
                let mut output = completion;
                if let Value::Object(fields) = &mut output {
                    fields.insert("approvals".into(), Value::Array(std::mem::take(&mut wait.approvals)));
                    fields.insert("others".into(), Value::Array(std::mem::take(&mut wait.others)));
                }
                Step::Done(output)
            } else {
                self.set_body(id, Body::Human(Box::new(wait)));
                Step::Pending
            }
        };
        self.refresh_initiator_pauses();
        step
    }

    /// A person claimed, gave back, delegated or reassigned a task: note who owns it now and
    /// who its candidates are.
    pub(super) fn human_updated(&mut self, task: Seq, human: &baton_engine::human::HumanTask) {
        let Some(&frame) = self.state.waits.get(&task) else { return };
        if let Some(task_frame) = self.task_frame(frame)
            && let Body::Human(wait) = &mut task_frame.body
            && let Some(slot) = wait.open.get_mut(&task)
        {
            *slot = human.assignee.clone();
            wait.candidates = human.candidates.clone();
        }
        self.refresh_initiator_pauses();
    }

    /// Withdraws the open tasks of a call that ends without them (cancelled or timed out).
    pub(super) fn withdraw_human_tasks(&mut self, wait: &HumanWait, expired: bool) {
        for seq in wait.open_tasks() {
            self.state.waits.remove(&seq);
            if expired {
                self.ctx.expire_human_task(seq);
            } else {
                self.ctx.cancel_human_task(seq, "the task was cancelled");
            }
        }
        // A task that waited on the initiator no longer does.
        self.refresh_initiator_pauses();
    }

    /// The first open human task a task frame waits on (what its SLA covers).
    pub(super) fn human_task_of(&mut self, id: FrameId) -> Option<Seq> {
        match &self.task_frame(id)?.body {
            Body::Human(wait) => wait.open_tasks().next(),
            _ => None,
        }
    }

    fn human_wait(&self, frame: FrameId) -> Option<&HumanWait> {
        match &self.state.frames.get(&frame)?.kind {
            FrameKind::Task(task) => match &task.body {
                Body::Human(wait) => Some(wait),
                _ => None,
            },
            _ => None,
        }
    }

    /// The frame whose SLA an escalation frame (or a task inside one) escalates.
    fn escalated(&self, mut frame: FrameId) -> Option<FrameId> {
        loop {
            let f = self.state.frames.get(&frame)?;
            if let FrameKind::Escalation { owner } = f.kind {
                return Some(owner);
            }
            frame = f.parent?;
        }
    }

    /// A subject's person id: `initiator`, `assignee` (the owner of the escalated task), or an id.
    fn person(&self, frame: FrameId, subject: &str) -> Result<String, Problem> {
        match Subject::of(subject) {
            Subject::Person(id) => Ok(id),
            Subject::Initiator => self
                .state
                .started_by
                .clone()
                .ok_or_else(|| configuration("No initiator", "no person started this instance")),
            Subject::Assignee => self
                .escalated(frame)
                .and_then(|owner| self.human_wait(owner))
                .and_then(|wait| wait.open.values().flatten().next().cloned())
                .ok_or_else(|| {
                    configuration(
                        "No assignee",
                        "`assignee` names the owner of the human task an SLA escalates; here nobody owns one",
                    )
                }),
        }
    }

    // ---- notify and reassign ---------------------------------------------------------------

    pub(super) fn notify(&mut self, id: FrameId, arguments: Value) -> Step {
        let Value::Object(mut args) = arguments else {
            return Step::Fail(bad_argument("with", "an object", &arguments));
        };
        let to = args.remove("to").unwrap_or(Value::Null);
        let recipients = match self.recipients(id, &to) {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => return Step::Fail(configuration("No recipient", "`notify` needs `to`")),
            Err(problem) => return Step::Fail(problem),
        };
        if !args.get("template").is_some_and(Value::is_string) {
            return Step::Fail(configuration("Invalid argument", "`notify` needs a `template` name"));
        }
        args.insert("to".into(), Value::Array(recipients));
        args.insert("definition".into(), Value::String(self.wf.definition_key()));
        let seq = self.ctx.schedule_activity(NOTIFY_ACTIVITY, Value::Object(args));
        self.wait_on(id, seq);
        self.set_body(id, Body::Notify(seq));
        Step::Pending
    }

    /// `to:` with `assignee` and `initiator` resolved: a list of recipient objects.
    fn recipients(&self, frame: FrameId, to: &Value) -> Result<Vec<Value>, Problem> {
        match to {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => {
                let mut all = Vec::new();
                for item in items {
                    all.extend(self.recipients(frame, item)?);
                }
                Ok(all)
            }
            Value::String(subject) if subject == "assignee" => self.assignees(frame),
            Value::String(subject) => Ok(vec![json!({ "user": self.person(frame, subject)? })]),
            Value::Object(fields) => match fields.get("managerOf").and_then(Value::as_str) {
                Some(subject) => Ok(vec![json!({ "managerOf": self.person(frame, subject)? })]),
                None => Ok(vec![to.clone()]),
            },
            other => Err(bad_argument("to", "a person, a role... or a list of them", other)),
        }
    }

    /// The owners of the escalated task's open tasks, or its candidates while nobody owns one.
    fn assignees(&self, frame: FrameId) -> Result<Vec<Value>, Problem> {
        let wait = self.escalated(frame).and_then(|owner| self.human_wait(owner)).ok_or_else(|| {
            configuration(
                "No assignee",
                "`assignee` names the people of the human task an SLA escalates; here there is none",
            )
        })?;
        let owners: BTreeSet<&String> = wait.open.values().flatten().collect();
        if !owners.is_empty() {
            return Ok(owners.into_iter().map(|u| json!({ "user": u })).collect());
        }
        let c = &wait.candidates;
        let mut all: Vec<Value> = c.users.iter().map(|u| json!({ "user": u })).collect();
        all.extend(c.roles.iter().map(|r| json!({ "role": r, "department": wait.department })));
        all.extend(c.groups.iter().map(|g| json!({ "group": g })));
        all.extend(c.departments.iter().map(|d| json!({ "department": d })));
        Ok(all)
    }

    /// A `notify` came back: tell the world what was sent, and go on with the deliveries.
    pub(super) fn notified(&mut self, output: Value) -> Step {
        let event = json!({
            "type": NOTIFICATION_SENT,
            "source": format!("baton/{}", self.wf.definition_key()),
            "data": output,
        });
        self.emit(event);
        Step::Done(output)
    }

    pub(super) fn reassign(&mut self, id: FrameId, arguments: Value) -> Step {
        let Value::Object(args) = arguments else {
            return Step::Fail(bad_argument("with", "an object", &arguments));
        };
        let targets = match self.reassign_targets(id, &args) {
            Ok(t) => t,
            Err(problem) => return Step::Fail(problem),
        };
        let Some(to) = args.get("to") else {
            return Step::Fail(configuration("Invalid argument", "`reassignTask` needs `to`"));
        };
        let to = match to {
            Value::String(subject) => json!({ "user": subject }),
            other => other.clone(),
        };
        if let Some(subject) = to.get("managerOf").and_then(Value::as_str) {
            let person = match self.person(id, subject) {
                Ok(p) => p,
                Err(problem) => return Step::Fail(problem),
            };
            let activity = self.ctx.schedule_activity(MANAGER_OF_ACTIVITY, json!({ "user": person }));
            self.wait_on(id, activity);
            self.set_body(id, Body::Reassign { activity, targets });
            return Step::Pending;
        }
        let mut to = match assignment(&to, "to") {
            Ok((assignment, _)) => assignment,
            Err(problem) => return Step::Fail(problem),
        };
        for user in &mut to.users {
            match self.person(id, user) {
                Ok(person) => *user = person,
                Err(problem) => return Step::Fail(problem),
            }
        }
        self.reassign_now(targets, to)
    }

    /// The open human tasks a `reassignTask` moves: those of the task named by `task`, else
    /// those of the task whose SLA is escalating.
    fn reassign_targets(&self, id: FrameId, args: &Map<String, Value>) -> Result<Vec<(FrameId, Seq)>, Problem> {
        let program = &self.wf.program;
        let frames: Vec<FrameId> = match text(args, "task")? {
            Some(name) => self
                .state
                .frames
                .iter()
                .filter(|(_, f)| matches!(&f.kind, FrameKind::Task(t) if program.node(t.node).name == name))
                .map(|(&id, _)| id)
                .collect(),
            None => self.escalated(id).into_iter().collect(),
        };
        let targets: Vec<(FrameId, Seq)> = frames
            .into_iter()
            .filter_map(|f| self.human_wait(f).map(|w| (f, w)))
            .flat_map(|(f, w)| w.open_tasks().map(move |seq| (f, seq)))
            .collect();
        if targets.is_empty() {
            return Err(configuration(
                "Nothing to reassign",
                "`reassignTask` found no open human task (name one with `task`, or use it in an SLA's escalation)",
            ));
        }
        Ok(targets)
    }

    pub(super) fn reassign_to_manager(&mut self, targets: Vec<(FrameId, Seq)>, manager: Value) -> Step {
        match manager.get("id").and_then(Value::as_str) {
            Some(person) => self.reassign_now(targets, Assignment::user(person)),
            None => Step::Fail(configuration("No manager", "the directory knows no manager to reassign the task to")),
        }
    }

    fn reassign_now(&mut self, targets: Vec<(FrameId, Seq)>, to: Assignment) -> Step {
        let single = to.single_user().map(str::to_owned);
        let mut moved = Vec::new();
        for (frame, seq) in targets {
            let Some(task) = self.task_frame(frame) else { continue };
            let Body::Human(wait) = &mut task.body else { continue };
            let Some(slot) = wait.open.get_mut(&seq) else { continue };
            *slot = single.clone();
            if single.is_none() {
                wait.candidates = to.clone();
            }
            self.ctx.reassign_human_task(seq, to.clone());
            moved.push(Value::from(seq));
        }
        self.refresh_initiator_pauses();
        Step::Done(json!({ "reassigned": moved, "to": to }))
    }

    // ---- SLAs ------------------------------------------------------------------------------

    /// The calendar an SLA names: the definition's own, then the engine's shared ones.
    fn calendar(&self, name: Option<&str>) -> Result<&'a Calendar, Problem> {
        let wf = self.wf;
        let Some(name) = name else { return Ok(&ALWAYS) };
        wf.program
            .calendars
            .get(name)
            .or_else(|| wf.calendars.get(name))
            .ok_or_else(|| configuration("Unknown calendar", format!("no business calendar named `{name}`")))
    }

    fn sla_spec(&self, frame: FrameId) -> Option<&'a Sla> {
        let program: &'a crate::model::Program = &self.wf.program;
        match &self.state.frames.get(&frame)?.kind {
            FrameKind::Task(task) => program.node(task.node).sla.as_ref(),
            FrameKind::Workflow { .. } => program.sla.as_ref(),
            _ => None,
        }
    }

    fn sla_slot(&mut self, frame: FrameId) -> Option<&mut Option<Box<SlaRun>>> {
        match &mut self.state.frames.get_mut(&frame)?.kind {
            FrameKind::Task(task) => Some(&mut task.sla),
            FrameKind::Workflow { sla, .. } => Some(sla),
            _ => None,
        }
    }

    /// Starts the SLA clock of a task (or of the workflow) that is now waiting.
    pub(super) fn begin_sla(
        &mut self,
        id: FrameId,
        spec: &Sla,
        name: &str,
        input: &Value,
        human_task: Option<Seq>,
        node: Option<&Node>,
    ) -> Result<(), Problem> {
        let _ = node;
        let scope_frame = self.is_task(id).then_some(id);
        let within = match &spec.within {
            WaitFor::Fixed(d) => *d,
            WaitFor::Expr(expr) => {
                let value = self.eval(expr, &Scope { frame: scope_frame, input, output: None, extra: &[] })?;
                crate::duration::parse(&value)
                    .ok_or_else(|| expression_error(format!("`sla.within` evaluated to {value}, not a duration")))?
            }
        };
        let calendar = self.calendar(spec.calendar.as_deref())?;
        let department = match &spec.department {
            Some(expr) => match self.eval(expr, &Scope { frame: scope_frame, input, output: None, extra: &[] })? {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => return Err(expression_error(format!("`sla.department` evaluated to {other}, not a string"))),
            },
            None => self.human_wait(id).and_then(|w| w.department.clone()),
        };
        let now = self.now();
        let sla = self.ctx.start_sla(SlaStarted {
            name: name.to_owned(),
            human_task,
            department,
            calendar: spec.calendar.clone(),
            within_ms: millis(within),
            target_at: calendar.deadline(now, within),
            at_risk_at: calendar.deadline(now, spec.at_risk.offset(within)),
        });
        let mut run = SlaRun {
            sla,
            name: name.to_owned(),
            within_ms: millis(within),
            calendar: spec.calendar.clone(),
            clock: SlaClock::start(now),
            timers: BTreeMap::new(),
            fired: BTreeSet::new(),
            breached: false,
            paused: BTreeSet::new(),
        };
        self.arm_sla(id, spec, &mut run, calendar);
        if let Some(slot) = self.sla_slot(id) {
            *slot = Some(Box::new(run));
        }
        self.refresh_initiator_pauses();
        Ok(())
    }

    /// Starts a timer for the breach and for each rung not reached yet, from the clock as it
    /// stands.
    fn arm_sla(&mut self, id: FrameId, spec: &Sla, run: &mut SlaRun, calendar: &Calendar) {
        let now = self.now();
        let within = run.within();
        let mut marks = Vec::new();
        if !run.breached {
            marks.push((Mark::Breach, within));
        }
        for (i, rung) in spec.escalate.iter().enumerate() {
            let i = i as u32;
            if !run.fired.contains(&i) {
                marks.push((Mark::Rung(i), rung.after.offset(within)));
            }
        }
        for (mark, offset) in marks {
            let Some(due) = run.clock.due(offset, calendar) else { continue };
            let seq = self.ctx.start_timer(due.max(now));
            self.state.waits.insert(seq, id);
            run.timers.insert(seq, mark);
        }
    }

    fn disarm_sla(&mut self, run: &mut SlaRun) {
        for seq in std::mem::take(&mut run.timers).into_keys() {
            self.state.waits.remove(&seq);
            self.ctx.cancel_timer(seq);
        }
    }

    /// Stops a clock for good (its task or workflow ended).
    pub(super) fn stop_sla(&mut self, run: &SlaRun) {
        let mut run = run.clone();
        self.disarm_sla(&mut run);
        let calendar = self.calendar(run.calendar.as_deref()).unwrap_or(&ALWAYS);
        let elapsed = run.clock.elapsed(self.now(), calendar);
        self.ctx.stop_sla(run.sla, millis(elapsed));
    }

    /// Stops every clock still running (the workflow ends).
    pub(super) fn stop_every_sla(&mut self) {
        let frames: Vec<FrameId> = self.state.frames.keys().copied().collect();
        for frame in frames {
            if let Some(run) = self.sla_slot(frame).and_then(Option::take) {
                self.stop_sla(&run);
            }
        }
    }

    /// Takes an SLA timer of `frame`: a rung is reached, or the SLA is breached. False when the
    /// timer is not one of its SLA's.
    pub(super) fn sla_timer(&mut self, frame: FrameId, seq: Seq) -> bool {
        let Some(mut run) = self.sla_slot(frame).and_then(Option::take) else { return false };
        let Some(mark) = run.timers.remove(&seq) else {
            if let Some(slot) = self.sla_slot(frame) {
                *slot = Some(run);
            }
            return false;
        };
        let calendar = self.calendar(run.calendar.as_deref()).unwrap_or(&ALWAYS);
        let elapsed = run.clock.elapsed(self.now(), calendar);
        match mark {
            Mark::Breach => {
                run.breached = true;
                self.ctx.breach_sla(run.sla, millis(elapsed));
            }
            Mark::Rung(i) => {
                run.fired.insert(i);
                self.ctx.escalate_sla(run.sla, i);
                self.escalate(frame, &run, i, elapsed);
            }
        }
        if let Some(slot) = self.sla_slot(frame) {
            *slot = Some(run);
        }
        true
    }

    /// Runs rung `i`'s tasks beside `owner`.
    fn escalate(&mut self, owner: FrameId, run: &SlaRun, i: u32, elapsed: std::time::Duration) {
        let Some(spec) = self.sla_spec(owner) else { return };
        let Some(rung) = spec.escalate.get(i as usize) else { return };
        let (input, mut vars) = match self.state.frames.get(&owner).map(|f| (&f.kind, f.vars.clone())) {
            Some((FrameKind::Task(task), vars)) => (task.input.clone(), vars),
            Some((_, vars)) => (self.state.raw_input.clone(), vars),
            None => return,
        };
        let calendar = self.calendar(run.calendar.as_deref()).unwrap_or(&ALWAYS);
        let target = run.clock.due(run.within(), calendar);
        let after = match rung.after {
            Threshold::Percent(p) => Value::String(format!("{p}%")),
            Threshold::After(d) => Value::from(millis(d)),
        };
        let wait = self.human_wait(owner);
        let assignee = wait.and_then(|w| w.open.values().flatten().next().cloned());
        let sla = json!({
            "name": run.name,
            "rung": i,
            "after": after,
            "withinMs": run.within_ms,
            "elapsedMs": millis(elapsed),
            "target": target.map(iso),
            "breached": run.breached,
            "assignee": assignee,
            "initiator": self.state.started_by,
            "tasks": wait.map(|w| w.open_tasks().collect::<Vec<_>>()).unwrap_or_default(),
        });
        vars.insert(SLA_VARIABLE.to_owned(), sla);
        let frame = self.push_frame(Some(owner), vars.clone(), FrameKind::Escalation { owner });
        self.start_sequence(frame, rung.body, input, vars);
    }

    /// A rung's tasks ended: nothing waits for them. A failure is told as an event.
    pub(super) fn on_escalation(&mut self, id: FrameId, signal: Signal) {
        match signal {
            Signal::Done { .. } => {
                self.state.frames.remove(&id);
            }
            Signal::Failed { error, .. } => {
                let owner = match self.state.frames.remove(&id) {
                    Some(Frame { kind: FrameKind::Escalation { owner }, .. }) => owner,
                    _ => return,
                };
                let task = match self.state.frames.get(&owner).map(|f| &f.kind) {
                    Some(FrameKind::Task(task)) => Value::String(self.wf.program.node(task.node).reference.clone()),
                    _ => Value::Null,
                };
                let event = json!({
                    "type": ESCALATION_FAILED,
                    "source": format!("baton/{}", self.wf.definition_key()),
                    "data": { "task": task, "error": error.to_value() },
                });
                self.emit(event);
            }
            _ => {}
        }
    }

    /// The instance was suspended or resumed: clocks that pause while suspended follow.
    pub(super) fn suspended(&mut self, suspended: bool) {
        let frames: Vec<FrameId> = self.state.frames.keys().copied().collect();
        for frame in frames {
            if self.sla_spec(frame).is_some_and(|spec| spec.pause.suspended) {
                self.set_paused(frame, Pause::Suspended, suspended);
            }
        }
    }

    /// Pauses the clocks that pause while their human task waits on the request's initiator,
    /// and resumes those that no longer wait.
    fn refresh_initiator_pauses(&mut self) {
        let frames: Vec<FrameId> = self.state.frames.keys().copied().collect();
        for frame in frames {
            let Some(spec) = self.sla_spec(frame) else { continue };
            if !spec.pause.initiator {
                continue;
            }
            let waiting = match self.state.frames.get(&frame).map(|f| &f.kind) {
                // The workflow's clock pauses while any of its human tasks waits on the initiator.
                Some(FrameKind::Workflow { .. }) => {
                    let all: Vec<FrameId> = self.state.frames.keys().copied().collect();
                    all.into_iter().any(|f| self.waits_on_initiator(f))
                }
                _ => self.waits_on_initiator(frame),
            };
            self.set_paused(frame, Pause::Initiator, waiting);
        }
    }

    fn waits_on_initiator(&self, frame: FrameId) -> bool {
        let Some(wait) = self.human_wait(frame) else { return false };
        let initiator = wait.initiator.as_deref().or(self.state.started_by.as_deref());
        initiator.is_some_and(|person| wait.waits_on(person))
    }

    fn set_paused(&mut self, frame: FrameId, reason: Pause, paused: bool) {
        let Some(spec) = self.sla_spec(frame) else { return };
        let Some(mut run) = self.sla_slot(frame).and_then(Option::take) else { return };
        let was_paused = !run.paused.is_empty();
        let changed = if paused { run.paused.insert(reason) } else { run.paused.remove(&reason) };
        if changed {
            let calendar = self.calendar(run.calendar.as_deref()).unwrap_or(&ALWAYS);
            let now = self.now();
            match (was_paused, run.paused.is_empty()) {
                (false, false) => {
                    self.disarm_sla(&mut run);
                    run.clock.pause(now, calendar);
                    let elapsed = run.clock.elapsed(now, calendar);
                    self.ctx.pause_sla(run.sla, millis(elapsed));
                }
                (true, true) => {
                    run.clock.resume(now);
                    self.arm_sla(frame, spec, &mut run, calendar);
                    let target = run.clock.due(run.within(), calendar).unwrap_or(now);
                    let at_risk = run.clock.due(spec.at_risk.offset(run.within()), calendar).unwrap_or(now);
                    self.ctx.resume_sla(run.sla, target, at_risk);
                }
                _ => {}
            }
        }
        if let Some(slot) = self.sla_slot(frame) {
            *slot = Some(run);
        }
    }
}
