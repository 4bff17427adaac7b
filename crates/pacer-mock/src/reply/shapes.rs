//! Provider-shaped success bodies.

use serde_json::{json, Value};

use super::text::expected_embedding;
use super::{Endpoint, Reply};

/// Models listed by `GET /v1/models`.
/// The models listed by `GET /v1/models` (every model is served; these are
/// the names a key check expects to find).
const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3",
    "o4-mini",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-3-5-haiku-latest",
    "claude-sonnet-4-0",
    "claude-sonnet-4-5",
    "claude-opus-4-1",
    "claude-haiku-4-5",
];

/// The `GET /v1/models` list.
pub(crate) fn models_body() -> Value {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "pacer-mock"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// The id of answer number `seq` on `endpoint`.
pub(crate) fn answer_id(endpoint: Endpoint, seq: u64) -> String {
    match endpoint {
        Endpoint::ChatCompletions => format!("chatcmpl-mock{seq:010}"),
        Endpoint::Completions => format!("cmpl-mock{seq:010}"),
        Endpoint::Messages => format!("msg_mock{seq:010}"),
        Endpoint::Embeddings | Endpoint::Models => format!("mock{seq:010}"),
    }
}

/// The non-streamed answer to `body`.
pub(crate) fn success_body(
    endpoint: Endpoint,
    body: &Value,
    reply: &Reply,
    prompt_tokens: u64,
    seq: u64,
    created: u64,
) -> Value {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let id = answer_id(endpoint, seq);
    let completion_tokens = reply.completion_tokens();
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    match endpoint {
        Endpoint::ChatCompletions => {
            let choices: Vec<Value> = reply
                .choices
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "index": i,
                        "message": {"role": "assistant", "content": c.text, "refusal": null},
                        "logprobs": null,
                        "finish_reason": if c.truncated { "length" } else { "stop" },
                    })
                })
                .collect();
            json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": choices, "usage": usage, "system_fingerprint": "fp_pacer_mock",
            })
        }
        Endpoint::Completions => {
            let choices: Vec<Value> = reply
                .choices
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "text": c.text, "index": i, "logprobs": null,
                        "finish_reason": if c.truncated { "length" } else { "stop" },
                    })
                })
                .collect();
            json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices, "usage": usage})
        }
        Endpoint::Messages => {
            let c = reply.choices.first();
            let text = c.map(|c| c.text.as_str()).unwrap_or("");
            let truncated = c.is_some_and(|c| c.truncated);
            json!({
                "id": id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": if truncated { "max_tokens" } else { "end_turn" },
                "stop_sequence": null,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
            })
        }
        Endpoint::Embeddings => {
            let items: Vec<&Value> = match body.get("input") {
                Some(Value::Array(items)) if items.iter().all(|i| !i.is_number()) => {
                    items.iter().collect()
                }
                Some(other) => vec![other],
                None => Vec::new(),
            };
            let data: Vec<Value> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| json!({"object": "embedding", "index": i, "embedding": expected_embedding(item)}))
                .collect();
            json!({
                "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            })
        }
        Endpoint::Models => models_body(),
    }
}
