//! The engine's errors, by kind. Mapping to HTTP problems or gRPC codes happens at the edge.

use crate::history::InstanceId;
use crate::instance::StepError;
use crate::store::{InstanceStatus, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no orchestration is registered as {0:?}")]
    DefinitionNotFound(String),
    #[error("instance {0} does not exist")]
    InstanceNotFound(InstanceId),
    #[error("instance {0} already exists")]
    InstanceExists(InstanceId),
    #[error("instance {id} is {status:?} and takes no more input")]
    InstanceEnded { id: InstanceId, status: InstanceStatus },
    #[error("instance {id} is faulted (incident open): {reason}")]
    InstanceFaulted { id: InstanceId, reason: String },
    #[error("incident {0} does not exist or is already resolved")]
    IncidentNotFound(i64),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the clock is not manual: start the engine with the manual clock (--clock manual) to move time")]
    ClockNotManual,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// A stable code for operators, documented in docs/errors/.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DefinitionNotFound(_) => "BATON-E001",
            Self::InstanceNotFound(_) => "BATON-E002",
            Self::InstanceExists(_) => "BATON-E003",
            Self::InstanceEnded { .. } => "BATON-E004",
            Self::InstanceFaulted { .. } => "BATON-E005",
            Self::IncidentNotFound(_) => "BATON-E006",
            Self::ShuttingDown => "BATON-E007",
            Self::ClockNotManual => "BATON-E008",
            Self::InvalidArgument(_) => "BATON-E009",
            Self::Step(_) => "BATON-E010",
            Self::Store(_) => "BATON-E011",
        }
    }
}
