//! The simulator's bill against OpenAI's Python tiktoken: every case of
//! `fixtures/token_counts.json` (made by `fixtures/make_token_counts.py`,
//! whose docstring says how) must agree exactly. These numbers come from
//! outside Rust, so neither pacer nor the simulator can agree with itself here.

mod support;

use pacer_mock::tokens::{charge, count, encoding_for_model, Encoding};
use pacer_mock::MockConfig;
use serde_json::{json, Value};
use support::*;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/token_counts.json"
    );
    let text = std::fs::read_to_string(path).expect("read the fixture");
    serde_json::from_str(&text).expect("the fixture is JSON")
}

fn chat_request(case: &Value) -> Value {
    let mut body = json!({"model": case["model"], "messages": case["messages"], "max_tokens": 16});
    if let Some(tools) = case.get("tools") {
        body["tools"] = tools.clone();
    }
    body
}

#[test]
fn models_map_to_the_encodings_tiktoken_gives_them() {
    let fx = fixture();
    let models = fx["models"].as_object().unwrap();
    assert!(models.len() >= 20);
    for (model, name) in models {
        assert_eq!(
            encoding_for_model(model).name(),
            name.as_str().unwrap(),
            "{model}"
        );
    }
}

#[test]
fn texts_count_as_python_tiktoken_counts_them() {
    let fx = fixture();
    let cases = fx["texts"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut wrong = Vec::new();
    for case in cases {
        let enc = Encoding::from_name(case["encoding"].as_str().unwrap()).expect("known encoding");
        let text = case["text"].as_str().unwrap();
        let expected = case["tokens"].as_u64().unwrap();
        let got = count(enc, text);
        if got != expected {
            wrong.push(format!(
                "{}: {text:?}: {got}, tiktoken {expected}",
                enc.name()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn chats_count_as_the_cookbook_formula_counts_them() {
    let fx = fixture();
    let cases = fx["chats"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let body = chat_request(case);
        assert_eq!(
            charge("/v1/chat/completions", &body).prompt,
            case["prompt_tokens"].as_u64().unwrap(),
            "{}",
            case["model"]
        );
    }
}

#[tokio::test]
async fn the_bill_over_http_is_the_fixture_count() {
    // What a client sees: `usage.prompt_tokens`, `/mock/stats`, and the
    // tokens-per-minute charge (prompt + max_tokens) in the headers.
    const TPM: u64 = 2_000;
    let fx = fixture();
    let server = start(MockConfig {
        tpm: Some(TPM),
        ..MockConfig::default()
    })
    .await;
    let started = std::time::Instant::now();
    let mut billed = 0;
    for case in fx["chats"].as_array().unwrap() {
        let expected = case["prompt_tokens"].as_u64().unwrap();
        let body = chat_request(case);
        let resp = post(&server, "/chat/completions", &body).await;
        assert_eq!(resp.status(), 200);
        let remaining: u64 = header(&resp, "x-ratelimit-remaining-tokens")
            .parse()
            .unwrap();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(
            answer["usage"]["prompt_tokens"], expected,
            "{}",
            case["model"]
        );
        billed += expected;
        let charged = billed + 16 * server.stats().accepted;
        // The bucket refills while the test runs (TPM/60 a second).
        let refill = (started.elapsed().as_secs_f64() * TPM as f64 / 60.0).ceil() as u64 + 1;
        assert!(
            remaining + charged >= TPM && remaining + charged <= TPM + refill,
            "remaining {remaining}, charged {charged}, refill up to {refill}"
        );
    }
    assert_eq!(server.stats().prompt_tokens, billed);
    server.shutdown().await.unwrap();
}
