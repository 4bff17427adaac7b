//! `--stream`: reassembled bodies, cut streams and idle timeouts.

use pacer_mock::MockConfig;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_reassembled_and_cut_streams_retried() {
    let env = Env::new(MockConfig {
        stream_cut_rate: 0.3,
        seed: Some(5),
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 100);
    let out = env
        .run(&[
            "run",
            "jobs.jsonl",
            "--json",
            "--stream",
            "--max-retries",
            "20",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    assert!(env.stats().stream_cuts > 0);
    let results = read_results(&env.path("jobs.results.jsonl"));
    for r in results.values() {
        let body = &r["response"]["body"];
        assert_eq!(body["object"], "chat.completion", "{body}");
        assert!(
            body["usage"]["completion_tokens"].as_u64().is_some(),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_hits_the_idle_timeout_and_is_never_a_success() {
    let env = Env::new(MockConfig {
        chunk_delay: 400,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let out = env
        .run(&[
            "run",
            "jobs.jsonl",
            "--json",
            "--stream",
            "--idle-timeout",
            "100ms",
            "--max-retries",
            "1",
            "--max-retry-time",
            "2s",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = read_results(&env.path("jobs.results.jsonl"));
    assert_eq!(results.len(), 3);
    for r in results.values() {
        assert!(r["response"].is_null(), "{r}");
        assert_eq!(r["error"]["code"], "timeout", "{r}");
    }
    // Stalls look like an outage: the circuit opens and probes, and each
    // request is given up after --max-retry-time, not hammered meanwhile.
    let sent = env.chats();
    assert!((6..=20).contains(&sent), "sent {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_are_reassembled_too() {
    let env = Env::new(MockConfig {
        stream_cut_rate: 0.2,
        seed: Some(9),
        ..MockConfig::default()
    })
    .await;
    let lines: Vec<String> = (0..30)
        .map(|i| {
            serde_json::json!({"custom_id": format!("a{i}"), "method": "POST", "url": "/v1/messages", "body": {
                "model": "claude-haiku-4-5", "max_tokens": 60,
                "messages": [{"role": "user", "content": format!("Summarise page {i}.")}]}})
            .to_string()
        })
        .collect();
    std::fs::write(env.path("claude.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = env
        .run(&[
            "run",
            "claude.jsonl",
            "--json",
            "--stream",
            "--max-retries",
            "20",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&env.path("claude.jsonl"), &env.path("claude.results.jsonl"));
    for r in read_results(&env.path("claude.results.jsonl")).values() {
        let body = &r["response"]["body"];
        assert_eq!(body["type"], "message", "{body}");
        assert!(
            body["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{body}"
        );
    }
    assert!(env.stats().stream_cuts > 0);
}
