//! One request's path through the simulator.
//!
//! The order is the providers' order, and it matters to the clients under
//! test: an outage answers everyone; then the key is checked (a 401 costs
//! nothing); then the body; then the billing quota; then the rate limits,
//! which charge the request; only an admitted request can meet a simulated
//! fault, as on the real APIs, where a 500 still counted against your limit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::ChargeMode;
use crate::error_body;
use crate::faults::Verdict;
use crate::limits::{
    anthropic_headers, openai_duration, openai_headers, retry_after_headers, Admission, LimitKind,
    LimitSnapshot,
};
use crate::reply::{stream_events, success_body, Endpoint, Reply};
use crate::state::MockState;
use crate::stats::{body_key, Fault, Outcome, Route};

/// The key a request presents, and whether it presented one at all.
pub(crate) fn find_key<'h>(
    state: &MockState,
    headers: &'h HeaderMap,
) -> (Option<(&'h str, usize)>, bool) {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let x_api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let given = bearer.is_some_and(|k| !k.is_empty()) || x_api_key.is_some_and(|k| !k.is_empty());
    let known = [bearer, x_api_key]
        .into_iter()
        .flatten()
        .find_map(|k| state.keys.get(k).map(|i| (k, *i)));
    (known, given)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Builds and records one answer.
struct Answer<'a> {
    state: &'a MockState,
    endpoint: Endpoint,
    outcome: Outcome<'a>,
    headers: HeaderMap,
}

impl<'a> Answer<'a> {
    fn limit_headers(&mut self, snapshot: &LimitSnapshot) {
        if self.state.config.hide_headers {
            return;
        }
        if self.endpoint.is_anthropic() {
            anthropic_headers(snapshot, SystemTime::now(), &mut self.headers);
        } else {
            openai_headers(snapshot, &mut self.headers);
        }
    }

    fn peek_headers(&mut self, key: &str) {
        if !self.state.config.hide_headers {
            let snapshot = self.state.limiter.peek(key, Instant::now());
            self.limit_headers(&snapshot);
        }
    }

    fn record(&mut self, status: u16, fault: Option<Fault>) {
        self.outcome.status = status;
        self.outcome.fault = fault;
        self.state.recorder.finish(self.outcome);
    }

    fn finish_headers(&mut self, content_type: &'static str) -> HeaderMap {
        let id = format!("req_mock{:010}", self.outcome.seq);
        let name = if self.endpoint.is_anthropic() {
            "request-id"
        } else {
            "x-request-id"
        };
        if let Ok(v) = HeaderValue::try_from(id) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        std::mem::take(&mut self.headers)
    }

    /// A complete JSON answer.
    fn json(mut self, status: u16, body: &Value) -> Response {
        self.record(status, None);
        let headers = self.finish_headers("application/json");
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        (status, headers, bytes).into_response()
    }

    /// A 200 whose connection breaks after `share` of `bytes`.
    fn broken(mut self, content_type: &'static str, chunks: Vec<Bytes>, share: f64) -> Response {
        self.record(200, Some(Fault::Reset));
        let headers = self.finish_headers(content_type);
        let keep = ((chunks.len() as f64 * share) as usize).clamp(1, chunks.len().max(1));
        let items = chunks
            .into_iter()
            .take(keep)
            .map(Ok)
            .chain(std::iter::once(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated connection reset",
            ))));
        let body = Body::from_stream(futures::stream::iter(items));
        (StatusCode::OK, headers, body).into_response()
    }
}

/// Why a body is not a valid request for `endpoint`.
pub(crate) fn validate(endpoint: Endpoint, body: &Value) -> Result<(), &'static str> {
    if !body.is_object() {
        return Err(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        );
    }
    if !matches!(body.get("model"), Some(Value::String(m)) if !m.is_empty()) {
        return Err("you must provide a model parameter");
    }
    match endpoint {
        Endpoint::ChatCompletions if !body.get("messages").is_some_and(Value::is_array) => {
            Err("'messages' is a required property")
        }
        Endpoint::Messages if !body.get("messages").is_some_and(Value::is_array) => {
            Err("messages: Field required")
        }
        Endpoint::Messages if body.get("max_tokens").and_then(Value::as_u64).is_none() => {
            Err("max_tokens: Field required")
        }
        Endpoint::Completions if body.get("prompt").is_none() => {
            Err("'prompt' is a required property")
        }
        Endpoint::Embeddings if body.get("input").is_none() => {
            Err("'input' is a required property")
        }
        _ => Ok(()),
    }
}

fn refusal_message(
    anthropic: bool,
    model: &str,
    kind: LimitKind,
    snapshot: &LimitSnapshot,
    requested: u64,
    wait: Duration,
) -> String {
    let reading = match kind {
        LimitKind::Requests => snapshot.requests,
        LimitKind::Tokens => snapshot.tokens,
    };
    let (limit, used) = reading.map_or((0, 0), |r| (r.limit, r.used));
    let wait = openai_duration(wait);
    if anthropic {
        format!(
            "This request would exceed your organization's rate limit of {limit} {} per minute. Please try again in {wait}.",
            kind.as_str()
        )
    } else {
        let (what, short) = match kind {
            LimitKind::Requests => ("requests", "RPM"),
            LimitKind::Tokens => ("tokens", "TPM"),
        };
        format!(
            "Rate limit reached for {model} in organization org-pacer-mock on {what} per min ({short}): Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more."
        )
    }
}

/// `POST /v1/...`: the whole pipeline.
pub(crate) async fn api(
    state: Arc<MockState>,
    endpoint: Endpoint,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let state = &*state;
    let seq = state.seq.fetch_add(1, Ordering::Relaxed);
    let since_start = Instant::now().saturating_duration_since(state.started);
    let body_key = (endpoint != Endpoint::Models).then(|| body_key(&raw));
    let occurrence = state.recorder.arrive(body_key);
    let anthropic = endpoint.is_anthropic();
    let mut answer = Answer {
        state,
        endpoint,
        outcome: Outcome {
            seq,
            at: since_start,
            route: Route::Api(endpoint),
            status: 0,
            fault: None,
            key: None,
            body: body_key,
            client_request_id: headers
                .get("x-client-request-id")
                .and_then(|v| v.to_str().ok()),
            prompt_tokens: 0,
            completion_tokens: 0,
        },
        headers: HeaderMap::new(),
    };

    if state.config.outage.iter().any(|o| o.covers(since_start)) {
        return answer.json(503, &error_body::server_error(anthropic, 503));
    }

    let (key, key_given) = find_key(state, &headers);
    let Some((key, key_index)) = key else {
        return answer.json(401, &error_body::unauthorized(anthropic, key_given));
    };
    answer.outcome.key = Some(key_index);

    if endpoint == Endpoint::Models {
        answer.peek_headers(key);
        return answer.json(200, &crate::reply::models_body());
    }

    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(_) => {
            answer.peek_headers(key);
            let msg = "We could not parse the JSON body of your request.";
            return answer.json(400, &error_body::invalid_request(anthropic, msg));
        }
    };
    if let Err(msg) = validate(endpoint, &body) {
        answer.peek_headers(key);
        return answer.json(400, &error_body::invalid_request(anthropic, msg));
    }

    if state
        .config
        .quota
        .is_some_and(|q| state.recorder.accepted() >= q)
    {
        answer.peek_headers(key);
        return answer.json(429, &error_body::insufficient_quota(anthropic));
    }

    let cost = crate::tokens::charge(endpoint.path(), &body);
    // `--charge chars` makes the limiter disagree with `usage`, as OpenAI's does.
    let limiter_cost = match state.config.charge {
        ChargeMode::Tokens => cost.total(),
        ChargeMode::Chars => crate::tokens::chars_charge(endpoint.path(), &body),
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    match state.limiter.admit(key, limiter_cost, Instant::now()) {
        Admission::Admitted(snapshot) => answer.limit_headers(&snapshot),
        Admission::Refused {
            kind,
            wait,
            requested,
            snapshot,
        } => {
            answer.limit_headers(&snapshot);
            retry_after_headers(
                state.config.retry_after,
                wait,
                SystemTime::now(),
                &mut answer.headers,
            );
            let msg = refusal_message(anthropic, model, kind, &snapshot, requested, wait);
            return answer.json(
                429,
                &error_body::rate_limited(anthropic, kind.as_str(), &msg),
            );
        }
        Admission::TooLarge {
            kind,
            requested,
            snapshot,
        } => {
            answer.limit_headers(&snapshot);
            let limit = snapshot.tokens.map_or(0, |t| t.limit);
            let msg = format!(
                "Request too large for {model} in organization org-pacer-mock on tokens per min (TPM): Limit {limit}, Requested {requested}. The input or output tokens must be reduced in order to run successfully."
            );
            return answer.json(
                429,
                &error_body::rate_limited(anthropic, kind.as_str(), &msg),
            );
        }
    }
    let admitted_before = state.recorder.charge(limiter_cost);
    if state.config.quota.is_some_and(|q| admitted_before >= q) {
        return answer.json(429, &error_body::insufficient_quota(anthropic));
    }

    let roll = state.faults.roll(body_key.unwrap_or(0), occurrence);
    match roll.verdict {
        Verdict::Hang => {
            answer.record(0, Some(Fault::Hang));
            let mut stop = state.shutdown.subscribe();
            let _ = stop.wait_for(|stopping| *stopping).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Verdict::ServerError(status) => {
            tokio::time::sleep(roll.latency).await;
            return answer.json(status, &error_body::server_error(anthropic, status));
        }
        Verdict::Overloaded => {
            tokio::time::sleep(roll.latency).await;
            return answer.json(529, &error_body::overloaded());
        }
        Verdict::Answer | Verdict::Reset => {}
    }

    let reply = Reply::generate(endpoint, &body);
    answer.outcome.prompt_tokens = cost.prompt;
    answer.outcome.completion_tokens = reply.completion_tokens();
    let streaming =
        endpoint.can_stream() && body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !roll.latency.is_zero() {
        tokio::time::sleep(roll.latency).await;
    }

    if !streaming {
        let out = success_body(endpoint, &body, &reply, cost.prompt, seq, unix_now());
        if roll.verdict == Verdict::Reset {
            let bytes = Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
            let cut = ((bytes.len() as f64 * roll.break_at) as usize)
                .clamp(1, bytes.len().saturating_sub(1).max(1));
            let chunks = vec![bytes.slice(..cut), bytes.slice(cut..)];
            return answer.broken("application/json", chunks, 0.5);
        }
        return answer.json(200, &out);
    }

    let events = stream_events(endpoint, &body, &reply, cost.prompt, seq, unix_now());
    if roll.verdict == Verdict::Reset {
        return answer.broken("text/event-stream", events, roll.break_at);
    }
    let mut events = events;
    let fault = match roll.cut_at {
        Some(share) => {
            // Keep at least one event and never the terminator.
            let keep = ((events.len().saturating_sub(1)) as f64 * share) as usize;
            events.truncate(keep.clamp(1, events.len().saturating_sub(1).max(1)));
            Some(Fault::Cut)
        }
        None => None,
    };
    answer.record(200, fault);
    let headers = answer.finish_headers("text/event-stream");
    let delay = Duration::from_millis(state.config.chunk_delay);
    let stream =
        futures::stream::iter(events.into_iter().enumerate()).then(move |(i, event)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, std::io::Error>(event)
        });
    let mut response = (StatusCode::OK, headers, Body::from_stream(stream)).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("cache-control"),
        HeaderValue::from_static("no-cache"),
    );
    response
}
