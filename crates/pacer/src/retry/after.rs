use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::provider::bounded::{self, ServerWait, WaitSource};

/// The wait a provider asked for in its headers, and which header asked.
///
/// `retry-after-ms` (OpenAI's, float milliseconds) is the more precise and is
/// read first; then `retry-after` as seconds (integer or decimal) or as an
/// HTTP date, turned into a wait from `now_wall` (a date already past is zero).
/// A value that cannot be read is skipped with a warning: the backoff then
/// decides, which is better than waiting a misread time. A huge value is kept
/// as asked (saturating), for the caller to refuse; [`ServerWait::wait`] is
/// capped.
pub fn retry_after(headers: &HeaderMap, now_wall: SystemTime) -> Option<ServerWait> {
    if let Some(raw) = headers.get("retry-after-ms") {
        let parsed = raw.to_str().ok().and_then(|v| {
            let ms = v.trim().parse::<f64>().ok()?;
            let asked = bounded::saturating_secs(ms / 1000.0)?;
            Some(ServerWait::new(asked, WaitSource::RetryAfterMs, v))
        });
        match parsed {
            Some(w) => return Some(w),
            None => bounded::warn_ignored(
                "retry-after-ms",
                raw.as_bytes(),
                "ignoring an unreadable header",
            ),
        }
    }
    let raw = headers.get("retry-after")?;
    let parsed = raw.to_str().ok().and_then(|v| {
        let v = v.trim();
        let asked = v
            .parse::<f64>()
            .ok()
            .and_then(bounded::saturating_secs)
            .or_else(|| {
                let at = httpdate::parse_http_date(v).ok()?;
                Some(at.duration_since(now_wall).unwrap_or(Duration::ZERO))
            })?;
        Some(ServerWait::new(asked, WaitSource::RetryAfter, v))
    });
    if parsed.is_none() {
        bounded::warn_ignored(
            "retry-after",
            raw.as_bytes(),
            "ignoring an unreadable header",
        );
    }
    parsed
}

/// The wait suggested in a rate-limit message, as OpenAI writes it:
/// "... Please try again in 6ms.", "try again in 1.5s", "try again in 1m30s".
/// Saturating like [`retry_after`].
pub fn retry_hint_from_message(message: &str) -> Option<ServerWait> {
    const NEEDLE: &str = "try again in ";
    let lower = message.to_ascii_lowercase();
    // ASCII lowercasing keeps byte offsets, so `start` is valid in `message`.
    let start = lower.find(NEEDLE)? + NEEDLE.len();
    let rest = &message[start..];
    let token = rest
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ')')
        .next()?;
    // The sentence's full stop is not part of the number ("in 20s.").
    let token = token.trim_end_matches('.');
    if let Some(asked) = bounded::server_seconds(token) {
        return Some(ServerWait::new(asked, WaitSource::Message, token));
    }
    // "try again in 20 seconds" style.
    let mut words = rest.split_whitespace();
    let n_raw = words.next()?;
    let unit = words.next()?.trim_end_matches(['.', ',']);
    let n: f64 = n_raw.parse().ok()?;
    let secs = match unit {
        "ms" | "millisecond" | "milliseconds" => n / 1000.0,
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        _ => return None,
    };
    // `n * 60` may overflow to infinity from a finite n: that is huge, not garbage.
    let secs = if n.is_finite() && secs == f64::INFINITY {
        f64::MAX
    } else {
        secs
    };
    let asked = bounded::saturating_secs(secs)?;
    Some(ServerWait::new(
        asked,
        WaitSource::Message,
        &format!("{n_raw} {unit}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn retry_after(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
        super::retry_after(h, now).map(|w| w.wait())
    }

    fn retry_hint_from_message(m: &str) -> Option<Duration> {
        super::retry_hint_from_message(m).map(|w| w.wait())
    }

    #[test]
    fn seconds_integer_and_decimal() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(&headers(&[("retry-after", "20")]), now),
            ms(20_000)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "0")]), now), ms(0));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")]), now),
            ms(1_500)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", " 3 ")]), now),
            ms(3_000)
        );
    }

    #[test]
    fn milliseconds_first() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "250.5")]), now),
            Some(Duration::from_micros(250_500))
        );
        let both = headers(&[("retry-after-ms", "120"), ("retry-after", "1")]);
        assert_eq!(retry_after(&both, now), ms(120));
        // Garbage in the ms header falls back to the seconds one.
        let bad_ms = headers(&[("retry-after-ms", "soon"), ("retry-after", "2")]);
        assert_eq!(retry_after(&bad_ms, now), ms(2_000));
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "-5")]), now),
            None
        );
    }

    #[test]
    fn http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(retry_after(&h, at(784_111_777 - 30)), ms(30_000));
        // A date in the past means now.
        assert_eq!(retry_after(&h, at(784_111_777 + 30)), ms(0));
    }

    #[test]
    fn garbage_and_absence() {
        let now = SystemTime::now();
        for bad in [
            "soon",
            "-1",
            "1e999",
            "NaN",
            "inf",
            "Sun, 99 Foo 1994",
            "5s",
        ] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", bad)]), now),
                None,
                "{bad}"
            );
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn hints_in_messages() {
        let m = "Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): \
                 Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://...";
        assert_eq!(retry_hint_from_message(m), ms(20_000));
        assert_eq!(retry_hint_from_message("Please try again in 6ms."), ms(6));
        assert_eq!(retry_hint_from_message("try again in 1.5s"), ms(1_500));
        assert_eq!(retry_hint_from_message("Try again in 1m30s."), ms(90_000));
        assert_eq!(
            retry_hint_from_message("please try again in 2 seconds."),
            ms(2_000)
        );
        assert_eq!(
            retry_hint_from_message("try again in 1.234s, thanks"),
            ms(1_234)
        );
        assert_eq!(retry_hint_from_message("try again later"), None);
        assert_eq!(retry_hint_from_message("Rate limit reached."), None);
        assert_eq!(retry_hint_from_message(""), None);
    }

    #[test]
    fn absurd_waits_are_kept_as_asked_and_capped_to_act_on() {
        use crate::provider::MAX_SERVER_WAIT;
        let now = SystemTime::now();
        let w = super::retry_after(&headers(&[("retry-after", "999999999")]), now).unwrap();
        assert_eq!(w.asked, Duration::from_secs(999_999_999));
        assert_eq!(w.wait(), MAX_SERVER_WAIT);
        assert_eq!(w.to_string(), "retry-after: 999999999");
        let w = super::retry_after(&headers(&[("retry-after", "1e19")]), now).unwrap();
        assert_eq!(w.asked, Duration::from_secs(10u64.pow(19)));
        let w = super::retry_after(&headers(&[("retry-after", "1e300")]), now).unwrap();
        assert_eq!(w.asked, Duration::MAX);
        let h = headers(&[("retry-after-ms", "99999999999999999999")]);
        let w = super::retry_after(&h, now).unwrap();
        assert_eq!(
            (w.source, w.wait()),
            (WaitSource::RetryAfterMs, MAX_SERVER_WAIT)
        );
        let w = super::retry_hint_from_message("Please try again in 999999999999s.").unwrap();
        assert_eq!(w.asked, Duration::from_secs(999_999_999_999));
        assert_eq!(w.source, WaitSource::Message);
        let w = super::retry_hint_from_message("try again in 1e308 minutes").unwrap();
        assert_eq!(w.asked, Duration::MAX);
        assert_eq!(
            retry_hint_from_message("try again in 1h2m3.5s"),
            ms(3_723_500)
        );
        assert_eq!(retry_hint_from_message("try again in -5 seconds"), None);
        assert_eq!(retry_hint_from_message("try again in NaN seconds"), None);
    }

    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i128>().prop_map(|n| n.to_string()),
            "-?[0-9]{1,40}(\\.[0-9]{0,5})?(e-?[0-9]{1,3})?",
            "(Mon|Sun), [0-9]{2} (Jan|Nov) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn any_retry_after_is_within_the_cap(ms in value(), secs in value(), wall in 0u64..=i64::MAX as u64) {
            use crate::provider::MAX_SERVER_WAIT;
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&ms) {
                h.insert("retry-after-ms", v);
            }
            if let Ok(v) = HeaderValue::from_str(&secs) {
                h.insert("retry-after", v);
            }
            let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(wall)).unwrap_or(SystemTime::UNIX_EPOCH);
            if let Some(w) = super::retry_after(&h, now) {
                proptest::prop_assert!(w.wait() <= MAX_SERVER_WAIT);
                proptest::prop_assert!(w.wait() <= w.asked);
                let _ = w.to_string();
            }
        }

        #[test]
        fn any_message_hint_is_within_the_cap(
            before in proptest::prelude::any::<String>(),
            hint in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "[0-9]{1,20}(\\.[0-9]{1,4})?(e[0-9]{1,3})?(h|m|s|ms|us|µs|ns){0,3}[.,;)]?",
                "-?[0-9.e]{1,12} (ms|s|seconds|minutes|min)",
            ],
        ) {
            let message = format!("{before} Please TRY AGAIN IN {hint} after");
            for m in [message.as_str(), hint.as_str()] {
                if let Some(w) = super::retry_hint_from_message(m) {
                    proptest::prop_assert!(w.wait() <= crate::provider::MAX_SERVER_WAIT);
                    let _ = w.to_string();
                }
            }
        }
    }
}
