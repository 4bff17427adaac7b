use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::time::{sleep_until, timeout_at, Instant};
use tower::{Layer, Service};

use super::body::{wall_now, Finished, Meter, PacedBody, UsageReader};
use super::metrics::GatewayMetrics;
use super::queue::{AdmissionQueue, QueueRefusal};
use crate::endpoint::Endpoint;
use crate::engine::Pacer;
use crate::provider::parse_rate_limit_headers;
use crate::retry::{NextStep, Outcome, RetryPolicy, RetryState, Verdict};
use crate::tokens::{estimate_request, TokenEstimate};
use crate::transport::{Answer, TransportError, DEFAULT_MAX_RESPONSE_BYTES};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Successful answers of known length up to this size are read whole
/// before they are passed on.
const READ_WHOLE_UP_TO: u64 = 256 * 1024;

/// Default longest wait for a request, queue and retries included.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(600);

/// Per-request settings, read from the request's extensions; where absent,
/// from `x-pacer-priority` and `x-pacer-max-wait` and, for the tokens, from
/// the JSON body.
#[derive(Debug, Clone, Default)]
pub struct PaceOptions {
    /// Higher goes first.
    pub priority: i64,
    /// The request's charge against tokens per minute.
    pub tokens: Option<TokenEstimate>,
    /// Its model, to count the tokens of an answer that reports none.
    pub model: Option<String>,
    /// The longest it may wait, queue and retries included.
    pub max_wait: Option<Duration>,
}

/// Called once when a request's answer has ended (see [`Finished`]).
#[derive(Clone)]
pub struct OnFinished(pub Arc<dyn Fn(&Finished) + Send + Sync>);

impl std::fmt::Debug for OnFinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnFinished")
    }
}

/// Why a request got no upstream answer to pass on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PaceError {
    /// The queue is full.
    #[error("the queue is full; expected wait {retry_after:?}")]
    QueueFull { retry_after: Duration },
    /// Its turn would come (or did not come) within its longest wait.
    #[error(
        "the request would wait longer than its limit of {max_wait:?} (expected {retry_after:?})"
    )]
    WaitTooLong {
        max_wait: Duration,
        retry_after: Duration,
    },
    /// Every attempt failed without an answer (or the last one's failure
    /// was not worth another): connection, timeout, redirect.
    #[error("the upstream failed after {attempts} attempt(s): {error}")]
    Upstream {
        error: TransportError,
        attempts: u32,
    },
}

/// Admission as a [`tower::Layer`]: every request through the wrapped
/// service waits for its turn under the shared pace (configured limits,
/// limits learned from the answers' headers and 429s, the pause gate, the
/// circuit breaker, the adaptive concurrency), in priority order; 429s,
/// 5xx and failed connections are retried within the request's longest
/// wait; the answer's body is passed through as it arrives, and read on the
/// side for the tokens it cost.
///
/// It wraps any `Service<http::Request<Bytes>>` answering
/// `http::Response<B>`: `pacer serve` puts it around its upstream client,
/// and a Rust program can put it around its own.
///
/// ```no_run
/// use std::sync::Arc;
/// use pacer::engine::{Limits, Pacer};
/// use pacer::gateway::{PaceLayer, Upstream};
/// use pacer::transport::TransportConfig;
/// use tower::Layer;
///
/// # fn example() -> Result<(), pacer::transport::TransportError> {
/// let pacer = Arc::new(Pacer::new(&Limits { rpm: Some(500.0), ..Limits::default() }));
/// let upstream = Upstream::new(TransportConfig::default(), TransportConfig::default())?;
/// let paced = PaceLayer::new(pacer).layer(upstream);
/// # let _ = paced;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PaceLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: AdmissionQueue,
    policy: RetryPolicy,
    max_wait: Duration,
    max_response_bytes: u64,
    metrics: Option<Arc<GatewayMetrics>>,
}

impl PaceLayer {
    /// A layer with the default queue bound (unbounded in practice), retry
    /// policy and longest wait. Starts the queue's dispatcher on the
    /// current runtime.
    pub fn new(pacer: Arc<Pacer>) -> PaceLayer {
        PaceLayer::builder(pacer).build()
    }

    pub fn builder(pacer: Arc<Pacer>) -> PaceLayerBuilder {
        PaceLayerBuilder {
            pacer,
            max_queue: usize::MAX,
            policy: RetryPolicy::default(),
            max_wait: DEFAULT_MAX_WAIT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            metrics: None,
        }
    }

    pub fn pacer(&self) -> &Arc<Pacer> {
        self.shared.queue.pacer()
    }

    /// Requests waiting for their turn.
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }
}

/// Settings of a [`PaceLayer`].
#[derive(Debug)]
pub struct PaceLayerBuilder {
    pacer: Arc<Pacer>,
    max_queue: usize,
    policy: RetryPolicy,
    max_wait: Duration,
    max_response_bytes: u64,
    metrics: Option<Arc<GatewayMetrics>>,
}

impl PaceLayerBuilder {
    /// Most requests waiting; one more is refused with the expected wait.
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }
    /// Longest wait of a request that does not set its own.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }
    pub fn max_response_bytes(mut self, n: u64) -> Self {
        self.max_response_bytes = n;
        self
    }
    pub fn metrics(mut self, metrics: Arc<GatewayMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
    pub fn build(self) -> PaceLayer {
        PaceLayer {
            shared: Arc::new(Shared {
                queue: AdmissionQueue::new(self.pacer, self.max_queue),
                policy: self.policy,
                max_wait: self.max_wait,
                max_response_bytes: self.max_response_bytes,
                metrics: self.metrics,
            }),
        }
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Paced<S>;

    fn layer(&self, inner: S) -> Paced<S> {
        Paced {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A service behind [`PaceLayer`].
#[derive(Debug, Clone)]
pub struct Paced<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Paced<S> {
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }
    pub fn pacer(&self) -> &Arc<Pacer> {
        self.shared.queue.pacer()
    }
}

impl<S, B> Service<Request<Bytes>> for Paced<S>
where
    S: Service<Request<Bytes>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<PacedBody<B>>;
    type Error = PaceError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, PaceError>> + Send>>;

    /// Always ready: the queue, not the caller, is where requests wait.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PaceError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        // The clone that was made ready is the one to use (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(self.shared.clone().send(inner, req))
    }
}

impl Shared {
    /// One request: its turn, its attempts, its answer.
    async fn send<S, B>(
        self: Arc<Self>,
        mut inner: S,
        req: Request<Bytes>,
    ) -> Result<Response<PacedBody<B>>, PaceError>
    where
        S: Service<Request<Bytes>, Response = Response<B>>,
        S::Error: Into<BoxError> + Send,
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let endpoint = Endpoint::from_path(parts.uri.path());
        let options = options_of(&parts, endpoint, &body);
        let tokens = options.tokens.unwrap_or_default();
        let max_wait = options.max_wait.unwrap_or(self.max_wait);
        let deadline = started
            .checked_add(max_wait)
            .unwrap_or(started + DEFAULT_MAX_WAIT);
        let place = self.queue.place(options.priority);
        let pacer = self.queue.pacer().clone();
        let mut retry = RetryState::default();
        let mut attempts = 0u32;
        let mut failure: Option<TransportError> = None;
        // The last upstream answer, kept while a retry waits: if the wait
        // runs out, the client gets it rather than a refusal of the gateway's.
        let mut last: Option<(http::response::Parts, Bytes)> = None;
        loop {
            // Refused at once when the expected wait is already too long:
            // better a 429 with an honest retry-after now than later.
            let expected = self.queue.expected_wait(options.priority);
            if Instant::now() + expected > deadline {
                return self.give_up(&parts, started, attempts, last, failure, || {
                    PaceError::WaitTooLong {
                        max_wait,
                        retry_after: expected,
                    }
                });
            }
            let mut admission =
                match timeout_at(deadline, self.queue.enter(place, tokens.total())).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(QueueRefusal::Full { retry_after })) => {
                        return Err(PaceError::QueueFull { retry_after })
                    }
                    Err(_) => {
                        let retry_after = self.queue.expected_wait(options.priority);
                        return self.give_up(&parts, started, attempts, last, failure, || {
                            PaceError::WaitTooLong {
                                max_wait,
                                retry_after,
                            }
                        });
                    }
                };
            attempts += 1;
            let sent = Instant::now();
            let request = Request::from_parts(parts.clone(), body.clone());
            // The inner error becomes a BoxError at once: S::Error need not be Send.
            let result: Result<Response<B>, BoxError> =
                match poll_fn(|cx| inner.poll_ready(cx)).await {
                    Ok(()) => {
                        // Far past the latency seen, a request stops counting
                        // toward the paced concurrency (a hung one must not
                        // stall the rest); it keeps its place under the
                        // ceiling and still ends at the timeout.
                        let call = inner.call(request);
                        tokio::pin!(call);
                        let overdue = tokio::time::sleep(pacer.overdue_after());
                        tokio::select! {
                            r = &mut call => r,
                            _ = overdue => {
                                admission.in_flight.release_paced();
                                call.await
                            }
                        }
                        .map_err(Into::into)
                    }
                    Err(e) => Err(e.into()),
                };
            let now = Instant::now();
            let latency = now.saturating_duration_since(sent);
            let (outcome, answer) = match result {
                Ok(resp) if resp.status().is_success() => {
                    if let Some(m) = &self.metrics {
                        m.response(resp.status().as_u16());
                    }
                    let (head, upstream) = resp.into_parts();
                    let content_type = head
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    // A small answer of known length is read whole and sent
                    // in one write (fewer syscalls and wake-ups than frame by
                    // frame), and a cut one is retried instead of passed on
                    // half. Streams always pass through as they come.
                    let whole = !content_type.starts_with("text/event-stream")
                        && upstream
                            .size_hint()
                            .exact()
                            .is_some_and(|n| n <= READ_WHOLE_UP_TO);
                    let mut meter = Meter {
                        pacer: pacer.clone(),
                        reader: UsageReader::for_answer(endpoint, content_type),
                        limits: parse_rate_limit_headers(&head.headers, wall_now()),
                        admission: None,
                        started,
                        sent,
                        model: options.model.clone().unwrap_or_default(),
                        status: head.status.as_u16(),
                        estimate: tokens,
                        read: 0,
                        limit: self.max_response_bytes,
                        attempts,
                        on_finished: parts.extensions.get::<OnFinished>().cloned(),
                    };
                    if !whole {
                        meter.admission = Some(admission);
                        return Ok(Response::from_parts(
                            head,
                            PacedBody::metered(upstream, meter),
                        ));
                    }
                    match upstream.collect().await {
                        Ok(collected) => {
                            let bytes = collected.to_bytes();
                            meter.admission = Some(admission);
                            meter.read = bytes.len() as u64;
                            meter.reader.push(&bytes);
                            meter.finish(super::Ending::Complete);
                            return Ok(Response::from_parts(head, PacedBody::full(bytes)));
                        }
                        Err(e) => {
                            let error = body_error(e.into(), self.max_response_bytes);
                            let latency = Instant::now().saturating_duration_since(sent);
                            let outcome = Outcome::of_error(&error, latency);
                            failure = Some(error);
                            (outcome, None)
                        }
                    }
                }
                Ok(resp) => {
                    let (head, upstream) = resp.into_parts();
                    let limit = usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX);
                    match Limited::new(upstream, limit).collect().await {
                        Ok(collected) => {
                            let answer = Answer {
                                status: head.status.as_u16(),
                                headers: head.headers.clone(),
                                body: collected.to_bytes(),
                            };
                            let outcome = Outcome::of_answer(&answer, latency, wall_now());
                            (outcome, Some((head, answer.body)))
                        }
                        Err(e) => {
                            let error = body_error(e, self.max_response_bytes);
                            let outcome = Outcome::of_error(&error, latency);
                            failure = Some(error);
                            (outcome, None)
                        }
                    }
                }
                Err(e) => {
                    let error = transport_error(e);
                    let outcome = Outcome::of_error(&error, latency);
                    failure = Some(error);
                    (outcome, None)
                }
            };
            let change = pacer.feedback(now, &outcome, &admission.ticket);
            drop(admission);
            if let Some(m) = &self.metrics {
                let status = answer.as_ref().map(|(head, _)| head.status.as_u16());
                m.attempt(status, &outcome, change.paused_until.is_some());
            }
            let step = match &outcome.verdict {
                Verdict::Retry(reason) => self.policy.next_step(
                    &mut retry,
                    reason,
                    pacer.circuit_open(),
                    max_wait,
                    now,
                    &mut rand::thread_rng(),
                ),
                _ => NextStep::GiveUp,
            };
            match step {
                NextStep::RetryAt(at) if at < deadline => {
                    if let (Some(m), Verdict::Retry(reason)) = (&self.metrics, &outcome.verdict) {
                        m.retry(reason);
                    }
                    last = answer;
                    sleep_until(at).await;
                }
                _ => {
                    let last = answer.or(last);
                    return self.give_up(&parts, started, attempts, last, failure, || {
                        PaceError::Upstream {
                            error: TransportError::Other("the upstream failed".into()),
                            attempts,
                        }
                    });
                }
            }
        }
    }
}

impl Shared {
    /// The end of a request that got no answer worth passing on as it came:
    /// the last upstream answer if there is one; else the last failure
    /// without an answer; else the gateway's own refusal.
    fn give_up<B>(
        &self,
        parts: &http::request::Parts,
        started: Instant,
        attempts: u32,
        last: Option<(http::response::Parts, Bytes)>,
        failure: Option<TransportError>,
        refusal: impl FnOnce() -> PaceError,
    ) -> Result<Response<PacedBody<B>>, PaceError> {
        if let Some((head, bytes)) = last {
            if let Some(hook) = parts.extensions.get::<OnFinished>() {
                (hook.0)(&Finished {
                    status: head.status.as_u16(),
                    ending: super::Ending::Complete,
                    usage: None,
                    latency: Instant::now().saturating_duration_since(started),
                    attempts,
                });
            }
            return Ok(Response::from_parts(head, PacedBody::full(bytes)));
        }
        if let Some(error) = failure {
            return Err(PaceError::Upstream { error, attempts });
        }
        if attempts > 0 || self.queue.pacer().circuit_open() {
            // Waiting on an upstream that keeps failing, not on the pace.
            return Err(PaceError::Upstream {
                error: TransportError::Other(
                    "the upstream has been failing (server errors, timeouts); it is being \
                     probed until it recovers"
                        .into(),
                ),
                attempts,
            });
        }
        Err(refusal())
    }
}

/// The request's options: its extension, else its headers and body.
fn options_of(parts: &http::request::Parts, endpoint: Endpoint, body: &Bytes) -> PaceOptions {
    if let Some(o) = parts.extensions.get::<PaceOptions>() {
        return o.clone();
    }
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let priority = header("x-pacer-priority")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let max_wait = header("x-pacer-max-wait").and_then(crate::provider::bounded::server_seconds);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    PaceOptions {
        priority,
        tokens: json.as_ref().map(|v| estimate_request(endpoint, v)),
        model: json
            .as_ref()
            .and_then(|v| v.get("model"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        max_wait,
    }
}

/// A failure without an answer, as the retry rules know it.
fn transport_error(e: BoxError) -> TransportError {
    match e.downcast::<TransportError>() {
        Ok(t) => *t,
        Err(other) => TransportError::Other(other.to_string()),
    }
}

fn body_error(e: BoxError, limit: u64) -> TransportError {
    if e.is::<http_body_util::LengthLimitError>() {
        TransportError::TooLarge { limit }
    } else {
        match transport_error(e) {
            TransportError::Other(_) => TransportError::StreamCut,
            t => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use http_body_util::Full;

    use super::*;
    use crate::engine::Limits;

    /// Status, `retry-after-ms` (empty: none), body.
    type ScriptedAnswer = (u16, &'static str, &'static str);

    /// An upstream that gives the answers it was handed, in order, and
    /// counts the calls.
    #[derive(Clone)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<ScriptedAnswer>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn new(answers: &[ScriptedAnswer]) -> Scripted {
            Scripted {
                answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
                calls: Arc::default(),
            }
        }
    }

    impl Service<Request<Bytes>> for Scripted {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Request<Bytes>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (status, retry_after_ms, body) = self
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("an answer left");
            let mut resp = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if !retry_after_ms.is_empty() {
                resp = resp.header("retry-after-ms", retry_after_ms);
            }
            std::future::ready(Ok(resp
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()))
        }
    }

    const OK: &str = r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
    const RATE: &str =
        r#"{"error":{"message":"Rate limit reached for requests","type":"requests"}}"#;

    fn chat() -> Request<Bytes> {
        Request::post("/v1/chat/completions")
            .body(Bytes::from_static(
                br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            ))
            .unwrap()
    }

    fn layer(max_wait: Duration) -> PaceLayer {
        let pacer = Arc::new(Pacer::new(&Limits::default()));
        PaceLayer::builder(pacer).max_wait(max_wait).build()
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_429s_are_waited_out_inside_the_gateway() {
        let upstream = Scripted::new(&[(429, "500", RATE), (429, "700", RATE), (200, "", OK)]);
        let mut paced = layer(DEFAULT_MAX_WAIT).layer(upstream.clone());
        let t0 = Instant::now();
        let resp = paced.call(chat()).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 3);
        assert!(
            Instant::now() - t0 >= Duration::from_millis(1200),
            "the waits were kept"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, OK.as_bytes(), "the answer passes unchanged");
        assert_eq!(
            paced.pacer().in_flight(),
            0,
            "its slot came back at the end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_clients_wait_the_last_upstream_answer_is_passed_on() {
        // The upstream asks for 10 s; the client waits 3 s at most.
        let upstream = Scripted::new(&[(429, "10000", RATE)]);
        let mut paced = layer(Duration::from_secs(3)).layer(upstream.clone());
        let t0 = Instant::now();
        let resp = paced.call(chat()).await.expect("an answer");
        assert_eq!(resp.status(), 429);
        assert_eq!(
            Instant::now(),
            t0,
            "no point waiting for a retry it could not make"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, RATE.as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_of_the_request_pass_through_and_outages_are_retried() {
        let bad = r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#;
        let upstream = Scripted::new(&[(400, "", bad)]);
        let mut paced = layer(DEFAULT_MAX_WAIT).layer(upstream.clone());
        let resp = paced.call(chat()).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert_eq!(
            upstream.calls.load(Ordering::SeqCst),
            1,
            "a 400 is not retried"
        );

        let upstream = Scripted::new(&[(503, "", "{}"), (500, "", "{}"), (200, "", OK)]);
        let mut paced = layer(DEFAULT_MAX_WAIT).layer(upstream.clone());
        let resp = paced.call(chat()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_that_cannot_come_in_time_is_refused_with_the_expected_wait() {
        // One a second, a burst of one: the tenth in line waits ~10 s.
        let pacer = Arc::new(Pacer::new(&Limits {
            rpm: Some(60.0),
            burst: Some(1.0),
            concurrency: Some(100),
            ..Limits::default()
        }));
        let layer = PaceLayer::builder(pacer).build();
        let answers: Vec<_> = (0..20).map(|_| (200, "", OK)).collect();
        let upstream = Scripted::new(&answers);
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let mut paced = layer.layer(upstream.clone());
            waiting.push(tokio::spawn(async move {
                let resp = paced.call(chat()).await.unwrap();
                resp.into_body().collect().await.unwrap();
            }));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut hurried = layer.layer(upstream.clone());
        let mut req = chat();
        req.headers_mut()
            .insert("x-pacer-max-wait", http::HeaderValue::from_static("2"));
        match hurried.call(req).await {
            Err(PaceError::WaitTooLong {
                max_wait,
                retry_after,
            }) => {
                assert_eq!(max_wait, Duration::from_secs(2));
                assert!(retry_after >= Duration::from_secs(5), "{retry_after:?}");
            }
            other => panic!("{:?}", other.map(|r| r.status())),
        }
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(
            upstream.calls.load(Ordering::SeqCst),
            10,
            "the refused one never went"
        );
    }

    /// An upstream whose first call never answers; later ones answer at once.
    #[derive(Clone, Default)]
    struct FirstHangs {
        calls: Arc<AtomicUsize>,
    }

    impl Service<Request<Bytes>> for FirstHangs {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Request<Bytes>) -> Self::Future {
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok(Response::new(Full::new(Bytes::from_static(OK.as_bytes()))))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_request_gives_its_slot_back_when_overdue() {
        let pacer = Arc::new(Pacer::new(&Limits {
            concurrency: Some(1),
            ..Limits::default()
        }));
        pacer.observe(Instant::now(), &Default::default());
        let layer = PaceLayer::builder(pacer.clone()).build();
        let upstream = FirstHangs::default();
        let mut hung = layer.layer(upstream.clone());
        tokio::spawn(async move { hung.call(chat()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let t0 = Instant::now();
        let mut next = layer.layer(upstream.clone());
        let resp = next.call(chat()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            Instant::now() - t0 + Duration::from_millis(1),
            crate::limit::OVERDUE_FLOOR,
            "the only slot came back when the hung request was overdue"
        );
    }
}
