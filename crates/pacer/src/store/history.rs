//! The run's history in the state: one compact row an attempt, the pace in
//! force (a row when it changes, at most one a second), one row a run, and
//! failed attempts counted by kind with one example each.
//!
//! Written only through the one [`Writer`](super::Writer), inside its batched
//! transactions: recording history adds rows to commits that happen anyway,
//! never a commit or a sync of its own. Times are stored as milliseconds
//! since the job's first run (`meta.history_epoch_ms`), durations as deltas,
//! codes as small integers, cost as integer micro-USD, so a row is ~30 bytes
//! (the measured figure is in the README).

use rusqlite::{params, OptionalExtension, Transaction};

use super::job_store::count_to_sql;
use crate::report::PaceSource;

/// What one attempt came to, as stored (`attempts.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AttemptOutcome {
    Success = 0,
    /// It will be retried (a 429, an outage, a timeout...).
    Retried = 1,
    /// Failed for good: its answer is the request's result.
    Failed = 2,
    /// It stopped the run (bad key, quota, budget...).
    Stopped = 3,
}

/// One attempt of one request, for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub idx: i64,
    /// When it went out, unix ms.
    pub sent_unix_ms: i64,
    /// Time spent waiting for admission before it went out.
    pub wait_ms: u64,
    pub latency_ms: u64,
    /// HTTP status, 0 when no answer came.
    pub status: u16,
    pub outcome: AttemptOutcome,
    /// pacer's estimate (prompt + max output).
    pub est_tokens: u64,
    /// Real prompt + completion tokens, when the answer said.
    pub tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// A failed attempt's kind (`HTTP 429`, `timeout`) and text.
    pub error: Option<(String, String)>,
}

/// The pace in force at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceRecord {
    pub at_unix_ms: i64,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub concurrency: usize,
    pub source: PaceSource,
}

/// A run starting: its configured limits and budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub started_unix_ms: i64,
    /// `live` or `batch`.
    pub via: &'static str,
    pub max_cost: Option<f64>,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
    pub concurrency: Option<usize>,
}

pub(crate) fn source_code(s: PaceSource) -> i64 {
    match s {
        PaceSource::Configured => 0,
        PaceSource::Headers => 1,
        PaceSource::Learned => 2,
        PaceSource::Unlimited => 3,
    }
}

/// The most distinct error kinds kept; later ones count as `other`.
const MAX_ERROR_KINDS: i64 = 64;
/// The longest example text kept.
const MAX_EXAMPLE: usize = 300;

/// The history's clock origin, kept by the writer.
#[derive(Debug, Default)]
pub(crate) struct Epoch(Option<i64>);

impl Epoch {
    pub fn load(tx: &rusqlite::Connection) -> rusqlite::Result<Epoch> {
        let v: Option<String> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'history_epoch_ms'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Epoch(v.and_then(|v| v.parse().ok())))
    }

    /// ms since the epoch; the first time seen becomes the epoch.
    fn rel(&mut self, tx: &Transaction<'_>, unix_ms: i64) -> rusqlite::Result<i64> {
        let epoch = match self.0 {
            Some(e) => e,
            None => {
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('history_epoch_ms', ?1)",
                    [unix_ms.to_string()],
                )?;
                self.0 = Some(unix_ms);
                unix_ms
            }
        };
        Ok(unix_ms.saturating_sub(epoch))
    }
}

fn ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

pub(crate) fn record_attempt(
    tx: &Transaction<'_>,
    epoch: &mut Epoch,
    a: AttemptRecord,
) -> rusqlite::Result<()> {
    let sent = epoch.rel(tx, a.sent_unix_ms)?;
    let cost = a
        .cost_usd
        .filter(|c| c.is_finite())
        .map(|c| (c.clamp(0.0, super::MAX_USD) * 1e6).round() as i64);
    tx.prepare_cached(
        "INSERT INTO attempts (idx, sent, wait_ms, latency_ms, status, outcome, est_tokens, tokens, cost_micro)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        a.idx,
        sent,
        ms(a.wait_ms),
        ms(a.latency_ms),
        a.status,
        a.outcome as u8,
        count_to_sql(a.est_tokens),
        a.tokens.map(count_to_sql),
        cost,
    ])?;
    if let Some((kind, text)) = a.error {
        let example: String = text.chars().take(MAX_EXAMPLE).collect();
        let updated = tx
            .prepare_cached("UPDATE attempt_errors SET n = n + 1 WHERE kind = ?1")?
            .execute([&kind])?;
        if updated == 0 {
            let kinds: i64 =
                tx.query_row("SELECT COUNT(*) FROM attempt_errors", [], |r| r.get(0))?;
            let kind = if kinds >= MAX_ERROR_KINDS {
                "other".to_string()
            } else {
                kind
            };
            tx.prepare_cached(
                "INSERT INTO attempt_errors (kind, n, example) VALUES (?1, 1, ?2)
                 ON CONFLICT(kind) DO UPDATE SET n = n + 1",
            )?
            .execute(params![kind, example])?;
        }
    }
    Ok(())
}

pub(crate) fn record_pace(
    tx: &Transaction<'_>,
    epoch: &mut Epoch,
    p: PaceRecord,
) -> rusqlite::Result<()> {
    let at = epoch.rel(tx, p.at_unix_ms)?;
    tx.prepare_cached(
        "INSERT INTO pace (at, rpm, tpm, concurrency, source) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        at,
        p.rpm.filter(|v| v.is_finite()),
        p.tpm.filter(|v| v.is_finite()),
        p.concurrency as i64,
        source_code(p.source),
    ])
    .map(|_| ())
}

pub(crate) fn record_run_start(
    tx: &Transaction<'_>,
    epoch: &mut Epoch,
    r: RunRecord,
) -> rusqlite::Result<()> {
    let at = epoch.rel(tx, r.started_unix_ms)?;
    tx.execute(
        "INSERT INTO runs (started, via, max_cost, rpm, tpm, concurrency) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![at, r.via, r.max_cost, r.rpm, r.tpm, r.concurrency.map(|c| c as i64)],
    )
    .map(|_| ())
}

pub(crate) fn record_run_end(
    tx: &Transaction<'_>,
    epoch: &mut Epoch,
    at_unix_ms: i64,
    stop: Option<String>,
) -> rusqlite::Result<()> {
    let at = epoch.rel(tx, at_unix_ms)?;
    tx.execute(
        "UPDATE runs SET ended = ?1, stop = ?2 WHERE id = (SELECT MAX(id) FROM runs)",
        params![at, stop],
    )
    .map(|_| ())
}
