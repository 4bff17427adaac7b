//! What the simulator answers: deterministic text, provider-shaped bodies, and
//! the same text as server-sent events.
//!
//! The reply is a pure function of the request's *content* (its messages,
//! system prompt, prompt or input, and `max_tokens`), hashed with blake3. Two
//! things follow. A test can recompute the reply ([`expected_reply`]) and so
//! prove that each result in an output file belongs to its own request and
//! not to a neighbour's. And a retried or resumed request gets the same text,
//! as a well-behaved cached provider would, so duplicates are visible in the
//! statistics rather than in the content.
//!
//! The text is made of words from a fixed list whose token counts are known
//! in advance, so counting a reply's tokens (and cutting it at `max_tokens`)
//! costs a table lookup per word instead of a tokenizer run: the simulator
//! must never be the slowest peer in a benchmark.

mod endpoint;
mod shapes;
mod stream;
mod text;

pub use endpoint::Endpoint;
pub(crate) use shapes::{models_body, success_body};
pub(crate) use stream::stream_events;
pub use text::{expected_embedding, expected_reply, Reply, ReplyChoice};
