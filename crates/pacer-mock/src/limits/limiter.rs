//! The per-key pair of buckets and the admission decision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use super::Bucket;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl LimitKind {
    /// OpenAI's `error.type` for this limit.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// One bucket's state as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketReading {
    /// The per-minute limit.
    pub limit: u64,
    /// Whole units available now.
    pub remaining: u64,
    /// Units spent and not yet refilled.
    pub used: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

impl BucketReading {
    fn of(b: &Bucket) -> Self {
        BucketReading {
            limit: b.limit(),
            remaining: b.remaining(),
            used: b.used(),
            reset: b.until_full(),
        }
    }
}

/// Both buckets of a key after a decision (`None`: that limit is not configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSnapshot {
    /// The requests bucket.
    pub requests: Option<BucketReading>,
    /// The tokens bucket.
    pub tokens: Option<BucketReading>,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Charged and let through.
    Admitted(LimitSnapshot),
    /// Over a limit now; `wait` is when the request would fit.
    Refused {
        /// The limit that refused (requests first when both do).
        kind: LimitKind,
        /// How long until both buckets could pay.
        wait: Duration,
        /// What the request asked of `kind`'s bucket.
        requested: u64,
        /// The buckets, unchanged.
        snapshot: LimitSnapshot,
    },
    /// Larger than the bucket can ever hold: no wait makes it fit.
    TooLarge {
        /// The bucket it does not fit in.
        kind: LimitKind,
        /// What the request asked for.
        requested: u64,
        /// The buckets, unchanged.
        snapshot: LimitSnapshot,
    },
}

#[derive(Debug)]
struct KeyBuckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// Every key's buckets. Keys are fixed at start, so the map is read-only and
/// each key's buckets sit behind their own short-lived mutex.
#[derive(Debug)]
pub struct RateLimiter {
    keys: HashMap<String, Mutex<KeyBuckets>>,
}

/// How much each bucket holds; every bucket refills at its limit / 60 per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capacity {
    /// A full minute of each limit (OpenAI's documented bucket).
    #[default]
    Minute,
    /// `--burst N`: the requests bucket holds N, the tokens bucket the same
    /// share of its minute.
    Burst(u64),
    /// `--window S`: each bucket holds limit × S/60, i.e. the per-minute limit
    /// enforced over S seconds (Azure's 1 s / 10 s windows, Anthropic's per-second).
    Window(Duration),
}

impl Capacity {
    /// From the flags; the window wins when both are set (the CLI refuses both).
    pub fn of(burst: Option<u64>, window: Option<Duration>) -> Self {
        match (window, burst) {
            (Some(w), _) => Capacity::Window(w),
            (None, Some(b)) => Capacity::Burst(b),
            (None, None) => Capacity::Minute,
        }
    }

    fn requests(self, rpm: u64) -> u64 {
        match self {
            Capacity::Minute => rpm,
            Capacity::Burst(b) => b,
            Capacity::Window(w) => share_of(rpm, w.as_secs_f64() / 60.0),
        }
    }

    fn tokens(self, tpm: u64, rpm: Option<u64>) -> u64 {
        match (self, rpm) {
            (Capacity::Burst(b), Some(rpm)) => share_of(tpm, (b as f64 / rpm as f64).min(1.0)),
            (Capacity::Window(w), _) => share_of(tpm, w.as_secs_f64() / 60.0),
            _ => tpm,
        }
    }
}

/// ⌈limit × share⌉, at least 1; the epsilon keeps 600 × 1/60 at 10, not 11.
fn share_of(limit: u64, share: f64) -> u64 {
    ((limit as f64 * share - 1e-9).ceil() as u64).max(1)
}

impl RateLimiter {
    /// Buckets for each key, each holding what `capacity` says.
    pub fn new(
        keys: &[String],
        rpm: Option<u64>,
        tpm: Option<u64>,
        capacity: Capacity,
        now: Instant,
    ) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let buckets = KeyBuckets {
                    requests: rpm.map(|r| Bucket::new(r, capacity.requests(r), now)),
                    tokens: tpm.map(|t| Bucket::new(t, capacity.tokens(t, rpm), now)),
                };
                (k.clone(), Mutex::new(buckets))
            })
            .collect();
        RateLimiter { keys }
    }

    /// Whether `key` is one of the configured keys.
    pub fn knows(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Charge one request of `tokens` tokens to `key`, or say why not.
    /// An unknown key is never admitted by the server (auth runs first); here it
    /// is treated as unlimited.
    pub fn admit(&self, key: &str, tokens: u64, now: Instant) -> Admission {
        let Some(cell) = self.keys.get(key) else {
            return Admission::Admitted(LimitSnapshot::default());
        };
        let mut b = cell.lock().unwrap_or_else(|e| e.into_inner());
        let KeyBuckets {
            requests,
            tokens: tok,
        } = &mut *b;
        if let Some(r) = requests.as_mut() {
            r.refill(now);
        }
        if let Some(t) = tok.as_mut() {
            t.refill(now);
        }
        let snapshot = |requests: &Option<Bucket>, tok: &Option<Bucket>| LimitSnapshot {
            requests: requests.as_ref().map(BucketReading::of),
            tokens: tok.as_ref().map(BucketReading::of),
        };
        if let Some(t) = tok.as_ref() {
            if tokens > t.capacity() {
                return Admission::TooLarge {
                    kind: LimitKind::Tokens,
                    requested: tokens,
                    snapshot: snapshot(requests, tok),
                };
            }
        }
        let wait_requests = requests.as_ref().map_or(Duration::ZERO, |r| r.wait_for(1));
        let wait_tokens = tok.as_ref().map_or(Duration::ZERO, |t| t.wait_for(tokens));
        if !wait_requests.is_zero() || !wait_tokens.is_zero() {
            let (kind, requested) = if !wait_requests.is_zero() {
                (LimitKind::Requests, 1)
            } else {
                (LimitKind::Tokens, tokens)
            };
            return Admission::Refused {
                kind,
                wait: wait_requests.max(wait_tokens),
                requested,
                snapshot: snapshot(requests, tok),
            };
        }
        if let Some(r) = requests.as_mut() {
            r.take(1);
        }
        if let Some(t) = tok.as_mut() {
            t.take(tokens);
        }
        Admission::Admitted(snapshot(requests, tok))
    }

    /// The key's buckets without charging anything.
    pub fn peek(&self, key: &str, now: Instant) -> LimitSnapshot {
        let Some(cell) = self.keys.get(key) else {
            return LimitSnapshot::default();
        };
        let mut b = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = b.requests.as_mut() {
            r.refill(now);
        }
        if let Some(t) = b.tokens.as_mut() {
            t.refill(now);
        }
        LimitSnapshot {
            requests: b.requests.as_ref().map(BucketReading::of),
            tokens: b.tokens.as_ref().map(BucketReading::of),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn both_buckets_must_pay() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&keys(), Some(10), Some(100), Capacity::Minute, t0);
        assert!(matches!(l.admit("a", 60, t0), Admission::Admitted(_)));
        match l.admit("a", 60, t0) {
            Admission::Refused {
                kind,
                wait,
                requested,
                snapshot,
            } => {
                assert_eq!(kind, LimitKind::Tokens);
                assert_eq!(requested, 60);
                // 20 tokens missing at 100/60 per second = 12 s.
                assert_eq!(wait, Duration::from_secs(12));
                assert_eq!(
                    snapshot.requests.unwrap().remaining,
                    9,
                    "a refusal charges nothing"
                );
                assert_eq!(snapshot.tokens.unwrap().remaining, 40);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(
            matches!(l.admit("b", 60, t0), Admission::Admitted(_)),
            "keys are independent"
        );
    }

    #[test]
    fn requests_limit_refuses_first_and_refills() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&keys(), Some(60), None, Capacity::Burst(2), t0);
        assert!(matches!(l.admit("a", 1, t0), Admission::Admitted(_)));
        assert!(matches!(l.admit("a", 1, t0), Admission::Admitted(_)));
        let Admission::Refused { kind, wait, .. } = l.admit("a", 1, t0) else {
            panic!()
        };
        assert_eq!((kind, wait), (LimitKind::Requests, Duration::from_secs(1)));
        assert!(matches!(
            l.admit("a", 1, t0 + Duration::from_secs(1)),
            Admission::Admitted(_)
        ));
    }

    #[test]
    fn a_request_larger_than_the_bucket_is_too_large() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&keys(), None, Some(100), Capacity::Minute, t0);
        assert!(matches!(
            l.admit("a", 101, t0),
            Admission::TooLarge {
                kind: LimitKind::Tokens,
                requested: 101,
                ..
            }
        ));
    }

    #[test]
    fn burst_scales_the_token_bucket() {
        let t0 = Instant::now();
        let l = RateLimiter::new(&keys(), Some(60), Some(6000), Capacity::Burst(6), t0);
        let s = l.peek("a", t0);
        assert_eq!(s.requests.unwrap().remaining, 6);
        assert_eq!(s.tokens.unwrap().remaining, 600);
        assert_eq!(s.tokens.unwrap().limit, 6000);
    }

    #[test]
    fn a_window_scales_both_buckets_and_keeps_the_per_minute_limit() {
        let t0 = Instant::now();
        let w = Capacity::Window(Duration::from_secs(1));
        let l = RateLimiter::new(&keys(), Some(600), Some(90_000), w, t0);
        let s = l.peek("a", t0);
        let (r, t) = (s.requests.unwrap(), s.tokens.unwrap());
        assert_eq!((r.limit, r.remaining), (600, 10));
        assert_eq!((t.limit, t.remaining), (90_000, 1500));
        // Alone, without --rpm, the tokens bucket still gets the window.
        let l = RateLimiter::new(
            &keys(),
            None,
            Some(6000),
            Capacity::Window(Duration::from_secs(10)),
            t0,
        );
        assert_eq!(l.peek("a", t0).tokens.unwrap().remaining, 1000);
        assert!(matches!(
            l.admit("a", 1001, t0),
            Admission::TooLarge {
                kind: LimitKind::Tokens,
                ..
            }
        ));
    }

    #[test]
    fn capacity_window_wins_over_burst() {
        let w = Duration::from_secs(5);
        assert_eq!(Capacity::of(Some(3), Some(w)), Capacity::Window(w));
        assert_eq!(Capacity::of(Some(3), None), Capacity::Burst(3));
        assert_eq!(Capacity::of(None, None), Capacity::Minute);
    }
}
