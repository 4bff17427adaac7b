//! Shared limits on Redis (issue 11): several `pacer run`s and `pacer serve`
//! replicas on one key keep one limit together, through a real
//! `redis-server`, against the simulator enforcing 600 requests a minute
//! over a 1-s window (a bucket of 10, refilled at 10 a second). The
//! simulator counts its own 429s. Redis killed mid-run, a skewed clock and
//! the key's absence from Redis are checked too. The tests here run one at
//! a time: they measure pace.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pacer_mock::{MockConfig, DEFAULT_KEY};

use crate::redis_support::RedisServer;
use crate::serve_support::*;
use crate::support::*;

/// One test at a time: each measures a pace on a shared machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Time for `pacer run`s (debug builds) to start and check the key, on a
/// loaded two-core machine: not pacing, so outside the 5% bound.
const STARTUP: f64 = 7.0;

/// The simulator's limit: 10 a second, a bucket of 10.
const PER_SECOND: f64 = 10.0;
const BUCKET: f64 = 10.0;

fn limited(config: MockConfig) -> MockConfig {
    MockConfig {
        rpm: Some(600),
        window: Some(Duration::from_secs(1)),
        ..config
    }
}

/// The physical minimum for `n` requests: the bucket's 10 at once, then 10
/// a second.
fn minimum(n: usize) -> f64 {
    (n as f64 - BUCKET).max(0.0) / PER_SECOND
}

/// Writes `n` chat requests `{prefix}00000`.. (distinct prompts) to `name`.
fn write_jobs(dir: &Path, name: &str, prefix: &str, n: usize) -> PathBuf {
    let path = dir.join(name);
    let text: String = (0..n)
        .map(|i| chat_line(&format!("{prefix}{i:05}"), 20) + "\n")
        .collect();
    std::fs::write(&path, text).expect("write input");
    path
}

fn share_429(env: &Env) -> (u64, u64) {
    let stats = env.stats();
    (status_count(&stats, 429), stats.requests)
}

/// Seconds from the simulator's first chat request to its last.
fn span(env: &Env) -> f64 {
    let at: Vec<u64> = env
        .mock
        .log()
        .iter()
        .filter(|e| e.path == "/v1/chat/completions")
        .map(|e| e.at_ms)
        .collect();
    let (Some(first), Some(last)) = (at.iter().min(), at.iter().max()) else {
        return 0.0;
    };
    (last - first) as f64 / 1000.0
}

/// The stretch while every run was sending (from the last run's first
/// request to the last request): its requests and its seconds. Start-up
/// staggers the runs on a loaded machine; this is where they share.
fn all_running(env: &Env) -> (usize, f64) {
    let chats: Vec<(u64, char)> = env
        .mock
        .log()
        .iter()
        .filter(|e| e.path == "/v1/chat/completions")
        .filter_map(|e| Some((e.at_ms, e.client_request_id.as_ref()?.chars().next()?)))
        .collect();
    let mut firsts = std::collections::HashMap::new();
    for (at, run) in &chats {
        firsts.entry(*run).or_insert(*at);
    }
    let start = firsts.values().copied().max().unwrap_or(0);
    let end = chats.iter().map(|(at, _)| *at).max().unwrap_or(0);
    let n = chats.iter().filter(|(at, _)| *at >= start).count();
    (n, end.saturating_sub(start) as f64 / 1000.0)
}

/// Asserts the runs' combined pace: while all ran, within 5% of the
/// limit and not above it; from the first request, within 10%; from the
/// start, within 5% plus the start-up.
fn assert_combined_pace(env: &Env, total: usize, wall: f64, what: &str) {
    let (n429, requests) = share_429(env);
    let min = minimum(total);
    let span = span(env);
    let (n_all, secs_all) = all_running(env);
    let min_all = minimum(n_all);
    eprintln!(
        "issue 11 / {what}: {n429} 429s of {requests} requests, wall {wall:.1} s (minimum {min:.1} s), \
         first to last request {span:.1} s, all running: {n_all} requests in {secs_all:.1} s (minimum {min_all:.1} s)"
    );
    assert!(
        n429 * 100 <= requests,
        "{n429} 429s of {requests}: more than 1%"
    );
    assert!(
        span >= min * 0.97,
        "faster than the limit allows: {span:.1} s"
    );
    assert!(
        secs_all <= min_all * 1.05 + 0.5,
        "all running: {secs_all:.1} s is more than 5% above {min_all:.1} s"
    );
    assert!(
        span <= min * 1.10,
        "span {span:.1} s is more than 10% above {min:.1} s"
    );
    assert!(
        wall <= min * 1.05 + STARTUP,
        "wall {wall:.1} s against {min:.1} s"
    );
}

/// Starts `pacer run INPUT --json --redis URL ARGS` per input, at once, and
/// waits for all.
async fn run_all(env: &Env, redis: &str, jobs: &[(PathBuf, Vec<(&str, &str)>)]) -> Vec<Output> {
    let children: Vec<_> = jobs
        .iter()
        .map(|(input, envs)| {
            let mut cmd = env.pacer();
            cmd.arg("run").arg(input).args(["--json", "--redis", redis]);
            for (k, v) in envs {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn pacer run")
        })
        .collect();
    let mut outs = Vec::new();
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
            .await
            .expect("pacer run finished within 4 minutes")
            .expect("pacer ran");
        outs.push(out);
    }
    outs
}

fn assert_no_key_in_redis(redis: &RedisServer, key: &str) {
    let dump = redis.dump();
    assert!(dump.contains("pacer:v1:"), "pacer wrote nothing: {dump}");
    assert!(!dump.contains(key), "the API key is in Redis:\n{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runs_on_one_key_keep_one_limit_together() {
    let _one = SERIAL.lock().await;
    const EACH: usize = 300;
    let redis = RedisServer::start();
    let env = Env::new(limited(MockConfig::default())).await;
    let jobs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|p| {
            (
                write_jobs(env.dir.path(), &format!("{p}.jsonl"), p, EACH),
                vec![],
            )
        })
        .collect();
    let started = Instant::now();
    let outs = run_all(&env, &redis.url(), &jobs).await;
    let wall = started.elapsed().as_secs_f64();
    for ((input, _), out) in jobs.iter().zip(&outs) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert_complete_and_matching(input, &input.with_extension("results.jsonl"));
    }
    assert_combined_pace(
        &env,
        3 * EACH,
        wall,
        &format!("3 runs × {EACH} on one Redis, 600 rpm over 1 s"),
    );
    assert_no_key_in_redis(&redis, DEFAULT_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_replicas_keep_one_limit_together() {
    let _one = SERIAL.lock().await;
    const N: usize = 500;
    const CLIENTS: usize = 40;
    let redis = RedisServer::start();
    let env = Env::new(gateway_mock(limited(MockConfig::default()))).await;
    let url = redis.url();
    let a = Gateway::start(&env, &["--redis", &url]).await;
    let b = Gateway::start(&env, &["--redis", &url]).await;
    let urls = Arc::new([a.url(), b.url()]);
    let next = Arc::new(AtomicUsize::new(0));
    let client = http();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (urls, next, client) = (urls.clone(), next.clone(), client.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= N {
                        return statuses;
                    }
                    // Clients split between the replicas.
                    let a = chat(&client, &urls[i % 2], &format!("g{i:05}"), &[])
                        .await
                        .unwrap_or_else(|e| panic!("request {i}: {e}"));
                    statuses.push(a.status);
                }
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let statuses = tokio::time::timeout(Duration::from_secs(240), t)
            .await
            .expect("clients done within 4 minutes")
            .unwrap();
        ok += statuses.iter().filter(|s| **s == 200).count();
    }
    let wall = started.elapsed().as_secs_f64();
    let (n429, requests) = share_429(&env);
    let min = minimum(N);
    eprintln!(
        "issue 11 / 2 serve replicas, {CLIENTS} clients, {N} requests, 600 rpm over 1 s: \
         {ok} ok, {n429} 429s of {requests} requests, wall {wall:.1} s (minimum {min:.0} s)"
    );
    assert_eq!(ok, N, "every client request succeeds");
    assert!(
        n429 * 100 <= requests,
        "{n429} 429s of {requests}: more than 1%"
    );
    assert!(
        wall >= min * 0.97,
        "faster than the limit allows: {wall:.1} s"
    );
    assert!(
        wall <= min * 1.05,
        "wall {wall:.1} s is more than 5% above {min:.0} s"
    );
    assert_no_key_in_redis(&redis, UPSTREAM_KEY);
    a.assert_logs_hold_no_key();
    b.assert_logs_hold_no_key();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_loses_nothing_and_passes_no_limit() {
    let _one = SERIAL.lock().await;
    const EACH: usize = 150;
    let mut redis = RedisServer::start();
    let env = Env::new(limited(MockConfig::default())).await;
    let jobs: Vec<_> = ["a", "b"]
        .iter()
        .map(|p| {
            (
                write_jobs(env.dir.path(), &format!("{p}.jsonl"), p, EACH),
                vec![],
            )
        })
        .collect();
    let url = redis.url();
    let started = Instant::now();
    let (outs, ()) = tokio::join!(run_all(&env, &url, &jobs), async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        redis.kill();
        tokio::time::sleep(Duration::from_secs(6)).await;
        redis.restart();
    });
    let wall = started.elapsed().as_secs_f64();
    for ((input, _), out) in jobs.iter().zip(&outs) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert_complete_and_matching(input, &input.with_extension("results.jsonl"));
        let s = summary(out);
        assert_eq!(s["succeeded"], EACH as u64, "{s}");
    }
    let logs: String = outs.iter().map(stderr).collect();
    assert!(
        logs.contains("is not answering"),
        "no word of Redis away: {logs}"
    );
    assert!(
        logs.contains("answers again"),
        "no word of Redis back: {logs}"
    );
    let stats = env.stats();
    let (n429, requests) = share_429(&env);
    let min = minimum(2 * EACH);
    eprintln!(
        "issue 11 / Redis killed at 8 s, back at 14 s, 2 runs × {EACH}: {n429} 429s of {requests} requests, \
         {} duplicate successes, wall {wall:.1} s (minimum {min:.0} s)",
        stats.duplicate_successes
    );
    assert_eq!(stats.duplicate_successes, 0, "work done twice: {stats:?}");
    assert!(
        n429 * 50 <= requests,
        "{n429} 429s of {requests}: more than 2%"
    );
    // Each at half the limit while Redis was away: the pace holds, and
    // full speed is back within seconds of Redis.
    assert!(
        wall <= min * 1.15 + STARTUP,
        "wall {wall:.1} s against {min:.0} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_clock_changes_nothing() {
    let _one = SERIAL.lock().await;
    const EACH: usize = 250;
    let redis = RedisServer::start();
    let env = Env::new(limited(MockConfig::default())).await;
    let jobs = vec![
        (
            write_jobs(env.dir.path(), "a.jsonl", "a", EACH),
            vec![("PACER_TEST_CLOCK_SKEW_MS", "3600000")],
        ),
        (
            write_jobs(env.dir.path(), "b.jsonl", "b", EACH),
            vec![("PACER_TEST_CLOCK_SKEW_MS", "-45000")],
        ),
    ];
    let started = Instant::now();
    let outs = run_all(&env, &redis.url(), &jobs).await;
    let wall = started.elapsed().as_secs_f64();
    // The hook took: the workers' clocks were an hour ahead and 45 s behind.
    let offsets = redis.clock_offsets();
    assert!(
        offsets.iter().any(|o| (3_590_000..=3_610_000).contains(o))
            && offsets.iter().any(|o| (-55_000..=-35_000).contains(o)),
        "clock offsets recorded: {offsets:?}"
    );
    for ((input, _), out) in jobs.iter().zip(&outs) {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        assert_complete_and_matching(input, &input.with_extension("results.jsonl"));
    }
    assert_combined_pace(
        &env,
        2 * EACH,
        wall,
        &format!("clocks +1 h and -45 s, 2 runs × {EACH}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_redis() {
    let _one = SERIAL.lock().await;
    let redis = RedisServer::start();
    // Tokens limited too, so every kind of shared state is written.
    let env = Env::new(limited(MockConfig {
        tpm: Some(100_000),
        ..MockConfig::default()
    }))
    .await;
    let input = write_jobs(env.dir.path(), "k.jsonl", "k", 30);
    let outs = run_all(&env, &redis.url(), &[(input.clone(), vec![])]).await;
    assert_eq!(outs[0].status.code(), Some(0), "{}", stderr(&outs[0]));
    assert_complete_and_matching(&input, &input.with_extension("results.jsonl"));
    let dump = redis.dump();
    for part in ["rtat", "ttat", "limits", "alive", "clock"] {
        assert!(
            dump.contains(&format!(":{part} (")),
            "no {part} in Redis:\n{dump}"
        );
    }
    assert_no_key_in_redis(&redis, DEFAULT_KEY);
    assert!(!stderr(&outs[0]).contains(DEFAULT_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_unreachable_redis_is_refused_in_one_sentence() {
    let env = Env::new(MockConfig::default()).await;
    write_jobs(env.dir.path(), "x.jsonl", "x", 1);
    let out = env
        .run(&[
            "run",
            "x.jsonl",
            "--redis",
            "http://user:hunter2@localhost:6379",
        ])
        .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("--redis") && !err.contains("hunter2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing listens on port 1.
    let out = env
        .run(&["run", "x.jsonl", "--redis", "redis://:hunter2@127.0.0.1:1"])
        .await;
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("could not reach Redis") && !err.contains("hunter2"),
        "{err}"
    );
    assert_eq!(env.chats(), 0, "nothing is sent without the shared limits");
}
