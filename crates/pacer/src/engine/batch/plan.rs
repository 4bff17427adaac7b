//! Planning: which pending requests go into the next batch. Pure.
//!
//! A batch holds one API, one endpoint and one model (OpenAI takes one
//! endpoint a batch; one model a batch lets a model's enqueued-token limit
//! hold back that model alone), stays under the provider's limits on lines
//! and bytes, and, with `--max-cost`, under what the budget has left for
//! its worst case.

use crate::endpoint::Endpoint;
use crate::store::{BatchApi, BatchCandidate};

/// The most lines and bytes a batch of `api` may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    pub max_lines: usize,
    pub max_bytes: u64,
}

impl BatchLimits {
    /// The providers' documented limits, bytes with a 5% margin (a file's
    /// size as the provider counts it may differ a little from ours):
    /// OpenAI 50,000 requests and 200 MB a file, Anthropic 100,000
    /// requests and 256 MB a batch.
    pub fn of(api: BatchApi) -> BatchLimits {
        const MB: u64 = 1_000_000;
        match api {
            BatchApi::OpenAi => BatchLimits {
                max_lines: 50_000,
                max_bytes: 190 * MB,
            },
            BatchApi::Anthropic => BatchLimits {
                max_lines: 100_000,
                max_bytes: 243 * MB,
            },
        }
    }

    /// At most `lines` lines (never below one).
    pub fn with_max_lines(self, lines: Option<usize>) -> BatchLimits {
        BatchLimits {
            max_lines: lines.map_or(self.max_lines, |n| self.max_lines.min(n.max(1))),
            ..self
        }
    }
}

/// The batch API and endpoint a stored request path goes to, or `None`
/// when no batch API takes it. OpenAI's Batch API takes chat completions,
/// completions, embeddings and responses; Anthropic's takes messages.
pub(crate) fn route(url: &str) -> Option<(BatchApi, &'static str)> {
    Some(match Endpoint::from_path(url) {
        Endpoint::ChatCompletions => (BatchApi::OpenAi, "/v1/chat/completions"),
        Endpoint::Completions => (BatchApi::OpenAi, "/v1/completions"),
        Endpoint::Embeddings => (BatchApi::OpenAi, "/v1/embeddings"),
        Endpoint::Responses => (BatchApi::OpenAi, "/v1/responses"),
        Endpoint::Messages => (BatchApi::Anthropic, "/v1/messages"),
        _ => return None,
    })
}

/// The bytes one request adds to its batch's input: its body plus the
/// line's frame (`{"custom_id":"pacer-N","method":"POST","url":"…","body":…}\n`
/// for OpenAI, `{"custom_id":"pacer-N","params":…},` for Anthropic).
pub(crate) fn line_bytes(api: BatchApi, endpoint: &str, c: &BatchCandidate) -> u64 {
    let id = 6 + c.idx.max(0).to_string().len() as u64;
    let frame = match api {
        BatchApi::OpenAi => 50 + endpoint.len() as u64,
        BatchApi::Anthropic => 27,
    };
    c.body_len + id + frame
}

/// The next batch from `candidates` (in scheduler order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Take {
    /// How many of the candidates, from the front.
    pub n: usize,
    pub bytes: u64,
    pub est_tokens: u64,
    /// The worst case at batch prices (`None` without a price).
    pub worst_usd: Option<f64>,
}

/// Takes candidates from the front while the batch stays under `limits`
/// and its worst case under `budget_left` (USD, when there is a budget).
/// `worst(c)` is a request's worst case at batch prices. A first request
/// too large for any batch is taken alone: the provider's refusal then
/// says why, instead of pacer holding it back forever.
pub(crate) fn take(
    api: BatchApi,
    endpoint: &str,
    candidates: &[BatchCandidate],
    limits: BatchLimits,
    budget_left: Option<f64>,
    worst: impl Fn(&BatchCandidate) -> Option<f64>,
) -> Take {
    let frame = match api {
        BatchApi::OpenAi => 0,
        BatchApi::Anthropic => 15, // {"requests":[ … ]}
    };
    let mut t = Take {
        n: 0,
        bytes: frame,
        est_tokens: 0,
        worst_usd: Some(0.0),
    };
    for c in candidates.iter().take(limits.max_lines) {
        let bytes = line_bytes(api, endpoint, c);
        let cost = worst(c);
        let worst_usd = match (t.worst_usd, cost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        if t.n > 0 && t.bytes + bytes > limits.max_bytes {
            break;
        }
        if let Some(left) = budget_left {
            // Without a price a worst case cannot be kept under a cap (the
            // run refuses such jobs before it starts).
            if worst_usd.is_none_or(|w| w > left + 1e-9) {
                break;
            }
        }
        t.n += 1;
        t.bytes += bytes;
        t.est_tokens = t
            .est_tokens
            .saturating_add(c.est_prompt.saturating_add(c.est_output));
        t.worst_usd = worst_usd;
    }
    if t.n == 0 {
        t.worst_usd = None;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(n: usize, body_len: u64) -> Vec<BatchCandidate> {
        (0..n as i64)
            .map(|idx| BatchCandidate {
                idx,
                body_len,
                est_prompt: 10,
                est_output: 5,
            })
            .collect()
    }

    #[test]
    fn requests_route_to_the_batch_api_of_their_endpoint() {
        assert_eq!(
            route("/v1/chat/completions"),
            Some((BatchApi::OpenAi, "/v1/chat/completions"))
        );
        assert_eq!(
            route("/v1/embeddings"),
            Some((BatchApi::OpenAi, "/v1/embeddings"))
        );
        assert_eq!(
            route("/v1/messages"),
            Some((BatchApi::Anthropic, "/v1/messages"))
        );
        assert_eq!(route("/v1/moderations"), None);
    }

    #[test]
    fn a_batch_stops_at_the_line_limit() {
        let c = cands(3000, 100);
        let limits = BatchLimits::of(BatchApi::OpenAi).with_max_lines(Some(500));
        let t = take(
            BatchApi::OpenAi,
            "/v1/chat/completions",
            &c,
            limits,
            None,
            |_| Some(0.001),
        );
        assert_eq!(t.n, 500);
        assert_eq!(t.est_tokens, 500 * 15);
        assert!((t.worst_usd.unwrap() - 0.5).abs() < 1e-9);
        // The provider's own limit is never raised by the flag.
        assert_eq!(
            BatchLimits::of(BatchApi::OpenAi)
                .with_max_lines(Some(10_000_000))
                .max_lines,
            50_000
        );
        assert_eq!(
            BatchLimits::of(BatchApi::Anthropic)
                .with_max_lines(Some(0))
                .max_lines,
            1
        );
    }

    #[test]
    fn a_batch_stops_under_the_byte_limit_but_takes_an_oversized_first_line() {
        let c = cands(10, 1000);
        let limits = BatchLimits {
            max_lines: 100,
            max_bytes: 3500,
        };
        let t = take(
            BatchApi::OpenAi,
            "/v1/chat/completions",
            &c,
            limits,
            None,
            |_| None,
        );
        assert_eq!(t.n, 3);
        assert!(t.bytes <= 3500);
        assert_eq!(t.worst_usd, None);
        // The frame is what the file holds: exact for OpenAI's lines.
        let line = format!(
            "{{\"custom_id\":\"pacer-7\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}}\n",
            "x".repeat(1000)
        );
        let c7 = BatchCandidate {
            idx: 7,
            body_len: 1000,
            est_prompt: 0,
            est_output: 0,
        };
        assert_eq!(
            line_bytes(BatchApi::OpenAi, "/v1/chat/completions", &c7),
            line.len() as u64
        );
        let anthropic = format!(
            "{{\"custom_id\":\"pacer-7\",\"params\":{}}},",
            "x".repeat(1000)
        );
        assert_eq!(
            line_bytes(BatchApi::Anthropic, "/v1/messages", &c7),
            anthropic.len() as u64
        );
        let huge = cands(2, 10_000);
        let t = take(
            BatchApi::OpenAi,
            "/v1/chat/completions",
            &huge,
            limits,
            None,
            |_| None,
        );
        assert_eq!(t.n, 1);
    }

    #[test]
    fn the_budget_bounds_a_batch_by_its_worst_case() {
        let c = cands(100, 10);
        let limits = BatchLimits::of(BatchApi::Anthropic);
        let t = take(
            BatchApi::Anthropic,
            "/v1/messages",
            &c,
            limits,
            Some(0.25),
            |_| Some(0.01),
        );
        assert_eq!(t.n, 25);
        let t = take(
            BatchApi::Anthropic,
            "/v1/messages",
            &c,
            limits,
            Some(0.005),
            |_| Some(0.01),
        );
        assert_eq!((t.n, t.worst_usd), (0, None));
        // A request without a price never fits under a cap.
        let t = take(
            BatchApi::Anthropic,
            "/v1/messages",
            &c,
            limits,
            Some(100.0),
            |_| None,
        );
        assert_eq!(t.n, 0);
    }
}
