//! Read models built from the domain events definitions emit.
//!
//! The design is in docs/architecture.md ("Read models from domain events"). A [`Projection`]
//! is pure: the keys an event touches and, for each, the row after it. The [`Projector`] feeds
//! projections the outbox in commit order and writes each batch's rows with the projection's
//! new position in one transaction, so every event counts exactly once; [`rebuild`] derives
//! the rows again from the histories and compares them with the stored ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::EngineError;
use crate::history::{EventKind, InstanceId, Seq, time_from_ms};
use crate::instance::SLA_BREACHED;
use crate::runtime::Change;
use crate::store::{OutboxRow, Store, StoreError};

/// The history tag of `Emitted`, the events projections are fed.
const EMITTED_TAG: u16 = 13;

/// How many outbox rows one transaction of the projector takes.
const BATCH: u32 = 500;

/// How often the projector looks at the outbox when no commit woke it.
const POLL: Duration = Duration::from_secs(2);

/// A read model: which rows an event touches, and what each becomes.
pub trait Projection: Send + Sync {
    /// A stable name: the rows and the position are stored under it.
    fn name(&self) -> &str;
    /// The keys of the rows the event changes; none when the projection ignores it.
    fn keys(&self, event: &OutboxRow) -> Vec<String>;
    /// The row `key` after the event, from the row before it (`None`: no row; returning `None`
    /// deletes it).
    fn apply(&self, event: &OutboxRow, key: &str, row: Option<Value>) -> Option<Value>;
}

/// The emitted domain events among outbox rows: the engine's own rows (SLA breaches) are for
/// relays, and a rebuild from history sees only what definitions emitted.
fn is_domain_event(row: &OutboxRow) -> bool {
    row.kind != SLA_BREACHED
}

/// Applies events to the rows they touch, loading each row once.
async fn fold(
    store: &dyn Store,
    projection: &dyn Projection,
    events: &[OutboxRow],
) -> Result<BTreeMap<String, Option<Value>>, EngineError> {
    let touched: Vec<(usize, Vec<String>)> = events.iter().enumerate().map(|(i, e)| (i, projection.keys(e))).collect();
    let mut keys: Vec<String> = touched.iter().flat_map(|(_, keys)| keys.iter().cloned()).collect();
    keys.sort();
    keys.dedup();
    let mut rows: BTreeMap<String, Option<Value>> = keys.iter().map(|key| (key.clone(), None)).collect();
    for chunk in keys.chunks(BATCH as usize) {
        for (key, row) in store.projection_rows(projection.name(), chunk).await? {
            rows.insert(key, Some(row));
        }
    }
    for (index, keys) in touched {
        for key in keys {
            let before = rows.get_mut(&key).and_then(Option::take);
            rows.insert(key.clone(), projection.apply(&events[index], &key, before));
        }
    }
    Ok(rows)
}

/// Feeds projections the outbox, each from its own position.
pub struct Projector {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    projections: Vec<Arc<dyn Projection>>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.projections.iter().map(|p| p.name()).collect();
        f.debug_struct("Projector").field("projections", &names).finish_non_exhaustive()
    }
}

impl Projector {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, projections: Vec<Arc<dyn Projection>>) -> Self {
        Self { store, clock, projections }
    }

    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    /// Applies every committed event not applied yet; returns how many outbox rows each
    /// projection read.
    pub async fn catch_up(&self) -> Result<u64, EngineError> {
        let mut read = 0;
        for projection in &self.projections {
            loop {
                let count = self.step(projection.as_ref()).await?;
                read += count;
                if count < u64::from(BATCH) {
                    break;
                }
            }
        }
        Ok(read)
    }

    /// One batch of one projection, in one transaction with its new position.
    async fn step(&self, projection: &dyn Projection) -> Result<u64, EngineError> {
        let name = projection.name();
        let from = self.store.projection_position(name).await?;
        let batch = self.store.outbox_after(from, BATCH).await?;
        let Some(to) = batch.last().map(|(id, _)| *id) else { return Ok(0) };
        let events: Vec<OutboxRow> = batch.iter().map(|(_, row)| row.clone()).filter(is_domain_event).collect();
        let rows: Vec<(String, Option<Value>)> =
            fold(self.store.as_ref(), projection, &events).await?.into_iter().collect();
        self.store.apply_projection(name, from, to, &rows, self.clock.now()).await?;
        Ok(batch.len() as u64)
    }

    /// Catches up after every commit that emitted something (and every few seconds), until
    /// cancelled. A failed batch is logged and tried again: nothing was written.
    pub async fn run(
        self: Arc<Self>,
        mut changes: tokio::sync::broadcast::Receiver<Arc<Change>>,
        cancel: CancellationToken,
    ) {
        loop {
            if let Err(error) = self.catch_up().await {
                tracing::warn!(%error, "the read models could not take the latest events; trying again");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
                received = changes.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = received {
                        return;
                    }
                }
            }
        }
    }
}

/// What a rebuild found for one projection.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionRebuilt {
    pub projection: String,
    /// Rows derived from history.
    pub rows: usize,
    /// Keys whose stored row differs from the derived one.
    pub differing: Vec<String>,
    /// Keys derived from history that the store lacks.
    pub missing: Vec<String>,
    /// Keys the store holds that history no longer derives (their instances were purged):
    /// kept, even with `apply`.
    pub kept: Vec<String>,
    pub applied: bool,
}

impl ProjectionRebuilt {
    pub fn is_equal(&self) -> bool {
        self.differing.is_empty() && self.missing.is_empty()
    }
}

/// The domain events an instance's history emitted, as the outbox held them.
pub async fn emitted(store: &dyn Store, id: &InstanceId) -> Result<Vec<OutboxRow>, EngineError> {
    let mut rows = Vec::new();
    let mut from: Seq = 0;
    loop {
        let page = store.history(id, from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for event in page.iter().filter(|event| event.tag == EMITTED_TAG) {
            let kind = EventKind::decode(event.tag, event.schema, &event.payload)
                .map_err(|err| StoreError::Corrupt(format!("{id} seq {}: {err}", event.seq)))?;
            if let EventKind::Emitted(emitted) = kind {
                rows.push(OutboxRow {
                    instance: id.clone(),
                    seq: event.seq,
                    kind: emitted.kind,
                    payload: emitted.payload,
                    created_at: time_from_ms(event.at_ms),
                });
            }
        }
        if page.len() < 10_000 {
            break;
        }
    }
    Ok(rows.into_iter().filter(is_domain_event).collect())
}

/// Derives every projection again from the histories of `instances` (all of the store's, for
/// a full rebuild) in time order, compares the rows with the stored ones and, with `apply`,
/// writes the derived rows over them (the position is left where it is: the projector has
/// already read those events). Rows history no longer derives are kept.
pub async fn rebuild(
    store: &dyn Store,
    clock: &dyn Clock,
    projections: &[Arc<dyn Projection>],
    instances: &[InstanceId],
    apply: bool,
) -> Result<Vec<ProjectionRebuilt>, EngineError> {
    let mut events = Vec::new();
    for id in instances {
        events.extend(emitted(store, id).await?);
    }
    events.sort_by(|a, b| (a.created_at, &a.instance, a.seq).cmp(&(b.created_at, &b.instance, b.seq)));
    let mut reports = Vec::new();
    for projection in projections {
        let name = projection.name();
        let mut derived: BTreeMap<String, Value> = BTreeMap::new();
        for event in &events {
            for key in projection.keys(event) {
                match projection.apply(event, &key, derived.remove(&key)) {
                    Some(row) => derived.insert(key, row),
                    None => None,
                };
            }
        }
        let stored: BTreeMap<String, Value> = store.all_projection_rows(name).await?.into_iter().collect();
        let mut report = ProjectionRebuilt { projection: name.to_owned(), rows: derived.len(), ..Default::default() };
        for (key, row) in &derived {
            match stored.get(key) {
                Some(existing) if existing == row => {}
                Some(_) => report.differing.push(key.clone()),
                None => report.missing.push(key.clone()),
            }
        }
        report.kept = stored.keys().filter(|key| !derived.contains_key(*key)).cloned().collect();
        if apply && !report.is_equal() {
            let position = store.projection_position(name).await?;
            let changed: Vec<(String, Option<Value>)> = report
                .differing
                .iter()
                .chain(&report.missing)
                .map(|key| (key.clone(), derived.get(key).cloned()))
                .collect();
            store.apply_projection(name, position, position, &changed, clock.now()).await?;
            report.applied = true;
        }
        reports.push(report);
    }
    Ok(reports)
}
