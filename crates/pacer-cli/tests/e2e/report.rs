//! `pacer report`: a rehearsal against the simulator (a 429 storm from an
//! unknown one-second limit, an outage, errors, a budget stop, then a resume
//! with the report read while it runs), rendered in headless Chromium: no
//! console or policy errors, every chart has its points in the DOM, and the
//! screenshot is not blank.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pacer_mock::{MockConfig, Outage};
use serde_json::Value;

use crate::support::*;

/// Chromium: `$PACER_TEST_CHROMIUM` (test.sh exports it after
/// scripts/test-deps.sh installed it), else /usr/bin/chromium. Missing, the
/// test fails; it never skips.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PACER_TEST_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is not at {}: run scripts/test-deps.sh (./test.sh does), or set PACER_TEST_CHROMIUM",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `args` (bounded by 90 s).
pub(crate) async fn run_chromium(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    let profile = dir.join("chromium-profile");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran")
}

/// The report with a checker: errors (script errors, console errors, any
/// blocked fetch) and each chart's points, written into the body's
/// `data-checked` once the page has loaded. The report's own policy
/// forbids scripts; the copy allows inline ones (the checker) and nothing
/// else, so a fetch the page tried would still be reported.
fn with_checker(html: &str) -> String {
    const HEAD: &str = r#"<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push('error: ' + e.message); });
document.addEventListener('securitypolicyviolation', function (e) { window.__errors.push('blocked: ' + e.blockedURI + ' (' + e.violatedDirective + ')'); });
var ce = console.error; console.error = function () { window.__errors.push('console: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
</script>"#;
    const TAIL: &str = r#"<script>
function __check() {
  var charts = {};
  document.querySelectorAll('svg[data-chart]').forEach(function (s) {
    var vertices = 0, lines = 0;
    s.querySelectorAll('polyline').forEach(function (p) { vertices += p.points.numberOfItems; lines += 1; });
    var r = s.getBoundingClientRect();
    charts[s.dataset.chart] = { declared: +s.dataset.points, vertices: vertices, polylines: lines, width: r.width, height: r.height };
  });
  document.body.setAttribute('data-checked', JSON.stringify({ errors: window.__errors, charts: charts, status: document.getElementById('status').textContent }));
}
__check();
window.addEventListener('load', __check);
</script>"#;
    let csp = "default-src 'none'; style-src 'unsafe-inline'";
    assert!(html.contains(csp), "the report keeps its policy");
    html.replacen(
        csp,
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        1,
    )
    .replacen("<head>", &format!("<head>{HEAD}"), 1)
    .replacen("</body>", &format!("{TAIL}</body>"), 1)
}

/// The `data-checked` JSON of a dumped DOM.
fn checked(dom: &str) -> Value {
    let start = dom
        .find("data-checked=\"")
        .unwrap_or_else(|| panic!("the checker did not run; the DOM was: {dom:.2000}"))
        + "data-checked=\"".len();
    let end = start + dom[start..].find('"').expect("end of attribute");
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Mean and standard deviation of the luminance of a PNG's pixels.
pub(crate) fn png_stats(path: &Path) -> (u32, u32, f64, f64) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let px = &buf[..info.buffer_size()];
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
    for p in px.chunks(channels) {
        let y = if channels >= 3 {
            0.2126 * p[0] as f64 + 0.7152 * p[1] as f64 + 0.0722 * p[2] as f64
        } else {
            p[0] as f64
        };
        sum += y;
        sq += y * y;
        n += 1.0;
    }
    let mean = sum / n;
    (
        info.width,
        info.height,
        mean,
        (sq / n - mean * mean).max(0.0).sqrt(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_with_a_storm_an_outage_and_a_budget_stop_makes_a_report_chromium_draws() {
    // An unknown 3,000 rpm limit over one-second windows with no headers
    // (slow start runs into 429s), 2% errors, and the provider down from
    // 8 s to 13 s.
    let env = Env::new(MockConfig {
        rpm: Some(3000),
        window: Some(Duration::from_secs(1)),
        hide_headers: true,
        error_rate: 0.02,
        latency: 20,
        latency_tail: true,
        outage: vec![Outage {
            start: Duration::from_secs(8),
            duration: Duration::from_secs(5),
        }],
        seed: Some(7),
        ..MockConfig::default()
    })
    .await;
    write_batch(env.dir.path(), "jobs.jsonl", 1_500);
    // ~$0.00002 a request: the budget stops the run after about 1,000.
    let out = env
        .run(&["run", "jobs.jsonl", "--json", "--max-cost", "0.02"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&out);
    assert!(
        s["stop_reason"].as_str().unwrap_or("").contains("budget")
            || s["stop_reason"].as_str().unwrap_or("").contains("max-cost"),
        "{s}"
    );
    assert!(s["rate_limited"].as_u64().unwrap() > 0, "no 429 storm: {s}");

    // Bad input: one sentence naming the path, exit 64.
    let bad = env.run(&["report", "nothing-here.jsonl"]).await;
    assert_eq!(bad.status.code(), Some(64), "{}", stderr(&bad));
    let text = stderr(&bad);
    assert!(
        text.contains("nothing-here.jsonl") && text.lines().count() == 1,
        "{text}"
    );

    // The report of the stopped run, found from the input's name.
    let out = env
        .run(&["report", "jobs.jsonl", "-o", "report.html"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = env.path("report.html");
    let html = std::fs::read_to_string(&page).expect("the report");
    assert!(html.len() < 2 * 1024 * 1024, "{} bytes", html.len());
    assert!(html.contains("stopped:"), "the budget stop is shown");
    assert!(
        html.contains("HTTP 429") && html.contains("HTTP 503"),
        "errors table"
    );
    assert!(html.contains("gpt-4o-mini"), "cost per model");
    // Nothing to fetch: no scripts, links, sources or CSS URLs (text such
    // as an error's message may name a URL; that fetches nothing).
    for banned in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "@import", "url(",
    ] {
        assert!(!html.contains(banned), "the report has {banned}");
    }

    // Headless Chromium: the DOM after load, with the checker's findings.
    let checked_page = env.path("checked.html");
    std::fs::write(&checked_page, with_checker(&html)).unwrap();
    let dump = run_chromium(
        env.dir.path(),
        &format!("file://{}", checked_page.display()),
        &["--dump-dom"],
    )
    .await;
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let found = checked(&String::from_utf8_lossy(&dump.stdout));
    assert_eq!(found["errors"], serde_json::json!([]), "{found}");
    let charts = found["charts"].as_object().expect("charts");
    for id in ["requests", "tokens", "errors", "latency", "cost"] {
        let c = &charts[id];
        assert!(c["declared"].as_u64().unwrap() > 5, "{id}: {c}");
        assert!(
            c["vertices"].as_u64().unwrap() >= c["declared"].as_u64().unwrap(),
            "{id}: {c}"
        );
        assert!(c["width"].as_f64().unwrap() > 500.0, "{id}: {c}");
    }
    assert!(
        found["status"].as_str().unwrap().starts_with("stopped"),
        "{found}"
    );

    // A screenshot: not blank.
    let shot = env.path("report.png");
    let out = run_chromium(
        env.dir.path(),
        &format!("file://{}", page.display()),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2400",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (w, h, mean, sd) = png_stats(&shot);
    assert_eq!((w, h), (1200, 2400));
    assert!(
        mean < 252.0 && sd > 10.0,
        "blank? mean {mean:.1}, sd {sd:.1}"
    );

    // Resumed with more budget: the report is read while the run writes.
    let mut run = env.pacer();
    run.args(["run", "jobs.jsonl", "--json", "--max-cost", "1"]);
    let run = run.spawn().expect("pacer run");
    let mut live_reports = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut saw_running = false;
    while tokio::time::Instant::now() < deadline {
        let out = env
            .run(&["report", "jobs.results.pacer.db", "-o", "live.html"])
            .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        live_reports += 1;
        let html = std::fs::read_to_string(env.path("live.html")).unwrap();
        saw_running |= html.contains("id=\"status\">running<");
        if html.contains("id=\"status\">finished<") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .expect("the resumed run ended")
        .expect("pacer ran");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        saw_running,
        "no report saw the run going ({live_reports} made)"
    );
    let out = env.run(&["report", "jobs.results.jsonl"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = std::fs::read_to_string(env.path("jobs.results.report.html")).unwrap();
    assert!(html.contains("id=\"status\">finished<"), "finished at last");
    assert!(html.contains("run 2 started"), "both runs are marked");
}
