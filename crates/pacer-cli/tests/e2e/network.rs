//! `pacer run` against addresses that misbehave at the HTTP level: redirects,
//! oversized answers, nothing listening, a provider that goes away. Each test
//! has its own tiny HTTP server on 127.0.0.1 (not the simulator) so that it
//! can count every connection made to it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pacer_mock::MockConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::*;

/// The key every test plants; it must reach no one but the address given.
const KEY: &str = "sk-planted-e2e-key";

/// A server that answers every request with one canned reply and closes the
/// connection; after `max_conns` connections it stops listening (so later
/// connections are refused).
struct Canned {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl Canned {
    async fn start(reply: Vec<u8>, max_conns: Option<usize>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let reply = reply.clone();
                tokio::spawn(async move {
                    read_request(&mut sock).await;
                    let _ = sock.write_all(&reply).await;
                    let _ = sock.shutdown().await;
                });
                if max_conns.is_some_and(|m| n >= m) {
                    return; // drops the listener
                }
            }
        });
        Canned { addr, conns }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// Reads one request: its head and its Content-Length body (at most 1 MiB).
async fn read_request(sock: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while buf.len() < 1 << 20 {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn reply(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut r = head.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A port on 127.0.0.1 with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// A batch of `n` Anthropic Messages requests (sent with `x-api-key`).
fn write_anthropic_batch(dir: &Path, name: &str, n: usize) {
    let mut text = String::new();
    for i in 0..n {
        let line = json!({
            "custom_id": format!("m{i:03}"),
            "method": "POST",
            "url": "/v1/messages",
            "body": {
                "model": "claude-3-5-haiku-latest",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": format!("say {i}")}]
            }
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(dir.join(name), text).expect("write input");
}

/// `pacer run ARGS` aimed at `base_url` with the planted key; returns the
/// output and how long it took.
async fn run_at(env: &Env, base_url: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = env
        .run_with(args, |cmd| {
            cmd.env("OPENAI_API_KEY", KEY)
                .env("OPENAI_BASE_URL", base_url);
        })
        .await;
    (out, start.elapsed())
}

/// `pacer status --json` in the test's folder.
async fn status(env: &Env) -> Value {
    let out = env.run(&["status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn result_lines(env: &Env, name: &str) -> usize {
    std::fs::read_to_string(env.path(name))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Every request is still pending, none failed, nothing was written.
async fn assert_all_pending(env: &Env, results: &str, n: u64) {
    assert_eq!(result_lines(env, results), 0, "no result may be written");
    let s = status(env).await;
    assert_eq!(s["pending"], n, "{s}");
    assert_eq!(s["failed"], 0, "{s}");
    assert_eq!(s["done"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_elsewhere_stops_the_run_and_nothing_reaches_the_other_host() {
    // `elsewhere` would answer 200 to anything: what a hijacked endpoint does.
    let elsewhere = Canned::start(
        reply("200 OK", &[("content-type", "application/json")], b"{}"),
        None,
    )
    .await;
    let target = format!("{}/v1/stolen", elsewhere.url());
    let location = format!("http://user:pw@{}/v1/stolen?token=abc", elsewhere.addr);
    let redirector = Canned::start(
        reply("307 Temporary Redirect", &[("location", &location)], b""),
        None,
    )
    .await;
    let sentence = format!(
        "the provider answered 307 redirecting to {target}; pacer follows no redirects: set --base-url to the final address"
    );

    // The key check (GET /v1/models, with x-api-key: Anthropic lines) meets it first.
    let env = Env::new(MockConfig::default()).await;
    write_anthropic_batch(env.dir.path(), "claude.jsonl", 4);
    let (out, _) = run_at(
        &env,
        &redirector.url(),
        &["run", "claude.jsonl", "--progress", "none"],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&sentence), "{err}");
    assert!(
        !err.contains("token=") && !err.contains("user:pw") && !err.contains(KEY),
        "{err}"
    );
    assert_eq!(redirector.conns(), 1, "only the key check was sent");
    assert_all_pending(&env, "claude.results.jsonl", 4).await;

    // Without the check, the first request meets it, and the run stops there.
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 20);
    let (out, _) = run_at(
        &env,
        &redirector.url(),
        &[
            "run",
            "jobs.jsonl",
            "--no-verify",
            "--concurrency",
            "1",
            "--progress",
            "none",
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&sentence), "{err}");
    assert!(
        redirector.conns() <= 3,
        "the run went on after the redirect: {}",
        redirector.conns()
    );
    assert_all_pending(&env, "jobs.results.jsonl", 20).await;

    assert_eq!(elsewhere.conns(), 0, "the other host received a connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_max_response_bytes_fails_its_request_for_good_once() {
    let limit = 2048usize;
    let mut body = br#"{"id":"x","object":"chat.completion","pad":""#.to_vec();
    body.resize(limit - 2, b'a');
    body.extend_from_slice(b"\"}"); // valid JSON of limit bytes...
    body.push(b'\n'); // ...plus one
    assert_eq!(body.len(), limit + 1);
    let server = Canned::start(
        reply("200 OK", &[("content-type", "application/json")], &body),
        None,
    )
    .await;
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let (out, _) = run_at(
        &env,
        &server.url(),
        &[
            "run",
            "jobs.jsonl",
            "--no-verify",
            "--max-response-bytes",
            &limit.to_string(),
            "--progress",
            "none",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = read_results(&env.path("jobs.results.jsonl"));
    assert_eq!(results.len(), 3);
    for (id, line) in &results {
        assert!(line["response"].is_null(), "{id}: {line}");
        assert_eq!(line["error"]["code"], "response_too_large", "{id}: {line}");
        assert_eq!(
            line["error"]["message"],
            format!("the answer was larger than --max-response-bytes ({limit} bytes)")
        );
    }
    assert_eq!(server.conns(), 3, "a too-large answer is not retried");
    let s = status(&env).await;
    assert_eq!(s["failed"], 3, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_stops_within_seconds_and_everything_stays_pending() {
    let port = closed_port().await;
    let base = format!("http://{port}/v1");
    for (check, url) in [(true, "/v1/models"), (false, "/v1/chat/completions")] {
        let env = Env::new(MockConfig::default()).await;
        write_batch(env.dir.path(), "jobs.jsonl", 10);
        let mut args = vec!["run", "jobs.jsonl", "--progress", "none"];
        if !check {
            args.push("--no-verify");
        }
        let (out, took) = run_at(&env, &base, &args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(took < Duration::from_secs(20), "took {took:?}");
        assert!(
            err.contains(&format!(
                "could not connect to http://{port}{url}: connection refused; check --base-url, then rerun the same command"
            )),
            "{err}"
        );
        assert!(!err.contains(KEY), "{err}");
        assert_all_pending(&env, "jobs.results.jsonl", 10).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_gone_mid_run_leaves_its_requests_pending_not_failed() {
    // It answers the key check, then stops listening.
    let server = Canned::start(
        reply(
            "200 OK",
            &[("content-type", "application/json")],
            br#"{"data":[]}"#,
        ),
        Some(1),
    )
    .await;
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let (out, took) = run_at(
        &env,
        &server.url(),
        &[
            "run",
            "jobs.jsonl",
            "--max-retries",
            "1",
            "--max-retry-time",
            "5s",
            "--progress",
            "none",
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        err.contains(&format!(
            "the provider at {}/v1/chat/completions has been unreachable for",
            server.url()
        )),
        "{err}"
    );
    assert!(err.contains("(connection refused)"), "{err}");
    assert_eq!(server.conns(), 1);
    assert_all_pending(&env, "jobs.results.jsonl", 3).await;
}
