//! Per-key request and token limits, enforced the way providers enforce them.
//!
//! OpenAI and Anthropic both describe their limits as buckets that refill
//! continuously: a key with 60 requests per minute gets one request back
//! every second, not 60 at the top of each minute. A fixed window would let a
//! client send 120 requests across a minute boundary and teach it the wrong
//! pacing, so each key holds two [`Bucket`]s (requests, tokens) that refill at
//! limit/60 per second up to their capacity.
//!
//! A request is admitted only when *both* buckets can pay, and is charged at
//! admission (prompt tokens plus `max_tokens` × `n`), never refunded: that is
//! what makes over-asking for `max_tokens` expensive on the real APIs too.
//! A refusal is data ([`Admission::Refused`]) carrying which limit said no and
//! how long until it would say yes, because that is what the 429 message,
//! `retry-after` and the rate-limit headers are built from.
//!
//! Time is passed in (`tokio::time::Instant`), so tests on tokio's paused
//! clock can drive refill exactly.

mod bucket;
mod duration;
mod headers;
mod limiter;

pub use bucket::Bucket;
pub use duration::openai_duration;
pub use headers::{anthropic_headers, openai_headers, retry_after_headers};
pub use limiter::{Admission, BucketReading, Capacity, LimitKind, LimitSnapshot, RateLimiter};
