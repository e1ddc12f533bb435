//! Offline replay of stored instances (`baton replay`): verify the whole hash chain, rebuild the
//! state from history alone, and compare it with the state loaded from the newest snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::error::EngineError;
use crate::history::{GENESIS_HASH, InstanceId, Seq, StoredEvent};
use crate::human::HumanTaskRow;
use crate::instance::{Effect, Instance};
use crate::orchestration::{DynOrchestration, Erased, Orchestration};
use crate::store::{InstanceStatus, InstanceWrite, SlaQuery, SlaRow, Store};

/// What a replay found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    pub instance: InstanceId,
    pub definition: String,
    /// The status stored in the instance row.
    pub status: InstanceStatus,
    /// Events in the whole history (every run).
    pub events: u64,
    /// Events replayed (the current run).
    pub replayed: u64,
    /// The first problem met: a broken chain, an undecodable event, nondeterminism.
    pub error: Option<String>,
    /// The status the replay arrived at.
    pub replayed_status: Option<InstanceStatus>,
    /// The orchestration's state after the replay.
    pub state: Option<Value>,
    /// Whether loading from the newest snapshot gives the same state (None: no snapshot).
    pub snapshot_matches: Option<bool>,
}

/// Replays stored instances with a set of known orchestrations.
#[derive(Default)]
pub struct Replayer {
    orchestrations: HashMap<String, Arc<dyn DynOrchestration>>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer").field("orchestrations", &self.orchestrations.keys().collect::<Vec<_>>()).finish()
    }
}

impl Replayer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn orchestration<O: Orchestration>(mut self, orchestration: O) -> Self {
        let erased: Arc<dyn DynOrchestration> = Arc::new(Erased(orchestration));
        self.orchestrations.insert(erased.definition().key(), erased);
        self
    }

    /// The orchestration known as a key, for instances that moved between versions.
    fn versions(&self) -> impl Fn(&str) -> Option<Arc<dyn DynOrchestration>> + '_ {
        |key| self.orchestrations.get(key).cloned()
    }

    pub async fn replay(&self, store: &dyn Store, id: &InstanceId) -> Result<ReplayReport, EngineError> {
        let row = store.instance(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone()))?;
        let key = format!("{}@{}", row.orchestration, row.version);
        let mut report = ReplayReport {
            instance: id.clone(),
            definition: key.clone(),
            status: row.status,
            events: 0,
            replayed: 0,
            error: None,
            replayed_status: None,
            state: None,
            snapshot_matches: None,
        };
        let history = read_all(store, id, 0).await?;
        report.events = history.len() as u64;
        if let Err(broken) = check_chain(&history, &row.last_hash) {
            report.error = Some(broken.detail);
            return Ok(report);
        }
        if !self.orchestrations.contains_key(&key) {
            report.error = Some(format!("no orchestration is known as {key}"));
            return Ok(report);
        }
        let run: Vec<StoredEvent> = history.into_iter().filter(|e| e.seq >= row.run_start).collect();
        report.replayed = run.len() as u64;
        let versions = self.versions();
        let replayed = match Instance::replay_collecting(&versions, &row, None, &run, None) {
            Ok(instance) => instance,
            Err(err) => {
                report.error = Some(err.to_string());
                return Ok(report);
            }
        };
        report.replayed_status = Some(replayed.status);
        report.state = Some(replayed.user_state());
        if let Some(loaded) = store.load(id).await?
            && let Some(snapshot) = &loaded.snapshot
        {
            let from_snapshot = Instance::replay_collecting(&versions, &row, Some(snapshot), &loaded.events, None);
            report.snapshot_matches = Some(from_snapshot.is_ok_and(|s| s.same_state(&replayed)));
        }
        Ok(report)
    }
}

impl Replayer {
    /// Loads an instance cold, as the runtime does after a restart: from its newest snapshot
    /// and the events after it, or (`use_snapshot = false`) from the current run's history
    /// alone. Returns the number of events replayed.
    pub async fn cold_load(
        &self,
        store: &dyn Store,
        id: &InstanceId,
        use_snapshot: bool,
    ) -> Result<usize, EngineError> {
        let row = store.instance(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone()))?;
        let key = format!("{}@{}", row.orchestration, row.version);
        if !self.orchestrations.contains_key(&key) {
            return Err(EngineError::DefinitionNotFound(key));
        }
        let versions = self.versions();
        if use_snapshot {
            let loaded = store.load(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone()))?;
            Instance::replay_collecting(&versions, &loaded.row, loaded.snapshot.as_ref(), &loaded.events, None)?;
            Ok(loaded.events.len())
        } else {
            let events: Vec<StoredEvent> = read_all(store, id, row.run_start).await?;
            Instance::replay_collecting(&versions, &row, None, &events, None)?;
            Ok(events.len())
        }
    }
}

/// What rebuilding an instance's read models from its history found
/// ([`Replayer::rebuild_projections`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    pub instance: InstanceId,
    /// How the stored rows differ from those derived from history; empty when they are equal.
    pub differences: Vec<String>,
    /// The derived rows were written over the stored ones.
    pub applied: bool,
    /// Why the instance could not be rebuilt (no definition known, a broken history).
    pub error: Option<String>,
    /// Its history holds erased payloads (personal data): its rows were scrubbed with them and
    /// cannot be derived again, so it is left as it is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

impl Replayer {
    /// Rebuilds the read models of an instance from its history: replays its current run from
    /// its first event (no snapshot) and keeps the rows its events led to, its summary row, its
    /// human tasks (open and closed, with their access keys) and its SLA clocks; compares them
    /// with the stored rows and, with `apply`, writes the derived rows over them when they
    /// differ. Bookkeeping times (`updatedAt`) are not compared.
    pub async fn rebuild_projections(
        &self,
        store: &dyn Store,
        id: &InstanceId,
        apply: bool,
    ) -> Result<Rebuilt, EngineError> {
        let row = store.instance(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone()))?;
        let key = format!("{}@{}", row.orchestration, row.version);
        let mut rebuilt =
            Rebuilt { instance: id.clone(), differences: Vec::new(), applied: false, error: None, erased: false };
        if !self.orchestrations.contains_key(&key) {
            rebuilt.error = Some(format!("no orchestration is known as {key}"));
            return Ok(rebuilt);
        }
        let events = read_all(store, id, row.run_start).await?;
        let stored_tasks: std::collections::BTreeMap<Seq, HumanTaskRow> =
            store.human_tasks_of(id).await?.into_iter().map(|t| (t.seq, t)).collect();
        // Events of the first history schema keep their payloads when the person is erased
        // (their hash covers them), but the task rows were scrubbed: deriving them again would
        // bring the data back.
        if events.iter().any(StoredEvent::is_erased) || stored_tasks.values().any(|row| row.task.holds_erased()) {
            rebuilt.erased = true;
            return Ok(rebuilt);
        }
        let mut effects = Vec::new();
        let replayed = match Instance::replay_collecting(&self.versions(), &row, None, &events, Some(&mut effects)) {
            Ok(instance) => instance,
            Err(err) => {
                rebuilt.error = Some(err.to_string());
                return Ok(rebuilt);
            }
        };
        let mut human_tasks = std::collections::BTreeMap::new();
        let mut slas = std::collections::BTreeMap::new();
        for effect in effects {
            match effect {
                Effect::HumanTask(task) => {
                    human_tasks.insert(task.seq, *task);
                }
                Effect::Sla(sla) => {
                    slas.insert(sla.seq, *sla);
                }
                _ => {}
            }
        }
        let derived_row = replayed.row(row.updated_at);
        let differences = &mut rebuilt.differences;
        if let (Value::Object(stored), Value::Object(derived)) = (to_value(&row), to_value(&derived_row)) {
            for (field, value) in &derived {
                if stored.get(field) != Some(value) {
                    differences.push(format!(
                        "instance row: {field} is {} in the store, {value} from history",
                        stored.get(field).map_or("absent".to_owned(), Value::to_string)
                    ));
                }
            }
        }
        for seq in stored_tasks.keys().chain(human_tasks.keys()).collect::<std::collections::BTreeSet<_>>() {
            match (stored_tasks.get(seq), human_tasks.get(seq)) {
                (Some(stored), Some(derived))
                    if stored.task == derived.task && stored.definition == derived.definition => {}
                (Some(_), Some(_)) => {
                    differences.push(format!("human task {seq}: the stored row differs from history"))
                }
                (Some(_), None) => differences.push(format!("human task {seq}: stored, but not in history")),
                (None, Some(_)) => differences.push(format!("human task {seq}: in history, missing from the store")),
                (None, None) => {}
            }
        }
        let query = SlaQuery { instance: Some(id.clone()), limit: SlaQuery::MAX_LIMIT, ..SlaQuery::default() };
        let stored_slas: std::collections::BTreeMap<Seq, SlaRow> =
            store.slas(&query).await?.into_iter().map(|s| (s.seq, s)).collect();
        for seq in stored_slas.keys().chain(slas.keys()).collect::<std::collections::BTreeSet<_>>() {
            match (stored_slas.get(seq), slas.get(seq)) {
                (Some(stored), Some(derived)) if stored == derived => {}
                (Some(_), Some(_)) => differences.push(format!("SLA clock {seq}: the stored row differs from history")),
                (Some(_), None) => differences.push(format!("SLA clock {seq}: stored, but not in history")),
                (None, Some(_)) => differences.push(format!("SLA clock {seq}: in history, missing from the store")),
                (None, None) => {}
            }
        }
        if apply && !rebuilt.differences.is_empty() {
            let write = InstanceWrite {
                instance: Some(derived_row),
                human_tasks: human_tasks.into_values().collect(),
                slas: slas.into_values().collect(),
                ..InstanceWrite::default()
            };
            store.commit(&[write]).await?;
            rebuilt.applied = true;
        }
        Ok(rebuilt)
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Where a history's hash chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Broken {
    /// The first event that does not fit (its content, its link to the one before, or the
    /// instance row's record of the chain head).
    pub seq: Seq,
    pub detail: String,
}

/// What [`verify`] found for one instance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    pub instance: InstanceId,
    pub events: u64,
    /// Events whose payload was erased (personal data); their commitments still chain.
    pub erased: u64,
    pub broken: Option<Broken>,
}

/// Checks an instance's whole hash chain, from its first event to the head its row records:
/// every event must hash to its stored hash and link to the one before it. An edited row is
/// named by its sequence number.
pub async fn verify(store: &dyn Store, id: &InstanceId) -> Result<Verified, EngineError> {
    let row = store.instance(id).await?.ok_or_else(|| EngineError::InstanceNotFound(id.clone()))?;
    let history = read_all(store, id, 0).await?;
    Ok(Verified {
        instance: id.clone(),
        events: history.len() as u64,
        erased: history.iter().filter(|event| event.is_erased()).count() as u64,
        broken: check_chain(&history, &row.last_hash).err(),
    })
}

fn check_chain(history: &[StoredEvent], head: &str) -> Result<(), Broken> {
    let mut prev = GENESIS_HASH.to_owned();
    for (expected, event) in history.iter().enumerate() {
        if event.seq != expected as Seq {
            return Err(Broken { seq: expected as Seq, detail: format!("event {expected} is missing") });
        }
        event.check(Some(&prev)).map_err(|err| Broken { seq: event.seq, detail: err.to_string() })?;
        prev = event.hash.clone();
    }
    if prev != head {
        let seq = history.last().map_or(0, |e| e.seq);
        return Err(Broken {
            seq,
            detail: format!("the history ends with hash {prev}, the instance row records {head}"),
        });
    }
    Ok(())
}

async fn read_all(store: &dyn Store, id: &InstanceId, mut from: Seq) -> Result<Vec<StoredEvent>, EngineError> {
    let mut events = Vec::new();
    loop {
        let page = store.history(id, from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        let done = page.len() < 10_000;
        events.extend(page);
        if done {
            break;
        }
    }
    Ok(events)
}
