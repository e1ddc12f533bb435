//! A remote worker: runs activities by name for a Baton server, over its gRPC API.
//!
//! ```no_run
//! # async fn example() -> Result<(), baton_worker::WorkerError> {
//! use baton_worker::{TaskError, Worker};
//! let worker = Worker::connect("http://127.0.0.1:9090", "worker-token").await?
//!     .activity("ocr", |task| async move {
//!         let page = task.input["page"].as_u64().ok_or(TaskError::NonRetryable("no page".into()))?;
//!         Ok(serde_json::json!({ "text": format!("page {page}") }))
//!     });
//! worker.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
//!
//! The worker long-polls the server for the activity names it has handlers for, runs each task
//! it leases, heartbeats while the handler runs, and reports the result or the failure with the
//! lease's token. When a heartbeat answers that the lease is over (the attempt timed out, or its
//! instance was terminated), the handler's future is dropped: the work is cancelled. Delivery is
//! at least once; handlers make their effects idempotent with [`Task::idempotency_key`]. When the
//! server cannot be reached the worker waits and polls again: the tasks wait in the server's store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use baton_proto::json::{from_proto, to_proto};
use baton_proto::v1;
use baton_proto::v1::workers_client::WorkersClient;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// One attempt of an activity task, as the worker's handler gets it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub activity: String,
    pub instance: String,
    pub seq: u64,
    /// 1-based.
    pub attempt: u32,
    /// The same for every attempt of this task (`instance:seq`).
    pub idempotency_key: String,
    pub input: Value,
}

/// How a handler fails; the activity's retry policy acts on it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// Worth another attempt.
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help.
    #[error("{0}")]
    NonRetryable(String),
    /// Another attempt, not sooner than `after`.
    #[error("{message} (retry after {after:?})")]
    RetryAfter { message: String, after: Duration },
    /// A failure of its own type, for the workflow to catch; not retried by the engine.
    #[error("{kind}: {message}")]
    Failed { kind: String, message: String, details: Option<Value> },
}

/// Why a worker cannot run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the server: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the server refused the worker: {0}")]
    Refused(String),
    #[error("the worker has no activity to run")]
    NoActivities,
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
type Handler = Arc<dyn Fn(Task) -> HandlerFuture + Send + Sync>;

/// A remote worker: handlers by activity name, and a connection to a server.
pub struct Worker {
    client: WorkersClient<Channel>,
    bearer: String,
    handlers: HashMap<String, Handler>,
    concurrency: usize,
    poll_wait: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("Worker").field("activities", &names).field("concurrency", &self.concurrency).finish()
    }
}

impl Worker {
    /// A worker for the server's gRPC API at `address` (`http://host:9090`), with a token that
    /// has the `worker` permission.
    pub async fn connect(address: &str, token: &str) -> Result<Self, WorkerError> {
        let channel = Channel::from_shared(address.to_owned())
            .map_err(|e| WorkerError::Refused(format!("{address:?} is not an address: {e}")))?
            .connect_lazy();
        Ok(Self {
            client: WorkersClient::new(channel),
            bearer: format!("Bearer {token}"),
            handlers: HashMap::new(),
            concurrency: 4,
            poll_wait: Duration::from_secs(20),
        })
    }

    /// Runs `name`'s tasks with `handler`.
    pub fn activity<F, Fut>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
    {
        self.handlers.insert(name.into(), Arc::new(move |task| Box::pin(handler(task))));
        self
    }

    /// Tasks run at once (default 4).
    pub fn concurrency(mut self, tasks: usize) -> Self {
        self.concurrency = tasks.max(1);
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.bearer.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Polls and runs tasks until `shutdown` is cancelled; tasks running then are finished.
    /// Ends with an error when the server refuses the worker (a bad token, no permission).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        if self.handlers.is_empty() {
            return Err(WorkerError::NoActivities);
        }
        let mut names: Vec<String> = self.handlers.keys().cloned().collect();
        names.sort();
        let worker = Arc::new(self);
        let slots = Arc::new(Semaphore::new(worker.concurrency));
        let running = tokio_util::task::TaskTracker::new();
        tracing::info!(activities = ?names, "worker polling");
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { break };
            let poll = v1::PollActivityTaskRequest {
                activities: names.clone(),
                wait_ms: Some(worker.poll_wait.as_millis() as u64),
            };
            let mut client = worker.client.clone();
            let polled = tokio::select! {
                () = shutdown.cancelled() => break,
                polled = client.poll_activity_task(worker.request(poll)) => polled,
            };
            match polled {
                Ok(reply) => {
                    if let Some(lease) = reply.into_inner().lease {
                        let worker = Arc::clone(&worker);
                        let span = tracing::info_span!("task", activity = %lease.activity, key = %lease.idempotency_key, attempt = lease.attempt);
                        running.spawn(tracing::Instrument::instrument(
                            async move {
                                worker.execute(lease).await;
                                drop(slot);
                            },
                            span,
                        ));
                    }
                }
                Err(status) if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                    return Err(WorkerError::Refused(status.message().to_owned()));
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "poll failed; polling again");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        running.close();
        running.wait().await;
        Ok(())
    }

    /// Runs one leased task: the handler, with heartbeats beside it, then the report.
    async fn execute(&self, lease: v1::Lease) {
        let Some(handler) = self.handlers.get(&lease.activity).cloned() else { return };
        let task = Task {
            activity: lease.activity.clone(),
            instance: lease.instance.clone(),
            seq: lease.seq,
            attempt: lease.attempt,
            idempotency_key: lease.idempotency_key.clone(),
            input: lease.input.clone().map(from_proto).unwrap_or_default(),
        };
        let every =
            Duration::from_millis(lease.heartbeat_timeout_ms.unwrap_or(30_000) / 3).max(Duration::from_millis(100));
        let token = lease.token;
        let heartbeats = async {
            loop {
                tokio::time::sleep(every).await;
                let mut client = self.client.clone();
                let beat = client.heartbeat_activity_task(self.request(v1::LeaseRef { token: token.clone() })).await;
                if let Err(status) = beat
                    && status.code() == Code::NotFound
                {
                    return;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = handler(task) => outcome,
            () = heartbeats => {
                tracing::info!("the lease is over (timed out or cancelled); the work is dropped");
                return;
            }
        };
        let mut client = self.client.clone();
        let reported = match outcome {
            Ok(result) => {
                let message = v1::CompleteActivityTaskRequest { token, result: Some(to_proto(result)) };
                client.complete_activity_task(self.request(message)).await
            }
            Err(error) => {
                let mut message =
                    v1::FailActivityTaskRequest { token, message: error.to_string(), ..Default::default() };
                match error {
                    TaskError::Retryable(_) => message.retryable = Some(true),
                    TaskError::NonRetryable(_) => message.retryable = Some(false),
                    TaskError::RetryAfter { after, .. } => message.retry_after_ms = Some(after.as_millis() as u64),
                    TaskError::Failed { kind, message: text, details } => {
                        message.r#type = Some(kind);
                        message.message = text;
                        message.details = details.map(to_proto);
                    }
                }
                client.fail_activity_task(self.request(message)).await
            }
        };
        match reported {
            Ok(_) => tracing::info!("reported"),
            Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "the report was refused"),
        }
    }
}
