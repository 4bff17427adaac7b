//! The simulator's own token counts: what it bills in `usage` and `/mock/stats`
//! and what it charges against `--tpm`.
//!
//! Written from the providers' documentation, deliberately not from pacer's
//! engine: tests compare pacer's estimate with this bill, which proves
//! something only if the two are independent. Only the BPE itself comes from
//! a library (`tiktoken-rs`, the reference tokenizer's vocabularies);
//! `tests/fixtures/token_counts.json`, made with OpenAI's Python tiktoken,
//! checks both the tokenizer and the formulas here.
//!
//! - Chat: OpenAI's cookbook `num_tokens_from_messages` (3 tokens a message,
//!   the tokens of each of its string fields, 1 more for a `name`, 3 priming
//!   the reply), plus `num_tokens_for_tools` for function definitions.
//! - Completions and embeddings: the tokens of the prompt / input strings.
//! - Anthropic Messages: the same shape without roles; Claude's tokenizer is
//!   not public, so Claude models are o200k × 1.14 (rounded up per text), as
//!   pacer's README states.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The output charged at admission when a request sets no `max_tokens`
/// (providers publish none; README: 1024).
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// A BPE vocabulary, named as tiktoken names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, o-series; the stand-in for other families.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5, the text-embedding models.
    Cl100kBase,
}

impl Encoding {
    /// tiktoken's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding tiktoken calls `name`.
    pub fn from_name(name: &str) -> Option<Encoding> {
        [Encoding::O200kBase, Encoding::Cl100kBase]
            .into_iter()
            .find(|e| e.name() == name)
    }

    fn bpe(self) -> &'static CoreBPE {
        static O200K: OnceLock<CoreBPE> = OnceLock::new();
        static CL100K: OnceLock<CoreBPE> = OnceLock::new();
        match self {
            Encoding::O200kBase => O200K
                .get_or_init(|| tiktoken_rs::o200k_base().expect("tiktoken-rs ships o200k_base")),
            Encoding::Cl100kBase => CL100K
                .get_or_init(|| tiktoken_rs::cl100k_base().expect("tiktoken-rs ships cl100k_base")),
        }
    }
}

/// Exact names tiktoken maps to cl100k (`tiktoken/model.py`, `MODEL_TO_ENCODING`);
/// every other name tiktoken knows among current models is o200k.
const CL100K_MODELS: [&str; 9] = [
    "gpt-4",
    "gpt-3.5-turbo",
    "gpt-3.5",
    "gpt-35-turbo",
    "davinci-002",
    "babbage-002",
    "text-embedding-ada-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
];

/// Name prefixes tiktoken maps to cl100k (`MODEL_PREFIX_TO_ENCODING`). Checked
/// after the o200k prefixes, since "gpt-4-" must not catch "gpt-4o-".
const CL100K_PREFIXES: [&str; 8] = [
    "gpt-4-",
    "gpt-3.5-turbo-",
    "gpt-35-turbo-",
    "ft:gpt-4",
    "ft:gpt-3.5-turbo",
    "ft:davinci-002",
    "ft:babbage-002",
    "text-embedding-",
];

/// The encoding `model` is billed with: tiktoken's table for OpenAI models,
/// o200k for everything else (Claude, Gemini, Llama... whose tokenizers are
/// not tiktoken's; README's stated approximation).
pub fn encoding_for_model(model: &str) -> Encoding {
    // Routers' "openai/gpt-4" names the same model.
    let model = model.rsplit('/').next().unwrap_or(model);
    let o200k_prefix = ["gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o", "ft:gpt-4o"]
        .iter()
        .any(|p| model.starts_with(p));
    if o200k_prefix {
        return Encoding::O200kBase;
    }
    if CL100K_MODELS.contains(&model) || CL100K_PREFIXES.iter().any(|p| model.starts_with(p)) {
        Encoding::Cl100kBase
    } else {
        Encoding::O200kBase
    }
}

/// Whether `model` is counted as o200k scaled up (README: Claude ≈ o200k × 1.14,
/// Anthropic's ~3.5 characters a token against OpenAI's ~4).
fn is_claude(model: &str) -> bool {
    model.to_ascii_lowercase().contains("claude")
}

/// `n` base-encoding tokens as `model` is billed for them.
pub fn scale_for_model(model: &str, n: u64) -> u64 {
    if is_claude(model) {
        // Integer arithmetic: ceil(n × 1.14) with no float rounding surprises.
        (n * 114).div_ceil(100)
    } else {
        n
    }
}

/// Longest run with no whitespace tokenized at once. tiktoken's pre-tokenizer
/// makes such a run one piece, and merging a piece is quadratic in its length
/// (a megabyte of base64 would stall a worker for minutes); longer runs are
/// counted in slices of this size, a token or so off per cut. No realistic
/// text has a 1 KiB word, so the fixture's exact counts are unaffected.
const LONGEST_RUN: usize = 1024;

/// Tokens of `text` in `enc`, as the API counts user text (special-token
/// strings such as `<|endoftext|>` are plain text).
pub fn count(enc: Encoding, text: &str) -> u64 {
    let bpe = enc.bpe();
    if text.len() <= LONGEST_RUN {
        return bpe.encode_ordinary(text).len() as u64;
    }
    let mut total = 0u64;
    let mut slice_start = 0;
    let mut run_len = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            run_len = 0;
            continue;
        }
        run_len += c.len_utf8();
        if run_len > LONGEST_RUN {
            total += bpe.encode_ordinary(&text[slice_start..i]).len() as u64;
            slice_start = i;
            run_len = c.len_utf8();
        }
    }
    total + bpe.encode_ordinary(&text[slice_start..]).len() as u64
}

/// Tokens of `text` as `model` is billed for them.
pub fn count_for_model(model: &str, text: &str) -> u64 {
    scale_for_model(model, count(encoding_for_model(model), text))
}

/// What a request costs: its prompt as billed, and the output it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Charge {
    /// Prompt (input) tokens, as `usage` reports them.
    pub prompt: u64,
    /// `max_tokens` × `n` (1024 each when absent); 0 for embeddings.
    pub max_output: u64,
}

impl Charge {
    /// What the request takes from the tokens-per-minute bucket at admission.
    pub fn total(&self) -> u64 {
        self.prompt + self.max_output
    }
}

/// The charge of `body` sent to `path` (`/v1/chat/completions`, `/v1/messages`,
/// `/v1/completions`, `/v1/embeddings`).
pub fn charge(path: &str, body: &Value) -> Charge {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let path = path.trim_end_matches('/');
    let max_tokens = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    if path.ends_with("/embeddings") {
        Charge {
            prompt: count_inputs(model, body.get("input")),
            max_output: 0,
        }
    } else if path.ends_with("/messages") {
        // Anthropic has no `n`: one answer a request.
        Charge {
            prompt: anthropic_prompt_tokens(model, body),
            max_output: max_tokens,
        }
    } else if path.ends_with("/chat/completions") {
        Charge {
            prompt: chat_prompt_tokens(model, body),
            max_output: max_tokens * n,
        }
    } else {
        Charge {
            prompt: count_inputs(model, body.get("prompt")),
            max_output: max_tokens * n,
        }
    }
}

/// Characters of all prompt text: the length in Unicode scalar values
/// (`str::chars`) of every JSON string nested anywhere inside the body's
/// `messages`, `prompt`, `input` and `system` fields (roles and part types
/// included, object keys not). Simple on purpose: it is what a limiter that
/// never tokenizes can afford to look at.
pub fn prompt_chars(body: &Value) -> u64 {
    fn walk(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.chars().count() as u64,
            Value::Array(items) => items.iter().map(walk).sum(),
            Value::Object(fields) => fields.values().map(walk).sum(),
            _ => 0,
        }
    }
    ["messages", "prompt", "input", "system"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(walk)
        .sum()
}

/// What OpenAI's limiter charges, by its own account, instead of tiktoken:
/// ⌈[`prompt_chars`] / 4⌉ + the same `max_tokens` × `n` as [`charge`].
pub fn chars_charge(path: &str, body: &Value) -> u64 {
    prompt_chars(body).div_ceil(4) + charge(path, body).max_output
}

/// The cookbook's per-message and reply-priming overheads for current models.
const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;

/// A chat request's prompt tokens: `num_tokens_from_messages` plus
/// `num_tokens_for_tools` from OpenAI's cookbook ("How to count tokens with
/// tiktoken").
pub fn chat_prompt_tokens(model: &str, body: &Value) -> u64 {
    let messages = body.get("messages").and_then(Value::as_array);
    let mut total = REPLY_PRIMING;
    for message in messages.into_iter().flatten() {
        total += PER_MESSAGE;
        let Some(fields) = message.as_object() else {
            continue;
        };
        for (key, value) in fields {
            // The cookbook encodes every field's value. Content given as parts
            // counts its text parts; other non-string values (tool calls)
            // are beyond the cookbook and not counted.
            total += match (key.as_str(), value) {
                (_, Value::String(s)) => count_for_model(model, s),
                ("content", Value::Array(parts)) => text_parts(model, parts),
                _ => 0,
            };
            if key == "name" {
                total += PER_NAME;
            }
        }
    }
    total + tool_tokens(model, body)
}

/// The cookbook's `num_tokens_for_tools`. Its constants are given for gpt-4o
/// and gpt-4o-mini (func_init 7) and gpt-4 and gpt-3.5-turbo (10); here they
/// follow the encoding, which is what separates those two groups.
fn tool_tokens(model: &str, body: &Value) -> u64 {
    let functions: Vec<&Value> = if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        tools.iter().filter_map(|t| t.get("function")).collect()
    } else if let Some(functions) = body.get("functions").and_then(Value::as_array) {
        functions.iter().collect()
    } else {
        Vec::new()
    };
    if functions.is_empty() {
        return 0;
    }
    let func_init: i64 = match encoding_for_model(model) {
        Encoding::O200kBase => 7,
        Encoding::Cl100kBase => 10,
    };
    const PROP_INIT: i64 = 3;
    const PROP_KEY: i64 = 3;
    const ENUM_INIT: i64 = -3;
    const ENUM_ITEM: i64 = 3;
    const FUNC_END: i64 = 12;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    // The cookbook drops one trailing period from descriptions.
    let undot = |s: String| match s.strip_suffix('.') {
        Some(t) => t.to_owned(),
        None => s,
    };
    let tokens = |s: &str| count_for_model(model, s) as i64;

    let mut total = 0i64;
    for f in functions {
        total += func_init;
        let line = format!("{}:{}", str_of(f, "name"), undot(str_of(f, "description")));
        total += tokens(&line);
        let properties = f
            .get("parameters")
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        let Some(properties) = properties.filter(|p| !p.is_empty()) else {
            continue;
        };
        total += PROP_INIT;
        for (key, p) in properties {
            total += PROP_KEY;
            if let Some(items) = p.get("enum").and_then(Value::as_array) {
                total += ENUM_INIT;
                for item in items {
                    total += ENUM_ITEM;
                    total += match item {
                        Value::String(s) => tokens(s),
                        other => tokens(&other.to_string()),
                    };
                }
            }
            let line = format!(
                "{key}:{}:{}",
                str_of(p, "type"),
                undot(str_of(p, "description"))
            );
            total += tokens(&line);
        }
    }
    (total + FUNC_END).max(0) as u64
}

/// An Anthropic Messages request's input tokens: the system prompt, then each
/// message's content with the chat overheads (3 a message, 3 priming).
/// Anthropic publishes no formula; this keeps the chat shape so the two
/// providers bill alike for the same text.
fn anthropic_prompt_tokens(model: &str, body: &Value) -> u64 {
    let mut total = REPLY_PRIMING;
    match body.get("system") {
        Some(Value::String(s)) => total += count_for_model(model, s),
        Some(Value::Array(parts)) => total += text_parts(model, parts),
        _ => {}
    }
    let messages = body.get("messages").and_then(Value::as_array);
    for message in messages.into_iter().flatten() {
        total += PER_MESSAGE
            + match message.get("content") {
                Some(Value::String(s)) => count_for_model(model, s),
                Some(Value::Array(parts)) => text_parts(model, parts),
                _ => 0,
            };
    }
    total
}

/// Content parts: the `text` of each text block (images, tool results'
/// non-text parts are not counted). A tool result's nested `content` counts too.
fn text_parts(model: &str, parts: &[Value]) -> u64 {
    parts
        .iter()
        .map(|part| match part {
            Value::String(s) => count_for_model(model, s),
            Value::Object(o) => {
                let text = match o.get("text") {
                    Some(Value::String(s)) => count_for_model(model, s),
                    _ => 0,
                };
                let nested = match o.get("content") {
                    Some(Value::String(s)) => count_for_model(model, s),
                    Some(Value::Array(inner)) => text_parts(model, inner),
                    _ => 0,
                };
                text + nested
            }
            _ => 0,
        })
        .sum()
}

/// `prompt` / `input`: a string, strings, one token array, or token arrays.
fn count_inputs(model: &str, input: Option<&Value>) -> u64 {
    match input {
        Some(Value::String(s)) => count_for_model(model, s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => count_for_model(model, s),
                // One token id of a pre-tokenized prompt.
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_cookbook_example_counts_as_the_api_reported() {
        // OpenAI's cookbook: "Hello world" as one user message to gpt-4o is
        // 3 (message) + 1 ("user") + 2 ("Hello world") + 3 (priming).
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello world"}], "max_tokens": 10, "n": 2});
        let c = charge("/v1/chat/completions", &body);
        assert_eq!((c.prompt, c.max_output, c.total()), (9, 20, 29));
    }

    #[test]
    fn tools_count_as_the_cookbook_reports_the_api_billed() {
        // The cookbook's example; the API reported 101 prompt tokens for
        // gpt-4o and gpt-4o-mini, 105 for gpt-4 and gpt-3.5-turbo.
        let tools = json!([{"type": "function", "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}},
                "required": ["location"]}}}]);
        let messages = json!([
            {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
            {"role": "user", "content": "What's the weather like in San Francisco?"}]);
        for (model, billed) in [
            ("gpt-4o", 101),
            ("gpt-4o-mini", 101),
            ("gpt-4", 105),
            ("gpt-3.5-turbo", 105),
        ] {
            let body = json!({"model": model, "messages": messages, "tools": tools});
            assert_eq!(
                charge("/v1/chat/completions", &body).prompt,
                billed,
                "{model}"
            );
        }
    }

    #[test]
    fn claude_is_o200k_times_1_14_rounded_up() {
        let text = "The totals were checked twice and found to agree with the ledger.";
        let base = count(Encoding::O200kBase, text);
        assert_eq!(
            count_for_model("claude-sonnet-4-5", text),
            (base * 114).div_ceil(100)
        );
        assert!(count_for_model("claude-sonnet-4-5", text) > base);
        assert_eq!(count_for_model("gemini-2.5-flash", text), base);
    }

    #[test]
    fn absent_max_tokens_charges_1024_and_embeddings_only_input() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(charge("/v1/chat/completions", &body).max_output, 1024);
        let body =
            json!({"model": "text-embedding-3-small", "input": ["Hello world", "Hello world"]});
        assert_eq!(
            charge("/v1/embeddings", &body),
            Charge {
                prompt: 4,
                max_output: 0
            }
        );
    }

    #[test]
    fn a_long_run_without_spaces_is_counted_in_bounded_time() {
        // 200 KB keeps the test quick in debug builds; the cost is linear
        // in the length once runs are sliced.
        let blob: String = (0..200_000)
            .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
            .collect();
        let started = std::time::Instant::now();
        let n = count(Encoding::O200kBase, &blob);
        assert!(n > 20_000, "{n}");
        assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    }

    #[test]
    fn chars_charge_counts_every_prompt_string_over_four_plus_output() {
        // "system"(6) + "Be brief."(9) + "user"(4) + "text"(4, the part's type)
        // + "héllo wörld"(11 chars, 13 bytes) = 34 → ⌈34/4⌉ = 9.
        let body = json!({"model": "gpt-4o-mini", "n": 2, "max_tokens": 10, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "héllo wörld"}]}]});
        assert_eq!(prompt_chars(&body), 34);
        assert_eq!(chars_charge("/v1/chat/completions", &body), 9 + 20);
        let body = json!({"model": "text-embedding-3-small", "input": ["abcde", "fgh"]});
        assert_eq!(chars_charge("/v1/embeddings", &body), 2);
        let body = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5, "system": "abcd",
                          "messages": [{"role": "user", "content": "abcd"}]});
        assert_eq!(chars_charge("/v1/messages", &body), 3 + 5);
    }
}
