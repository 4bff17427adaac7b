//! Anthropic's Message Batches: `/v1/messages/batches`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::call::{begin, query_param, Call};
use super::{
    execute, fingerprint, never_run, page, BatchStore, Core, PreLine, PreOutcome, Stage, Timeline,
};
use crate::reply::Endpoint;
use crate::state::MockState;

/// Largest create request.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Most requests in a batch.
const MAX_REQUESTS: usize = 100_000;

/// An Anthropic Message Batch.
#[derive(Debug)]
pub(super) struct MessageBatch {
    pub core: Core,
    /// How many requests it has (its lines exist once answered).
    requests: usize,
}

macro_rules! begin {
    ($state:expr, $headers:expr, $uri:expr) => {
        match begin(&$state, &$headers, &$uri, true) {
            Ok(call) => call,
            Err(response) => return *response,
        }
    };
}

fn not_found(call: Call<'_>, id: &str) -> Response {
    call.anthropic_error(
        404,
        "not_found_error",
        &format!("Message Batch {id} not found."),
    )
}

fn valid_custom_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The result line of an errored request.
fn errored(custom_id: &str, kind: &str, message: &str) -> String {
    json!({"custom_id": custom_id, "result": {"type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": message}}}})
    .to_string()
}

/// A create request that passed the synchronous checks.
struct Checked {
    /// `(custom_id, params)` in input order.
    requests: Vec<(String, Value)>,
    /// Fingerprint of the set of requests (order does not matter).
    input: u128,
}

/// Checks the create request `raw` as Anthropic does before answering;
/// `Err` is the 400's message.
fn check(raw: &[u8]) -> Result<Checked, String> {
    let mut body: Value = serde_json::from_slice(raw)
        .map_err(|e| format!("The request body is not valid JSON: {e}"))?;
    let requests = match body.get_mut("requests") {
        None => return Err("requests: Field required".into()),
        Some(Value::Array(r)) => std::mem::take(r),
        Some(_) => return Err("requests: Input should be a valid list".into()),
    };
    if requests.is_empty() {
        return Err("requests: List should have at least 1 item after validation, not 0".into());
    }
    if requests.len() > MAX_REQUESTS {
        return Err(format!(
            "requests: List should have at most {MAX_REQUESTS} items after validation, not {}",
            requests.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut checked = Vec::with_capacity(requests.len());
    let mut keys = Vec::with_capacity(requests.len());
    for (i, mut r) in requests.into_iter().enumerate() {
        let custom_id = match r.get("custom_id") {
            None => return Err(format!("requests.{i}.custom_id: Field required")),
            Some(Value::String(c)) if valid_custom_id(c) => c.clone(),
            Some(_) => {
                return Err(format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                ))
            }
        };
        let params = match r.get_mut("params") {
            None => return Err(format!("requests.{i}.params: Field required")),
            Some(p @ Value::Object(_)) => p.take(),
            Some(_) => {
                return Err(format!(
                    "requests.{i}.params: Input should be a valid dictionary"
                ))
            }
        };
        if !seen.insert(custom_id.clone()) {
            return Err(format!(
                "requests: custom_id values must be unique within a batch, and '{custom_id}' appears more than once"
            ));
        }
        keys.push(fingerprint(&[
            custom_id.as_bytes(),
            params.to_string().as_bytes(),
        ]));
        checked.push((custom_id, params));
    }
    keys.sort_unstable();
    let joined: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
    Ok(Checked {
        requests: checked,
        input: fingerprint(&[b"message-batch", &joined]),
    })
}

impl BatchStore {
    /// Answers the requests of batch `id`, in processing order.
    fn answer_anthropic(
        &self,
        requests: &[(String, Value)],
        id: &str,
        timeline: &Timeline,
    ) -> Vec<PreLine> {
        let first = self.answer_numbers(requests.len());
        let order = self.processing_order(id, requests.len());
        order
            .iter()
            .enumerate()
            .map(|(k, &index)| {
                let (custom_id, params) = &requests[index];
                let key = fingerprint(&[
                    Endpoint::Messages.path().as_bytes(),
                    params.to_string().as_bytes(),
                ]);
                let created = self.unix(timeline.answered_at(k));
                let outcome =
                    match execute(Endpoint::Messages, params, first + index as u64, created) {
                        Ok((message, charge, completion)) => PreOutcome::Ok {
                            json: json!({"custom_id": custom_id,
                            "result": {"type": "succeeded", "message": message}})
                            .to_string(),
                            prompt: charge.prompt,
                            completion,
                        },
                        Err(message) => PreOutcome::Invalid {
                            json: errored(custom_id, "invalid_request_error", &message),
                        },
                    };
                PreLine {
                    index,
                    custom_id: custom_id.clone(),
                    key,
                    outcome,
                }
            })
            .collect()
    }

    /// Queues the answered lines of batch `id` at `now`.
    fn finish_anthropic(&self, id: &str, lines: Vec<PreLine>, now: Instant) {
        let mut g = self.lock();
        self.advance(&mut g, now);
        let Some(stage) = g
            .message_batches
            .get(id)
            .map(|b| b.core.timeline.stage(now).0)
        else {
            return;
        };
        let lines = if stage == Stage::Validating {
            self.admit_lines(&mut g, lines, |p| {
                errored(&p.custom_id, "api_error", "Internal server error")
            })
        } else {
            // Cancelled or expired before processing started.
            never_run(lines)
        };
        let Some(batch) = g.message_batches.get_mut(id) else {
            return;
        };
        if stage == Stage::Validating {
            batch.core.timeline.ready(now, lines.len());
        } else {
            batch.core.timeline.lines = lines.len();
        }
        batch.core.lines = lines;
    }

    /// The Message Batch object as of `now`; `origin` makes `results_url`.
    fn render_anthropic(&self, b: &MessageBatch, now: Instant, origin: &str) -> Value {
        let core = &b.core;
        let tl = &core.timeline;
        let (stage, _) = tl.stage(now);
        let n = b.requests;
        let never_run = n - (core.ok + core.failed).min(n);
        let zero =
            json!({"processing": n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0});
        let counts = |canceled: usize, expired: usize| {
            json!({"processing": 0, "succeeded": core.ok, "errored": core.failed,
                   "canceled": canceled, "expired": expired})
        };
        let (status, ended_at, request_counts) = match stage {
            Stage::Completed { at, .. } => ("ended", Some(at), counts(0, 0)),
            Stage::Cancelled { at, .. } => ("ended", Some(at), counts(never_run, 0)),
            Stage::Expired { at } | Stage::Failed { at } => {
                ("ended", Some(at), counts(0, never_run))
            }
            Stage::Cancelling { .. } => ("canceling", None, zero),
            Stage::Validating | Stage::InProgress | Stage::Finalizing { .. } => {
                ("in_progress", None, zero)
            }
        };
        let time = |t: Option<Instant>| t.map_or(Value::Null, |t| json!(self.rfc3339(t)));
        json!({
            "id": core.id, "type": "message_batch", "processing_status": status,
            "request_counts": request_counts,
            "ended_at": time(ended_at), "created_at": time(Some(tl.created)),
            "expires_at": time(Some(tl.deadline)), "archived_at": null,
            "cancel_initiated_at": time(tl.cancel),
            "results_url": ended_at.map(|_| format!("{origin}/v1/messages/batches/{}/results", core.id)),
        })
    }
}

/// `POST /v1/messages/batches`.
pub(super) async fn create(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let call = begin!(state, headers, uri);
    if body.len() > MAX_BODY_BYTES {
        return call.anthropic_error(
            413,
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes (256 MB for Message Batches).",
        );
    }
    let checked = tokio::task::spawn_blocking(move || check(&body)).await;
    let checked = match checked {
        Ok(Ok(c)) => c,
        Ok(Err(message)) => return call.anthropic_error(400, "invalid_request_error", &message),
        Err(_) => return call.anthropic_error(500, "api_error", "Internal server error"),
    };
    let store = &state.batches;
    let (id, object) = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        let (id, n) = store.new_id(&mut g.next, "msgbatch_", 24);
        BatchStore::note_input(&mut g, checked.input, &id, now);
        let batch = MessageBatch {
            core: Core {
                id: id.clone(),
                n,
                owner: call.key,
                timeline: Timeline::pending(now, &store.knobs, store.knobs.phase),
                lines: Vec::new(),
                revealed: 0,
                ok: 0,
                failed: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                settled: false,
            },
            requests: checked.requests.len(),
        };
        let object = store.render_anthropic(&batch, now, &call.origin);
        g.message_batches.insert(id.clone(), batch);
        g.counters.message_batches_created += 1;
        (id, object)
    };

    // Answer the requests in the background; the batch is in progress
    // meanwhile, and processing starts once they are answered and
    // `--batch-phase` has passed.
    let state = state.clone();
    tokio::spawn(async move {
        let knobs = &state.batches.knobs;
        let estimate = Timeline::new(Instant::now(), knobs, knobs.phase, 0);
        let lines = {
            let state = state.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                state
                    .batches
                    .answer_anthropic(&checked.requests, &id, &estimate)
            })
            .await
        };
        if let Ok(lines) = lines {
            state.batches.finish_anthropic(&id, lines, Instant::now());
        }
    });
    call.json(200, &object)
}

/// `GET /v1/messages/batches/{id}`.
pub(super) async fn retrieve(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let store = &state.batches;
    let object = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        g.message_batches
            .get(&id)
            .filter(|b| b.core.owner == call.key)
            .map(|b| store.render_anthropic(b, now, &call.origin))
    };
    match object {
        Some(o) => call.json(200, &o),
        None => not_found(call, &id),
    }
}

/// `GET /v1/messages/batches?limit=&after_id=&before_id=`: newest first.
pub(super) async fn list(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let limit = match query_param(&uri, "limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return call.anthropic_error(
                    400,
                    "invalid_request_error",
                    &format!("limit: Input should be an integer from 1 to 1000, got '{v}'"),
                )
            }
        },
    };
    let after = query_param(&uri, "after_id");
    let before = query_param(&uri, "before_id");
    let store = &state.batches;
    let body = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        let mut mine: Vec<&MessageBatch> = g
            .message_batches
            .values()
            .filter(|b| b.core.owner == call.key)
            .collect();
        mine.sort_by_key(|b| std::cmp::Reverse(b.core.n));
        let (items, has_more) = page(
            &mine,
            |b| b.core.id.as_str(),
            after.as_deref(),
            before.as_deref(),
            limit,
        );
        let data: Vec<Value> = items
            .iter()
            .map(|b| store.render_anthropic(b, now, &call.origin))
            .collect();
        json!({
            "data": data, "has_more": has_more,
            "first_id": items.first().map(|b| b.core.id.clone()),
            "last_id": items.last().map(|b| b.core.id.clone()),
        })
    };
    call.json(200, &body)
}

/// `POST /v1/messages/batches/{id}/cancel`.
pub(super) async fn cancel(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let store = &state.batches;
    let result = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        let found = g
            .message_batches
            .get_mut(&id)
            .filter(|b| b.core.owner == call.key);
        let verdict = found.map(|b| match b.core.timeline.stage(now).0 {
            Stage::Validating | Stage::InProgress | Stage::Finalizing { .. } => {
                b.core.timeline.cancel = Some(now);
                true
            }
            Stage::Cancelling { .. } => true,
            _ => false,
        });
        verdict.map(|ok| {
            store.advance(&mut g, now);
            (
                ok,
                store.render_anthropic(&g.message_batches[&id], now, &call.origin),
            )
        })
    };
    match result {
        None => not_found(call, &id),
        Some((true, object)) => call.json(200, &object),
        Some((false, _)) => call.anthropic_error(
            400,
            "invalid_request_error",
            &format!("Message Batch {id} has already ended and cannot be canceled."),
        ),
    }
}

/// `DELETE /v1/messages/batches/{id}`: only once ended.
pub(super) async fn delete(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let store = &state.batches;
    let result = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        match g
            .message_batches
            .get(&id)
            .filter(|b| b.core.owner == call.key)
        {
            None => None,
            Some(b) if b.core.timeline.stage(now).0.terminal() => {
                g.message_batches.remove(&id);
                Some(true)
            }
            Some(_) => Some(false),
        }
    };
    match result {
        None => not_found(call, &id),
        Some(true) => call.json(200, &json!({"id": id, "type": "message_batch_deleted"})),
        Some(false) => call.anthropic_error(
            400,
            "invalid_request_error",
            &format!(
                "Message Batch {id} cannot be deleted while it is processing; cancel it first."
            ),
        ),
    }
}

/// `GET /v1/messages/batches/{id}/results`: JSONL, once ended.
pub(super) async fn results(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let store = &state.batches;
    let result = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        g.message_batches
            .get(&id)
            .filter(|b| b.core.owner == call.key)
            .map(|b| {
                let stage = b.core.timeline.stage(now).0;
                if !stage.terminal() {
                    return None;
                }
                let never = match stage {
                    Stage::Cancelled { .. } => "canceled",
                    _ => "expired",
                };
                let mut out = String::new();
                for line in &b.core.lines[..b.core.revealed] {
                    out.push_str(&line.json);
                    out.push('\n');
                }
                for line in b.core.unprocessed() {
                    let result = json!({"custom_id": line.custom_id, "result": {"type": never}});
                    out.push_str(&result.to_string());
                    out.push('\n');
                }
                Some(out)
            })
    };
    match result {
        None => not_found(call, &id),
        Some(None) => call.anthropic_error(
            400,
            "invalid_request_error",
            &format!("Message Batch {id} has not ended yet; its results are available once processing_status is 'ended'."),
        ),
        Some(Some(out)) => call.bytes("application/x-jsonl", Bytes::from(out)),
    }
}
