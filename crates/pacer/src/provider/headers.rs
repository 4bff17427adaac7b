use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::bounded::{self, MAX_SERVER_WAIT};

/// One limit's window as a provider reports it on an answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateWindow {
    /// The ceiling (requests or tokens per window).
    pub limit: Option<u64>,
    /// What is left in the current window.
    pub remaining: Option<u64>,
    /// How long until the window is fully replenished (zero when it already is).
    pub reset: Option<Duration>,
}

impl RateWindow {
    /// True when the answer said nothing about this window.
    pub fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }
}

/// Everything an answer's headers say about the account's limits.
///
/// OpenAI reports `requests` and `tokens`; Anthropic also splits tokens into
/// `input_tokens` and `output_tokens` (its `tokens` is the most restrictive of
/// the two).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSnapshot {
    pub requests: RateWindow,
    pub tokens: RateWindow,
    pub input_tokens: RateWindow,
    pub output_tokens: RateWindow,
}

impl RateLimitSnapshot {
    /// True when the answer carried no rate-limit header at all.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.tokens.is_empty()
            && self.input_tokens.is_empty()
            && self.output_tokens.is_empty()
    }
}

/// Reads OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` and
/// Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
///
/// Resets are durations for OpenAI (`6m0s`) and RFC 3339 times for Anthropic;
/// both forms are accepted under either name, and a time is turned into a
/// wait from `now_wall` (a past time is zero). Where both families are present
/// (a gateway in front of Anthropic), the OpenAI names win. A garbage value is
/// skipped with a warning naming the header (once per name): one odd header
/// must not cost the rest of the snapshot. Counts are capped at
/// [`MAX_COUNT`](super::MAX_COUNT), resets at [`MAX_SERVER_WAIT`].
pub fn parse_rate_limit_headers(headers: &HeaderMap, now_wall: SystemTime) -> RateLimitSnapshot {
    // The names are spelled out, not formatted per answer: this runs on
    // every answer of a run.
    let window = |names: &WindowNames| RateWindow {
        limit: first(headers, names.limit, parse_count),
        remaining: first(headers, names.remaining, parse_count),
        reset: first(headers, names.reset, |v| parse_reset(v, now_wall)),
    };
    RateLimitSnapshot {
        requests: window(&REQUESTS),
        tokens: window(&TOKENS),
        input_tokens: window(&INPUT_TOKENS),
        output_tokens: window(&OUTPUT_TOKENS),
    }
}

/// The headers of one window, OpenAI's (`x-ratelimit-{field}-{kind}`) before
/// Anthropic's (`anthropic-ratelimit-{kind}-{field}`).
struct WindowNames {
    limit: &'static [&'static str],
    remaining: &'static [&'static str],
    reset: &'static [&'static str],
}

const REQUESTS: WindowNames = WindowNames {
    limit: &[
        "x-ratelimit-limit-requests",
        "anthropic-ratelimit-requests-limit",
    ],
    remaining: &[
        "x-ratelimit-remaining-requests",
        "anthropic-ratelimit-requests-remaining",
    ],
    reset: &[
        "x-ratelimit-reset-requests",
        "anthropic-ratelimit-requests-reset",
    ],
};
const TOKENS: WindowNames = WindowNames {
    limit: &[
        "x-ratelimit-limit-tokens",
        "anthropic-ratelimit-tokens-limit",
    ],
    remaining: &[
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-tokens-remaining",
    ],
    reset: &[
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-tokens-reset",
    ],
};
const INPUT_TOKENS: WindowNames = WindowNames {
    limit: &["anthropic-ratelimit-input-tokens-limit"],
    remaining: &["anthropic-ratelimit-input-tokens-remaining"],
    reset: &["anthropic-ratelimit-input-tokens-reset"],
};
const OUTPUT_TOKENS: WindowNames = WindowNames {
    limit: &["anthropic-ratelimit-output-tokens-limit"],
    remaining: &["anthropic-ratelimit-output-tokens-remaining"],
    reset: &["anthropic-ratelimit-output-tokens-reset"],
};

/// The first of `names` present with a value `parse` accepts.
fn first<T>(headers: &HeaderMap, names: &[&str], parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    names.iter().find_map(|name| {
        let raw = headers.get(*name)?;
        let parsed = raw.to_str().ok().and_then(|v| parse(v.trim()));
        if parsed.is_none() {
            bounded::warn_ignored(
                name,
                raw.as_bytes(),
                "ignoring an unreadable rate-limit header",
            );
        }
        parsed
    })
}

/// A count; some servers write `59.0`, which is still 59.
fn parse_count(v: &str) -> Option<u64> {
    bounded::count(v)
}

/// A reset: a duration (`6m0s`, `0.5`) or an RFC 3339 time. A bare number
/// that can only be a Unix time (after 2001) is read as one, as a few
/// OpenAI-compatible servers send. Never more than [`MAX_SERVER_WAIT`].
fn parse_reset(v: &str, now_wall: SystemTime) -> Option<Duration> {
    const UNIX_TIME_FLOOR: f64 = 1e9;
    if let Some(d) = bounded::server_seconds(v) {
        if d.as_secs_f64() < UNIX_TIME_FLOOR {
            return Some(d.min(MAX_SERVER_WAIT));
        }
        // `1e19` is past what a SystemTime holds: as far as can be.
        return Some(
            bounded::unix_time(d).map_or(MAX_SERVER_WAIT, |at| bounded::wait_until(at, now_wall)),
        );
    }
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(v).ok()?.with_timezone(&Utc);
    Some(bounded::wait_until(at.into(), now_wall))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn openai_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", "2000000"),
            ("x-ratelimit-remaining-tokens", "1999000"),
            ("x-ratelimit-reset-tokens", "1m30.5s"),
        ]);
        let s = parse_rate_limit_headers(&h, SystemTime::now());
        assert_eq!(
            s.requests,
            RateWindow {
                limit: Some(10_000),
                remaining: Some(9_999),
                reset: Some(Duration::from_millis(6)),
            }
        );
        assert_eq!(s.tokens.limit, Some(2_000_000));
        assert_eq!(s.tokens.remaining, Some(1_999_000));
        assert_eq!(s.tokens.reset, Some(Duration::from_millis(90_500)));
        assert!(s.input_tokens.is_empty() && s.output_tokens.is_empty());
        assert!(!s.is_empty());
    }

    #[test]
    fn anthropic_headers_with_rfc3339_resets() {
        // 2024-01-01T00:00:00Z is 1704067200.
        let now = at(1_704_067_200);
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            (
                "anthropic-ratelimit-requests-reset",
                "2024-01-01T00:00:01.5Z",
            ),
            ("anthropic-ratelimit-tokens-limit", "40000"),
            ("anthropic-ratelimit-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2024-01-01T01:00:30+01:00",
            ),
            ("anthropic-ratelimit-input-tokens-limit", "30000"),
            ("anthropic-ratelimit-input-tokens-remaining", "29500"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2023-12-31T23:59:00Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "7500"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2024-01-01T00:00:06Z",
            ),
        ]);
        let s = parse_rate_limit_headers(&h, now);
        assert_eq!(s.requests.limit, Some(50));
        assert_eq!(s.requests.remaining, Some(49));
        assert_eq!(s.requests.reset, Some(Duration::from_millis(1500)));
        assert_eq!(s.tokens.limit, Some(40_000));
        assert_eq!(
            s.tokens.reset,
            Some(Duration::from_secs(30)),
            "offset applied"
        );
        assert_eq!(s.input_tokens.remaining, Some(29_500));
        assert_eq!(
            s.input_tokens.reset,
            Some(Duration::ZERO),
            "a past reset is zero"
        );
        assert_eq!(s.output_tokens.limit, Some(8_000));
        assert_eq!(s.output_tokens.reset, Some(Duration::from_secs(6)));
    }

    #[test]
    fn odd_but_readable_values() {
        let now = at(1_800_000_000);
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60.0"),
            ("x-ratelimit-remaining-requests", " 0 "),
            ("x-ratelimit-reset-requests", "0s"),
            ("x-ratelimit-reset-tokens", "1800000012"), // a Unix time
            ("x-ratelimit-limit-tokens", "1000"),
        ]);
        let s = parse_rate_limit_headers(&h, now);
        assert_eq!(s.requests.limit, Some(60));
        assert_eq!(s.requests.remaining, Some(0));
        assert_eq!(s.requests.reset, Some(Duration::ZERO));
        assert_eq!(s.tokens.reset, Some(Duration::from_secs(12)));
        assert_eq!(s.tokens.remaining, None);
    }

    #[test]
    fn garbage_is_ignored_and_the_rest_kept() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "lots"),
            ("x-ratelimit-remaining-requests", "-3"),
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-limit-tokens", "1000"),
            ("anthropic-ratelimit-tokens-reset", "2024-13-45T99:00:00Z"),
        ]);
        let s = parse_rate_limit_headers(&h, SystemTime::now());
        assert!(s.requests.is_empty());
        assert_eq!(s.tokens.limit, Some(1000));
        assert_eq!(s.tokens.reset, None);
    }

    #[test]
    fn no_headers_is_empty() {
        let h = headers(&[("content-type", "application/json")]);
        assert!(parse_rate_limit_headers(&h, SystemTime::now()).is_empty());
        assert!(RateLimitSnapshot::default().is_empty());
    }

    #[test]
    fn openai_names_win_over_anthropic_ones() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "100"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "7"),
        ]);
        let s = parse_rate_limit_headers(&h, SystemTime::now());
        assert_eq!(s.requests.limit, Some(100));
        assert_eq!(
            s.requests.remaining,
            Some(7),
            "filled from the other family"
        );
    }

    #[test]
    fn absurd_values_are_capped_not_panics() {
        let now = at(1_800_000_000);
        let h = headers(&[
            ("x-ratelimit-limit-requests", "99999999999999999999999"),
            ("x-ratelimit-remaining-requests", "18446744073709551615"),
            ("x-ratelimit-reset-requests", "1e19"),
            ("x-ratelimit-reset-tokens", "999999999999h"),
            ("x-ratelimit-limit-tokens", "-1"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "9999-12-31T23:59:59Z",
            ),
            ("anthropic-ratelimit-output-tokens-reset", "NaN"),
        ]);
        let s = parse_rate_limit_headers(&h, now);
        assert_eq!(s.requests.limit, Some(crate::provider::MAX_COUNT));
        assert_eq!(s.requests.remaining, Some(crate::provider::MAX_COUNT));
        assert_eq!(s.requests.reset, Some(MAX_SERVER_WAIT));
        assert_eq!(s.tokens.reset, Some(MAX_SERVER_WAIT));
        assert_eq!(s.tokens.limit, None);
        assert_eq!(s.input_tokens.reset, Some(MAX_SERVER_WAIT));
        assert_eq!(s.output_tokens.reset, None);
    }

    const NAMES: [&str; 18] = [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ];

    /// Values a hostile or broken server might send, and plain noise.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i128>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| format!("{n}s")),
            "[0-9]{1,30}(\\.[0-9]{0,5})?(e[0-9]{1,3})?(h|m|s|ms|us|ns)?",
            "([0-9]{1,12}(h|m|s|ms)){1,4}",
            "[0-9]{4,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_header_values_parse_within_caps(
            pairs in proptest::collection::vec((0..NAMES.len(), value()), 0..12),
            wall in 0u64..=i64::MAX as u64,
        ) {
            let mut h = HeaderMap::new();
            for (i, v) in &pairs {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(NAMES[*i], v);
                }
            }
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(wall)).unwrap_or(SystemTime::UNIX_EPOCH);
            let s = parse_rate_limit_headers(&h, now);
            for w in [&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens] {
                proptest::prop_assert!(!matches!(w.limit, Some(n) if n > crate::provider::MAX_COUNT));
                proptest::prop_assert!(!matches!(w.remaining, Some(n) if n > crate::provider::MAX_COUNT));
                proptest::prop_assert!(!matches!(w.reset, Some(d) if d > MAX_SERVER_WAIT));
            }
        }
    }
}
