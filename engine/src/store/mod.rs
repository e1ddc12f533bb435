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

use crate::history::{InstanceId, Seq, StoredEvent};

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

/// Filter for instance lists. Every list is bounded by `limit`.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    pub status: Option<InstanceStatus>,
    pub orchestration: Option<String>,
    /// Cursor: only ids greater than this one.
    pub after: Option<InstanceId>,
    pub limit: u32,
}

impl InstanceFilter {
    /// Lists return this many rows when the filter asks for none.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// No list returns more rows than this.
    pub const MAX_LIMIT: u32 = 1000;

    /// The number of rows a list with this filter returns at most.
    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 { Self::DEFAULT_LIMIT } else { self.limit.min(Self::MAX_LIMIT) }
    }
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
    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<InstanceRow>>;
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

/// Outbox relay side: pending messages, and their acknowledgement once delivered.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>>;
    async fn outbox_ack(&self, ids: &[i64]) -> StoreResult<()>;
}

/// Small engine-wide settings, such as the manual clock's mode and offset.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()>;
}

/// Everything the runtime needs. Implemented by [`memory::MemoryStore`] and
/// [`sqlite::SqliteStore`]; PostgreSQL joins with the same contract suite.
pub trait Store:
    StepStore + HistoryStore + TaskStore + TimerStore + IncidentStore + OutboxStore + SettingsStore + std::fmt::Debug
{
    /// A short name for reports (`sqlite`, `memory`).
    fn kind(&self) -> &'static str;
}
