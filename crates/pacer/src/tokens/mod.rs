//! Token counting, the way providers count a request against a tokens-per-minute limit.
//!
//! A provider charges a request at admission with its *prompt tokens* plus the
//! most it may generate (`max_tokens` or `max_completion_tokens`, times `n`).
//! pacer reserves that charge before sending and reconciles it with the real
//! `usage` afterwards. The simulated provider counts with its own code
//! (tiktoken-rs), so that agreement is tested, not assumed.
//!
//! OpenAI models are counted with their own encoding (o200k for the GPT-4o and
//! later families, cl100k for GPT-4 / GPT-3.5 / embeddings). Other families
//! (Claude, Gemini, Llama, DeepSeek...) use o200k as a stated approximation,
//! scaled for Claude (see `count.rs`). `bpe.rs` counts exactly as tiktoken
//! does, on a compact vocabulary and a regex engine without backtracking.

mod bpe;
mod count;

pub use count::{
    count_text, encoding_for_model, estimate_request, scale_for_model, Encoding, TokenEstimate,
    DEFAULT_MAX_OUTPUT_TOKENS,
};
