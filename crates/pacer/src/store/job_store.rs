use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::bodies::{body_hash, BodyRef, InputBodies};
use super::StoreError;
use crate::input::RequestSpec;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_cached_tokens.sql"),
    include_str!("migrations/0003_batches.sql"),
    include_str!("migrations/0004_history.sql"),
    include_str!("migrations/0005_bodies.sql"),
];

/// The most tokens recorded for one request (10^12): far above any real
/// request, and low enough that no sum over a job can overflow. A provider
/// reporting more (a bug, or a hostile mock) is clamped, never trusted to
/// fit an SQLite integer.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;
/// The most USD recorded for one request; a cost that is not finite is
/// recorded as unknown.
pub const MAX_USD: f64 = 1e9;

/// A count as written to SQLite: clamped to [`MAX_TOKENS`].
pub(super) fn count_to_sql(v: u64) -> i64 {
    v.min(MAX_TOKENS) as i64
}

/// A cost as written to SQLite: within `0..=MAX_USD`, or unknown if not finite.
pub(super) fn usd_to_sql(v: f64) -> Option<f64> {
    v.is_finite().then(|| v.clamp(0.0, MAX_USD))
}

/// A count read back; states written before the clamp may hold anything.
fn count_from_sql(v: i64) -> u64 {
    v.clamp(0, MAX_TOKENS as i64) as u64
}

/// A float sum read back as a count (`as` saturates; NaN is 0).
fn sum_to_count(v: f64) -> u64 {
    v.max(0.0) as u64
}

/// An overflow-free sum of a count column: each value bounded (old states
/// may hold values near 2^63), summed as REAL by `total()`.
fn bounded_total(col: &str) -> String {
    format!("total(min(max({col}, 0), {MAX_TOKENS}))")
}

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
    /// Cached prompt tokens (a part of `prompt_tokens`), where reported.
    pub cached_tokens: u64,
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
    /// Set by [`JobStore::recover`]: the output's verified length and the
    /// hash of those bytes, handed to the writer so it need not read the
    /// file again.
    output_hash: Option<(u64, blake3::Hasher)>,
    /// The job's input, opened the first time a body is read from it.
    input: std::cell::OnceCell<InputBodies>,
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
        // The state holds prompts and answers: create it owner-only. SQLite
        // gives its -wal and -shm files the database file's permissions.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        }
        let conn = Connection::open(path).map_err(|e| sql(path, e))?;
        let store = JobStore {
            conn,
            path: path.to_path_buf(),
            output_hash: None,
            input: std::cell::OnceCell::new(),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing state file read-only, for readers that must never
    /// change it or hold up its writer (`pacer report`, a dashboard): no
    /// creation, no migration, no WAL switch. WAL readers do not block the
    /// writer; a busy timeout covers the moment a checkpoint holds the file.
    pub fn open_read_only(path: &Path) -> Result<JobStore, StoreError> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| sql(path, e))?;
        let store = JobStore {
            conn,
            path: path.to_path_buf(),
            output_hash: None,
            input: std::cell::OnceCell::new(),
        };
        // Reading the schema version checks that this is an SQLite file.
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| store.err(e))?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len() as i64,
            });
        }
        Ok(store)
    }

    /// The schema version of the file (how many migrations ran).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The connection, for read-only queries of other modules (the report).
    pub(crate) fn reader(&self) -> &Connection {
        &self.conn
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
        // into lost or doubled output lines. A checkpoint every 32 MB of WAL
        // (not SQLite's 4 MB): a page changed by many commits is copied into
        // the database once a checkpoint, and each checkpoint syncs twice.
        self.conn
            .execute_batch(
                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -16384;
                 PRAGMA wal_autocheckpoint = 8192;",
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

    pub(super) fn err(&self, e: rusqlite::Error) -> StoreError {
        sql(&self.path, e)
    }

    pub(super) fn conn(&self) -> &Connection {
        &self.conn
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
        // A first import goes through a rollback journal, not the WAL: in
        // WAL mode every page of the job is written twice (to the WAL, then
        // copied by the checkpoint), and a rollback journal keeps only pages
        // that existed before, which in a new state is the schema alone. The
        // switch needs the only connection to the file; if another one has
        // it open (a `pacer status`), the import goes through the WAL.
        let rollback = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            })
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("delete"));
        if rollback {
            // One transaction: syncing it fully costs two or three fsyncs.
            self.conn
                .execute_batch("PRAGMA synchronous = FULL")
                .map_err(|e| self.err(e))?;
        }
        let imported = self.insert_requests(fingerprint, input_len, &meta, requests);
        if rollback {
            // Back to WAL (read back and checked) whatever the import did.
            self.configure()?;
        }
        imported
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
                    "INSERT INTO requests (idx, custom_id, priority, url, model, est_prompt, est_output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| sql(&path, e))?;
            let mut insert_body = tx
                .prepare(
                    "INSERT INTO bodies (idx, body, at, len, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| sql(&path, e))?;
            for spec in requests {
                let spec = match spec {
                    Ok(spec) => spec,
                    Err(e) => return Ok(Err(e)), // dropping `tx` rolls back
                };
                let idx = first + n as i64;
                insert
                    .execute(params![
                        idx,
                        spec.custom_id,
                        spec.priority,
                        spec.url,
                        spec.model,
                        count_to_sql(spec.estimate.prompt),
                        count_to_sql(spec.estimate.max_output),
                    ])
                    .map_err(|e| sql(&path, e))?;
                // A body that is the input's own bytes is kept as where it is.
                let kept = match spec.body_at.and_then(|at| i64::try_from(at).ok()) {
                    Some(at) => insert_body.execute(params![
                        idx,
                        None::<String>,
                        at,
                        spec.body.len() as i64,
                        body_hash(spec.body.as_bytes()),
                    ]),
                    None => insert_body.execute(params![
                        idx,
                        spec.body,
                        None::<i64>,
                        None::<i64>,
                        None::<i64>
                    ]),
                };
                kept.map_err(|e| sql(&path, e))?;
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

    /// Crash recovery at start-up: check that the output's recorded prefix
    /// is what pacer wrote (length and hash), cut pacer's own unfinished tail,
    /// append committed lines that never reached the file, and return
    /// requests that were in flight to pending. A file changed outside pacer
    /// is refused and left as it is.
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
        let recorded_hash = self.meta("output_hash")?;
        let truncated = |actual| StoreError::OutputTruncated {
            path: output.to_path_buf(),
            expected: recorded,
            actual,
        };
        // A missing output with lines recorded is not recreated: refused as is.
        let mut file = match OpenOptions::new()
            .create(recorded == 0)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(output)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(truncated(0)),
            Err(e) => return Err(io(e)),
        };
        let actual = file.metadata().map_err(io)?.len();
        if actual < recorded {
            return Err(truncated(actual));
        }
        let mut hasher = blake3::Hasher::new();
        let hashed = std::io::copy(&mut (&file).take(recorded), &mut hasher).map_err(io)?;
        if hashed < recorded {
            return Err(truncated(hashed));
        }
        // A state from before the hash was kept is checked by length only,
        // this once; it gets its hash below.
        if let Some(expected) = recorded_hash {
            if hasher.finalize().to_hex().as_str() != expected {
                return Err(StoreError::OutputChanged {
                    path: output.to_path_buf(),
                    len: recorded,
                });
            }
        }
        let queued = self.queued_lines()?;
        if actual > recorded && !self.tail_is_pacers(&file, &queued).map_err(io)? {
            return Err(StoreError::OutputForeignTail {
                path: output.to_path_buf(),
                len: recorded,
                extra: actual - recorded,
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
        for line in &queued {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            recovery.rewritten += 1;
        }
        if !buf.is_empty() {
            file.write_all(&buf).map_err(io)?;
            file.sync_data().map_err(io)?;
            hasher.update(&buf);
        }
        let new_len = recorded + buf.len() as u64;
        tx.execute("DELETE FROM output_queue", [])
            .map_err(|e| sql(&path, e))?;
        // A request in a provider batch (`batch` set) is still there: the
        // batch driver collects it. Only live sends were lost in the crash.
        recovery.requeued = tx
            .execute(
                "UPDATE requests SET state = 0 WHERE state = 1 AND batch IS NULL",
                [],
            )
            .map_err(|e| sql(&path, e))? as u64;
        tx.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ?1 WHERE key = 'resent'",
            [recovery.requeued as i64],
        )
        .map_err(|e| sql(&path, e))?;
        set_output_len(&tx, new_len, &hasher).map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        self.output_hash = Some((new_len, hasher));
        Ok(recovery)
    }

    /// Output lines committed but not yet recorded as written, in request order.
    fn queued_lines(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT line FROM output_queue ORDER BY idx")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Whether the bytes after the recorded length (`file` is positioned
    /// there) are pacer's own unfinished write: complete lines that are in
    /// the output queue (written, not yet recorded) or that are pacer's
    /// lines for requests still unfinished (their commit was lost to a power
    /// loss; they will be sent again), then at most one partial line (a
    /// crash mid-write). Anything else was written by someone else.
    fn tail_is_pacers(&self, file: &File, queued: &[String]) -> std::io::Result<bool> {
        let queued: HashSet<&[u8]> = queued.iter().map(|l| l.as_bytes()).collect();
        let mut unfinished_ids = HashSet::new();
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let body = &line[..line.len() - 1];
            if queued.contains(body) {
                continue;
            }
            match pacer_line_custom_id(body) {
                Some(id) => unfinished_ids.insert(id),
                None => return Ok(false),
            };
        }
        if unfinished_ids.is_empty() {
            return Ok(true);
        }
        let unfinished = (|| {
            let mut stmt = self
                .conn
                .prepare("SELECT custom_id FROM requests WHERE state < 2")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut found = 0;
            for id in rows {
                if unfinished_ids.contains(&id?) {
                    found += 1;
                }
            }
            Ok::<_, rusqlite::Error>(found)
        })()
        .map_err(std::io::Error::other)?;
        Ok(unfinished == unfinished_ids.len())
    }

    /// Hands the hash of the output's verified prefix to the writer.
    pub(super) fn take_output_hash(&mut self) -> Option<(u64, blake3::Hasher)> {
        self.output_hash.take()
    }

    /// Counts by state, re-sends and spend.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT state, COUNT(*), total(min(max(cost_usd, 0), {MAX_USD:.1})), {}, {}, {}
                     FROM requests GROUP BY state",
                bounded_total("prompt_tokens"),
                bounded_total("completion_tokens"),
                bounded_total("cached_tokens"),
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, f64>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (state, n, cost, prompt, completion, cached) = row.map_err(|e| self.err(e))?;
            let n = n as u64;
            counts.total += n;
            counts.spent_usd += cost;
            counts.prompt_tokens = counts.prompt_tokens.saturating_add(sum_to_count(prompt));
            counts.completion_tokens = counts
                .completion_tokens
                .saturating_add(sum_to_count(completion));
            counts.cached_tokens = counts.cached_tokens.saturating_add(sum_to_count(cached));
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
        let map = |r: &rusqlite::Row<'_>| {
            let row = PendingRow {
                idx: r.get(0)?,
                custom_id: r.get(1)?,
                priority: r.get(2)?,
                attempts: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                url: r.get(4)?,
                body: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                model: r.get(6)?,
                est_prompt: count_from_sql(r.get(7)?),
                est_output: count_from_sql(r.get(8)?),
            };
            Ok((row, body_ref(r, 9)?))
        };
        let rows = match after {
            None => {
                let mut stmt = self
                    .conn
                    .prepare_cached(PENDING_FIRST)
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map([limit as i64], map)
                    .map_err(|e| self.err(e))?;
                rows.collect::<Result<Vec<_>, _>>()
            }
            Some(c) => {
                let mut stmt = self
                    .conn
                    .prepare_cached(PENDING_AFTER)
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map(params![c.priority, c.idx, limit as i64], map)
                    .map_err(|e| self.err(e))?;
                rows.collect::<Result<Vec<_>, _>>()
            }
        };
        let rows = rows.map_err(|e| self.err(e))?;
        self.with_bodies(rows)
    }

    /// Rows with their bodies: those kept in the input are read from it.
    pub(super) fn with_bodies(
        &self,
        rows: Vec<(PendingRow, Option<BodyRef>)>,
    ) -> Result<Vec<PendingRow>, StoreError> {
        let (refs, at): (Vec<BodyRef>, Vec<usize>) = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (_, r))| r.map(|r| (r, i)))
            .unzip();
        let mut rows: Vec<PendingRow> = rows.into_iter().map(|(row, _)| row).collect();
        if !refs.is_empty() {
            let bodies = self
                .input_bodies()?
                .read(&refs, |i| rows[at[i]].custom_id.clone())?;
            for (body, i) in bodies.into_iter().zip(at) {
                rows[i].body = body;
            }
        }
        Ok(rows)
    }

    /// The job's input, for bodies kept there: the path the last run gave
    /// (meta `input_path`, set once its fingerprint was checked).
    pub(super) fn input_bodies(&self) -> Result<&InputBodies, StoreError> {
        if let Some(input) = self.input.get() {
            return Ok(input);
        }
        let Some(path) = self.meta("input_path")? else {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "the state keeps request bodies in its input file but not where that file is",
                ),
            });
        };
        let input = InputBodies::open(Path::new(&path))?;
        Ok(self.input.get_or_init(|| input))
    }

    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The first page of pending requests, in scheduler order. `CROSS JOIN`
/// keeps the pending index as the outer loop (each body is then looked up
/// by idx): the planner may not reorder it.
pub(super) const PENDING_FIRST: &str =
    "SELECT r.idx, r.custom_id, r.priority, r.attempts, r.url, b.body, r.model, r.est_prompt, r.est_output,
            b.at, b.len, b.hash
     FROM requests AS r INDEXED BY requests_pending CROSS JOIN bodies AS b ON b.idx = r.idx
     WHERE r.state = 0 ORDER BY r.priority DESC, r.idx LIMIT ?1";
/// The next page after (priority ?1, idx ?2).
pub(super) const PENDING_AFTER: &str =
    "SELECT r.idx, r.custom_id, r.priority, r.attempts, r.url, b.body, r.model, r.est_prompt, r.est_output,
            b.at, b.len, b.hash
     FROM requests AS r INDEXED BY requests_pending CROSS JOIN bodies AS b ON b.idx = r.idx
     WHERE r.state = 0 AND (r.priority < ?1 OR (r.priority = ?1 AND r.idx > ?2))
     ORDER BY r.priority DESC, r.idx LIMIT ?3";

/// Where a body is in the input, from `at, len, hash` at column `first`
/// (`None`: the body is in the row).
pub(super) fn body_ref(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<BodyRef>> {
    let at: Option<i64> = r.get(first)?;
    let len: Option<i64> = r.get(first + 1)?;
    let hash: Option<i64> = r.get(first + 2)?;
    Ok(match (at, len, hash) {
        (Some(at), Some(len), Some(hash)) => Some(BodyRef {
            at: at.max(0) as u64,
            len: len.max(0) as u64,
            hash,
        }),
        _ => None,
    })
}

/// Records the output's durable length and the hash of those bytes (in the
/// caller's transaction, so the two always agree).
pub(super) fn set_output_len(
    tx: &rusqlite::Transaction<'_>,
    len: u64,
    hasher: &blake3::Hasher,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('output_len', ?1), ('output_hash', ?2)",
        [len.to_string(), hasher.finalize().to_hex().to_string()],
    )
    .map(|_| ())
}

/// The `custom_id` of a line in pacer's output shape, if `line` is one.
fn pacer_line_custom_id(line: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let o = v.as_object()?;
    let pacer_shaped = o.get("id")?.as_str()?.starts_with("batch_req_")
        && o.contains_key("response")
        && o.contains_key("error");
    pacer_shaped
        .then(|| o.get("custom_id")?.as_str().map(str::to_string))
        .flatten()
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
                &format!(
                    "SELECT COALESCE(model, ''), COUNT(*), {}, {}, total(min(max(cost_usd, 0), {MAX_USD:.1})),
                            COUNT(cost_usd), {}
                     FROM requests WHERE state = 2 GROUP BY model ORDER BY model",
                    bounded_total("prompt_tokens"),
                    bounded_total("completion_tokens"),
                    bounded_total("cached_tokens"),
                ),
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let requests = r.get::<_, i64>(1)?;
                let priced = r.get::<_, i64>(5)?;
                Ok(crate::cost::ModelSpend {
                    model: r.get(0)?,
                    requests: requests as u64,
                    prompt_tokens: sum_to_count(r.get(2)?),
                    cached_tokens: sum_to_count(r.get(6)?),
                    completion_tokens: sum_to_count(r.get(3)?),
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
