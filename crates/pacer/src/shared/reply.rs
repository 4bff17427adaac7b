use std::time::Duration;

/// One shared limit: units a minute and the bucket's size in units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub per_minute: f64,
    pub burst: f64,
}

/// The largest rate or bucket accepted from Redis (as the scripts cap it).
const MAX_LIMIT: f64 = 1e12;
/// The longest wait accepted from Redis: the scripts never say more.
const MAX_WAIT: Duration = Duration::from_secs(86_400);
/// The most workers believed alive (a sorted set someone filled by hand).
const MAX_WORKERS: u32 = 100_000;

impl Share {
    /// A limit from the script's text, if it is a real one.
    fn parse(rate: &str, burst: &str) -> Option<Share> {
        let rate: f64 = rate.trim().parse().ok()?;
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let burst = burst
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|b| b.is_finite())
            .unwrap_or(1.0);
        Some(Share {
            per_minute: rate.min(MAX_LIMIT),
            burst: burst.clamp(1.0, MAX_LIMIT),
        })
    }
}

/// What the admit script said, checked: everything from Redis is bounded
/// before it is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmitReply {
    /// A request and its tokens are reserved `wait` from now; if not
    /// granted, nothing is, and `wait` is how long until it could be.
    pub granted: bool,
    pub wait: Duration,
    /// Workers alive on this scope (this one included).
    pub workers: u32,
    pub requests: Option<Share>,
    pub tokens: Option<Share>,
}

/// The script's reply as Redis returns it.
pub type RawAdmit = (i64, i64, i64, String, String, String, String);

impl AdmitReply {
    pub fn from_raw(raw: &RawAdmit) -> AdmitReply {
        let (granted, wait_us, alive, rpm, rburst, tpm, tburst) = raw;
        let wait = Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0)).min(MAX_WAIT);
        AdmitReply {
            granted: *granted == 1,
            wait,
            workers: workers(*alive),
            requests: Share::parse(rpm, rburst),
            tokens: Share::parse(tpm, tburst),
        }
    }
}

/// A count of workers from Redis, between 1 and [`MAX_WORKERS`].
pub(super) fn workers(alive: i64) -> u32 {
    u32::try_from(alive.clamp(1, i64::from(MAX_WORKERS))).unwrap_or(1)
}

/// A process's share of a limit while Redis is away: the limit divided by
/// the workers last seen alive (at least one), the bucket too (at least one
/// unit). Each process keeping to its share, together they keep to the limit.
pub fn local_share(limit: Share, workers: u32) -> Share {
    let n = f64::from(workers.max(1));
    Share {
        per_minute: limit.per_minute / n,
        burst: (limit.burst / n).max(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(granted: i64, wait: i64, alive: i64, r: &str, rb: &str) -> RawAdmit {
        (
            granted,
            wait,
            alive,
            r.into(),
            rb.into(),
            "0".into(),
            "1".into(),
        )
    }

    #[test]
    fn a_reply_is_read_and_bounded() {
        let r = AdmitReply::from_raw(&raw(1, 250_000, 3, "600", "10"));
        assert!(r.granted);
        assert_eq!(r.wait, Duration::from_millis(250));
        assert_eq!(r.workers, 3);
        assert_eq!(
            r.requests,
            Some(Share {
                per_minute: 600.0,
                burst: 10.0
            })
        );
        assert_eq!(r.tokens, None);
        // Hostile numbers: negative waits, absurd counts, garbage text.
        let r = AdmitReply::from_raw(&raw(7, -5, -1, "nan", "x"));
        assert!(!r.granted);
        assert_eq!((r.wait, r.workers, r.requests), (Duration::ZERO, 1, None));
        let r = AdmitReply::from_raw(&raw(0, i64::MAX, i64::MAX, "1e300", "-4"));
        assert_eq!(r.wait, MAX_WAIT);
        assert_eq!(r.workers, MAX_WORKERS);
        let s = r.requests.unwrap();
        assert_eq!((s.per_minute, s.burst), (MAX_LIMIT, 1.0));
        assert_eq!(
            AdmitReply::from_raw(&raw(0, 0, 0, "inf", "1")).requests,
            None
        );
    }

    #[test]
    fn the_local_share_divides_the_limit_by_the_workers_alive() {
        let limit = Share {
            per_minute: 600.0,
            burst: 10.0,
        };
        assert_eq!(local_share(limit, 1), limit);
        let s = local_share(limit, 4);
        assert_eq!((s.per_minute, s.burst), (150.0, 2.5));
        // Never a bucket below one unit; no worker seen counts as one.
        assert_eq!(local_share(limit, 40).burst, 1.0);
        assert_eq!(local_share(limit, 0), limit);
        // Together, the shares never pass the limit.
        for n in 1..=16 {
            let s = local_share(limit, n);
            assert!(s.per_minute * f64::from(n) <= limit.per_minute + 1e-9);
        }
    }
}
