use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

use super::{later, Gcra, NotUntil};

/// A shared GCRA limiter of units a second: requests, or tokens.
///
/// The state is a [`Gcra`] and its `tat` behind a `std::sync::Mutex`, held for
/// a few arithmetic operations and never across an `.await`. Tokens are
/// *reserved* at admission (the request's estimate) and [`reconciled`] with
/// the real usage afterwards, and the bucket follows what the provider says
/// remains ([`observe_remaining`]), so the estimate's errors and other users
/// of the same account do not turn into 429s.
///
/// [`reconciled`]: RateLimiter::reconcile
/// [`observe_remaining`]: RateLimiter::observe_remaining
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    /// Wakes sleeping acquirers when capacity appears early (a faster rate,
    /// a refund), so that they do not sleep to a deadline that no longer holds.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    gcra: Gcra,
    /// When the bucket is full again; at or before now means it is full.
    tat: Instant,
}

impl RateLimiter {
    /// A full bucket of `burst` units refilling at `rate_per_sec`.
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        RateLimiter {
            state: Mutex::new(State {
                gcra: Gcra::new(rate_per_sec, burst),
                tat: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain values updated atomically under the lock, so
        // a panic elsewhere cannot leave it half-written: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `cost` units now, or says when they will be free.
    pub fn try_acquire(&self, now: Instant, cost: u64) -> Result<(), NotUntil> {
        let mut s = self.lock();
        s.tat = s.gcra.check(s.tat, now, cost)?;
        Ok(())
    }

    /// Waits until `cost` units are free and takes them. The rate may change
    /// while we sleep, so every wake-up checks again.
    pub async fn acquire(&self, cost: u64) {
        loop {
            // Registered before the check, so a change in between is not missed.
            let changed = self.changed.notified();
            match self.try_acquire(Instant::now(), cost) {
                Ok(()) => return,
                Err(NotUntil { at }) => {
                    tokio::select! {
                        () = sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }

    /// Settles a reservation of `reserved` units with the `actual` usage:
    /// refunds the difference (never beyond a full bucket) or charges the
    /// extra (which may leave a debt the next requests wait for).
    pub fn reconcile(&self, now: Instant, reserved: u64, actual: u64) {
        let mut s = self.lock();
        if actual > reserved {
            // Never more than a full bucket of debt: a usage beyond the
            // burst is a server's odd number, not a reason to stall for days.
            let extra = s
                .gcra
                .interval((actual - reserved) as f64)
                .min(s.gcra.tolerance());
            s.tat = later(s.tat.max(now), extra);
        } else if reserved > actual && s.tat > now {
            let refund = s.gcra.interval((reserved - actual) as f64);
            s.tat = s.tat.checked_sub(refund).unwrap_or(now).max(now);
            drop(s);
            self.changed.notify_waiters();
        }
    }

    /// Changes the pace. The units already used stay used: the bucket keeps
    /// its debt, measured in units, under the new rate and burst.
    pub fn set_rate(&self, now: Instant, rate_per_sec: f64, burst: f64) {
        let mut s = self.lock();
        let new = Gcra::new(rate_per_sec, burst);
        let used = s.gcra.burst() - s.gcra.available(s.tat, now);
        s.tat = later(now, new.interval(used.max(0.0)));
        s.gcra = new;
        drop(s);
        self.changed.notify_waiters();
    }

    /// Empties the bucket as of `at` (the end of a 429's pause): one unit is
    /// free then, the next a unit's interval later. A pause is no idle time:
    /// the provider refused because its bucket was dry, so what refilled in
    /// ours meanwhile is not room there, and spending it in one burst when
    /// the gate opens is a flight of 429s.
    pub fn empty_until(&self, at: Instant) {
        let mut s = self.lock();
        let empty = later(at, s.gcra.interval((s.gcra.burst() - 1.0).max(0.0)));
        s.tat = s.tat.max(empty);
    }

    /// Changes the pace as [`set_rate`](Self::set_rate), but keeps at most
    /// one new bucket of what was used: for a pace being searched for, where
    /// a limiter emptied at a fast pace (a 429's pause, with a burst of a
    /// second at 250 a second) must not become 250 units of debt at the
    /// slower pace found next (23 s without a request at 11 a second).
    pub fn set_search_rate(&self, now: Instant, rate_per_sec: f64, burst: f64) {
        let mut s = self.lock();
        let new = Gcra::new(rate_per_sec, burst);
        let used = (s.gcra.burst() - s.gcra.available(s.tat, now)).min(new.burst());
        s.tat = later(now, new.interval(used.max(0.0)));
        s.gcra = new;
        drop(s);
        self.changed.notify_waiters();
    }

    pub fn rate(&self) -> f64 {
        self.lock().gcra.rate()
    }

    pub fn burst(&self) -> f64 {
        self.lock().gcra.burst()
    }

    /// Follows the provider's own count: if we believe more units are free
    /// than the provider says `remaining`, the difference is used up (someone
    /// else on the account, or an estimate that was low). It never adds
    /// capacity: a provider with a bigger window does not make our configured
    /// or learned pace any faster. A `reset` of zero means the provider's
    /// window has already refilled, so the `remaining` it reported is stale
    /// and is ignored.
    pub fn observe_remaining(&self, now: Instant, remaining: u64, reset: Duration) {
        if reset.is_zero() {
            return;
        }
        let mut s = self.lock();
        let remaining = remaining as f64;
        if s.gcra.available(s.tat, now) > remaining {
            let used = s.gcra.burst() - remaining;
            s.tat = s.tat.max(later(now, s.gcra.interval(used)));
        }
    }

    /// Units free now (for tests and progress). Negative while an oversized
    /// request's debt is being paid.
    pub fn available(&self, now: Instant) -> f64 {
        let s = self.lock();
        s.gcra.available(s.tat, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn approx(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-6, "{a} != {b}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_10_burst_1_takes_exactly_9_9_s_for_100() {
        let l = RateLimiter::new(10.0, 1.0);
        let start = Instant::now();
        for _ in 0..100 {
            l.acquire(1).await;
        }
        assert_eq!(start.elapsed(), ms(9_900));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_pause_it_admits_at_the_rate_not_in_a_burst() {
        let l = RateLimiter::new(10.0, 10.0);
        let start = Instant::now();
        // A pause of 2 s: the bucket would be full again by its end.
        l.empty_until(start + ms(2_000));
        l.acquire(1).await;
        assert_eq!(start.elapsed(), ms(2_000), "one unit at the pause's end");
        for _ in 0..5 {
            l.acquire(1).await;
        }
        assert_eq!(start.elapsed(), ms(2_500), "then one every 100 ms");
        // It never gives debt back: a later pause that ends sooner is no-op.
        l.empty_until(start + ms(100));
        l.acquire(1).await;
        assert_eq!(start.elapsed(), ms(2_600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_search_rate_keeps_at_most_a_bucket_of_debt() {
        let l = RateLimiter::new(250.0, 250.0);
        let start = Instant::now();
        l.empty_until(start);
        // Found: 10 a second. At most its bucket (10) is owed: a second.
        l.set_search_rate(start, 10.0, 10.0);
        l.acquire(1).await;
        assert!(start.elapsed() <= ms(1_000), "{:?}", start.elapsed());
        // set_rate keeps the units: 249 of them at 10 a second.
        let k = RateLimiter::new(250.0, 250.0);
        k.empty_until(start);
        k.set_rate(start, 10.0, 10.0);
        assert!(k.available(start) < -200.0);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_n_goes_at_once_then_paces() {
        let l = RateLimiter::new(10.0, 5.0);
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire(1).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        l.acquire(1).await;
        assert_eq!(start.elapsed(), ms(100));
        for _ in 0..10 {
            l.acquire(1).await;
        }
        assert_eq!(start.elapsed(), ms(1_100));
    }

    #[tokio::test(start_paused = true)]
    async fn many_tasks_share_the_pace() {
        let l = Arc::new(RateLimiter::new(20.0, 1.0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        l.acquire(1).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 40 acquisitions at 20/s, the first immediate.
        assert_eq!(start.elapsed(), ms(1_950));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_paced_by_cost() {
        // 600 tokens a second, a bucket of 1,000.
        let l = RateLimiter::new(600.0, 1000.0);
        let start = Instant::now();
        l.acquire(800).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        l.acquire(500).await; // 200 free, 300 missing: 0.5 s
        assert_eq!(start.elapsed(), ms(500));
        // An oversized request waits for a full bucket (1,300 used at 600/s:
        // at 2.1667 s; timers fire on whole milliseconds), never for ever.
        l.acquire(5000).await;
        let e = start.elapsed();
        assert!(
            e >= Duration::from_nanos(2_166_666_666) && e <= ms(2_167),
            "{e:?}"
        );
        // And its debt is paid by the next request: the 4,001 units beyond
        // the bucket's 1,000 at 600/s.
        l.acquire(1).await;
        let waited = start.elapsed() - e;
        assert!(waited >= ms(6_667) && waited <= ms(6_669), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn reconcile_refunds_and_charges() {
        let l = RateLimiter::new(100.0, 1000.0);
        let now = Instant::now();
        l.try_acquire(now, 900).unwrap();
        approx(l.available(now), 100.0);
        // The reply used 300 of the 900 reserved: 600 come back.
        l.reconcile(now, 900, 300);
        approx(l.available(now), 700.0);
        // Another used 250 more than reserved.
        l.try_acquire(now, 500).unwrap();
        l.reconcile(now, 500, 750);
        approx(l.available(now), -50.0);
        assert_eq!(l.try_acquire(now, 1).unwrap_err().at, now + ms(510));
        // Refunds never make the bucket fuller than full.
        let later = now + Duration::from_secs(100);
        l.try_acquire(later, 10).unwrap();
        l.reconcile(later, 10, 0);
        l.reconcile(later, 1000, 0);
        approx(l.available(later), 1000.0);
        l.reconcile(later, 5, 5);
        approx(l.available(later), 1000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn observe_remaining_only_takes_capacity_away() {
        let l = RateLimiter::new(10.0, 50.0);
        let now = Instant::now();
        l.try_acquire(now, 10).unwrap();
        approx(l.available(now), 40.0);
        // The provider says only 25 remain: someone else used 15.
        l.observe_remaining(now, 25, Duration::from_secs(3));
        approx(l.available(now), 25.0);
        // It says more remain than we think: we stay with our own count.
        l.observe_remaining(now, 49, Duration::from_secs(1));
        approx(l.available(now), 25.0);
        // A window already reset says nothing about now.
        l.observe_remaining(now, 0, Duration::ZERO);
        approx(l.available(now), 25.0);
        // Nothing left: the next unit comes one interval later.
        l.observe_remaining(now, 0, Duration::from_secs(5));
        approx(l.available(now), 0.0);
        assert_eq!(l.try_acquire(now, 1).unwrap_err().at, now + ms(100));
    }

    #[tokio::test(start_paused = true)]
    async fn set_rate_keeps_the_debt_and_wakes_sleepers_at_once() {
        let l = Arc::new(RateLimiter::new(1.0, 1.0));
        let start = Instant::now();
        l.acquire(1).await;
        // Next unit would be at 1 s. Speed up to 10/s at once.
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move {
                l.acquire(1).await;
                Instant::now()
            })
        };
        tokio::task::yield_now().await;
        l.set_rate(start, 10.0, 1.0);
        assert_eq!(l.rate(), 10.0);
        assert_eq!(l.burst(), 1.0);
        // The sleeper does not wait for its old deadline (1 s).
        assert_eq!(waiter.await.unwrap(), start + ms(100));
        // Slowing down: one unit used, at 0.5/s it takes 2 s to refill.
        let now = Instant::now();
        l.set_rate(now, 0.5, 1.0);
        assert_eq!(l.try_acquire(now, 1).unwrap_err().at, now + ms(2_000));
        // A bigger burst leaves the used units used.
        l.set_rate(now, 0.5, 4.0);
        approx(l.available(now), 3.0);
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_usage_and_counts_cost_at_most_a_window() {
        let l = RateLimiter::new(10.0, 100.0);
        let now = Instant::now();
        // A server claiming u64::MAX tokens: a debt of one full bucket, no more.
        l.try_acquire(now, 1).unwrap();
        l.reconcile(now, 1, u64::MAX);
        approx(l.available(now), 99.0 - 100.0);
        assert!(l.try_acquire(now, 1).unwrap_err().at <= now + Duration::from_secs(21));
        l.observe_remaining(now, 0, Duration::MAX);
        l.set_rate(now, f64::MIN_POSITIVE, f64::MAX);
        l.set_rate(now, 1e-300, 1e300);
        if let Err(NotUntil { at }) = l.try_acquire(now, u64::MAX) {
            assert!(at <= now + super::super::MAX_AHEAD);
        }
    }
}
