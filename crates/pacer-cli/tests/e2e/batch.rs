//! `pacer run` on OpenAI Batch files: results, crashes, stops, faults, bad input.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use pacer_mock::{MockConfig, RetryAfterStyle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_belongs_to_its_own_request_exactly_once() {
    let env = Env::new(MockConfig {
        latency: 5,
        latency_tail: true,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 300);
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--concurrency", "16"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let s = summary(&out);
    assert_eq!(s["succeeded"], 300);
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["by_model"][0]["model"], "gpt-4o-mini", "{s}");
    assert_eq!(s["by_model"][0]["requests"], 300, "{s}");
    assert!(s["by_model"][0]["cost_usd"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(env.stats().duplicate_requests, 0, "nothing was sent twice");
    // Rerunning a finished job sends nothing.
    let again = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(env.chats(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_then_rerun_finishes_with_every_line_once() {
    let env = Env::new(MockConfig {
        latency: 20,
        latency_tail: true,
        seed: Some(3),
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 600);
    let concurrency = 8u64;
    let mut kills = 0u64;
    let mut checked = 0;
    // Kill at moments spread over the run (deterministic but varied).
    for (round, wait_ms) in [150u64, 420, 90, 700, 260].into_iter().enumerate() {
        let mut child = env
            .pacer()
            .args([
                "run",
                "jobs.jsonl",
                "--concurrency",
                &concurrency.to_string(),
                "--progress",
                "none",
            ])
            .spawn()
            .expect("spawn pacer");
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match child.try_wait().expect("poll child") {
            Some(status) => panic!("round {round}: pacer ended before the kill: {status:?}"),
            None => {
                child.kill().await.expect("SIGKILL");
                kills += 1;
            }
        }
        // Whatever the moment, the output never holds a partial line after recovery.
        if assert_recovered_output_is_whole(&env, &input) {
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} kills left a state to recover");
    let out = env
        .run(&[
            "run",
            "jobs.jsonl",
            "--json",
            "--concurrency",
            &concurrency.to_string(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert!(
        stats.duplicate_successes <= kills * concurrency,
        "re-sent {} requests that had been answered, more than the {} that could be in flight at {kills} kills",
        stats.duplicate_successes,
        kills * concurrency
    );
    let s = summary(&out);
    assert!(s["resent"].as_u64().unwrap() <= kills * concurrency, "{s}");
}

/// After a kill, runs the start-up recovery the next run would run (the
/// engine's own, idempotent), then checks the output: it ends with a whole
/// line, every line is a result of this input for its own request, no id is
/// there twice, and there is exactly one line per request the state file
/// counts as finished. Returns false when the kill came before any state.
fn assert_recovered_output_is_whole(env: &Env, input: &Path) -> bool {
    let state = env.path("jobs.results.pacer.db");
    let output = env.path("jobs.results.jsonl");
    if !state.exists() {
        return false;
    }
    let mut store = pacer::store::JobStore::open(&state).expect("open the state");
    store.recover(&output).expect("recover");
    let finished = store.counts().expect("counts");
    drop(store);

    let inputs = read_input(input);
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line survived recovery: {:?}",
        &text[text.rfind('\n').map_or(0, |i| i + 1)..]
    );
    let mut seen = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line}"));
        let id = v["custom_id"].as_str().expect("custom_id");
        assert!(seen.insert(id.to_owned()), "{id} is in the output twice");
        let req = inputs
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not an input id"));
        let expected = pacer_mock::expected_reply(req["url"].as_str().unwrap(), &req["body"]);
        assert_eq!(
            v["response"]["body"]["choices"][0]["message"]["content"],
            expected.as_str(),
            "{id}: the line is not this request's answer"
        );
    }
    assert_eq!(
        seen.len() as u64,
        finished.done + finished.failed,
        "lines in the output vs requests the state counts finished"
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stops_the_run_after_at_most_the_concurrency_limit() {
    let env = Env::new(MockConfig {
        latency: 10,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 10_000);
    let wrong_key = |c: &mut tokio::process::Command| {
        c.env("OPENAI_API_KEY", "sk-wrong-key-123456");
    };
    // The key check before the first request: a wrong key costs one request.
    let out = env
        .run_with(
            &["run", "jobs.jsonl", "--concurrency", "20", "--json"],
            wrong_key,
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("API key was rejected (401): check $OPENAI_API_KEY"),
        "{err}"
    );
    assert!(
        !err.contains("sk-wrong-key-123456"),
        "the key leaked: {err}"
    );
    assert_eq!(env.stats().requests, 1, "only the key check went out");
    // Without the check, no more than the concurrency limit.
    let out = env
        .run_with(
            &["run", "jobs.jsonl", "--concurrency", "20", "--no-verify"],
            wrong_key,
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(env.chats() <= 20, "sent {} requests", env.chats());
    assert!(
        stderr(&out).contains("check $OPENAI_API_KEY"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("sk-wrong-key-123456"));
    // Nothing finished, nothing lost: the right key resumes.
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--concurrency", "64"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_results(&env.path("jobs.results.jsonl")).len(), 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_quota_stops_the_run_at_once() {
    let env = Env::new(MockConfig {
        quota: Some(50),
        latency: 5,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 2_000);
    let out = env
        .run(&["run", "jobs.jsonl", "--concurrency", "10", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("quota"), "{}", stderr(&out));
    assert!(env.chats() <= 50 + 10, "sent {}", env.chats());
    let s = summary(&out);
    assert_eq!(s["succeeded"], 50);
    assert_eq!(read_results(&env.path("jobs.results.jsonl")).len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_is_named_and_nothing_is_sent() {
    let env = Env::new(MockConfig::default()).await;
    let mut text = String::new();
    for i in 1..=10_000 {
        if i == 5_000 {
            text.push_str("{\"custom_id\": \"broken\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": {\n");
        } else {
            text.push_str(&chat_line(&format!("r{i}"), 20));
            text.push('\n');
        }
    }
    std::fs::write(env.path("jobs.jsonl"), text).unwrap();
    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("jobs.jsonl:5000"), "{}", stderr(&out));
    assert_eq!(env.stats().requests, 0);
    assert!(
        !env.path("jobs.results.pacer.db").exists(),
        "a failed import leaves no state"
    );

    // A duplicate custom_id too.
    let dup = format!(
        "{}\n{}\n{}\n",
        chat_line("a", 5),
        chat_line("b", 5),
        chat_line("a", 5)
    );
    std::fs::write(env.path("dup.jsonl"), dup).unwrap();
    let out = env.run(&["run", "dup.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("dup.jsonl:3"), "{}", stderr(&out));
    assert_eq!(env.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_input_is_refused_and_restart_starts_over() {
    let env = Env::new(MockConfig::default()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 20);
    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // One request edited (appending would be fine: that is a growing job).
    let text = std::fs::read_to_string(&input).unwrap();
    std::fs::write(
        &input,
        text.replacen("document r00003", "document r00003, again", 1),
    )
    .unwrap();
    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("changed"), "{}", stderr(&out));
    assert_eq!(env.chats(), 20);
    let out = env.run(&["run", "jobs.jsonl", "--restart"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    assert_eq!(env.chats(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_overloads_resets_and_hangs_all_end_in_success() {
    let env = Env::new(MockConfig {
        error_rate: 0.1,
        overload_rate: 0.05,
        reset_rate: 0.05,
        hang_rate: 0.03,
        seed: Some(11),
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 300);
    let out = env
        .run(&[
            "run",
            "jobs.jsonl",
            "--json",
            "--timeout",
            "300ms",
            "--max-retries",
            "12",
            "--concurrency",
            "32",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert!(
        status_count(&stats, 529) > 0 && stats.hangs > 0 && stats.resets > 0,
        "{stats:?}"
    );
    assert!(summary(&out)["retries"].as_u64().unwrap() > 0);
}

async fn rate_limited_run_succeeds(style: RetryAfterStyle) {
    let env = Env::new(MockConfig {
        rpm: Some(600),
        burst: Some(5),
        retry_after: style,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 30);
    // No --rpm: pacer meets the limit through 429s and the headers it may get.
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--concurrency", "8"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{style:?}: {}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retry_after_style_ends_in_success() {
    for style in [
        RetryAfterStyle::Seconds,
        RetryAfterStyle::Ms,
        RetryAfterStyle::HttpDate,
        RetryAfterStyle::None,
    ] {
        rate_limited_run_succeeds(style).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_for_good_requests_keep_their_answer_and_exit_1() {
    let env = Env::new(MockConfig::default()).await;
    let good = chat_line("good", 5);
    // No messages: the simulator answers 400, a client error no retry fixes.
    let bad = r#"{"custom_id":"bad","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}"#;
    std::fs::write(env.path("jobs.jsonl"), format!("{good}\n{bad}\n")).unwrap();
    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let results = read_results(&env.path("jobs.results.jsonl"));
    assert_eq!(results["good"]["response"]["status_code"], 200);
    let bad = &results["bad"];
    assert_eq!(bad["response"]["status_code"], 400, "{bad}");
    assert_eq!(
        bad["response"]["body"]["error"]["type"], "invalid_request_error",
        "{bad}"
    );
    assert_eq!(env.chats(), 2, "a client error is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_saves_and_resumes() {
    let env = Env::new(MockConfig {
        latency: 30,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 400);
    let child = env
        .pacer()
        .args(["run", "jobs.jsonl", "--concurrency", "4", "--json"])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&out);
    assert!(s["pending"].as_u64().unwrap() > 0, "{s}");
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--concurrency", "32"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    assert_eq!(
        env.stats().duplicate_successes,
        0,
        "a graceful stop re-sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_progress_from_the_state_file() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 12);
    let out = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = env
        .run(&["status", "jobs.results.pacer.db", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (
            s["total"].as_u64(),
            s["done"].as_u64(),
            s["pending"].as_u64()
        ),
        (Some(12), Some(12), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_64() {
    let env = Env::new(MockConfig::default()).await;
    let out = env.run(&["run"]).await;
    assert_eq!(out.status.code(), Some(64));
    let out = env.run(&["run", "missing.jsonl"]).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("missing.jsonl"), "{}", stderr(&out));
    let out = env.run(&["run", "x.jsonl", "--rpm", "-3"]).await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_anthropic_key_names_the_anthropic_variable() {
    let env = Env::new(MockConfig::default()).await;
    let lines: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"custom_id":"a{i}","method":"POST","url":"/v1/messages?beta=true","body":{{"model":"claude-3-5-haiku-latest","max_tokens":16,"messages":[{{"role":"user","content":"hi {i}"}}]}}}}"#
            )
        })
        .collect();
    std::fs::write(env.path("claude.jsonl"), lines.join("\n") + "\n").unwrap();
    for verify in [true, false] {
        let mut args = vec!["run", "claude.jsonl", "--provider", "anthropic"];
        if !verify {
            args.push("--no-verify");
        }
        let out = env
            .run_with(&args, |c| {
                c.env("ANTHROPIC_API_KEY", "sk-ant-wrong-987")
                    .env("ANTHROPIC_BASE_URL", env.mock.base_url());
            })
            .await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("check $ANTHROPIC_API_KEY"), "{err}");
        assert!(!err.contains("OPENAI_API_KEY"), "{err}");
        assert!(!err.contains("sk-ant-wrong-987"), "the key leaked: {err}");
    }
}
