//! A hostile provider: absurd waits, counts and dates in every place a server
//! can put a number. pacer must never panic, never hang, and, when the wait
//! asked is longer than `--max-retry-time`, stop (exit 2) naming the header.

use std::process::Output;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Response, StatusCode};
use axum::Router;
use serde_json::json;

use crate::support::{pacer_command, stderr, write_batch};

/// What the hostile server answers to every request.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    /// The chat body; `None`: a plain completion.
    body: Option<String>,
}

fn completion(usage: serde_json::Value) -> String {
    json!({
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": usage,
    })
    .to_string()
}

/// Serves `answer` on 127.0.0.1:0 (`GET` is the key check's `/v1/models`,
/// which gets the same headers with a 200); returns the base URL.
async fn serve(answer: Answer) -> String {
    let app = Router::new().fallback(move |method: Method| {
        let answer = answer.clone();
        async move {
            let (status, body) = if method == Method::GET {
                (
                    200,
                    json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
                        .to_string(),
                )
            } else {
                let body = answer.body.clone().unwrap_or_else(|| {
                    completion(
                        json!({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
                    )
                });
                (answer.status, body)
            };
            let mut r = Response::builder()
                .status(StatusCode::from_u16(status).expect("status"))
                .header("content-type", "application/json");
            for (k, v) in &answer.headers {
                r = r.header(*k, *v);
            }
            r.body(Body::from(body)).expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}

/// Runs the real binary, killed (and the test failed) after 30 s.
async fn pacer(base_url: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = pacer_command(dir, base_url, "sk-hostile-test");
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pacer {args:?} hung (killed after 30 s)"))
        .expect("pacer ran");
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(101), "pacer panicked: {err}");
    assert!(!err.contains("panicked"), "pacer panicked: {err}");
    out
}

/// A batch of 3 against `answer`: the exit code and stderr.
async fn run(answer: Answer, extra: &[&str]) -> (Option<i32>, String) {
    let url = serve(answer).await;
    let dir = tempfile::tempdir().expect("temp dir");
    write_batch(dir.path(), "jobs.jsonl", 3);
    let mut args = vec!["run", "jobs.jsonl", "--json", "--max-retry-time", "5s"];
    args.extend_from_slice(extra);
    let out = pacer(&url, dir.path(), &args).await;
    (out.status.code(), stderr(&out))
}

fn refusal(status: u16, headers: Vec<(&'static str, &'static str)>, body: &str) -> Answer {
    Answer {
        status,
        headers,
        body: Some(body.to_string()),
    }
}

const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_waits_stop_the_run_naming_the_header() {
    let cases = [
        (
            refusal(429, vec![("retry-after", "999999999")], RATE_LIMITED),
            "retry-after: 999999999",
        ),
        (
            refusal(429, vec![("retry-after", "1e19")], RATE_LIMITED),
            "retry-after: 1e19",
        ),
        (
            refusal(
                503,
                vec![("retry-after-ms", "99999999999999999999")],
                r#"{"error":{"message":"down"}}"#,
            ),
            "retry-after-ms: 99999999999999999999",
        ),
        (
            refusal(
                429,
                vec![],
                r#"{"error":{"message":"Rate limit reached. Please try again in 999999999999s.","type":"tokens","code":"rate_limit_exceeded"}}"#,
            ),
            "try again in 999999999999s",
        ),
        (
            // An HTTP date far ahead, from an Anthropic-style answer.
            refusal(
                529,
                vec![("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            "retry-after: Fri, 31 Dec 9999",
        ),
    ];
    for (answer, named) in cases {
        let (code, err) = run(answer, &[]).await;
        assert_eq!(code, Some(2), "{named}: {err}");
        assert!(
            err.contains("the provider asked to wait") && err.contains(named),
            "{named}: {err}"
        );
        assert!(err.contains("--max-retry-time 5s"), "{named}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_counts_and_resets_on_good_answers_are_survived() {
    let ok = |headers: Vec<(&'static str, &'static str)>, body: Option<String>| Answer {
        status: 200,
        headers,
        body,
    };
    let cases = [
        ok(
            vec![
                // Room left: a "remaining 0" would rightly slow the run by a window.
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "99"),
                ("x-ratelimit-reset-requests", "1e19"),
                ("x-ratelimit-limit-tokens", "100000"),
                ("x-ratelimit-remaining-tokens", "99000"),
                ("x-ratelimit-reset-tokens", "999999999999h"),
            ],
            None,
        ),
        ok(
            vec![
                ("x-ratelimit-limit-requests", "99999999999999999999999"),
                ("x-ratelimit-remaining-requests", "99999999999999999999999"),
                ("x-ratelimit-limit-tokens", "1e300"),
                ("x-ratelimit-remaining-tokens", "18446744073709551615"),
            ],
            None,
        ),
        ok(
            vec![
                ("x-ratelimit-limit-requests", "-5"),
                ("x-ratelimit-remaining-requests", "-1"),
                ("x-ratelimit-reset-requests", "-1s"),
                ("x-ratelimit-limit-tokens", "NaN"),
                ("x-ratelimit-reset-tokens", "inf"),
                ("retry-after", "-5"),
            ],
            None,
        ),
        ok(
            vec![
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z"),
            ],
            None,
        ),
        // A usage no account could have.
        ok(
            vec![],
            Some(completion(json!({
                "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX
            }))),
        ),
    ];
    for (i, answer) in cases.into_iter().enumerate() {
        let (code, err) = run(answer, &[]).await;
        assert_eq!(code, Some(0), "case {i}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_waits_are_ignored_and_backoff_decides() {
    let answer = refusal(
        429,
        vec![("retry-after", "-5"), ("retry-after-ms", "-1")],
        r#"{"error":{"message":"Please try again in -3s.","type":"requests"}}"#,
    );
    let (code, err) = run(answer, &["--max-retries", "1"]).await;
    assert_eq!(code, Some(1), "failed for good after its retries: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_survives_hostile_model_lists() {
    for headers in [
        vec![("x-ratelimit-reset-requests", "1e19")],
        vec![("x-ratelimit-limit-requests", "99999999999999999999999")],
        vec![("anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z")],
        vec![
            ("retry-after", "1e19"),
            ("retry-after-ms", "99999999999999999999"),
        ],
    ] {
        let url = serve(Answer {
            status: 200,
            headers,
            body: None,
        })
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let out = pacer(&url, dir.path(), &["verify", "--base-url", &url]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
}
