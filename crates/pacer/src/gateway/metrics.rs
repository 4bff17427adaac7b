use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::body::{Ending, Finished};
use super::history::GatewayHistory;
use crate::engine::Pacer;
use crate::report::metrics::{CounterF64, MetricSet, OutcomeLabel, ReasonLabel, TokenLabels};
use crate::retry::{Outcome, RetryReason, Verdict};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: String,
}

/// The gateway's Prometheus metrics: the names `pacer run` uses
/// ([`MetricSet`]), plus cost per client key and the queue's depth.
///
/// Counters are kept as requests end; the pace, in-flight and queue gauges
/// are read from the pacer when scraped.
#[derive(Debug)]
pub struct GatewayMetrics {
    set: MetricSet,
    client_cost: Family<ClientLabel, CounterF64>,
    queue_depth: Gauge,
    /// The same events over time, for the dashboard at `/`; with the pacer
    /// whose pace it samples (at most once a second).
    history: Option<(Mutex<HistoryState>, Arc<Pacer>)>,
}

#[derive(Debug)]
struct HistoryState {
    history: GatewayHistory,
    pace_sampled: Option<Instant>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let mut set = MetricSet::new(
            "Requests from clients, by how they ended (ok, failed: an upstream error answer, rejected: refused by the gateway, upstream_error: no answer, client_gone)",
            "Time from a request's arrival to the end of its answer",
        );
        let client_cost = Family::<ClientLabel, CounterF64>::default();
        let queue_depth = Gauge::default();
        set.registry.register(
            "pacer_client_cost_usd",
            "Cost in US dollars, by client key name",
            client_cost.clone(),
        );
        set.registry.register(
            "pacer_queue_depth",
            "Requests waiting for their turn",
            queue_depth.clone(),
        );
        GatewayMetrics {
            set,
            client_cost,
            queue_depth,
            history: None,
        }
    }

    /// Keeps a history of what the metrics count too, for `/`.
    pub fn with_history(mut self, history: GatewayHistory, pacer: Arc<Pacer>) -> Self {
        let state = HistoryState {
            history,
            pace_sampled: None,
        };
        self.history = Some((Mutex::new(state), pacer));
        self
    }

    /// Records into the history, if kept (a short lock, never held across
    /// an await); samples the pace at most once a second.
    fn record(&self, f: impl FnOnce(&mut GatewayHistory, Instant)) {
        let Some((state, pacer)) = &self.history else {
            return;
        };
        let now = Instant::now();
        let mut state = state.lock().expect("history lock");
        f(&mut state.history, now);
        if state
            .pace_sampled
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1))
        {
            state.pace_sampled = Some(now);
            let view = pacer.view();
            state.history.pace(now, &view);
        }
    }

    /// The history as the report draws it; `None` when not kept.
    pub fn report_data(&self, queue_depth: usize) -> Option<crate::report::ReportData> {
        let (state, pacer) = self.history.as_ref()?;
        let now = Instant::now();
        let in_flight = pacer.in_flight() as u64;
        let view = pacer.view();
        let mut state = state.lock().expect("history lock");
        state.history.pace(now, &view);
        Some(state.history.report(now, queue_depth as u64, in_flight))
    }

    /// One attempt's answer (or failure).
    pub(crate) fn attempt(&self, status: Option<u16>, outcome: &Outcome, paused: bool) {
        if let Some(status) = status {
            self.set.response(status);
        }
        let rate_limited = matches!(
            outcome.verdict,
            Verdict::Retry(RetryReason::RateLimited { .. })
        );
        self.record(|h, now| h.sent_failed(now, status, rate_limited));
        if let Verdict::Retry(RetryReason::RateLimited { .. }) = outcome.verdict {
            if paused {
                self.set
                    .pauses
                    .get_or_create(&ReasonLabel {
                        reason: "rate_limited",
                    })
                    .inc();
            }
        }
    }

    /// A success's status (the layer counts the others as it reads them).
    pub fn response(&self, status: u16) {
        self.set.response(status);
        self.record(|h, now| h.sent_ok(now));
    }

    pub(crate) fn retry(&self, reason: &RetryReason) {
        let reason = match reason {
            RetryReason::RateLimited { .. } => "rate_limited",
            RetryReason::Server { .. } => "server_error",
            RetryReason::Overloaded { .. } => "overloaded",
            RetryReason::Timeout => "timeout",
            RetryReason::Connection => "connection",
            RetryReason::StreamCut => "stream_cut",
        };
        self.set
            .retries
            .get_or_create(&ReasonLabel { reason })
            .inc();
        self.record(|h, now| h.retried(now));
    }

    /// A request that got an upstream answer, when the answer ended.
    pub fn finished(&self, f: &Finished, model: &str, client: &str, cost_usd: Option<f64>) {
        let outcome = match f.ending {
            Ending::ClientGone => "client_gone",
            Ending::Cut => "upstream_error",
            Ending::Complete if (200..300).contains(&f.status) => "ok",
            Ending::Complete => "failed",
        };
        self.set
            .requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.set.duration.observe(f.latency.as_secs_f64());
        self.record(|h, now| {
            let tokens = f
                .usage
                .as_ref()
                .map(|(u, _)| (u.prompt_tokens, u.cached_tokens, u.completion_tokens));
            let latency_ms = u64::try_from(f.latency.as_millis()).unwrap_or(u64::MAX);
            h.finished(now, outcome == "ok", latency_ms, model, tokens, 0, cost_usd);
        });
        if let Some((usage, source)) = &f.usage {
            let source = source.as_str();
            for (kind, n) in [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
                ("cached", usage.cached_tokens),
            ] {
                self.set
                    .tokens
                    .get_or_create(&TokenLabels { kind, source })
                    .inc_by(n);
            }
        }
        if let Some(usd) = cost_usd {
            self.set.model_cost(model, usd);
            self.client_cost
                .get_or_create(&ClientLabel {
                    client: client.to_string(),
                })
                .inc_by(usd);
        }
    }

    /// A request the gateway answered itself (`rejected`) or could not get
    /// an answer for (`upstream_error`).
    pub fn ended_without_answer(&self, outcome: &'static str) {
        self.set
            .requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        let why = match outcome {
            "rejected" => "refused by the gateway (queue, wait, budget, request)",
            _ => "no answer from the upstream",
        };
        self.record(|h, now| h.ended_without_answer(now, why));
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, pacer: &Pacer, queue_depth: usize) -> String {
        let view = pacer.view();
        self.set.pace_rpm.set(view.rpm.unwrap_or(0.0));
        self.set.pace_tpm.set(view.tpm.unwrap_or(0.0));
        self.set
            .in_flight
            .set(i64::try_from(pacer.in_flight()).unwrap_or(i64::MAX));
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.set.render()
    }
}
