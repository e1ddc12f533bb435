//! What every handler shares: the engine, the authenticator, the deployed definitions, and
//! the per-user rate limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use baton_engine::human::Principal;
use baton_engine::remote::RemoteQueue;
use baton_engine::store::{DefinitionQuery, DefinitionRow, NewDefinition};
use baton_engine::{Actor, Engine, Store};
use baton_workflows::diagnostic::Severity;
use baton_workflows::interp::Workflow;
use baton_workflows::model::{CompileOptions, Program};
use baton_workflows::run::content_hash;
use baton_workflows::validate::{ValidateOptions, check};

use crate::auth::{Authenticator, Caller, Permission};
use crate::problem::{ApiResult, FieldError, Kind, Problem};

/// How the API behaves, beyond authentication.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// The engine runs on the manual clock: the admin call that moves time is allowed.
    pub manual_clock: bool,
    /// Requests a user may make per second on average, and in a burst.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// Business calendars every definition may name.
    pub calendars: Arc<baton_sla::Calendars>,
    /// What deployed definitions may run (`run: shell` and `run: script`).
    pub compile: CompileOptions,
    /// The queue remote workers poll, when the engine hands them the activities it has no
    /// handler for ([`RemoteQueue::install`]).
    pub remote_workers: Option<Arc<RemoteQueue>>,
    /// The notification activity's settings, when the engine runs it: a deploy adds the
    /// definition's own templates (`use.templates`) to them.
    pub notify: Option<Arc<baton_activities::notify::NotifyConfig>>,
    /// Scheduled starts: a deploy that makes a version the latest of its definition takes its
    /// `schedule`.
    pub scheduler: Option<Arc<baton_workflows::schedule::Scheduler>>,
    /// The development identity's accounts (`baton dev` only): the UI's login page lets
    /// anyone be one of them, or anyone in the directory, without a password.
    pub dev_login: Option<Vec<(String, Vec<crate::auth::Grant>)>>,
    /// The OpenID provider people sign in to the web UI through, found at start.
    pub oidc: Option<Arc<crate::ui::Oidc>>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            manual_clock: false,
            rate_per_second: 50.0,
            rate_burst: 200.0,
            calendars: Arc::new(baton_sla::Calendars::default()),
            compile: CompileOptions::default(),
            remote_workers: None,
            notify: None,
            scheduler: None,
            dev_login: None,
            oidc: None,
        }
    }
}

/// The API's shared state.
pub struct App {
    pub engine: Arc<Engine>,
    pub auth: Authenticator,
    pub options: ApiOptions,
    limiter: RateLimiter,
    pub(crate) http_metrics: crate::metrics::HttpMetrics,
    /// Cancelled when the server stops: long-lived answers (live streams) end with it.
    pub shutdown: tokio_util::sync::CancellationToken,
    pub(crate) jobs: crate::routes::bulk::Jobs,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("engine", &self.engine).field("options", &self.options).finish_non_exhaustive()
    }
}

/// What a deploy did.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub row: DefinitionRow,
    /// False when this exact text was already deployed under this version.
    pub created: bool,
    /// Warnings of validation (errors refuse the deploy).
    pub warnings: Vec<FieldError>,
}

impl App {
    /// The API over `engine`. The definitions deployed before must already be registered with
    /// it: pass [`stored_definitions`] to the engine's builder, so that the instances it
    /// recovers find theirs (`baton server` does).
    pub async fn new(engine: Arc<Engine>, auth: Authenticator, options: ApiOptions) -> anyhow::Result<Arc<Self>> {
        let limiter = RateLimiter::new(options.rate_per_second, options.rate_burst);
        let app = Arc::new(Self {
            engine,
            auth,
            options,
            limiter,
            http_metrics: Default::default(),
            shutdown: Default::default(),
            jobs: Default::default(),
        });
        Ok(app)
    }

    /// Validates and compiles a definition's text, or the problem with every error at its
    /// position.
    pub fn compile(&self, source: &str, file: &str) -> ApiResult<(Workflow, Vec<FieldError>)> {
        compile(source, file, &self.options)
    }

    /// Deploys a definition: validated, stored (a version is immutable: the same text again is
    /// accepted, another text under a deployed version is a conflict), then registered.
    pub async fn deploy(&self, source: &str, file: &str, by: Actor) -> ApiResult<Deployed> {
        let (workflow, warnings) = self.compile(source, file)?;
        self.deploy_compiled(workflow, warnings, source, by).await
    }

    /// [`App::deploy`] of a definition already compiled from `source`.
    pub async fn deploy_compiled(
        &self,
        workflow: Workflow,
        warnings: Vec<FieldError>,
        source: &str,
        by: Actor,
    ) -> ApiResult<Deployed> {
        let info = baton_engine::Orchestration::definition(&workflow);
        let document = &workflow.program().document;
        let new = NewDefinition {
            name: info.name.clone(),
            version: info.version.clone(),
            namespace: Some(document.namespace.clone()),
            content_hash: info.content_hash.clone(),
            source: source.to_owned(),
            deployed_by: by,
            deployed_at: self.engine.clock().now(),
        };
        // The definition's templates first: a definition whose templates do not compile is
        // refused before anything is stored.
        if let Some(notify) = &self.options.notify {
            notify
                .add_definition_templates(&info.key(), &workflow.program().templates)
                .map_err(|error| Problem::new(Kind::InvalidDefinition, format!("use.templates: {error}")))?;
        }
        let (row, created) = self.engine.store().deploy_definition(&new).await?;
        let program = Arc::clone(workflow.program());
        self.engine.register(workflow)?;
        if let Some(scheduler) = &self.options.scheduler
            && self.engine.latest_key(&info.name) == Some(info.key())
        {
            scheduler.register(&program).await?;
        }
        Ok(Deployed { row, created, warnings })
    }

    /// The caller as a person of the directory: their roles, groups and departments, and
    /// whether they act as a platform administrator on an object of `namespace` (an `admin`
    /// grant there or everywhere; with no namespace, only an `admin` grant everywhere counts).
    /// Someone the directory does not know acts with their id alone (tasks assigned to them by
    /// id).
    /// Whether `subject` is within their rate (one request more).
    pub(crate) fn allow(&self, subject: &str) -> bool {
        self.limiter.allow(subject)
    }

    pub async fn principal(&self, caller: &Caller, namespace: Option<&str>) -> ApiResult<Principal> {
        let mut principal =
            self.engine.store().principal(&caller.subject).await?.unwrap_or_else(|| Principal::user(&caller.subject));
        match namespace {
            Some(namespace) => principal.admin = caller.has(Permission::Admin, Some(namespace)),
            None => match caller.scope(&[Permission::Admin]) {
                crate::auth::Scope::All => principal.admin = true,
                // Lists: the tasks of the namespaces they administer, beside their own.
                crate::auth::Scope::Only(namespaces) => principal.admin_namespaces = namespaces,
                crate::auth::Scope::Nothing => {}
            },
        }
        Ok(principal)
    }

    /// The directory roles a definition (`namespace/name`, optionally `@version`; the latest
    /// deployed version otherwise) lets start it: `document.metadata.baton.startableBy`. Empty
    /// when it names none, or is not deployed.
    pub async fn starters(&self, definition: &str) -> ApiResult<Vec<String>> {
        let (name, version) = match definition.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (definition, None),
        };
        let Some(row) = self.engine.store().definition(name, version).await? else { return Ok(Vec::new()) };
        let limits = baton_workflows::parse::ParseLimits::default();
        let Ok(parsed) = baton_workflows::parse::parse(&row.key(), row.source.as_bytes(), &limits) else {
            return Ok(Vec::new());
        };
        let roles = parsed.value.pointer("/document/metadata/baton/startableBy").and_then(|v| v.as_array());
        Ok(roles.into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned)).collect())
    }

    /// The namespace of an instance (None when it does not exist).
    pub async fn namespace_of(&self, id: &baton_engine::InstanceId) -> ApiResult<Option<String>> {
        let row = self.engine.store().instance(id).await?;
        Ok(row.and_then(|r| r.namespace.or_else(|| crate::policy::namespace_of(&r.orchestration).map(str::to_owned))))
    }
}

/// Every definition deployed in `store`, compiled. A server registers them with the engine
/// before it starts (`EngineBuilder::orchestration`), so that recovered instances find theirs.
pub async fn stored_definitions(store: &dyn Store, options: &ApiOptions) -> anyhow::Result<Vec<Workflow>> {
    let mut workflows = Vec::new();
    let mut query = DefinitionQuery { limit: DefinitionQuery::MAX_LIMIT, ..DefinitionQuery::default() };
    loop {
        let rows = store.definitions(&query).await?;
        let Some(last) = rows.last().map(|r| r.seq) else { return Ok(workflows) };
        for row in &rows {
            let file = format!("{}@{}", row.name, row.version);
            let (workflow, _) = compile(&row.source, &file, options)
                .map_err(|p| anyhow::anyhow!("the deployed definition {file} no longer compiles: {}", p.detail))?;
            workflows.push(workflow);
        }
        query.after = Some(last);
    }
}

/// Validates and compiles a definition's text with the API's options, or the problem with
/// every error at its position.
pub fn compile(source: &str, file: &str, api: &ApiOptions) -> ApiResult<(Workflow, Vec<FieldError>)> {
    let options = ValidateOptions {
        shared_calendars: api.calendars.names().map(str::to_owned).collect(),
        ..ValidateOptions::default()
    };
    let (parsed, diagnostics) = check(file, source.as_bytes(), &options);
    let (errors, warnings): (Vec<_>, Vec<_>) = diagnostics.iter().partition(|d| d.severity == Severity::Error);
    let warnings = warnings.into_iter().map(FieldError::from).collect();
    if !errors.is_empty() {
        let count = errors.len();
        return Err(Problem::new(
            Kind::InvalidDefinition,
            format!("{file}: {count} problem{} found", if count == 1 { "" } else { "s" }),
        )
        .with_errors(errors.into_iter().map(FieldError::from).collect()));
    }
    let parsed = parsed.ok_or_else(|| Problem::new(Kind::InvalidDefinition, format!("{file} could not be read")))?;
    let program = Program::compile_with(parsed.value, &api.compile)
        .map_err(|e| Problem::new(Kind::InvalidDefinition, format!("{file}: {e}")))?;
    let workflow = Workflow::new(Arc::new(program), content_hash(source)).with_calendars(api.calendars.clone());
    Ok((workflow, warnings))
}

/// The caller of a request: `None` without an `Authorization` header. A header that is there
/// but refused is a 401, never an anonymous call; a caller over their rate is a 429.
#[derive(Clone, Debug)]
pub struct Auth(pub Option<Caller>);

impl Auth {
    /// The caller, or 401.
    pub fn caller(&self) -> ApiResult<&Caller> {
        self.0.as_ref().ok_or_else(|| Problem::new(Kind::Unauthenticated, "this operation needs a bearer token"))
    }

    /// Who the history records for this caller.
    pub fn actor(&self) -> Actor {
        match &self.0 {
            Some(caller) if caller.has(Permission::Worker, None) && !caller.has(Permission::Admin, None) => {
                Actor::Worker { id: caller.subject.clone() }
            }
            Some(caller) => Actor::User { id: caller.subject.clone() },
            None => Actor::System,
        }
    }
}

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else { return Ok(Self(None)) };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| Problem::new(Kind::Unauthenticated, "the Authorization header must be `Bearer <token>`"))?;
        let caller = app.auth.authenticate(token.trim()).await?;
        if !app.allow(&caller.subject) {
            return Err(Problem::new(
                Kind::RateLimited,
                format!("{} sent too many requests; slow down", caller.subject),
            ));
        }
        Ok(Self(Some(caller)))
    }
}

/// A token bucket per user: `rate` tokens a second up to `burst`.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// The most users tracked at once; the idlest are forgotten beyond it.
    const MAX_USERS: usize = 100_000;

    fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    fn allow(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= Self::MAX_USERS && !buckets.contains_key(user) {
            let burst = self.burst;
            let rate = self.rate;
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(user.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(0.0, 3.0);
        assert!((0..3).all(|_| limiter.allow("ann")));
        assert!(!limiter.allow("ann"));
        assert!(limiter.allow("bob"), "each user has their own bucket");
    }
}
