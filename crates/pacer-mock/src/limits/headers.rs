//! Rate-limit and retry headers, in each provider's dialect.
//!
//! OpenAI reports each bucket as limit / remaining / time-until-full
//! (`x-ratelimit-reset-requests: 6m0s`); Anthropic reports the same facts with
//! an absolute RFC 3339 reset time. The simulator has one tokens bucket, so
//! Anthropic's `tokens`, `input-tokens` and `output-tokens` families all
//! report it: clients that read any of them learn the real limit.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{openai_duration, LimitSnapshot};
use crate::config::RetryAfterStyle;

fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// OpenAI's six `x-ratelimit-*` headers (only for configured limits).
pub fn openai_headers(s: &LimitSnapshot, headers: &mut HeaderMap) {
    if let Some(r) = s.requests {
        put(headers, "x-ratelimit-limit-requests", r.limit.to_string());
        put(
            headers,
            "x-ratelimit-remaining-requests",
            r.remaining.to_string(),
        );
        put(
            headers,
            "x-ratelimit-reset-requests",
            openai_duration(r.reset),
        );
    }
    if let Some(t) = s.tokens {
        put(headers, "x-ratelimit-limit-tokens", t.limit.to_string());
        put(
            headers,
            "x-ratelimit-remaining-tokens",
            t.remaining.to_string(),
        );
        put(
            headers,
            "x-ratelimit-reset-tokens",
            openai_duration(t.reset),
        );
    }
}

/// An RFC 3339 UTC time `after` from `now`, rounded up to the second.
fn rfc3339_after(now: SystemTime, after: Duration) -> String {
    let at = now + after + Duration::from_millis(999);
    let at: DateTime<Utc> = at.into();
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Anthropic's `anthropic-ratelimit-*` headers (only for configured limits).
pub fn anthropic_headers(s: &LimitSnapshot, now: SystemTime, headers: &mut HeaderMap) {
    if let Some(r) = s.requests {
        anthropic_window(
            headers,
            "requests",
            r.limit,
            r.remaining,
            rfc3339_after(now, r.reset),
        );
    }
    if let Some(t) = s.tokens {
        // One token bucket: the total, input and output families report it.
        let reset = rfc3339_after(now, t.reset);
        for family in ["tokens", "input-tokens", "output-tokens"] {
            anthropic_window(headers, family, t.limit, t.remaining, reset.clone());
        }
    }
}

/// `anthropic-ratelimit-{family}-{limit,remaining,reset}`.
fn anthropic_window(
    headers: &mut HeaderMap,
    family: &str,
    limit: u64,
    remaining: u64,
    reset: String,
) {
    for (field, value) in [
        ("limit", limit.to_string()),
        ("remaining", remaining.to_string()),
        ("reset", reset),
    ] {
        if let Ok(name) =
            HeaderName::from_bytes(format!("anthropic-ratelimit-{family}-{field}").as_bytes())
        {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
}

/// `retry-after` / `retry-after-ms` for a 429 that clears in `wait`.
pub fn retry_after_headers(
    style: RetryAfterStyle,
    wait: Duration,
    now: SystemTime,
    headers: &mut HeaderMap,
) {
    let ms = (wait.as_nanos().div_ceil(1_000_000) as u64).max(1);
    let secs = ms.div_ceil(1000);
    match style {
        RetryAfterStyle::Both => {
            put(headers, "retry-after", secs.to_string());
            put(headers, "retry-after-ms", ms.to_string());
        }
        RetryAfterStyle::Seconds => put(headers, "retry-after", secs.to_string()),
        RetryAfterStyle::Ms => put(headers, "retry-after-ms", ms.to_string()),
        RetryAfterStyle::HttpDate => {
            // HTTP dates have whole seconds: round the instant up so a client
            // that waits until then is never early.
            let at = now + Duration::from_secs(secs) + Duration::from_millis(999);
            put(headers, "retry-after", httpdate::fmt_http_date(at));
        }
        RetryAfterStyle::None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BucketReading;

    fn snapshot() -> LimitSnapshot {
        LimitSnapshot {
            requests: Some(BucketReading {
                limit: 60,
                remaining: 59,
                used: 1,
                reset: Duration::from_secs(1),
            }),
            tokens: None,
        }
    }

    #[test]
    fn unconfigured_limits_have_no_headers() {
        let mut h = HeaderMap::new();
        openai_headers(&snapshot(), &mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert!(!h.contains_key("x-ratelimit-limit-tokens"));
    }

    #[test]
    fn anthropic_reset_is_an_rfc3339_time() {
        let mut h = HeaderMap::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        anthropic_headers(&snapshot(), now, &mut h);
        assert_eq!(
            h["anthropic-ratelimit-requests-reset"],
            "2023-11-14T22:13:21Z"
        );
    }

    #[test]
    fn retry_after_styles() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = Duration::from_millis(1200);
        let mut h = HeaderMap::new();
        retry_after_headers(RetryAfterStyle::Both, wait, now, &mut h);
        assert_eq!(
            (
                h["retry-after"].to_str().unwrap(),
                h["retry-after-ms"].to_str().unwrap()
            ),
            ("2", "1200")
        );
        let mut h = HeaderMap::new();
        retry_after_headers(RetryAfterStyle::HttpDate, wait, now, &mut h);
        assert_eq!(h["retry-after"], "Tue, 14 Nov 2023 22:13:22 GMT");
        let mut h = HeaderMap::new();
        retry_after_headers(RetryAfterStyle::None, wait, now, &mut h);
        assert!(h.is_empty());
    }
}
