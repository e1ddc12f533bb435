//! Activity tasks for remote workers: a queue per activity name that workers long-poll, and
//! leases they heartbeat and complete.
//!
//! The queue plugs into the engine as the [`ActivityRegistry`](crate::ActivityRegistry)'s
//! fallback, so an attempt handed to a remote worker is an ordinary attempt: its timeouts,
//! retries, attempt token and recovery are the engine's. The queue itself keeps nothing durable:
//! the task row is in the store, and after a restart the engine dispatches the task again, to
//! the queue, as a new attempt.
//!
//! A lease is named by an unguessable token. The attempt ends when the worker completes or fails
//! it, or when the engine gives up on it (start-to-close or heartbeat timeout, instance
//! terminated): the engine drops the attempt's future, and the lease's next heartbeat or
//! completion answers [`LeaseError::Gone`], which is how a worker learns to cancel its work.
//! Delivery is at least once; a worker makes its effects idempotent with the task's key
//! (`instance:seq`).
//!
//! Nothing here knows a transport: the server exposes it over HTTP and gRPC.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

use crate::activity::{ActivityContext, ActivityError, ActivityRegistry};
use crate::history::{InstanceId, Seq};

type Reply = oneshot::Sender<Result<Value, ActivityError>>;

/// An attempt waiting for a worker.
struct Waiting {
    ctx: ActivityContext,
    input: Value,
    reply: Reply,
}

/// An attempt a worker holds.
struct Held {
    ctx: ActivityContext,
    reply: Reply,
    worker: String,
}

#[derive(Default)]
struct Queues {
    waiting: HashMap<String, VecDeque<Waiting>>,
    held: HashMap<String, Held>,
}

/// One attempt handed to a worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Names this lease in heartbeats and completions; unguessable.
    pub token: String,
    pub activity: String,
    pub instance: InstanceId,
    pub seq: Seq,
    /// 1-based.
    pub attempt: u32,
    /// The key that is the same for every attempt of this task: `instance:seq`.
    pub idempotency_key: String,
    pub input: Value,
    /// Heartbeat at least this often (milliseconds), or the attempt counts as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// Why a lease cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No such lease: it was completed already, timed out, was cancelled (the instance was
    /// terminated) or never existed. The worker stops its work; nothing it sends counts.
    #[error("the lease is gone: it was completed, it timed out or its instance was cancelled")]
    Gone,
    /// The lease is held by another worker.
    #[error("the lease belongs to another worker")]
    NotYours,
}

/// How many attempts wait for a worker, by activity name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    pub activity: String,
    pub waiting: usize,
    pub held: usize,
}

/// Activity tasks for remote workers. Shared by the engine (through the registry's fallback)
/// and the transports that serve workers.
#[derive(Default)]
pub struct RemoteQueue {
    queues: Mutex<Queues>,
    arrived: Notify,
}

impl std::fmt::Debug for RemoteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQueue").field("depth", &self.depth()).finish()
    }
}

impl RemoteQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes this queue run every activity `registry` has no handler for.
    pub fn install(self: &Arc<Self>, registry: &mut ActivityRegistry) {
        let queue = Arc::clone(self);
        registry.fallback(move |ctx, input| {
            let queue = Arc::clone(&queue);
            async move { queue.run(ctx, input).await }
        });
    }

    /// Puts the attempt in the queue of its name and waits for a worker's outcome. Dropping the
    /// future (the engine gave up on the attempt) withdraws it, or ends its lease.
    async fn run(&self, ctx: ActivityContext, input: Value) -> Result<Value, ActivityError> {
        let (reply, outcome) = oneshot::channel();
        let name = ctx.name.clone();
        self.lock().waiting.entry(name).or_default().push_back(Waiting { ctx, input, reply });
        self.arrived.notify_waiters();
        outcome.await.unwrap_or_else(|_| Err(ActivityError::retryable("the remote worker's lease was dropped")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The oldest attempt waiting under one of `activities`, leased to `worker`; waits up to
    /// `wait` for one to arrive. None when none did.
    pub async fn poll(&self, activities: &[String], worker: &str, wait: Duration) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an arrival between the look and the wait wakes us.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(lease) = self.take(activities, worker) {
                return Some(lease);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    fn take(&self, activities: &[String], worker: &str) -> Option<Lease> {
        let mut queues = self.lock();
        for name in activities {
            let Some(waiting) = queues.waiting.get_mut(name) else { continue };
            // Attempts the engine gave up on while they waited are skipped.
            while let Some(next) = waiting.pop_front() {
                if next.reply.is_closed() {
                    continue;
                }
                let token = uuid::Uuid::new_v4().simple().to_string();
                let ctx = &next.ctx;
                let lease = Lease {
                    token: token.clone(),
                    activity: ctx.name.clone(),
                    instance: ctx.instance.clone(),
                    seq: ctx.seq,
                    attempt: ctx.attempt,
                    idempotency_key: ctx.idempotency_key(),
                    input: next.input,
                    heartbeat_timeout_ms: ctx.heartbeat_timeout_ms,
                };
                ctx.heartbeat();
                queues.held.insert(token, Held { ctx: next.ctx, reply: next.reply, worker: worker.to_owned() });
                return Some(lease);
            }
        }
        None
    }

    /// Hands the held lease `token` of `worker` to `use_it`, which gives it back to keep it;
    /// Gone when the engine no longer waits for it.
    fn with_held<T>(
        &self,
        token: &str,
        worker: &str,
        use_it: impl FnOnce(Held) -> (T, Option<Held>),
    ) -> Result<T, LeaseError> {
        let mut queues = self.lock();
        let held = queues.held.remove(token).ok_or(LeaseError::Gone)?;
        if held.reply.is_closed() {
            return Err(LeaseError::Gone);
        }
        if held.worker != worker {
            queues.held.insert(token.to_owned(), held);
            return Err(LeaseError::NotYours);
        }
        let (result, keep) = use_it(held);
        if let Some(held) = keep {
            queues.held.insert(token.to_owned(), held);
        }
        Ok(result)
    }

    /// Tells the engine the attempt is alive (resets its heartbeat timeout).
    pub fn heartbeat(&self, token: &str, worker: &str) -> Result<(), LeaseError> {
        self.with_held(token, worker, |held| {
            held.ctx.heartbeat();
            ((), Some(held))
        })
    }

    /// Ends the attempt with the worker's outcome: a result, or a failure the retry policy acts
    /// on.
    pub fn complete(&self, token: &str, worker: &str, outcome: Result<Value, ActivityError>) -> Result<(), LeaseError> {
        let reply = self.with_held(token, worker, |held| (held.reply, None))?;
        reply.send(outcome).map_err(|_| LeaseError::Gone)
    }

    /// Attempts waiting and held, by activity name, sorted by name; the engine's abandoned
    /// attempts are not counted.
    pub fn depth(&self) -> Vec<QueueDepth> {
        let queues = self.lock();
        let mut depth: HashMap<&str, QueueDepth> = HashMap::new();
        for (name, waiting) in &queues.waiting {
            let count = waiting.iter().filter(|w| !w.reply.is_closed()).count();
            if count > 0 {
                depth
                    .entry(name)
                    .or_insert_with(|| QueueDepth { activity: name.clone(), ..Default::default() })
                    .waiting = count;
            }
        }
        for held in queues.held.values().filter(|h| !h.reply.is_closed()) {
            let name = held.ctx.name.as_str();
            depth.entry(name).or_insert_with(|| QueueDepth { activity: name.to_owned(), ..Default::default() }).held +=
                1;
        }
        let mut depth: Vec<QueueDepth> = depth.into_values().collect();
        depth.sort_by(|a, b| a.activity.cmp(&b.activity));
        depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn context(name: &str, seq: Seq) -> ActivityContext {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::frozen(chrono::Utc::now()));
        ActivityContext::new(InstanceId::new("i-1"), seq, 1, name, clock)
    }

    #[tokio::test]
    async fn a_worker_gets_the_oldest_attempt_of_its_names_and_its_outcome_reaches_the_engine() {
        let queue = RemoteQueue::new();
        let first = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.run(context("ocr", 3), serde_json::json!({"page": 1})).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(queue.poll(&["print".into()], "w1", Duration::from_millis(10)).await, None);
        let lease = queue.poll(&["print".into(), "ocr".into()], "w1", Duration::from_secs(5)).await.expect("a lease");
        assert_eq!((lease.activity.as_str(), lease.seq, lease.attempt), ("ocr", 3, 1));
        assert_eq!(lease.idempotency_key, "i-1:3");
        assert_eq!(queue.depth(), vec![QueueDepth { activity: "ocr".into(), waiting: 0, held: 1 }]);
        assert_eq!(queue.heartbeat(&lease.token, "w2"), Err(LeaseError::NotYours));
        queue.heartbeat(&lease.token, "w1").expect("alive");
        queue.complete(&lease.token, "w1", Ok(serde_json::json!("text"))).expect("completed");
        assert_eq!(first.await.expect("the attempt ends"), Ok(serde_json::json!("text")));
        assert_eq!(queue.complete(&lease.token, "w1", Ok(Value::Null)), Err(LeaseError::Gone), "a lease ends once");
        assert!(queue.depth().is_empty());
    }

    #[tokio::test]
    async fn a_poll_waits_for_an_arrival() {
        let queue = RemoteQueue::new();
        let poll = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.poll(&["ocr".into()], "w1", Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        let attempt = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.run(context("ocr", 1), Value::Null).await }
        });
        let lease = poll.await.expect("the poll ends").expect("woken by the arrival");
        queue.complete(&lease.token, "w1", Err(ActivityError::non_retryable("unreadable"))).expect("failed");
        assert_eq!(attempt.await.expect("the attempt ends"), Err(ActivityError::non_retryable("unreadable")));
    }

    #[tokio::test]
    async fn an_attempt_the_engine_gave_up_on_is_withdrawn_or_its_lease_is_gone() {
        let queue = RemoteQueue::new();
        let waiting = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.run(context("ocr", 1), Value::Null).await }
        });
        tokio::task::yield_now().await;
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(queue.poll(&["ocr".into()], "w1", Duration::from_millis(10)).await, None, "withdrawn");

        let held = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.run(context("ocr", 2), Value::Null).await }
        });
        let lease = queue.poll(&["ocr".into()], "w1", Duration::from_secs(5)).await.expect("a lease");
        held.abort();
        let _ = held.await;
        assert_eq!(queue.heartbeat(&lease.token, "w1"), Err(LeaseError::Gone), "cancelled");
    }
}
