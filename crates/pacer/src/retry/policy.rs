use std::time::Duration;

use rand::Rng;

use super::StopReason;
use crate::provider::ServerWait;

/// How many times to retry, and how long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; the last answer is then kept as the result.
    pub max_retries: u32,
    /// The backoff ceiling of the first retry.
    pub base: Duration,
    /// No backoff is longer than this (a provider's own hint may be).
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

/// The jitter added after a provider's hint: 10% of it, at most this.
const HINT_JITTER_MAX: Duration = Duration::from_millis(250);

impl RetryPolicy {
    /// Exponential backoff with *full* jitter (uniform in
    /// `[0, min(cap, base · 2^attempt)]`, attempt 0 being the first retry).
    /// Full jitter spreads a crowd of failed workers over the whole window, so
    /// they do not come back together and fail together again.
    pub fn backoff(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .checked_mul(2u32.saturating_pow(attempt.min(31)))
            .unwrap_or(Duration::MAX)
            .min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.gen_range(0..=nanos))
    }

    /// The wait before retry number `attempt`: the provider's `hint`
    /// (Retry-After) when it gave one, never shortened, plus a small jitter
    /// (up to 10% of it or 250 ms, whichever is smaller) so that workers told
    /// the same instant do not all wake at it; else [`backoff`](Self::backoff).
    pub fn delay(&self, attempt: u32, hint: Option<Duration>, rng: &mut impl Rng) -> Duration {
        match hint {
            Some(hint) => {
                let max = (hint / 10).min(HINT_JITTER_MAX);
                let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                hint.saturating_add(Duration::from_nanos(rng.gen_range(0..=max)))
            }
            None => self.backoff(attempt, rng),
        }
    }
}

/// A server's wait longer than the user will wait for any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", StopReason::WaitTooLong { asked: self.asked, max: self.max })]
#[non_exhaustive]
pub struct WaitTooLong {
    pub asked: ServerWait,
    pub max: Duration,
}

impl From<WaitTooLong> for StopReason {
    fn from(w: WaitTooLong) -> StopReason {
        StopReason::WaitTooLong {
            asked: w.asked,
            max: w.max,
        }
    }
}

/// Whether a server's wait can be honoured within `max_retry_time`: the wait
/// to act on (capped at [`MAX_SERVER_WAIT`](crate::provider::MAX_SERVER_WAIT)),
/// or why not. A wait beyond `--max-retry-time` is addressed to every
/// request alike, so the caller stops the run (resumable) rather than
/// sleeping or failing requests one by one.
pub fn admissible_wait(
    asked: ServerWait,
    max_retry_time: Duration,
) -> Result<Duration, WaitTooLong> {
    if asked.asked > max_retry_time {
        Err(WaitTooLong {
            asked,
            max: max_retry_time,
        })
    } else {
        Ok(asked.wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 10);
        assert_eq!(p.base, Duration::from_millis(500));
        assert_eq!(p.cap, Duration::from_secs(60));
    }

    #[test]
    fn backoff_is_full_jitter_within_bounds() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        for attempt in 0..40u32 {
            let ceiling = if attempt < 7 {
                p.base * 2u32.pow(attempt)
            } else {
                p.cap
            };
            let draws = 4000;
            let mut sum = 0.0;
            let mut max = Duration::ZERO;
            let mut min = Duration::MAX;
            for _ in 0..draws {
                let d = p.backoff(attempt, &mut rng);
                assert!(d <= ceiling && d <= p.cap, "attempt {attempt}: {d:?}");
                sum += d.as_secs_f64();
                max = max.max(d);
                min = min.min(d);
            }
            let mean = sum / draws as f64 / ceiling.as_secs_f64();
            assert!(
                (0.45..0.55).contains(&mean),
                "attempt {attempt}: mean {mean}"
            );
            // Full jitter reaches both ends of the window.
            assert!(
                min < ceiling / 50 && max > ceiling * 49 / 50,
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let p = RetryPolicy {
            max_retries: u32::MAX,
            base: Duration::from_secs(u64::MAX / 4),
            cap: Duration::MAX,
        };
        let mut rng = rng();
        p.backoff(u32::MAX, &mut rng);
        p.delay(u32::MAX, Some(Duration::MAX), &mut rng);
    }

    #[test]
    fn a_hint_is_honoured_with_a_little_jitter_after_it() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        let mut spread = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = p.delay(3, Some(Duration::from_secs(20)), &mut rng);
            assert!(d >= Duration::from_secs(20));
            assert!(d <= Duration::from_secs(20) + Duration::from_millis(250));
            spread.insert(d);
            let d = p.delay(0, Some(Duration::from_millis(100)), &mut rng);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(110));
        }
        assert!(spread.len() > 900, "workers do not wake together");
        // A hint longer than the cap is still honoured.
        let d = p.delay(0, Some(Duration::from_secs(120)), &mut rng);
        assert!(d >= Duration::from_secs(120));
        assert_eq!(p.delay(0, Some(Duration::ZERO), &mut rng), Duration::ZERO);
    }

    #[test]
    fn no_hint_means_backoff() {
        let p = RetryPolicy::default();
        let mut rng = rng();
        for _ in 0..1000 {
            assert!(p.delay(0, None, &mut rng) <= p.base);
            assert!(p.delay(2, None, &mut rng) <= p.base * 4);
        }
    }

    #[test]
    fn a_wait_beyond_max_retry_time_is_refused_with_its_header() {
        use crate::provider::{WaitSource, MAX_SERVER_WAIT};
        let w = |secs: u64, raw: &str| {
            ServerWait::new(Duration::from_secs(secs), WaitSource::RetryAfter, raw)
        };
        let max = Duration::from_secs(1800);
        assert_eq!(
            admissible_wait(w(20, "20"), max),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(
            admissible_wait(w(1800, "1800"), max),
            Ok(max),
            "the bound is inclusive"
        );
        let err = admissible_wait(w(999_999_999, "999999999"), max).unwrap_err();
        assert_eq!(err.max, max);
        assert!(
            err.to_string()
                .starts_with("the provider asked to wait 31 years (retry-after: 999999999)"),
            "{err}"
        );
        assert!(matches!(
            StopReason::from(err),
            StopReason::WaitTooLong { .. }
        ));
        let huge = ServerWait::new(Duration::MAX, WaitSource::RetryAfterMs, "1e300");
        assert!(admissible_wait(huge, max).is_err());
        // A user willing to wait a week still never sleeps past the cap.
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(
            admissible_wait(w(3 * 86_400, "259200"), week),
            Ok(MAX_SERVER_WAIT)
        );
        assert_eq!(
            admissible_wait(w(0, "0"), Duration::ZERO),
            Ok(Duration::ZERO)
        );
    }
}
