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

pub use config::{ChargeMode, MockConfig, Outage, RetryAfterStyle, DEFAULT_KEY};
pub use error::MockError;
pub use reply::{expected_embedding, expected_reply};
pub use server::{router, run_until_ctrl_c, MockHandle, MockServer};
pub use stats::{body_hash, Fault, LogEntry, Stats, LOG_CAPACITY};
