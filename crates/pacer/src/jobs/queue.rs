use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::job::SharedJob;
use super::JobError;
use crate::store::{Command, More, RequestState, StoreError, Taken, WorkSource};

/// Requests a worker takes at a time: work at hand is work no other machine
/// can do, so a worker holds little more than it can send soon.
const TAKE: usize = 16;

/// The requests this worker holds (taken, not finished): index → stream
/// entry. The lease task renews them; the sink acknowledges them.
#[derive(Debug, Default)]
pub struct Held {
    map: Mutex<HashMap<i64, String>>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, idx: i64, entry: String) {
        self.lock().insert(idx, entry);
    }

    pub(crate) fn remove(&self, idx: i64) -> Option<String> {
        self.lock().remove(&idx)
    }

    pub(crate) fn entries(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    pub(crate) fn drain(&self) -> Vec<(i64, String)> {
        self.lock().drain().collect()
    }

    fn forget_entries(&self, lost: &[String]) {
        if lost.is_empty() {
            return;
        }
        self.lock().retain(|_, e| !lost.contains(e));
    }
}

/// A shared job as the dispatcher's [`WorkSource`]: takes requests from the
/// job's stream (expired leases first), holds them under lease.
pub struct JobQueue {
    job: Arc<SharedJob>,
    held: Arc<Held>,
    /// Requests handed out too often are finished as failed through the
    /// same channel as every other result.
    results: mpsc::UnboundedSender<Command>,
    warned: bool,
}

impl JobQueue {
    pub fn new(
        job: Arc<SharedJob>,
        held: Arc<Held>,
        results: mpsc::UnboundedSender<Command>,
    ) -> JobQueue {
        JobQueue {
            job,
            held,
            results,
            warned: false,
        }
    }
}

impl WorkSource for JobQueue {
    async fn take(&mut self, max: usize) -> Result<Taken, StoreError> {
        let count = max.clamp(1, TAKE);
        let reply = match self.job.take(count).await {
            Ok(r) => {
                if self.warned {
                    tracing::warn!("Redis is back: taking the shared job's work again");
                    self.warned = false;
                }
                r
            }
            Err(e @ JobError::Corrupt { .. }) => {
                // Not Redis away: the job holds what pacer never wrote.
                return Ok(Taken {
                    rows: Vec::new(),
                    more: More::Stopped(e.to_string()),
                });
            }
            Err(e) => {
                // Nothing is lost: what this worker holds it keeps working
                // on, and the rest waits in Redis.
                if !self.warned {
                    tracing::warn!("taking work from the shared job failed ({e}); trying again");
                    self.warned = true;
                }
                return Ok(Taken {
                    rows: Vec::new(),
                    more: More::Later,
                });
            }
        };
        if reply.total == -2 {
            return Ok(Taken {
                rows: Vec::new(),
                more: More::Stopped(format!(
                    "the shared job \"{}\" is no longer in Redis (a Redis restarted without persistence loses its jobs): \
                     rerun the same `pacer run` to load what its output lacks again",
                    self.job.name()
                )),
            });
        }
        if let Some(stop) = reply.stop {
            return Ok(Taken {
                rows: Vec::new(),
                more: More::Stopped(format!(
                    "another worker of the shared job stopped it: {stop}"
                )),
            });
        }
        let got = reply.entries.len();
        let mut rows = Vec::with_capacity(got);
        for taken in reply.entries {
            self.held.insert(taken.row.idx, taken.entry);
            match taken.exhausted {
                None => rows.push(taken.row),
                Some(last_error) => {
                    let message = format!(
                        "handed to workers {} times without an answer (their leases ran out); last error: {last_error}",
                        taken.row.attempts.saturating_add(1)
                    );
                    let line =
                        crate::engine::error_line(&taken.row.custom_id, "lease_expired", &message);
                    let _ = self.results.send(Command::Finish {
                        idx: taken.row.idx,
                        state: RequestState::Failed,
                        line,
                        error: Some(message),
                        prompt_tokens: None,
                        cached_tokens: None,
                        completion_tokens: None,
                        cost_usd: None,
                    });
                }
            }
        }
        let more = if reply.total >= 0 && reply.finished >= reply.total as u64 {
            More::JobDone
        } else if got >= count {
            More::Yes
        } else {
            More::Later
        };
        Ok(Taken { rows, more })
    }

    fn low_water(&self) -> usize {
        TAKE / 2
    }
}

/// Renews the leases of everything this worker holds, three times a lease,
/// until aborted.
pub async fn renew_leases(job: Arc<SharedJob>, held: Arc<Held>) {
    let every = (job.lease() / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let entries = held.entries();
        match job.renew(&entries).await {
            Ok(lost) => {
                if !lost.is_empty() {
                    tracing::info!(
                        lost = lost.len(),
                        "requests this worker held were reclaimed by others (its leases ran out)"
                    );
                }
                held.forget_entries(&lost);
            }
            Err(e) => tracing::debug!("renewing leases failed ({e}); trying again"),
        }
    }
}
