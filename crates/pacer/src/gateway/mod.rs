//! The gateway: pacer's admission in front of programs that cannot be
//! rewritten.
//!
//! Most batch jobs are existing programs (a loop over the `openai` SDK,
//! LangChain, a Node script) with many workers sharing one key. Gateways in
//! front of LLM APIs answer 429 when a limit is reached and leave the
//! waiting to each client, which then retries blind, all of them at once.
//! `pacer serve` holds requests back instead: every request waits in one
//! queue, by priority then arrival, until the shared [`Pacer`] admits it
//! (configured limits as ceilings, limits learned from the upstream's
//! headers and 429s, one pause gate, the circuit breaker, Little's-law
//! concurrency), exactly as `pacer run` admits a batch's lines. A client
//! gets a 429 only when its turn would come later than it is willing to
//! wait, and that 429 says when to come back.
//!
//! The parts, one concern a file:
//! - [`queue`]: [`AdmissionQueue`], the priority order in front of the pacer;
//!   one dispatcher task takes the next turn for the best live waiter.
//! - [`layer`]: [`PaceLayer`], the admission, retries and feedback as a
//!   [`tower::Layer`] around any HTTP client service; `serve` uses it around
//!   [`Upstream`], and a Rust program can use it around its own client.
//! - [`body`]: [`PacedBody`], the answer passed through frame by frame and
//!   read on the side for its usage; its end gives the slot back.
//! - [`upstream`]: [`Upstream`], the providers (OpenAI-compatible and
//!   Anthropic) as a service: auth replaced, no redirect followed.
//! - [`server`]: [`Gateway`], the HTTP server (axum): client keys, body
//!   limits, budgets per client, errors in OpenAI's shape, `/metrics`.
//! - [`clients`], [`metrics`]: the client keys file, the Prometheus metrics.
//!
//! [`Pacer`]: crate::engine::Pacer

mod body;
mod clients;
mod error;
mod history;
mod layer;
mod metrics;
mod queue;
mod server;
mod upstream;

pub use body::{Ending, Finished, PacedBody, UsageSource};
pub use clients::{ClientId, ClientKeys};
pub use error::GatewayError;
pub use history::GatewayHistory;
pub use layer::{
    BoxError, OnFinished, PaceError, PaceLayer, PaceLayerBuilder, PaceOptions, Paced,
    DEFAULT_MAX_WAIT,
};
pub use metrics::GatewayMetrics;
pub use queue::{Admission, AdmissionQueue, Place, QueueRefusal};
pub use server::{Gateway, ServeConfig, DEFAULT_MAX_BODY_BYTES};
pub use upstream::Upstream;
