//! What to do with each answer, and how long to wait before trying again.
//!
//! Every answer falls in one of four classes ([`Verdict`]): success; retry
//! later (429, 408, 409, 5xx, 529, timeouts, connection errors, cut streams);
//! failed for good (other 4xx: the same bytes will get the same answer); or
//! stop the whole run (401, 403, 429 `insufficient_quota`, the budget), where
//! every further request would burn time and money for nothing. Treating a
//! bad key as "retry with backoff", as naive loops do, turns one mistake into
//! thousands of wasted calls.
//!
//! The wait honours the provider first: `retry-after-ms`, `retry-after`
//! (seconds or an HTTP date), then the hint in a 429's message ("try again in
//! 20s"), never shortened, with a little jitter after it so a crowd of workers
//! does not return at the same instant. Without a hint, exponential backoff
//! with *full* jitter ([`RetryPolicy`]), which spreads retries best under
//! contention. Randomness and wall time are passed in, so all of it is tested
//! deterministically.

mod after;
mod classify;
mod decide;
mod outcome;
mod policy;

pub use after::{retry_after, retry_hint_from_message};
pub use classify::{classify, LimitScope, RetryReason, StopReason, Verdict};
pub use decide::{NextStep, RetryState};
pub use outcome::{verdict_of_error, Outcome};
pub use policy::{admissible_wait, RetryPolicy, WaitTooLong};
