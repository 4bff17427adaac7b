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
//!
//! After (or during) a run, `pacer report` and the live dashboard read the
//! run's history from its state: [`ReportData::from_state`] aggregates it in
//! time buckets (never more than [`MAX_POINTS`], whatever the job's size),
//! and [`html::render`] draws one self-contained page of SVG charts from it.

pub mod dashboard;
mod data;
mod error;
mod event;
pub mod html;
pub mod metrics;
mod svg;
mod tally;

pub use dashboard::Dashboard;
pub use data::{
    bucket_width, downsample_steps, Bucket, ErrorKind, PacePoint, ReportData, RunInfo, MAX_POINTS,
};
pub use error::ReportError;
pub use event::{Event, PaceSource};
pub use html::{render, RenderOptions};
pub use metrics::{MetricSet, RunMetrics, OPENMETRICS_CONTENT_TYPE};
pub use tally::{Snapshot, Summary, Tally};
