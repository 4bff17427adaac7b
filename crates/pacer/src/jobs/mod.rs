//! Shared jobs: one job spread over many machines through Redis
//! (`pacer run --redis URL --job NAME`, `pacer worker`).
//!
//! A job too big for one machine, or one that must survive losing a
//! machine, lives in Redis instead of one SQLite file:
//!
//! - **Loading, once.** The first `run` validates and imports its input
//!   into its local state as always (so a bad line is still refused before
//!   anything is sent), then copies the pending requests into Redis: one
//!   hash of requests and a **stream** holding each request's index. A
//!   loader holds a lock with a time to live while it writes; a second
//!   `run` of the same input (the input's fingerprint is compared) waits and
//!   joins; a loader that died leaves the job to be loaded anew.
//! - **Handing out work: a consumer group.** Every worker reads the stream
//!   through one consumer group, so each request goes to one worker. What a
//!   worker has taken is its own under a **lease**: it renews the lease
//!   (`XCLAIM … JUSTID` on the entries it still owns) three times a lease
//!   while it works, retries and all. A worker that dies stops renewing, and
//!   after the lease its requests are reclaimed (`XAUTOCLAIM`) by whoever
//!   takes next. Each hand-out is counted; a request handed out more than
//!   five times without an answer is failed with its last error, so one
//!   request that kills its workers cannot go round for ever. One script
//!   (`take.lua`) reclaims, reads and counts atomically.
//! - **Results, exactly once.** A result is written with `HSETNX` (the
//!   first one of a request wins: a request reclaimed from a slow worker
//!   may be answered twice, and it is counted once), its entry is
//!   acknowledged and deleted, and the job's counts move, in one script
//!   (`finish.lua`) for a batch of results. The results stay in Redis
//!   until each `run` that joined has written them to its own output, in
//!   input order, through its local state's writer (so the output is
//!   durable and checked as in a local run). A finished job's keys expire
//!   after [`KEEP_FINISHED`].
//! - **Stops are for everyone.** A stop that is not one process's own
//!   (a rejected key, exhausted quota, the budget) is written to the job;
//!   every worker sees it at its next take and stops. A run or worker that
//!   joins a stopped job lifts the stop: rerunning resumes, as locally.
//! - **Redis away.** Taking fails softly (the dispatcher asks again in a
//!   moment); results not yet recorded are kept and recorded when Redis is
//!   back. Nothing the job holds is lost with a Redis that persists (AOF);
//!   a Redis without persistence that restarts has lost the job.
//!
//! The engine does not know it runs a shared job: the dispatcher takes work
//! from a [`WorkSource`](crate::store::WorkSource) ([`JobQueue`] here, the
//! SQLite pager locally) and sends every change as a
//! [`Command`](crate::store::Command) to one task ([`run_sink`] here, the
//! SQLite writer locally).

mod error;
mod job;
mod keys;
mod queue;
mod sink;

pub use error::JobError;
pub use job::{JobFacts, SharedJob, StoredResult, KEEP_FINISHED, MAX_DELIVERIES};
pub use keys::JobName;
pub use queue::{renew_leases, Held, JobQueue};
pub use sink::{run_sink, SinkHooks};
