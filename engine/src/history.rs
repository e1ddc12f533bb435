//! History events: the persisted facts of an instance.
//!
//! Every event kind has an explicit numeric tag that is never reused (the list in
//! [`EventKind`] is append-only; a removed kind keeps its number, commented out). The payload is
//! JSON of the kind's body, written with [`SCHEMA_VERSION`]. Each event carries its actor and the
//! hash of its predecessor, so a history is a tamper-evident chain: the hash of event `n` covers
//! event `n`'s fields and the hash of event `n - 1`.
//!
//! From schema 2 an event's hash covers a commitment to its payload, `sha256(salt || payload)`
//! with a random salt kept beside the payload, instead of the payload itself. Erasing personal
//! data deletes the payload and the salt and keeps the commitment: the chain still verifies, and
//! without the salt the commitment tells nothing about what was erased.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::activity::{ActivityOptions, Failure};
use crate::human::{Assignment, HumanTaskSpec};

/// A position in an instance's history. Also the identity of the primitive a command created:
/// the activity scheduled at seq 7 is "activity 7" for its whole life.
pub type Seq = u64;

/// The version of the payload encoding written by this build. Schema 1 hashed the payload
/// itself; schema 2 hashes a salted commitment to it, so that it can be erased.
pub const SCHEMA_VERSION: u16 = 2;

/// The first schema whose payloads are committed to with a salt (and can be erased).
const SALTED_SCHEMA: u16 = 2;

/// The hash that precedes the first event of a history.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub String);

impl InstanceId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Actor {
    /// The engine itself (timers, retries, decisions of the orchestration).
    System,
    /// A person, by directory id.
    User { id: String },
    /// A worker or service account, by id.
    Worker { id: String },
}

/// Which definition an instance runs, pinned for its whole life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionInfo {
    pub name: String,
    pub version: String,
    /// Hash of the definition's content; a different hash under the same version is refused.
    pub content_hash: String,
    /// The namespace the definition belongs to (who may see and run it), if it has one. Its
    /// instances are listed under it. Histories recorded before namespaces existed lack it;
    /// replay compares definitions by name, version and content hash only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl DefinitionInfo {
    /// A definition without a namespace (see [`DefinitionInfo::with_namespace`]).
    pub fn new(name: impl Into<String>, version: impl Into<String>, content_hash: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), content_hash: content_hash.into(), namespace: None }
    }

    /// The same definition, in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The key orchestrations are registered under.
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceStarted {
    pub definition: DefinitionInfo,
    /// Version of the interpreter that ran the first step, for behaviour gated by version.
    pub interpreter_version: String,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The business object the instance is about (an order number, a case id), for searches.
    /// Not unique; absent from histories recorded before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
    /// Labels given at the start, sorted and without repeats; they never change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityScheduled {
    pub name: String,
    pub input: Value,
    pub options: ActivityOptions,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityCompleted {
    pub activity: Seq,
    pub result: Value,
    pub attempt: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityFailed {
    pub activity: Seq,
    pub failure: Failure,
    pub attempt: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerStarted {
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub fire_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimerRef {
    pub timer: Seq,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventWaitStarted {
    pub name: String,
    /// Only events received at most this long before the wait started count; older buffered
    /// events are left for other waits. Recorded, so a replay decides the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitRef {
    pub wait: Seq,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventReceived {
    pub name: String,
    /// When the event arrived, kept with a buffered event (history has it on the event itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub payload: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildStarted {
    pub instance: InstanceId,
    pub definition: String,
    pub input: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildCompleted {
    pub child: Seq,
    pub output: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildFailed {
    pub child: Seq,
    pub failure: Failure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Emitted {
    pub kind: String,
    pub payload: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceCompleted {
    pub output: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceFailed {
    pub failure: Failure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinuedAsNew {
    pub input: Value,
    /// Received events nobody waited for yet; they carry over into the new run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried_events: Vec<EventReceived>,
    /// The person who started the instance: the initiator of every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentRaised {
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentResolved {
    pub reason: String,
    /// The input the failed activity was retried with, when someone edited it (the audit of
    /// the change; the next attempt runs with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
}

/// The instance moved to another version of its definition: replay runs the events before
/// this one with `from` and the rest with `to`, starting from `state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceMigrated {
    pub from: DefinitionInfo,
    pub to: DefinitionInfo,
    /// The task mapping asked for (old task -> new task), as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
    /// Where each running task went (old reference -> new reference).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<(String, String)>,
    /// The orchestration's state under `to`, as the migration made it.
    pub state: Value,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceTerminated {
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskCreated {
    pub spec: Box<HumanTaskSpec>,
}

/// A person's action on a task that needs nothing but the task (claim, unclaim).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskRef {
    pub task: Seq,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskDelegated {
    pub task: Seq,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskReassigned {
    pub task: Seq,
    pub to: Assignment,
    /// Reassigned by the orchestration (an escalation), not by a person: then it is a command.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_workflow: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskCommented {
    pub task: Seq,
    pub text: String,
}

/// A person completed a task; who did it is the event's actor, when is its time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskCompleted {
    pub task: Seq,
    pub outcome: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HumanTaskCancelled {
    pub task: Seq,
    pub reason: String,
}

/// An SLA clock starts. Target and at-risk instants are computed by the orchestration (which
/// knows the calendar) and recorded, so dashboards compare them with now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaStarted {
    /// What it covers: a task's name, or `workflow`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_task: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<String>,
    pub within_ms: u64,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub target_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub at_risk_at: DateTime<Utc>,
}

/// An SLA clock's business time so far, when it pauses, breaches or stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaElapsed {
    pub sla: Seq,
    pub elapsed_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaResumed {
    pub sla: Seq,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub target_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub at_risk_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaEscalated {
    pub sla: Seq,
    /// The rung's index in the ladder.
    pub rung: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub reason: String,
}

macro_rules! history_events {
    ($( $tag:literal => $variant:ident($body:ty) ),* $(,)?) => {
        /// What happened. The number before each kind is its persisted tag: never reuse one.
        #[derive(Clone, Debug, PartialEq)]
        pub enum EventKind { $( $variant($body) ),* }

        impl EventKind {
            /// The persisted tag of this kind.
            pub fn tag(&self) -> u16 {
                match self { $( Self::$variant(_) => $tag ),* }
            }

            /// The kind's name, as history views show it.
            pub fn name(&self) -> &'static str {
                match self { $( Self::$variant(_) => stringify!($variant) ),* }
            }

            /// Every (tag, name) pair this build knows, in tag order.
            pub fn known_tags() -> &'static [(u16, &'static str)] {
                &[ $( ($tag, stringify!($variant)) ),* ]
            }

            /// The payload as persisted (JSON of the kind's body).
            pub fn encode_payload(&self) -> String {
                let encoded = match self { $( Self::$variant(body) => serde_json::to_string(body) ),* };
                // Bodies are plain data (strings, numbers, JSON values): encoding cannot fail.
                encoded.unwrap_or_else(|err| unreachable!("history payload encodes: {err}"))
            }

            /// Decodes a persisted payload.
            pub fn decode(tag: u16, schema: u16, payload: &str) -> Result<Self, DecodeError> {
                if schema > SCHEMA_VERSION {
                    return Err(DecodeError::UnknownSchema { tag, schema });
                }
                match tag {
                    $( $tag => serde_json::from_str::<$body>(payload)
                        .map(Self::$variant)
                        .map_err(|err| DecodeError::Payload { tag, message: err.to_string() }), )*
                    other => Err(DecodeError::UnknownTag(other)),
                }
            }
        }
    };
}

history_events! {
    1 => InstanceStarted(InstanceStarted),
    2 => ActivityScheduled(ActivityScheduled),
    3 => ActivityCompleted(ActivityCompleted),
    4 => ActivityFailed(ActivityFailed),
    5 => TimerStarted(TimerStarted),
    6 => TimerFired(TimerRef),
    7 => TimerCancelled(TimerRef),
    8 => EventWaitStarted(EventWaitStarted),
    9 => EventReceived(EventReceived),
    10 => ChildStarted(ChildStarted),
    11 => ChildCompleted(ChildCompleted),
    12 => ChildFailed(ChildFailed),
    13 => Emitted(Emitted),
    14 => InstanceCompleted(InstanceCompleted),
    15 => InstanceFailed(InstanceFailed),
    16 => ContinuedAsNew(ContinuedAsNew),
    17 => IncidentRaised(IncidentRaised),
    18 => IncidentResolved(IncidentResolved),
    19 => InstanceTerminated(InstanceTerminated),
    20 => EventWaitCancelled(WaitRef),
    21 => HumanTaskCreated(HumanTaskCreated),
    22 => HumanTaskClaimed(HumanTaskRef),
    23 => HumanTaskUnclaimed(HumanTaskRef),
    24 => HumanTaskDelegated(HumanTaskDelegated),
    25 => HumanTaskReassigned(HumanTaskReassigned),
    26 => HumanTaskCommented(HumanTaskCommented),
    27 => HumanTaskCompleted(HumanTaskCompleted),
    28 => HumanTaskCancelled(HumanTaskCancelled),
    29 => HumanTaskExpired(HumanTaskRef),
    30 => SlaStarted(SlaStarted),
    31 => SlaPaused(SlaElapsed),
    32 => SlaResumed(SlaResumed),
    33 => SlaEscalated(SlaEscalated),
    34 => SlaBreached(SlaElapsed),
    35 => SlaStopped(SlaElapsed),
    36 => InstanceSuspended(Reason),
    37 => InstanceResumed(Reason),
    38 => InstanceMigrated(InstanceMigrated),
}

impl EventKind {
    /// Events that record a decision of the orchestration (a command). On replay, the
    /// orchestration must produce the same commands, or the instance is nondeterministic.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Self::ActivityScheduled(_)
                | Self::TimerStarted(_)
                | Self::TimerCancelled(_)
                | Self::EventWaitStarted(_)
                | Self::EventWaitCancelled(_)
                | Self::ChildStarted(_)
                | Self::Emitted(_)
                | Self::InstanceCompleted(_)
                | Self::InstanceFailed(_)
                | Self::ContinuedAsNew(_)
                | Self::HumanTaskCreated(_)
                | Self::HumanTaskCancelled(_)
                | Self::HumanTaskExpired(_)
                | Self::SlaStarted(_)
                | Self::SlaPaused(_)
                | Self::SlaResumed(_)
                | Self::SlaEscalated(_)
                | Self::SlaBreached(_)
                | Self::SlaStopped(_)
        ) || matches!(self, Self::HumanTaskReassigned(r) if r.by_workflow)
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown history event tag {0}")]
    UnknownTag(u16),
    #[error("history event tag {tag} has schema version {schema}, newer than this build's")]
    UnknownSchema { tag: u16, schema: u16 },
    #[error("undecodable payload for history event tag {tag}: {message}")]
    Payload { tag: u16, message: String },
    #[error("undecodable actor: {0}")]
    Actor(String),
    #[error("hash chain broken at seq {seq}: {detail}")]
    Chain { seq: Seq, detail: String },
    #[error("history event {seq} was erased (personal data); the instance no longer replays")]
    Erased { seq: Seq },
}

/// A history event in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEvent {
    pub seq: Seq,
    /// When it happened; millisecond precision so it survives storage exactly.
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub kind: EventKind,
}

/// A history event as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub instance: InstanceId,
    pub seq: Seq,
    pub tag: u16,
    pub schema: u16,
    pub at_ms: i64,
    /// JSON of [`Actor`].
    pub actor: String,
    /// JSON of the kind's body; empty once erased.
    pub payload: String,
    /// From schema 2: the random salt (hex) of the payload's commitment; `None` once erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The commitment `sha256(salt || payload)` of an erased payload, kept for the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Truncates a time to what history keeps (milliseconds).
pub fn history_time(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis()).single().unwrap_or(t)
}

pub fn time_from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Hashes an event's fields and its predecessor's hash. `content` is the payload (schema 1) or
/// the payload's commitment (schema 2 on).
fn chain_hash(prev_hash: &str, seq: Seq, tag: u16, schema: u16, at_ms: i64, actor: &str, content: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    for part in [seq.to_string(), tag.to_string(), schema.to_string(), at_ms.to_string()] {
        h.update(b"|");
        h.update(part.as_bytes());
    }
    h.update(b"|");
    h.update(actor.as_bytes());
    h.update(b"|");
    h.update(content.as_bytes());
    hex::encode(h.finalize())
}

/// `sha256(salt || payload)`, the salt taken as its hex text.
fn commitment(salt: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

/// A fresh salt: a v4 UUID's 122 random bits from the operating system's source, as hex.
fn new_salt() -> String {
    hex::encode(uuid::Uuid::new_v4().into_bytes())
}

impl HistoryEvent {
    /// Encodes the event for storage, chaining it to `prev_hash`.
    pub fn encode(&self, instance: &InstanceId, prev_hash: &str) -> StoredEvent {
        let actor = serde_json::to_string(&self.actor).unwrap_or_else(|_| "{\"kind\":\"system\"}".into());
        let payload = self.kind.encode_payload();
        let at_ms = self.at.timestamp_millis();
        let tag = self.kind.tag();
        let salt = new_salt();
        let hash = chain_hash(prev_hash, self.seq, tag, SCHEMA_VERSION, at_ms, &actor, &commitment(&salt, &payload));
        StoredEvent {
            instance: instance.clone(),
            seq: self.seq,
            tag,
            schema: SCHEMA_VERSION,
            at_ms,
            actor,
            payload,
            salt: Some(salt),
            erased: None,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

impl StoredEvent {
    /// The migration this event records, if it is an `InstanceMigrated` (decoded without
    /// checking the chain: [`StoredEvent::decode`] does that).
    pub fn migration(&self) -> Option<Result<InstanceMigrated, DecodeError>> {
        const INSTANCE_MIGRATED: u16 = 38;
        (self.tag == INSTANCE_MIGRATED).then(|| match EventKind::decode(self.tag, self.schema, &self.payload)? {
            EventKind::InstanceMigrated(migrated) => Ok(migrated),
            _ => Err(DecodeError::UnknownTag(self.tag)),
        })
    }

    /// What the chain hash covers for the payload: the payload itself (schema 1) or its
    /// commitment (schema 2 on, kept when the payload was erased).
    fn content(&self) -> Result<std::borrow::Cow<'_, str>, DecodeError> {
        if self.schema < SALTED_SCHEMA {
            return Ok(std::borrow::Cow::Borrowed(&self.payload));
        }
        match (&self.salt, &self.erased) {
            (Some(salt), _) => Ok(std::borrow::Cow::Owned(commitment(salt, &self.payload))),
            (None, Some(kept)) => Ok(std::borrow::Cow::Borrowed(kept)),
            (None, None) => Err(DecodeError::Chain { seq: self.seq, detail: "the payload's salt is missing".into() }),
        }
    }

    /// Whether the payload was erased.
    pub fn is_erased(&self) -> bool {
        self.salt.is_none() && self.erased.is_some()
    }

    /// Whether the payload can be erased: written with a salted commitment, not yet erased.
    pub fn can_erase(&self) -> bool {
        self.schema >= SALTED_SCHEMA && self.salt.is_some()
    }

    /// Erases the payload, keeping its commitment so the chain still verifies. Events of
    /// schema 1 hash their payload itself and cannot be erased: answers false for them.
    pub fn erase(&mut self) -> bool {
        if self.is_erased() {
            return true;
        }
        if !self.can_erase() {
            return false;
        }
        let Some(salt) = self.salt.take() else {
            return false;
        };
        self.erased = Some(commitment(&salt, &self.payload));
        self.payload.clear();
        true
    }

    /// Checks that the event chains to `expected_prev` and that its hash matches its content.
    /// An erased event passes: its commitment stands for the payload.
    pub fn check(&self, expected_prev: Option<&str>) -> Result<(), DecodeError> {
        if let Some(prev) = expected_prev
            && prev != self.prev_hash
        {
            return Err(DecodeError::Chain {
                seq: self.seq,
                detail: format!("previous hash is {}, expected {prev}", self.prev_hash),
            });
        }
        let recomputed =
            chain_hash(&self.prev_hash, self.seq, self.tag, self.schema, self.at_ms, &self.actor, &self.content()?);
        if recomputed != self.hash {
            return Err(DecodeError::Chain { seq: self.seq, detail: "content does not match its hash".into() });
        }
        Ok(())
    }

    /// Decodes the event, checking it first (see [`StoredEvent::check`]); an erased event does
    /// not decode.
    pub fn decode(&self, expected_prev: Option<&str>) -> Result<HistoryEvent, DecodeError> {
        self.check(expected_prev)?;
        if self.is_erased() {
            return Err(DecodeError::Erased { seq: self.seq });
        }
        let kind = EventKind::decode(self.tag, self.schema, &self.payload)?;
        let actor = serde_json::from_str(&self.actor).map_err(|err| DecodeError::Actor(err.to_string()))?;
        Ok(HistoryEvent { seq: self.seq, at: time_from_ms(self.at_ms), actor, kind })
    }

    /// Recomputes this event's hash from its content and `prev_hash`. For tools that write
    /// histories by hand (tests of corrupt histories, future migrations); the engine never
    /// rewrites a stored event.
    pub fn reseal(&mut self) {
        let content = self.content().map(|content| content.into_owned()).unwrap_or_default();
        self.hash = chain_hash(&self.prev_hash, self.seq, self.tag, self.schema, self.at_ms, &self.actor, &content);
    }

    /// A JSON view for histories shown to people and tools.
    pub fn to_view(&self) -> Value {
        let payload: Value = if self.is_erased() {
            Value::Null
        } else {
            serde_json::from_str(&self.payload).unwrap_or(Value::String(self.payload.clone()))
        };
        let actor: Value = serde_json::from_str(&self.actor).unwrap_or(Value::Null);
        let name = EventKind::known_tags()
            .iter()
            .find(|(tag, _)| *tag == self.tag)
            .map(|(_, name)| *name)
            .unwrap_or("Unknown");
        serde_json::json!({
            "seq": self.seq,
            "type": name,
            "at": time_from_ms(self.at_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "actor": actor,
            "data": payload,
            "hash": self.hash,
            "erased": self.is_erased(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_pinned() {
        // Tags are persisted: this list may only grow. Changing a line here breaks old histories.
        let expected: &[(u16, &str)] = &[
            (1, "InstanceStarted"),
            (2, "ActivityScheduled"),
            (3, "ActivityCompleted"),
            (4, "ActivityFailed"),
            (5, "TimerStarted"),
            (6, "TimerFired"),
            (7, "TimerCancelled"),
            (8, "EventWaitStarted"),
            (9, "EventReceived"),
            (10, "ChildStarted"),
            (11, "ChildCompleted"),
            (12, "ChildFailed"),
            (13, "Emitted"),
            (14, "InstanceCompleted"),
            (15, "InstanceFailed"),
            (16, "ContinuedAsNew"),
            (17, "IncidentRaised"),
            (18, "IncidentResolved"),
            (19, "InstanceTerminated"),
            (20, "EventWaitCancelled"),
            (21, "HumanTaskCreated"),
            (22, "HumanTaskClaimed"),
            (23, "HumanTaskUnclaimed"),
            (24, "HumanTaskDelegated"),
            (25, "HumanTaskReassigned"),
            (26, "HumanTaskCommented"),
            (27, "HumanTaskCompleted"),
            (28, "HumanTaskCancelled"),
            (29, "HumanTaskExpired"),
            (30, "SlaStarted"),
            (31, "SlaPaused"),
            (32, "SlaResumed"),
            (33, "SlaEscalated"),
            (34, "SlaBreached"),
            (35, "SlaStopped"),
            (36, "InstanceSuspended"),
            (37, "InstanceResumed"),
            (38, "InstanceMigrated"),
        ];
        assert_eq!(EventKind::known_tags(), expected);
    }

    fn sample(seq: Seq) -> HistoryEvent {
        HistoryEvent {
            seq,
            at: time_from_ms(1_700_000_000_123),
            actor: Actor::User { id: "alice".into() },
            kind: EventKind::EventReceived(EventReceived {
                name: "approve".into(),
                received_at_ms: None,
                event_id: Some("e1".into()),
                payload: serde_json::json!({"ok": true}),
            }),
        }
    }

    #[test]
    fn encode_decode_round_trip_keeps_the_chain() {
        let id = InstanceId::new("i-1");
        let first = sample(0).encode(&id, GENESIS_HASH);
        let second = sample(1).encode(&id, &first.hash);
        assert_eq!(first.decode(Some(GENESIS_HASH)).expect("decodes"), sample(0));
        assert_eq!(second.decode(Some(&first.hash)).expect("decodes"), sample(1));
    }

    #[test]
    fn tampering_is_detected() {
        let id = InstanceId::new("i-1");
        let mut stored = sample(0).encode(&id, GENESIS_HASH);
        stored.payload = stored.payload.replace("true", "false");
        assert!(matches!(stored.decode(None), Err(DecodeError::Chain { .. })));
        let stored = sample(1).encode(&id, "abc");
        assert!(matches!(stored.decode(Some(GENESIS_HASH)), Err(DecodeError::Chain { .. })));
    }

    #[test]
    fn an_erased_event_keeps_the_chain_but_not_its_payload() {
        let id = InstanceId::new("i-1");
        let first = sample(0).encode(&id, GENESIS_HASH);
        let mut second = sample(1).encode(&id, &first.hash);
        let hash = second.hash.clone();
        assert!(second.erase(), "a schema 2 event can be erased");
        assert_eq!((second.payload.as_str(), second.salt.as_deref(), second.hash == hash), ("", None, true));
        assert_eq!(second.check(Some(&first.hash)), Ok(()));
        assert_eq!(second.decode(Some(&first.hash)), Err(DecodeError::Erased { seq: 1 }));
        assert_eq!(second.to_view()["data"], Value::Null);
        assert_eq!(second.to_view()["erased"], true);
        // The kept commitment is checked like the payload was: editing it breaks the chain.
        second.erased = Some(GENESIS_HASH.into());
        assert!(matches!(second.check(Some(&first.hash)), Err(DecodeError::Chain { seq: 1, .. })));
    }

    #[test]
    fn the_same_payload_commits_differently_each_time() {
        let id = InstanceId::new("i-1");
        let (a, b) = (sample(0).encode(&id, GENESIS_HASH), sample(0).encode(&id, GENESIS_HASH));
        assert_eq!(a.payload, b.payload);
        assert_ne!(a.hash, b.hash, "a salt per event: a short erased value cannot be guessed back");
    }

    /// Events written by schema 1 hashed their payload itself: they still verify and decode,
    /// and cannot be erased.
    #[test]
    fn schema_1_events_verify_and_refuse_erasure() {
        let id = InstanceId::new("i-1");
        let mut old = sample(0).encode(&id, GENESIS_HASH);
        (old.schema, old.salt) = (1, None);
        old.reseal();
        assert_eq!(old.decode(Some(GENESIS_HASH)).expect("decodes"), sample(0));
        assert!(!old.erase());
        assert_eq!(old.decode(Some(GENESIS_HASH)).expect("still decodes"), sample(0));
        old.payload = old.payload.replace("true", "false");
        assert!(matches!(old.decode(None), Err(DecodeError::Chain { .. })));
    }

    /// Histories recorded before namespaces, business keys and tags decode, and encode again
    /// byte for byte, so their hash chains hold.
    #[test]
    fn old_started_events_decode_and_encode_as_before() {
        let old = r#"{"definition":{"name":"order","version":"1.0.0","content_hash":"abc"},"interpreter_version":"0.1.0","input":{"n":1},"idempotency_key":"k"}"#;
        let kind = EventKind::decode(1, 1, old).expect("decodes");
        let EventKind::InstanceStarted(started) = &kind else { panic!("an InstanceStarted") };
        assert_eq!(started.definition, DefinitionInfo::new("order", "1.0.0", "abc"));
        assert_eq!((started.business_key.as_deref(), started.tags.len()), (None, 0));
        assert_eq!(kind.encode_payload(), old);

        let new = EventKind::InstanceStarted(InstanceStarted {
            definition: DefinitionInfo::new("order", "1.0.0", "abc").with_namespace("sales"),
            business_key: Some("po-7".into()),
            tags: vec!["eu".into(), "vip".into()],
            ..started.clone()
        });
        let payload = new.encode_payload();
        assert!(payload.contains(r#""namespace":"sales""#) && payload.contains(r#""business_key":"po-7""#));
        assert!(payload.contains(r#""tags":["eu","vip"]"#));
        assert_eq!(EventKind::decode(1, 1, &payload).expect("decodes"), new);
    }

    #[test]
    fn unknown_tag_and_bad_payload_are_typed_errors() {
        assert_eq!(EventKind::decode(999, 1, "{}"), Err(DecodeError::UnknownTag(999)));
        assert!(matches!(EventKind::decode(3, 1, "{not json"), Err(DecodeError::Payload { tag: 3, .. })));
        assert!(matches!(EventKind::decode(3, 9, "{}"), Err(DecodeError::UnknownSchema { .. })));
    }
}
