use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{later, little_concurrency, Aimd, CircuitBreaker, NotUntil, RateLimiter};
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
/// While no request limit is known, requests start at this many a second
/// (and at most this many at once), doubling with each second of good
/// answers: TCP's slow start, made real. A blind first flight of the whole
/// concurrency into a provider whose window holds ten requests is forty
/// 429s; this way the first 429 comes from a flight about the size of the
/// window, and the limits learned from it start from an honest goodput.
pub const START_RATE: f64 = 10.0;
/// With answers in milliseconds, the slow start doubles every this many
/// round trips (within 10 ms and a second). Against a bucket nobody states,
/// the requests in flight when it runs dry all meet a 429, and there are
/// about the bucket × ln 2 × (round trip / doubling time) of them: the
/// bucket is spent over the last doublings, at a pace that grows as fast.
/// Every 4 round trips, a minute's bucket of 600 ran dry with 35-50 in
/// flight; every 32, about 10 (and a local server still reaches 1,000 a
/// second in about 7 doublings: a quarter of a second at 1 ms).
const START_DOUBLING_RTTS: f64 = 32.0;
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
    /// The slow start while nothing is known of the request limit (no
    /// `--rpm`, no `--rps`, no header, no 429 yet); see [`START_RATE`].
    start: Option<Arc<RateLimiter>>,
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
    /// The provider's token count over pacer's estimate of the same requests.
    token_ratio: f64,
    /// Readings the ratio was learned from.
    ratio_samples: u32,
    /// Pacer's own count of tokens admitted, in a bucket never corrected by
    /// the provider's `remaining`, to compare the two counts with.
    shadow: ShadowBucket,
}

/// Token tickets: what one admission charged, to settle it with the same
/// ratio once the answer is in and to compare counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTicket {
    /// Pacer's own estimate (tiktoken and `max_tokens`).
    pub estimate: u64,
    /// What the token limiter was charged: the estimate in the provider's terms.
    pub charged: u64,
    /// The ratio in force at admission.
    pub ratio: f64,
    /// What pacer's own count of the provider's bucket held once this
    /// request was charged (0: not counted): what the provider's
    /// `remaining` in this request's answer is compared with, since the
    /// provider counts it on arrival, with everything sent before it.
    pub shadow_at_send: f64,
    /// What the shared limits reserved in Redis (`--redis`), to settle.
    pub shared: Option<crate::shared::SharedTicket>,
}

impl TokenTicket {
    /// A ticket for a request admitted with no ratio learned.
    pub fn plain(estimate: u64) -> TokenTicket {
        TokenTicket {
            estimate,
            charged: estimate,
            ratio: 1.0,
            shadow_at_send: 0.0,
            shared: None,
        }
    }
}

/// A bucket that only counts: charged with pacer's estimates, refilled at the
/// token rate, never refusing and never synced with the provider.
#[derive(Debug, Default)]
struct ShadowBucket {
    /// Units a second.
    rate: f64,
    /// When it would be empty of debt.
    tat: Option<Instant>,
}

impl ShadowBucket {
    fn used(&self, now: Instant) -> f64 {
        self.tat.map_or(0.0, |t| {
            t.saturating_duration_since(now).as_secs_f64() * self.rate
        })
    }

    fn charge(&mut self, now: Instant, rate: f64, units: f64) {
        if rate <= 0.0 || !rate.is_finite() {
            return;
        }
        let used = (self.used(now) + units).max(0.0);
        self.rate = rate;
        self.tat = Some(later(
            now,
            Duration::from_secs_f64((used / rate).min(MAX_SHADOW_SECS)),
        ));
    }
}

/// Readings of the token ratio before pacer spends the provider's whole
/// token bucket at once.
const RATIO_SAMPLES_TO_TRUST: u32 = 3;
/// The weight of one reading of the token ratio once the first readings are
/// averaged: about the last fifty readings (a few seconds of answers) make
/// the ratio. One reading is noisy (±15%: requests differ in how their
/// characters and tokens compare, and in flight when read), and a ratio
/// read too high slows every later admission by as much.
const RATIO_WEIGHT: f64 = 0.02;
/// The shadow bucket never holds more than a day of debt.
const MAX_SHADOW_SECS: f64 = 86_400.0;
/// The learned token ratio stays within these bounds (a provider counting
/// four times pacer's estimate, or half of it, is already a stretch).
const TOKEN_RATIO_BOUNDS: (f64, f64) = (0.5, 4.0);

/// The pace restarting after an outage: a temporary ceiling that climbs back.
#[derive(Debug)]
struct Recovery {
    limiter: Arc<RateLimiter>,
    target: f64,
    since: Instant,
}

impl PaceState {
    pub fn new(limits: &Limits) -> PaceState {
        let unknown = limits.rpm.is_none() && limits.rps.is_none();
        let mut requests = Slot::new(limits.rpm, limits.burst, (0.05, 100_000.0));
        if unknown {
            // Its slow start drives `start` until a limit is known.
            requests.aimd = Aimd::new(START_RATE, 0.05, 100_000.0);
        }
        PaceState {
            requests,
            start: unknown.then(|| Arc::new(RateLimiter::new(START_RATE, START_RATE))),
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
            token_ratio: 1.0,
            ratio_samples: 0,
            shadow: ShadowBucket::default(),
        }
    }

    /// The limiters in force now.
    pub fn limiters(&self) -> Limiters {
        Limiters {
            per_second: self.per_second.clone(),
            recovery: self.recovery.as_ref().map(|r| r.limiter.clone()),
            requests: self
                .requests
                .current()
                .map(|(l, _)| l)
                .or_else(|| self.start.clone()),
            tokens: self.tokens.current().map(|(l, _)| l),
        }
    }

    /// The slow start's rate while no request limit is known, a second.
    pub fn start_rate(&self) -> Option<f64> {
        match self.requests.current() {
            Some(_) => None,
            None => self.start.as_ref().map(|l| l.rate()),
        }
    }

    /// Whether the circuit lets a request (or a probe) go now.
    pub fn check_circuit(&mut self, now: Instant) -> Result<(), NotUntil> {
        self.circuit.check(now).map(|_| ())
    }

    /// Opens the circuit at once (the provider failed its first contact).
    pub fn trip_circuit(&mut self, now: Instant) {
        self.circuit.trip(now);
    }

    /// Whether the provider is being treated as down.
    pub fn circuit_open(&self) -> bool {
        !self.circuit.is_closed()
    }

    /// The provider's rate-limit headers. Returns whether the pace changed.
    pub fn observe(&mut self, now: Instant, snapshot: &RateLimitSnapshot) -> bool {
        let requests = self.requests.observe(now, &snapshot.requests, 1.0);
        // Anthropic splits tokens into input and output; input tokens are what
        // a request's estimate mostly is, so they stand for the token limit.
        let window = if snapshot.tokens.limit.is_some() || snapshot.tokens.remaining.is_some() {
            &snapshot.tokens
        } else {
            &snapshot.input_tokens
        };
        // Until a few answers have shown how the provider counts tokens, half
        // its bucket goes at once: a first flight of the whole bucket counted
        // 30% low is a flight of 429s (it costs one round trip, not a bucket).
        let trust = if self.ratio_samples >= RATIO_SAMPLES_TO_TRUST {
            1.0
        } else {
            0.5
        };
        let tokens = self.tokens.observe(now, window, trust);
        requests || tokens
    }

    /// The charge of a request of `estimate` tokens in the provider's terms,
    /// and the shadow bucket charged with the estimate: call once admitted.
    /// `charged` and `ratio` are what [`token_charge`](Self::token_charge)
    /// said when admission began.
    pub fn ticket(&mut self, now: Instant, estimate: u64, charged: u64, ratio: f64) -> TokenTicket {
        let rate = self.shadow_rate();
        self.shadow.charge(now, rate, estimate as f64);
        TokenTicket {
            estimate,
            charged,
            ratio,
            shadow_at_send: self.shadow.used(now),
            shared: None,
        }
    }

    /// The shadow bucket refills as the provider's does, in pacer's terms.
    fn shadow_rate(&self) -> f64 {
        self.tokens.rate().unwrap_or(0.0) / self.token_ratio
    }

    /// The tokens a request of `estimate` is charged at admission (the
    /// estimate in the provider's terms), and the ratio used.
    pub fn token_charge(&self, estimate: u64) -> (u64, f64) {
        let ratio = self.token_ratio;
        // `as` saturates from f64; a ratio of 1 leaves the estimate exact.
        let charged = if ratio == 1.0 {
            estimate
        } else {
            (estimate as f64 * ratio).ceil() as u64
        };
        (charged, ratio)
    }

    /// The limits this process's provider headers set (not the configured
    /// ones, nor those learned from 429s), to share through Redis.
    pub fn seen_limits(&self) -> crate::shared::Seen {
        let from_headers = |slot: &Slot| match &slot.learned {
            Some((l, PaceSource::Headers)) => Some(crate::shared::Share {
                per_minute: l.rate() * 60.0,
                burst: l.burst(),
            }),
            _ => None,
        };
        crate::shared::Seen {
            requests: from_headers(&self.requests),
            tokens: from_headers(&self.tokens),
        }
    }

    /// `actual` tokens in the provider's terms, at the ratio of `ticket`.
    pub fn provider_terms(ticket: &TokenTicket, actual: u64) -> u64 {
        if ticket.ratio == 1.0 {
            actual
        } else {
            (actual as f64 * ticket.ratio).ceil() as u64
        }
    }

    /// Settles a ticket with what pacer counts the request really used (its
    /// usage, or nothing for a request refused at admission): the limiter in
    /// the provider's terms, the shadow in pacer's.
    pub fn settle_tokens(&mut self, now: Instant, ticket: &TokenTicket, actual: u64) {
        let provider_terms = Self::provider_terms(ticket, actual);
        if provider_terms != ticket.charged {
            self.reconcile_tokens(now, ticket.charged, provider_terms);
        }
        let rate = self.shadow_rate();
        self.shadow
            .charge(now, rate, actual as f64 - ticket.estimate as f64);
    }

    /// Learns how the provider counts tokens against pacer's estimate.
    ///
    /// Providers' limiters do not count as they bill (OpenAI's estimates
    /// from characters and `max_tokens`), and say so only through what
    /// remains. The tokens the provider shows used in its bucket (its
    /// capacity less `remaining`, as it counted on this request's arrival)
    /// against what pacer's own, never-corrected bucket held once this
    /// request was sent (the ticket's `shadow_at_send`: the same requests,
    /// whatever was in flight) give the ratio of the two counts; smoothed,
    /// it turns every later estimate into the provider's terms before
    /// admission, so the bucket is not overdrawn by the difference in every
    /// flight.
    pub fn learn_token_ratio(&mut self, snapshot: &RateLimitSnapshot, ticket: &TokenTicket) {
        let window = if snapshot.tokens.remaining.is_some() {
            &snapshot.tokens
        } else {
            &snapshot.input_tokens
        };
        let (Some(remaining), Some(capacity)) = (window.remaining, self.tokens.capacity) else {
            return;
        };
        // A reading of a nearly full bucket is mostly noise.
        let sent = ticket.shadow_at_send;
        if sent < 0.05 * capacity {
            return;
        }
        let provider_used = (capacity - remaining as f64).max(0.0);
        let seen = (provider_used / sent).clamp(TOKEN_RATIO_BOUNDS.0, TOKEN_RATIO_BOUNDS.1);
        // The mean of the first readings (a run's first flight is where a
        // wrong count costs most), then a moving average.
        self.ratio_samples = self.ratio_samples.saturating_add(1);
        let weight = (1.0 / f64::from(self.ratio_samples)).max(RATIO_WEIGHT);
        self.token_ratio += weight * (seen - self.token_ratio);
        tracing::debug!(
            seen,
            ratio = self.token_ratio,
            samples = self.ratio_samples,
            "learned the provider's token count over pacer's"
        );
    }

    /// The provider's token count over pacer's, as learned.
    pub fn token_ratio(&self) -> f64 {
        self.token_ratio
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
        if self.start.is_some() && self.requests.current().is_none() {
            // A provider that answers in milliseconds is no LLM at its
            // limit: its start doubles every [`START_DOUBLING_RTTS`] round
            // trips, not every second (a local server would otherwise wait
            // seconds for its pace).
            let latency = self.latency.unwrap_or(1.0);
            self.requests.aimd.set_doubling(
                Duration::try_from_secs_f64(START_DOUBLING_RTTS * latency).unwrap_or(Duration::MAX),
            );
        }
        // When it was sent: a dry spell counts only what was sent in it.
        let sent = now.checked_sub(latency).unwrap_or(now);
        changed |= self.requests.on_success(now, sent, 1);
        if let (Some(start), None) = (&self.start, self.requests.current()) {
            let rate = self.requests.aimd.rate();
            if (rate - start.rate()).abs() > start.rate() * 0.01 {
                start.set_search_rate(now, rate, rate.max(START_RATE));
            }
        }
        changed |= self.tokens.on_success(now, sent, tokens.max(1));
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

    /// A 429 closed the pause gate until `until`. While the request limit is
    /// being found (the slow start, or a limit learned from 429s), the
    /// request pace goes on from `until` at its rate, with no burst saved up
    /// during the pause: a pause is the provider's bucket refilling, not
    /// ours, and a burst into it is the next flight of 429s. Limits the
    /// provider's headers tell keep their own count of what remains.
    pub fn after_pause(&self, until: Instant) {
        if let Some(l) = self.discovery_limiter() {
            l.empty_until(until);
            // Requests still waiting on the slow start's limiter once a
            // limit is learned go through the learned one after it too.
            if let Some(start) = &self.start {
                start.empty_until(until);
            }
        }
    }

    /// The request limiter while the request limit is being found from
    /// 429s (the slow start, then AIMD), else `None`.
    pub fn discovery_limiter(&self) -> Option<Arc<RateLimiter>> {
        if self.requests.configured.is_some() {
            return None;
        }
        match &self.requests.learned {
            Some((l, PaceSource::Learned)) => Some(l.clone()),
            Some(_) => None,
            None => self.start.clone(),
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
            // The slow start: as many as its pace needs, no more. Against a
            // bucket nobody states, everything in flight when it runs dry
            // meets a 429, and on a busy machine (or a provider slowing
            // under load) the latency grows faster than the smoothed one
            // says: fifty slots were then fifty 429s.
            (None, None) => match self.start_rate() {
                Some(rate) => little_concurrency(rate, latency, Some(DEFAULT_CONCURRENCY))
                    .max(CONCURRENCY_FLOOR),
                None => DEFAULT_CONCURRENCY,
            },
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
    /// `trust` is the share of the bucket that may go at once: less than 1
    /// while pacer's count of the units is not yet checked against the
    /// provider's.
    fn observe(&mut self, now: Instant, window: &RateWindow, trust: f64) -> bool {
        let mut changed = false;
        let limit = window.limit.filter(|l| *l > 0);
        let burst = limit.map(|l| (self.learn_capacity(window, l as f64) * trust).max(1.0));
        if self.configured.is_none() {
            if let (Some(limit), Some(burst)) = (limit, burst) {
                let per_minute = limit as f64;
                let rate = per_minute / 60.0;
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
    fn on_success(&mut self, now: Instant, sent: Instant, units: u64) -> bool {
        self.aimd.on_success_sent(now, sent, units);
        let rate = self.aimd.rate();
        self.apply_learned(now, rate)
    }

    /// A 429 about this limit. With nothing configured and nothing in the
    /// headers, this is where a limit is learned. The first 429 starts AIMD
    /// in slow start from half of what got through in the last second (a
    /// first flight's goodput is a poor measure: answers arrive together, and
    /// anchoring the limit to it would make the climb to the real limit
    /// linear and slow), never again past the pace of that first 429; the
    /// rest of that flight's 429s do not cut, but measure the provider's rate
    /// while its bucket is dry, and once they have, the pace goes just under
    /// it (see [`Aimd::after_first_429`]). Returns whether the pace changed.
    fn on_rate_limited(&mut self, now: Instant, window: Duration, hint_rate: Option<f64>) -> bool {
        if self.configured.is_some() {
            return false; // a ceiling; the pause gate and the headers do the rest
        }
        let (min, max) = self.bounds;
        match self.learned.as_ref().map(|(_, s)| *s) {
            Some(PaceSource::Headers) => return false,
            // The rest of the first flight does not cut (the AIMD holds), but
            // measures what gets through while the bucket is dry.
            Some(_) => self.aimd.on_rate_limited(now),
            None => {
                // What got through just before the first 429 is mostly the
                // provider's burst, not its rate: a Retry-After of one
                // request's wait (1/rate) is the better measure when given.
                let pace = self.aimd.rate();
                let goodput = self.aimd.goodput(now) * 0.5;
                let initial = hint_rate.map_or(goodput, |h| h.min(goodput));
                self.aimd = Aimd::new(initial.max(1.0), min, max)
                    .with_window(window)
                    .after_first_429(now, pace);
                let rate = self.aimd.rate();
                let limiter = Arc::new(RateLimiter::new(rate, rate.max(1.0)));
                self.learned = Some((limiter, PaceSource::Learned));
                return true;
            }
        }
        let rate = self.aimd.rate();
        self.apply_learned(now, rate)
    }

    fn apply_learned(&self, now: Instant, rate: f64) -> bool {
        match self.learned.as_ref() {
            Some((l, PaceSource::Learned)) if (l.rate() - rate).abs() > l.rate() * 0.01 => {
                l.set_search_rate(now, rate, rate.max(1.0));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Good answers at `per_second` for `seconds`, from `t`; returns the end.
    fn answers(p: &mut PaceState, t: Instant, per_second: u64, seconds: u64) -> Instant {
        let step = 1_000 / per_second;
        let mut now = t;
        for _ in 0..per_second * seconds {
            now += ms(step);
            p.on_success(now, ms(200), 100);
        }
        now
    }

    #[test]
    fn with_nothing_known_requests_start_slow_and_double_each_second() {
        let t0 = Instant::now();
        let mut p = PaceState::new(&Limits::default());
        let start = p.limiters().requests.expect("a start limiter");
        assert_eq!(start.rate(), START_RATE);
        assert_eq!(start.burst(), START_RATE);
        assert_eq!(p.start_rate(), Some(START_RATE));
        // Nothing known yet: the progress line still says "unlimited".
        assert_eq!(p.view(50).source, PaceSource::Unlimited);
        // It doubles a second, but never past twice what gets through
        // (2 × 10 + 1 here): growth follows use.
        let t = answers(&mut p, t0, 10, 2);
        let rate = p.start_rate().unwrap();
        assert!((19.0..=21.0).contains(&rate), "{rate}");
        let t = answers(&mut p, t, 20, 2);
        let rate = p.start_rate().unwrap();
        assert!((39.0..=41.0).contains(&rate), "{rate}");
        assert_eq!(p.limiters().requests.unwrap().rate(), rate);
        // Answers that stop growing (a slow provider) stop the doubling.
        answers(&mut p, t, 5, 3);
        assert_eq!(p.start_rate().unwrap(), rate);
    }

    #[test]
    fn a_provider_answering_in_milliseconds_is_ramped_up_in_a_second() {
        let t0 = Instant::now();
        let mut p = PaceState::new(&Limits::default());
        let mut now = t0;
        let mut sent_per_ms = 0.01;
        // Answers after 2 ms, as fast as the start lets them go.
        while now < t0 + ms(1_000) {
            let rate = p.start_rate().unwrap();
            sent_per_ms += rate / 1000.0;
            while sent_per_ms >= 1.0 {
                sent_per_ms -= 1.0;
                p.on_success(now, ms(2), 10);
            }
            now += ms(1);
        }
        let rate = p.start_rate().unwrap();
        assert!(rate > 2_000.0, "{rate}");
    }

    #[test]
    fn the_start_ends_when_headers_tell_the_limit() {
        let t0 = Instant::now();
        let mut p = PaceState::new(&Limits::default());
        let snapshot = RateLimitSnapshot {
            requests: RateWindow {
                limit: Some(600),
                remaining: Some(599),
                reset: Some(ms(100)),
            },
            ..RateLimitSnapshot::default()
        };
        assert!(p.observe(t0, &snapshot));
        assert_eq!(p.start_rate(), None);
        let limiter = p.limiters().requests.unwrap();
        assert!((limiter.rate() - 10.0).abs() < 1e-9);
        assert_eq!(p.view(50).source, PaceSource::Headers);
    }

    #[test]
    fn the_start_ends_at_the_first_429() {
        let t0 = Instant::now();
        let mut p = PaceState::new(&Limits::default());
        let t = answers(&mut p, t0, 10, 2);
        assert!(p.on_rate_limited(t, LimitScope::Requests, Some(ms(100))));
        assert_eq!(p.start_rate(), None);
        assert_eq!(p.view(50).source, PaceSource::Learned);
    }

    #[test]
    fn a_configured_rate_has_no_start() {
        for limits in [
            Limits {
                rpm: Some(6_000.0),
                ..Limits::default()
            },
            Limits {
                rps: Some(100.0),
                ..Limits::default()
            },
        ] {
            let p = PaceState::new(&limits);
            assert_eq!(p.start_rate(), None, "{limits:?}");
        }
        // A token limit alone leaves the request limit unknown: it starts slow.
        let p = PaceState::new(&Limits {
            tpm: Some(100_000.0),
            ..Limits::default()
        });
        assert_eq!(p.start_rate(), Some(START_RATE));
    }
}
