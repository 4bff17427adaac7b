//! Admission: the one place where pacing happens.
//!
//! [`Pacer`] is the async face of [`PaceState`]: it owns what must be
//! awaited (the concurrency slots, the pause gate, waiting on the limiters)
//! and takes every answer's feedback in one call, [`Pacer::feedback`], which
//! updates the adaptive state under its one lock and resizes the slots.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};

use crate::limit::{
    later, Limits, NotUntil, PaceState, PaceView, PauseGate, TokenTicket, DEFAULT_CONCURRENCY,
};
use crate::provider::RateLimitSnapshot;
use crate::retry::{Outcome, RetryReason, Verdict};
use crate::shared::SharedLimits;

/// Pause after a 429 that names no wait.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);
/// With shared limits, how long the second admission waits for the first
/// answer at most.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What one answer changed, for the caller's events and retry decision.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PaceChange {
    /// The pace in force changed (worth a progress event).
    pub pace_changed: bool,
    /// A 429 closed the pause gate until then.
    pub paused_until: Option<Instant>,
    /// The provider is being treated as down (the circuit is open).
    pub circuit_open: bool,
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
///   capacity: a 429 about requests cuts the request pace, one about tokens
///   the token pace.
/// - A 429 closes the one pause gate for every worker until its Retry-After.
/// - A run of outage-like failures opens the circuit: nothing goes out but
///   one probe at growing intervals; when it succeeds, the pace restarts at
///   half of what it was and climbs back.
/// - Requests in flight are sized by Little's law from the pace and the
///   latency, capped by `--concurrency`.
#[derive(Debug)]
pub struct Pacer {
    /// The adaptive state and the slot bookkeeping: the one lock, never held
    /// across an await.
    state: Mutex<Inner>,
    gate: PauseGate,
    /// Wakes admission when a probe closes the circuit.
    circuit_closed: Notify,
    /// The slots Little's law sizes.
    semaphore: Arc<Semaphore>,
    /// Everything in flight, overdue requests included.
    ceiling: Arc<Semaphore>,
    /// Answers (and observed headers) so far; `answered` wakes those
    /// waiting for the first.
    answers: std::sync::atomic::AtomicU64,
    answered: Notify,
    /// The limits shared with other processes through Redis (`--redis`):
    /// the rate and pause decisions go through it too.
    shared: Option<Arc<SharedLimits>>,
    /// Whether this process has admitted a request yet.
    admitted_once: std::sync::atomic::AtomicBool,
}

/// A request's places in flight: its share of the paced concurrency, given
/// back early if it becomes overdue, and its place under the hard ceiling,
/// held until it ends.
#[derive(Debug)]
pub struct InFlight {
    paced: Option<OwnedSemaphorePermit>,
    _ceiling: OwnedSemaphorePermit,
}

impl InFlight {
    /// The request stops counting toward the paced concurrency (it is
    /// overdue); it keeps its place under the ceiling.
    pub fn release_paced(&mut self) {
        self.paced = None;
    }
}

#[derive(Debug)]
struct Inner {
    pace: PaceState,
    /// Permits the semaphore should have in all.
    limit: usize,
    /// Permits to forget as in-flight requests give theirs back.
    debt: usize,
}

impl Pacer {
    pub fn new(limits: &Limits) -> Pacer {
        let initial = limits.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
        let state = PaceState::new(limits);
        let ceiling = Arc::new(Semaphore::new(state.in_flight_ceiling()));
        let pacer = Pacer {
            state: Mutex::new(Inner {
                pace: state,
                limit: initial,
                debt: 0,
            }),
            gate: PauseGate::new(),
            circuit_closed: Notify::new(),
            semaphore: Arc::new(Semaphore::new(initial)),
            ceiling,
            answers: std::sync::atomic::AtomicU64::new(0),
            answered: Notify::new(),
            shared: None,
            admitted_once: std::sync::atomic::AtomicBool::new(false),
        };
        pacer.lock().resize(&pacer.semaphore);
        pacer
    }

    /// Shares the rate limits and the pause with every process on the same
    /// Redis, upstream and key. The slots, the budget and the circuit stay
    /// this process's own.
    pub fn with_shared(mut self, shared: Option<Arc<SharedLimits>>) -> Pacer {
        self.shared = shared;
        self
    }

    /// The shared limits, if any.
    pub fn shared(&self) -> Option<&Arc<SharedLimits>> {
        self.shared.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the state whole between statements that can
        // panic, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a concurrency slot (and a place under the ceiling).
    pub async fn slot(&self) -> InFlight {
        let closed = "the semaphores are never closed";
        let paced = self.semaphore.clone().acquire_owned().await.expect(closed);
        let ceiling = self.ceiling.clone().acquire_owned().await.expect(closed);
        InFlight {
            paced: Some(paced),
            _ceiling: ceiling,
        }
    }

    /// How long a request may be in flight before it is overdue: it then
    /// gives its paced slot back (see [`PaceState::overdue_after`]).
    pub fn overdue_after(&self) -> Duration {
        self.lock().pace.overdue_after()
    }

    /// Requests in flight now (slots taken).
    pub fn in_flight(&self) -> usize {
        let inner = self.lock();
        (inner.limit + inner.debt).saturating_sub(self.semaphore.available_permits())
    }

    /// Waits until one request of `tokens` may go: the circuit, the gate,
    /// then each limit. Cancel-safe: nothing is charged until a limit admits.
    pub async fn admit(&self, tokens: u64) -> TokenTicket {
        if self.shared.is_some()
            && self
                .admitted_once
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // A process's first request pays its one-off costs (a connection,
            // lazy set-up): places reserved behind it in the shared line would
            // be used late, all at once, into a bucket others have refilled.
            self.first_answer(FIRST_ANSWER_WAIT).await;
        }
        loop {
            // Registered before the check, so a close in between is not missed.
            let closed = self.circuit_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let checked = self.lock().pace.check_circuit(Instant::now());
            match checked {
                Ok(()) => break,
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
        let (limiters, (charged, ratio)) = {
            let inner = self.lock();
            (inner.pace.limiters(), inner.pace.token_charge(tokens))
        };
        if let Some(l) = &limiters.per_second {
            l.acquire(1).await;
        }
        if let Some(l) = &limiters.recovery {
            l.acquire(1).await;
        }
        if let Some(l) = &limiters.requests {
            l.acquire(1).await;
        }
        if let Some(l) = &limiters.tokens {
            l.acquire(charged).await;
        }
        let mut reserved = None;
        if let Some(shared) = &self.shared {
            // After the local limits: they are never looser than the shared
            // ones, and a place reserved in Redis is best used at once.
            let seen = self.lock().pace.seen_limits();
            reserved = shared.admit(seen, charged).await;
        }
        // A 429 may have closed the gate while we waited on the limits. While
        // the limit is being found, this place was then given at a pace the
        // 429 just proved too fast, and every request parked here would go
        // at once when the gate opens: the next flight of 429s. Take a place
        // again at the pace in force after the pause (the token reservation
        // stands: it is the same request).
        // Likewise a place given by a limiter the first 429 has since
        // replaced (the slow start's, at the pace that 429 proved too fast).
        let mut taken = limiters.requests;
        loop {
            let paused = self.gate.paused_until(Instant::now()).is_some();
            if paused {
                self.gate.wait().await;
            }
            let discovery = self.lock().pace.discovery_limiter();
            match discovery {
                Some(l) if paused || !taken.as_ref().is_some_and(|t| Arc::ptr_eq(t, &l)) => {
                    l.acquire(1).await;
                    taken = Some(l);
                }
                _ if paused => {}
                _ => break,
            }
        }
        let mut ticket = self
            .lock()
            .pace
            .ticket(Instant::now(), tokens, charged, ratio);
        ticket.shared = reserved;
        ticket
    }

    /// A slot at once, if one is free (the gateway's fast path).
    pub fn try_slot(&self) -> Option<InFlight> {
        let paced = self.semaphore.clone().try_acquire_owned().ok()?;
        let ceiling = self.ceiling.clone().try_acquire_owned().ok()?;
        Some(InFlight {
            paced: Some(paced),
            _ceiling: ceiling,
        })
    }

    /// Admits a request of `tokens` now if nothing would make it wait: the
    /// circuit closed, the gate open, every limit with room. `None` changes
    /// nothing; the caller then waits in [`Pacer::admit`]'s way.
    pub fn try_admit(&self, tokens: u64) -> Option<TokenTicket> {
        if self.shared.is_some() {
            // Shared limits are asked over the network: never without waiting.
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.pace.circuit_open() || self.gate.paused_until(now).is_some() {
            return None;
        }
        let limiters = inner.pace.limiters();
        let (charged, ratio) = inner.pace.token_charge(tokens);
        let all = [
            (&limiters.per_second, 1),
            (&limiters.recovery, 1),
            (&limiters.requests, 1),
            (&limiters.tokens, charged),
        ];
        // All or nothing: look first, then take. Another admission between
        // the two (the queue's dispatcher) can at worst leave one limiter
        // charged for a request that then waits its turn: a unit of pace,
        // never a request over the limit.
        if all
            .iter()
            .any(|(l, cost)| l.as_ref().is_some_and(|l| l.available(now) < *cost as f64))
        {
            return None;
        }
        for (l, cost) in all {
            if let Some(l) = l {
                l.try_acquire(now, cost).ok()?;
            }
        }
        Some(inner.pace.ticket(now, tokens, charged, ratio))
    }

    /// Whether the provider has answered (or its headers were observed) once.
    pub fn has_answered(&self) -> bool {
        self.answers.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Feeds the provider's rate-limit headers back (the key check's answer).
    /// Returns whether the pace changed.
    pub fn observe(&self, now: Instant, snapshot: &RateLimitSnapshot) -> bool {
        self.note_answer();
        let mut inner = self.lock();
        let changed = inner.pace.observe(now, snapshot);
        if changed {
            inner.resize(&self.semaphore);
        }
        changed
    }

    /// Everything one attempt tells the pacer, `reserved` being the tokens
    /// admission took for it: headers, then what the verdict says about the
    /// provider (up, rate-limited, down) and the tokens it really charged.
    pub fn feedback(&self, now: Instant, outcome: &Outcome, ticket: &TokenTicket) -> PaceChange {
        self.note_answer();
        let mut change = PaceChange::default();
        let mut inner = self.lock();
        let pace = &mut inner.pace;
        // Where the charge cannot be known, the reservation stands.
        let actual = outcome.charged_tokens.unwrap_or(ticket.estimate);
        pace.settle_tokens(now, ticket, actual);
        if !outcome.limits.is_empty() {
            change.pace_changed |= pace.observe(now, &outcome.limits);
            pace.learn_token_ratio(&outcome.limits, ticket);
        }
        let reserved = ticket.estimate;
        let mut was_down = false;
        let mut shared_pause = None;
        match &outcome.verdict {
            Verdict::Success => {
                was_down = pace.circuit_open();
                let charged = outcome.charged_tokens.unwrap_or(reserved);
                change.pace_changed |= pace.on_success(now, outcome.latency, charged);
            }
            Verdict::Fail => was_down = pace.on_provider_up(now),
            Verdict::Retry(reason @ RetryReason::RateLimited { scope, .. }) => {
                // A 429 is the provider working as intended: it is up.
                was_down = pace.on_provider_up(now);
                let after = reason.after();
                let until = later(now, after.unwrap_or(DEFAULT_429_PAUSE));
                self.gate.pause_until(until);
                shared_pause = Some(after.unwrap_or(DEFAULT_429_PAUSE));
                change.paused_until = Some(until);
                change.pace_changed |= pace.on_rate_limited(now, *scope, after);
                pace.after_pause(until);
            }
            Verdict::Retry(reason) if reason.is_outage_like() => {
                change.circuit_open = pace.on_outage(now);
            }
            Verdict::Retry(_) | Verdict::Stop(_) => {}
        }
        change.pace_changed |= was_down;
        // The slow start's slots follow its pace, which grows without being
        // a change of pace worth an event.
        if change.pace_changed || inner.pace.target_concurrency() != inner.limit {
            inner.resize(&self.semaphore);
        }
        drop(inner);
        if let Some(shared) = &self.shared {
            let used = PaceState::provider_terms(ticket, actual);
            let delta = i64::try_from(used)
                .unwrap_or(i64::MAX)
                .saturating_sub(i64::try_from(ticket.charged).unwrap_or(i64::MAX));
            shared.settle(ticket.shared.as_ref(), delta, shared_pause);
        }
        if was_down {
            self.circuit_closed.notify_waiters();
        }
        change
    }

    fn note_answer(&self) {
        use std::sync::atomic::Ordering;
        if self.answers.fetch_add(1, Ordering::Relaxed) == 0 {
            self.answered.notify_waiters();
        }
    }

    /// Waits until the provider has answered once (any answer, or headers
    /// observed), or `at_most`. Before its first answer nothing is known of
    /// its limits, and a burst sent blind into a short window is mostly
    /// 429s: a caller with many requests ready sends one, waits here, then
    /// the rest at the pace that answer's headers set.
    pub async fn first_answer(&self, at_most: Duration) {
        use std::sync::atomic::Ordering;
        let answered = self.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        if self.answers.load(Ordering::Relaxed) > 0 {
            return;
        }
        let _ = tokio::time::timeout(at_most, answered).await;
    }

    /// Treats the provider as down from now on (its first answer was a
    /// server error): one probe at growing intervals until one succeeds.
    pub fn trip_circuit(&self, now: Instant) {
        self.lock().pace.trip_circuit(now);
    }

    /// Whether the provider is being treated as down.
    pub fn circuit_open(&self) -> bool {
        self.lock().pace.circuit_open()
    }

    /// The pace in force.
    pub fn view(&self) -> PaceView {
        let inner = self.lock();
        inner.pace.view(inner.limit)
    }
}

impl Inner {
    /// Sizes the slots to the concurrency the pace calls for. Permits in use
    /// cannot be taken back, so a cut is a debt paid as they come back.
    fn resize(&mut self, semaphore: &Semaphore) {
        let target = self.pace.target_concurrency();
        if self.debt > 0 {
            self.debt -= semaphore.forget_permits(self.debt);
        }
        if target > self.limit {
            let add = target - self.limit;
            let paid = add.min(self.debt);
            self.debt -= paid;
            if add > paid {
                semaphore.add_permits(add - paid);
            }
        } else if target < self.limit {
            let cut = self.limit - target;
            let forgotten = semaphore.forget_permits(cut);
            self.debt += cut - forgotten;
        }
        self.limit = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::RECOVERY_RAMP;
    use crate::provider::{RateWindow, ServerWait, WaitSource};
    use crate::report::PaceSource;
    use crate::retry::LimitScope;

    fn outcome(verdict: Verdict, latency: Duration, charged: Option<u64>) -> Outcome {
        Outcome {
            verdict,
            limits: RateLimitSnapshot::default(),
            latency,
            charged_tokens: charged,
        }
    }

    impl Pacer {
        fn on_success(&self, now: Instant, latency: Duration, tokens: u64) -> bool {
            let o = outcome(Verdict::Success, latency, Some(tokens));
            self.feedback(now, &o, &TokenTicket::plain(tokens))
                .pace_changed
        }

        fn on_rate_limited(
            &self,
            now: Instant,
            scope: LimitScope,
            after: Option<Duration>,
        ) -> (Instant, bool) {
            let after = after.map(|d| ServerWait::new(d, WaitSource::RetryAfterMs, ""));
            let reason = RetryReason::RateLimited { scope, after };
            let o = outcome(Verdict::Retry(reason), Duration::ZERO, Some(0));
            let c = self.feedback(now, &o, &TokenTicket::plain(0));
            (c.paused_until.unwrap(), c.pace_changed)
        }

        fn on_outage(&self, now: Instant) -> bool {
            let reason = RetryReason::Server {
                status: 503,
                after: None,
            };
            let o = outcome(Verdict::Retry(reason), Duration::ZERO, None);
            self.feedback(now, &o, &TokenTicket::plain(0)).circuit_open
        }

        fn on_provider_up(&self, now: Instant) -> bool {
            self.feedback(
                now,
                &outcome(Verdict::Fail, Duration::ZERO, None),
                &TokenTicket::plain(0),
            )
            .pace_changed
        }

        fn recovery_rate(&self) -> Option<f64> {
            self.lock().pace.recovery_rate()
        }

        fn resize(&self) {
            self.lock().resize(&self.semaphore);
        }
    }

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
    async fn a_short_window_shown_in_the_headers_sets_the_burst() {
        // 600 a minute, enforced over one second: a bucket of 10.
        let pacer = Pacer::new(&Limits::default());
        let t0 = Instant::now();
        let snap = |remaining, reset_ms| RateLimitSnapshot {
            requests: RateWindow {
                limit: Some(600),
                remaining: Some(remaining),
                reset: Some(Duration::from_millis(reset_ms)),
            },
            ..Default::default()
        };
        assert!(pacer.observe(t0, &snap(10, 0)));
        for _ in 0..10 {
            pacer.admit(0).await;
        }
        assert_eq!(Instant::now(), t0, "the bucket's ten go at once");
        for _ in 0..20 {
            pacer.admit(0).await;
        }
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(2),
            "then ten a second"
        );
        // Half the bucket used, as the provider says: 5 more at once, not a
        // minute's stall (a minute's bucket believed in would wait 59 s).
        let t1 = Instant::now() + Duration::from_secs(5);
        tokio::time::sleep_until(t1).await;
        pacer.observe(t1, &snap(5, 500));
        for _ in 0..5 {
            pacer.admit(0).await;
        }
        assert_eq!(Instant::now(), t1);
        // A minute's bucket reads as a minute's bucket.
        let minute = Pacer::new(&Limits::default());
        let now = Instant::now();
        minute.observe(now, &snap(590, 1000));
        for _ in 0..590 {
            minute.admit(0).await;
        }
        assert_eq!(Instant::now(), now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_counts_more_than_pacer_is_paced_in_its_own_terms() {
        // 60,000 tokens a minute in a one-minute bucket; the provider counts
        // each request as 1,300 where pacer estimates 1,000 (OpenAI's
        // limiter counts characters, not tokens).
        let pacer = Pacer::new(&Limits::default());
        let t0 = Instant::now();
        let mut provider_used = 0u64;
        let snap = |used: u64| RateLimitSnapshot {
            tokens: RateWindow {
                limit: Some(60_000),
                remaining: Some(60_000 - used.min(60_000)),
                reset: Some(Duration::from_millis(used)), // 1,000 a second refill
            },
            ..Default::default()
        };
        pacer.observe(t0, &snap(0));
        // The provider's bucket refills 1,000 a second while pacer waits.
        let mut last = t0;
        for _ in 0..30 {
            let ticket = pacer.admit(1_000).await;
            let now = Instant::now();
            let refill = (now - last).as_millis() as u64;
            last = now;
            provider_used = provider_used.saturating_sub(refill) + 1_300;
            let mut o = outcome(Verdict::Success, Duration::ZERO, Some(1_000));
            o.limits = snap(provider_used);
            pacer.feedback(now, &o, &ticket);
        }
        let ratio = pacer.lock().pace.token_ratio();
        assert!((1.28..=1.32).contains(&ratio), "learned {ratio}");
        // Later requests are charged in the provider's terms.
        let ticket = pacer.admit(1_000).await;
        assert!(ticket.charged >= 1_200, "{ticket:?}");
        // With no token headers, nothing is learned.
        let quiet = Pacer::new(&Limits {
            tpm: Some(60_000.0),
            ..Limits::default()
        });
        let ticket = quiet.admit(1_000).await;
        quiet.feedback(
            t0,
            &outcome(Verdict::Success, Duration::ZERO, Some(1_000)),
            &ticket,
        );
        assert_eq!(quiet.lock().pace.token_ratio(), 1.0);
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

    /// Spawns `n` admissions; returns when each was admitted.
    async fn admit_all(pacer: &Arc<Pacer>, n: usize) -> Vec<Instant> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let p = pacer.clone();
                tokio::spawn(async move {
                    p.admit(1).await;
                    Instant::now()
                })
            })
            .collect();
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap());
        }
        at.sort();
        at
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_in_discovery_the_pause_ends_at_the_pace_not_in_a_burst() {
        let pacer = Arc::new(Pacer::new(&Limits::default()));
        let t0 = Instant::now();
        // The slow start had 100 a second through...
        for i in 0..100 {
            pacer.on_success(
                t0 + Duration::from_millis(i * 10),
                Duration::from_millis(50),
                10,
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // ...then the first 429, asking 100 ms: the pace learned is 10 a second.
        let (until, _) = pacer.on_rate_limited(
            Instant::now(),
            LimitScope::Requests,
            Some(Duration::from_millis(100)),
        );
        assert_eq!(pacer.view().rpm, Some(600.0));
        let at = admit_all(&pacer, 30).await;
        assert_eq!(at[0], until);
        assert_eq!(
            at.iter().filter(|t| **t == until).count(),
            1,
            "one at the pause's end, not a burst saved up during it"
        );
        let first_second = at
            .iter()
            .filter(|t| **t < until + Duration::from_secs(1))
            .count();
        assert!(
            first_second <= 10,
            "{first_second} in the first second at 10 a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_on_the_slow_start_go_at_the_pace_learned_after_it() {
        // The slow start lets 10 go at once, then 10 a second; 40 wait.
        let pacer = Arc::new(Pacer::new(&Limits::default()));
        let t0 = Instant::now();
        let waiting = {
            let p = pacer.clone();
            tokio::spawn(async move { admit_all(&p, 40).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The first 429 asks 500 ms: the pace learned is 2 a second at most
        // (nothing got through yet: the floor, 1 a second).
        let (until, _) = pacer.on_rate_limited(
            Instant::now(),
            LimitScope::Requests,
            Some(Duration::from_millis(500)),
        );
        let rate = pacer.view().rpm.unwrap() / 60.0;
        assert!(rate <= 2.0, "{rate}");
        let at = waiting.await.unwrap();
        let after: Vec<Instant> = at.iter().copied().filter(|t| *t > t0).collect();
        // Nothing between the 429 and the pause's end; from then on, the
        // learned pace: not the slow start's 10 a second, nor its parked
        // requests all at once.
        assert!(after.iter().all(|t| *t >= until), "{after:?}");
        let in_2s = after
            .iter()
            .filter(|t| **t < until + Duration::from_secs(2))
            .count();
        assert!(
            in_2s as f64 <= 2.0 * rate + 1.0,
            "{in_2s} admitted in the 2 s after the pause at {rate} a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reserved_then_reconciled() {
        let pacer = Pacer::new(&Limits {
            tpm: Some(6000.0),
            ..Limits::default()
        });
        let t0 = Instant::now();
        let ticket = pacer.admit(6000).await; // the whole minute
        assert_eq!(ticket.charged, 6000);
        // Only half was charged.
        pacer.feedback(
            t0,
            &outcome(Verdict::Success, Duration::ZERO, Some(3000)),
            &ticket,
        );
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
        let r = pacer.recovery_rate().unwrap();
        assert!((r - 5.0).abs() < 1e-9, "{r}");
        // ...climbing back to the full pace over the ramp.
        pacer.on_success(Instant::now() + RECOVERY_RAMP, Duration::from_millis(10), 1);
        assert!(pacer.recovery_rate().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_overdue_request_gives_its_slot_back_but_not_its_place_under_the_ceiling() {
        let pacer = Arc::new(Pacer::new(&Limits {
            concurrency: Some(2),
            ..Limits::default()
        }));
        // Answers of about 200 ms: overdue only past the floor.
        for _ in 0..50 {
            pacer.on_success(Instant::now(), Duration::from_millis(200), 1);
        }
        assert_eq!(pacer.overdue_after(), crate::limit::OVERDUE_FLOOR);
        let mut a = pacer.slot().await;
        let _b = pacer.slot().await;
        let waiter = {
            let p = pacer.clone();
            tokio::spawn(async move { p.slot().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "both paced slots are taken");
        a.release_paced();
        let c = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the overdue request's slot went to the next one")
            .unwrap();
        // The ceiling (twice the cap) still counts all three: one more fits.
        let _d_paced = c;
        assert_eq!(pacer.ceiling.available_permits(), 1);
        // Slow answers stretch the threshold past the floor.
        for _ in 0..50 {
            pacer.on_success(Instant::now(), Duration::from_secs(20), 1);
        }
        assert!(pacer.overdue_after() > Duration::from_secs(80));
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
