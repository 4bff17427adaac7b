//! Cost: known while running, capped on request.

use pacer_mock::MockConfig;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_stops_resumably_and_never_passes_the_cap() {
    let env = Env::new(MockConfig {
        latency: 5,
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 1_000);
    // Each request costs at most about 20 prompt tokens at $0.15/M plus 50
    // completion tokens at $0.60/M: ~$0.000033, so $0.01 buys ~300.
    let cap = 0.01;
    let out = env
        .run(&[
            "run",
            "jobs.jsonl",
            "--json",
            "--max-cost",
            "0.01",
            "--concurrency",
            "16",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("budget") || stderr(&out).contains("cost"),
        "{}",
        stderr(&out)
    );
    let s = summary(&out);
    let spent = s["cost_usd"].as_f64().unwrap();
    assert!(spent <= cap + 1e-12, "spent {spent} over the cap {cap}");
    assert!(spent > cap * 0.5, "stopped too early: {spent}");
    // pacer's own figure could be wrong in a way that keeps it under the cap;
    // the provider's bill (gpt-4o-mini: $0.15/M in, $0.60/M out, from the
    // simulator's own counts) is what the cap is about.
    let stats = env.stats();
    let billed = (stats.prompt_tokens as f64 * 0.15 + stats.completion_tokens as f64 * 0.60) / 1e6;
    assert!(
        billed <= cap + 1e-9,
        "the provider billed {billed}, over the cap {cap}"
    );
    // pacer reconciles with each answer's usage, so the two agree to within
    // one request (~$0.000033) answered as the run stopped.
    assert!(
        (billed - spent).abs() <= 0.000035,
        "pacer says {spent} spent, the provider billed {billed}"
    );
    let done = s["succeeded"].as_u64().unwrap();
    assert!(done > 0 && done < 1_000, "{s}");
    assert_eq!(
        read_results(&env.path("jobs.results.jsonl")).len() as u64,
        done
    );

    // Resumed with a higher cap, the run finishes, sending nothing twice.
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--max-cost", "1"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(read_results(&env.path("jobs.results.jsonl")).len(), 1_000);
    assert_eq!(env.stats().duplicate_successes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_costs_unknown_never_zero() {
    let env = Env::new(MockConfig::default()).await;
    let line = r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"my-private-model","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}"#;
    std::fs::write(env.path("jobs.jsonl"), format!("{line}\n")).unwrap();
    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["cost_unknown"], true);
    assert_eq!(s["by_model"][0]["model"], "my-private-model", "{s}");
    assert!(
        s["by_model"][0]["cost_usd"].is_null(),
        "unknown, not $0: {s}"
    );
    assert!(stderr(&out).contains("unknown"), "{}", stderr(&out));
    // And a budget cannot be kept for it: refused before anything is sent.
    let out = env
        .run(&["run", "jobs.jsonl", "--restart", "--max-cost", "1"])
        .await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("my-private-model"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.chats(), 1);
}
