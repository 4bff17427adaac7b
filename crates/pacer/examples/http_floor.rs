//! The floor under `pacer run`'s per-request cost: the same requests sent
//! with the same HTTP client (reqwest, rustls, HTTP/1.1, the same
//! concurrency) and nothing else: no state, no pacing, no output. What
//! `bench/run/per_request.sh` measures minus this is pacer's own cost.
//!
//!   cargo run --release --example http_floor -- INPUT.jsonl URL CONCURRENCY
//!
//! URL is the full endpoint (http://127.0.0.1:PORT/v1/chat/completions).
//! Loopback only: it refuses any other host.

use std::sync::Arc;

use tokio::sync::Semaphore;

#[derive(serde::Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, url, concurrency] = &args[..] else {
        eprintln!("usage: http_floor INPUT.jsonl URL CONCURRENCY");
        std::process::exit(2);
    };
    assert!(url.starts_with("http://127.0.0.1:"), "loopback only");
    let concurrency: usize = concurrency.parse().expect("a number");
    let text = std::fs::read_to_string(input).expect("the input");
    let bodies: Vec<bytes::Bytes> = text
        .lines()
        .map(|l| {
            let line: Line<'_> = serde_json::from_str(l).expect("a batch line");
            bytes::Bytes::copy_from_slice(line.body.get().as_bytes())
        })
        .collect();
    drop(text);
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let url = reqwest::Url::parse(url).expect("a URL");
    let permits = Arc::new(Semaphore::new(concurrency));
    let start = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies.iter().cloned() {
        let permit = permits.clone().acquire_owned().await.expect("open");
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-floor")
                .body(body)
                .send()
                .await
                .expect("an answer");
            let ok = resp.status().is_success();
            let _ = resp.bytes().await.expect("a body");
            drop(permit);
            ok
        });
        while let Some(done) = tasks.try_join_next() {
            assert!(done.expect("a task"), "a request failed");
        }
    }
    while let Some(done) = tasks.join_next().await {
        assert!(done.expect("a task"), "a request failed");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} requests in {secs:.2} s = {:.0} req/s",
        bodies.len(),
        bodies.len() as f64 / secs
    );
}
