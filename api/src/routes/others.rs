//! The SLA dashboard, the directory, in-app notifications and the manual clock.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use baton_engine::InstanceId;
use baton_engine::directory::{PeopleQuery, Person, Preferences};
use baton_engine::erasure::Erasure;
use baton_engine::history::Seq;
use baton_engine::store::{PurgeQuery, SlaQuery, SlaStateName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Body, Page, authorize, decode_cursor, parse_choice};
use crate::app::{App, Auth};
use crate::auth::{Permission, Scope};
use crate::policy::{self, Access};
use crate::problem::{ApiResult, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SlaParams {
    definition: Option<String>,
    department: Option<String>,
    /// on_track, at_risk, breached, met.
    state: Option<String>,
    /// Only clocks still running or paused (default true).
    open: Option<bool>,
    after: Option<String>,
    limit: Option<u32>,
}

/// Which SLA clocks a caller the policy let through sees: `ops` and `admin` every row of their
/// namespaces, a manager the rows of the department they manage (`department`, needed when
/// they manage several). Answers the department and the namespaces to query.
pub(crate) async fn sla_scope(
    app: &App,
    access: Access,
    caller: &crate::auth::Caller,
    department: Option<String>,
) -> ApiResult<(Option<String>, Option<Vec<String>>)> {
    if access == Access::Granted {
        let namespaces = match crate::policy::scope("listSlas", caller) {
            Scope::All => None,
            Scope::Only(list) => Some(list),
            Scope::Nothing => Some(Vec::new()),
        };
        return Ok((department, namespaces));
    }
    let principal = app.principal(caller, None).await?;
    match super::read_models::managed_department(&principal, department)? {
        Some(department) => Ok((Some(department), None)),
        None => Err(Problem::forbidden("the SLA dashboard needs ops, admin, or a manager role in a department")),
    }
}

/// SLA clocks for the dashboard: `ops` and `admin` see every row; a manager sees the rows of
/// the departments they manage.
#[utoipa::path(get, path = "/api/v1/slas", operation_id = "listSlas", tag = "slas",
    params(SlaParams), responses((status = 200, body = Page<Object>), (status = 403, body = crate::problem::ProblemBody)))]
pub async fn slas(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<SlaParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let access = authorize(&app, &auth, "listSlas", None)?;
    let (department, namespaces) = sla_scope(&app, access, auth.caller()?, params.department).await?;
    let state: Option<SlaStateName> = parse_choice(params.state.as_deref(), "SLA state")?;
    let after = match params.after {
        None => None,
        Some(cursor) => {
            let position = decode_cursor(&cursor)?;
            let parsed = position
                .rsplit_once(':')
                .and_then(|(instance, seq)| Some((InstanceId::new(instance), seq.parse::<Seq>().ok()?)));
            Some(parsed.ok_or_else(|| Problem::bad_request("bad cursor"))?)
        }
    };
    let query = SlaQuery {
        instance: None,
        definition: params.definition,
        department,
        state,
        open_only: params.open.unwrap_or(true),
        now: None,
        after,
        limit: params.limit.unwrap_or(0),
        namespaces,
    };
    let limit = query.effective_limit();
    let rows = app.engine.slas(&query).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut value = serde_json::to_value(row).unwrap_or_default();
            if let Value::Object(map) = &mut value {
                map.insert("cursor".into(), Value::String(format!("{}:{}", row.instance, row.seq)));
            }
            value
        })
        .collect();
    Ok(axum::Json(Page::new(items, limit, |last| {
        last.get("cursor").and_then(Value::as_str).unwrap_or_default().to_owned()
    })))
}

/// A person as the directory shows them. Contact details and preferences only to the person
/// themselves, `ops` and `admin`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub person: Value,
}

fn person_view(person: &Person, caller_sees_contacts: bool) -> PersonView {
    let mut value = serde_json::to_value(person).unwrap_or_default();
    if !caller_sees_contacts && let Value::Object(map) = &mut value {
        for private in ["email", "phone", "preferences", "locale"] {
            map.remove(private);
        }
    }
    PersonView { person: value }
}

fn sees_contacts(auth: &Auth, person: &str) -> bool {
    auth.0
        .as_ref()
        .is_some_and(|c| c.subject == person || c.has(Permission::Ops, None) || c.has(Permission::Admin, None))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeopleParams {
    role: Option<String>,
    department: Option<String>,
    group: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// People of the directory, by id.
#[utoipa::path(get, path = "/api/v1/people", operation_id = "listPeople", tag = "directory",
    params(PeopleParams), responses((status = 200, body = Page<PersonView>)))]
pub async fn people(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<PeopleParams>,
) -> ApiResult<axum::Json<Page<PersonView>>> {
    authorize(&app, &auth, "listPeople", None)?;
    let query = PeopleQuery {
        role: params.role,
        department: params.department,
        group: params.group,
        after: params.after.as_deref().map(decode_cursor).transpose()?,
        limit: params.limit.unwrap_or(0),
    };
    let limit = query.effective_limit();
    let people = app.engine.store().people(&query).await?;
    let ids: Vec<String> = people.iter().map(|p| p.id.clone()).collect();
    let items: Vec<PersonView> = people.iter().map(|p| person_view(p, sees_contacts(&auth, &p.id))).collect();
    let next = (ids.len() >= limit as usize).then(|| ids.last().map(|id| super::encode_cursor(id))).flatten();
    Ok(axum::Json(Page { items, next }))
}

/// One person of the directory.
#[utoipa::path(get, path = "/api/v1/people/{id}", operation_id = "getPerson", tag = "directory",
    params(("id" = String, Path)), responses((status = 200, body = PersonView), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn person(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<PersonView>> {
    authorize(&app, &auth, "getPerson", None)?;
    let person = app.engine.store().person(&id).await?.ok_or_else(|| Problem::not_found(format!("no person {id}")))?;
    Ok(axum::Json(person_view(&person, sees_contacts(&auth, &id))))
}

/// The notification preferences a person sets for themselves. They are kept apart from the
/// directory's entry (an import of the directory does not undo them) and replace the entry's
/// preferences as a whole.
#[derive(Debug, Default, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferencesBody {
    /// Channels turned on or off by name (`inApp`, `email`, `webhook`, `sms`); a channel not
    /// listed is on.
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, bool>,
    /// A business calendar of the server: outside its working time email and SMS wait.
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// One email digest a day at this time (`HH:MM`, in the quiet-hours calendar's zone).
    #[serde(default)]
    pub digest: Option<String>,
    /// Forget the preferences set here: the directory's apply again (the other fields must
    /// then be absent).
    #[serde(default)]
    pub reset: bool,
}

impl PreferencesBody {
    /// The preferences to keep, after checking each field; `None` for a reset.
    fn check(self, app: &App) -> ApiResult<Option<Preferences>> {
        if self.reset {
            if !self.channels.is_empty() || self.quiet_hours.is_some() || self.digest.is_some() {
                return Err(Problem::bad_request("`reset` goes alone: it drops every preference set here"));
            }
            return Ok(None);
        }
        if let Some(unknown) = self.channels.keys().find(|c| !baton_activities::notify::CHANNELS.contains(&c.as_str()))
        {
            let known = baton_activities::notify::CHANNELS.join(", ");
            return Err(Problem::bad_request(format!("`channels`: no channel {unknown:?} (the channels: {known})")));
        }
        let quiet_hours = self.quiet_hours.filter(|name| !name.is_empty());
        if let Some(name) = &quiet_hours
            && !app.options.calendars.contains(name)
        {
            let known: Vec<&str> = app.options.calendars.names().collect();
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(Problem::bad_request(format!(
                "`quietHours`: no business calendar {name:?} on this server (its calendars: {known})"
            )));
        }
        let digest = self.digest.filter(|time| !time.is_empty());
        if let Some(time) = &digest
            && (time.len() != 5 || chrono::NaiveTime::parse_from_str(time, "%H:%M").is_err())
        {
            return Err(Problem::bad_request(format!("`digest`: {time:?} is not a time of day as HH:MM")));
        }
        Ok(Some(Preferences { channels: self.channels, quiet_hours, digest }))
    }
}

/// Sets a person's notification preferences: their own, or anyone's for an administrator.
#[utoipa::path(put, path = "/api/v1/people/{id}/preferences", operation_id = "setPreferences", tag = "directory",
    params(("id" = String, Path)), request_body = PreferencesBody,
    responses((status = 200, body = PersonView), (status = 400, body = crate::problem::ProblemBody),
        (status = 403, body = crate::problem::ProblemBody), (status = 404, body = crate::problem::ProblemBody)))]
pub async fn set_preferences(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    Body(body): Body<PreferencesBody>,
) -> ApiResult<axum::Json<PersonView>> {
    authorize(&app, &auth, "setPreferences", None)?;
    let caller = auth.caller()?;
    if caller.subject != id && caller.scope(&[Permission::Admin]) != Scope::All {
        return Err(Problem::forbidden("a person sets their own preferences (administrators anyone's)"));
    }
    let preferences = body.check(&app)?;
    if !app.engine.store().set_preferences(&id, preferences.as_ref()).await? {
        return Err(Problem::not_found(format!("no person {id}")));
    }
    let person = app.engine.store().person(&id).await?.ok_or_else(|| Problem::not_found(format!("no person {id}")))?;
    tracing::info!(person = %id, by = %caller.subject, "notification preferences set");
    Ok(axum::Json(person_view(&person, true)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct NotificationParams {
    unread_only: Option<bool>,
    after: Option<String>,
    limit: Option<u32>,
}

/// An in-app notification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    pub id: i64,
    pub subject: String,
    pub body: String,
    pub link: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// The caller's in-app notifications, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", operation_id = "listNotifications", tag = "notifications",
    params(NotificationParams), responses((status = 200, body = Page<NotificationView>)))]
pub async fn notifications(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<NotificationParams>,
) -> ApiResult<axum::Json<Page<NotificationView>>> {
    authorize(&app, &auth, "listNotifications", None)?;
    let user = &auth.caller()?.subject;
    let before = match params.after {
        Some(cursor) => Some(decode_cursor(&cursor)?.parse().map_err(|_| Problem::bad_request("bad cursor"))?),
        None => None,
    };
    let limit = baton_engine::store::bounded(params.limit.unwrap_or(0), 50, 500);
    let rows = app.engine.store().in_app(user, params.unread_only.unwrap_or(false), before, limit).await?;
    let items = rows
        .into_iter()
        .map(|n| NotificationView {
            id: n.id,
            subject: n.subject,
            body: n.body,
            link: n.link,
            created_at: n.created_at,
            read_at: n.read_at,
        })
        .collect();
    Ok(axum::Json(Page::new(items, limit, |last| last.id.to_string())))
}

/// Notifications to mark read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkRead {
    pub ids: Vec<i64>,
}

/// How many changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Changed {
    pub changed: u64,
}

/// Marks the caller's notifications read (another person's ids change nothing).
#[utoipa::path(post, path = "/api/v1/notifications/read", operation_id = "markNotificationsRead", tag = "notifications",
    request_body = MarkRead, responses((status = 200, body = Changed)))]
pub async fn mark_read(
    State(app): State<Arc<App>>,
    auth: Auth,
    Body(request): Body<MarkRead>,
) -> ApiResult<axum::Json<Changed>> {
    authorize(&app, &auth, "markNotificationsRead", None)?;
    if request.ids.len() > 1000 {
        return Err(Problem::bad_request("at most 1000 ids at once"));
    }
    let user = &auth.caller()?.subject;
    let changed = app.engine.store().mark_read(user, &request.ids, app.engine.clock().now()).await?;
    Ok(axum::Json(Changed { changed }))
}

/// How far to move the manual clock.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Advance {
    /// An ISO 8601 duration (`PT1H`, `P2D`).
    pub by: String,
}

/// The clock after the move.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClockView {
    pub now: DateTime<Utc>,
}

/// Moves simulated time forward (only on an engine running with `--clock manual`): due timers
/// and SLA thresholds fire.
#[utoipa::path(post, path = "/api/v1/admin/clock/advance", operation_id = "advanceClock", tag = "admin",
    request_body = Advance, responses((status = 200, body = ClockView), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn advance_clock(
    State(app): State<Arc<App>>,
    auth: Auth,
    Body(request): Body<Advance>,
) -> ApiResult<axum::Json<ClockView>> {
    authorize(&app, &auth, "advanceClock", None)?;
    let by = baton_workflows::duration::parse_iso8601(&request.by).ok_or_else(|| {
        Problem::bad_request(format!("`by` is not an ISO 8601 duration (PT1H, P2D): {:?}", request.by))
    })?;
    let now = app.engine.advance_clock(by).await?;
    Ok(axum::Json(ClockView { now }))
}

/// Which ended instances to purge.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PurgeRequest {
    /// `namespace/name`: the instances of every version of this definition.
    pub definition: String,
    /// Only instances that ended longer ago than this ISO 8601 duration (`P180D`).
    pub older_than: String,
    /// At most this many, the oldest first (default 1000, at most 10000).
    #[serde(default)]
    pub limit: u32,
    /// Only name them; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The instances purged (or, on a dry run, those that would be).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeAnswer {
    pub instances: Vec<String>,
    pub dry_run: bool,
}

/// Deletes for good the completed and cancelled instances of a definition that ended longer
/// ago than `olderThan`, with their whole history and read models (the server's `[retention]`
/// policies do the same every hour). Faulted and running instances are never purged. Take a
/// backup first if the histories may be wanted later.
#[utoipa::path(post, path = "/api/v1/admin/purge", operation_id = "purgeInstances", tag = "admin",
    request_body = PurgeRequest, responses((status = 200, body = PurgeAnswer), (status = 400, body = crate::problem::ProblemBody)))]
pub async fn purge(
    State(app): State<Arc<App>>,
    auth: Auth,
    Body(request): Body<PurgeRequest>,
) -> ApiResult<axum::Json<PurgeAnswer>> {
    let namespace = policy::namespace_of(&request.definition).map(str::to_owned);
    authorize(&app, &auth, "purgeInstances", namespace.as_deref())?;
    if namespace.is_none() {
        return Err(Problem::bad_request(format!("`definition` is `namespace/name`, not {:?}", request.definition)));
    }
    let older_than = baton_workflows::duration::parse_iso8601(&request.older_than)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .ok_or_else(|| {
            Problem::bad_request(format!("`olderThan` is not an ISO 8601 duration (P180D): {:?}", request.older_than))
        })?;
    let query = PurgeQuery {
        definition: Some(request.definition),
        ended_before: app.engine.clock().now() - older_than,
        limit: request.limit,
        dry_run: request.dry_run,
    };
    let purged = app.engine.store().purge(&query).await?;
    Ok(axum::Json(PurgeAnswer { instances: purged.iter().map(ToString::to_string).collect(), dry_run: query.dry_run }))
}

/// A request to erase a person's personal data.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseRequest {
    /// Why (the request's reference), kept in the audit trail.
    pub reason: String,
    /// Report what would be erased, and what blocks it; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What an erasure found and did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureAnswer {
    pub person: String,
    /// Instances not ended that hold the person's data (only on a dry run: otherwise they are
    /// an `erasure-refused` problem).
    pub blocking: Vec<String>,
    /// Ended instances whose histories held the person's data.
    pub instances: Vec<String>,
    /// History events whose payload was erased (the events stay, their chain verifies).
    pub events: u64,
    /// Events written before history schema 2, which cannot be erased.
    pub kept_events: u64,
    /// Human tasks whose completion data or comments were scrubbed.
    pub tasks: u64,
    pub deliveries: u64,
    pub notifications: u64,
    /// Whether the person had a directory entry (now only their id and department, inactive).
    pub directory: bool,
    pub applied: bool,
}

/// Erases a person's personal data (GDPR): the form data of the tasks they completed or that
/// were completed on their behalf and their comments, in ended instances' histories (the events
/// stay, with a salted commitment in place of the payload, so `baton admin verify` still
/// passes) and in the task read model; their notifications; their directory entry but for the
/// id. Refused with `erasure-refused` while instances not ended hold some of it. Recorded in
/// the audit trail with the caller and the reason. For administrators of every namespace.
#[utoipa::path(post, path = "/api/v1/people/{id}/erase", operation_id = "erasePerson", tag = "directory",
    params(("id" = String, Path)), request_body = EraseRequest,
    responses((status = 200, body = ErasureAnswer), (status = 409, body = crate::problem::ProblemBody)))]
pub async fn erase_person(
    State(app): State<Arc<App>>,
    auth: Auth,
    Path(id): Path<String>,
    Body(request): Body<EraseRequest>,
) -> ApiResult<axum::Json<ErasureAnswer>> {
    authorize(&app, &auth, "erasePerson", None)?;
    if request.reason.trim().is_empty() || request.reason.chars().count() > 2000 {
        return Err(Problem::bad_request("`reason` names the request (1 to 2000 characters)"));
    }
    let erasure = Erasure {
        person: id,
        by: auth.actor(),
        reason: Some(request.reason),
        at: app.engine.clock().now(),
        dry_run: request.dry_run,
    };
    let report = app.engine.erase_person(&erasure).await?;
    let ids = |ids: Vec<InstanceId>| ids.iter().map(ToString::to_string).collect();
    Ok(axum::Json(ErasureAnswer {
        person: report.person,
        blocking: ids(report.blocking),
        instances: ids(report.instances),
        events: report.events,
        kept_events: report.kept_events,
        tasks: report.tasks,
        deliveries: report.deliveries,
        notifications: report.notifications,
        directory: report.directory,
        applied: report.applied,
    }))
}
