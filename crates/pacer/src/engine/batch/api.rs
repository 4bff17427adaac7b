//! The providers' batch APIs, as pacer calls them and reads their answers.
//!
//! Everything read here comes from the network and is bounded before it is
//! used: ids must look like ids (they go into URL paths), texts are cut,
//! counts go through the bounded parser, lists are capped.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::{json, Value};

use crate::provider::bounded;
use crate::store::BatchApi;
use crate::transport::{Answer, CallBody, Transport, TransportError};

/// Longest id accepted from a provider (they go into URL paths).
const MAX_ID_LEN: usize = 256;
/// Longest text kept from a provider (statuses, error codes and messages).
const MAX_TEXT: usize = 500;
/// Most errors kept from one batch object.
const MAX_ERRORS: usize = 1000;
/// Longest `results_url` accepted.
const MAX_URL_LEN: usize = 2048;
/// Batches asked for a list page (the most both APIs give).
pub(super) const LIST_PAGE: usize = 100;

/// A call to a batch API that did not give what was asked.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No (complete) answer.
    Transport(TransportError),
    /// A non-2xx answer.
    Http(Box<Answer>),
    /// A 2xx answer pacer cannot read (the provider's shape changed, or
    /// something else answered).
    Unreadable(String),
    /// A local failure (reading the file to upload).
    Local(String),
}

/// How far the provider is with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Validating, in progress, finalizing, cancelling: poll again.
    Running,
    /// Every request was processed (Anthropic: `ended`, whatever each
    /// result says).
    Completed,
    /// OpenAI: the batch failed as a whole (validation, the enqueued-token
    /// limit); its `errors` say why.
    Failed,
    /// OpenAI: not finished within the completion window.
    Expired,
    /// OpenAI: cancelled.
    Cancelled,
}

/// One error of a failed batch (OpenAI `errors.data[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteError {
    pub code: Option<String>,
    pub message: String,
    /// The 1-based line of the input file it is about, if any.
    pub line: Option<u64>,
}

/// Request counts as the provider states them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RemoteCounts {
    pub total: u64,
    /// Processed so far, successes and failures.
    pub processed: u64,
    pub failed: u64,
}

/// A batch object from either API, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub id: String,
    /// The provider's own word (`in_progress`, `ended`…), bounded.
    pub status: String,
    pub phase: Phase,
    pub counts: RemoteCounts,
    /// Unix ms, when the provider says.
    pub created_at: Option<i64>,
    pub input_file_id: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub results_url: Option<String>,
    pub errors: Vec<RemoteError>,
    /// OpenAI `metadata.pacer_job` and `metadata.pacer_batch`.
    pub pacer_job: Option<String>,
    pub pacer_batch: Option<String>,
}

impl Remote {
    /// Whether the batch failed for OpenAI's enqueued-token limit: not the
    /// requests' fault, to be sent again later.
    pub fn token_limited(&self) -> bool {
        self.phase == Phase::Failed
            && self
                .errors
                .iter()
                .any(|e| e.code.as_deref() == Some("token_limit_exceeded"))
    }
}

/// A provider id fit for a URL path: letters, digits, `_` and `-` only.
pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn id(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| valid_id(s))
        .map(str::to_owned)
}

/// A text from the network, cut to [`MAX_TEXT`] characters.
pub(crate) fn text(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    Some(s.chars().take(MAX_TEXT).collect())
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(bounded::json_count).unwrap_or(0)
}

/// An OpenAI batch object (`/v1/batches`); `None` if it is not one.
pub(crate) fn parse_openai(v: &Value) -> Option<Remote> {
    let status = text(v.get("status"))?;
    let phase = match status.as_str() {
        "completed" => Phase::Completed,
        "failed" => Phase::Failed,
        "expired" => Phase::Expired,
        "cancelled" => Phase::Cancelled,
        // validating, in_progress, finalizing, cancelling, and any word
        // OpenAI adds later: not over until it says so.
        _ => Phase::Running,
    };
    let counts = v
        .get("request_counts")
        .map_or_else(RemoteCounts::default, |c| {
            let completed = count(c, "completed");
            let failed = count(c, "failed");
            RemoteCounts {
                total: count(c, "total"),
                processed: completed.saturating_add(failed),
                failed,
            }
        });
    let errors = v
        .get("errors")
        .and_then(|e| e.get("data"))
        .and_then(Value::as_array)
        .map(|data| {
            data.iter()
                .take(MAX_ERRORS)
                .map(|e| RemoteError {
                    code: text(e.get("code")),
                    message: text(e.get("message")).unwrap_or_default(),
                    line: e.get("line").and_then(bounded::json_count),
                })
                .collect()
        })
        .unwrap_or_default();
    let meta = v.get("metadata");
    Some(Remote {
        id: id(v, "id")?,
        status,
        phase,
        counts,
        created_at: v
            .get("created_at")
            .and_then(bounded::json_count)
            .map(|s| s.saturating_mul(1000).min(i64::MAX as u64) as i64),
        input_file_id: id(v, "input_file_id"),
        output_file_id: id(v, "output_file_id"),
        error_file_id: id(v, "error_file_id"),
        results_url: None,
        errors,
        pacer_job: meta.and_then(|m| text(m.get("pacer_job"))),
        pacer_batch: meta.and_then(|m| text(m.get("pacer_batch"))),
    })
}

/// An Anthropic Message Batch object; `None` if it is not one.
pub(crate) fn parse_anthropic(v: &Value) -> Option<Remote> {
    let status = text(v.get("processing_status"))?;
    let phase = if status == "ended" {
        Phase::Completed
    } else {
        Phase::Running // in_progress, canceling
    };
    let counts = v
        .get("request_counts")
        .map_or_else(RemoteCounts::default, |c| {
            let processing = count(c, "processing");
            let failed = count(c, "errored")
                .saturating_add(count(c, "canceled"))
                .saturating_add(count(c, "expired"));
            let processed = count(c, "succeeded").saturating_add(failed);
            RemoteCounts {
                total: processing.saturating_add(processed),
                processed,
                failed,
            }
        });
    let created_at = text(v.get("created_at"))
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.timestamp_millis());
    let results_url = v
        .get("results_url")
        .and_then(Value::as_str)
        .filter(|u| u.len() <= MAX_URL_LEN && !u.chars().any(char::is_whitespace))
        .map(str::to_owned);
    Some(Remote {
        id: id(v, "id")?,
        status,
        phase,
        counts,
        created_at,
        input_file_id: None,
        output_file_id: None,
        error_file_id: None,
        results_url,
        errors: Vec::new(),
        pacer_job: None,
        pacer_batch: None,
    })
}

fn parse(api: BatchApi, v: &Value) -> Option<Remote> {
    match api {
        BatchApi::OpenAi => parse_openai(v),
        BatchApi::Anthropic => parse_anthropic(v),
    }
}

/// One page of a batch list, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub batches: Vec<Remote>,
    /// The id to ask for the next page after, when there is one.
    pub next_after: Option<String>,
}

fn batches_path(api: BatchApi) -> &'static str {
    match api {
        BatchApi::OpenAi => "/v1/batches",
        BatchApi::Anthropic => "/v1/messages/batches",
    }
}

/// The calls of both APIs over one transport.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub transport: Transport,
}

impl Api {
    fn timeout(&self) -> Duration {
        self.transport.config().timeout
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        anthropic: bool,
        body: CallBody,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let answer = self
            .transport
            .call(method, path, anthropic, body, timeout)
            .await
            .map_err(CallError::Transport)?;
        if !(200..300).contains(&answer.status) {
            return Err(CallError::Http(Box::new(answer)));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| CallError::Unreadable(format!("the answer is not JSON ({e})")))
    }

    async fn batch_call(
        &self,
        api: BatchApi,
        method: Method,
        path: &str,
        body: CallBody,
        timeout: Duration,
    ) -> Result<Remote, CallError> {
        let v = self
            .json(method, path, api == BatchApi::Anthropic, body, timeout)
            .await?;
        parse(api, &v).ok_or_else(|| CallError::Unreadable("the answer is not a batch".into()))
    }

    /// `POST /v1/files` (multipart, `purpose=batch`) of the JSONL at `file`.
    pub async fn upload(&self, file: &Path, name: &str) -> Result<String, CallError> {
        let (body, len, boundary) = multipart_file(file, name)
            .await
            .map_err(|e| CallError::Local(format!("{}: {e}", file.display())))?;
        let content_type =
            HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
                .map_err(|e| CallError::Local(e.to_string()))?;
        let v = self
            .json(
                Method::POST,
                "/v1/files",
                false,
                CallBody::Stream {
                    content_type,
                    body,
                    len,
                },
                upload_timeout(self.timeout(), len),
            )
            .await?;
        id(&v, "id").ok_or_else(|| CallError::Unreadable("the answer has no file id".into()))
    }

    /// `POST /v1/batches` for an uploaded file, tagged with the job's
    /// metadata so that a crash before its id is recorded can be repaired.
    pub async fn create_openai(
        &self,
        file_id: &str,
        endpoint: &str,
        job: &str,
        local: i64,
    ) -> Result<Remote, CallError> {
        let body = json!({
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": {"pacer_job": job, "pacer_batch": local.to_string()},
        });
        self.batch_call(
            BatchApi::OpenAi,
            Method::POST,
            "/v1/batches",
            CallBody::Json(Bytes::from(body.to_string())),
            self.timeout(),
        )
        .await
    }

    /// `POST /v1/messages/batches` with the body written at `file`.
    pub async fn create_anthropic(&self, file: &Path) -> Result<Remote, CallError> {
        let (body, len) = file_body(file)
            .await
            .map_err(|e| CallError::Local(format!("{}: {e}", file.display())))?;
        self.batch_call(
            BatchApi::Anthropic,
            Method::POST,
            "/v1/messages/batches",
            CallBody::Stream {
                content_type: HeaderValue::from_static("application/json"),
                body,
                len,
            },
            upload_timeout(self.timeout(), len),
        )
        .await
    }

    /// The batch's current state.
    pub async fn get(&self, api: BatchApi, batch_id: &str) -> Result<Remote, CallError> {
        let path = format!("{}/{batch_id}", batches_path(api));
        self.batch_call(api, Method::GET, &path, CallBody::Empty, self.timeout())
            .await
    }

    /// Asks the provider to cancel the batch.
    pub async fn cancel(&self, api: BatchApi, batch_id: &str) -> Result<Remote, CallError> {
        let path = format!("{}/{batch_id}/cancel", batches_path(api));
        self.batch_call(api, Method::POST, &path, CallBody::Empty, self.timeout())
            .await
    }

    /// One page of the account's batches, newest first, after `after`.
    pub async fn list(&self, api: BatchApi, after: Option<&str>) -> Result<Page, CallError> {
        let mut path = format!("{}?limit={LIST_PAGE}", batches_path(api));
        if let Some(after) = after.filter(|a| valid_id(a)) {
            let key = match api {
                BatchApi::OpenAi => "after",
                BatchApi::Anthropic => "after_id",
            };
            path.push_str(&format!("&{key}={after}"));
        }
        let v = self
            .json(
                Method::GET,
                &path,
                api == BatchApi::Anthropic,
                CallBody::Empty,
                self.timeout(),
            )
            .await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| CallError::Unreadable("the answer is not a list of batches".into()))?;
        let batches: Vec<Remote> = data
            .iter()
            .take(LIST_PAGE)
            .filter_map(|b| parse(api, b))
            .collect();
        let has_more = v.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        let next_after = if has_more {
            id(&v, "last_id").or_else(|| batches.last().map(|b| b.id.clone()))
        } else {
            None
        };
        Ok(Page {
            batches,
            next_after,
        })
    }
}

/// Uploads get the call timeout plus time for their size at a slow 256 KiB/s.
fn upload_timeout(base: Duration, len: u64) -> Duration {
    base.saturating_add(Duration::from_secs(len / (256 * 1024)))
}

/// A file as a streamed body of known length.
async fn file_body(path: &Path) -> std::io::Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    Ok((reqwest::Body::wrap_stream(file_chunks(file)), len))
}

/// `multipart/form-data` with `purpose=batch` and the file, streamed: the
/// file is never held in memory. Returns the body, its length and the
/// boundary.
async fn multipart_file(path: &Path, name: &str) -> std::io::Result<(reqwest::Body, u64, String)> {
    use futures::StreamExt;
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    // Random enough never to occur in the JSONL (which holds no bare CRLF).
    let boundary = format!("pacer-{:032x}", rand::random::<u128>());
    let name: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
         Content-Type: application/jsonl\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() as u64 + len + tail.len() as u64;
    let stream = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(file_chunks(file))
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
    Ok((reqwest::Body::wrap_stream(stream), total, boundary))
}

/// A file read in 256 KiB chunks; ends after the first error.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_batch_objects_are_read_and_bounded() {
        let v = json!({
            "id": "batch_abc123", "object": "batch", "endpoint": "/v1/chat/completions",
            "status": "failed", "input_file_id": "file-xyz", "output_file_id": null,
            "created_at": 1_711_471_533u64,
            "errors": {"object": "list", "data": [
                {"code": "token_limit_exceeded", "message": "Enqueued token limit reached for gpt-4o-mini", "param": null, "line": null},
                {"code": "invalid_json", "message": "x".repeat(5000), "line": 7}
            ]},
            "request_counts": {"total": 100, "completed": 95, "failed": 5},
            "metadata": {"pacer_job": "j1", "pacer_batch": "3"}
        });
        let r = parse_openai(&v).unwrap();
        assert_eq!(r.id, "batch_abc123");
        assert_eq!(r.phase, Phase::Failed);
        assert!(r.token_limited());
        assert_eq!(r.created_at, Some(1_711_471_533_000));
        assert_eq!(r.input_file_id.as_deref(), Some("file-xyz"));
        assert_eq!(r.output_file_id, None);
        assert_eq!(r.errors[1].line, Some(7));
        assert_eq!(r.errors[1].message.len(), MAX_TEXT);
        assert_eq!(
            r.counts,
            RemoteCounts {
                total: 100,
                processed: 100,
                failed: 5
            }
        );
        assert_eq!(
            (r.pacer_job.as_deref(), r.pacer_batch.as_deref()),
            (Some("j1"), Some("3"))
        );
        for (status, phase) in [
            ("validating", Phase::Running),
            ("in_progress", Phase::Running),
            ("finalizing", Phase::Running),
            ("cancelling", Phase::Running),
            ("something_new", Phase::Running),
            ("completed", Phase::Completed),
            ("expired", Phase::Expired),
            ("cancelled", Phase::Cancelled),
        ] {
            let r = parse_openai(&json!({"id": "batch_1", "status": status})).unwrap();
            assert_eq!(r.phase, phase, "{status}");
        }
    }

    #[test]
    fn ids_that_would_change_a_url_path_are_refused() {
        for bad in ["../files", "batch_1/cancel", "a?b", "", "a b", "é"] {
            assert!(!valid_id(bad), "{bad}");
            assert!(parse_openai(&json!({"id": bad, "status": "completed"})).is_none());
        }
        let r = parse_openai(&json!({
            "id": "batch_1", "status": "completed", "output_file_id": "../../etc/passwd"
        }))
        .unwrap();
        assert_eq!(r.output_file_id, None);
        assert!(valid_id("msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"));
        assert!(!valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn anthropic_batch_objects_are_read() {
        let v = json!({
            "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message_batch",
            "processing_status": "ended",
            "request_counts": {"processing": 0, "succeeded": 90, "errored": 4, "canceled": 1, "expired": 5},
            "created_at": "2024-09-24T18:37:24.100435Z",
            "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results"
        });
        let r = parse_anthropic(&v).unwrap();
        assert_eq!(r.phase, Phase::Completed);
        assert_eq!(
            r.counts,
            RemoteCounts {
                total: 100,
                processed: 100,
                failed: 10
            }
        );
        assert_eq!(r.created_at, Some(1_727_203_044_100));
        assert!(r.results_url.unwrap().ends_with("/results"));
        let r = parse_anthropic(&json!({"id": "msgbatch_1", "processing_status": "canceling"}))
            .unwrap();
        assert_eq!(r.phase, Phase::Running);
        assert!(parse_anthropic(&json!({"id": "msgbatch_1"})).is_none());
    }
}
