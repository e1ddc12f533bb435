//! The pages: login, the inbox, one task.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use baton_engine::EngineError;
use baton_engine::directory::PeopleQuery;
use baton_engine::history::Seq;
use baton_engine::human::{Assignment, HumanTaskRow, HumanTaskStatus, InboxQuery, TaskAction, TaskRefusal};
use baton_engine::store::{SlaCompliance, SlaQuery, SlaStateName};
use baton_engine::{InstanceId, InstanceStatus};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::form::{self, Field};
use super::{DEV_SESSION, Session, cross_site, session_cookie};
use crate::app::{App, Auth};
use crate::problem::FieldError;
use crate::problem::Problem;
use crate::routes::Body;
use crate::routes::bulk::{self as api_bulk, BulkAction, BulkJob, BulkRequest};
use crate::routes::definitions::{self as api_definitions, DefinitionView};
use crate::routes::instances::{self as api_instances, HistoryParams, InstanceView, SearchParams};
use crate::routes::others::{self as api_others, MarkRead, NotificationView};
use crate::routes::read_models as api_read_models;

/// A page, or the page that says what went wrong.
pub(super) fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a UI template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    who: Option<String>,
    csrf: String,
    title: &'static str,
    message: String,
}

/// The page for an API problem, with its status.
pub(super) fn problem_page(session: Option<&Session>, problem: &Problem) -> Response {
    let status = problem.kind().status();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        _ => "Something went wrong",
    };
    let (who, csrf) = session.map_or((None, String::new()), |s| (Some(s.caller.subject.clone()), s.csrf()));
    page(status, &ErrorPage { who, csrf, title, message: problem.detail.clone() })
}

fn refused(session: Option<&Session>, message: &str) -> Response {
    problem_page(session, &Problem::forbidden(message))
}

/// A posted form's first value for `name` (empty when absent).
pub(super) fn posted_field<'a>(posted: &'a [(String, String)], name: &str) -> &'a str {
    posted.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value.as_str())
}

/// The refusal of a posted form without this session's CSRF token, or sent from another site.
pub(super) fn stale_form(session: &Session, headers: &HeaderMap, csrf: &str) -> Option<Response> {
    (cross_site(headers) || csrf != session.csrf())
        .then(|| refused(Some(session), "this form is stale or came from another site: open the page again"))
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    who: Option<String>,
    csrf: String,
    /// Who one may be in development: (subject, description).
    accounts: Vec<(String, String)>,
    /// The OpenID provider's name, when people sign in through one.
    provider: Option<String>,
    error: Option<String>,
}

/// `GET /ui/login`.
pub async fn login_page(State(app): State<Arc<App>>) -> Response {
    login_form(&app, StatusCode::OK, None).await
}

pub(super) async fn login_form(app: &App, status: StatusCode, error: Option<String>) -> Response {
    let mut accounts = Vec::new();
    if let Some(dev) = &app.options.dev_login {
        for (subject, grants) in dev {
            let grants: Vec<String> = grants.iter().map(ToString::to_string).collect();
            accounts.push((subject.clone(), format!("{subject} ({})", grants.join(", "))));
        }
        let query = PeopleQuery { limit: 200, ..PeopleQuery::default() };
        for person in app.engine.store().people(&query).await.unwrap_or_default() {
            let roles: Vec<String> = person
                .roles
                .iter()
                .map(|g| match &g.department {
                    Some(d) => format!("{} in {d}", g.role),
                    None => g.role.clone(),
                })
                .collect();
            let name = if person.name.is_empty() { person.id.clone() } else { person.name.clone() };
            accounts.push((person.id.clone(), format!("{name}: {}", roles.join(", "))));
        }
    }
    let provider = app.options.oidc.as_ref().map(|oidc| oidc.label().to_owned());
    page(status, &LoginPage { who: None, csrf: String::new(), accounts, provider, error })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// `POST /ui/login`: a pasted token, or (in development) who to be.
pub async fn login(State(app): State<Arc<App>>, headers: HeaderMap, Form(login): Form<LoginForm>) -> Response {
    if cross_site(&headers) {
        return refused(None, "a login from another site is refused");
    }
    let token = match (login.token.filter(|t| !t.trim().is_empty()), login.subject.filter(|s| !s.is_empty())) {
        (Some(token), _) => match app.auth.authenticate(token.trim()).await {
            Ok(_) => token.trim().to_owned(),
            Err(error) => return login_form(&app, StatusCode::UNAUTHORIZED, Some(error.to_string())).await,
        },
        (None, Some(subject)) => match dev_token(&app, &subject).await {
            Ok(token) => token,
            Err(message) => return login_form(&app, StatusCode::UNAUTHORIZED, Some(message)).await,
        },
        (None, None) => {
            return login_form(&app, StatusCode::UNAUTHORIZED, Some("choose who to be, or paste a token".into())).await;
        }
    };
    let mut response = Redirect::to("/ui/inbox").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(Some(&token), DEV_SESSION));
    response
}

/// A development token for `subject`: an account of the development identity, or a person of
/// the directory (with no platform permission: the directory says what they may do).
async fn dev_token(app: &App, subject: &str) -> Result<String, String> {
    let Some(accounts) = &app.options.dev_login else {
        return Err("this server signs people in with tokens of its identity provider".into());
    };
    let grants = match accounts.iter().find(|(s, _)| s == subject) {
        Some((_, grants)) => grants.clone(),
        None => match app.engine.store().person(subject).await {
            Ok(Some(_)) => Vec::new(),
            _ => return Err(format!("nobody called {subject:?} is in the directory")),
        },
    };
    app.auth.issue(subject, &grants, DEV_SESSION, Utc::now()).map_err(|e| e.to_string())
}

/// `POST /ui/logout`.
pub async fn logout(headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return refused(None, "a logout from another site is refused");
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session_cookie(None, std::time::Duration::ZERO));
    response
}

/// A task as a line of the inbox.
struct TaskLine {
    href: String,
    title: String,
    definition: String,
    department: String,
    owner: String,
    due: String,
    /// `overdue`, `due-soon` or empty.
    urgency: &'static str,
    priority: i32,
    /// The state of the task's SLA clock (`on track`, `at risk`, `breached`), when it has one.
    sla: &'static str,
}

impl TaskLine {
    fn of(row: &HumanTaskRow, now: DateTime<Utc>) -> Self {
        let task = &row.task;
        let urgency = match task.spec.due_at {
            Some(due) if due <= now => "overdue",
            Some(due) if due - now <= chrono::Duration::hours(24) => "due-soon",
            _ => "",
        };
        Self {
            href: format!("/ui/tasks/{}/{}", row.instance, row.seq),
            title: task.spec.title.clone(),
            definition: row.definition.clone(),
            department: task.spec.department.clone().unwrap_or_default(),
            owner: match (&task.assignee, &task.delegate) {
                (Some(owner), Some(delegate)) => format!("{owner} (delegated to {delegate})"),
                (Some(owner), None) => owner.clone(),
                (None, _) => String::new(),
            },
            due: task.spec.due_at.map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default(),
            urgency,
            priority: task.spec.priority,
            sla: "",
        }
    }
}

/// The state of each open task's SLA clock, by instance and task: one lookup per instance
/// the lines name.
async fn sla_states(
    app: &App,
    rows: &[HumanTaskRow],
    now: DateTime<Utc>,
) -> Result<BTreeMap<(InstanceId, Seq), &'static str>, Problem> {
    let mut states = BTreeMap::new();
    let instances: std::collections::BTreeSet<&InstanceId> = rows.iter().map(|row| &row.instance).collect();
    for instance in instances {
        let query = SlaQuery {
            instance: Some(instance.clone()),
            definition: None,
            department: None,
            state: None,
            open_only: true,
            now: Some(now),
            after: None,
            limit: SlaQuery::MAX_LIMIT,
            namespaces: None,
        };
        for clock in app.engine.slas(&query).await? {
            let Some(seq) = clock.human_task else { continue };
            let state = match clock.state(now) {
                SlaStateName::OnTrack => "on track",
                SlaStateName::AtRisk => "at risk",
                SlaStateName::Breached => "breached",
                SlaStateName::Met => continue,
            };
            states.insert((instance.clone(), seq), state);
        }
    }
    Ok(states)
}

#[derive(Debug, Deserialize)]
pub struct InboxParams {
    /// `mine` (owned by or delegated to me) or `all` (everything I may see; the default).
    #[serde(default)]
    view: Option<String>,
}

impl InboxParams {
    fn mine(&self) -> bool {
        self.view.as_deref() == Some("mine")
    }
}

#[derive(Template)]
#[template(path = "ui/inbox.html")]
struct InboxPage {
    who: Option<String>,
    csrf: String,
    mine: bool,
    lines: Vec<TaskLine>,
}

#[derive(Template)]
#[template(path = "ui/inbox_rows.html")]
struct InboxRows {
    lines: Vec<TaskLine>,
}

async fn inbox_lines(app: &App, session: &Session, params: &InboxParams) -> Result<Vec<TaskLine>, Problem> {
    crate::policy::authorize("listTasks", Some(&session.caller), None, app.options.manual_clock)?;
    let principal = app.principal(&session.caller, None).await?;
    let query = InboxQuery {
        assignee: params.mine().then(|| session.caller.subject.clone()),
        status: Some(HumanTaskStatus::Open),
        limit: 200,
        ..InboxQuery::default()
    };
    let now = app.engine.clock().now();
    let rows = app.engine.inbox(&query, &principal).await?;
    let states = sla_states(app, &rows, now).await?;
    Ok(rows
        .iter()
        .map(|row| TaskLine {
            sla: states.get(&(row.instance.clone(), row.seq)).copied().unwrap_or_default(),
            ..TaskLine::of(row, now)
        })
        .collect())
}

/// `GET /ui/inbox`.
pub async fn inbox(State(app): State<Arc<App>>, session: Session, Query(params): Query<InboxParams>) -> Response {
    match inbox_lines(&app, &session, &params).await {
        Ok(lines) => page(
            StatusCode::OK,
            &InboxPage { who: Some(session.caller.subject.clone()), csrf: session.csrf(), mine: params.mine(), lines },
        ),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `GET /ui/inbox/rows`: the inbox's rows alone, which the page fetches again to stay current.
pub async fn inbox_rows(State(app): State<Arc<App>>, session: Session, Query(params): Query<InboxParams>) -> Response {
    match inbox_lines(&app, &session, &params).await {
        Ok(lines) => page(StatusCode::OK, &InboxRows { lines }),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

#[derive(Template)]
#[template(path = "ui/task.html")]
struct TaskPage {
    who: Option<String>,
    csrf: String,
    action_base: String,
    line: TaskLine,
    description: String,
    status: &'static str,
    open: bool,
    claimable: bool,
    /// Holders of some roles may complete it for another person.
    on_behalf: bool,
    /// The context the task shows: (name, value as text).
    context: Vec<(String, String)>,
    fields: Vec<Field>,
    outcomes: Vec<String>,
    comments: Vec<(String, String, String)>,
    completion: Option<String>,
    errors: Vec<String>,
}

fn status_name(status: HumanTaskStatus) -> &'static str {
    match status {
        HumanTaskStatus::Open => "open",
        HumanTaskStatus::Completed => "completed",
        HumanTaskStatus::Cancelled => "cancelled",
        HumanTaskStatus::Expired => "expired",
    }
}

fn task_page(
    session: &Session,
    row: &HumanTaskRow,
    now: DateTime<Utc>,
    values: &BTreeMap<String, String>,
    field_errors: &BTreeMap<String, String>,
    errors: Vec<String>,
) -> TaskPage {
    let task = &row.task;
    let context = match &task.spec.data {
        Value::Object(map) => {
            map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
        }
        Value::Null => Vec::new(),
        other => vec![("data".to_owned(), other.to_string())],
    };
    let outcomes = if task.spec.outcomes.is_empty() { vec!["done".to_owned()] } else { task.spec.outcomes.clone() };
    TaskPage {
        who: Some(session.caller.subject.clone()),
        csrf: session.csrf(),
        action_base: format!("/ui/tasks/{}/{}", row.instance, row.seq),
        line: TaskLine::of(row, now),
        description: task.spec.description.clone().unwrap_or_default(),
        status: status_name(task.status),
        open: task.status == HumanTaskStatus::Open,
        claimable: task.status == HumanTaskStatus::Open && task.assignee.is_none(),
        on_behalf: !task.spec.on_behalf.roles.is_empty(),
        context,
        fields: form::fields(task.spec.form.as_ref(), values, field_errors),
        outcomes,
        comments: task
            .comments
            .iter()
            .map(|c| (c.by.clone(), c.at.format("%Y-%m-%d %H:%M").to_string(), c.text.clone()))
            .collect(),
        completion: task.completion.as_ref().map(|c| format!("{} by {}", c.outcome, c.completed_by)),
        errors,
    }
}

async fn find_task(app: &App, session: &Session, instance: &InstanceId, seq: Seq) -> Result<HumanTaskRow, Problem> {
    crate::policy::authorize("getTask", Some(&session.caller), None, app.options.manual_clock)?;
    let namespace = app.namespace_of(instance).await?;
    let principal = app.principal(&session.caller, namespace.as_deref()).await?;
    Ok(app.engine.human_task(instance, seq, &principal).await?)
}

/// `GET /ui/tasks/{instance}/{seq}`.
pub async fn task(
    State(app): State<Arc<App>>,
    session: Session,
    Path((instance, seq)): Path<(String, Seq)>,
) -> Response {
    let instance = InstanceId::new(instance);
    match find_task(&app, &session, &instance, seq).await {
        Ok(row) => {
            let now = app.engine.clock().now();
            let none = BTreeMap::new();
            page(StatusCode::OK, &task_page(&session, &row, now, &none, &none, Vec::new()))
        }
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `POST /ui/tasks/{instance}/{seq}/{claim|unclaim|comment|complete}`.
pub async fn act(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Path((instance, seq, action)): Path<(String, Seq, String)>,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let mut values: BTreeMap<String, String> = posted.into_iter().collect();
    if let Some(refusal) = stale_form(&session, &headers, &values.remove("_csrf").unwrap_or_default()) {
        return refusal;
    }
    let instance = InstanceId::new(instance);
    let row = match find_task(&app, &session, &instance, seq).await {
        Ok(row) => row,
        Err(problem) => return problem_page(Some(&session), &problem),
    };
    let now = app.engine.clock().now();
    let (operation, action) = match action.as_str() {
        "claim" => ("claimTask", TaskAction::Claim),
        "unclaim" => ("unclaimTask", TaskAction::Unclaim),
        "comment" => ("commentTask", TaskAction::Comment { text: values.remove("text").unwrap_or_default() }),
        "delegate" => {
            ("delegateTask", TaskAction::Delegate { to: values.remove("to").unwrap_or_default().trim().to_owned() })
        }
        "reassign" => {
            let to = values.remove("to").unwrap_or_default().trim().to_owned();
            ("reassignTask", TaskAction::Reassign { to: Assignment { users: vec![to], ..Assignment::default() } })
        }
        "complete" => {
            let outcome = values.remove("_outcome").unwrap_or_else(|| "done".into());
            let on_behalf_of = values.remove("_onBehalfOf").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
            match form::data(row.task.spec.form.as_ref(), &values) {
                Ok(data) => ("completeTask", TaskAction::Complete { outcome, data, on_behalf_of }),
                Err(field_errors) => {
                    let errors = vec!["Some answers are not of the right kind: see below.".to_owned()];
                    let page_ = task_page(&session, &row, now, &values, &field_errors, errors);
                    return page(StatusCode::UNPROCESSABLE_ENTITY, &page_);
                }
            }
        }
        other => return problem_page(Some(&session), &Problem::not_found(format!("no action {other:?} on a task"))),
    };
    if let Err(problem) = crate::policy::authorize(operation, Some(&session.caller), None, app.options.manual_clock) {
        return problem_page(Some(&session), &problem);
    }
    let namespace = app.namespace_of(&instance).await.ok().flatten();
    let principal = match app.principal(&session.caller, namespace.as_deref()).await {
        Ok(principal) => principal,
        Err(problem) => return problem_page(Some(&session), &problem),
    };
    match app.engine.act_on_task(&instance, seq, &principal, action).await {
        Ok(_) => Redirect::to(&format!("/ui/tasks/{instance}/{seq}")).into_response(),
        Err(EngineError::TaskRefused { refusal: TaskRefusal::InvalidData(problems), .. }) => {
            let (field_errors, mut errors) = form::split_problems(&problems);
            errors.insert(0, "The form is not complete yet: see below.".to_owned());
            page(StatusCode::UNPROCESSABLE_ENTITY, &task_page(&session, &row, now, &values, &field_errors, errors))
        }
        Err(error) => {
            let problem = Problem::from(error);
            let status = problem.kind().status();
            page(status, &task_page(&session, &row, now, &values, &BTreeMap::new(), vec![problem.detail]))
        }
    }
}

/// An SLA clock that needs attention, as a line of the escalations page.
struct Escalation {
    state: &'static str,
    what: String,
    definition: String,
    department: String,
    /// The training program the instance is about, when it is about one.
    program: String,
    target: String,
    escalations: u32,
    /// The task's page, when the clock covers a human task.
    href: Option<String>,
}

/// Clocks at risk and breached of one training program.
struct ProgramLine {
    program: String,
    at_risk: usize,
    breached: usize,
}

/// What the escalations page shows for one choice of filters.
struct Escalations {
    /// The department shown: the one asked for, or the one a manager manages.
    department: Option<String>,
    lines: Vec<Escalation>,
    programs: Vec<ProgramLine>,
    compliance: Vec<SlaCompliance>,
    /// The filters, as the query string the page's refresh asks again with.
    query: String,
    /// What the filters may be set to: the departments, processes and programs seen.
    choices: (Vec<String>, Vec<String>, Vec<String>),
}

#[derive(Template)]
#[template(path = "ui/escalations.html")]
struct EscalationsPage {
    who: Option<String>,
    csrf: String,
    filters: EscalationParams,
    data: Escalations,
}

#[derive(Debug, Default, Deserialize)]
pub struct EscalationParams {
    #[serde(default)]
    department: Option<String>,
    /// A process: `namespace/name`.
    #[serde(default)]
    definition: Option<String>,
    /// A training program, as [`training_program`] names it.
    #[serde(default)]
    program: Option<String>,
}

impl EscalationParams {
    fn chosen(value: &Option<String>) -> Option<String> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    fn is(value: &Option<String>, candidate: &str) -> bool {
        value.as_deref() == Some(candidate)
    }
}

/// The training program an instance is about, from its input: `programTitle` (the training
/// definitions), `program.title`, or the `subject`'s title when the subject is a training (an
/// approval of one); `programId` when there is no title.
fn training_program(input: &Value) -> Option<String> {
    let text = |pointer: &str| input.pointer(pointer).and_then(Value::as_str).filter(|t| !t.is_empty());
    let subject = (input.pointer("/subject/kind").and_then(Value::as_str) == Some("training"))
        .then(|| text("/subject/title"))
        .flatten();
    text("/programTitle")
        .or_else(|| text("/program/title"))
        .or(subject)
        .or_else(|| text("/programId"))
        .map(str::to_owned)
}

/// The training program of each instance, read from its first history event.
async fn programs_of(app: &App, instances: impl Iterator<Item = &InstanceId>) -> BTreeMap<InstanceId, String> {
    let mut programs = BTreeMap::new();
    for id in instances {
        if programs.contains_key(id) {
            continue;
        }
        let first = app.engine.store().history(id, 0, 1).await.ok().and_then(|events| events.into_iter().next());
        let program = first.and_then(|event| event.decode(None).ok()).and_then(|event| match event.kind {
            baton_engine::history::EventKind::InstanceStarted(started) => training_program(&started.input),
            _ => None,
        });
        programs.insert(id.clone(), program.unwrap_or_default());
    }
    programs
}

/// The clocks at risk or breached that the person may see (ops and admin: all of their
/// namespaces; a manager: their department), breached first, by training program, and
/// compliance per definition and department; filtered by department, process and program.
async fn escalation_data(
    app: &Arc<App>,
    session: &Session,
    filters: &EscalationParams,
) -> Result<Escalations, Problem> {
    let access = crate::policy::authorize("listSlas", Some(&session.caller), None, app.options.manual_clock)?;
    let wanted = EscalationParams::chosen(&filters.department);
    let (department, namespaces) = crate::routes::others::sla_scope(app, access, &session.caller, wanted).await?;
    let now = app.engine.clock().now();
    let query = SlaQuery {
        instance: None,
        definition: None,
        department: department.clone(),
        state: None,
        open_only: true,
        now: Some(now),
        after: None,
        limit: SlaQuery::MAX_LIMIT,
        namespaces,
    };
    let rows = app.engine.slas(&query).await?;
    let compliance = app.engine.store().sla_compliance(&query).await?;
    let attention: Vec<_> = rows
        .iter()
        .filter_map(|row| match row.state(now) {
            SlaStateName::Breached => Some(("breached", row)),
            SlaStateName::AtRisk => Some(("at risk", row)),
            _ => None,
        })
        .collect();
    let programs = programs_of(app, attention.iter().map(|(_, row)| &row.instance)).await;
    let process = |definition: &str| definition.split('@').next().unwrap_or(definition).to_owned();
    let mut choices = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut lines = Vec::new();
    for (state, row) in attention {
        let program = programs.get(&row.instance).cloned().unwrap_or_default();
        let definition = process(&row.definition);
        let row_department = row.department.clone().unwrap_or_default();
        choices.0.insert(row_department.clone(), ());
        choices.1.insert(definition.clone(), ());
        choices.2.insert(program.clone(), ());
        let shown = EscalationParams::chosen(&filters.definition).is_none_or(|d| d == definition)
            && EscalationParams::chosen(&filters.program).is_none_or(|p| p == program);
        if shown {
            lines.push(Escalation {
                state,
                what: row.name.clone(),
                definition,
                department: row_department,
                program,
                target: row.target_at.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default(),
                escalations: row.escalations,
                href: row.human_task.map(|seq| format!("/ui/tasks/{}/{seq}", row.instance)),
            });
        }
    }
    lines.sort_by_key(|line| line.state != "breached");
    let mut by_program: BTreeMap<&str, ProgramLine> = BTreeMap::new();
    for line in lines.iter().filter(|line| !line.program.is_empty()) {
        let entry = by_program.entry(&line.program).or_insert_with(|| ProgramLine {
            program: line.program.clone(),
            at_risk: 0,
            breached: 0,
        });
        if line.state == "breached" { entry.breached += 1 } else { entry.at_risk += 1 }
    }
    let programs = by_program.into_values().collect();
    let compliance = compliance
        .into_iter()
        .filter(|group| EscalationParams::chosen(&filters.definition).is_none_or(|d| process(&group.definition) == d))
        .collect();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in
        [("department", &department), ("definition", &filters.definition), ("program", &filters.program)]
    {
        if let Some(value) = EscalationParams::chosen(value) {
            query.append_pair(key, &value);
        }
    }
    let named = |map: BTreeMap<String, ()>| map.into_keys().filter(|k| !k.is_empty()).collect::<Vec<_>>();
    Ok(Escalations {
        department,
        lines,
        programs,
        compliance,
        query: query.finish(),
        choices: (named(choices.0), named(choices.1), named(choices.2)),
    })
}

/// `GET /ui/escalations`.
pub async fn escalations(
    State(app): State<Arc<App>>,
    session: Session,
    Query(filters): Query<EscalationParams>,
) -> Response {
    match escalation_data(&app, &session, &filters).await {
        Ok(data) => page(
            StatusCode::OK,
            &EscalationsPage { who: Some(session.caller.subject.clone()), csrf: session.csrf(), filters, data },
        ),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

#[derive(Template)]
#[template(path = "ui/escalations_rows.html")]
struct EscalationRows {
    data: Escalations,
}

/// `GET /ui/escalations/rows`: the page's tables alone, which it fetches again to stay current.
pub async fn escalation_rows(
    State(app): State<Arc<App>>,
    session: Session,
    Query(filters): Query<EscalationParams>,
) -> Response {
    match escalation_data(&app, &session, &filters).await {
        Ok(data) => page(StatusCode::OK, &EscalationRows { data }),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// The API's answer for this session: the UI renders what the API's own handler answers, so
/// both decide the same things the same way.
pub(super) fn as_api(session: &Session) -> Auth {
    Auth(Some(session.caller.clone()))
}

#[derive(Template)]
#[template(path = "ui/instances.html")]
struct InstancesPage {
    who: Option<String>,
    csrf: String,
    instances: Vec<InstanceView>,
    definition: String,
    status: String,
    business_key: String,
    next: Option<String>,
    /// Whether the person may act on every instance the search finds (`startBulk`).
    may_bulk: bool,
}

#[derive(Debug, Deserialize)]
pub struct InstanceSearch {
    #[serde(default)]
    definition: String,
    #[serde(default)]
    status: String,
    #[serde(default, rename = "businessKey")]
    business_key: String,
    #[serde(default)]
    after: Option<String>,
}

impl InstancesPage {
    fn is_status(&self, status: &str) -> bool {
        self.status == status
    }

    /// The link to the page after this one: the same search from the cursor, its values
    /// encoded (a business key may hold `&` or `#`).
    fn next_link(&self) -> Option<String> {
        let after = self.next.as_deref()?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("definition", &self.definition)
            .append_pair("status", &self.status)
            .append_pair("businessKey", &self.business_key)
            .append_pair("after", after)
            .finish();
        Some(format!("/ui/instances?{query}"))
    }

    fn search(&self) -> BulkSearch {
        BulkSearch {
            definition: self.definition.trim().to_owned(),
            status: self.status.trim().to_owned(),
            business_key: self.business_key.trim().to_owned(),
        }
    }
}

/// `GET /ui/instances`: a search (definition, status, business key), as `listInstances`.
pub async fn instances(
    State(app): State<Arc<App>>,
    session: Session,
    Query(search): Query<InstanceSearch>,
) -> Response {
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| Value::String(s.trim().to_owned()));
    let params = serde_json::json!({
        "definition": nonempty(&search.definition),
        "status": nonempty(&search.status),
        "businessKey": nonempty(&search.business_key),
        "after": search.after,
        "limit": 50,
    });
    let params: SearchParams = match serde_json::from_value(params) {
        Ok(params) => params,
        Err(error) => return problem_page(Some(&session), &Problem::bad_request(error.to_string())),
    };
    let namespace = crate::policy::namespace_of(search.definition.trim());
    let may_bulk =
        crate::policy::authorize("startBulk", Some(&session.caller), namespace, app.options.manual_clock).is_ok();
    match api_instances::list(State(Arc::clone(&app)), as_api(&session), Query(params)).await {
        Ok(axum::Json(found)) => page(
            StatusCode::OK,
            &InstancesPage {
                who: Some(session.caller.subject.clone()),
                csrf: session.csrf(),
                instances: found.items,
                definition: search.definition,
                status: search.status,
                business_key: search.business_key,
                next: found.next,
                may_bulk,
            },
        ),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// The search a bulk action acts on, as posted from the instances page.
struct BulkSearch {
    definition: String,
    status: String,
    business_key: String,
}

impl BulkSearch {
    fn posted(posted: &[(String, String)]) -> Self {
        let field = |name: &str| posted_field(posted, name).trim().to_owned();
        Self { definition: field("definition"), status: field("status"), business_key: field("businessKey") }
    }

    /// The search in words.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.definition.is_empty() {
            parts.push(format!("process {}", self.definition));
        }
        if !self.status.is_empty() {
            parts.push(format!("status {}", self.status));
        }
        if !self.business_key.is_empty() {
            parts.push(format!("business key {}", self.business_key));
        }
        if parts.is_empty() { "every instance you operate".to_owned() } else { parts.join(", ") }
    }

    /// The instances page of this search.
    fn href(&self) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("definition", &self.definition)
            .append_pair("status", &self.status)
            .append_pair("businessKey", &self.business_key)
            .finish();
        format!("/ui/instances?{query}")
    }

    /// `bulk::start`'s request for `action` on this search.
    fn request(&self, action: &str, reason: &str, dry_run: bool) -> Result<BulkRequest, Problem> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        params(serde_json::json!({
            "action": action,
            "filter": {
                "definition": nonempty(&self.definition),
                "status": nonempty(&self.status),
                "businessKey": nonempty(&self.business_key),
            },
            "reason": reason,
            "dryRun": dry_run,
        }))
    }
}

/// The actions the instances page offers on a whole search.
const BULK_ACTIONS: [&str; 3] = ["suspend", "resume", "terminate"];

#[derive(Template)]
#[template(path = "ui/bulk_confirm.html")]
struct BulkConfirmPage {
    who: Option<String>,
    csrf: String,
    search: BulkSearch,
    action: String,
    reason: String,
    matched: usize,
    /// The first instances it would act on.
    sample: Vec<String>,
}

impl BulkConfirmPage {
    /// "Suspend 3 instances?"
    fn question(&self) -> String {
        let verb = match self.action.as_str() {
            "suspend" => "Suspend",
            "resume" => "Resume",
            _ => "Terminate",
        };
        let noun = if self.matched == 1 { "instance" } else { "instances" };
        format!("{verb} {} {noun}?", self.matched)
    }
}

/// A bulk job's answer (its JSON) from `bulk::start`.
async fn bulk_answer(started: Result<Response, Problem>) -> Result<Value, Problem> {
    let response = started?;
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.map_err(Problem::internal)?;
    serde_json::from_slice(&bytes).map_err(Problem::internal)
}

/// `POST /ui/bulk`: the dry run of an action on every instance a search finds (`startBulk`
/// with `dryRun`): how many it would touch, and a button to start it.
pub async fn bulk_dry_run(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let (search, action, reason, dry_run) = match posted_bulk(&app, &session, &headers, &posted, true).await {
        Ok(posted) => posted,
        Err(refusal) => return refusal,
    };
    let (action, reason) = (action.as_str(), reason.as_str());
    let matched = dry_run.get("matched").and_then(Value::as_u64).unwrap_or_default();
    let sample = dry_run.get("sample").and_then(Value::as_array).into_iter().flatten();
    page(
        StatusCode::OK,
        &BulkConfirmPage {
            who: Some(session.caller.subject.clone()),
            csrf: session.csrf(),
            action: action.to_owned(),
            reason: reason.to_owned(),
            matched: usize::try_from(matched).unwrap_or(usize::MAX),
            sample: sample.filter_map(Value::as_str).map(str::to_owned).collect(),
            search,
        },
    )
}

/// `POST /ui/bulk/start`: starts the job the dry run showed (`startBulk`) and follows it on
/// its page.
pub async fn bulk_start(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    match posted_bulk(&app, &session, &headers, &posted, false).await {
        Ok((_, _, _, job)) => Redirect::to(&format!("/ui/bulk/{}", text(&job, "id"))).into_response(),
        Err(refusal) => refusal,
    }
}

/// A posted bulk form sent to `startBulk` (a dry run, or the job itself): the search, the
/// action, the reason and the API's answer; or the page that refuses it.
async fn posted_bulk(
    app: &Arc<App>,
    session: &Session,
    headers: &HeaderMap,
    posted: &[(String, String)],
    dry_run: bool,
) -> Result<(BulkSearch, String, String, Value), Response> {
    if let Some(refusal) = stale_form(session, headers, posted_field(posted, "_csrf")) {
        return Err(refusal);
    }
    let (search, action, reason) =
        (BulkSearch::posted(posted), posted_field(posted, "action"), posted_field(posted, "reason"));
    if !BULK_ACTIONS.contains(&action) {
        return Err(problem_page(Some(session), &Problem::bad_request(format!("no bulk action {action:?}"))));
    }
    let answer = match search.request(action, reason, dry_run) {
        Ok(request) => {
            bulk_answer(api_bulk::start(State(Arc::clone(app)), as_api(session), crate::routes::Body(request)).await)
                .await
        }
        Err(problem) => Err(problem),
    };
    match answer {
        Ok(answer) => Ok((search, action.to_owned(), reason.to_owned(), answer)),
        Err(problem) => Err(problem_page(Some(session), &problem)),
    }
}

/// A bulk job's progress, as the job page and its refreshing part show it.
struct BulkProgress {
    job: BulkJob,
}

impl BulkProgress {
    fn action(&self) -> &'static str {
        match self.job.action {
            BulkAction::Suspend => "suspend",
            BulkAction::Resume => "resume",
            BulkAction::Terminate => "terminate",
            BulkAction::Retry => "retry",
        }
    }

    fn handled(&self) -> usize {
        self.job.done + self.job.failed
    }

    /// The reported failures: (instance, why).
    fn failures(&self) -> Vec<(String, String)> {
        self.job.failures.iter().map(|failure| (text(failure, "instance"), text(failure, "reason"))).collect()
    }

    /// Failures counted but not reported one by one.
    fn unreported(&self) -> usize {
        self.job.failed.saturating_sub(self.job.failures.len())
    }
}

#[derive(Template)]
#[template(path = "ui/bulk.html")]
struct BulkPage {
    who: Option<String>,
    csrf: String,
    progress: BulkProgress,
}

#[derive(Template)]
#[template(path = "ui/bulk_progress.html")]
struct BulkProgressPart {
    progress: BulkProgress,
}

async fn bulk_job(app: &Arc<App>, session: &Session, job: String) -> Result<BulkProgress, Problem> {
    let axum::Json(job) = api_bulk::get(State(Arc::clone(app)), as_api(session), Path(job)).await?;
    Ok(BulkProgress { job })
}

/// `GET /ui/bulk/{job}`: a bulk job's progress (`getBulk`), refreshed every second while it
/// runs.
pub async fn bulk(State(app): State<Arc<App>>, session: Session, Path(job): Path<String>) -> Response {
    match bulk_job(&app, &session, job).await {
        Ok(progress) => page(
            StatusCode::OK,
            &BulkPage { who: Some(session.caller.subject.clone()), csrf: session.csrf(), progress },
        ),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `GET /ui/bulk/{job}/progress`: the job page's progress alone, which it fetches again while
/// the job runs (once finished, it comes without the attributes that poll).
pub async fn bulk_progress(State(app): State<Arc<App>>, session: Session, Path(job): Path<String>) -> Response {
    match bulk_job(&app, &session, job).await {
        Ok(progress) => page(StatusCode::OK, &BulkProgressPart { progress }),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// One event of an instance's timeline.
struct Moment {
    seq: String,
    at: String,
    what: String,
    by: String,
    /// The reason it records, if any (a suspension's, a retry's, a fault's...).
    reason: String,
}

/// One incident of an instance.
struct IncidentLine {
    id: i64,
    kind: String,
    reason: String,
    open: bool,
    /// A failed activity, which may be completed by hand (`completeIncident`).
    skippable: bool,
    /// The skip form's result (JSON) and reason, as typed when they were refused.
    result: String,
    skip_reason: String,
    /// Why the skip was refused.
    skip_error: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/instance.html")]
struct InstancePage {
    who: Option<String>,
    csrf: String,
    instance: InstanceView,
    tasks: Vec<(String, String, String)>,
    /// The timers it waits for: (event number, due at).
    timers: Vec<(String, String)>,
    /// The activities it waits for: (name, attempts, not before, last error).
    activities: Vec<(String, String, String, String)>,
    incidents: Vec<IncidentLine>,
    timeline: Vec<Moment>,
    notice: Option<String>,
    /// Whether the person operates the instance's namespace (suspend, resume, terminate,
    /// incidents), as the policy decides for the API.
    operates: bool,
}

impl InstancePage {
    /// The changes that apply to the instance's status: (action, button, what it does).
    fn changes(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        if !self.operates {
            return Vec::new();
        }
        let suspend = ("suspend", "Suspend", "It takes no input until resumed; what arrives meanwhile is kept.");
        let resume = ("resume", "Resume", "It goes on, with what arrived while it was suspended.");
        let terminate = ("terminate", "Terminate", "It ends now: its activities are abandoned, its timers disarmed.");
        match self.instance.status {
            InstanceStatus::Running | InstanceStatus::Waiting => vec![suspend, terminate],
            InstanceStatus::Suspended => vec![resume, terminate],
            InstanceStatus::Faulted => vec![terminate],
            InstanceStatus::Completed | InstanceStatus::Cancelled => Vec::new(),
        }
    }
}

/// A skip (completion by hand) of `incident` that was refused: what was typed, and why.
struct RefusedSkip {
    incident: i64,
    result: String,
    reason: String,
    error: String,
}

/// A time of `value`'s `key`, to the second, in UTC.
fn moment(value: &Value, key: &str) -> String {
    let at = text(value, key);
    DateTime::parse_from_rfc3339(&at)
        .map(|at| at.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or(at)
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Who an event's actor is, in a word.
fn actor(value: &Value) -> String {
    ["id", "user", "worker"]
        .iter()
        .find_map(|key| value.get(key).and_then(Value::as_str).map(str::to_owned))
        .or_else(|| value.as_str().map(str::to_owned))
        .or_else(|| value.as_object().and_then(|o| o.keys().next().cloned()))
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct InstanceNotice {
    #[serde(default)]
    retried: Option<i64>,
    #[serde(default)]
    skipped: Option<i64>,
    /// The change just made: suspend, resume or terminate.
    #[serde(default)]
    changed: Option<String>,
}

impl InstanceNotice {
    fn text(&self) -> Option<String> {
        if let Some(id) = self.retried {
            return Some(format!("Incident {id} is being retried."));
        }
        if let Some(id) = self.skipped {
            return Some(format!("Incident {id}: its step was completed by hand; the instance goes on."));
        }
        let text = match self.changed.as_deref()? {
            "suspend" => "Suspended: the instance takes no input until it is resumed.",
            "resume" => "Resumed: the instance goes on.",
            "terminate" => "Terminated: the instance has ended.",
            _ => return None,
        };
        Some(text.to_owned())
    }
}

/// `GET /ui/instances/{id}`: status, open tasks, incidents and the history's timeline, as
/// `getInstance` and `getInstanceHistory`.
pub async fn instance(
    State(app): State<Arc<App>>,
    session: Session,
    Path(id): Path<String>,
    Query(notice): Query<InstanceNotice>,
) -> Response {
    instance_page(&app, &session, id, notice.text(), None).await
}

/// The instance's page; with a refused skip, its form as typed and the reason beside it.
async fn instance_page(
    app: &Arc<App>,
    session: &Session,
    id: String,
    notice: Option<String>,
    refused_skip: Option<RefusedSkip>,
) -> Response {
    let detail = api_instances::get(State(Arc::clone(app)), as_api(session), Path(id.clone())).await;
    let axum::Json(detail) = match detail {
        Ok(detail) => detail,
        Err(problem) => return problem_page(Some(session), &problem),
    };
    let params = HistoryParams { after: None, limit: Some(500) };
    let history = api_instances::history(State(Arc::clone(app)), as_api(session), Path(id), Query(params)).await;
    let timeline = match history {
        Ok(axum::Json(page_)) => page_
            .items
            .iter()
            .map(|event| Moment {
                seq: text(event, "seq"),
                at: text(event, "at"),
                what: text(event, "type"),
                by: event.get("actor").map(actor).unwrap_or_default(),
                reason: event.get("data").map(|data| text(data, "reason")).unwrap_or_default(),
            })
            .collect(),
        Err(problem) => return problem_page(Some(session), &problem),
    };
    let tasks = detail
        .human_tasks
        .iter()
        .map(|row| {
            let href = format!("/ui/tasks/{}/{}", text(row, "instance"), text(row, "seq"));
            let task = row.get("task").cloned().unwrap_or_default();
            let title = task.get("spec").map(|spec| text(spec, "title")).unwrap_or_default();
            (href, title, text(&task, "status"))
        })
        .collect();
    let incidents = detail
        .incidents
        .iter()
        .map(|incident| {
            let id = incident.get("id").and_then(Value::as_i64).unwrap_or_default();
            let refused = refused_skip.as_ref().filter(|skip| skip.incident == id);
            IncidentLine {
                id,
                kind: text(incident, "kind").replace('_', " "),
                reason: text(incident, "reason"),
                open: incident.get("resolvedAt").is_none_or(Value::is_null),
                skippable: text(incident, "kind") == "activity_failed"
                    && incident.get("taskSeq").is_some_and(|seq| !seq.is_null())
                    && incident.get("pendingInput").is_none_or(Value::is_null),
                result: refused.map_or_else(|| "{}".to_owned(), |skip| skip.result.clone()),
                skip_reason: refused.map(|skip| skip.reason.clone()).unwrap_or_default(),
                skip_error: refused.map(|skip| skip.error.clone()),
            }
        })
        .collect();
    let namespace = detail.instance.namespace.as_deref();
    let operates =
        crate::policy::authorize("suspendInstance", Some(&session.caller), namespace, app.options.manual_clock).is_ok();
    let status = if refused_skip.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    page(
        status,
        &InstancePage {
            who: Some(session.caller.subject.clone()),
            csrf: session.csrf(),
            timers: detail.timers.iter().map(|t| (text(t, "seq"), moment(t, "dueAt"))).collect(),
            activities: detail
                .activities
                .iter()
                .map(|a| (text(a, "name"), text(a, "attempt"), moment(a, "visibleAt"), text(a, "lastError")))
                .collect(),
            instance: detail.instance,
            tasks,
            incidents,
            timeline,
            notice,
            operates,
        },
    )
}

/// `POST /ui/instances/{id}/{suspend|resume|terminate}`: as `suspendInstance`,
/// `resumeInstance` and `terminateInstance`, with the reason given.
pub async fn change_instance(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refusal) = stale_form(&session, &headers, posted_field(&posted, "_csrf")) {
        return refusal;
    }
    let body = serde_json::json!({ "reason": posted_field(&posted, "reason") }).to_string().into();
    let (app_, auth, path) = (State(Arc::clone(&app)), as_api(&session), Path(id.clone()));
    let changed = match action.as_str() {
        "suspend" => api_instances::suspend(app_, auth, path, body).await,
        "resume" => api_instances::resume(app_, auth, path, body).await,
        "terminate" => api_instances::terminate(app_, auth, path, body).await,
        other => Err(Problem::not_found(format!("no action {other:?} on an instance"))),
    };
    match changed {
        Ok(_) => Redirect::to(&format!("/ui/instances/{id}?changed={action}")).into_response(),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `POST /ui/incidents/{incident}/retry`: as `retryIncident`, with the reason given.
pub async fn retry_incident(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Path(incident): Path<i64>,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| posted_field(&posted, name).to_owned();
    if let Some(refusal) = stale_form(&session, &headers, &field("_csrf")) {
        return refusal;
    }
    let body = serde_json::json!({ "reason": field("reason") }).to_string();
    let retried =
        api_instances::retry_incident(State(Arc::clone(&app)), as_api(&session), Path(incident), body.into()).await;
    match retried {
        Ok(_) => Redirect::to(&format!("/ui/instances/{}?retried={incident}", field("instance"))).into_response(),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `POST /ui/incidents/{incident}/complete`: skips a failed step, as `completeIncident`: the
/// posted JSON becomes its result, with the reason given. JSON that does not parse, or a
/// result or reason the API refuses, comes back beside the form with what was typed, nothing
/// done.
pub async fn complete_incident(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Path(incident): Path<i64>,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| posted_field(&posted, name).to_owned();
    if let Some(refusal) = stale_form(&session, &headers, &field("_csrf")) {
        return refusal;
    }
    let (instance, typed, reason) = (field("instance"), field("result"), field("reason"));
    let refuse = |error: String| RefusedSkip { incident, result: typed.clone(), reason: reason.clone(), error };
    let result = match serde_json::from_str::<Value>(&typed) {
        Ok(result) => result,
        Err(error) => {
            let error = format!("The result is not valid JSON ({error}): write an object such as {{}}.");
            return instance_page(&app, &session, instance, None, Some(refuse(error))).await;
        }
    };
    let request = api_instances::CompleteIncidentRequest { reason: reason.clone(), result };
    let completed = api_instances::complete_incident(
        State(Arc::clone(&app)),
        as_api(&session),
        Path(incident),
        crate::routes::Body(request),
    )
    .await;
    match completed {
        Ok(_) => Redirect::to(&format!("/ui/instances/{instance}?skipped={incident}")).into_response(),
        Err(problem) if problem.kind().status() == StatusCode::BAD_REQUEST => {
            let error = format!("Not done: {}", problem.detail);
            instance_page(&app, &session, instance, None, Some(refuse(error))).await
        }
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

#[derive(Template)]
#[template(path = "ui/definitions.html")]
struct DefinitionsPage {
    who: Option<String>,
    csrf: String,
    definitions: Vec<DefinitionView>,
}

/// Builds one of the API's query types from JSON (their fields are the API's to keep).
fn params<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_json::from_value(value).map_err(|e| Problem::bad_request(e.to_string()))
}

/// `GET /ui/definitions`: the deployed versions, newest first, as `listDefinitions`.
pub async fn definitions(State(app): State<Arc<App>>, session: Session) -> Response {
    let listed = match params(serde_json::json!({ "limit": 200 })) {
        Ok(query) => api_definitions::list(State(Arc::clone(&app)), as_api(&session), Query(query)).await,
        Err(problem) => Err(problem),
    };
    match listed {
        Ok(axum::Json(mut found)) => {
            found.items.reverse();
            page(
                StatusCode::OK,
                &DefinitionsPage {
                    who: Some(session.caller.subject.clone()),
                    csrf: session.csrf(),
                    definitions: found.items,
                },
            )
        }
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// A line of a definition's text, and what validation said of it.
struct SourceLine {
    number: usize,
    text: String,
    problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "ui/definition.html")]
struct DefinitionPage {
    who: Option<String>,
    csrf: String,
    /// The deployed version shown, if this is one (not a text being validated).
    deployed: Option<DefinitionView>,
    diagram: Option<String>,
    source: String,
    lines: Vec<SourceLine>,
    /// Whole-text problems and those without a line.
    problems: Vec<String>,
    verdict: Option<String>,
    /// The try form (on a deployed version's page, for those who may try it).
    may_try: bool,
    try_fields: Vec<JsonField>,
    try_definition: String,
    try_version: String,
    source_editable: bool,
}

impl DefinitionPage {
    fn has_line_problems(&self) -> bool {
        self.lines.iter().any(|line| !line.problems.is_empty())
    }
}

fn numbered(source: &str, errors: &[FieldError]) -> (Vec<SourceLine>, Vec<String>) {
    let mut lines: Vec<SourceLine> = source
        .lines()
        .enumerate()
        .map(|(i, text)| SourceLine { number: i + 1, text: text.to_owned(), problems: Vec::new() })
        .collect();
    let mut rest = Vec::new();
    for error in errors {
        let code = error.code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default();
        let expected = error.expected.as_deref().map(|e| format!(" (expected {e})")).unwrap_or_default();
        let message = format!("{code}{}{expected}", error.message);
        match error.line.and_then(|line| lines.get_mut(line.saturating_sub(1))) {
            Some(line) => {
                let column = error.column.map(|c| format!("column {c}: ")).unwrap_or_default();
                line.problems.push(format!("line {}, {column}{message}", line.number));
            }
            None => rest.push(message),
        }
    }
    (lines, rest)
}

#[derive(Debug, Deserialize)]
pub struct VersionParam {
    #[serde(default)]
    version: Option<String>,
}

/// `GET /ui/definitions/{namespace}/{name}`: a version's text with its line numbers, its
/// diagram, and a form to validate an edited text.
pub async fn definition(
    State(app): State<Arc<App>>,
    session: Session,
    Path((namespace, name)): Path<(String, String)>,
    Query(version): Query<VersionParam>,
) -> Response {
    let found = match params(serde_json::json!({ "version": version.version })) {
        Ok(query) => {
            api_definitions::get(State(Arc::clone(&app)), as_api(&session), Path((namespace, name)), Query(query)).await
        }
        Err(problem) => Err(problem),
    };
    let view = match found {
        Ok(axum::Json(view)) => view,
        Err(problem) => return problem_page(Some(&session), &problem),
    };
    let source = view.source.clone().unwrap_or_default();
    let (lines, problems) = numbered(&source, &[]);
    let diagram = Some(format!("/ui/definitions/{}/diagram.svg?version={}", view.name, view.version));
    let may_try = crate::policy::authorize(
        "tryDefinition",
        Some(&session.caller),
        view.namespace.as_deref(),
        app.options.manual_clock,
    )
    .is_ok();
    page(
        StatusCode::OK,
        &DefinitionPage {
            may_try,
            who: Some(session.caller.subject.clone()),
            csrf: session.csrf(),
            try_definition: view.name.clone(),
            try_version: view.version.clone(),
            deployed: Some(view),
            diagram,
            source,
            lines,
            problems,
            verdict: None,
            try_fields: try_fields(&[]),
            source_editable: false,
        },
    )
}

/// `GET /ui/definitions/{namespace}/{name}/diagram.svg`: the diagram, as
/// `getDefinitionDiagram` draws it.
pub async fn diagram(
    State(app): State<Arc<App>>,
    session: Session,
    Path((namespace, name)): Path<(String, String)>,
    Query(version): Query<VersionParam>,
) -> Response {
    let query = params(serde_json::json!({ "version": version.version, "format": "svg" }));
    let drawn = match query {
        Ok(query) => {
            api_definitions::diagram(State(Arc::clone(&app)), as_api(&session), Path((namespace, name)), Query(query))
                .await
        }
        Err(problem) => Err(problem),
    };
    drawn.unwrap_or_else(|problem| problem_page(Some(&session), &problem))
}

/// `POST /ui/definitions/validate`: the text checked as `validateDefinition` checks it, each
/// problem beside its line.
pub async fn validate(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| posted_field(&posted, name).to_owned();
    if let Some(refusal) = stale_form(&session, &headers, &field("_csrf")) {
        return refusal;
    }
    let source = field("source").replace("\r\n", "\n");
    let query = params(serde_json::json!({ "file": "definition.yaml" }));
    let checked = match query {
        Ok(query) => {
            api_definitions::validate(State(Arc::clone(&app)), as_api(&session), Query(query), source.clone().into())
                .await
        }
        Err(problem) => Err(problem),
    };
    let (status, errors, verdict) = match checked {
        Ok(axum::Json(validation)) => {
            let verdict = match validation.warnings.len() {
                0 => "Valid: no problem found.".to_owned(),
                n => format!("Valid, with {n} warning(s) beside their lines."),
            };
            (StatusCode::OK, validation.warnings, verdict)
        }
        Err(problem) if problem.kind().status() == StatusCode::UNPROCESSABLE_ENTITY => {
            let verdict = format!("Not valid: {}", problem.detail);
            (StatusCode::UNPROCESSABLE_ENTITY, problem.errors, verdict)
        }
        Err(problem) => return problem_page(Some(&session), &problem),
    };
    let (lines, problems) = numbered(&source, &errors);
    page(
        status,
        &DefinitionPage {
            who: Some(session.caller.subject.clone()),
            csrf: session.csrf(),
            deployed: None,
            diagram: None,
            source,
            lines,
            problems,
            verdict: Some(verdict),
            may_try: false,
            try_fields: Vec::new(),
            try_definition: String::new(),
            try_version: String::new(),
            source_editable: false,
        },
    )
}

/// A JSON entry of the try form: the text as typed, and what is wrong with it.
struct JsonField {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    rows: usize,
    value: String,
    error: Option<String>,
}

/// The try form's JSON entries, as posted (empty ones get their default).
fn try_fields(posted: &[(String, String)]) -> Vec<JsonField> {
    [
        ("input", "Input (JSON)", "The workflow's input.", "{}", 4),
        (
            "activities",
            "Activity results (a JSON object)",
            "Each activity's result by its name, e.g. {\"pricing.quote\": {\"price\": 21}}; an activity without one faults the run.",
            "{}",
            4,
        ),
        (
            "answers",
            "Answers to human tasks (a JSON array)",
            "In the order the tasks open, e.g. [{\"task\": \"review\", \"outcome\": \"approve\", \"data\": {\"comment\": \"fine\"}}].",
            "[]",
            4,
        ),
        ("events", "Events (a JSON array of CloudEvents)", "Delivered in order once the instance has started.", "[]", 3),
    ]
    .into_iter()
    .map(|(name, label, hint, default, rows)| {
        let typed = posted_field(posted, name).replace("\r\n", "\n");
        let value = if typed.trim().is_empty() { default.to_owned() } else { typed };
        JsonField { name, label, hint, rows, value, error: None }
    })
    .collect()
}

/// What a try gave, to show.
struct TryOutcome {
    completed: bool,
    /// The output, or the error, pretty-printed.
    json: String,
    elapsed: String,
    timers_fired: u32,
    trace: Vec<TryLine>,
}

/// One line of a try's trace.
struct TryLine {
    task: String,
    what: String,
}

#[derive(Template)]
#[template(path = "ui/definition_try.html")]
struct TryPage {
    who: Option<String>,
    csrf: String,
    try_definition: String,
    try_version: String,
    source: String,
    source_editable: bool,
    try_fields: Vec<JsonField>,
    /// The text's lines, with validation errors beside theirs.
    lines: Vec<SourceLine>,
    problems: Vec<String>,
    outcome: Option<TryOutcome>,
    /// Why the run could not end.
    failure: Option<String>,
}

impl TryPage {
    fn has_line_problems(&self) -> bool {
        self.lines.iter().any(|line| !line.problems.is_empty())
    }
}

/// Reads the try form's JSON entries into the API's request; a message beside each entry that
/// is not the JSON it should be.
fn try_request(source: String, fields: &mut [JsonField]) -> Option<api_definitions::TryRequest> {
    let mut values = BTreeMap::new();
    for field in fields.iter_mut() {
        let parsed = serde_json::from_str::<Value>(&field.value).map_err(|e| format!("not JSON: {e}"));
        let checked = parsed.and_then(|value| match (field.name, &value) {
            ("activities", Value::Object(_)) | ("answers" | "events", Value::Array(_)) | ("input", _) => Ok(value),
            ("activities", _) => Err("a JSON object is expected: {\"activity name\": result, ...}".to_owned()),
            _ => Err("a JSON array is expected: [...]".to_owned()),
        });
        match checked {
            Ok(value) => {
                values.insert(field.name, value);
            }
            Err(message) => field.error = Some(message),
        }
    }
    let answers = values.remove("answers").map(serde_json::from_value::<Vec<api_definitions::TryAnswer>>);
    let answers = match answers {
        Some(Ok(answers)) => answers,
        Some(Err(error)) => {
            if let Some(field) = fields.iter_mut().find(|f| f.name == "answers") {
                field.error = Some(format!("each answer is {{\"task\", \"outcome\", \"data\"}}: {error}"));
            }
            return None;
        }
        None => return None,
    };
    let mut take = |name| values.remove(name).unwrap_or_default();
    let (input, activities, events) = (take("input"), take("activities"), take("events"));
    if fields.iter().any(|f| f.error.is_some()) {
        return None;
    }
    Some(api_definitions::TryRequest {
        source,
        file: None,
        input,
        activities: match activities {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        events: match events {
            Value::Array(items) => items,
            _ => Vec::new(),
        },
        answers,
    })
}

/// `POST /ui/definitions/try`: runs the text once with simulated time, as `tryDefinition`
/// does, and shows the outcome and the trace; the entries are kept to try again.
pub async fn try_definition(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| posted_field(&posted, name).to_owned();
    if let Some(refusal) = stale_form(&session, &headers, &field("_csrf")) {
        return refusal;
    }
    let source = field("source").replace("\r\n", "\n");
    let mut fields = try_fields(&posted);
    let mut try_page = TryPage {
        who: Some(session.caller.subject.clone()),
        csrf: session.csrf(),
        try_definition: field("definition"),
        try_version: field("version"),
        source: source.clone(),
        source_editable: true,
        try_fields: Vec::new(),
        lines: Vec::new(),
        problems: Vec::new(),
        outcome: None,
        failure: None,
    };
    let Some(request) = try_request(source.clone(), &mut fields) else {
        try_page.try_fields = fields;
        try_page.failure = Some("Nothing was run: correct the entries marked below.".to_owned());
        return page(StatusCode::UNPROCESSABLE_ENTITY, &try_page);
    };
    try_page.try_fields = fields;
    let tried = api_definitions::try_definition(State(Arc::clone(&app)), as_api(&session), Body(request)).await;
    let status = match tried {
        Ok(axum::Json(result)) => {
            let completed = result.status == api_definitions::TryStatus::Completed;
            let shown = if completed { result.output } else { result.error };
            let trace = result
                .trace
                .into_iter()
                .map(|step| TryLine {
                    what: step.kind.strip_prefix("task.").unwrap_or(&step.kind).to_owned(),
                    task: step.task,
                })
                .collect();
            try_page.outcome = Some(TryOutcome {
                completed,
                json: serde_json::to_string_pretty(&shown.unwrap_or_default()).unwrap_or_default(),
                elapsed: result.elapsed,
                timers_fired: result.timers_fired,
                trace,
            });
            StatusCode::OK
        }
        Err(problem) if matches!(problem.kind().status(), StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) => {
            return problem_page(Some(&session), &problem);
        }
        Err(problem) => {
            let (lines, problems) = numbered(&source, &problem.errors);
            try_page.lines = lines;
            try_page.problems = problems;
            try_page.failure = Some(format!("Not run to its end: {}", problem.detail));
            problem.kind().status()
        }
    };
    page(status, &try_page)
}

/// A leg of a document's custody trail.
struct Leg {
    state: String,
    at: String,
    /// What the event said of the leg besides (who, how, where).
    details: String,
}

/// A document in transit.
struct DocumentLine {
    code: String,
    kind: String,
    person: String,
    department: String,
    state: String,
    since: String,
    trail: Vec<Leg>,
}

#[derive(Template)]
#[template(path = "ui/documents.html")]
struct DocumentsPage {
    who: Option<String>,
    csrf: String,
    code: String,
    documents: Vec<DocumentLine>,
}

#[derive(Debug, Deserialize)]
pub struct DocumentSearch {
    #[serde(default)]
    code: String,
    #[serde(default)]
    department: Option<String>,
}

/// `GET /ui/documents`: where each document is now and its custody trail, as `listDocuments`
/// (managers their department, ops and admin all, each person their own).
pub async fn documents(
    State(app): State<Arc<App>>,
    session: Session,
    Query(search): Query<DocumentSearch>,
) -> Response {
    let code = search.code.trim().to_owned();
    let query = params(serde_json::json!({
        "code": (!code.is_empty()).then_some(&code),
        "department": search.department.filter(|d| !d.is_empty()),
        "limit": 200,
    }));
    let listed = match query {
        Ok(query) => api_read_models::documents(State(Arc::clone(&app)), as_api(&session), Query(query)).await,
        Err(problem) => Err(problem),
    };
    let axum::Json(found) = match listed {
        Ok(found) => found,
        Err(problem) => return problem_page(Some(&session), &problem),
    };
    let documents = found
        .items
        .iter()
        .map(|row| DocumentLine {
            code: text(row, "trackingCode"),
            kind: text(row, "documentType"),
            person: text(row, "person"),
            department: text(row, "department"),
            state: text(row, "state"),
            since: text(row, "since"),
            trail: row
                .get("trail")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|leg| Leg {
                    state: text(leg, "state"),
                    at: text(leg, "at"),
                    details: leg
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| !matches!(k.as_str(), "state" | "at" | "instance" | "seq"))
                        .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .collect(),
        })
        .collect();
    page(
        StatusCode::OK,
        &DocumentsPage { who: Some(session.caller.subject.clone()), csrf: session.csrf(), code, documents },
    )
}

#[derive(Template)]
#[template(path = "ui/notifications.html")]
struct NotificationsPage {
    who: Option<String>,
    csrf: String,
    notifications: Vec<NotificationView>,
    /// The ids of the unread ones, for "mark all read".
    unread: Vec<i64>,
}

impl NotificationsPage {
    /// A notification's link, when it is one of the UI's pages.
    fn page_link(notification: &NotificationView) -> Option<&str> {
        notification.link.as_deref().filter(|link| link.starts_with("/ui/"))
    }
}

/// `GET /ui/notifications`: the person's in-app notifications, newest first, as
/// `listNotifications`.
pub async fn notifications(State(app): State<Arc<App>>, session: Session) -> Response {
    let listed = match params(serde_json::json!({ "limit": 100 })) {
        Ok(query) => api_others::notifications(State(Arc::clone(&app)), as_api(&session), Query(query)).await,
        Err(problem) => Err(problem),
    };
    match listed {
        Ok(axum::Json(found)) => {
            let unread = found.items.iter().filter(|n| n.read_at.is_none()).map(|n| n.id).collect();
            page(
                StatusCode::OK,
                &NotificationsPage {
                    who: Some(session.caller.subject.clone()),
                    csrf: session.csrf(),
                    notifications: found.items,
                    unread,
                },
            )
        }
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

/// `POST /ui/notifications/read`: marks the posted ids read, as `markNotificationsRead` (only
/// the person's own change).
pub async fn mark_read(
    State(app): State<Arc<App>>,
    session: Session,
    headers: HeaderMap,
    Form(posted): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refusal) = stale_form(&session, &headers, posted_field(&posted, "_csrf")) {
        return refusal;
    }
    let ids = posted.iter().filter(|(k, _)| k == "id").filter_map(|(_, v)| v.parse().ok()).collect();
    let marked =
        api_others::mark_read(State(Arc::clone(&app)), as_api(&session), crate::routes::Body(MarkRead { ids })).await;
    match marked {
        Ok(_) => Redirect::to("/ui/notifications").into_response(),
        Err(problem) => problem_page(Some(&session), &problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_keeps_the_search_with_its_values_encoded() {
        let page = InstancesPage {
            who: None,
            csrf: String::new(),
            instances: Vec::new(),
            definition: "training/approve".into(),
            status: "running".into(),
            business_key: "order 7&status=faulted#x".into(),
            next: Some("2026-11-01T00:00:00Z/abc".into()),
            may_bulk: false,
        };
        let link = page.next_link().expect("a next page");
        let query = link.strip_prefix("/ui/instances?").expect("the instances page");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("definition".into(), "training/approve".into()),
                ("status".into(), "running".into()),
                ("businessKey".into(), "order 7&status=faulted#x".into()),
                ("after".into(), "2026-11-01T00:00:00Z/abc".into()),
            ]
        );
        assert!(InstancesPage { next: None, ..page }.next_link().is_none());
    }
}
