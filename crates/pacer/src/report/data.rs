//! What the report shows, read from a job's state: the history aggregated
//! into time buckets, the pace in force, each run's limits and budget, the
//! summary, cost per model and the most common errors.
//!
//! Cheap enough to call every few seconds on a million-attempt state: the
//! attempts are read in two streaming passes (their time span, then one
//! row at a time into at most [`MAX_POINTS`] buckets, each with its own
//! latency histogram), never held in memory. The state is opened
//! read-only: a run still going is never blocked (WAL readers do not hold
//! up the writer) and never changed.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use rusqlite::{Connection, OptionalExtension};

use super::{PaceSource, ReportError};
use crate::cost::ModelSpend;
use crate::store::{Counts, JobStore};

/// The most points a chart draws: the bucket width is chosen so that the
/// whole history fits in this many.
pub const MAX_POINTS: usize = 600;

/// Bucket widths to choose from, in ms: round numbers on a time axis.
const WIDTHS_MS: &[i64] = &[
    1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
    1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

/// The narrowest round bucket width that puts `span_ms` in at most
/// `max_points` buckets.
pub fn bucket_width(span_ms: i64, max_points: usize) -> i64 {
    let max_points = max_points.max(1) as i64;
    let span = span_ms.max(1);
    for &w in WIDTHS_MS {
        if (span + w - 1) / w <= max_points {
            return w;
        }
    }
    // Longer than 600 days: whole days.
    let days = (span + max_points * 86_400_000 - 1) / (max_points * 86_400_000);
    days * 86_400_000
}

/// One time bucket of the history. Sends count where they went out;
/// answers (statuses, latency, tokens, cost) where they came back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// The bucket's start, ms since the history's epoch.
    pub start_ms: i64,
    /// Attempts sent.
    pub sent: u64,
    /// Attempts answered with success.
    pub succeeded: u64,
    /// Attempts answered 429.
    pub rate_limited: u64,
    /// Attempts that will be retried (429s included).
    pub retried: u64,
    /// Attempts answered with another error, or with none (transport).
    pub errors: u64,
    /// Requests failed for good.
    pub failed: u64,
    /// pacer's token estimates of the attempts sent.
    pub est_tokens: u64,
    /// Real tokens (prompt + completion) of the answers.
    pub tokens: u64,
    /// Real cost of the answers, USD.
    pub cost_usd: f64,
    /// Latency percentiles of the answers, ms.
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// The pace in force from `at_ms` on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacePoint {
    pub at_ms: i64,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub concurrency: u64,
    pub source: PaceSource,
}

/// One run of the job.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub started_ms: i64,
    /// `None`: still going, or it crashed.
    pub ended_ms: Option<i64>,
    pub via: String,
    pub max_cost: Option<f64>,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub concurrency: Option<u64>,
    /// Why it stopped early, if it did.
    pub stop: Option<String>,
}

/// Failed attempts of one kind (`HTTP 429`, `timeout`), with the first one's text.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorKind {
    pub kind: String,
    pub count: u64,
    pub example: String,
}

/// Everything a report shows, aggregated; small whatever the job's size.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub state: PathBuf,
    /// The history's origin (the job's first recorded run), unix ms.
    pub epoch_unix_ms: Option<i64>,
    /// The width of each bucket, ms.
    pub bucket_ms: i64,
    /// The time axis: ms since the epoch.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Consecutive buckets from `start_ms`, at most [`MAX_POINTS`].
    pub buckets: Vec<Bucket>,
    /// The pace in force, at most one point a bucket (the last of each).
    pub pace: Vec<PacePoint>,
    pub runs: Vec<RunInfo>,
    /// Most common first, at most 10.
    pub errors: Vec<ErrorKind>,
    pub counts: Counts,
    pub by_model: Vec<ModelSpend>,
    /// Attempts recorded in the history.
    pub attempts: u64,
    /// Latency percentiles over the whole history, ms.
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    /// Spend the history does not cover (runs before it was kept), USD:
    /// where the cumulative cost starts.
    pub cost_before_usd: f64,
}

impl ReportData {
    /// Reads and aggregates the history of the state at `path` (read-only).
    pub fn from_state(path: &Path) -> Result<ReportData, ReportError> {
        Self::from_state_with(path, MAX_POINTS)
    }

    /// As [`from_state`](Self::from_state) with at most `max_points` buckets.
    pub fn from_state_with(path: &Path, max_points: usize) -> Result<ReportData, ReportError> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(ReportError::NotAState(path.to_path_buf())),
            Err(e) => {
                return Err(ReportError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        }
        let store = JobStore::open_read_only(path)?;
        let sql = |e| ReportError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        };
        let conn = store.reader();
        if !has_table(conn, "requests").map_err(sql)? {
            return Err(ReportError::NotAState(path.to_path_buf()));
        }
        let counts = store.counts()?;
        let by_model = spend_by_model(conn).map_err(sql)?;
        let history = has_table(conn, "attempts").map_err(sql)?;
        let epoch_unix_ms = store.meta("history_epoch_ms")?.and_then(|v| v.parse().ok());
        let mut data = ReportData {
            state: path.to_path_buf(),
            epoch_unix_ms,
            bucket_ms: WIDTHS_MS[0],
            start_ms: 0,
            end_ms: 0,
            buckets: Vec::new(),
            pace: Vec::new(),
            runs: Vec::new(),
            errors: Vec::new(),
            counts,
            by_model,
            attempts: 0,
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            cost_before_usd: 0.0,
        };
        if !history {
            data.cost_before_usd = data.counts.spent_usd;
            return Ok(data);
        }
        data.runs = runs(conn).map_err(sql)?;
        data.errors = errors(conn).map_err(sql)?;
        let (first, last, n) = span(conn).map_err(sql)?;
        data.attempts = n;
        let mut start = first.unwrap_or(0);
        let mut end = last.unwrap_or(0);
        for r in &data.runs {
            start = start.min(r.started_ms);
            end = end.max(r.ended_ms.unwrap_or(r.started_ms));
        }
        data.start_ms = start;
        data.end_ms = end.max(start + 1);
        data.bucket_ms = bucket_width(data.end_ms - start, max_points);
        let n_buckets = ((data.end_ms - start) / data.bucket_ms + 1) as usize;
        data.buckets = (0..n_buckets)
            .map(|i| Bucket {
                start_ms: start + i as i64 * data.bucket_ms,
                ..Bucket::default()
            })
            .collect();
        let all = aggregate(conn, &mut data).map_err(sql)?;
        if !all.is_empty() {
            data.p50_ms = Some(quantile(&all, 0.50));
            data.p95_ms = Some(quantile(&all, 0.95));
            data.p99_ms = Some(quantile(&all, 0.99));
        }
        data.pace = pace(conn, data.start_ms, data.bucket_ms).map_err(sql)?;
        let history_cost: f64 = data.buckets.iter().map(|b| b.cost_usd).sum();
        // Read a moment apart from the attempts, a live run's counts may be
        // a little ahead: only a clear difference is earlier spend.
        let before = data.counts.spent_usd - history_cost;
        data.cost_before_usd = if before > 1e-6 { before } else { 0.0 };
        Ok(data)
    }

    /// The budget (`--max-cost`) of the latest run that had one.
    pub fn budget(&self) -> Option<f64> {
        self.runs.iter().rev().find_map(|r| r.max_cost)
    }

    /// Whether the latest run is still going (or crashed before recording its end).
    pub fn running(&self) -> bool {
        self.runs.last().is_some_and(|r| r.ended_ms.is_none())
    }

    /// The bucket a time falls in (clamped to the axis).
    fn bucket_of(&self, at_ms: i64) -> usize {
        let i = (at_ms - self.start_ms).max(0) / self.bucket_ms;
        (i as usize).min(self.buckets.len().saturating_sub(1))
    }
}

/// Spend per model of the succeeded requests, as `JobStore::spend_by_model`
/// but in one scan of the table: a report is mostly read on jobs largely
/// done, where looking up each done row through the state index costs
/// twice as much (2.0 s against 1.0 s for a million requests).
fn spend_by_model(conn: &Connection) -> rusqlite::Result<Vec<ModelSpend>> {
    use crate::store::{MAX_TOKENS, MAX_USD};
    let bounded = |col: &str| format!("total(min(max({col}, 0), {MAX_TOKENS}))");
    let mut stmt = conn.prepare(&format!(
        "SELECT COALESCE(model, ''), COUNT(*), {}, {}, total(min(max(cost_usd, 0), {MAX_USD:.1})),
                COUNT(cost_usd), {}
         FROM requests NOT INDEXED WHERE state = 2 GROUP BY model ORDER BY model",
        bounded("prompt_tokens"),
        bounded("completion_tokens"),
        bounded("cached_tokens"),
    ))?;
    let count = |v: f64| v.max(0.0) as u64;
    let rows = stmt.query_map([], |r| {
        let requests = r.get::<_, i64>(1)?;
        let priced = r.get::<_, i64>(5)?;
        Ok(ModelSpend {
            model: r.get(0)?,
            requests: requests.max(0) as u64,
            prompt_tokens: count(r.get(2)?),
            cached_tokens: count(r.get(6)?),
            completion_tokens: count(r.get(3)?),
            cost_usd: if priced == requests {
                r.get::<_, Option<f64>>(4)?
            } else {
                None
            },
        })
    })?;
    rows.collect()
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// First send, last answer and the number of attempts, in one pass.
fn span(conn: &Connection) -> rusqlite::Result<(Option<i64>, Option<i64>, u64)> {
    conn.query_row(
        "SELECT MIN(sent), MAX(sent + latency_ms), COUNT(*) FROM attempts",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64)),
    )
}

fn histogram() -> Histogram<u32> {
    // Two significant figures: a percentile within 1%, ~8 KB a bucket.
    Histogram::new_with_bounds(1, 3_600_000, 2).expect("static histogram bounds")
}

/// A percentile as the lowest value of its histogram bucket (a recorded
/// 500 reads as 500, not as its bucket's top, 501).
fn quantile(h: &Histogram<u32>, q: f64) -> u64 {
    h.lowest_equivalent(h.value_at_quantile(q))
}

/// The second pass: every attempt into its buckets, one row at a time.
/// Returns the latency histogram of the whole history.
fn aggregate(conn: &Connection, data: &mut ReportData) -> rusqlite::Result<Histogram<u32>> {
    let mut hists: Vec<Option<Histogram<u32>>> = vec![None; data.buckets.len()];
    let mut stmt = conn.prepare(
        "SELECT sent, latency_ms, status, outcome, est_tokens, tokens, cost_micro FROM attempts",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let sent: i64 = r.get(0)?;
        let latency: i64 = r.get::<_, i64>(1)?.max(0);
        let status: i64 = r.get(2)?;
        let outcome: i64 = r.get(3)?;
        let est: i64 = r.get(4)?;
        let tokens: Option<i64> = r.get(5)?;
        let cost: Option<i64> = r.get(6)?;
        let s = data.bucket_of(sent);
        let a = data.bucket_of(sent.saturating_add(latency));
        let b = &mut data.buckets[s];
        b.sent += 1;
        b.est_tokens += est.max(0) as u64;
        let b = &mut data.buckets[a];
        match outcome {
            0 => b.succeeded += 1,
            1 => b.retried += 1,
            2 => b.failed += 1,
            _ => {}
        }
        if status == 429 {
            b.rate_limited += 1;
        } else if outcome != 0 && !(200..300).contains(&status) {
            b.errors += 1;
        }
        b.tokens += tokens.unwrap_or(0).max(0) as u64;
        b.cost_usd += cost.unwrap_or(0).max(0) as f64 / 1e6;
        if status != 0 {
            let _ = hists[a]
                .get_or_insert_with(histogram)
                .record((latency as u64).clamp(1, 3_600_000));
        }
    }
    let mut all = histogram();
    for (b, h) in data.buckets.iter_mut().zip(hists) {
        if let Some(h) = h.filter(|h| !h.is_empty()) {
            b.p50_ms = Some(quantile(&h, 0.50));
            b.p95_ms = Some(quantile(&h, 0.95));
            b.p99_ms = Some(quantile(&h, 0.99));
            let _ = all.add(&h);
        }
    }
    Ok(all)
}

fn source(code: i64) -> PaceSource {
    match code {
        0 => PaceSource::Configured,
        1 => PaceSource::Headers,
        2 => PaceSource::Learned,
        _ => PaceSource::Unlimited,
    }
}

/// The pace rows, the last of each bucket kept (a step function keeps its shape).
fn pace(conn: &Connection, start_ms: i64, bucket_ms: i64) -> rusqlite::Result<Vec<PacePoint>> {
    let mut stmt =
        conn.prepare("SELECT at, rpm, tpm, concurrency, source FROM pace ORDER BY rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok(PacePoint {
            at_ms: r.get(0)?,
            rpm: r.get(1)?,
            tpm: r.get(2)?,
            concurrency: r.get::<_, i64>(3)?.max(0) as u64,
            source: source(r.get(4)?),
        })
    })?;
    Ok(downsample_steps(
        rows.collect::<Result<Vec<_>, _>>()?,
        start_ms,
        bucket_ms,
    ))
}

/// Keeps the last point of each bucket: at most one a bucket, and the value
/// in force at each bucket's end is unchanged.
pub fn downsample_steps(points: Vec<PacePoint>, start_ms: i64, bucket_ms: i64) -> Vec<PacePoint> {
    let mut out: Vec<PacePoint> = Vec::new();
    let bucket = |at: i64| (at - start_ms).max(0) / bucket_ms.max(1);
    for p in points {
        match out.last_mut() {
            Some(last) if bucket(last.at_ms) == bucket(p.at_ms) => *last = p,
            _ => out.push(p),
        }
    }
    out
}

fn runs(conn: &Connection) -> rusqlite::Result<Vec<RunInfo>> {
    let mut stmt = conn.prepare(
        "SELECT started, ended, via, max_cost, rpm, tpm, concurrency, stop FROM runs ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RunInfo {
            started_ms: r.get(0)?,
            ended_ms: r.get(1)?,
            via: r.get(2)?,
            max_cost: r.get(3)?,
            rpm: r.get(4)?,
            tpm: r.get(5)?,
            concurrency: r.get::<_, Option<i64>>(6)?.map(|c| c.max(0) as u64),
            stop: r.get(7)?,
        })
    })?;
    rows.collect()
}

fn errors(conn: &Connection) -> rusqlite::Result<Vec<ErrorKind>> {
    let mut stmt =
        conn.prepare("SELECT kind, n, example FROM attempt_errors ORDER BY n DESC, kind LIMIT 10")?;
    let rows = stmt.query_map([], |r| {
        Ok(ErrorKind {
            kind: r.get(0)?,
            count: r.get::<_, i64>(1)?.max(0) as u64,
            example: r.get(2)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_width_is_round_and_keeps_the_points_under_the_cap() {
        assert_eq!(bucket_width(0, 600), 1_000);
        assert_eq!(bucket_width(600_000, 600), 1_000);
        assert_eq!(bucket_width(600_001, 600), 2_000);
        assert_eq!(bucket_width(3_600_000, 600), 10_000);
        // A week: 10 minutes gives 1,008, 15 minutes 672, 30 minutes 336.
        assert_eq!(bucket_width(7 * 86_400_000, 600), 1_800_000);
        for span in [
            1,
            999,
            61_000,
            86_400_000,
            400 * 86_400_000i64,
            10_000 * 86_400_000,
        ] {
            for cap in [1, 10, 600] {
                let w = bucket_width(span, cap);
                assert!((span + w - 1) / w <= cap as i64, "{span} {cap} {w}");
            }
        }
    }

    #[test]
    fn step_downsampling_keeps_the_last_value_of_each_bucket() {
        let p = |at_ms, rpm| PacePoint {
            at_ms,
            rpm: Some(rpm),
            tpm: None,
            concurrency: 1,
            source: PaceSource::Learned,
        };
        let out = downsample_steps(
            vec![
                p(0, 1.0),
                p(400, 2.0),
                p(999, 3.0),
                p(1000, 4.0),
                p(5500, 5.0),
            ],
            0,
            1000,
        );
        assert_eq!(out, vec![p(999, 3.0), p(1000, 4.0), p(5500, 5.0)]);
    }
}

#[cfg(test)]
mod from_state_tests {
    use super::*;
    use crate::input::RequestSpec;
    use crate::report::{render, RenderOptions};
    use crate::store::{AttemptOutcome, AttemptRecord, Command, PaceRecord, RunRecord, Writer};
    use crate::tokens::TokenEstimate;
    use tokio::sync::mpsc;

    fn spec(i: u64) -> Result<RequestSpec, std::convert::Infallible> {
        Ok(RequestSpec {
            custom_id: format!("r{i}"),
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: "{}".into(),
            body_at: None,
            priority: 0,
            estimate: TokenEstimate {
                prompt: 10,
                max_output: 5,
            },
            model: Some("gpt-4o-mini".into()),
            line: i + 1,
        })
    }

    const T0: i64 = 1_764_000_000_000;

    fn attempt(idx: i64, at: i64, latency_ms: u64, status: u16) -> Command {
        let outcome = match status {
            200 => AttemptOutcome::Success,
            429 => AttemptOutcome::Retried,
            _ => AttemptOutcome::Failed,
        };
        Command::Attempt(AttemptRecord {
            idx,
            sent_unix_ms: T0 + at,
            wait_ms: 3,
            latency_ms,
            status,
            outcome,
            est_tokens: 15,
            tokens: (status == 200).then_some(12),
            cost_usd: (status == 200).then_some(0.001),
            error: (status != 200).then(|| {
                (
                    format!("HTTP {status}"),
                    format!("HTTP {status}: <slow down>"),
                )
            }),
        })
    }

    /// A state with a two-minute history written through the writer.
    async fn state(dir: &tempfile::TempDir) -> PathBuf {
        let db = dir.path().join("s.pacer.db");
        let out = dir.path().join("out.jsonl");
        let mut store = JobStore::open(&db).unwrap();
        store.import("fp", 0, (0..200).map(spec)).unwrap().unwrap();
        store.recover(&out).unwrap();
        let (dtx, _drx) = mpsc::unbounded_channel();
        let w = Writer::start(store, &out, dtx).unwrap();
        w.send(Command::RunStarted(RunRecord {
            started_unix_ms: T0,
            via: "live",
            max_cost: Some(0.5),
            rpm: Some(100.0),
            tpm: None,
            concurrency: None,
        }))
        .unwrap();
        for (i, rpm) in [
            (0, None),
            (1_000, Some(60.0)),
            (1_500, Some(90.0)),
            (61_000, Some(100.0)),
        ] {
            w.send(Command::Pace(PaceRecord {
                at_unix_ms: T0 + i,
                rpm,
                tpm: None,
                concurrency: 4,
                source: PaceSource::Learned,
            }))
            .unwrap();
        }
        // 100 answers in the first minute (latencies 1..=100 ms), 10 of
        // them 429s; 100 in the second, all 500 ms.
        for i in 0..100 {
            let status = if i % 10 == 0 { 429 } else { 200 };
            w.send(attempt(i, i * 500, (i + 1) as u64, status)).unwrap();
        }
        for i in 100..200 {
            w.send(attempt(i, 60_000 + (i - 100) * 500, 500, 200))
                .unwrap();
        }
        w.send(attempt(5, 119_000, 20, 503)).unwrap();
        for idx in [1, 2] {
            w.send(Command::Finish {
                idx,
                state: crate::store::RequestState::Done,
                line: format!("l{idx}"),
                error: None,
                prompt_tokens: Some(10),
                cached_tokens: Some(0),
                completion_tokens: Some(2),
                cost_usd: Some(0.001),
            })
            .unwrap();
        }
        w.send(Command::RunEnded {
            at_unix_ms: T0 + 120_000,
            stop: Some("the budget of $0.50 is spent".into()),
        })
        .unwrap();
        w.close().await.unwrap();
        db
    }

    #[tokio::test]
    async fn the_history_is_bucketed_with_percentiles_and_rendered() {
        let dir = tempfile::tempdir().unwrap();
        let db = state(&dir).await;
        let data = ReportData::from_state_with(&db, 2).unwrap();
        assert_eq!(data.epoch_unix_ms, Some(T0));
        assert_eq!(data.attempts, 201);
        assert_eq!((data.start_ms, data.end_ms), (0, 120_000));
        assert_eq!(data.bucket_ms, 60_000);
        // 120,000 falls on the edge: a third bucket holds only the end.
        assert_eq!(data.buckets.len(), 3);
        let b0 = &data.buckets[0];
        assert_eq!(
            (b0.sent, b0.succeeded, b0.rate_limited, b0.retried),
            (100, 90, 10, 10)
        );
        assert_eq!(b0.p50_ms, Some(50));
        assert_eq!(b0.p99_ms, Some(99));
        assert_eq!(b0.tokens, 90 * 12);
        assert!((b0.cost_usd - 0.09).abs() < 1e-9);
        let b1 = &data.buckets[1];
        assert_eq!(
            (b1.sent, b1.p50_ms, b1.errors, b1.failed),
            (101, Some(500), 1, 1)
        );
        assert_eq!(data.budget(), Some(0.5));
        assert_eq!(
            data.by_model,
            JobStore::open_read_only(&db)
                .unwrap()
                .spend_by_model()
                .unwrap()
        );
        assert!(!data.running());
        assert_eq!(data.errors[0].kind, "HTTP 429");
        assert_eq!(data.errors[0].count, 10);
        assert_eq!(data.errors[1].kind, "HTTP 503");
        // Pace: one point a bucket at most, the last of each.
        assert_eq!(data.pace.len(), 2);
        assert_eq!(data.pace[0].rpm, Some(90.0));

        let page = render(&data, &RenderOptions::default());
        for id in ["requests", "tokens", "errors", "latency", "cost"] {
            assert!(page.contains(&format!("data-chart=\"{id}\"")), "{id}");
        }
        assert!(page.contains("HTTP 429: &lt;slow down&gt;"));
        assert!(page.contains("budget (--max-cost)"));
        assert!(!page.contains("http-equiv=\"refresh\""));
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
        let live = render(
            &data,
            &RenderOptions {
                live_refresh: Some(std::time::Duration::from_secs(5)),
            },
        );
        assert!(live.contains("<meta http-equiv=\"refresh\" content=\"5\">"));

        // The default cap: one-second buckets for two minutes.
        let fine = ReportData::from_state(&db).unwrap();
        assert_eq!(fine.bucket_ms, 1_000);
        assert_eq!(fine.buckets.len(), 121);
        assert_eq!(fine.buckets.iter().map(|b| b.sent).sum::<u64>(), 201);
        assert_eq!(fine.p50_ms, data.p50_ms);
    }

    #[tokio::test]
    async fn a_state_being_written_is_read_without_blocking_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = state(&dir).await;
        // A writer holding a write transaction open does not stop a reader.
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; DELETE FROM attempts WHERE idx < 50;")
            .unwrap();
        let data = ReportData::from_state(&db).unwrap();
        assert_eq!(data.attempts, 201);
        writer.execute_batch("COMMIT").unwrap();
        // 50 requests' attempts, and r5's second one.
        assert_eq!(ReportData::from_state(&db).unwrap().attempts, 150);
    }

    #[test]
    fn bad_paths_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pacer.db");
        let e = ReportData::from_state(&missing).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("nope.pacer.db"),
            "{e}"
        );
        let text = dir.path().join("x.pacer.db");
        std::fs::write(&text, "not sqlite at all, not at all, no").unwrap();
        let e = ReportData::from_state(&text).unwrap_err();
        assert!(e.is_usage(), "{e:?}");
        assert!(ReportData::from_state(dir.path()).unwrap_err().is_usage());
    }

    #[test]
    fn an_old_state_without_history_still_reports() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.pacer.db");
        let mut store = JobStore::open(&db).unwrap();
        store.import("fp", 0, (0..3).map(spec)).unwrap().unwrap();
        store
            .conn_for_tests()
            .execute_batch("DROP TABLE attempts; DROP TABLE pace; DROP TABLE runs; DROP TABLE attempt_errors; PRAGMA user_version = 3;")
            .unwrap();
        drop(store);
        let data = ReportData::from_state(&db).unwrap();
        assert_eq!((data.counts.total, data.attempts), (3, 0));
        assert!(render(&data, &RenderOptions::default()).contains("No history recorded"));
    }
}
