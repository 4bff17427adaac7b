use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::sse::{StreamAssembler, StreamError, StreamKind};
use super::ApiKey;
use crate::endpoint::Endpoint;

/// Anthropic's API version header, required on every call.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The largest answer read by default (64 MiB): far above any real
/// completion, low enough that a misbehaving server cannot exhaust memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Longest wait for a connection (TCP and TLS), capped by the total timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How the transport talks to the provider.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Base URL in the OpenAI SDK convention, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// Total time for one attempt, answer included.
    pub timeout: Duration,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// Send `stream: true` and reassemble the events.
    pub stream: bool,
    /// Most connections kept open per host.
    pub pool_max_idle: usize,
    /// Largest answer body read, in bytes (a streamed answer counts its raw
    /// events); a larger answer is [`TransportError::TooLarge`].
    pub max_response_bytes: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(60),
            stream: false,
            pool_max_idle: 512,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The body of a [`Transport::call`].
#[derive(Debug)]
pub enum CallBody {
    Empty,
    /// JSON bytes.
    Json(Bytes),
    /// A body of `len` bytes streamed from elsewhere (an uploaded file).
    Stream {
        content_type: HeaderValue,
        body: reqwest::Body,
        len: u64,
    },
}

/// The provider's HTTP answer to one attempt.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body; for a reassembled stream, the equivalent non-streamed body.
    pub body: Bytes,
}

/// An attempt that got no (complete) HTTP answer. Messages never hold the key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("stream idle for more than {0:?}")]
    IdleTimeout(Duration),
    /// The request never reached a server: refused, no such host, TLS
    /// handshake failed, or no connection within the connect timeout. Nothing
    /// was sent, so nothing can have been charged.
    #[error("could not connect: {0}")]
    Connect(String),
    /// No connection within the connect timeout: nothing was sent either.
    #[error("could not connect within {}", short_duration(*.0))]
    ConnectTimeout(Duration),
    /// The connection failed after the request was (maybe) written: reset,
    /// closed before the answer.
    #[error("the connection failed before an answer: {0}")]
    Disconnected(String),
    /// The provider answered 3xx. pacer follows no redirect: a prompt (and
    /// its key) must never go to an address the user did not give.
    /// `location` has no userinfo, query or fragment.
    #[error(
        "the provider answered {status} redirecting to {location}; pacer follows no redirects: \
         set --base-url to the final address"
    )]
    Redirect { status: u16, location: String },
    /// The answer was longer than `max_response_bytes`; reading stopped there.
    #[error("the answer was larger than --max-response-bytes ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("the stream ended before its final event")]
    StreamCut,
    #[error("the stream carried an error: {0}")]
    StreamError(String),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// A short stable code for the output's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            TransportError::Timeout(_) | TransportError::IdleTimeout(_) => "timeout",
            TransportError::Connect(_)
            | TransportError::ConnectTimeout(_)
            | TransportError::Disconnected(_) => "connection_error",
            TransportError::Redirect { .. } => "redirect",
            TransportError::TooLarge { .. } => "response_too_large",
            TransportError::StreamCut => "stream_cut",
            TransportError::StreamError(_) => "stream_error",
            TransportError::Other(_) => "transport_error",
        }
    }

    /// Why the request never reached a server ("connection refused"), for
    /// the failures that prove nothing was sent: `None` for all others.
    pub fn unreached_cause(&self) -> Option<String> {
        match self {
            TransportError::Connect(cause) => Some(cause.clone()),
            TransportError::ConnectTimeout(d) => {
                Some(format!("no connection within {}", short_duration(*d)))
            }
            _ => None,
        }
    }
}

/// The run's one HTTP client.
#[derive(Debug, Clone)]
pub struct Transport {
    client: reqwest::Client,
    config: TransportConfig,
    /// Auth and content-type headers, built once: `[OpenAI, Anthropic]`.
    headers: Arc<[HeaderMap; 2]>,
    /// Each endpoint path's parsed URL: parsing (IDNA included) per request
    /// was a visible share of a request's CPU. A job has a few paths.
    urls: Arc<RwLock<HashMap<String, reqwest::Url>>>,
}

/// Most distinct paths whose URL is kept parsed.
const MAX_CACHED_URLS: usize = 64;

impl Transport {
    pub fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.pool_max_idle)
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            // Following a redirect would send the prompt, and with
            // Anthropic's x-api-key the key, to another address.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(concat!("pacer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError::Other(format!("could not build the HTTP client: {e}")))?;
        let headers = Arc::new([false, true].map(|anthropic| {
            let mut h = auth_headers(&config, anthropic);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h
        }));
        Ok(Transport {
            client,
            config,
            headers,
            urls: Arc::default(),
        })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Where the key came from (`$OPENAI_API_KEY`), for messages.
    pub fn key_source(&self) -> Option<&str> {
        self.config.api_key.as_ref().and_then(ApiKey::source)
    }

    /// The full URL for an endpoint path such as `/v1/chat/completions`.
    pub fn endpoint(&self, path: &str) -> String {
        join_url(&self.config.base_url, path)
    }

    /// `GET` an endpoint (e.g. `/v1/models` for `pacer verify`), with
    /// Anthropic's auth headers when `anthropic`.
    pub async fn get(&self, path: &str, anthropic: bool) -> Result<Answer, TransportError> {
        let req = self
            .client
            .get(self.endpoint(path))
            .headers(self.auth_headers(anthropic));
        self.exchange(req, None).await
    }

    /// An API call that is not one of the job's requests (the batch APIs'
    /// files and batches): `method path` with this transport's auth for
    /// `anthropic`, `body` sent as it is (JSON unless a content type is
    /// given), the whole answer read within `timeout` and the size limit.
    /// No redirect is followed.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        anthropic: bool,
        body: CallBody,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let mut headers = self.headers[usize::from(anthropic)].clone();
        let req = self.client.request(method, self.endpoint(path));
        let req = match body {
            CallBody::Empty => {
                headers.remove(CONTENT_TYPE);
                req
            }
            CallBody::Json(bytes) => req.body(bytes),
            CallBody::Stream {
                content_type,
                body,
                len,
            } => {
                headers.insert(CONTENT_TYPE, content_type);
                headers.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(len));
                req.body(body)
            }
        };
        self.exchange_within(req.headers(headers), None, timeout)
            .await
    }

    /// Opens a download (a batch's results) at `url`: a path under the
    /// base URL, or an absolute URL on the base URL's origin (any other
    /// address is refused: the key goes to the base URL's origin only).
    /// Returns once the head is in, within the timeout: the response to
    /// read with [`Transport::next_chunk`] for a 2xx, else the whole
    /// (bounded) answer.
    pub async fn download(
        &self,
        url: &str,
        anthropic: bool,
    ) -> Result<Result<reqwest::Response, Answer>, TransportError> {
        let full = if url.contains("://") {
            if !self.on_base_origin(url) {
                return Err(TransportError::Other(format!(
                    "refused to fetch {} with the API key: it is not on the base URL's origin",
                    display_url(url)
                )));
            }
            url.to_string()
        } else {
            self.endpoint(url)
        };
        let mut headers = self.headers[usize::from(anthropic)].clone();
        headers.remove(CONTENT_TYPE);
        let req = self.client.get(full).headers(headers);
        let fut = async {
            let resp = req.send().await.map_err(|e| self.map_reqwest(e))?;
            refuse_redirect(&resp)?;
            let status = resp.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(Ok(resp));
            }
            let headers = resp.headers().clone();
            let body = self.read_body(resp).await?;
            Ok(Err(Answer {
                status,
                headers,
                body,
            }))
        };
        tokio::time::timeout(self.config.timeout, fut)
            .await
            .map_err(|_| TransportError::Timeout(self.config.timeout))?
    }

    /// The next chunk of a download, within the idle timeout.
    pub async fn next_chunk(
        &self,
        resp: &mut reqwest::Response,
    ) -> Result<Option<Bytes>, TransportError> {
        let idle = self.config.idle_timeout;
        tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| TransportError::IdleTimeout(idle))?
            .map_err(|e| self.body_error(e))
    }

    /// Whether `url` has the base URL's scheme, host and port.
    pub fn on_base_origin(&self, url: &str) -> bool {
        let (Ok(a), Ok(b)) = (
            reqwest::Url::parse(url),
            reqwest::Url::parse(&self.config.base_url),
        ) else {
            return false;
        };
        a.scheme() == b.scheme()
            && a.host_str() == b.host_str()
            && a.port_or_known_default() == b.port_or_known_default()
    }

    /// Sends one attempt of a request: `POST path` with JSON `body`.
    /// `client_request_id` goes out as `X-Client-Request-Id` (OpenAI logs it)
    /// when it is a valid header value.
    pub async fn send(
        &self,
        path: &str,
        endpoint: Endpoint,
        body: &str,
        client_request_id: &str,
    ) -> Result<Answer, TransportError> {
        let stream_kind = if self.config.stream {
            StreamKind::of(endpoint)
        } else {
            None
        };
        let body: Bytes = match stream_kind {
            Some(kind) => Bytes::from(streaming_body(body, kind)),
            None => Bytes::copy_from_slice(body.as_bytes()),
        };
        let mut headers = self.headers[usize::from(endpoint.is_anthropic())].clone();
        if client_request_id.len() <= 512 {
            if let Ok(v) = HeaderValue::from_str(client_request_id) {
                headers.insert("x-client-request-id", v);
            }
        }
        let req = match self.parsed_endpoint(path) {
            Some(url) => self.client.post(url),
            None => self.client.post(self.endpoint(path)),
        };
        let req = req.headers(headers).body(body);
        self.exchange(req, stream_kind).await
    }

    /// Forwards a client's request as it is (the gateway): `method` to
    /// `path_and_query` under the base URL, the client's `headers` (the
    /// caller has removed its credentials and hop-by-hop headers) with this
    /// transport's auth in their place, and `body` byte for byte. Returns
    /// once the answer's head is in, within the timeout; the body is the
    /// caller's to read (and to bound: [`TransportConfig::max_response_bytes`]).
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        endpoint: Endpoint,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, TransportError> {
        let mut all = headers;
        for (name, value) in self.headers[usize::from(endpoint.is_anthropic())].iter() {
            // The client's own anthropic-version (or content type) wins;
            // the credentials are always ours.
            let ours = name == AUTHORIZATION || name.as_str() == "x-api-key";
            if ours || !all.contains_key(name) {
                all.insert(name.clone(), value.clone());
            }
        }
        let req = match self.parsed_endpoint(path_and_query) {
            Some(url) => self.client.request(method, url),
            None => self.client.request(method, self.endpoint(path_and_query)),
        };
        let req = req.headers(all).body(body);
        tokio::time::timeout(self.config.timeout, self.head(req))
            .await
            .map_err(|_| TransportError::Timeout(self.config.timeout))?
    }

    /// Maps an error met while reading an answer's body.
    pub fn body_error(&self, e: reqwest::Error) -> TransportError {
        if e.is_body() || e.is_decode() {
            TransportError::StreamCut
        } else {
            self.map_reqwest(e)
        }
    }

    /// Sends a request and takes its answer's head: a redirect is refused
    /// (never followed), and so is a body announced past the size limit.
    async fn head(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TransportError> {
        let resp = req.send().await.map_err(|e| self.map_reqwest(e))?;
        refuse_redirect(&resp)?;
        let limit = self.config.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(TransportError::TooLarge { limit });
        }
        Ok(resp)
    }

    /// One request and its whole answer (a stream reassembled), within the
    /// total timeout.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        stream_kind: Option<StreamKind>,
    ) -> Result<Answer, TransportError> {
        self.exchange_within(req, stream_kind, self.config.timeout)
            .await
    }

    async fn exchange_within(
        &self,
        req: reqwest::RequestBuilder,
        stream_kind: Option<StreamKind>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let fut = async {
            let resp = self.head(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = match stream_kind {
                Some(kind) if (200..300).contains(&status) => self.read_stream(resp, kind).await?,
                _ => self.read_body(resp).await?,
            };
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    /// The whole body, counted chunk by chunk against the limit (a chunked
    /// answer has no Content-Length to check first).
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Bytes, TransportError> {
        let limit = self.config.max_response_bytes;
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_reqwest(e))? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(TransportError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        kind: StreamKind,
    ) -> Result<Bytes, TransportError> {
        let idle = self.config.idle_timeout;
        let limit = self.config.max_response_bytes;
        let mut read: u64 = 0;
        let mut assembler = StreamAssembler::new(kind);
        loop {
            let chunk = tokio::time::timeout(idle, resp.chunk())
                .await
                .map_err(|_| TransportError::IdleTimeout(idle))?
                .map_err(|e| {
                    if e.is_body() || e.is_decode() {
                        TransportError::StreamCut
                    } else {
                        self.map_reqwest(e)
                    }
                })?;
            match chunk {
                Some(bytes) => {
                    read += bytes.len() as u64;
                    if read > limit {
                        return Err(TransportError::TooLarge { limit });
                    }
                    assembler.push(&bytes).map_err(map_stream)?
                }
                None => break,
            }
        }
        let value = assembler.finish().map_err(map_stream)?;
        Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
    }

    fn map_reqwest(&self, e: reqwest::Error) -> TransportError {
        // reqwest's messages name the URL but never headers; the URL goes too,
        // since a base URL may carry userinfo or a query.
        let e = e.without_url();
        if e.is_connect() {
            // Connect phase only (TCP, DNS, TLS): nothing was sent.
            if e.is_timeout() {
                TransportError::ConnectTimeout(CONNECT_TIMEOUT.min(self.config.timeout))
            } else {
                TransportError::Connect(connect_cause(&e))
            }
        } else if e.is_timeout() {
            // The client sets no total timeout of its own (the exchange's
            // tokio timeout is it), so this is only a safety net.
            TransportError::Timeout(self.config.timeout)
        } else if e.is_body() || e.is_decode() {
            TransportError::StreamCut
        } else if e.is_request() {
            TransportError::Disconnected(error_chain(&e))
        } else {
            TransportError::Other(error_chain(&e))
        }
    }

    fn auth_headers(&self, anthropic: bool) -> HeaderMap {
        auth_headers(&self.config, anthropic)
    }

    /// `endpoint(path)` parsed, from the cache; `None` if it does not parse
    /// (reqwest then reports the error as before).
    fn parsed_endpoint(&self, path: &str) -> Option<reqwest::Url> {
        if let Some(url) = self.urls.read().ok()?.get(path) {
            return Some(url.clone());
        }
        let url = reqwest::Url::parse(&self.endpoint(path)).ok()?;
        let mut urls = self.urls.write().ok()?;
        if urls.len() < MAX_CACHED_URLS {
            urls.insert(path.to_owned(), url.clone());
        }
        Some(url)
    }
}

fn auth_headers(config: &TransportConfig, anthropic: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if anthropic {
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
    }
    if let Some(key) = &config.api_key {
        let value = if anthropic {
            HeaderValue::from_str(key.expose())
        } else {
            HeaderValue::from_str(&format!("Bearer {}", key.expose()))
        };
        if let Ok(mut value) = value {
            value.set_sensitive(true);
            headers.insert(
                if anthropic {
                    "x-api-key".parse().unwrap()
                } else {
                    AUTHORIZATION
                },
                value,
            );
        }
    }
    headers
}

/// The body with `stream: true` (and OpenAI's usage chunk asked for).
fn streaming_body(body: &str, kind: StreamKind) -> Vec<u8> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut map)) => {
            map.insert("stream".into(), Value::Bool(true));
            if kind != StreamKind::Anthropic {
                map.insert(
                    "stream_options".into(),
                    serde_json::json!({"include_usage": true}),
                );
            }
            serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| body.as_bytes().to_vec())
        }
        _ => body.as_bytes().to_vec(),
    }
}

fn map_stream(e: StreamError) -> TransportError {
    match e {
        StreamError::Cut => TransportError::StreamCut,
        other => TransportError::StreamError(other.to_string()),
    }
}

/// A redirect is never followed (it could carry the key elsewhere): it is
/// an error naming where it pointed.
fn refuse_redirect(resp: &reqwest::Response) -> Result<(), TransportError> {
    let status = resp.status().as_u16();
    if (300..400).contains(&status) {
        return Err(TransportError::Redirect {
            status,
            location: redirect_target(resp),
        });
    }
    Ok(())
}

/// Where a 3xx pointed, resolved against the request's URL, without
/// userinfo, query or fragment (they may hold a key or a signature).
fn redirect_target(resp: &reqwest::Response) -> String {
    match resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(loc) => match resp.url().join(loc) {
            Ok(url) => display_url(url.as_str()),
            Err(_) => "an unreadable Location".into(),
        },
        None => "no Location".into(),
    }
}

/// `url` fit to print: no userinfo (`user:key@`), no query, no fragment.
/// Text that is not a URL is cut at its first `?` or `#` instead.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        // "user:pw@host/v1" parses as scheme "user": treat it as text.
        _ => {
            let cut = url.find(['?', '#']).unwrap_or(url.len());
            let url = &url[..cut];
            // No scheme to parse by: drop anything up to an `@` too.
            url.rsplit_once('@')
                .map_or(url, |(_, rest)| rest)
                .to_string()
        }
    }
}

/// The plain cause of a failed connection ("connection refused"), from the
/// innermost error rather than reqwest's layers of "error sending request".
fn connect_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = e;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        // An io::Error's `source()` skips the error it wraps, and connectors
        // wrap one io::Error in another: look through `get_ref` too.
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(e) = io {
            use std::io::ErrorKind::*;
            match e.kind() {
                ConnectionRefused => return "connection refused".into(),
                ConnectionReset => return "connection reset".into(),
                TimedOut => return "the connection timed out".into(),
                // rustls reports a failed handshake as invalid data.
                InvalidData => return format!("the TLS handshake failed ({e})"),
                _ => {}
            }
            io = e.get_ref().and_then(|inner| inner.downcast_ref());
        }
        innermost = err;
        src = err.source();
    }
    let chain = error_chain(e).to_ascii_lowercase();
    let inner = innermost.to_string();
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        format!("the host name did not resolve ({inner})")
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake")
    {
        format!("the TLS handshake failed ({inner})")
    } else {
        inner
    }
}

/// `30s`, `2m`, `1m30s`, `1h5m`: whole seconds.
pub(crate) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, 0) if d.subsec_millis() > 0 => format!("{}ms", d.subsec_millis()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Joins a base URL and an endpoint path without doubling a shared segment:
/// `https://api.openai.com/v1` + `/v1/chat/completions` is
/// `https://api.openai.com/v1/chat/completions`, as OpenAI's batch files and
/// SDKs mean it.
pub fn join_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if let Some(last) = base.rsplit('/').next() {
        let prefix = format!("/{last}/");
        if !last.is_empty() && !last.contains(':') && path.starts_with(&prefix) {
            return format!("{base}{}", &path[prefix.len() - 1..]);
        }
    }
    format!("{base}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One chat request with an empty body, as most tests here send.
    async fn chat(t: &Transport) -> Result<Answer, TransportError> {
        let path = "/v1/chat/completions";
        t.send(path, Endpoint::from_path(path), "{}", "r").await
    }
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-trick HTTP/1.1 server on 127.0.0.1: every request gets `reply`
    /// (`None`: the connection is closed once the request is read). It counts
    /// connections and keeps each request's head.
    struct Canned {
        addr: SocketAddr,
        conns: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl Canned {
        async fn start(reply: Option<Vec<u8>>) -> Canned {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let conns = Arc::new(AtomicUsize::new(0));
            let heads = Arc::new(Mutex::new(Vec::new()));
            let (c, h) = (conns.clone(), heads.clone());
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    let (h, reply) = (h.clone(), reply.clone());
                    tokio::spawn(async move {
                        let head = read_request(&mut sock).await;
                        h.lock().unwrap().push(head);
                        if let Some(reply) = reply {
                            let _ = sock.write_all(&reply).await;
                        }
                        let _ = sock.shutdown().await;
                    });
                }
            });
            Canned { addr, conns, heads }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }
    }

    /// Reads one request (head and Content-Length body, at most 1 MiB).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while buf.len() < 1 << 20 {
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(end) = head_end {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return head;
                }
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).to_ascii_lowercase()
    }

    fn reply(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn transport(base_url: String, max_response_bytes: u64, stream: bool) -> Transport {
        Transport::new(TransportConfig {
            base_url,
            api_key: Some(ApiKey::new("sk-planted-key")),
            timeout: Duration::from_secs(20),
            stream,
            max_response_bytes,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn no_redirect_is_followed_so_no_prompt_or_key_reaches_another_origin() {
        let b = Canned::start(Some(reply("200 OK", &[("content-length", "2")], b"{}"))).await;
        let elsewhere = format!(
            "http://user:secret@{}/v1/chat/completions?api-key=sk-planted-key#f",
            b.addr
        );
        for status in [
            "301 Moved Permanently",
            "302 Found",
            "303 See Other",
            "307 Temporary Redirect",
            "308 Permanent Redirect",
        ] {
            let a = Canned::start(Some(reply(
                status,
                &[("location", &elsewhere), ("content-length", "0")],
                b"",
            )))
            .await;
            let t = transport(a.url(), DEFAULT_MAX_RESPONSE_BYTES, false);
            let code: u16 = status[..3].parse().unwrap();
            let want = format!("http://{}/v1/chat/completions", b.addr);
            // Bearer (OpenAI), x-api-key (Anthropic), and the key check's GET.
            let results = [
                t.send(
                    "/v1/chat/completions",
                    Endpoint::from_path("/v1/chat/completions"),
                    r#"{"model":"m"}"#,
                    "r1",
                )
                .await,
                t.send(
                    "/v1/messages",
                    Endpoint::from_path("/v1/messages"),
                    r#"{"model":"m"}"#,
                    "r2",
                )
                .await,
                t.get("/v1/models", true).await,
                t.get("/v1/models", false).await,
            ];
            for r in results {
                match r {
                    Err(TransportError::Redirect { status, location }) => {
                        assert_eq!(status, code);
                        assert_eq!(location, want);
                    }
                    other => panic!("{code}: expected a redirect error, got {other:?}"),
                }
            }
            // The key went to the address given, and nowhere else.
            let heads = a.heads.lock().unwrap().clone();
            assert_eq!(heads.len(), 4);
            assert!(heads[0].contains("authorization: bearer sk-planted-key"));
            assert!(heads[1].contains("x-api-key: sk-planted-key"));
        }
        assert_eq!(
            b.conns.load(Ordering::SeqCst),
            0,
            "another origin was contacted"
        );
        let e = TransportError::Redirect {
            status: 307,
            location: "http://other.host/v1/chat/completions".into(),
        };
        assert_eq!(
            e.to_string(),
            "the provider answered 307 redirecting to http://other.host/v1/chat/completions; \
             pacer follows no redirects: set --base-url to the final address"
        );
    }

    #[tokio::test]
    async fn a_relative_redirect_is_named_by_its_full_address() {
        let a = Canned::start(Some(reply(
            "308 Permanent Redirect",
            &[
                ("location", "/openai/v1/chat/completions?sig=x"),
                ("content-length", "0"),
            ],
            b"",
        )))
        .await;
        let t = transport(a.url(), DEFAULT_MAX_RESPONSE_BYTES, false);
        let e = chat(&t).await.unwrap_err();
        assert!(
            matches!(&e, TransportError::Redirect { status: 308, location } if *location == format!("{}/openai/v1/chat/completions", a.url())),
            "{e:?}"
        );
        assert_eq!(e.code(), "redirect");
    }

    #[tokio::test]
    async fn answers_over_the_limit_are_cut_whether_sized_chunked_or_streamed() {
        let limit = 1000u64;
        let body = vec![b'x'; limit as usize + 1];
        let sized = Canned::start(Some(reply(
            "200 OK",
            &[("content-length", &body.len().to_string())],
            &body,
        )))
        .await;
        // No Content-Length: the body ends when the connection closes.
        let unsized_ = Canned::start(Some(reply("200 OK", &[], &body))).await;
        let error = Canned::start(Some(reply("500 Internal Server Error", &[], &body))).await;
        for server in [&sized, &unsized_, &error] {
            let t = transport(server.url(), limit, false);
            let e = chat(&t).await.unwrap_err();
            assert!(
                matches!(e, TransportError::TooLarge { limit: 1000 }),
                "{e:?}"
            );
            assert_eq!(
                e.to_string(),
                "the answer was larger than --max-response-bytes (1000 bytes)"
            );
            assert_eq!(e.code(), "response_too_large");
            assert_eq!(e.unreached_cause(), None);
        }
        // At the limit exactly, the answer is read whole.
        let at = Canned::start(Some(reply("200 OK", &[], &body[..limit as usize]))).await;
        let t = transport(at.url(), limit, false);
        let a = chat(&t).await.unwrap();
        assert_eq!(a.body.len() as u64, limit);
        // A stream counts its raw events.
        let mut events = String::new();
        while events.len() as u64 <= limit {
            events.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\n");
        }
        let stream = Canned::start(Some(reply(
            "200 OK",
            &[("content-type", "text/event-stream")],
            events.as_bytes(),
        )))
        .await;
        let t = transport(stream.url(), limit, true);
        let e = chat(&t).await.unwrap_err();
        assert!(
            matches!(e, TransportError::TooLarge { limit: 1000 }),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreached_and_a_dropped_one_is_not() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let t = transport(
            format!("http://{closed}"),
            DEFAULT_MAX_RESPONSE_BYTES,
            false,
        );
        let e = chat(&t).await.unwrap_err();
        assert_eq!(
            e.unreached_cause().as_deref(),
            Some("connection refused"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "could not connect: connection refused");
        assert!(!e.to_string().contains("sk-planted-key"));
        // Read the request, then hang up without an answer: it may have been
        // acted on, so it is not "unreached".
        let hangs_up = Canned::start(None).await;
        let t = transport(hangs_up.url(), DEFAULT_MAX_RESPONSE_BYTES, false);
        let e = chat(&t).await.unwrap_err();
        assert!(matches!(e, TransportError::Disconnected(_)), "{e:?}");
        assert_eq!(e.unreached_cause(), None);
        assert_eq!(e.code(), "connection_error");
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_unreached_and_says_so() {
        // A plain-HTTP server behind an https:// URL: it answers the
        // ClientHello with plain text, as such servers do.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut sock, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let t = transport(format!("https://{addr}"), DEFAULT_MAX_RESPONSE_BYTES, false);
        let e = t.get("/v1/models", false).await.unwrap_err();
        let cause = e.unreached_cause().unwrap_or_default();
        assert!(cause.starts_with("the TLS handshake failed ("), "{e:?}");
    }

    #[test]
    fn a_connect_timeout_says_how_long_it_waited() {
        let e = TransportError::ConnectTimeout(Duration::from_secs(30));
        assert_eq!(e.to_string(), "could not connect within 30s");
        assert_eq!(
            e.unreached_cause().as_deref(),
            Some("no connection within 30s")
        );
        assert_eq!(
            TransportError::Timeout(Duration::from_secs(600)).to_string(),
            "no answer within 600s"
        );
    }

    #[test]
    fn printed_urls_carry_no_userinfo_query_or_fragment() {
        assert_eq!(
            display_url("https://user:sk-1@gw.example/v1/models?api-key=sk-1#x"),
            "https://gw.example/v1/models"
        );
        assert_eq!(
            display_url("http://127.0.0.1:9/v1/models"),
            "http://127.0.0.1:9/v1/models"
        );
        assert_eq!(display_url("gw.example/v1?key=1"), "gw.example/v1");
        assert_eq!(display_url("user:pw@gw.example/v1"), "gw.example/v1");
    }

    #[test]
    fn durations_read_short() {
        let d = |s| short_duration(Duration::from_secs(s));
        assert_eq!(d(30), "30s");
        assert_eq!(d(1800), "30m");
        assert_eq!(d(90), "1m30s");
        assert_eq!(d(3900), "1h5m");
        assert_eq!(short_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn urls_join_without_doubling_v1() {
        assert_eq!(
            join_url("https://api.openai.com/v1", "/v1/chat/completions"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            join_url("https://api.openai.com/v1/", "/v1/embeddings"),
            "https://api.openai.com/v1/embeddings"
        );
        assert_eq!(
            join_url("http://127.0.0.1:8080", "/v1/chat/completions"),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(
            join_url("https://x.example/openai/v1", "/chat/completions"),
            "https://x.example/openai/v1/chat/completions"
        );
        assert_eq!(
            join_url("http://127.0.0.1:8080/v1", "v1/messages"),
            "http://127.0.0.1:8080/v1/messages"
        );
    }

    #[test]
    fn auth_uses_the_provider_convention_and_marks_the_key_sensitive() {
        let t = Transport::new(TransportConfig {
            api_key: Some(ApiKey::new("sk-1")),
            ..Default::default()
        })
        .unwrap();
        let openai = t.auth_headers(false);
        assert_eq!(openai.get(AUTHORIZATION).unwrap(), "Bearer sk-1");
        assert!(openai.get(AUTHORIZATION).unwrap().is_sensitive());
        let anthropic = t.auth_headers(true);
        assert_eq!(anthropic.get("x-api-key").unwrap(), "sk-1");
        assert_eq!(
            anthropic.get("anthropic-version").unwrap(),
            ANTHROPIC_VERSION
        );
        assert!(anthropic.get(AUTHORIZATION).is_none());
    }

    #[test]
    fn only_the_base_urls_origin_is_fetched_with_the_key() {
        let t = transport("https://api.anthropic.com/v1".into(), 1, false);
        assert!(t.on_base_origin("https://api.anthropic.com/v1/messages/batches/b/results"));
        assert!(t.on_base_origin("https://api.anthropic.com:443/x"));
        for other in [
            "http://api.anthropic.com/v1/x",
            "https://api.anthropic.com:8443/v1/x",
            "https://evil.example/v1/messages/batches/b/results",
            "https://api.anthropic.com.evil.example/x",
            "not a url",
        ] {
            assert!(!t.on_base_origin(other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_download_off_the_base_origin_is_refused_before_any_request() {
        let elsewhere =
            Canned::start(Some(reply("200 OK", &[("content-length", "2")], b"{}"))).await;
        let t = transport("http://127.0.0.1:9/v1".into(), 1000, false);
        let e = t
            .download(
                &format!("{}/v1/results?key=sk-planted-key", elsewhere.url()),
                true,
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("not on the base URL's origin"),
            "{e}"
        );
        assert!(!e.to_string().contains("sk-planted-key"), "{e}");
        assert_eq!(elsewhere.conns.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn streaming_asks_for_usage_on_openai_only() {
        let b: Value =
            serde_json::from_slice(&streaming_body(r#"{"model":"m"}"#, StreamKind::OpenAiChat))
                .unwrap();
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        let b: Value =
            serde_json::from_slice(&streaming_body(r#"{"model":"m"}"#, StreamKind::Anthropic))
                .unwrap();
        assert_eq!(b["stream"], true);
        assert!(b.get("stream_options").is_none());
    }
}
