//! The gateway's history, in memory, for its dashboard at `/`.
//!
//! `pacer run` keeps its history in its state and the report reads it back;
//! the gateway is a pass-through with no job to store, so it folds what its
//! metrics see (each attempt, retry and finished request) into time slots
//! here, and hands the report renderer the same [`ReportData`] a state
//! gives. Memory is bounded whatever the uptime: at most [`MAX_SLOTS`]
//! slots, and when they are full, neighbours merge and each slot covers
//! twice as long (after a day of uptime, 2,700 slots of 32 s: still more
//! than the 600 points a chart draws). A slot's latencies are a
//! small log-scale histogram (quarter-octave bins: percentiles within 19%),
//! not an HDR histogram of 20 KB.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use tokio::time::Instant;

use crate::cost::ModelSpend;
use crate::limit::PaceView;
use crate::report::{bucket_width, Bucket, ErrorKind, PacePoint, ReportData, RunInfo, MAX_POINTS};
use crate::store::Counts;

/// Most time slots kept; past it, neighbours merge.
pub const MAX_SLOTS: usize = 3_600;
/// Latency bins: four a doubling, up to 2^(BINS/4) ms (over nine hours).
const BINS: usize = 100;
/// Most error kinds kept (the rest count under the last).
const MAX_ERROR_KINDS: usize = 64;
/// Most pace points kept (the older half is thinned past it).
const MAX_PACE_POINTS: usize = 4_096;

#[derive(Debug, Clone)]
struct Slot {
    sent: u64,
    succeeded: u64,
    rate_limited: u64,
    retried: u64,
    errors: u64,
    failed: u64,
    est_tokens: u64,
    tokens: u64,
    cost_usd: f64,
    latency: [u32; BINS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            sent: 0,
            succeeded: 0,
            rate_limited: 0,
            retried: 0,
            errors: 0,
            failed: 0,
            est_tokens: 0,
            tokens: 0,
            cost_usd: 0.0,
            latency: [0; BINS],
        }
    }
}

impl Slot {
    fn merge(&mut self, o: &Slot) {
        self.sent += o.sent;
        self.succeeded += o.succeeded;
        self.rate_limited += o.rate_limited;
        self.retried += o.retried;
        self.errors += o.errors;
        self.failed += o.failed;
        self.est_tokens += o.est_tokens;
        self.tokens += o.tokens;
        self.cost_usd += o.cost_usd;
        for (a, b) in self.latency.iter_mut().zip(o.latency.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

/// The bin of a latency in ms: four a doubling.
fn bin(ms: u64) -> usize {
    let x = (ms as f64 + 1.0).log2() * 4.0;
    (x as usize).min(BINS - 1)
}

/// The lower edge of a bin, ms.
fn bin_floor(i: usize) -> u64 {
    (2f64.powf(i as f64 / 4.0) - 1.0).round().max(0.0) as u64
}

fn percentile(bins: &[u32; BINS], q: f64) -> Option<u64> {
    let n: u64 = bins.iter().map(|&c| u64::from(c)).sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let mut seen = 0u64;
    for (i, &c) in bins.iter().enumerate() {
        seen += u64::from(c);
        if seen >= rank {
            return Some(bin_floor(i));
        }
    }
    None
}

/// What the gateway saw, slot by slot since it started.
#[derive(Debug)]
pub struct GatewayHistory {
    origin: Instant,
    started_unix_ms: i64,
    /// Width of each slot, ms (doubles as slots merge).
    slot_ms: i64,
    slots: Vec<Slot>,
    pace: Vec<PacePoint>,
    errors: HashMap<String, (u64, String)>,
    by_model: BTreeMap<String, ModelSpend>,
    finished_ok: u64,
    finished_failed: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    spent_usd: f64,
    attempts: u64,
    run: RunInfo,
}

impl GatewayHistory {
    /// A history starting now; `run` holds the gateway's limits and budget.
    pub fn new(now: Instant, started_unix_ms: i64, run: RunInfo) -> GatewayHistory {
        GatewayHistory {
            origin: now,
            started_unix_ms,
            slot_ms: 1_000,
            slots: Vec::new(),
            pace: Vec::new(),
            errors: HashMap::new(),
            by_model: BTreeMap::new(),
            finished_ok: 0,
            finished_failed: 0,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            spent_usd: 0.0,
            attempts: 0,
            run: RunInfo {
                started_ms: 0,
                ended_ms: None,
                ..run
            },
        }
    }

    fn at_ms(&self, now: Instant) -> i64 {
        i64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(i64::MAX)
    }

    /// The slot of `now`, merging neighbours while the history is full.
    fn slot(&mut self, now: Instant) -> &mut Slot {
        let mut i = (self.at_ms(now) / self.slot_ms) as usize;
        while i >= MAX_SLOTS {
            let merged: Vec<Slot> = self
                .slots
                .chunks(2)
                .map(|pair| {
                    let mut s = pair[0].clone();
                    if let Some(b) = pair.get(1) {
                        s.merge(b);
                    }
                    s
                })
                .collect();
            self.slots = merged;
            self.slot_ms = self.slot_ms.saturating_mul(2);
            i = (self.at_ms(now) / self.slot_ms) as usize;
        }
        if self.slots.len() <= i {
            self.slots.resize(i + 1, Slot::default());
        }
        &mut self.slots[i]
    }

    /// An attempt that got a success's head.
    pub fn sent_ok(&mut self, now: Instant) {
        self.attempts += 1;
        self.slot(now).sent += 1;
    }

    /// An attempt that came to something else: a 429, another error
    /// answer, or none (`status` `None`).
    pub fn sent_failed(&mut self, now: Instant, status: Option<u16>, rate_limited: bool) {
        self.attempts += 1;
        let slot = self.slot(now);
        slot.sent += 1;
        if rate_limited {
            slot.rate_limited += 1;
        } else {
            slot.errors += 1;
        }
        let kind = match status {
            Some(s) => format!("HTTP {s}"),
            None => "no answer (connection, timeout or a cut answer)".to_string(),
        };
        self.error(kind, String::new());
    }

    /// An attempt that will be retried.
    pub fn retried(&mut self, now: Instant) {
        self.slot(now).retried += 1;
    }

    fn error(&mut self, kind: String, example: String) {
        if let Some(e) = self.errors.get_mut(&kind) {
            e.0 += 1;
        } else if self.errors.len() < MAX_ERROR_KINDS {
            self.errors.insert(kind, (1, example));
        }
    }

    /// A request that ended with its answer, good or not.
    #[allow(clippy::too_many_arguments)]
    pub fn finished(
        &mut self,
        now: Instant,
        ok: bool,
        latency_ms: u64,
        model: &str,
        tokens: Option<(u64, u64, u64)>,
        estimate: u64,
        cost_usd: Option<f64>,
    ) {
        let cost = cost_usd.filter(|c| c.is_finite() && *c >= 0.0);
        let slot = self.slot(now);
        slot.latency[bin(latency_ms)] = slot.latency[bin(latency_ms)].saturating_add(1);
        slot.est_tokens = slot.est_tokens.saturating_add(estimate);
        if ok {
            slot.succeeded += 1;
        } else {
            slot.failed += 1;
        }
        if let Some((prompt, _, completion)) = tokens {
            slot.tokens = slot
                .tokens
                .saturating_add(prompt.saturating_add(completion));
        }
        slot.cost_usd += cost.unwrap_or(0.0);
        if !ok {
            self.finished_failed += 1;
            return;
        }
        self.finished_ok += 1;
        self.spent_usd += cost.unwrap_or(0.0);
        let spend = self
            .by_model
            .entry(model.to_string())
            .or_insert_with(|| ModelSpend::new(model, true));
        spend.requests += 1;
        if let Some((prompt, cached, completion)) = tokens {
            spend.prompt_tokens = spend.prompt_tokens.saturating_add(prompt);
            spend.cached_tokens = spend.cached_tokens.saturating_add(cached);
            spend.completion_tokens = spend.completion_tokens.saturating_add(completion);
            self.prompt_tokens = self.prompt_tokens.saturating_add(prompt);
            self.cached_tokens = self.cached_tokens.saturating_add(cached);
            self.completion_tokens = self.completion_tokens.saturating_add(completion);
        }
        spend.cost_usd = match (spend.cost_usd, cost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    /// A request the gateway answered itself (queue full, waited too long,
    /// over budget) or could get no answer for.
    pub fn ended_without_answer(&mut self, now: Instant, why: &str) {
        self.finished_failed += 1;
        self.slot(now).failed += 1;
        self.error(why.to_string(), String::new());
    }

    /// The pace in force now (kept when it changed).
    pub fn pace(&mut self, now: Instant, view: &PaceView) {
        let at_ms = self.at_ms(now);
        let point = PacePoint {
            at_ms,
            rpm: view.rpm,
            tpm: view.tpm,
            concurrency: view.concurrency as u64,
            source: view.source,
        };
        let same = self.pace.last().is_some_and(|p| {
            p.rpm == point.rpm && p.tpm == point.tpm && p.concurrency == point.concurrency
        });
        if same {
            return;
        }
        if self.pace.len() >= MAX_PACE_POINTS {
            // Keep every other point of the older half.
            let half = self.pace.len() / 2;
            let mut kept: Vec<PacePoint> = self.pace[..half].iter().step_by(2).copied().collect();
            kept.extend_from_slice(&self.pace[half..]);
            self.pace = kept;
        }
        self.pace.push(point);
    }

    /// Everything the report draws, as of `now`; `waiting` and `in_flight`
    /// are the gateway's queue and requests upstream.
    pub fn report(&self, now: Instant, waiting: u64, in_flight: u64) -> ReportData {
        let end_ms = self.at_ms(now).max(1);
        let bucket_ms = bucket_width(end_ms, MAX_POINTS).max(self.slot_ms);
        let n = usize::try_from(end_ms / bucket_ms + 1).unwrap_or(1);
        let mut merged = vec![Slot::default(); n];
        let mut all = [0u32; BINS];
        for (i, s) in self.slots.iter().enumerate() {
            let at = i as i64 * self.slot_ms;
            let b = usize::try_from(at / bucket_ms).unwrap_or(0).min(n - 1);
            merged[b].merge(s);
            for (a, c) in all.iter_mut().zip(s.latency.iter()) {
                *a = a.saturating_add(*c);
            }
        }
        let buckets = merged
            .iter()
            .enumerate()
            .map(|(i, s)| Bucket {
                start_ms: i as i64 * bucket_ms,
                sent: s.sent,
                succeeded: s.succeeded,
                rate_limited: s.rate_limited,
                retried: s.retried,
                errors: s.errors,
                failed: s.failed,
                est_tokens: s.est_tokens,
                tokens: s.tokens,
                cost_usd: s.cost_usd,
                p50_ms: percentile(&s.latency, 0.50),
                p95_ms: percentile(&s.latency, 0.95),
                p99_ms: percentile(&s.latency, 0.99),
            })
            .collect();
        let mut errors: Vec<ErrorKind> = self
            .errors
            .iter()
            .map(|(kind, (count, example))| ErrorKind {
                kind: kind.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.kind.cmp(&b.kind)));
        errors.truncate(10);
        let total = self.finished_ok + self.finished_failed + waiting + in_flight;
        ReportData {
            state: PathBuf::from("pacer serve"),
            epoch_unix_ms: Some(self.started_unix_ms),
            bucket_ms,
            start_ms: 0,
            end_ms,
            buckets,
            pace: crate::report::downsample_steps(self.pace.clone(), 0, bucket_ms),
            runs: vec![self.run.clone()],
            errors,
            counts: Counts {
                total,
                pending: waiting,
                in_flight,
                done: self.finished_ok,
                failed: self.finished_failed,
                resent: 0,
                spent_usd: self.spent_usd,
                prompt_tokens: self.prompt_tokens,
                cached_tokens: self.cached_tokens,
                completion_tokens: self.completion_tokens,
            },
            by_model: self.by_model.values().cloned().collect(),
            attempts: self.attempts,
            p50_ms: percentile(&all, 0.50),
            p95_ms: percentile(&all, 0.95),
            p99_ms: percentile(&all, 0.99),
            cost_before_usd: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::PaceSource;

    fn run() -> RunInfo {
        RunInfo {
            started_ms: 0,
            ended_ms: None,
            via: "serve".into(),
            max_cost: Some(5.0),
            rpm: Some(600.0),
            tpm: None,
            concurrency: None,
            stop: None,
        }
    }

    #[test]
    fn percentiles_are_within_a_quarter_octave() {
        let mut bins = [0u32; BINS];
        for ms in 1..=1000u64 {
            bins[bin(ms)] += 1;
        }
        let p50 = percentile(&bins, 0.5).unwrap();
        assert!((420..=500).contains(&p50), "{p50}");
        let p99 = percentile(&bins, 0.99).unwrap();
        assert!((830..=990).contains(&p99), "{p99}");
        assert_eq!(percentile(&[0; BINS], 0.5), None);
        assert_eq!(bin(u64::MAX), BINS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_gateway_saw_becomes_the_reports_data() {
        let t0 = Instant::now();
        let mut h = GatewayHistory::new(t0, 1_700_000_000_000, run());
        for s in 0..10u64 {
            let now = t0 + Duration::from_secs(s);
            h.sent_failed(now, Some(429), true);
            h.retried(now);
            h.sent_ok(now);
            h.finished(
                now,
                true,
                200 + s,
                "gpt-4o-mini",
                Some((100, 10, 20)),
                130,
                Some(0.01),
            );
            h.pace(
                now,
                &PaceView {
                    rpm: Some(600.0),
                    tpm: None,
                    source: PaceSource::Headers,
                    concurrency: 8,
                },
            );
        }
        h.ended_without_answer(t0 + Duration::from_secs(9), "rejected: the queue was full");
        let d = h.report(t0 + Duration::from_secs(10), 3, 2);
        assert_eq!(d.bucket_ms, 1_000);
        let sum = |f: fn(&Bucket) -> u64| d.buckets.iter().map(f).sum::<u64>();
        assert_eq!(sum(|b| b.sent), 20);
        assert_eq!(sum(|b| b.rate_limited), 10);
        assert_eq!(sum(|b| b.retried), 10);
        assert_eq!(sum(|b| b.succeeded), 10);
        assert_eq!(sum(|b| b.failed), 1);
        assert_eq!(d.counts.done, 10);
        assert_eq!(d.counts.failed, 1);
        assert_eq!(d.counts.total, 16);
        assert_eq!(d.counts.prompt_tokens, 1000);
        assert!((d.counts.spent_usd - 0.1).abs() < 1e-9);
        assert_eq!(d.by_model.len(), 1);
        assert_eq!(d.by_model[0].requests, 10);
        assert_eq!(d.pace.len(), 1, "an unchanged pace is one point");
        assert_eq!(d.errors[0].kind, "HTTP 429");
        assert_eq!(d.errors[0].count, 10);
        assert_eq!(d.budget(), Some(5.0));
        assert!(d.running());
        assert!(d.p50_ms.is_some());
        let page = crate::report::render(&d, &crate::report::RenderOptions::default());
        assert!(page.contains("data-chart=\"requests\""));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_over_a_long_uptime() {
        let t0 = Instant::now();
        let mut h = GatewayHistory::new(t0, 0, run());
        // Three days, a request a minute.
        for m in 0..3 * 24 * 60u64 {
            let now = t0 + Duration::from_secs(60 * m);
            h.sent_ok(now);
            h.finished(now, true, 100, "m", None, 10, None);
        }
        assert!(h.slots.len() <= MAX_SLOTS);
        assert!(h.slot_ms > 1_000);
        let d = h.report(t0 + Duration::from_secs(3 * 86_400), 0, 0);
        assert!(d.buckets.len() <= MAX_POINTS + 1, "{}", d.buckets.len());
        assert_eq!(d.buckets.iter().map(|b| b.sent).sum::<u64>(), 4_320);
    }
}
