//! The job store: the source of truth for every request's state and result.
//!
//! Why SQLite, and why this shape (after effectum):
//! - **One writer.** Every change goes through one [`Writer`] thread that owns
//!   its connection and commits in batches (`BEGIN IMMEDIATE`, many rows, one
//!   commit). Per-request commits would cap a run at a few hundred requests a
//!   second; batches make durable state nearly free.
//! - **WAL.** Readers (the scheduler paging through pending work, `pacer
//!   status`) never block the writer. The pragma is read back and checked,
//!   since SQLite silently keeps another mode where WAL is unavailable.
//! - **The output file follows the store.** A finished request's state is
//!   committed together with its output line in a small queue table; the line
//!   is then appended to the output file and synced, and removed from the
//!   queue together with the file's new length. After a crash,
//!   [`JobStore::recover`] cuts the file back to the last recorded length (no
//!   partial or unrecorded line survives) and appends every line still
//!   queued. A blake3 hash of the recorded prefix is kept with its length,
//!   so a file edited outside pacer is refused instead of resumed; a tail
//!   pacer did not write is refused too, not silently cut. (The queue keeps the requests table at its import size: results
//!   stored in it and cleared later left its pages mostly empty.) So the output holds every
//!   finished request exactly once, and nothing finished is ever sent again.
//! - **At-least-once for in-flight work.** A request is marked in flight
//!   (batched) when it is sent; one still in flight at a crash went out but its
//!   answer was lost, so the next run sends it again and counts it as re-sent.
//! - **One job, one runner.** [`JobLock`] is an OS lock beside the state
//!   file, held for the whole run; the kernel drops it when the run dies.
//! - **Bounded numbers.** Every count written is clamped to [`MAX_TOKENS`]
//!   and every aggregate is read as a float sum, so absurd usage reported by
//!   a provider cannot make the state unreadable.
//! - **History** (`history.rs`): every attempt, the pace in force and each
//!   run's limits, in compact rows written through the same writer and its
//!   batches; `pacer report` reads them (read-only, never blocking the writer).
//! - **Crash recovery at start-up**, schema migrations in SQL files
//!   (`migrations/`), `now` never read inside: the store keeps no clocks.

mod batches;
mod bodies;
mod error;
mod history;
mod job_store;
mod lock;
mod source;
mod writer;

pub use batches::{
    format_time, BatchApi, BatchCandidate, BatchCommand, BatchMember, BatchRow, BatchState,
    NewBatch,
};
pub use error::StoreError;
pub use history::{AttemptOutcome, AttemptRecord, PaceRecord, RunRecord};
pub use job_store::{
    Counts, JobStore, PendingCursor, PendingRow, Recovery, RequestState, MAX_TOKENS, MAX_USD,
};
pub use lock::{JobLock, LockHolder};
pub use source::{More, SqlitePending, Taken, WorkSource};
pub use writer::{Command, Durable, Writer};
