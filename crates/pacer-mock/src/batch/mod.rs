//! The providers' half-price batch APIs: OpenAI's Files and Batch API, and
//! Anthropic's Message Batches.
//!
//! A batch is simulated, not queued: right after it is created, every line
//! is validated and answered at once (in the background, off the async
//! workers) with the live endpoints' own code, so a line's result is exactly
//! what a live call of the same request would get, usage included. What the
//! simulator's clock decides is *when* each answer becomes visible. A batch
//! validates for `--batch-phase` milliseconds (longer if answering its lines
//! takes longer; an Anthropic batch shows `in_progress` meanwhile), then its
//! lines are processed at `--batch-speed` per second, in an order shuffled a
//! little (within blocks of 16 lines, by `--seed` and the batch id) since
//! neither provider keeps input order; then it finalizes for `--batch-phase`
//! and ends. With small batches the answering is quicker than the phase, so
//! timings (and how many lines an expiry leaves) are exact.
//! A cancel stops processing at once, an expiry (`--batch-expire-after`) at
//! the deadline: lines processed by then keep their results, the others end
//! `batch_cancelled`/`batch_expired` (OpenAI, in the error file) or
//! `canceled`/`expired` (Anthropic). Validations finish in creation order
//! (so the enqueued-token limit is deterministic). Once a batch's lines are
//! answered, its state is a pure function of that time, the cancel time and
//! the knobs; each request to the batch APIs (and each read of the
//! statistics) first brings the counters up to now, so nothing ticks.
//!
//! Lines fail as lines do on the real services: a body the live endpoint
//! would refuse gets the same 400 (not retryable); `--batch-line-error-rate`
//! of the others get a 500 `server_error` (Anthropic: `api_error`), rolled
//! from `--seed`, the line's url and body, and how many times that line was
//! submitted before, so a resubmitted line rolls fresh dice. Structural
//! problems of an OpenAI input file (a line that is not JSON, a missing
//! `custom_id`, a url other than the batch's endpoint...) fail the whole
//! batch at validation with `errors.data[].line`, as OpenAI does; so does
//! `--batch-token-limit` (enqueued tokens per model and key).
//!
//! Batches never touch the live rate limits, quota or fault dice. Files and
//! batches belong to the key that created them (another key gets a 404),
//! and every call is logged with its path.

mod anthropic;
mod call;
mod multipart;
mod openai;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::MockConfig;
use crate::handler::validate;
use crate::reply::{success_body, Endpoint, Reply};
use crate::state::MockState;
use crate::stats::Stats;

/// Largest request body the upload and Anthropic create routes read (the
/// APIs' own limits, 200 MB and 256 MB, are checked with their messages).
const BATCH_BODY_LIMIT: usize = 300 * 1024 * 1024;

/// The batch and file routes.
pub(crate) fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route(
            "/v1/files",
            post(openai::upload)
                .get(openai::list_files)
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route(
            "/v1/files/{id}",
            get(openai::get_file).delete(openai::delete_file),
        )
        .route("/v1/files/{id}/content", get(openai::file_content))
        .route("/v1/batches", post(openai::create).get(openai::list))
        .route("/v1/batches/{id}", get(openai::retrieve))
        .route("/v1/batches/{id}/cancel", post(openai::cancel))
        .route(
            "/v1/messages/batches",
            post(anthropic::create)
                .get(anthropic::list)
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route(
            "/v1/messages/batches/{id}",
            get(anthropic::retrieve).delete(anthropic::delete),
        )
        .route("/v1/messages/batches/{id}/cancel", post(anthropic::cancel))
        .route("/v1/messages/batches/{id}/results", get(anthropic::results))
}

/// The batch knobs of [`MockConfig`].
#[derive(Debug, Clone, Copy)]
struct Knobs {
    speed: f64,
    error_rate: f64,
    expire_after: Duration,
    token_limit: Option<u64>,
    phase: Duration,
}

/// Where a batch stands at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Validating,
    Failed { at: Instant },
    InProgress,
    Finalizing { since: Instant },
    Completed { since: Instant, at: Instant },
    Cancelling { since: Instant },
    Cancelled { since: Instant, at: Instant },
    Expired { at: Instant },
}

impl Stage {
    fn terminal(self) -> bool {
        matches!(
            self,
            Stage::Failed { .. }
                | Stage::Completed { .. }
                | Stage::Cancelled { .. }
                | Stage::Expired { .. }
        )
    }

    /// Whether its lines still count as enqueued (`--batch-token-limit`).
    fn enqueued(self) -> bool {
        !self.terminal()
    }

    /// OpenAI's name for it.
    fn openai_status(self) -> &'static str {
        match self {
            Stage::Validating => "validating",
            Stage::Failed { .. } => "failed",
            Stage::InProgress => "in_progress",
            Stage::Finalizing { .. } => "finalizing",
            Stage::Completed { .. } => "completed",
            Stage::Cancelling { .. } => "cancelling",
            Stage::Cancelled { .. } => "cancelled",
            Stage::Expired { .. } => "expired",
        }
    }
}

/// Far enough in the future to mean "never" without overflowing.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(FAR)).unwrap_or(t)
}

/// A batch's schedule.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    created: Instant,
    /// The least time validating takes (OpenAI: `--batch-phase`; Anthropic: 0).
    validation: Duration,
    /// When processing starts (after validating).
    start: Instant,
    lines: usize,
    speed: f64,
    deadline: Instant,
    /// How long finalizing lasts once every line is processed.
    finalize: Duration,
    /// How long cancelling lasts.
    cancelling: Duration,
    cancel: Option<Instant>,
    /// Failed validation: never processed.
    failed: bool,
}

impl Timeline {
    fn new(created: Instant, knobs: &Knobs, validation: Duration, lines: usize) -> Timeline {
        Timeline {
            created,
            validation,
            start: later(created, validation),
            lines,
            speed: knobs.speed,
            deadline: later(created, knobs.expire_after),
            finalize: validation,
            cancelling: knobs.phase,
            cancel: None,
            failed: false,
        }
    }

    /// A batch whose lines are still being validated and answered: it
    /// stays before `start` until [`Timeline::ready`].
    fn pending(created: Instant, knobs: &Knobs, validation: Duration) -> Timeline {
        Timeline {
            start: later(created, FAR),
            ..Timeline::new(created, knobs, validation, 0)
        }
    }

    /// Its `lines` are answered at `now`: processing starts once the
    /// validation time has passed, and not before now.
    fn ready(&mut self, now: Instant, lines: usize) {
        self.start = later(self.created, self.validation).max(now);
        self.lines = lines;
    }

    fn all_done(&self) -> Instant {
        let secs = self.lines as f64 / self.speed;
        later(self.start, Duration::try_from_secs_f64(secs).unwrap_or(FAR))
    }

    /// Lines processed by `t`.
    fn processed_by(&self, t: Instant) -> usize {
        if t < self.start {
            0
        } else if t >= self.all_done() {
            self.lines
        } else {
            let k = (t - self.start).as_secs_f64() * self.speed;
            (k.floor() as usize).min(self.lines)
        }
    }

    /// The stage at `now` and how many lines are processed by then.
    fn stage(&self, now: Instant) -> (Stage, usize) {
        if self.failed {
            return if now < self.start {
                (Stage::Validating, 0)
            } else {
                (Stage::Failed { at: self.start }, 0)
            };
        }
        enum Stop {
            Done,
            Expired,
            Cancelled,
        }
        let mut stop = self.all_done();
        let mut why = Stop::Done;
        if self.deadline < stop {
            stop = self.deadline;
            why = Stop::Expired;
        }
        if let Some(c) = self.cancel.filter(|c| *c < stop) {
            stop = c;
            why = Stop::Cancelled;
        }
        let processed = self.processed_by(now.min(stop));
        if now < stop {
            let stage = if now < self.start {
                Stage::Validating
            } else {
                Stage::InProgress
            };
            return (stage, processed);
        }
        let stage = match why {
            Stop::Done => {
                let at = later(stop, self.finalize);
                if now < at {
                    Stage::Finalizing { since: stop }
                } else {
                    Stage::Completed { since: stop, at }
                }
            }
            Stop::Expired => Stage::Expired { at: stop },
            Stop::Cancelled => {
                let at = later(stop, self.cancelling);
                if now < at {
                    Stage::Cancelling { since: stop }
                } else {
                    Stage::Cancelled { since: stop, at }
                }
            }
        };
        (stage, processed)
    }

    /// When line number `k` of the processing order is answered.
    fn answered_at(&self, k: usize) -> Instant {
        let secs = (k + 1) as f64 / self.speed;
        later(self.start, Duration::try_from_secs_f64(secs).unwrap_or(FAR))
    }
}

/// One line of a batch, answered in advance.
#[derive(Debug)]
struct Line {
    /// Its position in the input.
    index: usize,
    custom_id: String,
    /// The serialized result line.
    json: Box<str>,
    ok: bool,
    prompt: u64,
    completion: u64,
    /// Fingerprint of its url and body.
    key: u128,
}

/// A line answered before the batch is stored (off the async workers).
#[derive(Debug)]
struct PreLine {
    index: usize,
    custom_id: String,
    key: u128,
    outcome: PreOutcome,
}

#[derive(Debug)]
enum PreOutcome {
    /// A 200: the serialized result line and its usage.
    Ok {
        json: String,
        prompt: u64,
        completion: u64,
    },
    /// A 400 the live endpoint would answer too.
    Invalid { json: String },
}

/// What both providers' batches share.
#[derive(Debug)]
struct Core {
    id: String,
    /// Creation order.
    n: u64,
    owner: usize,
    timeline: Timeline,
    /// In processing order.
    lines: Vec<Line>,
    /// Lines counted as processed so far.
    revealed: usize,
    ok: usize,
    failed: usize,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Ended and accounted for.
    settled: bool,
}

impl Core {
    /// Lines that were never processed, once the batch has ended.
    fn unprocessed(&self) -> &[Line] {
        &self.lines[self.revealed.min(self.lines.len())..]
    }
}

/// A stored file.
#[derive(Debug)]
struct StoredFile {
    id: String,
    n: u64,
    owner: usize,
    data: Bytes,
    created_at: u64,
    filename: String,
    purpose: &'static str,
}

impl StoredFile {
    fn object(&self) -> Value {
        json!({
            "id": self.id, "object": "file", "bytes": self.data.len(),
            "created_at": self.created_at, "expires_at": null, "filename": self.filename,
            "purpose": self.purpose, "status": "processed", "status_details": null,
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    files_uploaded: u64,
    batches_created: u64,
    message_batches_created: u64,
    batch_lines: u64,
    batch_prompt_tokens: u64,
    batch_completion_tokens: u64,
    duplicate_batch_inputs: u64,
    duplicate_batch_successes: u64,
}

#[derive(Default)]
struct Inner {
    /// Creation counter (ids, list order).
    next: u64,
    files: HashMap<String, StoredFile>,
    batches: HashMap<String, openai::Batch>,
    message_batches: HashMap<String, anthropic::MessageBatch>,
    /// Input fingerprints of batches that passed validation, and their ids.
    inputs: HashMap<u128, Vec<String>>,
    /// Times each line (url and body) was submitted in a valid batch.
    occurrences: HashMap<u128, u32>,
    /// Times each line was answered 200.
    successes: HashMap<u128, u32>,
    counters: Counters,
    /// Signalled when the latest batch's validation has finished.
    validations: Option<oneshot::Receiver<()>>,
}

impl Inner {
    /// A place in the queue of validations, which finish in creation order
    /// (so the enqueued-token limit sees earlier batches first): what to wait
    /// for before finishing, and what to signal after.
    fn queue_validation(&mut self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        (self.validations.replace(next), done)
    }
}

/// Lines of a batch that ended (cancelled or expired) before they were
/// validated: never processed.
fn never_run(pre: Vec<PreLine>) -> Vec<Line> {
    pre.into_iter()
        .map(|p| Line {
            index: p.index,
            custom_id: p.custom_id,
            json: Box::from(""),
            ok: false,
            prompt: 0,
            completion: 0,
            key: p.key,
        })
        .collect()
}

/// Files and batches of both providers.
pub(crate) struct BatchStore {
    knobs: Knobs,
    seed: u64,
    /// Distinguishes this server's ids from another run's.
    nonce: u64,
    started: Instant,
    started_wall: SystemTime,
    /// Numbers the answers' ids (`chatcmpl-batch0000000001`...).
    next_answer: AtomicU64,
    inner: Mutex<Inner>,
}

fn fingerprint(parts: &[&[u8]]) -> u128 {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_be_bytes(b)
}

const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` alphanumeric characters derived from `parts`.
fn token(parts: &[&[u8]], len: usize) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut bytes = vec![0u8; len];
    h.finalize_xof().fill(&mut bytes);
    bytes
        .into_iter()
        .map(|b| ALPHANUMERIC[b as usize % ALPHANUMERIC.len()] as char)
        .collect()
}

/// The id of batch answer number `seq` (never one a live answer has).
fn answer_id(endpoint: Endpoint, seq: u64) -> String {
    match endpoint {
        Endpoint::ChatCompletions => format!("chatcmpl-batch{seq:010}"),
        Endpoint::Completions => format!("cmpl-batch{seq:010}"),
        Endpoint::Messages => format!("msg_batch{seq:010}"),
        Endpoint::Embeddings | Endpoint::Models => format!("batch{seq:010}"),
    }
}

/// The live endpoint's answer to `body`, as of unix time `created`: the
/// success body, the request's charge (its prompt tokens are the usage's)
/// and the completion tokens; or the 400's message.
fn execute(
    endpoint: Endpoint,
    body: &Value,
    seq: u64,
    created: u64,
) -> Result<(Value, crate::tokens::Charge, u64), String> {
    validate(endpoint, body).map_err(str::to_string)?;
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(if endpoint.is_anthropic() {
            "stream: streaming is not supported in Message Batches".to_string()
        } else {
            "Streaming is not supported in batch requests: remove 'stream'.".to_string()
        });
    }
    let cost = crate::tokens::charge(endpoint.path(), body);
    let reply = Reply::generate(endpoint, body);
    let mut out = success_body(endpoint, body, &reply, cost.prompt, seq, created);
    if let Some(id) = out.get_mut("id") {
        *id = json!(answer_id(endpoint, seq));
    }
    Ok((out, cost, reply.completion_tokens()))
}

impl BatchStore {
    pub fn new(config: &MockConfig, started: Instant, seed: u64) -> Self {
        BatchStore {
            knobs: Knobs {
                speed: config.batch_speed,
                error_rate: config.batch_line_error_rate,
                expire_after: config.batch_expire_after,
                token_limit: config.batch_token_limit,
                phase: Duration::from_millis(config.batch_phase),
            },
            seed,
            nonce: rand::random(),
            started,
            started_wall: SystemTime::now(),
            next_answer: AtomicU64::new(0),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wall-clock time of tokio instant `t` (on the server's clock, which
    /// tests may pause and advance).
    fn wall(&self, t: Instant) -> SystemTime {
        self.started_wall + t.saturating_duration_since(self.started)
    }

    fn unix(&self, t: Instant) -> u64 {
        self.wall(t)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn rfc3339(&self, t: Instant) -> String {
        chrono::DateTime::<chrono::Utc>::from(self.wall(t))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// A fresh id: `prefix` and `len` alphanumeric characters; and its
    /// creation number.
    fn new_id(&self, next: &mut u64, prefix: &str, len: usize) -> (String, u64) {
        let n = *next;
        *next += 1;
        let id = token(
            &[
                &self.nonce.to_le_bytes(),
                &n.to_le_bytes(),
                prefix.as_bytes(),
            ],
            len,
        );
        (format!("{prefix}{id}"), n)
    }

    /// The order a batch of `n` lines is processed in: input order shuffled
    /// within blocks of 16.
    fn processing_order(&self, id: &str, n: usize) -> Vec<usize> {
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(b"order\0");
        h.update(id.as_bytes());
        let mut rng = SmallRng::from_seed(*h.finalize().as_bytes());
        let mut order: Vec<usize> = (0..n).collect();
        for block in order.chunks_mut(16) {
            block.shuffle(&mut rng);
        }
        order
    }

    /// Whether the `occurrence`-th submission of line `key` fails with a 500.
    fn line_fails(&self, key: u128, occurrence: u32) -> bool {
        if self.knobs.error_rate <= 0.0 {
            return false;
        }
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(b"batch-line\0");
        h.update(&key.to_le_bytes());
        h.update(&occurrence.to_le_bytes());
        let mut rng = SmallRng::from_seed(*h.finalize().as_bytes());
        rng.gen::<f64>() < self.knobs.error_rate
    }

    /// Reserves `n` answer numbers.
    fn answer_numbers(&self, n: usize) -> u64 {
        self.next_answer.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// Turns answered lines into stored ones, rolling the line-error dice
    /// for those that succeeded; `server_error` writes a 500's result line.
    fn admit_lines(
        &self,
        inner: &mut Inner,
        pre: Vec<PreLine>,
        server_error: impl Fn(&PreLine) -> String,
    ) -> Vec<Line> {
        pre.into_iter()
            .map(|p| match &p.outcome {
                PreOutcome::Ok {
                    json,
                    prompt,
                    completion,
                } => {
                    let seen = inner.occurrences.entry(p.key).or_default();
                    let occurrence = *seen;
                    *seen += 1;
                    let (json, ok) = if self.line_fails(p.key, occurrence) {
                        (server_error(&p), false)
                    } else {
                        (json.clone(), true)
                    };
                    Line {
                        index: p.index,
                        custom_id: p.custom_id,
                        json: json.into_boxed_str(),
                        ok,
                        prompt: if ok { *prompt } else { 0 },
                        completion: if ok { *completion } else { 0 },
                        key: p.key,
                    }
                }
                PreOutcome::Invalid { json } => Line {
                    index: p.index,
                    custom_id: p.custom_id.clone(),
                    json: json.clone().into_boxed_str(),
                    ok: false,
                    prompt: 0,
                    completion: 0,
                    key: p.key,
                },
            })
            .collect()
    }

    /// Records the input fingerprint of valid batch `id`, created at `now`,
    /// and counts it as a duplicate when an earlier valid batch with the
    /// same input is unfinished or answered some line successfully: that
    /// work is submitted twice. (Resubmitting a batch whose every line
    /// failed, expired or was cancelled is a retry, not a duplicate.)
    fn note_input(inner: &mut Inner, input: u128, id: &str, now: Instant) {
        let earlier = inner.inputs.entry(input).or_default();
        let duplicate = earlier.iter().any(|other| {
            let core = inner
                .batches
                .get(other)
                .map(|b| &b.core)
                .or_else(|| inner.message_batches.get(other).map(|b| &b.core));
            // A deleted batch had ended; assume it did its work.
            core.is_none_or(|c| !c.timeline.stage(now).0.terminal() || c.ok > 0)
        });
        earlier.push(id.to_string());
        if duplicate {
            inner.counters.duplicate_batch_inputs += 1;
        }
    }

    /// Brings every unfinished batch up to `now`: counts the lines processed
    /// since the last look and writes the results of batches that ended.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        let Inner {
            next,
            files,
            batches,
            message_batches,
            successes,
            counters,
            ..
        } = inner;
        let mut reveal = |core: &mut Core| -> Stage {
            let (stage, processed) = core.timeline.stage(now);
            let from = core.revealed.min(processed);
            for line in &core.lines[from..processed] {
                counters.batch_lines += 1;
                if line.ok {
                    core.ok += 1;
                    core.prompt_tokens += line.prompt;
                    core.completion_tokens += line.completion;
                    counters.batch_prompt_tokens += line.prompt;
                    counters.batch_completion_tokens += line.completion;
                    let seen = successes.entry(line.key).or_default();
                    *seen += 1;
                    if *seen > 1 {
                        counters.duplicate_batch_successes += 1;
                    }
                } else {
                    core.failed += 1;
                }
            }
            core.revealed = core.revealed.max(processed);
            stage
        };
        for batch in batches.values_mut().filter(|b| !b.core.settled) {
            let stage = reveal(&mut batch.core);
            if stage.terminal() {
                openai::write_results(self, batch, stage, files, next);
                batch.core.settled = true;
            }
        }
        for batch in message_batches.values_mut().filter(|b| !b.core.settled) {
            if reveal(&mut batch.core).terminal() {
                batch.core.settled = true;
            }
        }
    }

    /// Adds the batch counters to `stats`, as of now.
    pub fn fill_stats(&self, stats: &mut Stats) {
        let mut g = self.lock();
        self.advance(&mut g, Instant::now());
        let c = g.counters;
        stats.files_uploaded = c.files_uploaded;
        stats.batches_created = c.batches_created;
        stats.message_batches_created = c.message_batches_created;
        stats.batch_lines = c.batch_lines;
        stats.batch_prompt_tokens = c.batch_prompt_tokens;
        stats.batch_completion_tokens = c.batch_completion_tokens;
        stats.duplicate_batch_inputs = c.duplicate_batch_inputs;
        stats.duplicate_batch_successes = c.duplicate_batch_successes;
    }
}

/// A page of `items` (newest first) after the item with id `after` (or
/// before the one with id `before`): the page and whether more follow.
fn page<'a, T>(
    items: &'a [T],
    id: impl Fn(&T) -> &str,
    after: Option<&str>,
    before: Option<&str>,
    limit: usize,
) -> (&'a [T], bool) {
    if let Some(b) = before {
        let end = items.iter().position(|i| id(i) == b).unwrap_or(0);
        let start = end.saturating_sub(limit);
        return (&items[start..end], start > 0);
    }
    let start = after
        .and_then(|a| items.iter().position(|i| id(i) == a))
        .map_or(0, |p| p + 1);
    let end = (start + limit).min(items.len());
    (&items[start..end], end < items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> Knobs {
        Knobs {
            speed: 10.0,
            error_rate: 0.0,
            expire_after: Duration::from_secs(100),
            token_limit: None,
            phase: Duration::from_millis(100),
        }
    }

    #[test]
    fn a_batch_validates_runs_finalizes_and_completes() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let tl = Timeline::new(t0, &knobs(), Duration::from_millis(100), 20);
        assert_eq!(tl.stage(ms(50)), (Stage::Validating, 0));
        assert_eq!(tl.stage(ms(100)), (Stage::InProgress, 0));
        assert_eq!(tl.stage(ms(1150)), (Stage::InProgress, 10));
        assert_eq!(
            tl.stage(ms(2150)),
            (Stage::Finalizing { since: ms(2100) }, 20)
        );
        assert_eq!(
            tl.stage(ms(2200)),
            (
                Stage::Completed {
                    since: ms(2100),
                    at: ms(2200)
                },
                20
            )
        );
        assert_eq!(tl.answered_at(0), ms(200));
        assert_eq!(tl.processed_by(tl.answered_at(4)), 5);
    }

    #[test]
    fn cancel_and_expiry_stop_processing() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut tl = Timeline::new(t0, &knobs(), Duration::from_millis(100), 20);
        tl.cancel = Some(ms(650));
        assert_eq!(tl.stage(ms(700)), (Stage::Cancelling { since: ms(650) }, 5));
        assert_eq!(
            tl.stage(ms(5000)),
            (
                Stage::Cancelled {
                    since: ms(650),
                    at: ms(750)
                },
                5
            )
        );
        let k = Knobs {
            expire_after: Duration::from_millis(400),
            ..knobs()
        };
        let tl = Timeline::new(t0, &k, Duration::from_millis(100), 20);
        assert_eq!(tl.stage(ms(399)), (Stage::InProgress, 2));
        assert_eq!(tl.stage(ms(400)), (Stage::Expired { at: ms(400) }, 3));
        let mut failed = Timeline::new(t0, &knobs(), Duration::from_millis(100), 20);
        failed.failed = true;
        assert_eq!(failed.stage(ms(99)), (Stage::Validating, 0));
        assert_eq!(failed.stage(ms(100)), (Stage::Failed { at: ms(100) }, 0));
    }

    #[test]
    fn pages_go_both_ways() {
        let items = ["e", "d", "c", "b", "a"];
        fn id<'x>(s: &'x &str) -> &'x str {
            s
        }
        assert_eq!(page(&items, id, None, None, 2), (&items[0..2], true));
        assert_eq!(page(&items, id, Some("d"), None, 2), (&items[2..4], true));
        assert_eq!(page(&items, id, Some("b"), None, 2), (&items[4..5], false));
        assert_eq!(page(&items, id, None, Some("b"), 2), (&items[1..3], true));
        assert_eq!(page(&items, id, None, Some("d"), 2), (&items[0..1], false));
    }

    #[test]
    fn tokens_are_alphanumeric_and_distinct() {
        let a = token(&[b"a"], 24);
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, token(&[b"b"], 24));
    }
}
