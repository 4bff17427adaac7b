//! Providers that are not tidy (issue 9): limits enforced over short windows,
//! and a tokens limiter that counts characters instead of tokens.

mod support;

use std::time::Duration;

use pacer_mock::tokens::charge;
use pacer_mock::{ChargeMode, MockConfig};
use serde_json::{json, Value};
use support::*;

async fn chat_status(server: &pacer_mock::MockServer) -> u16 {
    post(server, "/chat/completions", &chat_body("x"))
        .await
        .status()
        .as_u16()
}

#[tokio::test(start_paused = true)]
async fn a_one_second_window_at_600_rpm_admits_10_at_once_then_one_per_100ms() {
    let server = start(MockConfig {
        rpm: Some(600),
        window: Some(Duration::from_secs(1)),
        ..MockConfig::default()
    })
    .await;
    for i in 0..10u64 {
        let resp = post(&server, "/chat/completions", &chat_body("x")).await;
        assert_eq!(resp.status(), 200, "request {i} of the first 10");
        // The headers announce the per-minute limit and count the small bucket.
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "600");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            (9 - i).to_string()
        );
    }
    let resp = post(&server, "/chat/completions", &chat_body("x")).await;
    assert_eq!(resp.status(), 429, "the 11th within the second");
    assert_eq!(header(&resp, "retry-after-ms"), "100");
    // Reset is the time to refill the 10-request bucket, not a minute.
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), "1s");

    tokio::time::advance(Duration::from_millis(99)).await;
    assert_eq!(chat_status(&server).await, 429);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(chat_status(&server).await, 200);
    assert_eq!(chat_status(&server).await, 429, "one per 100 ms");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(chat_status(&server).await, 200);

    // Idle for a minute: the bucket holds 10, never a minute's 600.
    tokio::time::advance(Duration::from_secs(60)).await;
    let ok = {
        let mut ok = 0;
        for _ in 0..20 {
            ok += u32::from(chat_status(&server).await == 200);
        }
        ok
    };
    assert_eq!(ok, 10);
}

#[tokio::test(start_paused = true)]
async fn a_window_works_with_tpm_alone() {
    // 6000 tpm over 1 s: a 100-token bucket refilling 100 tokens a second.
    let server = start(MockConfig {
        tpm: Some(6000),
        window: Some(Duration::from_secs(1)),
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 40,
                      "messages": [{"role": "user", "content": "hi"}]});
    let cost = charge("/v1/chat/completions", &body).total();
    assert!(cost > 40 && cost <= 50, "{cost}");
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "6000");
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        (100 - cost).to_string()
    );
    assert!(resp.headers().get("x-ratelimit-limit-requests").is_none());
    assert_eq!(
        post(&server, "/chat/completions", &body).await.status(),
        200
    );
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 429, "the third does not fit in 100 tokens");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "tokens");
    tokio::time::advance(Duration::from_secs(1)).await;
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        (100 - cost).to_string(),
        "a second refills the whole (small) bucket and no more"
    );
}

/// 100 words "hello": 599 characters but about 100 tokens.
fn wordy_body() -> Value {
    let text = vec!["hello"; 100].join(" ");
    assert_eq!(text.chars().count(), 599);
    json!({"model": "gpt-4o-mini", "max_tokens": 50,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(start_paused = true)]
async fn a_chars_limiter_charges_chars_over_4_plus_max_tokens_while_usage_reports_tiktoken() {
    let server = start(MockConfig {
        tpm: Some(350),
        charge: ChargeMode::Chars,
        ..MockConfig::default()
    })
    .await;
    let body = wordy_body();
    // ⌈("user" 4 + text 599) / 4⌉ + max_tokens 50 = 151 + 50.
    let by_chars = 151 + 50;
    let tiktoken_prompt = charge("/v1/chat/completions", &body).prompt;
    assert!(
        tiktoken_prompt < 151 && 2 * (tiktoken_prompt + 50) <= 350,
        "the prompt must be cheaper in tokens: {tiktoken_prompt}"
    );

    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-ratelimit-remaining-tokens"),
        (350 - by_chars).to_string(),
        "remaining tells the limiter's own count"
    );
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["usage"]["prompt_tokens"], tiktoken_prompt);
    assert_eq!(server.stats().tokens_charged, by_chars);
    assert_eq!(server.stats().prompt_tokens, tiktoken_prompt);

    // By tiktoken a second one would fit in 350; by characters it does not.
    let resp = post(&server, "/chat/completions", &body).await;
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Requested 201"), "{msg}");

    // The same requests under `--charge tokens` both pass.
    let tidy = start(MockConfig {
        tpm: Some(350),
        ..MockConfig::default()
    })
    .await;
    assert_eq!(post(&tidy, "/chat/completions", &body).await.status(), 200);
    assert_eq!(post(&tidy, "/chat/completions", &body).await.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_chars_limiter_counts_anthropic_system_and_embedding_inputs() {
    let server = start(MockConfig {
        tpm: Some(10_000),
        charge: ChargeMode::Chars,
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "text-embedding-3-small", "input": ["abcdefgh", "ijk"]});
    let resp = post(&server, "/embeddings", &body).await;
    assert_eq!(resp.status(), 200);
    // ⌈11/4⌉ = 3, no output.
    assert_eq!(header(&resp, "x-ratelimit-remaining-tokens"), "9997");
    let body = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 7, "system": "12345678",
                      "messages": [{"role": "user", "content": "1234"}]});
    let resp = post(&server, "/messages", &body).await;
    assert_eq!(resp.status(), 200);
    // ⌈(8 + 4 + "user" 4) / 4⌉ + 7 = 11.
    assert_eq!(
        header(&resp, "anthropic-ratelimit-tokens-remaining"),
        (9997 - 11).to_string()
    );
}
