//! Where the dispatcher takes its work from: the seam between the engine and
//! the store it runs on.
//!
//! The engine sees a job through two narrow doors: a [`WorkSource`] it takes
//! pending requests from, and a channel of [`Command`](super::Command)s it
//! sends every change to (sent, retried, finished...). The SQLite store
//! serves both on one machine ([`SqlitePending`] and the [`Writer`](super::Writer));
//! a shared job in Redis serves both for many machines
//! ([`crate::jobs`]). The dispatcher, the attempts, pacing and retries do
//! not know which they have.

use std::future::Future;

use super::{JobStore, PendingCursor, PendingRow, StoreError};

/// What a [`WorkSource`] had.
#[derive(Debug, Default)]
pub struct Taken {
    /// Pending requests in scheduler order (possibly none).
    pub rows: Vec<PendingRow>,
    /// Whether more may come from the source later.
    pub more: More,
}

/// Whether a source may have more work after a take.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum More {
    /// Take again when the dispatcher runs low.
    #[default]
    Yes,
    /// Nothing now, but other machines may hand work back (a lease
    /// expiring): ask again in a moment.
    Later,
    /// Nothing will come from the source again in this run (retries come
    /// back through the dispatcher's own timer queue).
    Never,
    /// The whole job is finished, by this process or others.
    JobDone,
    /// Another process stopped the job, for the reason given (one sentence).
    Stopped(String),
}

/// A source of pending work, in scheduler order.
pub trait WorkSource: Send + 'static {
    /// Takes up to `max` pending requests. Taking hands them to this
    /// process: a source shared by many processes leases them.
    fn take(&mut self, max: usize) -> impl Future<Output = Result<Taken, StoreError>> + Send;

    /// How many requests the dispatcher keeps at hand before taking more:
    /// large for a local store (pages amortize the query), small for a
    /// shared one (work at hand is work no other machine can do).
    fn low_water(&self) -> usize;
}

/// Pending work paged out of the job's SQLite state (keyset pagination by
/// the partial index on pending work, never a scan of the job).
pub struct SqlitePending {
    reader: Option<JobStore>,
    cursor: Option<PendingCursor>,
    exhausted: bool,
    page: usize,
}

impl SqlitePending {
    /// Pages of `page` rows from `reader`, a read connection of the state.
    pub fn new(reader: JobStore, page: usize) -> SqlitePending {
        SqlitePending {
            reader: Some(reader),
            cursor: None,
            exhausted: false,
            page: page.max(1),
        }
    }
}

impl WorkSource for SqlitePending {
    async fn take(&mut self, max: usize) -> Result<Taken, StoreError> {
        if self.exhausted {
            return Ok(Taken {
                rows: Vec::new(),
                more: More::Never,
            });
        }
        let limit = max.max(1).min(self.page);
        let r = self
            .reader
            .take()
            .expect("the reader is put back after each page");
        let after = self.cursor;
        // SQLite blocks: off the async workers.
        let (r, rows) = tokio::task::spawn_blocking(move || {
            let rows = r.fetch_pending(after, limit);
            (r, rows)
        })
        .await
        .map_err(|e| StoreError::Io {
            path: std::path::PathBuf::from("pending work"),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.reader = Some(r);
        let rows = rows?;
        self.exhausted = rows.len() < limit;
        if let Some(last) = rows.last() {
            self.cursor = Some(PendingCursor {
                priority: last.priority,
                idx: last.idx,
            });
        }
        Ok(Taken {
            rows,
            more: if self.exhausted {
                More::Never
            } else {
                More::Yes
            },
        })
    }

    fn low_water(&self) -> usize {
        self.page / 2
    }
}
