//! Definitions: deploy (immutable versions), validate, list, get.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use baton_engine::store::{DefinitionQuery, DefinitionRow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Page, authorize, created_or_ok, decode_cursor};
use crate::app::{App, Auth, Deployed};
use crate::auth::Scope;
use crate::policy;
use crate::problem::{ApiResult, FieldError, Problem};

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
