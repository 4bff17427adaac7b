//! The live route on a shared job (`--redis URL --job NAME`, `pacer
//! worker`): the same [`drive`] as a local run, with work taken from Redis
//! and results recorded there. See [`crate::jobs`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::attempt::Emitter;
use super::dispatch::{drive, final_report, Start};
use super::prepare::Prepared;
use super::{EngineError, RunConfig, RunReport};
use crate::cost::Budget;
use crate::jobs::{self, Held, JobFacts, JobName, JobQueue, SharedJob, SinkHooks};
use crate::report::Event;
use crate::retry::StopReason;
use crate::store::{Command, JobStore, PendingCursor, Recovery, RequestState, Writer};

/// Results read back from Redis a round trip when writing the output.
const OUTPUT_CHUNK: usize = 1000;

/// A shared job to run on (`--redis`, `--job`, `--lease`).
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// `redis://host:port[/db]`.
    pub redis: String,
    /// The job's name; a run without one names it after its input.
    pub name: Option<JobName>,
    /// How long a request taken by a worker that stops renewing it stays
    /// its own (`--lease`).
    pub lease: Duration,
}

/// Stops that are about the provider or the account, not one process:
/// every worker of the job stops with them.
fn job_wide(reason: &StopReason) -> bool {
    matches!(
        reason,
        StopReason::Unauthorized { .. }
            | StopReason::Forbidden
            | StopReason::InsufficientQuota
            | StopReason::BudgetReached { .. }
            | StopReason::Redirected { .. }
            | StopReason::WaitTooLong { .. }
    )
}

/// Connects to the job; `name` defaults to the input's.
async fn connect(cfg: &JobConfig, name: JobName) -> Result<Arc<SharedJob>, EngineError> {
    let job = SharedJob::connect(&cfg.redis, name, cfg.lease).await?;
    Ok(Arc::new(job))
}

/// What one process does on a job, with or without a local state.
struct Parts {
    job: Arc<SharedJob>,
    facts: JobFacts,
    history: Option<mpsc::UnboundedSender<Command>>,
}

/// Runs this process as one worker of the job until it is finished or
/// stopped. Returns why it stopped, if it did.
async fn work_on(
    cfg: &RunConfig,
    parts: Parts,
    mut start: Start,
    cancel: CancellationToken,
) -> Result<Option<StopReason>, EngineError> {
    let Parts {
        job,
        facts,
        history,
    } = parts;
    let emitter = start.emitter.clone();
    let all_done = Arc::new(Notify::new());
    if facts.done() {
        all_done.notify_one();
    }
    let held = Arc::new(Held::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = {
        let events = emitter.clone();
        tokio::spawn(jobs::run_sink(
            job.clone(),
            held.clone(),
            rx,
            SinkHooks {
                on_new: Box::new(move |state| {
                    events.emit(Event::Finished {
                        ok: state == RequestState::Done,
                    })
                }),
                all_done: all_done.clone(),
                history,
            },
        ))
    };
    let leases = tokio::spawn(jobs::renew_leases(job.clone(), held.clone()));
    let publisher = job.clone();
    start.on_stop = Some(Arc::new(move |reason: &StopReason| {
        if job_wide(reason) {
            let job = publisher.clone();
            let sentence = reason.to_string();
            tokio::spawn(async move {
                if let Err(e) = job.stop_all(&sentence).await {
                    tracing::warn!("could not tell the job's other workers to stop: {e}");
                }
            });
        }
    }));
    let queue = JobQueue::new(job.clone(), held, tx.clone());
    let (stop, dispatched) = drive(cfg, start, tx, queue, all_done, cancel).await;
    leases.abort();
    let recorded = sink.await;
    dispatched?;
    match recorded {
        Ok(r) => r?,
        Err(e) => {
            return Err(EngineError::Config(format!(
                "recording results in the shared job failed: {e}"
            )))
        }
    }
    Ok(stop)
}

/// `pacer run INPUT --redis URL [--job NAME]`: loads the job (or joins it),
/// works on it with every other worker, then writes the whole job's
/// results to this run's output, in input order, through its local state.
pub(crate) async fn run_shared(
    cfg: &RunConfig,
    job_cfg: &JobConfig,
    prepared: Prepared,
    mut start: Start,
    recovery: Recovery,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    let fingerprint = prepared.store.meta("fingerprint")?.unwrap_or_default();
    let name = job_cfg
        .name
        .clone()
        .unwrap_or_else(|| JobName::from_fingerprint(&fingerprint));
    let job = connect(job_cfg, name).await?;
    let loaded = job.load_or_join(&fingerprint, &cfg.state).await?;
    job.clear_stop().await?;
    let facts = job.facts().await?;
    tracing::info!(job = %job.name(), loaded, total = facts.total, finished = facts.finished, "shared job");
    eprintln!(
        "pacer: {} the shared job \"{}\" in Redis at {} ({} requests, {} finished); other machines join with `pacer worker --redis {} --job {}`",
        if loaded { "loaded" } else { "joined" },
        job.name(),
        job.url(),
        facts.total,
        facts.finished,
        job.url(),
        job.name(),
    );
    let emitter = start.emitter.clone();
    emitter.emit(Event::Started {
        total: facts.total,
        done: facts.finished.saturating_sub(facts.failed),
        failed: facts.failed,
        resent: 0,
        requeued: recovery.requeued,
        spent_usd: facts.cost_usd,
    });
    if let Some(cap) = cfg.max_cost {
        start.budget = Some(Mutex::new(Budget::with_spent(cap, facts.cost_usd)));
    }

    // The local state's writer: the history as the run goes, the job's
    // results at the end.
    let (durable_tx, mut durable_rx) = mpsc::unbounded_channel();
    let writer = Writer::start(prepared.store, &cfg.output, durable_tx)?;
    writer.send(super::dispatch::run_started(cfg))?;
    let drain = tokio::spawn(async move { while durable_rx.recv().await.is_some() {} });
    let parts = Parts {
        job: job.clone(),
        facts,
        history: Some(writer.sender()),
    };
    let worked = work_on(cfg, parts, start, cancel).await;
    let stop = match &worked {
        Ok(stop) => stop.clone(),
        Err(_) => None,
    };
    super::dispatch::end_run(&writer, stop.as_ref());
    // The results this run recorded itself are queued at the writer: made
    // durable first, so that reading what is still pending does not see
    // them (and write them twice).
    let written = match writer.flush().await {
        Ok(()) => write_output(&job, &cfg.state, &writer).await,
        Err(e) => Err(e.into()),
    };
    let closed = writer.close().await;
    let _ = drain.await;
    worked?;
    written?;
    closed?;
    final_report(cfg, &emitter, stop, recovery, 0)
}

/// Every result the job has for a request still pending in the local state
/// goes through the local writer: into the state and the output, durably.
async fn write_output(
    job: &SharedJob,
    state: &std::path::Path,
    writer: &Writer,
) -> Result<(), EngineError> {
    let reader = JobStore::open_read_only(state)?;
    let reader = Arc::new(Mutex::new(reader));
    let mut after: Option<PendingCursor> = None;
    loop {
        let r = reader.clone();
        let page = tokio::task::spawn_blocking(move || {
            r.lock()
                .unwrap_or_else(|e| e.into_inner())
                .fetch_pending(after, OUTPUT_CHUNK)
        })
        .await
        .map_err(|e| EngineError::Config(format!("reading the local state failed: {e}")))??;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(PendingCursor {
            priority: last.priority,
            idx: last.idx,
        });
        let idxs: Vec<i64> = page.iter().map(|r| r.idx).collect();
        let results = job.results(&idxs).await?;
        for (idx, result) in idxs.into_iter().zip(results) {
            let Some(r) = result else { continue };
            writer.send(r.into_finish(idx))?;
        }
        if page.len() < OUTPUT_CHUNK {
            return Ok(());
        }
    }
}

/// How a worker (`pacer worker`) ended: the job's facts when it stopped.
#[derive(Debug)]
pub struct WorkReport {
    pub summary: crate::report::Summary,
    pub stop: Option<StopReason>,
    pub job: JobFacts,
}

/// `pacer worker --redis URL --job NAME`: joins a job loaded elsewhere and
/// works on it until it is finished or stopped. It has no input and no
/// local state: results go to Redis, and the runs that joined write them.
pub async fn work(
    cfg: RunConfig,
    events: Option<mpsc::UnboundedSender<Event>>,
    cancel: CancellationToken,
) -> Result<WorkReport, EngineError> {
    let job_cfg = cfg
        .job
        .clone()
        .ok_or_else(|| EngineError::Config("a worker needs --redis and --job".into()))?;
    let name = job_cfg
        .name
        .clone()
        .ok_or_else(|| EngineError::Config("a worker needs --job NAME".into()))?;
    let job = connect(&job_cfg, name).await?;
    let facts = job.join().await?;
    job.clear_stop().await?;
    let transport = crate::transport::Transport::new(cfg.transport.clone())?;
    let emitter = Arc::new(Emitter::new(tokio::time::Instant::now(), events));
    emitter.emit(Event::Started {
        total: facts.total,
        done: facts.finished.saturating_sub(facts.failed),
        failed: facts.failed,
        resent: 0,
        requeued: 0,
        spent_usd: facts.cost_usd,
    });
    let start = Start {
        transport,
        emitter: emitter.clone(),
        budget: cfg
            .max_cost
            .map(|cap| Mutex::new(Budget::with_spent(cap, facts.cost_usd))),
        verified_limits: None,
        provider_down: false,
        reached: false,
        on_stop: None,
    };
    let parts = Parts {
        job: job.clone(),
        facts,
        history: None,
    };
    let stop = work_on(&cfg, parts, start, cancel).await?;
    let job_facts = job.facts().await?;
    let mut summary = emitter.summary();
    summary.total = job_facts.total;
    summary.succeeded = job_facts.finished.saturating_sub(job_facts.failed);
    summary.failed = job_facts.failed;
    summary.pending = job_facts.total.saturating_sub(job_facts.finished);
    summary.cost_usd = job_facts.cost_usd;
    summary.prompt_tokens = job_facts.prompt_tokens;
    summary.completion_tokens = job_facts.completion_tokens;
    Ok(WorkReport {
        summary,
        stop,
        job: job_facts,
    })
}

/// `pacer status --redis URL --job NAME`.
pub async fn job_status(redis: &str, name: JobName) -> Result<JobFacts, EngineError> {
    let job = SharedJob::connect(redis, name, Duration::from_secs(60)).await?;
    Ok(job.facts().await?)
}

/// `pacer export --redis URL --job NAME -o OUT`: every result the job has,
/// in input order, one line each. Returns how many were written.
pub async fn job_export(
    redis: &str,
    name: JobName,
    out: &mut (dyn std::io::Write + Send),
) -> Result<u64, EngineError> {
    let job = SharedJob::connect(redis, name, Duration::from_secs(60)).await?;
    let _ = job.facts().await?;
    let idxs = job.result_indexes().await?;
    let mut n = 0;
    for chunk in idxs.chunks(OUTPUT_CHUNK) {
        for r in job.results(chunk).await?.into_iter().flatten() {
            out.write_all(r.l.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| EngineError::Config(format!("writing the export failed: {e}")))?;
            n += 1;
        }
    }
    Ok(n)
}
