use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

use super::sse::{StreamAssembler, StreamError, StreamKind};
use super::ApiKey;
use crate::endpoint::Endpoint;

/// Anthropic's API version header, required on every call.
const ANTHROPIC_VERSION: &str = "2023-06-01";

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
        }
    }
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
    #[error("connection failed: {0}")]
    Connect(String),
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
            TransportError::Connect(_) => "connection_error",
            TransportError::StreamCut => "stream_cut",
            TransportError::StreamError(_) => "stream_error",
            TransportError::Other(_) => "transport_error",
        }
    }
}

/// The run's one HTTP client.
#[derive(Debug, Clone)]
pub struct Transport {
    client: reqwest::Client,
    config: TransportConfig,
}

impl Transport {
    pub fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.pool_max_idle)
            .connect_timeout(Duration::from_secs(30).min(config.timeout))
            .tcp_nodelay(true)
            .user_agent(concat!("pacer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TransportError::Other(format!("could not build the HTTP client: {e}")))?;
        Ok(Transport { client, config })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
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
        let mut headers = self.auth_headers(endpoint.is_anthropic());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if client_request_id.len() <= 512 {
            if let Ok(v) = HeaderValue::from_str(client_request_id) {
                headers.insert("x-client-request-id", v);
            }
        }
        let req = self
            .client
            .post(self.endpoint(path))
            .headers(headers)
            .body(body);
        self.exchange(req, stream_kind).await
    }

    /// One request and its whole answer (a stream reassembled), within the
    /// total timeout.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        stream_kind: Option<StreamKind>,
    ) -> Result<Answer, TransportError> {
        let fut = async {
            let resp = req.send().await.map_err(map_reqwest)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = match stream_kind {
                Some(kind) if (200..300).contains(&status) => self.read_stream(resp, kind).await?,
                _ => resp.bytes().await.map_err(map_reqwest)?,
            };
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.config.timeout, fut)
            .await
            .map_err(|_| TransportError::Timeout(self.config.timeout))?
    }

    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        kind: StreamKind,
    ) -> Result<Bytes, TransportError> {
        let idle = self.config.idle_timeout;
        let mut assembler = StreamAssembler::new(kind);
        loop {
            let chunk = tokio::time::timeout(idle, resp.chunk())
                .await
                .map_err(|_| TransportError::IdleTimeout(idle))?
                .map_err(|e| {
                    if e.is_body() || e.is_decode() {
                        TransportError::StreamCut
                    } else {
                        map_reqwest(e)
                    }
                })?;
            match chunk {
                Some(bytes) => assembler.push(&bytes).map_err(map_stream)?,
                None => break,
            }
        }
        let value = assembler.finish().map_err(map_stream)?;
        Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
    }

    fn auth_headers(&self, anthropic: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if anthropic {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        if let Some(key) = &self.config.api_key {
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

fn map_reqwest(e: reqwest::Error) -> TransportError {
    // reqwest's messages name the URL but never headers, so no key leaks.
    let e = e.without_url();
    if e.is_timeout() {
        TransportError::Timeout(Duration::ZERO)
    } else if e.is_connect() || e.is_request() {
        TransportError::Connect(error_chain(&e))
    } else if e.is_body() || e.is_decode() {
        TransportError::StreamCut
    } else {
        TransportError::Other(error_chain(&e))
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
