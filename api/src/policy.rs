//! The one policy module: which caller may call which operation, on both transports.
//!
//! [`TABLE`] is docs/authorization.md in code: one row per operation of the API, named by its
//! OpenAPI `operationId` (the gRPC methods map onto the same ids). An operation without a row
//! is refused (deny by default), and the authorization tests fail when an operation of the
//! served OpenAPI document has none. The object-level decisions on human tasks are the
//! engine's ([`baton_engine::human::check_action`], [`baton_engine::human::may_see`]), taken in
//! the instance's step so that no change can come between the check and the action.

use crate::auth::{Caller, Permission, Scope};
use crate::problem::{Kind, Problem};

use Permission::{Admin, Designer, Ops, Worker};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without a token: health, readiness, the API document.
    Public,
    /// Any authenticated caller; what they see or change is decided on the object (a task's
    /// access keys, the person's own notifications).
    Person,
    /// A platform permission (admin always counts) in the object's namespace.
    Platform(&'static [Permission]),
    /// A platform permission in the object's namespace, or a person involved in the object:
    /// its initiator, or someone who may see one of its human tasks.
    PlatformOrInvolved(&'static [Permission]),
    /// A platform permission granted in every namespace (admin counts): the operation's
    /// objects span namespaces (remote workers' queues).
    Unscoped(&'static [Permission]),
    /// `admin`, and only while the engine runs on the manual clock.
    ManualClockAdmin,
    /// A platform permission in the object's namespace, or a person holding a directory role
    /// the definition lets start it (`document.metadata.baton.startableBy`).
    PlatformOrStarter(&'static [Permission]),
    /// A platform permission in the object's namespace, or a `worker` there whose token lists
    /// the event's type (`baton_event_types`).
    PlatformOrTypedWorker(&'static [Permission]),
    /// A platform permission granted in every namespace (admin counts), or a `worker` granted
    /// in every namespace for the event types its token lists.
    UnscopedOrTypedWorker(&'static [Permission]),
    /// A platform permission granted in every namespace (admin counts): every row of a read
    /// model; any other person: the rows of the departments they manage, or their own rows of
    /// a read model about people (training progress, certifications), else 403.
    UnscopedOrPerson(&'static [Permission]),
}

/// One row of the policy table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub operation: &'static str,
    pub rule: Rule,
}

const fn row(operation: &'static str, rule: Rule) -> Row {
    Row { operation, rule }
}

const READ_DEFINITIONS: &[Permission] = &[Designer, Ops];
const OPERATE: &[Permission] = &[Ops];

/// The policy table. Keep it in the order of docs/authorization.md.
pub const TABLE: &[Row] = &[
    row("health", Rule::Public),
    row("ready", Rule::Public),
    row("openapi", Rule::Public),
    row("metrics", Rule::Public),
    // Definitions
    row("listDefinitions", Rule::Platform(READ_DEFINITIONS)),
    row("getDefinition", Rule::Platform(READ_DEFINITIONS)),
    row("getDefinitionDiagram", Rule::Platform(READ_DEFINITIONS)),
    row("deployDefinition", Rule::Platform(&[Designer])),
    row("validateDefinition", Rule::Platform(&[Designer])),
    row("tryDefinition", Rule::Platform(&[Designer])),
    // Instances
    row("startInstance", Rule::PlatformOrStarter(&[Designer, Ops])),
    // A person without a platform permission lists the instances they started.
    row("listInstances", Rule::PlatformOrInvolved(OPERATE)),
    row("getInstance", Rule::PlatformOrInvolved(OPERATE)),
    row("getInstanceHistory", Rule::PlatformOrInvolved(OPERATE)),
    row("raiseEvent", Rule::PlatformOrTypedWorker(&[Ops])),
    // Events that start instances (`schedule.on`) may start them in any namespace; a worker
    // account publishes the event types its token lists.
    row("publishEvents", Rule::UnscopedOrTypedWorker(&[Ops])),
    row("suspendInstance", Rule::Platform(OPERATE)),
    row("resumeInstance", Rule::Platform(OPERATE)),
    row("terminateInstance", Rule::Platform(OPERATE)),
    row("listIncidents", Rule::Platform(OPERATE)),
    row("retryIncident", Rule::Platform(OPERATE)),
    row("completeIncident", Rule::Platform(OPERATE)),
    row("migrateInstance", Rule::Platform(OPERATE)),
    // Bulk operations act on the instances of the caller's namespaces only.
    row("startBulk", Rule::Platform(OPERATE)),
    row("getBulk", Rule::Platform(OPERATE)),
    // Human tasks: the engine decides on the task.
    row("listTasks", Rule::Person),
    row("getTask", Rule::Person),
    row("claimTask", Rule::Person),
    row("unclaimTask", Rule::Person),
    row("delegateTask", Rule::Person),
    row("reassignTask", Rule::Person),
    row("commentTask", Rule::Person),
    row("completeTask", Rule::Person),
    // Other resources
    row("listSlas", Rule::PlatformOrInvolved(OPERATE)),
    // Read models (docs/architecture.md, "Read models from domain events")
    row("getSlaCompliance", Rule::UnscopedOrPerson(OPERATE)),
    row("listDocuments", Rule::UnscopedOrPerson(OPERATE)),
    row("listTrainingProgress", Rule::UnscopedOrPerson(OPERATE)),
    row("listCertifications", Rule::UnscopedOrPerson(OPERATE)),
    row("listPeople", Rule::Person),
    row("getPerson", Rule::Person),
    // One's own preferences; an administrator's for anyone (the handler checks which).
    row("setPreferences", Rule::Person),
    row("listNotifications", Rule::Person),
    row("markNotificationsRead", Rule::Person),
    row("advanceClock", Rule::ManualClockAdmin),
    // Deleting histories for good: administrators of the definition's namespace only.
    row("purgeInstances", Rule::Platform(&[])),
    row("erasePerson", Rule::Unscoped(&[])),
    // Live updates: each change is filtered by what the caller may see.
    row("streamChanges", Rule::Person),
    // Remote workers: a lease belongs to the worker that polled it.
    row("pollActivityTask", Rule::Unscoped(&[Worker])),
    row("heartbeatActivityTask", Rule::Unscoped(&[Worker])),
    row("completeActivityTask", Rule::Unscoped(&[Worker])),
    row("failActivityTask", Rule::Unscoped(&[Worker])),
    row("listActivityQueues", Rule::Unscoped(&[Ops, Worker])),
];

/// The row of `operation`, if the table has one.
pub fn rule(operation: &str) -> Option<Rule> {
    TABLE.iter().find(|r| r.operation == operation).map(|r| r.rule)
}

/// What the policy granted before the object is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The operation may go ahead on any object of the namespace.
    Granted,
    /// The caller holds no platform permission for it: the handler must check that they are
    /// involved in the object (and answers "not found" when they are not).
    IfInvolved,
}

/// Decides `operation` for `caller` in `namespace` (None when the operation spans namespaces;
/// lists then filter by [`scope`]).
pub fn authorize(
    operation: &str,
    caller: Option<&Caller>,
    namespace: Option<&str>,
    manual_clock: bool,
) -> Result<Access, Problem> {
    let Some(rule) = rule(operation) else {
        return Err(Problem::forbidden(format!("{operation} has no row in the policy table; it is refused")));
    };
    if rule == Rule::Public {
        return Ok(Access::Granted);
    }
    let Some(caller) = caller else {
        return Err(Problem::new(Kind::Unauthenticated, "this operation needs a bearer token"));
    };
    let allowed = |permissions: &[Permission]| {
        caller.has(Admin, namespace) || permissions.iter().any(|p| caller.has(*p, namespace))
    };
    match rule {
        Rule::Public | Rule::Person => Ok(Access::Granted),
        Rule::Platform(permissions) if allowed(permissions) => Ok(Access::Granted),
        Rule::Platform(permissions) => Err(Problem::forbidden(format!(
            "{operation} needs one of the platform permissions {}{}",
            names(permissions),
            namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default()
        ))),
        Rule::PlatformOrInvolved(permissions) if allowed(permissions) => Ok(Access::Granted),
        Rule::PlatformOrInvolved(_) => Ok(Access::IfInvolved),
        Rule::PlatformOrStarter(permissions) if allowed(permissions) => Ok(Access::Granted),
        Rule::PlatformOrStarter(_) => Ok(Access::IfInvolved),
        Rule::PlatformOrTypedWorker(permissions) if allowed(permissions) => Ok(Access::Granted),
        Rule::PlatformOrTypedWorker(_) if caller.has(Worker, namespace) => Ok(Access::IfInvolved),
        Rule::PlatformOrTypedWorker(permissions) => Err(Problem::forbidden(format!(
            "{operation} needs one of the platform permissions {}, or worker, {}",
            names(permissions),
            namespace.map(|n| format!("in namespace {n}")).unwrap_or_else(|| "in the namespace".to_owned())
        ))),
        Rule::UnscopedOrTypedWorker(permissions) if caller.scope(permissions) == Scope::All => Ok(Access::Granted),
        Rule::UnscopedOrTypedWorker(_) if caller.scope(&[Worker]) == Scope::All => Ok(Access::IfInvolved),
        Rule::UnscopedOrTypedWorker(permissions) => Err(Problem::forbidden(format!(
            "{operation} needs one of the platform permissions {}, or worker, in every namespace",
            names(permissions)
        ))),
        Rule::UnscopedOrPerson(permissions) if caller.scope(permissions) == Scope::All => Ok(Access::Granted),
        Rule::UnscopedOrPerson(_) => Ok(Access::IfInvolved),
        Rule::Unscoped(permissions) if caller.scope(permissions) == Scope::All => Ok(Access::Granted),
        Rule::Unscoped(permissions) => Err(Problem::forbidden(format!(
            "{operation} needs one of the platform permissions {} in every namespace",
            names(permissions)
        ))),
        Rule::ManualClockAdmin if caller.scope(&[Admin]) != Scope::All => {
            Err(Problem::forbidden(format!("{operation} needs the admin permission in every namespace")))
        }
        Rule::ManualClockAdmin if !manual_clock => Err(Problem::new(
            Kind::Conflict,
            "the clock is not manual: start the server with --clock manual to move time",
        )
        .with_code("BATON-E008")),
        Rule::ManualClockAdmin => Ok(Access::Granted),
    }
}

/// The namespaces a caller may list for `operation`: lists filter by it in the store's query.
pub fn scope(operation: &str, caller: &Caller) -> Scope {
    match rule(operation) {
        Some(
            Rule::Platform(permissions)
            | Rule::PlatformOrInvolved(permissions)
            | Rule::Unscoped(permissions)
            | Rule::UnscopedOrTypedWorker(permissions)
            | Rule::UnscopedOrPerson(permissions)
            | Rule::PlatformOrStarter(permissions)
            | Rule::PlatformOrTypedWorker(permissions),
        ) => {
            let mut with_admin = permissions.to_vec();
            with_admin.push(Admin);
            caller.scope(&with_admin)
        }
        Some(Rule::Public | Rule::Person) => Scope::All,
        Some(Rule::ManualClockAdmin) => caller.scope(&[Admin]),
        None => Scope::Nothing,
    }
}

fn names(permissions: &[Permission]) -> String {
    let mut names: Vec<_> = permissions.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
    names.push("admin".into());
    names.join(", ")
}

/// The namespace of a definition key or an instance's orchestration (`namespace/name@version`).
pub fn namespace_of(key: &str) -> Option<&str> {
    key.split_once('/').map(|(namespace, _)| namespace)
}
