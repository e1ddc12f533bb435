//! In-memory store, for tests and runs that need no durability.
//!
//! It follows the SQLite store's rules exactly, so code tested against it behaves the same on
//! disk (the contract suite checks both): a commit is all-or-nothing, duplicate keys are
//! conflicts, times keep millisecond precision, and orderings and limits match. A commit
//! validates the whole batch before touching anything, which is what makes a failed commit
//! leave no trace without copying the state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    DefinitionQuery, DefinitionRow, DefinitionStore, DeliveryQuery, DeliveryRow, DeliveryStatus, DeliveryUpdate,
    ErasureRecord, HistoryStore, HumanTaskStore, InAppNotification, Incident, IncidentStore, InstanceFilter,
    InstanceRow, InstanceStatus, InstanceWrite, LoadedInstance, NewDefinition, NewDelivery, NewIncident,
    NotificationStore, OutboxRow, OutboxStore, ProjectionQuery, ProjectionStore, PurgeQuery, RetentionStore,
    SettingsStore, SlaCompliance, SlaQuery, SlaRow, SlaStateName, SlaStore, SnapshotRow, StepStore, Store, StoreError,
    StoreResult, TaskRow, TaskStore, TimerRow, TimerStore, definition_conflict,
};
use crate::directory::{Department, Directory, Group, Organisation, PeopleQuery, Person, Preferences};
use crate::erasure::{Erasure, ErasureReport, event_holds, scrub_person, scrub_task, task_holds};
use crate::history::{InstanceId, Seq, StoredEvent, history_time};
use crate::human::{HumanTaskRow, InboxQuery, Principal, may_see};

/// Row keys are `(instance, seq)`, so one instance's rows are a contiguous range.
type Key = (InstanceId, Seq);

fn instance_range(id: &InstanceId) -> (Bound<Key>, Bound<Key>) {
    (Bound::Included((id.clone(), 0)), Bound::Included((id.clone(), Seq::MAX)))
}

/// The instance row a write's bare sequence numbers and ids belong to.
fn owner<'a>(write: &'a InstanceWrite, what: &str) -> StoreResult<&'a InstanceRow> {
    write.instance.as_ref().ok_or_else(|| StoreError::Other(format!("a write with {what} must carry its instance row")))
}

fn conflict(what: &str, id: &InstanceId, key: impl std::fmt::Display) -> StoreError {
    StoreError::Conflict(format!("{what} {id}/{key} already exists"))
}

/// A store held in memory; cheap to create, gone when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<InstanceId, InstanceRow>,
    idempotency_keys: HashMap<String, InstanceId>,
    history: BTreeMap<Key, StoredEvent>,
    snapshots: HashMap<InstanceId, SnapshotRow>,
    tasks: BTreeMap<Key, TaskRow>,
    timers: BTreeMap<Key, TimerRow>,
    outbox: BTreeMap<i64, OutboxRow>,
    /// The read models: `(projection, key)` -> row, and each projection's position.
    projection_rows: BTreeMap<(String, String), Value>,
    projection_positions: HashMap<String, i64>,
    incidents: BTreeMap<i64, Incident>,
    /// Like AUTOINCREMENT: ids only grow and are never reused, even after deletes.
    last_outbox_id: i64,
    last_incident_id: i64,
    received_events: HashSet<(InstanceId, String)>,
    settings: HashMap<String, String>,
    human_tasks: BTreeMap<Key, HumanTaskRow>,
    slas: BTreeMap<Key, SlaRow>,
    deliveries: BTreeMap<i64, DeliveryRow>,
    /// The idempotency key of each delivery: `(instance, seq, recipient, channel)`.
    delivery_keys: HashMap<DeliveryKey, i64>,
    last_delivery_id: i64,
    in_app: BTreeMap<i64, InAppNotification>,
    /// The deliveries that have an in-app notification (at most one each).
    in_app_deliveries: HashSet<i64>,
    last_in_app_id: i64,
    people: BTreeMap<String, Person>,
    /// Preferences people set for themselves ([`Directory::set_preferences`]).
    own_preferences: BTreeMap<String, Preferences>,
    departments: BTreeMap<String, Department>,
    groups: BTreeMap<String, Group>,
    /// Deployed definitions by seq (deploy order), and the seq of each `(name, version)`.
    definitions: BTreeMap<i64, DefinitionRow>,
    definition_versions: HashMap<(String, String), i64>,
    last_definition_seq: i64,
    erasures: Vec<ErasureRecord>,
    last_erasure_id: i64,
}

type DeliveryKey = (InstanceId, Seq, String, String);

fn delivery_key(delivery: &NewDelivery) -> DeliveryKey {
    (delivery.instance.clone(), delivery.seq, delivery.recipient.clone(), delivery.channel.clone())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every mutation validates before it changes anything, so a panic elsewhere while the
    /// lock was held cannot have left the state half-written; a poisoned lock is still usable.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Checks every key the batch would insert, in the order SQLite would, without changing
    /// anything.
    fn validate(&self, writes: &[InstanceWrite]) -> StoreResult<()> {
        // Idempotency keys are checked row by row as the upserts are applied in order; the
        // overlays hold what earlier rows of the batch changed.
        let mut key_owner: HashMap<&str, Option<&InstanceId>> = HashMap::new();
        let mut instance_key: HashMap<&InstanceId, Option<&str>> = HashMap::new();
        for row in writes.iter().filter_map(|write| write.instance.as_ref()) {
            if let Some(key) = row.idempotency_key.as_deref() {
                let holder = match key_owner.get(key) {
                    Some(holder) => *holder,
                    None => self.idempotency_keys.get(key),
                };
                if let Some(holder) = holder
                    && holder != &row.id
                {
                    return Err(StoreError::Conflict(format!(
                        "idempotency key {key} is already used by instance {holder}"
                    )));
                }
            }
            let previous = match instance_key.get(&row.id) {
                Some(previous) => *previous,
                None => self.instances.get(&row.id).and_then(|existing| existing.idempotency_key.as_deref()),
            };
            if let Some(previous) = previous {
                key_owner.insert(previous, None);
            }
            if let Some(key) = row.idempotency_key.as_deref() {
                key_owner.insert(key, Some(&row.id));
            }
            instance_key.insert(&row.id, row.idempotency_key.as_deref());
        }

        let mut events = HashSet::new();
        let mut tasks = HashSet::new();
        let mut timers = HashSet::new();
        let mut received = HashSet::new();
        for write in writes {
            for event in &write.events {
                let key = (&event.instance, event.seq);
                if !events.insert(key) || self.history.contains_key(&(event.instance.clone(), event.seq)) {
                    return Err(conflict("history event", &event.instance, event.seq));
                }
            }
            for task in &write.tasks_added {
                if !tasks.insert((&task.instance, task.seq))
                    || self.tasks.contains_key(&(task.instance.clone(), task.seq))
                {
                    return Err(conflict("task", &task.instance, task.seq));
                }
            }
            for timer in &write.timers_added {
                if !timers.insert((&timer.instance, timer.seq))
                    || self.timers.contains_key(&(timer.instance.clone(), timer.seq))
                {
                    return Err(conflict("timer", &timer.instance, timer.seq));
                }
            }
            if !write.tasks_removed.is_empty() {
                owner(write, "removed tasks")?;
            }
            if !write.timers_removed.is_empty() {
                owner(write, "removed timers")?;
            }
            if write.incident.is_some() {
                owner(write, "an incident")?;
            }
            if !write.incidents_resolved.is_empty() {
                owner(write, "resolved incidents")?;
            }
            if !write.received_event_ids.is_empty() {
                let row = owner(write, "received event ids")?;
                for event_id in &write.received_event_ids {
                    if !received.insert((&row.id, event_id.as_str()))
                        || self.received_events.contains(&(row.id.clone(), event_id.clone()))
                    {
                        return Err(conflict("received event", &row.id, event_id));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a validated batch table by table, in the order the SQLite store runs its
    /// statements, so both agree even on odd batches (a task added and removed together).
    /// `human_tasks` are the batch's human tasks as the store keeps them ([`stored_human_task`]).
    fn apply(&mut self, writes: &[InstanceWrite], human_tasks: Vec<HumanTaskRow>) {
        for row in writes.iter().filter_map(|write| write.instance.as_ref()) {
            self.upsert_instance(row);
        }
        for event in writes.iter().flat_map(|write| &write.events) {
            self.history.insert((event.instance.clone(), event.seq), event.clone());
        }
        for snapshot in writes.iter().filter_map(|write| write.snapshot.as_ref()) {
            let newer = self.snapshots.get(&snapshot.instance).is_none_or(|current| snapshot.seq >= current.seq);
            if newer {
                self.snapshots.insert(snapshot.instance.clone(), snapshot.clone());
            }
        }
        for task in writes.iter().flat_map(|write| &write.tasks_added) {
            self.tasks.insert((task.instance.clone(), task.seq), normalized_task(task));
        }
        for task in writes.iter().flat_map(|write| &write.tasks_updated) {
            if let Some(current) = self.tasks.get_mut(&(task.instance.clone(), task.seq)) {
                *current = normalized_task(task);
            }
        }
        for write in writes {
            if let Some(row) = &write.instance {
                for seq in &write.tasks_removed {
                    self.tasks.remove(&(row.id.clone(), *seq));
                }
            }
        }
        for timer in writes.iter().flat_map(|write| &write.timers_added) {
            let row = TimerRow { due_at: history_time(timer.due_at), ..timer.clone() };
            self.timers.insert((timer.instance.clone(), timer.seq), row);
        }
        for write in writes {
            if let Some(row) = &write.instance {
                for seq in &write.timers_removed {
                    self.timers.remove(&(row.id.clone(), *seq));
                }
            }
        }
        for message in writes.iter().flat_map(|write| &write.outbox) {
            self.last_outbox_id += 1;
            let row = OutboxRow { created_at: history_time(message.created_at), ..message.clone() };
            self.outbox.insert(self.last_outbox_id, row);
        }
        for write in writes {
            if let (Some(row), Some(incident)) = (&write.instance, &write.incident) {
                self.insert_incident(&row.id, incident);
            }
        }
        for write in writes {
            if let Some(row) = &write.instance {
                for id in &write.incidents_resolved {
                    if let Some(incident) = self.incidents.get_mut(id)
                        && incident.resolved_at.is_none()
                    {
                        incident.resolved_at = Some(history_time(row.updated_at));
                    }
                }
            }
        }
        for write in writes {
            if let Some(row) = &write.instance {
                for event_id in &write.received_event_ids {
                    self.received_events.insert((row.id.clone(), event_id.clone()));
                }
            }
        }
        for row in human_tasks {
            self.human_tasks.insert((row.instance.clone(), row.seq), row);
        }
        for sla in writes.iter().flat_map(|write| &write.slas) {
            self.slas.insert((sla.instance.clone(), sla.seq), stored_sla(sla));
        }
    }

    fn upsert_instance(&mut self, row: &InstanceRow) {
        // What the instance was created with (creation time, business key, tags, namespace,
        // initiator)
        // never changes: a later row replaces the rest.
        let (created_at, business_key, tags, namespace, initiator) = match self.instances.get(&row.id) {
            Some(old) => (
                old.created_at,
                old.business_key.clone(),
                old.tags.clone(),
                old.namespace.clone(),
                old.initiator.clone(),
            ),
            None => (
                row.created_at,
                row.business_key.clone(),
                normalized_tags(&row.tags),
                row.namespace.clone(),
                row.initiator.clone(),
            ),
        };
        let row = InstanceRow {
            created_at: history_time(created_at),
            updated_at: history_time(row.updated_at),
            business_key,
            tags,
            namespace,
            initiator,
            ..row.clone()
        };
        if let Some(previous) = self.instances.get(&row.id).and_then(|old| old.idempotency_key.clone()) {
            self.idempotency_keys.remove(&previous);
        }
        if let Some(key) = &row.idempotency_key {
            self.idempotency_keys.insert(key.clone(), row.id.clone());
        }
        self.instances.insert(row.id.clone(), row);
    }

    fn insert_incident(&mut self, id: &InstanceId, incident: &NewIncident) -> i64 {
        self.last_incident_id += 1;
        let row = Incident {
            id: self.last_incident_id,
            instance: id.clone(),
            kind: incident.kind,
            reason: incident.reason.clone(),
            task_seq: incident.task_seq,
            pending_input: incident.pending_input.clone(),
            created_at: history_time(incident.created_at),
            resolved_at: None,
        };
        self.incidents.insert(row.id, row);
        self.last_incident_id
    }

    fn set_status(&mut self, id: &InstanceId, status: InstanceStatus, at: DateTime<Utc>) {
        if let Some(row) = self.instances.get_mut(id) {
            row.status = status;
            row.updated_at = history_time(at);
        }
    }

    fn load(&self, id: &InstanceId) -> Option<LoadedInstance> {
        let row = self.instances.get(id)?.clone();
        // A snapshot from before the current run (continue-as-new) describes the old run.
        let snapshot = self.snapshots.get(id).filter(|snapshot| snapshot.seq >= row.run_start).cloned();
        let from = snapshot.as_ref().map_or(row.run_start, |snapshot| snapshot.seq.saturating_add(1));
        let events = self
            .history
            .range((Bound::Included((id.clone(), from)), Bound::Included((id.clone(), Seq::MAX))))
            .map(|(_, event)| event.clone())
            .collect();
        Some(LoadedInstance { row, snapshot, events })
    }
}

/// Tags as a set, as SQL's `instance_tags` keeps them: sorted, each once.
fn normalized_tags(tags: &[String]) -> Vec<String> {
    let mut tags = tags.to_vec();
    tags.sort();
    tags.dedup();
    tags
}

fn normalized_task(task: &TaskRow) -> TaskRow {
    TaskRow { visible_at: history_time(task.visible_at), ..task.clone() }
}

/// A human task as the SQLite store gives it back: through its JSON (which keeps milliseconds
/// and drops what JSON cannot tell apart, such as a form of `null`).
fn stored_human_task(row: &HumanTaskRow) -> StoreResult<HumanTaskRow> {
    let json = serde_json::to_value(row).map_err(|err| StoreError::Other(format!("encoding a human task: {err}")))?;
    serde_json::from_value(json).map_err(|err| StoreError::Other(format!("decoding a human task: {err}")))
}

fn stored_sla(sla: &SlaRow) -> SlaRow {
    let ms = |t: Option<DateTime<Utc>>| t.map(history_time);
    SlaRow {
        started_at: history_time(sla.started_at),
        target_at: ms(sla.target_at),
        at_risk_at: ms(sla.at_risk_at),
        running_since: ms(sla.running_since),
        breached_at: ms(sla.breached_at),
        stopped_at: ms(sla.stopped_at),
        ..sla.clone()
    }
}

#[async_trait]
impl StepStore for MemoryStore {
    async fn commit(&self, writes: &[InstanceWrite]) -> StoreResult<()> {
        let human_tasks = writes
            .iter()
            .flat_map(|write| &write.human_tasks)
            .map(stored_human_task)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut state = self.state();
        state.validate(writes)?;
        state.apply(writes, human_tasks);
        Ok(())
    }
}

#[async_trait]
impl HistoryStore for MemoryStore {
    async fn instance(&self, id: &InstanceId) -> StoreResult<Option<InstanceRow>> {
        Ok(self.state().instances.get(id).cloned())
    }

    async fn load(&self, id: &InstanceId) -> StoreResult<Option<LoadedInstance>> {
        Ok(self.state().load(id))
    }

    async fn load_many(&self, ids: &[InstanceId]) -> StoreResult<Vec<LoadedInstance>> {
        let state = self.state();
        let mut seen = HashSet::new();
        Ok(ids.iter().filter(|id| seen.insert(*id)).filter_map(|id| state.load(id)).collect())
    }

    async fn history(&self, id: &InstanceId, from: Seq, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        let state = self.state();
        let range = (Bound::Included((id.clone(), from)), Bound::Included((id.clone(), Seq::MAX)));
        Ok(state.history.range(range).take(limit as usize).map(|(_, event)| event.clone()).collect())
    }

    async fn find_by_idempotency_key(&self, key: &str) -> StoreResult<Option<InstanceId>> {
        Ok(self.state().idempotency_keys.get(key).cloned())
    }

    async fn event_seen(&self, id: &InstanceId, event_id: &str) -> StoreResult<bool> {
        Ok(self.state().received_events.contains(&(id.clone(), event_id.to_owned())))
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<InstanceRow>> {
        let state = self.state();
        // Same cursor rule as SQL's `id > ?`: without a cursor, everything after "".
        let after = filter.after.clone().unwrap_or_else(|| InstanceId::new(""));
        Ok(state
            .instances
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, row)| row)
            .filter(|row| filter.matches(row))
            .take(filter.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn open_tasks(&self, limit: u32) -> StoreResult<Vec<TaskRow>> {
        let state = self.state();
        let mut open: Vec<&TaskRow> = state.tasks.values().filter(|task| !task.parked).collect();
        open.sort_by(|a, b| (a.visible_at, &a.instance, a.seq).cmp(&(b.visible_at, &b.instance, b.seq)));
        Ok(open.into_iter().take(limit as usize).cloned().collect())
    }

    async fn tasks_of(&self, id: &InstanceId) -> StoreResult<Vec<TaskRow>> {
        Ok(self.state().tasks.range(instance_range(id)).map(|(_, task)| task.clone()).collect())
    }
}

#[async_trait]
impl TimerStore for MemoryStore {
    async fn timers_due_before(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<TimerRow>> {
        let before = history_time(before);
        let state = self.state();
        let mut due: Vec<&TimerRow> = state.timers.values().filter(|timer| timer.due_at < before).collect();
        due.sort_by(|a, b| (a.due_at, &a.instance, a.seq).cmp(&(b.due_at, &b.instance, b.seq)));
        Ok(due.into_iter().take(limit as usize).cloned().collect())
    }

    async fn timers_of(&self, id: &InstanceId) -> StoreResult<Vec<TimerRow>> {
        Ok(self.state().timers.range(instance_range(id)).map(|(_, timer)| timer.clone()).collect())
    }
}

#[async_trait]
impl IncidentStore for MemoryStore {
    async fn raise_incident(&self, id: &InstanceId, incident: &NewIncident) -> StoreResult<i64> {
        let mut state = self.state();
        let incident_id = state.insert_incident(id, incident);
        state.set_status(id, InstanceStatus::Faulted, incident.created_at);
        Ok(incident_id)
    }

    async fn incidents(&self, id: Option<&InstanceId>, open_only: bool) -> StoreResult<Vec<Incident>> {
        Ok(self
            .state()
            .incidents
            .values()
            .filter(|incident| id.is_none_or(|id| &incident.instance == id))
            .filter(|incident| !open_only || incident.resolved_at.is_none())
            .cloned()
            .collect())
    }

    async fn incident(&self, incident_id: i64) -> StoreResult<Option<Incident>> {
        Ok(self.state().incidents.get(&incident_id).cloned())
    }

    async fn resolve_incident(&self, incident_id: i64, at: DateTime<Utc>, status: InstanceStatus) -> StoreResult<()> {
        let mut state = self.state();
        let Some(incident) = state.incidents.get_mut(&incident_id) else {
            return Err(StoreError::Other(format!("incident {incident_id} does not exist")));
        };
        if incident.resolved_at.is_some() {
            return Ok(());
        }
        incident.resolved_at = Some(history_time(at));
        let instance = incident.instance.clone();
        state.set_status(&instance, status, at);
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn outbox_pending(&self, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>> {
        Ok(self.state().outbox.iter().take(limit as usize).map(|(id, row)| (*id, row.clone())).collect())
    }

    async fn outbox_ack(&self, ids: &[i64]) -> StoreResult<()> {
        let mut state = self.state();
        for id in ids {
            state.outbox.remove(id);
        }
        Ok(())
    }

    async fn outbox_after(&self, position: i64, limit: u32) -> StoreResult<Vec<(i64, OutboxRow)>> {
        let state = self.state();
        let after = state.outbox.range(position.saturating_add(1)..);
        Ok(after.take(limit as usize).map(|(id, row)| (*id, row.clone())).collect())
    }
}

#[async_trait]
impl ProjectionStore for MemoryStore {
    async fn projection_position(&self, projection: &str) -> StoreResult<i64> {
        Ok(self.state().projection_positions.get(projection).copied().unwrap_or(0))
    }

    async fn projection_rows(&self, projection: &str, keys: &[String]) -> StoreResult<Vec<(String, Value)>> {
        let state = self.state();
        let mut found: Vec<(String, Value)> = keys
            .iter()
            .filter_map(|key| {
                state.projection_rows.get(&(projection.to_owned(), key.clone())).map(|row| (key.clone(), row.clone()))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        Ok(found)
    }

    async fn apply_projection(
        &self,
        projection: &str,
        from: i64,
        to: i64,
        rows: &[(String, Option<Value>)],
        _at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut state = self.state();
        let position = state.projection_positions.get(projection).copied().unwrap_or(0);
        if position != from {
            return Err(StoreError::Conflict(format!(
                "projection {projection} is at {position}, not {from}: another projector wrote it"
            )));
        }
        for (key, body) in rows {
            let key = (projection.to_owned(), key.clone());
            match body {
                Some(body) => state.projection_rows.insert(key, body.clone()),
                None => state.projection_rows.remove(&key),
            };
        }
        state.projection_positions.insert(projection.to_owned(), to);
        Ok(())
    }

    async fn list_projection(&self, query: &ProjectionQuery) -> StoreResult<Vec<(String, Value)>> {
        if let Some((field, _)) = query.filters.iter().find(|(field, _)| !super::is_plain_field(field)) {
            return Err(StoreError::Other(format!("{field:?} is not a plain field name")));
        }
        let state = self.state();
        let matches = |row: &Value| {
            query.filters.iter().all(|(field, value)| row.get(field).and_then(Value::as_str) == Some(value.as_str()))
        };
        Ok(state
            .projection_rows
            .iter()
            .filter(|((projection, key), row)| {
                *projection == query.projection && query.after.as_ref().is_none_or(|after| key > after) && matches(row)
            })
            .take(query.effective_limit() as usize)
            .map(|((_, key), row)| (key.clone(), row.clone()))
            .collect())
    }

    async fn all_projection_rows(&self, projection: &str) -> StoreResult<Vec<(String, Value)>> {
        let state = self.state();
        Ok(state
            .projection_rows
            .iter()
            .filter(|((name, _), _)| name == projection)
            .map(|((_, key), row)| (key.clone(), row.clone()))
            .collect())
    }
}

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self.state().settings.get(key).cloned())
    }

    async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        self.state().settings.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}

#[async_trait]
impl HumanTaskStore for MemoryStore {
    async fn human_task(&self, id: &InstanceId, seq: Seq) -> StoreResult<Option<HumanTaskRow>> {
        Ok(self.state().human_tasks.get(&(id.clone(), seq)).cloned())
    }

    async fn human_tasks_of(&self, id: &InstanceId) -> StoreResult<Vec<HumanTaskRow>> {
        Ok(self.state().human_tasks.range(instance_range(id)).map(|(_, row)| row.clone()).collect())
    }

    async fn inbox(&self, query: &InboxQuery, principal: &Principal) -> StoreResult<Vec<HumanTaskRow>> {
        // "Due before" compares milliseconds, as stored times have no finer precision.
        let query = InboxQuery { due_before: query.due_before.map(history_time), ..query.clone() };
        Ok(self
            .state()
            .human_tasks
            .values()
            .filter(|row| {
                query.matches(row) && (may_see(principal, &row.task) || principal.administers(&row.definition))
            })
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SlaStore for MemoryStore {
    async fn slas(&self, query: &SlaQuery) -> StoreResult<Vec<SlaRow>> {
        // One "now" for every row.
        let query = SlaQuery { now: Some(query.now.unwrap_or_else(Utc::now)), ..query.clone() };
        Ok(self
            .state()
            .slas
            .values()
            .filter(|row| query.matches(row))
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }

    async fn sla_compliance(&self, query: &SlaQuery) -> StoreResult<Vec<SlaCompliance>> {
        let now = query.now.unwrap_or_else(Utc::now);
        let query =
            SlaQuery { now: Some(now), state: None, open_only: false, instance: None, after: None, ..query.clone() };
        let mut groups: BTreeMap<(String, Option<String>), SlaCompliance> = BTreeMap::new();
        for row in self.state().slas.values().filter(|row| query.matches(row)) {
            let group =
                groups.entry((row.definition.clone(), row.department.clone())).or_insert_with(|| SlaCompliance {
                    definition: row.definition.clone(),
                    department: row.department.clone(),
                    ..Default::default()
                });
            match row.state(now) {
                SlaStateName::OnTrack => group.on_track += 1,
                SlaStateName::AtRisk => group.at_risk += 1,
                SlaStateName::Breached => group.breached += 1,
                SlaStateName::Met => group.met += 1,
            }
        }
        Ok(groups.into_values().take(SlaQuery::MAX_LIMIT as usize).collect())
    }
}

impl State {
    /// Records a delivery unless its key is taken; returns the stored row's id either way.
    fn enqueue_delivery(&mut self, delivery: &NewDelivery) -> i64 {
        let key = delivery_key(delivery);
        if let Some(id) = self.delivery_keys.get(&key) {
            return *id;
        }
        self.last_delivery_id += 1;
        let id = self.last_delivery_id;
        let row = DeliveryRow {
            id,
            instance: delivery.instance.clone(),
            seq: delivery.seq,
            recipient: delivery.recipient.clone(),
            channel: delivery.channel.clone(),
            status: delivery.status,
            message: delivery.message.clone(),
            not_before: history_time(delivery.not_before),
            digest: delivery.digest,
            attempts: 0,
            last_error: delivery.last_error.clone(),
            created_at: history_time(delivery.created_at),
            sent_at: None,
        };
        self.deliveries.insert(id, row);
        self.delivery_keys.insert(key, id);
        id
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn enqueue_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<Vec<DeliveryRow>> {
        let mut state = self.state();
        let ids: Vec<i64> = deliveries.iter().map(|delivery| state.enqueue_delivery(delivery)).collect();
        Ok(ids.iter().filter_map(|id| state.deliveries.get(id).cloned()).collect())
    }

    async fn deliveries_due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<DeliveryRow>> {
        let state = self.state();
        let mut due: Vec<&DeliveryRow> = state
            .deliveries
            .values()
            .filter(|row| row.status == DeliveryStatus::Pending && row.not_before <= now)
            .collect();
        due.sort_by_key(|row| (row.not_before, row.id));
        Ok(due.into_iter().take(limit as usize).cloned().collect())
    }

    async fn update_delivery(&self, update: &DeliveryUpdate) -> StoreResult<()> {
        let mut state = self.state();
        let Some(row) = state.deliveries.get_mut(&update.id) else {
            return Err(StoreError::Other(format!("delivery {} does not exist", update.id)));
        };
        row.status = update.status;
        row.attempts = update.attempts;
        row.not_before = history_time(update.not_before);
        row.last_error = update.last_error.clone();
        row.sent_at = update.sent_at.map(history_time);
        Ok(())
    }

    async fn deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<DeliveryRow>> {
        let state = self.state();
        Ok(state
            .deliveries
            .range(..query.before.unwrap_or(i64::MAX))
            .rev()
            .map(|(_, row)| row)
            .filter(|row| query.instance.as_ref().is_none_or(|instance| &row.instance == instance))
            .filter(|row| query.recipient.as_ref().is_none_or(|recipient| &row.recipient == recipient))
            .filter(|row| query.status.is_none_or(|status| row.status == status))
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }

    async fn put_in_app(&self, notification: &InAppNotification) -> StoreResult<()> {
        let mut state = self.state();
        if !state.in_app_deliveries.insert(notification.delivery) {
            return Ok(());
        }
        state.last_in_app_id += 1;
        let row = InAppNotification {
            id: state.last_in_app_id,
            created_at: history_time(notification.created_at),
            read_at: notification.read_at.map(history_time),
            ..notification.clone()
        };
        state.in_app.insert(row.id, row);
        Ok(())
    }

    async fn in_app(
        &self,
        user: &str,
        unread_only: bool,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<InAppNotification>> {
        let state = self.state();
        Ok(state
            .in_app
            .range(..before.unwrap_or(i64::MAX))
            .rev()
            .map(|(_, row)| row)
            .filter(|row| row.user == user && (!unread_only || row.read_at.is_none()))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn mark_read(&self, user: &str, ids: &[i64], at: DateTime<Utc>) -> StoreResult<u64> {
        let mut state = self.state();
        let mut changed = 0;
        for id in ids {
            if let Some(row) = state.in_app.get_mut(id)
                && row.user == user
                && row.read_at.is_none()
            {
                row.read_at = Some(history_time(at));
                changed += 1;
            }
        }
        Ok(changed)
    }
}

impl State {
    /// Deploys a definition unless its `(name, version)` is taken (see
    /// [`DefinitionStore::deploy_definition`]).
    fn deploy_definition(&mut self, new: &NewDefinition) -> StoreResult<(DefinitionRow, bool)> {
        let key = (new.name.clone(), new.version.clone());
        if let Some(existing) = self.definition_versions.get(&key).and_then(|seq| self.definitions.get(seq)) {
            if existing.content_hash != new.content_hash {
                return Err(definition_conflict(existing, new));
            }
            return Ok((existing.clone(), false));
        }
        self.last_definition_seq += 1;
        let row = DefinitionRow {
            seq: self.last_definition_seq,
            name: new.name.clone(),
            version: new.version.clone(),
            namespace: new.namespace.clone(),
            content_hash: new.content_hash.clone(),
            source: new.source.clone(),
            deployed_by: new.deployed_by.clone(),
            deployed_at: history_time(new.deployed_at),
        };
        self.definitions.insert(row.seq, row.clone());
        self.definition_versions.insert(key, row.seq);
        Ok((row, true))
    }
}

#[async_trait]
impl DefinitionStore for MemoryStore {
    async fn deploy_definition(&self, definition: &NewDefinition) -> StoreResult<(DefinitionRow, bool)> {
        self.state().deploy_definition(definition)
    }

    async fn definition(&self, name: &str, version: Option<&str>) -> StoreResult<Option<DefinitionRow>> {
        let state = self.state();
        let found = match version {
            Some(version) => state
                .definition_versions
                .get(&(name.to_owned(), version.to_owned()))
                .and_then(|seq| state.definitions.get(seq)),
            None => state.definitions.values().rev().find(|row| row.name == name),
        };
        Ok(found.cloned())
    }

    async fn definitions(&self, query: &DefinitionQuery) -> StoreResult<Vec<DefinitionRow>> {
        let state = self.state();
        let after = query.after.unwrap_or(0);
        Ok(state
            .definitions
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, row)| row)
            .filter(|row| query.matches(row))
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }
}

impl State {
    /// Adds or replaces directory entries: what an import and each single put do.
    /// `person` with the preferences they set for themselves, if they did.
    fn with_own_preferences(&self, person: &Person) -> Person {
        let mut person = person.clone();
        if let Some(own) = self.own_preferences.get(&person.id) {
            person.preferences = own.clone();
        }
        person
    }

    fn put_directory(&mut self, departments: &[Department], groups: &[Group], people: &[Person]) {
        for department in departments {
            self.departments.insert(department.id.clone(), department.clone());
        }
        for group in groups {
            self.groups.insert(group.id.clone(), group.clone());
        }
        for person in people {
            self.people.insert(person.id.clone(), person.clone());
        }
    }
}

#[async_trait]
impl Directory for MemoryStore {
    async fn person(&self, id: &str) -> StoreResult<Option<Person>> {
        let state = self.state();
        Ok(state.people.get(id).map(|person| state.with_own_preferences(person)))
    }

    async fn people(&self, query: &PeopleQuery) -> StoreResult<Vec<Person>> {
        let state = self.state();
        Ok(state
            .people
            .values()
            .filter(|person| query.matches(person))
            .take(query.effective_limit() as usize)
            .map(|person| state.with_own_preferences(person))
            .collect())
    }

    async fn department(&self, id: &str) -> StoreResult<Option<Department>> {
        Ok(self.state().departments.get(id).cloned())
    }

    async fn departments(&self) -> StoreResult<Vec<Department>> {
        Ok(self.state().departments.values().cloned().collect())
    }

    async fn groups(&self) -> StoreResult<Vec<Group>> {
        Ok(self.state().groups.values().cloned().collect())
    }

    async fn put_person(&self, person: &Person) -> StoreResult<()> {
        self.state().put_directory(&[], &[], std::slice::from_ref(person));
        Ok(())
    }

    async fn put_department(&self, department: &Department) -> StoreResult<()> {
        self.state().put_directory(std::slice::from_ref(department), &[], &[]);
        Ok(())
    }

    async fn put_group(&self, group: &Group) -> StoreResult<()> {
        self.state().put_directory(&[], std::slice::from_ref(group), &[]);
        Ok(())
    }

    async fn import(&self, organisation: &Organisation) -> StoreResult<()> {
        self.state().put_directory(&organisation.departments, &organisation.groups, &organisation.people);
        Ok(())
    }

    async fn set_preferences(&self, id: &str, preferences: Option<&Preferences>) -> StoreResult<bool> {
        let mut state = self.state();
        if !state.people.contains_key(id) {
            return Ok(false);
        }
        match preferences {
            Some(preferences) => state.own_preferences.insert(id.to_owned(), preferences.clone()),
            None => state.own_preferences.remove(id),
        };
        Ok(true)
    }
}

#[async_trait]
impl RetentionStore for MemoryStore {
    async fn purge(&self, query: &PurgeQuery) -> StoreResult<Vec<InstanceId>> {
        let mut state = self.state();
        let mut ended: Vec<&InstanceRow> = state.instances.values().filter(|row| query.matches(row)).collect();
        ended.sort_by(|a, b| (a.updated_at, &a.id).cmp(&(b.updated_at, &b.id)));
        let ids: Vec<InstanceId> =
            ended.into_iter().take(query.effective_limit() as usize).map(|row| row.id.clone()).collect();
        if query.dry_run {
            return Ok(ids);
        }
        let gone: HashSet<&InstanceId> = ids.iter().collect();
        let state = &mut *state;
        state.instances.retain(|id, _| !gone.contains(id));
        state.idempotency_keys.retain(|_, id| !gone.contains(id));
        state.history.retain(|(id, _), _| !gone.contains(id));
        state.snapshots.retain(|id, _| !gone.contains(id));
        state.tasks.retain(|(id, _), _| !gone.contains(id));
        state.timers.retain(|(id, _), _| !gone.contains(id));
        state.outbox.retain(|_, row| !gone.contains(&row.instance));
        state.incidents.retain(|_, incident| !gone.contains(&incident.instance));
        state.received_events.retain(|(id, _)| !gone.contains(id));
        state.human_tasks.retain(|(id, _), _| !gone.contains(id));
        state.slas.retain(|(id, _), _| !gone.contains(id));
        state.deliveries.retain(|_, row| !gone.contains(&row.instance));
        state.delivery_keys.retain(|key, _| !gone.contains(&key.0));
        Ok(ids)
    }

    async fn erase_person(&self, erasure: &Erasure) -> StoreResult<ErasureReport> {
        let person = erasure.person.as_str();
        let mut state = self.state();
        let state = &mut *state;
        let mut report = ErasureReport::new(person);
        let holding: BTreeSet<Key> = state
            .human_tasks
            .iter()
            .filter(|(_, row)| task_holds(&row.task, person))
            .map(|(key, _)| key.clone())
            .collect();
        let instances: BTreeSet<InstanceId> = holding.iter().map(|(id, _)| id.clone()).collect();
        let ended = |id: &InstanceId| state.instances.get(id).is_some_and(|row| row.status.is_final());
        (report.instances, report.blocking) = instances.into_iter().partition(|id| ended(id));
        let erasable: HashSet<&InstanceId> = report.instances.iter().collect();
        let events: Vec<Key> = state
            .history
            .iter()
            .filter(|((id, _), event)| erasable.contains(id) && event_holds(event, person))
            .map(|(key, _)| key.clone())
            .collect();
        report.events = events.iter().filter(|key| state.history[*key].can_erase()).count() as u64;
        report.kept_events = events.len() as u64 - report.events;
        report.tasks = holding.len() as u64;
        report.deliveries = state.deliveries.values().filter(|row| row.recipient == person).count() as u64;
        report.notifications = state.in_app.values().filter(|n| n.user == person).count() as u64;
        report.directory = state.people.contains_key(person);
        if !report.blocking.is_empty() || erasure.dry_run {
            return Ok(report);
        }
        for key in &events {
            if let Some(event) = state.history.get_mut(key) {
                event.erase();
            }
        }
        for key in &holding {
            if let Some(row) = state.human_tasks.get_mut(key) {
                scrub_task(&mut row.task, person);
            }
        }
        state.snapshots.retain(|id, _| !erasable.contains(id));
        for incident in state.incidents.values_mut().filter(|incident| erasable.contains(&incident.instance)) {
            incident.pending_input = None;
        }
        state.deliveries.retain(|_, row| row.recipient != person);
        state.delivery_keys.retain(|key, _| key.2 != person);
        let in_app_deliveries = &mut state.in_app_deliveries;
        state.in_app.retain(|_, n| {
            let keep = n.user != person;
            if !keep {
                in_app_deliveries.remove(&n.delivery);
            }
            keep
        });
        if let Some(entry) = state.people.get(person) {
            let scrubbed = scrub_person(entry);
            state.put_directory(&[], &[], &[scrubbed]);
        }
        state.own_preferences.remove(person);
        report.applied = true;
        state.last_erasure_id += 1;
        state.erasures.push(ErasureRecord {
            id: state.last_erasure_id,
            person: person.to_owned(),
            by: erasure.by.clone(),
            at: history_time(erasure.at),
            reason: erasure.reason.clone(),
            report: report.clone(),
        });
        Ok(report)
    }

    async fn erasures(&self, person: Option<&str>) -> StoreResult<Vec<ErasureRecord>> {
        let state = self.state();
        Ok(state.erasures.iter().rev().filter(|r| person.is_none_or(|p| r.person == p)).cloned().collect())
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
}
