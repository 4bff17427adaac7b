//! Start-up: validate and import the input, or resume a recorded run.

use std::path::{Path, PathBuf};

use super::{EngineError, RunConfig, Via};
use crate::input::{RequestSpec, Source};
use crate::store::{BatchRow, Counts, JobLock, JobStore, Recovery, StoreError};

/// The state after start-up, ready for the writer.
pub(crate) struct Prepared {
    pub store: JobStore,
    pub counts: Counts,
    pub recovery: Recovery,
    /// The job's id for batch metadata (batch runs only).
    pub job_id: Option<String>,
    /// The job's lock, held until the run's `Prepared` is dropped (at the end
    /// of the run, after the writer closed and the summary was read).
    pub _lock: JobLock,
}

fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_state(state: &Path) -> Result<(), StoreError> {
    remove_if_exists(state)?;
    remove_if_exists(&sidecar(state, "-wal"))?;
    remove_if_exists(&sidecar(state, "-shm"))
}

/// Opens the input and the state. A new run validates the whole input into
/// the store in one transaction before anything is sent: a bad line leaves no
/// state behind. A recorded run is resumed only if the input is unchanged.
/// The job's lock is taken first, so a second run of it (even `--restart`)
/// changes nothing.
pub(crate) fn prepare(cfg: &RunConfig) -> Result<Prepared, EngineError> {
    let source = Source::open(&cfg.input, &cfg.source)?;
    if let Some(dir) = cfg.state.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    let lock = JobLock::acquire(&cfg.state, chrono::Utc::now())?;
    if cfg.restart && cfg.state.exists() && !cfg.fresh_provider {
        refuse_restart_over_running_batches(cfg)?;
    }
    if cfg.restart {
        remove_state(&cfg.state)?;
        remove_if_exists(&cfg.output)?;
    }
    let existed = cfg.state.exists();
    // Bodies of Batch lines are read from the input when sent (the state
    // keeps where they are), from the path each run records: a path that is
    // not UTF-8 cannot be recorded as text, so then they are copied.
    let input_path = std::fs::canonicalize(&cfg.input).unwrap_or_else(|_| cfg.input.clone());
    let copied = input_path.to_str().is_none();
    let mut store = JobStore::open(&cfg.state)?;
    let fingerprint = source.fingerprint()?;
    if store.is_imported()? {
        let recorded = store.meta("fingerprint")?;
        if recorded.as_deref() != Some(fingerprint.as_str()) {
            // Lines appended to a JSONL input join the job (validated whole
            // before anything is sent, like the first import); any other
            // change is refused.
            let old_len = store.input_len()?;
            let grown = match source.fingerprint_prefix(old_len)? {
                Some((prefix, lines)) if recorded.as_deref() == Some(prefix.as_str()) => {
                    Some(lines)
                }
                _ => None,
            };
            let Some(lines_before) = grown else {
                return Err(EngineError::InputChanged {
                    input: cfg.input.clone(),
                    state: cfg.state.clone(),
                });
            };
            let known = store.custom_ids()?;
            let appended = source.requests_after(old_len, lines_before, known)?;
            store.append(&fingerprint, source.len()?, appended.map(copy_if(copied)))??;
        }
    } else {
        let output_has_data = std::fs::metadata(&cfg.output)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if output_has_data {
            drop(store);
            if !existed {
                remove_state(&cfg.state)?;
            }
            return Err(EngineError::OutputExists {
                output: cfg.output.clone(),
                state: cfg.state.clone(),
            });
        }
        let requests = source.requests()?.map(copy_if(copied));
        let imported = store.import(&fingerprint, source.len()?, requests)?;
        if let Err(e) = imported {
            drop(store);
            if !existed {
                remove_state(&cfg.state)?;
            }
            return Err(e.into());
        }
    }
    // This run's path to the input, now that its fingerprint says it is
    // the job's (a path that is not text is not recorded: see above).
    if let Some(path) = input_path.to_str() {
        store.set_meta("input_path", path)?;
    }
    let recovery = store.recover(&cfg.output)?;
    if cfg.fresh_provider {
        store.abandon_open_batches(
            "its provider (the built-in simulator of an earlier run) is gone",
            chrono::Utc::now().timestamp_millis(),
        )?;
    }
    let job_id = match &cfg.via {
        Via::Live => {
            check_live(&mut store, cfg)?;
            None
        }
        Via::Batch(_) => {
            check_batch(&store, cfg)?;
            Some(store.job_id(new_job_id)?)
        }
    };
    let counts = store.counts()?;
    Ok(Prepared {
        store,
        counts,
        recovery,
        job_id,
        _lock: lock,
    })
}

/// `--restart` would forget batches still running at the provider, which
/// would go on (and be billed) with nobody to collect them: refused until
/// they are cancelled or over.
fn refuse_restart_over_running_batches(cfg: &RunConfig) -> Result<(), EngineError> {
    let store = JobStore::open(&cfg.state)?;
    let running = store
        .batches()?
        .into_iter()
        .filter(|b| b.state.is_open() && b.maybe_at_provider())
        .filter(|b| {
            !matches!(
                b.status.as_deref(),
                Some("cancelling" | "canceling" | "cancelled" | "canceled")
            )
        })
        .count();
    if running > 0 {
        return Err(EngineError::Config(format!(
            "--restart would forget {running} batch{} of the job still running at the provider \
             (and billed): cancel {} first with `pacer cancel {}`, or let the same command \
             without --restart collect {}",
            if running == 1 { "" } else { "es" },
            if running == 1 { "it" } else { "them" },
            cfg.state.display(),
            if running == 1 { "it" } else { "them" },
        )));
    }
    Ok(())
}

/// A live run of a job that went through batches: batches never sent are
/// dropped (their requests go live), but one the provider may hold must be
/// collected first, or its requests would be paid for twice.
fn check_live(store: &mut JobStore, cfg: &RunConfig) -> Result<(), EngineError> {
    store.drop_unsent_batches()?;
    let at_provider = store
        .batches()?
        .into_iter()
        .filter(|b| b.state.is_open() && b.maybe_at_provider())
        .count();
    if at_provider > 0 {
        return Err(EngineError::Config(format!(
            "{at_provider} batch{} of the job in {} {} at the provider (sent with --via batch): rerun with \
             --via batch to collect {}, or cancel {} with `pacer cancel` and rerun with --via batch, \
             which writes what finished and sends the rest",
            if at_provider == 1 { "" } else { "es" },
            cfg.state.display(),
            if at_provider == 1 { "is still" } else { "are still" },
            if at_provider == 1 { "it" } else { "them" },
            if at_provider == 1 { "it" } else { "them" },
        )));
    }
    Ok(())
}

/// Every pending request must have a batch API to go to.
fn check_batch(store: &JobStore, cfg: &RunConfig) -> Result<(), EngineError> {
    if cfg.transport.stream {
        return Err(EngineError::Config(
            "--stream applies to live runs only: batch APIs do not stream".into(),
        ));
    }
    for (url, _) in store.pending_groups()? {
        if super::batch::route(&url).is_none() {
            return Err(EngineError::Config(format!(
                "--via batch: requests to {url} have no batch API (OpenAI's takes /v1/chat/completions, \
                 /v1/completions, /v1/embeddings and /v1/responses; Anthropic's /v1/messages); \
                 run them with --via live"
            )));
        }
    }
    Ok(())
}

/// A job's id for batch metadata: unique enough that two jobs never share it.
fn new_job_id() -> String {
    let mut h = blake3::Hasher::new();
    h.update(&rand::random::<[u8; 16]>());
    h.update(&std::process::id().to_le_bytes());
    h.update(
        &chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or(0)
            .to_le_bytes(),
    );
    format!("pj_{}", &h.finalize().to_hex()[..20])
}

/// What `pacer status` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub state: PathBuf,
    #[serde(flatten)]
    pub counts: Counts,
    /// The job's provider batches (`--via batch`), oldest first.
    pub batches: Vec<BatchRow>,
}

/// A run's progress, read from its state file (read-only; safe while it runs).
pub fn status(state: &Path) -> Result<StatusReport, EngineError> {
    if !state.exists() {
        return Err(EngineError::Config(format!(
            "{}: no such state file",
            state.display()
        )));
    }
    // Read-only: a status taken while a run creates or migrates its state
    // must neither migrate it too nor hold a write lock on it.
    let store = JobStore::open_read_only(state)?;
    Ok(StatusReport {
        state: state.to_path_buf(),
        counts: store.counts()?,
        batches: store.batches()?,
    })
}

/// Drops a body's place in the input when `copy` (the state then keeps a
/// copy of the body).
fn copy_if<E>(copy: bool) -> impl Fn(Result<RequestSpec, E>) -> Result<RequestSpec, E> {
    move |spec| {
        spec.map(|mut s| {
            if copy {
                s.body_at = None;
            }
            s
        })
    }
}
