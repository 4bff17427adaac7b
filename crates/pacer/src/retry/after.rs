use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::provider::parse_duration;

/// The wait a provider asked for in its headers.
///
/// `retry-after-ms` (OpenAI's, float milliseconds) is the more precise and is
/// read first; then `retry-after` as seconds (integer or decimal) or as an
/// HTTP date, turned into a wait from `now_wall` (a date already past is zero).
/// A value that cannot be read is skipped with a warning: the backoff then
/// decides, which is better than waiting a misread time.
pub fn retry_after(headers: &HeaderMap, now_wall: SystemTime) -> Option<Duration> {
    if let Some(raw) = headers.get("retry-after-ms") {
        let parsed = raw
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
        match parsed {
            Some(d) => return Some(d),
            None => {
                tracing::warn!(header = "retry-after-ms", value = ?raw, "ignoring an unreadable header")
            }
        }
    }
    let raw = headers.get("retry-after")?;
    let parsed = raw.to_str().ok().map(str::trim).and_then(|v| {
        let secs = v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        secs.or_else(|| {
            let at = httpdate::parse_http_date(v).ok()?;
            Some(at.duration_since(now_wall).unwrap_or(Duration::ZERO))
        })
    });
    if parsed.is_none() {
        tracing::warn!(header = "retry-after", value = ?raw, "ignoring an unreadable header");
    }
    parsed
}

/// The wait suggested in a rate-limit message, as OpenAI writes it:
/// "... Please try again in 6ms.", "try again in 1.5s", "try again in 1m30s".
pub fn retry_hint_from_message(message: &str) -> Option<Duration> {
    const NEEDLE: &str = "try again in ";
    let lower = message.to_ascii_lowercase();
    let start = lower.find(NEEDLE)? + NEEDLE.len();
    let rest = &message[start..];
    let token = rest
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ')')
        .next()?;
    // The sentence's full stop is not part of the number ("in 20s.").
    let token = token.trim_end_matches('.');
    parse_duration(token).or_else(|| {
        // "try again in 20 seconds" style.
        let mut words = rest.split_whitespace();
        let n: f64 = words.next()?.parse().ok()?;
        let unit = words.next()?.trim_end_matches(['.', ',']);
        let secs = match unit {
            "ms" | "millisecond" | "milliseconds" => n / 1000.0,
            "s" | "sec" | "secs" | "second" | "seconds" => n,
            "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    })
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
        for bad in ["soon", "-1", "1e999", "NaN", "Sun, 99 Foo 1994", "5s"] {
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
}
