//! `pacer mock`: a simulated OpenAI- and Anthropic-compatible provider with
//! real limits and real faults.
//!
//! Everything else in pacer needs a peer that behaves like a real provider
//! under load, and users need one to rehearse a 10,000-document job in
//! seconds, with no key and no bill. So the simulator copies what clients
//! depend on, not what is easy: limits are per key, continuously refilling
//! buckets charged at admission with the simulator's own token count
//! ([`tokens::charge`], independent of pacer's engine); every answer carries the
//! providers' rate-limit headers; 429s say how long to wait in the
//! providers' words and headers; failures come in the providers' shapes
//! (500/502/503, Anthropic's 529, billing stops, hangs, resets, cut streams).
//!
//! Replies are deterministic functions of the request content, so a test can
//! tell which request a result belongs to ([`expected_reply`]), and the server
//! records what it saw ([`Stats`], [`LogEntry`]) so tests can assert on the
//! peer's view: how many requests, which statuses, how many duplicates.
//!
//! It also serves the providers' half-price batch APIs, so a batch client can
//! be tested end to end without a key: OpenAI's Files and Batch API
//! (`POST /v1/files`, `GET|DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`,
//! `POST|GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`)
//! and Anthropic's Message Batches (`POST|GET /v1/messages/batches`,
//! `GET|DELETE /v1/messages/batches/{id}`, `.../cancel`, `.../results`). A
//! batch line's result is exactly what a live call of the same request gets
//! (same text, same usage); the simulator's clock moves batches through their
//! states at `--batch-speed` lines a second, and `--batch-line-error-rate`,
//! `--batch-expire-after` and `--batch-token-limit` make them fail as the real
//! ones do. Batches never touch the live limits. [`Stats`] counts uploads,
//! batches, processed lines and batch inputs submitted twice.
//!
//! It must never be the bottleneck of a benchmark: shared state is atomics
//! and short mutex sections, and reply token counts come from a table.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pacer_mock::MockError> {
//! use pacer_mock::{MockConfig, MockServer};
//! let server = MockServer::start(MockConfig { rpm: Some(60), ..Default::default() }).await?;
//! println!("OPENAI_BASE_URL={}", server.base_url());
//! # server.shutdown().await }
//! ```
#![forbid(unsafe_code)]

mod batch;
mod config;
mod error;
mod error_body;
mod faults;
mod handler;
pub mod limits;
pub mod reply;
mod server;
mod state;
mod stats;
pub mod tokens;

pub use config::{
    ChargeMode, MockConfig, Outage, RetryAfterStyle, DEFAULT_BATCH_EXPIRY, DEFAULT_KEY,
};
pub use error::MockError;
pub use reply::{expected_embedding, expected_reply};
pub use server::{router, run_until_ctrl_c, MockHandle, MockServer};
pub use stats::{body_hash, Fault, LogEntry, Stats, LOG_CAPACITY};
