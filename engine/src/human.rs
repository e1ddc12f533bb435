//! Human tasks: work a person does inside an instance, and who may do it.
//!
//! A human task is a durable primitive like an activity or a timer: the orchestration creates
//! it with a command ([`HumanTaskSpec`]), people act on it through the engine
//! ([`TaskAction`]), and each change is a history event with its actor. What a person may do
//! is decided by one predicate, [`may_act`], over *access keys*: a task lists the keys that
//! open it (`user:ana`, `role:team_leader@dept:assembly`, `group:reviewers`,
//! `dept:assembly`), a [`Principal`] lists the keys they hold, and they may see the task when
//! the two lists meet. The store keeps a task's keys in an indexed table, so an inbox query
//! filters by the same predicate inside SQL, before paging.
//!
//! Role candidates are scoped by the task's department: a team leader of one department does
//! not see the team-leader tasks of another. A grant without a department (an
//! organisation-wide role) opens the role's tasks in every department.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::history::{InstanceId, Seq};

/// Who a task is offered to. Candidates see the task and may claim it; the task's assignee
/// (if any) is the one person who owns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departments: Vec<String>,
    /// Scopes `roles` to this department instead of the task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

impl Assignment {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.roles.is_empty() && self.groups.is_empty() && self.departments.is_empty()
    }

    /// Exactly one user and nobody else: that user becomes the owner.
    pub fn single_user(&self) -> Option<&str> {
        let only_users = self.roles.is_empty() && self.groups.is_empty() && self.departments.is_empty();
        match self.users.as_slice() {
            [user] if only_users => Some(user),
            _ => None,
        }
    }

    pub fn user(id: impl Into<String>) -> Self {
        Self { users: vec![id.into()], ..Self::default() }
    }

    /// The access keys this assignment opens, roles scoped by its own department, else by
    /// `department` (the task's).
    pub fn keys(&self, department: Option<&str>) -> BTreeSet<String> {
        let department = self.department.as_deref().or(department);
        let mut keys = BTreeSet::new();
        keys.extend(self.users.iter().map(|u| user_key(u)));
        for role in &self.roles {
            match department {
                Some(d) => {
                    keys.insert(format!("role:{role}@dept:{d}"));
                    keys.insert(format!("role:{role}@*"));
                }
                None => {
                    keys.insert(format!("role:{role}"));
                }
            }
        }
        keys.extend(self.groups.iter().map(|g| format!("group:{g}")));
        keys.extend(self.departments.iter().map(|d| format!("dept:{d}")));
        keys
    }
}

fn user_key(user: &str) -> String {
    format!("user:{user}")
}

/// Who may complete a task on behalf of the person it belongs to (the seeds'
/// RequestOnBehalfCreated: a team leader acting for an operator). Empty: nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnBehalfRule {
    /// Holders of these roles (in the task's department, when it has one) may act for another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// What the orchestration asks for when it creates a human task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanTaskSpec {
    /// The task's name in its definition (`review`), for filters and reports.
    pub name: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The person who owns the task from the start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Who may see and claim the task while nobody owns it.
    #[serde(default)]
    pub candidates: Assignment,
    /// Scopes role candidates (and the SLA dashboard) to a department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// JSON Schema the completion data must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<Value>,
    /// The outcomes a completion may choose from; empty means the single outcome `done`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<String>,
    /// Higher is more urgent.
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_ms")]
    pub due_at: Option<DateTime<Utc>>,
    /// The person whose request this is: under four-eyes they may not act on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Lets the initiator complete the task (turns four-eyes off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_behalf: OnBehalfRule,
    /// Who may reassign the task without being able to complete it (managers).
    #[serde(default, skip_serializing_if = "Assignment::is_empty")]
    pub supervisors: Assignment,
    /// Context shown to the person (the request, the document...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl HumanTaskSpec {
    pub fn new(name: impl Into<String>, title: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            description: None,
            assignee: None,
            candidates: Assignment::default(),
            department: None,
            form: None,
            outcomes: Vec::new(),
            priority: 0,
            due_at: None,
            initiator: None,
            allow_self_approval: false,
            on_behalf: OnBehalfRule::default(),
            supervisors: Assignment::default(),
            data: Value::Null,
        }
    }

    /// The outcomes a completion may choose.
    pub fn allowed_outcomes(&self) -> Vec<String> {
        if self.outcomes.is_empty() { vec![DEFAULT_OUTCOME.to_owned()] } else { self.outcomes.clone() }
    }
}

/// The outcome of a task that declares none.
pub const DEFAULT_OUTCOME: &str = "done";

/// Where a human task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HumanTaskStatus {
    Open,
    Completed,
    Cancelled,
    Expired,
}

impl HumanTaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Self::Open,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub at: DateTime<Utc>,
    pub text: String,
    /// The text was erased with its author's personal data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

/// A human task as it stands: the spec it was created with and what people did since. It
/// lives in the instance state (so checks and changes happen in the instance's step) and is
/// mirrored to the store's task table for inboxes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanTask {
    pub spec: HumanTaskSpec,
    pub status: HumanTaskStatus,
    /// The owner: accountable for the task, even while it is delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// Works on the task for the owner; may complete it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
    /// The candidates now (a reassignment to a role replaces the spec's).
    pub candidates: Assignment,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<Comment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
}

/// What the orchestration is told when a person completes a task. Its JSON form is the
/// `humanTask` call's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    pub outcome: String,
    #[serde(default)]
    pub data: Value,
    pub completed_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub completed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The form data was erased with the personal data of the person who completed the task
    /// or of the person it was completed for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

impl Completion {
    /// The output a workflow sees: `{outcome, data, completedBy, completedAt, onBehalfOf}`, with
    /// the time as RFC 3339.
    pub fn to_output(&self) -> Value {
        serde_json::json!({
            "outcome": self.outcome,
            "data": self.data,
            "completedBy": self.completed_by,
            "completedAt": self.completed_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "onBehalfOf": self.on_behalf_of,
        })
    }
}

impl HumanTask {
    /// Whether a person's data was erased from this task (a comment or its completion).
    pub fn holds_erased(&self) -> bool {
        self.comments.iter().any(|comment| comment.erased) || self.completion.as_ref().is_some_and(|c| c.erased)
    }

    pub fn new(spec: HumanTaskSpec, created_at: DateTime<Utc>) -> Self {
        Self {
            assignee: spec.assignee.clone(),
            candidates: spec.candidates.clone(),
            spec,
            status: HumanTaskStatus::Open,
            delegate: None,
            created_at,
            comments: Vec::new(),
            completion: None,
        }
    }

    /// The keys that open this task: its owner and delegate while someone owns it, its
    /// candidates while nobody does, and always its supervisors and the roles that may act on
    /// someone's behalf. A finished task stays visible to whoever could see it last, and to
    /// the person who completed it.
    pub fn access_keys(&self) -> BTreeSet<String> {
        let department = self.spec.department.as_deref();
        let mut keys = match &self.assignee {
            Some(owner) => BTreeSet::from([user_key(owner)]),
            None => self.candidates.keys(department),
        };
        keys.extend(self.spec.supervisors.keys(department));
        let on_behalf = Assignment { roles: self.spec.on_behalf.roles.clone(), ..Assignment::default() };
        keys.extend(on_behalf.keys(department));
        if let Some(delegate) = &self.delegate {
            keys.insert(user_key(delegate));
        }
        if let Some(done) = &self.completion {
            keys.insert(user_key(&done.completed_by));
        }
        keys
    }

    fn is_handler(&self, user: &str) -> bool {
        self.assignee.as_deref() == Some(user) || self.delegate.as_deref() == Some(user)
    }

    fn is_initiator(&self, user: &str) -> bool {
        !self.spec.allow_self_approval && self.spec.initiator.as_deref() == Some(user)
    }
}

/// A grant of an organisation role, optionally limited to one department.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleGrant {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

impl RoleGrant {
    pub fn new(role: impl Into<String>, department: Option<&str>) -> Self {
        Self { role: role.into(), department: department.map(str::to_owned) }
    }
}

/// A person acting on tasks, as the directory (and the platform's permissions) know them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub user: String,
    #[serde(default)]
    pub roles: Vec<RoleGrant>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub departments: Vec<String>,
    /// A platform administrator: sees and acts on every task.
    #[serde(default)]
    pub admin: bool,
    /// The namespaces this person administers (when not `admin` everywhere): their inbox lists
    /// every task of those namespaces' definitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_namespaces: Vec<String>,
}

impl Principal {
    pub fn user(id: impl Into<String>) -> Self {
        Self { user: id.into(), ..Self::default() }
    }

    /// Whether this person administers the tasks of `definition` (`namespace/name`).
    pub fn administers(&self, definition: &str) -> bool {
        self.admin
            || definition
                .split_once('/')
                .is_some_and(|(namespace, _)| self.admin_namespaces.iter().any(|n| n == namespace))
    }

    /// The keys this person holds (see the module documentation).
    pub fn access_keys(&self) -> BTreeSet<String> {
        let mut keys = BTreeSet::from([user_key(&self.user)]);
        for grant in &self.roles {
            keys.insert(format!("role:{}", grant.role));
            match &grant.department {
                Some(d) => keys.insert(format!("role:{}@dept:{d}", grant.role)),
                None => keys.insert(format!("role:{}@*", grant.role)),
            };
        }
        keys.extend(self.groups.iter().map(|g| format!("group:{g}")));
        keys.extend(self.departments.iter().map(|d| format!("dept:{d}")));
        keys
    }

    fn holds_role_for(&self, role: &str, department: Option<&str>) -> bool {
        self.roles.iter().any(|grant| {
            grant.role == role
                && (grant.department.is_none() || department.is_none() || grant.department.as_deref() == department)
        })
    }
}

/// Something a person does to a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum TaskAction {
    Claim,
    Unclaim,
    /// Hands the work to `to`; the owner stays accountable and may still complete it.
    Delegate {
        to: String,
    },
    /// Moves the task: a new owner, or back to candidates when `to` is not a single user.
    Reassign {
        to: Assignment,
    },
    #[serde(rename_all = "camelCase")]
    Complete {
        outcome: String,
        #[serde(default)]
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_behalf_of: Option<String>,
    },
    Comment {
        text: String,
    },
}

impl TaskAction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Unclaim => "unclaim",
            Self::Delegate { .. } => "delegate",
            Self::Reassign { .. } => "reassign",
            Self::Complete { .. } => "complete",
            Self::Comment { .. } => "comment",
        }
    }
}

/// Why an action on a task was refused. Nothing was recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TaskRefusal {
    #[error("no such task")]
    NotFound,
    /// The person may not see the task (reported like a missing task by the API).
    #[error("{user} may not act on this task")]
    Forbidden { user: String },
    /// The person sees the task but may not do this to it.
    #[error("{0}")]
    NotAllowed(String),
    #[error("the task is {0}")]
    NotOpen(&'static str),
    #[error("four-eyes: {user} started this request and may not act on it")]
    FourEyes { user: String },
    #[error("outcome {given:?} is not one of {allowed:?}")]
    UnknownOutcome { given: String, allowed: Vec<String> },
    #[error("the data does not match the task's form: {}", .0.join("; "))]
    InvalidData(Vec<String>),
    #[error("{0}")]
    Invalid(String),
}

/// The longest comment a task keeps.
pub const MAX_COMMENT_CHARS: usize = 4000;

/// The one authorization predicate: may `principal` see `task` (and so act on it as far as
/// [`check_action`] allows)?
pub fn may_see(principal: &Principal, task: &HumanTask) -> bool {
    principal.admin || !principal.access_keys().is_disjoint(&task.access_keys())
}

fn may_supervise(principal: &Principal, task: &HumanTask) -> bool {
    !task.spec.supervisors.is_empty()
        && !principal.access_keys().is_disjoint(&task.spec.supervisors.keys(task.spec.department.as_deref()))
}

/// Decides whether `principal` may do `action` to `task`, without changing anything. The
/// engine calls it inside the instance's step, so no other change to the task can come in
/// between the check and the change.
pub fn check_action(principal: &Principal, task: &HumanTask, action: &TaskAction) -> Result<(), TaskRefusal> {
    if !may_see(principal, task) {
        return Err(TaskRefusal::Forbidden { user: principal.user.clone() });
    }
    if task.status != HumanTaskStatus::Open {
        return Err(TaskRefusal::NotOpen(task.status.as_str()));
    }
    let me = principal.user.as_str();
    let is_candidate = !principal.access_keys().is_disjoint(&task.candidates.keys(task.spec.department.as_deref()));
    match action {
        TaskAction::Comment { text } => {
            if text.trim().is_empty() {
                return Err(TaskRefusal::Invalid("a comment needs text".into()));
            }
            if text.chars().count() > MAX_COMMENT_CHARS {
                return Err(TaskRefusal::Invalid(format!("a comment has at most {MAX_COMMENT_CHARS} characters")));
            }
            Ok(())
        }
        TaskAction::Claim => {
            if task.is_initiator(me) {
                return Err(TaskRefusal::FourEyes { user: me.to_owned() });
            }
            match &task.assignee {
                Some(owner) if owner == me => Ok(()),
                Some(owner) => Err(TaskRefusal::NotAllowed(format!("the task is already claimed by {owner}"))),
                None if is_candidate || principal.admin => Ok(()),
                None => Err(TaskRefusal::NotAllowed(format!("{me} is not a candidate for this task"))),
            }
        }
        TaskAction::Unclaim => match &task.assignee {
            _ if task.candidates.is_empty() => Err(TaskRefusal::NotAllowed(
                "the task has no candidates to give it back to; reassign it instead".into(),
            )),
            Some(owner) if owner == me || principal.admin => Ok(()),
            Some(owner) => Err(TaskRefusal::NotAllowed(format!("only {owner} can give the task back"))),
            None => Err(TaskRefusal::NotAllowed("the task is not claimed".into())),
        },
        TaskAction::Delegate { to } => {
            if to.trim().is_empty() {
                return Err(TaskRefusal::Invalid("delegate to whom?".into()));
            }
            if task.assignee.as_deref() == Some(me) || principal.admin {
                Ok(())
            } else {
                Err(TaskRefusal::NotAllowed("only the task's owner can delegate it".into()))
            }
        }
        TaskAction::Reassign { to } => {
            if to.is_empty() {
                return Err(TaskRefusal::Invalid("reassign to whom?".into()));
            }
            let owner = task.assignee.as_deref() == Some(me);
            if owner || principal.admin {
                Ok(())
            } else if may_supervise(principal, task) {
                // A supervisor hands the task on; taking it would let them complete it.
                if to.users.iter().any(|u| u == me) {
                    Err(TaskRefusal::NotAllowed("a supervisor may not reassign a task to themselves".into()))
                } else {
                    Ok(())
                }
            } else {
                Err(TaskRefusal::NotAllowed(
                    "only the task's owner, a supervisor or an administrator can reassign it".into(),
                ))
            }
        }
        TaskAction::Complete { outcome, on_behalf_of, .. } => {
            let allowed = task.spec.allowed_outcomes();
            if !allowed.contains(outcome) {
                return Err(TaskRefusal::UnknownOutcome { given: outcome.clone(), allowed });
            }
            if task.is_initiator(me) {
                return Err(TaskRefusal::FourEyes { user: me.to_owned() });
            }
            if let Some(other) = on_behalf_of {
                return check_on_behalf(principal, task, other);
            }
            let may = task.is_handler(me) || (task.assignee.is_none() && is_candidate) || principal.admin;
            if may {
                Ok(())
            } else if let Some(owner) = &task.assignee {
                Err(TaskRefusal::NotAllowed(format!("the task belongs to {owner}")))
            } else {
                Err(TaskRefusal::NotAllowed(format!("{me} is not a candidate for this task")))
            }
        }
    }
}

fn check_on_behalf(principal: &Principal, task: &HumanTask, other: &str) -> Result<(), TaskRefusal> {
    if task.is_initiator(other) {
        return Err(TaskRefusal::FourEyes { user: other.to_owned() });
    }
    let rule = &task.spec.on_behalf;
    let department = task.spec.department.as_deref();
    if !rule.roles.iter().any(|role| principal.holds_role_for(role, department)) {
        return Err(TaskRefusal::NotAllowed(if rule.roles.is_empty() {
            "this task cannot be completed on someone's behalf".into()
        } else {
            format!("acting on behalf of someone needs one of the roles {:?}", rule.roles)
        }));
    }
    match &task.assignee {
        Some(owner) if owner == other && other != principal.user => Ok(()),
        Some(owner) if owner == other => {
            Err(TaskRefusal::NotAllowed("acting on one's own behalf is just completing".into()))
        }
        Some(owner) => Err(TaskRefusal::NotAllowed(format!("the task belongs to {owner}, not {other}"))),
        None => Err(TaskRefusal::NotAllowed(format!("the task is not {other}'s: nobody owns it yet"))),
    }
}

/// A human task's row for inboxes: the task, where it lives, and its access keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HumanTaskRow {
    pub instance: InstanceId,
    pub seq: Seq,
    /// The definition's name (without version).
    pub definition: String,
    pub task: HumanTask,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
}

impl HumanTaskRow {
    /// The task's reference as the API shows it: `instance:seq`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.instance, self.seq)
    }
}

/// Inbox filters. Every inbox is bounded by `limit` and filtered by the principal's access
/// inside the query.
#[derive(Clone, Debug, Default)]
pub struct InboxQuery {
    /// Only tasks owned by (or delegated to) this user.
    pub assignee: Option<String>,
    /// Only tasks offered to this role (any department unless `department` is set).
    pub role: Option<String>,
    pub group: Option<String>,
    pub department: Option<String>,
    /// Default: open tasks only.
    pub status: Option<HumanTaskStatus>,
    pub due_before: Option<DateTime<Utc>>,
    pub min_priority: Option<i32>,
    pub definition: Option<String>,
    pub instance: Option<InstanceId>,
    /// Cursor: the `(instance, seq)` of the last row of the previous page.
    pub after: Option<(InstanceId, Seq)>,
    pub limit: u32,
}

impl InboxQuery {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    pub fn effective_limit(&self) -> u32 {
        crate::store::bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }

    pub fn effective_status(&self) -> HumanTaskStatus {
        self.status.unwrap_or(HumanTaskStatus::Open)
    }

    /// Does `row` pass the filters (not the access check)? The memory store filters with it;
    /// SQL stores must agree with it.
    pub fn matches(&self, row: &HumanTaskRow) -> bool {
        let task = &row.task;
        let department = task.spec.department.as_deref();
        task.status == self.effective_status()
            && self.assignee.as_ref().is_none_or(|a| task.is_handler(a))
            && self.role.as_ref().is_none_or(|r| task.candidates.roles.contains(r))
            && self.group.as_ref().is_none_or(|g| task.candidates.groups.contains(g))
            && self
                .department
                .as_ref()
                .is_none_or(|d| department == Some(d.as_str()) || task.candidates.departments.contains(d))
            && self.due_before.is_none_or(|before| task.spec.due_at.is_some_and(|due| due < before))
            && self.min_priority.is_none_or(|p| task.spec.priority >= p)
            && self.definition.as_ref().is_none_or(|d| &row.definition == d)
            && self.instance.as_ref().is_none_or(|i| &row.instance == i)
            && self.after.as_ref().is_none_or(|(i, s)| (&row.instance, row.seq) > (i, *s))
    }
}

mod opt_ms {
    use chrono::{DateTime, TimeZone, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(t) => s.serialize_some(&t.timestamp_millis()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(spec: HumanTaskSpec) -> HumanTask {
        HumanTask::new(spec, Utc::now())
    }

    fn team_leader(user: &str, department: &str) -> Principal {
        Principal { roles: vec![RoleGrant::new("team_leader", Some(department))], ..Principal::user(user) }
    }

    fn for_team_leaders_of(department: &str) -> HumanTaskSpec {
        let mut spec = HumanTaskSpec::new("review", "Review");
        spec.candidates.roles = vec!["team_leader".into()];
        spec.department = Some(department.into());
        spec
    }

    #[test]
    fn a_role_candidate_is_scoped_by_the_task_department() {
        let t = task(for_team_leaders_of("assembly"));
        assert!(may_see(&team_leader("ana", "assembly"), &t));
        assert!(!may_see(&team_leader("bob", "paint"), &t));
        let everywhere = Principal { roles: vec![RoleGrant::new("team_leader", None)], ..Principal::user("cy") };
        assert!(may_see(&everywhere, &t));
        assert_eq!(
            check_action(&team_leader("bob", "paint"), &t, &TaskAction::Claim),
            Err(TaskRefusal::Forbidden { user: "bob".into() })
        );
    }

    #[test]
    fn a_claimed_task_leaves_the_other_candidates() {
        let mut t = task(for_team_leaders_of("assembly"));
        t.assignee = Some("ana".into());
        assert!(may_see(&team_leader("ana", "assembly"), &t));
        assert!(!may_see(&team_leader("dan", "assembly"), &t));
    }

    #[test]
    fn four_eyes_refuses_the_initiator_unless_allowed() {
        let mut spec = for_team_leaders_of("assembly");
        spec.initiator = Some("ana".into());
        let complete = TaskAction::Complete { outcome: "done".into(), data: Value::Null, on_behalf_of: None };
        assert_eq!(
            check_action(&team_leader("ana", "assembly"), &task(spec.clone()), &complete),
            Err(TaskRefusal::FourEyes { user: "ana".into() })
        );
        spec.allow_self_approval = true;
        assert_eq!(check_action(&team_leader("ana", "assembly"), &task(spec), &complete), Ok(()));
    }

    #[test]
    fn on_behalf_needs_a_rule_and_the_right_role() {
        let mut spec = HumanTaskSpec::new("request", "Request");
        spec.assignee = Some("olga".into());
        spec.department = Some("assembly".into());
        spec.candidates.roles = vec!["team_leader".into()];
        let act = TaskAction::Complete { outcome: "done".into(), data: Value::Null, on_behalf_of: Some("olga".into()) };
        let mut t = task(spec.clone());
        // The team leader cannot even see a task owned by the operator...
        assert!(check_action(&team_leader("ana", "assembly"), &t, &act).is_err());
        // ...unless the definition lets them act for her.
        spec.on_behalf.roles = vec!["team_leader".into()];
        t = task(spec);
        assert!(may_see(&team_leader("ana", "assembly"), &t));
        assert_eq!(check_action(&team_leader("ana", "assembly"), &t, &act), Ok(()));
        assert!(check_action(&team_leader("bob", "paint"), &t, &act).is_err());
    }

    #[test]
    fn a_supervisor_hands_a_task_on_but_never_to_themselves() {
        let mut spec = for_team_leaders_of("assembly");
        spec.supervisors.roles = vec!["manager".into()];
        let t = task(spec);
        let maria = Principal { roles: vec![RoleGrant::new("manager", Some("assembly"))], ..Principal::user("maria") };
        assert!(may_see(&maria, &t));
        assert_eq!(check_action(&maria, &t, &TaskAction::Reassign { to: Assignment::user("tom") }), Ok(()));
        assert!(check_action(&maria, &t, &TaskAction::Reassign { to: Assignment::user("maria") }).is_err());
        let complete = TaskAction::Complete { outcome: "done".into(), data: Value::Null, on_behalf_of: None };
        assert!(check_action(&maria, &t, &complete).is_err(), "a supervisor does not complete");
    }

    #[test]
    fn a_supervisor_in_another_department_sees_nothing() {
        let mut spec = HumanTaskSpec::new("review", "Review");
        spec.candidates.users = vec!["ana".into()];
        spec.supervisors =
            Assignment { roles: vec!["manager".into()], department: Some("hr".into()), ..Assignment::default() };
        let t = task(spec);
        let hr = Principal { roles: vec![RoleGrant::new("manager", Some("hr"))], ..Principal::user("h") };
        let paint = Principal { roles: vec![RoleGrant::new("manager", Some("paint"))], ..Principal::user("p") };
        assert!(may_see(&hr, &t));
        assert!(!may_see(&paint, &t));
    }

    #[test]
    fn acting_on_behalf_needs_an_owned_task() {
        let mut spec = for_team_leaders_of("assembly");
        spec.on_behalf.roles = vec!["team_leader".into()];
        let act = TaskAction::Complete { outcome: "done".into(), data: Value::Null, on_behalf_of: Some("bob".into()) };
        assert!(check_action(&team_leader("ana", "assembly"), &task(spec), &act).is_err());
    }

    #[test]
    fn a_task_without_candidates_cannot_be_given_back() {
        let mut spec = HumanTaskSpec::new("vote", "Vote");
        spec.assignee = Some("ana".into());
        assert!(check_action(&Principal::user("ana"), &task(spec), &TaskAction::Unclaim).is_err());
    }

    #[test]
    fn only_declared_outcomes_complete() {
        let mut spec = HumanTaskSpec::new("review", "Review");
        spec.candidates.users = vec!["ana".into()];
        spec.outcomes = vec!["approve".into(), "reject".into()];
        let act = TaskAction::Complete { outcome: "maybe".into(), data: Value::Null, on_behalf_of: None };
        assert!(matches!(
            check_action(&Principal::user("ana"), &task(spec), &act),
            Err(TaskRefusal::UnknownOutcome { .. })
        ));
    }
}
