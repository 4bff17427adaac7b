//! Shared jobs on Redis (issue 11): one job spread over several `pacer`
//! processes through a real `redis-server`, against the simulator, which
//! counts every request and every duplicate with its own code. A worker is
//! killed with SIGKILL mid-run, Redis is killed and restarted, a worker
//! with a bad key stops everyone.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use pacer_mock::MockConfig;
use redis::Commands;

use crate::redis_support::RedisServer;
use crate::support::*;

/// One test at a time: each takes most of the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn meta(redis: &RedisServer, job: &str, field: &str) -> Option<String> {
    let mut c = redis.connection();
    c.hget(format!("pacer:job:v1:{{{job}}}:meta"), field)
        .expect("read the job's meta")
}

/// Waits (bounded) until the job's `field` satisfies `ok`.
async fn wait_for(redis: &RedisServer, job: &str, field: &str, ok: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if meta(redis, job, field).is_some_and(|v| ok(&v)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the job's {field} never got there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn finish(child: tokio::process::Child, what: &str) -> Output {
    tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished within 4 minutes"))
        .unwrap_or_else(|e| panic!("{what} ran: {e}"))
}

/// The custom ids of an output file, every line's, duplicates kept.
fn output_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read the output")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["custom_id"].as_str().expect("custom_id").to_string()
        })
        .collect()
}

fn assert_each_id_once(input: &Path, output: &Path) {
    let mut ids = output_ids(output);
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id is in {} twice", output.display());
    assert_complete_and_matching(input, output);
}

/// A simulator at `rpm` requests a minute, answering in `latency_ms`.
async fn paced_env(rpm: u64, latency_ms: u64) -> Env {
    Env::new(MockConfig {
        rpm: Some(rpm),
        latency: latency_ms,
        ..MockConfig::default()
    })
    .await
}

/// Starts `pacer run in.jsonl --json --redis URL --job JOB EXTRA`.
fn start_run(env: &Env, redis: &str, job: &str, extra: &[&str]) -> tokio::process::Child {
    let mut run = env.pacer();
    run.args(["run", "in.jsonl", "--json", "--redis", redis, "--job", job])
        .args(extra);
    run.spawn().expect("spawn the run")
}

/// Loads `in.jsonl` as the job `job` with a key the provider refuses: the
/// run stops at once, the job loaded and nothing answered.
async fn load_unanswered(env: &Env, redis: &str, job: &str) {
    let out = env
        .run_with(
            &[
                "run",
                "in.jsonl",
                "--json",
                "--no-verify",
                "--redis",
                redis,
                "--job",
                job,
            ],
            |c| {
                c.env("OPENAI_API_KEY", "sk-refused");
            },
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

fn worker(env: &Env, redis: &str, job: &str, extra: &[&str]) -> tokio::process::Command {
    let mut cmd = env.pacer();
    cmd.args(["worker", "--redis", redis, "--job", job, "--json"])
        .args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_finish_one_job_and_a_killed_ones_work_is_reclaimed() {
    let _one = SERIAL.lock().await;
    const N: usize = 300;
    let redis = RedisServer::start();
    let url = redis.url();
    // 20 a second, half a second each: the job takes ~15 s, long enough to
    // kill a worker in the middle.
    let env = paced_env(1200, 500).await;
    let input = write_batch(env.dir.path(), "in.jsonl", N);
    let lease = ["--lease", "3s"];

    let mut loader = env.pacer();
    loader
        .args(["run", "in.jsonl", "--json", "--redis", &url, "--job", "j"])
        .args(lease);
    let loader = loader.spawn().expect("spawn the loading run");
    wait_for(&redis, "j", "state", |s| s == "ready").await;

    // A second run of the same input joins (its own output and state);
    // a worker joins from nowhere; one worker's clock is 5 minutes off.
    let mut joiner = env.pacer();
    joiner
        .args(["run", "in.jsonl", "-o", "second.jsonl", "--json"])
        .args(["--redis", &url, "--job", "j"])
        .args(lease);
    let joiner = joiner.spawn().expect("spawn the joining run");
    let mut doomed = worker(&env, &url, "j", &["--concurrency", "8", "--lease", "3s"])
        .spawn()
        .expect("spawn a worker");
    let skewed = worker(&env, &url, "j", &lease)
        .env("PACER_TEST_CLOCK_SKEW_MS", "-300000")
        .spawn()
        .expect("spawn a worker");

    wait_for(&redis, "j", "finished", |f| {
        f.parse::<usize>().unwrap_or(0) >= N / 3
    })
    .await;
    doomed.start_kill().expect("SIGKILL");
    let killed_at = Instant::now();
    let _ = doomed.wait().await;

    let outs = [
        finish(loader, "the loading run").await,
        finish(joiner, "the joining run").await,
        finish(skewed, "the skewed worker").await,
    ];
    let reclaimed_in = killed_at.elapsed();
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    assert!(
        stderr(&outs[0]).contains("loaded the shared job"),
        "{}",
        stderr(&outs[0])
    );
    assert!(
        stderr(&outs[1]).contains("joined the shared job"),
        "{}",
        stderr(&outs[1])
    );
    assert_each_id_once(&input, &env.path("in.results.jsonl"));
    assert_each_id_once(&input, &env.path("second.jsonl"));
    for out in &outs[..2] {
        let s = summary(out);
        assert_eq!(s["succeeded"], N as u64, "{s}");
        assert_eq!(s["pending"], 0, "{s}");
    }

    // Re-sends: only what the killed worker had in flight (at most its
    // --concurrency 8); the simulator counts them itself.
    let stats = env.stats();
    eprintln!(
        "issue 11 / 3 workers + 1 killed: {} requests for {N}, {} duplicate requests, finished {:.1} s after the kill",
        stats.requests,
        stats.duplicate_requests,
        reclaimed_in.as_secs_f64()
    );
    assert!(
        stats.duplicate_requests <= 8,
        "more re-sends than the killed worker had in flight: {stats:?}"
    );
    assert!(stats.duplicate_successes <= stats.duplicate_requests);

    // status and export read the job from Redis.
    let status = env
        .run(&["status", "--redis", &url, "--job", "j", "--json"])
        .await;
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let facts: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    assert_eq!(facts["total"], N as u64, "{facts}");
    assert_eq!(facts["finished"], N as u64, "{facts}");
    assert_eq!(facts["failed"], 0, "{facts}");
    let export = env
        .run(&[
            "export",
            "--redis",
            &url,
            "--job",
            "j",
            "-o",
            "export.jsonl",
        ])
        .await;
    assert_eq!(export.status.code(), Some(0), "{}", stderr(&export));
    assert_each_id_once(&input, &env.path("export.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_redis_killed_and_restarted_mid_job_loses_and_doubles_nothing() {
    let _one = SERIAL.lock().await;
    const N: usize = 240;
    let mut redis = RedisServer::start_persistent();
    let url = redis.url();
    let env = paced_env(1200, 300).await;
    let input = write_batch(env.dir.path(), "in.jsonl", N);
    let run = start_run(&env, &url, "p", &["--lease", "30s"]);
    wait_for(&redis, "p", "state", |s| s == "ready").await;
    let helper = worker(&env, &url, "p", &["--lease", "30s"])
        .spawn()
        .expect("spawn a worker");
    wait_for(&redis, "p", "finished", |f| {
        f.parse::<usize>().unwrap_or(0) >= N / 4
    })
    .await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let outs = [
        finish(run, "the run").await,
        finish(helper, "the worker").await,
    ];
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    assert_each_id_once(&input, &env.path("in.results.jsonl"));
    let stats = env.stats();
    eprintln!(
        "issue 11 / persistent Redis killed 3 s mid-job: {} requests for {N}, {} duplicates",
        stats.requests, stats.duplicate_requests
    );
    assert_eq!(stats.duplicate_successes, 0, "work done twice: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_key_is_refused_stops_the_whole_job_and_a_rerun_resumes() {
    let _one = SERIAL.lock().await;
    const N: usize = 200;
    let redis = RedisServer::start();
    let url = redis.url();
    let env = paced_env(600, 200).await;
    let input = write_batch(env.dir.path(), "in.jsonl", N);
    let run = start_run(&env, &url, "k", &[]);
    wait_for(&redis, "k", "finished", |f| {
        f.parse::<usize>().unwrap_or(0) >= 5
    })
    .await;
    let bad = worker(&env, &url, "k", &[])
        .env("OPENAI_API_KEY", "sk-wrong")
        .spawn()
        .expect("spawn a worker");
    let outs = [
        finish(run, "the run").await,
        finish(bad, "the worker").await,
    ];
    for out in &outs {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    }
    assert!(
        stderr(&outs[1]).contains("API key was rejected"),
        "{}",
        stderr(&outs[1])
    );
    assert!(
        stderr(&outs[0]).contains("another worker of the shared job stopped it"),
        "{}",
        stderr(&outs[0])
    );
    let done_before = output_ids(&env.path("in.results.jsonl")).len();
    assert!(done_before < N, "the stop came too late to test anything");
    // The sk-wrong key never reached Redis.
    assert!(!redis.dump().contains("sk-wrong"));

    // Rerunning the same command lifts the stop and finishes the job.
    let out = env
        .run(&["run", "in.jsonl", "--json", "--redis", &url, "--job", "k"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_id_once(&input, &env.path("in.results.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_with_a_redis_without_persistence_stops_and_a_rerun_loads_the_rest() {
    let _one = SERIAL.lock().await;
    const N: usize = 200;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let env = paced_env(600, 200).await;
    let input = write_batch(env.dir.path(), "in.jsonl", N);
    let run = start_run(&env, &url, "v", &[]);
    wait_for(&redis, "v", "finished", |f| {
        f.parse::<usize>().unwrap_or(0) >= 20
    })
    .await;
    redis.kill();
    redis.restart();
    let out = finish(run, "the run").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is no longer in Redis"),
        "{}",
        stderr(&out)
    );
    // What the run recorded itself went to its output as it went.
    let kept = output_ids(&env.path("in.results.jsonl")).len();
    assert!(kept >= 20, "only {kept} results kept");
    let out = env
        .run(&["run", "in.jsonl", "--json", "--redis", &url, "--job", "v"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("({} requests, 0 finished)", N - kept)),
        "{}",
        stderr(&out)
    );
    assert_each_id_once(&input, &env.path("in.results.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_handed_out_more_than_five_times_fails_with_its_last_error() {
    let _one = SERIAL.lock().await;
    const N: usize = 6;
    let redis = RedisServer::start();
    let url = redis.url();
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "in.jsonl", N);
    load_unanswered(&env, &url, "d").await;
    assert_eq!(meta(&redis, "d", "finished").as_deref(), Some("0"));
    let sent_before = env.chats();
    // Five workers took every request and died without an answer.
    {
        let mut c = redis.connection();
        for idx in 0..N {
            let _: () = c
                .hset("pacer:job:v1:{d}:deliveries", idx, 5)
                .expect("set deliveries");
            let _: () = c
                .hset(
                    "pacer:job:v1:{d}:errors",
                    idx,
                    "HTTP 500: the model crashed",
                )
                .expect("set the last error");
        }
    }
    let out = env
        .run_with(&["worker", "--redis", &url, "--job", "d", "--json"], |_| {})
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(env.chats(), sent_before, "the worker sent nothing");
    let out = env
        .run(&["run", "in.jsonl", "--json", "--redis", &url, "--job", "d"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["failed"], N as u64, "{s}");
    let text = std::fs::read_to_string(env.path("in.results.jsonl")).expect("output");
    assert_eq!(text.lines().count(), N);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(v["error"]["code"], "lease_expired", "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("6 times") && message.contains("the model crashed"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_redis_that_pacer_did_not_write_stops_the_worker_unsent() {
    let _one = SERIAL.lock().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "in.jsonl", 3);
    load_unanswered(&env, &url, "h").await;
    let sent_before = env.chats();
    // Someone with access to Redis swaps a request's path for an address.
    {
        let mut c = redis.connection();
        for idx in 0..3 {
            let _: () = c
                .hset(
                    "pacer:job:v1:{h}:requests",
                    idx,
                    r#"{"c":"r","u":"http://127.0.0.1:9/steal-the-key","b":"{}","p":1,"o":1,"r":0}"#,
                )
                .expect("overwrite a request");
        }
    }
    let out = env
        .run_with(&["worker", "--redis", &url, "--job", "h", "--json"], |_| {})
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds something pacer did not write"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.chats(), sent_before, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_renewed_while_its_request_runs_so_nobody_takes_it_over() {
    let _one = SERIAL.lock().await;
    const N: usize = 12;
    let redis = RedisServer::start();
    let url = redis.url();
    // Each answer takes 5 s, more than twice the 2-s lease: without
    // renewal, the other process would take every request over and send it
    // again.
    let env = paced_env(6000, 5000).await;
    let input = write_batch(env.dir.path(), "in.jsonl", N);
    let run = start_run(&env, &url, "r", &["--lease", "2s"]);
    wait_for(&redis, "r", "state", |s| s == "ready").await;
    let helper = worker(&env, &url, "r", &["--lease", "2s"])
        .spawn()
        .expect("spawn a worker");
    let outs = [
        finish(run, "the run").await,
        finish(helper, "the worker").await,
    ];
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    assert_each_id_once(&input, &env.path("in.results.jsonl"));
    let stats = env.stats();
    assert_eq!(
        stats.duplicate_requests, 0,
        "a request was taken over: {stats:?}"
    );
}
