use std::time::Duration;

use tokio::time::Instant;

use super::{later, NotUntil};

/// What the circuit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The provider is healthy: send as usual.
    Normal,
    /// The provider was down: this one request tests it. Report its outcome
    /// with `on_success` / `on_failure`; nothing else is let through meanwhile.
    Probe,
}

/// The circuit's state, for progress and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// Stops dispatch while the provider is down, and tests it with one request
/// at growing intervals.
///
/// A run of outage-like failures (5xx, 529, connection errors, timeouts) is
/// not fifty independent bad lucks but one outage: sending more only burns
/// retries and hammers a provider that is trying to recover. After
/// `threshold` consecutive ones the circuit *opens*; when the wait is over it
/// is *half-open* and lets exactly one probe through; a good probe closes it,
/// a bad one reopens it for twice as long (1 s, 2 s, 4 s ... up to the cap).
/// A probe that never reports (lost task) does not wedge the circuit: after
/// the current interval another probe is allowed.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    base: Duration,
    cap: Duration,
    failures: u32,
    interval: Duration,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_sent: Instant },
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(5, Duration::from_secs(1), Duration::from_secs(30))
    }
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures; probes first after
    /// `base`, doubling up to `cap`.
    pub fn new(threshold: u32, base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        CircuitBreaker {
            threshold: threshold.max(1),
            base,
            cap: cap.max(base),
            failures: 0,
            interval: base,
            state: State::Closed,
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } => CircuitState::Open { until },
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// True when requests flow normally.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// May a request go now? A refusal says when to ask again.
    pub fn check(&mut self, now: Instant) -> Result<Permit, NotUntil> {
        match self.state {
            State::Closed => Ok(Permit::Normal),
            State::Open { until } if now < until => Err(NotUntil { at: until }),
            State::Open { .. } => {
                self.state = State::HalfOpen { probe_sent: now };
                Ok(Permit::Probe)
            }
            State::HalfOpen { probe_sent } => {
                let retry_at = later(probe_sent, self.interval);
                if now < retry_at {
                    Err(NotUntil { at: retry_at })
                } else {
                    // The probe never reported: send another.
                    self.state = State::HalfOpen { probe_sent: now };
                    Ok(Permit::Probe)
                }
            }
        }
    }

    /// An outage-like failure (see `RetryReason::is_outage_like`).
    pub fn on_failure(&mut self, now: Instant) {
        match self.state {
            State::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.interval = self.base;
                    self.state = State::Open {
                        until: later(now, self.interval),
                    };
                }
            }
            State::HalfOpen { .. } => {
                self.interval = (self.interval * 2).min(self.cap);
                self.state = State::Open {
                    until: later(now, self.interval),
                };
            }
            // Answers of requests sent before the circuit opened.
            State::Open { .. } => {}
        }
    }

    /// Opens the circuit now, as if `threshold` failures had just been seen
    /// (what is known before the first request: the key check failed).
    pub fn trip(&mut self, now: Instant) {
        self.failures = self.threshold;
        self.interval = self.base;
        self.state = State::Open {
            until: later(now, self.interval),
        };
    }

    /// A good answer (or any answer that proves the provider is up, a 4xx
    /// included): closes the circuit.
    pub fn on_success(&mut self, _now: Instant) {
        self.failures = 0;
        self.interval = self.base;
        self.state = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_trip_opens_at_once_and_probes_after_the_base_interval() {
        let t = Instant::now();
        let mut c = CircuitBreaker::default();
        c.trip(t);
        assert_eq!(c.check(t), Err(NotUntil { at: t + secs(1) }));
        assert_eq!(c.check(t + secs(1)), Ok(Permit::Probe));
        c.on_failure(t + secs(1));
        assert_eq!(c.state(), CircuitState::Open { until: t + secs(3) });
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut c = CircuitBreaker::default();
        for _ in 0..4 {
            c.on_failure(t);
        }
        c.on_success(t); // the run is broken
        for _ in 0..4 {
            c.on_failure(t);
            assert_eq!(c.check(t), Ok(Permit::Normal));
        }
        c.on_failure(t);
        assert_eq!(c.state(), CircuitState::Open { until: t + secs(1) });
        assert_eq!(c.check(t), Err(NotUntil { at: t + secs(1) }));
    }

    #[test]
    fn probes_at_growing_intervals_then_closes() {
        let t0 = Instant::now();
        let mut c = CircuitBreaker::new(2, secs(1), secs(5));
        c.on_failure(t0);
        c.on_failure(t0);
        let mut t = t0;
        for expected in [1, 2, 4, 5, 5] {
            assert_eq!(
                c.check(t),
                Err(NotUntil {
                    at: t + secs(expected)
                })
            );
            t += secs(expected);
            assert_eq!(c.check(t), Ok(Permit::Probe));
            assert_eq!(c.state(), CircuitState::HalfOpen);
            // Only one probe at a time.
            assert!(c.check(t).is_err());
            c.on_failure(t);
        }
        t += secs(5);
        assert_eq!(c.check(t), Ok(Permit::Probe));
        c.on_success(t);
        assert!(c.is_closed());
        assert_eq!(c.check(t), Ok(Permit::Normal));
        // The next outage starts from the base interval again.
        c.on_failure(t);
        c.on_failure(t);
        assert_eq!(c.check(t), Err(NotUntil { at: t + secs(1) }));
    }

    #[test]
    fn a_lost_probe_does_not_wedge_the_circuit() {
        let t0 = Instant::now();
        let mut c = CircuitBreaker::new(1, secs(1), secs(30));
        c.on_failure(t0);
        assert_eq!(c.check(t0 + secs(1)), Ok(Permit::Probe));
        assert_eq!(c.check(t0 + secs(1)), Err(NotUntil { at: t0 + secs(2) }));
        assert_eq!(c.check(t0 + secs(2)), Ok(Permit::Probe));
    }

    #[test]
    fn failures_while_open_are_the_same_outage() {
        let t0 = Instant::now();
        let mut c = CircuitBreaker::new(1, secs(1), secs(30));
        c.on_failure(t0);
        for i in 0..50 {
            c.on_failure(t0 + Duration::from_millis(10 * i));
        }
        assert_eq!(
            c.state(),
            CircuitState::Open {
                until: t0 + secs(1)
            }
        );
    }

    #[test]
    fn huge_intervals_never_overflow() {
        let mut c = CircuitBreaker::new(1, Duration::MAX, Duration::MAX);
        let now = Instant::now();
        for _ in 0..5 {
            c.on_failure(now);
            let _ = c.check(now);
        }
        assert!(
            matches!(c.check(now), Err(NotUntil { at }) if at <= now + crate::limit::MAX_AHEAD)
        );
    }
}
