//! Flags and environment values checked before anything is sent; how errors,
//! bugs, logs and progress reach stderr.

use std::process::Output;

use pacer_mock::MockConfig;
use serde_json::json;

use crate::support::*;

/// Asserts exit 64 with one line on stderr naming `name`, and that the
/// simulator received nothing. Returns the line.
fn refused(env: &Env, out: &Output, name: &str) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one sentence: {err}");
    assert!(lines[0].starts_with("pacer: "), "{err}");
    assert!(lines[0].contains(name), "names {name}: {err}");
    assert_eq!(env.stats().requests, 0, "nothing was sent");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_that_is_not_http_is_refused_before_anything_is_sent() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    for bad in [
        "not-a-url",
        "ftp://example.com/v1",
        "https://",
        "http://host:port/v1",
    ] {
        let out = env.run(&["run", "jobs.jsonl", "--base-url", bad]).await;
        let line = refused(&env, &out, "--base-url");
        assert!(line.contains("http:// or https://"), "{line}");
    }
    let out = env.run(&["verify", "--base-url", "not-a-url"]).await;
    refused(&env, &out, "--base-url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_from_the_environment_is_checked_naming_the_variable() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let out = env
        .run_with(&["run", "jobs.jsonl"], |c| {
            c.env("OPENAI_BASE_URL", "ftp://example.com/v1");
        })
        .await;
    refused(&env, &out, "$OPENAI_BASE_URL");

    std::fs::write(
        env.path("prompts.jsonl"),
        json!({"id": "a", "prompt": "Hello"}).to_string() + "\n",
    )
    .unwrap();
    let out = env
        .run_with(
            &[
                "run",
                "prompts.jsonl",
                "--provider",
                "anthropic",
                "--model",
                "claude-3-5-haiku-latest",
                "--max-tokens",
                "20",
            ],
            |c| {
                c.env("ANTHROPIC_API_KEY", pacer_mock::DEFAULT_KEY)
                    .env("ANTHROPIC_BASE_URL", "not-a-url");
            },
        )
        .await;
    refused(&env, &out, "$ANTHROPIC_BASE_URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_and_negative_durations_are_refused() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    for (flag, value) in [
        ("--timeout", "0"),
        ("--timeout", "0s"),
        ("--idle-timeout", "0ms"),
        ("--max-retry-time", "0"),
        ("--timeout", "-5s"),
        ("--timeout", "soon"),
    ] {
        let out = env.run(&["run", "jobs.jsonl", flag, value]).await;
        let line = refused(&env, &out, flag);
        assert!(line.contains(&format!("got {value}")), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_zero_rates_and_costs_are_refused_naming_the_flag() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let out = env.run(&["run", "jobs.jsonl", "--rpm", "-5"]).await;
    assert_eq!(
        refused(&env, &out, "--rpm"),
        "pacer: --rpm must be a positive number, got -5"
    );
    for (flag, value) in [
        ("--rps", "0"),
        ("--tpm", "-1"),
        ("--burst", "-2.5"),
        ("--concurrency", "0"),
        ("--concurrency", "-3"),
        ("--max-cost", "-1"),
        ("--max-cost", "inf"),
        ("--max-retries", "-1"),
        ("--max-tokens", "0"),
        ("--temperature", "-0.5"),
        ("--split-tokens", "-100"),
        ("--overlap", "-1"),
    ] {
        let out = env.run(&["run", "jobs.jsonl", flag, value]).await;
        let line = refused(&env, &out, flag);
        assert!(line.contains(&format!("got {value}")), "{line}");
    }
    let out = env.run(&["estimate", "jobs.jsonl", "--tpm", "-5"]).await;
    refused(&env, &out, "--tpm");
    let out = env.run(&["mock", "--rpm", "-5"]).await;
    refused(&env, &out, "--rpm");
    // No retries is a choice, not a mistake.
    let out = env.run(&["run", "jobs.jsonl", "--max-retries", "0"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_prints_its_os_error_once() {
    let env = Env::new(MockConfig::default()).await;
    let out = env.run(&["run", "/nonexistent.jsonl"]).await;
    let line = refused(&env, &out, "/nonexistent.jsonl");
    assert_eq!(line.matches("(os error 2)").count(), 1, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_exits_70_with_one_sentence_and_a_rerun_resumes() {
    let env = Env::new(MockConfig::default()).await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 20);
    let out = env
        .run_with(&["run", "jobs.jsonl"], |c| {
            c.env("PACER_TEST_PANIC", "1");
        })
        .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(70), "{err}");
    assert!(
        err.contains("pacer hit an internal error (a bug): PACER_TEST_PANIC is set"),
        "{err}"
    );
    assert!(err.contains("the state is safe, rerun to resume"), "{err}");
    assert!(!err.contains("panicked at"), "no raw panic report: {err}");
    let again = env.run(&["run", "jobs.jsonl"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_progress_carry_no_terminal_codes_when_stderr_is_not_a_terminal() {
    let env = Env::new(MockConfig::default()).await;
    // A model the provider does not list draws a warning from the key check.
    let line = json!({
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "not-a-listed-model", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    });
    std::fs::write(env.path("jobs.jsonl"), line.to_string() + "\n").unwrap();
    let out = env.run(&["run", "jobs.jsonl"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("does not list model"),
        "a warning was logged: {err}"
    );
    assert!(!err.contains("\x1b["), "no colour codes: {err:?}");
    assert!(!err.contains('\r'), "no bar redraws: {err:?}");
    assert!(err.contains("pacer: 1/1 done"), "plain progress: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_help_documents_every_flag() {
    let env = Env::new(MockConfig::default()).await;
    let out = env.run(&["run", "--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    // The synopsis in README.md's `pacer run` section.
    for flag in [
        "--output",
        "--base-url",
        "--api-key-env",
        "--rpm",
        "--rps",
        "--tpm",
        "--burst",
        "--concurrency",
        "--max-retries",
        "--max-retry-time",
        "--timeout",
        "--idle-timeout",
        "--state",
        "--restart",
        "--json",
        "--progress",
        "--model",
        "--max-tokens",
        "--temperature",
        "--provider",
        "--template",
        "--split-tokens",
        "--overlap",
        "--stream",
        "--max-cost",
        "--prices",
        "--no-verify",
        "--simulate",
    ] {
        assert!(help.contains(flag), "{flag} is missing from run --help");
    }
}
