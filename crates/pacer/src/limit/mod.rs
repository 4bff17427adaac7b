//! Admission: how fast requests and tokens may go, and when nobody may go.
//!
//! Providers enforce their limits as leaky buckets refilled continuously, so
//! pacer paces with the same shape: the Generic Cell Rate Algorithm
//! ([`Gcra`]), as in `governor`, whose whole state is one instant. It spaces
//! requests exactly (rate 10/s, burst 1: a request every 100 ms, no clumps
//! at window edges) and lets a configured burst through at once. A
//! [`RateLimiter`] wraps it for sharing between workers, once for requests and
//! once for tokens: tokens are reserved from each request's estimate and
//! reconciled with the real usage, and the bucket follows what the provider's
//! headers say remains, so other users of the account do not cause 429s.
//!
//! A refusal is data, [`NotUntil`] with the instant to try again, not a bool:
//! the caller sleeps exactly that long with tokio's clock, which is why every
//! pure function here takes `now` and the tests run on a paused clock.
//!
//! One [`PauseGate`] stops everybody after a 429: the first worker to hear
//! "retry after 20 s" closes it for all, so the other in-flight workers do not
//! run into the same wall one by one.
//!
//! Where no limit is known, [`Aimd`] finds it from 429s as TCP finds a link's
//! capacity; a [`CircuitBreaker`] stops dispatch during an outage and probes
//! with one request; [`little_concurrency`] sizes the requests in flight to
//! the pace and the latency (Little's law).

mod aimd;
mod circuit;
mod concurrency;
mod gcra;
mod pace_state;
mod pause;
mod rate_limiter;

pub use aimd::Aimd;
pub use circuit::{CircuitBreaker, CircuitState, Permit};
pub use concurrency::{little_concurrency, MAX_CONCURRENCY};
pub use gcra::{Gcra, NotUntil};
pub use pace_state::{
    Limiters, Limits, PaceState, PaceView, TokenTicket, DEFAULT_CONCURRENCY, OVERDUE_FLOOR,
    RECOVERY_RAMP,
};
pub use pause::PauseGate;
pub use rate_limiter::RateLimiter;

use std::time::Duration;

use tokio::time::Instant;

/// The furthest ahead any limiter schedules: a year. Durations here grow from
/// servers' numbers (usage, resets, waits); past this they mean "never" and
/// only risk `Instant` overflow and timer panics.
pub const MAX_AHEAD: Duration = Duration::from_secs(365 * 86_400);

/// `now + d`, with `d` capped at [`MAX_AHEAD`]; never panics.
pub fn later(now: Instant, d: Duration) -> Instant {
    // A year past any real `now` fits in an Instant; `now` is the
    // unreachable fallback.
    now.checked_add(d.min(MAX_AHEAD)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_saturates_at_a_year() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(later(now, Duration::MAX), now + MAX_AHEAD);
        assert_eq!(later(now, MAX_AHEAD * 2), now + MAX_AHEAD);
    }
}
