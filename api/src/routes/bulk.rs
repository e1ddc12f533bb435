//! Bulk operations: one action on every instance a search finds, dry run first, progress as it
//! goes.
//!
//! A job runs in the server that took it and is kept in its memory (the most recent
//! [`KEPT_JOBS`]); each instance's action is durable the moment it is taken, so a job a restart
//! interrupts is finished by running the same request again (instances already in the wanted
//! state count as failed with their reason, and change nothing).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use baton_engine::store::InstanceFilter;
use baton_engine::{Actor, InstanceId, InstanceStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Body, authorize};
use crate::app::{App, Auth};
use crate::auth::{Permission, Scope};
use crate::policy;
use crate::problem::{ApiResult, Problem};

/// Jobs a server remembers.
pub const KEPT_JOBS: usize = 100;
/// Instances one job acts on at most.
pub const MAX_INSTANCES: u32 = 10_000;
/// Failures a job reports in full (the rest are counted).
const REPORTED_FAILURES: usize = 20;

/// What to do to each instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    Suspend,
    Resume,
    Terminate,
    /// Retry the instance's open incidents.
    Retry,
}

/// Which instances: the filters of the instance search.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkFilter {
    pub definition: Option<String>,
    #[schema(value_type = Option<String>)]
    pub status: Option<InstanceStatus>,
    pub business_key: Option<String>,
    pub tag: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// A bulk request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRequest {
    pub action: BulkAction,
    #[serde(default)]
    pub filter: BulkFilter,
    /// Recorded in each instance's history.
    #[serde(default)]
    pub reason: String,
    /// Count and show what would be touched, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A job's progress.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkJob {
    pub id: String,
    pub action: BulkAction,
    pub by: String,
    pub matched: usize,
    pub done: usize,
    pub failed: usize,
    /// The first failures, with their reasons.
    #[schema(value_type = Vec<Object>)]
    pub failures: Vec<Value>,
    pub finished: bool,
    pub started_at: DateTime<Utc>,
}

/// What a dry run found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    pub action: BulkAction,
    pub matched: usize,
    /// The first instances it would act on.
    pub sample: Vec<String>,
}

/// The jobs of one server.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<BulkJob>>,
}

impl Jobs {
    fn update(&self, id: &str, change: impl FnOnce(&mut BulkJob)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.iter_mut().find(|j| j.id == id) {
            change(job);
        }
    }

    fn add(&self, job: BulkJob) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.len() >= KEPT_JOBS {
            jobs.pop_front();
        }
        jobs.push_back(job);
    }

    fn get(&self, id: &str) -> Option<BulkJob> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|j| j.id == id).cloned()
    }
}

/// Every instance the filter finds in the caller's namespaces, up to [`MAX_INSTANCES`].
async fn matching(app: &App, filter: &BulkFilter, namespaces: Option<Vec<String>>) -> ApiResult<Vec<InstanceId>> {
    let mut ids = Vec::new();
    let mut query = InstanceFilter {
        status: filter.status,
        orchestration: filter.definition.clone(),
        business_key: filter.business_key.clone(),
        tag: filter.tag.clone(),
        created_after: filter.created_after,
        created_before: filter.created_before,
        namespaces,
        limit: InstanceFilter::MAX_LIMIT,
        ..InstanceFilter::default()
    };
    loop {
        let rows = app.engine.store().list_instances(&query).await?;
        let Some(last) = rows.last().map(|r| r.id.clone()) else { return Ok(ids) };
        ids.extend(rows.into_iter().map(|r| r.id));
        if ids.len() >= MAX_INSTANCES as usize {
            return Err(Problem::bad_request(format!(
                "the filter finds more than {MAX_INSTANCES} instances: narrow it (definition, status, tag, time range)"
            )));
        }
        query.after = Some(last);
    }
}

async fn act(app: &App, action: BulkAction, id: &InstanceId, reason: &str, actor: &Actor) -> Result<(), String> {
    let result = match action {
        BulkAction::Suspend => app.engine.suspend(id, reason, actor.clone()).await,
        BulkAction::Resume => app.engine.resume(id, reason, actor.clone()).await,
        BulkAction::Terminate => app.engine.terminate(id, reason, actor.clone()).await,
        BulkAction::Retry => {
            let open = app.engine.incidents(Some(id), true).await.map_err(|e| e.to_string())?;
            if open.is_empty() {
                return Err("no open incident".into());
            }
            let mut result = Ok(());
            for incident in open {
                result = result.and(app.engine.retry_incident_by(incident.id, reason, actor.clone()).await);
            }
            result
        }
    };
    result.map_err(|e| e.to_string())
}

/// Runs one action on every instance a search finds: `dryRun` first to see how many and
/// which; then the job runs in the background and `GET /api/v1/bulk/{job}` follows it.
#[utoipa::path(post, path = "/api/v1/bulk", operation_id = "startBulk", tag = "instances",
    request_body = BulkRequest,
    responses((status = 200, body = DryRun, description = "The dry run"), (status = 202, body = BulkJob, description = "The job started"),
        (status = 400, body = crate::problem::ProblemBody), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn start(State(app): State<Arc<App>>, auth: Auth, Body(request): Body<BulkRequest>) -> ApiResult<Response> {
    authorize(&app, &auth, "startBulk", request.filter.definition.as_deref().and_then(policy::namespace_of))?;
    let caller = auth.caller()?;
    let namespaces = match policy::scope("startBulk", caller) {
        Scope::All => None,
        Scope::Only(list) => Some(list),
        Scope::Nothing => return Err(Problem::forbidden("you operate no namespace")),
    };
    if request.reason.chars().count() > 2000 {
        return Err(Problem::bad_request("the reason is longer than 2000 characters"));
    }
    let ids = matching(&app, &request.filter, namespaces).await?;
    if request.dry_run {
        let sample = ids.iter().take(20).map(ToString::to_string).collect();
        return Ok(axum::Json(DryRun { action: request.action, matched: ids.len(), sample }).into_response());
    }
    let job = BulkJob {
        id: uuid::Uuid::now_v7().to_string(),
        action: request.action,
        by: caller.subject.clone(),
        matched: ids.len(),
        done: 0,
        failed: 0,
        failures: Vec::new(),
        finished: ids.is_empty(),
        started_at: app.engine.clock().now(),
    };
    app.jobs.add(job.clone());
    let actor = auth.actor();
    let runner = Arc::clone(&app);
    let (job_id, action, reason) = (job.id.clone(), request.action, request.reason);
    tokio::spawn(async move {
        for id in ids {
            if runner.shutdown.is_cancelled() {
                break;
            }
            let outcome = act(&runner, action, &id, &reason, &actor).await;
            runner.jobs.update(&job_id, |job| match outcome {
                Ok(()) => job.done += 1,
                Err(reason) => {
                    job.failed += 1;
                    if job.failures.len() < REPORTED_FAILURES {
                        job.failures.push(serde_json::json!({"instance": id, "reason": reason}));
                    }
                }
            });
        }
        runner.jobs.update(&job_id, |job| job.finished = true);
    });
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// A bulk job's progress: how many instances it matched, did, and failed (with the first
/// failures' reasons). Its author and administrators see it.
#[utoipa::path(get, path = "/api/v1/bulk/{job}", operation_id = "getBulk", tag = "instances",
    params(("job" = String, Path)),
    responses((status = 200, body = BulkJob), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn get(State(app): State<Arc<App>>, auth: Auth, Path(job): Path<String>) -> ApiResult<axum::Json<BulkJob>> {
    authorize(&app, &auth, "getBulk", None)?;
    let caller = auth.caller()?;
    let found =
        app.jobs.get(&job).filter(|j| j.by == caller.subject || caller.scope(&[Permission::Admin]) == Scope::All);
    found
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("no bulk job {job} (this server keeps its last {KEPT_JOBS})")))
}
