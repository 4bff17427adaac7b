//! Transport: one HTTP client for the whole run.
//!
//! One `reqwest::Client` (rustls, connection pooling, HTTP/1.1 and HTTP/2 by
//! ALPN) is shared by every worker. Every attempt has a total timeout; a
//! streamed answer also has an idle timeout between chunks, since a stream
//! that stalls forever would otherwise hold a concurrency slot forever.
//! Streams are reassembled ([`sse`]) into the body a non-streamed call would
//! have returned, so the output has one shape whatever the mode. A stream
//! that ends without its final event is an error to retry, never a success.
//! No redirect is followed (a 3xx is [`TransportError::Redirect`]) and no
//! answer is read past `max_response_bytes`.

mod client;
mod key;
pub mod sse;

pub(crate) use client::short_duration;
pub use client::{
    display_url, join_url, Answer, CallBody, Transport, TransportConfig, TransportError,
    DEFAULT_MAX_RESPONSE_BYTES,
};
pub use key::ApiKey;
