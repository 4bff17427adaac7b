use std::time::Duration;

/// Where the pace in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaceSource {
    /// A flag (`--rpm`, `--tpm`, `--rps`): a hard ceiling.
    Configured,
    /// The provider's rate-limit headers.
    Headers,
    /// Found from 429s alone (additive increase, multiplicative decrease).
    Learned,
    /// No limit known.
    Unlimited,
}

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The run starts: the job's counts as found in the state.
    Started {
        total: u64,
        done: u64,
        failed: u64,
        resent: u64,
        requeued: u64,
        spent_usd: f64,
    },
    /// An attempt went out.
    Sent,
    /// An attempt came back (with an HTTP status, or none for transport errors).
    Answered {
        status: Option<u16>,
        latency: Duration,
    },
    /// An attempt will be retried; `rate_limited` for 429s.
    Retrying { rate_limited: bool },
    /// A request finished for good and is durable.
    Finished { ok: bool },
    /// Tokens and money of one successful answer.
    Usage {
        prompt_tokens: u64,
        completion_tokens: u64,
        cost_usd: Option<f64>,
        /// The model the answer names (the request's, where it names none).
        model: Option<String>,
    },
    /// The pace in force changed.
    Pace {
        rpm: Option<f64>,
        tpm: Option<f64>,
        source: PaceSource,
        concurrency: usize,
    },
    /// Everybody waits until this long from now (a 429's Retry-After, an open circuit).
    Paused { for_: Duration },
    /// The run stops admitting requests, for this reason.
    Stopping { reason: String },
    /// A provider batch was created (`--via batch`): local id, API, model,
    /// requests and the provider's id.
    BatchSubmitted {
        batch: i64,
        api: String,
        model: Option<String>,
        requests: u64,
        id: String,
    },
    /// A batch's status or counts at the provider changed.
    BatchProgress {
        batch: i64,
        status: String,
        processed: u64,
        failed: u64,
        total: u64,
    },
    /// A batch is over and its results are written: successes, failures
    /// for good, and requests back to pending for a later batch.
    BatchEnded {
        batch: i64,
        status: String,
        succeeded: u64,
        failed: u64,
        requeued: u64,
    },
    /// The provider would not take a batch yet (OpenAI's enqueued-token
    /// limit): its requests wait for a later batch; not a failure.
    BatchDeferred {
        batch: i64,
        model: Option<String>,
        reason: String,
    },
}
