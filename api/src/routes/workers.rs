//! Remote workers: activity tasks by name, long-polled, heartbeated and completed with the
//! lease token the poll gave. The protocol for workers in any language; the gRPC `Workers`
//! service is the same operations.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use baton_engine::activity::{ActivityError, Failure};
use baton_engine::remote::{LeaseError, QueueDepth, RemoteQueue};
use serde::Deserialize;
use serde_json::Value;

use super::{Body, authorize};
use crate::app::{App, Auth};
use crate::problem::{ApiResult, Kind, Problem};

/// The longest a poll waits for a task, under the server's request timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// What a worker can run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PollRequest {
    /// The activity names this worker runs (at least one, at most 100).
    pub activities: Vec<String>,
    /// How long to wait for a task, in milliseconds (default 20000, at most 25000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A worker's outcome of a failed attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailRequest {
    pub message: String,
    /// Worth another attempt under the activity's retry policy (default true).
    #[serde(default = "yes")]
    pub retryable: bool,
    /// Not before this many milliseconds (a rate limit, say); implies retryable.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// A failure type for the workflow to catch (`errors.with.type`); the engine does not
    /// retry it, the workflow decides.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

fn yes() -> bool {
    true
}

/// A worker's result of an attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The activity's output, any JSON.
    #[schema(value_type = Object)]
    pub result: Value,
}

impl FailRequest {
    pub fn into_error(self) -> ActivityError {
        match (self.kind, self.retry_after_ms) {
            (Some(kind), _) => ActivityError::Failed(Failure { kind, message: self.message, details: self.details }),
            (None, Some(ms)) => ActivityError::RetryAfter { message: self.message, after: Duration::from_millis(ms) },
            (None, None) if self.retryable => ActivityError::Retryable(self.message),
            (None, None) => ActivityError::NonRetryable(self.message),
        }
    }
}

pub(crate) fn queue(app: &App) -> ApiResult<&Arc<RemoteQueue>> {
    app.options.remote_workers.as_ref().ok_or_else(|| {
        Problem::new(Kind::Conflict, "this server takes no remote workers: every activity runs in its process")
    })
}

fn lease_problem(error: LeaseError) -> Problem {
    match error {
        LeaseError::Gone => Problem::new(Kind::LeaseGone, error.to_string()),
        LeaseError::NotYours => Problem::forbidden(error.to_string()),
    }
}

/// The wait a poll asked for, bounded.
pub(crate) fn poll_wait(wait_ms: Option<u64>) -> Duration {
    wait_ms.map_or(DEFAULT_WAIT, Duration::from_millis).min(MAX_WAIT)
}

pub(crate) fn check_names(activities: &[String]) -> ApiResult<()> {
    if activities.is_empty() || activities.len() > 100 || activities.iter().any(|a| a.is_empty() || a.len() > 200) {
        return Err(Problem::bad_request("`activities` names 1 to 100 activities, each 1 to 200 characters"));
    }
    Ok(())
}

/// Waits for an activity task of the named activities and leases it to the caller: 200 with the
/// lease, or 204 when none arrived in time (poll again).
#[utoipa::path(post, path = "/api/v1/workers/poll", operation_id = "pollActivityTask", tag = "workers",
    request_body = PollRequest,
    responses((status = 200, description = "A lease: token, activity, instance, seq, attempt, idempotencyKey, input, heartbeatTimeoutMs", body = Object),
        (status = 204, description = "No task arrived in time"),
        (status = 403, body = crate::problem::ProblemBody)))]
pub async fn poll(State(app): State<Arc<App>>, auth: Auth, Body(request): Body<PollRequest>) -> ApiResult<Response> {
    authorize(&app, &auth, "pollActivityTask", None)?;
    let worker = auth.caller()?.subject.clone();
    check_names(&request.activities)?;
    let queue = queue(&app)?;
    let wait = poll_wait(request.wait_ms);
    let lease = tokio::select! {
        lease = queue.poll(&request.activities, &worker, wait) => lease,
        () = app.shutdown.cancelled() => None,
    };
    Ok(match lease {
        Some(lease) => axum::Json(lease).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Tells the engine the attempt is alive. 410 when the lease is over: stop the work.
#[utoipa::path(post, path = "/api/v1/workers/leases/{token}/heartbeat", operation_id = "heartbeatActivityTask", tag = "workers",
    params(("token" = String, Path)),
    responses((status = 204, description = "The attempt goes on"), (status = 410, body = crate::problem::ProblemBody)))]
pub async fn heartbeat(State(app): State<Arc<App>>, auth: Auth, Path(token): Path<String>) -> ApiResult<StatusCode> {
    authorize(&app, &auth, "heartbeatActivityTask", None)?;
    let worker = &auth.caller()?.subject;
    queue(&app)?.heartbeat(&token, worker).map_err(lease_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the attempt with its result.
#[utoipa::path(post, path = "/api/v1/workers/leases/{token}/complete", operation_id = "completeActivityTask", tag = "workers",
    params(("token" = String, Path)), request_body = CompleteRequest,
    responses((status = 204, description = "Recorded"), (status = 410, body = crate::problem::ProblemBody)))]
pub async fn complete(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(token): Path<String>,
    Body(request): Body<CompleteRequest>,
) -> ApiResult<StatusCode> {
    authorize(&app, &auth, "completeActivityTask", None)?;
    let worker = &auth.caller()?.subject;
    queue(&app)?.complete(&token, worker, Ok(request.result)).map_err(lease_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the attempt as failed; the activity's retry policy decides what follows.
#[utoipa::path(post, path = "/api/v1/workers/leases/{token}/fail", operation_id = "failActivityTask", tag = "workers",
    params(("token" = String, Path)), request_body = FailRequest,
    responses((status = 204, description = "Recorded"), (status = 410, body = crate::problem::ProblemBody)))]
pub async fn fail(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(token): Path<String>,
    Body(request): Body<FailRequest>,
) -> ApiResult<StatusCode> {
    authorize(&app, &auth, "failActivityTask", None)?;
    let worker = &auth.caller()?.subject;
    queue(&app)?.complete(&token, worker, Err(request.into_error())).map_err(lease_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attempts waiting for a worker and held by one, by activity name.
#[utoipa::path(get, path = "/api/v1/workers/queues", operation_id = "listActivityQueues", tag = "workers",
    responses((status = 200, description = "activity, waiting, held, for each activity name", body = [Object])))]
pub async fn queues(State(app): State<Arc<App>>, auth: Auth) -> ApiResult<axum::Json<Vec<QueueDepth>>> {
    authorize(&app, &auth, "listActivityQueues", None)?;
    Ok(axum::Json(queue(&app)?.depth()))
}
