//! The fault dice: which requests fail, and how.
//!
//! Each request's dice are seeded from `--seed`, the request body and how
//! many times that body was seen before. So a run is repeatable even with
//! many requests in flight at once (arrival order does not matter), and a
//! retry of a failed request rolls fresh dice instead of failing forever.
//!
//! The request-level faults share one roll, split into consecutive bands
//! (hang, then 5xx, then 529, then reset), so each flag's rate is exactly the
//! share of requests that see that fault, as long as the rates sum to at most 1.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::MockConfig;

/// What happens to one admitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered normally.
    Answer,
    /// Never answered.
    Hang,
    /// A 500, 502 or 503.
    ServerError(u16),
    /// A 529 overloaded_error.
    Overloaded,
    /// The connection is closed midway through the answer.
    Reset,
}

/// One request's roll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Roll {
    pub verdict: Verdict,
    /// For streams: cut after this share of the events (without the terminator).
    pub cut_at: Option<f64>,
    /// Where a reset breaks the answer, as a share of its bytes or events.
    pub break_at: f64,
    /// Time before the answer starts.
    pub latency: Duration,
}

/// The configured fault rates.
#[derive(Debug, Clone)]
pub(crate) struct FaultPlan {
    seed: u64,
    hang: f64,
    error: f64,
    overload: f64,
    reset: f64,
    cut: f64,
    latency_ms: u64,
    tail: bool,
}

/// The heavy tail: log-normal with this sigma (p99 ≈ 10× the median), capped.
const TAIL_SIGMA: f64 = 1.0;
const TAIL_CAP: f64 = 50.0;

impl FaultPlan {
    pub fn new(config: &MockConfig) -> Self {
        FaultPlan {
            seed: config.seed.unwrap_or_else(rand::random),
            hang: config.hang_rate,
            error: config.error_rate,
            overload: config.overload_rate,
            reset: config.reset_rate,
            cut: config.stream_cut_rate,
            latency_ms: config.latency,
            tail: config.latency_tail,
        }
    }

    /// The seed in use (`--seed`, or a random one).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn inert(&self) -> bool {
        self.hang + self.error + self.overload + self.reset + self.cut == 0.0
            && !(self.tail && self.latency_ms > 0)
    }

    /// The dice for the `occurrence`-th sending of the body keyed `body`.
    pub fn roll(&self, body: u128, occurrence: u32) -> Roll {
        let base = Duration::from_millis(self.latency_ms);
        if self.inert() {
            return Roll {
                verdict: Verdict::Answer,
                cut_at: None,
                break_at: 0.5,
                latency: base,
            };
        }
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&body.to_le_bytes());
        h.update(&occurrence.to_le_bytes());
        let mut rng = SmallRng::from_seed(*h.finalize().as_bytes());

        let u: f64 = rng.gen();
        let mut edge = 0.0;
        let band = [self.hang, self.error, self.overload, self.reset]
            .iter()
            .position(|w| {
                edge += w;
                u < edge
            });
        let verdict = match band {
            Some(0) => Verdict::Hang,
            Some(1) => Verdict::ServerError([500, 502, 503][rng.gen_range(0..3)]),
            Some(2) => Verdict::Overloaded,
            Some(3) => Verdict::Reset,
            _ => Verdict::Answer,
        };
        let cut_roll: f64 = rng.gen();
        let cut_at = (cut_roll < self.cut).then(|| rng.gen::<f64>());
        let break_at = rng.gen_range(0.1..0.9);
        let latency = if self.tail && self.latency_ms > 0 {
            // Box-Muller: one standard normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            base.mul_f64((TAIL_SIGMA * z).exp().min(TAIL_CAP))
        } else {
            base
        };
        Roll {
            verdict,
            cut_at,
            break_at,
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(f: impl FnOnce(&mut MockConfig)) -> FaultPlan {
        let mut c = MockConfig {
            seed: Some(7),
            ..MockConfig::default()
        };
        f(&mut c);
        FaultPlan::new(&c)
    }

    #[test]
    fn rates_are_shares_and_repeatable() {
        let p = plan(|c| {
            c.hang_rate = 0.1;
            c.error_rate = 0.2;
            c.overload_rate = 0.1;
            c.reset_rate = 0.05;
        });
        let n = 20_000;
        let mut counts = [0usize; 5];
        for i in 0..n {
            let r = p.roll(i as u128, 0);
            assert_eq!(
                r,
                p.roll(i as u128, 0),
                "same seed, body and occurrence: same dice"
            );
            counts[match r.verdict {
                Verdict::Hang => 0,
                Verdict::ServerError(_) => 1,
                Verdict::Overloaded => 2,
                Verdict::Reset => 3,
                Verdict::Answer => 4,
            }] += 1;
        }
        let share = |c: usize| c as f64 / n as f64;
        assert!((share(counts[0]) - 0.1).abs() < 0.015, "{counts:?}");
        assert!((share(counts[1]) - 0.2).abs() < 0.015, "{counts:?}");
        assert!((share(counts[2]) - 0.1).abs() < 0.015, "{counts:?}");
        assert!((share(counts[3]) - 0.05).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn a_retry_rolls_new_dice() {
        let p = plan(|c| c.error_rate = 0.5);
        let differs = (0..100).any(|occ| p.roll(1, occ).verdict != p.roll(1, 0).verdict);
        assert!(differs);
    }

    #[test]
    fn the_tail_is_heavy_around_the_median() {
        let p = plan(|c| {
            c.latency = 100;
            c.latency_tail = true;
        });
        let mut l: Vec<Duration> = (0..10_000).map(|i| p.roll(i, 0).latency).collect();
        l.sort();
        let median = l[5_000].as_millis();
        let p99 = l[9_900].as_millis();
        assert!((80..=120).contains(&median), "median {median}");
        assert!(p99 > 5 * median, "p99 {p99}");
        assert!(l[9_999] <= Duration::from_millis(5_000));
    }
}
