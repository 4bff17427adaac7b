use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use super::{Event, PaceSource};

/// The window over which requests and tokens per minute are measured.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Running totals of a run, folded from [`Event`]s.
#[derive(Debug)]
pub struct Tally {
    started: Instant,
    total: u64,
    done_before: u64,
    failed_before: u64,
    resent: u64,
    spent_before: f64,
    succeeded: u64,
    failed: u64,
    sent: u64,
    rate_limited: u64,
    retries: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    unknown_cost: bool,
    latency_ms: Histogram<u64>,
    /// (second since start, requests, tokens) buckets for the per-minute rates.
    recent: VecDeque<(u64, u64, u64)>,
    pace: Option<(Option<f64>, Option<f64>, PaceSource, usize)>,
    stop_reason: Option<String>,
}

/// What a progress display shows at one moment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub total: u64,
    /// Finished for good, successes and failures, this run and earlier ones.
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub sent: u64,
    pub rate_limited: u64,
    pub retries: u64,
    pub requests_per_min: f64,
    pub tokens_per_min: f64,
    pub cost_usd: f64,
    pub unknown_cost: bool,
    pub elapsed_s: f64,
    pub eta_s: Option<f64>,
    pub pace_rpm: Option<f64>,
    pub pace_tpm: Option<f64>,
    pub pace_source: Option<PaceSource>,
    pub concurrency: Option<usize>,
}

/// The end-of-run summary (`--json` prints it as one object).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Requests not finished when the run stopped.
    pub pending: u64,
    /// Finished in this run.
    pub finished_this_run: u64,
    /// Attempts sent in this run.
    pub sent: u64,
    pub rate_limited: u64,
    pub retries: u64,
    /// Sent again because they were in flight at a crash (all runs).
    pub resent: u64,
    pub latency_ms_p50: Option<u64>,
    pub latency_ms_p95: Option<u64>,
    pub latency_ms_p99: Option<u64>,
    pub wall_s: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Known spend over all runs, USD; see `cost_unknown`.
    pub cost_usd: f64,
    /// Some model had no price: the true cost is higher than `cost_usd`.
    pub cost_unknown: bool,
    pub stop_reason: Option<String>,
    /// The request pace in force at the end, per minute (`None`: unlimited).
    pub pace_rpm: Option<f64>,
    /// The token pace in force at the end, per minute.
    pub pace_tpm: Option<f64>,
    /// Where that pace came from.
    pub pace_source: Option<PaceSource>,
    /// Spend per model over every run (filled in from the store at the end).
    pub by_model: Vec<crate::cost::ModelSpend>,
}

impl Tally {
    pub fn new(now: Instant) -> Tally {
        Tally {
            started: now,
            total: 0,
            done_before: 0,
            failed_before: 0,
            resent: 0,
            spent_before: 0.0,
            succeeded: 0,
            failed: 0,
            sent: 0,
            rate_limited: 0,
            retries: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            unknown_cost: false,
            latency_ms: Histogram::new_with_bounds(1, 3_600_000, 3)
                .expect("static histogram bounds"),
            recent: VecDeque::new(),
            pace: None,
            stop_reason: None,
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u64, u64) {
        let sec = now.saturating_duration_since(self.started).as_secs();
        while self
            .recent
            .front()
            .is_some_and(|b| b.0 + RATE_WINDOW.as_secs() <= sec)
        {
            self.recent.pop_front();
        }
        if self.recent.back().map(|b| b.0) != Some(sec) {
            self.recent.push_back((sec, 0, 0));
        }
        self.recent.back_mut().expect("just pushed")
    }

    /// Folds one event in, at time `now`.
    pub fn apply(&mut self, now: Instant, event: &Event) {
        match event {
            Event::Started {
                total,
                done,
                failed,
                resent,
                spent_usd,
                ..
            } => {
                self.total = *total;
                self.done_before = *done;
                self.failed_before = *failed;
                self.resent = *resent;
                self.spent_before = *spent_usd;
            }
            Event::Sent => {
                self.sent += 1;
                self.bucket(now).1 += 1;
            }
            Event::Answered { status, latency } => {
                if *status == Some(429) {
                    self.rate_limited += 1;
                }
                let ms = (latency.as_millis() as u64).clamp(1, 3_600_000);
                let _ = self.latency_ms.record(ms);
            }
            Event::Retrying { .. } => self.retries += 1,
            Event::Finished { ok } => {
                if *ok {
                    self.succeeded += 1;
                } else {
                    self.failed += 1;
                }
            }
            Event::Usage {
                prompt_tokens,
                completion_tokens,
                cost_usd,
                ..
            } => {
                self.prompt_tokens += prompt_tokens;
                self.completion_tokens += completion_tokens;
                self.bucket(now).2 += prompt_tokens + completion_tokens;
                match cost_usd {
                    Some(c) => self.cost_usd += c,
                    None => self.unknown_cost = true,
                }
            }
            Event::Pace {
                rpm,
                tpm,
                source,
                concurrency,
            } => self.pace = Some((*rpm, *tpm, *source, *concurrency)),
            Event::Paused { .. } => {}
            Event::Stopping { reason } => {
                self.stop_reason.get_or_insert_with(|| reason.clone());
            }
            // Batches are shown as they happen; their requests count
            // through `Finished` and `Usage` like any others.
            Event::BatchSubmitted { .. }
            | Event::BatchProgress { .. }
            | Event::BatchEnded { .. }
            | Event::BatchDeferred { .. } => {}
        }
    }

    /// The state of things at `now`.
    pub fn snapshot(&mut self, now: Instant) -> Snapshot {
        let elapsed = now.saturating_duration_since(self.started);
        self.bucket(now);
        let window = elapsed.min(RATE_WINDOW).as_secs_f64().max(1.0);
        let (reqs, toks) = self
            .recent
            .iter()
            .fold((0, 0), |(r, t), b| (r + b.1, t + b.2));
        let rpm = reqs as f64 * 60.0 / window;
        let finished_now = self.succeeded + self.failed;
        let finished = self.done_before + self.failed_before + finished_now;
        let left = self.total.saturating_sub(finished);
        let eta_s = if left == 0 {
            Some(0.0)
        } else if finished_now > 0 && elapsed.as_secs_f64() > 0.0 {
            Some(left as f64 * elapsed.as_secs_f64() / finished_now as f64)
        } else {
            None
        };
        Snapshot {
            total: self.total,
            finished,
            succeeded: self.done_before + self.succeeded,
            failed: self.failed_before + self.failed,
            sent: self.sent,
            rate_limited: self.rate_limited,
            retries: self.retries,
            requests_per_min: rpm,
            tokens_per_min: toks as f64 * 60.0 / window,
            cost_usd: self.spent_before + self.cost_usd,
            unknown_cost: self.unknown_cost,
            elapsed_s: elapsed.as_secs_f64(),
            eta_s,
            pace_rpm: self.pace.and_then(|p| p.0),
            pace_tpm: self.pace.and_then(|p| p.1),
            pace_source: self.pace.map(|p| p.2),
            concurrency: self.pace.map(|p| p.3),
        }
    }

    /// The final summary at `now`.
    pub fn summary(&self, now: Instant) -> Summary {
        let q =
            |p: f64| (!self.latency_ms.is_empty()).then(|| self.latency_ms.value_at_quantile(p));
        let succeeded = self.done_before + self.succeeded;
        let failed = self.failed_before + self.failed;
        Summary {
            total: self.total,
            succeeded,
            failed,
            pending: self.total.saturating_sub(succeeded + failed),
            finished_this_run: self.succeeded + self.failed,
            sent: self.sent,
            rate_limited: self.rate_limited,
            retries: self.retries,
            resent: self.resent,
            latency_ms_p50: q(0.50),
            latency_ms_p95: q(0.95),
            latency_ms_p99: q(0.99),
            wall_s: now.saturating_duration_since(self.started).as_secs_f64(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd: self.spent_before + self.cost_usd,
            cost_unknown: self.unknown_cost,
            stop_reason: self.stop_reason.clone(),
            pace_rpm: self.pace.and_then(|p| p.0),
            pace_tpm: self.pace.and_then(|p| p.1),
            pace_source: self.pace.map(|p| p.2),
            by_model: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rates_count_the_last_minute_and_the_summary_adds_earlier_runs() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.apply(
            t0,
            &Event::Started {
                total: 10,
                done: 4,
                failed: 1,
                resent: 2,
                requeued: 2,
                spent_usd: 1.5,
            },
        );
        for i in 0..3 {
            let now = t0 + Duration::from_secs(i * 10);
            tally.apply(now, &Event::Sent);
            tally.apply(
                now,
                &Event::Answered {
                    status: Some(200),
                    latency: Duration::from_millis(100 * (i + 1)),
                },
            );
            tally.apply(
                now,
                &Event::Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    cost_usd: Some(0.25),
                    model: None,
                },
            );
            tally.apply(now, &Event::Finished { ok: true });
        }
        tally.apply(
            t0,
            &Event::Answered {
                status: Some(429),
                latency: Duration::from_millis(5),
            },
        );
        let snap = tally.snapshot(t0 + Duration::from_secs(30));
        assert_eq!(snap.requests_per_min, 6.0); // 3 in 30 s
        assert_eq!(snap.finished, 8);
        assert_eq!(snap.rate_limited, 1);
        assert_eq!(snap.eta_s, Some(20.0)); // 2 left at 3 per 30 s
                                            // After two quiet minutes the rate falls to zero.
        assert_eq!(
            tally
                .snapshot(t0 + Duration::from_secs(150))
                .requests_per_min,
            0.0
        );
        let s = tally.summary(t0 + Duration::from_secs(30));
        assert_eq!((s.succeeded, s.failed, s.pending, s.resent), (7, 1, 2, 2));
        assert!((s.cost_usd - 2.25).abs() < 1e-9);
        assert_eq!(s.latency_ms_p50, Some(100));
    }
}
