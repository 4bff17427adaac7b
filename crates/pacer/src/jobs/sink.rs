use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::job::{Finished, SharedJob, StoredResult};
use super::queue::Held;
use super::JobError;
use crate::store::{Command, RequestState};

/// Most commands applied in one round of Redis calls.
const MAX_BATCH: usize = 256;
/// After the run, how long results not yet recorded (Redis away) are
/// tried before they are given up (their requests are then reclaimed
/// after their lease and sent again: nothing is lost, some is paid twice).
const CLOSE_PATIENCE: Duration = Duration::from_secs(30);

/// What the sink tells its run.
pub struct SinkHooks {
    /// Called once for each result this worker recorded first.
    pub on_new: Box<dyn Fn(RequestState) + Send + Sync>,
    /// Notified when the whole job is finished.
    pub all_done: Arc<Notify>,
    /// The local store's writer, if this process has a local state (a
    /// `run`): the history (`pacer report`) goes there, and each result this
    /// process recorded first, so its output grows as it works (a Redis
    /// that loses the job does not take those with it).
    pub history: Option<mpsc::UnboundedSender<Command>>,
}

/// The shared job's side of the engine's [`Command`] channel: the one task
/// that records this worker's results in Redis, a batch a round trip.
/// Returns when the channel closes, after handing back to the job whatever
/// this worker still holds.
pub async fn run_sink(
    job: Arc<SharedJob>,
    held: Arc<Held>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    hooks: SinkHooks,
) -> Result<(), JobError> {
    let mut pending: Vec<Finished> = Vec::new();
    let mut errors: Vec<(i64, String)> = Vec::new();
    let mut release: Vec<(i64, String)> = Vec::new();
    let mut flushes = Vec::new();
    let mut open = true;
    let mut closing_since: Option<tokio::time::Instant> = None;
    let mut warned = false;
    loop {
        if open {
            let idle = pending.is_empty() && errors.is_empty() && release.is_empty();
            // `None`: time to try a failed round again (Redis away).
            let got: Option<Option<Command>> = if idle {
                Some(rx.recv().await)
            } else {
                tokio::select! {
                    cmd = rx.recv() => Some(cmd),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => None,
                }
            };
            let mut batch = Vec::new();
            match got {
                Some(Some(first)) => batch.push(first),
                Some(None) => {
                    open = false;
                    closing_since = Some(tokio::time::Instant::now());
                    continue;
                }
                None => {}
            }
            while !batch.is_empty() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            for cmd in batch {
                match cmd {
                    Command::Finish {
                        idx,
                        state,
                        line,
                        error,
                        prompt_tokens,
                        cached_tokens,
                        completion_tokens,
                        cost_usd,
                    } => pending.push(Finished {
                        idx,
                        entry: held.remove(idx).unwrap_or_default(),
                        result: StoredResult {
                            s: if state == RequestState::Failed { 3 } else { 2 },
                            l: line,
                            e: error,
                            p: prompt_tokens,
                            k: cached_tokens,
                            c: completion_tokens,
                            u: cost_usd,
                        },
                    }),
                    Command::Retry { idx, error } => errors.push((idx, error)),
                    Command::Requeue { idx } => {
                        if let Some(entry) = held.remove(idx) {
                            release.push((idx, entry));
                        }
                    }
                    Command::Flush(tx) => flushes.push(tx),
                    cmd @ (Command::Attempt(_)
                    | Command::Pace(_)
                    | Command::RunStarted(_)
                    | Command::RunEnded { .. }) => {
                        if let Some(h) = &hooks.history {
                            let _ = h.send(cmd);
                        }
                    }
                    Command::Sent { .. } | Command::Batch(_) => {}
                }
            }
        } else {
            // Closed: whatever is still held goes back to the job.
            release.extend(held.drain());
        }
        let round = record(&job, &mut pending, &mut errors, &mut release, &hooks).await;
        match round {
            Ok(()) => {
                if warned {
                    tracing::warn!("Redis is back: results recorded");
                    warned = false;
                }
                for tx in flushes.drain(..) {
                    let _ = tx.send(());
                }
                if !open {
                    return Ok(());
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "recording results in the shared job failed ({e}); keeping them and trying again"
                    );
                    warned = true;
                }
                if let Some(since) = closing_since {
                    if since.elapsed() > CLOSE_PATIENCE {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// One round: results, errors, then releases. What succeeds is cleared.
async fn record(
    job: &SharedJob,
    pending: &mut Vec<Finished>,
    errors: &mut Vec<(i64, String)>,
    release: &mut Vec<(i64, String)>,
    hooks: &SinkHooks,
) -> Result<(), JobError> {
    if !pending.is_empty() {
        let (new, finished, total) = job.finish(pending).await?;
        for (f, new) in pending.drain(..).zip(new) {
            if !new {
                continue;
            }
            (hooks.on_new)(f.result.state());
            if let Some(local) = &hooks.history {
                let _ = local.send(f.result.into_finish(f.idx));
            }
        }
        pending.clear();
        if total >= 0 && finished >= total as u64 {
            hooks.all_done.notify_one();
        }
    }
    if !errors.is_empty() {
        job.record_errors(errors).await?;
        errors.clear();
    }
    if !release.is_empty() {
        job.release(release).await?;
        release.clear();
    }
    Ok(())
}
