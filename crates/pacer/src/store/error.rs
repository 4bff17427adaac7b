use std::path::PathBuf;

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
    /// The output file no longer matches what the state recorded.
    #[error("output file {path} is shorter ({actual} bytes) than the state recorded ({expected} bytes): it was changed outside pacer; rerun with --restart to start over")]
    OutputTruncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// The writer thread is gone (it failed earlier, see the log).
    #[error("the state writer stopped: {0}")]
    WriterGone(String),
}
