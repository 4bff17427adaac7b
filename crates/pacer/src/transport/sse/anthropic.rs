//! Anthropic Messages events, folded back into one message.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::StreamError;

/// Anthropic Messages events, folded into one message.
#[derive(Debug, Default)]
pub(super) struct AnthropicState {
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
    pub(super) fn event(&mut self, kind: &str, event: &Value) -> Result<(), StreamError> {
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

    pub(super) fn body(&self) -> Value {
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
