/// Why a shared job could not be loaded, joined or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// `--job NAME` is not a name pacer uses for keys.
    #[error("--job {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// Redis did not answer (`url` is shown without a password).
    #[error("could not reach Redis at {url} (--redis): {cause}")]
    Unreachable { url: String, cause: String },
    /// Nobody has loaded this job into this Redis.
    #[error("there is no job {name:?} in Redis at {url}: start it with `pacer run INPUT --redis {url} --job {name}` on a machine that has the input")]
    NoSuchJob { name: String, url: String },
    /// The job of that name was loaded from another input.
    #[error("the job {name:?} in Redis at {url} was loaded from another input (fingerprint {theirs}, this input's is {ours}): pass another --job, or the same input")]
    OtherInput {
        name: String,
        url: String,
        theirs: String,
        ours: String,
    },
    /// Another process has been loading the job for too long.
    #[error("the job {name:?} in Redis at {url} is still being loaded by another process after {waited_s} s")]
    LoadTimedOut {
        name: String,
        url: String,
        waited_s: u64,
    },
    /// Redis holds something pacer never writes (another program's key, a
    /// request it cannot read).
    #[error("the job {name:?} in Redis at {url} holds something pacer did not write: {what}")]
    Corrupt {
        name: String,
        url: String,
        what: String,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl JobError {
    /// Usage errors (a name, a missing job, another input), as opposed to
    /// failures of Redis or the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            JobError::InvalidName { .. } | JobError::NoSuchJob { .. } | JobError::OtherInput { .. }
        ) || matches!(self, JobError::Store(e) if e.is_usage())
    }
}
