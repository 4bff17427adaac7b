use std::path::PathBuf;

use crate::cost::CostError;
use crate::input::InputError;
use crate::store::StoreError;
use crate::transport::TransportError;

/// Why a run could not start or carry on (as opposed to stopping early on
/// purpose, which is a [`StopReason`](crate::retry::StopReason) in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The input is invalid; nothing was sent.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cost(#[from] CostError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A shared job in Redis could not be loaded, joined or read.
    #[error(transparent)]
    Job(#[from] crate::jobs::JobError),
    /// The input changed since the state was made.
    #[error("{input} changed since the run recorded in {state} started; rerun with --restart to start over (finished results in the output would be discarded), or restore the original input to resume")]
    InputChanged { input: PathBuf, state: PathBuf },
    /// An output file exists with no state to say what is in it.
    #[error("{output} already exists but {state} holds no run for it; move it away or rerun with --restart to overwrite it")]
    OutputExists { output: PathBuf, state: PathBuf },
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    /// Usage and input errors, as opposed to failures of the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EngineError::Input(_)
                | EngineError::Cost(_)
                | EngineError::InputChanged { .. }
                | EngineError::OutputExists { .. }
                | EngineError::Config(_)
        ) || matches!(self, EngineError::Store(e) if e.is_usage())
            || matches!(self, EngineError::Job(e) if e.is_usage())
    }
}
