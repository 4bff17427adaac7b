//! `pacer serve`: the local OpenAI/Anthropic-compatible gateway that queues
//! instead of answering 429. The real binary runs in front of the simulator;
//! its clients are the official Python SDKs (`tests/sdk/*.py`, installed by
//! `scripts/test-deps.sh`) and plain reqwest. Every address is on 127.0.0.1
//! and every wait is bounded.

use std::time::{Duration, Instant};

use pacer_mock::{body_hash, MockConfig};
use serde_json::json;

use crate::serve_support::*;
use crate::support::*;

/// Asserts the simulator saw only the upstream key (and at least `min` requests with it).
fn assert_only_upstream_key(env: &Env, min: u64) {
    let by_key = env.stats().by_key;
    let upstream = fingerprint(UPSTREAM_KEY);
    assert!(
        by_key.get(&upstream).copied().unwrap_or(0) >= min,
        "the simulator saw fewer than {min} requests with the upstream key: {by_key:?}"
    );
    assert_eq!(
        by_key.keys().collect::<Vec<_>>(),
        vec![&upstream],
        "the simulator saw a key other than the upstream one (the client's is {}): {by_key:?}",
        fingerprint(CLIENT_KEY)
    );
}

/// Asserts `text` (answers, headers) holds neither key.
fn assert_no_key_in(what: &str, text: &str) {
    assert!(
        !text.contains(UPSTREAM_KEY),
        "{what} holds the upstream key: {text}"
    );
}

/// Runs an SDK script (which must succeed) through a gateway in front of a
/// fresh simulator; the gateway logs at debug, the most talkative level a
/// user would turn on, so that the key can be looked for in all of it.
async fn sdk_through_gateway(script: &str, anthropic: bool) -> (Env, Gateway, SdkRun) {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    let gw = Gateway::start_with(&env, &[], |c| {
        c.env("PACER_LOG", "debug");
    })
    .await;
    // Anthropic's SDK takes the root; OpenAI's the /v1 base.
    let base = if anthropic { gw.url() } else { gw.base_url() };
    let run = run_sdk(
        script,
        &["--base-url", &base, "--api-key", CLIENT_KEY],
        Duration::from_secs(120),
    )
    .await;
    run.assert_ok();
    (env, gw, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_chat_stream_tools_embeddings_through_the_gateway() {
    let (env, gw, run) = sdk_through_gateway("openai_basic.py", false).await;
    let r = &run.json;
    for call in ["chat", "stream", "tools", "embeddings", "models"] {
        assert_eq!(r[call]["status"], 200, "{call}: {r}");
    }
    assert!(
        r["chat"]["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    assert!(
        r["chat"]["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );
    let s = &r["stream"];
    assert!(
        s["chunks"].as_u64().unwrap_or(0) >= 3,
        "a stream arrives in chunks: {s}"
    );
    assert!(s["text"].as_str().is_some_and(|t| !t.is_empty()), "{s}");
    assert!(
        s["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "include_usage: the last chunk carries usage: {s}"
    );
    assert!(
        r["tools"]["text"].is_string() || !r["tools"]["tool_calls"].as_array().unwrap().is_empty(),
        "{r}"
    );
    assert_eq!(r["embeddings"]["count"], 2, "{r}");
    assert!(
        r["embeddings"]["dimensions"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );
    let ids = r["models"]["ids"].as_array().expect("model ids");
    assert!(ids.iter().any(|m| m == "gpt-4o-mini"), "{r}");

    // The simulator got them, with the gateway's key only.
    assert!(env.chats() >= 3, "chat, stream, tools: {:?}", env.stats());
    assert!(env.sent("/v1/embeddings") >= 1);
    assert!(env.sent("/v1/models") >= 1);
    assert_only_upstream_key(&env, 5);

    // The upstream key is in no answer or header the SDK saw, nor in a raw answer.
    assert_no_key_in("the SDK's answers and headers", &run.stdout);
    assert_no_key_in("the SDK's stderr", &run.stderr);
    let raw = chat(&http(), &gw.url(), "raw-check", &[]).await.unwrap();
    assert_eq!(raw.status, 200, "{}", raw.dump());
    assert_no_key_in("a raw answer", &raw.dump());
    // And the answer is the simulator's answer to this very request.
    assert_eq!(
        raw.json()["choices"][0]["message"]["content"],
        pacer_mock::expected_reply("/v1/chat/completions", &chat_body("raw-check")),
        "{}",
        raw.body
    );
    gw.assert_logs_hold_no_key();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_the_gateway() {
    let (env, gw, run) = sdk_through_gateway("anthropic_basic.py", true).await;
    let r = &run.json;
    for call in ["create", "stream", "stream_raw"] {
        assert_eq!(r[call]["status"], 200, "{call}: {r}");
        assert!(
            r[call]["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{call}: {r}"
        );
        assert!(
            r[call]["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
            "{call}: {r}"
        );
    }
    assert_eq!(r["create"]["type"], "message", "{r}");
    // The helper's assembled text is the deltas' text.
    assert_eq!(r["stream"]["text"], r["stream"]["delta_text"], "{r}");
    for event in ["message_start", "content_block_delta", "message_stop"] {
        assert!(
            r["stream_raw"]["events"][event].as_u64().unwrap_or(0) >= 1,
            "no {event} event: {r}"
        );
    }
    assert!(env.sent("/v1/messages") >= 3, "{:?}", env.stats());
    assert_only_upstream_key(&env, 3);
    assert_no_key_in("the SDK's answers and headers", &run.stdout);
    assert_no_key_in("the SDK's stderr", &run.stderr);
    gw.assert_logs_hold_no_key();
}

/// 1000 requests from 200 concurrent SDK clients through a gateway with no
/// limits configured, in front of a provider allowing 600 requests/min
/// enforced over a 1-s window: the gateway must learn the pace from the
/// rate-limit headers and hold the excess in its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sdk_clients_share_600_rpm_without_a_429() {
    const N: u64 = 1000;
    let env = Env::new(gateway_mock(MockConfig {
        rpm: Some(600),
        window: Some(Duration::from_secs(1)),
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &[]).await;
    let run = run_sdk(
        "openai_swarm.py",
        &[
            "--base-url",
            &gw.base_url(),
            "--api-key",
            CLIENT_KEY,
            "--clients",
            "200",
            "--requests",
            &N.to_string(),
            "--label",
            "swarm600",
            "--timeout",
            "600",
        ],
        Duration::from_secs(400),
    )
    .await;
    let r = &run.json;
    let stats = env.stats();
    let mock_429 = status_count(&stats, 429);
    let wall = r["wall_s"].as_f64().expect("wall_s");
    // The physical minimum: the 1-s window makes a bucket of 600 × 1/60 = 10
    // requests refilled at 600/60 = 10 per second, full when the swarm starts.
    // The first 10 go at t = 0; request k (k = 11..1000) can go at the
    // earliest at (k − 10) / 10 s, so the 1000th at 990 / 10 = 99 s.
    let minimum = (N - 10) as f64 / 10.0;
    eprintln!(
        "serve / 200 SDK clients, 600 rpm over 1 s: outcomes {}, simulator {} requests, {} 429s, wall {wall:.1} s (minimum {minimum:.0} s)",
        r["by_outcome"], stats.requests, mock_429
    );
    assert_eq!(
        r["by_outcome"],
        json!({"ok": N}),
        "every request succeeds, with no 429 or 5xx seen by a client: {}",
        run.stdout
    );
    run.assert_ok();
    assert!(
        mock_429 * 100 <= stats.requests,
        "the simulator answered {mock_429} 429s to {} requests (more than 1%)",
        stats.requests
    );
    assert!(status_count(&stats, 200) >= N, "{stats:?}");
    assert!(
        wall <= minimum * 1.05,
        "wall {wall:.1} s is more than 5% above the minimum {minimum:.0} s"
    );
    assert_only_upstream_key(&env, N);
    gw.assert_logs_hold_no_key();
}

/// With one request at a time upstream (`--concurrency 1`, 200 ms each), a
/// backlog of low-priority requests forms; high-priority requests sent after
/// them overtake the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_requests_finish_first_in_a_backlog() {
    const LOW: usize = 20;
    const HIGH: usize = 5;
    let env = Env::new(gateway_mock(MockConfig {
        latency: 200,
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &["--concurrency", "1"]).await;
    let client = http();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let spawn = |tag: String, priority: &'static str| {
        let client = client.clone();
        let url = gw.url();
        tokio::spawn(async move {
            let a = chat(&client, &url, &tag, &[("x-pacer-priority", priority)])
                .await
                .unwrap_or_else(|e| panic!("{tag}: {e}"));
            assert_eq!(a.status, 200, "{tag}: {}", a.dump());
            (tag, Instant::now())
        })
    };
    for i in 0..LOW {
        tasks.push(spawn(format!("low-{i:02}"), "0"));
    }
    // Let the backlog form (one in flight, the rest queued).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..HIGH {
        tasks.push(spawn(format!("high-{i:02}"), "10"));
    }
    let mut done: Vec<(String, Instant)> = Vec::new();
    for t in tasks {
        done.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("every request finishes within 60 s")
                .expect("request task"),
        );
    }
    done.sort_by_key(|(_, at)| *at);
    let order: Vec<&str> = done.iter().map(|(t, _)| t.as_str()).collect();
    let last_high = done
        .iter()
        .filter(|(t, _)| t.starts_with("high"))
        .map(|(_, at)| *at)
        .max()
        .unwrap();
    let low_after = done
        .iter()
        .filter(|(t, at)| t.starts_with("low") && *at > last_high)
        .count();
    eprintln!(
        "serve / priority: completion order {order:?}, {low_after}/{LOW} low after the last high, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // About 2 lows are done and 1 is in flight when the highs arrive (500 ms
    // at 200 ms each); every other low should finish after the highs.
    assert!(
        low_after * 2 > LOW,
        "the high-priority requests did not overtake most of the backlog: {order:?}"
    );
}

/// Extracts a `retry-after` that must be a positive whole number of seconds.
fn retry_after_secs(a: &Answer) -> u64 {
    let v = a
        .header("retry-after")
        .unwrap_or_else(|| panic!("a 429 without retry-after: {}", a.dump()));
    let secs: u64 = v
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("retry-after {v:?} is not whole seconds: {}", a.dump()));
    assert!(secs >= 1, "retry-after {secs}: {}", a.dump());
    secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_and_max_queue_answer_429_with_retry_after() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    let client = http();

    // --rpm 1: at most one request a minute (its bucket holds a minute's
    // worth: 1). With --max-queue 5, of 8 requests at most 1 is sent and 5
    // wait; the other 2 or 3 are answered 429 at once.
    let gw = Gateway::start(&env, &["--rpm", "1", "--max-queue", "5"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..8 {
        let (client, url, tx) = (client.clone(), gw.url(), tx.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let a = chat(&client, &url, &format!("queue-{i}"), &[]).await;
            let _ = tx.send((i, a, sent.elapsed()));
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    let mut answered = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(4));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(x) => answered.push(x),
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    let mut refused = 0;
    for (i, a, took) in &answered {
        let a = a
            .as_ref()
            .unwrap_or_else(|e| panic!("queue-{i}: transport error {e}"));
        match a.status {
            200 => {}
            429 => {
                refused += 1;
                a.assert_openai_error();
                let secs = retry_after_secs(a);
                // The queue drains at one a minute: "come back in a second"
                // would be a lie, and beyond the 10-min max wait is no help.
                assert!(
                    (1..=600).contains(&secs),
                    "queue-{i}: retry-after {secs} s: {}",
                    a.dump()
                );
                assert!(
                    *took < Duration::from_secs(3),
                    "queue-{i}: a full queue answers at once, not after {took:?}"
                );
                assert_no_key_in("a 429", &a.dump());
            }
            s => panic!("queue-{i}: unexpected status {s}: {}", a.dump()),
        }
    }
    let waiting = 8 - answered.len();
    eprintln!(
        "serve / max-queue 5: {} answered ({refused} 429s), {waiting} still waiting",
        answered.len()
    );
    assert!(
        (2..=3).contains(&refused),
        "with 8 requests, 1 sendable and 5 queue places, 2 or 3 get 429, not {refused}"
    );
    assert!(waiting >= 5, "5 requests wait in the queue, not {waiting}");
    drop(gw);

    // x-pacer-max-wait: 1 on a request that would wait about a minute.
    let gw = Gateway::start(&env, &["--rpm", "1"]).await;
    for i in 0..2 {
        let (client, url) = (client.clone(), gw.url());
        tokio::spawn(async move {
            let _ = chat(&client, &url, &format!("filler-{i}"), &[]).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let a = chat(
        &client,
        &gw.url(),
        "impatient",
        &[("x-pacer-max-wait", "1")],
    )
    .await
    .expect("an answer");
    let took = sent.elapsed();
    assert_eq!(a.status, 429, "{}", a.dump());
    a.assert_openai_error();
    let secs = retry_after_secs(&a);
    assert!(secs <= 600, "retry-after {secs}");
    assert!(
        took < Duration::from_secs(3),
        "x-pacer-max-wait: 1 answered after {took:?}"
    );
    drop(gw);

    // --max-wait 2s: the same for every request.
    let gw = Gateway::start(&env, &["--rpm", "1", "--max-wait", "2s"]).await;
    for i in 0..2 {
        let (client, url) = (client.clone(), gw.url());
        tokio::spawn(async move {
            let _ = chat(&client, &url, &format!("filler2-{i}"), &[]).await;
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let a = chat(&client, &gw.url(), "impatient-2", &[])
        .await
        .expect("an answer");
    let took = sent.elapsed();
    assert_eq!(a.status, 429, "{}", a.dump());
    retry_after_secs(&a);
    assert!(
        took < Duration::from_secs(4),
        "--max-wait 2s answered after {took:?}"
    );
    // Nothing was sent beyond the pace.
    let stats = env.stats();
    assert!(
        stats.accepted <= 3,
        "at 1 request/min, 3 gateways send at most 3 in these seconds: {stats:?}"
    );
}

/// A queued request whose client gives up is dropped from the queue, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_is_never_sent() {
    let env = Env::new(gateway_mock(MockConfig {
        latency: 1500,
        ..MockConfig::default()
    }))
    .await;
    // One request at a time upstream: the second waits in the queue.
    let gw = Gateway::start(&env, &["--concurrency", "1"]).await;
    let client = http();
    let first = {
        let (client, url) = (client.clone(), gw.url());
        tokio::spawn(async move { chat(&client, &url, "stayer-first", &[]).await })
    };
    // Wait until the first is at the simulator (admitted there, answering).
    let t0 = Instant::now();
    while env.stats().accepted < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nothing reached the simulator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The leaver queues behind it and gives up after 300 ms.
    let leaver = "leaver-9f27c1";
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = chat(&quick, &gw.url(), leaver, &[]).await;
    assert!(
        gone.as_ref().is_err_and(|e| e.is_timeout()),
        "the leaver should time out while queued: {gone:?}"
    );
    // A later request goes after the leaver's place in the queue: once it is
    // answered, the leaver would have been sent if it were going to be.
    let last = chat(&client, &gw.url(), "stayer-last", &[])
        .await
        .expect("the last request");
    assert_eq!(last.status, 200, "{}", last.dump());
    let first = first.await.unwrap().expect("the first request");
    assert_eq!(first.status, 200, "{}", first.dump());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let hash = body_hash(&chat_body_bytes(leaver));
    let log = env.mock.log();
    assert!(
        !log.iter()
            .any(|e| e.body_hash.as_deref() == Some(hash.as_str())
                || e.client_request_id.as_deref() == Some(leaver)),
        "the simulator received the request whose client had left: {log:?}"
    );
    assert_eq!(
        (env.chats(), env.stats().accepted),
        (2, 2),
        "only the two staying requests reach the simulator: {:?}",
        env.stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_required_off_loopback_and_checked() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;

    // Off loopback with no client keys: refuses to start.
    let out = serve_refused(&env, &["--listen", "0.0.0.0:0"]).await;
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "pacer serve on 0.0.0.0 without --client-keys started: {out:?}"
    );
    assert!(
        err.to_lowercase().contains("client-keys"),
        "the refusal should name --client-keys: {err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "it said it was listening: {out:?}"
    );

    // With a client key file, on loopback: keys are checked.
    let keys = env.path("clients.txt");
    std::fs::write(
        &keys,
        "# name key [budget_usd]\nalice ck-alice-2b7d 5.00\n\nbob ck-bob-8e1f\n",
    )
    .unwrap();
    let gw = Gateway::start(&env, &["--client-keys", keys.to_str().unwrap()]).await;
    let client = http();
    let url = format!("{}/v1/chat/completions", gw.url());
    let body = chat_body("keys");

    let none = send(client.post(&url).json(&body)).await.unwrap();
    assert_eq!(none.status, 401, "no key: {}", none.dump());
    none.assert_openai_error();
    let wrong = send(client.post(&url).bearer_auth("ck-alice-wrong").json(&body))
        .await
        .unwrap();
    assert_eq!(wrong.status, 401, "wrong key: {}", wrong.dump());
    wrong.assert_openai_error();
    let wrong_x = send(
        client
            .post(&url)
            .header("x-api-key", CLIENT_KEY)
            .json(&body),
    )
    .await
    .unwrap();
    assert_eq!(wrong_x.status, 401, "wrong x-api-key: {}", wrong_x.dump());
    assert_eq!(
        env.stats().accepted,
        0,
        "refused requests are not forwarded: {:?}",
        env.stats()
    );

    let right = send(client.post(&url).bearer_auth("ck-alice-2b7d").json(&body))
        .await
        .unwrap();
    assert_eq!(right.status, 200, "alice's key: {}", right.dump());
    let right_x = send(
        client
            .post(format!("{}/v1/messages", gw.url()))
            .header("x-api-key", "ck-bob-8e1f")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": "claude-haiku-4-5",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hello"}]
            })),
    )
    .await
    .unwrap();
    assert_eq!(
        right_x.status,
        200,
        "bob's key as x-api-key: {}",
        right_x.dump()
    );
    for a in [&none, &wrong, &wrong_x, &right, &right_x] {
        assert_no_key_in("an answer", &a.dump());
        assert!(!a.dump().contains("ck-alice-2b7d") && !a.dump().contains("ck-bob-8e1f"));
    }
    assert_only_upstream_key(&env, 2);
    gw.assert_logs_hold_no_key();
    let logs = gw.logs();
    assert!(
        !logs.contains("ck-alice-2b7d") && !logs.contains("ck-bob-8e1f"),
        "the gateway logs client keys:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_and_exits_0() {
    let env = Env::new(gateway_mock(MockConfig {
        latency: 1500,
        ..MockConfig::default()
    }))
    .await;
    let mut gw = Gateway::start(&env, &[]).await;
    let in_flight = {
        let (client, url) = (http(), gw.url());
        tokio::spawn(async move { chat(&client, &url, "in-flight", &[]).await })
    };
    let t0 = Instant::now();
    while env.stats().accepted < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nothing reached the simulator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.sigterm();
    // It stops accepting: a new connection gets no answer from it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = send(
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get(format!("{}/healthz", gw.url())),
    )
    .await;
    assert!(
        !late.as_ref().is_ok_and(|a| a.status == 200),
        "a new connection was served after SIGTERM: {late:?}"
    );
    let a = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(a.status, 200, "{}", a.dump());
    assert_eq!(
        a.json()["choices"][0]["message"]["content"],
        pacer_mock::expected_reply("/v1/chat/completions", &chat_body("in-flight"))
    );
    let status = gw.wait(Duration::from_secs(20)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM; logs:\n{}",
        gw.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_400_and_a_huge_body_is_413() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    let gw = Gateway::start(&env, &[]).await;
    let client = http();
    let url = format!("{}/v1/chat/completions", gw.url());

    let bad = send(
        client
            .post(&url)
            .bearer_auth(CLIENT_KEY)
            .header("content-type", "application/json")
            .body("{\"model\": \"gpt-4o-mini\", \"messages\": [ not json"),
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.dump());
    bad.assert_openai_error();

    // 48 MiB: over the gateway's 32 MiB limit, under the simulator's 64 MiB
    // (so a body the gateway let through would be answered, and counted).
    let huge = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x".repeat(48 << 20)}],
        "max_tokens": 8
    });
    let big = send(client.post(&url).bearer_auth(CLIENT_KEY).json(&huge))
        .await
        .expect("an answer to the huge body (not a reset)");
    assert_eq!(
        big.status,
        413,
        "{}",
        big.dump().chars().take(2000).collect::<String>()
    );
    assert_eq!(
        env.chats(),
        0,
        "neither the bad nor the huge body is forwarded: {:?}",
        env.stats()
    );

    // The gateway is still fine.
    let ok = chat(&client, &gw.url(), "after-413", &[]).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_healthz() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    let gw = Gateway::start(&env, &[]).await;
    let client = http();
    let health = send(client.get(format!("{}/healthz", gw.url())))
        .await
        .unwrap();
    assert_eq!(health.status, 200, "{}", health.dump());
    for i in 0..3 {
        let a = chat(&client, &gw.url(), &format!("metrics-{i}"), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.dump());
    }
    let m = send(client.get(format!("{}/metrics", gw.url())))
        .await
        .unwrap();
    assert_eq!(m.status, 200, "{}", m.dump());
    assert!(
        m.header("content-type").is_some_and(
            |c| c.starts_with("text/plain") || c.starts_with("application/openmetrics-text")
        ),
        "Prometheus text: {}",
        m.dump()
    );
    let total = metric_sum(&m.body, "pacer_requests_total")
        .unwrap_or_else(|| panic!("no pacer_requests_total sample:\n{}", m.body));
    assert!(
        total >= 3.0,
        "pacer_requests_total {total} after 3 requests:\n{}",
        m.body
    );
    for name in ["pacer_queue_depth", "pacer_in_flight"] {
        assert!(
            metric_sum(&m.body, name).is_some(),
            "no {name} sample:\n{}",
            m.body
        );
    }
    assert_no_key_in("/metrics", &m.body);
}

/// A stream is passed on chunk by chunk, not gathered: with 100 ms between
/// the simulator's chunks, the first arrives long before the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_chunk_by_chunk() {
    let env = Env::new(gateway_mock(MockConfig {
        chunk_delay: 100,
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &[]).await;
    // This prompt's reply is 18 words: 6 content events of 3 words, plus the
    // role, finish and [DONE] events, 100 ms apart: 800 ms from first to last.
    let mut body = chat_body("stream-through");
    body["max_tokens"] = json!(40);
    body["stream"] = json!(true);
    let sent = Instant::now();
    let mut resp = http()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("the stream goes on")
        .expect("read the stream")
    {
        arrivals.push(sent.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("data: [DONE]"), "{text}");
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    eprintln!(
        "serve / stream: {} reads, first after {first:?}, last after {last:?}",
        arrivals.len()
    );
    assert!(
        last - first >= Duration::from_millis(500),
        "the stream arrived all at once ({} reads, first {first:?}, last {last:?})",
        arrivals.len()
    );
}

/// Upstream 5xx are retried inside the gateway: SDK clients with
/// `max_retries=0` see none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_retried_inside_the_gateway() {
    let env = Env::new(gateway_mock(MockConfig {
        error_rate: 0.2,
        seed: Some(7),
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &[]).await;
    let run = run_sdk(
        "openai_swarm.py",
        &[
            "--base-url",
            &gw.base_url(),
            "--api-key",
            CLIENT_KEY,
            "--clients",
            "10",
            "--requests",
            "60",
            "--label",
            "flaky",
        ],
        Duration::from_secs(180),
    )
    .await;
    let stats = env.stats();
    let errors: u64 = [500, 502, 503]
        .into_iter()
        .map(|c| status_count(&stats, c))
        .sum();
    eprintln!(
        "serve / 20% upstream 5xx: outcomes {}, simulator {:?}",
        run.json["by_outcome"], stats.by_status
    );
    assert_eq!(run.json["by_outcome"], json!({"ok": 60}), "{}", run.stdout);
    run.assert_ok();
    assert!(
        errors > 0,
        "the premise: the simulator failed some: {stats:?}"
    );
    // No answer is sent twice to a client, and no finished work is redone.
    assert_eq!(stats.duplicate_successes, 0, "{stats:?}");
}

/// Sends chats as `key` until the first refusal (at most `n`); returns the
/// 200s before it and the refusal.
async fn chats_until_refused(gw: &Gateway, key: &str, n: usize) -> (usize, Option<Answer>) {
    let client = http();
    for i in 0..n {
        let a = send(
            client
                .post(format!("{}/v1/chat/completions", gw.url()))
                .bearer_auth(key)
                .json(&chat_body(&format!("budget-{key}-{i}"))),
        )
        .await
        .unwrap();
        match a.status {
            200 => {}
            _ => return (i, Some(a)),
        }
    }
    (n, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_per_client_and_for_the_gateway_stop_spending_and_survive_a_restart() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    let keys = env.path("clients.txt");
    // A chat of chat_body costs at most ~$0.000008 at gpt-4o-mini's prices.
    std::fs::write(&keys, "alice ck-alice-2b7d 0.00005\nbob ck-bob-8e1f\n").unwrap();
    let state = env.path("spent.json");
    let args = [
        "--client-keys",
        keys.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let mut gw = Gateway::start(&env, &args).await;
    let (ok, refusal) = chats_until_refused(&gw, "ck-alice-2b7d", 40).await;
    let refusal = refusal.expect("alice's budget ran out");
    assert!((3..=15).contains(&ok), "{ok} requests fit in $0.00005");
    assert_eq!(refusal.status, 429, "{}", refusal.dump());
    refusal.assert_openai_error();
    assert_eq!(refusal.json()["error"]["code"], "insufficient_quota");
    assert!(
        refusal.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alice"),
        "{}",
        refusal.dump()
    );
    let sent_before = env.stats().requests;
    // Bob has no budget of his own.
    let (bob_ok, _) = chats_until_refused(&gw, "ck-bob-8e1f", 3).await;
    assert_eq!(bob_ok, 3);
    assert_eq!(
        env.stats().requests,
        sent_before + 3,
        "alice's refusal was not forwarded"
    );
    let metrics = send(http().get(format!("{}/metrics", gw.url())))
        .await
        .unwrap()
        .body;
    let alice_spent = metrics
        .lines()
        .find(|l| l.starts_with("pacer_client_cost_usd_total{client=\"alice\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("alice's cost in the metrics:\n{metrics}"));
    assert!(alice_spent > 0.0 && alice_spent <= 0.00005, "{alice_spent}");

    // Stopped and started again on the same state: still spent.
    gw.sigterm();
    assert!(gw.wait(Duration::from_secs(20)).await.success());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("the state was written")).unwrap();
    assert!(saved["clients"]["alice"].as_f64().unwrap() > 0.0, "{saved}");
    let gw = Gateway::start(&env, &args).await;
    let (ok, refusal) = chats_until_refused(&gw, "ck-alice-2b7d", 5).await;
    assert!(
        ok <= 1,
        "a restart gave alice's budget back: {ok} more went"
    );
    assert_eq!(
        refusal.expect("refused").json()["error"]["code"],
        "insufficient_quota"
    );
    drop(gw);

    // The gateway's own cap, with no client keys.
    let gw = Gateway::start(&env, &["--max-cost", "0.00003"]).await;
    let (ok, refusal) = chats_until_refused(&gw, CLIENT_KEY, 40).await;
    assert!((1..=10).contains(&ok), "{ok}");
    let refusal = refusal.expect("the gateway's cap was reached");
    assert_eq!(refusal.json()["error"]["code"], "insufficient_quota");
    assert!(refusal.body.contains("--max-cost"), "{}", refusal.dump());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_streams_through_the_gateway() {
    let env = Env::new(gateway_mock(MockConfig {
        chunk_delay: 20,
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &[]).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say something through curl."}],
        "max_tokens": 12,
        "stream": true,
        "stream_options": {"include_usage": true}
    })
    .to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("curl")
            .args(["-sS", "-N", "--fail-with-body", "--max-time", "50"])
            .args(["-H", "content-type: application/json"])
            .args(["-H", &format!("authorization: Bearer {CLIENT_KEY}")])
            .args(["-d", &body])
            .arg(format!("{}/v1/chat/completions", gw.url()))
            .output(),
    )
    .await
    .expect("curl finished")
    .expect("curl runs (it is a test dependency)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("data: ")).collect();
    assert!(events.len() >= 3, "{text}");
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    assert!(
        text.contains("\"usage\":{"),
        "the usage chunk passed through: {text}"
    );
    assert!(!text.contains(UPSTREAM_KEY));
    // The gateway read the usage from the stream: reported, not estimated.
    let metrics = send(http().get(format!("{}/metrics", gw.url())))
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains("pacer_tokens_total{kind=\"completion\",source=\"reported\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_request_frees_its_slot_at_once() {
    // The simulator takes 8 s to answer; the client gives up after 0.5 s.
    let env = Env::new(gateway_mock(MockConfig {
        latency: 8_000,
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &[]).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gone = chat(&impatient, &gw.url(), "leaves-mid-request", &[]).await;
    assert!(gone.is_err(), "the client timed out");
    let metrics = |text: &str, name: &str| metric_sum(text, name).unwrap_or(0.0);
    // Its upstream request is dropped with it: in flight goes back to 0
    // long before the simulator would have answered.
    let start = Instant::now();
    loop {
        let m = send(http().get(format!("{}/metrics", gw.url())))
            .await
            .unwrap()
            .body;
        if metrics(&m, "pacer_in_flight") == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the slot is still held 3 s after the client left:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(env.stats().requests, 1, "it had reached the simulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_pointing_at_the_gateway_itself_is_refused_at_start() {
    let env = Env::new(gateway_mock(MockConfig::default())).await;
    // A free port, as a user's shell would still have it in $OPENAI_BASE_URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(BIN)
            .current_dir(env.dir.path())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("OPENAI_BASE_URL", format!("http://localhost:{port}/v1"))
            .env("OPENAI_API_KEY", UPSTREAM_KEY)
            .env_remove("ANTHROPIC_BASE_URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pacer serve exited")
    .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("own address") && err.contains("OPENAI_BASE_URL"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    assert_no_key_in("the refusal", &err);
}
