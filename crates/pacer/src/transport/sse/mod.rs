//! Server-sent events, reassembled into the body a non-streamed call returns.
//!
//! Streaming is an operational choice (first bytes arrive early, an idle
//! timeout catches a stalled answer), not a different result: the output file
//! must hold the same body whichever mode fetched it. So [`StreamAssembler`]
//! folds OpenAI chat/completions chunks and Anthropic Messages events back
//! into one JSON response.
//!
//! It is pure and incremental: bytes are pushed as the network delivers them,
//! split anywhere (mid-line, mid-UTF-8 character), and nothing here does I/O
//! or keeps time; the transport owns the idle timeout. The one rule that
//! matters for correctness: a stream is complete only with its final event
//! (`data: [DONE]` for OpenAI, `message_stop` for Anthropic). A connection
//! that closes before it is [`StreamError::Cut`], to be retried, never a
//! success with half an answer.
//!
//! Three parts: this file frames the byte stream into events (lines, `\r\n`
//! and `\r` breaks, comments, multi-line `data:`, the final event);
//! [`openai`] folds chat and completions chunks by choice index, tool calls
//! and logprobs included; [`anthropic`] folds Messages events by content
//! block.

use serde_json::Value;

use crate::endpoint::Endpoint;

mod anthropic;
mod openai;
#[cfg(test)]
mod tests;

use anthropic::AnthropicState;
use openai::OpenAiState;

/// A single event larger than this is refused, so a broken peer that never
/// ends a line cannot grow the buffer without bound.
const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// Which API's event stream is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `/v1/chat/completions` chunks (`chat.completion.chunk`).
    OpenAiChat,
    /// `/v1/completions` chunks (`text_completion`).
    OpenAiCompletions,
    /// Anthropic `/v1/messages` events.
    Anthropic,
}

impl StreamKind {
    /// The stream kind of an endpoint; `None` for endpoints pacer does not
    /// stream (embeddings, responses...).
    pub fn of(endpoint: Endpoint) -> Option<StreamKind> {
        match endpoint {
            Endpoint::ChatCompletions => Some(StreamKind::OpenAiChat),
            Endpoint::Completions => Some(StreamKind::OpenAiCompletions),
            Endpoint::Messages => Some(StreamKind::Anthropic),
            _ => None,
        }
    }
}

/// Why a stream cannot be turned into a response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream ended before its final event: retry the request.
    #[error("the stream ended before its final event (cut)")]
    Cut,
    /// The provider sent an error event; its JSON payload.
    #[error("the provider sent an error event in the stream: {0}")]
    Provider(Value),
    /// Bytes that are not a valid event stream of this kind.
    #[error("malformed event stream: {0}")]
    Malformed(String),
}

/// Reassembles one streamed answer. See the module docs.
#[derive(Debug)]
pub struct StreamAssembler {
    kind: StreamKind,
    /// Bytes not yet ending in a line break.
    pending: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` belongs to that break.
    after_cr: bool,
    /// Whether the stream start (and a possible BOM) was seen.
    started: bool,
    /// The current event's `event:` field and `data:` lines.
    event_name: Option<String>,
    data: Option<String>,
    done: bool,
    openai: OpenAiState,
    anthropic: AnthropicState,
}

impl StreamAssembler {
    pub fn new(kind: StreamKind) -> Self {
        StreamAssembler {
            kind,
            pending: Vec::new(),
            after_cr: false,
            started: false,
            event_name: None,
            data: None,
            done: false,
            openai: OpenAiState::default(),
            anthropic: AnthropicState::default(),
        }
    }

    /// The stream kind this assembler reads.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Whether the final event has arrived (the transport may stop reading).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed the next bytes of the stream, split anywhere.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), StreamError> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator = bytes[pos];
            let line = if self.pending.is_empty() {
                self.decode_line(&bytes[..pos])?
            } else {
                self.pending.extend_from_slice(&bytes[..pos]);
                let whole = std::mem::take(&mut self.pending);
                self.decode_line(&whole)?
            };
            bytes = &bytes[pos + 1..];
            if terminator == b'\r' {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.line(&line)?;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() + self.data.as_ref().map_or(0, String::len) > MAX_EVENT_BYTES {
            return Err(StreamError::Malformed(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The stream has closed: the reassembled non-streamed response body, or
    /// [`StreamError::Cut`] when the final event never came.
    pub fn finish(mut self) -> Result<Value, StreamError> {
        if !self.done {
            // Lenient about a last event missing its blank line; a fragment
            // that does not parse is just more evidence of a cut.
            let rest = std::mem::take(&mut self.pending);
            if !rest.is_empty() {
                let line = self.decode_line(&rest).map_err(|_| StreamError::Cut)?;
                self.line(&line).map_err(cut_unless_provider)?;
            }
            self.dispatch().map_err(cut_unless_provider)?;
        }
        if !self.done {
            return Err(StreamError::Cut);
        }
        Ok(match self.kind {
            StreamKind::OpenAiChat => self.openai.chat_body(),
            StreamKind::OpenAiCompletions => self.openai.completions_body(),
            StreamKind::Anthropic => self.anthropic.body(),
        })
    }

    fn decode_line(&mut self, raw: &[u8]) -> Result<String, StreamError> {
        let mut raw = raw;
        if !self.started {
            self.started = true;
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        String::from_utf8(raw.to_vec())
            .map_err(|_| StreamError::Malformed("a line that is not UTF-8".to_string()))
    }

    /// One complete line, as the SSE specification reads it.
    fn line(&mut self, line: &str) -> Result<(), StreamError> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return Ok(()); // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // id, retry and unknown fields do not change the answer
        }
        Ok(())
    }

    /// The end of one event (a blank line).
    fn dispatch(&mut self) -> Result<(), StreamError> {
        let name = self.event_name.take();
        let Some(data) = self.data.take() else {
            return Ok(());
        };
        if self.done {
            return Ok(()); // nothing after the final event changes the answer
        }
        if self.kind != StreamKind::Anthropic && data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let value: Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(_) if name.as_deref() == Some("error") => {
                return Err(StreamError::Provider(Value::String(data)));
            }
            Err(e) => {
                return Err(StreamError::Malformed(format!(
                    "an event that is not JSON: {e}"
                )))
            }
        };
        let is_error = name.as_deref() == Some("error")
            || value.get("type").and_then(Value::as_str) == Some("error")
            || value.get("error").is_some_and(|e| !e.is_null());
        if is_error {
            return Err(StreamError::Provider(value));
        }
        match self.kind {
            StreamKind::OpenAiChat | StreamKind::OpenAiCompletions => {
                self.openai.chunk(&value);
                Ok(())
            }
            StreamKind::Anthropic => {
                let kind = value
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or(name)
                    .unwrap_or_default();
                if kind == "message_stop" {
                    self.done = true;
                }
                self.anthropic.event(&kind, &value)
            }
        }
    }
}

fn cut_unless_provider(e: StreamError) -> StreamError {
    match e {
        StreamError::Provider(v) => StreamError::Provider(v),
        _ => StreamError::Cut,
    }
}
