//! Deterministic reply text and embeddings.

use std::sync::OnceLock;

use crate::tokens::{count, encoding_for_model, scale_for_model, Encoding};
use serde_json::Value;

use super::Endpoint;

/// The vocabulary replies are drawn from (lowercase, so each word is one
/// pre-tokenizer piece and its count is known in advance).
const WORDS: [&str; 64] = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river", "stone", "paper",
    "light", "green", "house", "window", "garden", "music", "silver", "winter", "summer", "market",
    "letter", "number", "simple", "model", "token", "answer", "result", "report", "signal",
    "system", "pacer", "batch", "limit", "steady", "careful", "morning", "evening", "city",
    "mountain", "ocean", "forest", "bridge", "road", "train", "cloud", "rain", "sun", "moon",
    "star", "field", "table", "chair", "book", "story", "note", "clear", "quiet", "bright",
    "small", "large", "early", "late", "again",
];

/// Dimensions of a simulated embedding.
const EMBEDDING_DIMS: usize = 8;

/// Token counts of every piece a reply can contain, for one encoding.
struct PieceCounts {
    /// `"The"`-style first words (capitalised, no leading space).
    first: [u64; WORDS.len()],
    /// `" the"`-style following words.
    rest: [u64; WORDS.len()],
    /// The closing `"."`.
    period: u64,
}

fn piece_counts(enc: Encoding) -> &'static PieceCounts {
    static O200K: OnceLock<PieceCounts> = OnceLock::new();
    static CL100K: OnceLock<PieceCounts> = OnceLock::new();
    let cell = match enc {
        Encoding::O200kBase => &O200K,
        Encoding::Cl100kBase => &CL100K,
    };
    cell.get_or_init(|| {
        let mut first = [0; WORDS.len()];
        let mut rest = [0; WORDS.len()];
        for (i, w) in WORDS.iter().enumerate() {
            first[i] = count(enc, &capitalise(w));
            rest[i] = count(enc, &format!(" {w}"));
        }
        PieceCounts {
            first,
            rest,
            period: count(enc, "."),
        }
    })
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One generated answer: the text of each choice and its token counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// One entry per choice (`n`); Anthropic and completions with no `n` have one.
    pub choices: Vec<ReplyChoice>,
}

/// The text of one choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyChoice {
    /// The reply text.
    pub text: String,
    /// Its tokens under the request model's encoding.
    pub tokens: u64,
    /// Cut at `max_tokens` (finish reason `length` / stop reason `max_tokens`).
    pub truncated: bool,
}

impl Reply {
    /// All choices' tokens: the usage's completion tokens.
    pub fn completion_tokens(&self) -> u64 {
        self.choices.iter().map(|c| c.tokens).sum()
    }

    /// The reply `endpoint` gives to `body` (embeddings have no text: no choices).
    pub fn generate(endpoint: Endpoint, body: &Value) -> Reply {
        if matches!(endpoint, Endpoint::Embeddings | Endpoint::Models) {
            return Reply {
                choices: Vec::new(),
            };
        }
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let counts = piece_counts(encoding_for_model(model));
        let max_tokens = body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .or_else(|| body.get("max_output_tokens"))
            .and_then(Value::as_u64);
        let n = if endpoint == Endpoint::Messages {
            1
        } else {
            body.get("n")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 128)
        };
        let seed = content_hash(endpoint, body);
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let choices = (0..n)
            .map(|i| choice(&seed, i, counts, max_tokens, model))
            .collect();
        Reply { choices }
    }
}

/// The hash of what a reply depends on: the request's content, never its
/// transport options (`stream`, `stream_options`, `user`...).
fn content_hash(endpoint: Endpoint, body: &Value) -> [u8; 32] {
    let null = Value::Null;
    let field = |k: &str| body.get(k).unwrap_or(&null);
    let mut h = blake3::Hasher::new();
    match endpoint {
        Endpoint::Messages => {
            h.update(b"messages\0");
            h.update(field("system").to_string().as_bytes());
            h.update(b"\0");
            h.update(field("messages").to_string().as_bytes());
        }
        Endpoint::ChatCompletions => {
            h.update(b"chat\0");
            h.update(field("messages").to_string().as_bytes());
        }
        _ => {
            h.update(b"text\0");
            let input = body
                .get("prompt")
                .or_else(|| body.get("input"))
                .unwrap_or(&null);
            h.update(input.to_string().as_bytes());
        }
    }
    *h.finalize().as_bytes()
}

fn choice(
    seed: &[u8; 32],
    index: u64,
    counts: &PieceCounts,
    max_tokens: Option<u64>,
    model: &str,
) -> ReplyChoice {
    // Families counted as a scaled base encoding (Claude) are scaled here too,
    // so that usage agrees with the simulator's count of the same text.
    let scaled = |t: u64| scale_for_model(model, t);
    let mut h = blake3::Hasher::new();
    h.update(seed);
    h.update(&index.to_le_bytes());
    let mut xof = h.finalize_xof();
    let mut bytes = [0u8; 64];
    xof.fill(&mut bytes);
    let words = 8 + (bytes[0] as usize % 40);
    let limit = max_tokens.unwrap_or(u64::MAX);

    let mut text = String::with_capacity(words * 8);
    let mut tokens = 0u64;
    let mut truncated = false;
    for (i, b) in bytes[1..=words].iter().enumerate() {
        let w = *b as usize % WORDS.len();
        let cost = if i == 0 {
            counts.first[w]
        } else {
            counts.rest[w]
        };
        if scaled(tokens + cost) > limit {
            truncated = true;
            break;
        }
        tokens += cost;
        if i == 0 {
            text.push_str(&capitalise(WORDS[w]));
        } else {
            text.push(' ');
            text.push_str(WORDS[w]);
        }
    }
    if !truncated {
        if scaled(tokens + counts.period) > limit {
            truncated = true;
        } else {
            tokens += counts.period;
            text.push('.');
        }
    }
    ReplyChoice {
        text,
        tokens: scaled(tokens),
        truncated,
    }
}

/// The text the simulator answers to `body` sent to `path` (choice 0), so a
/// test can check that a result belongs to its request. Empty for embeddings.
pub fn expected_reply(path: &str, body: &Value) -> String {
    let Some(endpoint) = Endpoint::from_path(path) else {
        return String::new();
    };
    Reply::generate(endpoint, body)
        .choices
        .into_iter()
        .next()
        .map(|c| c.text)
        .unwrap_or_default()
}

/// The embedding the simulator returns for one `input` item (a unit vector
/// derived from the item alone).
pub fn expected_embedding(item: &Value) -> Vec<f32> {
    let mut xof = blake3::Hasher::new()
        .update(b"embedding\0")
        .update(item.to_string().as_bytes())
        .finalize_xof();
    let mut bytes = [0u8; EMBEDDING_DIMS * 2];
    xof.fill(&mut bytes);
    let raw: Vec<f32> = bytes
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 / 32767.5 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.into_iter().map(|x| x / norm).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(content: &str) -> Value {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
    }

    #[test]
    fn same_content_same_reply_other_content_other_reply() {
        let a = expected_reply("/v1/chat/completions", &chat("one"));
        let mut streamed = chat("one");
        streamed["stream"] = json!(true);
        assert_eq!(
            a,
            expected_reply("/v1/chat/completions", &streamed),
            "stream is not content"
        );
        assert_ne!(a, expected_reply("/v1/chat/completions", &chat("two")));
        assert!(a.ends_with('.'));
    }

    #[test]
    fn piece_table_agrees_with_the_tokenizer() {
        for model in ["gpt-4o-mini", "gpt-4", "claude-3-5-haiku"] {
            for i in 0..200 {
                let body = json!({"model": model, "messages": [{"role": "user", "content": format!("doc {i}")}]});
                let reply = Reply::generate(Endpoint::ChatCompletions, &body);
                let c = &reply.choices[0];
                assert_eq!(
                    c.tokens,
                    crate::tokens::count_for_model(model, &c.text),
                    "{model}: {:?}",
                    c.text
                );
            }
        }
    }

    #[test]
    fn max_tokens_bounds_the_reply() {
        for i in 0..100 {
            let mut body = chat(&format!("doc {i}"));
            body["max_tokens"] = json!(5);
            body["n"] = json!(2);
            let reply = Reply::generate(Endpoint::ChatCompletions, &body);
            assert_eq!(reply.choices.len(), 2);
            for c in &reply.choices {
                assert!(c.tokens <= 5);
                assert_eq!(
                    c.tokens,
                    crate::tokens::count_for_model("gpt-4o-mini", &c.text)
                );
                assert!(c.truncated, "replies are at least 9 tokens long");
            }
        }
    }

    #[test]
    fn embeddings_are_unit_vectors_of_their_item() {
        let a = expected_embedding(&json!("hello"));
        assert_eq!(a.len(), EMBEDDING_DIMS);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert_ne!(a, expected_embedding(&json!("world")));
    }
}
