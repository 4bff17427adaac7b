//! One attempt of one request, and what its answer means.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::item::Item;
use super::output::{error_line, parse_body, response_line};
use super::pace::Pacer;
use crate::cost::{Budget, CostMeter, PriceTable, Usage};
use crate::provider::parse_rate_limit_headers;
use crate::report::{Event, Summary, Tally};
use crate::retry::{admissible_wait, classify, RetryPolicy, RetryReason, StopReason, Verdict};
use crate::store::{Command, RequestState};
use crate::transport::{Answer, Transport, TransportError};

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

/// Sends `item` once and acts on the answer. `permit` is its concurrency slot.
pub(crate) async fn attempt(ctx: Arc<Ctx>, mut item: Item, permit: OwnedSemaphorePermit) {
    let sent_at = Instant::now();
    let result = ctx
        .transport
        .send(&item.url, &item.body, &item.custom_id)
        .await;
    // The slot is held until the answer is acted on, so that a stop (401,
    // quota) is in force before the dispatcher can admit anyone else.
    let _permit = permit;
    let now = Instant::now();
    item.attempts += 1;
    match result {
        Ok(answer) => {
            ctx.events.emit(Event::Answered {
                status: Some(answer.status),
                latency: now - sent_at,
            });
            let wall = SystemTime::now();
            let snapshot = parse_rate_limit_headers(&answer.headers, wall);
            if !snapshot.is_empty() && ctx.pacer.observe(now, &snapshot) {
                ctx.emit_pace();
            }
            match classify(answer.status, &answer.headers, &answer.body, wall) {
                Verdict::Success => succeed(&ctx, item, &answer, now, now - sent_at),
                Verdict::Fail => {
                    if ctx.pacer.on_provider_up(now) {
                        ctx.emit_pace();
                    }
                    finish_failed(&ctx, item, Failure::Http(&answer))
                }
                Verdict::Retry(reason) => {
                    retry_or_give_up(&ctx, item, reason, Failure::Http(&answer), now)
                }
                Verdict::Stop(reason) => stop_run(&ctx, item, reason, now),
            }
        }
        Err(err) => {
            ctx.events.emit(Event::Answered {
                status: None,
                latency: now - sent_at,
            });
            let reason = match &err {
                TransportError::Timeout(_) | TransportError::IdleTimeout(_) => RetryReason::Timeout,
                TransportError::StreamCut | TransportError::StreamError(_) => {
                    RetryReason::StreamCut
                }
                _ => RetryReason::Connection,
            };
            retry_or_give_up(&ctx, item, reason, Failure::Transport(&err), now);
        }
    }
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
}

fn request_id(answer: &Answer) -> &str {
    ["x-request-id", "request-id"]
        .iter()
        .find_map(|h| answer.headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

fn succeed(ctx: &Ctx, mut item: Item, answer: &Answer, now: Instant, latency: Duration) {
    let body = parse_body(&answer.body);
    let usage = Usage::from_response(&body);
    let model = item.model.clone().or_else(|| {
        body.get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let cost = match (&usage, &model) {
        (Some(u), Some(m)) => ctx.meter.lock().expect("meter lock").record(m, u),
        _ => None,
    };
    // Providers charge prompt + max_tokens at admission and keep it; the
    // real prompt count replaces the estimate.
    let charged = usage.map_or(item.estimate.total(), |u| {
        u.prompt_tokens + item.estimate.max_output
    });
    if ctx.pacer.on_success(now, latency, charged) {
        ctx.emit_pace();
    }
    if let Some(u) = &usage {
        ctx.pacer
            .reconcile_tokens(now, item.estimate.total(), charged);
        ctx.events.emit(Event::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost_usd: cost,
        });
    }
    ctx.settle(&mut item, cost);
    let line = response_line(&item.custom_id, answer.status, request_id(answer), body);
    ctx.write(Command::Finish {
        idx: item.idx,
        state: RequestState::Done,
        line,
        error: None,
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cost_usd: cost,
    });
}

fn finish_failed(ctx: &Ctx, mut item: Item, failure: Failure<'_>) {
    ctx.settle(&mut item, None);
    let (line, error) = match failure {
        Failure::Http(a) => (
            response_line(
                &item.custom_id,
                a.status,
                request_id(a),
                parse_body(&a.body),
            ),
            failure.describe(),
        ),
        Failure::Transport(e) => (
            error_line(&item.custom_id, e.code(), &e.to_string()),
            e.to_string(),
        ),
    };
    ctx.write(Command::Finish {
        idx: item.idx,
        state: RequestState::Failed,
        line,
        error: Some(error),
        prompt_tokens: None,
        completion_tokens: None,
        cost_usd: None,
    });
}

fn retry_or_give_up(
    ctx: &Ctx,
    mut item: Item,
    reason: RetryReason,
    failure: Failure<'_>,
    now: Instant,
) {
    // A wait beyond --max-retry-time was said to everybody: stop (resumable)
    // before the pause gate is closed for it.
    if let Some(Err(too_long)) = reason
        .server_wait()
        .map(|w| admissible_wait(w, ctx.max_retry_time))
    {
        return stop_run(ctx, item, too_long.into(), now);
    }
    let mut pace_changed = false;
    if let RetryReason::RateLimited { scope, .. } = &reason {
        // Rejected at admission: the provider charged nothing.
        ctx.pacer.reconcile_tokens(now, item.estimate.total(), 0);
        pace_changed |= ctx.pacer.on_provider_up(now);
        let (until, changed) = ctx.pacer.on_rate_limited(now, *scope, reason.after());
        pace_changed |= changed;
        ctx.events.emit(Event::Paused { for_: until - now });
    }
    // While the provider is down (the circuit is open), attempts do not count
    // against --max-retries: only --max-retry-time fails a request for good.
    let outage = reason.is_outage_like();
    let counted = if outage {
        let open = ctx.pacer.on_outage(now);
        item.failing_since.get_or_insert(now);
        !open
    } else {
        item.failing_since = None;
        true
    };
    if pace_changed {
        ctx.emit_pace();
    }
    let out_of_time = item
        .failing_since
        .is_some_and(|since| now.saturating_duration_since(since) >= ctx.max_retry_time);
    if (counted && item.retries >= ctx.policy.max_retries) || out_of_time {
        // Out of retries: the last answer is the request's result.
        finish_failed(ctx, item, failure);
        return;
    }
    let delay: Duration = ctx
        .policy
        .delay(item.retries, reason.after(), &mut rand::thread_rng());
    if counted {
        item.retries += 1;
    }
    ctx.settle(&mut item, None);
    ctx.events.emit(Event::Retrying {
        rate_limited: matches!(reason, RetryReason::RateLimited { .. }),
    });
    ctx.write(Command::Retry {
        idx: item.idx,
        error: failure.describe(),
    });
    if let Err(mpsc::error::SendError((item, _))) = ctx.retries.send((item, now + delay)) {
        ctx.write(Command::Requeue { idx: item.idx });
    }
}

fn stop_run(ctx: &Ctx, mut item: Item, reason: StopReason, now: Instant) {
    ctx.pacer.reconcile_tokens(now, item.estimate.total(), 0);
    ctx.settle(&mut item, None);
    let sentence = reason.to_string();
    if ctx.stop.trigger(reason) {
        ctx.events.emit(Event::Stopping { reason: sentence });
    }
    // Not the request's fault: it stays pending for the resumed run.
    ctx.write(Command::Requeue { idx: item.idx });
}
