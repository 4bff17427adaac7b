//! The report page: one self-contained HTML file (inline CSS and SVG, no
//! script, no font, nothing fetched; its Content-Security-Policy forbids
//! any fetch), from a [`ReportData`].
//!
//! The same page is the live dashboard: `pacer run --dashboard` calls
//! [`ReportData::from_state`] and [`render`] with
//! [`RenderOptions::live_refresh`] set, and the page reloads itself with a
//! meta refresh.
//!
//! ```no_run
//! use pacer::report::html::{render, RenderOptions};
//! use pacer::report::ReportData;
//! # fn main() -> Result<(), pacer::report::ReportError> {
//! let data = ReportData::from_state("jobs.results.pacer.db".as_ref())?;
//! let page = render(&data, &RenderOptions { live_refresh: Some(std::time::Duration::from_secs(5)) });
//! # let _ = page; Ok(()) }
//! ```

use std::fmt::Write;
use std::time::Duration;

use super::data::ReportData;
use super::svg::{chart, elapsed, escape, short_number, Chart, Marker, Series, Style};
use crate::cost::format_usd;

/// How the page is rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// `Some`: a live page that reloads itself this often (at least 1 s).
    pub live_refresh: Option<Duration>,
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1040px;color:#0f172a;padding:0 12px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}\
.sub{color:#475569;margin:0 0 12px}.chart{display:block;margin:0 0 18px;border:1px solid #e2e8f0;border-radius:6px;background:#fff}\
.tick{font-size:11px;fill:#475569}.unit{font-size:11px;fill:#334155}.ctitle{font-size:14px;font-weight:600;fill:#0f172a}.legend{font-size:12px;fill:#334155}\
table{border-collapse:collapse;margin:0 0 8px}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}th{color:#475569;font-weight:500}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.ex{font-family:ui-monospace,monospace;font-size:12px;color:#334155;max-width:640px;word-break:break-all}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}.running{background:#dbeafe;color:#1e40af}.finished{background:#dcfce7;color:#166534}.stopped{background:#fef3c7;color:#92400e}";

/// Colours of the series (readable on white, distinct for colour-blind readers).
const BLUE: &str = "#2563eb";
const ORANGE: &str = "#ea580c";
const GREEN: &str = "#16a34a";
const RED: &str = "#dc2626";
const PURPLE: &str = "#7c3aed";
const GREY: &str = "#64748b";

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn utc(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

fn ms_text(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{} ms", group(v)))
}

/// A bucket's width: `1 s`, `5 min`, `2 h`, `1 d`.
fn width_text(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// Renders the whole page.
pub fn render(data: &ReportData, options: &RenderOptions) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let name = data
        .state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    o.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    // Nothing may be fetched: the page is whole as it is.
    o.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">");
    if let Some(every) = options.live_refresh {
        let _ = write!(
            o,
            "<meta http-equiv=\"refresh\" content=\"{}\">",
            every.as_secs().max(1)
        );
    }
    let _ = write!(
        o,
        "<meta name=\"viewport\" content=\"width=device-width\"><title>pacer report: {}</title><style>{CSS}</style></head><body>",
        escape(&name)
    );
    header(&mut o, data, &name, options);
    charts(&mut o, data);
    tables(&mut o, data);
    o.push_str("</body></html>\n");
    o
}

fn header(o: &mut String, data: &ReportData, name: &str, options: &RenderOptions) {
    let (class, text) = if data.running() {
        ("running", "running".to_string())
    } else if let Some(stop) = data.runs.last().and_then(|r| r.stop.as_deref()) {
        ("stopped", format!("stopped: {stop}"))
    } else if data.counts.pending + data.counts.in_flight > 0 {
        ("stopped", "stopped".to_string())
    } else {
        ("finished", "finished".to_string())
    };
    let _ = write!(
        o,
        "<h1>pacer report: {}</h1><p class=\"sub\"><span class=\"badge {class}\" id=\"status\">{}</span> ",
        escape(name),
        escape(&text)
    );
    match data.epoch_unix_ms {
        Some(epoch) if data.attempts > 0 || !data.runs.is_empty() => {
            let _ = write!(
                o,
                "{} to {} ({}), {} attempts over {} run{}, in buckets of {}.",
                utc(epoch + data.start_ms),
                utc(epoch + data.end_ms),
                elapsed((data.end_ms - data.start_ms) as f64),
                group(data.attempts),
                data.runs.len(),
                if data.runs.len() == 1 { "" } else { "s" },
                width_text(data.bucket_ms),
            );
        }
        _ => o.push_str("No history recorded in this state (it was written by a pacer without it, or nothing was sent yet)."),
    }
    if let Some(every) = options.live_refresh {
        let _ = write!(
            o,
            " Live: this page reloads every {} s.",
            every.as_secs().max(1)
        );
    }
    o.push_str("</p>");
}

/// The middle of each bucket, as a chart's x.
fn mid(data: &ReportData, start_ms: i64) -> f64 {
    start_ms as f64 + data.bucket_ms as f64 / 2.0
}

/// A bucket's count as a rate per minute. The last bucket is cut by the
/// end of the history: its rate is over the part it covers (at least a
/// second), or a live page would always show a drop at its right edge.
fn per_min(data: &ReportData, b: &super::data::Bucket, n: u64) -> f64 {
    let covered = (data.end_ms - b.start_ms).clamp(1_000, data.bucket_ms.max(1_000));
    n as f64 * 60_000.0 / covered as f64
}

fn bucket_series(
    data: &ReportData,
    name: &str,
    color: &'static str,
    f: impl Fn(&super::data::Bucket) -> Option<f64>,
) -> Series {
    Series {
        name: name.into(),
        color,
        style: Style::Line,
        points: data
            .buckets
            .iter()
            .map(|b| (mid(data, b.start_ms), f(b)))
            .collect(),
    }
}

/// The pace as a step line, held to the end of the axis.
fn pace_series(
    data: &ReportData,
    name: &str,
    color: &'static str,
    f: impl Fn(&super::data::PacePoint) -> Option<f64>,
) -> Series {
    let mut points: Vec<(f64, Option<f64>)> =
        data.pace.iter().map(|p| (p.at_ms as f64, f(p))).collect();
    if let Some(&(_, last)) = points.last() {
        points.push((data.end_ms as f64, last));
    }
    Series {
        name: name.into(),
        color,
        style: Style::Step,
        points,
    }
}

/// A run's setting (a limit, the budget) as a dashed level over each run
/// that had it, with gaps between runs.
fn per_run(
    data: &ReportData,
    name: &str,
    color: &'static str,
    f: fn(&super::data::RunInfo) -> Option<f64>,
) -> Option<Series> {
    let mut points = Vec::new();
    for r in &data.runs {
        if let Some(v) = f(r) {
            let end = r.ended_ms.unwrap_or(data.end_ms).max(r.started_ms);
            points.push((r.started_ms as f64, Some(v)));
            points.push((end as f64, Some(v)));
            points.push((end as f64, None));
        }
    }
    (!points.is_empty()).then(|| Series {
        name: name.into(),
        color,
        style: Style::Dashed,
        points,
    })
}

fn markers(data: &ReportData) -> Vec<Marker> {
    let mut out = Vec::new();
    for (i, r) in data.runs.iter().enumerate() {
        if i > 0 {
            out.push(Marker {
                x: r.started_ms as f64,
                label: format!("run {} started", i + 1),
            });
        }
        if let (Some(end), Some(stop)) = (r.ended_ms, &r.stop) {
            out.push(Marker {
                x: end as f64,
                label: format!("run {} stopped: {stop}", i + 1),
            });
        }
    }
    out
}

fn charts(o: &mut String, data: &ReportData) {
    let x0 = data.start_ms as f64;
    let x1 = data.end_ms as f64;
    let marks = markers(data);

    let mut requests = vec![
        bucket_series(data, "sent/min", BLUE, |b| Some(per_min(data, b, b.sent))),
        bucket_series(data, "succeeded/min", GREEN, |b| {
            Some(per_min(data, b, b.succeeded))
        }),
        pace_series(data, "pace (rpm)", ORANGE, |p| p.rpm),
    ];
    requests.extend(per_run(data, "limit (--rpm)", RED, |r| r.rpm));

    let mut tokens = vec![
        bucket_series(data, "tokens/min (real)", BLUE, |b| {
            Some(per_min(data, b, b.tokens))
        }),
        bucket_series(data, "estimated/min (sent)", GREY, |b| {
            Some(per_min(data, b, b.est_tokens))
        }),
        pace_series(data, "pace (tpm)", ORANGE, |p| p.tpm),
    ];
    tokens.extend(per_run(data, "limit (--tpm)", RED, |r| r.tpm));

    let errors = vec![
        bucket_series(data, "429s/min", ORANGE, |b| {
            Some(per_min(data, b, b.rate_limited))
        }),
        bucket_series(data, "retries/min", BLUE, |b| {
            Some(per_min(data, b, b.retried))
        }),
        bucket_series(data, "errors/min", RED, |b| {
            Some(per_min(data, b, b.errors))
        }),
        bucket_series(data, "failed/min", PURPLE, |b| {
            Some(per_min(data, b, b.failed))
        }),
    ];

    let latency = vec![
        bucket_series(data, "p50", GREEN, |b| b.p50_ms.map(|v| v as f64)),
        bucket_series(data, "p95", ORANGE, |b| b.p95_ms.map(|v| v as f64)),
        bucket_series(data, "p99", RED, |b| b.p99_ms.map(|v| v as f64)),
    ];

    let mut spent = data.cost_before_usd;
    let mut cost = vec![Series {
        name: "spent (cumulative)".into(),
        color: BLUE,
        style: Style::Line,
        points: data
            .buckets
            .iter()
            .map(|b| {
                spent += b.cost_usd;
                (
                    (b.start_ms + data.bucket_ms).min(data.end_ms) as f64,
                    Some(spent),
                )
            })
            .collect(),
    }];
    cost.extend(per_run(data, "budget (--max-cost)", RED, |r| r.max_cost));

    let specs: [(&str, &str, &str, bool, Vec<Series>); 5] = [
        (
            "requests",
            "Requests per minute, the pace and the limit",
            "requests/min",
            false,
            requests,
        ),
        (
            "tokens",
            "Tokens per minute against TPM",
            "tokens/min",
            false,
            tokens,
        ),
        (
            "errors",
            "429s, retries and errors",
            "attempts/min",
            false,
            errors,
        ),
        ("latency", "Latency p50 / p95 / p99", "ms", false, latency),
        (
            "cost",
            "Cumulative cost against the budget",
            "USD",
            true,
            cost,
        ),
    ];
    o.push_str("<h2>Over time</h2>");
    for (id, title, unit, money, series) in specs {
        o.push_str(&chart(&Chart {
            id,
            title,
            unit,
            money,
            x0,
            x1,
            series,
            markers: marks.clone(),
        }));
    }
}

fn row(o: &mut String, name: &str, value: &str) {
    let _ = write!(
        o,
        "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
        escape(name),
        escape(value)
    );
}

fn tables(o: &mut String, data: &ReportData) {
    let c = &data.counts;
    let sum = |f: fn(&super::data::Bucket) -> u64| data.buckets.iter().map(f).sum::<u64>();
    o.push_str("<h2>Summary</h2><table id=\"summary\">");
    row(o, "requests", &group(c.total));
    row(o, "succeeded", &group(c.done));
    row(o, "failed", &group(c.failed));
    row(o, "pending", &group(c.pending));
    row(o, "in flight", &group(c.in_flight));
    row(o, "attempts", &group(data.attempts));
    row(o, "429s", &group(sum(|b| b.rate_limited)));
    row(o, "retries", &group(sum(|b| b.retried)));
    row(o, "errors", &group(sum(|b| b.errors)));
    row(o, "re-sent after a crash", &group(c.resent));
    row(
        o,
        "tokens",
        &format!(
            "{} prompt ({} cached), {} completion",
            group(c.prompt_tokens),
            group(c.cached_tokens),
            group(c.completion_tokens)
        ),
    );
    row(o, "spent", &format_usd(c.spent_usd));
    if let Some(b) = data.budget() {
        row(o, "budget (--max-cost)", &format_usd(b));
    }
    row(
        o,
        "latency p50 / p95 / p99",
        &format!(
            "{} / {} / {}",
            ms_text(data.p50_ms),
            ms_text(data.p95_ms),
            ms_text(data.p99_ms)
        ),
    );
    o.push_str("</table>");

    o.push_str("<h2>Cost per model</h2><table id=\"models\"><tr><th>model</th><th>requests</th><th>prompt tokens</th><th>cached</th><th>completion tokens</th><th>cost</th></tr>");
    for m in &data.by_model {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(if m.model.is_empty() { "(none)" } else { &m.model }),
            group(m.requests),
            group(m.prompt_tokens),
            group(m.cached_tokens),
            group(m.completion_tokens),
            m.cost_usd.map_or_else(|| "unknown".into(), format_usd),
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Most common errors</h2>");
    if data.errors.is_empty() {
        o.push_str("<p id=\"errors\">No failed attempts.</p>");
    } else {
        o.push_str("<table id=\"errors\"><tr><th>kind</th><th>attempts</th><th>example</th></tr>");
        for e in &data.errors {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"ex\">{}</td></tr>",
                escape(&e.kind),
                group(e.count),
                escape(&e.example)
            );
        }
        o.push_str("</table>");
    }

    if !data.runs.is_empty() {
        o.push_str("<h2>Runs</h2><table id=\"runs\"><tr><th>#</th><th>started</th><th>lasted</th><th>via</th><th>limits</th><th>budget</th><th>ended</th></tr>");
        let epoch = data.epoch_unix_ms.unwrap_or(0);
        for (i, r) in data.runs.iter().enumerate() {
            let mut limits = Vec::new();
            if let Some(v) = r.rpm {
                limits.push(format!("--rpm {}", short_number(v)));
            }
            if let Some(v) = r.tpm {
                limits.push(format!("--tpm {}", short_number(v)));
            }
            if let Some(v) = r.concurrency {
                limits.push(format!("--concurrency {v}"));
            }
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i + 1,
                utc(epoch + r.started_ms),
                r.ended_ms
                    .map_or_else(|| "–".into(), |e| elapsed((e - r.started_ms) as f64)),
                escape(&r.via),
                escape(&if limits.is_empty() { "learned".to_string() } else { limits.join(" ") }),
                r.max_cost.map_or_else(|| "–".into(), format_usd),
                escape(&match (&r.ended_ms, &r.stop) {
                    (None, _) => "running (or crashed)".to_string(),
                    (Some(_), Some(s)) => format!("stopped: {s}"),
                    (Some(_), None) => "finished".to_string(),
                }),
            );
        }
        o.push_str("</table>");
    }
    o.push_str(
        "<p class=\"sub\">Made by <code>pacer report</code> from the run's state, read-only.</p>",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(width_text(1_000), "1 s");
        assert_eq!(width_text(300_000), "5 min");
        assert_eq!(width_text(7_200_000), "2 h");
    }
}
