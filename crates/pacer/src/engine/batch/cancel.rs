//! `pacer cancel`: asks the provider to cancel a job's open batches.
//!
//! It takes the job's lock, so it never races a run (a run would collect
//! the cancelled batches and send their unfinished requests again at
//! once). What the cancelled batches finished is still paid for and kept:
//! the next `pacer run --via batch` writes it and sends the rest in new
//! batches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::api::{Api, CallError, Phase, Remote};
use super::recover;
use crate::engine::EngineError;
use crate::store::{BatchCommand, BatchRow, BatchState, JobLock, JobStore};
use crate::transport::{Transport, TransportConfig};

/// A batch the provider was asked to cancel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CancelledBatch {
    /// pacer's id for it.
    pub batch: i64,
    /// The provider's id.
    pub id: String,
    /// The status the provider answered (`cancelling`, `canceling`, or an
    /// end it had reached already).
    pub status: String,
}

/// A batch that could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CancelFailure {
    pub batch: i64,
    pub id: Option<String>,
    pub reason: String,
}

/// What `pacer cancel` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CancelReport {
    pub state: PathBuf,
    pub cancelled: Vec<CancelledBatch>,
    pub failed: Vec<CancelFailure>,
}

fn describe(e: &CallError) -> String {
    match e {
        CallError::Transport(e) => e.to_string(),
        CallError::Http(a) => {
            let text = String::from_utf8_lossy(&a.body);
            let text: String = text.chars().take(200).collect();
            format!("HTTP {}: {text}", a.status)
        }
        CallError::Unreadable(why) | CallError::Local(why) => why.clone(),
    }
}

/// Worth another try: no answer, 429 or 5xx.
fn transient(e: &CallError) -> bool {
    match e {
        CallError::Transport(_) => true,
        CallError::Http(a) => a.status == 429 || a.status >= 500,
        _ => false,
    }
}

/// Makes a call up to three times while it fails transiently.
async fn with_retries<T, F, Fut>(f: F) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut wait = Duration::from_secs(1);
    let mut tries = 0;
    loop {
        tries += 1;
        match f().await {
            Err(e) if tries < 3 && transient(&e) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            r => return r,
        }
    }
}

/// Cancels the job's batches that are running at the provider. A batch
/// whose create call went out but whose id was not recorded is looked for
/// first.
pub async fn cancel(state: &Path, transport: TransportConfig) -> Result<CancelReport, EngineError> {
    if !state.exists() {
        return Err(EngineError::Config(format!(
            "{}: no such state file",
            state.display()
        )));
    }
    let _lock = JobLock::acquire(state, chrono::Utc::now())?;
    let mut store = JobStore::open(state)?;
    let api = Api {
        transport: Transport::new(transport)?,
    };
    let job = store.meta("job_id")?.unwrap_or_default();
    let rows: Vec<BatchRow> = store
        .batches()?
        .into_iter()
        .filter(|r| {
            matches!(
                r.state,
                BatchState::Planned | BatchState::Uploaded | BatchState::Submitted
            )
        })
        .filter(|r| r.maybe_at_provider())
        .collect();
    let mut report = CancelReport {
        state: state.to_path_buf(),
        cancelled: Vec::new(),
        failed: Vec::new(),
    };
    for row in rows {
        let batch_id = match &row.batch_id {
            Some(id) => id.clone(),
            None => match find(&api, &store, &row, &job).await {
                Ok(Some(remote)) => {
                    store.apply_batch(BatchCommand::Submitted {
                        id: row.id,
                        batch_id: remote.id.clone(),
                        status: remote.status.clone(),
                        at: chrono::Utc::now().timestamp_millis(),
                    })?;
                    remote.id
                }
                // The create never reached the provider: nothing to cancel.
                Ok(None) => continue,
                Err(e) => {
                    report.failed.push(CancelFailure {
                        batch: row.id,
                        id: None,
                        reason: format!("it could not be looked for: {}", describe(&e)),
                    });
                    continue;
                }
            },
        };
        let outcome = match with_retries(|| api.cancel(row.api, &batch_id)).await {
            Ok(remote) => Ok(remote),
            // It may have ended meanwhile: then there is nothing to cancel.
            Err(e) => match with_retries(|| api.get(row.api, &batch_id)).await {
                Ok(remote) if remote.phase != Phase::Running => Ok(remote),
                _ => Err(e),
            },
        };
        match outcome {
            Ok(remote) => {
                store.apply_batch(BatchCommand::Status {
                    id: row.id,
                    status: remote.status.clone(),
                    at: chrono::Utc::now().timestamp_millis(),
                })?;
                report.cancelled.push(CancelledBatch {
                    batch: row.id,
                    id: batch_id,
                    status: remote.status,
                });
            }
            Err(e) => report.failed.push(CancelFailure {
                batch: row.id,
                id: Some(batch_id),
                reason: describe(&e),
            }),
        }
    }
    Ok(report)
}

/// The batch a create call for `row` made, if any.
async fn find(
    api: &Api,
    store: &JobStore,
    row: &BatchRow,
    job: &str,
) -> Result<Option<Remote>, CallError> {
    let taken = store
        .batches()
        .map_err(|e| CallError::Local(e.to_string()))?
        .into_iter()
        .filter_map(|b| b.batch_id)
        .collect();
    let window = api.transport.config().timeout;
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let a = after.clone();
        let page = with_retries(|| api.list(row.api, a.as_deref())).await?;
        pages += 1;
        let found = match row.api {
            crate::store::BatchApi::OpenAi => {
                recover::adopt_openai(&page.batches, job, row.id, row.file_id.as_deref())
            }
            crate::store::BatchApi::Anthropic => row.creating_at.and_then(|marker| {
                recover::adopt_anthropic(&page.batches, marker, window, row.lines, &taken)
            }),
        };
        if let Some(r) = found {
            return Ok(Some(r.clone()));
        }
        if !recover::keep_listing(&page, pages, row.creating_at) {
            return Ok(None);
        }
        after = page.next_after;
    }
}
