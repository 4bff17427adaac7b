//! What the simulator saw: counters for assertions and a request log.
//!
//! Tests of the engine need to ask the peer, not the engine, what happened:
//! how many requests arrived, which got 429, whether any request body was sent
//! twice (a resumed run must not redo finished work). Counting is one short
//! mutex section per request, with nothing held across an `.await`; the log
//! is capped so a long benchmark cannot exhaust memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reply::Endpoint;

/// Most entries the request log keeps; later requests are counted but not logged.
pub const LOG_CAPACITY: usize = 2_000_000;

/// Counters, as `GET /mock/stats` returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Requests received on `/v1/*` (every status, hangs included).
    pub requests: u64,
    /// Requests admitted by the limits (and charged).
    pub accepted: u64,
    /// Answers by status code (`"200"`, `"429"`...). Hung requests are not here.
    pub by_status: BTreeMap<String, u64>,
    /// Authenticated requests by key fingerprint (first 4 characters + `…`).
    pub by_key: BTreeMap<String, u64>,
    /// Distinct request bodies seen.
    pub distinct_bodies: u64,
    /// Distinct bodies seen more than once.
    pub duplicate_bodies: u64,
    /// Extra sends of an already seen body (retries included).
    pub duplicate_requests: u64,
    /// Extra successful (200) answers to an already answered body: work done twice.
    pub duplicate_successes: u64,
    /// Tokens charged at admission (prompt + max_tokens × n).
    pub tokens_charged: u64,
    /// Prompt tokens reported in successful answers' usage.
    pub prompt_tokens: u64,
    /// Completion tokens reported in successful answers' usage.
    pub completion_tokens: u64,
    /// Requests accepted and never answered (`--hang-rate`).
    pub hangs: u64,
    /// Answers whose connection was closed midway (`--reset-rate`).
    pub resets: u64,
    /// Streams ended without their final event (`--stream-cut-rate`).
    pub stream_cuts: u64,
    /// Files uploaded with `POST /v1/files`.
    pub files_uploaded: u64,
    /// OpenAI batches created with `POST /v1/batches` (including those that
    /// later fail validation).
    pub batches_created: u64,
    /// Anthropic Message Batches created with `POST /v1/messages/batches`.
    pub message_batches_created: u64,
    /// Batch lines processed, answered or errored (expired, cancelled and
    /// never validated lines are not processed).
    pub batch_lines: u64,
    /// Prompt tokens in the usage of successfully processed batch lines.
    pub batch_prompt_tokens: u64,
    /// Completion tokens in the usage of successfully processed batch lines.
    pub batch_completion_tokens: u64,
    /// Batches (of either provider) that passed validation although an
    /// earlier batch with the same input had passed validation and was still
    /// unfinished, or had answered at least one line successfully: work
    /// submitted twice. The same input is the same input file content
    /// (blake3 of its bytes) or the same set of Anthropic requests
    /// (custom_id and params, in any order). Resubmitting a batch whose every
    /// line failed, expired or was cancelled is a retry and is not counted.
    pub duplicate_batch_inputs: u64,
    /// Batch lines answered 200 whose request (url and body) had already
    /// been answered 200 in a batch line: work done twice across batches.
    pub duplicate_batch_successes: u64,
}

/// A deliberate fault applied to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Never answered.
    Hang,
    /// Connection closed in the middle of the answer.
    Reset,
    /// Stream ended without its final event.
    Cut,
}

/// What a request was sent to: a simulated API endpoint, or another path
/// (the batch and file APIs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route<'a> {
    Api(Endpoint),
    Path(&'a str),
}

enum StoredRoute {
    Api(Endpoint),
    Path(Box<str>),
}

impl StoredRoute {
    fn path(&self) -> &str {
        match self {
            StoredRoute::Api(e) => e.path(),
            StoredRoute::Path(p) => p,
        }
    }
}

/// One line of `GET /mock/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Arrival number, from 0.
    pub seq: u64,
    /// Milliseconds since the server started (on tokio's clock).
    pub at_ms: u64,
    /// The request path without its query (`/v1/chat/completions`,
    /// `/v1/batches/batch_…`, `/v1/files`...).
    pub path: String,
    /// The status sent; 0 when the request was never answered.
    pub status: u16,
    /// A deliberate fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The `X-Client-Request-Id` request header (pacer sends the custom_id there).
    pub client_request_id: Option<String>,
    /// [`body_hash`] of the request body (none for `GET`).
    pub body_hash: Option<String>,
}

/// The fingerprint the log and stats use for a request body.
pub fn body_hash(body: &[u8]) -> String {
    format!("{:032x}", body_key(body))
}

pub(crate) fn body_key(body: &[u8]) -> u128 {
    let h = blake3::hash(body);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_be_bytes(b)
}

/// A short, safe name for a key: never the key itself.
pub(crate) fn key_fingerprint(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    format!("{head}…")
}

/// What the server tells the recorder about one answered request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    pub seq: u64,
    pub at: Duration,
    pub route: Route<'a>,
    pub status: u16,
    pub fault: Option<Fault>,
    pub key: Option<usize>,
    pub body: Option<u128>,
    pub client_request_id: Option<&'a str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

struct CompactEntry {
    seq: u64,
    at_ms: u64,
    route: StoredRoute,
    status: u16,
    fault: Option<Fault>,
    client_request_id: Option<Box<str>>,
    body: Option<u128>,
}

#[derive(Default, Clone, Copy)]
struct BodySeen {
    seen: u32,
    ok: u32,
}

#[derive(Default)]
struct Inner {
    requests: u64,
    by_status: HashMap<u16, u64>,
    by_key: Vec<u64>,
    bodies: HashMap<u128, BodySeen>,
    duplicate_bodies: u64,
    duplicate_requests: u64,
    duplicate_successes: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    hangs: u64,
    resets: u64,
    stream_cuts: u64,
    log: Vec<CompactEntry>,
}

/// The shared recorder behind `/mock/stats` and `/mock/log`.
pub(crate) struct Recorder {
    key_names: Vec<String>,
    accepted: AtomicU64,
    tokens_charged: AtomicU64,
    inner: Mutex<Inner>,
}

impl Recorder {
    pub fn new(keys: &[String]) -> Self {
        Recorder {
            key_names: keys.iter().map(|k| key_fingerprint(k)).collect(),
            accepted: AtomicU64::new(0),
            tokens_charged: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                by_key: vec![0; keys.len()],
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request arrived; returns how many times its body was seen before.
    pub fn arrive(&self, body: Option<u128>) -> u32 {
        let mut g = self.lock();
        g.requests += 1;
        let Some(body) = body else { return 0 };
        let seen = {
            let e = g.bodies.entry(body).or_default();
            e.seen += 1;
            e.seen
        };
        if seen == 2 {
            g.duplicate_bodies += 1;
        }
        if seen >= 2 {
            g.duplicate_requests += 1;
        }
        seen - 1
    }

    /// A request was admitted and charged `tokens`; returns how many were
    /// admitted before it (the quota's count).
    pub fn charge(&self, tokens: u64) -> u64 {
        self.tokens_charged.fetch_add(tokens, Ordering::Relaxed);
        self.accepted.fetch_add(1, Ordering::Relaxed)
    }

    /// Requests admitted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// A request got its answer (or its fault).
    pub fn finish(&self, o: Outcome<'_>) {
        let mut g = self.lock();
        match o.fault {
            Some(Fault::Hang) => g.hangs += 1,
            Some(Fault::Reset) => g.resets += 1,
            Some(Fault::Cut) => g.stream_cuts += 1,
            None => {}
        }
        if o.fault != Some(Fault::Hang) {
            *g.by_status.entry(o.status).or_default() += 1;
        }
        if let Some(k) = o.key {
            if let Some(c) = g.by_key.get_mut(k) {
                *c += 1;
            }
        }
        if o.status == 200 && o.fault != Some(Fault::Reset) {
            g.prompt_tokens += o.prompt_tokens;
            g.completion_tokens += o.completion_tokens;
            if let Some(body) = o.body {
                let e = g.bodies.entry(body).or_default();
                e.ok += 1;
                if e.ok >= 2 {
                    g.duplicate_successes += 1;
                }
            }
        }
        if g.log.len() < LOG_CAPACITY {
            g.log.push(CompactEntry {
                seq: o.seq,
                at_ms: o.at.as_millis() as u64,
                route: match o.route {
                    Route::Api(e) => StoredRoute::Api(e),
                    Route::Path(p) => StoredRoute::Path(p.into()),
                },
                status: if o.fault == Some(Fault::Hang) {
                    0
                } else {
                    o.status
                },
                fault: o.fault,
                client_request_id: o.client_request_id.map(Into::into),
                body: o.body,
            });
        }
    }

    pub fn stats(&self) -> Stats {
        let g = self.lock();
        let mut by_key = BTreeMap::new();
        for (name, n) in self.key_names.iter().zip(&g.by_key) {
            if *n > 0 {
                *by_key.entry(name.clone()).or_default() += n;
            }
        }
        Stats {
            requests: g.requests,
            accepted: self.accepted(),
            by_status: g
                .by_status
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            by_key,
            distinct_bodies: g.bodies.len() as u64,
            duplicate_bodies: g.duplicate_bodies,
            duplicate_requests: g.duplicate_requests,
            duplicate_successes: g.duplicate_successes,
            tokens_charged: self.tokens_charged.load(Ordering::Relaxed),
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.completion_tokens,
            hangs: g.hangs,
            resets: g.resets,
            stream_cuts: g.stream_cuts,
            ..Stats::default()
        }
    }

    /// Log entries with `seq >= since`, at most `limit` of them, in arrival order.
    pub fn log(&self, since: u64, limit: usize) -> Vec<LogEntry> {
        let g = self.lock();
        // Entries are pushed when answered, so seq order is nearly but not
        // exactly push order; sort the copy.
        let mut picked: Vec<LogEntry> = g
            .log
            .iter()
            .filter(|e| e.seq >= since)
            .map(|e| LogEntry {
                seq: e.seq,
                at_ms: e.at_ms,
                path: e.route.path().to_string(),
                status: e.status,
                fault: e.fault,
                client_request_id: e.client_request_id.as_deref().map(str::to_string),
                body_hash: e.body.map(|b| format!("{b:032x}")),
            })
            .collect();
        drop(g);
        picked.sort_by_key(|e| e.seq);
        picked.truncate(limit);
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(seq: u64, status: u16, body: u128) -> Outcome<'static> {
        Outcome {
            seq,
            at: Duration::from_millis(seq),
            route: Route::Api(Endpoint::ChatCompletions),
            status,
            fault: None,
            key: Some(0),
            body: Some(body),
            client_request_id: Some("id-1"),
            prompt_tokens: 9,
            completion_tokens: 3,
        }
    }

    #[test]
    fn duplicates_are_counted_per_body() {
        let r = Recorder::new(&["sk-secret-key".to_string()]);
        for (seq, body, status) in [
            (0, 1, 429),
            (1, 1, 200),
            (2, 2, 200),
            (3, 1, 200),
            (4, 1, 200),
        ] {
            r.arrive(Some(body));
            r.finish(outcome(seq, status, body));
        }
        let s = r.stats();
        assert_eq!(s.requests, 5);
        assert_eq!(s.distinct_bodies, 2);
        assert_eq!(s.duplicate_bodies, 1);
        assert_eq!(s.duplicate_requests, 3);
        assert_eq!(s.duplicate_successes, 2);
        assert_eq!(s.by_status["200"], 4);
        assert_eq!(s.by_key["sk-s…"], 5);
        assert_eq!(s.prompt_tokens, 36);
        let log = r.log(3, 10);
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(
            log[0].body_hash.as_deref(),
            Some("00000000000000000000000000000001")
        );
    }

    #[test]
    fn stats_never_hold_a_whole_key() {
        let r = Recorder::new(&["sk-very-secret".to_string()]);
        r.arrive(None);
        r.finish(Outcome {
            body: None,
            ..outcome(0, 200, 0)
        });
        let json = serde_json::to_string(&r.stats()).unwrap();
        assert!(!json.contains("sk-very-secret"));
    }
}
