//! Provider batches in the job's state (`pacer run --via batch`).
//!
//! A batch's row follows it through its phases: `planned` (its requests are
//! chosen and point at it), `uploaded` (OpenAI's input file exists),
//! `submitted` (the provider's batch id is known), `ended` (the provider
//! finished it; results are being written), then `done`, `deferred` (the
//! provider would not take it yet, e.g. OpenAI's enqueued-token limit) or
//! `failed`. Each step is one [`BatchCommand`] through the one writer, and
//! the driver waits for it to be durable before it takes the next step, so
//! no provider id is ever known only in memory.
//!
//! Requests in a batch are in flight (state 1) with `batch` set; when they
//! leave it without a result they go back to pending with `batch` NULL. So
//! "pending" keeps meaning "to be sent", for both routes.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::job_store::{count_to_sql, sql, usd_to_sql};
use super::{JobStore, StoreError};

/// Which batch API a batch goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchApi {
    /// OpenAI's Batch API (`/v1/files` + `/v1/batches`).
    OpenAi,
    /// Anthropic's Message Batches (`/v1/messages/batches`).
    Anthropic,
}

impl BatchApi {
    /// The name stored in the state.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchApi::OpenAi => "openai",
            BatchApi::Anthropic => "anthropic",
        }
    }

    fn parse(s: &str) -> Option<BatchApi> {
        match s {
            "openai" => Some(BatchApi::OpenAi),
            "anthropic" => Some(BatchApi::Anthropic),
            _ => None,
        }
    }
}

impl std::fmt::Display for BatchApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a batch is in its life (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Its requests are chosen; nothing is at the provider yet.
    Planned,
    /// OpenAI: its input file is uploaded (`file_id`); the batch is not created yet.
    Uploaded,
    /// The provider has it (`batch_id`); polled until it ends.
    Submitted,
    /// The provider finished it; its results are being written.
    Ended,
    /// Every request of it has its result written or went back to pending.
    Done,
    /// The provider would not take it yet (OpenAI's enqueued-token limit):
    /// its requests went back to pending, to go in a later batch.
    Deferred,
    /// The provider failed it as a whole; its requests went back to pending
    /// or were failed with the provider's error.
    Failed,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Planned => "planned",
            BatchState::Uploaded => "uploaded",
            BatchState::Submitted => "submitted",
            BatchState::Ended => "ended",
            BatchState::Done => "done",
            BatchState::Deferred => "deferred",
            BatchState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<BatchState> {
        Some(match s {
            "planned" => BatchState::Planned,
            "uploaded" => BatchState::Uploaded,
            "submitted" => BatchState::Submitted,
            "ended" => BatchState::Ended,
            "done" => BatchState::Done,
            "deferred" => BatchState::Deferred,
            "failed" => BatchState::Failed,
            _ => return None,
        })
    }

    /// Still the driver's business: not done, deferred or failed.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            BatchState::Planned | BatchState::Uploaded | BatchState::Submitted | BatchState::Ended
        )
    }
}

impl std::fmt::Display for BatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch as the state records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchRow {
    pub id: i64,
    pub api: BatchApi,
    pub endpoint: String,
    pub model: Option<String>,
    pub state: BatchState,
    pub file_id: Option<String>,
    /// Unix ms just before the create call was made (it may have reached
    /// the provider even if its answer never came back).
    pub creating_at: Option<i64>,
    pub batch_id: Option<String>,
    /// The provider's last status (`in_progress`, `ended`, …).
    pub status: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub results_url: Option<String>,
    pub lines: u64,
    pub est_tokens: u64,
    pub worst_usd: Option<f64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl BatchRow {
    /// Whether the provider may hold this batch: it was created, or a create
    /// call went out whose answer was not recorded.
    pub fn maybe_at_provider(&self) -> bool {
        self.batch_id.is_some() || self.creating_at.is_some()
    }
}

/// Unix ms as a time for people: `2026-12-01 17:16:13 UTC`.
pub fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

/// A new batch, as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBatch {
    pub id: i64,
    pub api: BatchApi,
    pub endpoint: String,
    pub model: Option<String>,
    pub est_tokens: u64,
    pub worst_usd: Option<f64>,
    /// Its requests, in the order of its input file.
    pub idxs: Vec<i64>,
}

/// A change to the batches, applied by the one writer. `at` is unix ms
/// (the store reads no clock).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BatchCommand {
    /// Records a batch and points its requests at it (in flight, one more attempt).
    Plan { batch: NewBatch, at: i64 },
    /// OpenAI's input file was uploaded.
    Uploaded { id: i64, file_id: String, at: i64 },
    /// A create call is about to go out (the crash-repair marker).
    Creating { id: i64, at: i64 },
    /// The provider created it.
    Submitted {
        id: i64,
        batch_id: String,
        status: String,
        at: i64,
    },
    /// The provider's status changed.
    Status { id: i64, status: String, at: i64 },
    /// The provider finished it; where its results are.
    Ended {
        id: i64,
        status: String,
        output_file_id: Option<String>,
        error_file_id: Option<String>,
        results_url: Option<String>,
        at: i64,
    },
    /// The batch is over for pacer: `state` is done, deferred or failed.
    /// Its requests still in flight (no result written) go back to pending.
    Close {
        id: i64,
        state: BatchState,
        error: Option<String>,
        at: i64,
    },
    /// One request leaves its batch without a result: back to pending.
    Unbatch { idx: i64, error: Option<String> },
}

/// Applies one batch command in the writer's transaction.
pub(super) fn apply(tx: &Transaction<'_>, cmd: BatchCommand) -> rusqlite::Result<()> {
    match cmd {
        BatchCommand::Plan { batch, at } => {
            tx.execute(
                "INSERT INTO batches (id, api, endpoint, model, state, lines, est_tokens, worst_usd, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'planned', ?5, ?6, ?7, ?8, ?8)",
                params![
                    batch.id,
                    batch.api.as_str(),
                    batch.endpoint,
                    batch.model,
                    batch.idxs.len() as i64,
                    count_to_sql(batch.est_tokens),
                    batch.worst_usd.and_then(usd_to_sql),
                    at
                ],
            )?;
            let mut point = tx.prepare_cached(
                "UPDATE requests SET batch = ?1, state = 1, attempts = attempts + 1
                 WHERE idx = ?2 AND state = 0",
            )?;
            for idx in batch.idxs {
                point.execute(params![batch.id, idx])?;
            }
        }
        BatchCommand::Uploaded { id, file_id, at } => {
            tx.execute(
                "UPDATE batches SET state = 'uploaded', file_id = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, file_id, at],
            )?;
        }
        BatchCommand::Creating { id, at } => {
            tx.execute(
                "UPDATE batches SET creating_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, at],
            )?;
        }
        BatchCommand::Submitted {
            id,
            batch_id,
            status,
            at,
        } => {
            tx.execute(
                "UPDATE batches SET state = 'submitted', batch_id = ?2, status = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, batch_id, status, at],
            )?;
        }
        BatchCommand::Status { id, status, at } => {
            tx.execute(
                "UPDATE batches SET status = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, status, at],
            )?;
        }
        BatchCommand::Ended {
            id,
            status,
            output_file_id,
            error_file_id,
            results_url,
            at,
        } => {
            tx.execute(
                "UPDATE batches SET state = 'ended', status = ?2, output_file_id = ?3,
                 error_file_id = ?4, results_url = ?5, updated_at = ?6 WHERE id = ?1",
                params![id, status, output_file_id, error_file_id, results_url, at],
            )?;
        }
        BatchCommand::Close {
            id,
            state,
            error,
            at,
        } => {
            tx.execute(
                "UPDATE requests SET state = 0, batch = NULL WHERE batch = ?1 AND state = 1",
                [id],
            )?;
            tx.execute(
                "UPDATE batches SET state = ?2, error = COALESCE(?3, error), updated_at = ?4 WHERE id = ?1",
                params![id, state.as_str(), error, at],
            )?;
        }
        BatchCommand::Unbatch { idx, error } => {
            tx.prepare_cached(
                "UPDATE requests SET state = 0, batch = NULL, last_error = COALESCE(?2, last_error)
                 WHERE idx = ?1 AND state = 1",
            )?
            .execute(params![idx, error])?;
        }
    }
    Ok(())
}

const BATCH_COLS: &str = "id, api, endpoint, model, state, file_id, creating_at, batch_id, status,
    output_file_id, error_file_id, results_url, lines, est_tokens, worst_usd, error, created_at, updated_at";

fn batch_row(r: &Row<'_>) -> rusqlite::Result<BatchRow> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown batch {what}").into(),
        )
    };
    let api: String = r.get(1)?;
    let state: String = r.get(4)?;
    Ok(BatchRow {
        id: r.get(0)?,
        api: BatchApi::parse(&api).ok_or_else(|| bad(1, "api"))?,
        endpoint: r.get(2)?,
        model: r.get(3)?,
        state: BatchState::parse(&state).ok_or_else(|| bad(4, "state"))?,
        file_id: r.get(5)?,
        creating_at: r.get(6)?,
        batch_id: r.get(7)?,
        status: r.get(8)?,
        output_file_id: r.get(9)?,
        error_file_id: r.get(10)?,
        results_url: r.get(11)?,
        lines: r.get::<_, i64>(12)?.max(0) as u64,
        est_tokens: r.get::<_, i64>(13)?.max(0) as u64,
        worst_usd: r.get(14)?,
        error: r.get(15)?,
        created_at: r.get(16)?,
        updated_at: r.get(17)?,
    })
}

/// A pending request as batch planning needs it: no body, only its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCandidate {
    pub idx: i64,
    /// Bytes of the request's body.
    pub body_len: u64,
    pub est_prompt: u64,
    pub est_output: u64,
}

/// A request in a batch whose result is not written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMember {
    pub idx: i64,
    pub custom_id: String,
    pub model: Option<String>,
    /// Sends so far (a batch counts as one).
    pub attempts: u32,
}

impl JobStore {
    /// Every batch of the job, oldest first.
    pub fn batches(&self) -> Result<Vec<BatchRow>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(&format!("SELECT {BATCH_COLS} FROM batches ORDER BY id"))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], batch_row).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// One batch by its local id.
    pub fn batch(&self, id: i64) -> Result<Option<BatchRow>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {BATCH_COLS} FROM batches WHERE id = ?1"),
                [id],
                batch_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The local id the next planned batch gets.
    pub fn next_batch_id(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM batches", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    /// The distinct (url, model) pairs of pending requests: the groups a
    /// batch is planned from (one endpoint and one model a batch).
    pub fn pending_groups(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT DISTINCT url, model FROM requests WHERE state = 0 ORDER BY url, model")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Up to `limit` pending requests of one (url, model) group, in
    /// scheduler order (priority, then input order).
    pub fn batch_candidates(
        &self,
        url: &str,
        model: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BatchCandidate>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT r.idx, COALESCE(length(CAST(b.body AS BLOB)), b.len), r.est_prompt, r.est_output
                 FROM requests AS r INDEXED BY requests_pending CROSS JOIN bodies AS b ON b.idx = r.idx
                 WHERE r.state = 0 AND r.url = ?1 AND r.model IS ?2
                 ORDER BY r.priority DESC, r.idx LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![url, model, limit as i64], |r| {
                Ok(BatchCandidate {
                    idx: r.get(0)?,
                    body_len: r.get::<_, i64>(1)?.max(0) as u64,
                    est_prompt: r.get::<_, i64>(2)?.max(0) as u64,
                    est_output: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Calls `f(idx, body)` for each request of batch `id`, in input-file
    /// order (by idx), streaming (the bodies are never all in memory).
    pub fn for_each_batch_body(
        &self,
        id: i64,
        mut f: impl FnMut(i64, &str) -> std::io::Result<()>,
    ) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT r.idx, b.body, b.at, b.len, b.hash, r.custom_id
                 FROM requests AS r CROSS JOIN bodies AS b ON b.idx = r.idx
                 WHERE r.batch = ?1 ORDER BY r.idx",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.err(e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let idx: i64 = row.get(0).map_err(|e| self.err(e))?;
            let body = match super::job_store::body_ref(row, 2).map_err(|e| self.err(e))? {
                // Kept in the input: read from it, one at a time (a batch
                // file is written once, not on the hot path).
                Some(r) => {
                    let custom_id: String = row.get(5).map_err(|e| self.err(e))?;
                    let mut read = self.input_bodies()?.read(&[r], |_| custom_id.clone())?;
                    read.pop().unwrap_or_default()
                }
                None => row
                    .get::<_, Option<String>>(1)
                    .map_err(|e| self.err(e))?
                    .unwrap_or_default(),
            };
            f(idx, &body).map_err(|e| StoreError::Io {
                path: self.path().to_path_buf(),
                source: e,
            })?;
            n += 1;
        }
        Ok(n)
    }

    /// The requests of batch `id` whose result is not written yet, by idx.
    pub fn batch_members(&self, id: i64) -> Result<Vec<BatchMember>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT idx, custom_id, model, attempts FROM requests
                 WHERE batch = ?1 AND state = 1 ORDER BY idx",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(BatchMember {
                    idx: r.get(0)?,
                    custom_id: r.get(1)?,
                    model: r.get(2)?,
                    attempts: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Batches never sent (planned, or uploaded with no create call made)
    /// are dropped and their requests go back to pending: for a live run of
    /// a job that began as a batch run. Returns how many were dropped.
    pub fn drop_unsent_batches(&mut self) -> Result<u64, StoreError> {
        let path = self.path().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        tx.execute(
            "UPDATE requests SET state = 0, batch = NULL WHERE state = 1 AND batch IN
             (SELECT id FROM batches WHERE state IN ('planned', 'uploaded')
              AND creating_at IS NULL AND batch_id IS NULL)",
            [],
        )
        .map_err(|e| sql(&path, e))?;
        let n = tx
            .execute(
                "DELETE FROM batches WHERE state IN ('planned', 'uploaded')
                 AND creating_at IS NULL AND batch_id IS NULL",
                [],
            )
            .map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    /// Every open batch is given up (`failed`, with `why`) and its
    /// requests without a result go back to pending: for a provider that
    /// cannot have them (a simulator started afresh). Returns how many.
    pub fn abandon_open_batches(&mut self, why: &str, at: i64) -> Result<u64, StoreError> {
        let path = self.path().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        tx.execute(
            "UPDATE requests SET state = 0, batch = NULL WHERE state = 1 AND batch IN
             (SELECT id FROM batches WHERE state IN ('planned', 'uploaded', 'submitted', 'ended'))",
            [],
        )
        .map_err(|e| sql(&path, e))?;
        let n = tx
            .execute(
                "UPDATE batches SET state = 'failed', error = ?1, updated_at = ?2
                 WHERE state IN ('planned', 'uploaded', 'submitted', 'ended')",
                params![why, at],
            )
            .map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(n as u64)
    }

    /// Records a batch change directly, outside a run (`pacer cancel`,
    /// which holds the job's lock, so it is the only writer).
    pub fn apply_batch(&mut self, cmd: BatchCommand) -> Result<(), StoreError> {
        let path = self.path().to_path_buf();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        apply(&tx, cmd).map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))
    }

    /// The job's id for batch metadata, made once and kept.
    pub fn job_id(&mut self, make: impl FnOnce() -> String) -> Result<String, StoreError> {
        if let Some(id) = self.meta("job_id")? {
            return Ok(id);
        }
        let id = make();
        self.set_meta("job_id", &id)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RequestSpec;
    use crate::tokens::TokenEstimate;

    /// A job of chat requests r0..r{n} (every third at priority 1) and two
    /// Anthropic ones, imported into a fresh state.
    fn job(dir: &tempfile::TempDir, n: u64) -> JobStore {
        let mut store = JobStore::open(&dir.path().join("s.db")).unwrap();
        let spec = |i: u64, url: &str, model: &str| {
            Ok::<_, std::convert::Infallible>(RequestSpec {
                custom_id: format!("r{i}"),
                method: "POST".into(),
                url: url.into(),
                body: format!("{{\"n\":{i}}}"),
                body_at: None,
                priority: i64::from(i.is_multiple_of(3)),
                estimate: TokenEstimate {
                    prompt: 10,
                    max_output: 5,
                },
                model: Some(model.into()),
                line: i + 1,
            })
        };
        let chats = (0..n).map(|i| spec(i, "/v1/chat/completions", "gpt-4o-mini"));
        let claude = (n..n + 2).map(|i| spec(i, "/v1/messages", "claude-sonnet-4-5"));
        store.import("fp", 0, chats.chain(claude)).unwrap().unwrap();
        store
    }

    fn plan(store: &mut JobStore, id: i64, idxs: Vec<i64>) {
        store
            .apply_batch(BatchCommand::Plan {
                batch: NewBatch {
                    id,
                    api: BatchApi::OpenAi,
                    endpoint: "/v1/chat/completions".into(),
                    model: Some("gpt-4o-mini".into()),
                    est_tokens: 15 * idxs.len() as u64,
                    worst_usd: Some(0.5),
                    idxs,
                },
                at: 1_000,
            })
            .unwrap();
    }

    #[test]
    fn planning_reads_groups_and_candidates_in_scheduler_order_without_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let store = job(&dir, 6);
        assert_eq!(
            store.pending_groups().unwrap(),
            vec![
                (
                    "/v1/chat/completions".to_string(),
                    Some("gpt-4o-mini".to_string())
                ),
                (
                    "/v1/messages".to_string(),
                    Some("claude-sonnet-4-5".to_string())
                ),
            ]
        );
        let c = store
            .batch_candidates("/v1/chat/completions", Some("gpt-4o-mini"), 4)
            .unwrap();
        // Priority first (0 and 3), then input order.
        assert_eq!(
            c.iter().map(|c| c.idx).collect::<Vec<_>>(),
            vec![0, 3, 1, 2]
        );
        assert_eq!(c[0].body_len, "{\"n\":0}".len() as u64);
        assert_eq!((c[0].est_prompt, c[0].est_output), (10, 5));
        assert!(store
            .batch_candidates("/v1/chat/completions", None, 4)
            .unwrap()
            .is_empty());
        assert_eq!(store.next_batch_id().unwrap(), 1);
    }

    #[test]
    fn a_planned_batch_holds_its_requests_in_flight_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = job(&dir, 6);
        plan(&mut store, 1, vec![3, 0, 1]);
        let b = store.batch(1).unwrap().unwrap();
        assert_eq!(
            (b.state, b.lines, b.est_tokens),
            (BatchState::Planned, 3, 45)
        );
        assert!(!b.maybe_at_provider());
        let counts = store.counts().unwrap();
        assert_eq!((counts.pending, counts.in_flight), (5, 3));
        // Not pending any more: the next plan does not see them.
        let c = store
            .batch_candidates("/v1/chat/completions", Some("gpt-4o-mini"), 10)
            .unwrap();
        assert_eq!(c.iter().map(|c| c.idx).collect::<Vec<_>>(), vec![2, 4, 5]);
        // The input file's order is idx order.
        let mut seen = Vec::new();
        store
            .for_each_batch_body(1, |idx, body| {
                seen.push((idx, body.to_string()));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen[0], (0, "{\"n\":0}".to_string()));
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 1, 3]);

        for cmd in [
            BatchCommand::Uploaded {
                id: 1,
                file_id: "file-1".into(),
                at: 2_000,
            },
            BatchCommand::Creating { id: 1, at: 3_000 },
            BatchCommand::Submitted {
                id: 1,
                batch_id: "batch_1".into(),
                status: "validating".into(),
                at: 4_000,
            },
            BatchCommand::Status {
                id: 1,
                status: "in_progress".into(),
                at: 5_000,
            },
            BatchCommand::Ended {
                id: 1,
                status: "completed".into(),
                output_file_id: Some("file-out".into()),
                error_file_id: None,
                results_url: None,
                at: 6_000,
            },
        ] {
            store.apply_batch(cmd).unwrap();
        }
        let b = store.batch(1).unwrap().unwrap();
        assert_eq!(b.state, BatchState::Ended);
        assert_eq!(
            (
                b.file_id.as_deref(),
                b.creating_at,
                b.batch_id.as_deref(),
                b.status.as_deref()
            ),
            (
                Some("file-1"),
                Some(3_000),
                Some("batch_1"),
                Some("completed")
            )
        );
        assert_eq!(b.output_file_id.as_deref(), Some("file-out"));
        assert_eq!((b.created_at, b.updated_at), (1_000, 6_000));
        // One written, one sent back by its line, one never mentioned.
        let members = store.batch_members(1).unwrap();
        assert_eq!(
            members.iter().map(|m| m.idx).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        assert_eq!(
            (members[0].custom_id.as_str(), members[0].attempts),
            ("r0", 1)
        );
        store
            .conn()
            .execute("UPDATE requests SET state = 2 WHERE idx = 0", [])
            .unwrap();
        store
            .apply_batch(BatchCommand::Unbatch {
                idx: 1,
                error: Some("batch_expired".into()),
            })
            .unwrap();
        store
            .apply_batch(BatchCommand::Close {
                id: 1,
                state: BatchState::Done,
                error: None,
                at: 7_000,
            })
            .unwrap();
        assert!(store.batch_members(1).unwrap().is_empty());
        let counts = store.counts().unwrap();
        assert_eq!((counts.done, counts.pending, counts.in_flight), (1, 7, 0));
        let batch_of = |idx: i64| -> Option<i64> {
            store
                .conn()
                .query_row("SELECT batch FROM requests WHERE idx = ?1", [idx], |r| {
                    r.get(0)
                })
                .unwrap()
        };
        // The written request keeps its batch (it was priced at batch rates).
        assert_eq!(
            (batch_of(0), batch_of(1), batch_of(3)),
            (Some(1), None, None)
        );
        assert_eq!(store.batch(1).unwrap().unwrap().state, BatchState::Done);
    }

    #[test]
    fn recovery_resends_lost_live_sends_but_leaves_batches_to_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = job(&dir, 6);
        plan(&mut store, 1, vec![0, 1]);
        // A live send lost in a crash.
        store
            .conn()
            .execute("UPDATE requests SET state = 1 WHERE idx = 2", [])
            .unwrap();
        let rec = store.recover(&dir.path().join("out.jsonl")).unwrap();
        assert_eq!(rec.requeued, 1);
        let counts = store.counts().unwrap();
        assert_eq!((counts.in_flight, counts.resent), (2, 1));
    }

    #[test]
    fn a_live_run_drops_unsent_batches_and_keeps_those_the_provider_may_have() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = job(&dir, 6);
        plan(&mut store, 1, vec![0]);
        plan(&mut store, 2, vec![1]);
        store
            .apply_batch(BatchCommand::Uploaded {
                id: 2,
                file_id: "file-2".into(),
                at: 2,
            })
            .unwrap();
        plan(&mut store, 3, vec![2]);
        store
            .apply_batch(BatchCommand::Creating { id: 3, at: 3 })
            .unwrap();
        assert_eq!(store.drop_unsent_batches().unwrap(), 2);
        let left: Vec<i64> = store.batches().unwrap().iter().map(|b| b.id).collect();
        assert_eq!(left, vec![3]);
        assert!(store.batch(3).unwrap().unwrap().maybe_at_provider());
        assert_eq!(store.counts().unwrap().in_flight, 1);
        // A provider started afresh has none of them.
        assert_eq!(store.abandon_open_batches("gone", 9).unwrap(), 1);
        let b = store.batch(3).unwrap().unwrap();
        assert_eq!(
            (b.state, b.error.as_deref()),
            (BatchState::Failed, Some("gone"))
        );
        assert_eq!(store.counts().unwrap().pending, 8);
    }

    #[test]
    fn the_job_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = job(&dir, 1);
        assert_eq!(store.job_id(|| "pj_1".into()).unwrap(), "pj_1");
        assert_eq!(store.job_id(|| "pj_2".into()).unwrap(), "pj_1");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    }
}
