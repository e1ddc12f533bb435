//! In-memory store, for tests and runs that need no durability.
//!
//! It follows the SQLite store's rules exactly, so code tested against it behaves the same on
//! disk (the contract suite checks both): a commit is all-or-nothing, duplicate keys are
//! conflicts, times keep millisecond precision, and orderings and limits match. A commit
//! validates the whole batch before touching anything, which is what makes a failed commit
//! leave no trace without copying the state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    HistoryStore, Incident, IncidentStore, InstanceFilter, InstanceRow, InstanceStatus, InstanceWrite, LoadedInstance,
    NewIncident, OutboxRow, OutboxStore, SettingsStore, SnapshotRow, StepStore, Store, StoreError, StoreResult,
    TaskRow, TaskStore, TimerRow, TimerStore,
};
use crate::history::{InstanceId, Seq, StoredEvent, history_time};

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
    incidents: BTreeMap<i64, Incident>,
    /// Like AUTOINCREMENT: ids only grow and are never reused, even after deletes.
    last_outbox_id: i64,
    last_incident_id: i64,
    received_events: HashSet<(InstanceId, String)>,
    settings: HashMap<String, String>,
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
    fn apply(&mut self, writes: &[InstanceWrite]) {
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
    }

    fn upsert_instance(&mut self, row: &InstanceRow) {
        let row = InstanceRow {
            created_at: history_time(row.created_at),
            updated_at: history_time(row.updated_at),
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

fn normalized_task(task: &TaskRow) -> TaskRow {
    TaskRow { visible_at: history_time(task.visible_at), ..task.clone() }
}

#[async_trait]
impl StepStore for MemoryStore {
    async fn commit(&self, writes: &[InstanceWrite]) -> StoreResult<()> {
        let mut state = self.state();
        state.validate(writes)?;
        state.apply(writes);
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
            .filter(|row| filter.status.is_none_or(|status| row.status == status))
            .filter(|row| filter.orchestration.as_ref().is_none_or(|name| &row.orchestration == name))
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

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }
}
