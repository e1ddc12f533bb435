//! The read models: SLA compliance (an aggregate of the SLA clocks), and the projections of the
//! domain events (documents in transit, training progress, certifications). Who sees what is
//! the policy's `UnscopedOrPerson` rule (docs/authorization.md).

use std::sync::Arc;

use axum::extract::{Query, State};
use baton_engine::human::Principal;
use baton_engine::store::{ProjectionQuery, SlaCompliance, SlaQuery};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, authorize, decode_cursor, encode_cursor};
use crate::app::{App, Auth};
use crate::policy::Access;
use crate::problem::{ApiResult, Problem};

/// The role whose holders see the rows of the departments they manage.
pub const MANAGER_ROLE: &str = "manager";

/// The department a manager's rows are filtered by: the one asked for when they manage it, the
/// only one they manage when none is asked for. `None` when they manage none.
pub fn managed_department(principal: &Principal, department: Option<String>) -> ApiResult<Option<String>> {
    let managed: Vec<String> =
        principal.roles.iter().filter(|g| g.role == MANAGER_ROLE).filter_map(|g| g.department.clone()).collect();
    match (department, managed.as_slice()) {
        (_, []) => Ok(None),
        (Some(d), _) if managed.contains(&d) => Ok(Some(d)),
        (Some(d), _) => Err(Problem::forbidden(format!("you do not manage department {d}"))),
        (None, [only]) => Ok(Some(only.clone())),
        (None, _) => Err(Problem::bad_request(format!(
            "you manage several departments ({}): name one with `department`",
            managed.join(", ")
        ))),
    }
}

/// What a caller sees of a read model: every row (platform permission everywhere), a
/// department's (a manager), or, for read models about people, their own.
struct Visible {
    department: Option<String>,
    person: Option<String>,
}

async fn visible(
    app: &App,
    auth: &Auth,
    operation: &str,
    department: Option<String>,
    about_people: bool,
) -> ApiResult<Visible> {
    if authorize(app, auth, operation, None)? == Access::Granted {
        return Ok(Visible { department, person: None });
    }
    let caller = auth.caller()?;
    let principal = app.principal(caller, None).await?;
    match managed_department(&principal, department.clone())? {
        Some(department) => Ok(Visible { department: Some(department), person: None }),
        None if about_people => Ok(Visible { department, person: Some(caller.subject.clone()) }),
        None => Err(Problem::forbidden(format!(
            "{operation} needs ops or admin in every namespace, or a manager role in a department"
        ))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ComplianceParams {
    /// `namespace/name` of a definition.
    definition: Option<String>,
    department: Option<String>,
}

/// One group of the SLA compliance report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceRow {
    pub definition: String,
    pub department: Option<String>,
    pub on_track: u64,
    pub at_risk: u64,
    pub breached: u64,
    pub met: u64,
    /// met / (met + breached); absent while no clock has been decided.
    pub compliance: Option<f64>,
}

impl From<SlaCompliance> for ComplianceRow {
    fn from(group: SlaCompliance) -> Self {
        let compliance = group.compliance();
        Self {
            definition: group.definition,
            department: group.department,
            on_track: group.on_track,
            at_risk: group.at_risk,
            breached: group.breached,
            met: group.met,
            compliance,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ComplianceReport {
    pub items: Vec<ComplianceRow>,
}

/// SLA compliance per definition and department: the SLA clocks counted by state (on track,
/// at risk, breached, met) and the share met among those decided.
#[utoipa::path(get, path = "/api/v1/slas/compliance", operation_id = "getSlaCompliance", tag = "read models",
    params(ComplianceParams), responses((status = 200, body = ComplianceReport), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn compliance(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<ComplianceParams>,
) -> ApiResult<axum::Json<ComplianceReport>> {
    let seen = visible(&app, &auth, "getSlaCompliance", params.department, false).await?;
    let query = SlaQuery {
        definition: params.definition,
        department: seen.department,
        now: Some(app.engine.clock().now()),
        ..SlaQuery::default()
    };
    let groups = app.engine.store().sla_compliance(&query).await?;
    Ok(axum::Json(ComplianceReport { items: groups.into_iter().map(ComplianceRow::from).collect() }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DocumentParams {
    /// One document by its tracking code.
    code: Option<String>,
    /// The leg it is at: issued, printed, sent, signed, refused, returned, scanned, archived, lost.
    state: Option<String>,
    department: Option<String>,
    /// The person the document is about.
    person: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Documents in transit: where each is now (`state`, `since`) and its custody trail.
#[utoipa::path(get, path = "/api/v1/documents", operation_id = "listDocuments", tag = "read models",
    params(DocumentParams), responses((status = 200, body = Page<Object>), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn documents(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<DocumentParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let seen = visible(&app, &auth, "listDocuments", params.department, false).await?;
    let filters = [
        ("trackingCode", params.code),
        ("state", params.state),
        ("department", seen.department),
        ("person", params.person),
    ];
    page(&app, "documents", &filters, params.after, params.limit).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ProgressParams {
    person: Option<String>,
    /// A training program's id.
    program: Option<String>,
    department: Option<String>,
    /// assigned, absent, attended, testing, failed, certified.
    status: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Training progress per person and program: the latest status and when each milestone was
/// reached. Filter by program, department or person for the per-program and per-department
/// views.
#[utoipa::path(get, path = "/api/v1/training/progress", operation_id = "listTrainingProgress", tag = "read models",
    params(ProgressParams), responses((status = 200, body = Page<Object>), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn progress(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<ProgressParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let seen = visible(&app, &auth, "listTrainingProgress", params.department, true).await?;
    let person = own(seen.person, params.person)?;
    let filters =
        [("person", person), ("program", params.program), ("department", seen.department), ("status", params.status)];
    page(&app, "training-progress", &filters, params.after, params.limit).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CertificationParams {
    operator: Option<String>,
    program: Option<String>,
    department: Option<String>,
    /// certified or failed.
    status: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// The versatility matrix: who is certified for which program, since when and until when
/// (`validUntil`), or failed their latest test.
#[utoipa::path(get, path = "/api/v1/training/certifications", operation_id = "listCertifications", tag = "read models",
    params(CertificationParams), responses((status = 200, body = Page<Object>), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn certifications(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<CertificationParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let seen = visible(&app, &auth, "listCertifications", params.department, true).await?;
    let operator = own(seen.person, params.operator)?;
    let filters = [
        ("operatorId", operator),
        ("programId", params.program),
        ("department", seen.department),
        ("status", params.status),
    ];
    page(&app, "certifications", &filters, params.after, params.limit).await
}

/// A person who sees only their own rows may name nobody else.
fn own(seen: Option<String>, asked: Option<String>) -> ApiResult<Option<String>> {
    match (seen, asked) {
        (Some(me), Some(other)) if other != me => {
            Err(Problem::forbidden(format!("you see your own rows only, not those of {other}")))
        }
        (Some(me), _) => Ok(Some(me)),
        (None, asked) => Ok(asked),
    }
}

async fn page(
    app: &App,
    projection: &str,
    filters: &[(&str, Option<String>)],
    after: Option<String>,
    limit: Option<u32>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let query = ProjectionQuery {
        projection: projection.to_owned(),
        filters: filters
            .iter()
            .filter_map(|(field, value)| value.clone().map(|value| ((*field).to_owned(), value)))
            .collect(),
        after: after.as_deref().map(decode_cursor).transpose()?,
        limit: limit.unwrap_or(0),
    };
    let rows = app.engine.store().list_projection(&query).await?;
    let full = rows.len() >= query.effective_limit() as usize;
    let next = if full { rows.last().map(|(key, _)| encode_cursor(key)) } else { None };
    Ok(axum::Json(Page { items: rows.into_iter().map(|(_, row)| row).collect(), next }))
}
