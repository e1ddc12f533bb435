//! Baton's durable core: event-sourced history, deterministic replay, stores, timers and
//! activity queues. It knows nothing of YAML, HTTP or gRPC; workflow languages plug in through
//! the [`Orchestration`] trait.
//!
//! # Glossary
//! - **Definition**: a named, versioned program (a YAML document, or a Rust orchestration),
//!   immutable once deployed, optionally in a namespace; instances record its content hash
//!   ([`DefinitionInfo`]). An engine runs the definitions registered with it, at build or while
//!   it runs ([`Engine::register`]); deployed definitions' texts are kept in the store
//!   ([`store::DefinitionStore`]).
//! - **Instance**: one run of a definition, with its own append-only history ([`Instance`]).
//!   Started with an optional business key and tags, which lists filter by, with its
//!   definition's namespace and its creation time ([`store::InstanceFilter`]).
//! - **HistoryEvent**: a persisted fact about an instance, sequence-numbered, hash-chained and
//!   carrying its actor ([`HistoryEvent`], [`EventKind`]).
//! - **Command**: a decision of the orchestration (schedule an activity, start a timer, wait for
//!   an event, complete...) ([`Command`]). Each command becomes one history event.
//! - **Effect**: work implied by applied events that happens with or after the commit (write a
//!   task row and dispatch it, arm a timer, tell a waiter) ([`Effect`]).
//! - **Task**: a unit of activity work handed to a worker, at least once, with an idempotency
//!   key (`instance:seq`) and an attempt token ([`store::TaskRow`]).
//! - **Lease**: one attempt of a task handed to a remote worker, named by an unguessable token
//!   the worker heartbeats and completes it with ([`remote::RemoteQueue`]).
//! - **Step**: one input event and the commands it led to, committed atomically.
//! - **Incident**: something an instance cannot get past by itself, visible and retryable
//!   ([`store::Incident`]).

pub mod activity;
pub mod clock;
pub mod directory;
pub mod erasure;
mod error;
mod failpoint;
pub mod history;
pub mod human;
pub mod instance;
pub mod machines;
pub mod orchestration;
pub mod program;
pub mod projection;
pub mod remote;
pub mod replay;
pub mod runtime;
pub mod secrets;
pub mod store;

pub use activity::{ActivityContext, ActivityError, ActivityOptions, ActivityRegistry, Failure, RetryPolicy};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::EngineError;
pub use history::{Actor, DefinitionInfo, EventKind, HistoryEvent, InstanceId, Seq, StoredEvent};
pub use instance::{Effect, Instance, StepError};
pub use orchestration::{
    ANY_EVENT, Command, Ctx, DynOrchestration, Fault, FaultKind, Migrated, Orchestration, TaskMapping, Trigger,
};
pub use runtime::{
    Change, ClockMode, Description, Engine, EngineBuilder, EngineOptions, Migrate, Migration, MovedTask, Outcome,
    RaiseEvent, Raised, Resolution, StartOptions, Started, StatsSnapshot,
};
pub use secrets::{ChainSecrets, EnvSecrets, FileSecrets, SecretProvider};
pub use store::{InstanceStatus, Store, StoreError};

#[cfg(test)]
mod replay_props;
