use std::time::{Duration, SystemTime};

use super::{classify, RetryReason, StopReason, Verdict};
use crate::provider::{parse_rate_limit_headers, RateLimitSnapshot};
use crate::transport::{Answer, TransportError};

/// What one attempt came to, decided once.
///
/// Every consumer reads this one value: the pacer (headers, 429s, outages,
/// the tokens really charged), the retry decision (the verdict) and the
/// writer (the answer it keeps). Before it existed each of them re-derived
/// its own view from status codes and headers, in six places.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The answer's rate-limit headers, parsed once; empty without an answer.
    pub limits: RateLimitSnapshot,
    /// From sending to the answer (or to the failure).
    pub latency: Duration,
    /// What the provider charged against tokens per minute, where known:
    /// nothing for a request it refused at admission (429, a stop), the
    /// real count for a success (set by the caller from `usage`), `None`
    /// where it cannot be known (the reservation then stands).
    pub charged_tokens: Option<u64>,
}

impl Outcome {
    /// The outcome of an HTTP answer.
    pub fn of_answer(answer: &Answer, latency: Duration, now_wall: SystemTime) -> Outcome {
        let limits = parse_rate_limit_headers(&answer.headers, now_wall);
        let verdict = classify(
            answer.status,
            &answer.headers,
            &limits,
            &answer.body,
            now_wall,
        );
        let charged_tokens = match &verdict {
            Verdict::Retry(RetryReason::RateLimited { .. }) | Verdict::Stop(_) => Some(0),
            _ => None,
        };
        Outcome {
            verdict,
            limits,
            latency,
            charged_tokens,
        }
    }

    /// The outcome of an attempt that got no (complete) answer.
    pub fn of_error(error: &TransportError, latency: Duration) -> Outcome {
        Outcome {
            verdict: verdict_of_error(error),
            limits: RateLimitSnapshot::default(),
            latency,
            charged_tokens: None,
        }
    }
}

/// What a failure without an answer means. Most are worth another attempt
/// (the network, not the request, failed). A redirect would meet every
/// request alike, so it stops the run; an answer over the size limit would
/// be as large again.
pub fn verdict_of_error(error: &TransportError) -> Verdict {
    Verdict::Retry(match error {
        TransportError::Redirect { status, location } => {
            return Verdict::Stop(StopReason::Redirected {
                status: *status,
                location: location.clone(),
            })
        }
        TransportError::TooLarge { .. } => return Verdict::Fail,
        TransportError::Timeout(_) | TransportError::IdleTimeout(_) => RetryReason::Timeout,
        TransportError::StreamCut | TransportError::StreamError(_) => RetryReason::StreamCut,
        _ => RetryReason::Connection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn answer(status: u16, headers: &[(&'static str, &str)], body: &str) -> Answer {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Answer {
            status,
            headers: h,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn a_429_charged_nothing_and_its_headers_are_parsed_once() {
        let a = answer(
            429,
            &[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("retry-after-ms", "350"),
            ],
            "",
        );
        let o = Outcome::of_answer(&a, Duration::from_millis(5), SystemTime::now());
        assert_eq!(o.limits.requests.limit, Some(60));
        assert_eq!(o.charged_tokens, Some(0));
        match o.verdict {
            Verdict::Retry(RetryReason::RateLimited { scope, .. }) => {
                // No word in the body: the snapshot says requests ran out.
                assert_eq!(scope, super::super::LimitScope::Requests)
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn failures_without_an_answer_are_retried_by_kind() {
        let t = Outcome::of_error(
            &TransportError::Timeout(Duration::from_secs(1)),
            Duration::ZERO,
        );
        assert_eq!(t.verdict, Verdict::Retry(RetryReason::Timeout));
        assert!(t.limits.is_empty());
        assert_eq!(
            verdict_of_error(&TransportError::StreamCut),
            Verdict::Retry(RetryReason::StreamCut)
        );
        assert_eq!(
            verdict_of_error(&TransportError::Connect("refused".into())),
            Verdict::Retry(RetryReason::Connection)
        );
        let redirect = TransportError::Redirect {
            status: 307,
            location: "http://elsewhere/v1".into(),
        };
        assert!(matches!(
            verdict_of_error(&redirect),
            Verdict::Stop(StopReason::Redirected { status: 307, .. })
        ));
        let big = TransportError::TooLarge { limit: 10 };
        assert_eq!(verdict_of_error(&big), Verdict::Fail);
    }

    #[test]
    fn a_success_leaves_the_charge_to_the_usage() {
        let a = answer(200, &[], r#"{"usage":{"prompt_tokens":3}}"#);
        let o = Outcome::of_answer(&a, Duration::ZERO, SystemTime::now());
        assert_eq!(o.verdict, Verdict::Success);
        assert_eq!(o.charged_tokens, None);
    }
}
