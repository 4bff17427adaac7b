use std::cmp::Ordering;

use crate::cost::Reservation;
use crate::endpoint::Endpoint;
use crate::limit::TokenTicket;
use crate::retry::RetryState;
use crate::store::PendingRow;
use crate::tokens::TokenEstimate;

/// A request in memory while it is ready, in flight or waiting for a retry.
#[derive(Debug)]
pub(crate) struct Item {
    pub idx: i64,
    pub custom_id: String,
    pub priority: i64,
    /// Sends so far, all runs.
    pub attempts: u32,
    /// Retries in this run (for `--max-retries` and `--max-retry-time`).
    pub retry: RetryState,
    pub url: String,
    /// Decided once from `url`, read by transport, tokens and streams.
    pub endpoint: Endpoint,
    pub body: String,
    pub model: Option<String>,
    pub estimate: TokenEstimate,
    /// What admission charged the token limiter for this attempt.
    pub tokens: TokenTicket,
    /// Budget held for this request while it is in flight.
    pub reservation: Option<Reservation>,
    /// How long its latest admission took (slot, budget, pace), for the history.
    pub wait: std::time::Duration,
}

impl From<PendingRow> for Item {
    fn from(r: PendingRow) -> Item {
        Item {
            idx: r.idx,
            custom_id: r.custom_id,
            priority: r.priority,
            attempts: r.attempts,
            retry: RetryState::default(),
            endpoint: Endpoint::from_path(&r.url),
            url: r.url,
            body: r.body,
            model: r.model,
            estimate: TokenEstimate {
                prompt: r.est_prompt,
                max_output: r.est_output,
            },
            tokens: TokenTicket::plain(r.est_prompt.saturating_add(r.est_output)),
            reservation: None,
            wait: std::time::Duration::ZERO,
        }
    }
}

/// Scheduler order in a max-heap: higher priority first, then input order.
#[derive(Debug)]
pub(crate) struct Ready(pub Item);

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .priority
            .cmp(&other.0.priority)
            .then_with(|| other.0.idx.cmp(&self.0.idx))
    }
}
