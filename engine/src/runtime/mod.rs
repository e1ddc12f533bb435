//! The runtime: the embedding API ([`Engine`], [`EngineBuilder`]) over the core loop.
//!
//! One core task owns the instance cache and turns inputs (starts, activity results, timer
//! fires, raised events) into steps. It takes every input waiting in its channel, runs them
//! against cached instances, and commits all their writes in one transaction (group commit);
//! only then does it dispatch the new activity tasks, arm timers and answer callers. So a
//! step's effects never run before the step is durable, and one instance's consecutive
//! activities never share a commit. See docs/architecture.md.

mod core;
mod dispatch;
mod timers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::activity::{ActivityContext, ActivityError, ActivityRegistry};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::erasure::{Erasure, ErasureReport};
use crate::error::EngineError;
use crate::history::{Actor, DefinitionInfo, InstanceId, Seq, StoredEvent};
use crate::human::{HumanTaskRow, InboxQuery, Principal, TaskAction};
use crate::orchestration::{DynOrchestration, Orchestration, TaskMapping, into_dyn};
use crate::store::{Incident, InstanceRow, InstanceStatus, SlaQuery, SlaRow, Store, TaskRow, TimerRow};

pub(crate) use self::core::Input;

/// Settings key of the manual clock's persisted offset, in milliseconds.
pub const CLOCK_OFFSET_KEY: &str = "clock.offset_ms";
/// Settings key recording that the store is driven by a manual clock.
pub const CLOCK_MODE_KEY: &str = "clock.mode";

/// How the engine reads time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Wall time.
    #[default]
    System,
    /// Wall time plus an offset that `advance_clock` moves; the offset is kept in the store.
    /// For development and tests only.
    Manual,
}

/// Options of the runtime. Every field has a default that suits a single node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineOptions {
    /// Most inputs taken into one group commit.
    pub max_batch: usize,
    /// Instances kept in memory; others are reloaded (snapshot plus later history) on demand.
    pub cache_capacity: usize,
    /// A snapshot is written once this many events have been appended since the last one.
    pub snapshot_every: u64,
    /// Timers due within this window are held in memory; later ones stay only in the store.
    pub timer_window: Duration,
    /// Most timers loaded into memory at once.
    pub timer_window_limit: u32,
    /// How long shutdown waits for running activities before it leaves them to recovery.
    pub drain_timeout: Duration,
    pub clock: ClockMode,
    /// Identity recorded as the actor of worker completions.
    pub worker_id: String,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 2_000,
            cache_capacity: 10_000,
            snapshot_every: 500,
            timer_window: Duration::from_secs(60),
            timer_window_limit: 200_000,
            drain_timeout: Duration::from_secs(10),
            clock: ClockMode::System,
            worker_id: "in-process".into(),
        }
    }
}

/// Counters of the runtime, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub commits: AtomicU64,
    pub steps: AtomicU64,
    pub events: AtomicU64,
    pub activity_completions: AtomicU64,
    pub timers_fired: AtomicU64,
    pub stale_completions: AtomicU64,
    pub incidents: AtomicU64,
    pub replays: AtomicU64,
    /// SLA clocks that passed their target (each also emitted an `SLABreached` event).
    pub sla_breaches: AtomicU64,
    /// Actions people took on human tasks (claims, completions...).
    pub task_actions: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub commits: u64,
    pub steps: u64,
    pub events: u64,
    pub activity_completions: u64,
    pub timers_fired: u64,
    pub stale_completions: u64,
    pub incidents: u64,
    pub replays: u64,
    pub sla_breaches: u64,
    pub task_actions: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            commits: get(&self.commits),
            steps: get(&self.steps),
            events: get(&self.events),
            activity_completions: get(&self.activity_completions),
            timers_fired: get(&self.timers_fired),
            stale_completions: get(&self.stale_completions),
            incidents: get(&self.incidents),
            replays: get(&self.replays),
            sla_breaches: get(&self.sla_breaches),
            task_actions: get(&self.task_actions),
        }
    }
}

/// Changes kept for subscribers that fall behind.
const CHANGE_BUFFER: usize = 4096;

/// What one commit changed in one instance ([`Engine::subscribe`]).
#[derive(Clone, Debug)]
pub struct Change {
    /// The instance's row after the change.
    pub instance: InstanceRow,
    /// The history events written: sequence number and type name.
    pub events: Vec<(Seq, &'static str)>,
    /// Human tasks created or changed, as stored (with their access keys, so a subscriber can
    /// show each only to the people who may see it).
    pub human_tasks: Vec<HumanTaskRow>,
}

/// What [`Engine::migrate`] is asked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Migrate {
    /// The version to move to (of the instance's own definition).
    pub to: String,
    /// Old task -> new task, for running tasks whose counterpart the orchestration cannot find
    /// by itself (for the DSL: same reference, else same name).
    pub mapping: TaskMapping,
    pub reason: String,
    /// Only tell what the move would do.
    pub dry_run: bool,
}

/// What a migration did, or (a dry run) would do.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub instance: InstanceId,
    /// `name@version` before the move.
    pub from: String,
    /// `name@version` after it.
    pub to: String,
    /// Where each running task goes.
    pub moved: Vec<MovedTask>,
    /// False for a dry run.
    pub applied: bool,
}

/// A running task and its counterpart in the new version (references).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MovedTask {
    pub from: String,
    pub to: String,
}

/// How an incident is resolved ([`Engine::resolve_incident`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Try again: a failed activity runs afresh (with `input` instead of the input it was
    /// scheduled with, when given), or the input the instance could not take is delivered
    /// again.
    Retry { input: Option<Value> },
    /// The failed activity is done: `result` becomes its result, as if it had completed
    /// (`null` skips it).
    Complete { result: Value },
}

/// Options of one start.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The instance id; generated (UUIDv7) when absent.
    pub id: Option<InstanceId>,
    /// A second start with the same key returns the first instance instead of a new one.
    pub idempotency_key: Option<String>,
    /// Who starts it; a person here is the request's initiator (four-eyes).
    pub actor: Option<Actor>,
    /// The business object the instance is about (an order number, a case id): recorded in
    /// `InstanceStarted`, kept on the instance's row, and filtered by in instance lists. Not
    /// unique (that is what `idempotency_key` is for).
    pub business_key: Option<String>,
    /// Labels to find the instance by; recorded sorted and without repeats, never changed.
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: InstanceId,
    /// False when the idempotency key matched an existing instance.
    pub created: bool,
}

/// How an instance ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: InstanceStatus,
    /// The output when completed; the failure (as JSON) otherwise.
    pub result: Option<Value>,
}

/// An event raised to an instance.
#[derive(Clone, Debug)]
pub struct RaiseEvent {
    pub name: String,
    pub payload: Value,
    /// Deduplication id: a second event with the same id is accepted and ignored.
    pub event_id: Option<String>,
    pub actor: Actor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raised {
    Accepted,
    Duplicate,
}

/// What `describe` tells about an instance.
#[derive(Clone, Debug)]
pub struct Description {
    pub row: InstanceRow,
    pub tasks: Vec<TaskRow>,
    pub timers: Vec<TimerRow>,
    pub incidents: Vec<Incident>,
}

/// A registered orchestration and its definition (read once, when it is registered).
struct Registered {
    definition: DefinitionInfo,
    orchestration: Arc<dyn DynOrchestration>,
}

/// The orchestrations an engine runs, by key (`name@version`), and the latest version of each
/// definition name. It only grows: a registered version stays as it was registered.
#[derive(Default)]
pub(crate) struct Registry {
    by_key: HashMap<String, Registered>,
    /// Per definition name: the latest version registered ([`version_newer`]) and its key.
    latest: HashMap<String, (String, String)>,
}

impl Registry {
    /// Adds an orchestration: `Ok(true)` when it is new, `Ok(false)` when the same content is
    /// registered under its key already, [`EngineError::DefinitionConflict`] when other content
    /// is.
    fn add(
        &mut self,
        definition: DefinitionInfo,
        orchestration: Arc<dyn DynOrchestration>,
    ) -> Result<bool, EngineError> {
        let key = definition.key();
        if let Some(existing) = self.by_key.get(&key) {
            let registered = &existing.definition.content_hash;
            if *registered == definition.content_hash {
                return Ok(false);
            }
            return Err(EngineError::DefinitionConflict(format!(
                "{key} is registered with content hash {registered}, not {}; register the changed definition \
                 under a new version",
                definition.content_hash
            )));
        }
        let newest =
            self.latest.get(&definition.name).is_none_or(|(version, _)| version_newer(&definition.version, version));
        if newest {
            self.latest.insert(definition.name.clone(), (definition.version.clone(), key.clone()));
        }
        self.by_key.insert(key, Registered { definition, orchestration });
        Ok(true)
    }

    /// The orchestration registered as exactly `key` (`name@version`).
    fn exact(&self, key: &str) -> Option<Arc<dyn DynOrchestration>> {
        self.by_key.get(key).map(|r| r.orchestration.clone())
    }

    /// The orchestration a start names: `name@version`, or `name` for its latest version.
    fn resolve(&self, key: &str) -> Option<Arc<dyn DynOrchestration>> {
        self.exact(key).or_else(|| self.latest.get(key).and_then(|(_, full)| self.exact(full)))
    }
}

pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Read on every start and cold load, written by [`Engine::register`]; a guard is never
    /// held across an await.
    pub registry: RwLock<Registry>,
    pub activities: ActivityRegistry,
    pub options: EngineOptions,
    pub stats: Stats,
    /// Where committed changes are published ([`Engine::subscribe`]).
    pub changes: tokio::sync::broadcast::Sender<Arc<Change>>,
}

impl Shared {
    /// The registry for reading. Every change to it is a single map insert made after its
    /// checks, so a panic elsewhere cannot have left it half-changed: a poisoned lock is still
    /// usable.
    fn registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registry for [`Engine::register_dyn`], the only writer.
    fn registry_mut(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The orchestration a start names: `name@version`, or `name` for its latest version.
    pub fn orchestration(&self, key: &str) -> Option<Arc<dyn DynOrchestration>> {
        self.registry().resolve(key)
    }

    /// The orchestration registered as exactly `key` (`name@version`), as instances record it.
    pub fn registered(&self, key: &str) -> Option<Arc<dyn DynOrchestration>> {
        self.registry().exact(key)
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Option<Arc<dyn Store>>,
    clock: Option<Arc<dyn Clock>>,
    orchestrations: HashMap<String, Arc<dyn DynOrchestration>>,
    activities: ActivityRegistry,
    options: EngineOptions,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("store", &self.store)
            .field("orchestrations", &self.orchestrations.keys().collect::<Vec<_>>())
            .field("activities", &self.activities)
            .field("options", &self.options)
            .finish()
    }
}

impl EngineBuilder {
    pub fn new() -> Self {
        Self {
            store: None,
            clock: None,
            orchestrations: HashMap::new(),
            activities: ActivityRegistry::new(),
            options: EngineOptions::default(),
        }
    }

    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Uses this clock instead of the one `options.clock` names (tests pass a frozen
    /// [`ManualClock`] here).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers an orchestration from the start (a second one under the same key replaces
    /// the first). [`Engine::register`] adds more while the engine runs.
    pub fn orchestration<O: Orchestration>(self, orchestration: O) -> Self {
        self.orchestration_dyn(into_dyn(orchestration))
    }

    /// [`EngineBuilder::orchestration`] for an orchestration behind its object-safe face.
    /// Orchestrations given here are known before recovery starts, so instances of theirs that
    /// recovery reloads never miss their definition.
    pub fn orchestration_dyn(mut self, orchestration: Arc<dyn DynOrchestration>) -> Self {
        self.orchestrations.insert(orchestration.definition().key(), orchestration);
        self
    }

    /// Registers an in-process activity handler.
    pub fn activity<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(ActivityContext, Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ActivityError>> + Send + 'static,
    {
        self.activities.register(name, handler);
        self
    }

    pub fn activities(mut self, registry: ActivityRegistry) -> Self {
        self.activities = registry;
        self
    }

    /// Starts the engine: recovers everything in flight, then runs until shut down.
    pub async fn build(self) -> Result<Engine, EngineError> {
        let store = self.store.ok_or_else(|| EngineError::InvalidArgument("no store given".into()))?;
        let clock: Arc<dyn Clock> = match (self.clock, self.options.clock) {
            (Some(clock), _) => clock,
            (None, ClockMode::System) => {
                if store.setting(CLOCK_MODE_KEY).await?.as_deref() == Some("manual") {
                    tracing::warn!("this store was last driven by a manual clock; running on the system clock now");
                }
                store.set_setting(CLOCK_MODE_KEY, "system").await?;
                Arc::new(SystemClock)
            }
            (None, ClockMode::Manual) => {
                let offset = store.setting(CLOCK_OFFSET_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
                store.set_setting(CLOCK_MODE_KEY, "manual").await?;
                Arc::new(ManualClock::offset(offset))
            }
        };
        let mut registry = Registry::default();
        for orchestration in self.orchestrations.into_values() {
            // Keys are unique here, so nothing conflicts.
            registry.add(orchestration.definition(), orchestration)?;
        }
        let shared = Arc::new(Shared {
            store,
            clock,
            registry: RwLock::new(registry),
            activities: self.activities,
            options: self.options,
            stats: Stats::default(),
            changes: tokio::sync::broadcast::channel(CHANGE_BUFFER).0,
        });
        let (tx, rx) = mpsc::channel(65_536);
        let cancel = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let core = core::Core::new(shared.clone(), tx.clone(), rx, cancel.clone(), tracker.clone()).await?;
        let handle = tokio::spawn(core.run());
        if shared.options.clock == ClockMode::Manual && shared.clock.as_manual().is_some() {
            tracker.spawn(follow_persisted_clock(shared.clone(), cancel.clone()));
        }
        Ok(Engine { shared, tx, cancel, tracker, core: tokio::sync::Mutex::new(Some(handle)) })
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Compares dotted versions numerically where they are numbers ("1.10.0" > "1.9.0").
fn version_newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().map_err(|_| p.to_owned())).collect::<Vec<_>>();
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let order = match (x, y) {
            (Ok(x), Ok(y)) => x.cmp(y),
            (Err(x), Err(y)) => x.cmp(y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        };
        if order != std::cmp::Ordering::Equal {
            return order == std::cmp::Ordering::Greater;
        }
    }
    pa.len() > pb.len()
}

/// Picks up clock advances made by another process (`baton admin clock advance`).
async fn follow_persisted_clock(shared: Arc<Shared>, cancel: CancellationToken) {
    let Some(manual) = shared.clock.as_manual() else { return };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Ok(Some(value)) = shared.store.setting(CLOCK_OFFSET_KEY).await
            && let Ok(offset) = value.parse::<i64>()
            && offset > manual.offset_ms()
        {
            manual.set_offset_ms(offset);
        }
    }
}

/// A running engine. Cheap to share behind an `Arc`.
pub struct Engine {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    core: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("store", &self.shared.store).finish_non_exhaustive()
    }
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Input,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| EngineError::ShuttingDown)?;
        answer.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Registers an orchestration while the engine runs: instances started afterwards can use
    /// it, and instances of its key load with it from then on (an instance that already failed
    /// to load for want of it has a `definition_missing` incident: retry that). Returns
    /// `Ok(true)` when it is new and `Ok(false)` when the same content (content hash) is
    /// registered under its key (`name@version`) already; other content under a registered key
    /// is an [`EngineError::DefinitionConflict`]. The latest version of a name (what a start
    /// by bare name runs) follows dotted-version order, not registration order.
    pub fn register<O: Orchestration>(&self, orchestration: O) -> Result<bool, EngineError> {
        self.register_dyn(into_dyn(orchestration))
    }

    /// [`Engine::register`] for an orchestration behind its object-safe face
    /// ([`crate::orchestration::into_dyn`]).
    pub fn register_dyn(&self, orchestration: Arc<dyn DynOrchestration>) -> Result<bool, EngineError> {
        // Read before taking the lock: no orchestration code runs under it.
        let definition = orchestration.definition();
        let key = definition.key();
        let added = self.shared.registry_mut().add(definition, orchestration)?;
        if added {
            tracing::info!(definition = %key, "definition registered");
        }
        Ok(added)
    }

    /// The keys (`name@version`) of every registered orchestration, sorted.
    pub fn definition_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.shared.registry().by_key.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The key (`name@version`) a start by bare `name` runs: its latest registered version.
    pub fn latest_key(&self, name: &str) -> Option<String> {
        self.shared.registry().latest.get(name).map(|(_, key)| key.clone())
    }

    /// Starts an instance of `definition` (`name@version`, or `name` for the latest version).
    /// Returns once the start is durable.
    pub async fn start(&self, definition: &str, input: Value, options: StartOptions) -> Result<Started, EngineError> {
        if self.shared.orchestration(definition).is_none() {
            return Err(EngineError::DefinitionNotFound(definition.to_owned()));
        }
        let id = options.id.unwrap_or_else(InstanceId::generate);
        let mut tags = options.tags;
        tags.sort();
        tags.dedup();
        self.ask(|reply| Input::Start {
            id,
            definition: definition.to_owned(),
            input,
            idempotency_key: options.idempotency_key,
            business_key: options.business_key,
            tags,
            actor: options.actor.unwrap_or(Actor::System),
            reply,
        })
        .await
    }

    /// A person acts on a human task: the check ([`crate::human::check_action`], the form,
    /// the instance's state) and the change happen in the instance's step, so nothing can come
    /// in between. Returns the task's row after the change, once it is durable.
    pub async fn act_on_task(
        &self,
        id: &InstanceId,
        task: Seq,
        principal: &Principal,
        action: TaskAction,
    ) -> Result<HumanTaskRow, EngineError> {
        self.ask(|reply| Input::TaskAction { id: id.clone(), task, principal: principal.clone(), action, reply }).await
    }

    /// One task as `principal` may see it; a task they may not see is reported as missing.
    pub async fn human_task(
        &self,
        id: &InstanceId,
        task: Seq,
        principal: &Principal,
    ) -> Result<HumanTaskRow, EngineError> {
        match self.shared.store.human_task(id, task).await? {
            Some(row) if crate::human::may_see(principal, &row.task) => Ok(row),
            _ => Err(EngineError::TaskNotFound { id: id.clone(), task }),
        }
    }

    /// The tasks `principal` may see that pass `query` (the access check is in the query).
    pub async fn inbox(&self, query: &InboxQuery, principal: &Principal) -> Result<Vec<HumanTaskRow>, EngineError> {
        Ok(self.shared.store.inbox(query, principal).await?)
    }

    /// SLA clocks for dashboards; `query.now` defaults to the engine clock.
    pub async fn slas(&self, query: &SlaQuery) -> Result<Vec<SlaRow>, EngineError> {
        let mut query = query.clone();
        query.now = Some(query.now.unwrap_or_else(|| self.shared.clock.now()));
        Ok(self.shared.store.slas(&query).await?)
    }

    /// Suspends an instance: it takes no triggers until resumed (what arrives meanwhile is
    /// recorded and delivered on resume), and SLA clocks that pause while suspended pause.
    pub async fn suspend(&self, id: &InstanceId, reason: &str, actor: Actor) -> Result<(), EngineError> {
        self.ask(|reply| Input::Suspend { id: id.clone(), reason: reason.to_owned(), actor, resume: false, reply })
            .await
    }

    pub async fn resume(&self, id: &InstanceId, reason: &str, actor: Actor) -> Result<(), EngineError> {
        self.ask(|reply| Input::Suspend { id: id.clone(), reason: reason.to_owned(), actor, resume: true, reply }).await
    }

    /// Delivers an event to an instance. Returns once it is durable.
    pub async fn raise_event(&self, id: &InstanceId, event: RaiseEvent) -> Result<Raised, EngineError> {
        self.ask(|reply| Input::Raise { id: id.clone(), event, reply }).await
    }

    /// Ends an instance now: running activities are abandoned, timers disarmed.
    pub async fn terminate(&self, id: &InstanceId, reason: &str, actor: Actor) -> Result<(), EngineError> {
        self.ask(|reply| Input::Terminate { id: id.clone(), reason: reason.to_owned(), actor, reply }).await
    }

    /// Retries an incident: re-dispatches the parked activity, or reloads the instance and
    /// delivers again the input it could not take.
    pub async fn retry_incident(&self, incident: i64) -> Result<(), EngineError> {
        self.retry_incident_by(incident, "", Actor::System).await
    }

    /// [`Engine::retry_incident`] on someone's behalf: when the incident is recorded in the
    /// instance's history, its resolution carries `actor` and `reason`.
    pub async fn retry_incident_by(&self, incident: i64, reason: &str, actor: Actor) -> Result<(), EngineError> {
        self.resolve_incident(incident, Resolution::Retry { input: None }, reason, actor).await
    }

    /// Resolves an incident as `resolution` says, on `actor`'s behalf, in the instance's step:
    /// a retry (of a failed activity, optionally with an edited input), or the failed activity
    /// completed by hand with a result. Both land in the instance's history with the actor and
    /// the reason (`IncidentResolved`, then the `ActivityCompleted` of a completion by hand).
    /// Editing or completing applies to failed activities only ([`EngineError::InvalidArgument`]).
    pub async fn resolve_incident(
        &self,
        incident: i64,
        resolution: Resolution,
        reason: &str,
        actor: Actor,
    ) -> Result<(), EngineError> {
        self.ask(|reply| Input::RetryIncident { incident, reason: reason.to_owned(), actor, resolution, reply }).await
    }

    /// Moves a running instance to another version of its definition, as
    /// [`Orchestration::migrate`](crate::Orchestration::migrate) translates its state, or tells
    /// why it cannot ([`EngineError::MigrationRefused`]). A dry run changes nothing. The move is
    /// an input like any other: it lands in history (`InstanceMigrated`, with the actor and the
    /// reason) in the instance's step, and replay changes version there. Activities, timers and
    /// human tasks in flight carry on; open human tasks keep the form they were created with.
    pub async fn migrate(&self, id: &InstanceId, request: Migrate, actor: Actor) -> Result<Migration, EngineError> {
        self.ask(|reply| Input::Migrate { id: id.clone(), request, actor, reply }).await
    }

    /// Erases a person's personal data ([`crate::erasure`]): in the histories of ended
    /// instances, the read models, their notifications and their directory entry, in one
    /// transaction recorded in the audit trail. Refused ([`EngineError::ErasureRefused`]) while
    /// instances not ended hold some of it; a dry run reports what would happen, refusal
    /// included, and changes nothing.
    pub async fn erase_person(&self, erasure: &Erasure) -> Result<ErasureReport, EngineError> {
        crate::erasure::erase(self.shared.store.as_ref(), erasure).await
    }

    /// Waits until the instance has ended, and tells how.
    pub async fn wait(&self, id: &InstanceId) -> Result<Outcome, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Input::Watch { id: id.clone(), reply }).await.map_err(|_| EngineError::ShuttingDown)?;
        answer.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// The instance with its open activity tasks, timers and incidents, as of one commit.
    ///
    /// Each is a read of its own, and a commit may land between two of them (an activity's
    /// completion both closes its task and starts the next timer). The instance's history
    /// position is read again after them: when a commit moved it, the view is read again, so
    /// that a completed activity is never shown beside the timer that followed it.
    pub async fn describe(&self, id: &InstanceId) -> Result<Description, EngineError> {
        const READS: usize = 5;
        let store = &self.shared.store;
        let read_row = || async { store.instance(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone())) };
        let mut row = read_row().await?;
        let mut reads = 1;
        loop {
            let tasks = store.tasks_of(id).await?;
            let timers = store.timers_of(id).await?;
            let incidents = store.incidents(Some(id), false).await?;
            let after = read_row().await?;
            if after.next_seq == row.next_seq || reads == READS {
                // A busy instance that moves on under every read is shown as the last read
                // found it, rather than not at all.
                return Ok(Description { row: after, tasks, timers, incidents });
            }
            row = after;
            reads += 1;
        }
    }

    pub async fn history(&self, id: &InstanceId, from: Seq, limit: u32) -> Result<Vec<StoredEvent>, EngineError> {
        Ok(self.shared.store.history(id, from, limit).await?)
    }

    pub async fn incidents(&self, id: Option<&InstanceId>, open_only: bool) -> Result<Vec<Incident>, EngineError> {
        Ok(self.shared.store.incidents(id, open_only).await?)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// What each commit changed, as it is committed: for live views (inboxes, dashboards). A
    /// subscriber that falls more than a few thousand changes behind is told it lagged
    /// (`RecvError::Lagged`) and should reload what it shows. Nothing is built while nobody
    /// subscribes.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        self.shared.changes.subscribe()
    }

    /// Moves the manual clock forward and persists the new offset. Refused on the system clock.
    pub async fn advance_clock(&self, by: Duration) -> Result<chrono::DateTime<chrono::Utc>, EngineError> {
        let manual = self.shared.clock.as_manual().ok_or(EngineError::ClockNotManual)?;
        let offset = manual.advance(by);
        if self.shared.options.clock == ClockMode::Manual {
            self.shared.store.set_setting(CLOCK_OFFSET_KEY, &offset.to_string()).await?;
        }
        Ok(self.shared.clock.now())
    }

    /// Stops taking work, lets running activities finish within the drain timeout and commits
    /// their results, then stops. Whatever is left is recovered on the next start.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(handle) = self.core.lock().await.take() {
            let _ = handle.await;
        }
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
    }
}

/// Advances the persisted manual clock of a store that no engine in this process drives
/// (`baton admin clock advance`). Refused unless the store was last run with the manual clock.
pub async fn advance_persisted_clock(store: &dyn Store, by: Duration) -> Result<i64, EngineError> {
    if store.setting(CLOCK_MODE_KEY).await?.as_deref() != Some("manual") {
        return Err(EngineError::ClockNotManual);
    }
    let offset: i64 = store.setting(CLOCK_OFFSET_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
    let offset =
        offset + i64::try_from(by.as_millis()).map_err(|_| EngineError::InvalidArgument("duration too long".into()))?;
    store.set_setting(CLOCK_OFFSET_KEY, &offset.to_string()).await?;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::version_newer;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_newer("1.10.0", "1.9.0"));
        assert!(!version_newer("1.2.0", "1.2.0"));
        assert!(version_newer("2", "1.9"));
        assert!(version_newer("1.0.1", "1.0"));
    }
}
