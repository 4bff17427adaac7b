use std::time::Duration;

use tokio::time::Instant;

/// Finds an unknown rate limit from 429s alone, the way TCP finds a link's
/// capacity: grow while answers are good, cut on a 429, keep what was learned.
///
/// Phases:
/// - **Slow start**: the rate doubles every second of good answers until the
///   first 429, so a fast provider is reached in seconds, not minutes.
/// - **Cut**: a 429 multiplies the rate by [`DECREASE`] (0.7), at most once a
///   *window* (default 1 s, about one round trip): the other 429s of the same
///   in-flight flight were caused by the same excess and must not cut again.
///   While the window lasts, the rate is also held to the *goodput* (answers
///   that succeeded over the last second): when a provider's large bucket has
///   just run dry, the rate that gets through is the only honest measure, and
///   halving step by step from far above it would mean hundreds of 429s.
/// - **Probe**: back up quickly towards the rate of the last cut (10% of it a
///   second), then gently around it (0.5% a second: this is where the limit
///   is, and where 429s cost), then faster again once clearly above it (the
///   limit may have been raised).
///
/// Increases are time-based (per second of good answers, not per answer), so
/// the probing speed does not depend on the rate itself; a long gap without
/// answers counts as at most one second, so an idle spell is no licence to jump.
#[derive(Debug, Clone)]
pub struct Aimd {
    rate: f64,
    min: f64,
    max: f64,
    slow_start: bool,
    /// The rate at the last cut, before cutting: where the limit was found.
    ceiling: Option<f64>,
    /// 429s before this instant belong to the flight of the last cut.
    hold_until: Option<Instant>,
    window: Duration,
    last_increase: Option<Instant>,
    goodput: Goodput,
}

/// The multiplicative decrease on a 429.
pub const DECREASE: f64 = 0.7;
/// Growth per second towards the last ceiling, as a share of it.
const RECOVER: f64 = 0.10;
/// Growth per second near the last ceiling (within [`NEAR`] of it).
const PROBE: f64 = 0.005;
/// Growth per second once clearly above the last ceiling.
const EXPLORE: f64 = 0.05;
/// How close to the ceiling counts as near it.
const NEAR: f64 = 0.05;
/// The longest gap between good answers that counts as growth time.
const MAX_STEP: Duration = Duration::from_secs(1);

impl Aimd {
    /// Starts at `initial_rate` (clamped to `[min, max]`) in slow start.
    pub fn new(initial_rate: f64, min: f64, max: f64) -> Aimd {
        let min = if min.is_finite() && min > 0.0 { min } else { 1e-3 };
        let max = if max.is_finite() && max >= min { max } else { min.max(1e6) };
        Aimd {
            rate: initial_rate.clamp(min, max),
            min,
            max,
            slow_start: true,
            ceiling: None,
            hold_until: None,
            window: Duration::from_secs(1),
            last_increase: None,
            goodput: Goodput::default(),
        }
    }

    /// Sets how long the 429s after a cut count as the same flight (about
    /// the request latency; 1 s by default).
    pub fn with_window(mut self, window: Duration) -> Aimd {
        self.window = window.max(Duration::from_millis(10));
        self
    }

    /// The rate in force, in units a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn min(&self) -> f64 {
        self.min
    }

    pub fn max(&self) -> f64 {
        self.max
    }

    /// True until the first 429.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The rate at which the last 429 was met, if any.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|until| now < until)
    }

    /// A good answer: grow by the time elapsed since the last growth.
    pub fn on_success(&mut self, now: Instant) {
        self.goodput.record(now);
        let Some(last) = self.last_increase.replace(now) else {
            return;
        };
        if self.holding(now) {
            return; // answers of the flight that was just cut
        }
        let dt = now.saturating_duration_since(last).min(MAX_STEP).as_secs_f64();
        if dt == 0.0 {
            return;
        }
        let rate = match self.ceiling {
            None => self.rate * 2f64.powf(dt),
            Some(c) if self.rate < c * (1.0 - NEAR) => (self.rate + RECOVER * c * dt).min(c * (1.0 - NEAR)),
            Some(c) if self.rate < c * (1.0 + NEAR) => self.rate + PROBE * c * dt,
            Some(c) => self.rate + EXPLORE * c * dt,
        };
        self.rate = rate.clamp(self.min, self.max);
    }

    /// A 429: cut, unless this is the same flight as the last cut.
    pub fn on_rate_limited(&mut self, now: Instant) {
        if self.holding(now) {
            // Still far above what gets through: follow the goodput down.
            let goodput = self.goodput.per_second(now);
            if goodput < self.rate {
                self.rate = goodput.max(self.min);
            }
            return;
        }
        self.slow_start = false;
        // A 429 below the previous ceiling: the limit is lower than thought
        // (or shared); remember less than the rate at which it was met.
        let ceiling = match self.ceiling {
            Some(c) if self.rate < c => self.rate * (1.0 + DECREASE) / 2.0,
            _ => self.rate,
        };
        self.ceiling = Some(ceiling.max(self.min));
        self.rate = (self.rate * DECREASE).clamp(self.min, self.max);
        self.hold_until = Some(now + self.window);
        self.last_increase = Some(now);
    }
}

/// Successes over the last second, in ten 100 ms slots.
#[derive(Debug, Clone, Default)]
struct Goodput {
    origin: Option<Instant>,
    /// (slot number, count) for the last [`SLOTS`] slots.
    slots: [(u64, u32); SLOTS],
}

const SLOTS: usize = 10;
const SLOT: Duration = Duration::from_millis(100);

impl Goodput {
    fn slot(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        (now.saturating_duration_since(origin).as_nanos() / SLOT.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant) {
        let n = self.slot(now);
        let cell = &mut self.slots[(n % SLOTS as u64) as usize];
        if cell.0 != n {
            *cell = (n, 0);
        }
        cell.1 += 1;
    }

    /// Successes in the last second (the current slot and the nine before).
    fn per_second(&mut self, now: Instant) -> f64 {
        let n = self.slot(now);
        self.slots
            .iter()
            .filter(|(slot, _)| *slot + (SLOTS as u64) > n && *slot <= n)
            .map(|(_, count)| f64::from(*count))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_start_doubles_each_second_then_cuts() {
        let t0 = Instant::now();
        let mut a = Aimd::new(2.0, 0.5, 1000.0);
        a.on_success(t0);
        for i in 1..=30 {
            a.on_success(t0 + ms(100 * i));
        }
        assert!((a.rate() - 16.0).abs() < 1e-6, "{}", a.rate());
        assert!(a.in_slow_start());
        a.on_rate_limited(t0 + ms(3000));
        assert!(!a.in_slow_start());
        assert!((a.rate() - 16.0 * DECREASE).abs() < 1e-6);
        assert_eq!(a.ceiling(), Some(16.0));
    }

    #[test]
    fn one_cut_per_window_but_the_goodput_holds() {
        let t0 = Instant::now();
        let mut a = Aimd::new(100.0, 1.0, 1000.0);
        // 100 successes spread over a second: goodput 100/s.
        for i in 0..100 {
            a.on_success(t0 + ms(10 * i));
        }
        let t = t0 + ms(1000);
        a.on_rate_limited(t);
        let after_cut = a.rate();
        assert!(after_cut < 100.0 * DECREASE + 1.0);
        for i in 0..20 {
            a.on_rate_limited(t + ms(10 * i));
        }
        // No second cut: the goodput of the last second (≥ 70) is above the rate.
        assert_eq!(a.rate(), after_cut);
        // After the window, a new 429 is a new cut.
        a.on_rate_limited(t + ms(1001));
        assert!((a.rate() - after_cut * DECREASE).abs() < 1e-6);
    }

    #[test]
    fn a_dry_bucket_pulls_the_rate_down_to_what_gets_through() {
        let t0 = Instant::now();
        let mut a = Aimd::new(400.0, 1.0, 1000.0);
        a.on_rate_limited(t0);
        assert!((a.rate() - 280.0).abs() < 1e-9);
        // Then a second in which only 10 a second succeed among the 429s.
        for i in 1..=100u64 {
            let t = t0 + ms(10 * i);
            if i % 10 == 0 {
                a.on_success(t);
            } else {
                a.on_rate_limited(t);
            }
        }
        assert!(a.rate() <= 10.0 && a.rate() >= 9.0, "{}", a.rate());
    }

    #[test]
    fn recovers_fast_then_probes_gently_near_the_ceiling() {
        let t0 = Instant::now();
        let mut a = Aimd::new(100.0, 1.0, 1000.0);
        a.on_success(t0);
        a.on_rate_limited(t0); // ceiling 100, rate 70
        let mut t = t0 + ms(1000); // past the window
        a.on_success(t);
        // 2.5 s to get within 5% of the ceiling.
        for _ in 0..25 {
            t += ms(100);
            a.on_success(t);
        }
        assert!((a.rate() - 95.0).abs() < 1e-6, "{}", a.rate());
        // Then 0.5 a second: 10 s to cross the ceiling.
        for _ in 0..50 {
            t += ms(100);
            a.on_success(t);
        }
        assert!((a.rate() - 97.5).abs() < 1e-6, "{}", a.rate());
        // Far above: exploring again.
        for _ in 0..300 {
            t += ms(100);
            a.on_success(t);
        }
        assert!(a.rate() > 120.0, "{}", a.rate());
    }

    #[test]
    fn bounds_hold() {
        let t0 = Instant::now();
        let mut a = Aimd::new(5000.0, 2.0, 50.0);
        assert_eq!(a.rate(), 50.0);
        for i in 0..1000 {
            a.on_success(t0 + ms(100 * i));
            assert!(a.rate() <= 50.0);
        }
        for i in 0..1000 {
            a.on_rate_limited(t0 + Duration::from_secs(200 + 2 * i));
            assert!(a.rate() >= 2.0);
        }
        assert_eq!(a.rate(), 2.0);
        // An idle hour is one second of growth, not an hour of it.
        let mut a = Aimd::new(10.0, 1.0, 1e6);
        a.on_success(t0);
        a.on_success(t0 + Duration::from_secs(3600));
        assert!((a.rate() - 20.0).abs() < 1e-9);
        // Degenerate bounds are made sane.
        let a = Aimd::new(f64::NAN, -1.0, f64::NAN);
        assert!(a.rate() > 0.0 && a.rate().is_finite());
    }

    /// A provider's bucket: `limit` a second, `burst` deep (the simulated
    /// provider's model), with virtual time.
    struct Provider {
        gcra: crate::limit::Gcra,
        tat: Instant,
    }

    impl Provider {
        fn new(limit: f64, burst: f64, now: Instant) -> Self {
            Provider {
                gcra: crate::limit::Gcra::new(limit, burst),
                tat: now,
            }
        }

        fn admit(&mut self, now: Instant) -> bool {
            match self.gcra.check(self.tat, now, 1) {
                Ok(tat) => {
                    self.tat = tat;
                    true
                }
                Err(_) => false,
            }
        }
    }

    struct Run {
        /// Successes per second over seconds 60..300 as a share of the limit.
        share_1_to_5_min: f64,
        /// 429s as a share of all answers over the whole run.
        share_429: f64,
        /// Successes in the first 60 s as a share of the limit.
        share_first_min: f64,
    }

    /// A client that sends at the AIMD rate, answers coming back after a
    /// latency that varies between 200 and 800 ms, for 10 minutes of virtual
    /// time. Deterministic: no randomness, no sleeping.
    fn simulate(limit: f64, burst: f64, initial: f64) -> Run {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;

        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(600);
        let mut provider = Provider::new(limit, burst, t0);
        let mut aimd = Aimd::new(initial, 0.1, 10_000.0);
        let mut answers: BinaryHeap<Reverse<(Instant, bool)>> = BinaryHeap::new();
        let mut next_send = t0;
        let (mut sent, mut limited) = (0u64, 0u64);
        let (mut ok_first_min, mut ok_1_5) = (0u64, 0u64);
        loop {
            let next_answer = answers.peek().map(|Reverse((t, _))| *t);
            match next_answer {
                Some(t) if t <= next_send => {
                    let Reverse((t, ok)) = answers.pop().unwrap();
                    if ok {
                        aimd.on_success(t);
                    } else {
                        aimd.on_rate_limited(t);
                    }
                }
                _ => {
                    let now = next_send;
                    if now >= end {
                        break;
                    }
                    let ok = provider.admit(now);
                    sent += 1;
                    let since = now - t0;
                    if !ok {
                        limited += 1;
                    } else if since < Duration::from_secs(60) {
                        ok_first_min += 1;
                    } else if since < Duration::from_secs(300) {
                        ok_1_5 += 1;
                    }
                    let latency = ms(200 + (sent * 7919) % 600);
                    answers.push(Reverse((now + latency, ok)));
                    next_send = now + Duration::from_secs_f64(1.0 / aimd.rate());
                }
            }
        }
        Run {
            share_1_to_5_min: ok_1_5 as f64 / (limit * 240.0),
            share_429: limited as f64 / sent as f64,
            share_first_min: ok_first_min as f64 / (limit * 60.0),
        }
    }

    #[test]
    fn finds_a_hidden_limit_with_few_429s() {
        // Issue 4's target: ≥ 90% of the limit, ≤ 3% of requests answered 429.
        for (limit, burst, initial) in [
            (10.0, 10.0, 1.0),  // 600 rpm, a second's burst
            (10.0, 1.0, 1.0),   // strict spacing
            (100.0, 20.0, 1.0), // 6,000 rpm
            (0.5, 1.0, 1.0),    // 30 rpm, starting too fast
            (10.0, 600.0, 1.0), // a whole minute's bucket, as `pacer mock --rpm 600`
        ] {
            let run = simulate(limit, burst, initial);
            eprintln!(
                "limit {limit}/s burst {burst}: first minute {:.3}, minutes 1-5 {:.3}, 429s {:.4}",
                run.share_first_min, run.share_1_to_5_min, run.share_429
            );
            assert!(run.share_1_to_5_min >= 0.90, "limit {limit} burst {burst}: {:.3}", run.share_1_to_5_min);
            assert!(run.share_429 <= 0.03, "limit {limit} burst {burst}: {:.4}", run.share_429);
        }
    }
}
