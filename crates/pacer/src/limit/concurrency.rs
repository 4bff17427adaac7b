use std::time::Duration;

/// The most requests in flight pacer ever sizes itself to without a cap.
pub const MAX_CONCURRENCY: usize = 10_000;

/// How many requests must be in flight to sustain `rate_per_sec` when each
/// takes `latency`: Little's law (L = λ·W), with 50% headroom for latency
/// spread, at least one, at most `cap` (or [`MAX_CONCURRENCY`]).
///
/// Too few in flight and a paced run cannot reach its rate (a 2 s model at
/// 10 requests a second needs 20 open requests); too many and a stall piles
/// up requests that all hit the provider at once when it recovers.
pub fn little_concurrency(rate_per_sec: f64, latency: Duration, cap: Option<usize>) -> usize {
    let cap = cap.unwrap_or(MAX_CONCURRENCY).clamp(1, MAX_CONCURRENCY);
    let needed = rate_per_sec * latency.as_secs_f64() * 1.5;
    if needed.is_nan() || needed <= 1.0 {
        return 1;
    }
    if needed >= cap as f64 {
        return cap;
    }
    (needed.ceil() as usize).clamp(1, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rate_times_latency_with_headroom() {
        assert_eq!(little_concurrency(10.0, ms(2000), None), 30);
        assert_eq!(little_concurrency(10.0, ms(1000), None), 15);
        assert_eq!(little_concurrency(3.0, ms(500), None), 3); // 2.25 → 3
        assert_eq!(little_concurrency(1000.0, ms(20), None), 30);
    }

    #[test]
    fn at_least_one_at_most_the_cap() {
        assert_eq!(little_concurrency(0.1, ms(100), None), 1);
        assert_eq!(little_concurrency(0.0, ms(0), None), 1);
        assert_eq!(little_concurrency(f64::NAN, ms(100), None), 1);
        assert_eq!(little_concurrency(-5.0, ms(100), None), 1);
        assert_eq!(little_concurrency(100.0, ms(2000), Some(50)), 50);
        assert_eq!(little_concurrency(100.0, ms(2000), Some(0)), 1);
        assert_eq!(
            little_concurrency(f64::INFINITY, ms(2000), None),
            MAX_CONCURRENCY
        );
        assert_eq!(
            little_concurrency(1e9, ms(2000), Some(usize::MAX)),
            MAX_CONCURRENCY
        );
    }
}
