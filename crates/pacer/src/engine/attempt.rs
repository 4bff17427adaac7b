//! One attempt of one request, and what its answer means.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::item::Item;
use super::output::{error_line, read_answer, response_line, AnswerBody};
use super::pace::{InFlight, Pacer};
use crate::cost::{Budget, CostMeter, PriceTable, Usage};
use crate::report::{Event, Summary, Tally};
use crate::retry::{
    admissible_wait, NextStep, Outcome, RetryPolicy, RetryReason, StopReason, Verdict,
};
use crate::store::{AttemptOutcome, AttemptRecord, Command, RequestState};
use crate::transport::{display_url, Answer, Transport, TransportError};

/// Events go to the run's own tally and to the caller's channel, if any.
#[derive(Debug)]
pub(crate) struct Emitter {
    tally: Mutex<Tally>,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

impl Emitter {
    pub fn new(now: Instant, tx: Option<mpsc::UnboundedSender<Event>>) -> Emitter {
        Emitter {
            tally: Mutex::new(Tally::new(now)),
            tx,
        }
    }

    pub fn emit(&self, event: Event) {
        self.tally
            .lock()
            .expect("tally lock")
            .apply(Instant::now(), &event);
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }

    pub fn summary(&self) -> Summary {
        self.tally
            .lock()
            .expect("tally lock")
            .summary(Instant::now())
    }
}

/// The run's stop signal: the first reason wins; nothing is admitted after it.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    pub fn trigger(&self, reason: StopReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }
}

/// What every worker shares.
pub(crate) struct Ctx {
    pub transport: Transport,
    pub pacer: Pacer,
    pub policy: RetryPolicy,
    /// Outage-like failures fail a request for good only after this long.
    pub max_retry_time: Duration,
    pub writer: mpsc::UnboundedSender<Command>,
    pub retries: mpsc::UnboundedSender<(Item, Instant)>,
    pub events: Arc<Emitter>,
    pub stop: Stop,
    pub budget: Option<Mutex<Budget>>,
    /// Pinged whenever budget is settled or released (admission may wait on it).
    pub settled: Notify,
    pub meter: Mutex<CostMeter>,
    /// A server has been reached in this run (the key check counts). Until
    /// then a failed connection stops the run at once: the base URL is wrong.
    pub reached: AtomicBool,
}

impl Ctx {
    fn write(&self, cmd: Command) {
        if self.writer.send(cmd).is_err() {
            // The writer failed; its error is returned at the end of the run.
            self.stop.trigger(StopReason::Interrupted);
        }
    }

    pub fn emit_pace(&self) {
        let v = self.pacer.view();
        tracing::info!(
            rpm = v.rpm,
            tpm = v.tpm,
            source = ?v.source,
            concurrency = v.concurrency,
            "pace changed"
        );
        self.events.emit(Event::Pace {
            rpm: v.rpm,
            tpm: v.tpm,
            source: v.source,
            concurrency: v.concurrency,
        });
    }

    /// The most a request can cost, for the budget; `None` without a price.
    pub fn worst_case_usd(&self, item: &Item, prices: &PriceTable) -> Option<f64> {
        let price = prices.lookup(item.model.as_deref()?)?;
        Some(price.cost(&Usage {
            prompt_tokens: item.estimate.prompt,
            cached_tokens: 0,
            completion_tokens: item.estimate.max_output,
        }))
    }

    fn settle(&self, item: &mut Item, actual_usd: Option<f64>) {
        if let (Some(budget), Some(r)) = (&self.budget, item.reservation.take()) {
            let mut b = budget.lock().expect("budget lock");
            match actual_usd {
                Some(usd) => b.settle(r, usd),
                None => b.release(r),
            }
            drop(b);
            self.settled.notify_waiters();
        }
    }
}

/// Sends `item` once and acts on the answer. `slot` is its place in flight.
pub(crate) async fn attempt(ctx: Arc<Ctx>, mut item: Item, mut slot: InFlight) {
    let sent_at = Instant::now();
    let result = {
        let send = ctx
            .transport
            .send(&item.url, item.endpoint, &item.body, &item.custom_id);
        tokio::pin!(send);
        tokio::select! {
            result = &mut send => result,
            () = tokio::time::sleep(ctx.pacer.overdue_after()) => {
                // Probably hung: let the run go on without it until --timeout.
                slot.release_paced();
                send.await
            }
        }
    };
    // The slot is held until the answer is acted on, so that a stop (401,
    // quota) is in force before the dispatcher can admit anyone else.
    let _slot = slot;
    let now = Instant::now();
    let latency = now - sent_at;
    item.attempts += 1;
    let (mut outcome, failure) = match &result {
        Ok(answer) => (
            Outcome::of_answer(answer, latency, SystemTime::now()),
            Failure::Http(answer),
        ),
        Err(err) => (Outcome::of_error(err, latency), Failure::Transport(err)),
    };
    // A wait beyond --max-retry-time was said to everybody: stop (resumable)
    // before the pause gate is closed for it.
    if let Verdict::Retry(reason) = &outcome.verdict {
        if let Some(Err(too_long)) = reason
            .server_wait()
            .map(|w| admissible_wait(w, ctx.max_retry_time))
        {
            outcome.verdict = Verdict::Stop(too_long.into());
        }
    }
    if let Verdict::Stop(StopReason::Unauthorized { key_source, .. }) = &mut outcome.verdict {
        *key_source = ctx.transport.key_source().map(str::to_owned);
    }
    let unreached = failure.unreached_cause();
    if unreached.is_none() {
        ctx.reached.store(true, Ordering::Relaxed);
    } else if !ctx.reached.load(Ordering::Relaxed) {
        // Nothing has answered at the base URL since the run began: a typo
        // or a tunnel not up. Stop now rather than retry for --max-retry-time.
        let url = display_url(&ctx.transport.endpoint(&item.url));
        let cause = unreached.unwrap_or_default();
        outcome.verdict = Verdict::Stop(StopReason::Unreachable { url, cause });
    }
    ctx.events.emit(Event::Answered {
        status: result.as_ref().ok().map(|a| a.status),
        latency,
    });
    let latency_ms = latency.as_millis().min(u64::MAX as u128) as u64;
    let mut record = AttemptRecord {
        idx: item.idx,
        sent_unix_ms: unix_ms(SystemTime::now()).saturating_sub(latency_ms as i64),
        wait_ms: item.wait.as_millis().min(u64::MAX as u128) as u64,
        latency_ms,
        status: result.as_ref().map_or(0, |a| a.status),
        outcome: AttemptOutcome::Stopped,
        est_tokens: item.estimate.total(),
        tokens: None,
        cost_usd: None,
        error: None,
    };
    // A success is charged what its usage says; read the body once here.
    let success = match (&outcome.verdict, &result) {
        (Verdict::Success, Ok(answer)) => {
            let body = read_answer(&answer.body);
            let usage = body.usage;
            // Providers charge prompt + max_tokens at admission and keep it;
            // the real prompt count replaces the estimate.
            outcome.charged_tokens =
                usage.map(|u| u.prompt_tokens.saturating_add(item.estimate.max_output));
            Some((answer, body))
        }
        _ => None,
    };
    let change = ctx.pacer.feedback(now, &outcome, &item.tokens);
    if change.pace_changed {
        ctx.emit_pace();
    }
    if let Some(until) = change.paused_until {
        tracing::info!(
            pause_ms = u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX),
            "a 429 paused every request"
        );
        ctx.events.emit(Event::Paused { for_: until - now });
    }
    match outcome.verdict {
        Verdict::Success => {
            let (answer, body) = success.expect("a success has its answer");
            succeed(&ctx, item, answer, body, record)
        }
        Verdict::Fail => finish_failed(&ctx, item, failure, record),
        Verdict::Retry(reason) => retry_or_give_up(
            &ctx,
            item,
            reason,
            failure,
            change.circuit_open,
            now,
            record,
        ),
        Verdict::Stop(reason) => {
            if !matches!(failure, Failure::Http(a) if (200..300).contains(&a.status)) {
                record.error = Some((failure.kind(), failure.describe()));
            }
            stop_run(&ctx, item, reason, record)
        }
    }
}

/// A wall-clock time as unix milliseconds (0 before 1970).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// A failed attempt: an HTTP answer, or none.
#[derive(Clone, Copy)]
enum Failure<'a> {
    Http(&'a Answer),
    Transport(&'a TransportError),
}

impl Failure<'_> {
    fn describe(&self) -> String {
        match self {
            Failure::Http(a) => {
                let text = String::from_utf8_lossy(&a.body);
                let text: String = text.chars().take(300).collect();
                format!("HTTP {}: {}", a.status, text)
            }
            Failure::Transport(e) => e.to_string(),
        }
    }

    /// The kind the history counts it under: `HTTP 429`, `timeout`...
    fn kind(&self) -> String {
        match self {
            Failure::Http(a) => format!("HTTP {}", a.status),
            Failure::Transport(e) => e.code().to_string(),
        }
    }

    fn unreached_cause(&self) -> Option<String> {
        match self {
            Failure::Transport(e) => e.unreached_cause(),
            Failure::Http(_) => None,
        }
    }
}

fn request_id(answer: &Answer) -> &str {
    ["x-request-id", "request-id"]
        .iter()
        .find_map(|h| answer.headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

fn succeed(
    ctx: &Ctx,
    mut item: Item,
    answer: &Answer,
    body: AnswerBody<'_>,
    mut record: AttemptRecord,
) {
    let usage = body.usage;
    let model = item.model.clone().or(body.model);
    let cost = match (&usage, &model) {
        (Some(u), Some(m)) => ctx.meter.lock().expect("meter lock").record(m, u),
        _ => None,
    };
    if let Some(u) = &usage {
        ctx.events.emit(Event::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: cost,
            model,
        });
    }
    ctx.settle(&mut item, cost);
    record.outcome = AttemptOutcome::Success;
    record.tokens = usage.map(|u| u.prompt_tokens.saturating_add(u.completion_tokens));
    record.cost_usd = cost;
    ctx.write(Command::Attempt(record));
    let line = response_line(
        &item.custom_id,
        answer.status,
        request_id(answer),
        &body.json,
    );
    ctx.write(Command::Finish {
        idx: item.idx,
        state: RequestState::Done,
        line,
        error: None,
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        cached_tokens: usage.map(|u| u.cached_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cost_usd: cost,
    });
}

fn finish_failed(ctx: &Ctx, mut item: Item, failure: Failure<'_>, mut record: AttemptRecord) {
    ctx.settle(&mut item, None);
    let (line, error) = match failure {
        Failure::Http(a) => (
            response_line(
                &item.custom_id,
                a.status,
                request_id(a),
                &read_answer(&a.body).json,
            ),
            failure.describe(),
        ),
        Failure::Transport(e) => (
            error_line(&item.custom_id, e.code(), &e.to_string()),
            e.to_string(),
        ),
    };
    record.outcome = AttemptOutcome::Failed;
    record.error = Some((failure.kind(), error.clone()));
    ctx.write(Command::Attempt(record));
    ctx.write(Command::Finish {
        idx: item.idx,
        state: RequestState::Failed,
        line,
        error: Some(error),
        prompt_tokens: None,
        cached_tokens: None,
        completion_tokens: None,
        cost_usd: None,
    });
}

fn retry_or_give_up(
    ctx: &Ctx,
    mut item: Item,
    reason: RetryReason,
    failure: Failure<'_>,
    circuit_open: bool,
    now: Instant,
    mut record: AttemptRecord,
) {
    let step = ctx.policy.next_step(
        &mut item.retry,
        &reason,
        circuit_open,
        ctx.max_retry_time,
        now,
        &mut rand::thread_rng(),
    );
    let at = match step {
        NextStep::RetryAt(at) => at,
        NextStep::GiveUp => match failure.unreached_cause() {
            // It never reached a server, so it is not the request's fault:
            // it stays pending and the run stops, to resume once it can.
            Some(cause) => {
                let waited = item
                    .retry
                    .waiting_since
                    .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
                let url = display_url(&ctx.transport.endpoint(&item.url));
                record.error = Some((failure.kind(), failure.describe()));
                let reason = StopReason::UnreachableFor { url, cause, waited };
                return stop_run(ctx, item, reason, record);
            }
            // Out of retries: the last answer is the request's result.
            None => return finish_failed(ctx, item, failure, record),
        },
    };
    ctx.settle(&mut item, None);
    tracing::debug!(
        custom_id = %item.custom_id,
        reason = ?reason,
        wait_ms = u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX),
        "retrying"
    );
    ctx.events.emit(Event::Retrying {
        rate_limited: matches!(reason, RetryReason::RateLimited { .. }),
    });
    let error = failure.describe();
    record.outcome = AttemptOutcome::Retried;
    record.error = Some((failure.kind(), error.clone()));
    ctx.write(Command::Attempt(record));
    ctx.write(Command::Retry {
        idx: item.idx,
        error,
    });
    if let Err(mpsc::error::SendError((item, _))) = ctx.retries.send((item, at)) {
        ctx.write(Command::Requeue { idx: item.idx });
    }
}

fn stop_run(ctx: &Ctx, mut item: Item, reason: StopReason, mut record: AttemptRecord) {
    ctx.settle(&mut item, None);
    record.outcome = AttemptOutcome::Stopped;
    ctx.write(Command::Attempt(record));
    let sentence = reason.to_string();
    if ctx.stop.trigger(reason) {
        ctx.events.emit(Event::Stopping { reason: sentence });
    }
    // Not the request's fault: it stays pending for the resumed run.
    ctx.write(Command::Requeue { idx: item.idx });
}
