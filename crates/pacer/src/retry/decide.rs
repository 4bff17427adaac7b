use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{RetryPolicy, RetryReason};

/// Where one request stands in its retries, kept with it while it is in
/// memory (a resumed run starts it afresh).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Retries counted against `--max-retries` in this run.
    pub retries: u32,
    /// Since when the request has met only waits that are not its fault
    /// (429s about rate, outages): `--max-retry-time` runs from here.
    pub waiting_since: Option<Instant>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Send it again at this instant.
    RetryAt(Instant),
    /// Out of retries or of time: the last answer is the request's result.
    GiveUp,
}

impl RetryPolicy {
    /// Retry or give up: a pure function of the request's retry state, why
    /// the attempt failed, whether the provider is being treated as down
    /// (`circuit_open`) and the time.
    ///
    /// Attempts that fail for reasons outside the request (a 429 about rate
    /// is pacing feedback, not a failure; an attempt made while the circuit
    /// is open is a probe of the provider) do not count against
    /// `max_retries`: otherwise a long outage, or a limit shared with other
    /// jobs, would fail requests that were never at fault. Only
    /// `max_retry_time` of such waiting fails them.
    pub fn next_step(
        &self,
        state: &mut RetryState,
        reason: &RetryReason,
        circuit_open: bool,
        max_retry_time: Duration,
        now: Instant,
        rng: &mut impl Rng,
    ) -> NextStep {
        let not_its_fault = matches!(reason, RetryReason::RateLimited { .. })
            || (reason.is_outage_like() && circuit_open);
        if reason.is_outage_like() || matches!(reason, RetryReason::RateLimited { .. }) {
            state.waiting_since.get_or_insert(now);
        } else {
            state.waiting_since = None;
        }
        let out_of_time = state
            .waiting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= max_retry_time);
        if out_of_time || (!not_its_fault && state.retries >= self.max_retries) {
            return NextStep::GiveUp;
        }
        let delay = self.delay(state.retries, reason.after(), rng);
        if !not_its_fault {
            state.retries += 1;
        }
        // A wait is bounded before it gets here; never let it overflow the clock.
        NextStep::RetryAt(now.checked_add(delay).unwrap_or(now + max_retry_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ServerWait, WaitSource};
    use crate::retry::LimitScope;
    use rand::rngs::mock::StepRng;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        }
    }

    fn rate_limited(after_ms: u64) -> RetryReason {
        RetryReason::RateLimited {
            scope: LimitScope::Requests,
            after: Some(ServerWait::new(
                Duration::from_millis(after_ms),
                WaitSource::RetryAfterMs,
                "",
            )),
        }
    }

    const SERVER: RetryReason = RetryReason::Server {
        status: 500,
        after: None,
    };

    #[tokio::test(start_paused = true)]
    async fn counted_failures_give_up_after_max_retries() {
        let p = policy(2);
        let mut s = RetryState::default();
        let mut rng = StepRng::new(0, 0);
        let now = Instant::now();
        for _ in 0..2 {
            let step = p.next_step(&mut s, &SERVER, false, HOUR, now, &mut rng);
            assert!(matches!(step, NextStep::RetryAt(_)));
        }
        assert_eq!(s.retries, 2);
        assert_eq!(
            p.next_step(&mut s, &SERVER, false, HOUR, now, &mut rng),
            NextStep::GiveUp
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_never_count_only_time_does() {
        let p = policy(1);
        let mut s = RetryState::default();
        let mut rng = StepRng::new(0, 0);
        let t0 = Instant::now();
        for i in 0..50 {
            let now = t0 + Duration::from_secs(i);
            let step = p.next_step(&mut s, &rate_limited(350), false, HOUR, now, &mut rng);
            // The provider's wait, never shortened (the jitter is 0 here).
            assert_eq!(step, NextStep::RetryAt(now + Duration::from_millis(350)));
        }
        assert_eq!(s.retries, 0);
        let late = t0 + HOUR;
        assert_eq!(
            p.next_step(&mut s, &rate_limited(350), false, HOUR, late, &mut rng),
            NextStep::GiveUp
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_while_the_circuit_is_open_do_not_count() {
        let p = policy(1);
        let mut s = RetryState::default();
        let mut rng = StepRng::new(0, 0);
        let t0 = Instant::now();
        for i in 0..20 {
            let now = t0 + Duration::from_secs(i * 60);
            assert!(matches!(
                p.next_step(&mut s, &SERVER, true, HOUR, now, &mut rng),
                NextStep::RetryAt(_)
            ));
        }
        assert_eq!(s.retries, 0);
        assert_eq!(
            p.next_step(&mut s, &SERVER, true, HOUR, t0 + HOUR, &mut rng),
            NextStep::GiveUp
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_of_the_request_itself_restarts_the_retry_clock() {
        let p = policy(10);
        let mut s = RetryState::default();
        let mut rng = StepRng::new(0, 0);
        let t0 = Instant::now();
        p.next_step(&mut s, &rate_limited(1), false, HOUR, t0, &mut rng);
        assert_eq!(s.waiting_since, Some(t0));
        p.next_step(&mut s, &RetryReason::StreamCut, false, HOUR, t0, &mut rng);
        assert_eq!(s.waiting_since, None);
        assert_eq!(s.retries, 1);
    }
}
