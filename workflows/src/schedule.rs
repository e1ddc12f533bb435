//! Scheduled starts: a definition's `schedule` (`cron`, `every`, `after`) starts instances of
//! its latest version when due.
//!
//! ```yaml
//! document:
//!   dsl: '1.0.3'
//!   namespace: training
//!   name: recertification-check
//!   version: '1.0.0'
//!   metadata:
//!     baton:
//!       schedule: { timezone: Europe/Brussels, misfire: runOnce, overlap: skip }
//! schedule:
//!   cron: '0 2 * * *'
//! ```
//!
//! The state of each schedule (its next fire time, its last instance, what it fired and
//! skipped) is in the store, never only in memory: a restarted server goes on from it, and the
//! fire times it missed meanwhile are handled as `misfire` says (`skip`, the default; `runOnce`;
//! `catchUp`). Each start carries the idempotency key `schedule:<definition>:<fire time>`, and
//! the state is written after the start: a crash between the two starts nothing twice.
//! `overlap: skip` (the default) does not start an instance while the previous one of the
//! schedule is still running; `allow` does.
//!
//! `schedule.on` starts an instance for each event that matches it (`one`, or any filter of
//! `any`), with the specification's input: an array holding the event. Events come in through
//! [`Scheduler::on_event`] (the API's `POST /api/v1/events`); each start carries the
//! idempotency key `event:<definition>:<source>:<id>`, so an event delivered twice starts one
//! instance. `all` (an instance from a set of correlated events) is refused at deploy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_engine::store::InstanceStatus;
use baton_engine::{Actor, Engine, EngineError, InstanceId, StartOptions};
use baton_sla::schedule::{Misfire, Recurrence, ScheduleError, due};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::expr::{Limits, Vars};
use crate::model::{AttributeMatch, Filter, Program, Strategy, attribute_matches};

/// Whether a schedule starts an instance while its previous one still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlap {
    #[default]
    Skip,
    Allow,
}

/// One definition's schedule, as its latest deployed version says.
#[derive(Debug)]
struct Entry {
    recurrence: Recurrence,
    misfire: Misfire,
    overlap: Overlap,
    /// What the definition says, to know when a new version changed it.
    spec: Value,
    /// The stored state's next fire time, kept here so that a tick reads the store only for
    /// schedules that are due.
    next_at: Option<DateTime<Utc>>,
}

/// A schedule's state, kept in the store's settings under `schedule:<definition>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleState {
    pub spec: Value,
    pub started_at: DateTime<Utc>,
    pub next_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_instance: Option<InstanceId>,
    pub fired: u64,
    pub skipped: u64,
}

fn state_key(definition: &str) -> String {
    format!("schedule:{definition}")
}

/// The schedule a definition declares, or `None` (an event-driven `schedule.on` is not run by
/// the scheduler).
pub fn schedule_of(program: &Program) -> Result<Option<(Recurrence, Misfire, Overlap, Value)>, ScheduleError> {
    schedule_in(program.definition.as_ref())
}

/// [`schedule_of`] from a definition's document, which compiling a definition checks, so that
/// a definition whose schedule does not parse is refused before it is stored.
pub(crate) fn schedule_in(definition: &Value) -> Result<Option<(Recurrence, Misfire, Overlap, Value)>, ScheduleError> {
    let Some(schedule) = definition.get("schedule") else { return Ok(None) };
    let options = definition.pointer("/document/metadata/baton/schedule");
    let text = |key: &str| options.and_then(|o| o.get(key)).and_then(Value::as_str);
    let recurrence = if let Some(cron) = schedule.get("cron").and_then(Value::as_str) {
        Recurrence::cron(cron, text("timezone"))?
    } else if let Some(every) = schedule.get("every").and_then(crate::duration::parse) {
        Recurrence::every(every)?
    } else if let Some(after) = schedule.get("after").and_then(crate::duration::parse) {
        Recurrence::After(after)
    } else {
        return Ok(None);
    };
    let misfire = match text("misfire") {
        Some("runOnce") => Misfire::RunOnce,
        Some("catchUp") => Misfire::CatchUp,
        _ => Misfire::Skip,
    };
    let overlap = if text("overlap") == Some("allow") { Overlap::Allow } else { Overlap::Skip };
    let spec = json!({ "schedule": schedule, "options": options });
    Ok(Some((recurrence, misfire, overlap, spec)))
}

/// Starts the instances of scheduled definitions when they are due.
pub struct Scheduler {
    engine: Arc<Engine>,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// The `schedule.on` of each definition's latest version.
    starts_on: Mutex<BTreeMap<String, Arc<Strategy>>>,
}

/// An instance an event started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventStart {
    pub definition: String,
    pub instance: InstanceId,
}

/// Whether an event matches a filter's attributes (`correlate` has nothing to compare with
/// before an instance exists, and is not looked at).
fn filter_matches(filter: &Filter, event: &Value) -> bool {
    filter.attributes.iter().all(|(attribute, matcher)| {
        let actual = event.get(attribute).cloned().unwrap_or(Value::Null);
        match matcher {
            AttributeMatch::Exact(wanted) => attribute_matches(wanted, &actual),
            AttributeMatch::Expr(expr) => expr.eval_bool(&actual, &Vars::new(), &Limits::default()).unwrap_or(false),
        }
    })
}

fn starts(strategy: &Strategy, event: &Value) -> bool {
    match strategy {
        Strategy::One(filter) => filter_matches(filter, event),
        Strategy::Any { filters, .. } => filters.is_empty() || filters.iter().any(|f| filter_matches(f, event)),
        Strategy::All(_) => false,
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("entries", &self.entries()).finish_non_exhaustive()
    }
}

impl Scheduler {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, entries: Mutex::default(), starts_on: Mutex::default() }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the schedule of a definition's newly deployed latest version (`namespace/name`
    /// from its document); a version without one stops the definition's schedule. A schedule
    /// that changed starts again from now; an unchanged one keeps its stored state.
    pub async fn register(&self, program: &Program) -> Result<(), EngineError> {
        let definition = program.document.qualified_name();
        match &program.starts_on {
            Some(strategy) => {
                self.on_entries().insert(definition.clone(), Arc::clone(strategy));
            }
            None => {
                self.on_entries().remove(&definition);
            }
        }
        let found = schedule_of(program).map_err(|err| EngineError::InvalidArgument(format!("{definition}: {err}")))?;
        let Some((recurrence, misfire, overlap, spec)) = found else {
            self.entries().remove(&definition);
            return Ok(());
        };
        let state = match self.state(&definition).await? {
            Some(stored) if stored.spec == spec => stored,
            _ => {
                let now = self.engine.clock().now();
                let state = ScheduleState {
                    next_at: recurrence.first(now),
                    spec: spec.clone(),
                    started_at: now,
                    last_fired_at: None,
                    last_instance: None,
                    fired: 0,
                    skipped: 0,
                };
                self.save(&definition, &state).await?;
                state
            }
        };
        self.entries().insert(definition, Entry { recurrence, misfire, overlap, spec, next_at: state.next_at });
        Ok(())
    }

    fn on_entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Strategy>>> {
        self.starts_on.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts, for an event (a CloudEvent as JSON), an instance of the latest version of each
    /// definition whose `schedule.on` it matches, with `[event]` as input; a second delivery of
    /// the same event (same `source` and `id`) starts nothing new and answers the same instances.
    pub async fn on_event(&self, event: &Value, actor: Actor) -> Result<Vec<EventStart>, EngineError> {
        let matching: Vec<String> =
            self.on_entries().iter().filter(|(_, strategy)| starts(strategy, event)).map(|(d, _)| d.clone()).collect();
        let text = |key: &str| event.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut started = Vec::with_capacity(matching.len());
        for definition in matching {
            let options = StartOptions {
                // JSON keeps the parts apart whatever they hold (a source is a URI, with colons).
                idempotency_key: Some(format!("event:{}", json!([definition, text("source"), text("id")]))),
                actor: Some(actor.clone()),
                tags: vec!["event".into()],
                ..StartOptions::default()
            };
            let instance = self.engine.start(&definition, Value::Array(vec![event.clone()]), options).await?.id;
            started.push(EventStart { definition, instance });
        }
        Ok(started)
    }

    /// A schedule's stored state.
    pub async fn state(&self, definition: &str) -> Result<Option<ScheduleState>, EngineError> {
        let text = self.engine.store().setting(&state_key(definition)).await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn save(&self, definition: &str, state: &ScheduleState) -> Result<(), EngineError> {
        let text = serde_json::to_string(state).unwrap_or_default();
        Ok(self.engine.store().set_setting(&state_key(definition), &text).await?)
    }

    /// Starts what is due now; returns the instances started.
    pub async fn tick(&self) -> Result<Vec<InstanceId>, EngineError> {
        let now = self.engine.clock().now();
        let due_now: Vec<(String, Recurrence, Misfire, Overlap, Value)> = self
            .entries()
            .iter()
            .filter(|(_, e)| e.next_at.is_some_and(|at| at <= now))
            .map(|(name, e)| (name.clone(), e.recurrence.clone(), e.misfire, e.overlap, e.spec.clone()))
            .collect();
        let mut started = Vec::new();
        for (definition, recurrence, misfire, overlap, spec) in due_now {
            let Some(mut state) = self.state(&definition).await? else { continue };
            let Some(planned) = state.next_at.filter(|at| *at <= now) else { continue };
            if state.spec != spec {
                continue;
            }
            let plan = due(&recurrence, state.started_at, planned, now, misfire);
            state.skipped += plan.skipped as u64;
            for at in plan.fire {
                if overlap == Overlap::Skip && self.still_running(state.last_instance.as_ref()).await? {
                    state.skipped += 1;
                    continue;
                }
                let options = StartOptions {
                    idempotency_key: Some(format!("schedule:{definition}:{}", at.timestamp_millis())),
                    actor: Some(Actor::System),
                    tags: vec!["schedule".into()],
                    ..StartOptions::default()
                };
                let input = json!({ "scheduledAt": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) });
                let instance = self.engine.start(&definition, input, options).await?.id;
                state.fired += 1;
                state.last_fired_at = Some(at);
                state.last_instance = Some(instance.clone());
                started.push(instance);
            }
            state.next_at = plan.next;
            self.save(&definition, &state).await?;
            if let Some(entry) = self.entries().get_mut(&definition) {
                entry.next_at = state.next_at;
            }
        }
        Ok(started)
    }

    async fn still_running(&self, instance: Option<&InstanceId>) -> Result<bool, EngineError> {
        let Some(instance) = instance else { return Ok(false) };
        let row = self.engine.store().instance(instance).await?;
        Ok(row.is_some_and(|r| !r.status.is_final() && r.status != InstanceStatus::Faulted))
    }

    /// Ticks every second until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if let Err(err) = self.tick().await {
                tracing::warn!(error = %err, "scheduler: a scheduled start failed; trying again");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
