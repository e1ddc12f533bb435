//! The HTTP/JSON API: routes, the OpenAPI document that describes them, and what they share
//! (paging, JSON bodies that answer with problems).

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::app::{App, Auth};
use crate::policy;
use crate::problem::{ApiResult, Kind, Problem};

pub mod bulk;
pub(crate) mod definitions;
pub(crate) mod instances;
pub(crate) mod others;
pub mod read_models;
pub(crate) mod stream;
mod tasks;
pub mod workers;

/// The API under `/api/v1`, health and readiness, and the OpenAPI document.
pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/definitions", get(definitions::list).post(definitions::deploy))
        .route("/definitions/validate", post(definitions::validate))
        .route("/definitions/try", post(definitions::try_definition))
        .route("/definitions/{namespace}/{name}", get(definitions::get))
        .route("/definitions/{namespace}/{name}/diagram", get(definitions::diagram))
        .route("/instances", get(instances::list).post(instances::start))
        .route("/instances/{id}", get(instances::get))
        .route("/instances/{id}/history", get(instances::history))
        .route("/instances/{id}/events", post(instances::raise_event))
        .route("/events", post(instances::publish_events))
        .route("/instances/{id}/suspend", post(instances::suspend))
        .route("/instances/{id}/resume", post(instances::resume))
        .route("/instances/{id}/terminate", post(instances::terminate))
        .route("/bulk", post(bulk::start))
        .route("/bulk/{job}", get(bulk::get))
        .route("/incidents", get(instances::incidents))
        .route("/incidents/{incident}/retry", post(instances::retry_incident))
        .route("/incidents/{incident}/complete", post(instances::complete_incident))
        .route("/instances/{id}/migrate", post(instances::migrate))
        .route("/tasks", get(tasks::list))
        .route("/tasks/{instance}/{seq}", get(tasks::get))
        .route("/tasks/{instance}/{seq}/claim", post(tasks::claim))
        .route("/tasks/{instance}/{seq}/unclaim", post(tasks::unclaim))
        .route("/tasks/{instance}/{seq}/delegate", post(tasks::delegate))
        .route("/tasks/{instance}/{seq}/reassign", post(tasks::reassign))
        .route("/tasks/{instance}/{seq}/comment", post(tasks::comment))
        .route("/tasks/{instance}/{seq}/complete", post(tasks::complete))
        .route("/slas", get(others::slas))
        .route("/slas/compliance", get(read_models::compliance))
        .route("/documents", get(read_models::documents))
        .route("/training/progress", get(read_models::progress))
        .route("/training/certifications", get(read_models::certifications))
        .route("/people", get(others::people))
        .route("/people/{id}", get(others::person))
        .route("/people/{id}/erase", post(others::erase_person))
        .route("/people/{id}/preferences", put(others::set_preferences))
        .route("/notifications", get(others::notifications))
        .route("/notifications/read", post(others::mark_read))
        .route("/admin/clock/advance", post(others::advance_clock))
        .route("/admin/purge", post(others::purge))
        .route("/stream", get(stream::stream))
        .route("/workers/poll", post(workers::poll))
        .route("/workers/leases/{token}/heartbeat", post(workers::heartbeat))
        .route("/workers/leases/{token}/complete", post(workers::complete))
        .route("/workers/leases/{token}/fail", post(workers::fail))
        .route("/workers/queues", get(workers::queues))
        .route("/openapi.json", get(openapi));
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .nest("/api/v1", v1)
        .fallback(|| async { Problem::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), crate::metrics::track))
        .with_state(app)
}

/// The OpenAPI 3.1 document of the API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Baton API", description = "Definitions, instances, human tasks, SLAs and the directory of a Baton engine. Every error is an RFC 7807 problem (application/problem+json) with a stable `type`."),
    paths(
        health, ready, metrics, openapi,
        definitions::list, definitions::deploy, definitions::validate, definitions::try_definition, definitions::get,
        definitions::diagram,
        instances::start, instances::list, instances::get, instances::history, instances::raise_event, instances::publish_events,
        instances::suspend, instances::resume, instances::terminate, instances::incidents, instances::retry_incident, instances::complete_incident, instances::migrate,
        bulk::start, bulk::get,
        tasks::list, tasks::get, tasks::claim, tasks::unclaim, tasks::delegate, tasks::reassign, tasks::comment,
        tasks::complete,
        others::slas, read_models::compliance, read_models::documents, read_models::progress, read_models::certifications,
        others::people, others::person, others::notifications, others::mark_read, others::advance_clock, others::purge, others::erase_person, others::set_preferences,
        stream::stream,
        workers::poll, workers::heartbeat, workers::complete, workers::fail, workers::queues,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "meta", security(()),
    responses((status = 200, description = "The server is alive")))]
async fn health() -> &'static str {
    "ok"
}

/// Prometheus metrics: the engine's counters, its queues, and the API's requests.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = crate::metrics::render(&app).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", operation_id = "ready", tag = "meta", security(()),
    responses((status = 200, description = "The store answers"), (status = 503, body = crate::problem::ProblemBody)))]
async fn ready(State(app): State<Arc<App>>) -> ApiResult<&'static str> {
    app.engine
        .store()
        .setting("baton.ready-check")
        .await
        .map_err(|e| Problem::new(Kind::Unavailable, e.to_string()))?;
    Ok("ready")
}

/// One page of a list, and the cursor of the next one when there may be more.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T: utoipa::ToSchema> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page. Absent when this page is not full (so the last
    /// page may have one, leading to an empty page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T: utoipa::ToSchema> Page<T> {
    /// A page of `limit` rows at most: a full page gets the cursor of its last row.
    pub fn new(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let next =
            if items.len() >= limit as usize { items.last().map(|last| encode_cursor(&cursor(last))) } else { None };
        Self { items, next }
    }
}

/// Cursors are opaque to clients: the position, base64url-encoded.
pub fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_cursor(cursor: &str) -> ApiResult<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Problem::bad_request("`after` is not a cursor this API gave"))
}

/// A query parameter that names one value of an enum, as its JSON spelling (`status=waiting`).
pub fn parse_choice<T: DeserializeOwned>(value: Option<&str>, what: &str) -> ApiResult<Option<T>> {
    value
        .map(|text| {
            serde_json::from_value(serde_json::Value::String(text.to_owned()))
                .map_err(|_| Problem::bad_request(format!("unknown {what} {text:?}")))
        })
        .transpose()
}

/// A JSON body whose errors are problems (axum's own rejection is plain text).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
        }
    }
}

/// Checks the policy for `operation`, in `namespace` when the object has one.
pub fn authorize(app: &App, auth: &Auth, operation: &str, namespace: Option<&str>) -> ApiResult<policy::Access> {
    policy::authorize(operation, auth.0.as_ref(), namespace, app.options.manual_clock)
}

/// A `201 Created` or a `200 OK` with a JSON body.
pub fn created_or_ok<T: Serialize>(created: bool, body: T) -> Response {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, axum::Json(body)).into_response()
}
