use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rusqlite::{params, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::history::{self, Epoch};
use super::job_store::{count_to_sql, set_output_len, sql, usd_to_sql};
use super::{JobStore, RequestState, StoreError};

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 2048;
/// Under load, a commit gathers what arrives for up to this long after the
/// last one: results become durable at most this much later, and a crash
/// can lose (to be sent again) no more than that much more.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// How often a gathering writer looks for more commands.
const GATHER_STEP: std::time::Duration = std::time::Duration::from_millis(2);

/// A change to the store, sent to the one [`Writer`].
#[derive(Debug)]
pub enum Command {
    /// The request was handed to the transport (one more attempt).
    Sent { idx: i64 },
    /// The attempt will be retried later: back to pending, error kept.
    Retry { idx: i64, error: String },
    /// Not answered in a way that counts (the run is stopping): back to pending.
    Requeue { idx: i64 },
    /// Finished for good: `line` is its output line (no newline).
    Finish {
        idx: i64,
        state: RequestState,
        line: String,
        error: Option<String>,
        prompt_tokens: Option<u64>,
        /// Cached prompt tokens (a part of `prompt_tokens`).
        cached_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        cost_usd: Option<f64>,
    },
    /// Answered once everything sent before it is durable.
    Flush(oneshot::Sender<()>),
    /// A change to the job's provider batches (`--via batch`).
    Batch(super::BatchCommand),
    /// One attempt, for the history (`pacer report`).
    Attempt(super::AttemptRecord),
    /// The pace in force changed (at most one a second).
    Pace(super::PaceRecord),
    /// A run starts, with its configured limits and budget.
    RunStarted(super::RunRecord),
    /// The run ends (`stop`: why it stopped early).
    RunEnded {
        at_unix_ms: i64,
        stop: Option<String>,
    },
}

/// A finished request whose output line is durable in the output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub idx: i64,
    pub state: RequestState,
}

/// The one writer of a job's state and output file, on its own thread.
///
/// Commands queue on an unbounded channel; the thread takes everything that
/// is waiting (up to [`MAX_BATCH`]) and commits it in one transaction, then
/// appends the batch's output lines with one write and one `fdatasync`, then
/// records them as written. Throughput grows with load: the busier the run,
/// the bigger the batches.
pub struct Writer {
    tx: mpsc::UnboundedSender<Command>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
}

impl Writer {
    /// Starts the writer on `store` (already recovered) appending to `output`.
    /// Each durable finished request is reported on `durable`.
    pub fn start(
        mut store: JobStore,
        output: &Path,
        durable: mpsc::UnboundedSender<Durable>,
    ) -> Result<Writer, StoreError> {
        let io = |e| StoreError::Io {
            path: output.to_path_buf(),
            source: e,
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(output)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // The running hash of the durable output, from recovery; hashed here
        // only if the store was not recovered just before.
        let hasher = match store.take_output_hash() {
            Some((hashed, hasher)) if hashed == len => hasher,
            _ => {
                let mut hasher = blake3::Hasher::new();
                std::io::copy(&mut &file, &mut hasher).map_err(io)?;
                hasher
            }
        };
        let epoch = Epoch::load(store.conn()).map_err(|e| sql(store.path(), e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = WriterThread {
            epoch,
            store,
            file,
            output: output.to_path_buf(),
            len,
            hasher,
            rx,
            durable,
        };
        let thread = std::thread::Builder::new()
            .name("pacer-store-writer".into())
            .spawn(move || state.run())
            .map_err(|e| StoreError::Io {
                path: output.to_path_buf(),
                source: e,
            })?;
        Ok(Writer {
            tx,
            thread: Some(thread),
        })
    }

    /// Queues a command. Fails only if the writer thread has died.
    pub fn send(&self, cmd: Command) -> Result<(), StoreError> {
        self.tx
            .send(cmd)
            .map_err(|_| StoreError::WriterGone("the writer thread ended".into()))
    }

    /// A cheap handle for tasks that only send commands.
    pub fn sender(&self) -> mpsc::UnboundedSender<Command> {
        self.tx.clone()
    }

    /// Waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx))?;
        rx.await
            .map_err(|_| StoreError::WriterGone("the writer thread ended during a flush".into()))
    }

    /// Stops the writer after everything queued is durable, returning its error if any.
    pub async fn close(mut self) -> Result<(), StoreError> {
        let thread = self.thread.take();
        drop(self.tx);
        match thread {
            Some(t) => tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| StoreError::WriterGone(e.to_string()))?
                .map_err(|_| StoreError::WriterGone("the writer thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

struct WriterThread {
    /// The history's clock origin (`meta.history_epoch_ms`).
    epoch: Epoch,
    store: JobStore,
    file: File,
    output: PathBuf,
    len: u64,
    /// blake3 of the output's first `len` bytes, recorded with `len`.
    hasher: blake3::Hasher,
    rx: mpsc::UnboundedReceiver<Command>,
    durable: mpsc::UnboundedSender<Durable>,
}

impl WriterThread {
    fn run(&mut self) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_commit = std::time::Instant::now();
        while let Some(first) = self.rx.blocking_recv() {
            let mut flush = matches!(first, Command::Flush(_));
            batch.push(first);
            // Group commit: under load, gather for up to GATHER since the
            // last commit. Each commit costs the same whatever its size (a
            // WAL write of every page it touched, an fdatasync of the output),
            // so bigger batches make each request cheaper. A quiet run commits
            // at once (its last commit is long past), and so does a flush.
            let due = last_commit + GATHER;
            loop {
                let mut closed = false;
                while batch.len() < MAX_BATCH {
                    match self.rx.try_recv() {
                        Ok(cmd) => {
                            flush |= matches!(cmd, Command::Flush(_));
                            batch.push(cmd);
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let now = std::time::Instant::now();
                if closed || flush || batch.len() >= MAX_BATCH || now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(GATHER_STEP));
            }
            let result = self.apply(&mut batch);
            last_commit = std::time::Instant::now();
            if let Err(e) = result {
                tracing::error!("state writer failed: {e}");
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply(&mut self, batch: &mut Vec<Command>) -> Result<(), StoreError> {
        let path = self.store.path().to_path_buf();
        let epoch = &mut self.epoch;
        let mut lines = Vec::new();
        let mut finished = Vec::new();
        let mut flushes = Vec::new();
        {
            let conn = self.store.conn_mut();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql(&path, e))?;
            {
                let mut sent = tx
                    .prepare_cached(
                        "UPDATE requests SET state = 1, attempts = attempts + 1 WHERE idx = ?1",
                    )
                    .map_err(|e| sql(&path, e))?;
                let mut retry = tx
                    .prepare_cached("UPDATE requests SET state = 0, last_error = ?2 WHERE idx = ?1")
                    .map_err(|e| sql(&path, e))?;
                let mut requeue = tx
                    .prepare_cached("UPDATE requests SET state = 0 WHERE idx = ?1")
                    .map_err(|e| sql(&path, e))?;
                let mut finish = tx
                    .prepare_cached(
                        "UPDATE requests SET state = ?2, last_error = ?3, prompt_tokens = ?4,
                         completion_tokens = ?5, cost_usd = ?6, cached_tokens = ?7
                         WHERE idx = ?1 AND state < 2",
                    )
                    .map_err(|e| sql(&path, e))?;
                let mut queue = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO output_queue (idx, line) VALUES (?1, ?2)",
                    )
                    .map_err(|e| sql(&path, e))?;
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Sent { idx } => sent.execute([idx]).map(|_| ()),
                        Command::Retry { idx, error } => {
                            retry.execute(params![idx, error]).map(|_| ())
                        }
                        Command::Requeue { idx } => requeue.execute([idx]).map(|_| ()),
                        Command::Finish {
                            idx,
                            state,
                            line,
                            error,
                            prompt_tokens,
                            cached_tokens,
                            completion_tokens,
                            cost_usd,
                        } => {
                            // Clamped: a provider's absurd usage must not make
                            // the state unreadable (sums overflowing i64).
                            // A request finished already keeps its one line.
                            let changed = finish.execute(params![
                                idx,
                                state as i64,
                                error,
                                prompt_tokens.map(count_to_sql),
                                completion_tokens.map(count_to_sql),
                                cost_usd.and_then(usd_to_sql),
                                cached_tokens.map(count_to_sql),
                            ]);
                            match changed {
                                Ok(0) => Ok(()),
                                Ok(_) => {
                                    let r = queue.execute(params![idx, line]);
                                    lines.push(line);
                                    finished.push(Durable { idx, state });
                                    r.map(|_| ())
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Command::Flush(done) => {
                            flushes.push(done);
                            Ok(())
                        }
                        Command::Batch(cmd) => super::batches::apply(&tx, cmd),
                        Command::Attempt(a) => history::record_attempt(&tx, epoch, a),
                        Command::Pace(p) => history::record_pace(&tx, epoch, p),
                        Command::RunStarted(r) => history::record_run_start(&tx, epoch, r),
                        Command::RunEnded { at_unix_ms, stop } => {
                            history::record_run_end(&tx, epoch, at_unix_ms, stop)
                        }
                    }
                    .map_err(|e| sql(&path, e))?;
                }
            }
            tx.commit().map_err(|e| sql(&path, e))?;
        }

        if !lines.is_empty() {
            let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for line in &lines {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
            }
            let io = |e| StoreError::Io {
                path: self.output.clone(),
                source: e,
            };
            self.file.write_all(&buf).map_err(io)?;
            self.file.sync_data().map_err(io)?;
            self.len += buf.len() as u64;
            self.hasher.update(&buf);

            let conn = self.store.conn_mut();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql(&path, e))?;
            {
                let mut written = tx
                    .prepare_cached("DELETE FROM output_queue WHERE idx = ?1")
                    .map_err(|e| sql(&path, e))?;
                for d in &finished {
                    written.execute([d.idx]).map_err(|e| sql(&path, e))?;
                }
                set_output_len(&tx, self.len, &self.hasher).map_err(|e| sql(&path, e))?;
            }
            tx.commit().map_err(|e| sql(&path, e))?;
            for d in finished {
                let _ = self.durable.send(d);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RequestSpec;
    use crate::store::{PendingCursor, Recovery, MAX_TOKENS};
    use crate::tokens::TokenEstimate;

    /// A job of `n` requests imported into `dir/s.db`, output `dir/out.jsonl`.
    fn imported(dir: &tempfile::TempDir, n: u64) -> (PathBuf, PathBuf, JobStore) {
        let db = dir.path().join("s.db");
        let out = dir.path().join("out.jsonl");
        let mut store = JobStore::open(&db).unwrap();
        store
            .import("fp", 0, (0..n).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
        (db, out, store)
    }

    fn spec(i: u64, priority: i64) -> Result<RequestSpec, std::convert::Infallible> {
        Ok(RequestSpec {
            custom_id: format!("r{i}"),
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: format!("{{\"n\":{i}}}"),
            body_at: None,
            priority,
            estimate: TokenEstimate {
                prompt: 10,
                max_output: 5,
            },
            model: Some("gpt-4o-mini".into()),
            line: i + 1,
        })
    }

    fn finish(idx: i64) -> Command {
        Command::Finish {
            idx,
            state: RequestState::Done,
            line: format!("{{\"custom_id\":\"r{idx}\"}}"),
            error: None,
            prompt_tokens: Some(10),
            cached_tokens: Some(4),
            completion_tokens: Some(3),
            cost_usd: Some(0.5),
        }
    }

    #[test]
    fn wal_is_on_and_pending_pages_follow_priority_then_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = JobStore::open(&dir.path().join("s.db")).unwrap();
        let mode: String = store
            .conn_mut()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let n = store
            .import(
                "fp",
                0,
                (0..10).map(|i| spec(i, if i % 3 == 0 { 5 } else { 0 })),
            )
            .unwrap()
            .unwrap();
        assert_eq!(n, 10);
        let first = store.fetch_pending(None, 3).unwrap();
        assert_eq!(
            first.iter().map(|r| r.idx).collect::<Vec<_>>(),
            vec![0, 3, 6]
        );
        let last = first.last().unwrap();
        let next = store
            .fetch_pending(
                Some(PendingCursor {
                    priority: last.priority,
                    idx: last.idx,
                }),
                3,
            )
            .unwrap();
        assert_eq!(
            next.iter().map(|r| r.idx).collect::<Vec<_>>(),
            vec![9, 1, 2]
        );
    }

    /// An import of `n` requests with bodies of about 1 KB.
    fn import_big(store: &mut JobStore, n: u64) {
        let pad = "x".repeat(1000);
        store
            .import(
                "fp",
                0,
                (0..n).map(|i| {
                    spec(i, 0).map(|mut s| {
                        s.body = format!("{{\"n\":{i},\"pad\":\"{pad}\"}}");
                        s
                    })
                }),
            )
            .unwrap()
            .unwrap();
    }

    fn journal(store: &mut JobStore) -> (String, i64) {
        let conn = store.conn_mut();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        (mode, sync)
    }

    #[test]
    fn a_first_import_writes_its_pages_once_and_leaves_wal_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut store = JobStore::open(&db).unwrap();
        import_big(&mut store, 3000);
        // Back in WAL with NORMAL syncs, and the 3 MB of bodies went to the
        // database file, not through the WAL.
        assert_eq!(journal(&mut store), ("wal".to_owned(), 1));
        let wal = std::fs::metadata(dir.path().join("s.db-wal")).map_or(0, |m| m.len());
        assert!(wal < 512 * 1024, "the WAL holds {wal} bytes");
        assert!(std::fs::metadata(&db).unwrap().len() > 3_000_000);
        assert_eq!(store.fetch_pending(None, 5000).unwrap().len(), 3000);

        // With another connection open the switch cannot happen: the import
        // goes through the WAL, and WAL stays on.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let mut store = JobStore::open(&db).unwrap();
        let other = JobStore::open(&db).unwrap();
        import_big(&mut store, 3000);
        assert_eq!(journal(&mut store), ("wal".to_owned(), 1));
        let wal = std::fs::metadata(dir.path().join("s.db-wal"))
            .unwrap()
            .len();
        assert!(wal > 3_000_000, "the WAL holds {wal} bytes");
        assert_eq!(other.fetch_pending(None, 5000).unwrap().len(), 3000);
    }

    #[test]
    fn bodies_of_batch_lines_stay_in_the_input_and_are_read_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let lines: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "{{\"custom_id\":\"r{i}\",\"body\":{{\"n\":{i},\"pad\":\"{}\"}}}}",
                    "y".repeat(i * 7)
                )
            })
            .collect();
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let mut at = 0u64;
        let specs: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let body = &line[line.find("{\"n\"").unwrap()..line.len() - 1];
                let body_at = at + line.find("{\"n\"").unwrap() as u64;
                at += line.len() as u64 + 1;
                spec(i as u64, (i % 3) as i64).map(|mut s| {
                    s.body = body.to_owned();
                    s.body_at = Some(body_at);
                    s
                })
            })
            .collect();
        let db = dir.path().join("s.db");
        let mut store = JobStore::open(&db).unwrap();
        store
            .import("fp", 0, specs.clone().into_iter())
            .unwrap()
            .unwrap();
        // No copy of a body in the state.
        let copies: i64 = store
            .reader()
            .query_row(
                "SELECT count(*) FROM bodies WHERE body IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(copies, 0);
        store
            .set_meta("input_path", input.to_str().unwrap())
            .unwrap();
        let reader = JobStore::open(&db).unwrap();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = reader.fetch_pending(after, 7).unwrap();
            after = page.last().map(|r| PendingCursor {
                priority: r.priority,
                idx: r.idx,
            });
            got.extend(page.into_iter().map(|r| (r.custom_id, r.body)));
            if after.is_none() {
                break;
            }
        }
        let mut want: Vec<(String, String)> = specs
            .into_iter()
            .map(|s| s.unwrap())
            .map(|s| (s.custom_id, s.body))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);

        // The input edited under the run: refused with the request named.
        std::fs::write(
            &input,
            lines.join("\n").replace("\"n\":3,", "\"n\":4,") + "\n",
        )
        .unwrap();
        let reader = JobStore::open(&db).unwrap();
        let e = reader.fetch_pending(None, 100).unwrap_err();
        assert!(e.to_string().contains("r3"), "{e}");
    }

    #[test]
    fn a_state_from_before_the_bodies_table_keeps_every_body() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // A state as the previous schema wrote it: bodies inside requests.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for m in &super::super::job_store::MIGRATIONS[..4] {
                conn.execute_batch(m).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 4;
                 INSERT INTO requests (idx, custom_id, url, body, est_prompt, est_output, state)
                 VALUES (0, 'a', '/v1/chat/completions', '{\"n\":0}', 1, 1, 0),
                        (1, 'b', '/v1/chat/completions', '{\"n\":1}', 1, 1, 2),
                        (2, 'c', '/v1/chat/completions', '{\"n\":2}', 1, 1, 0);",
            )
            .unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            super::super::job_store::MIGRATIONS.len() as i64
        );
        let pending = store.fetch_pending(None, 10).unwrap();
        let got: Vec<(i64, &str)> = pending.iter().map(|r| (r.idx, r.body.as_str())).collect();
        assert_eq!(got, [(0, r#"{"n":0}"#), (2, r#"{"n":2}"#)]);
        let done: String = store
            .reader()
            .query_row("SELECT body FROM bodies WHERE idx = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(done, r#"{"n":1}"#);
    }

    #[test]
    fn paging_pending_work_never_sorts_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = JobStore::open(&dir.path().join("s.db")).unwrap();
        store
            .import("fp", 0, (0..100).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
        store.conn_mut().execute_batch("ANALYZE").unwrap();
        // The store's own queries, with their parameters bound to a cursor.
        for sql in [
            super::super::job_store::PENDING_FIRST.replace("?1", "5"),
            super::super::job_store::PENDING_AFTER
                .replace("?1", "0")
                .replace("?2", "5")
                .replace("?3", "5"),
        ] {
            let plan: Vec<String> = store
                .conn_mut()
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join(" | ");
            assert!(
                plan.contains("requests_pending")
                    && plan.contains("INTEGER PRIMARY KEY")
                    && !plan.contains("TEMP B-TREE"),
                "{plan}"
            );
        }
    }

    #[test]
    fn an_input_error_rolls_the_whole_import_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = JobStore::open(&dir.path().join("s.db")).unwrap();
        let items = (0..5).map(|i| {
            if i == 3 {
                Err("bad line 4")
            } else {
                Ok(spec(i, 0).unwrap())
            }
        });
        assert_eq!(store.import("fp", 0, items).unwrap(), Err("bad line 4"));
        assert!(!store.is_imported().unwrap());
        assert_eq!(store.counts().unwrap().total, 0);
    }

    #[tokio::test]
    async fn finished_lines_become_durable_once_and_recovery_resends_in_flight_work() {
        let dir = tempfile::tempdir().unwrap();
        let (db, out, mut store) = imported(&dir, 4);
        store.recover(&out).unwrap();
        let (dtx, mut drx) = mpsc::unbounded_channel();
        let writer = Writer::start(store, &out, dtx).unwrap();
        for idx in 0..4 {
            writer.send(Command::Sent { idx }).unwrap();
        }
        writer.send(finish(0)).unwrap();
        writer.send(finish(2)).unwrap();
        writer.flush().await.unwrap();
        assert_eq!(drx.recv().await.unwrap().idx, 0);
        assert_eq!(drx.recv().await.unwrap().idx, 2);
        writer.close().await.unwrap();

        // A crash left a partial line behind.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .unwrap()
            .write_all(b"{\"custom_id\":\"r1")
            .unwrap();
        let mut store = JobStore::open(&db).unwrap();
        let rec = store.recover(&out).unwrap();
        assert_eq!(rec.requeued, 2);
        assert_eq!(rec.truncated_bytes, 16);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "{\"custom_id\":\"r0\"}\n{\"custom_id\":\"r2\"}\n");
        let counts = store.counts().unwrap();
        assert_eq!((counts.done, counts.pending, counts.resent), (2, 2, 2));
        assert!((counts.spent_usd - 1.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_request_finished_twice_keeps_its_one_line_and_its_first_cost() {
        let dir = tempfile::tempdir().unwrap();
        let (db, out, mut store) = imported(&dir, 2);
        store.recover(&out).unwrap();
        let (dtx, mut drx) = mpsc::unbounded_channel();
        let writer = Writer::start(store, &out, dtx).unwrap();
        writer.send(finish(1)).unwrap();
        // In one batch and in the next: both ignored.
        writer.send(finish(1)).unwrap();
        writer.flush().await.unwrap();
        writer.send(finish(1)).unwrap();
        writer.close().await.unwrap();
        assert_eq!(drx.recv().await.unwrap().idx, 1);
        assert!(drx.recv().await.is_none(), "one durable report only");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"custom_id\":\"r1\"}\n"
        );
        let counts = JobStore::open(&db).unwrap().counts().unwrap();
        assert_eq!((counts.done, counts.pending), (1, 1));
        assert!((counts.spent_usd - 0.5).abs() < 1e-9);
    }

    #[test]
    fn committed_but_unwritten_lines_are_appended_at_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, out, mut store) = imported(&dir, 2);
        // As if the writer died between its two commits.
        let conn = store.conn_mut();
        conn.execute("UPDATE requests SET state = 2 WHERE idx = 1", [])
            .unwrap();
        conn.execute(
            "INSERT INTO output_queue (idx, line) VALUES (1, 'line-1')",
            [],
        )
        .unwrap();
        let rec = store.recover(&out).unwrap();
        assert_eq!(rec.rewritten, 1);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "line-1\n");
        // Recovering again changes nothing.
        let rec = store.recover(&out).unwrap();
        assert_eq!(rec, Recovery::default());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "line-1\n");
    }

    #[test]
    fn a_shortened_output_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, out, mut store) = imported(&dir, 1);
        store.set_meta("output_len", "100").unwrap();
        assert!(matches!(
            store.recover(&out),
            Err(StoreError::OutputTruncated {
                expected: 100,
                actual: 0,
                ..
            })
        ));
    }

    /// A job of `n` requests with r0 and r1 durable in the output.
    async fn two_written(n: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (db, out, mut store) = imported(&dir, n);
        store.recover(&out).unwrap();
        let (dtx, _drx) = mpsc::unbounded_channel();
        let writer = Writer::start(store, &out, dtx).unwrap();
        writer.send(finish(0)).unwrap();
        writer.send(finish(1)).unwrap();
        writer.close().await.unwrap();
        (dir, db, out)
    }

    #[tokio::test]
    async fn a_line_edited_in_place_is_refused_and_left_as_it_is() {
        let (_dir, db, out) = two_written(3).await;
        let edited = std::fs::read_to_string(&out)
            .unwrap()
            .replace("\"r1\"", "\"x1\"");
        std::fs::write(&out, &edited).unwrap();
        let mut store = JobStore::open(&db).unwrap();
        let err = store.recover(&out).unwrap_err();
        assert!(
            matches!(err, StoreError::OutputChanged { len: 38, .. }),
            "{err:?}"
        );
        assert!(err.is_usage());
        let msg = err.to_string();
        assert!(
            msg.contains("out.jsonl was changed since pacer wrote it (its first 38 bytes differ")
                && msg.contains("--restart"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), edited);
    }

    #[tokio::test]
    async fn foreign_lines_after_the_recorded_end_are_refused_not_cut() {
        let (_dir, db, out) = two_written(3).await;
        let mut text = std::fs::read_to_string(&out).unwrap();
        text.push_str("{\"note\":\"mine\"}\n");
        std::fs::write(&out, &text).unwrap();
        let mut store = JobStore::open(&db).unwrap();
        let err = store.recover(&out).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::OutputForeignTail {
                    len: 38,
                    extra: 16,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("truncate -s 38"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
    }

    #[tokio::test]
    async fn pacers_own_unrecorded_tail_is_cut_after_a_crash() {
        let (_dir, db, out) = two_written(4).await;
        let before = std::fs::read_to_string(&out).unwrap();
        // The writer appended r2 (queued) and the start of r3, then died
        // before recording them.
        let mut store = JobStore::open(&db).unwrap();
        store
            .conn_mut()
            .execute(
                "INSERT INTO output_queue (idx, line) VALUES (2, '{\"custom_id\":\"r2\"}')",
                [],
            )
            .unwrap();
        // And a line of pacer's for r3 whose commit a power loss undid.
        let r3 = r#"{"id":"batch_req_0","custom_id":"r3","response":null,"error":null}"#;
        std::fs::write(
            &out,
            format!("{before}{{\"custom_id\":\"r2\"}}\n{r3}\n{{\"custom_id\":\"r"),
        )
        .unwrap();
        let rec = store.recover(&out).unwrap();
        assert_eq!(rec.rewritten, 1);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("{before}{{\"custom_id\":\"r2\"}}\n")
        );
        // The recorded hash covers what recovery wrote: a second start agrees.
        drop(store);
        let mut store = JobStore::open(&db).unwrap();
        assert_eq!(store.recover(&out).unwrap(), Recovery::default());
    }

    #[tokio::test]
    async fn a_pacer_line_of_a_finished_request_after_the_end_is_foreign() {
        let (_dir, db, out) = two_written(3).await;
        let mut text = std::fs::read_to_string(&out).unwrap();
        // r0 is done and its line is in the prefix: a second copy is not
        // something pacer's crash can leave.
        text.push_str(r#"{"id":"batch_req_0","custom_id":"r0","response":null,"error":null}"#);
        text.push('\n');
        std::fs::write(&out, &text).unwrap();
        let mut store = JobStore::open(&db).unwrap();
        assert!(matches!(
            store.recover(&out),
            Err(StoreError::OutputForeignTail { .. })
        ));
    }

    #[tokio::test]
    async fn a_state_without_a_hash_is_checked_by_length_once_then_hashed() {
        let (_dir, db, out) = two_written(3).await;
        let mut store = JobStore::open(&db).unwrap();
        // As a state written before the hash was kept.
        store
            .conn_mut()
            .execute("DELETE FROM meta WHERE key = 'output_hash'", [])
            .unwrap();
        store.recover(&out).unwrap();
        assert!(store.meta("output_hash").unwrap().is_some());
        let text = std::fs::read_to_string(&out).unwrap().replace("r0", "x0");
        std::fs::write(&out, text).unwrap();
        assert!(matches!(
            store.recover(&out),
            Err(StoreError::OutputChanged { .. })
        ));
    }

    #[tokio::test]
    async fn the_writer_keeps_the_hash_of_what_it_appended() {
        let (_dir, db, out) = two_written(3).await;
        let store = JobStore::open(&db).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(
            store.meta("output_hash").unwrap().unwrap(),
            blake3::hash(&bytes).to_hex().as_str()
        );
        assert_eq!(
            store.meta("output_len").unwrap().unwrap(),
            bytes.len().to_string()
        );
    }

    #[tokio::test]
    async fn absurd_usage_is_clamped_and_every_read_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let (db, out, mut store) = imported(&dir, 4);
        store.recover(&out).unwrap();
        let (dtx, _drx) = mpsc::unbounded_channel();
        let writer = Writer::start(store, &out, dtx).unwrap();
        for (idx, tokens) in [(0, u64::MAX), (1, u64::MAX), (2, 1u64 << 63)] {
            writer
                .send(Command::Finish {
                    idx,
                    state: RequestState::Done,
                    line: format!("l{idx}"),
                    error: None,
                    prompt_tokens: Some(tokens),
                    cached_tokens: Some(tokens),
                    completion_tokens: Some(tokens),
                    cost_usd: Some(f64::INFINITY),
                })
                .unwrap();
        }
        writer.close().await.unwrap();
        let mut store = JobStore::open(&db).unwrap();
        // And a row written by an older pacer, unclamped.
        store
            .conn_mut()
            .execute(
                "UPDATE requests SET state = 2, prompt_tokens = 9223372036854775807,
                 completion_tokens = -1, cost_usd = 1.0 WHERE idx = 3",
                [],
            )
            .unwrap();
        let counts = store.counts().unwrap();
        assert_eq!(counts.done, 4);
        assert_eq!(counts.prompt_tokens, 4 * MAX_TOKENS);
        assert_eq!(counts.cached_tokens, 3 * MAX_TOKENS);
        assert_eq!(counts.completion_tokens, 3 * MAX_TOKENS);
        assert!((counts.spent_usd - 1.0).abs() < 1e-9, "{counts:?}");
        let by_model = store.spend_by_model().unwrap();
        assert_eq!(by_model.len(), 1);
        assert_eq!(by_model[0].prompt_tokens, 4 * MAX_TOKENS);
        // The infinite costs were recorded as unknown, not as infinity.
        assert_eq!(by_model[0].cost_usd, None);
        assert_eq!(store.fetch_pending(None, 10).unwrap().len(), 0);
        assert!(crate::engine::status(&db).is_ok());
    }

    #[tokio::test]
    async fn cached_tokens_are_stored_and_summed() {
        let (_dir, db, _out) = two_written(3).await;
        let store = JobStore::open(&db).unwrap();
        assert_eq!(store.counts().unwrap().cached_tokens, 8);
        assert_eq!(store.spend_by_model().unwrap()[0].cached_tokens, 8);
    }

    #[tokio::test]
    async fn the_state_and_output_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, db, out) = two_written(3).await;
        let _open = JobStore::open(&db).unwrap();
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let mut shm = db.clone().into_os_string();
        shm.push("-shm");
        for p in [db.clone(), wal.into(), shm.into(), out] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
    }
}
