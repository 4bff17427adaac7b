use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;
use crate::input::RequestSpec;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// A request's state in the store (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum RequestState {
    Pending = 0,
    InFlight = 1,
    Done = 2,
    Failed = 3,
}

/// How many requests are in each state, and what the job has spent so far.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub total: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub done: u64,
    pub failed: u64,
    /// Requests sent again because they were in flight at a crash (all runs).
    pub resent: u64,
    /// Known cost of finished requests, USD.
    pub spent_usd: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// What start-up recovery did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Requests found in flight (sent, answer lost); they go back to pending.
    pub requeued: u64,
    /// Committed output lines that were appended to the output file again.
    pub rewritten: u64,
    /// Bytes cut from the output file's end (a partial or unrecorded line).
    pub truncated_bytes: u64,
}

/// A pending request as the scheduler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRow {
    pub idx: i64,
    pub custom_id: String,
    pub priority: i64,
    pub attempts: u32,
    pub url: String,
    pub body: String,
    pub model: Option<String>,
    pub est_prompt: u64,
    pub est_output: u64,
}

/// Where a page of pending work ended: keyset pagination in scheduler order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCursor {
    pub priority: i64,
    pub idx: i64,
}

/// A connection to a job's state file.
pub struct JobStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore")
            .field("path", &self.path)
            .finish()
    }
}

impl JobStore {
    /// Opens (creating if needed) the state file, checks WAL, runs migrations.
    pub fn open(path: &Path) -> Result<JobStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| sql(path, e))?;
        let store = JobStore {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    fn configure(&self) -> Result<(), StoreError> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: self.path.clone(),
                mode,
            });
        }
        // NORMAL in WAL survives process crashes (SIGKILL); a power loss may
        // lose the last commits, which recovery turns into re-sends, never
        // into lost or doubled output lines.
        self.conn
            .execute_batch(
                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -16384;",
            )
            .map_err(|e| self.err(e))
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql_text) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
            tx.execute_batch(sql_text).map_err(|e| self.err(e))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql(&self.path, e)
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Whether a job was fully imported into this state file.
    pub fn is_imported(&self) -> Result<bool, StoreError> {
        Ok(self.meta("imported")?.as_deref() == Some("1"))
    }

    /// Imports every request in one transaction. The first input error rolls
    /// everything back and is returned as `Ok(Err(e))`: nothing is half-imported.
    pub fn import<E>(
        &mut self,
        fingerprint: &str,
        input_len: u64,
        requests: impl Iterator<Item = Result<RequestSpec, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        let meta = [("imported", "1"), ("output_len", "0"), ("resent", "0")];
        self.insert_requests(fingerprint, input_len, &meta, requests)
    }

    /// Adds the requests of an input that grew (lines appended since the
    /// job was made), after the existing ones, in one transaction; the first
    /// input error rolls it back as `Ok(Err(e))`.
    pub fn append<E>(
        &mut self,
        fingerprint: &str,
        input_len: u64,
        requests: impl Iterator<Item = Result<RequestSpec, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        self.insert_requests(fingerprint, input_len, &[], requests)
    }

    /// The input's length when the job last took it in (0 if unknown).
    pub fn input_len(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta("input_len")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Every request's `custom_id` (to refuse duplicates among appended lines).
    pub fn custom_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT custom_id FROM requests")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn insert_requests<E>(
        &mut self,
        fingerprint: &str,
        input_len: u64,
        meta: &[(&str, &str)],
        requests: impl Iterator<Item = Result<RequestSpec, E>>,
    ) -> Result<Result<u64, E>, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        let first: i64 = tx
            .query_row("SELECT COALESCE(MAX(idx) + 1, 0) FROM requests", [], |r| {
                r.get(0)
            })
            .map_err(|e| sql(&path, e))?;
        let mut n = 0u64;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO requests (idx, custom_id, priority, url, body, model, est_prompt, est_output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| sql(&path, e))?;
            for spec in requests {
                let spec = match spec {
                    Ok(spec) => spec,
                    Err(e) => return Ok(Err(e)), // dropping `tx` rolls back
                };
                insert
                    .execute(params![
                        first + n as i64,
                        spec.custom_id,
                        spec.priority,
                        spec.url,
                        spec.body,
                        spec.model,
                        spec.estimate.prompt as i64,
                        spec.estimate.max_output as i64,
                    ])
                    .map_err(|e| sql(&path, e))?;
                n += 1;
            }
        }
        let input_len = input_len.to_string();
        let common = [
            ("fingerprint", fingerprint),
            ("input_len", input_len.as_str()),
        ];
        for (k, v) in common.iter().chain(meta.iter()) {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [k, v],
            )
            .map_err(|e| sql(&path, e))?;
        }
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(Ok(n))
    }

    /// Crash recovery at start-up: cut the output back to its recorded length,
    /// append committed lines that never reached it, and return requests that
    /// were in flight to pending.
    pub fn recover(&mut self, output: &Path) -> Result<Recovery, StoreError> {
        let path = self.path.clone();
        let io = |e| StoreError::Io {
            path: output.to_path_buf(),
            source: e,
        };
        let recorded: u64 = self
            .meta("output_len")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(output)
            .map_err(io)?;
        let actual = file.metadata().map_err(io)?.len();
        if actual < recorded {
            return Err(StoreError::OutputTruncated {
                path: output.to_path_buf(),
                expected: recorded,
                actual,
            });
        }
        let mut recovery = Recovery {
            truncated_bytes: actual - recorded,
            ..Recovery::default()
        };
        if actual > recorded {
            file.set_len(recorded).map_err(io)?;
        }

        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&path, e))?;
        let mut buf = Vec::new();
        {
            let mut stmt = tx
                .prepare("SELECT line FROM output_queue ORDER BY idx")
                .map_err(|e| sql(&path, e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| sql(&path, e))?;
            for line in rows {
                buf.extend_from_slice(line.map_err(|e| sql(&path, e))?.as_bytes());
                buf.push(b'\n');
                recovery.rewritten += 1;
            }
        }
        if !buf.is_empty() {
            file.write_all(&buf).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let new_len = recorded + buf.len() as u64;
        tx.execute("DELETE FROM output_queue", [])
            .map_err(|e| sql(&path, e))?;
        recovery.requeued = tx
            .execute("UPDATE requests SET state = 0 WHERE state = 1", [])
            .map_err(|e| sql(&path, e))? as u64;
        tx.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ?1 WHERE key = 'resent'",
            [recovery.requeued as i64],
        )
        .map_err(|e| sql(&path, e))?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'output_len'",
            [new_len.to_string()],
        )
        .map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(recovery)
    }

    /// Counts by state, re-sends and spend.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT state, COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)
                 FROM requests GROUP BY state",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (state, n, cost, prompt, completion) = row.map_err(|e| self.err(e))?;
            let n = n as u64;
            counts.total += n;
            counts.spent_usd += cost;
            counts.prompt_tokens += prompt as u64;
            counts.completion_tokens += completion as u64;
            match state {
                0 => counts.pending += n,
                1 => counts.in_flight += n,
                2 => counts.done += n,
                _ => counts.failed += n,
            }
        }
        counts.resent = self
            .meta("resent")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(counts)
    }

    /// The next page of pending requests in scheduler order (priority, then
    /// input order), after `after`. The partial index is named: left to
    /// itself the planner may pick the index on `state` and sort every
    /// pending row for each page, which makes a run quadratic.
    pub fn fetch_pending(
        &self,
        after: Option<PendingCursor>,
        limit: usize,
    ) -> Result<Vec<PendingRow>, StoreError> {
        const COLS: &str =
            "idx, custom_id, priority, attempts, url, body, model, est_prompt, est_output";
        let map = |r: &rusqlite::Row<'_>| {
            Ok(PendingRow {
                idx: r.get(0)?,
                custom_id: r.get(1)?,
                priority: r.get(2)?,
                attempts: r.get::<_, i64>(3)? as u32,
                url: r.get(4)?,
                body: r.get(5)?,
                model: r.get(6)?,
                est_prompt: r.get::<_, i64>(7)? as u64,
                est_output: r.get::<_, i64>(8)? as u64,
            })
        };
        let rows = match after {
            None => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM requests INDEXED BY requests_pending WHERE state = 0 ORDER BY priority DESC, idx LIMIT ?1"
                    ))
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map([limit as i64], map)
                    .map_err(|e| self.err(e))?;
                rows.collect::<Result<Vec<_>, _>>()
            }
            Some(c) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM requests INDEXED BY requests_pending WHERE state = 0 AND (priority < ?1 OR (priority = ?1 AND idx > ?2))
                         ORDER BY priority DESC, idx LIMIT ?3"
                    ))
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map(params![c.priority, c.idx, limit as i64], map)
                    .map_err(|e| self.err(e))?;
                rows.collect::<Result<Vec<_>, _>>()
            }
        };
        rows.map_err(|e| self.err(e))
    }

    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

pub(super) fn sql(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

impl JobStore {
    /// The distinct models named by the job's unfinished requests.
    pub fn models(&self) -> Result<Vec<Option<String>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT model FROM requests WHERE state < 2")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Option<String>>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}

impl JobStore {
    /// The endpoint of the first pending request (to tell the provider's kind).
    pub fn first_pending_url(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT url FROM requests WHERE state < 2 LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

impl JobStore {
    /// Spend of the job's succeeded requests per model, over every run. A
    /// model with any request of unknown cost has `cost_usd: None`.
    pub fn spend_by_model(&self) -> Result<Vec<crate::cost::ModelSpend>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT COALESCE(model, ''), COUNT(*), COALESCE(SUM(prompt_tokens), 0),
                        COALESCE(SUM(completion_tokens), 0), SUM(cost_usd), COUNT(cost_usd)
                 FROM requests WHERE state = 2 GROUP BY model ORDER BY model",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let requests = r.get::<_, i64>(1)?;
                let priced = r.get::<_, i64>(5)?;
                Ok(crate::cost::ModelSpend {
                    model: r.get(0)?,
                    requests: requests as u64,
                    prompt_tokens: r.get::<_, i64>(2)? as u64,
                    cached_tokens: 0,
                    completion_tokens: r.get::<_, i64>(3)? as u64,
                    cost_usd: if priced == requests {
                        r.get::<_, Option<f64>>(4)?
                    } else {
                        None
                    },
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }
}
