//! The engine's errors, by kind. Mapping to HTTP problems or gRPC codes happens at the edge.

use crate::history::{InstanceId, Seq};
use crate::human::TaskRefusal;
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
    #[error("task {id}:{task} does not exist, or you may not see it")]
    TaskNotFound { id: InstanceId, task: Seq },
    #[error("task {id}:{task}: {refusal}")]
    TaskRefused { id: InstanceId, task: Seq, refusal: TaskRefusal },
    #[error("instance {0} is suspended; resume it first")]
    InstanceSuspended(InstanceId),
    /// A definition version registered again with other content (its message names the
    /// definition and both content hashes).
    #[error("definition conflict: {0}")]
    DefinitionConflict(String),
    /// A migration that would not be safe, with the reason.
    #[error("instance {id} cannot move: {reason}")]
    MigrationRefused { id: InstanceId, reason: String },
    /// Instances not ended still hold the person's data (their state needs it to go on).
    #[error("{person}'s data cannot be erased yet: {} instance(s) still running hold it ({})", instances.len(), list(instances))]
    ErasureRefused { person: String, instances: Vec<InstanceId> },
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
            Self::TaskNotFound { .. } => "BATON-E012",
            Self::TaskRefused { .. } => "BATON-E013",
            Self::InstanceSuspended(_) => "BATON-E014",
            Self::DefinitionConflict(_) => "BATON-E015",
            Self::MigrationRefused { .. } => "BATON-E016",
            Self::ErasureRefused { .. } => "BATON-E017",
        }
    }
}

/// The first few ids, for a message.
fn list(ids: &[InstanceId]) -> String {
    let mut shown: Vec<&str> = ids.iter().take(5).map(InstanceId::as_str).collect();
    if ids.len() > shown.len() {
        shown.push("...");
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_page() {
        let id = InstanceId::new("i");
        let errors = [
            EngineError::DefinitionNotFound("d".into()),
            EngineError::InstanceNotFound(id.clone()),
            EngineError::InstanceExists(id.clone()),
            EngineError::InstanceEnded { id: id.clone(), status: InstanceStatus::Completed },
            EngineError::InstanceFaulted { id, reason: "r".into() },
            EngineError::IncidentNotFound(1),
            EngineError::ShuttingDown,
            EngineError::ClockNotManual,
            EngineError::InvalidArgument("a".into()),
            EngineError::Step(StepError::Corrupt("c".into())),
            EngineError::Store(StoreError::Other("o".into())),
            EngineError::TaskNotFound { id: InstanceId::new("i"), task: 1 },
            EngineError::TaskRefused { id: InstanceId::new("i"), task: 1, refusal: TaskRefusal::NotOpen("completed") },
            EngineError::InstanceSuspended(InstanceId::new("i")),
            EngineError::DefinitionConflict("d@1".into()),
            EngineError::MigrationRefused { id: InstanceId::new("i"), reason: "r".into() },
            EngineError::ErasureRefused { person: "p".into(), instances: vec![InstanceId::new("i")] },
        ];
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors");
        let mut codes = std::collections::HashSet::new();
        for error in &errors {
            assert!(codes.insert(error.code()), "{} is used twice", error.code());
            let page = docs.join(format!("{}.md", error.code()));
            assert!(page.is_file(), "{} has no page at {}", error.code(), page.display());
        }
    }
}
