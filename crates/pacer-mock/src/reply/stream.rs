//! The same reply as server-sent events, in each provider's event format.
//!
//! Events are built up front (they are deterministic); the server then
//! decides how they are delivered: paced by `--chunk-delay`, cut short by
//! `--stream-cut-rate`, or broken by `--reset-rate`.

use bytes::Bytes;
use serde_json::{json, Value};

use super::shapes::answer_id;
use super::{Endpoint, Reply};

/// Words per content chunk.
const WORDS_PER_CHUNK: usize = 3;

/// Split `text` into chunks of a few words; the chunks concatenate to `text`.
fn chunks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut spaces = 0;
    for (i, ch) in text.char_indices() {
        if ch == ' ' {
            spaces += 1;
            if spaces % WORDS_PER_CHUNK == 0 {
                out.push(&text[start..i]);
                start = i;
            }
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// Every event of the streamed answer, in order. The last one is the
/// terminator a cut stream lacks (`data: [DONE]` or `message_stop`).
pub(crate) fn stream_events(
    endpoint: Endpoint,
    body: &Value,
    reply: &Reply,
    prompt_tokens: u64,
    seq: u64,
    created: u64,
) -> Vec<Bytes> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let id = answer_id(endpoint, seq);
    let completion_tokens = reply.completion_tokens();
    let mut out = Vec::new();
    match endpoint {
        Endpoint::Messages => {
            let c = reply.choices.first();
            let text = c.map(|c| c.text.as_str()).unwrap_or("");
            let truncated = c.is_some_and(|c| c.truncated);
            out.push(event(
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": prompt_tokens, "output_tokens": 1},
                }}),
            ));
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            out.push(event("ping", &json!({"type": "ping"})));
            for piece in chunks(text) {
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push(event(
                "message_delta",
                &json!({"type": "message_delta",
                    "delta": {"stop_reason": if truncated { "max_tokens" } else { "end_turn" }, "stop_sequence": null},
                    "usage": {"output_tokens": completion_tokens}}),
            ));
            out.push(event("message_stop", &json!({"type": "message_stop"})));
        }
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let chat = endpoint == Endpoint::ChatCompletions;
            let object = if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let chunk = |index: usize, delta: Value, finish: Value| {
                let choice = if chat {
                    json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
                } else {
                    let text = delta.get("content").cloned().unwrap_or(json!(""));
                    json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
                };
                let mut c = json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]});
                if chat {
                    c["system_fingerprint"] = json!("fp_pacer_mock");
                }
                if include_usage {
                    c["usage"] = Value::Null;
                }
                data(&c)
            };
            for (i, c) in reply.choices.iter().enumerate() {
                if chat {
                    out.push(chunk(
                        i,
                        json!({"role": "assistant", "content": "", "refusal": null}),
                        Value::Null,
                    ));
                }
                for piece in chunks(&c.text) {
                    out.push(chunk(i, json!({"content": piece}), Value::Null));
                }
                out.push(chunk(
                    i,
                    json!({}),
                    json!(if c.truncated { "length" } else { "stop" }),
                ));
            }
            if include_usage {
                out.push(data(&json!({
                    "id": id, "object": object, "created": created, "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                })));
            }
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        Endpoint::Embeddings | Endpoint::Models => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_concatenate_to_the_text() {
        let text = "The quick brown fox jumps over the lazy dog.";
        let c = chunks(text);
        assert_eq!(
            c,
            vec!["The quick brown", " fox jumps over", " the lazy dog."]
        );
        assert_eq!(c.concat(), text);
        assert!(chunks("").is_empty());
    }
}
