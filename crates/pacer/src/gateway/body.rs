use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tokio::time::Instant;

use super::layer::{BoxError, OnFinished};
use super::queue::Admission;
use crate::cost::Usage;
use crate::endpoint::Endpoint;
use crate::engine::Pacer;
use crate::provider::RateLimitSnapshot;
use crate::retry::{Outcome, RetryReason, Verdict};
use crate::tokens::{count_text, TokenEstimate};
use crate::transport::sse::{StreamAssembler, StreamKind};
use crate::transport::TransportError;

/// A JSON answer larger than this is passed through without reading its
/// usage (it is then estimated): parsing it would cost more than it tells.
const MAX_USAGE_SCAN_BYTES: usize = 8 * 1024 * 1024;

/// Where a request's token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageSource {
    /// The provider's `usage`, in the answer or its stream.
    Reported,
    /// pacer's estimate: the prompt as admission counted it, the completion
    /// counted from the text that came back.
    Estimated,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
        }
    }
}

/// How a request's answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The whole answer went to the client.
    Complete,
    /// The upstream's body failed (or grew past the size limit) midway.
    Cut,
    /// The client went away before the end; the upstream request was dropped.
    ClientGone,
}

/// What one request came to, told once when its answer ends.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The status the client got from the upstream.
    pub status: u16,
    pub ending: Ending,
    /// Tokens, with where they came from; `None` when the answer carried
    /// nothing to count (an error).
    pub usage: Option<(Usage, UsageSource)>,
    /// From the first attempt's admission to the end of the answer.
    pub latency: Duration,
    /// Attempts sent upstream (1 without retries).
    pub attempts: u32,
}

/// The answer a client gets through [`Paced`](super::Paced): the upstream's
/// body passed through frame by frame as it arrives, read on the side for
/// its usage; or, for an answer the layer had to read to decide on a retry,
/// that whole body.
///
/// When the body ends (or is dropped: the client left) the request's place
/// in flight is given back and the pacer hears how it went, with the tokens
/// the provider reported; so a streamed answer holds its slot for as long
/// as it streams, as Little's law needs.
pub struct PacedBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Full(Option<Bytes>),
    Metered { inner: B, meter: Box<Meter> },
}

pub(crate) struct Meter {
    pub pacer: Arc<Pacer>,
    /// Released when the answer ends.
    pub admission: Option<Admission>,
    /// The first attempt's admission: the latency reported to the caller.
    pub started: Instant,
    /// This attempt's send: the latency the pacer learns.
    pub sent: Instant,
    pub model: String,
    pub status: u16,
    pub limits: RateLimitSnapshot,
    pub estimate: TokenEstimate,
    pub reader: UsageReader,
    pub read: u64,
    pub limit: u64,
    pub attempts: u32,
    pub on_finished: Option<OnFinished>,
}

/// Reads usage on the side of the pass-through.
pub(crate) enum UsageReader {
    Events(Box<StreamAssembler>),
    Json(Vec<u8>),
    /// Too large or unreadable: the usage will be estimated.
    Gave,
}

impl UsageReader {
    /// The reader for an answer with this content type.
    pub fn for_answer(endpoint: Endpoint, content_type: &str) -> UsageReader {
        if content_type.starts_with("text/event-stream") {
            match StreamKind::of(endpoint) {
                Some(kind) => UsageReader::Events(Box::new(StreamAssembler::new(kind))),
                None => UsageReader::Gave,
            }
        } else {
            UsageReader::Json(Vec::new())
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        match self {
            UsageReader::Events(a) => {
                if a.push(bytes).is_err() {
                    *self = UsageReader::Gave;
                }
            }
            UsageReader::Json(buf) => {
                if buf.len() + bytes.len() > MAX_USAGE_SCAN_BYTES {
                    *self = UsageReader::Gave;
                } else {
                    buf.extend_from_slice(bytes);
                }
            }
            UsageReader::Gave => {}
        }
    }

    /// The answer as one JSON value, where it could be read.
    fn finish(self) -> Option<Value> {
        match self {
            UsageReader::Events(a) => a.finish().ok(),
            UsageReader::Json(buf) => {
                // Most answers carry `usage`: read only it (serde skips the
                // rest without building it); the whole answer only when it
                // has none, to count its text.
                #[derive(serde::Deserialize)]
                struct UsageOnly {
                    usage: Option<Value>,
                }
                match serde_json::from_slice::<UsageOnly>(&buf) {
                    Ok(UsageOnly { usage: Some(u) }) if u.is_object() => {
                        Some(serde_json::json!({ "usage": u }))
                    }
                    _ => serde_json::from_slice(&buf).ok(),
                }
            }
            UsageReader::Gave => None,
        }
    }
}

impl<B> PacedBody<B> {
    pub(crate) fn full(bytes: Bytes) -> PacedBody<B> {
        PacedBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    pub(crate) fn metered(inner: B, meter: Meter) -> PacedBody<B> {
        PacedBody {
            kind: Kind::Metered {
                inner,
                meter: Box::new(meter),
            },
        }
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Metered { inner, meter } => {
                if meter.admission.is_none() && meter.on_finished.is_none() {
                    return Poll::Ready(None);
                }
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => {
                        meter.finish(Ending::Complete);
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            meter.read = meter.read.saturating_add(data.len() as u64);
                            if meter.read > meter.limit {
                                meter.finish(Ending::Cut);
                                let e = TransportError::TooLarge { limit: meter.limit };
                                return Poll::Ready(Some(Err(e.into())));
                            }
                            meter.reader.push(data);
                        }
                        // A body of known length is not polled past its
                        // last byte: its end is now, not at a later None.
                        if inner.is_end_stream() {
                            meter.finish(Ending::Complete);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        meter.finish(Ending::Cut);
                        Poll::Ready(Some(Err(e.into())))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Metered { inner, meter } => {
                (meter.admission.is_none() && meter.on_finished.is_none()) || inner.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Metered { inner, .. } => inner.size_hint(),
        }
    }
}

impl<B> Drop for PacedBody<B> {
    fn drop(&mut self) {
        if let Kind::Metered { meter, .. } = &mut self.kind {
            meter.finish(Ending::ClientGone);
        }
    }
}

impl Meter {
    /// Once: the pacer's feedback, the slot back, the caller told.
    pub(crate) fn finish(&mut self, ending: Ending) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let now = Instant::now();
        let reader = std::mem::replace(&mut self.reader, UsageReader::Gave);
        let answer = match ending {
            Ending::Complete => reader.finish(),
            _ => None,
        };
        let reported = answer.as_ref().and_then(Usage::from_response);
        let usage = match (reported, ending) {
            (Some(u), _) => Some((u, UsageSource::Reported)),
            (None, Ending::Complete) => Some((
                Usage {
                    prompt_tokens: self.estimate.prompt,
                    cached_tokens: 0,
                    completion_tokens: answer
                        .as_ref()
                        .map_or(0, |a| completion_estimate(&self.model, a)),
                },
                UsageSource::Estimated,
            )),
            _ => None,
        };
        let verdict = match ending {
            Ending::Complete => Verdict::Success,
            Ending::Cut => Verdict::Retry(RetryReason::StreamCut),
            // The provider was answering: it is up, but the time says
            // nothing of its latency.
            Ending::ClientGone => Verdict::Fail,
        };
        let outcome = Outcome {
            verdict,
            limits: std::mem::take(&mut self.limits),
            latency: now.saturating_duration_since(self.sent),
            charged_tokens: reported.map(|u| u.total()),
        };
        self.pacer.feedback(now, &outcome, &admission.ticket);
        drop(admission);
        if let Some(hook) = self.on_finished.take() {
            (hook.0)(&Finished {
                status: self.status,
                ending,
                usage,
                latency: now.saturating_duration_since(self.started),
                attempts: self.attempts,
            });
        }
    }
}

/// Tokens of the generated text in an answer (chat, completions, Anthropic
/// Messages, Responses), for an answer that did not report its usage.
pub(crate) fn completion_estimate(model: &str, answer: &Value) -> u64 {
    let mut text = String::new();
    let mut add = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            text.push_str(s);
        }
    };
    for choice in answer
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(choice.pointer("/message/content"));
        add(choice.get("text"));
        for call in choice
            .pointer("/message/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(call.pointer("/function/name"));
            add(call.pointer("/function/arguments"));
        }
    }
    for block in answer
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(block.get("text"));
    }
    add(answer.get("output_text"));
    if text.is_empty() {
        0
    } else {
        count_text(model, &text)
    }
}

/// A wall clock reading for classification (HTTP dates in Retry-After).
pub(crate) fn wall_now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_generated_text_is_counted_in_each_shape() {
        let chat = json!({"choices":[{"message":{"content":"hello there"}}]});
        assert!(completion_estimate("gpt-4o-mini", &chat) >= 2);
        let tool = json!({"choices":[{"message":{"content":null,"tool_calls":[
            {"function":{"name":"get_weather","arguments":"{\"city\":\"Hanoi\"}"}}]}}]});
        assert!(completion_estimate("gpt-4o-mini", &tool) >= 5);
        let claude = json!({"content":[{"type":"text","text":"xin chào"}]});
        assert!(completion_estimate("claude-3-5-haiku", &claude) >= 1);
        let embedding = json!({"data":[{"embedding":[0.1,0.2]}]});
        assert_eq!(completion_estimate("text-embedding-3-small", &embedding), 0);
    }

    #[test]
    fn usage_is_read_from_an_event_stream_split_anywhere() {
        let mut r = UsageReader::for_answer(Endpoint::ChatCompletions, "text/event-stream");
        let stream = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n"
        );
        for chunk in stream.as_bytes().chunks(5) {
            r.push(chunk);
        }
        let answer = r.finish().expect("a whole stream");
        let usage = Usage::from_response(&answer).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 1));
        // A stream cut short tells nothing.
        let mut cut = UsageReader::for_answer(Endpoint::ChatCompletions, "text/event-stream");
        cut.push(&stream.as_bytes()[..60]);
        assert!(cut.finish().is_none());
        // JSON past the scan limit is given up on, not buffered.
        let mut big = UsageReader::for_answer(Endpoint::ChatCompletions, "application/json");
        big.push(&vec![b' '; MAX_USAGE_SCAN_BYTES + 1]);
        assert!(matches!(big, UsageReader::Gave));
    }
}
