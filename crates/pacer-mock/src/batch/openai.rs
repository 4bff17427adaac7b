//! OpenAI's Files and Batch APIs: `/v1/files` and `/v1/batches`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::call::{begin, query_param, Call};
use super::{
    execute, fingerprint, multipart, never_run, page, token, BatchStore, Core, Inner, PreLine,
    PreOutcome, Stage, StoredFile, Timeline,
};
use crate::error_body;
use crate::reply::Endpoint;
use crate::state::MockState;

/// Largest batch input file.
const MAX_FILE_BYTES: usize = 200 * 1024 * 1024;
/// Most requests in a batch.
const MAX_LINES: usize = 50_000;
/// Most embedding inputs across the requests of an `/v1/embeddings` batch.
const MAX_EMBEDDING_INPUTS: u64 = 50_000;
/// Most validation errors reported on a failed batch.
const MAX_ERRORS: usize = 100;

/// An OpenAI batch.
#[derive(Debug)]
pub(super) struct Batch {
    pub core: Core,
    endpoint: &'static str,
    input_file_id: String,
    metadata: Value,
    /// Validation errors (`errors.data`), when it failed.
    errors: Vec<Value>,
    /// The model of every line, when they agree.
    model: Option<String>,
    /// Enqueued tokens by model.
    tokens_by_model: Vec<(String, u64)>,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
}

macro_rules! begin {
    ($state:expr, $headers:expr, $uri:expr) => {
        match begin(&$state, &$headers, &$uri, false) {
            Ok(call) => call,
            Err(response) => return *response,
        }
    };
}

fn no_such_file(call: Call<'_>, id: &str) -> Response {
    call.openai_error(404, &format!("No such File object: {id}"), Some("id"))
}

fn no_such_batch(call: Call<'_>, id: &str) -> Response {
    call.openai_error(
        404,
        &format!("No batch found with id '{id}'."),
        Some("batch_id"),
    )
}

/// Non-blank lines of a JSONL file.
fn count_lines(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .count()
}

/// `POST /v1/files` (multipart: `purpose=batch`, `file`).
pub(super) async fn upload(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let call = begin!(state, headers, uri);
    let boundary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary);
    let Some(boundary) = boundary else {
        return call.openai_error(
            400,
            "Invalid Content-Type header: expected multipart/form-data with a boundary.",
            None,
        );
    };
    let parts = match multipart::parse(&body, &boundary) {
        Ok(parts) => parts,
        Err(message) => return call.openai_error(400, message, None),
    };
    let Some(purpose) = parts.iter().find(|p| p.name == "purpose") else {
        return call.openai_error(
            400,
            "Missing required parameter: 'purpose'.",
            Some("purpose"),
        );
    };
    let purpose = String::from_utf8_lossy(&purpose.data).trim().to_string();
    if purpose != "batch" {
        return call.openai_error(
            400,
            &format!("'{purpose}' is not one of ['batch'] - 'purpose' (pacer mock serves batch files only)"),
            Some("purpose"),
        );
    }
    let Some(file) = parts.iter().find(|p| p.name == "file") else {
        return call.openai_error(400, "Missing required parameter: 'file'.", Some("file"));
    };
    if file.data.len() > MAX_FILE_BYTES {
        return call.openai_error(
            400,
            &format!(
                "File is too large: {} bytes. The maximum size of a file with purpose 'batch' is 200 MB.",
                file.data.len()
            ),
            Some("file"),
        );
    }
    let lines = count_lines(&file.data);
    if lines > MAX_LINES {
        return call.openai_error(
            400,
            &format!("The file has {lines} requests; a batch input file may contain at most 50,000 requests."),
            Some("file"),
        );
    }
    let store = &state.batches;
    let object = {
        let mut g = store.lock();
        let (id, n) = store.new_id(&mut g.next, "file-", 22);
        let file = StoredFile {
            id: id.clone(),
            n,
            owner: call.key,
            data: file.data.clone(),
            created_at: store.unix(Instant::now()),
            filename: file.filename.clone().unwrap_or_else(|| "file".into()),
            purpose: "batch",
        };
        let object = file.object();
        g.files.insert(id, file);
        g.counters.files_uploaded += 1;
        object
    };
    call.json(200, &object)
}

/// `GET /v1/files?purpose=&limit=&after=&order=`.
pub(super) async fn list_files(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let purpose = query_param(&uri, "purpose");
    let limit = match limit(&uri, 10_000, 10_000) {
        Ok(l) => l,
        Err(m) => return call.openai_error(400, &m, Some("limit")),
    };
    let ascending = query_param(&uri, "order").as_deref() == Some("asc");
    let after = query_param(&uri, "after");
    let store = &state.batches;
    let body = {
        let mut g = store.lock();
        store.advance(&mut g, Instant::now());
        let mut files: Vec<&StoredFile> = g
            .files
            .values()
            .filter(|f| f.owner == call.key)
            .filter(|f| purpose.as_deref().is_none_or(|p| f.purpose == p))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.n));
        if ascending {
            files.reverse();
        }
        let (items, has_more) = page(&files, |f| f.id.as_str(), after.as_deref(), None, limit);
        list_body(items.iter().map(|f| f.object()).collect(), has_more)
    };
    call.json(200, &body)
}

fn list_body(data: Vec<Value>, has_more: bool) -> Value {
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    json!({
        "object": "list", "first_id": id(data.first()), "last_id": id(data.last()),
        "has_more": has_more, "data": data,
    })
}

/// `limit` from the query: `default` when absent, 1 to `max`.
fn limit(uri: &Uri, default: usize, max: usize) -> Result<usize, String> {
    match query_param(uri, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "Invalid 'limit': expected an integer from 1 to {max}, got '{v}'."
            )),
        },
    }
}

/// `GET /v1/files/{id}`.
pub(super) async fn get_file(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let object = {
        let mut g = state.batches.lock();
        state.batches.advance(&mut g, Instant::now());
        g.files
            .get(&id)
            .filter(|f| f.owner == call.key)
            .map(StoredFile::object)
    };
    match object {
        Some(o) => call.json(200, &o),
        None => no_such_file(call, &id),
    }
}

/// `GET /v1/files/{id}/content`: the file's bytes.
pub(super) async fn file_content(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let data = {
        let mut g = state.batches.lock();
        state.batches.advance(&mut g, Instant::now());
        g.files
            .get(&id)
            .filter(|f| f.owner == call.key)
            .map(|f| f.data.clone())
    };
    match data {
        Some(d) => call.bytes("application/octet-stream", d),
        None => no_such_file(call, &id),
    }
}

/// `DELETE /v1/files/{id}`.
pub(super) async fn delete_file(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let deleted = {
        let mut g = state.batches.lock();
        state.batches.advance(&mut g, Instant::now());
        match g.files.get(&id) {
            Some(f) if f.owner == call.key => g.files.remove(&id).is_some(),
            _ => false,
        }
    };
    if deleted {
        call.json(200, &json!({"id": id, "object": "file", "deleted": true}))
    } else {
        no_such_file(call, &id)
    }
}

/// Checks `metadata`: at most 16 string pairs, keys up to 64 characters,
/// values up to 512.
fn check_metadata(metadata: Option<&Value>) -> Result<Value, String> {
    match metadata {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::Object(map)) => {
            if map.len() > 16 {
                return Err(format!(
                    "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an object with {} properties instead.",
                    map.len()
                ));
            }
            for (k, v) in map {
                if k.chars().count() > 64 {
                    return Err(format!(
                        "Invalid 'metadata': key '{k}' is longer than 64 characters."
                    ));
                }
                match v {
                    Value::String(s) if s.chars().count() <= 512 => {}
                    Value::String(_) => {
                        return Err(format!(
                            "Invalid 'metadata': the value of '{k}' is longer than 512 characters."
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "Invalid 'metadata': the value of '{k}' must be a string."
                        ))
                    }
                }
            }
            Ok(Value::Object(map.clone()))
        }
        Some(_) => Err("Invalid 'metadata': expected an object of strings.".to_string()),
    }
}

fn batch_error(code: &str, message: &str, param: Option<&str>, line: Option<usize>) -> Value {
    json!({"code": code, "message": message, "param": param, "line": line})
}

/// A batch's input, answered off the async workers.
struct Prepared {
    /// In processing order.
    lines: Vec<PreLine>,
    errors: Vec<Value>,
    tokens_by_model: Vec<(String, u64)>,
    model: Option<String>,
    input: u128,
}

/// Embedding inputs in an embeddings request.
fn embedding_inputs(body: &Value) -> u64 {
    match body.get("input") {
        Some(Value::Array(items)) if items.iter().any(|i| !i.is_number()) => items.len() as u64,
        Some(_) => 1,
        None => 0,
    }
}

/// The result line of a failed request.
fn error_line(id: &str, custom_id: &str, request_id: &str, status: u16, body: &Value) -> String {
    json!({
        "id": id, "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": null,
    })
    .to_string()
}

/// The ids of line `index` of batch `batch`: `batch_req_…` and `req_…`.
fn line_ids(batch: &str, index: usize) -> (String, String) {
    let i = (index as u64).to_le_bytes();
    (
        format!("batch_req_{}", token(&[batch.as_bytes(), &i], 32)),
        format!("req_{}", token(&[b"request", batch.as_bytes(), &i], 32)),
    )
}

impl BatchStore {
    /// Validates and answers every line of `content` for batch `id`, to be
    /// processed from `start` on.
    fn prepare_openai(
        &self,
        content: &[u8],
        endpoint: Endpoint,
        id: &str,
        timeline: &Timeline,
    ) -> Prepared {
        let mut errors = Vec::new();
        let mut requests: Vec<(String, Value)> = Vec::new();
        let mut seen = HashSet::new();
        let mut inputs = 0u64;
        let error = |errors: &mut Vec<Value>, e: Value| {
            if errors.len() < MAX_ERRORS {
                errors.push(e);
            }
        };
        for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = match serde_json::from_slice(raw) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) | Err(_) => {
                    error(
                        &mut errors,
                        batch_error(
                            "invalid_json_line",
                            "This line is not parseable as valid JSON.",
                            None,
                            Some(line),
                        ),
                    );
                    continue;
                }
            };
            let missing = |param: &str| {
                batch_error(
                    "missing_required_parameter",
                    &format!("Missing required parameter: '{param}'."),
                    Some(param),
                    Some(line),
                )
            };
            let Some(custom_id) = value.get("custom_id").and_then(Value::as_str) else {
                error(&mut errors, missing("custom_id"));
                continue;
            };
            match value.get("method").and_then(Value::as_str) {
                Some("POST") => {}
                Some(other) => {
                    error(
                        &mut errors,
                        batch_error(
                            "invalid_method",
                            &format!(
                                "Invalid value for 'method': '{other}'. Only 'POST' is supported."
                            ),
                            Some("method"),
                            Some(line),
                        ),
                    );
                    continue;
                }
                None => {
                    error(&mut errors, missing("method"));
                    continue;
                }
            }
            let Some(url) = value.get("url").and_then(Value::as_str) else {
                error(&mut errors, missing("url"));
                continue;
            };
            if url != endpoint.path() {
                let known = [
                    "/v1/chat/completions",
                    "/v1/embeddings",
                    "/v1/completions",
                    "/v1/responses",
                ];
                let (code, message) = if known.contains(&url) {
                    (
                        "mismatched_endpoint",
                        format!(
                            "The URL provided for this request ('{url}') does not match the batch endpoint ('{}').",
                            endpoint.path()
                        ),
                    )
                } else {
                    (
                        "invalid_url",
                        format!("The URL provided for this request ('{url}') is not supported."),
                    )
                };
                error(
                    &mut errors,
                    batch_error(code, &message, Some("url"), Some(line)),
                );
                continue;
            }
            let Some(body) = value.get("body").filter(|b| b.is_object()) else {
                error(&mut errors, missing("body"));
                continue;
            };
            if !seen.insert(custom_id.to_string()) {
                error(&mut errors, batch_error(
                    "duplicate_custom_id",
                    "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.",
                    Some("custom_id"),
                    Some(line),
                ));
                continue;
            }
            if endpoint == Endpoint::Embeddings {
                inputs += embedding_inputs(body);
            }
            requests.push((custom_id.to_string(), body.clone()));
        }
        if errors.is_empty() && requests.is_empty() {
            error(
                &mut errors,
                batch_error("empty_file", "The batch input file is empty.", None, None),
            );
        }
        if errors.is_empty() && inputs > MAX_EMBEDDING_INPUTS {
            error(&mut errors, batch_error(
                "too_many_embedding_inputs",
                &format!("The batch has {inputs} embedding inputs; an /v1/embeddings batch may have at most 50,000 across all its requests."),
                None,
                None,
            ));
        }
        let input = fingerprint(&[content]);
        if !errors.is_empty() {
            return Prepared {
                lines: Vec::new(),
                errors,
                tokens_by_model: Vec::new(),
                model: None,
                input,
            };
        }

        let mut tokens: HashMap<String, u64> = HashMap::new();
        let mut models = HashSet::new();
        let first = self.answer_numbers(requests.len());
        let order = self.processing_order(id, requests.len());
        let lines = order
            .iter()
            .enumerate()
            .map(|(k, &index)| {
                let (custom_id, body) = &requests[index];
                let model = body.get("model").and_then(Value::as_str);
                let key = fingerprint(&[endpoint.path().as_bytes(), body.to_string().as_bytes()]);
                let (line_id, request_id) = line_ids(id, index);
                let created = self.unix(timeline.answered_at(k));
                let outcome = match execute(endpoint, body, first + index as u64, created) {
                    Ok((out, charge, completion)) => {
                        if let Some(m) = model {
                            *tokens.entry(m.to_string()).or_default() += charge.total();
                            models.insert(m.to_string());
                        }
                        let json = json!({
                            "id": line_id, "custom_id": custom_id,
                            "response": {"status_code": 200, "request_id": request_id, "body": out},
                            "error": null,
                        })
                        .to_string();
                        PreOutcome::Ok {
                            json,
                            prompt: charge.prompt,
                            completion,
                        }
                    }
                    Err(message) => {
                        let body = error_body::invalid_request(false, &message);
                        PreOutcome::Invalid {
                            json: error_line(&line_id, custom_id, &request_id, 400, &body),
                        }
                    }
                };
                PreLine {
                    index,
                    custom_id: custom_id.clone(),
                    key,
                    outcome,
                }
            })
            .collect();
        let mut tokens_by_model: Vec<(String, u64)> = tokens.into_iter().collect();
        tokens_by_model.sort();
        Prepared {
            lines,
            errors,
            tokens_by_model,
            model: if models.len() == 1 {
                models.into_iter().next()
            } else {
                None
            },
            input,
        }
    }

    /// Tokens enqueued for `model` by `owner`'s unfinished batches at `now`.
    fn enqueued(inner: &Inner, owner: usize, model: &str, now: Instant) -> u64 {
        inner
            .batches
            .values()
            .filter(|b| b.core.owner == owner && b.core.timeline.stage(now).0.enqueued())
            .flat_map(|b| b.tokens_by_model.iter())
            .filter(|(m, _)| m == model)
            .map(|(_, t)| t)
            .sum()
    }

    /// The batch object as of `now`.
    fn render_openai(&self, b: &Batch, now: Instant) -> Value {
        let core = &b.core;
        let (stage, _) = core.timeline.stage(now);
        let unix = |t: Instant| json!(self.unix(t));
        let tl = &core.timeline;
        let validated = !matches!(stage, Stage::Validating | Stage::Failed { .. });
        let in_progress_at = if validated && tl.cancel.is_none_or(|c| c >= tl.start) {
            unix(tl.start)
        } else {
            Value::Null
        };
        let (mut finalizing_at, mut completed_at, mut failed_at) =
            (Value::Null, Value::Null, Value::Null);
        let (mut expired_at, mut cancelling_at, mut cancelled_at) =
            (Value::Null, Value::Null, Value::Null);
        let mut never_run = 0;
        match stage {
            Stage::Validating | Stage::InProgress => {}
            Stage::Failed { at } => failed_at = unix(at),
            Stage::Finalizing { since } => finalizing_at = unix(since),
            Stage::Completed { since, at } => {
                finalizing_at = unix(since);
                completed_at = unix(at);
            }
            Stage::Cancelling { since } => cancelling_at = unix(since),
            Stage::Cancelled { since, at } => {
                cancelling_at = unix(since);
                cancelled_at = unix(at);
                never_run = core.unprocessed().len();
            }
            Stage::Expired { at } => {
                expired_at = unix(at);
                never_run = core.unprocessed().len();
            }
        }
        let total = if validated { core.lines.len() } else { 0 };
        let errors = if b.errors.is_empty() || !matches!(stage, Stage::Failed { .. }) {
            Value::Null
        } else {
            json!({"object": "list", "data": b.errors})
        };
        let usage = json!({
            "input_tokens": core.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": core.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": core.prompt_tokens + core.completion_tokens,
        });
        json!({
            "id": core.id, "object": "batch", "endpoint": b.endpoint, "model": b.model,
            "errors": errors, "input_file_id": b.input_file_id, "completion_window": "24h",
            "status": stage.openai_status(),
            "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
            "created_at": unix(tl.created), "in_progress_at": in_progress_at,
            "expires_at": unix(tl.deadline), "finalizing_at": finalizing_at,
            "completed_at": completed_at, "failed_at": failed_at, "expired_at": expired_at,
            "cancelling_at": cancelling_at, "cancelled_at": cancelled_at,
            "request_counts": {"total": total, "completed": core.ok, "failed": core.failed + never_run},
            "usage": usage,
            "metadata": b.metadata,
        })
    }
}

/// Writes an ended batch's output and error files.
pub(super) fn write_results(
    store: &BatchStore,
    b: &mut Batch,
    stage: Stage,
    files: &mut HashMap<String, StoredFile>,
    next: &mut u64,
) {
    let (code, message) = match stage {
        Stage::Expired { .. } => (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        ),
        Stage::Cancelled { .. } => (
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
        ),
        _ => ("", ""),
    };
    let (at, processed) = match stage {
        Stage::Completed { at, .. } | Stage::Cancelled { at, .. } | Stage::Expired { at } => {
            (at, b.core.revealed)
        }
        _ => return,
    };
    let mut output = String::new();
    let mut errors = String::new();
    for line in &b.core.lines[..processed] {
        let file = if line.ok { &mut output } else { &mut errors };
        file.push_str(&line.json);
        file.push('\n');
    }
    for line in b.core.unprocessed() {
        let (id, _) = line_ids(&b.core.id, line.index);
        let result = json!({
            "id": id, "custom_id": line.custom_id, "response": null,
            "error": {"code": code, "message": message},
        });
        errors.push_str(&result.to_string());
        errors.push('\n');
    }
    let created_at = store.unix(at);
    let mut write = |content: String, kind: &str| -> Option<String> {
        if content.is_empty() {
            return None;
        }
        let (id, n) = store.new_id(next, "file-", 22);
        files.insert(
            id.clone(),
            StoredFile {
                id: id.clone(),
                n,
                owner: b.core.owner,
                data: Bytes::from(content),
                created_at,
                filename: format!("{}_{kind}.jsonl", b.core.id),
                purpose: "batch_output",
            },
        );
        Some(id)
    };
    b.output_file_id = write(output, "output");
    b.error_file_id = write(errors, "error");
}

/// `POST /v1/batches`.
pub(super) async fn create(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let call = begin!(state, headers, uri);
    let req: Map<String, Value> =
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => map,
            _ => return call.openai_error(
                400,
                "We could not parse the JSON body of your request. The body must be a JSON object.",
                None,
            ),
        };
    let string = |k: &str| req.get(k).and_then(Value::as_str);
    let Some(input_file_id) = string("input_file_id") else {
        return call.openai_error(
            400,
            "Missing required parameter: 'input_file_id'.",
            Some("input_file_id"),
        );
    };
    let endpoint = match string("endpoint") {
        None => return call.openai_error(400, "Missing required parameter: 'endpoint'.", Some("endpoint")),
        Some("/v1/chat/completions") => Endpoint::ChatCompletions,
        Some("/v1/embeddings") => Endpoint::Embeddings,
        Some("/v1/completions") => Endpoint::Completions,
        Some("/v1/responses") => {
            return call.openai_error(
                400,
                "pacer mock does not serve /v1/responses, so it cannot run /v1/responses batches.",
                Some("endpoint"),
            )
        }
        Some(other) => {
            return call.openai_error(
                400,
                &format!("Invalid value: '{other}'. Supported values are: '/v1/chat/completions', '/v1/embeddings', '/v1/completions' and '/v1/responses'."),
                Some("endpoint"),
            )
        }
    };
    match string("completion_window") {
        Some("24h") => {}
        None => {
            return call.openai_error(
                400,
                "Missing required parameter: 'completion_window'.",
                Some("completion_window"),
            )
        }
        Some(other) => {
            return call.openai_error(
                400,
                &format!("Invalid value: '{other}'. Supported values are: '24h'."),
                Some("completion_window"),
            )
        }
    }
    let metadata = match check_metadata(req.get("metadata")) {
        Ok(m) => m,
        Err(message) => return call.openai_error(400, &message, Some("metadata")),
    };

    let store = &state.batches;
    let created = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        let file = match g.files.get(input_file_id).filter(|f| f.owner == call.key) {
            None => Err(format!("No such File object: {input_file_id}")),
            Some(f) if f.purpose != "batch" => Err(format!(
                "The input file {input_file_id} has purpose '{}'; a batch input file must be uploaded with purpose 'batch'.",
                f.purpose
            )),
            Some(f) => Ok(f.data.clone()),
        };
        file.map(|data| {
            let (id, n) = store.new_id(&mut g.next, "batch_", 32);
            let batch = Batch {
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
                endpoint: endpoint.path(),
                input_file_id: input_file_id.to_string(),
                metadata,
                errors: Vec::new(),
                model: None,
                tokens_by_model: Vec::new(),
                output_file_id: None,
                error_file_id: None,
            };
            let object = store.render_openai(&batch, now);
            g.batches.insert(id.clone(), batch);
            g.counters.batches_created += 1;
            let queue = g.queue_validation();
            (id, data, object, queue)
        })
    };
    let (id, data, object, (earlier, done)) = match created {
        Ok(c) => c,
        Err(message) => return call.openai_error(400, &message, Some("input_file_id")),
    };

    // Validate and answer the lines in the background; the batch stays
    // `validating` meanwhile, as OpenAI's does.
    let state = state.clone();
    tokio::spawn(async move {
        // Answer the lines as if processing starts after the least validation.
        let estimate = Timeline::new(
            Instant::now(),
            &state.batches.knobs,
            state.batches.knobs.phase,
            0,
        );
        let prepared = {
            let state = state.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                state
                    .batches
                    .prepare_openai(&data, endpoint, &id, &estimate)
            })
            .await
        };
        let prepared = prepared.unwrap_or_else(|_| {
            Prepared::failed(batch_error(
                "server_error",
                "The batch could not be validated because of a simulator error.",
                None,
                None,
            ))
        });
        if let Some(earlier) = earlier {
            let _ = earlier.await;
        }
        state.batches.finish_openai(&id, prepared, Instant::now());
        let _ = done.send(());
    });
    call.json(200, &object)
}

impl Prepared {
    fn failed(error: Value) -> Prepared {
        Prepared {
            lines: Vec::new(),
            errors: vec![error],
            tokens_by_model: Vec::new(),
            model: None,
            input: 0,
        }
    }
}

impl BatchStore {
    /// Ends the validation of batch `id` at `now`: it fails (its input's
    /// errors, or the enqueued-token limit), or its answered lines are queued.
    fn finish_openai(&self, id: &str, prepared: Prepared, now: Instant) {
        let mut g = self.lock();
        self.advance(&mut g, now);
        let Some(batch) = g.batches.get(id) else {
            return;
        };
        let owner = batch.core.owner;
        let stage = batch.core.timeline.stage(now).0;
        if stage != Stage::Validating {
            // Cancelled or expired while validating: nothing will run.
            let inner = &mut *g;
            let Some(batch) = inner.batches.get_mut(id) else {
                return;
            };
            batch.core.lines = never_run(prepared.lines);
            batch.core.timeline.lines = batch.core.lines.len();
            if stage.terminal() {
                write_results(self, batch, stage, &mut inner.files, &mut inner.next);
            }
            return;
        }
        let mut errors = prepared.errors;
        if errors.is_empty() {
            if let Some(limit) = self.knobs.token_limit {
                let over = prepared.tokens_by_model.iter().find(|(model, tokens)| {
                    BatchStore::enqueued(&g, owner, model, now) + tokens > limit
                });
                if let Some((model, _)) = over {
                    errors.push(batch_error(
                        "token_limit_exceeded",
                        &format!("Enqueued token limit reached for {model} in organization org-pacer-mock. Limit: {limit} enqueued tokens. Please try again once some in_progress batches have been completed."),
                        None,
                        None,
                    ));
                }
            }
        }
        let lines = if errors.is_empty() {
            BatchStore::note_input(&mut g, prepared.input, id, now);
            self.admit_lines(&mut g, prepared.lines, |p| {
                let (line_id, request_id) = line_ids(id, p.index);
                error_line(
                    &line_id,
                    &p.custom_id,
                    &request_id,
                    500,
                    &error_body::server_error(false, 500),
                )
            })
        } else {
            Vec::new()
        };
        let Some(batch) = g.batches.get_mut(id) else {
            return;
        };
        batch.core.timeline.ready(now, lines.len());
        batch.core.timeline.failed = !errors.is_empty();
        batch.core.lines = lines;
        batch.errors = errors;
        if batch.errors.is_empty() {
            batch.model = prepared.model;
            batch.tokens_by_model = prepared.tokens_by_model;
        }
    }
}

/// `GET /v1/batches/{id}`.
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
        g.batches
            .get(&id)
            .filter(|b| b.core.owner == call.key)
            .map(|b| store.render_openai(b, now))
    };
    match object {
        Some(o) => call.json(200, &o),
        None => no_such_batch(call, &id),
    }
}

/// `GET /v1/batches?limit=&after=`: newest first.
pub(super) async fn list(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let call = begin!(state, headers, uri);
    let limit = match limit(&uri, 20, 100) {
        Ok(l) => l,
        Err(m) => return call.openai_error(400, &m, Some("limit")),
    };
    let after = query_param(&uri, "after");
    let store = &state.batches;
    let body = {
        let mut g = store.lock();
        let now = Instant::now();
        store.advance(&mut g, now);
        let mut mine: Vec<&Batch> = g
            .batches
            .values()
            .filter(|b| b.core.owner == call.key)
            .collect();
        mine.sort_by_key(|b| std::cmp::Reverse(b.core.n));
        let (items, has_more) = page(&mine, |b| b.core.id.as_str(), after.as_deref(), None, limit);
        list_body(
            items.iter().map(|b| store.render_openai(b, now)).collect(),
            has_more,
        )
    };
    call.json(200, &body)
}

/// `POST /v1/batches/{id}/cancel`.
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
        match g.batches.get_mut(&id).filter(|b| b.core.owner == call.key) {
            None => None,
            Some(b) => {
                let (stage, _) = b.core.timeline.stage(now);
                match stage {
                    Stage::Validating | Stage::InProgress => {
                        b.core.timeline.cancel = Some(now);
                        Some(Ok(()))
                    }
                    Stage::Cancelling { .. } | Stage::Cancelled { .. } => Some(Ok(())),
                    other => Some(Err(other.openai_status())),
                }
            }
        }
        .map(|r| {
            r.map(|()| {
                store.advance(&mut g, now);
                store.render_openai(&g.batches[&id], now)
            })
        })
    };
    match result {
        None => no_such_batch(call, &id),
        Some(Ok(object)) => call.json(200, &object),
        Some(Err(status)) => call.openai_error(
            400,
            &format!("Cannot cancel a batch with status '{status}'."),
            None,
        ),
    }
}
