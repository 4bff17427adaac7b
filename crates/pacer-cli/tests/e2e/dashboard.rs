//! `pacer run --dashboard`: Prometheus metrics that agree with the summary,
//! read by the Prometheus project's own parser; loopback unless asked; JSON
//! logs.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use pacer_mock::MockConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::serve_support::{sdk_script, test_python};
use crate::support::*;

/// A running `pacer run --dashboard 127.0.0.1:0`: its dashboard's address,
/// its stderr so far (read on), its stdout lines.
struct Dashboarded {
    child: tokio::process::Child,
    addr: String,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn start(env: &Env, args: &[&str]) -> Dashboarded {
    let mut child = env
        .pacer()
        .args(args)
        .args(["--dashboard", "127.0.0.1:0", "--json"])
        .spawn()
        .expect("pacer starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if let Some(rest) = line.strip_prefix("pacer: dashboard at http://") {
                return rest.split('/').next().unwrap().to_string();
            }
            seen.push(line);
        }
        panic!("pacer ended without a dashboard:\n{}", seen.join("\n"));
    })
    .await
    .expect("the dashboard's address within 30 s");
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    Dashboarded {
        child,
        addr,
        stderr: rx,
        stdout,
    }
}

/// The samples of an OpenMetrics text, parsed by `prometheus_client`'s
/// OpenMetrics parser (strict: a malformed exposition fails the test).
fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    use std::io::Write;
    let mut py = std::process::Command::new(test_python())
        .arg(sdk_script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Prometheus' parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a sample"))
        .collect()
}

fn total(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    label: Option<(&str, &str)>,
) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name && label.is_none_or(|(k, v)| labels.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_totals_equal_the_summary() {
    // Errors to retry (some fail for good with one retry), and a request
    // limit that the run learns from 429s (no headers).
    let env = Env::new(MockConfig {
        rpm: Some(600),
        window: Some(Duration::from_secs(1)),
        hide_headers: true,
        error_rate: 0.1,
        latency: 20,
        seed: Some(7),
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 150);
    let mut run = start(
        &env,
        &[
            "run",
            "jobs.jsonl",
            "--max-retries",
            "1",
            "--dashboard-linger",
            "60s",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let line = tokio::time::timeout(Duration::from_secs(120), run.stdout.next_line())
        .await
        .expect("the summary within 2 minutes")
        .unwrap()
        .expect("a summary line");
    let s: Value = serde_json::from_str(&line).expect("the summary is JSON");

    // The run is over; the dashboard lingers for the last scrape.
    let resp = http
        .get(format!("http://{}/metrics", run.addr))
        .send()
        .await
        .expect("/metrics answers while the dashboard lingers");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(!text.contains(pacer_mock::DEFAULT_KEY), "{text}");
    let m = parse_metrics(&text);
    let get = |name: &str, label: Option<(&str, &str)>| total(&m, name, label);
    let n = |key: &str| s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}")) as f64;

    assert_eq!(n("succeeded") + n("failed"), 150.0, "{s}");
    assert_eq!(
        get("pacer_requests_total", Some(("outcome", "ok"))),
        n("succeeded")
    );
    assert_eq!(
        get("pacer_requests_total", Some(("outcome", "failed"))),
        n("failed")
    );
    // Every attempt the simulator answered has its status counted once.
    assert_eq!(get("pacer_responses_total", None), n("sent"), "{text}");
    assert_eq!(env.chats() as f64, n("sent"));
    assert_eq!(
        get("pacer_responses_total", Some(("status", "429"))),
        n("rate_limited")
    );
    assert_eq!(
        get("pacer_responses_total", Some(("status", "429"))),
        status_count(&env.stats(), 429) as f64
    );
    assert_eq!(get("pacer_retries_total", None), n("retries"));
    assert_eq!(
        get("pacer_tokens_total", Some(("kind", "prompt"))),
        n("prompt_tokens")
    );
    assert_eq!(
        get("pacer_tokens_total", Some(("kind", "completion"))),
        n("completion_tokens")
    );
    let cost = get("pacer_cost_usd_total", Some(("model", "gpt-4o-mini")));
    let summary_cost = s["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - summary_cost).abs() <= 1e-9 + summary_cost * 1e-9,
        "metrics {cost} vs summary {summary_cost}"
    );
    assert_eq!(get("pacer_request_duration_seconds_count", None), n("sent"));
    assert_eq!(get("pacer_in_flight", None), 0.0);
    assert_eq!(
        get("pacer_pace_requests_per_minute", None),
        s["pace_rpm"].as_f64().unwrap_or(0.0),
        "{text}"
    );

    // A signal ends the linger at once.
    let pid = run.child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(10), run.child.wait())
        .await
        .expect("pacer leaves at once when signalled while lingering")
        .unwrap();
    let mut rest = Vec::new();
    while let Ok(line) = run.stderr.try_recv() {
        rest.push(line);
    }
    assert!(
        status.success() || n("failed") > 0.0,
        "{status:?}\n{}",
        rest.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dashboard_off_loopback_needs_asking_and_nothing_is_sent() {
    let env = Env::new(MockConfig::default()).await;
    write_batch(env.dir.path(), "jobs.jsonl", 3);
    let out = env
        .run(&["run", "jobs.jsonl", "--dashboard", "0.0.0.0:0"])
        .await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--dashboard 0.0.0.0:0 is not a loopback address")
            && err.contains("--dashboard-public"),
        "{err}"
    );
    assert_eq!(env.chats(), 0);

    let out = env
        .run(&["run", "jobs.jsonl", "--dashboard-linger", "5s"])
        .await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--dashboard"), "{}", stderr(&out));
    assert_eq!(env.chats(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_a_line_without_colour() {
    let env = Env::new(MockConfig {
        error_rate: 0.3,
        seed: Some(3),
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 20);
    let out = env
        .run_with(&["run", "jobs.jsonl", "--log-format", "json"], |c| {
            c.env("PACER_LOG", "pacer=debug");
        })
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\u{1b}'),
        "colour codes off a terminal:\n{err}"
    );
    let logs: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logs.is_empty(), "no JSON log line at debug:\n{err}");
    for log in &logs {
        assert!(log["timestamp"].is_string(), "{log}");
        assert!(log["level"].is_string(), "{log}");
        assert!(log["fields"].is_object(), "{log}");
    }
    assert!(!err.contains(pacer_mock::DEFAULT_KEY));

    // RUST_LOG is the fallback when PACER_LOG is unset.
    let out = env
        .run_with(
            &["run", "jobs.jsonl", "--restart", "--log-format", "json"],
            |c| {
                c.env("RUST_LOG", "pacer=debug");
            },
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).lines().any(|l| l.starts_with('{')),
        "{}",
        stderr(&out)
    );
}

/// `data-points` of the chart `id` in a page.
fn chart_points(html: &str, id: &str) -> u64 {
    let key = format!("data-chart=\"{id}\" data-points=\"");
    let start = html
        .find(&key)
        .unwrap_or_else(|| panic!("no chart {id} in {html:.3000}"))
        + key.len();
    html[start..start + html[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

/// A live page fetched and then loaded in headless Chromium from its
/// server: the HTML reloads itself and holds no key, the browser's console
/// has no error or refusal, and every chart has points. Returns the page
/// and the DOM Chromium built.
async fn assert_live_page_drawn(dir: &std::path::Path, url: &str) -> (String, String) {
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\""), "{html:.2000}");
    assert!(!html.contains(pacer_mock::DEFAULT_KEY));
    let dump = crate::report::run_chromium(
        dir,
        url,
        &["--dump-dom", "--enable-logging=stderr", "--v=0"],
    )
    .await;
    let console = String::from_utf8_lossy(&dump.stderr).to_string();
    assert!(dump.status.success(), "{console}");
    for bad in ["Uncaught", "Refused to", "ERR_"] {
        assert!(!console.contains(bad), "the browser said {bad}:\n{console}");
    }
    let dom = String::from_utf8_lossy(&dump.stdout).to_string();
    for id in ["requests", "tokens", "errors", "latency", "cost"] {
        assert!(
            chart_points(&dom, id) >= 2,
            "{id} has no points: {dom:.3000}"
        );
    }
    assert!(dom.contains("<polyline"), "{dom:.3000}");
    (html, dom)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_dashboard_draws_the_run_in_chromium_while_it_goes() {
    // ~30 s of work at 600 rpm over 1-s windows, headers on.
    let env = Env::new(MockConfig {
        rpm: Some(600),
        window: Some(Duration::from_secs(1)),
        error_rate: 0.05,
        latency: 50,
        seed: Some(11),
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 300);
    let mut run = start(&env, &["run", "jobs.jsonl"]).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/", run.addr);

    // Wait until a fair share is done: the charts have points to draw.
    let done = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("pacer_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mut waited = 0;
    loop {
        let m = http
            .get(format!("http://{}/metrics", run.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if done(&m) >= 60.0 {
            break;
        }
        waited += 1;
        assert!(waited < 600, "the run made no progress: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The page, and the same page in a real browser: loaded from the live
    // server, every chart drawn with points, nothing refused or failing.
    let (_, dom) = assert_live_page_drawn(env.dir.path(), &url).await;
    assert!(
        dom.contains("id=\"status\">running"),
        "the run is shown as going: {dom:.3000}"
    );

    let shot = env.path("live.png");
    let out = crate::report::run_chromium(
        env.dir.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1600",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, mean, sd) = crate::report::png_stats(&shot);
    assert_eq!((w, h), (1200, 1600));
    assert!(
        mean < 252.0 && sd > 10.0,
        "blank? mean {mean:.1}, sd {sd:.1}"
    );

    // The run ends as it would without a dashboard.
    let status = tokio::time::timeout(Duration::from_secs(120), run.child.wait())
        .await
        .expect("the run ends")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_draws_what_it_has_seen_at_its_root_in_chromium() {
    use crate::serve_support::{chat, gateway_mock, Gateway};
    let env = Env::new(gateway_mock(MockConfig {
        rpm: Some(1200),
        window: Some(Duration::from_secs(1)),
        error_rate: 0.1,
        latency: 20,
        seed: Some(5),
        ..MockConfig::default()
    }))
    .await;
    let gw = Gateway::start(&env, &["--max-cost", "10"]).await;
    let client = crate::serve_support::http();
    // Three seconds of traffic, a few requests at a time.
    let mut ok = 0;
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (client, url) = (client.clone(), gw.url());
            tasks.push(tokio::spawn(async move {
                chat(&client, &url, &format!("dash-{round}-{i}"), &[]).await
            }));
        }
        for t in tasks {
            if t.await.unwrap().is_ok_and(|a| a.status == 200) {
                ok += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ok >= 30, "{ok} of 40 answered 200");

    let url = format!("{}/", gw.url());
    let (html, dom) = assert_live_page_drawn(env.dir.path(), &url).await;
    assert!(
        html.contains(&format!("<th>succeeded</th><td class=\"n\">{ok}</td>")),
        "{html:.4000}"
    );
    assert!(dom.contains("id=\"status\">running"), "{dom:.3000}");
    gw.assert_logs_hold_no_key();
}
