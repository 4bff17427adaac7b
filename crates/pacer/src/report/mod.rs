//! Report: what a run tells the people watching it.
//!
//! The engine emits [`Event`]s on a channel; whoever shows progress (the CLI's
//! bar, plain log lines, a library user's own UI) folds them into a [`Tally`]
//! and reads [`Snapshot`]s from it. The engine folds the same events into its
//! own tally for the final [`Summary`], so what is printed and what is
//! returned cannot disagree.
//!
//! The same events feed [`RunMetrics`] (Prometheus, with the names the
//! gateway uses too), which [`dashboard::Dashboard`] serves at `/metrics`
//! beside the run's charts at `/`.

pub mod dashboard;
mod event;
pub mod metrics;
mod tally;

pub use dashboard::Dashboard;
pub use event::{Event, PaceSource};
pub use metrics::{MetricSet, RunMetrics, OPENMETRICS_CONTENT_TYPE};
pub use tally::{Snapshot, Summary, Tally};
