//! Progress: a bar on a terminal, plain periodic lines elsewhere, and the
//! final summary. Events arrive on a channel from the engine (as in oha); the
//! display redraws on a tick, never once per event.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pacer::report::{Event, PaceSource, RunMetrics, Snapshot, Summary, Tally};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::args::ProgressArg;

/// How often the bar redraws.
const BAR_TICK: Duration = Duration::from_millis(200);
/// How often waiting events are taken from the engine's channel.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Reporter {
    task: JoinHandle<()>,
}

enum Display {
    Bar(ProgressBar),
    Plain { last: Instant },
    None,
}

impl Reporter {
    /// Shows the events as `mode` says, and folds them into `metrics` (the
    /// dashboard's) when given.
    pub fn spawn(
        rx: mpsc::UnboundedReceiver<Event>,
        mode: ProgressArg,
        metrics: Option<Arc<RunMetrics>>,
    ) -> Reporter {
        let display = match mode {
            ProgressArg::Auto if std::io::stderr().is_terminal() => Display::Bar(bar()),
            ProgressArg::Bar => Display::Bar(bar()),
            ProgressArg::Auto | ProgressArg::Plain => Display::Plain {
                last: Instant::now(),
            },
            ProgressArg::None => Display::None,
        };
        Reporter {
            task: tokio::spawn(report(rx, display, metrics)),
        }
    }

    /// Waits for the last events to be shown (the engine has dropped its sender).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

fn bar() -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
    pb.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {percent}% | {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb
}

async fn report(
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut display: Display,
    metrics: Option<Arc<RunMetrics>>,
) {
    let mut tally = Tally::new(Instant::now());
    // A run that failed before it started has no progress worth a line.
    let mut started = false;
    let mut batches = BatchLines::default();
    // Events are drained on a tick rather than awaited one by one: a task
    // waiting on the channel is woken by every send, a cross-thread wake
    // per event, several per request (2% of a fast run's CPU).
    let mut tick = interval(DRAIN_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drawn = Instant::now();
    let mut open = true;
    while open {
        tick.tick().await;
        loop {
            match rx.try_recv() {
                Ok(ev) => {
                    panic_if_asked();
                    started = true;
                    if let Some(m) = &metrics {
                        m.apply(&ev);
                    }
                    if let Some(line) = batches.line(&ev, Instant::now()) {
                        say(&display, &line);
                    }
                    tally.apply(Instant::now(), &ev)
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        if open && now - drawn >= BAR_TICK {
            drawn = now;
            draw(&mut display, &tally.snapshot(now), false);
        }
    }
    if started {
        draw(&mut display, &tally.snapshot(Instant::now()), true);
    }
    if let Display::Bar(pb) = &display {
        // Leave the bar where it is: a stopped run is not 100%.
        pb.abandon();
    }
}

/// A line of its own, above the bar or among the plain lines.
fn say(display: &Display, line: &str) {
    match display {
        Display::Bar(pb) => pb.println(format!("pacer: {line}")),
        Display::Plain { .. } => eprintln!("pacer: {line}"),
        Display::None => {}
    }
}

/// Lines for batch events: each submission, status change and end; counts
/// at most every [`PLAIN_EVERY`] a batch.
#[derive(Default)]
struct BatchLines {
    /// Per batch: the status last shown, and when counts were last shown.
    shown: std::collections::HashMap<i64, (String, Instant)>,
}

impl BatchLines {
    fn line(&mut self, ev: &Event, now: Instant) -> Option<String> {
        match ev {
            Event::BatchSubmitted {
                batch,
                api,
                model,
                requests,
                id,
            } => Some(format!(
                "batch {batch} submitted: {requests} {} requests to the {api} batch API ({id})",
                model.as_deref().unwrap_or("(no model)")
            )),
            Event::BatchProgress {
                batch,
                status,
                processed,
                failed,
                total,
            } => {
                let shown = self.shown.get(batch);
                let new_status = shown.is_none_or(|(s, _)| s != status);
                let due = shown.is_none_or(|(_, at)| now.duration_since(*at) >= PLAIN_EVERY);
                if !new_status && !due {
                    return None;
                }
                self.shown.insert(*batch, (status.clone(), now));
                Some(format!(
                    "batch {batch} {status}: {processed}/{total} processed, {failed} failed"
                ))
            }
            Event::BatchEnded {
                batch,
                status,
                succeeded,
                failed,
                requeued,
            } => {
                self.shown.remove(batch);
                let again = if *requeued > 0 {
                    format!(", {requeued} to go again in a later batch")
                } else {
                    String::new()
                };
                Some(format!(
                    "batch {batch} results written ({status}): {succeeded} succeeded, {failed} failed{again}"
                ))
            }
            Event::BatchDeferred {
                batch,
                model,
                reason,
            } => Some(format!(
                "batch {batch} deferred: the provider will not take more {} work yet ({reason}); its requests wait for a later batch",
                model.as_deref().unwrap_or("(no model)")
            )),
            _ => None,
        }
    }
}

/// Debug builds only: `PACER_TEST_PANIC` makes this task panic, so the e2e
/// tests can check how the binary answers a bug in a task.
fn panic_if_asked() {
    #[cfg(debug_assertions)]
    if std::env::var_os("PACER_TEST_PANIC").is_some() {
        panic!("PACER_TEST_PANIC is set");
    }
}

fn fmt_eta(s: Option<f64>) -> String {
    match s {
        None => "?".into(),
        Some(s) if s.is_infinite() => "?".into(),
        Some(s) => {
            let s = s.round() as u64;
            if s >= 3600 {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            } else if s >= 60 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{s}s")
            }
        }
    }
}

fn pace_text(s: &Snapshot) -> String {
    let source = match s.pace_source {
        Some(PaceSource::Configured) => "configured",
        Some(PaceSource::Headers) => "from headers",
        Some(PaceSource::Learned) => "learned",
        Some(PaceSource::Unlimited) | None => return "pace: unlimited".into(),
    };
    let mut parts = Vec::new();
    if let Some(r) = s.pace_rpm {
        parts.push(format!("{r:.0} rpm"));
    }
    if let Some(t) = s.pace_tpm {
        parts.push(format!("{t:.0} tpm"));
    }
    format!("pace: {} ({source})", parts.join(", "))
}

fn message(s: &Snapshot) -> String {
    let cost = if s.unknown_cost {
        format!("{} + unknown", pacer::cost::format_usd(s.cost_usd))
    } else {
        pacer::cost::format_usd(s.cost_usd)
    };
    format!(
        "{:.0} req/min, {:.0} tok/min | 429s {} | retries {} | failed {} | {} | ETA {} | {}",
        s.requests_per_min,
        s.tokens_per_min,
        s.rate_limited,
        s.retries,
        s.failed,
        cost,
        fmt_eta(s.eta_s),
        pace_text(s)
    )
}

fn draw(display: &mut Display, s: &Snapshot, last: bool) {
    match display {
        Display::Bar(pb) => {
            pb.set_length(s.total);
            pb.set_position(s.finished);
            pb.set_message(message(s));
        }
        Display::Plain { last: printed } => {
            if last || printed.elapsed() >= PLAIN_EVERY {
                *printed = Instant::now();
                eprintln!("pacer: {}/{} done | {}", s.finished, s.total, message(s));
            }
        }
        Display::None => {}
    }
}

/// The human summary, on stderr.
pub fn print_summary(s: &Summary) {
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into());
    let cost = if s.cost_unknown {
        format!(
            "{} + unknown (some models have no price; see --prices)",
            pacer::cost::format_usd(s.cost_usd)
        )
    } else {
        pacer::cost::format_usd(s.cost_usd)
    };
    eprintln!(
        "\nsummary: {} requests: {} succeeded, {} failed, {} pending\n\
         this run: {} finished, {} sent, {} answered 429, {} retries, {} re-sent after crashes (all runs)\n\
         latency: p50 {}, p95 {}, p99 {}\n\
         tokens: {} prompt, {} completion; cost {}\n\
         wall time: {:.1} s{}",
        s.total,
        s.succeeded,
        s.failed,
        s.pending,
        s.finished_this_run,
        s.sent,
        s.rate_limited,
        s.retries,
        s.resent,
        ms(s.latency_ms_p50),
        ms(s.latency_ms_p95),
        ms(s.latency_ms_p99),
        s.prompt_tokens,
        s.completion_tokens,
        cost,
        s.wall_s,
        by_model(s)
    );
}

/// One line per model when the job used more than one, or any unpriced one.
fn by_model(s: &Summary) -> String {
    if s.by_model.len() < 2 && s.by_model.iter().all(|m| m.cost_usd.is_some()) {
        return String::new();
    }
    let mut out = String::from("\nby model:");
    for m in &s.by_model {
        let cost = m
            .cost_usd
            .map(pacer::cost::format_usd)
            .unwrap_or_else(|| "unknown (no price; see --prices)".into());
        let name = if m.model.is_empty() {
            "(none)"
        } else {
            &m.model
        };
        out.push_str(&format!(
            "\n  {name}: {} requests, {} prompt + {} completion tokens, {cost}",
            m.requests, m.prompt_tokens, m.completion_tokens
        ));
    }
    out
}
