//! pacer: make large jobs against LLM HTTP APIs finish.
//!
//! The engine is a pipeline (see docs/ARCHITECTURE.md):
//! `input` (parse, validate, estimate) → `store` (SQLite, the source of truth)
//! → `engine` (scheduler and admission: `limit`) → `transport` (HTTP) →
//! `retry` (classify each answer) → back to `store` and the output file, with
//! `provider` headers and `cost` feeding back into pacing and the budget.
//!
//! ```no_run
//! use pacer::engine::{run, CancellationToken, Limits, RunConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = RunConfig::new("jobs.jsonl".into(), "jobs.results.jsonl".into(), "jobs.pacer.db".into());
//! cfg.transport.base_url = "https://api.openai.com/v1".into();
//! cfg.transport.api_key = Some(pacer::transport::ApiKey::new(std::env::var("OPENAI_API_KEY")?));
//! cfg.limits = Limits { rpm: Some(500.0), tpm: Some(200_000.0), ..Limits::default() };
//! let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! tokio::spawn(async move { while let Some(_event) = rx.recv().await { /* a progress UI */ } });
//! let report = run(cfg, Some(events), CancellationToken::new()).await?;
//! println!("{} succeeded, {} failed", report.summary.succeeded, report.summary.failed);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod cost;
pub mod endpoint;
pub mod engine;
pub mod gateway;
pub mod input;
pub mod jobs;
pub mod limit;
pub mod provider;
pub mod report;
pub mod retry;
pub mod shared;
pub mod store;
pub mod tokens;
pub mod transport;
