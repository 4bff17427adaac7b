use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{retry_after, retry_hint_from_message};
use crate::provider::{RateLimitSnapshot, ServerWait};

/// What to do with an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep it: the request is done.
    Success,
    /// Try the same request again later.
    Retry(RetryReason),
    /// The request can never succeed as sent: keep the answer as its result.
    Fail,
    /// Nothing will succeed until a person acts: stop admitting, save, exit 2.
    Stop(StopReason),
}

/// Which limit a 429 was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Requests,
    Tokens,
    Unknown,
}

/// Why a request is worth another attempt, and how long the provider asked
/// to wait (with the header that asked, so an absurd wait can be named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// 429: a rate limit.
    RateLimited {
        scope: LimitScope,
        after: Option<ServerWait>,
    },
    /// 5xx, or 408/409 (or any status the provider marked `x-should-retry: true`).
    Server {
        status: u16,
        after: Option<ServerWait>,
    },
    /// 529: the provider is overloaded (Anthropic).
    Overloaded { after: Option<ServerWait> },
    /// No answer within the timeout.
    Timeout,
    /// The connection failed or was reset before an answer.
    Connection,
    /// A streamed answer stopped before its end.
    StreamCut,
}

impl RetryReason {
    /// The wait the provider asked for, if it did, capped at
    /// [`MAX_SERVER_WAIT`](crate::provider::MAX_SERVER_WAIT).
    pub fn after(&self) -> Option<Duration> {
        self.server_wait().map(|w| w.wait())
    }

    /// The wait as the provider asked for it, and where.
    pub fn server_wait(&self) -> Option<ServerWait> {
        match *self {
            RetryReason::RateLimited { after, .. }
            | RetryReason::Server { after, .. }
            | RetryReason::Overloaded { after } => after,
            RetryReason::Timeout | RetryReason::Connection | RetryReason::StreamCut => None,
        }
    }

    /// True for the failures that say the provider is down or overloaded
    /// (5xx, 529, connection errors, timeouts): what opens the circuit. A 429
    /// is the provider working as intended, and a cut stream a single
    /// request's bad luck.
    pub fn is_outage_like(&self) -> bool {
        match *self {
            RetryReason::Server { status, .. } => status >= 500,
            RetryReason::Overloaded { .. } | RetryReason::Timeout | RetryReason::Connection => true,
            RetryReason::RateLimited { .. } | RetryReason::StreamCut => false,
        }
    }
}

/// Why the whole run stops. Its `Display` is the one sentence the user reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    #[error(
        "the API key was rejected ({status}): check {}; \
         finished results are saved and rerunning the same command resumes",
        key_source.as_deref().unwrap_or("the key (its environment variable, or the one --api-key-env names)")
    )]
    Unauthorized {
        status: u16,
        /// Where the key came from (`$ANTHROPIC_API_KEY`), filled in by the
        /// engine, which knows; never the key.
        key_source: Option<String>,
    },
    #[error(
        "the API key is not allowed to do this (403): check the key's project, model access or region; \
         finished results are saved and rerunning the same command resumes"
    )]
    Forbidden,
    #[error(
        "the account has run out of quota (429 insufficient_quota): add credit or raise the limit, then \
         rerun the same command to resume; finished results are saved"
    )]
    InsufficientQuota,
    #[error(
        "the budget of ${cap_usd:.2} was reached: raise the budget and rerun the same command to resume; \
         finished results are saved"
    )]
    BudgetReached { cap_usd: f64 },
    #[error("the run was interrupted: finished results are saved and rerunning the same command resumes")]
    Interrupted,
    #[error(
        "the provider answered {status} redirecting to {location}; pacer follows no redirects: set --base-url \
         to the final address, then rerun the same command to resume; finished results are saved"
    )]
    Redirected { status: u16, location: String },
    #[error("could not connect to {url}: {cause}; check --base-url, then rerun the same command")]
    Unreachable { url: String, cause: String },
    #[error(
        "the provider at {url} has been unreachable for {} ({cause}): check the network or --base-url, \
         then rerun the same command to resume; unsent requests stay pending and finished results are saved",
        crate::transport::short_duration(*.waited)
    )]
    UnreachableFor {
        url: String,
        cause: String,
        waited: Duration,
    },
    /// A 429 or 5xx asked every client to wait longer than `--max-retry-time`.
    #[error(
        "the provider asked to wait {} ({asked}), longer than --max-retry-time {}: \
         finished results are saved; rerun the same command later to resume",
        human_wait(asked.asked),
        crate::transport::short_duration(*max)
    )]
    WaitTooLong { asked: ServerWait, max: Duration },
    /// Another process of a shared job (`--job`) stopped it for everyone.
    #[error("another worker of the shared job stopped it: {sentence}")]
    JobStopped { sentence: String },
    /// A batch API refused a call, kept failing it, or failed a batch as a
    /// whole for a reason pacer cannot mend (`--via batch`).
    #[error(
        "the provider refused {what}: {detail}; finished results are saved and rerunning the \
         same command resumes"
    )]
    BatchRefused { what: String, detail: String },
}

/// A long wait for a person to read: "31 years", "3 days", "2h5m", "45s".
fn human_wait(d: Duration) -> String {
    use crate::transport::short_duration;
    const DAY: u64 = 86_400;
    const YEAR: u64 = 31_557_600; // Julian year
    let s = d.as_secs();
    if s >= 2 * YEAR {
        format!("{} years", s / YEAR)
    } else if s >= 2 * DAY {
        format!("{} days", s / DAY)
    } else {
        short_duration(d)
    }
}

/// Classifies an HTTP answer.
///
/// - 2xx: success.
/// - 401, 403, and 429 whose error code or type is `insufficient_quota`: stop
///   the run (retrying burns only time and money).
/// - 408, 409, 429, 5xx, 529: retry, waiting what the headers say, else what
///   the message hints ("try again in 20s").
/// - any other status: failed for good.
///
/// `x-should-retry: true|false` (sent by OpenAI and Anthropic) overrides the
/// retry/fail decision, never a stop.
pub fn classify(
    status: u16,
    headers: &HeaderMap,
    limits: &RateLimitSnapshot,
    body: &[u8],
    now_wall: SystemTime,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let error = ErrorBody::parse(body);
    match status {
        401 => {
            return Verdict::Stop(StopReason::Unauthorized {
                status,
                key_source: None,
            })
        }
        403 => return Verdict::Stop(StopReason::Forbidden),
        429 if error.is("insufficient_quota") => {
            return Verdict::Stop(StopReason::InsufficientQuota)
        }
        // Billing stops that some providers send as other client errors:
        // OpenAI's hard billing limit, Anthropic's "credit balance is too
        // low" (a 400). No retry and no other request can succeed.
        400..=499
            if error.is("insufficient_quota")
                || error.is("billing_hard_limit_reached")
                || error.is("billing_not_active")
                || error.message.as_deref().is_some_and(|m| {
                    m.to_ascii_lowercase().contains("credit balance is too low")
                }) =>
        {
            return Verdict::Stop(StopReason::InsufficientQuota)
        }
        _ => {}
    }
    let after = || {
        retry_after(headers, now_wall)
            .or_else(|| error.message.as_deref().and_then(retry_hint_from_message))
    };
    let verdict = match status {
        429 => Verdict::Retry(RetryReason::RateLimited {
            scope: error.scope().unwrap_or_else(|| scope_from_limits(limits)),
            after: after(),
        }),
        529 => Verdict::Retry(RetryReason::Overloaded { after: after() }),
        408 | 409 | 500..=599 => Verdict::Retry(RetryReason::Server {
            status,
            after: after(),
        }),
        _ => Verdict::Fail,
    };
    match (should_retry(headers), verdict) {
        (Some(true), Verdict::Fail) => Verdict::Retry(RetryReason::Server {
            status,
            after: after(),
        }),
        (Some(false), Verdict::Retry(_)) => Verdict::Fail,
        (_, v) => v,
    }
}

fn should_retry(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get("x-should-retry")?.to_str().ok()?.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The fields of an error body that matter, in OpenAI's shape
/// (`{"error":{"message","type","code"}}`) or Anthropic's
/// (`{"type":"error","error":{"type","message"}}`), which nest alike.
#[derive(Debug, Default)]
struct ErrorBody {
    message: Option<String>,
    kind: Option<String>,
    code: Option<String>,
}

impl ErrorBody {
    fn parse(body: &[u8]) -> ErrorBody {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return ErrorBody::default();
        };
        let Some(error) = value.get("error") else {
            return ErrorBody::default();
        };
        let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
        ErrorBody {
            message: text("message").or_else(|| error.as_str().map(str::to_owned)),
            kind: text("type"),
            code: text("code"),
        }
    }

    fn is(&self, what: &str) -> bool {
        self.kind.as_deref() == Some(what) || self.code.as_deref() == Some(what)
    }

    /// OpenAI says the scope in `error.type` ("requests", "tokens") and in
    /// the message ("... on tokens per min (TPM) ...").
    fn scope(&self) -> Option<LimitScope> {
        match self.kind.as_deref() {
            Some("requests") => return Some(LimitScope::Requests),
            Some("tokens") => return Some(LimitScope::Tokens),
            _ => {}
        }
        let m = self.message.as_deref()?.to_ascii_lowercase();
        if m.contains("on requests per") || m.contains("(rpm)") || m.contains("(rpd)") {
            Some(LimitScope::Requests)
        } else if m.contains("on tokens per") || m.contains("(tpm)") || m.contains("(tpd)") {
            Some(LimitScope::Tokens)
        } else {
            None
        }
    }
}

/// Without a word in the body, the limit whose headers say nothing remains
/// (read from the snapshot the engine already parsed, not the headers again).
fn scope_from_limits(limits: &RateLimitSnapshot) -> LimitScope {
    let empty = |w: &crate::provider::RateWindow| w.remaining == Some(0);
    let requests = empty(&limits.requests);
    let tokens =
        empty(&limits.tokens) || empty(&limits.input_tokens) || empty(&limits.output_tokens);
    match (requests, tokens) {
        (true, false) => LimitScope::Requests,
        (false, true) => LimitScope::Tokens,
        _ => LimitScope::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::parse_rate_limit_headers;

    /// Classifies with the snapshot parsed from the same headers, as the
    /// engine does.
    fn classify_h(status: u16, h: &HeaderMap, body: &[u8], now: SystemTime) -> Verdict {
        classify(status, h, &parse_rate_limit_headers(h, now), body, now)
    }
    use crate::provider::WaitSource;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn verdict(status: u16, body: &str) -> Verdict {
        classify_h(
            status,
            &HeaderMap::new(),
            body.as_bytes(),
            SystemTime::now(),
        )
    }

    fn ra(n: u64) -> Option<ServerWait> {
        Some(ServerWait::new(
            Duration::from_secs(n),
            WaitSource::RetryAfter,
            &n.to_string(),
        ))
    }

    fn msg(ms: u64, raw: &str) -> Option<ServerWait> {
        Some(ServerWait::new(
            Duration::from_millis(ms),
            WaitSource::Message,
            raw,
        ))
    }

    #[test]
    fn status_table() {
        for s in [200, 201, 204, 299] {
            assert_eq!(verdict(s, ""), Verdict::Success, "{s}");
        }
        for s in [408, 409, 500, 501, 502, 503, 504, 520, 599] {
            assert_eq!(
                verdict(s, ""),
                Verdict::Retry(RetryReason::Server {
                    status: s,
                    after: None
                }),
                "{s}"
            );
        }
        assert_eq!(
            verdict(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Verdict::Retry(RetryReason::Overloaded { after: None })
        );
        assert_eq!(
            verdict(429, ""),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Unknown,
                after: None
            })
        );
        for s in [400, 404, 405, 413, 422, 300, 302, 100] {
            assert_eq!(
                verdict(s, r#"{"error":{"message":"bad"}}"#),
                Verdict::Fail,
                "{s}"
            );
        }
        assert_eq!(
            verdict(401, r#"{"error":{"code":"invalid_api_key"}}"#),
            Verdict::Stop(StopReason::Unauthorized {
                status: 401,
                key_source: None
            })
        );
        assert_eq!(verdict(403, ""), Verdict::Stop(StopReason::Forbidden));
    }

    #[test]
    fn billing_stops_sent_as_other_client_errors_stop_too() {
        let now = SystemTime::now();
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;
        assert_eq!(
            classify_h(400, &HeaderMap::new(), anthropic, now),
            Verdict::Stop(StopReason::InsufficientQuota)
        );
        let openai = br#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","code":"billing_hard_limit_reached"}}"#;
        assert_eq!(
            classify_h(400, &HeaderMap::new(), openai, now),
            Verdict::Stop(StopReason::InsufficientQuota)
        );
        // An ordinary bad request stays failed for good.
        let bad = br#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","code":null}}"#;
        assert_eq!(classify_h(400, &HeaderMap::new(), bad, now), Verdict::Fail);
    }

    #[test]
    fn openai_insufficient_quota_stops() {
        let body = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(
            verdict(429, body),
            Verdict::Stop(StopReason::InsufficientQuota)
        );
        let only_code = r#"{"error":{"message":"x","type":"other","code":"insufficient_quota"}}"#;
        assert_eq!(
            verdict(429, only_code),
            Verdict::Stop(StopReason::InsufficientQuota)
        );
        // And x-should-retry never turns a stop into a retry.
        let h = headers(&[("x-should-retry", "true")]);
        assert_eq!(
            classify_h(429, &h, body.as_bytes(), SystemTime::now()),
            Verdict::Stop(StopReason::InsufficientQuota)
        );
        assert_eq!(
            classify_h(401, &h, b"", SystemTime::now()),
            Verdict::Stop(StopReason::Unauthorized {
                status: 401,
                key_source: None
            })
        );
    }

    #[test]
    fn openai_rate_limits_name_their_scope_and_hint() {
        let requests = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            verdict(429, requests),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Requests,
                after: msg(20_000, "20s")
            })
        );
        let tokens = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 1500. Please try again in 1.0s.","type":"tokens","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            verdict(429, tokens),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Tokens,
                after: msg(1_000, "1.0s")
            })
        );
        // Scope from the message alone.
        let msg_only = r#"{"error":{"message":"Rate limit reached on tokens per min (TPM). Please try again in 6ms.","code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            verdict(429, msg_only),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Tokens,
                after: msg(6, "6ms")
            })
        );
    }

    #[test]
    fn headers_win_over_the_message_hint() {
        let h = headers(&[("retry-after-ms", "1500")]);
        let body = r#"{"error":{"message":"Please try again in 20s.","type":"requests"}}"#;
        assert_eq!(
            classify_h(429, &h, body.as_bytes(), SystemTime::now()),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Requests,
                after: Some(ServerWait::new(
                    Duration::from_millis(1500),
                    WaitSource::RetryAfterMs,
                    "1500"
                ))
            })
        );
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            classify_h(503, &h, b"Service Unavailable", SystemTime::now()),
            Verdict::Retry(RetryReason::Server {
                status: 503,
                after: ra(7)
            })
        );
    }

    #[test]
    fn anthropic_rate_limit_is_a_plain_retry() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
        let h = headers(&[
            ("retry-after", "12"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-requests-remaining", "40"),
        ]);
        assert_eq!(
            classify_h(429, &h, body.as_bytes(), SystemTime::now()),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Tokens,
                after: ra(12)
            })
        );
        let h = headers(&[("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(
            classify_h(429, &h, body.as_bytes(), SystemTime::now()),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Requests,
                after: None
            })
        );
    }

    #[test]
    fn x_should_retry_overrides_retry_and_fail() {
        let yes = headers(&[("x-should-retry", "true")]);
        let no = headers(&[("x-should-retry", "False")]);
        let odd = headers(&[("x-should-retry", "maybe")]);
        let now = SystemTime::now();
        assert_eq!(
            classify_h(400, &yes, b"", now),
            Verdict::Retry(RetryReason::Server {
                status: 400,
                after: None
            })
        );
        assert_eq!(classify_h(500, &no, b"", now), Verdict::Fail);
        assert_eq!(classify_h(429, &no, b"", now), Verdict::Fail);
        assert_eq!(classify_h(400, &odd, b"", now), Verdict::Fail);
        assert_eq!(classify_h(200, &no, b"", now), Verdict::Success);
        assert_eq!(
            classify_h(403, &yes, b"", now),
            Verdict::Stop(StopReason::Forbidden)
        );
    }

    #[test]
    fn garbage_bodies_do_not_matter() {
        assert_eq!(
            verdict(429, "<html>Too Many Requests</html>"),
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Unknown,
                after: None
            })
        );
        assert_eq!(verdict(400, "\u{0}\u{1}not json"), Verdict::Fail);
        assert_eq!(verdict(429, r#"{"error":"slow down, try again in 3s"}"#), {
            Verdict::Retry(RetryReason::RateLimited {
                scope: LimitScope::Unknown,
                after: msg(3_000, "3s"),
            })
        });
    }

    #[test]
    fn reasons() {
        let r = RetryReason::RateLimited {
            scope: LimitScope::Tokens,
            after: ra(2),
        };
        assert_eq!(r.after(), Some(Duration::from_secs(2)));
        assert!(!r.is_outage_like());
        assert!(RetryReason::Server {
            status: 502,
            after: None
        }
        .is_outage_like());
        assert!(!RetryReason::Server {
            status: 409,
            after: None
        }
        .is_outage_like());
        assert!(RetryReason::Overloaded { after: ra(1) }.is_outage_like());
        assert!(RetryReason::Timeout.is_outage_like());
        assert!(RetryReason::Connection.is_outage_like());
        assert!(!RetryReason::StreamCut.is_outage_like());
        assert_eq!(RetryReason::Timeout.after(), None);
    }

    #[test]
    fn stop_sentences_are_plain_and_say_how_to_resume() {
        let all = [
            StopReason::Unauthorized {
                status: 401,
                key_source: None,
            },
            StopReason::Forbidden,
            StopReason::InsufficientQuota,
            StopReason::BudgetReached { cap_usd: 12.5 },
            StopReason::Interrupted,
            StopReason::Redirected {
                status: 307,
                location: "http://other.host/v1/chat/completions".into(),
            },
            StopReason::Unreachable {
                url: "http://127.0.0.1:9/v1/models".into(),
                cause: "connection refused".into(),
            },
            StopReason::UnreachableFor {
                url: "http://127.0.0.1:9/v1/chat/completions".into(),
                cause: "connection refused".into(),
                waited: Duration::from_secs(30 * 60),
            },
            StopReason::WaitTooLong {
                asked: ServerWait::new(
                    Duration::from_secs(999_999_999),
                    WaitSource::RetryAfter,
                    "999999999",
                ),
                max: Duration::from_secs(1800),
            },
        ];
        for r in &all {
            let s = r.to_string();
            assert!(s.contains("rerun"), "{s}");
            assert!(!s.contains('\n'), "{s}");
        }
        assert!(all[0]
            .to_string()
            .starts_with("the API key was rejected (401)"));
        assert!(all[3].to_string().contains("$12.50"));
        assert!(all[5].to_string().starts_with(
            "the provider answered 307 redirecting to http://other.host/v1/chat/completions; pacer follows no redirects"
        ));
        assert_eq!(
            all[6].to_string(),
            "could not connect to http://127.0.0.1:9/v1/models: connection refused; check --base-url, then rerun the same command"
        );
        assert!(all[7]
            .to_string()
            .contains("unreachable for 30m (connection refused)"));
        assert!(all[8].to_string().starts_with(
            "the provider asked to wait 31 years (retry-after: 999999999), \
             longer than --max-retry-time 30m"
        ));
    }

    #[test]
    fn waits_read_like_a_person_wrote_them() {
        let d = Duration::from_secs;
        assert_eq!(human_wait(Duration::MAX), "584542046090 years");
        assert_eq!(human_wait(d(5 * 86_400)), "5 days");
        assert_eq!(human_wait(d(3723)), "1h2m");
        assert_eq!(human_wait(d(1800)), "30m");
        assert_eq!(human_wait(d(5)), "5s");
        assert_eq!(human_wait(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn absurd_waits_are_classified_with_their_header() {
        let h = headers(&[("retry-after", "1e19")]);
        let v = classify_h(503, &h, b"", SystemTime::now());
        let Verdict::Retry(r) = v else {
            panic!("{v:?}")
        };
        let w = r.server_wait().unwrap();
        assert_eq!(w.source, WaitSource::RetryAfter);
        assert_eq!(w.asked, Duration::from_secs(10u64.pow(19)));
        assert_eq!(r.after(), Some(crate::provider::MAX_SERVER_WAIT));
        let body =
            r#"{"error":{"message":"Please try again in 999999999999s.","type":"requests"}}"#;
        let Verdict::Retry(r) = verdict(429, body) else {
            panic!()
        };
        assert_eq!(r.server_wait().unwrap().source, WaitSource::Message);
    }
}
