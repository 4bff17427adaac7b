//! pacer: make large jobs against LLM HTTP APIs finish.
//!
//! The engine is a pipeline (see DESIGN.md):
//! `input` (parse, validate, estimate) → `store` (SQLite, the source of truth)
//! → `engine` (scheduler and admission: `limit`) → `transport` (HTTP) →
//! `retry` (classify each answer) → back to `store` and the output file, with
//! `provider` headers and `cost` feeding back into pacing and the budget.
#![forbid(unsafe_code)]

pub mod cost;
pub mod engine;
pub mod input;
pub mod limit;
pub mod provider;
pub mod report;
pub mod retry;
pub mod store;
pub mod tokens;
pub mod transport;
