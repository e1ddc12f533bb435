//! Running one attempt of an activity task in process, under its timeouts.
//!
//! The attempt runs on its own tokio task and reports back to the core through the input
//! channel with its attempt token. Start-to-close and heartbeat timeouts are measured on the
//! engine's clock, so a manual clock can make them expire in tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Input, Shared};
use crate::activity::{ActivityContext, ActivityError, ActivityOptions};
use crate::store::TaskRow;

/// Starts attempt `attempt` of `task`; returns a handle that aborts it.
pub(crate) fn spawn_attempt(
    shared: &Arc<Shared>,
    tx: mpsc::Sender<Input>,
    tracker: &tokio_util::task::TaskTracker,
    task: &TaskRow,
    attempt: u32,
    token: u64,
) -> tokio::task::AbortHandle {
    let options: ActivityOptions = serde_json::from_value(task.options.clone()).unwrap_or_default();
    let clock = shared.clock.clone();
    let started = clock.now();
    let heartbeat = Arc::new(AtomicI64::new(started.timestamp_millis()));
    let ctx = ActivityContext {
        instance: task.instance.clone(),
        seq: task.seq,
        attempt,
        name: task.name.clone(),
        heartbeat: heartbeat.clone(),
        heartbeat_timeout_ms: options.heartbeat_timeout_ms,
        clock: clock.clone(),
    };
    let call = shared.activities.call(&task.name, ctx, task.input.clone());
    let name = task.name.clone();
    let id = task.instance.clone();
    let seq = task.seq;
    let run = async move {
        let Some(call) = call else {
            return Err(ActivityError::non_retryable(format!("no activity is registered as {name:?}")));
        };
        let start_to_close = async {
            match options.start_to_close_ms {
                Some(ms) => clock.sleep_until(started + chrono::Duration::milliseconds(ms as i64)).await,
                None => std::future::pending().await,
            }
        };
        let heartbeat_lost = async {
            let Some(timeout) = options.heartbeat_timeout_ms else { return std::future::pending().await };
            loop {
                let last = heartbeat.load(Ordering::Relaxed);
                clock.sleep_until(crate::history::time_from_ms(last + timeout as i64)).await;
                if heartbeat.load(Ordering::Relaxed) == last {
                    return;
                }
            }
        };
        // A panicking handler fails its attempt (retryable) instead of leaving it running forever.
        let call = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(call));
        tokio::select! {
            outcome = call => outcome.unwrap_or_else(|panic| {
                Err(ActivityError::retryable(format!(
                    "the activity panicked: {}",
                    crate::instance::panic_message(&*panic)
                )))
            }),
            _ = start_to_close => Err(ActivityError::retryable("start-to-close timeout")),
            _ = heartbeat_lost => Err(ActivityError::retryable("heartbeat timeout")),
        }
    };
    let span = tracing::info_span!("activity", wf.id = %task.instance, wf.seq = task.seq, activity.name = %task.name, activity.attempt = attempt);
    let run = tracing::Instrument::instrument(run, span);
    let handle = tracker.spawn(async move {
        let outcome: Result<Value, ActivityError> = run.await;
        // The core may be gone (shutdown); the task row stays and recovery runs it again.
        let _ = tx.send(Input::ActivityDone { id, seq, token, attempt, outcome }).await;
    });
    handle.abort_handle()
}
