//! The simulated provider over real HTTP: one test per behaviour of issue 2.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use pacer_mock::tokens::{charge, count_for_model};
use pacer_mock::{expected_reply, MockConfig, Outage, RetryAfterStyle, Stats, DEFAULT_KEY};
use serde_json::{json, Value};
use support::*;

fn limited(rpm: u64) -> MockConfig {
    MockConfig {
        rpm: Some(rpm),
        ..MockConfig::default()
    }
}

// ---- auth ----------------------------------------------------------------

#[tokio::test]
async fn a_wrong_or_missing_key_gets_openai_401_without_echoing_it() {
    let server = start(MockConfig::default()).await;
    let secret = "sk-wrong-secret-123456";
    let resp = post_with_key(&server, "/chat/completions", &chat_body("hi"), Some(secret)).await;
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(secret) && !text.contains("secret-123"),
        "the key leaked: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].is_string());

    let resp = post_with_key(&server, "/chat/completions", &chat_body("hi"), None).await;
    assert_eq!(resp.status(), 401);
    let stats = server.stats();
    assert_eq!(stats.by_status["401"], 2);
    assert!(stats.by_key.is_empty(), "unknown keys are not recorded");
}

#[tokio::test]
async fn anthropic_401_has_anthropic_shape_and_x_api_key_is_accepted() {
    let server = start(MockConfig {
        keys: vec!["k-one".into(), "k-two".into()],
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/messages", server.base_url());
    let resp = client()
        .post(&url)
        .header("x-api-key", "nope-secret")
        .json(&messages_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(!text.contains("nope-secret"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let resp = client()
        .post(&url)
        .header("x-api-key", "k-two")
        .json(&messages_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        server.stats().by_key,
        BTreeMap::from([("k-tw…".to_string(), 1)])
    );
}

// ---- limits and headers ---------------------------------------------------

#[tokio::test]
async fn rpm_bucket_spent_gives_429_with_well_formed_headers() {
    let server = start(MockConfig {
        rpm: Some(3),
        tpm: Some(100_000),
        ..MockConfig::default()
    })
    .await;
    for i in 0..3u64 {
        let resp = post(
            &server,
            "/chat/completions",
            &chat_body(&format!("doc {i}")),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "3");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            (2 - i).to_string()
        );
        assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "100000");
        let remaining_tokens: u64 = header(&resp, "x-ratelimit-remaining-tokens")
            .parse()
            .unwrap();
        assert!(remaining_tokens < 100_000);
        for h in ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"] {
            let d = parse_openai_duration(header(&resp, h))
                .unwrap_or_else(|| panic!("{h} malformed: {:?}", resp.headers()[h]));
            assert!(d > Duration::ZERO && d <= Duration::from_secs(60));
        }
    }
    let resp = post(&server, "/chat/completions", &chat_body("one too many")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");
    let retry_after: u64 = header(&resp, "retry-after").parse().unwrap();
    let retry_after_ms: u64 = header(&resp, "retry-after-ms").parse().unwrap();
    assert!(
        (1..=20).contains(&retry_after),
        "one request comes back every 20 s"
    );
    assert!(retry_after_ms <= retry_after * 1000 && retry_after_ms > (retry_after - 1) * 1000);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Please try again in"), "{msg}");
    let stats = server.stats();
    assert_eq!(
        (
            stats.by_status["200"],
            stats.by_status["429"],
            stats.accepted
        ),
        (3, 1, 3)
    );
}

#[tokio::test]
async fn tpm_is_charged_prompt_plus_max_tokens_and_refuses_with_type_tokens() {
    let server = start(MockConfig {
        tpm: Some(200),
        ..MockConfig::default()
    })
    .await;
    let body = chat_body("count me"); // max_tokens 50
                                      // The cookbook's count: 3 a message + "user" 1 + "count me" 2 + 3
                                      // priming; then max_tokens.
    let charged = 9 + 50;
    assert_eq!(charge("/v1/chat/completions", &body).total(), charged);
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        (200 - charged).to_string()
    );
    assert!(
        resp.headers().get("x-ratelimit-limit-requests").is_none(),
        "no rpm configured, no rpm headers"
    );
    let usage: Value = resp.json().await.unwrap();
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() < 50,
        "no refund makes sense only if usage < charge"
    );
    for _ in 0..2 {
        post(&server, "/chat/completions", &body).await;
    }
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "tokens");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(server.stats().tokens_charged, 3 * charged);

    let huge = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000});
    let resp = post(&server, "/chat/completions", &huge).await;
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Request too large"));
}

#[tokio::test]
async fn anthropic_answers_carry_anthropic_headers_and_429_shape() {
    let server = start(MockConfig {
        rpm: Some(2),
        tpm: Some(10_000),
        ..MockConfig::default()
    })
    .await;
    let now = chrono::Utc::now();
    let resp = post(&server, "/messages", &messages_body("hello")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-ratelimit-limit-requests").is_none());
    for family in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let limit = header(&resp, &format!("anthropic-ratelimit-{family}-limit"));
        assert_eq!(limit, if family == "requests" { "2" } else { "10000" });
        let _: u64 = header(&resp, &format!("anthropic-ratelimit-{family}-remaining"))
            .parse()
            .unwrap();
        let reset = chrono::DateTime::parse_from_rfc3339(header(
            &resp,
            &format!("anthropic-ratelimit-{family}-reset"),
        ))
        .unwrap_or_else(|e| panic!("{family} reset is not RFC 3339: {e}"));
        assert!(reset >= now && reset <= now + chrono::Duration::seconds(62));
    }
    post(&server, "/messages", &messages_body("hello")).await;
    let resp = post(&server, "/messages", &messages_body("hello")).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

async fn first_429(style: RetryAfterStyle, hide_headers: bool) -> reqwest::Response {
    let server = start(MockConfig {
        rpm: Some(1),
        retry_after: style,
        hide_headers,
        ..MockConfig::default()
    })
    .await;
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("a"))
            .await
            .status(),
        200
    );
    let resp = post(&server, "/chat/completions", &chat_body("b")).await;
    assert_eq!(resp.status(), 429);
    resp
}

#[tokio::test]
async fn each_retry_after_style() {
    let resp = first_429(RetryAfterStyle::Seconds, false).await;
    let secs: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!((59..=60).contains(&secs), "{secs}");
    assert!(resp.headers().get("retry-after-ms").is_none());

    let resp = first_429(RetryAfterStyle::Ms, false).await;
    let ms: u64 = header(&resp, "retry-after-ms").parse().unwrap();
    assert!((58_000..=60_000).contains(&ms), "{ms}");
    assert!(resp.headers().get("retry-after").is_none());

    let resp = first_429(RetryAfterStyle::HttpDate, false).await;
    let at = httpdate::parse_http_date(header(&resp, "retry-after")).expect("an HTTP date");
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(62),
        "{wait:?}"
    );

    let resp = first_429(RetryAfterStyle::None, false).await;
    assert!(
        resp.headers().get("retry-after").is_none()
            && resp.headers().get("retry-after-ms").is_none()
    );

    let resp = first_429(RetryAfterStyle::Both, true).await;
    assert!(
        !resp
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("x-ratelimit-")),
        "--hide-headers drops rate-limit headers"
    );
    assert!(
        resp.headers().contains_key("retry-after"),
        "but a 429 still says when"
    );
}

#[tokio::test]
async fn insufficient_quota_after_the_quota() {
    let server = start(MockConfig {
        quota: Some(3),
        ..MockConfig::default()
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            post(&server, "/chat/completions", &chat_body(&i.to_string()))
                .await
                .status(),
            200
        );
    }
    for _ in 0..2 {
        let resp = post(&server, "/chat/completions", &chat_body("more")).await;
        assert_eq!(resp.status(), 429);
        assert!(
            resp.headers().get("retry-after").is_none(),
            "no wait fixes a billing stop"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "insufficient_quota");
        assert_eq!(body["error"]["type"], "insufficient_quota");
    }
    let resp = post(&server, "/messages", &messages_body("more")).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");
}

#[tokio::test(start_paused = true)]
async fn buckets_refill_over_time() {
    // 60 rpm with a burst of 5: five at once, then one a second.
    let server = start(MockConfig {
        burst: Some(5),
        ..limited(60)
    })
    .await;
    let ok = |r: &reqwest::Response| r.status() == 200;
    for _ in 0..5 {
        assert!(ok(
            &post(&server, "/chat/completions", &chat_body("x")).await
        ));
    }
    let resp = post(&server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after-ms"), "1000");
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), "5s");

    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("x"))
            .await
            .status(),
        429
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let resp = post(&server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");

    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..3 {
        assert_eq!(
            post(&server, "/chat/completions", &chat_body("x"))
                .await
                .status(),
            200
        );
    }
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("x"))
            .await
            .status(),
        429
    );

    tokio::time::advance(Duration::from_secs(600)).await;
    let resp = post(&server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-requests"),
        "4",
        "refill stops at the burst"
    );
}

// ---- content --------------------------------------------------------------

#[tokio::test]
async fn replies_are_deterministic_and_belong_to_their_request() {
    let server = start(MockConfig::default()).await;
    let mut seen = Vec::new();
    for i in 0..20 {
        let body = chat_body(&format!("document number {i}"));
        let resp: Value = post(&server, "/chat/completions", &body)
            .await
            .json()
            .await
            .unwrap();
        let text = resp["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(text, expected_reply("/v1/chat/completions", &body));
        assert_eq!(resp["model"], "gpt-4o-mini");
        assert!(resp["id"].as_str().unwrap().starts_with("chatcmpl-"));
        let est = charge("/v1/chat/completions", &body);
        let usage = &resp["usage"];
        assert_eq!(usage["prompt_tokens"], est.prompt);
        let completion = usage["completion_tokens"].as_u64().unwrap();
        assert_eq!(completion, count_for_model("gpt-4o-mini", &text));
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            est.prompt + completion
        );
        // The same request again gets the same text.
        let again: Value = post(&server, "/chat/completions", &body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["choices"][0]["message"]["content"], text.as_str());
        seen.push(text);
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() >= 19, "different requests get different replies");

    let short = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "long please"}], "max_completion_tokens": 3, "n": 2});
    let resp: Value = post(&server, "/chat/completions", &short)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["choices"].as_array().unwrap().len(), 2);
    assert_eq!(resp["choices"][0]["finish_reason"], "length");
    assert!(resp["usage"]["completion_tokens"].as_u64().unwrap() <= 6);

    let body = messages_body("hello claude");
    let resp: Value = post(&server, "/messages", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["type"], "message");
    assert_eq!(
        resp["content"][0]["text"],
        expected_reply("/v1/messages", &body).as_str()
    );
    assert_eq!(
        resp["usage"]["input_tokens"],
        charge("/v1/messages", &body).prompt
    );
    assert!(resp["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(resp["stop_reason"], "end_turn");
}

#[tokio::test]
async fn completions_embeddings_and_models_have_provider_shapes() {
    let server = start(MockConfig::default()).await;
    let body =
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "max_tokens": 20});
    let resp: Value = post(&server, "/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "text_completion");
    assert_eq!(
        resp["choices"][0]["text"],
        expected_reply("/v1/completions", &body).as_str()
    );

    let body = json!({"model": "text-embedding-3-small", "input": ["alpha", "beta"]});
    let resp: Value = post(&server, "/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["data"].as_array().unwrap().len(), 2);
    assert_eq!(resp["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(
        resp["usage"]["prompt_tokens"],
        charge("/v1/embeddings", &body).prompt
    );

    let resp = client()
        .get(format!("{}/models", server.base_url()))
        .bearer_auth(DEFAULT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert!(!list["data"].as_array().unwrap().is_empty());

    let bad = json!({"model": "claude-3-5-haiku-latest", "messages": []});
    let resp = post(&server, "/messages", &bad).await;
    assert_eq!(resp.status(), 400, "Anthropic requires max_tokens");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let resp = post(&server, "/nowhere", &bad).await;
    assert_eq!(resp.status(), 404);
}

// ---- streaming ------------------------------------------------------------

async fn stream_text(server: &pacer_mock::MockServer, path: &str, body: &Value) -> String {
    let resp = post(server, path, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    resp.text().await.unwrap()
}

#[tokio::test]
async fn openai_stream_reassembles_to_the_unstreamed_text() {
    let server = start(MockConfig {
        chunk_delay: 1,
        ..MockConfig::default()
    })
    .await;
    let mut body = chat_body("stream me a story");
    body["max_tokens"] = json!(200);
    let plain: Value = post(&server, "/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let raw = stream_text(&server, "/chat/completions", &body).await;
    let events = sse_events(&raw);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(
        text,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty()))
            .count()
            >= 3
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage_chunk["usage"], plain["usage"]);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
}

#[tokio::test]
async fn anthropic_stream_reassembles_to_the_unstreamed_text() {
    let server = start(MockConfig::default()).await;
    let mut body = messages_body("stream me");
    let plain: Value = post(&server, "/messages", &body)
        .await
        .json()
        .await
        .unwrap();
    body["stream"] = json!(true);
    let events = sse_events(&stream_text(&server, "/messages", &body).await);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names[..2], ["message_start", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, plain["content"][0]["text"].as_str().unwrap());
    assert_eq!(
        data[0]["message"]["usage"]["input_tokens"],
        plain["usage"]["input_tokens"]
    );
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn a_cut_stream_lacks_its_final_event() {
    let server = start(MockConfig {
        stream_cut_rate: 1.0,
        seed: Some(3),
        ..MockConfig::default()
    })
    .await;
    for i in 0..10 {
        let mut body = chat_body(&format!("cut {i}"));
        body["stream"] = json!(true);
        let raw = stream_text(&server, "/chat/completions", &body).await;
        assert!(!raw.contains("[DONE]"), "{raw}");
        assert!(raw.starts_with("data: {"));
        let mut body = messages_body(&format!("cut {i}"));
        body["stream"] = json!(true);
        let raw = stream_text(&server, "/messages", &body).await;
        assert!(!raw.contains("message_stop"));
    }
    assert_eq!(server.stats().stream_cuts, 20);
}

// ---- stats ----------------------------------------------------------------

#[tokio::test]
async fn stats_count_duplicates_and_the_log_keeps_client_ids() {
    let server = start(MockConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());
    for (id, content) in [
        ("a", "one"),
        ("b", "two"),
        ("a", "one"),
        ("c", "three"),
        ("a", "one"),
        ("b", "two"),
    ] {
        let resp = c
            .post(&url)
            .bearer_auth(DEFAULT_KEY)
            .header("X-Client-Request-Id", id)
            .json(&chat_body(content))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let base = format!("http://{}", server.addr());
    let stats: Stats = reqwest::get(format!("{base}/mock/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, server.stats());
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.distinct_bodies, 3);
    assert_eq!(stats.duplicate_bodies, 2);
    assert_eq!(stats.duplicate_requests, 3);
    assert_eq!(stats.duplicate_successes, 3);
    assert_eq!(stats.by_key["sk-m…"], 6);
    assert!(!serde_json::to_string(&stats).unwrap().contains(DEFAULT_KEY));
    assert_eq!(
        stats.prompt_tokens,
        (0..6).map(|_| 0).sum::<u64>() + {
            let p = |s: &str| charge("/v1/chat/completions", &chat_body(s)).prompt;
            3 * p("one") + 2 * p("two") + p("three")
        }
    );

    let log: Vec<pacer_mock::LogEntry> = reqwest::get(format!("{base}/mock/log"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 6);
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    let ids: Vec<&str> = log
        .iter()
        .map(|e| e.client_request_id.as_deref().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "a", "c", "a", "b"]);
    assert_eq!(log[0].body_hash, log[2].body_hash);
    assert_ne!(log[0].body_hash, log[1].body_hash);
    assert!(log
        .iter()
        .all(|e| e.status == 200 && e.path == "/v1/chat/completions"));
    let tail: Vec<pacer_mock::LogEntry> = reqwest::get(format!("{base}/mock/log?since=4"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tail.len(), 2);
}

// ---- faults ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_rates_fall_within_a_loose_band() {
    let server = start(MockConfig {
        error_rate: 0.2,
        overload_rate: 0.1,
        seed: Some(42),
        ..MockConfig::default()
    })
    .await;
    let c = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let n = 3000;
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let req = c
                .post(&url)
                .bearer_auth(DEFAULT_KEY)
                .json(&chat_body(&format!("req {i}")));
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let count =
        |f: &dyn Fn(u16) -> bool| statuses.iter().filter(|s| f(**s)).count() as f64 / n as f64;
    let errors = count(&|s| matches!(s, 500 | 502 | 503));
    let overloads = count(&|s| s == 529);
    assert!((0.16..0.24).contains(&errors), "5xx share {errors}");
    assert!((0.07..0.13).contains(&overloads), "529 share {overloads}");
    for s in [500, 502, 503] {
        assert!(count(&|x| x == s) > 0.04, "{s} is part of the mix");
    }
    let stats = server.stats();
    assert_eq!(stats.requests, n as u64);
    assert_eq!(stats.by_status.values().sum::<u64>(), n as u64);

    // The same seed gives the same faults to the same requests.
    let again = start(MockConfig {
        error_rate: 0.2,
        overload_rate: 0.1,
        seed: Some(42),
        ..MockConfig::default()
    })
    .await;
    let url2 = format!("{}/chat/completions", again.base_url());
    for i in 0..50 {
        let a = c
            .post(&url)
            .bearer_auth(DEFAULT_KEY)
            .json(&chat_body(&format!("fresh {i}")))
            .send()
            .await
            .unwrap();
        let b = c
            .post(&url2)
            .bearer_auth(DEFAULT_KEY)
            .json(&chat_body(&format!("fresh {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), b.status());
    }
}

#[tokio::test]
async fn error_bodies_have_provider_shapes() {
    let server = start(MockConfig {
        error_rate: 1.0,
        seed: Some(1),
        ..MockConfig::default()
    })
    .await;
    let resp = post(&server, "/chat/completions", &chat_body("x")).await;
    assert!(matches!(resp.status().as_u16(), 500 | 502 | 503));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    let resp = post(&server, "/messages", &messages_body("x")).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    let server = start(MockConfig {
        overload_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let resp = post(&server, "/messages", &messages_body("x")).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn a_reset_breaks_the_answer_midway() {
    let server = start(MockConfig {
        reset_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    for stream in [false, true] {
        let mut body = chat_body("reset me");
        body["stream"] = json!(stream);
        let url = format!("{}/chat/completions", server.base_url());
        let result = match client()
            .post(&url)
            .bearer_auth(DEFAULT_KEY)
            .json(&body)
            .send()
            .await
        {
            Ok(resp) => resp.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(result.is_err(), "stream={stream}: the answer must break");
    }
    assert_eq!(server.stats().resets, 2);
}

#[tokio::test]
async fn a_hung_request_is_never_answered_and_shutdown_still_completes() {
    let server = start(MockConfig {
        hang_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/chat/completions", server.base_url());
    let err = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .post(&url)
        .bearer_auth(DEFAULT_KEY)
        .json(&chat_body("hang"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    let stats = server.stats();
    assert_eq!((stats.hangs, stats.by_status.len()), (1, 0));
    assert_eq!(server.log()[0].status, 0);
    // A client still waiting must not keep the server from stopping.
    let waiting = tokio::spawn(
        client()
            .post(&url)
            .bearer_auth(DEFAULT_KEY)
            .json(&chat_body("hang 2"))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown completes")
        .unwrap();
    let _ = waiting.await;
}

#[tokio::test]
async fn an_outage_answers_503_to_everything_and_stats_stay_readable() {
    let server = start(MockConfig {
        outage: vec![Outage {
            start: Duration::ZERO,
            duration: Duration::from_secs(3600),
        }],
        ..MockConfig::default()
    })
    .await;
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("x"))
            .await
            .status(),
        503
    );
    assert_eq!(
        post_with_key(&server, "/messages", &messages_body("x"), None)
            .await
            .status(),
        503
    );
    let stats: Stats = reqwest::get(format!("http://{}/mock/stats", server.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.by_status["503"], 2);

    let later = start(MockConfig {
        outage: vec!["30:10".parse().unwrap()],
        ..MockConfig::default()
    })
    .await;
    assert_eq!(
        post(&later, "/chat/completions", &chat_body("x"))
            .await
            .status(),
        200
    );
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer_on_tokios_clock() {
    let server = start(MockConfig {
        latency: 250,
        ..MockConfig::default()
    })
    .await;
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        post(&server, "/chat/completions", &chat_body("slow"))
            .await
            .status(),
        200
    );
    assert!(t0.elapsed() >= Duration::from_millis(250));
}
