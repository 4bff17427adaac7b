use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{little_concurrency, Aimd, CircuitBreaker, NotUntil, RateLimiter};
use crate::provider::{RateLimitSnapshot, RateWindow};
use crate::report::PaceSource;
use crate::retry::LimitScope;

/// Fewest requests in flight once a rate is known (Little's law may say less
/// when latency is tiny; a handful more costs nothing and absorbs jitter).
const CONCURRENCY_FLOOR: usize = 8;
/// Most requests in flight when sized automatically with no `--concurrency`.
const AUTO_CONCURRENCY_CAP: usize = 1024;
/// Requests in flight when neither `--concurrency` nor a learned pace says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 50;
/// A request in flight longer than this is never overdue...
pub const OVERDUE_FLOOR: Duration = Duration::from_secs(10);
/// ...and otherwise overdue after this many times the latency the run has
/// seen plus four deviations (TCP's retransmission timeout, stretched: LLM
/// answers vary with their length far more than round trips do).
const OVERDUE_FACTOR: f64 = 4.0;
/// After an outage the pace restarts at this share of what it was...
const RECOVERY_START: f64 = 0.5;
/// ...and climbs back to all of it over this long.
pub const RECOVERY_RAMP: Duration = Duration::from_secs(20);

/// Configured limits: hard ceilings. `None` means "learn it from the provider".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<f64>,
    /// Requests per second (for providers that enforce short windows).
    pub rps: Option<f64>,
    /// Tokens per minute (prompt plus `max_tokens` × `n`, as providers charge).
    pub tpm: Option<f64>,
    /// Largest burst, in requests, for `rpm` (default: one minute's worth, the
    /// provider's own bucket size).
    pub burst: Option<f64>,
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
}

/// The limiters a request must pass, in order. Cloned out of the state so
/// that nobody waits on a limiter while holding the state's lock.
#[derive(Debug, Default)]
pub struct Limiters {
    pub per_second: Option<Arc<RateLimiter>>,
    pub recovery: Option<Arc<RateLimiter>>,
    pub requests: Option<Arc<RateLimiter>>,
    pub tokens: Option<Arc<RateLimiter>>,
}

/// What is in force, for the progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceView {
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub source: PaceSource,
    pub concurrency: usize,
}

/// Everything pacing learns as a run goes, in one value behind one lock.
///
/// The admission path (the async `Pacer` in the engine) only reads the
/// limiters out of it and waits on them; every answer's feedback updates it
/// here, synchronously, with `now` passed in. Keeping the adaptive parts
/// (limits learned from headers and from 429s, the circuit breaker, the
/// recovery ramp after an outage, latency, the concurrency target) in one
/// plain struct makes each rule a method testable without a runtime, and
/// means one lock taken once per answer instead of one per concern.
#[derive(Debug)]
pub struct PaceState {
    requests: Slot,
    tokens: Slot,
    per_second: Option<Arc<RateLimiter>>,
    circuit: CircuitBreaker,
    /// Request rate (a second) that got through before the circuit opened.
    rate_before_outage: Option<f64>,
    recovery: Option<Recovery>,
    concurrency_cap: Option<usize>,
    /// Smoothed latency of good answers, seconds.
    latency: Option<f64>,
    /// Smoothed mean deviation of that latency, seconds (TCP's RTTVAR).
    latency_dev: f64,
}

/// The pace restarting after an outage: a temporary ceiling that climbs back.
#[derive(Debug)]
struct Recovery {
    limiter: Arc<RateLimiter>,
    target: f64,
    since: Instant,
}

impl PaceState {
    pub fn new(limits: &Limits) -> PaceState {
        PaceState {
            requests: Slot::new(limits.rpm, limits.burst, (0.05, 100_000.0)),
            tokens: Slot::new(limits.tpm, None, (10.0, 1e9)),
            per_second: limits
                .rps
                .map(|rps| Arc::new(RateLimiter::new(rps, rps.max(1.0)))),
            circuit: CircuitBreaker::default(),
            rate_before_outage: None,
            recovery: None,
            concurrency_cap: limits.concurrency.map(|c| c.max(1)),
            latency: None,
            latency_dev: 0.0,
        }
    }

    /// The limiters in force now.
    pub fn limiters(&self) -> Limiters {
        Limiters {
            per_second: self.per_second.clone(),
            recovery: self.recovery.as_ref().map(|r| r.limiter.clone()),
            requests: self.requests.current().map(|(l, _)| l),
            tokens: self.tokens.current().map(|(l, _)| l),
        }
    }

    /// Whether the circuit lets a request (or a probe) go now.
    pub fn check_circuit(&mut self, now: Instant) -> Result<(), NotUntil> {
        self.circuit.check(now).map(|_| ())
    }

    /// Whether the provider is being treated as down.
    pub fn circuit_open(&self) -> bool {
        !self.circuit.is_closed()
    }

    /// The provider's rate-limit headers. Returns whether the pace changed.
    pub fn observe(&mut self, now: Instant, snapshot: &RateLimitSnapshot) -> bool {
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

    /// A good answer after `latency`, charged `tokens`. Returns whether the
    /// pace changed.
    pub fn on_success(&mut self, now: Instant, latency: Duration, tokens: u64) -> bool {
        let x = latency.as_secs_f64();
        self.latency = Some(match self.latency {
            Some(prev) => {
                self.latency_dev = self.latency_dev * 0.75 + (x - prev).abs() * 0.25;
                prev * 0.9 + x * 0.1
            }
            None => {
                self.latency_dev = x / 2.0;
                x
            }
        });
        let mut changed = self.on_provider_up(now);
        changed |= self.requests.on_success(now, 1);
        changed |= self.tokens.on_success(now, tokens.max(1));
        changed |= self.ramp_recovery(now);
        changed
    }

    /// An answer that proves the provider is up, good or not (a 4xx).
    /// Returns whether the circuit was open (and is closed now).
    pub fn on_provider_up(&mut self, now: Instant) -> bool {
        let was_open = !self.circuit.is_closed();
        self.circuit.on_success(now);
        if was_open {
            self.start_recovery(now);
        }
        was_open
    }

    /// A 429 about `scope` that asked to wait `after`: a learned pace is cut,
    /// or, with nothing known, learning starts. Returns whether the pace
    /// changed. (The pause gate is the caller's: it is awaited.)
    pub fn on_rate_limited(
        &mut self,
        now: Instant,
        scope: LimitScope,
        after: Option<Duration>,
    ) -> bool {
        // A flight lasts about one round trip; at least a second.
        let window = Duration::from_secs_f64((2.0 * self.latency.unwrap_or(0.0)).clamp(1.0, 10.0));
        match scope {
            LimitScope::Tokens => self.tokens.on_rate_limited(now, window, None),
            LimitScope::Requests | LimitScope::Unknown => {
                let hint_rate = after
                    .filter(|a| !a.is_zero())
                    .map(|a| 1.0 / a.as_secs_f64());
                self.requests.on_rate_limited(now, window, hint_rate)
            }
        }
    }

    /// An outage-like failure (5xx, 529, connection error, timeout). Returns
    /// whether the circuit is open now.
    pub fn on_outage(&mut self, now: Instant) -> bool {
        let was_closed = self.circuit.is_closed();
        self.circuit.on_failure(now);
        let open = !self.circuit.is_closed();
        if was_closed && open {
            self.rate_before_outage = Some(self.requests.aimd.goodput(now));
        }
        open
    }

    /// Real token usage replaces the estimate reserved at admission.
    pub fn reconcile_tokens(&self, now: Instant, reserved: u64, actual: u64) {
        if let Some((l, _)) = self.tokens.current() {
            l.reconcile(now, reserved, actual);
        }
    }

    fn start_recovery(&mut self, now: Instant) {
        let before = self.rate_before_outage.take();
        let target = self.request_rate().or(before).filter(|r| *r > 0.0);
        if let Some(target) = target {
            let rate = target * RECOVERY_START;
            self.recovery = Some(Recovery {
                limiter: Arc::new(RateLimiter::new(rate, rate.max(1.0))),
                target,
                since: now,
            });
        }
    }

    fn ramp_recovery(&mut self, now: Instant) -> bool {
        let Some(r) = self.recovery.as_ref() else {
            return false;
        };
        let progress =
            now.saturating_duration_since(r.since).as_secs_f64() / RECOVERY_RAMP.as_secs_f64();
        if progress >= 1.0 {
            self.recovery = None;
            return true;
        }
        let rate = r.target * (RECOVERY_START + (1.0 - RECOVERY_START) * progress);
        if (rate - r.limiter.rate()).abs() > r.limiter.rate() * 0.02 {
            r.limiter.set_rate(now, rate, rate.max(1.0));
            return true;
        }
        false
    }

    /// How long a request may be in flight before it stops counting toward
    /// the concurrency Little's law sizes. A request far past the latency
    /// the run has seen is most likely hung (accepted and never answered);
    /// holding its slot until `--timeout` (minutes) would let a few hung
    /// requests stall the whole run. It still runs to `--timeout`.
    pub fn overdue_after(&self) -> Duration {
        let rto = self.latency.unwrap_or(0.0) + 4.0 * self.latency_dev;
        Duration::try_from_secs_f64(rto * OVERDUE_FACTOR)
            .unwrap_or(Duration::MAX)
            .max(OVERDUE_FLOOR)
    }

    /// The recovery ceiling in force after an outage, a second.
    pub fn recovery_rate(&self) -> Option<f64> {
        self.recovery.as_ref().map(|r| r.limiter.rate())
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

    /// The hard ceiling on requests in flight, overdue ones included: twice
    /// the concurrency cap (`--concurrency`, else the automatic cap), so that
    /// hung requests can not pile up without bound.
    pub fn in_flight_ceiling(&self) -> usize {
        self.concurrency_cap
            .unwrap_or(AUTO_CONCURRENCY_CAP)
            .saturating_mul(2)
    }

    /// Requests in flight the pace and the latency call for (Little's law),
    /// under `--concurrency`.
    pub fn target_concurrency(&self) -> usize {
        let latency = Duration::from_secs_f64(self.latency.unwrap_or(0.0));
        match (self.request_rate(), self.concurrency_cap) {
            (Some(rate), cap) => {
                let cap = cap.unwrap_or(AUTO_CONCURRENCY_CAP);
                little_concurrency(rate, latency, Some(cap)).max(CONCURRENCY_FLOOR.min(cap))
            }
            (None, Some(cap)) => cap,
            (None, None) => DEFAULT_CONCURRENCY,
        }
    }

    /// The pace in force; `concurrency` is the caller's (it owns the slots).
    pub fn view(&self, concurrency: usize) -> PaceView {
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
            concurrency,
        }
    }
}

/// One limit (requests or tokens per minute): the configured ceiling, or the
/// one learned from headers or from 429s, whichever is in force.
#[derive(Debug)]
struct Slot {
    configured: Option<Arc<RateLimiter>>,
    learned: Option<(Arc<RateLimiter>, PaceSource)>,
    /// Fed with every good answer; drives the limit only when it was learned
    /// from 429s (no flag, no header).
    aimd: Aimd,
    /// Smallest and largest rate AIMD may choose, in units a second.
    bounds: (f64, f64),
    /// 429s before this instant belong to the flight that taught us the
    /// limit exists; they must not cut again.
    first_flight_until: Option<Instant>,
    /// The provider's bucket size in units, as its headers show it.
    capacity: Option<f64>,
}

impl Slot {
    fn new(per_minute: Option<f64>, burst: Option<f64>, bounds: (f64, f64)) -> Slot {
        Slot {
            configured: per_minute
                .map(|pm| Arc::new(RateLimiter::new(pm / 60.0, burst.unwrap_or(pm).max(1.0)))),
            learned: None,
            aimd: Aimd::new(bounds.1, bounds.0, bounds.1),
            bounds,
            first_flight_until: None,
            capacity: None,
        }
    }

    /// The limiter in force (configured wins).
    fn current(&self) -> Option<(Arc<RateLimiter>, PaceSource)> {
        if let Some(c) = &self.configured {
            return Some((c.clone(), PaceSource::Configured));
        }
        self.learned.clone()
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
    fn observe(&mut self, now: Instant, window: &RateWindow) -> bool {
        let mut changed = false;
        if self.configured.is_none() {
            if let Some(limit) = window.limit.filter(|l| *l > 0) {
                let per_minute = limit as f64;
                let rate = per_minute / 60.0;
                let burst = self.learn_capacity(window, per_minute);
                match self.learned.as_ref() {
                    Some((l, PaceSource::Headers))
                        if (l.rate() - rate).abs() < 1e-9
                            && (l.burst() - burst).abs() <= 0.01 * l.burst() => {}
                    Some((l, source)) => {
                        // A new burst alone is no change of pace for the UI.
                        changed = *source != PaceSource::Headers || (l.rate() - rate).abs() >= 1e-9;
                        l.set_rate(now, rate, burst);
                        self.learned = Some((l.clone(), PaceSource::Headers));
                    }
                    None => {
                        let limiter = Arc::new(RateLimiter::new(rate, burst));
                        self.learned = Some((limiter, PaceSource::Headers));
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

    /// The size of the provider's bucket, learned from its headers.
    ///
    /// Providers state a per-minute limit but may enforce it over a much
    /// shorter window (Azure over 1 or 10 s; Anthropic may enforce a minute's
    /// limit per second), and spending a minute's burst against a one-second
    /// bucket is a flight of 429s. A continuously refilling bucket says its
    /// own size in every answer: what `remaining` now, plus what refills
    /// before it is full again (`reset` × the rate). Without `reset`,
    /// `remaining` alone is a lower bound. The estimate follows a larger
    /// reading at once and a smaller one slowly (one stale or rounded
    /// header must not shrink it), within one minute's worth; until any
    /// header tells, a tenth of a minute goes at once, not the whole minute.
    fn learn_capacity(&mut self, window: &RateWindow, per_minute: f64) -> f64 {
        if let Some(remaining) = window.remaining {
            let refill = window.reset.map_or(0.0, |r| r.as_secs_f64()) * per_minute / 60.0;
            let seen = (remaining as f64 + refill).clamp(1.0, per_minute);
            self.capacity = Some(match self.capacity {
                Some(c) => seen.max(0.9 * c + 0.1 * seen),
                None => seen,
            });
        }
        self.capacity.unwrap_or(per_minute / 10.0).max(1.0)
    }

    /// A good answer worth `units`. Returns whether the pace changed.
    fn on_success(&mut self, now: Instant, units: u64) -> bool {
        self.aimd.on_success_units(now, units);
        let rate = self.aimd.rate();
        self.apply_learned(now, rate)
    }

    /// A 429 about this limit. With nothing configured and nothing in the
    /// headers, this is where a limit is learned. The first 429 starts AIMD
    /// in slow start from half of what got through in the last second (a
    /// first flight's goodput is a poor measure: answers arrive together, and
    /// anchoring the limit to it would make the climb to the real limit
    /// linear and slow); the rest of that flight's 429s are ignored. Returns
    /// whether the pace changed.
    fn on_rate_limited(&mut self, now: Instant, window: Duration, hint_rate: Option<f64>) -> bool {
        if self.configured.is_some() {
            return false; // a ceiling; the pause gate and the headers do the rest
        }
        if self.first_flight_until.is_some_and(|until| now < until) {
            return false;
        }
        let (min, max) = self.bounds;
        match self.learned.as_ref().map(|(_, s)| *s) {
            Some(PaceSource::Headers) => return false,
            Some(_) => self.aimd.on_rate_limited(now),
            None => {
                // What got through just before the first 429 is mostly the
                // provider's burst, not its rate: a Retry-After of one
                // request's wait (1/rate) is the better measure when given.
                let goodput = self.aimd.goodput(now) * 0.5;
                let initial = hint_rate.map_or(goodput, |h| h.min(goodput));
                self.aimd = Aimd::new(initial.max(1.0), min, max).with_window(window);
                let rate = self.aimd.rate();
                let limiter = Arc::new(RateLimiter::new(rate, rate.max(1.0)));
                self.learned = Some((limiter, PaceSource::Learned));
                self.first_flight_until = now.checked_add(window);
                return true;
            }
        }
        let rate = self.aimd.rate();
        self.apply_learned(now, rate)
    }

    fn apply_learned(&self, now: Instant, rate: f64) -> bool {
        match self.learned.as_ref() {
            Some((l, PaceSource::Learned)) if (l.rate() - rate).abs() > l.rate() * 0.01 => {
                l.set_rate(now, rate, rate.max(1.0));
                true
            }
            _ => false,
        }
    }
}
