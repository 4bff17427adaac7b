//! The engine: from a validated job in the store to every request finished.
//!
//! ```text
//! store ──pages──► ready heap ──► admission ──► worker ──► outcome
//!   ▲              (priority,     (concurrency,  (HTTP)     success / fail ──► writer ──► store + output
//!   │               input order)   pause gate,              retry ──► timer queue ──► ready heap
//!   │                  ▲           GCRA rps/rpm/            stop ──► no more admission
//!   │                  │           tpm, budget)
//!   └── writer ◄───────┴──────── feedback: headers, 429s, usage ──► pacer
//! ```
//!
//! One dispatcher task owns the order of work: it pages pending requests out
//! of the store in scheduler order (never loading the whole job), merges
//! retries that fall due from a timer queue (a `DelayQueue`, not a sleeping
//! task per request), and admits one request at a time through
//! [`Pacer`](pace::Pacer). Admitted requests run as tasks; their outcomes go
//! to the store's single writer, and a request counts as done only when its
//! output line is durable.
//!
//! Stopping is data: a 401, a 403, an exhausted quota, the budget or Ctrl-C
//! sets a [`StopReason`](crate::retry::StopReason) once; nothing is admitted
//! after it, in-flight requests are given time to finish, and everything is
//! saved so that the same command resumes.

mod attempt;
pub mod batch;
mod config;
mod dispatch;
mod error;
mod item;
mod output;
mod pace;
mod prepare;
mod shared_job;
mod verify;

pub use batch::{cancel, BatchOptions, CancelReport, Via};
pub use config::{Limits, RunConfig};
pub use dispatch::{run, RunReport};
pub use error::EngineError;
pub use output::{error_line, parse_body, read_answer, response_line, AnswerBody, OutputBody};
pub use pace::{InFlight, PaceChange, Pacer};
pub use prepare::{status, StatusReport};
pub use shared_job::{job_export, job_status, work, JobConfig, WorkReport};
pub use tokio_util::sync::CancellationToken;
pub use verify::{verify, Verdict as VerifyVerdict};
