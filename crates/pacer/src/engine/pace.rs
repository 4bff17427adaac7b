//! Admission: the one place where pacing happens.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::config::{Limits, DEFAULT_CONCURRENCY};
use crate::limit::{PauseGate, RateLimiter};
use crate::provider::{RateLimitSnapshot, RateWindow};
use crate::report::PaceSource;
use crate::retry::LimitScope;

/// Pause after a 429 that names no wait.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);

/// One limit (requests or tokens per minute): the configured ceiling, or the
/// one learned from headers, whichever is in force.
#[derive(Debug)]
struct Slot {
    configured: Option<Arc<RateLimiter>>,
    learned: RwLock<Option<(Arc<RateLimiter>, PaceSource)>>,
}

impl Slot {
    fn new(per_minute: Option<f64>, burst: Option<f64>) -> Slot {
        Slot {
            configured: per_minute.map(|pm| Arc::new(RateLimiter::new(pm / 60.0, burst.unwrap_or(pm).max(1.0)))),
            learned: RwLock::new(None),
        }
    }

    /// The limiter in force (configured wins). The lock is held only to clone an `Arc`.
    fn current(&self) -> Option<(Arc<RateLimiter>, PaceSource)> {
        if let Some(c) = &self.configured {
            return Some((c.clone(), PaceSource::Configured));
        }
        self.learned.read().expect("pace lock").clone()
    }

    fn per_minute(&self) -> Option<f64> {
        self.current().map(|(l, _)| l.rate() * 60.0)
    }

    /// Adopts a limit read from headers (where none is configured) and syncs
    /// with what the provider says remains. Returns whether the pace changed.
    fn observe(&self, now: Instant, window: &RateWindow) -> bool {
        let mut changed = false;
        if self.configured.is_none() {
            if let Some(limit) = window.limit.filter(|l| *l > 0) {
                let per_minute = limit as f64;
                let mut learned = self.learned.write().expect("pace lock");
                match learned.as_ref() {
                    Some((l, _)) if (l.rate() * 60.0 - per_minute).abs() < 1e-9 => {}
                    Some((l, _)) => {
                        l.set_rate(now, per_minute / 60.0, per_minute);
                        changed = true;
                    }
                    None => {
                        *learned = Some((Arc::new(RateLimiter::new(per_minute / 60.0, per_minute)), PaceSource::Headers));
                        changed = true;
                    }
                }
            }
        }
        if let (Some((limiter, _)), Some(remaining)) = (self.current(), window.remaining) {
            limiter.observe_remaining(now, remaining, window.reset.unwrap_or(Duration::ZERO));
        }
        changed
    }
}

/// Admission control for a run: concurrency, the pause gate, requests per
/// second and per minute, tokens per minute.
///
/// Configured limits are hard ceilings. Where a limit is not configured, the
/// provider's rate-limit headers set it from the first answer on, and its
/// `remaining` counts keep pacer's buckets from believing in more room than
/// the provider has (after a restart, or with other jobs on the same key).
/// A 429 closes the one pause gate for every worker until its Retry-After.
#[derive(Debug)]
pub struct Pacer {
    requests: Slot,
    tokens: Slot,
    per_second: Option<RateLimiter>,
    gate: PauseGate,
    concurrency: Arc<Semaphore>,
    max_concurrency: usize,
}

/// What is in force, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceView {
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub source: PaceSource,
    pub concurrency: usize,
}

impl Pacer {
    pub fn new(limits: &Limits) -> Pacer {
        let concurrency = limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
        Pacer {
            requests: Slot::new(limits.rpm, limits.burst),
            tokens: Slot::new(limits.tpm, None),
            per_second: limits.rps.map(|rps| RateLimiter::new(rps, rps.max(1.0))),
            gate: PauseGate::new(),
            concurrency: Arc::new(Semaphore::new(concurrency)),
            max_concurrency: concurrency,
        }
    }

    /// Waits for a concurrency slot.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.concurrency.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Waits until every concurrency slot is free (all in-flight work ended).
    pub async fn drained(&self) {
        let _all = self.concurrency.acquire_many(self.max_concurrency as u32).await;
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrency - self.concurrency.available_permits()
    }

    /// Waits until one request of `tokens` may go: the gate, then each limit.
    /// Cancel-safe: nothing is charged until a limit admits.
    pub async fn admit(&self, tokens: u64) {
        self.gate.wait().await;
        if let Some(l) = &self.per_second {
            l.acquire(1).await;
        }
        if let Some((l, _)) = self.requests.current() {
            l.acquire(1).await;
        }
        if let Some((l, _)) = self.tokens.current() {
            l.acquire(tokens).await;
        }
        // A 429 may have closed the gate while we waited on the limits.
        self.gate.wait().await;
    }

    /// Feeds the provider's rate-limit headers back. Returns whether the pace changed.
    pub fn observe(&self, now: Instant, snapshot: &RateLimitSnapshot) -> bool {
        let requests = self.requests.observe(now, &snapshot.requests);
        // Anthropic splits tokens into input and output; input tokens are what
        // a request's estimate mostly is, so they stand for the token limit.
        let window = if snapshot.tokens.limit.is_some() || snapshot.tokens.remaining.is_some() {
            &snapshot.tokens
        } else {
            &snapshot.input_tokens
        };
        let tokens = self.tokens.observe(now, window);
        requests || tokens
    }

    /// A 429: everybody waits until `after` (or a short default).
    pub fn on_rate_limited(&self, now: Instant, _scope: LimitScope, after: Option<Duration>) -> Instant {
        let until = now + after.unwrap_or(DEFAULT_429_PAUSE);
        self.gate.pause_until(until);
        until
    }

    /// Real token usage replaces the estimate reserved at admission.
    pub fn reconcile_tokens(&self, now: Instant, reserved: u64, actual: u64) {
        if let Some((l, _)) = self.tokens.current() {
            l.reconcile(now, reserved, actual);
        }
    }

    /// The pace in force.
    pub fn view(&self) -> PaceView {
        let req = self.requests.current().map(|(_, s)| s);
        let tok = self.tokens.current().map(|(_, s)| s);
        let source = match (req, tok) {
            (Some(PaceSource::Configured), _) | (_, Some(PaceSource::Configured)) => PaceSource::Configured,
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) if self.per_second.is_some() => PaceSource::Configured,
            (None, None) => PaceSource::Unlimited,
        };
        PaceView {
            rpm: self.requests.per_minute().or(self.per_second.as_ref().map(|l| l.rate() * 60.0)),
            tpm: self.tokens.per_minute(),
            source,
            concurrency: self.max_concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u64, remaining: u64) -> RateWindow {
        RateWindow { limit: Some(limit), remaining: Some(remaining), reset: Some(Duration::from_secs(1)) }
    }

    #[tokio::test(start_paused = true)]
    async fn configured_rpm_paces_after_the_first_minutes_burst() {
        let pacer = Pacer::new(&Limits { rpm: Some(600.0), ..Limits::default() });
        let t0 = Instant::now();
        for _ in 0..600 {
            pacer.admit(0).await;
        }
        assert_eq!(Instant::now(), t0, "the first minute's bucket goes at once");
        for _ in 0..100 {
            pacer.admit(0).await;
        }
        assert_eq!(Instant::now() - t0, Duration::from_secs(10), "then 10 a second");
    }

    #[tokio::test(start_paused = true)]
    async fn headers_set_an_unconfigured_limit_and_remaining_drains_the_bucket() {
        let pacer = Pacer::new(&Limits::default());
        assert_eq!(pacer.view().source, PaceSource::Unlimited);
        let now = Instant::now();
        let snap = RateLimitSnapshot { requests: window(60, 0), ..Default::default() };
        assert!(pacer.observe(now, &snap));
        let view = pacer.view();
        assert_eq!((view.rpm, view.source), (Some(60.0), PaceSource::Headers));
        // The provider says nothing remains: the next request waits a second.
        pacer.admit(0).await;
        assert_eq!(Instant::now() - now, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn configured_limits_stay_ceilings_over_headers() {
        let pacer = Pacer::new(&Limits { rpm: Some(30.0), ..Limits::default() });
        let snap = RateLimitSnapshot { requests: window(6000, 6000), ..Default::default() };
        assert!(!pacer.observe(Instant::now(), &snap));
        assert_eq!(pacer.view().rpm, Some(30.0));
        assert_eq!(pacer.view().source, PaceSource::Configured);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_closes_the_gate_for_everybody() {
        let pacer = Arc::new(Pacer::new(&Limits::default()));
        let t0 = Instant::now();
        pacer.on_rate_limited(t0, LimitScope::Requests, Some(Duration::from_millis(1500)));
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let p = pacer.clone();
                tokio::spawn(async move {
                    p.admit(1).await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            assert_eq!(w.await.unwrap() - t0, Duration::from_millis(1500));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reserved_then_reconciled() {
        let pacer = Pacer::new(&Limits { tpm: Some(6000.0), ..Limits::default() });
        let t0 = Instant::now();
        pacer.admit(6000).await; // the whole minute
        pacer.reconcile_tokens(t0, 6000, 3000); // only half was charged
        pacer.admit(3000).await;
        assert_eq!(Instant::now(), t0, "the refund made room at once");
        pacer.admit(100).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(1), "100 tokens at 100/s");
    }
}
