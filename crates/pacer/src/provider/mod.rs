//! What providers say about their limits, read from their answers.
//!
//! Pacing aims at the provider's real limit, not at a cautious guess, so the
//! engine listens to every answer: OpenAI's `x-ratelimit-*` headers (Go-style
//! durations such as `6m0s` or `20ms`), Anthropic's `anthropic-ratelimit-*`
//! headers (RFC 3339 reset times) and the wait hinted in a 429's message. This
//! module only *reads*: it turns headers into a [`RateLimitSnapshot`] of plain
//! numbers, and leaves what to do with them to `limit` and the engine. Wall
//! time is passed in (`now_wall`) so that reset dates are testable.
//!
//! Parsing is liberal and never fails the request: a value that cannot be read
//! is skipped with a warning naming the header, because a wrong limit is worse
//! than none (the engine then falls back to configured or learned limits).
//!
//! Every number a server sends goes through [`bounded`]: waits and resets are
//! capped at [`MAX_SERVER_WAIT`], counts at [`MAX_COUNT`], and no arithmetic
//! on them can panic.

pub mod bounded;
mod duration;
mod headers;

pub use bounded::{ServerWait, WaitSource, MAX_COUNT, MAX_SERVER_WAIT};
pub use duration::parse_duration;
pub use headers::{parse_rate_limit_headers, RateLimitSnapshot, RateWindow};
