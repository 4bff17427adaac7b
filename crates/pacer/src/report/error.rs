use std::path::PathBuf;

use crate::store::StoreError;

/// What can go wrong reading a state for a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The path could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a pacer state.
    #[error("{0} is not a pacer state file (no requests table); name the *.pacer.db of a run")]
    NotAState(PathBuf),
    /// Reading the state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query of the history failed.
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl ReportError {
    /// A path the user can fix: missing, not a state (or not SQLite at
    /// all), or written by a newer pacer.
    pub fn is_usage(&self) -> bool {
        let not_a_database = |e: &rusqlite::Error| matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase);
        match self {
            ReportError::Io { .. } | ReportError::NotAState(_) => true,
            ReportError::Store(StoreError::TooNew { .. }) => true,
            ReportError::Store(StoreError::Sqlite { source, .. }) => not_a_database(source),
            ReportError::Sqlite { source, .. } => not_a_database(source),
            _ => false,
        }
    }
}
