//! Human tasks: the inbox and the actions on one task. The engine decides who may see and do
//! what (the task's access keys, four-eyes, the form), in the instance's step.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use baton_engine::InstanceId;
use baton_engine::history::Seq;
use baton_engine::human::{Assignment, HumanTaskRow, HumanTaskStatus, InboxQuery, TaskAction};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Body, Page, authorize, decode_cursor, parse_choice};
use crate::app::{App, Auth};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Only tasks owned by or delegated to this person (`me` for the caller).
    assignee: Option<String>,
    /// Only tasks offered to this role.
    role: Option<String>,
    group: Option<String>,
    department: Option<String>,
    /// open (default), completed, cancelled, expired.
    status: Option<String>,
    due_before: Option<DateTime<Utc>>,
    min_priority: Option<i32>,
    /// `namespace/name`.
    definition: Option<String>,
    instance: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// The caller's inbox: the tasks they may see (assigned to them, offered to their roles in
/// their departments, their groups, delegated to them), filtered in the query before paging.
#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "listTasks", tag = "tasks",
    params(InboxParams), responses((status = 200, body = Page<Object>), (status = 401, body = crate::problem::ProblemBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<InboxParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    authorize(&app, &auth, "listTasks", None)?;
    let caller = auth.caller()?;
    let principal = app.principal(caller, None).await?;
    let status: Option<HumanTaskStatus> = parse_choice(params.status.as_deref(), "task status")?;
    let after = match params.after {
        None => None,
        Some(cursor) => Some(parse_reference(&decode_cursor(&cursor)?)?),
    };
    let query = InboxQuery {
        assignee: params.assignee.map(|a| if a == "me" { caller.subject.clone() } else { a }),
        role: params.role,
        group: params.group,
        department: params.department,
        status,
        due_before: params.due_before,
        min_priority: params.min_priority,
        definition: params.definition,
        instance: params.instance.map(InstanceId::new),
        after,
        limit: params.limit.unwrap_or(0),
    };
    let limit = query.effective_limit();
    let rows = app.engine.inbox(&query, &principal).await?;
    let items: Vec<Value> = rows.iter().map(view).collect();
    Ok(axum::Json(Page::new(items, limit, |last| {
        last.get("reference").and_then(Value::as_str).unwrap_or_default().to_owned()
    })))
}

/// A task as the API shows it: the row, and its reference `instance:seq`.
fn view(row: &HumanTaskRow) -> Value {
    let mut value = serde_json::to_value(row).unwrap_or_default();
    if let Value::Object(map) = &mut value {
        map.insert("reference".into(), Value::String(row.reference()));
    }
    value
}

fn parse_reference(reference: &str) -> ApiResult<(InstanceId, Seq)> {
    reference
        .rsplit_once(':')
        .and_then(|(instance, seq)| Some((InstanceId::new(instance), seq.parse().ok()?)))
        .ok_or_else(|| Problem::bad_request(format!("{reference:?} is not a task reference (instance:seq)")))
}

/// One task, if the caller may see it (otherwise 404, as if it did not exist).
#[utoipa::path(get, path = "/api/v1/tasks/{instance}/{seq}", operation_id = "getTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
) -> ApiResult<axum::Json<Value>> {
    authorize(&app, &auth, "getTask", None)?;
    let instance = InstanceId::new(instance);
    let namespace = app.namespace_of(&instance).await?;
    let principal = app.principal(auth.caller()?, namespace.as_deref()).await?;
    let row = app.engine.human_task(&instance, seq, &principal).await?;
    Ok(axum::Json(view(&row)))
}

async fn act(
    app: &App,
    auth: &Auth,
    operation: &str,
    instance: String,
    seq: Seq,
    action: TaskAction,
) -> ApiResult<axum::Json<Value>> {
    authorize(app, auth, operation, None)?;
    let instance = InstanceId::new(instance);
    let namespace = app.namespace_of(&instance).await?;
    let principal = app.principal(auth.caller()?, namespace.as_deref()).await?;
    let row = app.engine.act_on_task(&instance, seq, &principal, action).await?;
    Ok(axum::Json(view(&row)))
}

/// Takes an unowned task the caller is a candidate for.
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/claim", operation_id = "claimTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn claim(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
) -> ApiResult<axum::Json<Value>> {
    act(&app, &auth, "claimTask", instance, seq, TaskAction::Claim).await
}

/// Gives an owned task back to its candidates.
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/unclaim", operation_id = "unclaimTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn unclaim(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
) -> ApiResult<axum::Json<Value>> {
    act(&app, &auth, "unclaimTask", instance, seq, TaskAction::Unclaim).await
}

/// Whom to delegate to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegateRequest {
    /// A person's directory id.
    pub to: String,
}

/// Hands the work to someone else; the owner stays accountable and may still complete it.
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/delegate", operation_id = "delegateTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)), request_body = DelegateRequest,
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn delegate(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
    Body(request): Body<DelegateRequest>,
) -> ApiResult<axum::Json<Value>> {
    act(&app, &auth, "delegateTask", instance, seq, TaskAction::Delegate { to: request.to }).await
}

/// Where to move the task.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignRequest {
    /// An assignment: `{"users": ["ann"]}` for a new owner, or roles, groups and departments to
    /// offer it to.
    #[schema(value_type = Object)]
    pub to: Assignment,
}

/// Moves the task to a new owner, or back to candidates (its owner, or a supervisor).
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/reassign", operation_id = "reassignTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)), request_body = ReassignRequest,
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn reassign(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
    Body(request): Body<ReassignRequest>,
) -> ApiResult<axum::Json<Value>> {
    act(&app, &auth, "reassignTask", instance, seq, TaskAction::Reassign { to: request.to }).await
}

/// A comment on a task.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    pub text: String,
}

/// Comments on a task the caller may see.
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/comment", operation_id = "commentTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)), request_body = CommentRequest,
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn comment(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
    Body(request): Body<CommentRequest>,
) -> ApiResult<axum::Json<Value>> {
    act(&app, &auth, "commentTask", instance, seq, TaskAction::Comment { text: request.text }).await
}

/// A completion.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompleteRequest {
    /// One of the task's declared outcomes.
    pub outcome: String,
    /// The form's data, checked against its JSON Schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Value,
    /// Completes for this person (a role with `onBehalf` in the task's department).
    pub on_behalf_of: Option<String>,
}

/// Completes a task with an outcome and the form's data.
#[utoipa::path(post, path = "/api/v1/tasks/{instance}/{seq}/complete", operation_id = "completeTask", tag = "tasks",
    params(("instance" = String, Path), ("seq" = u64, Path)), request_body = CompleteRequest,
    responses((status = 200, body = Object), (status = 404, body = crate::problem::ProblemBody), (status = 409, body = crate::problem::ProblemBody),
        (status = 422, body = crate::problem::ProblemBody, description = "The data does not fit the form: every problem is listed")))]
pub async fn complete(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((instance, seq)): Path<(String, Seq)>,
    Body(request): Body<CompleteRequest>,
) -> ApiResult<axum::Json<Value>> {
    let action =
        TaskAction::Complete { outcome: request.outcome, data: request.data, on_behalf_of: request.on_behalf_of };
    act(&app, &auth, "completeTask", instance, seq, action).await
}
