//! `pacer run --via batch`: the same job through the providers' batch APIs,
//! at half the price, when the results can wait (up to 24 hours).
//!
//! # The route
//!
//! ```text
//! pending ──plan──► planned ──upload──► uploaded ──create──► submitted ──poll──► ended ──collect──► done
//!  (store)  (group,   (requests   (OpenAI:       (file id     (batch id    (backoff    (output and   (lines written,
//!            split,    point at    /v1/files)     committed)   committed)   ×1.5 to     error files,  the rest back
//!            budget)   the batch)                                           5 min)      streamed)     to pending)
//! ```
//!
//! A batch holds one API, one endpoint and one model, under the provider's
//! limits (OpenAI: 50,000 requests and 200 MB a file; Anthropic: 100,000
//! requests and 256 MB). `--max-cost` reserves a batch's worst case, at
//! batch prices, when it is planned; what its results really cost replaces
//! the reservation when it ends.
//!
//! # Same output, same guarantees
//!
//! Results go through the live route's writer, as the same output lines
//! ([`response_line`](crate::engine::response_line),
//! [`error_line`](crate::engine::error_line)), each request once, durable
//! before it counts. A line's answer is judged by the same classifier as a
//! live answer: a 2xx succeeds, a 400 fails for good with its answer kept,
//! 5xx, 429 and Anthropic's `api_error`/`overloaded_error` go back to
//! pending for a later batch (counted against `--max-retries`, except 429),
//! and lines never run because their batch expired or was cancelled go
//! back to pending uncounted. OpenAI failing a batch for its enqueued-token
//! limit (`token_limit_exceeded`) is "later", not a failure: the model's
//! next batch waits until another of its batches ends (or a while, with
//! smaller batches, when none is open).
//!
//! # Never twice
//!
//! Each phase commits what the provider handed out before the next begins:
//! the file id before the batch is created, the batch id as soon as the
//! create returns. Between the two a crash can lose the id of a batch that
//! exists; a `creating` marker committed before every create call makes
//! the next run look for it (OpenAI: by the metadata `pacer_job`/
//! `pacer_batch` every batch carries, or its input file; Anthropic: by
//! creation time and size, see `recover.rs`) and adopt it instead of
//! creating another. A create that times out is looked for the same way
//! before it is retried. Collecting is idempotent: only requests still in
//! flight in the batch are written, so an `ended` batch whose results were
//! half written at a crash is simply collected again.
//!
//! # Stopping
//!
//! Ctrl-C leaves submitted batches running at the provider; the next run
//! (same command) picks them up, and `pacer cancel` cancels them. A live
//! run refuses a job whose batches are still at the provider.

mod api;
mod cancel;
mod collect;
mod driver;
mod files;
mod lines;
mod plan;
mod recover;
mod schedule;

use std::time::Duration;

pub use cancel::{cancel, CancelFailure, CancelReport, CancelledBatch};
pub(crate) use driver::{Driver, DriverParts};
pub(crate) use plan::route;

/// How a run sends its requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Via {
    /// One HTTP request each, paced (the default).
    #[default]
    Live,
    /// Through the providers' batch APIs, at batch prices.
    Batch(BatchOptions),
}

/// Settings of `--via batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// The first wait between two polls of a batch; it grows ×1.5 while
    /// nothing changes, up to 5 minutes.
    pub poll_interval: Duration,
    /// At most this many requests a batch (below the provider's own limit);
    /// for tests and rehearsals.
    pub max_lines: Option<usize>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            poll_interval: Duration::from_secs(30),
            max_lines: None,
        }
    }
}

pub(crate) use api::Api;

#[cfg(test)]
mod tests {
    use super::*;

    /// A run (either route) is a future a library user can spawn.
    #[test]
    fn a_batch_run_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let mut cfg =
            crate::engine::RunConfig::new("j.jsonl".into(), "o.jsonl".into(), "s.db".into());
        cfg.via = Via::Batch(BatchOptions::default());
        let run = crate::engine::run(cfg, None, tokio_util::sync::CancellationToken::new());
        send(&run);
    }
}
