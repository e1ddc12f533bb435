//! Instances: start, search, describe, history, events in, suspend, resume, terminate, and
//! incidents.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use baton_engine::history::Seq;
use baton_engine::human::may_see;
use baton_engine::store::{InstanceFilter, InstanceRow};
use baton_engine::{Actor, InstanceId, InstanceStatus, Migrate, RaiseEvent, Raised, Resolution, StartOptions};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Body, Page, authorize, created_or_ok, decode_cursor, parse_choice};
use crate::app::{App, Auth};
use crate::auth::Scope;
use crate::policy::{self, Access};
use crate::problem::{ApiResult, Kind, Problem};

/// An instance's summary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    /// `namespace/name`.
    pub definition: String,
    pub version: String,
    pub namespace: Option<String>,
    #[schema(value_type = String, example = "running")]
    pub status: InstanceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The person who started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The output once completed; the failure once faulted.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

impl From<InstanceRow> for InstanceView {
    fn from(row: InstanceRow) -> Self {
        Self {
            id: row.id.to_string(),
            namespace: row.namespace.or_else(|| policy::namespace_of(&row.orchestration).map(str::to_owned)),
            definition: row.orchestration,
            version: row.version,
            initiator: row.initiator,
            status: row.status,
            business_key: row.business_key,
            tags: row.tags,
            idempotency_key: row.idempotency_key,
            parent: row.parent.map(|p| p.instance.to_string()),
            created_at: row.created_at,
            updated_at: row.updated_at,
            result: row.result,
        }
    }
}

/// An instance with what it waits for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    pub instance: InstanceView,
    /// Open activity tasks.
    #[schema(value_type = Vec<Object>)]
    pub activities: Vec<Value>,
    /// Human tasks, open and done.
    #[schema(value_type = Vec<Object>)]
    pub human_tasks: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub timers: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub incidents: Vec<Value>,
}

/// What starts an instance.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    /// `namespace/name` (the latest version) or `namespace/name@version`.
    pub definition: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
    /// The instance's id; generated when absent.
    pub id: Option<String>,
    /// A second start with the same key answers with the first instance (200, not 201).
    pub idempotency_key: Option<String>,
    /// The business object the instance is about (a session, an employee), for searches.
    pub business_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A started instance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StartAnswer {
    pub id: String,
    /// False when the idempotency key matched an instance started before.
    pub created: bool,
}

const MAX_TAGS: usize = 32;
const MAX_KEY_CHARS: usize = 256;

/// Starts an instance of a deployed definition.
#[utoipa::path(post, path = "/api/v1/instances", operation_id = "startInstance", tag = "instances",
    request_body = StartRequest,
    responses((status = 201, body = StartAnswer), (status = 200, body = StartAnswer, description = "The idempotency key matched"),
        (status = 404, body = crate::problem::ProblemBody), (status = 400, body = crate::problem::ProblemBody),
        (status = 422, body = crate::problem::ProblemBody, description = "The workflow failed on this input at once; nothing was recorded")))]
pub async fn start(State(app): State<Arc<App>>, auth: Auth, Body(request): Body<StartRequest>) -> ApiResult<Response> {
    let namespace = policy::namespace_of(&request.definition);
    if authorize(&app, &auth, "startInstance", namespace)? == Access::IfInvolved {
        let caller = auth.caller()?;
        let principal = app.principal(caller, namespace).await?;
        let starters = app.starters(&request.definition).await?;
        if !principal.roles.iter().any(|grant| starters.contains(&grant.role)) {
            return Err(Problem::forbidden(format!(
                "starting {} needs the platform permission designer or ops{}, or a directory role the definition lets start it{}",
                request.definition,
                namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default(),
                if starters.is_empty() { String::new() } else { format!(" ({})", starters.join(", ")) }
            )));
        }
    }
    if request.tags.len() > MAX_TAGS || request.tags.iter().any(|t| t.is_empty() || t.chars().count() > MAX_KEY_CHARS) {
        return Err(Problem::bad_request(format!("at most {MAX_TAGS} tags, each 1 to {MAX_KEY_CHARS} characters")));
    }
    if [&request.business_key, &request.idempotency_key, &request.id]
        .into_iter()
        .flatten()
        .any(|k| k.is_empty() || k.chars().count() > MAX_KEY_CHARS)
    {
        return Err(Problem::bad_request(format!("ids and keys are 1 to {MAX_KEY_CHARS} characters")));
    }
    let options = StartOptions {
        id: request.id.map(InstanceId::new),
        idempotency_key: request.idempotency_key,
        actor: Some(auth.actor()),
        business_key: request.business_key,
        tags: request.tags,
    };
    let started = app.engine.start(&request.definition, request.input, options).await?;
    Ok(created_or_ok(started.created, StartAnswer { id: started.id.to_string(), created: started.created }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// `namespace/name`.
    definition: Option<String>,
    /// running, waiting, suspended, cancelled, faulted, completed.
    status: Option<String>,
    business_key: Option<String>,
    tag: Option<String>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Searches instances of the namespaces the caller operates; a person without a platform
/// permission, the instances they started.
#[utoipa::path(get, path = "/api/v1/instances", operation_id = "listInstances", tag = "instances",
    params(SearchParams), responses((status = 200, body = Page<InstanceView>), (status = 400, body = crate::problem::ProblemBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<SearchParams>,
) -> ApiResult<axum::Json<Page<InstanceView>>> {
    authorize(&app, &auth, "listInstances", None)?;
    let caller = auth.caller()?;
    let (namespaces, initiator) = match policy::scope("listInstances", caller) {
        Scope::All => (None, None),
        Scope::Only(list) => (Some(list), None),
        // Their own instances, in every namespace.
        Scope::Nothing => (None, Some(caller.subject.clone())),
    };
    let status: Option<InstanceStatus> = parse_choice(params.status.as_deref(), "status")?;
    let filter = InstanceFilter {
        status,
        orchestration: params.definition,
        after: params.after.as_deref().map(decode_cursor).transpose()?.map(InstanceId::new),
        limit: params.limit.unwrap_or(0),
        business_key: params.business_key,
        tag: params.tag,
        created_after: params.created_after,
        created_before: params.created_before,
        namespaces,
        initiator,
    };
    let limit = filter.effective_limit();
    let rows = app.engine.store().list_instances(&filter).await?;
    let items = rows.into_iter().map(InstanceView::from).collect();
    Ok(axum::Json(Page::new(items, limit, |last| last.id.clone())))
}

/// Loads an instance the caller may see: with a platform permission in its namespace, or
/// as its initiator, or as someone who may see one of its human tasks. Anyone else is told
/// it does not exist.
async fn visible_instance(app: &App, auth: &Auth, operation: &str, id: &InstanceId) -> ApiResult<InstanceRow> {
    let not_found = || Problem::not_found(format!("instance {id} does not exist, or you may not see it"));
    auth.caller()?;
    let row = app.engine.store().instance(id).await?;
    let namespace = row
        .as_ref()
        .and_then(|r| r.namespace.clone().or_else(|| policy::namespace_of(&r.orchestration).map(str::to_owned)));
    let access = authorize(app, auth, operation, namespace.as_deref());
    let Some(row) = row else {
        return Err(access.err().unwrap_or_else(not_found));
    };
    match access {
        Ok(Access::Granted) => Ok(row),
        Ok(Access::IfInvolved) if involved(app, auth, id, namespace.as_deref()).await? => Ok(row),
        Ok(Access::IfInvolved) | Err(_) => Err(not_found()),
    }
}

async fn involved(app: &App, auth: &Auth, id: &InstanceId, namespace: Option<&str>) -> ApiResult<bool> {
    let caller = auth.caller()?;
    let first = app.engine.history(id, 0, 1).await?;
    let started_by = first
        .first()
        .and_then(|e| serde_json::from_str::<Actor>(&e.actor).ok())
        .is_some_and(|actor| actor == Actor::User { id: caller.subject.clone() });
    if started_by {
        return Ok(true);
    }
    let principal = app.principal(caller, namespace).await?;
    let tasks = app.engine.store().human_tasks_of(id).await?;
    Ok(tasks.iter().any(|row| may_see(&principal, &row.task)))
}

/// An instance with its open activity tasks, human tasks, timers and incidents.
#[utoipa::path(get, path = "/api/v1/instances/{id}", operation_id = "getInstance", tag = "instances",
    params(("id" = String, Path)), responses((status = 200, body = InstanceDetail), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<InstanceDetail>> {
    let id = InstanceId::new(id);
    let row = visible_instance(&app, &auth, "getInstance", &id).await?;
    let description = app.engine.describe(&id).await?;
    let human = app.engine.store().human_tasks_of(&id).await?;
    Ok(axum::Json(InstanceDetail {
        instance: row.into(),
        activities: to_json(&description.tasks),
        human_tasks: to_json(&human),
        timers: to_json(&description.timers),
        incidents: to_json(&description.incidents),
    }))
}

fn to_json<T: Serialize>(rows: &[T]) -> Vec<Value> {
    rows.iter().map(|row| serde_json::to_value(row).unwrap_or_default()).collect()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// The cursor of the previous page (`next`); from the first event when absent.
    pub(crate) after: Option<String>,
    pub(crate) limit: Option<u32>,
}

/// An instance's history, oldest first, each event with its actor and hash.
#[utoipa::path(get, path = "/api/v1/instances/{id}/history", operation_id = "getInstanceHistory", tag = "instances",
    params(("id" = String, Path), HistoryParams),
    responses((status = 200, body = Page<Object>), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn history(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    const DEFAULT: u32 = 100;
    const MAX: u32 = 1000;
    let id = InstanceId::new(id);
    visible_instance(&app, &auth, "getInstanceHistory", &id).await?;
    let from: Seq = match params.after {
        Some(cursor) => {
            decode_cursor(&cursor)?.parse::<Seq>().map_err(|_| Problem::bad_request("bad cursor"))?.saturating_add(1)
        }
        None => 0,
    };
    let limit = baton_engine::store::bounded(params.limit.unwrap_or(0), DEFAULT, MAX);
    let events = app.engine.history(&id, from, limit).await?;
    let items: Vec<Value> = events.iter().map(|e| e.to_view()).collect();
    Ok(axum::Json(Page::new(items, limit, |last| last.get("seq").map(Value::to_string).unwrap_or_default())))
}

/// A reason, recorded in history with the caller.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: String,
}

const MAX_REASON_CHARS: usize = 2000;

/// The optional JSON body of an operation: its default when empty.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &axum::body::Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Problem::bad_request(format!("the body: {e}")))
}

fn check_reason(reason: &str) -> ApiResult<()> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(Problem::bad_request(format!("the reason is longer than {MAX_REASON_CHARS} characters")));
    }
    Ok(())
}

/// The optional `{"reason": ...}` body of an operation.
fn reason(body: axum::body::Bytes) -> ApiResult<String> {
    let Reason { reason } = optional_body(&body)?;
    check_reason(&reason)?;
    Ok(reason)
}

async fn operate(app: &App, auth: &Auth, operation: &str, id: &InstanceId) -> ApiResult<Access> {
    let row = app.engine.store().instance(id).await?;
    let namespace = row
        .as_ref()
        .and_then(|r| r.namespace.clone().or_else(|| policy::namespace_of(&r.orchestration).map(str::to_owned)));
    let access = authorize(app, auth, operation, namespace.as_deref())?;
    if row.is_none() {
        return Err(Problem::not_found(format!("instance {id} does not exist")));
    }
    Ok(access)
}

/// Suspend, resume and terminate: the same checks, one engine call each.
#[derive(Clone, Copy, Debug)]
enum Lifecycle {
    Suspend,
    Resume,
    Terminate,
}

async fn lifecycle(
    app: &App,
    auth: &Auth,
    change: Lifecycle,
    id: String,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    let id = InstanceId::new(id);
    let operation = match change {
        Lifecycle::Suspend => "suspendInstance",
        Lifecycle::Resume => "resumeInstance",
        Lifecycle::Terminate => "terminateInstance",
    };
    operate(app, auth, operation, &id).await?;
    let (reason, actor) = (reason(body)?, auth.actor());
    match change {
        Lifecycle::Suspend => app.engine.suspend(&id, &reason, actor).await?,
        Lifecycle::Resume => app.engine.resume(&id, &reason, actor).await?,
        Lifecycle::Terminate => app.engine.terminate(&id, &reason, actor).await?,
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Suspends an instance: it takes no input until resumed (what arrives is kept).
#[utoipa::path(post, path = "/api/v1/instances/{id}/suspend", operation_id = "suspendInstance", tag = "instances",
    params(("id" = String, Path)), request_body(content = Reason, description = "Optional"),
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn suspend(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    lifecycle(&app, &auth, Lifecycle::Suspend, id, body).await
}

/// Resumes a suspended instance.
#[utoipa::path(post, path = "/api/v1/instances/{id}/resume", operation_id = "resumeInstance", tag = "instances",
    params(("id" = String, Path)), request_body(content = Reason, description = "Optional"),
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn resume(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    lifecycle(&app, &auth, Lifecycle::Resume, id, body).await
}

/// Ends an instance now.
#[utoipa::path(post, path = "/api/v1/instances/{id}/terminate", operation_id = "terminateInstance", tag = "instances",
    params(("id" = String, Path)), request_body(content = Reason, description = "Optional"),
    responses((status = 204), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn terminate(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    lifecycle(&app, &auth, Lifecycle::Terminate, id, body).await
}

/// What raising events did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RaiseAnswer {
    /// Events taken.
    pub accepted: usize,
    /// Events whose id was seen before (accepted and ignored).
    pub duplicates: usize,
}

/// The largest event body taken.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Delivers CloudEvents to an instance: structured mode (`application/cloudevents+json`),
/// binary mode (`ce-*` headers, the body is the data) or a batch
/// (`application/cloudevents-batch+json`). An event's `id` deduplicates it.
#[utoipa::path(post, path = "/api/v1/instances/{id}/events", operation_id = "raiseEvent", tag = "instances",
    params(("id" = String, Path)),
    request_body(content = Object, content_type = "application/cloudevents+json", description = "A CloudEvent; binary mode and batches are taken too"),
    responses((status = 202, body = RaiseAnswer), (status = 400, body = crate::problem::ProblemBody), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn raise_event(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, axum::Json<RaiseAnswer>)> {
    let id = InstanceId::new(id);
    let access = operate(&app, &auth, "raiseEvent", &id).await?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(Problem::bad_request(format!("the event is larger than {MAX_EVENT_BYTES} bytes")));
    }
    let events = crate::cloudevents::from_http(&headers, &body)?;
    // A worker account raises the event types its token lists, and no other; a batch is
    // checked whole before any of it is raised.
    if access == Access::IfInvolved {
        let caller = auth.caller()?;
        if let Some(event) = events.iter().find(|event| !caller.may_raise(&event.kind)) {
            return Err(Problem::forbidden(format!(
                "{} may not raise events of type {:?}: its token lists {}",
                caller.subject,
                event.kind,
                if caller.event_types.is_empty() { "none".to_owned() } else { caller.event_types.join(", ") }
            )));
        }
    }
    let mut answer = RaiseAnswer { accepted: 0, duplicates: 0 };
    for event in events {
        let raise = RaiseEvent {
            name: event.kind.clone(),
            event_id: Some(event.id.clone()),
            payload: event.into_json(),
            actor: auth.actor(),
        };
        match app.engine.raise_event(&id, raise).await? {
            Raised::Accepted => answer.accepted += 1,
            Raised::Duplicate => answer.duplicates += 1,
        }
    }
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(answer)))
}

/// An instance an event started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventStarted {
    /// The event's `id`.
    pub event: String,
    /// `namespace/name` of the definition whose `schedule.on` the event matched.
    pub definition: String,
    pub instance: String,
}

/// What publishing events did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishAnswer {
    /// Events taken.
    pub events: usize,
    /// The instances they started (an event delivered again answers the instances it started
    /// the first time).
    pub started: Vec<EventStarted>,
}

/// Publishes CloudEvents to the engine: each event starts an instance of every definition
/// whose `schedule.on` it matches (the latest version, with `[event]` as input). Same modes as
/// `raiseEvent`: structured, binary, batch. An event's `source` and `id` make it idempotent.
/// A worker account publishes the event types its token lists.
#[utoipa::path(post, path = "/api/v1/events", operation_id = "publishEvents", tag = "instances",
    request_body(content = Object, content_type = "application/cloudevents+json", description = "A CloudEvent; binary mode and batches are taken too"),
    responses((status = 202, body = PublishAnswer), (status = 400, body = crate::problem::ProblemBody)))]
pub async fn publish_events(
    State(app): State<Arc<App>>,
    auth: Auth,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<(axum::http::StatusCode, axum::Json<PublishAnswer>)> {
    let access = authorize(&app, &auth, "publishEvents", None)?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(Problem::bad_request(format!("the event is larger than {MAX_EVENT_BYTES} bytes")));
    }
    let events = crate::cloudevents::from_http(&headers, &body)?;
    let caller = auth.caller()?;
    if access == Access::IfInvolved
        && let Some(event) = events.iter().find(|event| !caller.may_raise(&event.kind))
    {
        return Err(Problem::forbidden(format!(
            "{} may not publish events of type {:?}: its token lists {}",
            caller.subject,
            event.kind,
            if caller.event_types.is_empty() { "none".to_owned() } else { caller.event_types.join(", ") }
        )));
    }
    let scheduler = app.options.scheduler.as_ref().ok_or_else(|| {
        Problem::new(Kind::Unavailable, "this server runs no scheduler: no definition starts on events here")
    })?;
    let mut answer = PublishAnswer { events: events.len(), started: Vec::new() };
    for event in events {
        let id = event.id.clone();
        for start in scheduler.on_event(&event.into_json(), auth.actor()).await? {
            answer.started.push(EventStarted {
                event: id.clone(),
                definition: start.definition,
                instance: start.instance.to_string(),
            });
        }
    }
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(answer)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct IncidentParams {
    instance: Option<String>,
    /// Only open incidents (default true).
    open: Option<bool>,
}

/// Incidents: what instances cannot get past by themselves.
#[utoipa::path(get, path = "/api/v1/incidents", operation_id = "listIncidents", tag = "instances",
    params(IncidentParams), responses((status = 200, body = Vec<Object>)))]
pub async fn incidents(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<IncidentParams>,
) -> ApiResult<axum::Json<Vec<Value>>> {
    authorize(&app, &auth, "listIncidents", None)?;
    let scope = policy::scope("listIncidents", auth.caller()?);
    let instance = params.instance.map(InstanceId::new);
    let incidents = app.engine.incidents(instance.as_ref(), params.open.unwrap_or(true)).await?;
    let mut visible = Vec::new();
    for incident in incidents {
        if scope != Scope::All {
            let row = app.engine.store().instance(&incident.instance).await?;
            let namespace =
                row.and_then(|r| r.namespace.or_else(|| policy::namespace_of(&r.orchestration).map(str::to_owned)));
            if !matches!(&scope, Scope::Only(list) if namespace.as_ref().is_some_and(|n| list.contains(n))) {
                continue;
            }
        }
        visible.push(serde_json::to_value(&incident).unwrap_or_default());
    }
    Ok(axum::Json(visible))
}

/// How to retry an incident.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Why, recorded in history with the caller.
    #[serde(default)]
    pub reason: String,
    /// For a failed activity: the input its next attempt runs with instead of the one it was
    /// scheduled with (a corrected address, say). Recorded in history.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
}

/// A failed activity completed by hand.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteIncidentRequest {
    /// Why (required), recorded in history with the caller.
    pub reason: String,
    /// The activity's result, as the workflow will see it; `null` (or absent) skips it.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub result: Value,
}

/// The namespace of the instance an incident belongs to, after the policy's check; 404 when
/// there is no such incident.
async fn operate_incident(app: &App, auth: &Auth, operation: &str, incident: i64) -> ApiResult<()> {
    let found = app.engine.store().incident(incident).await?;
    let row = match &found {
        Some(incident) => app.engine.store().instance(&incident.instance).await?,
        None => None,
    };
    let namespace = row.and_then(|r| r.namespace.or_else(|| policy::namespace_of(&r.orchestration).map(str::to_owned)));
    authorize(app, auth, operation, namespace.as_deref())?;
    if found.is_none() {
        return Err(Problem::not_found(format!("incident {incident} does not exist")));
    }
    Ok(())
}

/// Retries an incident: the failed activity runs again (with an edited input when `input` is
/// given), or the input the instance could not take is delivered again. The retry lands in
/// the instance's history with the caller and the reason.
#[utoipa::path(post, path = "/api/v1/incidents/{incident}/retry", operation_id = "retryIncident", tag = "instances",
    params(("incident" = i64, Path)), request_body(content = RetryRequest, description = "Optional"),
    responses((status = 204), (status = 400, body = crate::problem::ProblemBody), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn retry_incident(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(incident): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    operate_incident(&app, &auth, "retryIncident", incident).await?;
    let RetryRequest { reason, input } = optional_body(&body)?;
    check_reason(&reason)?;
    app.engine.resolve_incident(incident, Resolution::Retry { input }, &reason, auth.actor()).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Resolves the incident of a failed activity by completing the activity by hand: `result`
/// becomes its result, the workflow goes on. Recorded in history with the caller and the reason
/// (the activity's completion carries the caller as its actor).
#[utoipa::path(post, path = "/api/v1/incidents/{incident}/complete", operation_id = "completeIncident", tag = "instances",
    params(("incident" = i64, Path)), request_body = CompleteIncidentRequest,
    responses((status = 204), (status = 400, body = crate::problem::ProblemBody), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn complete_incident(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(incident): Path<i64>,
    Body(request): Body<CompleteIncidentRequest>,
) -> ApiResult<axum::http::StatusCode> {
    operate_incident(&app, &auth, "completeIncident", incident).await?;
    if request.reason.trim().is_empty() {
        return Err(Problem::bad_request("a completion by hand needs a `reason`"));
    }
    check_reason(&request.reason)?;
    let resolution = Resolution::Complete { result: request.result };
    app.engine.resolve_incident(incident, resolution, &request.reason, auth.actor()).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Where an instance moves, and how its running tasks find their counterparts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrateRequest {
    /// The version of the instance's definition to move to.
    pub to: String,
    /// Old task -> new task, by name or by reference (`/do/1/review`), for a running task whose
    /// counterpart is not the task with the same reference or name.
    #[serde(default)]
    pub mapping: std::collections::BTreeMap<String, String>,
    /// Why, recorded in history with the caller.
    #[serde(default)]
    pub reason: String,
    /// Only tell what the move would do, or why it is refused.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a move did, or (a dry run) would do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationView {
    pub instance: String,
    /// `namespace/name@version` before the move.
    pub from: String,
    /// `namespace/name@version` after it.
    pub to: String,
    /// Each running task and its counterpart (references).
    pub moved: Vec<MovedTaskView>,
    /// False for a dry run.
    pub applied: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MovedTaskView {
    pub from: String,
    pub to: String,
}

/// Moves a running instance to another version of its definition. Run it with `dryRun` first:
/// the answer lists where each running task goes, or the refusal (409,
/// `urn:baton:problem:migration-refused`) says why the move is unsafe. The move lands in the
/// instance's history with the caller and the reason; activities, timers and human tasks in
/// flight carry on.
#[utoipa::path(post, path = "/api/v1/instances/{id}/migrate", operation_id = "migrateInstance", tag = "instances",
    params(("id" = String, Path)), request_body = MigrateRequest,
    responses((status = 200, body = MigrationView), (status = 400, body = crate::problem::ProblemBody),
        (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn migrate(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    Body(request): Body<MigrateRequest>,
) -> ApiResult<axum::Json<MigrationView>> {
    let id = InstanceId::new(id);
    operate(&app, &auth, "migrateInstance", &id).await?;
    check_reason(&request.reason)?;
    if request.to.trim().is_empty() {
        return Err(Problem::bad_request("a move needs the version to move `to`"));
    }
    let MigrateRequest { to, mapping, reason, dry_run } = request;
    let migration = app.engine.migrate(&id, Migrate { to, mapping, reason, dry_run }, auth.actor()).await?;
    Ok(axum::Json(MigrationView {
        instance: migration.instance.to_string(),
        from: migration.from,
        to: migration.to,
        moved: migration.moved.into_iter().map(|m| MovedTaskView { from: m.from, to: m.to }).collect(),
        applied: migration.applied,
    }))
}
