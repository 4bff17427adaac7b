use std::time::Duration;

use tokio::time::Instant;

use super::later;

/// A refusal: not now, try again at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil {
    pub at: Instant,
}

/// The Generic Cell Rate Algorithm, as `governor` implements it, kept pure.
///
/// The whole state is one instant, the *theoretical arrival time* (`tat`):
/// when the bucket would be full again if nothing more were sent. Each unit
/// pushes it one emission interval `T = 1/rate` later; a request is admitted
/// while `tat` stays within the tolerance `τ = burst · T` of now. The caller
/// keeps `tat` (behind its own lock) and passes `now`, so the arithmetic is
/// exact under tokio's paused clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    /// Emission interval in nanoseconds (f64 keeps big costs exact enough).
    t_nanos: f64,
    /// Tolerance in nanoseconds: `burst · T`.
    tau_nanos: f64,
    rate: f64,
    burst: f64,
}

/// The lowest rate accepted (one unit a day): a zero rate would never admit.
const MIN_RATE: f64 = 1.0 / 86_400.0;

impl Gcra {
    /// A limiter of `rate_per_sec` units a second, letting `burst` units
    /// through at once from a full bucket. A non-positive or non-finite rate
    /// is raised to one unit a day; a burst below one unit is one unit.
    pub fn new(rate_per_sec: f64, burst: f64) -> Gcra {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec.max(MIN_RATE)
        } else if rate_per_sec == f64::INFINITY {
            f64::MAX
        } else {
            MIN_RATE
        };
        let burst = if burst.is_finite() && burst >= 1.0 {
            burst
        } else {
            1.0
        };
        let t_nanos = 1e9 / rate;
        Gcra {
            t_nanos,
            tau_nanos: t_nanos * burst,
            rate,
            burst,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// The emission interval of `units` units.
    pub fn interval(&self, units: f64) -> Duration {
        nanos(self.t_nanos * units)
    }

    /// The tolerance: how far ahead of now `tat` may run.
    pub fn tolerance(&self) -> Duration {
        nanos(self.tau_nanos)
    }

    /// Admits `cost` units at `now` given the state `tat`, returning the new
    /// `tat`, or refuses with the instant at which the same request would pass.
    ///
    /// A cost above the burst could never fit; it is admitted when the bucket
    /// is full and charged in full, so it waits like a burst-sized request and
    /// the requests after it pay the debt (the average rate still holds).
    pub fn check(&self, tat: Instant, now: Instant, cost: u64) -> Result<Instant, NotUntil> {
        if cost == 0 {
            return Ok(tat);
        }
        let base = tat.max(now);
        let new_tat = later(base, self.interval(cost as f64));
        let earliest = if (cost as f64) > self.burst {
            base // the bucket must be full: tat <= now
        } else {
            // `new_tat - τ`, rounded once so that costs and bursts that are
            // not whole nanoseconds still give exact waits.
            let excess = self.t_nanos * cost as f64 - self.tau_nanos;
            if excess >= 0.0 {
                later(base, nanos(excess))
            } else {
                base.checked_sub(nanos(-excess)).unwrap_or(now)
            }
        };
        if earliest <= now {
            Ok(new_tat)
        } else {
            Err(NotUntil { at: earliest })
        }
    }

    /// Units free at `now` given `tat` (between 0 and the burst; negative when
    /// an oversized request left a debt).
    pub fn available(&self, tat: Instant, now: Instant) -> f64 {
        let used = tat.saturating_duration_since(now).as_nanos() as f64;
        (self.tau_nanos - used) / self.t_nanos
    }
}

fn nanos(n: f64) -> Duration {
    if n.is_finite() && n > 0.0 {
        Duration::from_nanos(n.round().min(u64::MAX as f64) as u64)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_one_per_interval() {
        let g = Gcra::new(10.0, 3.0);
        let now = Instant::now();
        let mut tat = now;
        for _ in 0..3 {
            tat = g.check(tat, now, 1).expect("burst admitted at once");
        }
        let refused = g.check(tat, now, 1).unwrap_err();
        assert_eq!(refused.at, now + ms(100));
        assert!(g.check(tat, now + ms(99), 1).is_err());
        tat = g.check(tat, now + ms(100), 1).unwrap();
        assert_eq!(
            g.check(tat, now + ms(100), 1).unwrap_err().at,
            now + ms(200)
        );
    }

    #[test]
    fn cost_counts_units() {
        let g = Gcra::new(100.0, 50.0);
        let now = Instant::now();
        let tat = g.check(now, now, 40).unwrap();
        assert_eq!(tat, now + ms(400));
        // 10 free, 20 asked: the 10 missing take 100 ms.
        assert_eq!(g.check(tat, now, 20).unwrap_err().at, now + ms(100));
        assert!((g.available(tat, now) - 10.0).abs() < 1e-9);
        assert_eq!(g.check(tat, now, 0), Ok(tat), "free requests are free");
    }

    #[test]
    fn oversized_cost_waits_for_a_full_bucket_and_pays_in_full() {
        let g = Gcra::new(10.0, 5.0);
        let now = Instant::now();
        let tat = g.check(now, now, 1).unwrap();
        // Cost 20 > burst 5: not until the bucket is full again.
        assert_eq!(g.check(tat, now, 20).unwrap_err().at, now + ms(100));
        let tat = g.check(tat, now + ms(100), 20).unwrap();
        assert_eq!(tat, now + ms(2100), "charged all 20 units");
        // The next unit waits until the debt is below the tolerance.
        assert_eq!(
            g.check(tat, now + ms(100), 1).unwrap_err().at,
            now + ms(1700)
        );
    }

    #[test]
    fn an_idle_bucket_holds_no_more_than_the_burst() {
        let g = Gcra::new(1.0, 2.0);
        let start = Instant::now();
        let now = start + Duration::from_secs(3600);
        let tat = g.check(start, now, 1).unwrap();
        let tat = g.check(tat, now, 1).unwrap();
        assert!(g.check(tat, now, 1).is_err());
        assert!((g.available(start, now) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_parameters_are_clamped() {
        let g = Gcra::new(0.0, 0.0);
        assert!(g.rate() > 0.0);
        assert_eq!(g.burst(), 1.0);
        let g = Gcra::new(f64::NAN, f64::INFINITY);
        assert!(g.rate() > 0.0 && g.burst() == 1.0);
        let g = Gcra::new(f64::INFINITY, 1.0);
        let now = Instant::now();
        let mut tat = now;
        for _ in 0..1000 {
            tat = g.check(tat, now, 1).expect("unlimited");
        }
    }
}
