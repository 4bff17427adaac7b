//! OpenAI chat/completions chunks, folded back into one response.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// OpenAI chunks, folded by choice index.
#[derive(Debug, Default)]
pub(super) struct OpenAiState {
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
    pub(super) fn chunk(&mut self, chunk: &Value) {
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

    pub(super) fn chat_body(&self) -> Value {
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

    pub(super) fn completions_body(&self) -> Value {
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
