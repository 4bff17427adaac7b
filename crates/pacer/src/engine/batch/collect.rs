//! Collecting an ended batch: its results files streamed line by line
//! (bounded), each line turned into its request's output line and state,
//! once, through the run's one writer.

use std::collections::HashMap;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::api::{Api, CallError};
use super::lines::{anthropic_line, idx_of, openai_line, LineAnswer, LineResult};
use crate::cost::{CostMeter, Usage};
use crate::engine::attempt::Emitter;
use crate::engine::output::{error_line, response_line};
use crate::report::Event;
use crate::retry::StopReason;
use crate::store::{BatchApi, BatchCommand, BatchMember, Command, RequestState};

/// Extra bytes a results line may have beyond `--max-response-bytes` (its frame).
pub(super) const LINE_FRAME: usize = 64 * 1024;
/// The bytes of an oversized line kept to find its `custom_id`.
const OVERSIZE_PREFIX: usize = 4096;
/// Unreadable result lines reported one by one before they are only counted.
const WARN_LINES: u64 = 5;

/// What one batch's results came to.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) requeued: u64,
    pub(super) cost_usd: f64,
    pub(super) unreadable: u64,
    pub(super) stop: Option<StopReason>,
}

/// A line of a results file as read: whole, or too long to keep (its first
/// bytes only).
enum Line<'a> {
    Whole(&'a [u8]),
    TooLong(&'a [u8]),
}

/// Streams the results at `source` line by line into `sink`, bounded: a
/// line longer than `max_line` is not kept, more than `max_lines` lines is
/// an error.
pub(super) async fn fetch_lines(
    api: &Api,
    source: &str,
    anthropic: bool,
    max_line: usize,
    max_lines: u64,
    sink: &mut Sink<'_>,
) -> Result<(), CallError> {
    let mut resp = match api.transport.download(source, anthropic).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(answer)) => return Err(CallError::Http(Box::new(answer))),
        Err(e) => return Err(CallError::Transport(e)),
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut too_long = false;
    let mut lines: u64 = 0;
    let mut emit = |line: Line<'_>, lines: &mut u64| -> Result<(), CallError> {
        *lines += 1;
        if *lines > max_lines {
            return Err(CallError::Unreadable(format!(
                "the results hold more than {max_lines} lines"
            )));
        }
        sink.line(line);
        Ok(())
    };
    while let Some(chunk) = api
        .transport
        .next_chunk(&mut resp)
        .await
        .map_err(CallError::Transport)?
    {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let (part, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if ended { &rest[part.len() + 1..] } else { &[] };
            if !too_long {
                if buf.len() + part.len() > max_line {
                    let keep = OVERSIZE_PREFIX.saturating_sub(buf.len()).min(part.len());
                    buf.extend_from_slice(&part[..keep]);
                    too_long = true;
                } else {
                    buf.extend_from_slice(part);
                }
            }
            if ended {
                let trimmed = buf.trim_ascii();
                if too_long {
                    emit(Line::TooLong(&buf), &mut lines)?;
                } else if !trimmed.is_empty() {
                    emit(Line::Whole(trimmed), &mut lines)?;
                }
                buf.clear();
                too_long = false;
            }
        }
    }
    if too_long {
        emit(Line::TooLong(&buf), &mut lines)?;
    } else if !buf.trim_ascii().is_empty() {
        emit(Line::Whole(buf.trim_ascii()), &mut lines)?;
    }
    Ok(())
}

/// Where result lines go: each becomes its request's output line and
/// state, once.
pub(super) struct Sink<'a> {
    pub(super) api: BatchApi,
    /// The batch's requests with no result written yet; each is taken out
    /// when its line is, so a line repeated (or a download repeated after
    /// a failure) writes nothing twice.
    pub(super) members: &'a mut HashMap<i64, BatchMember>,
    pub(super) meter: &'a mut CostMeter,
    pub(super) writer: &'a mpsc::UnboundedSender<Command>,
    pub(super) events: &'a Emitter,
    pub(super) max_retries: u32,
    pub(super) max_line: usize,
    pub(super) got: &'a mut Collected,
    pub(super) now: SystemTime,
    pub(super) failed_to_send: bool,
}

impl Sink<'_> {
    fn write(&mut self, cmd: Command) {
        if self.writer.send(cmd).is_err() {
            self.failed_to_send = true;
        }
    }

    fn line(&mut self, line: Line<'_>) {
        let line = match line {
            Line::Whole(l) => l,
            Line::TooLong(prefix) => return self.too_long(prefix),
        };
        let parsed = match self.api {
            BatchApi::OpenAi => openai_line(line, self.now),
            BatchApi::Anthropic => anthropic_line(line, self.now),
        };
        let (custom_id, result) = match parsed {
            Ok(p) => p,
            Err(why) => {
                self.got.unreadable += 1;
                if self.got.unreadable <= WARN_LINES {
                    tracing::warn!("a batch result line could not be read: {why}");
                }
                return;
            }
        };
        // Not one of this batch's unwritten requests: written already, or
        // not pacer's.
        let Some(m) = idx_of(&custom_id).and_then(|idx| self.members.remove(&idx)) else {
            return;
        };
        match result {
            LineResult::Success(a) => self.succeed(&m, a),
            LineResult::FailedHttp(a) => self.fail_http(&m, a),
            LineResult::FailedError { code, message } => self.fail_error(&m, &code, &message),
            LineResult::Retry {
                answer,
                why,
                counts,
            } => {
                // Out of retries: the last answer is the result, as live.
                if counts && m.attempts > self.max_retries {
                    match answer {
                        Some(a) => self.fail_http(&m, a),
                        None => self.fail_error(&m, "batch_error", &why),
                    }
                } else {
                    self.got.requeued += 1;
                    self.events.emit(Event::Retrying {
                        rate_limited: false,
                    });
                    self.write(Command::Batch(BatchCommand::Unbatch {
                        idx: m.idx,
                        error: Some(why),
                    }));
                }
            }
            LineResult::Stop(reason) => {
                self.got.requeued += 1;
                self.write(Command::Batch(BatchCommand::Unbatch {
                    idx: m.idx,
                    error: Some(reason.to_string()),
                }));
                self.got.stop.get_or_insert(reason);
            }
        }
    }

    fn succeed(&mut self, m: &BatchMember, a: LineAnswer) {
        let usage = Usage::from_response(&a.body);
        let model = m.model.clone().or_else(|| {
            a.body
                .get("model")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        });
        let cost = match (&usage, &model) {
            (Some(u), Some(model)) => self.meter.record(model, u),
            _ => None,
        };
        if let Some(u) = &usage {
            self.events.emit(Event::Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                cost_usd: cost,
                model: model.clone(),
            });
        }
        self.got.cost_usd += cost.unwrap_or(0.0);
        self.got.succeeded += 1;
        self.write(Command::Finish {
            idx: m.idx,
            state: RequestState::Done,
            line: response_line(&m.custom_id, a.status, &a.request_id, &a.body),
            error: None,
            prompt_tokens: usage.map(|u| u.prompt_tokens),
            cached_tokens: usage.map(|u| u.cached_tokens),
            completion_tokens: usage.map(|u| u.completion_tokens),
            cost_usd: cost,
        });
    }

    fn fail_http(&mut self, m: &BatchMember, a: LineAnswer) {
        let text = a.body.to_string();
        let text: String = text.chars().take(300).collect();
        self.got.failed += 1;
        self.write(Command::Finish {
            idx: m.idx,
            state: RequestState::Failed,
            error: Some(format!("HTTP {}: {text}", a.status)),
            line: response_line(&m.custom_id, a.status, &a.request_id, &a.body),
            prompt_tokens: None,
            cached_tokens: None,
            completion_tokens: None,
            cost_usd: None,
        });
    }

    fn fail_error(&mut self, m: &BatchMember, code: &str, message: &str) {
        self.got.failed += 1;
        self.write(Command::Finish {
            idx: m.idx,
            state: RequestState::Failed,
            line: error_line(&m.custom_id, code, message),
            error: Some(format!("{code}: {message}")),
            prompt_tokens: None,
            cached_tokens: None,
            completion_tokens: None,
            cost_usd: None,
        });
    }

    /// A line longer than the limit: its request fails for good, as a live
    /// answer that large does (found by the `custom_id` near its start).
    fn too_long(&mut self, prefix: &[u8]) {
        let Some(m) = custom_id_in(prefix)
            .and_then(|id| idx_of(&id))
            .and_then(|idx| self.members.remove(&idx))
        else {
            self.got.unreadable += 1;
            return;
        };
        let limit = self.max_line.saturating_sub(LINE_FRAME);
        self.fail_error(
            &m,
            "response_too_large",
            &format!("the answer was larger than --max-response-bytes ({limit} bytes)"),
        );
    }
}

/// The `custom_id` value in the first bytes of a JSON line, without parsing
/// the (cut) line.
fn custom_id_in(prefix: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(prefix);
    let at = text.find("\"custom_id\"")? + "\"custom_id\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_custom_id_of_a_cut_line_is_found() {
        assert_eq!(
            custom_id_in(
                br#"{"id": "batch_req_1", "custom_id": "pacer-12", "response": {"body": "xxxx"#
            )
            .as_deref(),
            Some("pacer-12")
        );
        assert_eq!(custom_id_in(br#"{"id": "x", "response": "#), None);
    }
}
