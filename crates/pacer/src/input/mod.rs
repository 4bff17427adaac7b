//! Input: read, validate and estimate the requests of a job.
//!
//! Three kinds of input become the same [`RequestSpec`]s: OpenAI Batch JSONL
//! (complete requests, never modified), prompt JSONL (`id`, `prompt` and
//! `--model`, turned into chat-completions or Anthropic Messages bodies), and
//! a folder of text documents filled into a `--template`, long ones split into
//! chunks by tokens ([`split_text`]). [`Source::open`] tells them apart (a
//! folder; a first line with `custom_id`; a first line with `id` and
//! `prompt`) and checks the options the kind needs before anything is read.
//!
//! # Streamed, and validated whole before the first request
//!
//! [`Source::requests`] is an iterator over the input, one line (or one
//! document) at a time, on one reused buffer: a million-line file is never
//! held in memory. Only the duplicate check keeps state, and it keeps a
//! 128-bit hash and a line number per id (20 bytes), not the ids.
//!
//! The engine runs the whole iterator into the store, in one transaction,
//! before it sends anything. So a bad line (malformed JSON, a missing field, a
//! duplicate id, a GET) is found before a single token is paid for, and the
//! error says exactly where: `requests.jsonl:5000: missing field
//! `custom_id``, one sentence with the file and the line as an editor counts
//! them (blank lines included). The iterator stops at the first error: the
//! caller reports it and exits, and the transaction is never committed, so a
//! half-read input never becomes a job.
//!
//! # Why the fingerprint is a separate pass
//!
//! A resumed run must know whether its input changed since the state was
//! made, and it must start fast: the resume budget is two seconds on a
//! million-line file. Parsing and token-counting a million lines takes longer
//! than that, and the store already holds every request, so a resume does not
//! read the requests again. [`Source::fingerprint`] hashes the raw bytes
//! (blake3, which runs at gigabytes per second) in one streaming pass and
//! parses nothing; for prompts and folders it also covers the options that
//! shape the requests (model, `max_tokens`, template, splitting), since
//! changing them changes the job as surely as editing the file.
//!
//! # Errors
//!
//! [`InputError`]: one enum, one plain sentence each, always naming the file
//! (and line); I/O errors name the path.

mod batch;
mod error;
mod export;
mod folder;
mod lines;
mod options;
mod prompt;
mod seen;
mod source;
mod spec;
pub mod split;

pub use error::{FirstSeen, InputError, Place};
pub use export::export_by_document;
pub use options::{InputKind, ProviderHint, SourceOptions};
pub use source::{Requests, Source};
pub use spec::RequestSpec;
pub use split::{split_for_model, split_text};
