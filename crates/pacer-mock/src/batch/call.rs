//! One request to the batch or file APIs: checked, answered and recorded
//! like a live request (outages, keys, the log), but never rate limited.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error_body;
use crate::handler::find_key;
use crate::state::MockState;
use crate::stats::{Outcome, Route};

/// A batch-API request that passed the outage and key checks.
pub(crate) struct Call<'s> {
    pub state: &'s MockState,
    seq: u64,
    at: Duration,
    path: String,
    anthropic: bool,
    client_request_id: Option<String>,
    /// The index of the key it presented (the owner of what it creates).
    pub key: usize,
    /// `http://HOST` as the client addressed the server.
    pub origin: String,
}

/// Starts a call: answers (and records) outages and bad keys itself (boxed:
/// a response is large and the happy path should not pay for it).
pub(crate) fn begin<'s>(
    state: &'s MockState,
    headers: &HeaderMap,
    uri: &Uri,
    anthropic: bool,
) -> Result<Call<'s>, Box<Response>> {
    let seq = state.seq.fetch_add(1, Ordering::Relaxed);
    let at = Instant::now().saturating_duration_since(state.started);
    state.recorder.arrive(None);
    let mut call = Call {
        state,
        seq,
        at,
        path: uri.path().to_string(),
        anthropic,
        client_request_id: headers
            .get("x-client-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        key: 0,
        origin: format!(
            "http://{}",
            headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
        ),
    };
    if state.config.outage.iter().any(|o| o.covers(at)) {
        let body = error_body::server_error(anthropic, 503);
        return Err(Box::new(call.finish(
            503,
            None,
            "application/json",
            json_bytes(&body),
        )));
    }
    let (key, given) = find_key(state, headers);
    match key {
        Some((_, index)) => {
            call.key = index;
            Ok(call)
        }
        None => {
            let body = error_body::unauthorized(anthropic, given);
            Err(Box::new(call.finish(
                401,
                None,
                "application/json",
                json_bytes(&body),
            )))
        }
    }
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

impl Call<'_> {
    fn finish(
        &self,
        status: u16,
        key: Option<usize>,
        content_type: &'static str,
        body: Bytes,
    ) -> Response {
        self.state.recorder.finish(Outcome {
            seq: self.seq,
            at: self.at,
            route: Route::Path(&self.path),
            status,
            fault: None,
            key,
            body: None,
            client_request_id: self.client_request_id.as_deref(),
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        let mut headers = HeaderMap::new();
        let (name, id) = if self.anthropic {
            ("request-id", format!("req_mock{:010}", self.seq))
        } else {
            ("x-request-id", format!("req_mock{:010}", self.seq))
        };
        if let Ok(v) = HeaderValue::try_from(id) {
            headers.insert(HeaderName::from_static(name), v);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, headers, body).into_response()
    }

    /// A JSON answer.
    pub fn json(self, status: u16, body: &Value) -> Response {
        self.finish(status, Some(self.key), "application/json", json_bytes(body))
    }

    /// A file's bytes.
    pub fn bytes(self, content_type: &'static str, body: Bytes) -> Response {
        self.finish(200, Some(self.key), content_type, body)
    }

    /// OpenAI's error body.
    pub fn openai_error(self, status: u16, message: &str, param: Option<&str>) -> Response {
        let kind = if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body =
            json!({"error": {"message": message, "type": kind, "param": param, "code": null}});
        self.json(status, &body)
    }

    /// Anthropic's error body.
    pub fn anthropic_error(self, status: u16, kind: &str, message: &str) -> Response {
        self.json(status, &error_body::anthropic(kind, message))
    }
}

/// The value of `name` in the query of `uri` (`%XX` and `+` decoded).
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let uri: Uri = "/v1/batches?limit=2&after=batch_a%5Fb&x".parse().unwrap();
        assert_eq!(query_param(&uri, "limit").as_deref(), Some("2"));
        assert_eq!(query_param(&uri, "after").as_deref(), Some("batch_a_b"));
        assert_eq!(query_param(&uri, "x").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "y"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
