//! Admission: the one place where pacing happens.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};

use super::config::{Limits, DEFAULT_CONCURRENCY};
use crate::limit::{little_concurrency, Aimd, CircuitBreaker, NotUntil, PauseGate, RateLimiter};
use crate::provider::{RateLimitSnapshot, RateWindow};
use crate::report::PaceSource;
use crate::retry::LimitScope;

/// Pause after a 429 that names no wait.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);
/// Fewest requests in flight once a rate is known (Little's law may say less
/// when latency is tiny; a handful more costs nothing and absorbs jitter).
const CONCURRENCY_FLOOR: usize = 8;
/// Most requests in flight when sized automatically with no `--concurrency`.
const AUTO_CONCURRENCY_CAP: usize = 1024;
/// After an outage the pace restarts at this share of what it was...
const RECOVERY_START: f64 = 0.5;
/// ...and climbs back to all of it over this long.
const RECOVERY_RAMP: Duration = Duration::from_secs(20);

/// One limit (requests or tokens per minute): the configured ceiling, or the
/// one learned from headers or from 429s, whichever is in force.
#[derive(Debug)]
struct Slot {
    configured: Option<Arc<RateLimiter>>,
    learned: RwLock<Option<(Arc<RateLimiter>, PaceSource)>>,
    /// Fed with every good answer; drives the limit only when it was learned
    /// from 429s (no flag, no header).
    aimd: Mutex<Aimd>,
    /// Smallest and largest rate AIMD may choose, in units a second.
    bounds: (f64, f64),
    /// 429s before this instant belong to the flight that taught us the
    /// limit exists; they must not cut again.
    first_flight_until: Mutex<Option<Instant>>,
}

impl Slot {
    fn new(per_minute: Option<f64>, burst: Option<f64>, bounds: (f64, f64)) -> Slot {
        Slot {
            configured: per_minute
                .map(|pm| Arc::new(RateLimiter::new(pm / 60.0, burst.unwrap_or(pm).max(1.0)))),
            learned: RwLock::new(None),
            aimd: Mutex::new(Aimd::new(bounds.1, bounds.0, bounds.1)),
            bounds,
            first_flight_until: Mutex::new(None),
        }
    }

    /// The limiter in force (configured wins). The lock is held only to clone an `Arc`.
    fn current(&self) -> Option<(Arc<RateLimiter>, PaceSource)> {
        if let Some(c) = &self.configured {
            return Some((c.clone(), PaceSource::Configured));
        }
        self.learned.read().expect("pace lock").clone()
    }

    /// Units a second in force.
    fn rate(&self) -> Option<f64> {
        self.current().map(|(l, _)| l.rate())
    }

    fn source(&self) -> Option<PaceSource> {
        self.current().map(|(_, s)| s)
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
                    Some((l, PaceSource::Headers))
                        if (l.rate() * 60.0 - per_minute).abs() < 1e-9 => {}
                    Some((l, _)) => {
                        l.set_rate(now, per_minute / 60.0, per_minute);
                        *learned = Some((l.clone(), PaceSource::Headers));
                        changed = true;
                    }
                    None => {
                        let limiter = Arc::new(RateLimiter::new(per_minute / 60.0, per_minute));
                        *learned = Some((limiter, PaceSource::Headers));
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

    /// A good answer worth `units`. Returns whether the pace changed.
    fn on_success(&self, now: Instant, units: u64) -> bool {
        let mut aimd = self.aimd.lock().expect("aimd lock");
        aimd.on_success_units(now, units);
        let rate = aimd.rate();
        drop(aimd);
        self.apply_learned(now, rate)
    }

    /// A 429 about this limit. With nothing configured and nothing in the
    /// headers, this is where a limit is learned. The first 429 starts AIMD
    /// in slow start from half of what got through in the last second (a
    /// first flight's goodput is a poor measure: answers arrive together, and
    /// anchoring the limit to it would make the climb to the real limit
    /// linear and slow); the rest of that flight's 429s are ignored. Returns
    /// whether the pace changed.
    fn on_rate_limited(&self, now: Instant, window: Duration, hint_rate: Option<f64>) -> bool {
        if self.configured.is_some() {
            return false; // a ceiling; the pause gate and the headers do the rest
        }
        if self
            .first_flight_until
            .lock()
            .expect("flight lock")
            .is_some_and(|until| now < until)
        {
            return false;
        }
        let learned = self
            .learned
            .read()
            .expect("pace lock")
            .as_ref()
            .map(|(_, s)| *s);
        let (min, max) = self.bounds;
        let mut aimd = self.aimd.lock().expect("aimd lock");
        match learned {
            Some(PaceSource::Headers) => return false,
            Some(_) => aimd.on_rate_limited(now),
            None => {
                // What got through just before the first 429 is mostly the
                // provider's burst, not its rate: a Retry-After of one
                // request's wait (1/rate) is the better measure when given.
                let goodput = aimd.goodput(now) * 0.5;
                let initial = hint_rate.map_or(goodput, |h| h.min(goodput));
                *aimd = Aimd::new(initial.max(1.0), min, max).with_window(window);
                let rate = aimd.rate();
                let limiter = Arc::new(RateLimiter::new(rate, rate.max(1.0)));
                *self.learned.write().expect("pace lock") = Some((limiter, PaceSource::Learned));
                *self.first_flight_until.lock().expect("flight lock") = Some(now + window);
                return true;
            }
        }
        let rate = aimd.rate();
        drop(aimd);
        self.apply_learned(now, rate)
    }

    fn apply_learned(&self, now: Instant, rate: f64) -> bool {
        let learned = self.learned.read().expect("pace lock");
        match learned.as_ref() {
            Some((l, PaceSource::Learned)) if (l.rate() - rate).abs() > l.rate() * 0.01 => {
                l.set_rate(now, rate, rate.max(1.0));
                true
            }
            _ => false,
        }
    }
}

/// The pace restarting after an outage: a temporary ceiling that climbs back.
#[derive(Debug)]
struct Recovery {
    limiter: Arc<RateLimiter>,
    target: f64,
    since: Instant,
}

#[derive(Debug)]
struct Concurrency {
    /// Permits the semaphore should have in all.
    limit: usize,
    /// Permits to forget as in-flight requests give theirs back.
    debt: usize,
}

/// Admission control for a run: the circuit, concurrency, the pause gate,
/// requests per second and per minute, tokens per minute.
///
/// - Configured limits are hard ceilings.
/// - Where a limit is not configured, the provider's rate-limit headers set it
///   from the first answer on, and their `remaining` counts keep pacer's
///   buckets from believing in more room than the provider has (after a
///   restart, or with other jobs on the same key).
/// - With neither, the limit is found from 429s like TCP finds a link's
///   capacity ([`Aimd`]): a 429 about requests cuts the request pace, one
///   about tokens the token pace.
/// - A 429 closes the one pause gate for every worker until its Retry-After.
/// - A run of outage-like failures opens the circuit: nothing goes out but
///   one probe at growing intervals; when it succeeds, the pace restarts at
///   half of what it was and climbs back over [`RECOVERY_RAMP`].
/// - Requests in flight are sized by Little's law from the pace and the
///   latency, capped by `--concurrency`.
#[derive(Debug)]
pub struct Pacer {
    requests: Slot,
    tokens: Slot,
    per_second: Option<RateLimiter>,
    gate: PauseGate,
    circuit: Mutex<CircuitBreaker>,
    /// Wakes admission when a probe closes the circuit.
    circuit_closed: Notify,
    /// Request rate (a second) that got through before the circuit opened.
    rate_before_outage: Mutex<Option<f64>>,
    recovery: RwLock<Option<Recovery>>,
    semaphore: Arc<Semaphore>,
    concurrency: Mutex<Concurrency>,
    concurrency_cap: Option<usize>,
    /// Smoothed latency of good answers, seconds.
    latency: Mutex<Option<f64>>,
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
        let initial = limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
        let pacer = Pacer {
            requests: Slot::new(limits.rpm, limits.burst, (0.05, 100_000.0)),
            tokens: Slot::new(limits.tpm, None, (10.0, 1e9)),
            per_second: limits.rps.map(|rps| RateLimiter::new(rps, rps.max(1.0))),
            gate: PauseGate::new(),
            circuit: Mutex::new(CircuitBreaker::default()),
            circuit_closed: Notify::new(),
            rate_before_outage: Mutex::new(None),
            recovery: RwLock::new(None),
            semaphore: Arc::new(Semaphore::new(initial)),
            concurrency: Mutex::new(Concurrency {
                limit: initial,
                debt: 0,
            }),
            concurrency_cap: limits.concurrency.map(|c| c.max(1)),
            latency: Mutex::new(None),
        };
        pacer.resize();
        pacer
    }

    /// Waits for a concurrency slot.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Requests in flight now (slots taken).
    pub fn in_flight(&self) -> usize {
        let c = self.concurrency.lock().expect("concurrency lock");
        (c.limit + c.debt).saturating_sub(self.semaphore.available_permits())
    }

    /// Waits until one request of `tokens` may go: the circuit, the gate,
    /// then each limit. Cancel-safe: nothing is charged until a limit admits.
    pub async fn admit(&self, tokens: u64) {
        loop {
            // Registered before the check, so a close in between is not missed.
            let closed = self.circuit_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let checked = self
                .circuit
                .lock()
                .expect("circuit lock")
                .check(Instant::now());
            match checked {
                Ok(_) => break,
                // The probe's success wakes us at once, not at the next probe time.
                Err(NotUntil { at }) => {
                    tokio::select! {
                        _ = sleep_until(at) => {}
                        _ = closed => {}
                    }
                }
            }
        }
        self.gate.wait().await;
        if let Some(l) = &self.per_second {
            l.acquire(1).await;
        }
        let recovery = self
            .recovery
            .read()
            .expect("recovery lock")
            .as_ref()
            .map(|r| r.limiter.clone());
        if let Some(l) = recovery {
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
        let changed = requests || tokens;
        if changed {
            self.resize();
        }
        changed
    }

    /// A good answer after `latency`, charged `tokens`. Returns whether the pace changed.
    pub fn on_success(&self, now: Instant, latency: Duration, tokens: u64) -> bool {
        {
            let mut l = self.latency.lock().expect("latency lock");
            let x = latency.as_secs_f64();
            *l = Some(match *l {
                Some(prev) => prev * 0.9 + x * 0.1,
                None => x,
            });
        }
        let mut changed = self.on_provider_up(now);
        changed |= self.requests.on_success(now, 1);
        changed |= self.tokens.on_success(now, tokens.max(1));
        changed |= self.ramp_recovery(now);
        if changed {
            self.resize();
        }
        changed
    }

    /// An answer that proves the provider is up, good or not (a 4xx).
    /// Returns whether the pace changed (the circuit closed).
    pub fn on_provider_up(&self, now: Instant) -> bool {
        let mut circuit = self.circuit.lock().expect("circuit lock");
        let was_open = !circuit.is_closed();
        circuit.on_success(now);
        drop(circuit);
        if was_open {
            self.circuit_closed.notify_waiters();
            self.start_recovery(now);
        }
        was_open
    }

    /// A 429: everybody waits until `after` (or a short default), and a
    /// learned pace is cut. Returns when the pause ends.
    pub fn on_rate_limited(
        &self,
        now: Instant,
        scope: LimitScope,
        after: Option<Duration>,
    ) -> (Instant, bool) {
        let until = now + after.unwrap_or(DEFAULT_429_PAUSE);
        self.gate.pause_until(until);
        // A flight lasts about one round trip; at least a second.
        let latency = self.latency.lock().expect("latency lock").unwrap_or(0.0);
        let window = Duration::from_secs_f64((2.0 * latency).clamp(1.0, 10.0));
        let changed = match scope {
            LimitScope::Tokens => self.tokens.on_rate_limited(now, window, None),
            LimitScope::Requests | LimitScope::Unknown => {
                let hint_rate = after
                    .filter(|a| !a.is_zero())
                    .map(|a| 1.0 / a.as_secs_f64());
                self.requests.on_rate_limited(now, window, hint_rate)
            }
        };
        if changed {
            self.resize();
        }
        (until, changed)
    }

    /// An outage-like failure (5xx, 529, connection error, timeout). Returns
    /// whether the circuit is open now.
    pub fn on_outage(&self, now: Instant) -> bool {
        let mut circuit = self.circuit.lock().expect("circuit lock");
        let was_closed = circuit.is_closed();
        circuit.on_failure(now);
        let open = !circuit.is_closed();
        drop(circuit);
        if was_closed && open {
            let before = self.requests.aimd.lock().expect("aimd lock").goodput(now);
            *self.rate_before_outage.lock().expect("outage lock") = Some(before);
        }
        open
    }

    /// Whether the provider is being treated as down.
    pub fn circuit_open(&self) -> bool {
        !self.circuit.lock().expect("circuit lock").is_closed()
    }

    fn start_recovery(&self, now: Instant) {
        let before = self.rate_before_outage.lock().expect("outage lock").take();
        let target = self.request_rate().or(before).filter(|r| *r > 0.0);
        if let Some(target) = target {
            let rate = target * RECOVERY_START;
            let limiter = Arc::new(RateLimiter::new(rate, rate.max(1.0)));
            *self.recovery.write().expect("recovery lock") = Some(Recovery {
                limiter,
                target,
                since: now,
            });
        }
    }

    fn ramp_recovery(&self, now: Instant) -> bool {
        let mut recovery = self.recovery.write().expect("recovery lock");
        let Some(r) = recovery.as_ref() else {
            return false;
        };
        let progress =
            now.saturating_duration_since(r.since).as_secs_f64() / RECOVERY_RAMP.as_secs_f64();
        if progress >= 1.0 {
            *recovery = None;
            return true;
        }
        let rate = r.target * (RECOVERY_START + (1.0 - RECOVERY_START) * progress);
        if (rate - r.limiter.rate()).abs() > r.limiter.rate() * 0.02 {
            r.limiter.set_rate(now, rate, rate.max(1.0));
            return true;
        }
        false
    }

    /// Real token usage replaces the estimate reserved at admission.
    pub fn reconcile_tokens(&self, now: Instant, reserved: u64, actual: u64) {
        if let Some((l, _)) = self.tokens.current() {
            l.reconcile(now, reserved, actual);
        }
    }

    /// The tightest request rate in force, a second.
    fn request_rate(&self) -> Option<f64> {
        let per_minute = self.requests.rate();
        let per_second = self.per_second.as_ref().map(|l| l.rate());
        match (per_minute, per_second) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sizes the requests in flight to the pace and the latency (Little's law).
    fn resize(&self) {
        let latency =
            Duration::from_secs_f64(self.latency.lock().expect("latency lock").unwrap_or(0.0));
        let target = match (self.request_rate(), self.concurrency_cap) {
            (Some(rate), cap) => {
                let cap = cap.unwrap_or(AUTO_CONCURRENCY_CAP);
                little_concurrency(rate, latency, Some(cap)).max(CONCURRENCY_FLOOR.min(cap))
            }
            (None, Some(cap)) => cap,
            (None, None) => DEFAULT_CONCURRENCY,
        };
        let mut c = self.concurrency.lock().expect("concurrency lock");
        if c.debt > 0 {
            c.debt -= self.semaphore.forget_permits(c.debt);
        }
        if target > c.limit {
            let add = target - c.limit;
            let paid = add.min(c.debt);
            c.debt -= paid;
            if add > paid {
                self.semaphore.add_permits(add - paid);
            }
        } else if target < c.limit {
            let cut = c.limit - target;
            let forgotten = self.semaphore.forget_permits(cut);
            c.debt += cut - forgotten;
        }
        c.limit = target;
    }

    /// The pace in force.
    pub fn view(&self) -> PaceView {
        let source = match (self.requests.source(), self.tokens.source()) {
            (Some(PaceSource::Configured), _) | (_, Some(PaceSource::Configured)) => {
                PaceSource::Configured
            }
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) if self.per_second.is_some() => PaceSource::Configured,
            (None, None) => PaceSource::Unlimited,
        };
        PaceView {
            rpm: self.request_rate().map(|r| r * 60.0),
            tpm: self.tokens.rate().map(|r| r * 60.0),
            source,
            concurrency: self.concurrency.lock().expect("concurrency lock").limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(limit: u64, remaining: u64) -> RateWindow {
        RateWindow {
            limit: Some(limit),
            remaining: Some(remaining),
            reset: Some(Duration::from_secs(1)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn configured_rpm_paces_after_the_first_minutes_burst() {
        let pacer = Pacer::new(&Limits {
            rpm: Some(600.0),
            ..Limits::default()
        });
        let t0 = Instant::now();
        for _ in 0..600 {
            pacer.admit(0).await;
        }
        assert_eq!(Instant::now(), t0, "the first minute's bucket goes at once");
        for _ in 0..100 {
            pacer.admit(0).await;
        }
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(10),
            "then 10 a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn headers_set_an_unconfigured_limit_and_remaining_drains_the_bucket() {
        let pacer = Pacer::new(&Limits::default());
        assert_eq!(pacer.view().source, PaceSource::Unlimited);
        let now = Instant::now();
        let snap = RateLimitSnapshot {
            requests: window(60, 0),
            ..Default::default()
        };
        assert!(pacer.observe(now, &snap));
        let view = pacer.view();
        assert_eq!((view.rpm, view.source), (Some(60.0), PaceSource::Headers));
        // The provider says nothing remains: the next request waits a second.
        pacer.admit(0).await;
        assert_eq!(Instant::now() - now, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn configured_limits_stay_ceilings_over_headers_and_429s() {
        let pacer = Pacer::new(&Limits {
            rpm: Some(30.0),
            ..Limits::default()
        });
        let snap = RateLimitSnapshot {
            requests: window(6000, 6000),
            ..Default::default()
        };
        assert!(!pacer.observe(Instant::now(), &snap));
        let (_, changed) = pacer.on_rate_limited(Instant::now(), LimitScope::Requests, None);
        assert!(!changed);
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
            assert!(w.await.unwrap() >= t0 + Duration::from_millis(1500));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reserved_then_reconciled() {
        let pacer = Pacer::new(&Limits {
            tpm: Some(6000.0),
            ..Limits::default()
        });
        let t0 = Instant::now();
        pacer.admit(6000).await; // the whole minute
        pacer.reconcile_tokens(t0, 6000, 3000); // only half was charged
        pacer.admit(3000).await;
        assert_eq!(Instant::now(), t0, "the refund made room at once");
        pacer.admit(100).await;
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(1),
            "100 tokens at 100/s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_limit_known_the_first_429_starts_learning_from_goodput() {
        let pacer = Pacer::new(&Limits::default());
        let t0 = Instant::now();
        for i in 0..100 {
            pacer.on_success(
                t0 + Duration::from_millis(i * 10),
                Duration::from_millis(50),
                10,
            );
        }
        let now = t0 + Duration::from_secs(1);
        let (_, changed) = pacer.on_rate_limited(now, LimitScope::Requests, None);
        assert!(changed);
        let view = pacer.view();
        assert_eq!(view.source, PaceSource::Learned);
        let rpm = view.rpm.unwrap();
        // About 100 a second got through (90 in the last full second): slow
        // start resumes from half of it.
        assert!(
            (0.5 * 85.0 * 60.0..=0.5 * 100.0 * 60.0).contains(&rpm),
            "{rpm}"
        );
        // The rest of the first flight's 429s do not cut again.
        let later = now + Duration::from_millis(100);
        let (_, changed) = pacer.on_rate_limited(later, LimitScope::Requests, None);
        assert!(!changed);
        assert_eq!(pacer.view().rpm, Some(rpm));
        // A Retry-After of one request's wait is a better first measure
        // than a burst's goodput: 100 ms → 10 a second.
        let hinted = Pacer::new(&Limits::default());
        for i in 0..100 {
            hinted.on_success(
                t0 + Duration::from_millis(i * 10),
                Duration::from_millis(50),
                10,
            );
        }
        hinted.on_rate_limited(now, LimitScope::Requests, Some(Duration::from_millis(100)));
        assert_eq!(hinted.view().rpm, Some(600.0));
        // A token 429 learns the token pace, not the request pace.
        pacer.on_rate_limited(now + Duration::from_secs(5), LimitScope::Tokens, None);
        assert!(pacer.view().tpm.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_opens_the_circuit_and_the_pace_restarts_below() {
        let pacer = Pacer::new(&Limits {
            rpm: Some(600.0),
            ..Limits::default()
        });
        let t0 = Instant::now();
        let mut open = false;
        for _ in 0..5 {
            open = pacer.on_outage(t0);
        }
        assert!(open && pacer.circuit_open());
        // Only a probe goes, after the first interval.
        pacer.admit(0).await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
        // While the circuit is open, admission waits for the next probe time...
        let t1 = Instant::now();
        pacer.on_outage(t1); // the probe failed: next one 2 s later
        let pacer = Arc::new(pacer);
        let waiter = {
            let p = pacer.clone();
            tokio::spawn(async move {
                p.admit(0).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // ...but a probe's success (say, one already in flight) closes the
        // circuit and wakes it at once; the pace restarts at half.
        assert!(pacer.on_provider_up(Instant::now()));
        assert_eq!(waiter.await.unwrap() - t1, Duration::from_millis(300));
        assert!(!pacer.circuit_open());
        let r = pacer
            .recovery
            .read()
            .unwrap()
            .as_ref()
            .map(|r| r.limiter.rate())
            .unwrap();
        assert!((r - 5.0).abs() < 1e-9, "{r}");
        // ...climbing back to the full pace over the ramp.
        pacer.on_success(Instant::now() + RECOVERY_RAMP, Duration::from_millis(10), 1);
        assert!(pacer.recovery.read().unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_follows_littles_law_under_the_cap() {
        let pacer = Pacer::new(&Limits {
            rpm: Some(6000.0),
            concurrency: Some(40),
            ..Limits::default()
        });
        // 100 a second at 0.2 s: 100 × 0.2 × 1.5 = 30 in flight.
        for _ in 0..200 {
            pacer.on_success(Instant::now(), Duration::from_millis(200), 1);
        }
        pacer.resize();
        assert_eq!(pacer.view().concurrency, 30);
        // At 2 s latency it would need 300: capped at 40.
        for _ in 0..200 {
            pacer.on_success(Instant::now(), Duration::from_secs(2), 1);
        }
        pacer.resize();
        assert_eq!(pacer.view().concurrency, 40);
        assert_eq!(pacer.semaphore.available_permits(), 40);
        // With no rate known, the cap itself.
        let unknown = Pacer::new(&Limits {
            concurrency: Some(12),
            ..Limits::default()
        });
        assert_eq!(unknown.view().concurrency, 12);
    }
}
