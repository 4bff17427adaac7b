//! Helpers for talking to an in-process simulator over real HTTP.
#![allow(dead_code)]

use std::time::Duration;

use pacer_mock::{MockConfig, MockServer, DEFAULT_KEY};
use serde_json::{json, Value};

/// Start a simulator on a free loopback port.
pub async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config)
        .await
        .expect("the simulator starts")
}

/// A client without connection pooling: pooled connections arm an idle
/// timer, and under tokio's paused clock any armed timer lets the clock jump.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A chat request with one user message.
pub fn chat_body(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], "max_tokens": 50})
}

/// An Anthropic Messages request.
pub fn messages_body(content: &str) -> Value {
    json!({"model": "claude-3-5-haiku-latest", "max_tokens": 50, "system": "Be brief.",
           "messages": [{"role": "user", "content": content}]})
}

/// POST `body` to `path` (e.g. `/chat/completions`) with the default key.
pub async fn post(server: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    post_with_key(server, path, body, Some(DEFAULT_KEY)).await
}

/// POST with `key` as a bearer token (or no key at all).
pub async fn post_with_key(
    server: &MockServer,
    path: &str,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}{path}", server.base_url()))
        .json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("the request is answered")
}

/// A header as a string (panics when absent, naming it).
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing; got {:?}", resp.headers()))
        .to_str()
        .unwrap()
}

/// Parse OpenAI's Go-style duration (`20ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`),
/// or `None` when it is not well formed.
pub fn parse_openai_duration(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(Duration::from_millis);
    }
    let mut rest = s.strip_suffix('s')?;
    let mut total = 0.0;
    for (unit, secs) in [('h', 3600.0), ('m', 60.0)] {
        if let Some((n, tail)) = rest.split_once(unit) {
            total += n.parse::<u64>().ok()? as f64 * secs;
            rest = tail;
        }
    }
    let secs: f64 = rest.parse().ok()?;
    if secs < 0.0 || (total > 0.0 && secs >= 60.0) {
        return None;
    }
    Some(Duration::from_secs_f64(total + secs))
}

/// The `data:` payloads of a server-sent-events body, with their event names.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, data)
        })
        .collect()
}

#[test]
fn duration_parser_accepts_only_go_durations() {
    assert_eq!(
        parse_openai_duration("20ms"),
        Some(Duration::from_millis(20))
    );
    assert_eq!(
        parse_openai_duration("1m30.5s"),
        Some(Duration::from_millis(90_500))
    );
    assert_eq!(
        parse_openai_duration("6m0s"),
        Some(Duration::from_secs(360))
    );
    assert_eq!(
        parse_openai_duration("1h0m0s"),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(parse_openai_duration("1.2"), None);
    assert_eq!(parse_openai_duration("1m61s"), None);
}
