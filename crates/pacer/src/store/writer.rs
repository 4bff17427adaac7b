use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rusqlite::{params, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::job_store::{count_to_sql, set_output_len, sql, usd_to_sql};
use super::{JobStore, RequestState, StoreError};

/// Most commands applied in one transaction.
const MAX_BATCH: usize = 2048;

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
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = WriterThread {
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
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let result = self.apply(&mut batch);
            if let Err(e) = result {
                tracing::error!("state writer failed: {e}");
                return Err(e);
            }
        }
        Ok(())
    }

    fn apply(&mut self, batch: &mut Vec<Command>) -> Result<(), StoreError> {
        let path = self.store.path().to_path_buf();
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
                         completion_tokens = ?5, cost_usd = ?6, cached_tokens = ?7 WHERE idx = ?1",
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
                            let r = finish
                                .execute(params![
                                    idx,
                                    state as i64,
                                    error,
                                    prompt_tokens.map(count_to_sql),
                                    completion_tokens.map(count_to_sql),
                                    cost_usd.and_then(usd_to_sql),
                                    cached_tokens.map(count_to_sql),
                                ])
                                .and_then(|_| queue.execute(params![idx, line]));
                            lines.push(line);
                            finished.push(Durable { idx, state });
                            r.map(|_| ())
                        }
                        Command::Flush(done) => {
                            flushes.push(done);
                            Ok(())
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
    use crate::store::{PendingCursor, Recovery};
    use crate::tokens::TokenEstimate;

    fn spec(i: u64, priority: i64) -> Result<RequestSpec, std::convert::Infallible> {
        Ok(RequestSpec {
            custom_id: format!("r{i}"),
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: format!("{{\"n\":{i}}}"),
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

    #[test]
    fn paging_pending_work_never_sorts_the_whole_table() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = JobStore::open(&dir.path().join("s.db")).unwrap();
        store
            .import("fp", 0, (0..100).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
        store.conn_mut().execute_batch("ANALYZE").unwrap();
        for sql in [
            "SELECT idx FROM requests INDEXED BY requests_pending WHERE state = 0 ORDER BY priority DESC, idx LIMIT 5",
            "SELECT idx FROM requests INDEXED BY requests_pending WHERE state = 0
             AND (priority < 0 OR (priority = 0 AND idx > 5)) ORDER BY priority DESC, idx LIMIT 5",
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
            assert!(plan.contains("requests_pending") && !plan.contains("TEMP B-TREE"), "{plan}");
        }
        // And the store's own query is the one checked above.
        let src = include_str!("job_store.rs");
        assert_eq!(
            src.matches("FROM requests INDEXED BY requests_pending")
                .count(),
            2
        );
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
        let db = dir.path().join("s.db");
        let out = dir.path().join("out.jsonl");
        let mut store = JobStore::open(&db).unwrap();
        store
            .import("fp", 0, (0..4).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
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

    #[test]
    fn committed_but_unwritten_lines_are_appended_at_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let out = dir.path().join("out.jsonl");
        let mut store = JobStore::open(&db).unwrap();
        store
            .import("fp", 0, (0..2).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
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
        let db = dir.path().join("s.db");
        let out = dir.path().join("out.jsonl");
        let mut store = JobStore::open(&db).unwrap();
        store
            .import("fp", 0, (0..1).map(|i| spec(i, 0)))
            .unwrap()
            .unwrap();
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
}
