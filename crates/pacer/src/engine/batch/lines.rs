//! What one line of a batch's results means for its request.
//!
//! The answer inside a line is judged by the same [`classify`] a live
//! answer goes through, so a request fails, succeeds or is tried again for
//! the same reasons whichever route it took. What only batches have is
//! handled here: lines that were never run (the batch expired or was
//! cancelled) go back to pending without counting against
//! `--max-retries`.

use std::time::SystemTime;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::api::text;
use crate::provider::{bounded, RateLimitSnapshot};
use crate::retry::{classify, RetryReason, StopReason, Verdict};

/// The prefix of the `custom_id` pacer gives each line: `pacer-IDX`. The
/// job's own ids may not fit the providers' rules (Anthropic allows 64
/// characters of `[a-zA-Z0-9_-]`), and the index finds the request at once.
const ID_PREFIX: &str = "pacer-";

/// The `custom_id` of request `idx` in a batch.
pub(crate) fn line_id(idx: i64) -> String {
    format!("{ID_PREFIX}{idx}")
}

/// The request index a line's `custom_id` names, if it is one of pacer's.
pub(crate) fn idx_of(custom_id: &str) -> Option<i64> {
    let digits = custom_id.strip_prefix(ID_PREFIX)?;
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An HTTP answer carried in a line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineAnswer {
    pub status: u16,
    pub request_id: String,
    pub body: Value,
}

/// What a line means for its request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LineResult {
    /// Answered 2xx: done.
    Success(LineAnswer),
    /// Failed for good with the provider's answer, kept as a live run keeps it.
    FailedHttp(LineAnswer),
    /// Failed for good without an HTTP answer.
    FailedError { code: String, message: String },
    /// Worth sending again in a later batch. `answer` becomes the result if
    /// `--max-retries` runs out; `counts`: whether this counts against it
    /// (a line never run, because its batch expired or was cancelled, does
    /// not).
    Retry {
        answer: Option<LineAnswer>,
        why: String,
        counts: bool,
    },
    /// Nothing more can succeed until a person acts (a rejected key, no
    /// quota): the request goes back to pending and the run stops.
    Stop(StopReason),
}

/// Judges an HTTP answer found in a line, as a live answer is judged.
fn judge(answer: LineAnswer, now: SystemTime) -> LineResult {
    if (200..300).contains(&answer.status) {
        return LineResult::Success(answer);
    }
    let bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
    match classify(
        answer.status,
        &HeaderMap::new(),
        &RateLimitSnapshot::default(),
        &bytes,
        now,
    ) {
        Verdict::Success => LineResult::Success(answer),
        Verdict::Fail => LineResult::FailedHttp(answer),
        Verdict::Retry(reason) => LineResult::Retry {
            why: format!("HTTP {} in the batch", answer.status),
            counts: !matches!(reason, RetryReason::RateLimited { .. }),
            answer: Some(answer),
        },
        Verdict::Stop(reason) => LineResult::Stop(reason),
    }
}

/// An OpenAI Batch output or error file line: `(custom_id, result)`.
pub(crate) fn openai_line(line: &[u8], now: SystemTime) -> Result<(String, LineResult), String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let custom_id = text(v.get("custom_id")).ok_or("no custom_id")?;
    let response = v.get("response").filter(|r| !r.is_null());
    if let Some(r) = response {
        let status = r
            .get("status_code")
            .and_then(bounded::json_count)
            .filter(|s| (100..=599).contains(s))
            .ok_or("a response without a status_code")? as u16;
        let answer = LineAnswer {
            status,
            request_id: text(r.get("request_id")).unwrap_or_default(),
            body: r.get("body").cloned().unwrap_or(Value::Null),
        };
        return Ok((custom_id, judge(answer, now)));
    }
    let error = v
        .get("error")
        .filter(|e| !e.is_null())
        .ok_or("neither a response nor an error")?;
    let code = text(error.get("code")).unwrap_or_else(|| "batch_error".into());
    let message = text(error.get("message")).unwrap_or_default();
    let result = match code.as_str() {
        // Never run: the batch expired or was cancelled first.
        "batch_expired" | "batch_cancelled" | "batch_canceled" => LineResult::Retry {
            answer: None,
            why: code.clone(),
            counts: false,
        },
        "server_error" | "internal_error" | "timeout" | "rate_limit_exceeded" => {
            LineResult::Retry {
                answer: None,
                why: format!("{code}: {message}"),
                counts: code != "rate_limit_exceeded",
            }
        }
        _ => LineResult::FailedError { code, message },
    };
    Ok((custom_id, result))
}

/// The HTTP status a live call would have answered for an Anthropic error type.
fn anthropic_status(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // api_error, and kinds added later: the provider's fault.
        _ => 500,
    }
}

/// An Anthropic Message Batches results line: `(custom_id, result)`.
pub(crate) fn anthropic_line(line: &[u8], now: SystemTime) -> Result<(String, LineResult), String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let custom_id = text(v.get("custom_id")).ok_or("no custom_id")?;
    let result = v.get("result").ok_or("no result")?;
    let kind = text(result.get("type")).ok_or("a result without a type")?;
    let outcome = match kind.as_str() {
        "succeeded" => {
            let message = result.get("message").cloned().ok_or("no message")?;
            LineResult::Success(LineAnswer {
                status: 200,
                request_id: String::new(),
                body: message,
            })
        }
        "errored" => {
            // `{"type":"error","error":{"type","message"}}` as the API
            // answers errors; older documents show the inner object alone.
            let outer = result.get("error").cloned().unwrap_or(Value::Null);
            let inner = outer
                .get("error")
                .filter(|e| e.is_object())
                .cloned()
                .unwrap_or_else(|| outer.clone());
            let error_kind = text(inner.get("type")).unwrap_or_else(|| "api_error".into());
            let body = serde_json::json!({"type": "error", "error": inner});
            judge(
                LineAnswer {
                    status: anthropic_status(&error_kind),
                    request_id: text(outer.get("request_id")).unwrap_or_default(),
                    body,
                },
                now,
            )
        }
        "expired" | "canceled" | "cancelled" => LineResult::Retry {
            answer: None,
            why: format!("the batch ended it {kind}"),
            counts: false,
        },
        other => return Err(format!("an unknown result type {other:?}")),
    };
    Ok((custom_id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
    }

    fn openai(v: Value) -> LineResult {
        let (id, r) = openai_line(v.to_string().as_bytes(), now()).unwrap();
        assert_eq!(id, "pacer-7");
        r
    }

    fn response(status: u16, body: Value) -> Value {
        json!({"id": "batch_req_1", "custom_id": "pacer-7",
               "response": {"status_code": status, "request_id": "req_1", "body": body}, "error": null})
    }

    #[test]
    fn custom_ids_map_back_to_requests() {
        assert_eq!(line_id(42), "pacer-42");
        assert_eq!(idx_of("pacer-42"), Some(42));
        for foreign in [
            "pacer-",
            "pacer--1",
            "pacer-1x",
            "doc-1",
            "pacer-99999999999999999999",
        ] {
            assert_eq!(idx_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn openai_lines_are_judged_as_live_answers_are() {
        let ok = openai(response(200, json!({"choices": []})));
        assert!(
            matches!(&ok, LineResult::Success(a) if a.request_id == "req_1" && a.status == 200)
        );
        // A bad request fails for good, with its answer kept.
        let bad = openai(response(
            400,
            json!({"error": {"message": "bad", "type": "invalid_request_error"}}),
        ));
        assert!(matches!(bad, LineResult::FailedHttp(ref a) if a.status == 400));
        // 5xx and 429 inside the batch go again; a 429 is not the request's fault.
        assert!(matches!(
            openai(response(500, json!({"error": {"message": "oops"}}))),
            LineResult::Retry {
                counts: true,
                answer: Some(_),
                ..
            }
        ));
        assert!(matches!(
            openai(response(
                429,
                json!({"error": {"message": "slow down", "code": "rate_limit_exceeded"}})
            )),
            LineResult::Retry { counts: false, .. }
        ));
        // No quota left: stop, as a live run does.
        assert!(matches!(
            openai(response(
                429,
                json!({"error": {"message": "quota", "code": "insufficient_quota"}})
            )),
            LineResult::Stop(StopReason::InsufficientQuota)
        ));
        // Never run: back to pending, not counted.
        let expired = openai(json!({"id": "x", "custom_id": "pacer-7", "response": null,
            "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}));
        assert!(matches!(
            expired,
            LineResult::Retry {
                counts: false,
                answer: None,
                ..
            }
        ));
        let other = openai(json!({"custom_id": "pacer-7", "response": null,
            "error": {"code": "invalid_body", "message": "nope"}}));
        assert_eq!(
            other,
            LineResult::FailedError {
                code: "invalid_body".into(),
                message: "nope".into()
            }
        );
        for broken in [
            &b"not json"[..],
            br#"{"response": null}"#,
            br#"{"custom_id": "pacer-1", "response": null, "error": null}"#,
            br#"{"custom_id": "pacer-1", "response": {"status_code": 9000}}"#,
        ] {
            assert!(openai_line(broken, now()).is_err());
        }
    }

    fn anthropic(result: Value) -> LineResult {
        let line = json!({"custom_id": "pacer-7", "result": result}).to_string();
        anthropic_line(line.as_bytes(), now()).unwrap().1
    }

    #[test]
    fn anthropic_results_are_judged_as_live_answers_are() {
        let ok = anthropic(json!({"type": "succeeded", "message": {"id": "msg_1", "content": []}}));
        assert!(matches!(ok, LineResult::Success(ref a) if a.body["id"] == "msg_1"));
        let invalid = anthropic(json!({"type": "errored", "error": {"type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}}));
        match invalid {
            LineResult::FailedHttp(a) => {
                assert_eq!(a.status, 400);
                // The body a live call would have answered.
                assert_eq!(a.body["type"], "error");
                assert_eq!(a.body["error"]["type"], "invalid_request_error");
            }
            other => panic!("{other:?}"),
        }
        // The inner object alone, as older documents show it.
        assert!(matches!(
            anthropic(json!({"type": "errored", "error": {"type": "invalid_request_error", "message": "x"}})),
            LineResult::FailedHttp(ref a) if a.status == 400
        ));
        for retry in ["api_error", "overloaded_error"] {
            assert!(
                matches!(
                    anthropic(
                        json!({"type": "errored", "error": {"type": "error", "error": {"type": retry, "message": "x"}}})
                    ),
                    LineResult::Retry { counts: true, .. }
                ),
                "{retry}"
            );
        }
        for never_run in ["expired", "canceled"] {
            assert!(matches!(
                anthropic(json!({"type": never_run})),
                LineResult::Retry {
                    counts: false,
                    answer: None,
                    ..
                }
            ));
        }
        assert!(anthropic_line(
            br#"{"custom_id":"pacer-1","result":{"type":"mystery"}}"#,
            now()
        )
        .is_err());
    }
}
