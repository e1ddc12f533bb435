//! Persistence: small traits named by what a caller touches, and the row types they move.
//!
//! A step of the runtime becomes one [`InstanceWrite`]; [`StepStore::commit`] writes many of
//! them (many instances' steps) in one transaction, which is the group commit. Everything a
//! step implies (its history events, new and finished activity tasks, timers, outbox rows,
//! snapshot, incident) is in that write, so it commits or fails as one.
//!
//! Fencing: history rows are keyed by `(instance_id, seq)`. A writer that lost ownership of an
//! instance and tries to append the same sequence number fails with [`StoreError::Conflict`];
//! it can never fork a history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::erasure::{Erasure, ErasureReport};
use crate::history::{Actor, InstanceId, Seq, StoredEvent};
use crate::human::{HumanTaskRow, InboxQuery, Principal};

pub mod memory;
pub mod sqlite;

#[cfg(any(test, feature = "testkit"))]
pub mod contract;

/// What can go wrong in a store, by kind, so callers never match on driver text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key was violated: another writer appended the same history sequence number,
    /// or an idempotency key is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store could not be reached or timed out; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A row could not be decoded; the store holds data this build does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Anything else the driver reported.
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The lifecycle phase of an instance, in the Serverless Workflow vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Running,
    Waiting,
    Suspended,
    Cancelled,
    Faulted,
    Completed,
}

impl InstanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Suspended => "suspended",
            Self::Cancelled => "cancelled",
            Self::Faulted => "faulted",
            Self::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "suspended" => Self::Suspended,
            "cancelled" => Self::Cancelled,
            "faulted" => Self::Faulted,
            "completed" => Self::Completed,
            _ => return None,
        })
    }

    /// No further step will ever run (a faulted instance can still be retried).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Cancelled | Self::Completed)
    }
}

/// The summary row of an instance: what lists and `describe` read without touching history.
///
/// A write replaces the row, except what the instance was created with: `created_at`,
/// `business_key`, `tags`, `namespace` and `initiator` stay as the write that created the row
/// had them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRow {
    pub id: InstanceId,
    pub orchestration: String,
    pub version: String,
    pub status: InstanceStatus,
    /// The sequence number the next history event will get.
    pub next_seq: Seq,
    /// Hash of the last history event (the chain head).
    pub last_hash: String,
    /// First sequence number of the current run (moves on continue-as-new).
    pub run_start: Seq,
    pub idempotency_key: Option<String>,
    pub parent: Option<ParentRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Final output or failure, once the instance has ended.
    pub result: Option<Value>,
    /// The business object the instance is about (an order number, a case id), given at the
    /// start; not unique.
    #[serde(default)]
    pub business_key: Option<String>,
    /// Labels given at the start; stores keep them sorted and without repeats.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The namespace of the instance's definition ([`crate::DefinitionInfo::namespace`]).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The person who started it (the user actor of its `InstanceStarted`).
    #[serde(default)]
    pub initiator: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub instance: InstanceId,
    /// The parent's `ChildStarted` sequence number.
    pub seq: Seq,
}

/// An activity task: one scheduled activity, alive until its completion or final failure is
/// committed. The idempotency key is `instance_id:seq`; the attempt counter is separate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRow {
    pub instance: InstanceId,
    pub seq: Seq,
    pub name: String,
    pub input: Value,
    /// The activity's options (retry policy, timeouts) as recorded when it was scheduled.
    pub options: Value,
    /// Attempts started so far (0 before the first dispatch).
    pub attempt: u32,
    /// Not to be dispatched before this time (retry backoff).
    pub visible_at: DateTime<Utc>,
    /// A parked task waits for an incident to be retried; it is not dispatched.
    pub parked: bool,
    pub last_error: Option<String>,
}

impl TaskRow {
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.instance, self.seq)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerRow {
    pub instance: InstanceId,
    pub seq: Seq,
    pub due_at: DateTime<Utc>,
}

/// A message leaving the engine, committed with the step that produced it and relayed later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub instance: InstanceId,
    pub seq: Seq,
    pub kind: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// Something an instance cannot get past by itself. Visible until resolved; retryable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub id: i64,
    pub instance: InstanceId,
    pub kind: IncidentKind,
    pub reason: String,
    /// The activity task the incident parked, if any.
    pub task_seq: Option<Seq>,
    /// The input the instance could not take, kept so a retry delivers it again.
    pub pending_input: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// An activity failed for good and the orchestration did not handle it.
    ActivityFailed,
    /// The orchestration returned an error for an input.
    OrchestrationFault,
    /// Replaying the history did not give the commands recorded in it.
    Nondeterminism,
    /// The history could not be read (unknown tag, undecodable payload, broken hash chain).
    CorruptHistory,
    /// No orchestration is registered for the instance's definition, or its hash changed.
    DefinitionMissing,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActivityFailed => "activity_failed",
            Self::OrchestrationFault => "orchestration_fault",
            Self::Nondeterminism => "nondeterminism",
            Self::CorruptHistory => "corrupt_history",
            Self::DefinitionMissing => "definition_missing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "activity_failed" => Self::ActivityFailed,
            "orchestration_fault" => Self::OrchestrationFault,
            "nondeterminism" => Self::Nondeterminism,
            "corrupt_history" => Self::CorruptHistory,
            "definition_missing" => Self::DefinitionMissing,
            _ => return None,
        })
    }
}

/// An incident about to be opened (the store assigns the id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewIncident {
    pub kind: IncidentKind,
    pub reason: String,
    pub task_seq: Option<Seq>,
    pub pending_input: Option<Value>,
    pub created_at: DateTime<Utc>,
}

/// A serialized instance state at a step boundary; reload replays only what follows `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub instance: InstanceId,
    /// The last sequence number the snapshot includes.
    pub seq: Seq,
    pub state: Value,
}

/// Everything one instance's step (or several steps of the same instance in one batch)
/// writes. Committed atomically with the other writes of the batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceWrite {
    /// The summary row after the step (inserted or replaced).
    pub instance: Option<InstanceRow>,
    pub events: Vec<StoredEvent>,
    pub tasks_added: Vec<TaskRow>,
    /// Sequence numbers of this instance's tasks that are finished.
    pub tasks_removed: Vec<Seq>,
    /// Tasks whose row changes (parked by an incident, unparked by a retry).
    pub tasks_updated: Vec<TaskRow>,
    pub timers_added: Vec<TimerRow>,
    pub timers_removed: Vec<Seq>,
    pub outbox: Vec<OutboxRow>,
    pub snapshot: Option<SnapshotRow>,
    pub incident: Option<NewIncident>,
    /// Incidents of this instance closed by this write.
    pub incidents_resolved: Vec<i64>,
    /// Ids of external events accepted by this write (for deduplication).
    pub received_event_ids: Vec<String>,
    /// Human tasks created or changed by this write (inserted or replaced, with their access
    /// keys).
    pub human_tasks: Vec<HumanTaskRow>,
    /// SLA clocks started or changed by this write (inserted or replaced).
    pub slas: Vec<SlaRow>,
}

impl InstanceWrite {
    pub fn instance_id(&self) -> Option<&InstanceId> {
        self.instance.as_ref().map(|row| &row.id)
    }
}

/// What a cold load needs: the summary row, the newest snapshot, and the history after it
/// (or after the start of the current run when there is no snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedInstance {
    pub row: InstanceRow,
    pub snapshot: Option<SnapshotRow>,
    pub events: Vec<StoredEvent>,
}

/// The rows a list returns at most: `default` when it asks for none (0), never more than `max`.
/// Every list query's `effective_limit` is this rule with its own two numbers.
pub fn bounded(limit: u32, default: u32, max: u32) -> u32 {
    if limit == 0 { default } else { limit.min(max) }
}

/// Filter for instance lists, in id order. Every filter set must pass; every list is bounded
/// by `limit`.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    pub status: Option<InstanceStatus>,
    /// Only instances of this definition name.
    pub orchestration: Option<String>,
    /// Cursor: only ids greater than this one.
    pub after: Option<InstanceId>,
    pub limit: u32,
    /// Only instances started with this business key.
    pub business_key: Option<String>,
    /// Only instances carrying this tag.
    pub tag: Option<String>,
    /// Only instances created at or after this time (compared in milliseconds, as stored).
    pub created_after: Option<DateTime<Utc>>,
    /// Only instances created before this time (compared in milliseconds, as stored).
    pub created_before: Option<DateTime<Utc>>,
    /// `None`: every namespace. `Some(list)`: only instances whose namespace is in the list (an
    /// empty list matches nothing, and an instance without a namespace matches no list).
    pub namespaces: Option<Vec<String>>,
    /// Only instances this person started.
    pub initiator: Option<String>,
}

impl InstanceFilter {
    /// Lists return this many rows when the filter asks for none.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// No list returns more rows than this.
    pub const MAX_LIMIT: u32 = 1000;

    /// The number of rows a list with this filter returns at most.
    pub fn effective_limit(&self) -> u32 {
        bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }

    /// Does `row` pass the filter (cursor included, limit aside)? Memory stores filter with it;
    /// SQL stores agree with it.
    pub fn matches(&self, row: &InstanceRow) -> bool {
        let created_ms = row.created_at.timestamp_millis();
        self.status.is_none_or(|status| row.status == status)
            && self.orchestration.as_ref().is_none_or(|name| &row.orchestration == name)
            && self.after.as_ref().is_none_or(|after| &row.id > after)
            && self.business_key.as_ref().is_none_or(|key| row.business_key.as_ref() == Some(key))
            && self.tag.as_ref().is_none_or(|tag| row.tags.contains(tag))
            && self.created_after.is_none_or(|t| created_ms >= t.timestamp_millis())
            && self.created_before.is_none_or(|t| created_ms < t.timestamp_millis())
            && in_namespaces(self.namespaces.as_deref(), row.namespace.as_deref())
            && self.initiator.as_ref().is_none_or(|person| row.initiator.as_ref() == Some(person))
    }
}

/// The namespace rule of list queries: `None` lets every row through; a list only the rows
/// whose namespace it names.
fn in_namespaces(namespaces: Option<&[String]>, namespace: Option<&str>) -> bool {
    match (namespaces, namespace) {
        (None, _) => true,
        (Some(list), Some(namespace)) => list.iter().any(|n| n == namespace),
        (Some(_), None) => false,
    }
}

/// A definition about to be deployed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewDefinition {
    pub name: String,
    pub version: String,
    pub namespace: Option<String>,
    /// Identifies `source`: the same version deployed again must have the same hash.
    pub content_hash: String,
    /// The definition's text (YAML or JSON), as deployed.
    pub source: String,
    pub deployed_by: Actor,
    pub deployed_at: DateTime<Utc>,
}

/// A deployed definition. A version is immutable once deployed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRow {
    /// Deploy order, assigned by the store (from 1): the cursor of [`DefinitionQuery`].
    pub seq: i64,
    pub name: String,
    pub version: String,
    pub namespace: Option<String>,
    pub content_hash: String,
    pub source: String,
    pub deployed_by: Actor,
    /// Kept in milliseconds.
    pub deployed_at: DateTime<Utc>,
}

impl DefinitionRow {
    /// The key the engine registers the definition under (`name@version`).
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Filter for definition lists, in deploy order (`seq`), bounded by `limit`.
#[derive(Clone, Debug, Default)]
pub struct DefinitionQuery {
    /// Only versions of this name.
    pub name: Option<String>,
    /// `None`: every namespace. `Some(list)`: only definitions whose namespace is in the list
    /// (an empty list matches nothing, and a definition without a namespace matches no list).
    pub namespaces: Option<Vec<String>>,
    /// Cursor: only rows with a greater `seq`.
    pub after: Option<i64>,
    pub limit: u32,
}

impl DefinitionQuery {
    /// Lists return this many rows when the query asks for none.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// No list returns more rows than this.
    pub const MAX_LIMIT: u32 = 1000;

    /// The number of rows a list with this query returns at most.
    pub fn effective_limit(&self) -> u32 {
        bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }

    /// Does `row` pass the query (cursor included, limit aside)? Memory stores filter with it;
    /// SQL stores agree with it.
    pub fn matches(&self, row: &DefinitionRow) -> bool {
        self.name.as_ref().is_none_or(|name| &row.name == name)
            && self.after.is_none_or(|after| row.seq > after)
            && in_namespaces(self.namespaces.as_deref(), row.namespace.as_deref())
    }
}

/// The conflict of deploying another text under a deployed version.
pub(crate) fn definition_conflict(existing: &DefinitionRow, new: &NewDefinition) -> StoreError {
    StoreError::Conflict(format!(
        "definition {} version {} is already deployed with content hash {}, not {}; a deployed version \
         never changes: deploy the new text under a new version",
        existing.name, existing.version, existing.content_hash, new.content_hash
    ))
}

/// Writes of the runtime's steps.
#[async_trait]
pub trait StepStore: Send + Sync {
    /// Commits all writes in one transaction, in order. Either all land or none.
    async fn commit(&self, writes: &[InstanceWrite]) -> StoreResult<()>;
}

/// Reads of instances and their histories.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    async fn instance(&self, id: &InstanceId) -> StoreResult<Option<InstanceRow>>;
    /// Loads what a cold start of one instance needs; `None` if it does not exist.
    async fn load(&self, id: &InstanceId) -> StoreResult<Option<LoadedInstance>>;
    /// Loads several instances at once (the runtime batches cache misses).
    async fn load_many(&self, ids: &[InstanceId]) -> StoreResult<Vec<LoadedInstance>>;
    /// History events with `seq >= from`, at most `limit`, in order.
    async fn history(&self, id: &InstanceId, from: Seq, limit: u32) -> StoreResult<Vec<StoredEvent>>;
    async fn find_by_idempotency_key(&self, key: &str) -> StoreResult<Option<InstanceId>>;
    async fn event_seen(&self, id: &InstanceId, event_id: &str) -> StoreResult<bool>;
    /// The instances that pass `filter` ([`InstanceFilter::matches`]), in id order, at most
    /// `filter.effective_limit()`.
    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<InstanceRow>>;
}

/// Deployed definitions: their text, kept so every node can compile and register them again.
#[async_trait]
pub trait DefinitionStore: Send + Sync {
    /// Deploys a definition version. A deployed version is immutable: the same `(name,
    /// version)` with the same content hash returns the existing row and `false`; with another
    /// hash it is a [`StoreError::Conflict`] naming the definition and version. Returns the
    /// stored row and whether it was created.
    async fn deploy_definition(&self, definition: &NewDefinition) -> StoreResult<(DefinitionRow, bool)>;
    /// One version of a definition; `version: None` is the most recently deployed version of
    /// `name`.
    async fn definition(&self, name: &str, version: Option<&str>) -> StoreResult<Option<DefinitionRow>>;
    /// The definitions that pass `query`, in deploy order, at most `query.effective_limit()`.
    async fn definitions(&self, query: &DefinitionQuery) -> StoreResult<Vec<DefinitionRow>>;
}

/// Activity tasks outside the step path: recovery and inspection.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Every task not parked, for recovery after a restart.
    async fn open_tasks(&self, limit: u32) -> StoreResult<Vec<TaskRow>>;
    async fn tasks_of(&self, id: &InstanceId) -> StoreResult<Vec<TaskRow>>;
}

/// Durable timers, read by due time.
#[async_trait]
pub trait TimerStore: Send + Sync {
    /// Timers due before `before`, earliest first, at most `limit`.
    async fn timers_due_before(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<TimerRow>>;
    async fn timers_of(&self, id: &InstanceId) -> StoreResult<Vec<TimerRow>>;
}

/// Incidents, and the standalone ones raised when an instance cannot even be loaded.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Opens an incident and marks the instance faulted, outside any step (the history may be
    /// unreadable).
    async fn raise_incident(&self, id: &InstanceId, incident: &NewIncident) -> StoreResult<i64>;
    async fn incidents(&self, id: Option<&InstanceId>, open_only: bool) -> StoreResult<Vec<Incident>>;
    async fn incident(&self, incident_id: i64) -> StoreResult<Option<Incident>>;
    /// Closes an incident that was raised outside a step; sets the instance's status back.
    async fn resolve_incident(&self, incident_id: i64, at: DateTime<Utc>, status: InstanceStatus) -> StoreResult<()>;
}

/// Outbox relay side: pending messages, and their acknowledgement once delivered. The outbox
/// is also the feed of the read models ([`crate::projection`]): a relay acknowledges a row only
/// once every projection's position has passed it.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>>;
    async fn outbox_ack(&self, ids: &[i64]) -> StoreResult<()>;
    /// The rows after `position` (an outbox id), in commit order, at most `limit`.
    async fn outbox_after(&self, position: i64, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>>;
}

/// Whether a projection filter's field is a plain name (letters, digits, `_`), as the SQL
/// stores require.
pub fn is_plain_field(field: &str) -> bool {
    !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A page of a projection's rows: those whose top-level fields (plain names, see
/// [`is_plain_field`]) equal the given strings, in key order, after a key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectionQuery {
    pub projection: String,
    /// `(field, value)`: the row's top-level `field` is the string `value`.
    pub filters: Vec<(String, String)>,
    pub after: Option<String>,
    pub limit: u32,
}

impl ProjectionQuery {
    pub const MAX_LIMIT: u32 = 1000;
    pub const DEFAULT_LIMIT: u32 = 100;

    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

/// The read models' rows and positions ([`crate::projection`]).
#[async_trait]
pub trait ProjectionStore: Send + Sync {
    /// How far a projection has read the outbox (0 before its first event).
    async fn projection_position(&self, projection: &str) -> StoreResult<i64>;
    /// The rows of these keys that exist.
    async fn projection_rows(&self, projection: &str, keys: &[String]) -> StoreResult<Vec<(String, Value)>>;
    /// Writes rows (`None` deletes) and moves the position from `from` to `to`, in one
    /// transaction; a position that is no longer `from` (another projector went first) is a
    /// [`StoreError::Conflict`] and nothing is written.
    async fn apply_projection(
        &self,
        projection: &str,
        from: i64,
        to: i64,
        rows: &[(String, Option<Value>)],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// A page of rows.
    async fn list_projection(&self, query: &ProjectionQuery) -> StoreResult<Vec<(String, Value)>>;
    /// Every row of a projection, in key order (for a rebuild's comparison).
    async fn all_projection_rows(&self, projection: &str) -> StoreResult<Vec<(String, Value)>>;
}

/// Small engine-wide settings, such as the manual clock's mode and offset.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;
}

/// Human tasks as people look for them: one task, and inboxes filtered by who asks.
#[async_trait]
pub trait HumanTaskStore: Send + Sync {
    async fn human_task(&self, id: &InstanceId, seq: Seq) -> StoreResult<Option<HumanTaskRow>>;
    async fn human_tasks_of(&self, id: &InstanceId) -> StoreResult<Vec<HumanTaskRow>>;
    /// The tasks `principal` may see that pass `query`, in `(instance, seq)` order, at most
    /// `query.effective_limit()`. The access check is part of the query, before the limit.
    async fn inbox(&self, query: &InboxQuery, principal: &Principal) -> StoreResult<Vec<HumanTaskRow>>;
}

/// SLA clocks for dashboards.
#[async_trait]
pub trait SlaStore: Send + Sync {
    async fn slas(&self, query: &SlaQuery) -> StoreResult<Vec<SlaRow>>;
    /// SLA compliance: the clocks of each definition and department counted by state as of
    /// `query.now`, filtered by the query's definition, department and namespaces (its state,
    /// paging and `open_only` are not used), in (definition, department) order, at most
    /// [`SlaQuery::MAX_LIMIT`] groups.
    async fn sla_compliance(&self, query: &SlaQuery) -> StoreResult<Vec<SlaCompliance>>;
}

/// One group of [`SlaStore::sla_compliance`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaCompliance {
    pub definition: String,
    pub department: Option<String>,
    pub on_track: u64,
    pub at_risk: u64,
    pub breached: u64,
    pub met: u64,
}

impl SlaCompliance {
    /// Met among the clocks that are decided (met or breached), as a fraction; none decided yet:
    /// `None`.
    pub fn compliance(&self) -> Option<f64> {
        let decided = self.met + self.breached;
        (decided > 0).then(|| self.met as f64 / decided as f64)
    }
}

/// Notification deliveries (the delivery log) and the in-app inbox.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Records deliveries, keeping any that exist with the same `(instance, seq, recipient,
    /// channel)` as they are; returns the stored rows, in the order given. This key is what
    /// makes a retried or replayed notify send nothing twice.
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<Vec<DeliveryRow>>;
    /// Pending deliveries due at or before `now`, oldest first.
    async fn deliveries_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<DeliveryRow>>;
    async fn update_delivery(&self, update: &DeliveryUpdate) -> StoreResult<()>;
    async fn deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<DeliveryRow>>;
    /// Stores an in-app notification; a second one for the same delivery is ignored.
    async fn put_in_app(&self, notification: &InAppNotification) -> StoreResult<()>;
    /// A user's in-app notifications, newest first, paged by id (`before`).
    async fn in_app(
        &self,
        user: &str,
        unread_only: bool,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<InAppNotification>>;
    /// Marks notifications read; returns how many changed.
    async fn mark_read(&self, user: &str, ids: &[i64], at: DateTime<Utc>) -> StoreResult<u64>;
}

/// An SLA clock's row: what a dashboard shows of it. Times are instants computed when the
/// clock last changed (started, paused, resumed), so "at risk" and "breached" are plain
/// comparisons with now; business time elapsed is `elapsed_ms` plus the working time since
/// `running_since` under `calendar`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaRow {
    pub instance: InstanceId,
    /// The seq of the SlaStarted event.
    pub seq: Seq,
    pub definition: String,
    /// What the SLA covers: a task's name, or `workflow`.
    pub name: String,
    /// The human task the SLA covers, if it covers one.
    pub human_task: Option<Seq>,
    pub department: Option<String>,
    pub calendar: Option<String>,
    pub within_ms: u64,
    pub started_at: DateTime<Utc>,
    /// None while paused.
    pub target_at: Option<DateTime<Utc>>,
    pub at_risk_at: Option<DateTime<Utc>>,
    /// Business time elapsed up to `running_since` (or up to the pause).
    pub elapsed_ms: u64,
    /// None while paused or stopped.
    pub running_since: Option<DateTime<Utc>>,
    pub escalations: u32,
    pub breached_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
}

impl SlaRow {
    /// The state at `now`: breached, at risk, or on track (what dashboards filter by).
    pub fn state(&self, now: DateTime<Utc>) -> SlaStateName {
        if self.breached_at.is_some() {
            SlaStateName::Breached
        } else if self.stopped_at.is_some() {
            SlaStateName::Met
        } else if self.at_risk_at.is_some_and(|t| t <= now) {
            SlaStateName::AtRisk
        } else {
            SlaStateName::OnTrack
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaStateName {
    OnTrack,
    AtRisk,
    Breached,
    /// Stopped before its target.
    Met,
}

impl SlaStateName {
    /// The name as the API and the SQL stores spell it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTrack => "on_track",
            Self::AtRisk => "at_risk",
            Self::Breached => "breached",
            Self::Met => "met",
        }
    }
}

/// Filters for SLA dashboards; bounded by `limit`, paged by `(instance, seq)`.
#[derive(Clone, Debug, Default)]
pub struct SlaQuery {
    pub instance: Option<InstanceId>,
    pub definition: Option<String>,
    pub department: Option<String>,
    /// Only this state as of `now`.
    pub state: Option<SlaStateName>,
    /// Only clocks still running or paused (not stopped).
    pub open_only: bool,
    pub now: Option<DateTime<Utc>>,
    pub after: Option<(InstanceId, Seq)>,
    pub limit: u32,
    /// Only clocks of definitions in these namespaces (the part of `definition` before its
    /// `/`); None: every namespace.
    pub namespaces: Option<Vec<String>>,
}

impl SlaQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn effective_limit(&self) -> u32 {
        bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }

    /// Does `row` pass the query? Memory stores filter with it; SQL stores agree with it.
    pub fn matches(&self, row: &SlaRow) -> bool {
        let now = self.now.unwrap_or_else(Utc::now);
        self.instance.as_ref().is_none_or(|i| &row.instance == i)
            && self.definition.as_ref().is_none_or(|d| &row.definition == d)
            && self.department.as_ref().is_none_or(|d| row.department.as_ref() == Some(d))
            && self.state.is_none_or(|s| row.state(now) == s)
            && (!self.open_only || row.stopped_at.is_none())
            && self.after.as_ref().is_none_or(|(i, s)| (&row.instance, row.seq) > (i, *s))
            && self.namespaces.as_ref().is_none_or(|list| {
                row.definition.split_once('/').is_some_and(|(namespace, _)| list.iter().any(|n| n == namespace))
            })
    }
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be sent (now, after quiet hours, at digest time, or after a failed attempt).
    Pending,
    Sent,
    /// Gave up after its attempts; `last_error` says why.
    Failed,
    /// Not sent on purpose (channel turned off, no address); `last_error` says why.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }
}

/// A delivery about to be recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDelivery {
    pub instance: InstanceId,
    /// The notify activity's seq: with recipient and channel, the idempotency key.
    pub seq: Seq,
    pub recipient: String,
    pub channel: String,
    pub status: DeliveryStatus,
    /// The rendered message and its address (subject, body, html, to...), as the channel needs.
    pub message: Value,
    /// Not sent before this time (quiet hours, digest).
    pub not_before: DateTime<Utc>,
    /// Email held for the recipient's digest.
    pub digest: bool,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A row of the delivery log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    pub id: i64,
    pub instance: InstanceId,
    pub seq: Seq,
    pub recipient: String,
    pub channel: String,
    pub status: DeliveryStatus,
    pub message: Value,
    pub not_before: DateTime<Utc>,
    pub digest: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The outcome of one delivery attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryUpdate {
    pub id: i64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The next attempt's time, for a pending delivery.
    pub not_before: DateTime<Utc>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Filters for the delivery log, newest first, paged by id (`before`), bounded.
#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub instance: Option<InstanceId>,
    pub recipient: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub before: Option<i64>,
    pub limit: u32,
}

impl DeliveryQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn effective_limit(&self) -> u32 {
        bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }
}

/// A notification in a user's in-app inbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InAppNotification {
    /// Assigned by the store (0 when putting one).
    pub id: i64,
    pub user: String,
    /// The delivery it came from (unique).
    pub delivery: i64,
    pub subject: String,
    pub body: String,
    /// Where it points (a task, an instance), as the UI links it.
    pub link: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

/// Everything the runtime needs. Implemented by [`memory::MemoryStore`] and
/// [`sqlite::SqliteStore`]; PostgreSQL joins with the same contract suite.
/// Which ended instances a purge removes ([`RetentionStore::purge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeQuery {
    /// Only instances of this definition (`namespace/name`, every version); all when None.
    pub definition: Option<String>,
    /// Only instances that ended (completed or cancelled) before this time. Faulted instances
    /// are never purged: they may still be retried.
    pub ended_before: DateTime<Utc>,
    /// At most this many, the oldest first (bounded by [`PurgeQuery::MAX_LIMIT`]).
    pub limit: u32,
    /// Only name them; delete nothing.
    pub dry_run: bool,
}

impl PurgeQuery {
    pub const MAX_LIMIT: u32 = 10_000;

    pub fn effective_limit(&self) -> u32 {
        bounded(self.limit, 1_000, Self::MAX_LIMIT)
    }

    pub fn matches(&self, row: &InstanceRow) -> bool {
        row.status.is_final()
            && row.updated_at < self.ended_before
            && self.definition.as_ref().is_none_or(|d| *d == row.orchestration)
    }
}

/// Removing ended instances for good.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes the instances `query` matches, oldest end first, with everything kept for them
    /// (history, snapshot, tasks, timers, incidents, human tasks, SLA clocks, notification
    /// deliveries, tags, received event ids), in one transaction; the people's in-app
    /// notifications stay. Returns the ids (those it would delete, on a dry run).
    async fn purge(&self, query: &PurgeQuery) -> StoreResult<Vec<InstanceId>>;

    /// Erases a person's personal data ([`crate::erasure`]) in one transaction, with a row in
    /// the audit trail, unless an instance not ended holds some of it: then nothing changes and
    /// the report names those instances in `blocking`. A dry run changes nothing either.
    async fn erase_person(&self, erasure: &Erasure) -> StoreResult<ErasureReport>;

    /// The erasures recorded for a person (all when None), newest first.
    async fn erasures(&self, person: Option<&str>) -> StoreResult<Vec<ErasureRecord>>;
}

/// An erasure as the audit trail keeps it: who asked, when, why, and what it did (counts and
/// instance ids, never the erased values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureRecord {
    pub id: i64,
    pub person: String,
    pub by: Actor,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub report: ErasureReport,
}

pub trait Store:
    StepStore
    + HistoryStore
    + RetentionStore
    + TaskStore
    + TimerStore
    + IncidentStore
    + OutboxStore
    + ProjectionStore
    + SettingsStore
    + HumanTaskStore
    + SlaStore
    + NotificationStore
    + DefinitionStore
    + crate::directory::Directory
    + std::fmt::Debug
{
    /// A short name for reports (`sqlite`, `memory`).
    fn kind(&self) -> &'static str;
}
