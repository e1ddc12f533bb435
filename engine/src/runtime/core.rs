//! The core loop: inputs in, steps out, one group commit per turn.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dispatch::spawn_attempt;
use super::timers::TimerWindow;
use super::{Migrate, Migration, MovedTask, Outcome, RaiseEvent, Raised, Resolution, Shared, Started};
use crate::activity::{ActivityError, ActivityOptions, Failure};
use crate::error::EngineError;
use crate::history::{
    ActivityCompleted, ActivityFailed, Actor, ChildCompleted, ChildFailed, EventKind, EventReceived,
    HumanTaskCommented, HumanTaskCompleted, HumanTaskDelegated, HumanTaskReassigned, HumanTaskRef, IncidentRaised,
    IncidentResolved, InstanceId, InstanceStarted, InstanceTerminated, Reason, Seq, StoredEvent, TimerRef,
};
use crate::human::{HumanTaskRow, Principal, TaskAction, TaskRefusal, check_action, may_see};
use crate::instance::{Effect, INTERPRETER_VERSION, Instance, SLA_BREACHED, Step, StepError};
use crate::orchestration::FaultKind;
use crate::store::{
    IncidentKind, InstanceStatus, InstanceWrite, LoadedInstance, NewIncident, ParentRef, StoreError, TaskRow,
};

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// What reaches the core through its channel.
pub(crate) enum Input {
    Start {
        id: InstanceId,
        definition: String,
        input: Value,
        idempotency_key: Option<String>,
        business_key: Option<String>,
        /// Sorted, without repeats.
        tags: Vec<String>,
        actor: Actor,
        reply: Reply<Started>,
    },
    TaskAction {
        id: InstanceId,
        task: Seq,
        principal: Principal,
        action: TaskAction,
        reply: Reply<HumanTaskRow>,
    },
    Suspend {
        id: InstanceId,
        reason: String,
        actor: Actor,
        resume: bool,
        reply: Reply<()>,
    },
    Raise {
        id: InstanceId,
        event: RaiseEvent,
        reply: Reply<Raised>,
    },
    Terminate {
        id: InstanceId,
        reason: String,
        actor: Actor,
        reply: Reply<()>,
    },
    RetryIncident {
        incident: i64,
        reason: String,
        actor: Actor,
        resolution: Resolution,
        reply: Reply<()>,
    },
    Watch {
        id: InstanceId,
        reply: Reply<Outcome>,
    },
    Migrate {
        id: InstanceId,
        request: Migrate,
        actor: Actor,
        reply: Reply<Migration>,
    },
    ActivityDone {
        id: InstanceId,
        seq: Seq,
        token: u64,
        attempt: u32,
        outcome: Result<Value, ActivityError>,
    },
}

/// How an instance starts: by key, as a child, by whom, with what business key and tags.
struct StartHow {
    idempotency_key: Option<String>,
    parent: Option<ParentRef>,
    actor: Actor,
    business_key: Option<String>,
    tags: Vec<String>,
}

/// The people an action names, who must exist in the directory.
fn action_people(action: &TaskAction) -> Vec<&str> {
    match action {
        TaskAction::Delegate { to } => vec![to.as_str()],
        TaskAction::Reassign { to } => to.users.iter().map(String::as_str).collect(),
        TaskAction::Complete { on_behalf_of: Some(other), .. } => vec![other.as_str()],
        _ => Vec::new(),
    }
}

/// The history event that records an accepted action.
fn action_event(task: Seq, action: TaskAction) -> EventKind {
    match action {
        TaskAction::Claim => EventKind::HumanTaskClaimed(HumanTaskRef { task }),
        TaskAction::Unclaim => EventKind::HumanTaskUnclaimed(HumanTaskRef { task }),
        TaskAction::Delegate { to } => EventKind::HumanTaskDelegated(HumanTaskDelegated { task, to }),
        TaskAction::Reassign { to } => {
            EventKind::HumanTaskReassigned(HumanTaskReassigned { task, to, by_workflow: false })
        }
        TaskAction::Complete { outcome, data, on_behalf_of } => {
            EventKind::HumanTaskCompleted(HumanTaskCompleted { task, outcome, data, on_behalf_of })
        }
        TaskAction::Comment { text } => EventKind::HumanTaskCommented(HumanTaskCommented { task, text }),
    }
}

/// Validates completion data against the task's form (a JSON Schema); lists every problem.
fn check_form(form: &Value, data: &Value) -> Result<(), Vec<String>> {
    let validator =
        jsonschema::validator_for(form).map_err(|err| vec![format!("the task's form is not a valid schema: {err}")])?;
    let problems: Vec<String> = validator
        .iter_errors(data)
        .map(|err| {
            let at = err.instance_path().to_string();
            if at.is_empty() { err.to_string() } else { format!("{at}: {err}") }
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Work inside one turn: inputs, and what steps of this turn caused (children, parents, timers).
enum Work {
    Input(Input),
    TimerFired { id: InstanceId, seq: Seq },
    StartChild { id: InstanceId, definition: String, input: Value, parent: ParentRef, started_by: Option<String> },
    ChildOutcome { parent: ParentRef, outcome: Result<Value, Failure> },
    Redeliver { id: InstanceId, input: Redelivery },
}

impl Work {
    fn instance(&self) -> Option<&InstanceId> {
        match self {
            Work::Input(Input::Start { id, .. }) => Some(id),
            Work::Input(
                Input::Raise { id, .. }
                | Input::Terminate { id, .. }
                | Input::ActivityDone { id, .. }
                | Input::TaskAction { id, .. }
                | Input::Suspend { id, .. }
                | Input::Migrate { id, .. },
            ) => Some(id),
            Work::TimerFired { id, .. } | Work::Redeliver { id, .. } => Some(id),
            Work::ChildOutcome { parent, .. } => Some(&parent.instance),
            Work::Input(Input::Watch { .. } | Input::RetryIncident { .. }) | Work::StartChild { .. } => None,
        }
    }
}

/// An input an instance could not take, kept with its incident so a retry delivers it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "camelCase")]
enum Redelivery {
    ActivityCompleted { seq: Seq, result: Value, attempt: u32 },
    ActivityFailed { seq: Seq, failure: Failure, attempt: u32 },
    TimerFired { seq: Seq },
    Event { name: String, event_id: Option<String>, payload: Value, actor: Actor },
    ChildCompleted { seq: Seq, output: Value },
    ChildFailed { seq: Seq, failure: Failure },
    Terminate { reason: String, actor: Actor },
}

impl Redelivery {
    fn from_event(kind: &EventKind, actor: &Actor) -> Option<Self> {
        Some(match kind {
            EventKind::ActivityCompleted(e) => {
                Self::ActivityCompleted { seq: e.activity, result: e.result.clone(), attempt: e.attempt }
            }
            EventKind::ActivityFailed(e) => {
                Self::ActivityFailed { seq: e.activity, failure: e.failure.clone(), attempt: e.attempt }
            }
            EventKind::TimerFired(e) => Self::TimerFired { seq: e.timer },
            EventKind::EventReceived(e) => Self::Event {
                name: e.name.clone(),
                event_id: e.event_id.clone(),
                payload: e.payload.clone(),
                actor: actor.clone(),
            },
            EventKind::ChildCompleted(e) => Self::ChildCompleted { seq: e.child, output: e.output.clone() },
            EventKind::ChildFailed(e) => Self::ChildFailed { seq: e.child, failure: e.failure.clone() },
            EventKind::InstanceTerminated(e) => Self::Terminate { reason: e.reason.clone(), actor: actor.clone() },
            _ => return None,
        })
    }

    fn into_event(self) -> (EventKind, Actor) {
        match self {
            Self::ActivityCompleted { seq, result, attempt } => {
                (EventKind::ActivityCompleted(ActivityCompleted { activity: seq, result, attempt }), Actor::System)
            }
            Self::ActivityFailed { seq, failure, attempt } => {
                (EventKind::ActivityFailed(ActivityFailed { activity: seq, failure, attempt }), Actor::System)
            }
            Self::TimerFired { seq } => (EventKind::TimerFired(TimerRef { timer: seq }), Actor::System),
            Self::Event { name, event_id, payload, actor } => {
                (EventKind::EventReceived(EventReceived { name, received_at_ms: None, event_id, payload }), actor)
            }
            Self::ChildCompleted { seq, output } => {
                (EventKind::ChildCompleted(ChildCompleted { child: seq, output }), Actor::System)
            }
            Self::ChildFailed { seq, failure } => {
                (EventKind::ChildFailed(ChildFailed { child: seq, failure }), Actor::System)
            }
            Self::Terminate { reason, actor } => (EventKind::InstanceTerminated(InstanceTerminated { reason }), actor),
        }
    }
}

/// Work done after the commit, in order.
enum Post {
    Dispatch(TaskRow),
    CancelAttempt(InstanceId, Seq),
    ArmTimer(crate::store::TimerRow),
    ScheduleRetry(TaskRow),
    Ended(InstanceId),
    Watch(InstanceId, Reply<Outcome>),
    Started(Reply<Started>, Started),
    Raised(Reply<Raised>, Raised),
    TaskActed(Reply<HumanTaskRow>, Box<HumanTaskRow>),
    Migrated(Reply<Migration>, Box<Migration>),
    Done(Reply<()>),
    Fail(ReplyAny, EngineError),
    /// After an incident retry: dispatch the instance's open tasks and arm its timers again.
    Recover(InstanceId),
}

/// A reply of any type that only gets an error.
enum ReplyAny {
    Started(Reply<Started>),
    Raised(Reply<Raised>),
    TaskActed(Reply<HumanTaskRow>),
    Migrated(Reply<Migration>),
    Done(Reply<()>),
}

impl ReplyAny {
    fn send(self, err: EngineError) {
        let _ = match self {
            Self::Started(r) => r.send(Err(err)).map_err(drop),
            Self::Raised(r) => r.send(Err(err)).map_err(drop),
            Self::TaskActed(r) => r.send(Err(err)).map_err(drop),
            Self::Migrated(r) => r.send(Err(err)).map_err(drop),
            Self::Done(r) => r.send(Err(err)).map_err(drop),
        };
    }
}

/// One turn's writes and post-commit work.
struct Batch {
    now: DateTime<Utc>,
    writes: Vec<InstanceWrite>,
    index: HashMap<InstanceId, usize>,
    post: Vec<Post>,
    steps: u64,
    new_keys: HashMap<String, InstanceId>,
    new_event_ids: HashSet<(InstanceId, String)>,
    /// Incidents retried in this turn (a second retry of one is already done).
    retried: HashSet<i64>,
    /// Ids known not to exist in the store (from the turn's bulk load).
    absent: HashSet<InstanceId>,
}

impl Batch {
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            writes: Vec::new(),
            index: HashMap::new(),
            post: Vec::new(),
            steps: 0,
            new_keys: HashMap::new(),
            new_event_ids: HashSet::new(),
            retried: HashSet::new(),
            absent: HashSet::new(),
        }
    }

    fn write(&mut self, id: &InstanceId) -> &mut InstanceWrite {
        let index = *self.index.entry(id.clone()).or_insert_with(|| {
            self.writes.push(InstanceWrite::default());
            self.writes.len() - 1
        });
        &mut self.writes[index]
    }
}

struct Cached {
    instance: Instance,
    /// Seq of the newest snapshot (or the run start): when to write the next one.
    snapshot_seq: Seq,
}

struct Inflight {
    token: u64,
    task: TaskRow,
    abort: tokio::task::AbortHandle,
}

pub(crate) struct Core {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Input>,
    rx: mpsc::Receiver<Input>,
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    cache: HashMap<InstanceId, Cached>,
    order: VecDeque<InstanceId>,
    inflight: HashMap<(InstanceId, Seq), Inflight>,
    timers: TimerWindow,
    retries: BTreeSet<(i64, InstanceId, Seq)>,
    retry_tasks: HashMap<(InstanceId, Seq), TaskRow>,
    watchers: HashMap<InstanceId, Vec<Reply<Outcome>>>,
    next_token: u64,
    draining: bool,
}

impl Core {
    pub async fn new(
        shared: Arc<Shared>,
        tx: mpsc::Sender<Input>,
        rx: mpsc::Receiver<Input>,
        cancel: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> Result<Self, EngineError> {
        let mut core = Self {
            shared,
            tx,
            rx,
            cancel,
            tracker,
            cache: HashMap::new(),
            order: VecDeque::new(),
            inflight: HashMap::new(),
            timers: TimerWindow::default(),
            retries: BTreeSet::new(),
            retry_tasks: HashMap::new(),
            watchers: HashMap::new(),
            next_token: 1,
            draining: false,
        };
        core.recover().await?;
        Ok(core)
    }

    /// Picks up everything in flight: open activity tasks are dispatched again (at least once),
    /// due timers are loaded.
    async fn recover(&mut self) -> Result<(), EngineError> {
        let now = self.shared.clock.now();
        let tasks = self.shared.store.open_tasks(u32::MAX).await?;
        let count = tasks.len();
        for task in tasks {
            self.dispatch_or_schedule(task, now);
        }
        let options = &self.shared.options;
        self.timers.refresh(self.shared.store.as_ref(), now, options.timer_window, options.timer_window_limit).await?;
        tracing::info!(tasks = count, timers = self.timers.len(), "recovered work in flight");
        Ok(())
    }

    fn dispatch_or_schedule(&mut self, task: TaskRow, now: DateTime<Utc>) {
        if task.visible_at <= now {
            self.dispatch(task);
        } else {
            self.schedule_retry(task);
        }
    }

    fn schedule_retry(&mut self, task: TaskRow) {
        let key = (task.instance.clone(), task.seq);
        self.retries.insert((task.visible_at.timestamp_millis(), key.0.clone(), key.1));
        self.retry_tasks.insert(key, task);
    }

    fn dispatch(&mut self, task: TaskRow) {
        if self.draining {
            return;
        }
        let key = (task.instance.clone(), task.seq);
        if let Some(previous) = self.inflight.remove(&key) {
            previous.abort.abort();
        }
        let attempt = task.attempt + 1;
        let token = self.next_token;
        self.next_token += 1;
        let abort = spawn_attempt(&self.shared, self.tx.clone(), &self.tracker, &task, attempt, token);
        self.inflight.insert(key, Inflight { token, task, abort });
    }

    pub async fn run(mut self) {
        let drain_timeout = self.shared.options.drain_timeout;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let wake = self.next_wakeup();
            let mut work = VecDeque::new();
            tokio::select! {
                biased;
                _ = self.cancel.cancelled(), if !self.draining => {
                    self.draining = true;
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                    tracing::info!(running = self.inflight.len(), "draining");
                }
                _ = async { match drain_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    tracing::warn!(running = self.inflight.len(), "drain timeout: leaving running activities to recovery");
                    break;
                }
                input = self.rx.recv() => match input {
                    Some(input) => work.push_back(Work::Input(input)),
                    None => break,
                },
                _ = self.shared.clock.sleep_until(wake) => {}
            }
            let max = self.shared.options.max_batch;
            while work.len() < max {
                match self.rx.try_recv() {
                    Ok(input) => work.push_back(Work::Input(input)),
                    Err(_) => break,
                }
            }
            self.collect_due(&mut work, max);
            if !work.is_empty() {
                self.turn(work).await;
            }
            if self.draining && self.inflight.is_empty() {
                break;
            }
            let now = self.shared.clock.now();
            let options = &self.shared.options;
            if self.timers.needs_refresh(now, options.timer_window) {
                let (window, limit) = (options.timer_window, options.timer_window_limit);
                if let Err(err) = self.timers.refresh(self.shared.store.as_ref(), now, window, limit).await {
                    tracing::error!(error = %err, "could not load timers; retrying later");
                }
            }
        }
        for (_, inflight) in self.inflight.drain() {
            inflight.abort.abort();
        }
        self.rx.close();
        while let Ok(input) = self.rx.try_recv() {
            refuse(input);
        }
    }

    fn next_wakeup(&self) -> DateTime<Utc> {
        let window = self.shared.options.timer_window;
        let mut wake = self.timers.refresh_at_ms(window);
        if let Some(due) = self.timers.next_due_ms() {
            wake = wake.min(due);
        }
        if let Some((due, _, _)) = self.retries.first() {
            wake = wake.min(*due);
        }
        crate::history::time_from_ms(wake)
    }

    /// Moves due timers into the turn and dispatches due retries.
    fn collect_due(&mut self, work: &mut VecDeque<Work>, max: usize) {
        let now = self.shared.clock.now();
        let room = max.saturating_sub(work.len()).max(1);
        for (id, seq) in self.timers.take_due(now, room) {
            work.push_back(Work::TimerFired { id, seq });
        }
        let now_ms = now.timestamp_millis();
        while let Some((due, _, _)) = self.retries.first() {
            if *due > now_ms {
                break;
            }
            let Some((_, id, seq)) = self.retries.pop_first() else { break };
            if let Some(task) = self.retry_tasks.remove(&(id, seq)) {
                self.dispatch(task);
            }
        }
    }

    async fn turn(&mut self, mut work: VecDeque<Work>) {
        let mut batch = Batch::new(self.shared.clock.now());
        let wanted: Vec<InstanceId> = {
            let mut seen = HashSet::new();
            work.iter()
                .filter_map(Work::instance)
                .filter(|id| !self.cache.contains_key(*id) && seen.insert((*id).clone()))
                .cloned()
                .collect()
        };
        if !wanted.is_empty() {
            match self.shared.store.load_many(&wanted).await {
                Ok(loaded) => {
                    let mut found = HashSet::new();
                    for instance in loaded {
                        found.insert(instance.row.id.clone());
                        self.admit(instance).await;
                    }
                    batch.absent = wanted.into_iter().filter(|id| !found.contains(id)).collect();
                }
                Err(err) => tracing::error!(error = %err, "could not load instances; they load one by one"),
            }
        }
        while let Some(item) = work.pop_front() {
            self.take(item, &mut batch, &mut work).await;
        }
        self.commit(batch).await;
    }

    /// Replays a loaded instance into the cache; an instance that cannot be replayed gets an
    /// incident and stays out.
    async fn admit(&mut self, loaded: LoadedInstance) -> bool {
        let LoadedInstance { row, snapshot, events } = loaded;
        // Erased personal data: the instance has ended and stays out, without an incident
        // ([`Self::ensure_loaded`] answers that it has ended).
        if row.status.is_final() && events.iter().any(StoredEvent::is_erased) {
            return false;
        }
        let key = format!("{}@{}", row.orchestration, row.version);
        let result = match self.shared.registered(&key) {
            None => Err((IncidentKind::DefinitionMissing, format!("no orchestration is registered as {key}"))),
            Some(_) => {
                self.shared.stats.replays.fetch_add(1, Ordering::Relaxed);
                let shared = &self.shared;
                let versions = |key: &str| shared.registered(key);
                let mut replayed = Instance::replay_collecting(&versions, &row, snapshot.as_ref(), &events, None);
                // A snapshot is only a shortcut: if it does not load, the history alone decides.
                if let (Err(err), Some(snapshot)) = (&replayed, &snapshot) {
                    tracing::warn!(wf.id = %row.id, snapshot.seq = snapshot.seq, error = %err, "snapshot unusable; replaying the history");
                    if let Ok(history) = self.shared.store.history(&row.id, row.run_start, u32::MAX).await {
                        replayed = Instance::replay_collecting(&versions, &row, None, &history, None);
                    }
                }
                replayed.map_err(|err| {
                    let kind = match &err {
                        StepError::Nondeterminism { .. } | StepError::Unexpected(_) | StepError::Fault(_) => {
                            IncidentKind::Nondeterminism
                        }
                        StepError::Corrupt(_) => IncidentKind::CorruptHistory,
                        StepError::DefinitionChanged { .. } | StepError::VersionMissing(_) => {
                            IncidentKind::DefinitionMissing
                        }
                    };
                    (kind, err.to_string())
                })
            }
        };
        match result {
            Ok(instance) => {
                let snapshot_seq = snapshot.map(|s| s.seq).unwrap_or(row.run_start);
                self.insert_cache(instance, snapshot_seq);
                true
            }
            Err((kind, reason)) => {
                tracing::error!(wf.id = %row.id, reason = %reason, "instance cannot be loaded");
                if row.status != InstanceStatus::Faulted {
                    let incident = NewIncident {
                        kind,
                        reason,
                        task_seq: None,
                        pending_input: None,
                        created_at: self.shared.clock.now(),
                    };
                    self.shared.stats.incidents.fetch_add(1, Ordering::Relaxed);
                    if let Err(err) = self.shared.store.raise_incident(&row.id, &incident).await {
                        tracing::error!(wf.id = %row.id, error = %err, "could not record the incident");
                    }
                }
                false
            }
        }
    }

    fn insert_cache(&mut self, instance: Instance, snapshot_seq: Seq) {
        let id = instance.id.clone();
        if self.cache.insert(id.clone(), Cached { instance, snapshot_seq }).is_none() {
            self.order.push_back(id);
        }
    }

    /// Makes sure `id` is cached; `Ok(false)` if it does not exist.
    async fn ensure_loaded(&mut self, id: &InstanceId, batch: &Batch) -> Result<bool, EngineError> {
        if self.cache.contains_key(id) {
            return Ok(true);
        }
        if batch.absent.contains(id) {
            return Ok(false);
        }
        match self.shared.store.load(id).await? {
            None => Ok(false),
            // An ended instance whose personal data was erased no longer replays, and needs
            // not: it takes no more input.
            Some(loaded) if loaded.row.status.is_final() && loaded.events.iter().any(StoredEvent::is_erased) => {
                Err(EngineError::InstanceEnded { id: id.clone(), status: loaded.row.status })
            }
            Some(loaded) => {
                if self.admit(loaded).await {
                    Ok(true)
                } else {
                    Err(EngineError::InstanceFaulted {
                        id: id.clone(),
                        reason: "its history cannot be loaded; see its incidents".into(),
                    })
                }
            }
        }
    }

    async fn take(&mut self, item: Work, batch: &mut Batch, work: &mut VecDeque<Work>) {
        match item {
            Work::Input(Input::Start { id, definition, input, idempotency_key, business_key, tags, actor, reply }) => {
                if self.draining {
                    let _ = reply.send(Err(EngineError::ShuttingDown));
                    return;
                }
                let how = StartHow { idempotency_key, parent: None, actor, business_key, tags };
                match self.start(batch, id, &definition, input, how, work).await {
                    Ok(Some(started)) => batch.post.push(Post::Started(reply, started)),
                    Ok(None) => {}
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Started(reply), err)),
                }
            }
            Work::StartChild { id, definition, input, parent, started_by } => {
                let actor = started_by.map_or(Actor::System, |id| Actor::User { id });
                // A child is found through its parent: it carries no business key or tags.
                let how = StartHow {
                    idempotency_key: None,
                    parent: Some(parent.clone()),
                    actor,
                    business_key: None,
                    tags: Vec::new(),
                };
                if let Err(err) = self.start(batch, id, &definition, input, how, work).await {
                    let failure = Failure::new("child.start", err.to_string());
                    work.push_back(Work::ChildOutcome { parent, outcome: Err(failure) });
                }
            }
            Work::Input(Input::Raise { id, event, reply }) => {
                if self.draining {
                    let _ = reply.send(Err(EngineError::ShuttingDown));
                    return;
                }
                match self.raise(batch, &id, event, work).await {
                    Ok(raised) => batch.post.push(Post::Raised(reply, raised)),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Raised(reply), err)),
                }
            }
            Work::Input(Input::Terminate { id, reason, actor, reply }) => {
                let result = self.terminate(batch, &id, reason, actor, work).await;
                match result {
                    Ok(()) => batch.post.push(Post::Done(reply)),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Done(reply), err)),
                }
            }
            Work::Input(Input::RetryIncident { incident, reason, actor, resolution, reply }) => {
                match self.retry_incident(batch, incident, (reason, actor, resolution), work).await {
                    Ok(()) => batch.post.push(Post::Done(reply)),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Done(reply), err)),
                }
            }
            Work::Input(Input::TaskAction { id, task, principal, action, reply }) => {
                if self.draining {
                    let _ = reply.send(Err(EngineError::ShuttingDown));
                    return;
                }
                match self.task_action(batch, &id, task, &principal, action, work).await {
                    Ok(row) => batch.post.push(Post::TaskActed(reply, Box::new(row))),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::TaskActed(reply), err)),
                }
            }
            Work::Input(Input::Suspend { id, reason, actor, resume, reply }) => {
                match self.suspend(batch, &id, reason, actor, resume, work).await {
                    Ok(()) => batch.post.push(Post::Done(reply)),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Done(reply), err)),
                }
            }
            Work::Input(Input::Watch { id, reply }) => batch.post.push(Post::Watch(id, reply)),
            Work::Input(Input::Migrate { id, request, actor, reply }) => {
                match self.migrate(batch, &id, request, actor, work).await {
                    Ok(migration) => batch.post.push(Post::Migrated(reply, Box::new(migration))),
                    Err(err) => batch.post.push(Post::Fail(ReplyAny::Migrated(reply), err)),
                }
            }
            Work::Input(Input::ActivityDone { id, seq, token, attempt, outcome }) => {
                self.activity_done(batch, id, seq, token, attempt, outcome, work).await;
            }
            Work::TimerFired { id, seq } => {
                if !matches!(self.ensure_loaded(&id, batch).await, Ok(true)) {
                    return;
                }
                // A suspended instance's timers wait: they are armed again when it resumes.
                let live = self.cache.get(&id).is_some_and(|c| {
                    c.instance.status != InstanceStatus::Faulted
                        && !c.instance.is_suspended()
                        && c.instance.has_timer(seq)
                });
                if live {
                    self.shared.stats.timers_fired.fetch_add(1, Ordering::Relaxed);
                    self.step(batch, &id, EventKind::TimerFired(TimerRef { timer: seq }), Actor::System, None, work);
                }
            }
            Work::ChildOutcome { parent, outcome } => {
                if !matches!(self.ensure_loaded(&parent.instance, batch).await, Ok(true)) {
                    return;
                }
                // A parent that ended, moved on (continue-as-new) or no longer tracks the child
                // has nothing to learn from it.
                let waits = self.cache.get(&parent.instance).is_some_and(|c| {
                    !c.instance.has_ended()
                        && c.instance.status != InstanceStatus::Faulted
                        && c.instance.has_child(parent.seq)
                });
                if !waits {
                    tracing::warn!(wf.id = %parent.instance, wf.seq = parent.seq, "child outcome dropped: the parent does not wait for it");
                    return;
                }
                let kind = match outcome {
                    Ok(output) => EventKind::ChildCompleted(ChildCompleted { child: parent.seq, output }),
                    Err(failure) => EventKind::ChildFailed(ChildFailed { child: parent.seq, failure }),
                };
                self.step(batch, &parent.instance, kind, Actor::System, None, work);
            }
            Work::Redeliver { id, input } => {
                if matches!(self.ensure_loaded(&id, batch).await, Ok(true)) {
                    let (kind, actor) = input.into_event();
                    self.step(batch, &id, kind, actor, None, work);
                }
            }
        }
    }

    fn has_ended(&self, id: &InstanceId) -> bool {
        self.cache.get(id).is_some_and(|c| c.instance.has_ended())
    }

    /// Ends an instance by hand. Allowed with open incidents (no orchestration code runs), which
    /// it closes: an instance that can never get past its incident can still be stopped.
    async fn terminate(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        reason: String,
        actor: Actor,
        work: &mut VecDeque<Work>,
    ) -> Result<(), EngineError> {
        if !self.ensure_loaded(id, batch).await? {
            return Err(EngineError::InstanceNotFound(id.clone()));
        }
        if let Some(cached) = self.cache.get(id)
            && cached.instance.has_ended()
        {
            return Err(EngineError::InstanceEnded { id: id.clone(), status: cached.instance.status });
        }
        let open: Vec<i64> = self.shared.store.incidents(Some(id), true).await?.iter().map(|i| i.id).collect();
        if let Some(cached) = self.cache.get_mut(id) {
            cached.instance.clear_fault();
        }
        let kind = EventKind::InstanceTerminated(InstanceTerminated { reason });
        self.step(batch, id, kind, actor, None, work);
        batch.write(id).incidents_resolved.extend(open);
        Ok(())
    }

    async fn live_status(&mut self, id: &InstanceId, batch: &Batch) -> Result<InstanceStatus, EngineError> {
        if !self.ensure_loaded(id, batch).await? {
            return Err(EngineError::InstanceNotFound(id.clone()));
        }
        let status = self.cache.get(id).map(|c| c.instance.status).unwrap_or(InstanceStatus::Faulted);
        if status == InstanceStatus::Faulted {
            let open = self.shared.store.incidents(Some(id), true).await?;
            let reason = open.first().map(|i| i.reason.clone()).unwrap_or_else(|| "the instance failed".into());
            if !open.is_empty() {
                return Err(EngineError::InstanceFaulted { id: id.clone(), reason });
            }
        }
        Ok(status)
    }

    async fn start(
        &mut self,
        batch: &mut Batch,
        id: InstanceId,
        definition: &str,
        input: Value,
        how: StartHow,
        work: &mut VecDeque<Work>,
    ) -> Result<Option<Started>, EngineError> {
        let StartHow { idempotency_key, parent, actor, business_key, tags } = how;
        if let Some(key) = &idempotency_key {
            if let Some(existing) = batch.new_keys.get(key) {
                return Ok(Some(Started { id: existing.clone(), created: false }));
            }
            if let Some(existing) = self.shared.store.find_by_idempotency_key(key).await? {
                return Ok(Some(Started { id: existing, created: false }));
            }
        }
        let exists = self.cache.contains_key(&id)
            || batch.index.contains_key(&id)
            || (!batch.absent.contains(&id) && self.shared.store.instance(&id).await?.is_some());
        if exists {
            return Err(EngineError::InstanceExists(id));
        }
        let orchestration = self
            .shared
            .orchestration(definition)
            .ok_or_else(|| EngineError::DefinitionNotFound(definition.to_owned()))?;
        let mut instance = Instance::new(id.clone(), orchestration.clone(), idempotency_key.clone(), parent, batch.now);
        let started = EventKind::InstanceStarted(InstanceStarted {
            definition: orchestration.definition(),
            interpreter_version: INTERPRETER_VERSION.into(),
            input,
            idempotency_key: idempotency_key.clone(),
            business_key,
            tags,
        });
        let span = tracing::debug_span!("step", wf.id = %id, wf.seq = instance.next_seq, event = started.name());
        let step = span.in_scope(|| instance.handle(started, batch.now, actor)).map_err(EngineError::Step)?;
        if let Some(key) = idempotency_key {
            batch.new_keys.insert(key, id.clone());
        }
        batch.absent.remove(&id);
        self.insert_cache(instance, 0);
        batch.steps += 1;
        // Children of a first step start later in this same turn (the turn drains `work`).
        self.merge(batch, &id, step, work);
        Ok(Some(Started { id, created: true }))
    }

    /// A person's action on a human task: checked against the task as the instance holds it
    /// now, then recorded, in this step.
    async fn task_action(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        seq: Seq,
        principal: &Principal,
        action: TaskAction,
        work: &mut VecDeque<Work>,
    ) -> Result<HumanTaskRow, EngineError> {
        let not_found = || EngineError::TaskNotFound { id: id.clone(), task: seq };
        if !self.ensure_loaded(id, batch).await? {
            return Err(not_found());
        }
        let Some(cached) = self.cache.get(id) else { return Err(not_found()) };
        let instance = &cached.instance;
        let Some(task) = instance.human_task(seq) else {
            // A finished task (or none): say which, to people who may see it.
            return match self.shared.store.human_task(id, seq).await? {
                Some(row) if may_see(principal, &row.task) => Err(EngineError::TaskRefused {
                    id: id.clone(),
                    task: seq,
                    refusal: TaskRefusal::NotOpen(row.task.status.as_str()),
                }),
                _ => Err(not_found()),
            };
        };
        let refused = |refusal| EngineError::TaskRefused { id: id.clone(), task: seq, refusal };
        match check_action(principal, task, &action) {
            Ok(()) => {}
            Err(TaskRefusal::Forbidden { .. }) => return Err(not_found()),
            Err(refusal) => return Err(refused(refusal)),
        }
        if instance.is_suspended() {
            return Err(EngineError::InstanceSuspended(id.clone()));
        }
        if instance.status == InstanceStatus::Faulted {
            return Err(EngineError::InstanceFaulted {
                id: id.clone(),
                reason: "an incident is open; retry it first".into(),
            });
        }
        if let (TaskAction::Complete { data, .. }, Some(form)) = (&action, &task.spec.form) {
            check_form(form, data).map_err(|problems| refused(TaskRefusal::InvalidData(problems)))?;
        }
        for user in action_people(&action) {
            if !self.shared.store.person(user).await?.is_some_and(|p| p.active) {
                return Err(refused(TaskRefusal::Invalid(format!("{user} is not an active person of the directory"))));
            }
        }
        let kind = action_event(seq, action);
        let actor = Actor::User { id: principal.user.clone() };
        self.shared.stats.task_actions.fetch_add(1, Ordering::Relaxed);
        self.step(batch, id, kind, actor, None, work);
        // The step either changed the task or raised an incident; the row tells which.
        let instance = self.cache.get(id).map(|c| &c.instance).ok_or_else(not_found)?;
        if instance.status == InstanceStatus::Faulted {
            return Err(EngineError::InstanceFaulted {
                id: id.clone(),
                reason: "the workflow could not take the action; see its incidents".into(),
            });
        }
        let write = batch.write(id);
        write.human_tasks.iter().rev().find(|r| r.seq == seq).cloned().ok_or_else(not_found)
    }

    async fn suspend(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        reason: String,
        actor: Actor,
        resume: bool,
        work: &mut VecDeque<Work>,
    ) -> Result<(), EngineError> {
        let status = self.live_status(id, batch).await?;
        if self.has_ended(id) {
            return Err(EngineError::InstanceEnded { id: id.clone(), status });
        }
        let suspended = self.cache.get(id).is_some_and(|c| c.instance.is_suspended());
        let kind = match (resume, suspended) {
            (false, false) => EventKind::InstanceSuspended(Reason { reason }),
            (true, true) => EventKind::InstanceResumed(Reason { reason }),
            // Suspending a suspended instance, or resuming a running one, changes nothing.
            _ => return Ok(()),
        };
        self.step(batch, id, kind, actor, None, work);
        if resume {
            // Timers that came due while it was suspended fire now.
            batch.post.push(Post::Recover(id.clone()));
        }
        Ok(())
    }

    /// Moves an instance to another version of its definition, or (a dry run) tells what the
    /// move would do. The move is proven on a copy of the instance before it is recorded.
    async fn migrate(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        request: Migrate,
        actor: Actor,
        work: &mut VecDeque<Work>,
    ) -> Result<Migration, EngineError> {
        if !self.ensure_loaded(id, batch).await? {
            return Err(EngineError::InstanceNotFound(id.clone()));
        }
        let Some(cached) = self.cache.get_mut(id) else { return Err(EngineError::InstanceNotFound(id.clone())) };
        let key = format!("{}@{}", cached.instance.definition.name, request.to);
        let to = self.shared.registered(&key).ok_or(EngineError::DefinitionNotFound(key))?;
        let refused = |reason: String| EngineError::MigrationRefused { id: id.clone(), reason };
        let event = cached.instance.migration(&to, &request.mapping, &request.reason).map_err(refused)?;
        let mut trial = cached.instance.clone();
        trial.expect_migration(to.clone());
        trial
            .handle(EventKind::InstanceMigrated(event.clone()), batch.now, actor.clone())
            .map_err(|err| refused(format!("the moved instance does not take the move: {err}")))?;
        let migration = Migration {
            instance: id.clone(),
            from: event.from.key(),
            to: event.to.key(),
            moved: event.moved.iter().map(|(from, to)| MovedTask { from: from.clone(), to: to.clone() }).collect(),
            applied: !request.dry_run,
        };
        if !request.dry_run {
            cached.instance.expect_migration(to);
            self.step(batch, id, EventKind::InstanceMigrated(event), actor, None, work);
        }
        Ok(migration)
    }

    async fn raise(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        event: RaiseEvent,
        work: &mut VecDeque<Work>,
    ) -> Result<Raised, EngineError> {
        let status = self.live_status(id, batch).await?;
        if self.has_ended(id) {
            return Err(EngineError::InstanceEnded { id: id.clone(), status });
        }
        if let Some(event_id) = &event.event_id {
            let key = (id.clone(), event_id.clone());
            if batch.new_event_ids.contains(&key) || self.shared.store.event_seen(id, event_id).await? {
                return Ok(Raised::Duplicate);
            }
            batch.new_event_ids.insert(key);
            batch.write(id).received_event_ids.push(event_id.clone());
        }
        let kind = EventKind::EventReceived(EventReceived {
            name: event.name,
            received_at_ms: None,
            event_id: event.event_id,
            payload: event.payload,
        });
        self.step(batch, id, kind, event.actor, None, work);
        Ok(Raised::Accepted)
    }

    #[allow(clippy::too_many_arguments)]
    async fn activity_done(
        &mut self,
        batch: &mut Batch,
        id: InstanceId,
        seq: Seq,
        token: u64,
        attempt: u32,
        outcome: Result<Value, ActivityError>,
        work: &mut VecDeque<Work>,
    ) {
        let key = (id.clone(), seq);
        if self.inflight.get(&key).is_none_or(|inflight| inflight.token != token) {
            self.shared.stats.stale_completions.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(wf.id = %id, wf.seq = seq, activity.attempt = attempt, "stale completion dropped");
            return;
        }
        let Some(Inflight { task, .. }) = self.inflight.remove(&key) else { return };
        if let Err(err) = self.ensure_loaded(&id, batch).await {
            // The result is lost with the attempt; the task runs again later rather than never.
            tracing::warn!(wf.id = %id, error = %err, "instance not loadable; the activity runs again later");
            let mut retry = task;
            retry.visible_at = batch.now + chrono::Duration::seconds(5);
            self.schedule_retry(retry);
            return;
        }
        let live = self
            .cache
            .get(&id)
            .is_some_and(|c| c.instance.status != InstanceStatus::Faulted && c.instance.has_activity(seq));
        if !live {
            return;
        }
        let kind = match outcome {
            Ok(result) => {
                self.shared.stats.activity_completions.fetch_add(1, Ordering::Relaxed);
                EventKind::ActivityCompleted(ActivityCompleted { activity: seq, result, attempt })
            }
            Err(error) => {
                let options: ActivityOptions = serde_json::from_value(task.options.clone()).unwrap_or_default();
                if let Some(delay) = options.retry.next_delay(attempt, &error) {
                    let mut retry = task.clone();
                    retry.attempt = attempt;
                    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    retry.visible_at = batch.now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC);
                    retry.last_error = Some(error.to_string());
                    batch.write(&id).tasks_updated.push(retry.clone());
                    batch.post.push(Post::ScheduleRetry(retry));
                    tracing::debug!(wf.id = %id, wf.seq = seq, activity.attempt = attempt, error = %error, "activity attempt failed; retrying");
                    return;
                }
                let failure = match error {
                    ActivityError::Failed(failure) => failure,
                    ActivityError::NonRetryable(_) => Failure::new("activity.non_retryable", error.to_string()),
                    _ => Failure::new("activity.retries_exhausted", error.to_string()),
                };
                EventKind::ActivityFailed(ActivityFailed { activity: seq, failure, attempt })
            }
        };
        let mut task = task;
        task.attempt = attempt;
        self.step(batch, &id, kind, Actor::Worker { id: self.shared.options.worker_id.clone() }, Some(task), work);
    }

    /// Runs one input through an instance. A fault leaves the instance as it was, records an
    /// incident (in history and as a row) and keeps what is needed to retry.
    fn step(
        &mut self,
        batch: &mut Batch,
        id: &InstanceId,
        kind: EventKind,
        actor: Actor,
        task: Option<TaskRow>,
        work: &mut VecDeque<Work>,
    ) {
        let Some(cached) = self.cache.get_mut(id) else { return };
        let mut next = cached.instance.clone();
        let _span = tracing::debug_span!("step", wf.id = %id, wf.seq = next.next_seq, event = kind.name()).entered();
        match next.handle(kind.clone(), batch.now, actor.clone()) {
            Ok(step) => {
                cached.instance = next;
                batch.steps += 1;
                self.merge(batch, id, step, work);
            }
            Err(err) => {
                let unhandled_failure = matches!(&err, StepError::Fault(f) if f.kind == FaultKind::Unhandled)
                    && matches!(kind, EventKind::ActivityFailed(_));
                let (incident_kind, pending_input) = if unhandled_failure {
                    (IncidentKind::ActivityFailed, None)
                } else {
                    let redelivery = Redelivery::from_event(&kind, &actor).and_then(|r| serde_json::to_value(r).ok());
                    (IncidentKind::OrchestrationFault, redelivery)
                };
                let reason = err.to_string();
                tracing::warn!(wf.id = %id, reason = %reason, "incident raised");
                self.shared.stats.incidents.fetch_add(1, Ordering::Relaxed);
                let raised = EventKind::IncidentRaised(IncidentRaised {
                    kind: incident_kind.as_str().into(),
                    reason: reason.clone(),
                });
                let Some(cached) = self.cache.get_mut(id) else { return };
                match cached.instance.handle(raised, batch.now, Actor::System) {
                    Ok(step) => {
                        batch.steps += 1;
                        self.merge(batch, id, step, work);
                    }
                    Err(err) => {
                        tracing::error!(wf.id = %id, error = %err, "could not record the incident in history");
                        return;
                    }
                }
                let now = batch.now;
                let write = batch.write(id);
                if let Some(mut task) = task {
                    task.parked = true;
                    task.last_error = Some(reason.clone());
                    write.tasks_updated.push(task);
                }
                write.incident = Some(NewIncident {
                    kind: incident_kind,
                    reason,
                    task_seq: match &kind {
                        EventKind::ActivityFailed(e) => Some(e.activity),
                        EventKind::ActivityCompleted(e) => Some(e.activity),
                        _ => None,
                    },
                    pending_input,
                    created_at: now,
                });
            }
        }
    }

    /// Turns a step's events and effects into the batch's rows and post-commit work.
    fn merge(&mut self, batch: &mut Batch, id: &InstanceId, step: Step, work: &mut VecDeque<Work>) {
        let Some(cached) = self.cache.get_mut(id) else { return };
        let now = batch.now;
        let snapshot_every = self.shared.options.snapshot_every;
        let write = {
            let index = *batch.index.entry(id.clone()).or_insert_with(|| {
                batch.writes.push(InstanceWrite::default());
                batch.writes.len() - 1
            });
            &mut batch.writes[index]
        };
        self.shared.stats.events.fetch_add(step.events.len() as u64, Ordering::Relaxed);
        write.events.extend(step.events);
        for effect in step.effects {
            match effect {
                Effect::Dispatch(task) => {
                    write.tasks_added.push(task.clone());
                    batch.post.push(Post::Dispatch(task));
                }
                Effect::FinishTask(seq) => {
                    write.tasks_updated.retain(|t| t.seq != seq);
                    if let Some(pos) = write.tasks_added.iter().position(|t| t.seq == seq) {
                        write.tasks_added.remove(pos);
                        batch.post.retain(|p| !matches!(p, Post::Dispatch(t) if t.instance == *id && t.seq == seq));
                    } else {
                        write.tasks_removed.push(seq);
                    }
                    batch.post.push(Post::CancelAttempt(id.clone(), seq));
                }
                Effect::ArmTimer(timer) => {
                    write.timers_added.push(timer.clone());
                    batch.post.push(Post::ArmTimer(timer));
                }
                Effect::DisarmTimer(seq) => {
                    if let Some(pos) = write.timers_added.iter().position(|t| t.seq == seq) {
                        write.timers_added.remove(pos);
                    } else {
                        write.timers_removed.push(seq);
                    }
                }
                Effect::StartChild { instance, definition, input, parent, started_by } => {
                    work.push_back(Work::StartChild { id: instance, definition, input, parent, started_by });
                }
                Effect::NotifyParent { parent, outcome } => work.push_back(Work::ChildOutcome { parent, outcome }),
                Effect::Outbox(row) => {
                    if row.kind == SLA_BREACHED {
                        self.shared.stats.sla_breaches.fetch_add(1, Ordering::Relaxed);
                    }
                    write.outbox.push(row);
                }
                Effect::HumanTask(row) => {
                    write.human_tasks.retain(|r| r.seq != row.seq);
                    write.human_tasks.push(*row);
                }
                Effect::Sla(row) => {
                    write.slas.retain(|r| r.seq != row.seq);
                    write.slas.push(*row);
                }
                Effect::Ended => batch.post.push(Post::Ended(id.clone())),
            }
        }
        write.instance = Some(cached.instance.row(now));
        if cached.instance.next_seq.saturating_sub(cached.snapshot_seq) > snapshot_every {
            let snapshot = cached.instance.snapshot();
            cached.snapshot_seq = snapshot.seq;
            write.snapshot = Some(snapshot);
        }
    }

    async fn retry_incident(
        &mut self,
        batch: &mut Batch,
        incident_id: i64,
        (reason, actor, resolution): (String, Actor, Resolution),
        work: &mut VecDeque<Work>,
    ) -> Result<(), EngineError> {
        let incident = self
            .shared
            .store
            .incident(incident_id)
            .await?
            .filter(|i| i.resolved_at.is_none())
            .ok_or(EngineError::IncidentNotFound(incident_id))?;
        let by_hand = !matches!(resolution, Resolution::Retry { input: None });
        let failed_activity = incident.kind == IncidentKind::ActivityFailed
            && incident.task_seq.is_some()
            && incident.pending_input.is_none();
        if by_hand && !failed_activity {
            return Err(EngineError::InvalidArgument(format!(
                "incident {incident_id} is not a failed activity ({}): it can only be retried as it is",
                incident.kind.as_str()
            )));
        }
        if !batch.retried.insert(incident_id) {
            return Ok(());
        }
        let id = incident.instance.clone();
        // Reload from the store: a retry is also how a fixed definition gets a second chance.
        // Not when this turn already stepped the instance: its cached state is ahead of the store.
        if !batch.index.contains_key(&id) {
            self.cache.remove(&id);
        }
        if !self.ensure_loaded(&id, batch).await? {
            return Err(EngineError::InstanceNotFound(id));
        }
        let recorded_in_history = self.cache.get(&id).is_some_and(|c| c.instance.status == InstanceStatus::Faulted)
            && matches!(incident.kind, IncidentKind::ActivityFailed | IncidentKind::OrchestrationFault);
        if by_hand && !recorded_in_history {
            return Err(EngineError::InvalidArgument(format!(
                "incident {incident_id}: the instance is no longer faulted by it; retry it as it is"
            )));
        }
        if recorded_in_history {
            let what = match &resolution {
                Resolution::Retry { input: None } => "retried",
                Resolution::Retry { input: Some(_) } => "retried with an edited input",
                Resolution::Complete { .. } => "resolved by completing the activity by hand",
            };
            let reason = match reason.as_str() {
                "" => format!("incident {incident_id} {what}"),
                given => format!("incident {incident_id} {what}: {given}"),
            };
            let input = match &resolution {
                Resolution::Retry { input } => input.clone(),
                Resolution::Complete { .. } => None,
            };
            let resolved = EventKind::IncidentResolved(IncidentResolved { reason, input });
            self.step(batch, &id, resolved, actor.clone(), None, work);
        } else if let Some(cached) = self.cache.get_mut(&id) {
            cached.instance.clear_fault();
            let row = cached.instance.row(batch.now);
            batch.write(&id).instance = Some(row);
        }
        let write = batch.write(&id);
        write.incidents_resolved.push(incident_id);
        // A parked activity is tried afresh (or completed by hand); one whose result is kept is
        // delivered again instead.
        if let (Some(seq), None) = (incident.task_seq, &incident.pending_input) {
            let tasks = self.shared.store.tasks_of(&id).await?;
            if let Some(mut task) = tasks.into_iter().find(|t| t.seq == seq) {
                match resolution {
                    Resolution::Complete { result } => {
                        // The person's result, recorded as the activity's, with them as its actor.
                        let attempt = task.attempt;
                        let done = EventKind::ActivityCompleted(ActivityCompleted { activity: seq, result, attempt });
                        self.step(batch, &id, done, actor, Some(task), work);
                    }
                    Resolution::Retry { input } => {
                        if let Some(input) = input {
                            task.input = input;
                        }
                        task.parked = false;
                        task.attempt = 0;
                        task.visible_at = batch.now;
                        task.last_error = None;
                        batch.write(&id).tasks_updated.push(task.clone());
                        batch.post.push(Post::Dispatch(task));
                    }
                }
            }
        }
        if let Some(pending) = incident.pending_input {
            let input: Redelivery = serde_json::from_value(pending).map_err(|err| {
                EngineError::InvalidArgument(format!("incident {incident_id} keeps an unreadable input: {err}"))
            })?;
            work.push_back(Work::Redeliver { id: id.clone(), input });
        }
        batch.post.push(Post::Recover(id));
        Ok(())
    }

    async fn commit(&mut self, batch: Batch) {
        let Batch { mut writes, post, steps, index, now, .. } = batch;
        // Every write carries its instance's row, which tells the store whose rows it touches.
        for (id, position) in index {
            if writes[position].instance.is_none() {
                match self.cache.get(&id) {
                    Some(cached) => writes[position].instance = Some(cached.instance.row(now)),
                    None => {
                        tracing::warn!(wf.id = %id, "dropping a write for an instance that left the cache");
                        writes[position] = InstanceWrite::default();
                    }
                }
            }
        }
        writes.retain(|w| w.instance.is_some());
        let result = if writes.is_empty() {
            Ok(())
        } else {
            crate::failpoint::hit("step.before_commit");
            self.shared.store.commit(&writes).await
        };
        match result {
            Ok(()) => {
                if !writes.is_empty() {
                    self.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                    self.shared.stats.steps.fetch_add(steps, Ordering::Relaxed);
                    crate::failpoint::hit("step.after_commit");
                    self.publish(writes);
                }
                for item in post {
                    self.post(item).await;
                }
                self.evict();
            }
            Err(err) => {
                tracing::error!(error = %err, writes = writes.len(), "commit failed; the batch's instances are reloaded");
                let message = err.to_string();
                let ids: Vec<InstanceId> = writes.iter().filter_map(|w| w.instance_id().cloned()).collect();
                for id in &ids {
                    self.cache.remove(id);
                }
                for item in post {
                    match item {
                        Post::Started(reply, _) => ReplyAny::Started(reply).send(store_error(&err, &message)),
                        Post::Raised(reply, _) => ReplyAny::Raised(reply).send(store_error(&err, &message)),
                        Post::TaskActed(reply, _) => ReplyAny::TaskActed(reply).send(store_error(&err, &message)),
                        Post::Migrated(reply, _) => ReplyAny::Migrated(reply).send(store_error(&err, &message)),
                        Post::Done(reply) => ReplyAny::Done(reply).send(store_error(&err, &message)),
                        Post::Fail(reply, err) => reply.send(err),
                        Post::Watch(id, reply) => self.watch(id, reply).await,
                        _ => {}
                    }
                }
                for id in ids {
                    self.recover_instance(&id).await;
                }
            }
        }
    }

    /// Tells subscribers what the commit changed (nothing is built without subscribers).
    fn publish(&self, writes: Vec<InstanceWrite>) {
        if self.shared.changes.receiver_count() == 0 {
            return;
        }
        let names = EventKind::known_tags();
        for write in writes {
            let Some(instance) = write.instance else { continue };
            let events = write
                .events
                .iter()
                .map(|e| (e.seq, names.iter().find(|(tag, _)| *tag == e.tag).map_or("Unknown", |(_, name)| *name)))
                .collect();
            let change = super::Change { instance, events, human_tasks: write.human_tasks };
            // No receiver left is not an error: the next commit checks again.
            let _ = self.shared.changes.send(Arc::new(change));
        }
    }

    async fn post(&mut self, item: Post) {
        match item {
            Post::Dispatch(task) => self.dispatch(task),
            Post::CancelAttempt(id, seq) => {
                if let Some(inflight) = self.inflight.remove(&(id.clone(), seq)) {
                    inflight.abort.abort();
                }
                self.retry_tasks.remove(&(id, seq));
            }
            Post::ArmTimer(timer) => self.timers.arm(&timer),
            Post::ScheduleRetry(task) => self.schedule_retry(task),
            Post::Ended(id) => {
                if let Some(outcome) = self.cached_outcome(&id) {
                    for reply in self.watchers.remove(&id).unwrap_or_default() {
                        let _ = reply.send(Ok(outcome.clone()));
                    }
                }
            }
            Post::Watch(id, reply) => self.watch(id, reply).await,
            Post::Started(reply, started) => {
                let _ = reply.send(Ok(started));
            }
            Post::Raised(reply, raised) => {
                let _ = reply.send(Ok(raised));
            }
            Post::TaskActed(reply, row) => {
                let _ = reply.send(Ok(*row));
            }
            Post::Migrated(reply, migration) => {
                let _ = reply.send(Ok(*migration));
            }
            Post::Done(reply) => {
                let _ = reply.send(Ok(()));
            }
            Post::Fail(reply, err) => reply.send(err),
            Post::Recover(id) => self.recover_instance(&id).await,
        }
    }

    fn cached_outcome(&self, id: &InstanceId) -> Option<Outcome> {
        let cached = self.cache.get(id)?;
        let status = cached.instance.status;
        (status.is_final() || (status == InstanceStatus::Faulted && cached.instance.result.is_some()))
            .then(|| Outcome { status, result: cached.instance.result.clone() })
    }

    async fn watch(&mut self, id: InstanceId, reply: Reply<Outcome>) {
        if let Some(outcome) = self.cached_outcome(&id) {
            let _ = reply.send(Ok(outcome));
            return;
        }
        // A cached instance that has not ended needs no store read: its end will be posted.
        if self.cache.contains_key(&id) {
            self.watchers.entry(id).or_default().push(reply);
            return;
        }
        match self.shared.store.instance(&id).await {
            Ok(None) => {
                let _ = reply.send(Err(EngineError::InstanceNotFound(id)));
            }
            Ok(Some(row))
                if row.status.is_final() || (row.status == InstanceStatus::Faulted && row.result.is_some()) =>
            {
                let _ = reply.send(Ok(Outcome { status: row.status, result: row.result }));
            }
            Ok(Some(_)) => self.watchers.entry(id).or_default().push(reply),
            Err(err) => {
                let _ = reply.send(Err(err.into()));
            }
        }
    }

    /// Dispatches an instance's open tasks that are not running and arms its timers, from the
    /// store (after a failed commit or an incident retry).
    async fn recover_instance(&mut self, id: &InstanceId) {
        let now = self.shared.clock.now();
        match self.shared.store.tasks_of(id).await {
            Ok(tasks) => {
                for task in tasks.into_iter().filter(|t| !t.parked) {
                    let key = (id.clone(), task.seq);
                    // Running, or waiting out its backoff: it is already accounted for.
                    if !self.inflight.contains_key(&key) && !self.retry_tasks.contains_key(&key) {
                        self.dispatch_or_schedule(task, now);
                    }
                }
            }
            Err(err) => tracing::error!(wf.id = %id, error = %err, "could not read tasks to recover"),
        }
        match self.shared.store.timers_of(id).await {
            Ok(timers) => timers.iter().for_each(|t| self.timers.arm(t)),
            Err(err) => tracing::error!(wf.id = %id, error = %err, "could not read timers to recover"),
        }
    }

    fn evict(&mut self) {
        let capacity = self.shared.options.cache_capacity;
        while self.cache.len() > capacity {
            let Some(id) = self.order.pop_front() else { break };
            self.cache.remove(&id);
        }
        if self.order.len() > capacity.saturating_mul(2) {
            let cache = &self.cache;
            self.order.retain(|id| cache.contains_key(id));
        }
    }
}

fn store_error(err: &StoreError, message: &str) -> EngineError {
    EngineError::Store(match err {
        StoreError::Conflict(_) => StoreError::Conflict(message.to_owned()),
        StoreError::Unavailable(_) => StoreError::Unavailable(message.to_owned()),
        StoreError::Corrupt(_) => StoreError::Corrupt(message.to_owned()),
        StoreError::Other(_) => StoreError::Other(message.to_owned()),
    })
}

fn refuse(input: Input) {
    match input {
        Input::Start { reply, .. } => ReplyAny::Started(reply).send(EngineError::ShuttingDown),
        Input::Raise { reply, .. } => ReplyAny::Raised(reply).send(EngineError::ShuttingDown),
        Input::Terminate { reply, .. } | Input::RetryIncident { reply, .. } | Input::Suspend { reply, .. } => {
            ReplyAny::Done(reply).send(EngineError::ShuttingDown)
        }
        Input::TaskAction { reply, .. } => ReplyAny::TaskActed(reply).send(EngineError::ShuttingDown),
        Input::Migrate { reply, .. } => ReplyAny::Migrated(reply).send(EngineError::ShuttingDown),
        Input::Watch { reply, .. } => {
            let _ = reply.send(Err(EngineError::ShuttingDown));
        }
        Input::ActivityDone { .. } => {}
    }
}
