//! `pacer run --via batch` against the simulator's batch APIs (OpenAI's
//! Files + Batch API, Anthropic's Message Batches): the same output and
//! guarantees as a live run at half the price; a kill at any phase never
//! creates a batch twice; expired lines and the enqueued-token limit are
//! waited out, not failed.

use std::path::Path;
use std::time::{Duration, Instant};

use pacer_mock::MockConfig;
use serde_json::{json, Value};

use crate::support::*;

const STATE: &str = "jobs.results.pacer.db";

/// Fast batches: validating and finalizing take 20 ms, 2,000 lines a second.
fn fast() -> MockConfig {
    MockConfig {
        batch_speed: 2000.0,
        batch_phase: 20,
        seed: Some(7),
        ..MockConfig::default()
    }
}

/// `run jobs.jsonl --via batch` with a short poll and `max_lines` a batch.
fn batch_args(max_lines: usize) -> Vec<String> {
    [
        "run",
        "jobs.jsonl",
        "--via",
        "batch",
        "--poll-interval",
        "100ms",
        "--batch-max-lines",
        &max_lines.to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The job's batches as `pacer status --json` lists them.
async fn batches(env: &Env) -> Vec<Value> {
    let out = env.run(&["status", STATE, "--json"]).await;
    if out.status.code() != Some(0) {
        return Vec::new(); // not made yet
    }
    summary(&out)["batches"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn states(batches: &[Value]) -> Vec<String> {
    batches
        .iter()
        .map(|b| b["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Waits (up to 90 s: a debug build's start-up, tokenizer included, under a
/// loaded CI machine) until `ok()` holds; a timeout shows the job's batches
/// and the simulator's counts.
async fn wait_until(env: &Env, what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ok().await {
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}: batches {:?}, simulator {:?}",
                batches(env).await,
                env.stats()
            );
        }
        // Each look is a `pacer status` process: not too many of them.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Live list prices of gpt-4o-mini, USD per token.
const MINI_IN: f64 = 0.15e-6;
const MINI_OUT: f64 = 0.60e-6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_requests_go_in_several_batches_each_once_at_half_the_price() {
    let env = Env::new(fast()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 3000);
    let results = env.path("jobs.results.jsonl");
    let out = env.run(&args(&batch_args(500))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &results);

    let stats = env.stats();
    assert_eq!(stats.files_uploaded, 6, "{stats:?}");
    assert_eq!(stats.batches_created, 6, "{stats:?}");
    assert_eq!(stats.duplicate_batch_inputs, 0);
    assert_eq!(stats.duplicate_batch_successes, 0);
    assert_eq!(stats.batch_lines, 3000);
    assert_eq!(env.chats(), 0, "nothing went live");

    // Costed at batch prices: half of what the same tokens cost live.
    let s = summary(&out);
    let prompt = s["prompt_tokens"].as_u64().unwrap();
    let completion = s["completion_tokens"].as_u64().unwrap();
    assert_eq!(prompt, stats.batch_prompt_tokens);
    assert_eq!(completion, stats.batch_completion_tokens);
    let live = prompt as f64 * MINI_IN + completion as f64 * MINI_OUT;
    let cost = s["cost_usd"].as_f64().unwrap();
    assert!((cost - live / 2.0).abs() < 1e-9, "{cost} vs live {live}");
    // Within what `pacer estimate` said the batch route would cost.
    let est = summary(&env.run(&["estimate", "jobs.jsonl", "--json"]).await);
    let (lo, hi) = (
        est["batch_cost_min_usd"].as_f64().unwrap(),
        est["batch_cost_max_usd"].as_f64().unwrap(),
    );
    assert!(lo <= cost && cost <= hi, "{lo} <= {cost} <= {hi}");
    assert!((hi - est["cost_max_usd"].as_f64().unwrap() / 2.0).abs() < 1e-9);

    let b = batches(&env).await;
    assert_eq!(states(&b), vec!["done"; 6]);
    assert!(b.iter().all(|b| b["lines"] == 500 && b["api"] == "openai"));
    assert!(b
        .iter()
        .all(|b| b["batch_id"].as_str().unwrap().starts_with("batch_")));
    // The progress told each batch's story.
    let err = stderr(&out);
    assert_eq!(
        err.matches("submitted: 500 gpt-4o-mini requests").count(),
        6,
        "{err}"
    );
    assert_eq!(
        err.matches("results written (completed): 500 succeeded")
            .count(),
        6,
        "{err}"
    );

    // Done is done: a rerun sends nothing.
    let again = env.run(&args(&batch_args(500))).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(env.stats().batches_created, 6);
}

/// Runs the batch job with the driver held at `point`, waits until
/// `reached` says it is there, and kills it (SIGKILL).
async fn kill_at(env: &Env, point: &str, reached: impl AsyncFnMut() -> bool) {
    let mut child = env
        .pacer()
        .args(args(&batch_args(100)))
        .env("PACER_TEST_BATCH_PAUSE", point)
        .spawn()
        .expect("spawn pacer");
    wait_until(env, point, reached).await;
    // Let the driver reach its pause (the state is committed before it).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "pacer ended before the kill at {point}"
    );
    child.start_kill().expect("SIGKILL");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_while_uploading_creating_polling_and_downloading_never_create_a_batch_twice() {
    let env = Env::new(fast()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 400);
    let results = env.path("jobs.results.jsonl");

    // Planned: requests chosen, nothing sent.
    kill_at(&env, "planned", async || {
        states(&batches(&env).await) == ["planned"]
    })
    .await;
    assert_eq!(env.stats().files_uploaded, 0);
    // Uploaded, but the file's id never recorded: uploaded again.
    kill_at(&env, "uploaded", async || env.stats().files_uploaded == 1).await;
    assert_eq!(states(&batches(&env).await), ["planned"]);
    // Created, but the batch's id never recorded: the dangerous moment.
    kill_at(&env, "created", async || env.stats().batches_created == 1).await;
    let b = batches(&env).await;
    assert_eq!(states(&b), ["uploaded"]);
    assert!(
        b[0]["creating_at"].is_i64() && b[0]["batch_id"].is_null(),
        "{b:?}"
    );
    // Ended at the provider, nothing written; then half collected.
    kill_at(&env, "ended", async || {
        states(&batches(&env).await).contains(&"ended".into())
    })
    .await;
    let first = batches(&env).await;
    assert_eq!(
        first[0]["batch_id"]
            .as_str()
            .map(|s| s.starts_with("batch_")),
        Some(true),
        "the lost batch was adopted: {first:?}"
    );
    kill_at(&env, "collecting", async || lines_in(&results) >= 100).await;
    // Polling: a batch in progress at the provider.
    let slow_poll = {
        let mut a = batch_args(100);
        a[5] = "5s".into();
        a
    };
    let mut child = env.pacer().args(args(&slow_poll)).spawn().unwrap();
    wait_until(&env, "all batches submitted", async || {
        let s = states(&batches(&env).await);
        s.len() == 4 && s.iter().all(|s| s == "submitted" || s == "done")
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;

    let out = env.run(&args(&batch_args(100))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &results);
    let stats = env.stats();
    assert_eq!(
        stats.batches_created, 4,
        "each batch created once: {stats:?}"
    );
    assert_eq!(stats.duplicate_batch_inputs, 0, "{stats:?}");
    assert_eq!(stats.duplicate_batch_successes, 0, "{stats:?}");
    // Batch 1's file twice (the first upload's id was lost), the others once.
    assert_eq!(stats.files_uploaded, 5, "{stats:?}");
    assert_eq!(stats.batch_lines, 400);
    assert_eq!(states(&batches(&env).await), vec!["done"; 4]);
}

/// A Batch JSONL of `n` Anthropic Messages requests `a00000`...
fn anthropic_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({
                "custom_id": format!("a{i:05}"),
                "method": "POST",
                "url": "/v1/messages",
                "body": {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 40,
                    "messages": [{"role": "user", "content": format!("Summarise document a{i:05}.")}]
                }
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_anthropic_batch_is_found_by_its_time_and_size_not_created_again() {
    let env = Env::new(fast()).await;
    let input = env.path("jobs.jsonl");
    std::fs::write(&input, anthropic_lines(150)).unwrap();
    kill_at(&env, "created", async || {
        env.stats().message_batches_created == 1
    })
    .await;
    let out = env.run(&args(&batch_args(100))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert_eq!(stats.message_batches_created, 2, "{stats:?}");
    assert_eq!(stats.duplicate_batch_inputs, 0, "{stats:?}");
    assert_eq!(env.sent("/v1/messages"), 0, "nothing went live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_file_goes_to_both_batch_apis() {
    let env = Env::new(fast()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 200);
    let mut text = std::fs::read_to_string(&input).unwrap();
    text.push_str(&anthropic_lines(100));
    std::fs::write(&input, text).unwrap();
    let out = env.run(&args(&batch_args(100))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert_eq!(
        (stats.batches_created, stats.message_batches_created),
        (2, 1),
        "{stats:?}"
    );
    let b = batches(&env).await;
    let apis: Vec<&str> = b.iter().map(|b| b["api"].as_str().unwrap()).collect();
    assert_eq!(apis, ["openai", "openai", "anthropic"]);
    assert_eq!(b[2]["endpoint"], "/v1/messages");
    // The key went in headers only: not in the state, the output or a message.
    for file in [
        "jobs.results.pacer.db",
        "jobs.results.pacer.db-wal",
        "jobs.results.jsonl",
    ] {
        let bytes = std::fs::read(env.path(file)).unwrap_or_default();
        let key = pacer_mock::DEFAULT_KEY.as_bytes();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key),
            "{file} holds the key"
        );
    }
    assert!(!stderr(&out).contains(pacer_mock::DEFAULT_KEY));
    // Each model at its own batch price.
    let by_model = summary(&out)["by_model"].as_array().cloned().unwrap();
    assert_eq!(by_model.len(), 2);
    for m in by_model {
        let (p, c) = (
            m["prompt_tokens"].as_f64().unwrap(),
            m["completion_tokens"].as_f64().unwrap(),
        );
        let live = if m["model"] == "claude-sonnet-4-5" {
            p * 3e-6 + c * 15e-6
        } else {
            p * MINI_IN + c * MINI_OUT
        };
        assert!(
            (m["cost_usd"].as_f64().unwrap() - live / 2.0).abs() < 1e-9,
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lines_go_again_in_later_batches_and_finish() {
    // 100 lines a second and batches that expire after 1 s: about a third
    // of each 150-line batch expires.
    let env = Env::new(MockConfig {
        batch_speed: 100.0,
        batch_expire_after: Duration::from_secs(1),
        ..fast()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 300);
    let out = env.run(&args(&batch_args(150))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert!(stats.batches_created >= 3, "{stats:?}");
    assert_eq!(
        stats.batch_lines, 300,
        "each line processed once: {stats:?}"
    );
    assert_eq!(stats.duplicate_batch_successes, 0);
    let b = batches(&env).await;
    assert!(b.iter().any(|b| b["status"] == "expired"), "{b:?}");
    let s = summary(&out);
    assert_eq!(
        (s["succeeded"].as_u64(), s["failed"].as_u64()),
        (Some(300), Some(0))
    );
    assert!(
        stderr(&out).contains("to go again in a later batch"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enqueued_token_limit_defers_batches_until_others_end_never_failing_them() {
    // ~70 tokens a line (prompt + max_tokens 50): one 100-line batch fits
    // under the limit, two do not.
    // 200 lines a second: a batch is still enqueued when the next is made.
    let env = Env::new(MockConfig {
        batch_token_limit: Some(10_000),
        batch_speed: 200.0,
        ..fast()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 400);
    let out = env.run(&args(&batch_args(100))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let s = summary(&out);
    assert_eq!(s["failed"].as_u64(), Some(0));
    let stats = env.stats();
    assert!(stats.batches_created > 4, "some were refused: {stats:?}");
    assert_eq!(stats.batch_lines, 400);
    let err = stderr(&out);
    assert!(
        err.contains("deferred") && err.contains("token_limit_exceeded"),
        "{err}"
    );
    let b = batches(&env).await;
    assert!(b.iter().any(|b| b["state"] == "deferred"), "{b:?}");
    assert_eq!(
        b.iter().filter(|b| b["state"] == "done").count(),
        4,
        "{b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_batches_running_cancel_cancels_them_and_a_rerun_finishes() {
    // Slow batches: 50 lines take 12.5 s, long enough for the Ctrl-C, the
    // refused live run and the cancel to come first even on a loaded machine.
    let env = Env::new(MockConfig {
        batch_speed: 4.0,
        ..fast()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 100);
    let child = env.pacer().args(args(&batch_args(50))).spawn().unwrap();
    let pid = child.id().unwrap().to_string();
    wait_until(&env, "two batches submitted", async || {
        states(&batches(&env).await) == ["submitted", "submitted"]
    })
    .await;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("pacer stopped")
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pacer: 2 batches keep running at the provider: rerunning the same command picks them up (or `pacer cancel` cancels them)"),
        "{err}"
    );

    // A live run would pay for them twice: refused.
    let live = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(live.status.code(), Some(64), "{}", stderr(&live));
    assert!(
        stderr(&live).contains("2 batches of the job in") && stderr(&live).contains("--via batch"),
        "{}",
        stderr(&live)
    );
    assert_eq!(env.chats(), 0);

    let cancel = env.run(&["cancel", STATE, "--json"]).await;
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    let report = summary(&cancel);
    assert_eq!(
        report["cancelled"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(
        stderr(&cancel).contains("cancelling"),
        "{}",
        stderr(&cancel)
    );

    // The rerun writes what the cancelled batches finished and sends the rest.
    let out = env.run(&args(&batch_args(50))).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let stats = env.stats();
    assert!(stats.batches_created > 2, "{stats:?}");
    assert_eq!(stats.duplicate_batch_successes, 0, "{stats:?}");
    let b = batches(&env).await;
    assert!(
        b.iter().take(2).all(|b| b["status"] == "cancelled"),
        "{b:?}"
    );
    // Nothing left to cancel.
    let nothing = env.run(&["cancel", STATE]).await;
    assert_eq!(nothing.status.code(), Some(0));
    assert!(stderr(&nothing).contains("has no batch running at the provider"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_counts_a_batchs_worst_case_when_it_is_submitted() {
    let env = Env::new(fast()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 400);
    let cap = 0.002;
    let mut a = batch_args(100);
    a.extend(["--max-cost".to_string(), cap.to_string()]);
    let out = env.run(&args(&a)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&out);
    let spent = s["cost_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= cap, "{spent}");
    assert!(s["stop_reason"].as_str().unwrap().contains("budget"), "{s}");
    assert!(s["pending"].as_u64().unwrap() > 0);
    assert_eq!(env.stats().duplicate_batch_inputs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_errors_are_retried_or_failed_as_a_live_run_does() {
    // A fifth of the lines get a 500 in the batch; three bodies are invalid.
    let env = Env::new(MockConfig {
        batch_line_error_rate: 0.2,
        ..fast()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 200);
    let mut text = std::fs::read_to_string(&input).unwrap();
    for i in 0..3 {
        text.push_str(
            &json!({"custom_id": format!("bad{i}"), "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "max_tokens": 5}})
            .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&input, &text).unwrap();
    let out = env.run(&args(&batch_args(100))).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (s["succeeded"].as_u64(), s["failed"].as_u64()),
        (Some(200), Some(3))
    );
    assert!(s["retries"].as_u64().unwrap() > 0, "{s}");
    let results = read_results(&env.path("jobs.results.jsonl"));
    assert_eq!(results.len(), 203);
    let stats = env.stats();
    assert!(stats.batch_lines > 203, "500s were sent again: {stats:?}");
    assert_eq!(stats.duplicate_batch_successes, 0, "{stats:?}");

    // The same bad line, sent live, gives the same output line.
    let live = Env::new(MockConfig::default()).await;
    std::fs::write(
        live.path("jobs.jsonl"),
        text.lines().last().unwrap().to_string() + "\n",
    )
    .unwrap();
    let out = live.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let live_line = &read_results(&live.path("jobs.results.jsonl"))["bad2"];
    let batch_line = &results["bad2"];
    assert_eq!(batch_line["response"]["status_code"], 400);
    assert_eq!(
        batch_line["response"]["status_code"],
        live_line["response"]["status_code"]
    );
    assert_eq!(
        batch_line["response"]["body"],
        live_line["response"]["body"]
    );
    assert_eq!(batch_line["id"], live_line["id"]);
}
