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

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::endpoint::Endpoint;

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

/// OpenAI chunks, folded by choice index.
#[derive(Debug, Default)]
struct OpenAiState {
    /// id, created, model, system_fingerprint, service_tier: from the chunks.
    header: Map<String, Value>,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Option<Value>,
}

#[derive(Debug, Default)]
struct ChoiceState {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    text: String,
    tool_calls: BTreeMap<u64, ToolCallState>,
    function_call: Option<(String, String)>,
    finish_reason: Value,
    logprobs: Option<Value>,
}

#[derive(Debug, Default)]
struct ToolCallState {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl OpenAiState {
    fn chunk(&mut self, chunk: &Value) {
        for key in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                self.header.insert(key.to_string(), v.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let state = self.choices.entry(index).or_default();
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                state.finish_reason = reason.clone();
            }
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                state.text.push_str(text);
            }
            if let Some(lp) = choice.get("logprobs").filter(|l| !l.is_null()) {
                merge_logprobs(&mut state.logprobs, lp);
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                state.role = Some(role.to_string());
            }
            if let Some(content) = delta.get("content").and_then(Value::as_str) {
                state
                    .content
                    .get_or_insert_with(String::new)
                    .push_str(content);
            }
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                state
                    .refusal
                    .get_or_insert_with(String::new)
                    .push_str(refusal);
            }
            if let Some(fc) = delta.get("function_call") {
                let (name, args) = state.function_call.get_or_insert_with(Default::default);
                if let Some(n) = fc.get("name").and_then(Value::as_str) {
                    name.push_str(n);
                }
                if let Some(a) = fc.get("arguments").and_then(Value::as_str) {
                    args.push_str(a);
                }
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let i = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let tc = state.tool_calls.entry(i).or_default();
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    tc.id = Some(id.to_string());
                }
                if let Some(t) = call.get("type").and_then(Value::as_str) {
                    tc.kind = Some(t.to_string());
                }
                if let Some(f) = call.get("function") {
                    if let Some(n) = f.get("name").and_then(Value::as_str) {
                        tc.name.push_str(n);
                    }
                    if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                        tc.arguments.push_str(a);
                    }
                }
            }
        }
    }

    fn envelope(&self, object: &str, choices: Vec<Value>) -> Value {
        let mut body = Map::new();
        body.insert(
            "id".into(),
            self.header.get("id").cloned().unwrap_or(Value::Null),
        );
        body.insert("object".into(), json!(object));
        body.insert(
            "created".into(),
            self.header.get("created").cloned().unwrap_or(Value::Null),
        );
        body.insert(
            "model".into(),
            self.header.get("model").cloned().unwrap_or(Value::Null),
        );
        for key in ["system_fingerprint", "service_tier"] {
            if let Some(v) = self.header.get(key) {
                body.insert(key.into(), v.clone());
            }
        }
        body.insert("choices".into(), Value::Array(choices));
        body.insert("usage".into(), self.usage.clone().unwrap_or(Value::Null));
        Value::Object(body)
    }

    fn chat_body(&self) -> Value {
        let choices = self
            .choices
            .iter()
            .map(|(index, c)| {
                let mut message = Map::new();
                message.insert(
                    "role".into(),
                    json!(c.role.as_deref().unwrap_or("assistant")),
                );
                message.insert(
                    "content".into(),
                    c.content.clone().map_or(Value::Null, Value::String),
                );
                if let Some(refusal) = &c.refusal {
                    message.insert("refusal".into(), json!(refusal));
                }
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .values()
                        .map(|tc| {
                            json!({
                                "id": tc.id,
                                "type": tc.kind.as_deref().unwrap_or("function"),
                                "function": {"name": tc.name, "arguments": tc.arguments},
                            })
                        })
                        .collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                if let Some((name, arguments)) = &c.function_call {
                    message.insert(
                        "function_call".into(),
                        json!({"name": name, "arguments": arguments}),
                    );
                }
                json!({
                    "index": index,
                    "message": Value::Object(message),
                    "logprobs": c.logprobs.clone().unwrap_or(Value::Null),
                    "finish_reason": c.finish_reason,
                })
            })
            .collect();
        self.envelope("chat.completion", choices)
    }

    fn completions_body(&self) -> Value {
        let choices = self
            .choices
            .iter()
            .map(|(index, c)| {
                json!({
                    "text": c.text,
                    "index": index,
                    "logprobs": c.logprobs.clone().unwrap_or(Value::Null),
                    "finish_reason": c.finish_reason,
                })
            })
            .collect();
        self.envelope("text_completion", choices)
    }
}

/// Logprobs arrive per chunk; their arrays (`content`, `refusal` for chat;
/// `tokens`, `token_logprobs`, `top_logprobs`, `text_offset` for completions)
/// concatenate.
fn merge_logprobs(into: &mut Option<Value>, chunk: &Value) {
    let Value::Object(acc) = into.get_or_insert_with(|| json!({})) else {
        return;
    };
    let Some(fields) = chunk.as_object() else {
        return;
    };
    for (key, value) in fields {
        match (acc.get_mut(key), value) {
            (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
            (Some(_), Value::Null) => {}
            _ => {
                acc.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Anthropic Messages events, folded into one message.
#[derive(Debug, Default)]
struct AnthropicState {
    message: Map<String, Value>,
    blocks: BTreeMap<u64, BlockState>,
    usage: Map<String, Value>,
    delta: Map<String, Value>,
}

#[derive(Debug)]
struct BlockState {
    block: Map<String, Value>,
    /// `input_json_delta` pieces of a `tool_use` block's `input`.
    partial_json: String,
}

impl AnthropicState {
    fn event(&mut self, kind: &str, event: &Value) -> Result<(), StreamError> {
        match kind {
            "message_start" => {
                let message = event
                    .get("message")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Object(usage)) = message.get("usage") {
                    self.usage.extend(usage.clone());
                }
                self.message = message;
            }
            "content_block_start" => {
                let index = block_index(event)?;
                let block = event
                    .get("content_block")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                self.blocks.insert(
                    index,
                    BlockState {
                        block,
                        partial_json: String::new(),
                    },
                );
            }
            "content_block_delta" => {
                let index = block_index(event)?;
                let Some(state) = self.blocks.get_mut(&index) else {
                    return Err(StreamError::Malformed(format!(
                        "a delta for content block {index}, which never started"
                    )));
                };
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let append = |block: &mut Map<String, Value>, key: &str, piece: Option<&str>| {
                    if let Some(piece) = piece {
                        let entry = block.entry(key.to_string()).or_insert_with(|| json!(""));
                        if let Value::String(s) = entry {
                            s.push_str(piece);
                        } else {
                            *entry = json!(piece);
                        }
                    }
                };
                let text = |key: &str| delta.get(key).and_then(Value::as_str);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => append(&mut state.block, "text", text("text")),
                    Some("thinking_delta") => {
                        append(&mut state.block, "thinking", text("thinking"))
                    }
                    Some("signature_delta") => {
                        append(&mut state.block, "signature", text("signature"))
                    }
                    Some("input_json_delta") => {
                        state
                            .partial_json
                            .push_str(text("partial_json").unwrap_or(""));
                    }
                    Some("citations_delta") => {
                        if let Some(citation) = delta.get("citation") {
                            let list = state.block.entry("citations").or_insert_with(|| json!([]));
                            if let Value::Array(list) = list {
                                list.push(citation.clone());
                            }
                        }
                    }
                    _ => {} // a delta kind this version does not know
                }
            }
            "message_delta" => {
                if let Some(Value::Object(delta)) = event.get("delta") {
                    self.delta.extend(delta.clone());
                }
                if let Some(Value::Object(usage)) = event.get("usage") {
                    // Cumulative counts: the latest value of each field wins.
                    for (k, v) in usage {
                        if !v.is_null() {
                            self.usage.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            // content_block_stop, message_stop, ping and future events.
            _ => {}
        }
        Ok(())
    }

    fn body(&self) -> Value {
        let mut body = self.message.clone();
        body.entry("type").or_insert_with(|| json!("message"));
        body.entry("role").or_insert_with(|| json!("assistant"));
        let content: Vec<Value> = self
            .blocks
            .values()
            .map(|b| {
                let mut block = b.block.clone();
                if block
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("tool_use"))
                {
                    let input = if b.partial_json.trim().is_empty() {
                        block.get("input").cloned().unwrap_or_else(|| json!({}))
                    } else {
                        serde_json::from_str(&b.partial_json)
                            .unwrap_or(Value::String(b.partial_json.clone()))
                    };
                    block.insert("input".into(), input);
                }
                Value::Object(block)
            })
            .collect();
        body.insert("content".into(), Value::Array(content));
        for (k, v) in &self.delta {
            body.insert(k.clone(), v.clone());
        }
        body.entry("stop_reason").or_insert(Value::Null);
        body.entry("stop_sequence").or_insert(Value::Null);
        body.insert("usage".into(), Value::Object(self.usage.clone()));
        Value::Object(body)
    }
}

fn block_index(event: &Value) -> Result<u64, StreamError> {
    event
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| StreamError::Malformed("a content block event without an index".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null},{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"Chào \"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world — ok\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"thế giới 🌏\"},\"finish_reason\":\"length\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}\n\n",
        "data: [DONE]\n\n",
    );

    fn expected_chat() -> Value {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello, world — ok"}, "logprobs": null, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "Chào thế giới 🌏"}, "logprobs": null, "finish_reason": "length"},
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
        })
    }

    fn assemble(kind: StreamKind, pieces: &[&[u8]]) -> Result<Value, StreamError> {
        let mut a = StreamAssembler::new(kind);
        for piece in pieces {
            a.push(piece)?;
        }
        a.finish()
    }

    /// Small deterministic generator, so split points vary without a seed crate.
    fn split_points(len: usize, seed: u64) -> Vec<usize> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut points = Vec::new();
        let mut at = 0;
        while at < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += 1 + (x % 23) as usize;
            points.push(at.min(len));
        }
        points
    }

    fn pieces(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut from = 0;
        for &p in points {
            out.push(bytes[from..p].to_vec());
            from = p;
        }
        out
    }

    #[test]
    fn chat_stream_reassembles_choices_by_index_with_usage() {
        let body = assemble(StreamKind::OpenAiChat, &[CHAT.as_bytes()]).unwrap();
        assert_eq!(body, expected_chat());
        let usage = crate::cost::Usage::from_response(&body).unwrap();
        assert_eq!(usage.total(), 21);
    }

    #[test]
    fn any_byte_split_gives_the_same_body() {
        let bytes = CHAT.as_bytes();
        // Every two-piece split, including inside the multi-byte characters.
        for cut in 0..=bytes.len() {
            let body = assemble(StreamKind::OpenAiChat, &[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(body, expected_chat(), "split at byte {cut}");
        }
        // One byte at a time, and many random splits.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            assemble(StreamKind::OpenAiChat, &singles).unwrap(),
            expected_chat()
        );
        for seed in 0..50 {
            let owned = pieces(bytes, &split_points(bytes.len(), seed));
            let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            assert_eq!(
                assemble(StreamKind::OpenAiChat, &refs).unwrap(),
                expected_chat(),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings_split_anywhere() {
        for ending in ["\r\n", "\r"] {
            let text = CHAT.replace('\n', ending);
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                let body =
                    assemble(StreamKind::OpenAiChat, &[&bytes[..cut], &bytes[cut..]]).unwrap();
                assert_eq!(body, expected_chat(), "ending {ending:?}, split at {cut}");
            }
        }
    }

    #[test]
    fn a_stream_without_done_is_cut_wherever_it_stops() {
        let full = CHAT.as_bytes();
        let done_at = CHAT.find("data: [DONE]").unwrap();
        for end in [0, 10, done_at / 2, done_at, done_at + 8] {
            let err = assemble(StreamKind::OpenAiChat, &[&full[..end]]).unwrap_err();
            assert_eq!(err, StreamError::Cut, "stream cut at byte {end}");
        }
        // The final blank line is not needed once [DONE] itself is complete.
        let without_blank = &full[..full.len() - 1];
        assert_eq!(
            assemble(StreamKind::OpenAiChat, &[without_blank]).unwrap(),
            expected_chat()
        );
    }

    #[test]
    fn an_error_event_is_a_provider_error() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        );
        let err = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap_err();
        assert_eq!(
            err,
            StreamError::Provider(
                json!({"error": {"message": "overloaded", "type": "server_error"}})
            )
        );

        let anthropic = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        match assemble(StreamKind::Anthropic, &[anthropic.as_bytes()]) {
            Err(StreamError::Provider(v)) => assert_eq!(v["error"]["type"], "overloaded_error"),
            other => panic!("expected a provider error, got {other:?}"),
        }
    }

    #[test]
    fn tool_call_arguments_are_concatenated() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"created\":1,\"model\":\"gpt-4.1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Hà Nội\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let body = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap();
        let message = &body["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["id"], "call_1");
        assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Hà Nội\"}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["usage"], Value::Null, "no usage chunk was sent");
    }

    #[test]
    fn completions_stream_reassembles_text() {
        let stream = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\"Once\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[{\"text\":\" upon\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"gpt-3.5-turbo-instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        let body = assemble(StreamKind::OpenAiCompletions, &[stream.as_bytes()]).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "cmpl-1", "object": "text_completion", "created": 5, "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": "Once upon", "index": 0, "logprobs": null, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })
        );
    }

    const ANTHROPIC: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Xin \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"chào\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"ocr\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"page\\\": \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"3}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected_anthropic() -> Value {
        json!({
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "text", "text": "Xin chào"},
                {"type": "tool_use", "id": "toolu_1", "name": "ocr", "input": {"page": 3}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 25, "cache_read_input_tokens": 100, "output_tokens": 15},
        })
    }

    #[test]
    fn anthropic_stream_reassembles_a_message() {
        let body = assemble(StreamKind::Anthropic, &[ANTHROPIC.as_bytes()]).unwrap();
        assert_eq!(body, expected_anthropic());
        let usage = crate::cost::Usage::from_response(&body).unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens
            ),
            (125, 100, 15)
        );
    }

    #[test]
    fn anthropic_any_split_same_body_and_cut_without_message_stop() {
        let bytes = ANTHROPIC.as_bytes();
        for seed in 0..50 {
            let owned = pieces(bytes, &split_points(bytes.len(), seed));
            let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            assert_eq!(
                assemble(StreamKind::Anthropic, &refs).unwrap(),
                expected_anthropic(),
                "seed {seed}"
            );
        }
        let stop_at = ANTHROPIC.find("event: message_stop").unwrap();
        assert_eq!(
            assemble(StreamKind::Anthropic, &[&bytes[..stop_at]]),
            Err(StreamError::Cut)
        );
        // `[DONE]` means nothing to Anthropic's stream.
        let fake = format!("{}data: [DONE]\n\n", &ANTHROPIC[..stop_at]);
        assert!(matches!(
            assemble(StreamKind::Anthropic, &[fake.as_bytes()]),
            Err(StreamError::Malformed(_))
        ));
    }

    #[test]
    fn multi_line_data_and_bom_are_read_as_the_spec_says() {
        let stream = "\u{feff}data: {\"id\":\"c\",\ndata: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata:[DONE]\n\n";
        let body = assemble(StreamKind::OpenAiChat, &[stream.as_bytes()]).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "a");
        assert_eq!(body["id"], "c");
    }

    #[test]
    fn bad_json_is_malformed_and_kind_follows_the_path() {
        let err = assemble(StreamKind::OpenAiChat, &[b"data: {not json\n\n"]).unwrap_err();
        assert!(matches!(err, StreamError::Malformed(_)));
        let kind = |path| StreamKind::of(Endpoint::from_path(path));
        assert_eq!(kind("/v1/chat/completions"), Some(StreamKind::OpenAiChat));
        assert_eq!(
            kind("/v1/completions/"),
            Some(StreamKind::OpenAiCompletions)
        );
        assert_eq!(kind("/v1/messages?beta=true"), Some(StreamKind::Anthropic));
        assert_eq!(kind("/v1/embeddings"), None);
    }

    #[test]
    fn is_done_turns_true_on_the_final_event() {
        let mut a = StreamAssembler::new(StreamKind::OpenAiChat);
        let done_at = CHAT.find("data: [DONE]").unwrap();
        a.push(&CHAT.as_bytes()[..done_at]).unwrap();
        assert!(!a.is_done());
        a.push(&CHAT.as_bytes()[done_at..]).unwrap();
        assert!(a.is_done());
    }

    /// Lines a broken or hostile stream might hold, so that the fuzzing gets
    /// past the framing into the reassembly.
    fn sse_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let json = prop_oneof![
            any::<u64>().prop_map(|i| format!("{{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"x\",\"tool_calls\":[{{\"index\":{i},\"function\":{{\"arguments\":\"a\"}}}}]}}}}],\"usage\":{{\"prompt_tokens\":{i}}}}}")),
            any::<u64>().prop_map(|i| format!("{{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}")),
            any::<u64>().prop_map(|i| format!("{{\"type\":\"content_block_delta\",\"index\":{i},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{{\"}}}}")),
            any::<i128>().prop_map(|n| format!("{{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{n}}}}}")),
            Just("{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1e300}}}".to_string()),
            Just("{\"type\":\"message_stop\"}".to_string()),
            Just("{\"type\":\"error\",\"error\":{}}".to_string()),
            any::<String>(),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            json.prop_map(|j| format!("data: {j}\n\n").into_bytes()),
            Just(b"data: [DONE]\n\n".to_vec()),
            Just(b"event: message_stop\r\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"\r".to_vec()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_bytes_never_panic(
            pieces in proptest::collection::vec(sse_piece(), 0..16),
            kind in 0..3usize,
        ) {
            let kind = [StreamKind::OpenAiChat, StreamKind::OpenAiCompletions, StreamKind::Anthropic][kind];
            let mut a = StreamAssembler::new(kind);
            for p in &pieces {
                if a.push(p).is_err() {
                    return Ok(());
                }
            }
            if let Ok(body) = a.finish() {
                if let Some(u) = crate::cost::Usage::from_response(&body) {
                    proptest::prop_assert!(u.completion_tokens <= crate::provider::MAX_COUNT);
                    proptest::prop_assert!(u.prompt_tokens <= 3 * crate::provider::MAX_COUNT);
                }
            }
        }
    }
}
