//! The dispatcher: one task that decides what goes next.

use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::attempt::{attempt, unix_ms, Ctx, Emitter, Stop};
use super::batch::{Api as BatchApiClient, BatchOptions, Driver, DriverParts, Via};
use super::item::{Item, Ready};
use super::pace::{InFlight, Pacer};
use super::prepare::prepare;
use super::verify::{verify, Verdict as VerifyVerdict};
use super::{EngineError, RunConfig};
use crate::cost::{Budget, CostMeter, PriceTable};
use crate::endpoint::Endpoint;
use crate::provider::RateLimitSnapshot;
use crate::report::{Event, Summary};
use crate::retry::StopReason;
use crate::store::{
    Command, Durable, JobStore, More, PaceRecord, Recovery, RequestState, RunRecord, SqlitePending,
    WorkSource, Writer,
};
use crate::transport::Transport;

/// Pending requests read from the store at a time.
const PAGE: usize = 512;

/// How a run ended.
#[derive(Debug)]
pub struct RunReport {
    pub summary: Summary,
    /// Why the run stopped early (it can be resumed), if it did.
    pub stop: Option<StopReason>,
    /// What start-up recovery found.
    pub recovery: Recovery,
    /// `--via batch`: batches left running at the provider when the run
    /// stopped (the next run collects them).
    pub open_batches: u64,
}

/// Runs (or resumes) the job `cfg` describes until every request is finished
/// for good or the run stops. Events go to `events` as they happen;
/// cancelling `cancel` stops the run the way Ctrl-C does.
pub async fn run(
    cfg: RunConfig,
    events: Option<mpsc::UnboundedSender<Event>>,
    cancel: CancellationToken,
) -> Result<RunReport, EngineError> {
    let start = Instant::now();
    let transport = Transport::new(cfg.transport.clone())?;
    let prep_cfg = cfg.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&prep_cfg))
        .await
        .map_err(|e| EngineError::Config(format!("start-up failed: {e}")))??;
    let counts = prepared.counts.clone();
    let recovery = prepared.recovery.clone();

    let emitter = Arc::new(Emitter::new(start, events));
    emitter.emit(Event::Started {
        total: counts.total,
        done: counts.done,
        failed: counts.failed,
        resent: counts.resent,
        requeued: recovery.requeued,
        spent_usd: counts.spent_usd,
    });

    let budget = match cfg.max_cost {
        Some(cap) => {
            check_prices_for_budget(&prepared.store, &cfg.prices)?;
            Some(Mutex::new(Budget::with_spent(cap, counts.spent_usd)))
        }
        None => None,
    };
    if let Some(b) = &budget {
        if b.lock().expect("budget lock").remaining() <= 0.0 && counts.pending > 0 {
            let reason = StopReason::BudgetReached {
                cap_usd: cfg.max_cost.unwrap_or(0.0),
            };
            emitter.emit(Event::Stopping {
                reason: reason.to_string(),
            });
            return Ok(RunReport {
                summary: emitter.summary(),
                stop: Some(reason),
                recovery,
                open_batches: 0,
            });
        }
    }

    let mut verified_limits = None;
    let mut provider_down = false;
    let mut reached = false;
    if cfg.verify && counts.pending > 0 {
        let anthropic = prepared
            .store
            .first_pending_url()?
            .is_some_and(|u| Endpoint::from_path(&u).is_anthropic());
        let models: Vec<String> = prepared.store.models()?.into_iter().flatten().collect();
        match verify(&transport, anthropic, &models).await {
            VerifyVerdict::Refused(reason) | VerifyVerdict::Unreachable(reason) => {
                emitter.emit(Event::Stopping {
                    reason: reason.to_string(),
                });
                drop(prepared);
                return Ok(RunReport {
                    summary: emitter.summary(),
                    stop: Some(reason),
                    recovery,
                    open_batches: 0,
                });
            }
            VerifyVerdict::KeyAccepted { models, limits } => {
                for (model, listed) in models {
                    if listed == Some(false) {
                        tracing::warn!("the provider does not list model \"{model}\"; its requests may fail with 404");
                    }
                }
                verified_limits = Some(limits);
                reached = true;
            }
            VerifyVerdict::ProviderDown(why) => {
                tracing::warn!("the provider is failing ({why}): starting with one probe at a time until it answers");
                reached = true;
                provider_down = true;
            }
            VerifyVerdict::Inconclusive(why) => {
                tracing::info!("key check inconclusive ({why}); going on");
                reached = true;
            }
        }
    }

    let start = Start {
        transport,
        emitter: emitter.clone(),
        budget,
        verified_limits,
        provider_down,
        reached,
        on_stop: None,
    };
    if let (Some(job), Via::Live) = (&cfg.job, &cfg.via) {
        return super::shared_job::run_shared(&cfg, job, prepared, start, recovery, cancel).await;
    }
    let reader = JobStore::open(&cfg.state)?;
    let (durable_tx, durable_rx) = mpsc::unbounded_channel();
    let writer = Writer::start(prepared.store, &cfg.output, durable_tx)?;
    writer.send(run_started(&cfg))?;
    if let Via::Batch(options) = &cfg.via {
        let batches = Batches {
            options: options.clone(),
            transport: start.transport,
            reader,
            writer,
            durable: durable_rx,
            emitter: emitter.clone(),
            budget: start.budget.map(|b| b.into_inner().expect("budget lock")),
            remaining: counts.pending + counts.in_flight,
            reached: start.reached,
            job: prepared.job_id.clone().unwrap_or_default(),
        };
        let (stop, open_batches) = run_batches(&cfg, batches, cancel).await?;
        return final_report(&cfg, &emitter, stop, recovery, open_batches);
    }
    let remaining = counts.pending + counts.in_flight;
    let all_done = Arc::new(Notify::new());
    if remaining == 0 {
        all_done.notify_one();
    }
    let tracker = tokio::spawn(track_durable(
        durable_rx,
        remaining,
        emitter.clone(),
        all_done.clone(),
    ));
    let source = SqlitePending::new(reader, PAGE);
    let (stop, dispatched) = drive(&cfg, start, writer.sender(), source, all_done, cancel).await;
    end_run(&writer, stop.as_ref());
    let closed = writer.close().await;
    let _ = tracker.await;
    dispatched?;
    closed?;
    final_report(&cfg, &emitter, stop, recovery, 0)
}

/// A hook called once when a run stops.
pub(crate) type OnStop = Arc<dyn Fn(&StopReason) + Send + Sync>;

/// What a run found at start-up, handed to [`drive`].
pub(crate) struct Start {
    pub transport: Transport,
    pub emitter: Arc<Emitter>,
    pub budget: Option<Mutex<Budget>>,
    pub verified_limits: Option<RateLimitSnapshot>,
    pub provider_down: bool,
    pub reached: bool,
    /// Called once when the run stops (a shared job tells its other workers).
    pub on_stop: Option<OnStop>,
}

/// The live route, whatever the store: takes work from `source`, paces,
/// sends and retries it, and sends every change to `writer` (the SQLite
/// writer, or a shared job's sink), until the work is done (`all_done`) or
/// the run stops. Returns why it stopped, if it did.
pub(crate) async fn drive<S: WorkSource>(
    cfg: &RunConfig,
    start: Start,
    writer: mpsc::UnboundedSender<Command>,
    source: S,
    all_done: Arc<Notify>,
    cancel: CancellationToken,
) -> (Option<StopReason>, Result<(), EngineError>) {
    let (retry_tx, retry_rx) = mpsc::unbounded_channel();
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        transport: start.transport,
        pacer: Pacer::new(&cfg.limits).with_shared(cfg.shared.clone()),
        policy: cfg.retry,
        max_retry_time: cfg.max_retry_time,
        writer,
        retries: retry_tx,
        events: start.emitter,
        stop: Stop::default(),
        budget: start.budget,
        settled: Notify::new(),
        meter: Mutex::new(CostMeter::new(cfg.prices.clone())),
        reached: start.reached.into(),
    });
    if let Some(limits) = start.verified_limits.filter(|l| !l.is_empty()) {
        ctx.pacer.observe(Instant::now(), &limits);
    }
    if start.provider_down {
        ctx.pacer.trip_circuit(Instant::now());
    }
    ctx.emit_pace();
    let pace_log = tokio::spawn(record_pace(ctx.clone()));
    let timers = tokio::spawn(timer_queue(retry_rx, due_tx));
    let interrupt = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            if ctx.stop.trigger(StopReason::Interrupted) {
                ctx.events.emit(Event::Stopping {
                    reason: StopReason::Interrupted.to_string(),
                });
            }
        })
    };
    let on_stop = start.on_stop.map(|hook| {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.stop.cancelled().await;
            if let Some(reason) = ctx.stop.reason() {
                hook(reason);
            }
        })
    });

    let mut workers = JoinSet::new();
    let dispatched = dispatch(&ctx, source, due_rx, &all_done, &mut workers, &cfg.prices).await;

    // Wind down: in-flight requests get time to finish, then are abandoned
    // (still marked in flight, so the next run sends them again).
    let grace = match ctx.stop.reason() {
        Some(StopReason::Interrupted) => cfg.grace,
        Some(_) => cfg.transport.timeout,
        None => Duration::MAX,
    };
    let _ = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    interrupt.abort();
    timers.abort();
    pace_log.abort();
    let _ = pace_log.await;
    if let Some(mut on_stop) = on_stop {
        // Give a stop's hook its moment, then end it (it holds the context,
        // and with it the writer's channel open).
        let ended = ctx.stop.is_stopped()
            && tokio::time::timeout(Duration::from_millis(100), &mut on_stop)
                .await
                .is_ok();
        if !ended {
            on_stop.abort();
            let _ = on_stop.await;
        }
    }
    let stop = ctx.stop.reason().cloned();
    (stop, dispatched)
}

/// The report of a finished run: the tally's summary with the totals read
/// back from the state (over every run).
pub(crate) fn final_report(
    cfg: &RunConfig,
    emitter: &Emitter,
    stop: Option<StopReason>,
    recovery: Recovery,
    open_batches: u64,
) -> Result<RunReport, EngineError> {
    let mut summary = emitter.summary();
    let final_store = JobStore::open(&cfg.state)?;
    // Two passes over every row, nothing read twice: a page cache would
    // only add its 16 MB to the run's peak memory (the writer's, freed
    // just before on another thread, is not reused here).
    let _ = final_store
        .reader()
        .execute_batch("PRAGMA cache_size = -1024");
    let final_counts = final_store.counts()?;
    summary.by_model = final_store.spend_by_model()?;
    summary.cost_unknown |= summary.by_model.iter().any(|m| m.cost_usd.is_none());
    summary.total = final_counts.total;
    summary.succeeded = final_counts.done;
    summary.failed = final_counts.failed;
    summary.pending = final_counts.pending + final_counts.in_flight;
    summary.cost_usd = final_counts.spent_usd;
    summary.prompt_tokens = final_counts.prompt_tokens;
    summary.completion_tokens = final_counts.completion_tokens;
    Ok(RunReport {
        summary,
        stop,
        recovery,
        open_batches,
    })
}

/// What a batch run takes over from the start-up shared with live runs.
struct Batches {
    options: BatchOptions,
    transport: Transport,
    reader: JobStore,
    writer: Writer,
    durable: mpsc::UnboundedReceiver<Durable>,
    emitter: Arc<Emitter>,
    budget: Option<Budget>,
    remaining: u64,
    reached: bool,
    job: String,
}

/// `--via batch`: the batch driver in place of the dispatcher, with the
/// same writer, output, events and stop signal. Returns why the run
/// stopped, if it did, and the batches left at the provider.
async fn run_batches(
    cfg: &RunConfig,
    b: Batches,
    cancel: CancellationToken,
) -> Result<(Option<StopReason>, u64), EngineError> {
    let tracker = tokio::spawn(track_durable(
        b.durable,
        b.remaining,
        b.emitter.clone(),
        Arc::new(Notify::new()),
    ));
    let stop = Arc::new(Stop::default());
    let interrupt = {
        let (stop, events) = (stop.clone(), b.emitter.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            if stop.trigger(StopReason::Interrupted) {
                events.emit(Event::Stopping {
                    reason: StopReason::Interrupted.to_string(),
                });
            }
        })
    };
    let driver = Driver::new(DriverParts {
        api: BatchApiClient {
            transport: b.transport,
        },
        writer: b.writer.sender(),
        reader: b.reader,
        events: b.emitter.clone(),
        stop: stop.clone(),
        budget: b.budget,
        prices: cfg.prices.batch_prices(),
        policy: cfg.retry,
        max_retry_time: cfg.max_retry_time,
        max_response_bytes: cfg.transport.max_response_bytes,
        options: b.options,
        job: b.job,
        state: cfg.state.clone(),
        reached: b.reached,
    });
    let ended = driver.drive().await;
    interrupt.abort();
    end_run(&b.writer, stop.reason());
    let closed = b.writer.close().await;
    let _ = tracker.await;
    let end = ended?;
    closed?;
    Ok((stop.reason().cloned(), end.open_at_provider))
}

/// The history's record of a run starting, with its limits and budget.
pub(crate) fn run_started(cfg: &RunConfig) -> Command {
    Command::RunStarted(RunRecord {
        started_unix_ms: unix_ms(std::time::SystemTime::now()),
        via: match cfg.via {
            Via::Live => "live",
            Via::Batch(_) => "batch",
        },
        max_cost: cfg.max_cost,
        rpm: cfg.limits.rpm,
        tpm: cfg.limits.tpm,
        concurrency: cfg.limits.concurrency,
    })
}

/// Records the run's end in the history (the writer commits it with the rest).
pub(crate) fn end_run(writer: &Writer, stop: Option<&StopReason>) {
    let _ = writer.send(Command::RunEnded {
        at_unix_ms: unix_ms(std::time::SystemTime::now()),
        stop: stop.map(|s| s.to_string()),
    });
}

/// The pace in force, for the history: checked once a second, written when
/// it changed (so at most one row a second, none while it holds).
async fn record_pace(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = None;
    loop {
        tick.tick().await;
        let v = ctx.pacer.view();
        if last == Some(v) {
            continue;
        }
        last = Some(v);
        let _ = ctx.writer.send(Command::Pace(PaceRecord {
            at_unix_ms: unix_ms(std::time::SystemTime::now()),
            rpm: v.rpm,
            tpm: v.tpm,
            concurrency: v.concurrency,
            source: v.source,
        }));
    }
}

/// With `--max-cost`, every model of the job needs a price: a budget cannot
/// be kept for requests whose cost is unknown.
fn check_prices_for_budget(store: &JobStore, prices: &PriceTable) -> Result<(), EngineError> {
    for model in store.models()? {
        match model {
            Some(m) if prices.lookup(&m).is_some() => {}
            Some(m) => {
                return Err(EngineError::Config(format!(
                    "--max-cost needs a price for model \"{m}\", which pacer does not know; add it with --prices FILE"
                )))
            }
            None => {
                return Err(EngineError::Config(
                    "--max-cost needs each request's model, and some request bodies name none".into(),
                ))
            }
        }
    }
    Ok(())
}

/// How long a dispatcher waits before asking a shared source again when it
/// had nothing (another machine's lease may expire meanwhile).
const POLL_AGAIN: Duration = Duration::from_millis(250);

async fn dispatch<S: WorkSource>(
    ctx: &Arc<Ctx>,
    mut source: S,
    mut due: mpsc::UnboundedReceiver<Item>,
    all_done: &Notify,
    workers: &mut JoinSet<()>,
    prices: &PriceTable,
) -> Result<(), EngineError> {
    let mut heap: BinaryHeap<Ready> = BinaryHeap::new();
    let mut more = More::Yes;
    let mut poll_at = Instant::now();
    loop {
        while workers.try_join_next().is_some() {}
        while let Ok(item) = due.try_recv() {
            heap.push(Ready(item));
        }
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        let may_take = match more {
            More::Yes => true,
            More::Later => Instant::now() >= poll_at,
            _ => false,
        };
        if heap.len() < source.low_water().max(1) && may_take {
            let taken = source.take(PAGE).await?;
            heap.extend(taken.rows.into_iter().map(|r| Ready(Item::from(r))));
            more = taken.more;
            match &more {
                More::Later => poll_at = Instant::now() + POLL_AGAIN,
                More::JobDone if heap.is_empty() => return Ok(()),
                More::Stopped(sentence) => {
                    let reason = StopReason::JobStopped {
                        sentence: sentence.clone(),
                    };
                    let shown = reason.to_string();
                    if ctx.stop.trigger(reason) {
                        ctx.events.emit(Event::Stopping { reason: shown });
                    }
                    return Ok(());
                }
                _ => {}
            }
        }
        let Some(Ready(mut item)) = heap.pop() else {
            // Nothing ready: wait for a retry to fall due, the end, a stop,
            // or the moment to ask a shared source again.
            let poll = more == More::Later;
            tokio::select! {
                next = due.recv() => if let Some(item) = next { heap.push(Ready(item)) },
                _ = all_done.notified() => return Ok(()),
                _ = ctx.stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(poll_at), if poll => {}
            }
            continue;
        };
        let queued = Instant::now();
        let admitted = tokio::select! {
            biased;
            _ = ctx.stop.cancelled() => None,
            permit = admit(ctx, &mut item, prices) => permit,
        };
        item.wait = queued.elapsed();
        let Some(permit) = admitted else {
            release(ctx, &mut item);
            return Ok(());
        };
        if ctx.stop.is_stopped() {
            release(ctx, &mut item);
            return Ok(());
        }
        if ctx
            .writer
            .send(crate::store::Command::Sent { idx: item.idx })
            .is_err()
        {
            return Ok(()); // the writer failed; `run` returns its error
        }
        ctx.events.emit(Event::Sent);
        workers.spawn(attempt(ctx.clone(), item, permit));
    }
}

fn release(ctx: &Ctx, item: &mut Item) {
    if let (Some(b), Some(r)) = (&ctx.budget, item.reservation.take()) {
        b.lock().expect("budget lock").release(r);
    }
}

/// Admission for one request: a concurrency slot, the budget, then the pace.
/// `None` when the budget is spent (the run stops).
async fn admit(ctx: &Ctx, item: &mut Item, prices: &PriceTable) -> Option<InFlight> {
    let permit = ctx.pacer.slot().await;
    if let Some(budget) = &ctx.budget {
        let worst = ctx.worst_case_usd(item, prices).unwrap_or(0.0);
        loop {
            let settled = ctx.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let (tried, others_reserved) = {
                let mut b = budget.lock().expect("budget lock");
                let tried = b.try_reserve(worst);
                (tried, b.reserved() > 0.0)
            };
            match tried {
                Ok(r) => {
                    item.reservation = Some(r);
                    break;
                }
                // Requests in flight hold reservations and may cost less than
                // reserved: wait for them to settle. (Their settling is what
                // wakes us, so there is no missed wake-up.)
                Err(_) if others_reserved => settled.await,
                Err(_) => {
                    let cap = budget.lock().expect("budget lock").cap();
                    let reason = StopReason::BudgetReached { cap_usd: cap };
                    let sentence = reason.to_string();
                    if ctx.stop.trigger(reason) {
                        ctx.events.emit(Event::Stopping { reason: sentence });
                    }
                    return None;
                }
            }
        }
    }
    item.tokens = ctx.pacer.admit(item.estimate.total()).await;
    Some(permit)
}

/// Retries wait here, in one timer queue, until they fall due.
async fn timer_queue(
    mut incoming: mpsc::UnboundedReceiver<(Item, Instant)>,
    due: mpsc::UnboundedSender<Item>,
) {
    let mut queue: DelayQueue<Item> = DelayQueue::new();
    loop {
        tokio::select! {
            msg = incoming.recv() => match msg {
                Some((item, at)) => { queue.insert_at(item, at); }
                None => return,
            },
            Some(expired) = poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                if due.send(expired.into_inner()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts requests down as their results become durable.
async fn track_durable(
    mut durable: mpsc::UnboundedReceiver<Durable>,
    mut remaining: u64,
    events: Arc<Emitter>,
    all_done: Arc<Notify>,
) {
    while let Some(d) = durable.recv().await {
        events.emit(Event::Finished {
            ok: d.state == RequestState::Done,
        });
        remaining = remaining.saturating_sub(1);
        if remaining == 0 {
            all_done.notify_one();
        }
    }
}
