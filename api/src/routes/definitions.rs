//! Definitions: deploy (immutable versions), validate, try with simulated time, list, get.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use baton_engine::store::{DefinitionQuery, DefinitionRow};
use baton_engine::{ActivityError, ActivityRegistry};
use baton_workflows::run::{Given, RunError, RunOptions, RunOutcome, Stuck, TaskAnswer, run_definition};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Body, Page, authorize, created_or_ok, decode_cursor};
use crate::app::{App, Auth, Deployed};
use crate::auth::Scope;
use crate::policy;
use crate::problem::{ApiResult, FieldError, Kind, Problem};

/// A deployed version of a definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefinitionView {
    /// `namespace/name`.
    pub name: String,
    pub namespace: Option<String>,
    pub version: String,
    /// Instances start it as `name@version` (or `name` for the latest version).
    pub key: String,
    pub content_hash: String,
    pub deployed_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub deployed_by: serde_json::Value,
    /// The definition's text, when one definition is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Validation warnings, on deploy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
    /// The deploy sequence: the list's cursor.
    #[serde(skip)]
    seq: i64,
}

impl DefinitionView {
    fn from_row(row: DefinitionRow, with_source: bool) -> Self {
        Self {
            key: format!("{}@{}", row.name, row.version),
            name: row.name,
            namespace: row.namespace,
            version: row.version,
            content_hash: row.content_hash,
            deployed_at: row.deployed_at,
            deployed_by: serde_json::to_value(&row.deployed_by).unwrap_or_default(),
            source: with_source.then_some(row.source),
            warnings: Vec::new(),
            seq: row.seq,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SourceParams {
    /// The file name diagnostics name (default `definition.yaml`).
    file: Option<String>,
}

fn source_text(body: &axum::body::Bytes) -> ApiResult<String> {
    String::from_utf8(body.to_vec()).map_err(|_| Problem::bad_request("the definition is not UTF-8 text"))
}

/// Compiles the body, checking the policy before (any namespace) and after (the definition's
/// own namespace, which only the parsed text tells).
fn checked_compile(
    app: &App,
    auth: &Auth,
    operation: &str,
    body: &axum::body::Bytes,
    file: &str,
) -> ApiResult<(baton_workflows::interp::Workflow, Vec<FieldError>)> {
    authorize(app, auth, operation, None)?;
    let source = source_text(body)?;
    let (workflow, warnings) = app.compile(&source, file)?;
    authorize(app, auth, operation, Some(&workflow.program().document.namespace))?;
    Ok((workflow, warnings))
}

/// Deploys a definition (YAML or JSON text as the body). A deployed version is immutable:
/// the same text again answers 200, another text under that version is a conflict.
#[utoipa::path(post, path = "/api/v1/definitions", operation_id = "deployDefinition", tag = "definitions",
    params(SourceParams),
    request_body(content = String, content_type = "application/yaml", description = "The definition's YAML or JSON text"),
    responses(
        (status = 201, body = DefinitionView, description = "Deployed"),
        (status = 200, body = DefinitionView, description = "This text was already deployed under this version"),
        (status = 409, body = crate::problem::ProblemBody, description = "Another text is deployed under this version"),
        (status = 422, body = crate::problem::ProblemBody, description = "Validation errors, each with its line and column"),
    ))]
pub async fn deploy(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<SourceParams>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let file = params.file.unwrap_or_else(|| "definition.yaml".into());
    let (workflow, warnings) = checked_compile(&app, &auth, "deployDefinition", &body, &file)?;
    let source = source_text(&body)?;
    let Deployed { row, created, warnings } = app.deploy_compiled(workflow, warnings, &source, auth.actor()).await?;
    let mut view = DefinitionView::from_row(row, false);
    view.warnings = warnings;
    Ok(created_or_ok(created, view))
}

/// What validation found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub warnings: Vec<FieldError>,
}

/// Validates a definition without deploying it: 200 with its warnings, or a 422 problem with
/// every error at its line and column.
#[utoipa::path(post, path = "/api/v1/definitions/validate", operation_id = "validateDefinition", tag = "definitions",
    params(SourceParams),
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, body = Validation), (status = 422, body = crate::problem::ProblemBody)))]
pub async fn validate(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<SourceParams>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<Validation>> {
    let file = params.file.unwrap_or_else(|| "definition.yaml".into());
    let (_, warnings) = checked_compile(&app, &auth, "validateDefinition", &body, &file)?;
    Ok(axum::Json(Validation { valid: true, warnings }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Only versions of this definition (`namespace/name`).
    name: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Deployed versions, in deploy order, of the namespaces the caller may read.
#[utoipa::path(get, path = "/api/v1/definitions", operation_id = "listDefinitions", tag = "definitions",
    params(ListParams), responses((status = 200, body = Page<DefinitionView>)))]
pub async fn list(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<DefinitionView>>> {
    authorize(&app, &auth, "listDefinitions", None)?;
    let namespaces = match policy::scope("listDefinitions", auth.caller()?) {
        Scope::All => None,
        Scope::Only(list) => Some(list),
        Scope::Nothing => return Err(Problem::forbidden("you may read no namespace's definitions")),
    };
    let after = match params.after {
        Some(cursor) => Some(decode_cursor(&cursor)?.parse().map_err(|_| Problem::bad_request("bad cursor"))?),
        None => None,
    };
    let query = DefinitionQuery { name: params.name, namespaces, after, limit: params.limit.unwrap_or(0) };
    let limit = query.effective_limit();
    let rows = app.engine.store().definitions(&query).await?;
    let items: Vec<_> = rows.into_iter().map(|r| DefinitionView::from_row(r, false)).collect();
    Ok(axum::Json(Page::new(items, limit, |last| last.seq.to_string())))
}

/// A deployed version (the latest when `version` is None), or 404.
async fn deployed(app: &App, namespace: &str, name: &str, version: Option<&str>) -> ApiResult<DefinitionRow> {
    let full = format!("{namespace}/{name}");
    app.engine
        .store()
        .definition(&full, version)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no deployed definition {full}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GetParams {
    /// The version; the latest deployed when absent.
    version: Option<String>,
}

/// One version of a definition, with its text.
#[utoipa::path(get, path = "/api/v1/definitions/{namespace}/{name}", operation_id = "getDefinition", tag = "definitions",
    params(("namespace" = String, Path), ("name" = String, Path), GetParams),
    responses((status = 200, body = DefinitionView), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<GetParams>,
) -> ApiResult<axum::Json<DefinitionView>> {
    authorize(&app, &auth, "getDefinition", Some(&namespace))?;
    let row = deployed(&app, &namespace, &name, params.version.as_deref()).await?;
    Ok(axum::Json(DefinitionView::from_row(row, true)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DiagramParams {
    /// The version; the latest deployed when absent.
    version: Option<String>,
    /// `svg` (default) or `mermaid`.
    format: Option<String>,
}

/// A definition's flow as a diagram: SVG drawn by the server, or Mermaid text.
#[utoipa::path(get, path = "/api/v1/definitions/{namespace}/{name}/diagram", operation_id = "getDefinitionDiagram",
    tag = "definitions",
    params(("namespace" = String, Path), ("name" = String, Path), DiagramParams),
    responses((status = 200, description = "image/svg+xml, or text/plain for Mermaid"),
        (status = 404, body = crate::problem::ProblemBody), (status = 400, body = crate::problem::ProblemBody)))]
pub async fn diagram(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<DiagramParams>,
) -> ApiResult<Response> {
    use axum::response::IntoResponse;
    authorize(&app, &auth, "getDefinitionDiagram", Some(&namespace))?;
    let row = deployed(&app, &namespace, &name, params.version.as_deref()).await?;
    let (workflow, _) = app.compile(&row.source, &row.key())?;
    let program = workflow.program();
    let (content_type, body) = match params.format.as_deref().unwrap_or("svg") {
        "svg" => ("image/svg+xml", baton_workflows::diagram::svg(program)),
        "mermaid" => ("text/plain; charset=utf-8", baton_workflows::diagram::mermaid(program)),
        other => return Err(Problem::bad_request(format!("format {other:?}: use svg or mermaid"))),
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The longest a try runs, in real time: simulated time makes a run that ends take
/// milliseconds, so a longer one loops without end.
pub const TRY_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Tries running at once in this server: each has an engine on a temporary store of its own,
/// so a burst of them must not take the server's memory and files.
pub const MAX_CONCURRENT_TRIES: usize = 4;
static TRIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_TRIES);

/// A definition to try, and what the run gives it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TryRequest {
    /// The definition's YAML or JSON text.
    pub source: String,
    /// The file name problems name (default `definition.yaml`).
    #[serde(default)]
    pub file: Option<String>,
    /// The workflow's input (default `{}`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
    /// The result of each activity the definition calls, by activity name (`http` for every
    /// `call: http`, a function's name for `call: NAME`). Nothing else runs: an activity
    /// without a result here faults the run.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub activities: serde_json::Map<String, Value>,
    /// CloudEvents (structured JSON), delivered in order once the instance has started; an event
    /// that comes before its listener waits for it.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// Answers to human tasks, given in order as the tasks open.
    #[serde(default)]
    pub answers: Vec<TryAnswer>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// An answer to a human task: the next open task named `task` is completed with `outcome`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryAnswer {
    /// The task's name in the definition (`review`).
    pub task: String,
    pub outcome: String,
    /// The completion's data (what the task's form would post).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Value,
}

/// How a try ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TryStatus {
    Completed,
    Faulted,
}

/// One task lifecycle event of a try.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TryStep {
    /// `task.started`, `task.completed`, `task.faulted`, `task.cancelled`, `task.skipped`,
    /// `task.retried`.
    pub kind: String,
    /// The task's name (`review`).
    pub task: String,
    /// The task's JSON pointer in the definition (`/do/0/review`).
    pub reference: String,
}

/// What a try did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TryResult {
    pub status: TryStatus,
    /// The workflow's output, when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The RFC 7807 error the workflow faulted with (type, status, title, detail, instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// The task lifecycle events, in the order they happened.
    pub trace: Vec<TryStep>,
    /// The simulated time from the start to the end, ISO 8601 (`P7DT2H`), to the second.
    pub elapsed: String,
    /// The same, in milliseconds.
    pub elapsed_ms: i64,
    /// The timers that fired (waits, timeouts, SLA deadlines), each as soon as nothing else was
    /// left to do.
    pub timers_fired: u32,
    /// Validation warnings of the text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<FieldError>,
}

/// Runs a definition once, to its end, without deploying it: simulated time (each timer fires
/// as soon as nothing else is left to do), the activities' results given, the human tasks
/// answered, in a store of its own that is thrown away. Nothing else runs: no HTTP call, no
/// email, no SQL, no process.
#[utoipa::path(post, path = "/api/v1/definitions/try", operation_id = "tryDefinition", tag = "definitions",
    request_body = TryRequest,
    responses(
        (status = 200, body = TryResult, description = "The run ended: completed with its output, or faulted with its error"),
        (status = 400, body = crate::problem::ProblemBody, description = "The body is not a try"),
        (status = 408, body = crate::problem::ProblemBody, description = "The run took longer than 10 s of real time and was stopped"),
        (status = 422, body = crate::problem::ProblemBody, description = "Validation errors, each with its line and column (invalid-definition); the run cannot end with what was given (try-stuck); the engine refused the input (orchestration-fault) or an answer (invalid-task-data)"),
        (status = 409, body = crate::problem::ProblemBody, description = "A human task refused an answer (task-refused)"),
    ))]
pub async fn try_definition(
    State(app): State<Arc<App>>,
    auth: Auth,
    Body(request): Body<TryRequest>,
) -> ApiResult<axum::Json<TryResult>> {
    authorize(&app, &auth, "tryDefinition", None)?;
    let file = request.file.clone().unwrap_or_else(|| "definition.yaml".into());
    let (workflow, warnings) = app.compile(&request.source, &file)?;
    authorize(&app, &auth, "tryDefinition", Some(&workflow.program().document.namespace))?;
    let by = auth.caller()?.subject.clone();
    if let Some(index) = request.events.iter().position(|e| !e.get("type").is_some_and(Value::is_string)) {
        return Err(Problem::bad_request(format!("events[{index}] is not a CloudEvent with a `type`")));
    }
    let mut activities = ActivityRegistry::new();
    for (name, result) in request.activities {
        activities.register(name, move |_ctx, _input| std::future::ready(Ok(result.clone())));
    }
    activities.fallback(|ctx, _input| {
        std::future::ready(Err(ActivityError::NonRetryable(format!(
            "the activity `{}` has no result in this try: give one under `activities`",
            ctx.name
        ))))
    });
    let answers = request
        .answers
        .into_iter()
        .map(|a| TaskAnswer { task: a.task, outcome: a.outcome, data: a.data, by: by.clone() })
        .collect();
    let options = RunOptions {
        input: request.input,
        events: request.events,
        activities,
        answers,
        calendars: Some(Arc::clone(&app.options.calendars)),
        allow_processes: app.options.compile.processes,
        time_limit: Some(TRY_TIME_LIMIT),
        ..RunOptions::default()
    };
    let Ok(running) = TRIES.try_acquire() else {
        let detail = format!("{MAX_CONCURRENT_TRIES} tries are running on this server: try again in a moment");
        return Err(Problem::new(crate::problem::Kind::RateLimited, detail));
    };
    // The run goes on in a task of its own, holding its place among the tries, even when the
    // caller goes away: it then still ends at its time limit and shuts its engine down.
    let source = request.source;
    let run = tokio::spawn(async move {
        let _running = running;
        run_definition(&source, &file, options).await
    });
    let report = run.await.map_err(Problem::internal)?.map_err(try_problem)?;
    let (status, output, error) = match report.outcome {
        RunOutcome::Completed { output } => (TryStatus::Completed, Some(output), None),
        RunOutcome::Faulted { error } => (TryStatus::Faulted, None, Some(error)),
    };
    let trace = report
        .trace
        .into_iter()
        .map(|step| TryStep { kind: step.kind, task: step.task, reference: step.reference })
        .collect();
    Ok(axum::Json(TryResult {
        status,
        output,
        error,
        trace,
        elapsed: iso_duration(report.elapsed_ms),
        elapsed_ms: report.elapsed_ms,
        timers_fired: report.timers_fired,
        warnings,
    }))
}

/// The problem of a try that could not end.
fn try_problem(error: RunError) -> Problem {
    match error {
        RunError::Invalid(detail) => Problem::new(Kind::InvalidDefinition, detail),
        RunError::Refused { given, error } => {
            let mut problem = Problem::from(*error);
            let what = match given {
                Given::Input => "the input".to_owned(),
                Given::Event(index) => format!("events[{index}]"),
                Given::Answer { task, outcome } => format!("the answer {outcome} to the human task `{task}`"),
            };
            problem.detail = format!("{what} was refused: {}", problem.detail);
            problem
        }
        RunError::Stuck(stuck) => {
            let detail = match stuck {
                Stuck::Incident(reasons) => format!(
                    "an incident was raised ({}); a try cannot repair it: give the activity a result that works",
                    reasons.join("; ")
                ),
                Stuck::HumanTask { name, title, outcomes } => format!(
                    "it waits for the human task `{name}` ({title}): add an answer to `answers`, such as \
                     {{\"task\": \"{name}\", \"outcome\": \"{}\"}} (outcomes: {})",
                    outcomes.first().map(String::as_str).unwrap_or_default(),
                    outcomes.join(", ")
                ),
                Stuck::Event => "it waits for an event that was not given: add it to `events`".to_owned(),
            };
            Problem::new(Kind::TryStuck, detail)
        }
        RunError::TimedOut(limit) => Problem::new(
            Kind::Timeout,
            format!(
                "the try ran for more than {} s of real time and was stopped: does the definition loop without end?",
                limit.as_secs()
            ),
        ),
        RunError::Engine(detail) => Problem::internal(detail),
    }
}

/// Milliseconds as an ISO 8601 duration, to the second: `P7D`, `PT1H30M`, `PT0S`.
fn iso_duration(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    let (days, hours, minutes, seconds) =
        (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60, seconds % 60);
    let mut text = String::from("P");
    if days > 0 {
        text.push_str(&format!("{days}D"));
    }
    if hours + minutes + seconds > 0 || days == 0 {
        text.push('T');
        for (value, unit) in [(hours, 'H'), (minutes, 'M'), (seconds, 'S')] {
            if value > 0 {
                text.push_str(&format!("{value}{unit}"));
            }
        }
        if hours + minutes + seconds == 0 {
            text.push_str("0S");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::iso_duration;

    #[test]
    fn durations_read_as_iso_8601() {
        assert_eq!(iso_duration(0), "PT0S");
        assert_eq!(iso_duration(999), "PT0S");
        assert_eq!(iso_duration(7 * 86_400_000 + 12), "P7D");
        assert_eq!(iso_duration(86_400_000 + 3_600_000 + 61_000), "P1DT1H1M1S");
        assert_eq!(iso_duration(5_400_000), "PT1H30M");
    }
}
