//! Adaptive pacing: limits learned from headers and from 429s, and outages
//! ridden out by the circuit breaker. Runs are scaled down from the issue's
//! figures to keep the suite fast; the full-size figures are benchmarks
//! (docs/BENCHMARKS.md).

use std::time::Duration;

use pacer_mock::{MockConfig, Outage};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_headers_are_followed_with_no_flags() {
    // 1,200 rpm in a one-minute bucket, announced in headers.
    let env = Env::new(MockConfig {
        rpm: Some(1200),
        latency: 5,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 1_500);
    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let s = summary(&out);
    assert_eq!(s["pace_source"], "headers", "{s}");
    assert_eq!(s["pace_rpm"], 1200.0, "{s}");
    let limited = status_count(&env.stats(), 429);
    assert!(limited <= 15, "{limited} answers were 429 (1% is 15)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_limit_is_learned_from_429s_alone() {
    // 1,200 rpm, a one-second bucket, no rate-limit headers at all.
    let env = Env::new(MockConfig {
        rpm: Some(1200),
        burst: Some(20),
        hide_headers: true,
        latency: 20,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 500);
    let out = env.run(&["run", "jobs.jsonl", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let s = summary(&out);
    assert_eq!(s["pace_source"], "learned", "{s}");
    let learned = s["pace_rpm"].as_f64().unwrap();
    assert!(
        (600.0..=1800.0).contains(&learned),
        "learned {learned} rpm for a 1200 rpm limit"
    );
    let stats = env.stats();
    let share = status_count(&stats, 429) as f64 / stats.requests as f64;
    assert!(
        share <= 0.2,
        "429 share {share:.3} (a loose bound; the benchmark has the real figure)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_without_hammering_the_provider() {
    // 1,200 rpm with a short bucket: ~23 s of work, down from 10 s to 16 s.
    // (A debug build takes seconds to start, more on a loaded machine: an
    // outage that began sooner could meet the run's first burst instead of
    // its pace.)
    let outage = Outage {
        start: Duration::from_secs(10),
        duration: Duration::from_secs(6),
    };
    let env = Env::new(MockConfig {
        rpm: Some(1200),
        burst: Some(20),
        outage: vec![outage],
        latency: 5,
        ..MockConfig::default()
    })
    .await;
    let input = write_batch(env.dir.path(), "jobs.jsonl", 450);
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--max-retries", "3"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_complete_and_matching(&input, &env.path("jobs.results.jsonl"));
    let log = env.mock.log();
    let during = log
        .iter()
        .filter(|e| e.path == "/v1/chat/completions")
        .filter(|e| outage.covers(Duration::from_millis(e.at_ms)))
        .count();
    assert!(during > 0, "the run overlapped the outage");
    assert!(
        during <= 12,
        "{during} requests were sent while the provider was down"
    );
}
