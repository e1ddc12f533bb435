//! Activities: the side-effecting work an orchestration asks for, run at least once.
//!
//! An activity is identified for its whole life by its idempotency key (`instance:seq`), the
//! same across attempts and restarts; handlers use it to make their effects idempotent. Each
//! attempt also gets an attempt token; a completion carrying a stale token (an attempt that
//! timed out and was superseded) is dropped.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::history::{InstanceId, Seq};

/// A failure as recorded in history and reported to callers: an RFC 7807 problem in spirit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// A stable identifier of the kind of failure (a URI or a short code).
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl Failure {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into(), details: None }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What an activity handler returns when it fails; the retry policy acts on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ActivityError {
    /// Worth trying again under the retry policy.
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help; fail the activity now.
    #[error("{0}")]
    NonRetryable(String),
    /// Try again, but not before this delay (a rate limit's Retry-After, say).
    #[error("{message} (retry after {after:?})")]
    RetryAfter { message: String, after: Duration },
    /// A failure with its own type and details (an HTTP call's status, say), passed to the
    /// orchestration as it is. Not retried by the engine: the orchestration decides.
    #[error("{0}")]
    Failed(Failure),
}

impl ActivityError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self::NonRetryable(message.into())
    }
}

/// When and how often a failed activity is tried again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means no retry.
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, initial_interval_ms: 1_000, backoff_coefficient: 2.0, max_interval_ms: 60_000 }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The delay before attempt `attempt + 1`, after attempt number `attempt` (1-based) failed.
    /// `None` when no attempt is left.
    pub fn next_delay(&self, attempt: u32, error: &ActivityError) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        match error {
            ActivityError::NonRetryable(_) | ActivityError::Failed(_) => None,
            ActivityError::RetryAfter { after, .. } => Some(*after),
            ActivityError::Retryable(_) => {
                let exponent = attempt.saturating_sub(1).min(64) as i32;
                let delay = self.initial_interval_ms as f64 * self.backoff_coefficient.powi(exponent);
                Some(Duration::from_millis(delay.min(self.max_interval_ms as f64) as u64))
            }
        }
    }
}

/// Options an orchestration gives when it schedules an activity; recorded in history.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ActivityOptions {
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Longest one attempt may run before it counts as failed (retryable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_to_close_ms: Option<u64>,
    /// Longest an attempt may go without a heartbeat before it counts as failed (retryable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
}

/// What a handler knows about the attempt it runs.
#[derive(Clone)]
pub struct ActivityContext {
    pub instance: InstanceId,
    pub seq: Seq,
    /// 1-based.
    pub attempt: u32,
    pub name: String,
    pub(crate) heartbeat: Arc<AtomicI64>,
    pub(crate) heartbeat_timeout_ms: Option<u64>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("instance", &self.instance)
            .field("seq", &self.seq)
            .field("attempt", &self.attempt)
            .field("name", &self.name)
            .finish()
    }
}

impl ActivityContext {
    /// A context for running a handler outside the engine (tests, tools); heartbeats go
    /// nowhere.
    pub fn new(instance: InstanceId, seq: Seq, attempt: u32, name: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            instance,
            seq,
            attempt,
            name: name.into(),
            heartbeat: Arc::new(AtomicI64::new(0)),
            heartbeat_timeout_ms: None,
            clock,
        }
    }

    /// How long this attempt may go without a heartbeat before it counts as failed, if the
    /// orchestration set a limit.
    pub fn heartbeat_timeout(&self) -> Option<Duration> {
        self.heartbeat_timeout_ms.map(Duration::from_millis)
    }

    /// The key that identifies this activity across attempts and restarts: `instance:seq`.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.instance, self.seq)
    }

    /// Tells the engine this attempt is alive (resets the heartbeat timeout).
    pub fn heartbeat(&self) {
        self.heartbeat.store(self.clock.now().timestamp_millis(), Ordering::Relaxed);
    }
}

pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + Send>>;
type Handler = Arc<dyn Fn(ActivityContext, Value) -> ActivityFuture + Send + Sync>;

/// In-process activity handlers by name.
#[derive(Clone, Default)]
pub struct ActivityRegistry {
    handlers: HashMap<String, Handler>,
    /// Runs the names no handler is registered under (remote workers, see [`crate::remote`]).
    fallback: Option<Handler>,
}

impl fmt::Debug for ActivityRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("ActivityRegistry").field("names", &names).field("fallback", &self.fallback.is_some()).finish()
    }
}

impl ActivityRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an async handler under `name`, replacing any earlier one.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, handler: F)
    where
        F: Fn(ActivityContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ActivityError>> + Send + 'static,
    {
        self.handlers.insert(name.into(), Arc::new(move |ctx, input| Box::pin(handler(ctx, input))));
    }

    /// Runs every name no handler is registered under with `handler` (which gets the name in
    /// its context): a server hands those to remote workers this way.
    pub fn fallback<F, Fut>(&mut self, handler: F)
    where
        F: Fn(ActivityContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ActivityError>> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |ctx, input| Box::pin(handler(ctx, input))));
    }

    /// Whether a handler is registered under `name` itself (the fallback does not count).
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    pub(crate) fn call(&self, name: &str, ctx: ActivityContext, input: Value) -> Option<ActivityFuture> {
        self.handlers.get(name).or(self.fallback.as_ref()).map(|handler| handler(ctx, input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let policy =
            RetryPolicy { max_attempts: 5, initial_interval_ms: 100, backoff_coefficient: 2.0, max_interval_ms: 300 };
        let err = ActivityError::retryable("boom");
        assert_eq!(policy.next_delay(1, &err), Some(Duration::from_millis(100)));
        assert_eq!(policy.next_delay(2, &err), Some(Duration::from_millis(200)));
        assert_eq!(policy.next_delay(3, &err), Some(Duration::from_millis(300)));
        assert_eq!(policy.next_delay(5, &err), None);
    }

    #[test]
    fn non_retryable_and_retry_after_override_the_policy() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay(1, &ActivityError::non_retryable("no")), None);
        let after = ActivityError::RetryAfter { message: "slow down".into(), after: Duration::from_secs(7) };
        assert_eq!(policy.next_delay(1, &after), Some(Duration::from_secs(7)));
        assert_eq!(policy.next_delay(3, &after), None, "retry-after still respects max attempts");
    }
}
