use std::path::PathBuf;

use super::lock::LockHolder;

/// What can go wrong with a job's state file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The file system failed (output file, state folder).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// WAL could not be enabled (e.g. a network file system).
    #[error("state file {path}: SQLite would not use WAL mode (got {mode:?}); put the state on a local disk with --state")]
    NoWal { path: PathBuf, mode: String },
    /// The state file was written by a newer pacer.
    #[error("state file {path} has schema version {found}, newer than this pacer understands ({known}); upgrade pacer")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// Another process is running the same job (it holds the job's lock).
    /// Nothing was changed; the job can be run once that process ends.
    #[error("the job in {state} is being run by {}; wait for it to finish or stop it", LockHolder::describe(.holder.as_ref()))]
    Locked {
        state: PathBuf,
        /// Who holds the lock, if its lock file could be read.
        holder: Option<LockHolder>,
    },
    /// The output file is shorter than what pacer recorded writing.
    #[error("{path} was changed since pacer wrote it (it is {actual} bytes, shorter than the {expected} pacer wrote): restore it, or rerun with --restart to start over")]
    OutputTruncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The output's first `len` bytes are not what pacer wrote (edited in place).
    #[error("{path} was changed since pacer wrote it (its first {len} bytes differ from what was written): restore it, or rerun with --restart to start over")]
    OutputChanged { path: PathBuf, len: u64 },
    /// Bytes after what pacer recorded that pacer did not write (only its own
    /// unfinished tail after a crash is cut without asking).
    #[error("{path} has {extra} bytes after the {len} pacer wrote that pacer did not write: move them elsewhere (e.g. `truncate -s {len}` the file), or rerun with --restart to start over")]
    OutputForeignTail { path: PathBuf, len: u64, extra: u64 },
    /// A body the state keeps as a place in the input file is not there
    /// any more: the input was changed while the job was running.
    #[error("{input} was changed while the job ran ({custom_id}'s body is no longer where it was): restore it and rerun, or rerun with --restart to start over")]
    InputChangedDuringRun { input: PathBuf, custom_id: String },
    /// The writer thread is gone (it failed earlier, see the log).
    #[error("the state writer stopped: {0}")]
    WriterGone(String),
}

impl StoreError {
    /// Files changed outside pacer: the user must decide (restore or
    /// `--restart`), like a changed input; rerunning as is cannot help.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::OutputTruncated { .. }
                | StoreError::OutputChanged { .. }
                | StoreError::InputChangedDuringRun { .. }
                | StoreError::OutputForeignTail { .. }
        )
    }
}
