use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::body::{Ending, Finished};
use crate::engine::Pacer;
use crate::retry::{Outcome, RetryReason, Verdict};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

type CounterF64 = Counter<f64, AtomicU64>;

/// The gateway's Prometheus metrics, through `prometheus-client` (the
/// Prometheus project's own crate for Rust).
///
/// Counters are kept as requests end; the pace, in-flight and queue gauges
/// are read from the pacer when scraped. Names and units follow Prometheus'
/// conventions (`_total`, `_seconds`, `_usd`).
#[derive(Debug)]
pub struct GatewayMetrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    responses: Family<StatusLabel, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabel, CounterF64>,
    client_cost: Family<ClientLabel, CounterF64>,
    retries: Family<ReasonLabel, Counter>,
    pauses: Family<ReasonLabel, Counter>,
    duration: Histogram,
    pace_rpm: Gauge<f64, AtomicU64>,
    pace_tpm: Gauge<f64, AtomicU64>,
    in_flight: Gauge,
    queue_depth: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let mut registry = Registry::default();
        let m = GatewayMetrics {
            requests: Family::default(),
            responses: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            client_cost: Family::default(),
            retries: Family::default(),
            pauses: Family::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ]),
            pace_rpm: Gauge::default(),
            pace_tpm: Gauge::default(),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "pacer_requests",
            "Requests from clients, by how they ended (ok, failed: an upstream error answer, rejected: refused by the gateway, upstream_error: no answer, client_gone)",
            m.requests.clone(),
        );
        registry.register(
            "pacer_responses",
            "Upstream answers to every attempt, by HTTP status",
            m.responses.clone(),
        );
        registry.register(
            "pacer_tokens",
            "Tokens of finished requests, by kind (prompt, completion, cached) and source (reported by the provider, estimated by pacer)",
            m.tokens.clone(),
        );
        registry.register(
            "pacer_cost_usd",
            "Cost in US dollars, by model",
            m.cost.clone(),
        );
        registry.register(
            "pacer_client_cost_usd",
            "Cost in US dollars, by client key name",
            m.client_cost.clone(),
        );
        registry.register(
            "pacer_retries",
            "Attempts retried by the gateway, by reason",
            m.retries.clone(),
        );
        registry.register(
            "pacer_pauses",
            "Times a 429 closed the pause gate, by reason",
            m.pauses.clone(),
        );
        registry.register(
            "pacer_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            m.duration.clone(),
        );
        registry.register(
            "pacer_pace_requests_per_minute",
            "The request pace in force (0: none known)",
            m.pace_rpm.clone(),
        );
        registry.register(
            "pacer_pace_tokens_per_minute",
            "The token pace in force (0: none known)",
            m.pace_tpm.clone(),
        );
        registry.register(
            "pacer_in_flight",
            "Requests in flight upstream",
            m.in_flight.clone(),
        );
        registry.register(
            "pacer_queue_depth",
            "Requests waiting for their turn",
            m.queue_depth.clone(),
        );
        GatewayMetrics { registry, ..m }
    }

    /// One attempt's answer (or failure).
    pub(crate) fn attempt(&self, status: Option<u16>, outcome: &Outcome, paused: bool) {
        if let Some(status) = status {
            self.response(status);
        }
        if let Verdict::Retry(RetryReason::RateLimited { .. }) = outcome.verdict {
            if paused {
                self.pauses
                    .get_or_create(&ReasonLabel {
                        reason: "rate_limited",
                    })
                    .inc();
            }
        }
    }

    /// A success's status (the layer counts the others as it reads them).
    pub fn response(&self, status: u16) {
        self.responses
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
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
        self.retries.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A request that got an upstream answer, when the answer ended.
    pub fn finished(&self, f: &Finished, model: &str, client: &str, cost_usd: Option<f64>) {
        let outcome = match f.ending {
            Ending::ClientGone => "client_gone",
            Ending::Cut => "upstream_error",
            Ending::Complete if (200..300).contains(&f.status) => "ok",
            Ending::Complete => "failed",
        };
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
        self.duration.observe(f.latency.as_secs_f64());
        if let Some((usage, source)) = &f.usage {
            let source = source.as_str();
            for (kind, n) in [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
                ("cached", usage.cached_tokens),
            ] {
                self.tokens
                    .get_or_create(&TokenLabels { kind, source })
                    .inc_by(n);
            }
        }
        if let Some(usd) = cost_usd {
            self.cost
                .get_or_create(&ModelLabel {
                    model: model.to_string(),
                })
                .inc_by(usd);
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
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, pacer: &Pacer, queue_depth: usize) -> String {
        let view = pacer.view();
        self.pace_rpm.set(view.rpm.unwrap_or(0.0));
        self.pace_tpm.set(view.tpm.unwrap_or(0.0));
        self.in_flight
            .set(i64::try_from(pacer.in_flight()).unwrap_or(i64::MAX));
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
