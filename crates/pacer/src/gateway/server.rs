use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{
    ClientId, ClientKeys, Finished, GatewayError, GatewayMetrics, OnFinished, PaceError, PaceLayer,
    PaceOptions, Paced, Upstream,
};
use crate::cost::{Budget, PriceTable, Reservation};
use crate::endpoint::Endpoint;
use crate::engine::{Limits, Pacer};
use crate::retry::RetryPolicy;
use crate::tokens::estimate_request;
use crate::transport::{display_url, TransportConfig, TransportError};

/// The largest request body accepted by default (32 MiB: a long document
/// with images in base64).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How often the spending is written to `--state` while it changes.
const SAVE_EVERY: Duration = Duration::from_secs(2);

/// Everything `pacer serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The OpenAI-compatible upstream (every path but `/v1/messages`).
    pub openai: TransportConfig,
    /// The Anthropic upstream (`/v1/messages`).
    pub anthropic: TransportConfig,
    pub limits: Limits,
    pub max_wait: Duration,
    pub max_queue: usize,
    /// `None`: any client may connect (allowed on loopback only).
    pub client_keys: Option<ClientKeys>,
    /// The gateway's own budget, in US dollars.
    pub max_cost_usd: Option<f64>,
    pub prices: PriceTable,
    pub max_body_bytes: usize,
    pub retry: RetryPolicy,
    /// Where the spending is kept across restarts (budgets survive them).
    pub state: Option<PathBuf>,
    /// Rate limits shared through Redis with every process on the same
    /// upstream and key (`--redis`): the replicas of one gateway, and runs.
    pub shared: Option<Arc<crate::shared::SharedLimits>>,
}

impl ServeConfig {
    /// Refuses an address off loopback when no client keys are required:
    /// the gateway spends its upstream key for whoever connects.
    pub fn check_access(&self, listen: &SocketAddr) -> Result<(), GatewayError> {
        if self.client_keys.is_none() && !listen.ip().is_loopback() {
            return Err(GatewayError::OpenWithoutKeys { listen: *listen });
        }
        Ok(())
    }
}

impl ServeConfig {
    /// Refuses an upstream that is the gateway itself (`$OPENAI_BASE_URL`
    /// left pointing at the gateway in the shell that starts it): every
    /// request would come back to the queue it left.
    pub fn check_upstreams(&self, bound: &SocketAddr) -> Result<(), GatewayError> {
        for t in [&self.openai, &self.anthropic] {
            let Ok(url) = reqwest::Url::parse(&t.base_url) else {
                continue;
            };
            let port = url.port_or_known_default();
            let host = url.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let local = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified() || ip == bound.ip());
            if local && port == Some(bound.port()) {
                return Err(GatewayError::UpstreamIsSelf {
                    url: display_url(&t.base_url),
                });
            }
        }
        Ok(())
    }
}

/// The running gateway's shared state.
struct App {
    service: Paced<Upstream>,
    metrics: Arc<GatewayMetrics>,
    keys: Option<ClientKeys>,
    prices: PriceTable,
    spending: Mutex<Spending>,
    max_body: usize,
    /// For messages: each upstream's address and key variable, never a key.
    upstream_names: [(String, Option<String>); 2],
    state: Option<PathBuf>,
}

/// Money spent, in all and by client, with the budgets that cap it.
#[derive(Debug)]
struct Spending {
    total: Budget,
    clients: HashMap<String, Budget>,
    dirty: bool,
}

/// What `--state` keeps.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct SavedSpending {
    total_usd: f64,
    clients: HashMap<String, f64>,
}

impl App {
    fn spending(&self) -> MutexGuard<'_, Spending> {
        self.spending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The gateway: build it, then [`Gateway::serve`] it.
pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    /// Builds the upstream client and the pacer; starts the admission
    /// queue's dispatcher on the current runtime.
    pub fn new(config: ServeConfig) -> Result<Gateway, GatewayError> {
        let upstream_names = [&config.openai, &config.anthropic].map(|t| {
            (
                display_url(&t.base_url),
                t.api_key
                    .as_ref()
                    .and_then(|k| k.source())
                    .map(str::to_owned),
            )
        });
        // The tokenizers load on first use (a few hundred ms): here, not in
        // the first requests' handlers, where it would stall every request
        // behind them.
        for model in ["gpt-4o-mini", "gpt-4"] {
            crate::tokens::count_text(model, "warm up");
        }
        let max_response_bytes = config.openai.max_response_bytes;
        let upstream = Upstream::new(config.openai, config.anthropic)?;
        let pacer = Arc::new(Pacer::new(&config.limits).with_shared(config.shared.clone()));
        let run = crate::report::RunInfo {
            started_ms: 0,
            ended_ms: None,
            via: "serve".into(),
            max_cost: config.max_cost_usd,
            rpm: config.limits.rpm,
            tpm: config.limits.tpm,
            concurrency: config.limits.concurrency.map(|c| c as u64),
            stop: None,
        };
        let history = super::GatewayHistory::new(
            tokio::time::Instant::now(),
            chrono::Utc::now().timestamp_millis(),
            run,
        );
        let metrics = Arc::new(GatewayMetrics::new().with_history(history, pacer.clone()));
        let layer = PaceLayer::builder(pacer.clone())
            .max_queue(config.max_queue)
            .max_wait(config.max_wait)
            .retry_policy(config.retry)
            .max_response_bytes(max_response_bytes)
            .metrics(metrics.clone())
            .build();
        let saved = match &config.state {
            Some(path) => load_spending(path)?,
            None => SavedSpending::default(),
        };
        let mut clients = HashMap::new();
        if let Some(keys) = &config.client_keys {
            for name in keys.names() {
                let cap = keys.budget_of(name).unwrap_or(f64::INFINITY);
                let spent = saved.clients.get(name).copied().unwrap_or(0.0);
                clients.insert(name.to_string(), Budget::with_spent(cap, spent));
            }
        }
        let local_spent = saved.clients.get(LOCAL).copied().unwrap_or(0.0);
        clients
            .entry(LOCAL.to_string())
            .or_insert_with(|| Budget::with_spent(f64::INFINITY, local_spent));
        let spending = Spending {
            total: Budget::with_spent(
                config.max_cost_usd.unwrap_or(f64::INFINITY),
                saved.total_usd,
            ),
            clients,
            dirty: false,
        };
        Ok(Gateway {
            app: Arc::new(App {
                service: tower::Layer::layer(&layer, upstream),
                metrics,
                keys: config.client_keys,
                prices: config.prices,
                spending: Mutex::new(spending),
                max_body: config.max_body_bytes,
                upstream_names,
                state: config.state,
            }),
        })
    }

    /// The routes: `/v1/*` forwarded, `/healthz`, `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics))
            .route("/", get(dashboard))
            .route("/v1/{*rest}", any(proxy))
            .fallback(|method: Method, uri: axum::http::Uri| async move {
                openai_error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "not_found",
                    &format!(
                        "pacer serve forwards /v1/* only; {method} {} is not one of them",
                        uri.path()
                    ),
                )
            })
            .with_state(self.app.clone())
    }

    /// Serves until `shutdown`, then stops accepting, lets every request
    /// already in (queued or in flight) finish, and saves the spending.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), GatewayError> {
        let saver = self.app.state.as_ref().map(|_| {
            let app = self.app.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(SAVE_EVERY) => {}
                        _ = stop.cancelled() => break,
                    }
                    if let Err(e) = save_spending(&app) {
                        tracing::warn!("{e}");
                    }
                }
            })
        });
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(GatewayError::Io);
        if let Some(saver) = saver {
            let _ = saver.await;
        }
        self.app.spending().dirty = true;
        save_spending(&self.app)?;
        result
    }

    /// Money spent so far through the gateway.
    pub fn spent_usd(&self) -> f64 {
        self.app.spending().total.spent()
    }
}

/// The client name of requests when no keys are required.
const LOCAL: &str = "local";

/// The dashboard: the report's charts of what the gateway has seen since
/// it started, reloading itself every few seconds.
async fn dashboard(State(app): State<Arc<App>>) -> Response {
    let Some(data) = app.metrics.report_data(app.service.queue_depth()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let options = crate::report::RenderOptions {
        live_refresh: Some(Duration::from_secs(5)),
    };
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        crate::report::render(&data, &options),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app
        .metrics
        .render(app.service.pacer(), app.service.queue_depth());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::report::OPENMETRICS_CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// One client request: who it is from, its body checked, its cost
/// reserved, then its turn, its attempts and its answer.
async fn proxy(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let client = match &app.keys {
        None => ClientId {
            name: LOCAL.into(),
            budget_usd: None,
        },
        Some(keys) => match presented_key(&parts.headers).and_then(|k| keys.find(k)) {
            Some(c) => c,
            None => {
                app.metrics.ended_without_answer("rejected");
                return openai_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "invalid_api_key",
                    "pacer serve: this gateway needs one of its client keys \
                     (Authorization: Bearer KEY, or x-api-key: KEY); none was given or \
                     the one given is not on its list",
                );
            }
        },
    };
    let bytes = match read_body(body, &parts.headers, app.max_body).await {
        Ok(b) => b,
        Err(BodyProblem::TooLarge) => {
            app.metrics.ended_without_answer("rejected");
            return openai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                &format!(
                    "pacer serve: the request body is larger than the gateway's limit of {} bytes",
                    app.max_body
                ),
            );
        }
        // The client went away while sending.
        Err(BodyProblem::Gone) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let endpoint = Endpoint::from_path(parts.uri.path());
    let json = match parse_json(&parts.headers, &parts.method, &bytes) {
        Ok(json) => json,
        Err(problem) => {
            app.metrics.ended_without_answer("rejected");
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                &problem,
            );
        }
    };
    let options = match options(&parts.headers, endpoint, json.as_ref()) {
        Ok(o) => o,
        Err(problem) => {
            app.metrics.ended_without_answer("rejected");
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_header",
                &problem,
            );
        }
    };
    // Parsed only to estimate: not kept while the request waits its turn.
    drop(json);
    let model = options.model.clone().unwrap_or_default();
    let price = app.prices.lookup(&model);
    let worst = match (price, options.tokens) {
        (Some(p), Some(t)) => p.max_cost(&t),
        _ => 0.0,
    };
    let reservations = match reserve(&app, &client, worst) {
        Ok(r) => r,
        Err(message) => {
            app.metrics.ended_without_answer("rejected");
            return openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                &message,
            );
        }
    };
    let reservations = Arc::new(Mutex::new(Some(reservations)));
    let on_finished = {
        let app = Arc::downgrade(&app);
        let reservations = reservations.clone();
        let client = client.name.clone();
        let model = model.clone();
        OnFinished(Arc::new(move |f: &Finished| {
            let Some(app) = app.upgrade() else { return };
            let cost = match (price, &f.usage) {
                (Some(p), Some((usage, _))) => Some(p.cost(usage)),
                _ => None,
            };
            let taken = reservations.lock().ok().and_then(|mut r| r.take());
            if let Some(r) = taken {
                settle(&app, &client, r, cost.unwrap_or(0.0));
            }
            app.metrics.finished(f, &model, &client, cost);
        }))
    };
    let mut request = http::Request::new(bytes);
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts.uri.path_and_query().map_or_else(
        || "/".parse().expect("a path"),
        |p| {
            p.as_str()
                .parse()
                .unwrap_or_else(|_| "/".parse().expect("a path"))
        },
    );
    *request.headers_mut() = forward_headers(&parts.headers);
    request.extensions_mut().insert(options);
    request.extensions_mut().insert(on_finished);
    let result = app.service.clone().call(request).await;
    match result {
        Ok(resp) => {
            let (mut head, body) = resp.into_parts();
            let status = head.status.as_u16();
            if status == 401 || status == 403 {
                let (url, var) = &app.upstream_names[usize::from(endpoint.is_anthropic())];
                let key = var
                    .as_deref()
                    .map_or("its key".to_string(), |v| format!("its key ({v})"));
                return openai_error(
                    head.status,
                    "upstream_auth_error",
                    "upstream_key_refused",
                    &format!(
                        "pacer serve: the upstream {url} refused the gateway's own key with {status}; \
                         your client key is fine: whoever runs the gateway must fix {key}"
                    ),
                );
            }
            strip_hop_by_hop(&mut head.headers);
            head.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(head, AxumBody::new(body))
        }
        Err(e) => {
            if let Some(r) = reservations.lock().ok().and_then(|mut r| r.take()) {
                release(&app, &client.name, r);
            }
            match e {
                PaceError::QueueFull { retry_after } => {
                    app.metrics.ended_without_answer("rejected");
                    too_many(
                        retry_after,
                        "queue_full",
                        &format!(
                            "pacer serve: the gateway's queue is full (--max-queue); \
                             try again in about {}",
                            seconds(retry_after)
                        ),
                    )
                }
                PaceError::WaitTooLong {
                    max_wait,
                    retry_after,
                } => {
                    app.metrics.ended_without_answer("rejected");
                    too_many(
                        retry_after,
                        "wait_too_long",
                        &format!(
                            "pacer serve: the request would wait longer than its limit of {} \
                             (--max-wait, or x-pacer-max-wait) for its turn under the upstream's \
                             rate limits; expected wait about {}",
                            seconds(max_wait),
                            seconds(retry_after)
                        ),
                    )
                }
                PaceError::Upstream { error, attempts } => {
                    app.metrics.ended_without_answer("upstream_error");
                    let status = match error {
                        TransportError::Timeout(_) | TransportError::ConnectTimeout(_) => {
                            StatusCode::GATEWAY_TIMEOUT
                        }
                        _ => StatusCode::BAD_GATEWAY,
                    };
                    openai_error(
                        status,
                        "upstream_error",
                        error.code(),
                        &format!(
                            "pacer serve: no answer from the upstream after {attempts} attempt(s): {error}"
                        ),
                    )
                }
            }
        }
    }
}

/// After a body is found too large, how much more of it is read and thrown
/// away, and for how long, so that the client (still sending) gets to read
/// the 413 instead of a reset connection.
const DRAIN_AT_MOST: u64 = 256 * 1024 * 1024;
const DRAIN_FOR: Duration = Duration::from_secs(30);

enum BodyProblem {
    TooLarge,
    Gone,
}

/// The request body, at most `max` bytes. Past it (or when Content-Length
/// says so), the rest is drained, bounded, and the body is refused.
async fn read_body(body: AxumBody, headers: &HeaderMap, max: usize) -> Result<Bytes, BodyProblem> {
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut too_large = announced.is_some_and(|n| n > max as u64);
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut drained = 0u64;
    let drain_until = tokio::time::Instant::now() + DRAIN_FOR;
    loop {
        let next = if too_large {
            match tokio::time::timeout_at(drain_until, body.frame()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let Some(frame) = next else { break };
        let Ok(frame) = frame else {
            return Err(if too_large {
                BodyProblem::TooLarge
            } else {
                BodyProblem::Gone
            });
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large {
            drained = drained.saturating_add(data.len() as u64);
            if drained > DRAIN_AT_MOST {
                break;
            }
        } else if buf.len() + data.len() > max {
            too_large = true;
            buf = bytes::BytesMut::new();
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if too_large {
        Err(BodyProblem::TooLarge)
    } else {
        Ok(buf.freeze())
    }
}

/// The key a client presented: `Authorization: Bearer KEY` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// The body as JSON, where it claims to be JSON; `Err` names the problem.
fn parse_json(
    headers: &HeaderMap,
    method: &Method,
    bytes: &Bytes,
) -> Result<Option<Value>, String> {
    if bytes.is_empty() || *method == Method::GET {
        return Ok(None);
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    // Uploads (files, audio) are forwarded as they are; every other body of
    // the API is JSON, whatever a hand-written client says it is.
    if content_type.starts_with("multipart/")
        || content_type.starts_with("application/octet-stream")
    {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| format!("pacer serve: the request body is not valid JSON: {e}"))
}

/// The request's pacing options from its headers and body.
fn options(
    headers: &HeaderMap,
    endpoint: Endpoint,
    json: Option<&Value>,
) -> Result<PaceOptions, String> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let priority = match header("x-pacer-priority") {
        None => 0,
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            format!("pacer serve: the header x-pacer-priority must be a whole number, not {v:?}")
        })?,
    };
    let max_wait = match header("x-pacer-max-wait") {
        None => None,
        Some(v) => Some(
            crate::provider::bounded::server_seconds(v.trim())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "pacer serve: the header x-pacer-max-wait must be a number of seconds > 0, not {v:?}"
                    )
                })?
                .min(crate::provider::MAX_SERVER_WAIT),
        ),
    };
    Ok(PaceOptions {
        priority,
        tokens: json.map(|v| estimate_request(endpoint, v)),
        model: json
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        max_wait,
    })
}

/// Headers that end at this hop (RFC 9110 §7.6.1), or that the gateway
/// replaces (the credentials, the length, pacer's own).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// What goes upstream of a client's headers.
fn forward_headers(client: &HeaderMap) -> http::HeaderMap {
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    for name in ["host", "content-length", "authorization", "x-api-key"] {
        headers.remove(name);
    }
    // The answer must stay readable for its usage: no compression asked for.
    headers.remove(axum::http::header::ACCEPT_ENCODING);
    let pacer_own: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-pacer-"))
        .cloned()
        .collect();
    for name in pacer_own {
        headers.remove(name);
    }
    headers
}

/// The gateway's budget and the client's, both or neither.
fn reserve(app: &App, client: &ClientId, worst: f64) -> Result<(Reservation, Reservation), String> {
    let mut s = app.spending();
    let s = &mut *s;
    let total = s
        .total
        .try_reserve(worst)
        .map_err(|e| format!("pacer serve: the gateway's budget (--max-cost) is spent: {e}"))?;
    let budget = s
        .clients
        .entry(client.name.clone())
        .or_insert_with(|| Budget::new(client.budget_usd.unwrap_or(f64::INFINITY)));
    match budget.try_reserve(worst) {
        Ok(own) => Ok((total, own)),
        Err(e) => {
            s.total.release(total);
            Err(format!(
                "pacer serve: the budget of client `{}` is spent: {e}",
                client.name
            ))
        }
    }
}

fn settle(app: &App, client: &str, (total, own): (Reservation, Reservation), usd: f64) {
    let mut s = app.spending();
    s.total.settle(total, usd);
    match s.clients.get_mut(client) {
        Some(b) => b.settle(own, usd),
        None => drop(own.amount()),
    }
    s.dirty = true;
}

fn release(app: &App, client: &str, (total, own): (Reservation, Reservation)) {
    let mut s = app.spending();
    s.total.release(total);
    match s.clients.get_mut(client) {
        Some(b) => b.release(own),
        None => drop(own.amount()),
    }
}

fn load_spending(path: &std::path::Path) -> Result<SavedSpending, GatewayError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| GatewayError::State {
            path: path.to_path_buf(),
            problem: format!("is not a pacer serve state file: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedSpending::default()),
        Err(e) => Err(GatewayError::State {
            path: path.to_path_buf(),
            problem: format!("could not be read: {e}"),
        }),
    }
}

/// Writes the spending, if it changed, by a rename so that a crash leaves
/// the old file or the new one, never half of one.
fn save_spending(app: &App) -> Result<(), GatewayError> {
    let Some(path) = &app.state else {
        return Ok(());
    };
    let saved = {
        let mut s = app.spending();
        if !s.dirty {
            return Ok(());
        }
        s.dirty = false;
        SavedSpending {
            total_usd: s.total.spent(),
            clients: s
                .clients
                .iter()
                .filter(|(_, b)| b.spent() > 0.0)
                .map(|(n, b)| (n.clone(), b.spent()))
                .collect(),
        }
    };
    let bad = |e: std::io::Error| GatewayError::State {
        path: path.clone(),
        problem: format!("could not be written: {e}"),
    };
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(&saved).expect("plain numbers serialize");
    std::fs::write(&tmp, text).map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(bad)
}

/// A 429 from the gateway itself, with an honest `retry-after`.
fn too_many(retry_after: Duration, code: &str, message: &str) -> Response {
    let mut resp = openai_error(StatusCode::TOO_MANY_REQUESTS, "requests", code, message);
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    resp.headers_mut().insert(
        "retry-after-ms",
        HeaderValue::from(
            u64::try_from(retry_after.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    );
    resp
}

/// An error in OpenAI's shape, which every OpenAI-compatible SDK reads.
fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

/// `12s`, `3m`, `1h5m`: for messages.
fn seconds(d: Duration) -> String {
    let d = Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0));
    crate::transport::short_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_here() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer sk-client"),
            ("x-api-key", "sk-client"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "127.0.0.1:8787"),
            ("content-length", "10"),
            ("accept-encoding", "gzip"),
            ("x-pacer-priority", "5"),
            ("anthropic-version", "2023-06-01"),
            ("openai-organization", "org-1"),
            ("content-type", "application/json"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward_headers(&h);
        let mut kept: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(
            kept,
            ["anthropic-version", "content-type", "openai-organization"]
        );
    }

    #[test]
    fn an_upstream_that_is_the_gateway_itself_is_refused() {
        let config = |openai: &str| ServeConfig {
            openai: TransportConfig {
                base_url: openai.into(),
                ..TransportConfig::default()
            },
            anthropic: TransportConfig::default(),
            limits: Limits::default(),
            max_wait: Duration::from_secs(1),
            max_queue: 1,
            client_keys: None,
            max_cost_usd: None,
            prices: PriceTable::empty(),
            max_body_bytes: 1,
            retry: RetryPolicy::default(),
            state: None,
            shared: None,
        };
        let bound: SocketAddr = "127.0.0.1:8787".parse().unwrap();
        for own in [
            "http://127.0.0.1:8787/v1",
            "http://localhost:8787/v1",
            "http://[::1]:8787/v1",
        ] {
            let e = config(own).check_upstreams(&bound).unwrap_err();
            assert!(e.to_string().contains("own address"), "{e}");
        }
        for other in ["http://127.0.0.1:8080/v1", "https://api.openai.com/v1"] {
            config(other).check_upstreams(&bound).unwrap();
        }
    }

    #[test]
    fn the_presented_key_is_read_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bearer  sk-abc "));
        assert_eq!(presented_key(&h), Some("sk-abc"));
        h.insert("x-api-key", HeaderValue::from_static("sk-xyz"));
        assert_eq!(presented_key(&h), Some("sk-xyz"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&basic), None);
    }

    #[test]
    fn bad_pacer_headers_are_named() {
        let mut h = HeaderMap::new();
        h.insert("x-pacer-priority", HeaderValue::from_static("high"));
        let e = options(&h, Endpoint::ChatCompletions, None).unwrap_err();
        assert!(e.contains("x-pacer-priority"), "{e}");
        let mut h = HeaderMap::new();
        h.insert("x-pacer-max-wait", HeaderValue::from_static("-3"));
        let e = options(&h, Endpoint::ChatCompletions, None).unwrap_err();
        assert!(e.contains("x-pacer-max-wait"), "{e}");
        let mut h = HeaderMap::new();
        h.insert("x-pacer-priority", HeaderValue::from_static("-2"));
        h.insert("x-pacer-max-wait", HeaderValue::from_static("1.5"));
        let o = options(&h, Endpoint::ChatCompletions, None).unwrap();
        assert_eq!(
            (o.priority, o.max_wait),
            (-2, Some(Duration::from_millis(1500)))
        );
    }

    #[test]
    fn a_gateway_429_says_when_to_come_back() {
        let r = too_many(Duration::from_millis(2300), "queue_full", "full");
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()["retry-after-ms"], "2300");
        let r = too_many(Duration::ZERO, "queue_full", "full");
        assert_eq!(r.headers()["retry-after"], "1");
    }

    #[test]
    fn json_is_checked_only_where_it_is_claimed() {
        let json = HeaderMap::new();
        assert!(parse_json(&json, &Method::POST, &Bytes::from_static(b"{nope")).is_err());
        assert!(parse_json(&json, &Method::POST, &Bytes::new())
            .unwrap()
            .is_none());
        let mut multipart = HeaderMap::new();
        multipart.insert(
            "content-type",
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        assert!(
            parse_json(&multipart, &Method::POST, &Bytes::from_static(b"--x"))
                .unwrap()
                .is_none()
        );
    }
}
