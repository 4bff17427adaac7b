//! Prometheus metrics: one set of names for `pacer run` and `pacer serve`.
//!
//! Both go through `prometheus-client` (the Prometheus project's own crate
//! for Rust), with the conventional suffixes (`_total`, `_seconds`, `_usd`)
//! so a Grafana dashboard written for one reads the other. [`MetricSet`]
//! holds the families both share; [`RunMetrics`] folds a run's [`Event`]s
//! into it (the same events the progress display folds, so the metrics and
//! the summary count the same things), and the gateway's metrics add their
//! own families (per client, queue depth) to it.
//!
//! Everything is an atomic: applying an event or rendering takes no lock,
//! so a scrape never slows the run.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Event;

/// The content type of [`MetricSet::render`]'s text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub(crate) kind: &'static str,
    pub(crate) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabel {
    pub(crate) model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

pub(crate) type CounterF64 = Counter<f64, AtomicU64>;

/// The families `run` and `serve` share, registered under their names.
#[derive(Debug)]
pub struct MetricSet {
    pub(crate) registry: Registry,
    pub(crate) requests: Family<OutcomeLabel, Counter>,
    pub(crate) responses: Family<StatusLabel, Counter>,
    pub(crate) tokens: Family<TokenLabels, Counter>,
    pub(crate) cost: Family<ModelLabel, CounterF64>,
    pub(crate) retries: Family<ReasonLabel, Counter>,
    pub(crate) pauses: Family<ReasonLabel, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) pace_rpm: Gauge<f64, AtomicU64>,
    pub(crate) pace_tpm: Gauge<f64, AtomicU64>,
    pub(crate) in_flight: Gauge,
}

impl MetricSet {
    /// The shared families; `requests` says what its outcomes are (they
    /// differ between a batch and a gateway), `duration` what it times.
    pub(crate) fn new(requests_help: &str, duration_help: &str) -> MetricSet {
        let mut registry = Registry::default();
        let set = MetricSet {
            registry: Registry::default(),
            requests: Family::default(),
            responses: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            retries: Family::default(),
            pauses: Family::default(),
            duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ]),
            pace_rpm: Gauge::default(),
            pace_tpm: Gauge::default(),
            in_flight: Gauge::default(),
        };
        registry.register("pacer_requests", requests_help, set.requests.clone());
        registry.register(
            "pacer_responses",
            "Answers from the provider to every attempt, by HTTP status",
            set.responses.clone(),
        );
        registry.register(
            "pacer_tokens",
            "Tokens of finished requests, by kind (prompt, completion, cached) and source (reported by the provider, estimated by pacer)",
            set.tokens.clone(),
        );
        registry.register(
            "pacer_cost_usd",
            "Cost in US dollars, by model",
            set.cost.clone(),
        );
        registry.register(
            "pacer_retries",
            "Attempts that will be retried, by reason",
            set.retries.clone(),
        );
        registry.register(
            "pacer_pauses",
            "Times a 429 closed the pause gate for everyone, by reason",
            set.pauses.clone(),
        );
        registry.register(
            "pacer_request_duration_seconds",
            duration_help,
            set.duration.clone(),
        );
        registry.register(
            "pacer_pace_requests_per_minute",
            "The request pace in force (0: none known)",
            set.pace_rpm.clone(),
        );
        registry.register(
            "pacer_pace_tokens_per_minute",
            "The token pace in force (0: none known)",
            set.pace_tpm.clone(),
        );
        registry.register(
            "pacer_in_flight",
            "Requests in flight to the provider",
            set.in_flight.clone(),
        );
        MetricSet { registry, ..set }
    }

    pub(crate) fn response(&self, status: u16) {
        self.responses
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    pub(crate) fn model_cost(&self, model: &str, usd: f64) {
        // A NaN or negative figure would poison a counter for good.
        if usd.is_finite() && usd > 0.0 {
            self.cost
                .get_or_create(&ModelLabel {
                    model: model.to_string(),
                })
                .inc_by(usd);
        }
    }

    /// The text exposition (OpenMetrics).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A run's metrics, folded from its [`Event`]s.
///
/// Counters count this process's work (Prometheus expects counters to start
/// at zero with the process): on a fresh run their totals equal the
/// summary's (`requests_total` = succeeded + failed, `responses_total` plus
/// answers without an HTTP status = sent, `retries_total` = retries,
/// `tokens_total` = the summary's tokens, `cost_usd_total` = its cost).
#[derive(Debug)]
pub struct RunMetrics {
    set: MetricSet,
    /// Attempts sent and not yet answered; a signed count so an answer
    /// seen before its send (events from different tasks) never wraps.
    outstanding: AtomicI64,
}

impl Default for RunMetrics {
    fn default() -> Self {
        RunMetrics::new()
    }
}

impl RunMetrics {
    pub fn new() -> RunMetrics {
        RunMetrics {
            set: MetricSet::new(
                "Requests finished for good, by outcome (ok, failed)",
                "Time from an attempt's sending to its whole answer",
            ),
            outstanding: AtomicI64::new(0),
        }
    }

    /// Folds one event in.
    pub fn apply(&self, event: &Event) {
        let set = &self.set;
        match event {
            Event::Sent => {
                let n = self.outstanding.fetch_add(1, Ordering::Relaxed) + 1;
                set.in_flight.set(n.max(0));
            }
            Event::Answered { status, latency } => {
                let n = self.outstanding.fetch_sub(1, Ordering::Relaxed) - 1;
                set.in_flight.set(n.max(0));
                if let Some(status) = status {
                    set.response(*status);
                }
                set.duration.observe(latency.as_secs_f64());
            }
            Event::Retrying { rate_limited } => {
                let reason = if *rate_limited {
                    "rate_limited"
                } else {
                    "error"
                };
                set.retries.get_or_create(&ReasonLabel { reason }).inc();
            }
            Event::Finished { ok } => {
                let outcome = if *ok { "ok" } else { "failed" };
                set.requests.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            Event::Usage {
                prompt_tokens,
                completion_tokens,
                cost_usd,
                model,
            } => {
                for (kind, n) in [
                    ("prompt", *prompt_tokens),
                    ("completion", *completion_tokens),
                ] {
                    set.tokens
                        .get_or_create(&TokenLabels {
                            kind,
                            source: "reported",
                        })
                        .inc_by(n);
                }
                if let (Some(usd), Some(model)) = (cost_usd, model) {
                    set.model_cost(model, *usd);
                }
            }
            Event::Pace { rpm, tpm, .. } => {
                set.pace_rpm.set(rpm.unwrap_or(0.0));
                set.pace_tpm.set(tpm.unwrap_or(0.0));
            }
            Event::Paused { .. } => {
                set.pauses
                    .get_or_create(&ReasonLabel {
                        reason: "rate_limited",
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// The text exposition (OpenMetrics), with [`OPENMETRICS_CONTENT_TYPE`].
    pub fn render(&self) -> String {
        self.set.render()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    }

    #[test]
    fn a_runs_events_become_its_metrics() {
        let m = RunMetrics::new();
        for _ in 0..3 {
            m.apply(&Event::Sent);
        }
        m.apply(&Event::Answered {
            status: Some(429),
            latency: Duration::from_millis(10),
        });
        m.apply(&Event::Paused {
            for_: Duration::from_secs(1),
        });
        m.apply(&Event::Retrying { rate_limited: true });
        m.apply(&Event::Answered {
            status: Some(200),
            latency: Duration::from_millis(300),
        });
        m.apply(&Event::Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            cost_usd: Some(0.25),
            model: Some("gpt-4o-mini".into()),
        });
        m.apply(&Event::Finished { ok: true });
        m.apply(&Event::Pace {
            rpm: Some(600.0),
            tpm: None,
            source: super::super::PaceSource::Headers,
            concurrency: 4,
        });
        let text = m.render();
        assert_eq!(value(&text, "pacer_in_flight "), 1.0);
        assert_eq!(value(&text, "pacer_responses_total{status=\"429\"}"), 1.0);
        assert_eq!(value(&text, "pacer_responses_total{status=\"200\"}"), 1.0);
        assert_eq!(value(&text, "pacer_requests_total{outcome=\"ok\"}"), 1.0);
        assert_eq!(
            value(&text, "pacer_retries_total{reason=\"rate_limited\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "pacer_pauses_total{reason=\"rate_limited\"}"),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "pacer_tokens_total{kind=\"prompt\",source=\"reported\"}"
            ),
            12.0
        );
        assert_eq!(
            value(&text, "pacer_cost_usd_total{model=\"gpt-4o-mini\"}"),
            0.25
        );
        assert_eq!(value(&text, "pacer_pace_requests_per_minute "), 600.0);
        assert_eq!(value(&text, "pacer_pace_tokens_per_minute "), 0.0);
        assert_eq!(value(&text, "pacer_request_duration_seconds_count "), 2.0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_poisoned_cost_is_not_counted() {
        let m = RunMetrics::new();
        for usd in [f64::NAN, -1.0, f64::INFINITY] {
            m.apply(&Event::Usage {
                prompt_tokens: 1,
                completion_tokens: 1,
                cost_usd: Some(usd),
                model: Some("m".into()),
            });
        }
        assert!(!m.render().contains("pacer_cost_usd_total{"));
    }
}
